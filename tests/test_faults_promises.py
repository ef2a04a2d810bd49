"""What the SEED help and the README promise about seeds and tiling (issue 15, finding 6), checked on a
cascade of per-pixel networks (``UNetConfig.local(..., condition_window=1)``: a network's output at a
pixel sees that pixel only), the kind the new default model is: the same seed gives the same result
whatever the tile size and overlap, to float32 rounding; and a uniform input gives a uniform output,
because a per-pixel cascade samples with noise keyed by each pixel's condition values
(``engine.diffusion.noise.ConditionKeyedNoise``), not by its position.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from engine.raster.pipeline import infer_raster


@pytest.fixture(scope="module")
def per_pixel_cascade(tiny_pixel_bundle):
    from engine.bundle import load_bundle

    cascade = load_bundle(tiny_pixel_bundle, device="cpu")
    assert cascade.config.context_radius == 0
    return cascade


def write_rgb(path, data: np.ndarray):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=3,
                       dtype=str(data.dtype), crs="EPSG:32618", transform=Affine(5, 0, 5e5, 0, -5, 4e6)) as dst:
        dst.write(data)
    return path


def run(cascade, src, dst, **choices):
    options = dict(model=cascade, sampler="ddim", steps=2, guidance=1.0, seed=7, device="cpu")
    options.update(choices)
    with rasterio.open(infer_raster(src, dst, **options).output_path) as dataset:
        return dataset.read()


@pytest.mark.parametrize("sampler, steps", [("ddim", 2), ("dpmpp", 3)])
def test_a_per_pixel_cascade_gives_the_same_result_whatever_the_tiling(per_pixel_cascade, tmp_path, sampler, steps):
    data = np.random.default_rng(3).integers(200, 3000, (3, 37, 45)).astype(np.uint16)
    src = write_rgb(tmp_path / "in.tif", data)
    whole = run(per_pixel_cascade, src, tmp_path / "whole.tif", tile=64, overlap=16, sampler=sampler, steps=steps)
    for tile, overlap in ((16, 0), (24, 7), (9, 4)):
        tiled = run(per_pixel_cascade, src, tmp_path / f"t{tile}.tif", tile=tile, overlap=overlap, sampler=sampler,
                    steps=steps)
        assert np.abs(tiled - whole).max() <= 1e-5 * np.abs(whole).max(), (tile, overlap)
    other_seed = run(per_pixel_cascade, src, tmp_path / "seed8.tif", tile=64, seed=8, sampler=sampler, steps=steps)
    assert np.abs(other_seed - whole).max() > 1e-3 * np.abs(whole).max(), "the seed must matter"


@pytest.mark.parametrize("sampler, steps", [("ddim", 1), ("ddim", 2), ("dpmpp", 3)])
def test_a_uniform_input_gives_a_uniform_output(per_pixel_cascade, tmp_path, sampler, steps):
    # Before condition-keyed noise each band's std over this raster was up to 53 times its mean.
    data = np.stack([np.full((30, 40), value, np.uint16) for value in (1200, 900, 600)])
    src = write_rgb(tmp_path / "uniform.tif", data)
    out = run(per_pixel_cascade, src, tmp_path / "u.tif", tile=16, overlap=4, sampler=sampler, steps=steps)
    spread = out.max(axis=(1, 2)) - out.min(axis=(1, 2))
    assert (spread <= 1e-5 * np.abs(out).max()).all(), f"per-band spread up to {spread.max():g}"


def test_identical_pixels_anywhere_in_an_image_give_identical_spectra(per_pixel_cascade, tmp_path):
    patch = np.random.default_rng(5).integers(200, 3000, (3, 9, 11)).astype(np.uint16)
    data = np.tile(patch, (1, 3, 4))  # the same 9 x 11 patch at 12 places, across tile borders
    out = run(per_pixel_cascade, write_rgb(tmp_path / "tiled.tif", data), tmp_path / "o.tif", tile=20, overlap=4)
    first = out[:, :9, :11]
    for row in range(0, 27, 9):
        for col in range(0, 44, 11):
            assert np.abs(out[:, row:row + 9, col:col + 11] - first).max() <= 1e-5 * np.abs(first).max()
