"""Metrics against hand-computed cases and an independent brute-force SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import metrics
from engine.metrics import PSNR_CAP_DB, all_metrics, mpsnr, mssim, per_band_psnr, per_band_ssim, rmse, sam


def _random_cube(seed: int, shape=(3, 16, 18), low=0.0, high=1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape)


def _brute_force_ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Wang et al. 2004 written directly: a weighted 11 x 11 window at every 'valid' position."""
    offsets = np.arange(11) - 5
    g1 = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(g1, g1) / np.outer(g1, g1).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for r in range(x.shape[0] - 10):
        for c in range(x.shape[1] - 10):
            px, py = x[r : r + 11, c : c + 11], y[r : r + 11, c : c + 11]
            mx, my = (window * px).sum(), (window * py).sum()
            vx = (window * (px - mx) ** 2).sum()
            vy = (window * (py - my) ** 2).sum()
            cov = (window * (px - mx) * (py - my)).sum()
            values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_constant_error_gives_that_rmse() -> None:
    reference = _random_cube(0)
    assert rmse(reference, reference + 0.25) == pytest.approx(0.25, rel=1e-12)
    assert rmse(reference, reference - 0.25) == pytest.approx(0.25, rel=1e-12)


def test_psnr_of_known_mse_and_cube_peak() -> None:
    reference = np.zeros((2, 4, 4))
    reference[0, 0, 0] = 2.0  # cube peak 2, band 1 peak 0
    estimate = reference + 0.1  # mse 0.01 in every band
    expected = 10 * math.log10(2.0**2 / 0.01)
    assert per_band_psnr(reference, estimate) == pytest.approx([expected, expected])
    assert mpsnr(reference, estimate) == pytest.approx(expected)


def test_psnr_band_and_numeric_peak() -> None:
    reference = np.ones((2, 4, 4))
    reference[1] *= 4.0
    estimate = reference + 0.5  # mse 0.25
    assert per_band_psnr(reference, estimate, peak="band") == pytest.approx(
        [10 * math.log10(1 / 0.25), 10 * math.log10(16 / 0.25)]
    )
    assert mpsnr(reference, estimate, peak=10.0) == pytest.approx(10 * math.log10(100 / 0.25))


def test_zero_error_band_is_capped_not_infinite() -> None:
    reference = _random_cube(1)
    estimate = reference.copy()
    estimate[1] += 0.01
    psnr = per_band_psnr(reference, estimate)
    assert psnr[0] == PSNR_CAP_DB and psnr[2] == PSNR_CAP_DB
    assert psnr[1] < PSNR_CAP_DB and np.all(np.isfinite(psnr))


def test_non_positive_peak_is_rejected() -> None:
    reference = np.zeros((1, 12, 12))
    with pytest.raises(ValueError, match="peak"):
        mpsnr(reference, reference + 1)
    with pytest.raises(ValueError, match="peak"):
        mpsnr(reference + 1, reference, peak="median")


def test_ssim_of_identical_images_is_one() -> None:
    reference = _random_cube(2)
    assert per_band_ssim(reference, reference) == pytest.approx([1.0, 1.0, 1.0])
    assert mssim(reference, reference) == pytest.approx(1.0)


def test_ssim_of_constant_image_and_offset_matches_hand_formula() -> None:
    a, d = 0.6, 0.15
    reference = np.full((1, 20, 20), a)
    # Both images are flat: variances and covariance vanish, leaving the luminance term only.
    c1 = (0.01 * a) ** 2
    expected = (2 * a * (a + d) + c1) / (a**2 + (a + d) ** 2 + c1)
    assert mssim(reference, reference + d) == pytest.approx(expected, rel=1e-9)


def test_ssim_matches_brute_force_wang_reference() -> None:
    reference = _random_cube(3, (2, 15, 17))
    estimate = reference + np.random.default_rng(4).normal(0, 0.1, reference.shape)
    peak = reference.max()
    expected = [_brute_force_ssim(reference[b], estimate[b], peak) for b in range(2)]
    assert per_band_ssim(reference, estimate) == pytest.approx(expected, rel=1e-9)


def test_ssim_rejects_images_smaller_than_the_window() -> None:
    reference = _random_cube(5, (2, 10, 30))
    with pytest.raises(ValueError, match="11 x 11"):
        mssim(reference, reference)


def test_sam_of_proportional_and_orthogonal_spectra() -> None:
    reference = _random_cube(6, (5, 4, 4), 0.1, 1.0)
    assert sam(reference, 3.0 * reference) == pytest.approx(0.0, abs=1e-7)

    first = np.zeros((2, 3, 3))
    first[0] = 1.0
    second = np.zeros((2, 3, 3))
    second[1] = 2.0
    assert sam(first, second) == pytest.approx(math.pi / 2)


