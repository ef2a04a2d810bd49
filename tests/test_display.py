"""How outputs are shown: the composite and stretch (engine.display), the QGIS style written beside each
output after a run (engine.raster.style) and the colour interpretation of the output bands."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import Affine

from engine.display import (
    Composite,
    Display,
    Stretch,
    choose_composite,
    cumulative_cut,
    display_for,
    nearest_band,
    qgis_style,
)
from engine.raster.pipeline import infer_raster
from engine.raster.spectral_metadata import read_wavelengths
from engine.raster.style import read_display, sample_windows, style_path, write_styles

MODEL_GRID_NM = np.linspace(374.0, 1046.0, 48)  # the bundled model's grid: 48 bands, 14 nm apart
VISIBLE_GRID_NM = np.arange(400.0, 701.0, 10.0)


def test_a_model_with_near_infrared_is_shown_in_false_colour_nearest_860_650_550():
    composite = choose_composite(MODEL_GRID_NM, 48)
    assert composite.name == "near-infrared false colour"
    picked = [MODEL_GRID_NM[band - 1] for band in composite.bands]
    spacing = MODEL_GRID_NM[1] - MODEL_GRID_NM[0]
    assert all(abs(wl - target) <= spacing / 2 for wl, target in zip(picked, (860, 650, 550)))


def test_a_model_without_near_infrared_is_shown_in_natural_colour():
    composite = choose_composite(VISIBLE_GRID_NM, VISIBLE_GRID_NM.size)
    assert composite.name == "natural colour"
    assert [VISIBLE_GRID_NM[band - 1] for band in composite.bands] == [650.0, 550.0, 470.0]
    # A red-edge band alone is no near infrared.
    red_edge = np.append(VISIBLE_GRID_NM, 740.0)
    assert choose_composite(red_edge, red_edge.size).name == "natural colour"


def test_without_wavelengths_the_first_three_bands_and_never_a_missing_one():
    assert choose_composite(None, 48) == Composite("first three bands", (1, 2, 3))
    assert choose_composite(None, 2).bands == (1, 2, 2)
    assert nearest_band([400.0, 500.0, 600.0], 540.0) == 2


def test_cumulative_cut_clips_two_percent_at_each_end_and_ignores_nodata():
    values = np.concatenate([np.arange(101, dtype=np.float32), [np.nan, np.inf]])
    assert cumulative_cut(values) == Stretch(2.0, 98.0)
    assert cumulative_cut(values, (0.1, 0.9)) == Stretch(10.0, 90.0)
    assert cumulative_cut(np.full(10, 7.0)) == Stretch(7.0, 8.0), "a flat band still gets a usable range"
    assert cumulative_cut(np.array([np.nan])) == Stretch(0.0, 1.0)


def test_display_for_stretches_each_chosen_band_from_its_own_values():
    asked = []

    def band_values(band):
        asked.append(band)
        return np.arange(101.0) * band

    display = display_for(MODEL_GRID_NM, 48, band_values)
    assert asked == list(display.composite.bands)
    assert [s.maximum for s in display.stretches] == pytest.approx([98.0 * b for b in display.composite.bands])


def test_the_style_is_a_qgis_multiband_renderer_with_the_bands_and_stretch():
    display = Display(Composite("near-infrared false colour", (36, 21, 14)),
                      (Stretch(0.1, 2.5), Stretch(-1.0, 1e-05), Stretch(3.0, 4.0)))
    root = ET.fromstring(qgis_style(display).split("\n", 1)[1])  # after the DOCTYPE line
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "multibandcolor"
    assert [int(renderer.get(f"{c}Band")) for c in ("red", "green", "blue")] == [36, 21, 14]
    assert renderer.findtext("minMaxOrigin/limits") == "CumulativeCut"
    assert float(renderer.findtext("minMaxOrigin/cumulativeCutLower")) == 0.02
    assert float(renderer.findtext("minMaxOrigin/cumulativeCutUpper")) == 0.98
    ranges = [(float(renderer.findtext(f"{c}ContrastEnhancement/minValue")),
               float(renderer.findtext(f"{c}ContrastEnhancement/maxValue"))) for c in ("red", "green", "blue")]
    assert ranges == [(0.1, 2.5), (-1.0, 1e-05), (3.0, 4.0)]


def test_sample_windows_read_small_rasters_whole_and_large_ones_in_spread_blocks():
    small = sample_windows(500, 700, (256, 256))
    assert sum(w.height * w.width for w in small) == 500 * 700
    large = sample_windows(16384, 16384, (256, 256))
    assert len(large) == 64
    assert {w.row_off for w in large} == {w.col_off for w in large}
    assert min(w.row_off for w in large) == 0 and max(w.row_off for w in large) == 16384 - 256


# ----------------------------------------------------------------------------------------------
# after a run


@pytest.fixture
def rgb_file(tmp_path):
    rows, cols = np.mgrid[0:24, 0:24]
    data = np.stack([800 + 20 * rows, 600 + 15 * cols, 400 + 5 * (rows + cols)]).astype(np.uint16)
    path = tmp_path / "rgb.tif"
    with rasterio.open(path, "w", driver="GTiff", width=24, height=24, count=3, dtype="uint16",
                       transform=Affine(5.0, 0, 300000.0, 0, -5.0, 5000000.0), crs="EPSG:32618") as dst:
        dst.write(data)
    return path


@pytest.fixture
def outputs(tiny_bundle, rgb_file, tmp_path):
    out, stage1 = tmp_path / "out.tif", tmp_path / "out_stage1.tif"
    infer_raster(rgb_file, out, model=tiny_bundle, tile=16, overlap=4, sampler="ddim", steps=1, guidance=0.0,
                 device="cpu", stage1_output=stage1)
    return out, stage1


def _renderer(qml: Path):
    return ET.fromstring(qml.read_text(encoding="utf-8").split("\n", 1)[1]).find("pipe/rasterrenderer")


def test_each_output_gets_its_style_beside_it_with_the_engines_choice(outputs):
    for output in outputs:
        qml = style_path(output)
        assert qml == output.with_suffix(".qml") and qml.is_file()
        renderer = _renderer(qml)
        with rasterio.open(output) as dataset:
            wavelengths = read_wavelengths(dataset)
            expected = choose_composite(wavelengths, dataset.count)
            bands = [int(renderer.get(f"{c}Band")) for c in ("red", "green", "blue")]
            assert bands == list(expected.bands)
            for colour, band in zip(("red", "green", "blue"), bands):
                values = dataset.read(band, masked=True).compressed()
                low, high = np.quantile(values, (0.02, 0.98))
                assert float(renderer.findtext(f"{colour}ContrastEnhancement/minValue")) == pytest.approx(low)
                assert float(renderer.findtext(f"{colour}ContrastEnhancement/maxValue")) == pytest.approx(high)
    assert read_display(outputs[0]).composite.name == "near-infrared false colour"


def test_every_output_band_has_an_undefined_colour_interpretation(outputs):
    for output in outputs:
        with rasterio.open(output) as dataset:
            assert set(dataset.colorinterp) == {ColorInterp.undefined}, output.name
    from osgeo import gdal  # QGIS reads through Debian's GDAL, not rasterio's

    dataset = gdal.Open(str(outputs[0]))
    names = {gdal.GetColorInterpretationName(dataset.GetRasterBand(b).GetColorInterpretation())
             for b in range(1, dataset.RasterCount + 1)}
    dataset = None
    assert names == {"Undefined"}


def test_a_style_that_cannot_be_written_is_reported_not_raised(outputs, tmp_path):
    said = []
    write_styles([tmp_path / "no such folder" / "out.tif"], said.append)
    assert len(said) == 1 and "no display style written" in said[0]


def test_a_style_that_cannot_be_written_leaves_no_stale_style_of_a_previous_output(outputs, monkeypatch):
    """A previous run's .qml names bands and a stretch of another file: it goes when no new one comes."""
    import engine.raster.style as style_module

    output = outputs[0]
    assert style_path(output).is_file()

    def full_disk(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(style_module, "read_display", full_disk)
    said = []
    write_styles([output], said.append)
    assert not style_path(output).exists()
    assert len(said) == 1 and "No space left on device" in said[0]
