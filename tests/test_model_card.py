"""The model card's description of the synthetic scenes follows the recipe the bundle records."""

from __future__ import annotations

from types import SimpleNamespace

from benchmarks.model_card import _layout_text, condition_text
from engine.config import Normalisation


def _config(**synthetic):
    scenes = [{"scene": "houston", "size": [64, 64]}, {"scene": "synthetic (spectral library)", "share": 0.5, **synthetic}]
    return SimpleNamespace(training={"scenes": scenes})


def test_the_card_names_the_layout_options_the_model_was_trained_with():
    assert _layout_text(_config(canopy_structure=False, urban_share=0.0)) == ""
    assert _layout_text(SimpleNamespace(training={})) == ""
    urban = _layout_text(_config(canopy_structure=False, urban_share=0.4))
    assert "40% of the synthetic scenes are towns" in urban and "crowns carry" not in urban
    both = _layout_text(_config(canopy_structure=True, urban_share=0.25))
    assert "crowns carry their own shade" in both and "25% of the synthetic scenes are towns" in both


def test_the_card_says_what_the_networks_see_of_a_pixel():
    assert "brightness against the image's white." in condition_text(Normalisation(kind="chromatic"))
    assert "colour alone" in condition_text(Normalisation(kind="chromatic", brightness_input=False))
    assert "up to 0.2 of the white" in condition_text(Normalisation(kind="chromatic", brightness_cap=0.2))
