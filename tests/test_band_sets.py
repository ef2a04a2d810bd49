"""Output band sets (engine/band_sets.py): closed forms of the band simulation, the shipped sensor tables,
refused choices, and whole runs that write a sensor's bands with their names, wavelengths and nodata."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from engine.band_sets import (MODEL_GRID, SENSORS, TABLES, ResponseTable, band_set_from_table, read_response_table,
                              resolve_band_set)
from engine.config import houston_grid
from engine.errors import InputError
from engine.raster.pipeline import infer_raster
from engine.raster.spectral_metadata import read_wavelengths
from engine.settings import InferenceSettings

GRID = tuple(houston_grid())


def gaussian_table(centres, widths, name="test") -> ResponseTable:
    wavelengths = np.arange(300.0, 1200.0, 1.0)
    curves = np.array([np.exp(-0.5 * ((wavelengths - c) / (w / 2.355)) ** 2) for c, w in zip(centres, widths)])
    curves[curves < 1e-6] = 0.0
    return ResponseTable(name, tuple(f"band {i}" for i in range(len(centres))), wavelengths, curves)


def test_flat_spectra_stay_flat_and_linear_ones_give_the_centroid_value():
    table = gaussian_table([450.0, 561.3, 700.0, 865.0], [20.0, 35.0, 60.0, 100.0])
    band_set = band_set_from_table("test", table, GRID)
    weights = np.asarray(band_set.matrix)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-9)
    assert (weights >= 0).all()
    flat = np.full((len(GRID), 2, 3), 0.37)
    np.testing.assert_allclose(band_set.apply(flat), 0.37, rtol=1e-6)
    slope = np.asarray(GRID)[:, None, None] * 0.001 + 0.1 + np.zeros((1, 2, 3))
    expected = np.asarray(band_set.wavelengths_nm)[:, None, None] * 0.001 + 0.1
    np.testing.assert_allclose(band_set.apply(slope), expected + np.zeros((1, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(band_set.fwhm_nm, [20.0, 35.0, 60.0, 100.0], atol=1.5)


def test_a_band_narrower_than_the_grid_takes_the_neighbouring_bands_in_proportion():
    # A 1 nm wide band a quarter of the way between two model centres: 3/4 of the first, 1/4 of the second.
    between = GRID[10] + 0.25 * (GRID[11] - GRID[10])
    wavelengths = np.arange(300.0, 1200.0, 0.05)
    curve = np.clip(1.0 - np.abs(wavelengths - between) / 0.5, 0.0, None)
    band_set = band_set_from_table("spike", ResponseTable("spike", ("x",), wavelengths, curve[None]), GRID)
    row = np.asarray(band_set.matrix[0])
    np.testing.assert_allclose(row[[10, 11]], [0.75, 0.25], atol=0.02)
    assert row.sum() - row[10] - row[11] < 1e-9


def test_bands_beyond_the_model_grid_are_left_out_by_name():
    table = gaussian_table([550.0, 1600.0, 1040.0], [30.0, 80.0, 30.0])
    band_set = band_set_from_table("test", table, GRID)
    assert band_set.band_names == ("band 0",) and band_set.left_out == ("band 1", "band 2")
    with pytest.raises(InputError, match="no band of far lies within the model's 374-1046 nm") as caught:
        band_set_from_table("far", gaussian_table([1600.0], [80.0]), GRID)
    assert caught.value.parameter == "band_set"


def test_shipped_sensor_tables():
    sentinel = resolve_band_set("sentinel2", GRID)
    assert [n.split()[0] for n in sentinel.band_names] == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9"]
    assert [n.split()[0] for n in sentinel.left_out] == ["B10", "B11", "B12"]
    centres = dict(zip((n.split()[0] for n in sentinel.band_names), sentinel.wavelengths_nm))
    # ESA's published central wavelengths (S2A): B2 492.4, B4 664.6, B8 832.8, B8A 864.7 nm
    for band, centre in (("B2", 492.4), ("B4", 664.6), ("B8", 832.8), ("B8A", 864.7)):
        assert centres[band] == pytest.approx(centre, abs=0.6)
    landsat = resolve_band_set("landsat8-9", GRID)
    assert [n.split()[0] for n in landsat.band_names] == ["B2", "B3", "B4", "B5"]
    assert resolve_band_set(MODEL_GRID, GRID) is None
    assert {path.name for path in TABLES.glob("*.csv")} == {table for table, _ in SENSORS.values()}


@pytest.mark.parametrize("text, problem", [
    ("wavelength_nm,a\n", "no numeric rows"),
    ("500,1\n510,2\n", "no header"),
    ("wavelength_nm,a,b\n500,1\n", "rows do not all have"),
    ("wavelength_nm,a\n500,x\n", "not a number"),
    ("wavelength_nm,a\n500,-1\n510,1\n", "not negative"),
    ("wavelength_nm,a\n500,0\n510,0\n", "zero everywhere"),
    ("wavelength_nm,a\n500,1\n500,2\n", "appears twice"),
])
def test_bad_response_tables_are_refused_by_what_is_wrong(tmp_path, text, problem):
    path = tmp_path / "bands.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as caught:
        read_response_table(path)
    assert caught.value.parameter == "band_set" and "wavelength_nm" in str(caught.value)


def test_settings_refuse_unknown_band_sets_and_a_sensor_uncertainty(tmp_path):
    with pytest.raises(InputError, match="unknown band set 'sentinel3'.*sentinel2, landsat8-9") as caught:
        InferenceSettings(input="a.tif", output="b.tif", band_set="sentinel3")
    assert caught.value.parameter == "band_set"
    with pytest.raises(InputError, match="model's own bands only") as caught:
        InferenceSettings(input="a.tif", output="b.tif", band_set="sentinel2", samples=2, uncertainty_output="u.tif")
    assert caught.value.parameter == "band_set"
    assert InferenceSettings(input="a.tif", output="b.tif", band_set=" Sentinel2 ").band_set == "sentinel2"
    assert InferenceSettings(input="a.tif", output="b.tif", band_set="").band_set == MODEL_GRID


def _write_rgb(path, data, nodata):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=3, dtype="uint16",
                       crs="EPSG:32618", transform=Affine(5, 0, 5e5, 0, -5, 4e6), nodata=nodata) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def pixel_cascade(tiny_pixel_bundle):
    from engine.bundle import load_bundle

    return load_bundle(tiny_pixel_bundle, device="cpu")


def test_a_sentinel2_run_writes_the_model_spectra_through_the_band_responses(pixel_cascade, tmp_path):
    data = np.random.default_rng(2).integers(200, 3000, (3, 30, 41)).astype(np.uint16)
    data[:, :5, :7] = 0  # nodata
    src = _write_rgb(tmp_path / "in.tif", data, nodata=0)
    options = dict(model=pixel_cascade, seed=3, device="cpu", tile=16, overlap=4)
    infer_raster(src, tmp_path / "grid.tif", **options)
    report = infer_raster(src, tmp_path / "s2.tif", band_set="sentinel2", stage1_output=tmp_path / "s1.tif", **options)
    band_set = resolve_band_set("sentinel2", pixel_cascade.config.wavelengths_nm)
    with rasterio.open(tmp_path / "grid.tif") as grid, rasterio.open(tmp_path / "s2.tif") as sensor:
        expected, written = band_set.apply(grid.read()), sensor.read()
        assert sensor.count == report.bands == 10 and np.isnan(sensor.nodata)
        assert sensor.descriptions[3] == "B4 Red (664.6 nm)" and sensor.descriptions[8].startswith("B8A ")
        np.testing.assert_allclose(read_wavelengths(sensor), band_set.wavelengths_nm)
        assert float(sensor.tags(4)["fwhm"]) == band_set.fwhm_nm[3]
        assert sensor.tags(ns="ENVI")["band_names"].startswith("{B1 Coastal aerosol, B2 Blue")
        assert "Sentinel-2A MSI bands" in sensor.tags()["SCDM_PRODUCT"]
    assert np.isnan(written[:, :5, :7]).all()
    valid = np.ones(written.shape[1:], bool)
    valid[:5, :7] = False
    np.testing.assert_allclose(written[:, valid], expected[:, valid], rtol=1e-5, atol=1e-5 * np.abs(expected[:, valid]).max())
    with rasterio.open(tmp_path / "s1.tif") as stage1:
        assert stage1.count == 12  # the stage-1 output stays on the model's grid


def test_a_custom_response_file_names_its_bands(pixel_cascade, tmp_path):
    table = gaussian_table([560.0, 660.0, 840.0], [30.0, 30.0, 80.0])
    rows = ["# my camera", "# wavelength_nm,G,R,NIR"] + [
        ",".join([f"{w:g}"] + [f"{v:.6g}" for v in table.curves[:, i]]) for i, w in enumerate(table.wavelengths_nm)]
    csv = tmp_path / "mine.csv"
    csv.write_text("\n".join(rows) + "\n")
    src = _write_rgb(tmp_path / "in.tif", np.full((3, 8, 9), 900, np.uint16), nodata=None)
    infer_raster(src, tmp_path / "out.tif", model=pixel_cascade, device="cpu", band_set=str(csv))
    with rasterio.open(tmp_path / "out.tif") as out:
        assert out.count == 3 and [d.split()[0] for d in out.descriptions] == ["G", "R", "NIR"]
        np.testing.assert_allclose(read_wavelengths(out), [560.0, 660.0, 840.0], atol=0.5)
