"""The model shipped in resources/models: its config, its card, and a quick inference; the border
margin on the previous bundle (benchmarks/models/scdm-v1), whose networks see context."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.bundle import WEIGHTS_NAME, default_bundle_path, load_bundle
from engine.evaluate import reconstruct, sampler_settings

PREVIOUS_BUNDLE = Path(__file__).resolve().parents[1] / "benchmarks" / "models" / "scdm-v1"
ENMAP_MOSAIC = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geotiff" / "enmap_potsdam"
                / "enmap_potsdam_tiles_mosaic.tif")


@pytest.fixture(scope="module")
def bundled():
    return load_bundle(default_bundle_path())


def test_bundled_config(bundled):
    config = bundled.config
    assert config.band_count == 48
    assert config.wavelengths_nm[0] == pytest.approx(374.4) and config.wavelengths_nm[-1] == pytest.approx(1046.5)
    assert np.allclose(np.diff(config.wavelengths_nm), 14.3, atol=0.01)
    assert config.stage1_indices == tuple(range(0, 48, 4))
    assert config.normalisation.kind == "chromatic" and config.context_radius == 0
    assert config.rgb_simulation.kind == "imaging" and len(config.rgb_simulation.cameras) == 2
    assert config.training["iterations"] > 0 and len(config.training["scenes"]) >= 8
    assert config.stage1.mean_network is not None and config.stage2.mean_network is not None
    assert config.input_wavelengths_nm[0] > config.input_wavelengths_nm[2], "input channels are red, green, blue"
    assert (default_bundle_path() / WEIGHTS_NAME).stat().st_size < 50 * 2 ** 20
    assert (default_bundle_path() / "MODEL_CARD.md").read_text().count("|") > 20


def test_quick_inference_follows_the_input_scale(bundled):
    rgb = (np.random.default_rng(0).random((3, 16, 16)) * 100 + 20).astype(np.float32)
    settings = sampler_settings(bundled, "ddim", 2, 0.0)
    once = reconstruct(bundled, rgb, settings, seed=3)
    assert once.full.shape == (48, 16, 16) and once.stage1.shape == (12, 16, 16)
    assert np.isfinite(once.full).all() and once.full.min() >= 0, "reflectance-shaped output is never negative"
    # The model works in units of the RGB's white level, so a gain on the input is a gain on the output.
    scaled = reconstruct(bundled, 10 * rgb, settings, seed=3)
    assert np.allclose(scaled.full, 10 * once.full, rtol=1e-3, atol=1e-4 * np.abs(scaled.full).max())


def _enmap_rgb_crop(tmp_path):
    import rasterio

    if not ENMAP_MOSAIC.exists():
        pytest.skip(f"shared data not found at {ENMAP_MOSAIC}")
    with rasterio.open(ENMAP_MOSAIC) as ds:
        window = ((0, 64), (0, 64))
        rgb, transform, crs = ds.read((44, 28, 9), window=window), ds.window_transform(window), ds.crs
    src = tmp_path / "rgb.tif"
    with rasterio.open(src, "w", driver="GTiff", width=64, height=64, count=3, dtype=rgb.dtype, crs=crs,
                       transform=transform) as ds:
        ds.write(rgb)
    return src


def test_the_bundled_model_output_does_not_depend_on_the_tiling(bundled, tmp_path):
    """Per-pixel networks: a pixel's spectrum is the same whatever tile it falls in."""
    import rasterio

    from engine.raster import pipeline

    src = _enmap_rgb_crop(tmp_path)
    cubes = []
    for tile, overlap in ((64, 0), (24, 8), (16, 0)):
        out = tmp_path / f"hsi_{tile}_{overlap}.tif"
        pipeline.infer_raster(src, out, model=bundled, tile=tile, overlap=overlap, device="cpu")
        with rasterio.open(out) as ds:
            cubes.append(ds.read())
    # float32 rounding differs with the batch's shape; where the mean and the residual nearly cancel
    # (a dark band of a dark pixel) it is relative to the raster's values, not to the small result
    atol = 1e-6 * float(np.abs(cubes[0]).max())
    for other in cubes[1:]:
        np.testing.assert_allclose(other, cubes[0], rtol=1e-4, atol=atol)


def test_no_bright_rim_at_the_raster_border(tmp_path):
    """The raster's own border gets mirrored context (half the overlap, windows.border_margin). Without it the
    network's zero padding showed as a rim of 2-4x too bright near-infrared on the demo image; the
    measure here (outermost pixels against those 4 px in, mean of the bands above 800 nm) sees it
    on a real EnMAP crop without the margin (overlap 0: 1.36) and not with it (overlap 32: 0.90)."""
    import rasterio

    from engine.raster import pipeline

    src = _enmap_rgb_crop(tmp_path)
    previous = load_bundle(PREVIOUS_BUNDLE)

    def rim_ratio(overlap):
        out = tmp_path / f"hsi_{overlap}.tif"
        report = pipeline.infer_raster(src, out, model=previous, tile=128, overlap=overlap, steps=5, seed=0,
                                       device="cpu")
        assert report.tiles == 1
        with rasterio.open(out) as ds:
            nir = ds.read().astype(np.float64)[30:].mean(axis=0)  # 804-1046 nm
        edge = np.concatenate([nir[0], nir[-1], nir[:, 0], nir[:, -1]]).mean()
        next_in = np.concatenate([nir[4, 4:-4], nir[-5, 4:-4], nir[4:-4, 4], nir[4:-4, -5]]).mean()
        return edge / next_in

    assert rim_ratio(0) > 1.2
    assert 0.8 < rim_ratio(32) < 1.1
