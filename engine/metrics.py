"""Image-quality metrics for hyperspectral reconstructions on band-first ``(C, H, W)`` arrays.

Everything is computed in float64. Conventions:

* **Peak** (PSNR peak and SSIM data range): by default ``peak="cube"``, the maximum of the whole
  reference cube (over valid pixels, after ``exclude_bands``); ``peak="band"`` uses each reference
  band's own maximum; a positive number is used as is (e.g. ``1.0`` for 0-1 reflectance).
* **PSNR** is capped at :data:`PSNR_CAP_DB` so a band with zero error (a copied input band) gives a
  finite value instead of ``inf``.
* **SSIM** follows Wang et al. 2004 (``ssim_index.m``): 11 x 11 Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, "valid" filtering (no padding), no downsampling.
* **SAM** is the mean spectral angle in radians; pixels where either spectrum has zero norm are
  skipped because their angle is undefined.
* ``valid_mask`` is an ``(H, W)`` boolean array, True where a pixel counts.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from engine.errors import InputError

PSNR_CAP_DB = 100.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

Peak = Union[str, float]


def _as_pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference)
    estimate = np.asarray(estimate)
    if reference.shape != estimate.shape:
        raise InputError(
            f"reference shape {reference.shape} and estimate shape {estimate.shape} differ; "
            "both must be (bands, rows, cols) of the same size"
        )
    if reference.ndim != 3:
        raise InputError(f"expected (bands, rows, cols) arrays, got shape {reference.shape}")
    return reference.astype(np.float64, copy=False), estimate.astype(np.float64, copy=False)


def _check_mask(valid_mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if valid_mask is None:
        return None
    mask = np.asarray(valid_mask, dtype=bool)
    if mask.shape != shape[1:]:
        raise InputError(f"valid_mask shape {mask.shape} does not match image size {shape[1:]}")
    if not mask.any():
        raise InputError("valid_mask marks no pixel as valid; there is nothing to evaluate")
    return mask


def _pixels(cube: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(C, N) values of the pixels that count."""
    return cube.reshape(cube.shape[0], -1) if mask is None else cube[:, mask]


def _band_peaks(reference: np.ndarray, peak: Peak, mask: np.ndarray | None) -> np.ndarray:
    values = _pixels(reference, mask)
    if isinstance(peak, str):
        if peak == "cube":
            peaks = np.full(reference.shape[0], values.max())
        elif peak == "band":
            peaks = values.max(axis=1)
        else:
            raise InputError(f"peak must be 'cube', 'band' or a positive number, got {peak!r}")
    else:
        peaks = np.full(reference.shape[0], float(peak))
    if not np.all(peaks > 0):
        bad = np.flatnonzero(~(peaks > 0)).tolist()
        raise InputError(
            f"PSNR/SSIM peak must be positive but is {peaks[bad[0]]} (bands {bad}); "
            "pass a positive numeric peak (the data range) instead"
        )
    return peaks


def rmse(reference: np.ndarray, estimate: np.ndarray, valid_mask: np.ndarray | None = None) -> float:
    """Root-mean-square error over all values (all bands, valid pixels)."""
    reference, estimate = _as_pair(reference, estimate)
    mask = _check_mask(valid_mask, reference.shape)
    diff = _pixels(reference, mask) - _pixels(estimate, mask)
    return float(np.sqrt(np.mean(diff * diff)))


def per_band_psnr(
    reference: np.ndarray,
    estimate: np.ndarray,
    peak: Peak = "cube",
    valid_mask: np.ndarray | None = None,
) -> np.ndarray:
    """PSNR in dB of each band, ``(C,)``, capped at :data:`PSNR_CAP_DB`."""
    reference, estimate = _as_pair(reference, estimate)
    mask = _check_mask(valid_mask, reference.shape)
    peaks = _band_peaks(reference, peak, mask)
    diff = _pixels(reference, mask) - _pixels(estimate, mask)
    mse = np.mean(diff * diff, axis=1)
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(peaks**2 / mse)
    return np.minimum(psnr, PSNR_CAP_DB)


# The issue text calls it psnr_per_band; both names are in use.
psnr_per_band = per_band_psnr


