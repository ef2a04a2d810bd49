"""The contract between the inference pipeline and an output format.

A format writes one raster file at a path it is given: ``create(path, spec)`` makes it with the
georeference, the band count, nodata, the spectral metadata (``engine.raster.spectral_metadata``) and
the tags in ``spec``; the returned ``OutputFile`` takes finished blocks of pixels (``write_block``,
each pixel exactly once, in any order) and is closed once all have arrived. Making the result appear
atomically (a partial file renamed over the destination, removed after a failure) is done once for
every format by ``engine.raster.formats.atomic``; a format only names the extra files GDAL may write
beside its main file (``companions``), so that they move and vanish with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Protocol, Tuple

import numpy as np

from engine.raster.io import Georeference


@dataclass(frozen=True)
class OutputSpec:
    """Everything about an output raster but its pixels."""

    width: int
    height: int
    band_count: int
    nodata: Optional[float]
    georeference: Georeference
    wavelengths_nm: Tuple[float, ...]
    fwhm_nm: Optional[Tuple[float, ...]]
    tags: Mapping[str, object]


class OutputFile(Protocol):
    """An output raster being written (a ``BlockWriter`` sink)."""

    def write_block(self, values: np.ndarray, row_off: int, col_off: int) -> None:
        """Write (bands, h, w) float32 ``values`` with their top-left pixel at (row_off, col_off)."""

    def close(self) -> None:
        """Finish the file; after this it is complete on disk."""


class OutputFormat(Protocol):
    """One output format; registered in ``engine.raster.formats.FORMATS``."""

    name: str  # shown in messages, e.g. "GeoTIFF"
    extensions: Tuple[str, ...]  # lower case with the dot, e.g. (".tif", ".tiff"); the first is the default

    def create(self, path: Path, spec: OutputSpec) -> OutputFile:
        """Create the file at ``path`` with the georeference, spectral metadata and tags of ``spec``."""

    def companions(self, path: Path) -> Tuple[Path, ...]:
        """Files that may be written beside ``path`` and belong to it (e.g. GDAL's ``.aux.xml``)."""
