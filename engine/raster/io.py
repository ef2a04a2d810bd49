"""Raster input and output for the inference pipeline.

Input: any raster GDAL can open; three of its bands (1-based, chosen by the user) are the red,
green and blue channels. They are read window by window as float32 together with a validity mask
that combines everything GDAL knows about invalid pixels (the nodata value, an internal or
sidecar mask, an alpha band: ``read_masks``) and non-finite values (NaN, inf).

Output files are written by an output format (``engine.raster.formats``); this module gives them
the nodata value, the partial files that make their writing atomic, and the block assembly.

Nodata of the output: the input's nodata value when it is negative and float32 represents it exactly
(it is then converted); NaN when the input's nodata is zero or positive (0 of 8-bit orthophotos: a
model's spectra are non-negative and do reach 0 and other ordinary values, which would then read as
nodata), when float32 cannot hold it, or when the input has none but can still mark pixels invalid
(an alpha band, a mask, a floating-point type that may hold NaN); no nodata at all when every input
pixel is necessarily valid (an integer raster without nodata or mask).

``BlockWriter`` assembles finished pixels into whole output blocks and writes each block once, so
compressed blocks are never rewritten; blocks that wait long (the block row straddling the
boundary between processed and unprocessed tile rows) are spilled to an anonymous scratch file
once the in-memory budget is exceeded, which keeps memory bounded for any raster width.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from engine.errors import InputError, OutputError
from engine.radiometry import Radiometry, linearise
from engine.settings import input_path_problem, not_a_raster, parse_bands

BLOCK_SIZE = 256
# What rasterio raises when GDAL fails: its own errors, and GDAL's (CPLE_*) where it passes them on.
GDAL_ERRORS = (RasterioError, CPLE_BaseError)
SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64", "float32", "float64")


# ----------------------------------------------------------------------------------------------
# input


@dataclass(frozen=True)
class Georeference:
    """Where a raster lies: CRS and geotransform, or ground control points (``gcps``: points, CRS)."""

    crs: Optional[object]
    transform: object
    gcps: Tuple[list, Optional[object]] = ([], None)

    @property
    def has_transform(self) -> bool:
        """Whether there is a geotransform: rasterio reports the identity for a raster without one
        (and GDAL does not write an identity geotransform either)."""
        return self.transform is not None and self.transform != Affine.identity()

    @property
    def present(self) -> bool:
        """Whether the raster is georeferenced at all: a CRS, a geotransform or ground control points."""
        return self.crs is not None or self.has_transform or bool(self.gcps[0])


@dataclass(frozen=True)
class InputInfo:
    """What the pipeline needs to know about an input raster (read once, file closed)."""

    path: str
    width: int
    height: int
    count: int
    bands: Tuple[int, int, int]
    dtype: str
    crs: Optional[object]
    transform: object
    nodata: Optional[float]
    gcps: Tuple[list, Optional[object]]
    can_be_invalid: bool
    descriptions: Tuple[Optional[str], ...] = field(default=())

    @property
    def georeference(self) -> Georeference:
        return Georeference(self.crs, self.transform, self.gcps)


def _open_input(path: str):
    problem = input_path_problem(path)
    if problem is not None:
        raise InputError(problem, parameter="input")
    try:
        return open_raster(path)
    except GDAL_ERRORS as exc:
        raise InputError(not_a_raster(path, gdal_message(exc)), parameter="input") from None


@contextmanager
def quiet_rasterio_warnings():
    """Without two rasterio warnings about valid rasters: NotGeoreferencedWarning (a raster without
    georeference is a valid input; the run says so once in its log, and its output has none either)
    and NodataShadowWarning (a nodata value and an alpha band: the nodata value marks the invalid
    pixels, as in GDAL and QGIS)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        warnings.simplefilter("ignore", NodataShadowWarning)
        yield


class _ToLog(logging.Handler):
    """Passes each distinct message on to a run's log, once."""

    def __init__(self, log: Callable[[str], None]):
        super().__init__(logging.WARNING)
        self.log, self.seen = log, set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.seen:
            self.seen.add(message)
            self.log(f"GDAL: {message}")


