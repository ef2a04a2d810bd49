"""processing.run end to end on a small real GeoTIFF with the tiny model: outputs, progress, logs,
cancel, background execution and batch-style repeated runs."""

from __future__ import annotations

import math
import time

import pytest

from scdm_testing import ALG_ID, FAST, RecordingFeedback, band_metadata, georeference, leftovers


def params(rgb, model, output, **extra):
    return {"INPUT": str(rgb), "MODEL": str(model), "OUTPUT": str(output), **FAST, **extra}


def test_end_to_end_writes_a_georeferenced_spectral_geotiff(run_alg, rgb_tif, tiny_bundle, tmp_path):
    out = tmp_path / "hsi.tif"
    results, feedback = run_alg(ALG_ID, params(rgb_tif, tiny_bundle, out))
    assert results["OUTPUT"] == str(out) and out.is_file()
    crs, transform, width, height, count = georeference(out)
    in_crs, in_transform, in_width, in_height, _ = georeference(rgb_tif)
    assert (crs, transform, width, height) == (in_crs, in_transform, in_width, in_height)
    assert count == 48
    first, last = band_metadata(out, 1), band_metadata(out, 48)
    assert first["wavelength_units"] == "Nanometers"
    assert 370 < float(first["wavelength"]) < float(last["wavelength"]) < 1100
    assert float(first["fwhm"]) > 0
    # Progress per tile reaches 100 %, and the log names the model and the device.
    assert feedback.progress_values and max(feedback.progress_values) == pytest.approx(100)
    assert any("tile 1 / 4" in info for info in feedback.infos)
    assert "Model: tiny-test (48 bands" in feedback.log and str(tiny_bundle) in feedback.log
    assert "Device: CPU" in feedback.log
    assert not feedback.errors


def test_optional_outputs_and_the_paper_sampler_settings_reach_the_engine(run_alg, rgb_tif, tiny_bundle, tmp_path):
    from osgeo import gdal

    out, stage1, unc = tmp_path / "hsi.tif", tmp_path / "stage1.tif", tmp_path / "unc.tif"
    results, _ = run_alg(ALG_ID, params(rgb_tif, tiny_bundle, out, STAGE1_OUTPUT=str(stage1),
                                        UNCERTAINTY_OUTPUT=str(unc), SAMPLES=2, SEED=7, GUIDANCE=0.0, SAMPLER=2,
                                        PDT_STAGE1=0, PDT_STAGE2=0.9, RED=1, GREEN=2, BLUE=3))
    assert results == {"OUTPUT": str(out), "STAGE1_OUTPUT": str(stage1), "UNCERTAINTY_OUTPUT": str(unc)}
    assert georeference(stage1)[4] == 12 and georeference(unc)[4] == 48
    tags = gdal.Info(str(out), format="json")["metadata"][""]
    assert tags["SCDM_SEED"] == "7" and tags["SCDM_SAMPLES"] == "2" and tags["SCDM_STEPS"] == "2"
    assert tags["SCDM_SAMPLER"] == "dpmpp" and tags["SCDM_GUIDANCE"] == "0.0"
    assert tags["SCDM_PDT"] == "None,0.9"  # 0 switches truncation off for that stage


def test_output_bands_of_a_sensor_or_a_response_file(run_alg, rgb_tif, tiny_bundle, tmp_path):
    out = tmp_path / "landsat.tif"
    _, feedback = run_alg(ALG_ID, params(rgb_tif, tiny_bundle, out, OUTPUT_BANDS="landsat8-9"))
    assert georeference(out)[4] == 4
    assert [band_metadata(out, b)["wavelength"][:3] for b in (1, 4)] == ["482", "864"]
    assert "output bands: Landsat 8/9 OLI B2 Blue, B3 Green, B4 Red, B5 NIR (B6 SWIR 1, B7 SWIR 2 lie beyond" \
        in feedback.log
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="OUTPUT_BANDS and OUTPUT_RESPONSE: unknown band set"):
        run_alg(ALG_ID, params(rgb_tif, tiny_bundle, tmp_path / "none.tif", OUTPUT_BANDS="response file"))
    assert not (tmp_path / "none.tif").exists()


def test_output_data_type_and_overviews(run_alg, rgb_tif, tiny_bundle, tmp_path):
    import rasterio

    out = tmp_path / "u16.tif"
    _, feedback = run_alg(ALG_ID, params(rgb_tif, tiny_bundle, out, OUTPUT_TYPE="uint16", OVERVIEWS=False))
    with rasterio.open(out) as dataset:
        assert dataset.dtypes[0] == "uint16" and dataset.scales[0] > 0 and dataset.overviews(1) == []
    # The tiny model's random weights give values far beyond the input's range: the log says so.
    assert "values lay beyond what uint16 stores and were clipped: choose float32" in feedback.log