def mpsnr(
    reference: np.ndarray,
    estimate: np.ndarray,
    peak: Peak = "cube",
    valid_mask: np.ndarray | None = None,
) -> float:
    """Mean over bands of :func:`per_band_psnr`."""
    return float(np.mean(per_band_psnr(reference, estimate, peak, valid_mask)))


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(SSIM_WINDOW) - (SSIM_WINDOW - 1) / 2
    g = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def _valid_filter(image: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of a 2-D image; shifted sums avoid an 11x larger temporary."""
    n = g.size
    rows_out = image.shape[0] - n + 1
    cols_out = image.shape[1] - n + 1
    horizontal = sum(g[k] * image[:, k : k + cols_out] for k in range(n))
    return sum(g[k] * horizontal[k : k + rows_out, :] for k in range(n))


def per_band_ssim(
    reference: np.ndarray,
    estimate: np.ndarray,
    peak: Peak = "cube",
    valid_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Mean SSIM of each band, ``(C,)``.

    With a ``valid_mask`` only windows lying entirely on valid pixels are averaged; a band with no
    such window gets NaN. Images smaller than the 11 x 11 window raise ``InputError``.
    """
    reference, estimate = _as_pair(reference, estimate)
    mask = _check_mask(valid_mask, reference.shape)
    if min(reference.shape[1:]) < SSIM_WINDOW:
        raise InputError(
            f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, "
            f"got {reference.shape[1]} x {reference.shape[2]}"
        )
    peaks = _band_peaks(reference, peak, mask)
    g = _gaussian_window()
    window_ok = None
    if mask is not None:
        # A window is usable only if all its pixels are valid, i.e. its unweighted valid count is full.
        box = np.ones(SSIM_WINDOW)
        window_ok = _valid_filter(mask.astype(np.float64), box) > SSIM_WINDOW**2 - 0.5
        if not window_ok.any():
            return np.full(reference.shape[0], np.nan)

    result = np.empty(reference.shape[0])
    for band in range(reference.shape[0]):
        x = reference[band]
        y = estimate[band]
        if mask is not None:
            # Invalid pixels may hold nodata or NaN; zero them so they cannot leak into valid windows.
            x = np.where(mask, x, 0.0)
            y = np.where(mask, y, 0.0)
        c1 = (SSIM_K1 * peaks[band]) ** 2
        c2 = (SSIM_K2 * peaks[band]) ** 2
        mu_x = _valid_filter(x, g)
        mu_y = _valid_filter(y, g)
        var_x = _valid_filter(x * x, g) - mu_x**2
        var_y = _valid_filter(y * y, g) - mu_y**2
        cov = _valid_filter(x * y, g) - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
            (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        )
        result[band] = ssim_map.mean() if window_ok is None else ssim_map[window_ok].mean()
    return result


def mssim(
    reference: np.ndarray,
    estimate: np.ndarray,
    peak: Peak = "cube",
    valid_mask: np.ndarray | None = None,
) -> float:
    """Mean over bands of :func:`per_band_ssim`."""
    return float(np.mean(per_band_ssim(reference, estimate, peak, valid_mask)))


def sam(reference: np.ndarray, estimate: np.ndarray, valid_mask: np.ndarray | None = None) -> float:
    """Mean spectral angle in radians; zero-norm pixels are skipped (NaN if every pixel is)."""
    reference, estimate = _as_pair(reference, estimate)
    mask = _check_mask(valid_mask, reference.shape)
    x = _pixels(reference, mask)
    y = _pixels(estimate, mask)
    norms = np.linalg.norm(x, axis=0) * np.linalg.norm(y, axis=0)
    usable = norms > 0
    if not usable.any():
        return float("nan")
    cosine = np.sum(x[:, usable] * y[:, usable], axis=0) / norms[usable]
    return float(np.mean(np.arccos(np.clip(cosine, -1.0, 1.0))))


def all_metrics(
    reference: np.ndarray,
    estimate: np.ndarray,
    exclude_bands: Sequence[int] = (),
    valid_mask: np.ndarray | None = None,
    peak: Peak = "cube",
) -> dict[str, float]:
    """``{"rmse", "mpsnr", "mssim", "sam"}`` with ``exclude_bands`` removed first.

    Excluding matters for the paper protocol: the RGB input bands are copied into the output and
    would otherwise inflate MPSNR. The peak is taken from the remaining bands.
    """
    reference, estimate = _as_pair(reference, estimate)
    kept = kept_bands(reference.shape[0], exclude_bands)
    reference = reference[kept]
    estimate = estimate[kept]
    return {
        "rmse": rmse(reference, estimate, valid_mask),
        "mpsnr": mpsnr(reference, estimate, peak, valid_mask),
        "mssim": mssim(reference, estimate, peak, valid_mask),
        "sam": sam(reference, estimate, valid_mask),
    }


def kept_bands(band_count: int, exclude_bands: Sequence[int]) -> np.ndarray:
    """Indices of the bands left after removing ``exclude_bands`` (0-based, negatives allowed)."""
    excluded = set()
    for index in exclude_bands:
        if not -band_count <= int(index) < band_count:
            raise InputError(f"exclude_bands holds {index}, outside 0..{band_count - 1}")
        excluded.add(int(index) % band_count)
    kept = np.array([b for b in range(band_count) if b not in excluded], dtype=np.int64)
    if kept.size == 0:
        raise InputError("exclude_bands removes every band; nothing is left to evaluate")
    return kept
