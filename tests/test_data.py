"""Training crops (engine/data.py): every crop is a rotated or mirrored window of a scene, in model
units, with its RGB from the same window; invalid pixels are avoided; any batch size works."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cascade import make_config
from engine.config import Normalisation, RGBSimulation, UNetConfig, houston_grid
from engine.data import RENDERINGS_PER_BATCH, Scene, TrainingSet

NORMALISATION = Normalisation(kind="fixed", offset=100.0, scale=50.0)


def _scene(name: str, height: int, width: int, seed: int, valid=None) -> Scene:
    cube = np.random.default_rng(seed).uniform(0, 1000, size=(48, height, width)).astype(np.float32)
    return Scene(name, cube, np.asarray(houston_grid()), np.ones((height, width), bool) if valid is None else valid)


def _training_set(scenes) -> TrainingSet:
    config = make_config("t", houston_grid(), unet=UNetConfig.local(width=8), normalisation=NORMALISATION,
                         rgb_simulation=RGBSimulation(kind="bands", band_indices=(4, 11, 22)))
    return TrainingSet(config, scenes)


def _windows(cube: np.ndarray, crop: int) -> np.ndarray:
    """Every crop x crop window of a (C, H, W) cube under the 8 rotations and mirrorings."""
    views = np.lib.stride_tricks.sliding_window_view(cube, (crop, crop), axis=(1, 2))  # C, h, w, crop, crop
    windows = np.moveaxis(views, 0, 2).reshape(-1, cube.shape[0], crop, crop)
    out = []
    for k in range(4):
        turned = np.rot90(windows, k, axes=(2, 3))
        out += [turned, turned[..., ::-1]]
    return np.concatenate(out)


@settings(max_examples=15, deadline=None)
@given(size=st.integers(1, 3 * RENDERINGS_PER_BATCH + 5), crop=st.sampled_from([1, 3, 5, 8]),
       seed=st.integers(0, 2 ** 31))
def test_every_crop_is_a_transformed_scene_window_with_its_own_rgb(size, crop, seed):
    scenes = [_scene("a", 9, 11, 1), _scene("b", 10, 8, 2)]
    data = _training_set(scenes)
    cube, rgb, covered, _ = data.batch(size, crop, np.random.default_rng(seed))
    assert cube.shape == (size, 48, crop, crop) and rgb.shape == (size, 3, crop, crop) and covered.shape == (size, 48)
    assert cube.dtype == rgb.dtype == np.float32 and cube.flags.c_contiguous and rgb.flags.c_contiguous
    candidates = np.concatenate([_windows(NORMALISATION.to_model(s.cube), crop) for s in scenes])
    flat = candidates.reshape(len(candidates), -1)
    for item in range(size):
        match = np.flatnonzero(np.abs(flat - cube[item].reshape(1, -1)).max(axis=1) < 1e-4)
        assert match.size >= 1
        np.testing.assert_allclose(rgb[item], cube[item][[4, 11, 22]], atol=1e-5)
    assert np.all(covered == 1)


def test_crops_avoid_invalid_pixels():
    valid = np.zeros((20, 20), bool)
    valid[:, 12:] = True
    scene = _scene("half", 20, 20, 3, valid)
    scene.cube[:, ~valid] = 1e6  # unmistakable if a crop ever picked it up
    data = _training_set([scene])
    cube, _, _, _ = data.batch(200, 5, np.random.default_rng(0))
    assert NORMALISATION.from_model(cube).max() < 1e5


def test_crops_larger_than_the_scene_are_mirrored_to_size():
    data = _training_set([_scene("small", 6, 7, 4)])
    cube, rgb, _, _ = data.batch(3, 10, np.random.default_rng(1))
    assert cube.shape == (3, 48, 10, 10) and np.isfinite(cube).all()


@pytest.mark.parametrize("size", [1, RENDERINGS_PER_BATCH, RENDERINGS_PER_BATCH + 1, 256])
def test_same_rng_same_batch(size):
    data = _training_set([_scene("a", 12, 12, 5), _scene("b", 9, 14, 6)])
    first = data.batch(size, 5, np.random.default_rng(7))
    second = data.batch(size, 5, np.random.default_rng(7))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
