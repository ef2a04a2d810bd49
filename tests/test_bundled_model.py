"""The model shipped in resources/models: its config, its card, and a quick inference."""

from __future__ import annotations

import numpy as np
import pytest

from engine.bundle import WEIGHTS_NAME, default_bundle_path, load_bundle
from engine.evaluate import reconstruct, sampler_settings


@pytest.fixture(scope="module")
def bundled():
    return load_bundle(default_bundle_path())


def test_bundled_config(bundled):
    config = bundled.config
    assert config.band_count == 48
    assert config.wavelengths_nm[0] == pytest.approx(374.4) and config.wavelengths_nm[-1] == pytest.approx(1046.5)
    assert np.allclose(np.diff(config.wavelengths_nm), 14.3, atol=0.01)
    assert config.stage1_indices == tuple(range(0, 48, 4))
    assert config.normalisation.kind == "rgb_percentile"
    assert config.rgb_simulation.kind == "srf" and len(config.rgb_simulation.cameras) == 3
    assert config.training["iterations"] > 0 and len(config.training["scenes"]) == 9
    assert config.stage1.baseline is not None and config.stage2.baseline is not None
    assert (default_bundle_path() / WEIGHTS_NAME).stat().st_size < 50 * 2 ** 20
    assert (default_bundle_path() / "MODEL_CARD.md").read_text().count("|") > 20


def test_quick_inference_follows_the_input_scale(bundled):
    rgb = (np.random.default_rng(0).random((3, 16, 16)) * 100 + 20).astype(np.float32)
    settings = sampler_settings(bundled, "ddim", 2, 0.0)
    once = reconstruct(bundled, rgb, settings, seed=3)
    assert once.full.shape == (48, 16, 16) and once.stage1.shape == (12, 16, 16)
    assert np.isfinite(once.full).all()
    # The model works in units of the RGB's 99th percentile, so a gain on the input is a gain on the output.
    scaled = reconstruct(bundled, 10 * rgb, settings, seed=3)
    assert np.allclose(scaled.full, 10 * once.full, rtol=1e-3, atol=1e-4 * np.abs(scaled.full).max())
