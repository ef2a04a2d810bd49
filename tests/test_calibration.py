"""The bundle's per-band uncertainty calibration scales the K-sample standard deviation and leaves the
mean estimate alone; a wrong calibration is refused when the bundle is read."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from engine.bundle import default_bundle_path, load_bundle
from engine.raster import infer_raster


def _run(cascade, source, tmp_path, name, **settings):
    out, unc = tmp_path / f"{name}.tif", tmp_path / f"{name}_std.tif"
    infer_raster(source, out, model=cascade, samples=3, uncertainty_output=unc, sampler="dpmpp", steps=3,
                 device="cpu", **settings)
    with rasterio.open(out) as mean, rasterio.open(unc) as std:
        return mean.read(), std.read(), std.tags()["SCDM_PRODUCT"]


def _codes(tmp_path):
    codes = np.random.default_rng(0).integers(40, 200, size=(3, 12, 10)).astype(np.uint8)
    source = tmp_path / "rgb.tif"
    with rasterio.open(source, "w", driver="GTiff", width=10, height=12, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(codes)
    return source


def test_calibration_scales_the_spread_and_not_the_mean(tmp_path):
    if not default_bundle_path().exists():
        pytest.skip("no bundled model")
    source = _codes(tmp_path)
    raw = load_bundle(default_bundle_path())
    raw.config = replace(raw.config, uncertainty_scale=None)
    calibrated = copy.copy(raw)
    factors = np.linspace(0.5, 3.0, raw.config.band_count)
    calibrated.config = replace(raw.config, uncertainty_scale=tuple(float(f) for f in factors))
    mean_raw, std_raw, _ = _run(raw, source, tmp_path, "raw")
    mean_cal, std_cal, _ = _run(calibrated, source, tmp_path, "calibrated")
    np.testing.assert_array_equal(mean_cal, mean_raw)
    np.testing.assert_allclose(std_cal, std_raw * factors[:, None, None], rtol=1e-4, atol=1e-7)


def test_a_guessed_8_bit_decoding_widens_the_spread_and_leaves_the_mean(tmp_path):
    """auto on 8-bit input guesses sRGB: its uncertainty adds the squared difference from the linear
    stretch reading (same seeds, so the samples' own spread is the srgb run's), under the same
    calibration; said as such in the product tag. The mean estimate is the srgb run's."""
    if not default_bundle_path().exists():
        pytest.skip("no bundled model")
    source, cascade = _codes(tmp_path), load_bundle(default_bundle_path())
    mean_auto, std_auto, product_auto = _run(cascade, source, tmp_path, "auto")
    mean_srgb, std_srgb, product_srgb = _run(cascade, source, tmp_path, "srgb", radiometry="srgb")
    mean_lin, _, _ = _run(cascade, source, tmp_path, "linear", radiometry="linear")
    np.testing.assert_array_equal(mean_auto, mean_srgb)
    factors = np.asarray(cascade.config.uncertainty_scale or np.ones(len(std_auto)))[:, None, None]
    # the linear run reads codes 0-255; the stretch reading is the same over 0-1
    expected = np.sqrt(std_srgb ** 2 + factors ** 2 * (mean_srgb - mean_lin / 255.0) ** 2)
    np.testing.assert_allclose(std_auto, expected, rtol=2e-3, atol=1e-6)
    assert np.mean(std_auto > std_srgb * 1.01) > 0.5
    assert "linear stretch" in product_auto and "linear stretch" not in product_srgb
    # the second reading never depends on which other outputs were asked for
    _, std_with_stage1, _ = _run(cascade, source, tmp_path, "auto_stage1", stage1_output=tmp_path / "stage1.tif")
    np.testing.assert_array_equal(std_with_stage1, std_auto)


def test_a_calibration_of_the_wrong_length_is_refused():
    config = load_bundle(default_bundle_path()).config if default_bundle_path().exists() else None
    if config is None:
        pytest.skip("no bundled model")
    with pytest.raises(ValueError, match="uncertainty_scale"):
        replace(config, uncertainty_scale=(1.0, 2.0)).validate()


def test_the_reliability_miss_is_the_mean_distance_from_the_diagonal():
    from benchmarks.calibration import NOMINAL, reliability_miss

    assert reliability_miss([{"reliability": list(NOMINAL)}]) == pytest.approx(0.0)
    lower = {"reliability": list(NOMINAL - 0.1)}
    higher = {"reliability": list(NOMINAL + 0.05)}
    assert reliability_miss([lower, higher]) == pytest.approx(0.075)
