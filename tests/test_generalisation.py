"""benchmarks.generalisation: a run replaces the rows of the (scene, method) pairs it measured and
keeps the others (so another recipe's held-out rows sit beside the default's), and the table names
each held-out method's recipe and budget."""

from __future__ import annotations

import json

from benchmarks.generalisation import (FLOOR, HELD_OUT_LABEL, PREVIOUS_IN_SAMPLE, SHIPPED_IN_SAMPLE, held_out_budget,
                                       merge_rows, previous_result, write_table)
from conftest import REPO_ROOT


def _row(scene: str, method: str, sam: float) -> dict:
    return {"scene": scene, "camera": "nikon5100", "encoding": "linear", "method": method, "sam": sam,
            "mpsnr": 20.0, "gain": 1.0}


def test_a_run_replaces_only_the_scene_method_pairs_it_measured():
    earlier = [_row("a", "linear floor", 0.3), _row("a", "default", 0.2), _row("b", "default", 0.25)]
    merged = merge_rows(earlier, [_row("a", "previous recipe", 0.4), _row("a", "default", 0.1)])
    assert {(r["scene"], r["method"], r["sam"]) for r in merged} == {
        ("a", "linear floor", 0.3), ("b", "default", 0.25), ("a", "previous recipe", 0.4), ("a", "default", 0.1)}


def test_the_table_names_each_held_out_methods_recipe_and_budget(tmp_path):
    result = {"commands": ["python -m benchmarks.generalisation"], "rgbn": [],
              "held_out": [_row("a", "default", 0.2), _row("a", "previous recipe", 0.3)],
              "held_out_models": {"default": {"recipe": "configs/default_model.json", "mean_iterations": 600,
                                              "iterations": 300},
                                  "previous recipe": {"recipe": "configs/multiscale_v1.json",
                                                      "mean_iterations": 5000, "iterations": 5000}}}
    write_table(result, tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "'default': `configs/default_model.json` without the test scene, 600 mean-network and 300" in text
    assert "'previous recipe': `configs/multiscale_v1.json` without the test scene, 5000" in text
    assert "| a | previous recipe | 0.300 |" in text


def test_rows_a_later_run_added_sit_beside_their_scene_and_rendering(tmp_path):
    later = {**_row("a", "previous recipe", 0.3), "encoding": "srgb8"}
    rows = [_row("a", "default", 0.2), {**_row("a", "default", 0.21), "encoding": "srgb8"},
            _row("b", "default", 0.25), _row("a", "previous recipe", 0.31), later]
    models = {label: {"recipe": "r.json", "mean_iterations": 1, "iterations": 1} for label in ("default", "previous recipe")}
    write_table({"commands": [], "rgbn": [], "held_out": rows, "held_out_models": models}, tmp_path)
    lines = (tmp_path / "README.md").read_text().splitlines()
    summary = [line.split(" | ")[:2] for line in lines if line.startswith("| a |") or line.startswith("| b |")][:3]
    assert summary == [["| a", "default"], ["| a", "previous recipe"], ["| b", "default"]]
    every = [line.split(" | ")[2:4] for line in lines if line.count(" | ") == 6 and line.startswith("| a |")]
    assert every == [["linear", "default"], ["linear", "previous recipe"], ["srgb8", "default"],
                     ["srgb8", "previous recipe"]]


def test_each_scene_lists_the_references_first_and_the_in_sample_model_last(tmp_path):
    """A re-run that replaces the default rows appends them after another recipe's; the table still
    reads floor, previous bundle, held-out recipes, shipped model."""
    rows = [_row("a", "previous recipe", 0.3), _row("a", FLOOR, 0.25), _row("a", PREVIOUS_IN_SAMPLE, 0.2),
            _row("a", HELD_OUT_LABEL, 0.19), _row("a", SHIPPED_IN_SAMPLE, 0.18)]
    models = {label: {"recipe": "r.json", "mean_iterations": 1, "iterations": 1}
              for label in ("previous recipe", HELD_OUT_LABEL)}
    write_table({"commands": [], "rgbn": [], "held_out": rows, "held_out_models": models}, tmp_path)
    summary = [line.split(" | ")[1] for line in (tmp_path / "README.md").read_text().splitlines()
               if line.startswith("| a |") and line.count(" | ") == 4]
    assert summary == [FLOOR, PREVIOUS_IN_SAMPLE, "previous recipe", HELD_OUT_LABEL, SHIPPED_IN_SAMPLE]


def test_a_page_written_before_labels_keeps_its_budget_under_the_default_label(tmp_path):
    earlier = {"commands": ["python -m benchmarks.generalisation --recipe configs/urban_colour_model.json"],
               "rgbn": [], "held_out": [_row("a", HELD_OUT_LABEL, 0.2)],
               "budget": {"mean_iterations": 600, "iterations": 300}}
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    result = previous_result(tmp_path)
    assert "budget" not in result
    assert result["held_out_models"] == {HELD_OUT_LABEL: {"recipe": "the --recipe of the commands above",
                                                          "mean_iterations": 600, "iterations": 300}}
    assert previous_result(tmp_path / "none") == {"held_out": [], "rgbn": [], "held_out_models": {}}


def test_held_out_models_train_at_the_recipes_own_budget_unless_told():
    """The default row measures the recipe as shipped: its own iterations, not a shortcut."""
    recipe = REPO_ROOT / "configs" / "urban_model.json"
    assert held_out_budget(recipe, None, None) == {"mean_iterations": 3000, "iterations": 1500}
    assert held_out_budget(recipe, 600, None) == {"mean_iterations": 600, "iterations": 1500}
    # a recipe that names no mean-network budget trains its mean networks (if any) as long as the rest
    no_mean_budget = REPO_ROOT / "configs" / "multiscale_v1.json"
    assert "mean_iterations" not in json.loads(no_mean_budget.read_text())
    assert held_out_budget(no_mean_budget, None, None) == {"mean_iterations": 5000, "iterations": 5000}