def test_sam_skips_zero_norm_pixels() -> None:
    reference = np.ones((3, 2, 2))
    estimate = np.ones((3, 2, 2))
    estimate[:, 0, 0] = 0.0  # undefined angle: ignored rather than counted as pi/2 or NaN
    estimate[:, 1, 1] = [1.0, -1.0, 0.0]  # orthogonal to (1, 1, 1)
    assert sam(reference, estimate) == pytest.approx((math.pi / 2) / 3)
    assert math.isnan(sam(np.zeros((3, 2, 2)), estimate))


def test_exclude_bands_removes_copied_bands() -> None:
    reference = _random_cube(7, (4, 12, 12))
    estimate = reference + 0.05
    estimate[[0, 2]] = reference[[0, 2]]  # copied input bands: zero error
    everything = all_metrics(reference, estimate)
    without_copies = all_metrics(reference, estimate, exclude_bands=(0, 2))
    assert without_copies["rmse"] == pytest.approx(0.05)
    assert everything["rmse"] == pytest.approx(0.05 / math.sqrt(2))
    assert everything["mpsnr"] > without_copies["mpsnr"] + 20
    assert all_metrics(reference, estimate, exclude_bands=(-4, -2)) == without_copies
    assert set(without_copies) == {"rmse", "mpsnr", "mssim", "sam"}


def test_exclude_bands_validation() -> None:
    reference = _random_cube(8, (2, 12, 12))
    with pytest.raises(ValueError, match="outside"):
        all_metrics(reference, reference, exclude_bands=(2,))
    with pytest.raises(ValueError, match="every band"):
        all_metrics(reference, reference, exclude_bands=(0, 1))


def test_mismatched_shapes_raise_naming_both() -> None:
    with pytest.raises(ValueError) as error:
        all_metrics(np.zeros((3, 12, 12)), np.zeros((3, 12, 13)))
    assert "(3, 12, 12)" in str(error.value) and "(3, 12, 13)" in str(error.value)
    with pytest.raises(ValueError, match="bands, rows, cols"):
        rmse(np.zeros((12, 12)), np.zeros((12, 12)))


def test_valid_mask_ignores_invalid_pixels_including_nan() -> None:
    reference = _random_cube(9, (3, 24, 24), 0.2, 1.0)
    estimate = reference + 0.1
    reference[:, :, 20:] = 1e6  # nodata-like values in both: would dominate peak and errors
    estimate[:, :, 20:] = np.nan
    mask = np.ones((24, 24), dtype=bool)
    mask[:, 20:] = False
    masked = all_metrics(reference, estimate, valid_mask=mask)
    cropped = all_metrics(reference[:, :, :20], estimate[:, :, :20])
    assert masked["rmse"] == pytest.approx(0.1)
    assert masked["mpsnr"] == pytest.approx(cropped["mpsnr"])
    assert masked["sam"] == pytest.approx(cropped["sam"])
    # Masked SSIM averages the windows lying fully in valid pixels: the same windows as the crop.
    assert masked["mssim"] == pytest.approx(cropped["mssim"])


def test_valid_mask_validation() -> None:
    reference = _random_cube(10, (2, 12, 12))
    with pytest.raises(ValueError, match="no pixel"):
        rmse(reference, reference, valid_mask=np.zeros((12, 12), dtype=bool))
    with pytest.raises(ValueError, match="valid_mask shape"):
        rmse(reference, reference, valid_mask=np.ones((12, 11), dtype=bool))


def test_float32_inputs_are_computed_in_float64() -> None:
    reference = np.full((1, 12, 12), 10000.0, dtype=np.float32)
    estimate = reference + np.float32(0.5)
    # (1e4 + 0.5)^2 - (1e4)^2 loses precision in float32 sums of squares; float64 does not.
    assert rmse(reference, estimate) == pytest.approx(0.5, rel=1e-12)
    assert metrics.mpsnr(reference, estimate) == pytest.approx(10 * math.log10(1e8 / 0.25))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), noise=st.floats(0.0, 0.5))
def test_metric_ranges_hold_for_random_cubes(seed: int, noise: float) -> None:
    reference = _random_cube(seed, (3, 12, 13), 0.05, 1.0)
    estimate = reference + np.random.default_rng(seed + 1).normal(0, noise, reference.shape)
    result = all_metrics(reference, estimate)
    assert result["rmse"] >= 0
    assert 0 <= result["sam"] <= math.pi
    assert -1 <= result["mssim"] <= 1 + 1e-12
    assert result["rmse"] == pytest.approx(rmse(estimate, reference))
