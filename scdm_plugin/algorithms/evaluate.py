"""``scdm:evaluatespectralsuperresolution``: the four metrics of an estimate against a reference
hyperspectral raster, plus an HTML or CSV report (an engine inference run and report.evaluate_rasters)."""

from __future__ import annotations

import os
import re
import uuid

from qgis.core import (
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
)

from .. import engine_bridge as bridge
from ..layer_style import name_and_show_when_loaded
from .base import ScdmAlgorithm
from .inference import SETTING_PARAMETERS as SHARED_SETTING_PARAMETERS
from .inference import add_band_parameters, add_model_parameters, inference_arguments, raster_path

HELP = """<p>Measures how close a hyperspectral <b>estimate</b> is to a <b>reference</b> hyperspectral raster \
of the same size and band grid, pixel by pixel and band by band, and writes a report.</p>
<p>Give either an <i>Estimated hyperspectral raster</i> (e.g. an output of <i>Spectral super-resolution</i>) \
or an <i>RGB raster to run through the model</i> (an RGB raster of the same scene; it is first run through \
the model with the settings below, and the result can be kept with <i>Estimate made from RGB</i>).</p>
<p><b>Outputs</b>: RMSE (in the rasters' units), MPSNR (mean per-band PSNR in dB, peak = the reference's \
maximum), MSSIM (mean per-band SSIM, 0-1) and SAM (mean spectral angle in radians), over the pixels valid \
in both rasters and the bands not listed in <i>Bands to leave out of the metrics</i> (reference bands without \
data are left out too). The <i>Report</i> is an HTML (or, with a .csv name, CSV) file titled with the two \
layers' names, with per-band PSNR, RMSE and SSIM; beside it <i>&lt;name&gt;_psnr.png</i> plots the per-band \
PSNR over wavelength and <i>&lt;name&gt;_profiles.png</i> shows the reference and estimated spectra of four \
pixels.</p>
<p><b>Time</b>: seconds for the metrics; with an RGB raster, plus the time of a spectral super-resolution \
run.</p>"""

# The inference settings this algorithm sets from parameters named otherwise than in
# ``inference.SETTING_PARAMETERS``: the model runs on RGB and writes ESTIMATE_OUTPUT.
SETTING_PARAMETERS = {**SHARED_SETTING_PARAMETERS, "input": "RGB", "output": "ESTIMATE_OUTPUT"}

# (output name, engine key, output description, unit in the log)
METRICS = (("RMSE", "rmse", "RMSE", " (the rasters' units)"), ("MPSNR", "mpsnr", "MPSNR (dB)", " dB"),
           ("MSSIM", "mssim", "MSSIM", ""), ("SAM", "sam", "SAM (radians)", " rad"))


def _results(report_path: str, estimate: str, metrics, feedback) -> dict:
    """The report, its two figures, the estimate evaluated and the four metrics (also logged)."""
    stem = os.path.splitext(report_path)[0]
    results = {"REPORT": report_path, "ESTIMATE_USED": estimate, "PSNR_PLOT": stem + "_psnr.png",
               "PROFILES_PLOT": stem + "_profiles.png"}
    for name, key, _, unit in METRICS:
        results[name] = float(metrics[key])
        feedback.pushInfo(f"{name}: {metrics[key]:.6g}{unit}")
    return results


