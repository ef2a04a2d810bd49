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
    raw.config = replace(raw.config, uncertainty_scale=None, uncertainty_interval95=None)
    calibrated = copy.copy(raw)
    factors = np.linspace(0.5, 3.0, raw.config.band_count)
    calibrated.config = replace(raw.config, uncertainty_scale=tuple(float(f) for f in factors),
                                uncertainty_interval95=2.9)
    mean_raw, std_raw, product_raw = _run(raw, source, tmp_path, "raw")
    mean_cal, std_cal, product_cal = _run(calibrated, source, tmp_path, "calibrated")
    np.testing.assert_array_equal(mean_cal, mean_raw)
    np.testing.assert_allclose(std_cal, std_raw * factors[:, None, None], rtol=1e-4, atol=1e-7)
    # the tag says how wide the 95 % interval is: the fitted half-width, or a Gaussian's without one
    assert "95 % interval: +/- 2.90" in product_cal and "95 % interval: +/- 1.96" in product_raw


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
    with pytest.raises(ValueError, match="uncertainty_interval95"):
        replace(config, uncertainty_interval95=0.8).validate()


def test_the_reliability_miss_is_the_mean_distance_from_the_diagonal():
    from benchmarks.calibration import NOMINAL, reliability_miss

    assert reliability_miss([{"reliability": list(NOMINAL)}]) == pytest.approx(0.0)
    lower = {"reliability": list(NOMINAL - 0.1)}
    higher = {"reliability": list(NOMINAL + 0.05)}
    assert reliability_miss([lower, higher]) == pytest.approx(0.075)


def test_gaussian_errors_get_their_std_ratio_and_a_gaussian_95_interval():
    from benchmarks.calibration import fit_calibration

    spread_too_narrow_by = 1.7
    z = np.abs(np.random.default_rng(0).normal(0.0, spread_too_narrow_by, (4, 50_000)))  # |error| / std
    fitted = fit_calibration([z])
    assert fitted.factor == pytest.approx(spread_too_narrow_by, rel=0.02)
    assert fitted.half_width95 == pytest.approx(1.959964, rel=0.02)


def test_heavy_tails_widen_the_95_interval_beyond_a_gaussians_and_both_levels_are_met():
    from benchmarks.calibration import NOMINAL68, NOMINAL95, fit_calibration

    z = np.abs(np.random.default_rng(1).laplace(0.0, 1.0, 200_000))
    fitted = fit_calibration([z])
    assert fitted.factor == pytest.approx(np.percentile(z, 100 * NOMINAL68), rel=0.02)
    assert fitted.half_width95 > 2.3  # a Laplace's 95 % point is 2.6 times its 68 % point, a Gaussian's 1.96
    assert np.mean(z / fitted.factor <= 1.0) == pytest.approx(NOMINAL68, abs=0.01)
    assert np.mean(z / fitted.factor <= fitted.half_width95) == pytest.approx(NOMINAL95, abs=0.01)


def test_each_image_counts_once_whatever_its_size():
    from benchmarks.calibration import fit_calibration

    rng = np.random.default_rng(2)
    large_image, small_image = np.abs(rng.normal(0, 1.0, 100_000)), np.abs(rng.normal(0, 2.0, 5_000))
    pooled_fit = np.percentile(np.concatenate([large_image, small_image]), 68.27)
    factor = fit_calibration([large_image, small_image]).factor
    assert 1.3 < factor < 1.7 and pooled_fit < 1.1


def test_the_calibrated_scores_scale_the_spread_and_read_95_at_the_fitted_half_width():
    from benchmarks.calibration import Calibration

    z = np.array([0.5, 1.5, 2.5, 3.5])
    spread, error = np.arange(1.0, 5.0), np.arange(4.0)
    scores = Calibration(factor=2.0, half_width95=1.5).scores(z, spread, error)
    assert scores["coverage68"] == pytest.approx(0.5)  # z / 2 = 0.25 0.75 1.25 1.75
    assert scores["coverage95"] == pytest.approx(0.75)
    raw = Calibration().scores(z, spread, error)
    assert raw["coverage68"] == pytest.approx(0.25) and raw["coverage95"] == pytest.approx(0.5)
