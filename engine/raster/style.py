"""The display of a written raster (``engine.display``), from its wavelengths and a sample of its
pixels, and the QGIS style file (``<name>.qml``) that QGIS applies when it opens ``<name>.tif``.

The stretch needs the values of three bands. To cost the same on a 500 px image and on a 16384 px
one, they come from at most ``SAMPLE_BLOCKS_PER_AXIS`` squared of the file's own blocks, spread
evenly over the raster (each block is read whole, so nothing is decompressed twice): the whole
raster up to 2048 x 2048 px, about 4 megapixels beyond.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, List

import numpy as np
import rasterio
from rasterio.windows import Window

from engine.display import Display, display_for, qgis_style
from engine.raster.spectral_metadata import read_wavelengths

SAMPLE_BLOCKS_PER_AXIS = 8


def style_path(raster_path) -> Path:
    """Where QGIS looks for a raster's default style: the same name with ``.qml``."""
    return Path(raster_path).with_suffix(".qml")


def _block_starts(length: int, block: int, count: int) -> List[int]:
    """Offsets of at most ``count`` blocks of ``block`` pixels, evenly spread over ``length``."""
    blocks = -(-length // block)
    picks = range(blocks) if blocks <= count else \
        sorted({round(i * (blocks - 1) / (count - 1)) for i in range(count)})
    return [index * block for index in picks]


def sample_windows(height: int, width: int, block_shape, per_axis: int = SAMPLE_BLOCKS_PER_AXIS) -> List[Window]:
    """Whole blocks of a raster, at most ``per_axis`` along each axis, evenly spread."""
    block_h, block_w = block_shape
    return [Window(col, row, min(block_w, width - col), min(block_h, height - row))
            for row in _block_starts(height, block_h, per_axis)
            for col in _block_starts(width, block_w, per_axis)]


def read_display(path) -> Display:
    """The display ``engine.display`` chooses for the raster at ``path`` (nodata left out)."""
    with rasterio.open(str(path)) as dataset:
        windows = sample_windows(dataset.height, dataset.width, dataset.block_shapes[0])

        def band_values(band: int) -> np.ndarray:
            return np.concatenate([dataset.read(band, window=window, masked=True).compressed()
                                   for window in windows])

        return display_for(read_wavelengths(dataset), dataset.count, band_values)


def write_style(raster_path) -> Path:
    """Write the display of the raster at ``raster_path`` as its QGIS default style; its path."""
    path = style_path(raster_path)
    path.write_text(qgis_style(read_display(raster_path)), encoding="utf-8")
    return path


def write_styles(raster_paths: Iterable, say: Callable[[str], None]) -> None:
    """``write_style`` for each finished output. The outputs are complete without their styles, so a
    style that cannot be written (a read-only folder, a full disk) is reported through ``say``, and
    the previous output's style is removed where it can be: its bands and stretch belong to another file."""
    for raster_path in raster_paths:
        try:
            write_style(raster_path)
        except OSError as exc:
            _remove_stale_style(raster_path)
            say(f"no display style written beside {raster_path} ({exc}); QGIS shows it with its default "
                "colours")


def _remove_stale_style(raster_path) -> None:
    try:
        style_path(raster_path).unlink(missing_ok=True)
    except OSError:
        pass  # a folder that refuses the new style may refuse this too; the warning already stands
