"""Spectra consistent with the input RGB: the fundamental-metamer / metameric-black split.

With a camera response R (3 x C, on the model grid, in the units that map the output spectra to the
input's linear RGB), every spectrum x splits into a part R's rows span, which alone decides the RGB,
and a metameric black that the camera cannot see (Lin and Finlayson, "Physically plausible spectral
reconstruction", 2020). Replacing the first part by the one the input RGB dictates,

    x' = x + R^T (R R^T)^-1 (rgb - R x),

keeps the model's metameric black and makes R x' = rgb exactly. Output spectra must also stay
non-negative: bands the projection pushes below zero are held at zero and the rest projected again
(an active-set solution of the nearest non-negative spectrum that renders to the RGB); a pixel whose RGB
no non-negative spectrum can give (one channel far above the others, beyond the camera's gamut) is
clipped at zero last and stays the one inexact case.

A known camera's nominal response is first scaled per channel to the image's exposure and white
balance (``with_channel_gains``), so that only the metamer changes. When the camera is unknown,
``estimate_response`` fits R from the model's own spectra and the input
(per channel non-negative least squares with a second-difference smoothness penalty), so that the
projection then removes what the model's spectra and the input disagree on beyond a camera's reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError

PROJECTION_ROUNDS = 20
SMOOTHNESS = 1e-2  # second-difference penalty, relative to the spectra's mean squared value per band


@dataclass(frozen=True)
class CameraResponse:
    """Rows red, green, blue over the model's bands; ``source`` says where it came from."""

    weights: np.ndarray  # (3, C) float64
    source: str

    def render(self, spectra: np.ndarray) -> np.ndarray:
        """(C, ...) -> (3, ...)."""
        return np.tensordot(self.weights, spectra, axes=1)


def project(spectra: np.ndarray, rgb: np.ndarray, response: CameraResponse, non_negative: bool = True) -> np.ndarray:
    """(C, ...) spectra and (3, ...) linear RGB -> spectra with ``response.render(out) == rgb``."""
    shape = spectra.shape
    x = spectra.reshape(shape[0], -1).astype(np.float64)
    target = rgb.reshape(3, -1).astype(np.float64)
    free = np.ones_like(x, dtype=bool)
    out = _onto_rgb(x, target, response.weights, free)
    if non_negative:
        for _ in range(PROJECTION_ROUNDS):  # active set: bands pushed below zero are held at zero
            negative = out < 0
            if not negative.any():
                break
            free &= ~negative
            out = _onto_rgb(np.where(free, x, 0.0), target, response.weights, free)
        out = np.maximum(out, 0.0)
    return out.reshape(shape).astype(spectra.dtype)


def _onto_rgb(x: np.ndarray, target: np.ndarray, weights: np.ndarray, free: np.ndarray) -> np.ndarray:
    """The nearest spectra to ``x`` (C, P) that change only their ``free`` bands and render to
    ``target`` (3, P): x + F R^T (R F R^T)^-1 (target - R x), one 3 x 3 system per pixel."""
    gram = np.einsum("ic,jc,cp->pij", weights, weights, free.astype(np.float64))
    gram += 1e-12 * np.trace(weights @ weights.T) * np.eye(3)  # a pixel left with < 3 free bands stays solvable
    residual = (target - weights @ x).T[..., None]
    multipliers = np.linalg.solve(gram, residual)[..., 0].T  # (3, P)
    return x + free * (weights.T @ multipliers)


def reprojection_error(spectra: np.ndarray, rgb: np.ndarray, response: CameraResponse) -> float:
    """Root-mean-square of (R x - rgb) relative to the RGB's root-mean-square."""
    residual = response.render(spectra.astype(np.float64)) - rgb
    return float(np.sqrt(np.mean(residual ** 2)) / max(float(np.sqrt(np.mean(np.square(rgb, dtype=np.float64)))), 1e-12))


def _second_difference(count: int) -> np.ndarray:
    d = np.zeros((count - 2, count))
    for i in range(count - 2):
        d[i, i:i + 3] = (1.0, -2.0, 1.0)
    return d


def estimate_response(spectra: np.ndarray, rgb: np.ndarray, smoothness: float = SMOOTHNESS) -> CameraResponse:
    """A camera response (3, C) that maps ``spectra`` (C, N) to ``rgb`` (3, N): per channel,
    non-negative least squares with a second-difference penalty (responses are smooth)."""
    from scipy.optimize import nnls

    bands = spectra.shape[0]
    x = spectra.reshape(bands, -1).T.astype(np.float64)
    y = rgb.reshape(3, -1).astype(np.float64)
    penalty = np.sqrt(smoothness * np.mean(x ** 2) * x.shape[0]) * _second_difference(bands)
    design = np.vstack([x, penalty])
    rows = [nnls(design, np.concatenate([y[c], np.zeros(len(penalty))]), maxiter=50 * bands)[0] for c in range(3)]
    weights = np.stack(rows)
    if (weights.sum(axis=1) <= 0).any():
        raise InputError("could not estimate the camera's response from the image (a channel fits no band): "
                         "give the camera's response as a CSV file", parameter="consistency")
    return CameraResponse(weights, "estimated from the image")


def with_channel_gains(response: CameraResponse, spectra: np.ndarray, rgb: np.ndarray) -> CameraResponse:
    """The response with each row scaled by the least-squares gain from the rendered ``spectra``
    (C, N) to ``rgb`` (3, N): the image's exposure and white balance, which a camera's nominal
    response does not know and a projection must not mistake for a metamer."""
    rendered = response.render(spectra.reshape(spectra.shape[0], -1)).astype(np.float64)
    target = rgb.reshape(3, -1).astype(np.float64)
    gains = np.sum(rendered * target, axis=1) / np.maximum(np.sum(rendered * rendered, axis=1), 1e-12)
    if (gains <= 0).any():
        raise InputError("the camera response does not fit the image (a channel's gain is not positive): check the "
                         "band order and the response file", parameter="consistency")
    return CameraResponse(response.weights * gains[:, None], f"{response.source} (exposure and white balance fitted)")


def response_from_csv(path: Path, wavelengths_nm: Sequence[float]) -> CameraResponse:
    """A camera's response from a CSV (wavelength in nm, then red, green, blue; the format of the
    shared camera responses), integrated over the model's bands with rows summing to 1, as the
    training renderings are (so the model's output maps to the input's white)."""
    from engine.rgb_simulation import camera_on_grid
    from engine.spectral import load_srf_csv

    try:
        response = load_srf_csv(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the camera response {path}: {exc}. Give a CSV with a wavelength column (nm) "
                         "and red, green, blue columns", parameter="consistency") from exc
    return CameraResponse(camera_on_grid(response, wavelengths_nm).weights.astype(np.float64), f"camera {Path(path).name}")
