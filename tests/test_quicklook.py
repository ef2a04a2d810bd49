"""The demo's quicklook: a false-colour composite and spectral profiles from a real inference output."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.transform import from_origin

from engine.quicklook import quicklook
from engine.raster.pipeline import infer_raster


def test_quicklook_of_inference_output(tmp_path, tiny_bundle):
    rgb = tmp_path / "rgb.tif"
    data = (np.random.default_rng(0).random((3, 20, 30)) * 200).astype(np.uint8)
    with rasterio.open(rgb, "w", driver="GTiff", width=30, height=20, count=3, dtype="uint8",
                       crs="EPSG:32618", transform=from_origin(500000, 4000000, 5, 5)) as ds:
        ds.write(data)
    out = tmp_path / "hsi.tif"
    infer_raster(rgb, out, model=tiny_bundle, tile=32, overlap=8, sampler="ddim", steps=1, guidance=0.0)
    png = quicklook(out, tmp_path / "quicklook.png")
    header = png.read_bytes()[:8]
    assert header == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
