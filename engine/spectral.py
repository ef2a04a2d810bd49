"""Wavelength-grid resampling and RGB simulation for band-first ``(C, H, W)`` cubes.

Resampling model: the source samples are joined by straight lines into a continuous spectrum and
each target band is the integral of that spectrum against a Gaussian response (normalised over the
source range). If the source bands have a known FWHM, the extra blur applied is only the part the
source does not already have, ``sqrt(target_fwhm**2 - source_fwhm**2)``; when the target is not wider
than the source this is zero and the target band is plain linear interpolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from engine.errors import InputError

ArrayLike = Union[float, Sequence[float], np.ndarray]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
MIN_SRF_COVERAGE = 0.5
_erf = np.vectorize(math.erf, otypes=[np.float64])


@dataclass(frozen=True)
class SpectralResponse:
    """Red, green and blue response curves on a common wavelength grid."""

    wavelengths_nm: np.ndarray  # (K,), increasing
    responses: np.ndarray  # (3, K): red, green, blue
    name: str


def _wavelengths(values: ArrayLike, what: str) -> np.ndarray:
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
        raise InputError(f"{what} must be a non-empty 1-D list of finite wavelengths")
    return array


def _per_band(value: ArrayLike, count: int, what: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(count, float(array))
    if array.shape != (count,) or not np.all(array >= 0):
        raise InputError(f"{what} must be one non-negative number or {count} of them")
    return array


def _default_fwhm(target: np.ndarray, target_fwhm: ArrayLike | None) -> np.ndarray:
    if target_fwhm is not None:
        fwhm = _per_band(target_fwhm, target.size, "target_fwhm")
    elif target.size < 2:
        raise InputError("a single target band has no band spacing; pass target_fwhm")
    else:
        # Local spacing so that irregular grids (e.g. EnMAP's VNIR/SWIR) get a sensible width.
        fwhm = np.abs(np.gradient(target))
    if not np.all(fwhm > 0):
        raise InputError("target bands must have a positive FWHM (repeated target wavelengths?)")
    return fwhm


def coverage_mask(
    source_wavelengths: ArrayLike,
    target_wavelengths: ArrayLike,
    target_fwhm: ArrayLike | None = None,
) -> np.ndarray:
    """``(T,)`` bool: True where a target centre lies within one FWHM of the source range."""
    source = _wavelengths(source_wavelengths, "source wavelengths")
    target = _wavelengths(target_wavelengths, "target wavelengths")
    fwhm = _default_fwhm(target, target_fwhm)
    return (target >= source.min() - fwhm) & (target <= source.max() + fwhm)


def _hat_values(knots: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(P, S) linear-interpolation weights of sorted ``knots`` at ``points`` (0 outside the range)."""
    weights = np.zeros((points.size, knots.size))
    inside = (points >= knots[0]) & (points <= knots[-1])
    if knots.size == 1:
        weights[inside, 0] = 1.0
        return weights
    rows = np.flatnonzero(inside)
    right = np.clip(np.searchsorted(knots, points[rows], side="right"), 1, knots.size - 1)
    left = right - 1
    frac = (points[rows] - knots[left]) / (knots[right] - knots[left])
    weights[rows, left] = 1.0 - frac
    weights[rows, right] += frac
    return weights