def parse_band_list(text: str) -> list:
    """'1, 3-5' -> [0, 2, 3, 4]: 1-based band numbers and ranges to the engine's 0-based indices."""
    indices = []
    for part in filter(None, (p.strip() for p in re.split(r"[,;\s]+", text or ""))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise QgsProcessingException(
                f"EXCLUDE_BANDS: cannot read '{part}'; list 1-based band numbers and ranges, e.g. 1,2,10-12")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if first < 1 or last < first:
            raise QgsProcessingException(f"EXCLUDE_BANDS: '{part}' is not a valid 1-based band or range")
        indices.extend(range(first - 1, last))
    return sorted(set(indices))


class EvaluateSpectralSuperResolution(ScdmAlgorithm):
    NAME = "evaluatespectralsuperresolution"
    DISPLAY_NAME = "Evaluate spectral super-resolution"
    TAGS = ("hyperspectral", "evaluation", "metrics", "psnr", "ssim", "sam", "rmse", "scdm")
    SHORT_DESCRIPTION = "RMSE, MPSNR, MSSIM and SAM of a hyperspectral estimate against a reference, with a report."
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("REFERENCE", "Reference hyperspectral raster"))
        self.addParameter(QgsProcessingParameterRasterLayer("ESTIMATE", "Estimated hyperspectral raster",
                                                            optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("RGB", "or: RGB raster to run through the model",
                                                            optional=True))
        add_band_parameters(self, "RGB")
        add_model_parameters(self)
        exclude = QgsProcessingParameterString("EXCLUDE_BANDS", "Bands to leave out of the metrics (1-based, "
                                               "e.g. 1,2,10-12)", optional=True)
        exclude.setHelp("For the paper's protocol, leave out the bands the RGB was made from.")
        self.addParameter(exclude)
        estimate_output = QgsProcessingParameterRasterDestination(
            "ESTIMATE_OUTPUT", "Estimate made from RGB", optional=True, createByDefault=False)
        estimate_output.setFlags(estimate_output.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(estimate_output)
        self.addParameter(QgsProcessingParameterFileDestination(
            "REPORT", "Report", fileFilter="HTML files (*.html);;CSV files (*.csv)"))
        for name, _, label, _ in METRICS:
            self.addOutput(QgsProcessingOutputNumber(name, label))
        self.addOutput(QgsProcessingOutputFile("PSNR_PLOT", "Per-band PSNR plot (PNG)"))
        self.addOutput(QgsProcessingOutputFile("PROFILES_PLOT", "Spectral profiles plot (PNG)"))
        self.addOutput(QgsProcessingOutputRasterLayer("ESTIMATE_USED", "Estimate evaluated"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        feedback = feedback or QgsProcessingFeedback()  # QGIS may pass none
        has_estimate = parameters.get("ESTIMATE") not in (None, "")
        has_rgb = parameters.get("RGB") not in (None, "")
        if has_estimate == has_rgb:
            raise QgsProcessingException(
                "Give either ESTIMATE (an estimated hyperspectral raster) or RGB (an RGB raster to run through "
                "the model), not " + ("both" if has_estimate else "neither") + ".")
        eng = bridge.load_engine()
        reference = raster_path(self, parameters, "REFERENCE", context)
        exclude = parse_band_list(self.parameterAsString(parameters, "EXCLUDE_BANDS", context))
        report_path = self.parameterAsFileOutput(parameters, "REPORT", context)
        if os.path.splitext(report_path)[1].lower() not in (".html", ".htm", ".csv"):
            report_path = os.path.splitext(report_path)[0] + ".html"

        if has_estimate:
            estimate = raster_path(self, parameters, "ESTIMATE", context)
        else:
            estimate = self._estimate_from_rgb(eng, parameters, context, feedback)
        if feedback.isCanceled():
            raise QgsProcessingException(bridge.CANCELLED_MESSAGE)
        feedback.pushInfo(f"Evaluating {estimate} against {reference}")
        estimate_name = self._estimate_name(parameters, context, has_estimate)
        reference_name = self.parameterAsRasterLayer(parameters, "REFERENCE", context).name()
        metrics = bridge.call_engine(eng, feedback, SETTING_PARAMETERS, eng.evaluate_rasters, reference, estimate,
                                     exclude_bands=exclude, report_path=report_path,
                                     title=f"{estimate_name} vs {reference_name}", estimate_name=estimate_name)
        feedback.setProgress(100)
        results = _results(report_path, estimate, metrics, feedback)
        if has_rgb and parameters.get("ESTIMATE_OUTPUT"):
            results["ESTIMATE_OUTPUT"] = estimate
            self._show_estimate_layer(eng, estimate, parameters, context, feedback)
        return results

    def _show_estimate_layer(self, eng, estimate, parameters, context, feedback) -> None:
        """The kept estimate loads as the super-resolution algorithm's output does: named after the RGB
        layer and shown in the engine's composite."""
        rgb_name = self.parameterAsRasterLayer(parameters, "RGB", context).name()
        name_and_show_when_loaded(context, estimate, f"{rgb_name} hyperspectral", eng, feedback)

    def _estimate_name(self, parameters, context, has_estimate: bool) -> str:
        """The estimate as the user knows it: its layer's name, or the RGB layer it is made from."""
        if has_estimate:
            return self.parameterAsRasterLayer(parameters, "ESTIMATE", context).name()
        return f"estimate from {self.parameterAsRasterLayer(parameters, 'RGB', context).name()}"

    def _estimate_from_rgb(self, eng, parameters, context, feedback):
        """Run the model on the RGB raster; the estimate's path (a cancel raises QgsProcessingException)."""
        rgb = raster_path(self, parameters, "RGB", context)
        reference_layer = self.parameterAsRasterLayer(parameters, "REFERENCE", context)
        arguments = inference_arguments(self, parameters, context)
        if parameters.get("ESTIMATE_OUTPUT"):
            estimate = self.parameterAsOutputLayer(parameters, "ESTIMATE_OUTPUT", context)
        else:
            estimate = os.path.join(QgsProcessingUtils.tempFolder(), f"scdm_estimate_{uuid.uuid4().hex}.tif")
        fields = dict(arguments, input=rgb, output=estimate, expected_band_count=reference_layer.bandCount())
        bridge.run_inference(eng, feedback, fields, SETTING_PARAMETERS, 0.0, 90.0)
        return estimate
