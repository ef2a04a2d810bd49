"""Raster evaluation and report writing on small GeoTIFFs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from engine.report import (
    ReportOptions,
    evaluate_rasters,
    plot_per_band_psnr,
    plot_spectral_profiles,
    read_wavelengths,
    select_profile_pixels,
    write_report,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ENMAP_TILE = DATA / "geotiff" / "enmap_potsdam" / "enmap_potsdam_tile_128_0.tif"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WAVELENGTHS = [450.0, 500.0, 550.0, 600.0, 650.0]


def _cube(bands: int = 5, rows: int = 20, cols: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(500.0, 4000.0, (bands, rows, cols)).astype(np.float32)


def _write_tif(
    path: Path,
    cube: np.ndarray,
    wavelengths: list[float] | None = WAVELENGTHS,
    nodata: float | None = None,
    descriptions: list[str] | None = None,
) -> Path:
    profile = {
        "driver": "GTiff",
        "width": cube.shape[2],
        "height": cube.shape[1],
        "count": cube.shape[0],
        "dtype": "float32",
        "crs": "EPSG:32633",
        "transform": from_origin(366000.0, 5810000.0, 30.0, 30.0),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(cube.astype(np.float32))
        for band in range(cube.shape[0]):
            if wavelengths is not None:
                dataset.update_tags(band + 1, wavelength=str(wavelengths[band]), wavelength_units="Nanometers")
            if descriptions is not None:
                dataset.set_band_description(band + 1, descriptions[band])
    return path


def _is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_SIGNATURE


def test_identical_rasters_have_zero_error(tmp_path: Path) -> None:
    cube = _cube()
    reference = _write_tif(tmp_path / "reference.tif", cube)
    estimate = _write_tif(tmp_path / "estimate.tif", cube)
    result = evaluate_rasters(reference, estimate)
    assert result["rmse"] == 0.0
    assert result["sam"] == pytest.approx(0.0, abs=1e-6)
    assert result["mssim"] == pytest.approx(1.0)
    assert result["mpsnr"] == 100.0


def test_constant_offset_gives_known_rmse_and_psnr(tmp_path: Path) -> None:
    cube = _cube()
    reference = _write_tif(tmp_path / "reference.tif", cube)
    estimate = _write_tif(tmp_path / "estimate.tif", cube + 25.0)
    result = evaluate_rasters(reference, estimate)
    assert result["rmse"] == pytest.approx(25.0, rel=1e-5)
    assert result["mpsnr"] == pytest.approx(10 * math.log10(float(cube.max()) ** 2 / 25.0**2), rel=1e-5)


def test_exclude_bands_passes_through(tmp_path: Path) -> None:
    cube = _cube()
    shifted = cube + 10.0
    shifted[[1, 3]] = cube[[1, 3]] + 40.0
    reference = _write_tif(tmp_path / "reference.tif", cube)
    estimate = _write_tif(tmp_path / "estimate.tif", shifted)
    assert evaluate_rasters(reference, estimate, exclude_bands=(1, 3))["rmse"] == pytest.approx(10.0, rel=1e-5)


def test_nodata_in_either_raster_is_excluded(tmp_path: Path) -> None:
    cube = _cube(rows=30, cols=30)
    offset = cube + 25.0
    reference_cube = cube.copy()
    reference_cube[:, :3, :] = -9999.0  # nodata rows in the reference only
    offset[2, :, 25:] = -9999.0  # nodata columns in one estimate band: whole pixels drop out
    reference = _write_tif(tmp_path / "reference.tif", reference_cube, nodata=-9999.0)
    estimate = _write_tif(tmp_path / "estimate.tif", offset, nodata=-9999.0)
    result = evaluate_rasters(reference, estimate)
    assert result["rmse"] == pytest.approx(25.0, rel=1e-5)
    peak = float(cube[:, 3:, :25].max())
    assert result["mpsnr"] == pytest.approx(10 * math.log10(peak**2 / 25.0**2), rel=1e-5)


def test_band_without_reference_data_is_excluded_but_estimate_gap_is_an_error(tmp_path: Path) -> None:
    cube = _cube()
    reference_cube = cube.copy()
    reference_cube[4] = -1.0  # like EnMAP's water-vapour bands: nodata everywhere
    reference = _write_tif(tmp_path / "reference.tif", reference_cube, nodata=-1.0)
    estimate = _write_tif(tmp_path / "estimate.tif", cube + 5.0)
    assert evaluate_rasters(reference, estimate)["rmse"] == pytest.approx(5.0, rel=1e-5)

    estimate_cube = cube + 5.0
    estimate_cube[1] = -1.0
    broken = _write_tif(tmp_path / "broken.tif", estimate_cube, nodata=-1.0)
    with pytest.raises(ValueError, match=r"broken.tif is nodata everywhere in band\(s\) \[2\]"):
        evaluate_rasters(reference, broken)


def test_mismatched_sizes_raise_naming_both(tmp_path: Path) -> None:
    reference = _write_tif(tmp_path / "reference.tif", _cube(rows=20))
    estimate = _write_tif(tmp_path / "estimate.tif", _cube(rows=22))
    with pytest.raises(ValueError) as error:
        evaluate_rasters(reference, estimate)
    message = str(error.value)
    assert "reference.tif" in message and "estimate.tif" in message and "20 x 24" in message
    assert "22 x 24" in message

    fewer_bands = _write_tif(tmp_path / "three.tif", _cube(bands=3), wavelengths=WAVELENGTHS[:3])
    with pytest.raises(ValueError, match="5 bands.*3 bands"):
        evaluate_rasters(reference, fewer_bands)


def test_different_wavelength_grids_raise(tmp_path: Path) -> None:
    cube = _cube()
    reference = _write_tif(tmp_path / "reference.tif", cube)
    estimate = _write_tif(tmp_path / "estimate.tif", cube, wavelengths=[w + 30 for w in WAVELENGTHS])
    with pytest.raises(ValueError, match="resample the estimate"):
        evaluate_rasters(reference, estimate)


def test_html_report_with_figures(tmp_path: Path) -> None:
    cube = _cube()
    reference = _write_tif(tmp_path / "reference.tif", cube)
    estimate = _write_tif(tmp_path / "estimate.tif", cube + 25.0)
    report = tmp_path / "out" / "eval.html"
    result = evaluate_rasters(reference, estimate, exclude_bands=(0,), report_path=report)
    assert result == evaluate_rasters(reference, estimate, exclude_bands=(0,))

    psnr_png = tmp_path / "out" / "eval_psnr.png"
    profiles_png = tmp_path / "out" / "eval_profiles.png"
    assert _is_png(psnr_png) and _is_png(profiles_png)
    text = report.read_text(encoding="utf-8")
    assert '<img src="eval_psnr.png"' in text and '<img src="eval_profiles.png"' in text
    assert f"{result['mpsnr']:.3f}" in text and f"{result['rmse']:.6g}" in text
    assert text.count('<tr class="excluded">') == 1
    for wavelength in WAVELENGTHS:
        assert f"<td>{wavelength:g}</td>" in text


def test_csv_report_has_one_row_per_band(tmp_path: Path) -> None:
    cube = _cube()
    estimate = cube + 25.0
    estimate[2] = cube[2]
    report = tmp_path / "eval.csv"
    result = write_report(cube, estimate, WAVELENGTHS, report, ReportOptions(exclude_bands=(2,)))
    with report.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["wavelength_nm"]) for row in rows] == WAVELENGTHS
    assert [int(row["band"]) for row in rows] == [1, 2, 3, 4, 5]
    assert [int(row["excluded"]) for row in rows] == [0, 0, 1, 0, 0]
    assert float(rows[2]["psnr_db"]) == 100.0 and float(rows[2]["rmse"]) == 0.0
    assert float(rows[0]["rmse"]) == pytest.approx(25.0, rel=1e-4)
    assert np.mean([float(rows[i]["psnr_db"]) for i in (0, 1, 3, 4)]) == pytest.approx(result["mpsnr"], abs=1e-3)
    assert _is_png(tmp_path / "eval_psnr.png") and _is_png(tmp_path / "eval_profiles.png")


def test_report_without_wavelengths_uses_band_numbers(tmp_path: Path) -> None:
    cube = _cube(bands=3)
    reference = _write_tif(tmp_path / "reference.tif", cube, wavelengths=None)
    estimate = _write_tif(tmp_path / "estimate.tif", cube + 1.0, wavelengths=None)
    report = tmp_path / "eval.csv"
    evaluate_rasters(reference, estimate, report_path=report)
    header = report.read_text().splitlines()[0]
    assert header.startswith("band,band_number,")


def test_unknown_report_extension_is_rejected(tmp_path: Path) -> None:
    cube = _cube()
    with pytest.raises(ValueError, match=r"\.html or \.csv"):
        write_report(cube, cube, WAVELENGTHS, tmp_path / "eval.pdf")


def test_wavelengths_from_descriptions_and_micrometre_tags(tmp_path: Path) -> None:
    cube = _cube(bands=2)
    described = _write_tif(
        tmp_path / "described.tif",
        cube,
        wavelengths=None,
        descriptions=["band 1 (418.24 Nanometers)", "band 2 (0.5 Micrometers)"],
    )
    with rasterio.open(described) as dataset:
        np.testing.assert_allclose(read_wavelengths(dataset), [418.24, 500.0])
    path = tmp_path / "micrometres.tif"
    _write_tif(path, cube, wavelengths=None)
    with rasterio.open(path, "r+") as dataset:
        for band, value in ((1, "0.45"), (2, "0.55")):
            dataset.update_tags(band, wavelength=value, wavelength_units="Micrometers")
    with rasterio.open(path) as dataset:
        np.testing.assert_allclose(read_wavelengths(dataset), [450.0, 550.0])
    with rasterio.open(_write_tif(tmp_path / "bare.tif", cube, wavelengths=None)) as dataset:
        assert read_wavelengths(dataset) is None


@pytest.mark.skipif(not ENMAP_TILE.exists(), reason="shared data folder not present")
def test_real_enmap_tile_metadata_and_nodata(tmp_path: Path) -> None:
    with rasterio.open(ENMAP_TILE) as dataset:
        wavelengths = read_wavelengths(dataset)
        cube = dataset.read()
        profile = dataset.profile
    assert wavelengths.shape == (224,) and wavelengths[0] == pytest.approx(418.24)
    estimate = np.where(cube == profile["nodata"], cube, cube + 30.0).astype(np.float32)
    estimate_path = tmp_path / "estimate.tif"
    with rasterio.open(estimate_path, "w", **profile) as dataset:
        dataset.write(estimate)
    # Six water-vapour bands are nodata everywhere; the rest are compared.
    assert evaluate_rasters(ENMAP_TILE, estimate_path)["rmse"] == pytest.approx(30.0, rel=1e-5)


def test_profile_pixels_are_deterministic_brightness_quantiles() -> None:
    brightness = np.arange(100, dtype=np.float64).reshape(1, 10, 10)
    pixels = select_profile_pixels(brightness, 4)
    values = [brightness[0, r, c] for r, c in pixels]
    assert values == [10.0, 36.0, 63.0, 89.0]
    mask = np.zeros((10, 10), dtype=bool)
    mask[:5] = True
    assert all(r < 5 for r, _ in select_profile_pixels(brightness, 4, mask))


def test_plot_functions_write_pngs(tmp_path: Path) -> None:
    cube = _cube(bands=5, rows=6, cols=6)
    psnr_png = plot_per_band_psnr(
        WAVELENGTHS, {"a": np.linspace(30, 40, 5), "b": np.array([31, np.nan, 33, 34, 35])},
        tmp_path / "psnr.png", "title",
    )
    profiles_png = plot_spectral_profiles(
        WAVELENGTHS, cube, {"a": cube * 1.1}, [(0, 0), (5, 5), (2, 3)], tmp_path / "profiles.png"
    )
    assert _is_png(psnr_png) and _is_png(profiles_png)
    with pytest.raises(ValueError, match="pixel"):
        plot_spectral_profiles(WAVELENGTHS, cube, {}, [], tmp_path / "none.png")


def test_report_title_and_estimate_name_come_from_the_caller(tmp_path: Path, monkeypatch) -> None:
    """QGIS titles the report with its layer names: an estimate made from RGB lives in a temporary
    file whose name means nothing to the user."""
    import engine.report as report_module

    cube = _cube()
    reference = _write_tif(tmp_path / "reference.tif", cube)
    estimate = _write_tif(tmp_path / "scdm_estimate_3f9a.tif", cube + 5.0)
    legends = []
    plot = report_module.plot_per_band_psnr
    monkeypatch.setattr(report_module, "plot_per_band_psnr",
                        lambda x, curves, *args: legends.append(list(curves)) or plot(x, curves, *args))
    evaluate_rasters(reference, estimate, report_path=tmp_path / "default.html")
    evaluate_rasters(reference, estimate, report_path=tmp_path / "named.html",
                     title="Estimate from rgbn vs EnMAP reference", estimate_name="estimate from rgbn")
    default = (tmp_path / "default.html").read_text(encoding="utf-8")
    assert "<h1>scdm_estimate_3f9a.tif vs reference.tif</h1>" in default
    named = (tmp_path / "named.html").read_text(encoding="utf-8")
    assert "<title>Estimate from rgbn vs EnMAP reference</title>" in named
    assert "<h1>Estimate from rgbn vs EnMAP reference</h1>" in named and "scdm_estimate" not in named
    assert legends == [["scdm_estimate_3f9a"], ["estimate from rgbn"]]
