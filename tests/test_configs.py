"""The training recipes in configs/ that the README names: each loads, builds its bundle config and
networks, gives every stage a training crop that holds a target pixel, and names scenes that exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO_ROOT
from engine.data import SHARED_DATA
from engine.cascade import Cascade
from engine.train import bundle_config_from_spec, check_crop, load_training_config, training_crop

RECIPES = sorted((REPO_ROOT / "configs").glob("*.json"))


def test_the_recipes_are_found():
    assert {p.name for p in RECIPES} >= {"default_model.json", "local_model.json", "houston_tiny.json"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_builds_its_cascade(recipe: Path):
    spec = load_training_config(recipe)
    config = bundle_config_from_spec(spec)
    if config.context_radius is not None:
        assert config.inference_tile > 2 * config.context_radius, "the default tile must keep pixels outside its seam margin"
    cascade = Cascade(config, device="cpu")
    for stage in spec["stages"]:
        check_crop({**spec, "crop": training_crop(spec, stage)}, cascade.model(stage).training_margin)
    if SHARED_DATA.is_dir():
        missing = [str(s["path"]) for s in spec["scenes"] if not Path(s["path"]).exists()]
        assert not missing, f"{recipe.name} names scenes that do not exist: {missing}"