def test_parameters_become_the_engine_call(scdm_plugin, rgb_tif, tmp_path):
    """SAMPLER 3 is the paper's DDPM; unset optional numbers (TILE_SIZE among them) and the default
    SAMPLER stay None (the bundle's defaults). Checked on the arguments, because DDPM's 1000 steps take minutes even with
    the tiny model."""
    from qgis.core import QgsApplication, QgsProcessingContext

    from scdm.scdm_plugin.algorithms.inference import inference_arguments

    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG_ID)
    context = QgsProcessingContext()
    base = {"INPUT": str(rgb_tif), "OUTPUT": str(tmp_path / "x.tif")}
    arguments = inference_arguments(alg, {**base, "SAMPLER": 3, "MODEL": "/some/bundle", "DEVICE": "cpu",
                                          "RED": 3, "GREEN": 2, "BLUE": 1, "PDT_STAGE1": 0.5,
                                          "RADIOMETRY": "srgb", "CONSISTENCY": "camera file",
                                          "CAMERA_RESPONSE": "/some/camera.csv"}, context)
    assert arguments == dict(model="/some/bundle", bands=(3, 2, 1), sampler="ddpm", steps=None, guidance=None,
                             pdt=(0.5, None), seed=0, tile=None, overlap=16, device="cpu", radiometry="srgb",
                             consistency="/some/camera.csv")
    assert inference_arguments(alg, {**base, "CONSISTENCY": "estimate"}, context)["consistency"] == "estimate"
    assert inference_arguments(alg, {**base, "TILE_SIZE": 128}, context)["tile"] == 128
    defaults = inference_arguments(alg, base, context)
    assert defaults["sampler"] is None and defaults["bands"] == (1, 2, 3) and defaults["device"] == "auto"
    assert defaults["radiometry"] == "auto" and defaults["consistency"] is None
    assert defaults["model"].endswith("resources/models/scdm-default")
    # An empty MODEL (e.g. an unset model input in the modeler) also means the bundled model.
    assert inference_arguments(alg, {**base, "MODEL": ""}, context)["model"] == defaults["model"]


def test_cancel_mid_run_leaves_no_output_file_and_fails(run_alg, rgb_tif, tiny_bundle, tmp_path):
    """A cancelled run is no success: it ends with an error (qgis_process then exits non-zero)."""
    from qgis.core import QgsProcessingException

    out = tmp_path / "cancelled.tif"
    feedback = RecordingFeedback(cancel_at_progress=10)
    with pytest.raises(QgsProcessingException, match="Cancelled: no output was written."):
        run_alg(ALG_ID, params(rgb_tif, tiny_bundle, out), feedback=feedback)
    assert feedback.isCanceled()
    assert max(feedback.progress_values) < 100
    assert leftovers(tmp_path, "cancelled") == []  # neither the output nor a partial file


def test_runs_in_a_background_task_like_the_processing_dialog(scdm_plugin, rgb_tif, tiny_bundle, tmp_path):
    """QgsProcessingAlgRunnerTask runs processAlgorithm in a worker thread, as the Toolbox does."""
    from qgis.core import (
        QgsApplication,
        QgsProcessingAlgRunnerTask,
        QgsProcessingContext,
        QgsProject,
        QgsTask,
    )

    out = tmp_path / "background.tif"
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG_ID)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = RecordingFeedback()
    task = QgsProcessingAlgRunnerTask(alg, params(rgb_tif, tiny_bundle, out), context, feedback)
    outcome = {}
    task.executed.connect(lambda ok, results: outcome.update(ok=ok, results=results))
    QgsApplication.taskManager().addTask(task)
    deadline = time.monotonic() + 120
    while "ok" not in outcome and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert outcome.get("ok") is True, feedback.errors
    assert outcome["results"]["OUTPUT"] == str(out) and out.is_file()
    assert task.status() == QgsTask.TaskStatus.Complete


def test_batch_style_repeated_runs(run_alg, rgb_tif, tiny_bundle, tmp_path):
    """What the batch dialog does: one fresh algorithm instance per row, each with its own output."""
    from osgeo import gdal

    outputs = []
    for row, seed in enumerate((0, 1, 0)):
        out = tmp_path / f"batch_{row}.tif"
        results, _ = run_alg(ALG_ID, params(rgb_tif, tiny_bundle, out, SEED=seed))
        outputs.append(results["OUTPUT"])
    arrays = [gdal.Open(path).ReadAsArray() for path in outputs]
    assert all(a.shape == (48, 24, 24) for a in arrays)
    assert (arrays[0] == arrays[2]).all(), "the same seed must give the same result"
    assert not (arrays[0] == arrays[1]).all(), "another seed must give another sample"
    assert all(math.isfinite(float(a.mean())) for a in arrays)


def test_temporary_output_is_a_geotiff(run_alg, rgb_tif, tiny_bundle):
    results, _ = run_alg(ALG_ID, params(rgb_tif, tiny_bundle, "TEMPORARY_OUTPUT"))
    assert results["OUTPUT"].endswith(".tif")
    assert georeference(results["OUTPUT"])[4] == 48