def _gaussian_hat_integrals(knots: np.ndarray, centres: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """(T, S) integrals of a normal pdf N(centre, sigma) times each hat basis function on ``knots``.

    Exact closed form per knot interval: with z = (x - mu) / sigma,
    int N = Phi(z1) - Phi(z0) and int (x - mu) N = sigma * (phi(z0) - phi(z1)).
    """
    mu = centres[:, None]
    sigma = sigmas[:, None]
    z = (knots[None, :] - mu) / sigma
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    mass = cdf[:, 1:] - cdf[:, :-1]
    first_moment = sigma * (pdf[:, :-1] - pdf[:, 1:])
    width = np.diff(knots)[None, :]
    to_right = (first_moment + (mu - knots[None, :-1]) * mass) / width
    weights = np.zeros((centres.size, knots.size))
    weights[:, :-1] += mass - to_right
    weights[:, 1:] += to_right
    return weights


def gaussian_response_matrix(
    source_wavelengths: ArrayLike,
    target_wavelengths: ArrayLike,
    target_fwhm: ArrayLike | None = None,
    source_fwhm: ArrayLike | None = None,
) -> np.ndarray:
    """``(T, S)`` weights mapping source band values to target band values.

    Rows of covered target bands sum to 1; rows of uncovered ones (see :func:`coverage_mask`) are
    zero. ``target_fwhm`` defaults to the local spacing of the target grid.
    """
    source = _wavelengths(source_wavelengths, "source wavelengths")
    target = _wavelengths(target_wavelengths, "target wavelengths")
    fwhm = _default_fwhm(target, target_fwhm)
    order = np.argsort(source, kind="stable")
    knots = source[order]
    if np.any(np.diff(knots) <= 0):
        raise InputError("source wavelengths must not repeat")

    if source_fwhm is None:
        extra_fwhm = fwhm
    else:
        source_width = _per_band(source_fwhm, source.size, "source_fwhm")[order]
        width_at_target = np.interp(target, knots, source_width)
        extra_fwhm = np.sqrt(np.maximum(fwhm**2 - width_at_target**2, 0.0))
    sigmas = extra_fwhm * FWHM_TO_SIGMA

    sorted_weights = _hat_values(knots, target)
    blurred = sigmas > 0
    if knots.size > 1 and blurred.any():
        sorted_weights[blurred] = _gaussian_hat_integrals(knots, target[blurred], sigmas[blurred])

    covered = (target >= knots[0] - fwhm) & (target <= knots[-1] + fwhm)
    totals = sorted_weights.sum(axis=1)
    # Just outside the range a narrow response can hold (numerically) no mass: extend the edge band.
    starved = covered & (totals <= 1e-12)
    nearest = np.where(target[starved] < knots[0], 0, knots.size - 1)
    sorted_weights[starved] = 0.0
    sorted_weights[np.flatnonzero(starved), nearest] = 1.0
    totals = sorted_weights.sum(axis=1)

    sorted_weights[~covered] = 0.0
    sorted_weights[covered] /= totals[covered, None]
    weights = np.empty_like(sorted_weights)
    weights[:, order] = sorted_weights
    return weights


def resample_cube(
    cube: np.ndarray,
    source_wavelengths: ArrayLike,
    target_wavelengths: ArrayLike,
    target_fwhm: ArrayLike | None = None,
    source_fwhm: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``(S, H, W)`` onto the target grid: ``(cube (T, H, W) float32, covered (T,))``.

    Uncovered target bands are 0 and flagged False in ``covered``.
    """
    cube = np.asarray(cube)
    source = _wavelengths(source_wavelengths, "source wavelengths")
    if cube.ndim != 3 or cube.shape[0] != source.size:
        raise InputError(
            f"cube shape {cube.shape} does not match {source.size} source wavelengths; "
            "expected (bands, rows, cols)"
        )
    weights = gaussian_response_matrix(source, target_wavelengths, target_fwhm, source_fwhm)
    covered = weights.sum(axis=1) > 0
    flat = cube.reshape(cube.shape[0], -1).astype(np.float32, copy=False)
    out = (weights.astype(np.float32) @ flat).reshape((weights.shape[0],) + cube.shape[1:])
    return out, covered


def load_srf_csv(path: str | Path) -> SpectralResponse:
    """Load red/green/blue responses from a CSV with a wavelength column.

    The header may be a ``#`` comment line (the project's SRF files write ``# wavelength_nm,red,...``);
    the last non-numeric line before the data is taken as the header. Wavelengths in micrometres
    (a column name containing ``um``/``micro``) are converted to nm.
    """
    # The reader lives in band_sets because the QGIS plugin loads that module alone (without the
    # engine package, before torch) to check response files, so band_sets may import nothing from here.
    from engine.band_sets import read_csv_rows

    path = Path(path)
    header, rows = read_csv_rows(path)
    header = None if header is None else [name.lower() for name in header]
    if header is None or not rows:
        raise InputError(f"{path}: expected a header line and numeric rows of spectral responses")

    aliases = {"red": ("red", "r"), "green": ("green", "g"), "blue": ("blue", "b")}
    columns = {
        colour: next((header.index(name) for name in names if name in header), None)
        for colour, names in aliases.items()
    }
    missing = [colour for colour, index in columns.items() if index is None]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; found {header}. "
            "The CSV needs a wavelength column and red, green, blue columns"
        )
    wl_index = next(
        (i for i, name in enumerate(header) if name.startswith(("wavelength", "lambda", "wl"))), 0
    )
    try:
        table = np.array([[float(row[i]) for i in range(len(header))] for row in rows])
    except (ValueError, IndexError) as error:
        raise InputError(f"{path}: a data row is not {len(header)} numbers ({error})") from None

    wavelengths = table[:, wl_index]
    unit_name = header[wl_index]
    if "micro" in unit_name or "um" in unit_name.replace("_", " ").split():
        wavelengths = wavelengths * 1000.0
    order = np.argsort(wavelengths, kind="stable")
    responses = table[:, [columns["red"], columns["green"], columns["blue"]]].T
    return SpectralResponse(wavelengths[order], responses[:, order], path.stem)


def simulate_rgb_from_bands(cube: np.ndarray, band_indices: Sequence[int]) -> np.ndarray:
    """Pick bands of ``(C, H, W)`` as the RGB image (the SCDM paper's Houston setup: [4, 11, 22])."""
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise InputError(f"expected a (bands, rows, cols) cube, got shape {cube.shape}")
    indices = [int(i) for i in band_indices]
    bad = [i for i in indices if not 0 <= i < cube.shape[0]]
    if bad:
        raise InputError(f"band indices {bad} are outside 0..{cube.shape[0] - 1}")
    return cube[indices].astype(np.float32)


def _integration_weights(
    wavelengths_nm: np.ndarray, srf: SpectralResponse
) -> tuple[np.ndarray, np.ndarray]:
    """((3, C) weights over sorted cube bands, (3,) covered fraction of each response's area)."""
    srf_wl = srf.wavelengths_nm
    low = max(wavelengths_nm[0], srf_wl[0])
    high = min(wavelengths_nm[-1], srf_wl[-1])
    total_area = np.trapz(srf.responses, srf_wl, axis=1)
    if high <= low:
        return np.zeros((3, wavelengths_nm.size)), np.zeros(3)
    # On the union of both grids the response and the interpolated spectrum are both linear within
    # each interval, so the integral of their product is exactly
    # h/6 (2 r_a s_a + r_a s_b + r_b s_a + 2 r_b s_b).
    grid = np.union1d(wavelengths_nm, srf_wl)
    grid = grid[(grid >= low) & (grid <= high)]
    response = np.stack([np.interp(grid, srf_wl, curve) for curve in srf.responses])
    sixth = np.diff(grid) / 6.0
    quadrature = np.zeros_like(response)
    quadrature[:, :-1] += sixth * (2 * response[:, :-1] + response[:, 1:])
    quadrature[:, 1:] += sixth * (response[:, :-1] + 2 * response[:, 1:])
    weights = quadrature @ _hat_values(wavelengths_nm, grid)
    with np.errstate(divide="ignore", invalid="ignore"):
        coverage = np.where(total_area > 0, weights.sum(axis=1) / total_area, 0.0)
    return weights, coverage


def _band_order(wavelengths: np.ndarray) -> np.ndarray:
    order = np.argsort(wavelengths, kind="stable")
    if np.any(np.diff(wavelengths[order]) <= 0):
        raise InputError("cube wavelengths must not repeat")
    return order


def srf_coverage(wavelengths_nm: ArrayLike, srf: SpectralResponse) -> np.ndarray:
    """``(3,)`` fraction of each response's area that falls inside the cube's wavelength range."""
    wavelengths = _wavelengths(wavelengths_nm, "cube wavelengths")
    return _integration_weights(wavelengths[_band_order(wavelengths)], srf)[1]


def simulate_rgb_from_srf(
    cube: np.ndarray,
    wavelengths_nm: ArrayLike,
    srf: SpectralResponse,
    min_coverage: float = MIN_SRF_COVERAGE,
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate ``(C, H, W)`` against each response: ``(rgb (3, H, W) float32, coverage (3,))``.

    Each channel is normalised by the response area inside the cube's range, so a flat spectrum of
    value v gives v in every channel and RGB stays in the cube's units. Raises ``InputError`` if a
    channel has less than ``min_coverage`` of its response area inside the cube's range.
    """
    cube = np.asarray(cube)
    wavelengths = _wavelengths(wavelengths_nm, "cube wavelengths")
    if cube.ndim != 3 or cube.shape[0] != wavelengths.size:
        raise InputError(
            f"cube shape {cube.shape} does not match {wavelengths.size} wavelengths; "
            "expected (bands, rows, cols)"
        )
    order = _band_order(wavelengths)
    weights, coverage = _integration_weights(wavelengths[order], srf)
    too_low = (coverage < min_coverage) | (coverage <= 0)
    if too_low.any():
        channels = [name for name, low in zip(("red", "green", "blue"), too_low) if low]
        raise InputError(
            f"the scene covers {wavelengths.min():.0f}-{wavelengths.max():.0f} nm but the response "
            f"'{srf.name}' spans {srf.wavelengths_nm[0]:.0f}-{srf.wavelengths_nm[-1]:.0f} nm; "
            f"only {np.round(coverage * 100).astype(int).tolist()} % of the red/green/blue areas are "
            f"inside the scene ({', '.join(channels)} below {min_coverage:.0%}). "
            "Use a response that matches the scene's range, or band indices instead"
        )
    weights = weights / weights.sum(axis=1, keepdims=True)
    flat = cube[order].reshape(wavelengths.size, -1).astype(np.float32, copy=False)
    rgb = (weights.astype(np.float32) @ flat).reshape((3,) + cube.shape[1:])
    return rgb, coverage


def fill_uncovered(cube: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """(C, ...) with the bands outside the covered range set to the nearest covered band: what a
    camera response reaching a little beyond a source's range sees (for rendering only)."""
    index = np.flatnonzero(covered)
    filled = np.array(cube, copy=True)
    filled[:index[0]] = cube[index[0]]
    filled[index[-1] + 1:] = cube[index[-1]]
    return filled