@contextmanager
def gdal_notices(log: Callable[[str], None]):
    """While inside: ``quiet_rasterio_warnings``, and the warnings GDAL gives through rasterio's
    logger (e.g. a tag of a damaged file that it ignores) go to ``log`` as "GDAL: ..." lines, once
    each, instead of bare lines on stderr (Python's last-resort handler)."""
    logger = logging.getLogger("rasterio")
    handler = _ToLog(log)
    logger.addHandler(handler)
    try:
        with quiet_rasterio_warnings():
            yield
    finally:
        logger.removeHandler(handler)


def open_raster(path, mode: str = "r", **profile):
    """``rasterio.open`` without the warnings of ``quiet_rasterio_warnings``."""
    with quiet_rasterio_warnings():
        return rasterio.open(str(path), mode, **profile)


def gdal_message(exc: BaseException) -> str:
    """What GDAL said behind a rasterio error: the innermost message of its chain of causes (rasterio's
    own outer message is "Read failed. See previous exception for details.")."""
    messages = []
    while exc is not None:
        messages.append(str(exc).strip())
        exc = exc.__cause__ or exc.__context__
    specific = [m for m in messages if m and "See previous exception" not in m]
    return (specific or messages or ["unknown error"])[-1]


def damaged_input(path: str, where: str, detail: str) -> InputError:
    """The error for an input GDAL opens but cannot read."""
    return InputError(f"input raster '{path}' is damaged: {where}: {detail}. The file may be truncated or corrupt "
                      "(gdalinfo -checksum reads every block and shows where): copy or export it again",
                      parameter="input")


