"""GeoTIFF output: tiled (256 x 256), DEFLATE-compressed (floating-point predictor), BigTIFF when
needed, float32, with the input's CRS, geotransform (rotation and shear terms included) or GCPs,
size and nodata, and the spectral metadata of ``engine.raster.spectral_metadata``."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import rasterio
from rasterio.windows import Window

from engine.raster.formats.base import OutputSpec
from engine.raster.io import BLOCK_SIZE
from engine.raster.spectral_metadata import write_spectral_metadata


def open_geotiff(path: Path, spec: OutputSpec):
    """Create the float32 GeoTIFF at ``path`` with the georeference of ``spec``; an open rasterio dataset."""
    georeference = spec.georeference
    profile = dict(
        driver="GTiff", width=spec.width, height=spec.height, count=spec.band_count, dtype="float32",
        crs=georeference.crs, transform=georeference.transform, nodata=spec.nodata,
        tiled=True, blockxsize=BLOCK_SIZE, blockysize=BLOCK_SIZE, interleave="band",
        compress="deflate", predictor=3, bigtiff="IF_SAFER", num_threads="ALL_CPUS",
    )
    if georeference.gcps[0]:
        profile.pop("transform")
    dst = rasterio.open(str(path), "w", **profile)
    if georeference.gcps[0]:
        dst.gcps = georeference.gcps
    return dst


class GeoTIFFFile:
    """An open output GeoTIFF."""

    def __init__(self, dataset):
        self.dataset = dataset

    def write_block(self, values: np.ndarray, row_off: int, col_off: int) -> None:
        self.dataset.write(values, window=Window(col_off, row_off, values.shape[2], values.shape[1]))

    def close(self) -> None:
        self.dataset.close()


class GeoTIFF:
    name = "GeoTIFF"
    extensions = (".tif", ".tiff")

    def create(self, path: Path, spec: OutputSpec) -> GeoTIFFFile:
        dataset = open_geotiff(path, spec)
        try:
            write_spectral_metadata(dataset, spec.wavelengths_nm, spec.fwhm_nm, dict(spec.tags))
        except BaseException:
            dataset.close()
            raise
        return GeoTIFFFile(dataset)

    def companions(self, path: Path) -> Tuple[Path, ...]:
        return (Path(str(path) + ".aux.xml"),)
