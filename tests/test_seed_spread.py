"""benchmarks.seed_spread: a seed's recipe is the default recipe with only the seed and the output
changed, an unchanged recipe reuses its bundle and a changed one trains, and the table's spread is the
largest minus the smallest single-model r."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.generalisation import DEFAULT_RECIPE, train_or_reuse
from benchmarks.seed_spread import seed_recipe, write_table
from engine.training_config import load_training_config


def test_a_seed_recipe_changes_the_seed_and_the_output_only(tmp_path, shared_data):
    path = seed_recipe(DEFAULT_RECIPE, 3, tmp_path)
    copy, default = load_training_config(path), load_training_config(DEFAULT_RECIPE)
    assert copy.seed == 3 and default.seed == 0
    assert Path(copy.output) == tmp_path / "seed-3"
    assert [s.path for s in copy.scenes] == [s.path for s in default.scenes]
    assert all(s.path.is_absolute() and s.path.exists() for s in copy.scenes)
    written, original = json.loads(path.read_text()), json.loads(DEFAULT_RECIPE.read_text())
    changed = {key for key in written if written[key] != original.get(key)}
    assert changed == {"seed", "output", "scenes", "srf_dir"}  # the last two only made absolute


def _tiny_recipe(tmp_path: Path, shared_data: Path, iterations: int) -> Path:
    spec = {"name": "tiny", "output": str(tmp_path / "tiny"), "grid": "houston",
            "scenes": [{"path": str(shared_data / "scenes" / "houston2018_casi48.npz"), "rows": [0, 32],
                        "cols": [0, 32]}],
            "rgb": {"kind": "bands", "band_indices": [4, 11, 22]},
            "normalisation": {"kind": "fixed", "offset": 3693, "scale": 7410},
            "unet": {"base_channels": 8, "channel_multipliers": [1], "encoder_res_blocks": 1,
                     "decoder_res_blocks": 2, "attention_downsample": []},
            "iterations": iterations, "batch_size": 2, "crop": 8, "checkpoint_every": 1000, "threads": 1}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(spec))
    return path


def test_an_unchanged_recipe_reuses_its_bundle_and_a_changed_one_trains(tmp_path, shared_data):
    said = []
    recipe = _tiny_recipe(tmp_path, shared_data, 2)
    bundle = train_or_reuse(recipe, None, True, said.append)
    weights = next(bundle.glob("*.safetensors"))
    first = weights.stat().st_mtime_ns
    assert train_or_reuse(recipe, recipe.read_text(), True, said.append) == bundle
    assert weights.stat().st_mtime_ns == first and "reusing" in said[-1]
    earlier = recipe.read_text()
    _tiny_recipe(tmp_path, shared_data, 3)
    train_or_reuse(recipe, earlier, True, said.append)
    assert "trained" in said[-1] and json.loads((bundle / "config.json").read_text())["training"]["iterations"] == 3


def test_the_spread_is_the_range_of_the_single_models(tmp_path):
    rows = [{"model": "seed 0", "nir_r": 0.70, "min": 0.0, "training_seconds": 10.0},
            {"model": "seed 1", "nir_r": 0.76, "min": 0.0, "training_seconds": 11.0},
            {"model": "seed 2", "nir_r": 0.72, "min": 0.0, "training_seconds": 12.0},
            {"model": "mean of the 3 models' outputs", "nir_r": 0.90, "min": 0.0, "training_seconds": None}]
    write_table({"command": "python -m benchmarks.seed_spread --seeds 1 2", "rows": rows}, tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "(largest minus smallest r): 0.060." in text
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == rows
