"""GeoTIFF output: tiled (256 x 256), compressed (``COMPRESSION``, with the floating-point predictor for
floats and the horizontal one for integers), BigTIFF when needed, float32 or another
``engine.raster.formats.encoding`` type (scaled integers carry their scale and offset), with the input's
CRS, geotransform (rotation and shear terms included) or GCPs, size and nodata, the spectral metadata
of ``engine.raster.spectral_metadata``, and for outputs larger than ``OVERVIEWS_FROM`` px internal
overviews (averages at 2, 4, 8, ... down to less than a block) built when the last block is written,
so that QGIS displays a large output fast.

Writing is checked (``OutputError``): GDAL's errors while writing a block, and after closing, the
file itself: GDAL compresses on worker threads and only logs a failed write there (a full disk
leaves blocks that point beyond the end of the file), so ``close`` re-opens the file and checks its
size and that every block it lists lies within it.

Compression: the bundled model's float32 outputs measured 0.68 to 0.82 of their raw size (ZSTD, demo
and 4096 x 4096 px; 16-bit types about 0.4); smoother images compress more, so the free-space check
counts on no less than half (``least_size_fraction``), refusing only runs that cannot fit."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
from rasterio.enums import ColorInterp, Resampling
from rasterio.windows import Window

from engine.errors import OutputError
from engine.raster.formats.base import OutputSpec
from engine.raster.formats.encoding import OutputEncoding
from engine.raster.io import BLOCK_SIZE, GDAL_ERRORS, gdal_message, open_raster, tiff_block_problem
from engine.raster.spectral_metadata import write_spectral_metadata


# Chosen by measurement (docs/output-storage/, python -m benchmarks.output_storage): on a 4096 x 4096 output
# ZSTD stores float32 in 0.684 of the raw size against DEFLATE's 0.788, for 83 s of writing against 69 s
# (the model took 1177 s); GDAL has read it since 2.3, QGIS on every platform with it.
COMPRESSION = "zstd"


def open_geotiff(path: Path, spec: OutputSpec, compression: str = COMPRESSION):
    """Create the GeoTIFF at ``path`` with the georeference and encoding of ``spec``; an open rasterio dataset."""
    georeference, encoding = spec.georeference, spec.encoding
    profile = dict(
        driver="GTiff", width=spec.width, height=spec.height, count=spec.band_count, dtype=encoding.file_dtype,
        crs=georeference.crs, transform=georeference.transform, nodata=encoding.nodata(spec.nodata),
        tiled=True, blockxsize=BLOCK_SIZE, blockysize=BLOCK_SIZE, interleave="band",
        compress=compression, predictor=2 if encoding.is_integer else 3, bigtiff="IF_SAFER", num_threads="ALL_CPUS",
        # Every band is a wavelength, none a colour: GDAL reports band 1 of a MINISBLACK GeoTIFF as
        # Gray whatever is set, and QGIS then lists it so. Under MINISWHITE (which GDAL never applies
        # to pixel values) GDAL writes each band's interpretation, Undefined, in its own metadata.
        photometric="MINISWHITE",
    )
    if encoding.nbits:
        profile["nbits"] = encoding.nbits
    if georeference.gcps[0] or not georeference.has_transform:
        profile.pop("transform")
    dst = open_raster(path, "w", **profile)
    dst.colorinterp = [ColorInterp.undefined] * spec.band_count
    if encoding.is_integer:
        dst.scales = [encoding.scale] * spec.band_count
        dst.offsets = [encoding.offset] * spec.band_count
    if georeference.gcps[0]:
        dst.gcps = georeference.gcps
    return dst


OVERVIEWS_FROM = 2048  # px on the longer side: smaller outputs display fast without (overviews add ~1/3 in size)


def overview_factors(height: int, width: int, block: int = BLOCK_SIZE) -> Tuple[int, ...]:
    """2, 4, 8, ... until the reduced image fits in one block; none up to ``OVERVIEWS_FROM`` px."""
    if max(height, width) <= OVERVIEWS_FROM:
        return ()
    factors, factor = [], 2
    while max(height, width) / (factor // 2) > block:
        factors.append(factor)
        factor *= 2
    return tuple(factors)


class GeoTIFFFile:
    """An open output GeoTIFF: takes float32 blocks, stores them in its encoding (``clipped`` counts
    the values beyond the encoding's range), builds the overviews on ``close``."""

    def __init__(self, dataset, encoding: OutputEncoding = OutputEncoding(), overviews: bool = True):
        self.dataset, self.encoding, self.overviews = dataset, encoding, overviews
        self.clipped = 0

    def write_block(self, values: np.ndarray, row_off: int, col_off: int) -> None:
        stored, clipped = self.encoding.encode(values)
        self.clipped += clipped
        try:
            self.dataset.write(stored, window=Window(col_off, row_off, values.shape[2], values.shape[1]))
        except GDAL_ERRORS as exc:
            raise OutputError(f"GDAL could not write the block at row {row_off}, column {col_off}: "
                              f"{gdal_message(exc)}") from None

    def close(self) -> None:
        path, shape = self.dataset.name, (self.dataset.count, self.dataset.height, self.dataset.width)
        factors = overview_factors(self.dataset.height, self.dataset.width) if self.overviews else ()
        try:
            if factors:
                self.dataset.build_overviews(list(factors), Resampling.average)
            self.dataset.close()
        except GDAL_ERRORS as exc:
            raise OutputError(f"GDAL could not finish the file: {gdal_message(exc)}") from None
        check_written(path, shape)


def check_written(path, shape: Tuple[int, int, int]) -> None:
    """``OutputError`` unless the closed GeoTIFF at ``path`` opens with ``shape`` (bands, rows,
    columns) and holds every block it lists (``tiff_block_problem``)."""
    try:
        with open_raster(path) as dataset:
            found = (dataset.count, dataset.height, dataset.width)
            problem = tiff_block_problem(dataset, path, range(1, dataset.count + 1), sparse_ok=False)
    except GDAL_ERRORS as exc:
        raise OutputError(f"the written file cannot be opened: {gdal_message(exc)}") from None
    if found != shape:
        raise OutputError(f"the written file has {found[0]} bands of {found[2]} x {found[1]} px instead of "
                          f"{shape[0]} of {shape[2]} x {shape[1]}")
    if problem is not None:
        raise OutputError(f"the written file is incomplete: {problem}")


class GeoTIFF:
    name = "GeoTIFF"
    extensions = (".tif", ".tiff")
    least_size_fraction = 0.5  # see the module docstring

    def create(self, path: Path, spec: OutputSpec) -> GeoTIFFFile:
        try:
            dataset = open_geotiff(path, spec)
        except GDAL_ERRORS as exc:
            raise OutputError(f"GDAL could not create the file: {gdal_message(exc)}") from None
        try:
            write_spectral_metadata(dataset, spec.wavelengths_nm, spec.fwhm_nm, dict(spec.tags), spec.band_names)
        except BaseException:
            dataset.close()
            raise
        return GeoTIFFFile(dataset, spec.encoding, spec.overviews)

    def companions(self, path: Path) -> Tuple[Path, ...]:
        """GDAL's metadata (``.aux.xml``, the older ``.aux``), external overviews (``.ovr``, which
        ``gdaladdo`` and QGIS's pyramids write) and masks (``.msk``), and the world files GDAL reads
        when a GeoTIFF holds no geotransform of its own."""
        name = str(path)
        return (Path(name + ".aux.xml"), path.with_suffix(".aux"), Path(name + ".ovr"), Path(name + ".msk"),
                path.with_suffix(".tfw"), Path(name + "w"), path.with_suffix(".wld"))
