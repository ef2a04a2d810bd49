"""How an RGB image becomes the network's condition, and how the network's output returns to units.

Two transforms, chosen by the bundle (``engine.config.InputTransformConfig``):

``affine`` (the paper's): condition = (rgb - offset) / scale and output = v * scale + offset, with
offset/scale fixed (Houston DN: 3693 / 7410) or derived once per raster from the RGB's 99th
percentile. The network's units are the image's.

``chromatic`` (models for real imagery): the output is a spectrum *per unit of the pixel's
brightness*: output = v * mean(rgb) per pixel, so the network never has to learn exposure, units or
the image's scale, and a non-negative v gives a non-negative spectrum. The condition describes the
pixel's colour after the image-level corrections a photogrammetrist would make first:
- dark-object subtraction per channel (the ``dark_percentile``-th value): path radiance (haze) adds
  a bluish offset that desaturates every colour;
- a white point per channel (the ``white_percentile``-th value, after the subtraction): distributed
  imagery is stretched or white-balanced per channel.
The condition channels are the corrected chromaticity (r, g, b divided by their mean) and the
corrected brightness (log). Image statistics are taken once per raster (a decimated read in the
pipeline, the whole rendering in training), never per tile, so neighbouring tiles agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

CHROMATIC_CHANNELS = 4
BRIGHTNESS_FLOOR = 0.01  # log(brightness + floor): the darkest pixels stay finite
CHROMA_FLOOR = 1e-3


@dataclass(frozen=True)
class ImageStatistics:
    """What the transform needs to know about the whole image: per-channel levels (3,) each, and
    the affine map's offset and scale."""

    dark: tuple = (0.0, 0.0, 0.0)
    white: tuple = (1.0, 1.0, 1.0)
    offset: float = 0.0
    scale: float = 1.0


def _valid_values(rgb: np.ndarray, valid: Optional[np.ndarray]) -> np.ndarray:
    values = np.asarray(rgb, dtype=np.float64).reshape(3, -1)
    if valid is not None:
        values = values[:, np.asarray(valid, dtype=bool).reshape(-1)]
    return values[:, np.isfinite(values).all(axis=0)]


def chromatic_statistics(rgb: np.ndarray, valid: Optional[np.ndarray], dark_percentile: float,
                         white_percentile: float) -> ImageStatistics:
    """Per-channel dark and white levels of an image's valid pixels (white is measured above dark)."""
    values = _valid_values(rgb, valid)
    if values.shape[1] == 0:
        return ImageStatistics()
    dark = np.percentile(values, dark_percentile, axis=1)
    white = np.percentile(values, white_percentile, axis=1) - dark
    # A channel without contrast (a constant image) keeps a unit white, so colours stay finite.
    white = np.where(white > 0, white, np.maximum(np.abs(dark), 1.0))
    return ImageStatistics(dark=tuple(float(v) for v in dark), white=tuple(float(v) for v in white))


def chromatic_condition(rgb: np.ndarray, stats: ImageStatistics) -> np.ndarray:
    """(3, H, W) RGB -> (4, H, W) float32: corrected chromaticity and log brightness."""
    dark = np.asarray(stats.dark, dtype=np.float32)[:, None, None]
    white = np.asarray(stats.white, dtype=np.float32)[:, None, None]
    corrected = np.clip((np.asarray(rgb, dtype=np.float32) - dark) / white, 0.0, None)
    brightness = corrected.mean(axis=0, keepdims=True)
    chroma = corrected / np.maximum(brightness, CHROMA_FLOOR)
    return np.concatenate([chroma, np.log(brightness + BRIGHTNESS_FLOOR)]).astype(np.float32)


def chromatic_scale(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32: the per-pixel factor the network's output is multiplied by (mean linear RGB,
    negative noise clipped to zero)."""
    return np.clip(np.asarray(rgb, dtype=np.float32), 0.0, None).mean(axis=0)
