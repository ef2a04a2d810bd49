"""Raster input/output (engine.raster.io) on real EnMAP GeoTIFFs and rasters derived from them."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from engine.errors import InputError
from engine.raster import io as rio
from engine.raster.formats import OutputSpec
from engine.raster.formats.atomic import partial_path, remove_quietly
from engine.raster.formats.geotiff import GeoTIFF, GeoTIFFFile

ENMAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geotiff" / "enmap_potsdam"
MOSAIC = ENMAP / "enmap_potsdam_tiles_mosaic.tif"
TILE = ENMAP / "enmap_potsdam_tile_64_0.tif"
RGB = (44, 28, 9)  # 641, 551, 459 nm

pytestmark = pytest.mark.skipif(not MOSAIC.exists(), reason=f"shared data not found at {ENMAP}")


def write_variant(path: Path, data: np.ndarray, *, like: Path = MOSAIC, **overrides) -> Path:
    """Write ``data`` (bands, h, w) as a GeoTIFF with the georeferencing of ``like`` unless overridden."""
    with rasterio.open(like) as src:
        profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=str(data.dtype), crs=src.crs, transform=src.transform, nodata=src.nodata)
    profile.update(overrides)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def mosaic_rgb(window=None) -> np.ndarray:
    with rasterio.open(MOSAIC) as src:
        return src.read(RGB, window=window)


def output_spec(info, count, nodata, wavelengths, fwhm, tags):
    return OutputSpec(width=info.width, height=info.height, band_count=count, nodata=nodata,
                      georeference=info.georeference, wavelengths_nm=tuple(wavelengths),
                      fwhm_nm=None if fwhm is None else tuple(fwhm), tags=tags)


def test_inspect_real_enmap_tile():
    info = rio.inspect_input(TILE, RGB)
    assert (info.width, info.height, info.count) == (32, 32, 224)
    assert info.crs.to_epsg() == 32633 and info.nodata == -32768
    assert info.transform == Affine(30.0, 0.0, 364095.0, 0.0, -30.0, 5809965.0)
    assert info.dtype == "float32" and info.can_be_invalid
    assert rio.output_nodata(info) == -32768.0


@pytest.mark.parametrize("count", [1, 2])
def test_one_and_two_band_rasters_are_refused(tmp_path, count):
    path = write_variant(tmp_path / f"b{count}.tif", mosaic_rgb()[:count])
    with pytest.raises(InputError, match=rf"has {count} band.*at least three bands"):
        rio.inspect_input(path, (1, 2, 3))


def test_band_numbers_out_of_range_or_repeated_are_refused():
    with pytest.raises(InputError, match=r"225 out of range.*bands 1 to 224"):
        rio.inspect_input(TILE, (1, 2, 225))
    with pytest.raises(InputError, match=r"0 out of range"):
        rio.inspect_input(TILE, (0, 1, 2))
    with pytest.raises(InputError, match="repeat"):
        rio.inspect_input(TILE, (3, 3, 4))
    with pytest.raises(InputError, match="exactly 3"):
        rio.inspect_input(TILE, (1, 2, 3, 4))
    with pytest.raises(InputError, match="1-based band numbers"):
        rio.inspect_input(TILE, "red,green,blue")
    assert rio.parse_bands(" 4, 3 ,2") == (4, 3, 2)


def test_unreadable_missing_and_folder_inputs_are_refused(tmp_path):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a raster\n" * 10)
    with pytest.raises(InputError, match="cannot read .*junk.tif.* as a raster"):
        rio.inspect_input(junk)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(TILE.read_bytes()[:300])
    with pytest.raises(InputError, match="cannot read"):
        rio.inspect_input(truncated)
    with pytest.raises(InputError, match="does not exist"):
        rio.inspect_input(tmp_path / "nope.tif")
    with pytest.raises(InputError, match="is a folder"):
        rio.inspect_input(tmp_path)


def test_nodata_value_becomes_the_validity_mask():
    info = rio.inspect_input(MOSAIC, RGB)
    with rio.RGBReader(info) as reader:
        rgb, valid = reader.read(48, 80, 40, 40)  # straddles valid and nodata quadrants
    expected = mosaic_rgb()[:, 48:88, 80:120]
    assert rgb.dtype == np.float32 and rgb.shape == (3, 40, 40)
    np.testing.assert_array_equal(valid, np.all(expected != -32768, axis=0))
    assert 0 < valid.sum() < valid.size
    np.testing.assert_array_equal(rgb[:, valid], expected[:, valid])


def test_nan_alpha_and_internal_masks_become_invalid(tmp_path):
    data = mosaic_rgb(window=((0, 32), (0, 32))).astype(np.float32)
    nan = data.copy()
    nan[1, 3, 4] = np.nan
    nan[0, 10, 11] = np.inf
    path = write_variant(tmp_path / "nan.tif", nan, nodata=None)
    info = rio.inspect_input(path)
    assert info.nodata is None and info.can_be_invalid
    assert math.isnan(rio.output_nodata(info))
    with rio.RGBReader(info) as reader:
        _, valid = reader.read(0, 0, 32, 32)
    assert not valid[3, 4] and not valid[10, 11] and valid.sum() == 32 * 32 - 2

    # uint8 RGB + alpha band
    rgb8 = np.clip(data / 16, 0, 255).astype(np.uint8)
    alpha = np.full((1, 32, 32), 255, dtype=np.uint8)
    alpha[0, :5, :] = 0
    path = write_variant(tmp_path / "alpha.tif", np.concatenate([rgb8, alpha]), nodata=None,
                         photometric="RGB", alpha="YES")
    with rasterio.open(path) as src:
        assert src.colorinterp[3].name == "alpha"
    info = rio.inspect_input(path)
    assert info.can_be_invalid and math.isnan(rio.output_nodata(info))
    with rio.RGBReader(info) as reader:
        _, valid = reader.read(0, 0, 32, 32)
    assert not valid[:5].any() and valid[5:].all()

    # internal (per-dataset) mask
    path = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=3, dtype="uint16",
                           crs="EPSG:32633", transform=Affine(30, 0, 0, 0, -30, 0)) as dst:
            dst.write(np.clip(data, 0, 65535).astype(np.uint16))
            mask = np.full((32, 32), 255, dtype=np.uint8)
            mask[:, 20:] = 0
            dst.write_mask(mask)
    assert not any(p.name.endswith(".msk") for p in tmp_path.iterdir()), "the mask is internal"
    info = rio.inspect_input(path)
    assert info.can_be_invalid
    with rio.RGBReader(info) as reader:
        _, valid = reader.read(0, 0, 32, 32)
    assert valid[:, :20].all() and not valid[:, 20:].any()


def test_integer_raster_without_nodata_has_no_output_nodata(tmp_path):
    data = np.clip(mosaic_rgb(window=((0, 16), (0, 16))), 0, 65535).astype(np.uint16)
    info = rio.inspect_input(write_variant(tmp_path / "u16.tif", data, nodata=None))
    assert not info.can_be_invalid and rio.output_nodata(info) is None
    info = rio.inspect_input(write_variant(tmp_path / "u8.tif", (data // 16).astype(np.uint8), nodata=0))
    assert math.isnan(rio.output_nodata(info)), "0 is a value spectra take: it would hide valid pixels"
    info = rio.inspect_input(write_variant(tmp_path / "i16.tif", data.astype(np.int16) // 2, nodata=-9999))
    assert rio.output_nodata(info) == -9999.0
    info = rio.inspect_input(write_variant(tmp_path / "f64.tif", data.astype(np.float64), nodata=1e300))
    assert math.isnan(rio.output_nodata(info)), "1e300 does not fit float32"


def test_decimated_read_is_bounded_and_masked():
    info = rio.inspect_input(MOSAIC, RGB)
    with rio.RGBReader(info) as reader:
        rgb, valid = reader.read_overview(max_pixels=1000)
    assert rgb.shape[1] * rgb.shape[2] <= 1100
    assert 0 < valid.mean() < 1
    assert np.all(rgb[:, valid] != -32768)


def test_output_path_checks(tmp_path):
    with pytest.raises(InputError, match="does not exist: create it"):
        rio.check_output_path(tmp_path / "missing" / "out.tif")
    with pytest.raises(InputError, match="is a folder"):
        rio.check_output_path(tmp_path)
    src = shutil.copy(TILE, tmp_path / "in.tif")
    with pytest.raises(InputError, match="is the input"):
        rio.check_output_path(tmp_path / "." / "in.tif", src)
    assert rio.check_output_path(tmp_path / "ok.tif", src) == tmp_path / "ok.tif"
    assert not (tmp_path / "ok.tif").exists()


@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.geteuid() == 0:  # root ignores permission bits; the immutable attribute stops it
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
            folder.chmod(0o755)
            pytest.skip("running as root on a file system without chattr +i: cannot make a read-only folder")
        immutable = True
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def test_read_only_output_folder_is_refused(read_only_folder):
    with pytest.raises(InputError, match="read-only|cannot write"):
        rio.check_output_path(read_only_folder / "out.tif")
        partial_path(read_only_folder / "out.tif")
    assert list(read_only_folder.iterdir()) == []


def test_partial_file_sits_beside_the_destination_with_normal_permissions(tmp_path):
    dest = tmp_path / "result.tif"
    partial = partial_path(dest)
    assert partial.parent == tmp_path and partial.name.startswith(".result.tif.partial-")
    assert partial.suffix == ".tif" and partial.exists()
    mask = os.umask(0)
    os.umask(mask)
    assert (partial.stat().st_mode & 0o777) == (0o666 & ~mask)
    remove_quietly(partial)
    assert not partial.exists()


def test_output_profile_and_spectral_metadata_read_back_by_gdalinfo(tmp_path):
    info = rio.inspect_input(TILE, RGB)
    wl = [400.0 + 10 * i for i in range(5)]
    fwhm = [9.5, 10.0, 10.0, 10.0, 12.25]
    path = tmp_path / "spectral.tif"
    output = GeoTIFF().create(path, output_spec(info, 5, rio.output_nodata(info), wl, fwhm,
                                                {"SCDM_MODEL": "m", "SCDM_SEED": 7}))
    output.write_block(np.ones((5, 32, 32), dtype=np.float32), 0, 0)
    output.close()
    assert not Path(str(path) + ".aux.xml").exists(), "everything fits in the GeoTIFF itself"
    with rasterio.open(path) as ds:
        assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256)
        assert ds.compression.name.lower() == "zstd" and ds.dtypes == ("float32",) * 5
        assert ds.nodata == -32768 and ds.crs.to_epsg() == 32633 and ds.transform == info.transform
    gdalinfo = shutil.which("gdalinfo")
    if gdalinfo is None:
        pytest.skip("gdalinfo not installed")
    doc = json.loads(subprocess.run([gdalinfo, "-json", "-mdd", "all", str(path)], check=True,
                                    capture_output=True, text=True).stdout)
    assert doc["metadata"][""]["SCDM_MODEL"] == "m" and doc["metadata"][""]["SCDM_SEED"] == "7"
    assert doc["metadata"]["ENVI"]["wavelength"] == "{400, 410, 420, 430, 440}"
    assert doc["metadata"]["ENVI"]["fwhm"] == "{9.5, 10, 10, 10, 12.25}"
    assert doc["metadata"]["ENVI"]["wavelength_units"] == "Nanometers"
    assert doc["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"] == "ZSTD"
    assert doc["metadata"]["IMAGE_STRUCTURE"]["PREDICTOR"] == "3"
    band = doc["bands"][4]
    assert band["description"] == "Band 5 (440.0 nm)"
    assert band["metadata"][""] == {"wavelength": "440", "wavelength_units": "Nanometers", "fwhm": "12.25"}
    assert band["metadata"]["IMAGERY"] == {"CENTRAL_WAVELENGTH_UM": "0.44", "FWHM_UM": "0.01225"}
    text = subprocess.run([gdalinfo, "-mdd", "all", str(path)], check=True, capture_output=True, text=True).stdout
    assert "Description = Band 1 (400.0 nm)" in text and "CENTRAL_WAVELENGTH_UM=0.4" in text


def test_block_writer_assembles_rectangles_into_whole_blocks_with_spill(tmp_path):
    rng = np.random.default_rng(0)
    height, width, channels = 600, 530, 3
    expected = rng.normal(size=(channels, height, width)).astype(np.float32)
    path = tmp_path / "blocks.tif"
    profile = dict(driver="GTiff", width=width, height=height, count=channels, dtype="float32", tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        one_block = channels * 256 * 256 * 4
        writer = rio.BlockWriter([rio.OutputTarget(GeoTIFFFile(dst), slice(0, channels))], height, width, channels,
                                 memory_bytes=2 * one_block, scratch_dir=str(tmp_path))
        # rows of irregular rectangles, row-major, as the blender emits them
        row_cuts = [0, 37, 100, 290, 301, 511, 600]
        col_cuts = [0, 5, 200, 260, 400, 530]
        for r0, r1 in zip(row_cuts[:-1], row_cuts[1:]):
            for c0, c1 in zip(col_cuts[:-1], col_cuts[1:]):
                writer.put(r0, c0, expected[:, r0:r1, c0:c1].copy())
        assert writer.pending == 0
        assert writer.blocks_written == 3 * 3, "each block is written exactly once"
        assert writer.spilled > 0, "the budget forced blocks out to the scratch file"
        assert writer.peak_held_bytes <= 3 * one_block + one_block
        writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks.tif"], "the scratch file leaves no trace"
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(), expected)


def test_gcp_georeferencing_is_copied(tmp_path):
    from rasterio.control import GroundControlPoint

    gcps = [GroundControlPoint(row=0, col=0, x=364095.0, y=5809965.0),
            GroundControlPoint(row=0, col=16, x=364575.0, y=5809965.0),
            GroundControlPoint(row=16, col=0, x=364095.0, y=5809485.0)]
    src = tmp_path / "gcps.tif"
    with rasterio.open(src, "w", driver="GTiff", width=16, height=16, count=3, dtype="uint8") as dst:
        dst.write(np.ones((3, 16, 16), dtype=np.uint8))
        dst.gcps = (gcps, rasterio.crs.CRS.from_epsg(32633))
    info = rio.inspect_input(src)
    out = tmp_path / "out.tif"
    output = GeoTIFF().create(out, output_spec(info, 2, None, [500.0, 600.0], None, {}))
    output.write_block(np.zeros((2, 16, 16), dtype=np.float32), 0, 0)
    output.close()
    with rasterio.open(out) as ds:
        points, crs = ds.gcps
        assert crs.to_epsg() == 32633 and [(p.row, p.col, p.x, p.y) for p in points] == \
            [(p.row, p.col, p.x, p.y) for p in gcps]
