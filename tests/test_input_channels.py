"""The input's red, green and blue are checked against the model's channel wavelengths when the raster
carries wavelength metadata, so an input stored blue, green, red is never read with red and blue swapped."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from engine.bundle import default_bundle_path
from engine.errors import InputError
from engine.raster import infer_raster
from engine.raster.spectral_metadata import channel_mismatch, write_spectral_metadata

RGB_NM = (640.0, 550.0, 460.0)


def test_matching_channels_pass_and_swapped_ones_get_the_right_fix():
    assert channel_mismatch((655.0, 560.0, 490.0), (1, 2, 3), RGB_NM) is None
    problem = channel_mismatch((490.0, 560.0, 655.0), (1, 2, 3), RGB_NM)
    assert "band 1 at 490 nm" in problem and problem.endswith("choose bands 3,2,1")
    # a 4-band red, green, blue, near-infrared image read as bands 4,2,1
    assert channel_mismatch((650.0, 560.0, 480.0, 830.0), (4, 2, 1), RGB_NM).endswith("choose bands 1,2,3")


def _bgr_raster(path: Path) -> Path:
    values = np.random.default_rng(0).integers(20, 200, size=(3, 16, 16)).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=3, dtype="uint8",
                       crs="EPSG:32618", transform=from_origin(500000, 4000000, 5, 5)) as dst:
        dst.write(values)
        write_spectral_metadata(dst, (480.0, 560.0, 650.0), None)
    return path


def test_a_blue_green_red_raster_is_refused_by_name_and_runs_with_the_fix(tmp_path):
    if not default_bundle_path().exists():
        pytest.skip("no bundled model")
    source = _bgr_raster(tmp_path / "bgr.tif")
    out = tmp_path / "hsi.tif"
    with pytest.raises(InputError) as refused:
        infer_raster(source, out, device="cpu")
    assert refused.value.parameter == "bands" and "choose bands 3,2,1" in str(refused.value)
    assert not out.exists()
    infer_raster(source, out, bands=(3, 2, 1), device="cpu")
    assert out.exists()
