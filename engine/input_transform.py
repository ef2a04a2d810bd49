"""How an RGB image becomes the network's condition, and how the network's output returns to units.

A bundle's ``normalisation`` (``engine.config.Normalisation``) chooses the transform:

``fixed`` / ``rgb_percentile`` (the paper's affine map): condition = (rgb - offset) / scale and
output = v * scale + offset, with offset/scale fixed (Houston DN: 3693 / 7410) or the scale derived
once per raster from the RGB's 99th percentile. The network's units are the image's.

``chromatic`` (models for real imagery): the output is a spectrum *per unit of the pixel's
brightness*: output = v * b with b the pixel's mean linear RGB (never below ``brightness_floor``
times the image's white), so the network never has to learn exposure, units or the image's scale,
and a non-negative v gives a non-negative spectrum. The condition describes the pixel's colour after
the image-level corrections a photogrammetrist would make first:
- dark-object subtraction per channel (the ``dark_percentile``-th value): path radiance (haze) adds
  a bluish offset that desaturates every colour;
- a white point per channel (the ``white_percentile``-th value, above the dark level): distributed
  imagery is stretched or white-balanced per channel.
The condition channels are the corrected chromaticity (r, g, b divided by their mean) and the
corrected brightness (log). Image statistics are taken once per raster (a decimated read in the
pipeline, the whole rendering in training), never per tile, so neighbouring tiles agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

CHROMATIC_CHANNELS = 4
LOG_BRIGHTNESS_FLOOR = 0.01  # log(brightness + floor): the darkest pixels stay finite
CHROMA_FLOOR = 1e-3


@dataclass(frozen=True)
class ImageStatistics:
    """What a transform needs to know about the whole image.

    ``offset`` / ``scale``: the affine map (the chromatic transform leaves them 0 / 1). ``dark`` /
    ``white``: per-channel levels of the chromatic transform (white measured above dark);
    ``white_level``: the image's white in input units, the reference of the brightness floor.
    """

    offset: float = 0.0
    scale: float = 1.0
    dark: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    white: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    white_level: float = 1.0


def valid_values(rgb: np.ndarray, valid: Optional[np.ndarray]) -> np.ndarray:
    """(3, N) float64 values of the valid, finite pixels."""
    values = np.asarray(rgb, dtype=np.float64).reshape(3, -1)
    if valid is not None:
        values = values[:, np.asarray(valid, dtype=bool).reshape(-1)]
    return values[:, np.isfinite(values).all(axis=0)]


def affine_statistics(kind: str, offset: float, scale: float, percentile: float, target: float,
                      rgb: np.ndarray, valid: Optional[np.ndarray]) -> ImageStatistics:
    """The affine map: the stored one ("fixed"), or the scale from the RGB's percentile."""
    if kind == "fixed":
        return ImageStatistics(offset=float(offset), scale=float(scale))
    values = valid_values(rgb, valid)
    level = float(np.percentile(values, percentile)) if values.size else 0.0
    return ImageStatistics(offset=0.0, scale=level / target if level > 0 else 1.0)


def chromatic_statistics(rgb: np.ndarray, valid: Optional[np.ndarray], dark_percentile: float,
                         white_percentile: float) -> ImageStatistics:
    """Per-channel dark and white levels of an image's valid pixels (white is measured above dark)."""
    values = valid_values(rgb, valid)
    if values.shape[1] == 0:
        return ImageStatistics()
    dark = np.percentile(values, dark_percentile, axis=1)
    high = np.percentile(values, white_percentile, axis=1)
    white = high - dark
    # A channel without contrast (a constant image) keeps a unit white, so colours stay finite.
    white = np.where(white > 0, white, np.maximum(np.abs(dark), 1.0))
    level = float(np.mean(high))
    return ImageStatistics(dark=tuple(float(v) for v in dark), white=tuple(float(v) for v in white),
                           white_level=level if level > 0 else 1.0)


def chromatic_condition(rgb: np.ndarray, stats: ImageStatistics, brightness_cap: Optional[float] = None) -> np.ndarray:
    """(3, H, W) RGB -> (4, H, W) float32: corrected chromaticity and log brightness (brightness above
    ``brightness_cap``, a fraction of the white, reads as the cap)."""
    dark = np.asarray(stats.dark, dtype=np.float32)[:, None, None]
    white = np.asarray(stats.white, dtype=np.float32)[:, None, None]
    corrected = np.clip((np.asarray(rgb, dtype=np.float32) - dark) / white, 0.0, None)
    brightness = corrected.mean(axis=0, keepdims=True)
    chroma = corrected / np.maximum(brightness, CHROMA_FLOOR)
    if brightness_cap is not None:
        brightness = np.minimum(brightness, np.float32(brightness_cap))
    return np.concatenate([chroma, np.log(brightness + LOG_BRIGHTNESS_FLOOR)]).astype(np.float32)


def chromatic_scale(rgb: np.ndarray, stats: ImageStatistics, floor: float) -> np.ndarray:
    """(H, W) float32: the pixel's mean linear RGB, at least ``floor`` x the image's white level.

    The floor keeps the network's target (spectrum / brightness) bounded for black pixels, whose
    ratio no colour can tell."""
    brightness = np.clip(np.asarray(rgb, dtype=np.float32), 0.0, None).mean(axis=0)
    return np.maximum(brightness, np.float32(floor * stats.white_level))