def _tiff_blocks(dataset, band: int):
    """(row, column, offset, size) of each block of a GeoTIFF band; offset and size None for a block
    the file does not hold."""
    block_h, block_w = dataset.block_shapes[band - 1]
    for row in range(-(-dataset.height // block_h)):
        for col in range(-(-dataset.width // block_w)):
            offset = dataset.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
            size = dataset.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)
            yield row, col, None if offset is None else int(offset), None if size is None else int(size)


def tiff_block_problem(dataset, path, bands: Sequence[int], sparse_ok: bool) -> Optional[str]:
    """For a GeoTIFF file: the first block of ``bands`` that lies beyond the end of the file (a
    truncated file), or that the file does not hold at all (unless ``sparse_ok``: GDAL reads such a
    block as nodata), in words; None when all are in place or the file is no local GeoTIFF. About
    5 microseconds a block: the table of block offsets, no pixel, is read."""
    if dataset.driver != "GTiff" or not os.path.isfile(path):
        return None
    file_size = os.path.getsize(path)
    interleaved = dataset.interleaving is not None and dataset.interleaving.name == "pixel"
    for band in (list(bands)[:1] if interleaved else bands):  # pixel-interleaved bands share their blocks
        for row, col, offset, size in _tiff_blocks(dataset, band):
            where = f"band {band}, block row {row}, column {col}"
            if offset is None or size is None:
                if not sparse_ok:
                    return f"{where} was never written"
            elif offset + size > file_size:
                return f"{where} ends at byte {offset + size} but the file has {file_size} bytes"
    return None


def _check_bands(src, path: str, bands: Tuple[int, ...], expected_bands: int) -> None:
    count = src.count
    if count < 3:
        raise InputError(
            f"'{path}' has {count} band{'s' if count != 1 else ''}; the model needs an RGB image: "
            "give a raster with at least three bands (red, green, blue)", parameter="input")
    if len(bands) != expected_bands:
        raise InputError(
            f"the model takes {expected_bands} input bands (red, green, blue) but {len(bands)} band numbers "
            f"were given ({', '.join(map(str, bands))}): give exactly {expected_bands}, e.g. 1,2,3", parameter="bands")
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise InputError(
            f"band number{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} out of range: '{path}' has bands "
            f"1 to {count}; choose the red, green and blue bands among them (e.g. 1,2,3)", parameter="bands")
    if len(set(bands)) != len(bands):
        raise InputError(f"band numbers {bands} repeat a band: give three different bands for red, green and blue",
                         parameter="bands")


def _pixel_type(src, path: str, bands: Tuple[int, ...]) -> str:
    """The bands' common type, float64 when they differ; refuses types the model cannot use."""
    dtypes = {src.dtypes[b - 1] for b in bands}
    unsupported = sorted(d for d in dtypes if d not in SUPPORTED_DTYPES)
    if unsupported:
        raise InputError(f"'{path}' holds {', '.join(unsupported)} pixels, which the model cannot use: "
                         "convert the bands to an integer or floating-point type (e.g. gdal_translate -ot Float32)",
                         parameter="input")
    return src.dtypes[bands[0] - 1] if len(dtypes) == 1 else "float64"


def _describe(src, path: str, bands: Tuple[int, ...], dtype: str) -> InputInfo:
    flags = [set(src.mask_flag_enums[b - 1]) for b in bands]
    all_valid = all(f == {MaskFlags.all_valid} for f in flags)
    floating = any(np.issubdtype(np.dtype(src.dtypes[b - 1]), np.floating) for b in bands)
    return InputInfo(
        path=path, width=src.width, height=src.height, count=src.count, bands=tuple(bands), dtype=dtype,
        crs=src.crs, transform=src.transform, nodata=src.nodata,
        gcps=src.gcps if src.gcps and src.gcps[0] else ([], None),
        can_be_invalid=not all_valid or floating or src.nodata is not None,
        descriptions=tuple(src.descriptions),
    )


def inspect_input(path, bands=(1, 2, 3), expected_bands: int = 3) -> InputInfo:
    """Open ``path``, check it can feed the model, and describe it; raises ``InputError``, also for a
    GeoTIFF whose blocks of the chosen bands lie beyond its end (truncated: found before any work)."""
    path = str(path)
    bands = parse_bands(bands)
    with _open_input(path) as src:
        _check_bands(src, path, bands, expected_bands)
        info = _describe(src, path, bands, _pixel_type(src, path, bands))
        problem = tiff_block_problem(src, path, bands, sparse_ok=True)
    if problem is not None:
        raise damaged_input(path, problem, "the file is shorter than its own table of blocks says")
    return info


class RGBReader:
    """Reads the chosen bands of an input raster as float32 linear light with a validity mask:
    ``radiometry`` (resolved for the raster's data type, ``engine.radiometry``) says how to decode."""

    def __init__(self, info: InputInfo, radiometry: Radiometry = Radiometry.LINEAR):
        self.info = info
        self.radiometry = radiometry
        self.src = open_raster(info.path)

    def close(self) -> None:
        self.src.close()

    def __enter__(self) -> "RGBReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _finish(self, data: np.ndarray, masks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        rgb = data.astype(np.float32, copy=False)
        valid = np.all(masks > 0, axis=0) & np.all(np.isfinite(rgb), axis=0)
        return linearise(rgb, self.radiometry, self.info.dtype), valid

    def read(self, row_off: int, col_off: int, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
        """RGB (3, height, width) float32 and validity (height, width) bool of one window."""
        window = Window(col_off, row_off, width, height)
        with self._reading(f"rows {row_off} to {row_off + height - 1}, columns {col_off} to {col_off + width - 1}"):
            data = self.src.read(self.info.bands, window=window)
            masks = self.src.read_masks(self.info.bands, window=window)
        return self._finish(data, masks)

    @contextmanager
    def _reading(self, where: str):
        """A read GDAL fails on (a damaged file: reads may fail late, at one tile) as ``InputError``."""
        try:
            yield
        except GDAL_ERRORS as exc:
            raise damaged_input(self.info.path, f"GDAL could not read {where}", gdal_message(exc)) from None

    def read_overview(self, max_pixels: int = 1 << 20) -> Tuple[np.ndarray, np.ndarray]:
        """A nearest-neighbour decimated read of the whole raster with at most ~``max_pixels`` pixels.

        Used once per raster for statistics (normalisation, fill value), never per tile.
        """
        h, w = self.info.height, self.info.width
        factor = max(1.0, math.sqrt(h * w / max_pixels))
        out_h, out_w = max(1, int(round(h / factor))), max(1, int(round(w / factor)))
        with self._reading("an overview of the raster"):
            data = self.src.read(self.info.bands, out_shape=(3, out_h, out_w), resampling=Resampling.nearest)
            masks = self.src.read_masks(self.info.bands, out_shape=(3, out_h, out_w), resampling=Resampling.nearest)
        return self._finish(data, masks)


# ----------------------------------------------------------------------------------------------
# output


def output_nodata(info: InputInfo) -> Optional[float]:
    """The output's nodata value (see the module docstring)."""
    if info.nodata is not None:
        value = float(info.nodata)
        if math.isnan(value):
            return float("nan")
        if math.isfinite(value) and value < 0 and abs(value) <= float(np.finfo(np.float32).max) \
                and float(np.float32(value)) == value:
            return value
        return float("nan")
    return float("nan") if info.can_be_invalid else None


def check_output_path(path, input_path=None, parameter: str = "output") -> Path:
    """Check an output path can be written; raises ``InputError(parameter=parameter)`` naming the
    problem and the fix."""
    if path is None or str(path) == "":
        raise InputError("no output path given: name the raster to write", parameter=parameter)
    out = Path(path).expanduser()
    if out.is_dir():
        raise InputError(f"output '{out}' is a folder: give a file name such as {out / 'result.tif'}",
                         parameter=parameter)
    _check_folder(out.parent if str(out.parent) else Path("."), parameter)
    if input_path is not None and out.exists():
        try:
            if out.resolve() == Path(input_path).resolve() or out.samefile(input_path):
                raise InputError(f"output '{out}' is the input raster: choose another output path",
                                 parameter=parameter)
        except OSError:
            pass
    return out


def _check_folder(folder: Path, parameter: str) -> None:
    if not folder.exists():
        raise InputError(f"the output folder '{folder}' does not exist: create it or choose another output path",
                         parameter=parameter)
    if not folder.is_dir():
        raise InputError(f"'{folder}' is not a folder: choose an output path inside an existing folder",
                         parameter=parameter)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"the output folder '{folder}' is read-only: choose a folder you can write to",
                         parameter=parameter)


# ----------------------------------------------------------------------------------------------
# block assembly


class BlockSink(Protocol):
    """What ``BlockWriter`` writes to (an output format's open file)."""

    def write_block(self, values: np.ndarray, row_off: int, col_off: int) -> None:
        """Write (bands, h, w) float32 ``values`` with their top-left pixel at (row_off, col_off)."""


@dataclass(frozen=True)
class OutputTarget:
    """One output file fed from a slice of the assembled channels."""

    sink: BlockSink
    channels: slice


class _Block:
    __slots__ = ("row_off", "col_off", "height", "width", "data", "filled", "slot")

    def __init__(self, row_off, col_off, height, width):
        self.row_off, self.col_off, self.height, self.width = row_off, col_off, height, width
        self.data: Optional[np.ndarray] = None
        self.filled = 0
        self.slot: Optional[int] = None


class BlockWriter:
    """Collects finished pixels (disjoint rectangles, any order) and writes whole output blocks.

    ``put(row, col, values)`` stores a (channels, h, w) float32 rectangle of final values; a block is
    written to every target as soon as all its pixels have arrived, then forgotten. While more than
    ``memory_bytes`` of incomplete blocks are held, the least recently touched ones go to an
    anonymous scratch file (unlinked at creation, so it never outlives the process) and come back
    when their next pixels arrive.
    """

    def __init__(self, targets: Sequence[OutputTarget], height: int, width: int, channels: int,
                 block: int = BLOCK_SIZE, memory_bytes: int = 256 << 20, scratch_dir: Optional[str] = None):
        self.targets = list(targets)
        self.height, self.width, self.channels, self.block = height, width, channels, block
        self.memory_bytes = memory_bytes
        self.scratch_dir = scratch_dir
        self._blocks: "OrderedDict[Tuple[int, int], _Block]" = OrderedDict()
        self._held_bytes = 0
        self._scratch = None
        self._free_slots: List[int] = []
        self._next_slot = 0
        self.blocks_written = 0
        self.spilled = 0
        self.peak_held_bytes = 0

    @property
    def slot_bytes(self) -> int:
        return self.channels * self.block * self.block * 4

    def put(self, row_off: int, col_off: int, values: np.ndarray) -> None:
        c, h, w = values.shape
        if c != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {c}")
        b = self.block
        for bi in range(row_off // b, (row_off + h - 1) // b + 1):
            for bj in range(col_off // b, (col_off + w - 1) // b + 1):
                blk = self._get(bi, bj)
                r0, r1 = max(row_off, blk.row_off), min(row_off + h, blk.row_off + blk.height)
                c0, c1 = max(col_off, blk.col_off), min(col_off + w, blk.col_off + blk.width)
                blk.data[:, r0 - blk.row_off:r1 - blk.row_off, c0 - blk.col_off:c1 - blk.col_off] = \
                    values[:, r0 - row_off:r1 - row_off, c0 - col_off:c1 - col_off]
                blk.filled += (r1 - r0) * (c1 - c0)
                if blk.filled == blk.height * blk.width:
                    self._write(blk)
                    del self._blocks[(bi, bj)]
                    self._held_bytes -= blk.data.nbytes
                    blk.data = None
        self._spill_if_needed()

    def _get(self, bi: int, bj: int) -> _Block:
        key = (bi, bj)
        blk = self._blocks.get(key)
        if blk is None:
            r0, c0 = bi * self.block, bj * self.block
            blk = _Block(r0, c0, min(self.block, self.height - r0), min(self.block, self.width - c0))
            blk.data = np.empty((self.channels, blk.height, blk.width), dtype=np.float32)
            self._held_bytes += blk.data.nbytes
            self._blocks[key] = blk
        else:
            self._blocks.move_to_end(key)
            if blk.data is None:
                self._load(blk)
        self.peak_held_bytes = max(self.peak_held_bytes, self._held_bytes)
        return blk

    def _write(self, blk: _Block) -> None:
        for target in self.targets:
            target.sink.write_block(blk.data[target.channels], blk.row_off, blk.col_off)
        if blk.slot is not None:
            self._free_slots.append(blk.slot)
            blk.slot = None
        self.blocks_written += 1

    def _spill_if_needed(self) -> None:
        if self._held_bytes <= self.memory_bytes:
            return
        for key in list(self._blocks):
            if self._held_bytes <= self.memory_bytes // 2:
                break
            blk = self._blocks[key]
            if blk.data is None:
                continue
            self._store(blk)

    def _store(self, blk: _Block) -> None:
        if blk.slot is None:
            blk.slot = self._free_slots.pop() if self._free_slots else self._next_slot
            if blk.slot == self._next_slot:
                self._next_slot += 1
        try:
            if self._scratch is None:
                self._scratch = tempfile.TemporaryFile(dir=self.scratch_dir, prefix=".scdm-scratch-")
            os.pwrite(self._scratch.fileno(), np.ascontiguousarray(blk.data).data, blk.slot * self.slot_bytes)
        except OSError as exc:  # e.g. a full disk: the scratch file lives beside the output
            raise OutputError(f"could not keep unfinished output blocks in a scratch file in '{self.scratch_dir}' "
                              f"({exc.strerror}): free some space there, or raise the writer's memory budget",
                              parameter="output") from None
        self._held_bytes -= blk.data.nbytes
        blk.data = None
        self.spilled += 1

    def _load(self, blk: _Block) -> None:
        shape = (self.channels, blk.height, blk.width)
        nbytes = int(np.prod(shape)) * 4
        raw = os.pread(self._scratch.fileno(), nbytes, blk.slot * self.slot_bytes)
        blk.data = np.frombuffer(bytearray(raw), dtype=np.float32).reshape(shape)
        self._held_bytes += blk.data.nbytes

    @property
    def pending(self) -> int:
        return len(self._blocks)

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None
        self._blocks.clear()
        self._held_bytes = 0
