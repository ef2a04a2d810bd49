"""``scdm:spectralsuperresolution``: RGB raster in, hyperspectral GeoTIFF out (one engine inference run)."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .. import engine_bridge as bridge
from .base import ScdmAlgorithm
from .inference import SETTING_PARAMETERS, add_band_parameters, add_model_parameters, inference_arguments, raster_path

HELP = """<p>Reconstructs a <b>hyperspectral image from an RGB raster</b> with SCDM, a spectral-cascaded \
conditional diffusion model: stage 1 reconstructs a few anchor bands from the RGB, stage 2 all bands \
from the RGB and those anchors. With the default sampler the result is close to the model's mean of \
the spectra that agree with the RGB; other samplers draw one of those spectra. Either way it is an \
estimate, not a measurement: use it where a plausible spectrum is worth more than none.</p>
<p><b>Input</b>: any raster GDAL reads; RED, GREEN and BLUE choose its bands (1, 2, 3 by default). \
Nodata pixels stay nodata.</p>
<p><b>Output</b>: a float32 GeoTIFF with the input's CRS, extent and pixel size and one band per \
wavelength of the model (the bundled model: 48 bands, 374-1046 nm). Each band carries its centre \
wavelength and FWHM in nanometres (GDAL metadata <i>wavelength</i>, <i>wavelength_units</i>, <i>fwhm</i>, \
as the EnMAP-Box writes them). <b>Units</b>: the same units as the input RGB (DN stay DN, reflectance \
stays reflectance): the model works on the RGB's normalised values and maps its output back with the \
same scale. Optional outputs: the stage-1 bands, and with SAMPLES of 2 or more the per-band standard \
deviation between samples (an uncertainty, in the same units; near zero with the default DDIM sampler, \
whose output hardly depends on the noise: choose DPM-Solver++ with 10 or more steps for it).</p>
<p><b>Time</b> grows with the number of pixels, the sampler steps (STEPS for DDIM and DPM-Solver++, \
always 1000 for the paper's DDPM sampler, about 500 times slower than the default), SAMPLES, and doubles \
when GUIDANCE is not 0. \
Overlap adds the overlapping pixels again. A CUDA GPU (DEVICE auto or cuda) is tens of times faster \
than the CPU. The log names the device and the model; progress advances per tile, and Cancel stops \
between tiles and sampler steps without leaving an output file.</p>"""


# The optional outputs: QGIS parameter -> (InferenceSettings field, label).
OPTIONAL_OUTPUTS = {
    "STAGE1_OUTPUT": ("stage1_output", "Stage-1 bands output"),
    "UNCERTAINTY_OUTPUT": ("uncertainty_output", "Uncertainty output (per-band standard deviation)"),
}
# The name each output's layer gets when QGIS loads it.
LAYER_NAMES = {"OUTPUT": "Hyperspectral", "STAGE1_OUTPUT": "Stage-1 bands", "UNCERTAINTY_OUTPUT": "Uncertainty"}


class SpectralSuperResolution(ScdmAlgorithm):
    NAME = "spectralsuperresolution"
    DISPLAY_NAME = "Spectral super-resolution"
    TAGS = ("hyperspectral", "rgb", "spectral", "super-resolution", "diffusion", "scdm", "reconstruction")
    SHORT_DESCRIPTION = "Reconstructs a hyperspectral GeoTIFF from an RGB raster with a diffusion model."
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "RGB raster"))
        add_band_parameters(self, "INPUT")
        add_model_parameters(self)
        samples = QgsProcessingParameterNumber("SAMPLES", "Samples (averaged; 2 or more for the uncertainty)",
                                               QgsProcessingParameterNumber.Integer, defaultValue=1,
                                               minValue=1, maxValue=64)
        samples.setFlags(samples.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        samples.setHelp("The output is the mean of this many samples drawn with seeds SEED, SEED + 1, ...; "
                        "time grows linearly with it. UNCERTAINTY_OUTPUT needs at least 2.")
        self.addParameter(samples)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Hyperspectral output"))
        for name, (_, label) in OPTIONAL_OUTPUTS.items():
            parameter = QgsProcessingParameterRasterDestination(name, label, optional=True, createByDefault=False)
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        feedback = feedback or QgsProcessingFeedback()  # QGIS may pass none
        eng = bridge.load_engine()  # torch and the engine are imported here, never at plugin load
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        extra = self._optional_outputs(parameters, context)
        fields = dict(inference_arguments(self, parameters, context),
                      input=raster_path(self, parameters, "INPUT", context), output=output,
                      samples=self.parameterAsInt(parameters, "SAMPLES", context),
                      **{OPTIONAL_OUTPUTS[name][0]: path for name, path in extra.items()})
        report = bridge.run_inference(eng, feedback, fields, SETTING_PARAMETERS)
        if report is None:
            return {}
        feedback.pushInfo(
            f"Wrote {report.bands} bands of {report.width} x {report.height} px to {report.output_path} "
            f"in {report.seconds:.1f} s on {report.device} ({report.tiles_run} tiles run, "
            f"{report.tiles_skipped} without valid pixels skipped; sampler {report.sampler.get('name')}, "
            f"{report.sampler.get('steps')} steps, seed {report.seed}).")
        results = {"OUTPUT": output, **extra}
        for name, path in results.items():
            if context.willLoadLayerOnCompletion(path):
                context.layerToLoadOnCompletionDetails(path).name = LAYER_NAMES[name]
        return results

    def _optional_outputs(self, parameters, context) -> dict:
        """The optional outputs that were asked for: QGIS parameter name -> path."""
        extra = {}
        for name in OPTIONAL_OUTPUTS:
            path = self.parameterAsOutputLayer(parameters, name, context) if parameters.get(name) else ""
            if path:
                extra[name] = path
        return extra
