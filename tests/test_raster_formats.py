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
