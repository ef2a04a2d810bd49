"""How output values are stored: float32 (default), float16, or integers with a scale and offset.

``float16`` halves the file (3 significant digits, values up to 65504: enough for reflectance and
8- to 16-bit DN); GeoTIFF stores it as a Float32 band with ``NBITS=16`` (IEEE half precision), which
GDAL reads as float32. ``uint16`` / ``int16`` store ``round((value - offset) / scale)`` and write the scale
and offset as GDAL band metadata, so GDAL and QGIS read physical values again (the "reflectance x
10000" convention of Sentinel-2 and Landsat products, with a scale fitted to the image). The scale
is chosen once per run from the input: ``HEADROOM`` times the input's bright level (its 99.9th
percentile in linear units) maps to the largest code, so values up to eight times the brightest input
(near-infrared of vegetation is at most a few times its visible) fit, in steps of 1/8192 (uint16) or
1/4096 (int16) of that level. Larger values are clipped to the largest code and counted; nodata gets a code
of its own (the largest uint16, the smallest int16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from engine.settings import OUTPUT_TYPES

HEADROOM = 8.0
# dtype -> (lowest code, highest code, nodata code) of the integer types
_CODES = {"uint16": (0, 65534, 65535), "int16": (-32767, 32767, -32768)}


@dataclass(frozen=True)
class OutputEncoding:
    """Stored = values for floats; round((values - offset) / scale) for integers (NaN -> nodata code)."""

    dtype: str = "float32"
    scale: float = 1.0
    offset: float = 0.0

    @property
    def is_integer(self) -> bool:
        return self.dtype in _CODES

    @property
    def file_dtype(self) -> str:
        """The raster data type GDAL is given (half floats are Float32 bands of 16 bits)."""
        return "float32" if self.dtype == "float16" else self.dtype

    @property
    def nbits(self) -> Optional[int]:
        return 16 if self.dtype == "float16" else None

    def nodata(self, float_nodata: Optional[float]) -> Optional[float]:
        """The nodata value the file declares: the float one, or the integer type's own code."""
        if not self.is_integer or float_nodata is None:
            return float_nodata
        return float(_CODES[self.dtype][2])

    def encode(self, values: np.ndarray) -> Tuple[np.ndarray, int]:
        """(stored array, number of values clipped to the type's range)."""
        if self.dtype == "float32":
            return values.astype(np.float32, copy=False), 0  # no copy: blocks are large
        if not self.is_integer:
            with np.errstate(over="ignore"):  # values beyond float16's range become inf: counted here
                half = values.astype(np.float16)
            clipped = int(np.count_nonzero(np.isinf(half) & np.isfinite(values)))
            return half.astype(np.float32), clipped
        low, high, nodata = _CODES[self.dtype]
        codes = np.rint((values - np.float32(self.offset)) / np.float32(self.scale))
        missing = np.isnan(codes)
        clipped = int(np.count_nonzero((codes < low) | (codes > high)))
        codes = np.clip(np.where(missing, 0, codes), low, high)
        codes[missing] = nodata
        return codes.astype(self.dtype), clipped


def output_encoding(output_type: str, bright_level: float) -> OutputEncoding:
    """The encoding of ``output_type`` for an input whose bright level (linear units) is given."""
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"unknown output type {output_type!r}")
    if output_type not in _CODES:
        return OutputEncoding(output_type)
    level = bright_level if math.isfinite(bright_level) and bright_level > 0 else 1.0
    return OutputEncoding(output_type, scale=HEADROOM * level / _CODES[output_type][1], offset=0.0)


def bright_level(rgb: np.ndarray, valid: np.ndarray, most: int = 1 << 12) -> float:
    """The 99.9th percentile of an image's valid linear RGB values (0 without any), from at most
    ``most`` evenly spaced pixels (the caller's memory stays flat whatever the image's size)."""
    flat, keep = np.asarray(rgb).reshape(3, -1), np.asarray(valid, dtype=bool).reshape(-1)
    step = max(1, flat.shape[1] // most)
    values = flat[:, ::step][:, keep[::step]]
    values = values[np.isfinite(values)]
    return float(np.percentile(values, 99.9)) if values.size else 0.0
