"""What the input RGB's numbers mean, and how the engine turns them into linear light.

Models work on linear RGB (proportional to scene radiance or reflectance), but most 8-bit imagery
is display-encoded: camera JPEGs and PNGs carry the sRGB transfer curve, orthophoto and satellite
quick-looks a gamma or a stretch. Fed to a model as if linear, the same scene looks less saturated
and its dark pixels too bright, which shifts every spectrum.

``Radiometry``:
- ``linear``: the values are proportional to light already (reflectance, radiance, raw DN);
- ``srgb``: the values are sRGB-encoded over the data type's full range (0-255 for 8-bit, 0-65535
  for 16-bit); they are decoded with the sRGB curve (IEC 61966-2-1) to linear 0-1;
- ``auto``: 8-bit input is display-encoded (``srgb``), anything else ``linear``.
The engine decodes before the model sees the image; the output is then in linear units of the
decoded input (0-1 for sRGB input: 1 is the encoding's white).
"""

from __future__ import annotations

from enum import Enum

import numpy as np

# Relative import: the plugin reads the choices at load time, as part of its own package.
from .errors import InputError


class Radiometry(str, Enum):
    LINEAR = "linear"
    SRGB = "srgb"
    AUTO = "auto"

    @classmethod
    def parse(cls, value) -> "Radiometry":
        try:
            return value if isinstance(value, cls) else cls(str(value).lower())
        except ValueError:
            choices = ", ".join(member.value for member in cls)
            raise InputError(f"unknown input radiometry '{value}': use {choices}",
                             parameter="radiometry") from None


# Largest code value per integer type: the white of a display encoding stored in it.
_CODE_WHITE = {"uint8": 255.0, "uint16": 65535.0}


def resolve(radiometry, dtype: str) -> Radiometry:
    """``auto`` decided for a raster of ``dtype``: 8-bit is display-encoded, the rest linear.
    An sRGB encoding needs an integer type whose full range is the encoding's (8 or 16 bit)."""
    chosen = Radiometry.parse(radiometry)
    if chosen is Radiometry.AUTO:
        return Radiometry.SRGB if str(dtype) == "uint8" else Radiometry.LINEAR
    if chosen is Radiometry.SRGB and str(dtype) not in _CODE_WHITE:
        raise InputError(f"an sRGB-encoded input must be 8- or 16-bit unsigned integers, this one is {dtype}: "
                         "choose linear radiometry for it", parameter="radiometry")
    return chosen


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """The sRGB decoding curve on values in 0-1 (values outside are clipped to it)."""
    v = np.clip(np.asarray(encoded, dtype=np.float32), 0.0, 1.0)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """The sRGB encoding curve: linear 0-1 -> encoded 0-1 (the inverse of ``srgb_to_linear``)."""
    v = np.clip(np.asarray(linear, dtype=np.float32), 0.0, 1.0)
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055).astype(np.float32)


def linearise(values: np.ndarray, radiometry: Radiometry, dtype: str) -> np.ndarray:
    """Input values (any shape, float32) as linear light, per a resolved ``radiometry``."""
    if radiometry is Radiometry.LINEAR:
        return values
    if radiometry is Radiometry.SRGB:
        return srgb_to_linear(np.asarray(values, dtype=np.float32) / _CODE_WHITE[str(dtype)])
    raise ValueError(f"resolve the radiometry '{radiometry.value}' for the raster's data type first")


def decoding_is_guessed(radiometry, dtype: str) -> bool:
    """Whether ``auto`` guessed the decoding: 8-bit input read as sRGB, when orthophotos and
    quick-looks are as often a linear stretch of their 8 bits. The uncertainty output then carries the
    difference between the two readings (``decoding_variance``)."""
    return Radiometry.parse(radiometry) is Radiometry.AUTO and str(dtype) == "uint8"


def as_linear_stretch(srgb_decoded: np.ndarray) -> np.ndarray:
    """Input that ``srgb`` decoded, read instead as linear over the same range: its codes over their
    white (0-1), so both readings share the white level."""
    return linear_to_srgb(srgb_decoded)


def decoding_variance(estimate: np.ndarray, alternative_estimate: np.ndarray) -> np.ndarray:
    """The variance a guessed decoding adds to an estimate: the squared difference from the estimate
    of the other reading (both in output units). The whole difference: which reading is right is
    unknown, so either estimate may be off by all of it."""
    return np.square(np.asarray(estimate, dtype=np.float64) - alternative_estimate)
