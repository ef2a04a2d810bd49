"""What a QGIS user sees of an output: loaded layers named after the input and shown in the engine's
near-infrared false colour (set by a layer post-processor), the same look from the .qml beside the
file when it is opened later, and evaluation reports titled with the layer names."""

from __future__ import annotations

import pytest

from scdm_testing import ALG_ID, EVAL_ID, FAST, RecordingFeedback

def _expected_display(path):
    from engine.raster.style import read_display

    return read_display(path)


def _renderer_state(layer):
    """(renderer type, (red, green, blue) bands, [(min, max)] of each) of a raster layer."""
    renderer = layer.renderer()
    bands = (renderer.redBand(), renderer.greenBand(), renderer.blueBand())
    enhancements = (renderer.redContrastEnhancement(), renderer.greenContrastEnhancement(),
                    renderer.blueContrastEnhancement())
    return renderer.type(), bands, [(e.minimumValue(), e.maximumValue()) for e in enhancements]


def _assert_shows(layer, display):
    kind, bands, ranges = _renderer_state(layer)
    assert kind == "multibandcolor"
    assert bands == display.composite.bands
    for (low, high), stretch in zip(ranges, display.stretches):
        assert low == pytest.approx(stretch.minimum, rel=1e-6) and high == pytest.approx(stretch.maximum, rel=1e-6)


@pytest.fixture
def loaded_outputs(scdm_plugin, rgb_tif, tiny_bundle, tmp_path):
    """A run whose three outputs QGIS loads into the project, as after a run from the dialog."""
    import processing
    from qgis.core import QgsProject

    names = ("OUTPUT", "STAGE1_OUTPUT", "UNCERTAINTY_OUTPUT")
    outputs = {name: str(tmp_path / f"{name.lower()}.tif") for name in names}
    parameters = {"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "SAMPLES": 2, **FAST, **outputs}
    processing.runAndLoadResults(ALG_ID, parameters, feedback=RecordingFeedback())
    layers = {layer.source(): layer for layer in QgsProject.instance().mapLayers().values()}
    yield {name: layers[path] for name, path in outputs.items()}, outputs
    QgsProject.instance().removeAllMapLayers()


def test_loaded_layers_are_named_after_the_input(loaded_outputs, rgb_tif):
    layers, _ = loaded_outputs
    stem = rgb_tif.stem
    assert {name: layer.name() for name, layer in layers.items()} == {
        "OUTPUT": f"{stem} hyperspectral", "STAGE1_OUTPUT": f"{stem} stage 1",
        "UNCERTAINTY_OUTPUT": f"{stem} uncertainty"}


def test_loaded_layers_show_the_engines_false_colour_composite(loaded_outputs):
    layers, outputs = loaded_outputs
    for name, layer in layers.items():
        display = _expected_display(outputs[name])
        _assert_shows(layer, display)
    assert _expected_display(outputs["OUTPUT"]).composite.name == "near-infrared false colour"


def test_the_style_beside_the_file_gives_the_same_look_when_opened_later(loaded_outputs):
    from qgis.core import QgsRasterLayer

    _, outputs = loaded_outputs
    for path in outputs.values():
        layer = QgsRasterLayer(path, "reopened", "gdal")
        assert layer.isValid()
        message, loaded = layer.loadDefaultStyle()
        assert loaded, message
        _assert_shows(layer, _expected_display(path))
        del layer


def test_every_band_is_undefined_not_gray_for_qgis(loaded_outputs):
    from qgis.core import QgsRaster

    layers, _ = loaded_outputs
    provider = layers["OUTPUT"].dataProvider()
    interpretations = {provider.colorInterpretation(band) for band in range(1, provider.bandCount() + 1)}
    assert interpretations == {QgsRaster.ColorInterpretation.UndefinedColorInterpretation}


def test_the_report_is_titled_with_the_layer_names(run_alg, rgb_tif, tiny_bundle, tmp_path):
    reference = tmp_path / "reference.tif"
    run_alg(ALG_ID, {"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(reference), **FAST})
    from_rgb = tmp_path / "from_rgb.html"
    run_alg(EVAL_ID, {"REFERENCE": str(reference), "RGB": str(rgb_tif), "MODEL": str(tiny_bundle),
                      "REPORT": str(from_rgb), **FAST})
    text = from_rgb.read_text(encoding="utf-8")
    assert f"<h1>estimate from {rgb_tif.stem} vs reference</h1>" in text and "scdm_estimate" not in text

    given = tmp_path / "given.html"
    run_alg(EVAL_ID, {"REFERENCE": str(reference), "ESTIMATE": str(reference), "REPORT": str(given)})
    assert "<h1>reference vs reference</h1>" in given.read_text(encoding="utf-8")


def test_an_estimate_kept_by_the_evaluation_loads_like_an_output(scdm_plugin, rgb_tif, tiny_bundle, tmp_path):
    import processing
    from qgis.core import QgsProject

    reference, kept = tmp_path / "reference.tif", tmp_path / "kept.tif"
    processing.run(ALG_ID, {"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(reference), **FAST},
                   feedback=RecordingFeedback())
    processing.runAndLoadResults(EVAL_ID, {"REFERENCE": str(reference), "RGB": str(rgb_tif), "MODEL": str(tiny_bundle),
                                           "ESTIMATE_OUTPUT": str(kept), "REPORT": str(tmp_path / "r.html"), **FAST},
                                 feedback=RecordingFeedback())
    try:
        layers = [layer for layer in QgsProject.instance().mapLayers().values() if layer.source() == str(kept)]
        assert [layer.name() for layer in layers] == [f"{rgb_tif.stem} hyperspectral"]
        _assert_shows(layers[0], _expected_display(kept))
    finally:
        QgsProject.instance().removeAllMapLayers()


def test_the_post_processor_alone_sets_the_display_and_is_then_released(loaded_outputs):
    """Without the .qml (a layer loaded without its default style) the post-processor gives the look."""
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsRasterLayer

    from scdm.scdm_plugin.layer_style import DisplayPostProcessor

    _, outputs = loaded_outputs
    options = QgsRasterLayer.LayerOptions()
    options.loadDefaultStyle = False
    layer = QgsRasterLayer(outputs["OUTPUT"], "plain", "gdal", options)
    display = _expected_display(outputs["OUTPUT"])
    assert _renderer_state(layer)[1] != display.composite.bands, "QGIS's own default differs"
    processor = DisplayPostProcessor.create(display)
    assert processor in DisplayPostProcessor._waiting
    processor.postProcessLayer(layer, QgsProcessingContext(), QgsProcessingFeedback())
    _assert_shows(layer, display)
    assert processor not in DisplayPostProcessor._waiting
    del layer
