"""'Evaluate spectral super-resolution': the four metrics as algorithm outputs and a report with the
per-band PSNR plot and spectral profiles, from an estimate or from an RGB plus a model."""

from __future__ import annotations

import csv
import math

import numpy as np

from scdm_testing import ALG_ID, EVAL_ID, FAST

METRICS = ("RMSE", "MPSNR", "MSSIM", "SAM")


def _is_png(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_estimate_against_a_real_enmap_reference(run_alg, enmap_reference, tmp_path):
    """A real 224-band EnMAP crop against itself plus 2 % noise: finite, plausible metrics; the
    water-vapour bands (nodata in the reference) are left out, as are the bands listed."""
    from osgeo import gdal

    estimate = tmp_path / "noisy.tif"
    gdal.Translate(str(estimate), str(enmap_reference))
    dataset = gdal.Open(str(estimate), gdal.GA_Update)
    rng = np.random.default_rng(0)
    for index in range(1, dataset.RasterCount + 1):
        band = dataset.GetRasterBand(index)
        values = band.ReadAsArray()
        valid = values != band.GetNoDataValue()
        values[valid] *= 1 + 0.02 * rng.standard_normal(int(valid.sum())).astype(np.float32)
        band.WriteArray(values)
    dataset = None

    report = tmp_path / "report.html"
    results, feedback = run_alg(EVAL_ID, {"REFERENCE": str(enmap_reference), "ESTIMATE": str(estimate),
                                          "EXCLUDE_BANDS": "1-3", "REPORT": str(report)})
    assert results["REPORT"] == str(report) and report.is_file()
    assert 0 < results["RMSE"] < 200  # reflectance x 10000
    assert 20 < results["MPSNR"] < 80 and 0.5 < results["MSSIM"] <= 1 and 0 < results["SAM"] < 0.1
    assert _is_png(results["PSNR_PLOT"]) and _is_png(results["PROFILES_PLOT"])
    html = report.read_text()
    assert "per-band PSNR" in html and "spectral profiles" in html and "report_psnr.png" in html
    for name in METRICS:
        assert f"{name}:" in feedback.log


def test_rgb_plus_model_with_a_csv_report(run_alg, rgb_tif, tiny_bundle, tmp_path):
    """RGB + model mode: the estimate is made first (kept with ESTIMATE_OUTPUT), then evaluated against a
    reference on the model's band grid (here another sample of the same model)."""
    reference = tmp_path / "reference.tif"
    run_alg(ALG_ID, {"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(reference), **FAST,
                     "SEED": 1})
    report = tmp_path / "metrics.csv"
    kept = tmp_path / "estimate.tif"
    results, feedback = run_alg(EVAL_ID, {"REFERENCE": str(reference), "RGB": str(rgb_tif),
                                          "MODEL": str(tiny_bundle), **FAST, "ESTIMATE_OUTPUT": str(kept),
                                          "REPORT": str(report)})
    assert kept.is_file() and results["ESTIMATE_OUTPUT"] == str(kept) and results["ESTIMATE_USED"] == str(kept)
    assert all(math.isfinite(results[name]) for name in METRICS)
    assert results["RMSE"] > 0  # seed 0 against seed 1
    with open(report, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 48 and {"band", "wavelength_nm", "psnr_db"} <= set(rows[0])
    assert _is_png(tmp_path / "metrics_psnr.png") and _is_png(tmp_path / "metrics_profiles.png")
    assert "Model: tiny-test" in feedback.log and "Device: CPU" in feedback.log
    assert max(feedback.progress_values) == 100


def test_rgb_plus_model_without_estimate_output_uses_a_temporary_file(run_alg, rgb_tif, tiny_bundle, tmp_path):
    reference = tmp_path / "reference.tif"
    run_alg(ALG_ID, {"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(reference), **FAST})
    results, _ = run_alg(EVAL_ID, {"REFERENCE": str(reference), "RGB": str(rgb_tif), "MODEL": str(tiny_bundle),
                                   **FAST, "REPORT": str(tmp_path / "r.html")})
    # Same seed, model and settings: the estimate equals the reference.
    assert results["RMSE"] == 0 and results["SAM"] < 1e-6
    assert "ESTIMATE_OUTPUT" not in results and results["ESTIMATE_USED"].endswith(".tif")
