"""The contract between the inference pipeline and an output format.

A format writes one raster file at a path it is given: ``create(path, spec)`` makes it with the
georeference, the band count, nodata, the spectral metadata (``engine.raster.spectral_metadata``) and
the tags in ``spec``; the returned ``OutputFile`` takes finished blocks of pixels (``write_block``,
each pixel exactly once, in any order) and is closed once all have arrived. Making the result appear
atomically (a partial file renamed over the destination, removed after a failure) is done once for
every format by ``engine.raster.formats.atomic``; a format only names the extra files GDAL and QGIS
may keep beside its main file (``companions``), so that they move and vanish with it and a previous
file's are not applied to a new one.

Every write is checked: ``write_block`` and ``close`` raise ``engine.errors.OutputError`` when the file
could not be written completely (GDAL may only log a full disk, so a format checks what it wrote);
the atomic layer then removes the partial file and leaves the destination as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Protocol, Tuple

import numpy as np

from engine.raster.formats.encoding import OutputEncoding
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
    band_names: Optional[Tuple[str, ...]] = None  # a sensor's band names (descriptions "<name> (<nm> nm)")
    encoding: OutputEncoding = OutputEncoding()  # how values are stored (float32, float16, scaled integers)
    overviews: bool = True  # reduced-resolution copies inside the file, for fast display


class OutputFile(Protocol):
    """An output raster being written (a ``BlockWriter`` sink); ``clipped`` counts the values its
    encoding could not store (``engine.raster.formats.encoding``)."""

    clipped: int

    def write_block(self, values: np.ndarray, row_off: int, col_off: int) -> None:
        """Write (bands, h, w) float32 ``values`` with their top-left pixel at (row_off, col_off);
        ``OutputError`` if they could not be written."""

    def close(self) -> None:
        """Finish the file; after this it is complete on disk, or ``OutputError`` says why not."""


class OutputFormat(Protocol):
    """One output format; registered in ``engine.raster.formats.FORMATS``."""

    name: str  # shown in messages, e.g. "GeoTIFF"
    extensions: Tuple[str, ...]  # lower case with the dot, e.g. (".tif", ".tiff"); the first is the default
    # Optional: the smallest size of a file relative to its float32 pixels (bands x pixels x 4 bytes)
    # that compression can reach, for the free-space check before a run; 1.0 (uncompressed) if absent.
    least_size_fraction: float

    def create(self, path: Path, spec: OutputSpec) -> OutputFile:
        """Create the file at ``path`` with the georeference, spectral metadata and tags of ``spec``."""

    def companions(self, path: Path) -> Tuple[Path, ...]:
        """Files beside ``path`` that belong to it and that GDAL or QGIS apply to it when they open it
        (e.g. GDAL's ``.aux.xml``, external overviews and masks, world files)."""
