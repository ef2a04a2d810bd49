"""The example graphical-modeler model (examples/clip_and_superresolve.model3) chains GDAL's built-in
"Clip raster by extent" with "Spectral super-resolution" and runs."""

from __future__ import annotations

from scdm_testing import EXAMPLE_MODEL, RecordingFeedback, georeference


def load_model():
    from qgis.core import QgsProcessingModelAlgorithm

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(EXAMPLE_MODEL)), f"cannot read {EXAMPLE_MODEL}"
    return model


def test_model_chains_a_builtin_clip_with_spectral_super_resolution(scdm_plugin):
    model = load_model()
    children = {child.algorithmId() for child in model.childAlgorithms().values()}
    assert children == {"gdal:cliprasterbyextent", "scdm:spectralsuperresolution"}
    assert model.childAlgorithm("superresolve").algorithm() is not None  # resolves to the plugin
    assert {p.name() for p in model.parameterDefinitions()} == {"rgb", "extent", "model", "steps",
                                                                "superresolve:hyperspectral"}


def test_model_runs_on_a_real_raster(scdm_plugin, rgb_tif, tiny_bundle, tmp_path):
    import processing

    _, (x0, dx, _, y0, _, dy), width, height, _ = georeference(rgb_tif)
    # The 16 x 12 px block starting at column 4, row 6 (edges on pixel boundaries).
    xmin, xmax = x0 + 4 * dx, x0 + 20 * dx
    ymax, ymin = y0 + 6 * dy, y0 + 18 * dy
    out = tmp_path / "clipped_hsi.tif"
    feedback = RecordingFeedback()
    results = processing.run(load_model(), {
        "rgb": str(rgb_tif), "extent": f"{xmin},{xmax},{ymin},{ymax}", "model": str(tiny_bundle), "steps": 2,
        "superresolve:hyperspectral": str(out)}, feedback=feedback)
    assert results["superresolve:hyperspectral"] == str(out)
    _, (ox0, odx, _, oy0, _, ody), owidth, oheight, count = georeference(out)
    assert (owidth, oheight, count) == (16, 12, 48)
    assert (ox0, oy0, odx, ody) == (xmin, ymax, dx, dy)
    assert "Model: tiny-test" in feedback.log
