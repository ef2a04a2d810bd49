"""Output formats: chosen by extension from the registry, unknown extensions refused before any file
exists, spectral metadata read back by the same module that writes it."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from engine.errors import InputError
from engine.raster import formats
from engine.raster.formats.geotiff import GeoTIFF
from engine.raster.pipeline import infer_raster
from engine.raster.spectral_metadata import read_wavelengths, write_spectral_metadata

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def rgb_file(tmp_path):
    data = np.random.default_rng(0).integers(100, 4000, (3, 20, 20)).astype(np.uint16)
    path = tmp_path / "rgb.tif"
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=3, dtype="uint16",
                       transform=Affine(5.0, 0, 300000.0, 0, -5.0, 5000000.0), crs="EPSG:32618") as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def cascade(tiny_bundle):
    from engine.bundle import load_bundle

    return load_bundle(tiny_bundle, device="cpu")


def run(cascade, src, dst, **kw):
    return infer_raster(src, dst, model=cascade, tile=16, overlap=4, sampler="ddim", steps=1, guidance=0.0,
                        device="cpu", **kw)


@pytest.mark.parametrize("name", ["out.img", "out", "out.tif.png"])
def test_an_extension_no_format_writes_is_refused_naming_the_supported_ones(cascade, rgb_file, tmp_path, name):
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError) as raised:
        run(cascade, rgb_file, tmp_path / name)
    assert raised.value.parameter == "output"
    message = str(raised.value)
    assert "GeoTIFF (.tif, .tiff)" in message and f"e.g. '{tmp_path / Path(name).stem}.tif'" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_vrt_output_without_a_cluster_is_refused_naming_both_ways_out(cascade, rgb_file, tmp_path):
    """.vrt is the sharded output of a cluster run (``engine.raster.sharded``); alone it is refused."""
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError) as raised:
        run(cascade, rgb_file, tmp_path / "out.vrt")
    assert raised.value.parameter == "output"
    assert "set cluster" in str(raised.value) and "write a .tif" in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_each_optional_output_is_checked_under_its_own_name(cascade, rgb_file, tmp_path):
    with pytest.raises(InputError) as raised:
        run(cascade, rgb_file, tmp_path / "out.tif", stage1_output=tmp_path / "s1.img")
    assert raised.value.parameter == "stage1_output"
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("name", ["out.tiff", "OUT.TIF"])
def test_tif_and_tiff_in_any_case_are_geotiff(cascade, rgb_file, tmp_path, name):
    report = run(cascade, rgb_file, tmp_path / name)
    with rasterio.open(report.output_path) as ds:
        assert ds.driver == "GTiff" and ds.count == 48
        assert len(read_wavelengths(ds)) == 48
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["rgb.tif", name, Path(name).stem + ".qml"])


class RecordingFormat:
    """A format added to the registry: GeoTIFF pixels behind another extension, recording its calls."""

    name = "Recorded"
    extensions = (".rec",)
    created = []

    def create(self, path, spec):
        self.created.append((Path(path), spec.band_count, spec.tags["SCDM_PRODUCT"]))
        return GeoTIFF().create(path, spec)

    def companions(self, path):
        return ()


def test_a_registered_format_is_used_for_its_extension(cascade, rgb_file, tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "FORMATS", formats.FORMATS + (RecordingFormat(),))
    assert ".rec" in formats.supported_extensions()
    report = run(cascade, rgb_file, tmp_path / "out.rec", stage1_output=tmp_path / "s1.tif")
    assert [(count, product) for _, count, product in RecordingFormat.created] == [(48, "sample")]
    assert RecordingFormat.created[0][0].name.startswith(".out.rec.partial-"), "written beside, then renamed"
    with rasterio.open(report.output_path) as ds:
        assert ds.count == 48
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.qml", "out.rec", "rgb.tif", "s1.qml", "s1.tif"]


def test_spectral_metadata_round_trip(tmp_path):
    wavelengths, fwhm = [412.5, 500.0, 987.25], [10.0, 12.5, 20.0]
    with rasterio.open(tmp_path / "s.tif", "w", driver="GTiff", width=4, height=4, count=3, dtype="float32") as dst:
        write_spectral_metadata(dst, wavelengths, fwhm, {"SCDM_MODEL": "m"})
    with rasterio.open(tmp_path / "s.tif") as ds:
        np.testing.assert_allclose(read_wavelengths(ds), wavelengths)
        assert ds.tags()["SCDM_MODEL"] == "m" and ds.tags(3)["fwhm"] == "20"


def test_scene_loading_does_not_import_the_report_module():
    tree = ast.parse((REPO / "engine" / "data.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "engine.raster.spectral_metadata" in imported and "engine.report" not in imported


# ----------------------------------------------------------------------------------------------
# storage: data types, scale and offset, overviews


def test_integer_encodings_round_to_the_scale_clip_and_give_nan_its_own_code():
    from engine.raster.formats.encoding import HEADROOM, output_encoding

    encoding = output_encoding("uint16", bright_level=0.5)
    assert encoding.scale == pytest.approx(HEADROOM * 0.5 / 65534) and encoding.offset == 0.0
    values = np.array([[[0.0, 0.3, 3.99, 4.5, np.nan, -0.1]]], np.float32)
    stored, clipped = encoding.encode(values)
    assert stored.dtype == np.uint16 and clipped == 2  # 4.5 above 8 x 0.5, -0.1 below 0
    assert stored[0, 0].tolist() == [0, round(0.3 / encoding.scale), round(3.99 / encoding.scale), 65534, 65535, 0]
    assert encoding.nodata(float("nan")) == 65535 and encoding.nodata(None) is None
    signed = output_encoding("int16", bright_level=0.5)
    stored, clipped = signed.encode(values)
    assert stored[0, 0, 5] == round(-0.1 / signed.scale) and stored[0, 0, 4] == -32768 and clipped == 1
    half, clipped = output_encoding("float16", 0.5).encode(np.array([1e5, 1.2345], np.float32))
    assert half.dtype == np.float32 and clipped == 1 and half[1] == np.float16(1.2345)
    assert output_encoding("uint16", bright_level=0.0).scale == pytest.approx(HEADROOM / 65534)


@pytest.mark.parametrize("size, factors", [((20, 20), ()), ((2048, 256), ()), ((2049, 100), (2, 4, 8, 16)),
                                           ((300, 4100), (2, 4, 8, 16, 32)), ((8192, 8193), (2, 4, 8, 16, 32, 64))])
def test_overview_factors_halve_until_one_block(size, factors):
    from engine.raster.formats.geotiff import overview_factors

    assert overview_factors(*size, block=256) == factors


@pytest.fixture(scope="module")
def bundled():
    from engine.bundle import default_bundle_path, load_bundle

    return load_bundle(default_bundle_path(), device="cpu")  # trained: outputs in the input's range


@pytest.mark.parametrize("output_type", ["float16", "uint16", "int16"])
def test_a_run_stores_its_type_and_reads_back_the_float32_values(bundled, tmp_path, output_type):
    rng = np.random.default_rng(4)  # colours as aerial images have them: brightness varies more than hue
    data = (rng.uniform(300, 3000, (1, 40, 300)) * rng.uniform(0.8, 1.2, (3, 40, 300))).astype(np.uint16)
    data[:, :3, :4] = 0
    src = tmp_path / "in.tif"
    with rasterio.open(src, "w", driver="GTiff", width=300, height=40, count=3, dtype="uint16", nodata=0,
                       transform=Affine(5.0, 0, 3e5, 0, -5.0, 5e6), crs="EPSG:32618") as dst:
        dst.write(data)
    messages = []
    run(bundled, src, tmp_path / "f32.tif")
    run(bundled, src, tmp_path / "small.tif", output_type=output_type, log=messages.append)
    assert not [m for m in messages if "clipped" in m]
    with rasterio.open(tmp_path / "f32.tif") as full, rasterio.open(tmp_path / "small.tif") as small:
        reference, valid = full.read(), full.read_masks(1) > 0
        stored = {"float16": ("float32", "16")}.get(output_type, (output_type, None))
        assert (small.dtypes[0], small.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")) == stored
        assert small.overviews(1) == []  # 300 px: displays fast without
        assert (small.read_masks(1) > 0).tolist() == valid.tolist()
        scale, offset = small.scales[0], small.offsets[0]
        values = small.read().astype(np.float64) * scale + offset
        assert small.nodata == {"uint16": 65535, "int16": -32768}.get(output_type) or np.isnan(small.nodata)
        tolerance = 0.51 * scale if output_type != "float16" else 1e-3 * np.abs(reference[:, valid]).max()
        assert np.abs(values[:, valid] - reference[:, valid]).max() <= tolerance
        assert read_wavelengths(small) is not None and small.descriptions == full.descriptions
    assert (tmp_path / "small.tif").stat().st_size < 0.75 * (tmp_path / "f32.tif").stat().st_size


def test_overviews_can_be_left_out(cascade, rgb_file, tmp_path):
    big = tmp_path / "big.tif"
    with rasterio.open(rgb_file) as src:
        profile = {**src.profile, "width": 2100, "height": 20}
        with rasterio.open(big, "w", **profile) as dst:
            dst.write(np.tile(src.read(), (1, 1, 105)))
    run(cascade, big, tmp_path / "with.tif")
    run(cascade, big, tmp_path / "without.tif", overviews=False)
    with rasterio.open(tmp_path / "with.tif") as with_, rasterio.open(tmp_path / "without.tif") as without:
        assert with_.overviews(1) == [2, 4, 8, 16] and without.overviews(1) == []
        assert np.array_equal(with_.read(), without.read())
