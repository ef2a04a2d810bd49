"""engine.custom_training: a model from the user's rasters and camera, from scratch or fine-tuned from the
bundled model, put in place only when finished; its refusals."""

from __future__ import annotations

import json

import pytest
import torch

from engine import custom_training
from engine.bundle import default_bundle_path, load_bundle
from engine.errors import InputError


@pytest.fixture
def tile(shared_data):
    return str(shared_data / "geotiff" / "enmap_potsdam" / "enmap_potsdam_tile_128_0.tif")


@pytest.fixture
def one_step(monkeypatch):
    monkeypatch.setitem(custom_training.PRESETS, "cpu-quick", custom_training.Preset(1, 1, 8, "one step"))


def _distance(a, b) -> float:
    return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def test_fine_tuning_starts_from_the_bundled_model(tile, one_step, tmp_path):
    bundled = load_bundle(default_bundle_path())
    tuned = custom_training.train_model([tile], "sentinel2", "cpu-quick", tmp_path / "tuned", start_from="bundled")
    scratch = custom_training.train_model([tile], "sentinel2", "cpu-quick", tmp_path / "new")
    near, far = (_distance(load_bundle(r["output"]).mean_models[1], bundled.mean_models[1]) for r in (tuned, scratch))
    assert near < 0.01 < far  # one step of lr 1e-3 moves a weight by about 1e-3
    assert "Started from: " + str(default_bundle_path()) in (tmp_path / "tuned" / "MODEL_CARD.md").read_text()
    recipe = json.loads((tmp_path / "tuned" / "training_recipe.json").read_text())
    assert recipe["rgb"] == {"kind": "imaging", "cameras": ["camera"]} and recipe["library"] == "none"
    assert not (tmp_path / "tuned.training").exists()


def test_a_model_of_other_networks_is_refused_as_a_start(tile, one_step, tiny_bundle, tmp_path):
    with pytest.raises(InputError, match="has the networks .* start from a model trained with the same recipe") as caught:
        custom_training.train_model([tile], "sentinel2", "cpu-quick", tmp_path / "m", start_from=str(tiny_bundle))
    assert caught.value.parameter == "init_from" and not (tmp_path / "m").exists()


def test_refusals(tile, tmp_path):
    with pytest.raises(InputError, match="unknown preset 'fast'") as caught:
        custom_training.train_model([tile], "sentinel2", "fast", tmp_path / "m")
    assert caught.value.parameter == "preset"
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not a model folder: choose a new folder name"):
        custom_training.train_model([tile], "sentinel2", "cpu", tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    with pytest.raises(InputError, match="no hyperspectral raster given") as caught:
        custom_training.train_model([], "sentinel2", "cpu", tmp_path / "m")
    assert caught.value.parameter == "scenes"


def test_a_camera_csv_becomes_the_training_camera(tile, one_step, tmp_path):
    csv = tmp_path / "cam.csv"
    rows = ["wavelength_nm,red,green,blue"] + [f"{w},{float(w > 580)},{float(480 < w < 600)},{float(w < 500)}"
                                               for w in range(400, 701, 10)]
    csv.write_text("\n".join(rows) + "\n")
    result = custom_training.train_model([tile], str(csv), "cpu-quick", tmp_path / "m")
    assert load_bundle(result["output"]).config.stage1.out_channels == 12
    assert "cam.csv" in (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert torch.isfinite(torch.tensor(json.loads((tmp_path / "m" / "config.json").read_text())
                                       ["stage1"]["data_std"])).all()
