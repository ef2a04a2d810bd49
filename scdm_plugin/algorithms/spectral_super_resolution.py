"""``scdm:spectralsuperresolution``: RGB raster in, hyperspectral GeoTIFF out (one engine inference run)."""

from __future__ import annotations

import importlib.util

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from .. import engine_bridge as bridge
from ..layer_style import name_and_show_when_loaded
from .base import ScdmAlgorithm
from .inference import (SETTING_PARAMETERS, RasterFileParameter, add_band_parameters, add_model_parameters,
                        inference_arguments, limits, raster_path)

HELP = """<p>Reconstructs a <b>hyperspectral image from an RGB raster</b> with SCDM, a spectral-cascaded \
conditional diffusion model: a first stage works out a few key bands from the RGB, a second stage all \
bands from the RGB and those. The result is an estimate, not a measurement: use it where a plausible \
spectrum is worth more than none.</p>
<p><b>Input</b>: any raster GDAL reads; <i>Red band</i>, <i>Green band</i> and <i>Blue band</i> choose its \
bands (1, 2 and 3 unless set), <i>Input values</i> says how its values relate to light. Nodata pixels stay \
nodata (marked NaN in the output, or by the input's own nodata value when that is negative: a value of 0 \
would hide valid pixels whose spectrum reaches 0).</p>
<p><b>Output</b>: a GeoTIFF (float32 unless <i>Output data type</i> says otherwise, with overviews) with the input's CRS, extent and pixel size and one band per \
wavelength of the model (the log names the model), or with <i>Output bands</i> the bands of Sentinel-2, \
Landsat 8/9 or a response file of your own. Each band carries its centre wavelength and width in \
nanometres (GDAL metadata <i>wavelength</i>, <i>wavelength_units</i>, <i>fwhm</i>, as the EnMAP-Box writes \
them). The layer opens as a near-infrared false-colour picture (the bands nearest 860, 650 and 550 nm as red, \
green and blue: vegetation red, water dark; natural colour for a model without near infrared), and a style \
file (<i>.qml</i>) beside the output keeps that look when the file is opened again. <b>Units</b>: the same \
units as the input RGB (DN stay DN, reflectance stays reflectance). Optional outputs (Advanced): the \
<i>Stage-1 bands output</i>, and with <i>Samples</i> of 2 or more the <i>Uncertainty output</i>, the \
per-band standard deviation between the samples in the same units (near zero with DDIM, whose result \
hardly depends on chance: choose DPM-Solver++ with 10 or more steps for it), scaled by the model's \
calibration (fitted so that, over held-out scenes, 68 % of the true values lie within one standard \
deviation; their errors have heavier tails than a Gaussian, so the 95 % interval is wider than 1.96 \
standard deviations: the output's SCDM_PRODUCT metadata tag gives its half-width; scene by scene coverage \
varies widely, see the README); \
for 8-bit input under <i>Input values</i> auto it also holds the difference between reading the input as \
sRGB and as a linear stretch (the decoding is a guess; this doubles the time), so it is larger where the \
two readings disagree, in dark pixels most.</p>
<p><b>Time</b> grows with the number of pixels, the <i>Sampler steps</i> (DDPM always takes all of them, \
hundreds of times slower than a few), the <i>Samples</i>, and doubles when the <i>Guidance scale</i> is not \
0; the <i>Tile overlap</i> adds the shared pixels again. A CUDA GPU (<i>Device</i> auto or cuda) is tens \
of times faster than the CPU. The log names the device and the model; progress advances per tile, and \
Cancel stops between tiles and sampler steps without leaving an output file.</p>"""


# The optional outputs: QGIS parameter -> (InferenceSettings field, label).
OPTIONAL_OUTPUTS = {
    "STAGE1_OUTPUT": ("stage1_output", "Stage-1 bands output"),
    "UNCERTAINTY_OUTPUT": ("uncertainty_output", "Uncertainty output (per-band standard deviation)"),
}
# What follows the input layer's name in each output layer's name ("rgbn hyperspectral").
LAYER_NAME_SUFFIXES = {"OUTPUT": "hyperspectral", "STAGE1_OUTPUT": "stage 1", "UNCERTAINTY_OUTPUT": "uncertainty"}
# OUTPUT_BANDS options: the engine's band-set names (``engine.band_sets``) and a custom response file.
OUTPUT_BAND_CHOICES = ("model", *bridge.engine_band_sets.SENSORS, "response file")
OUTPUT_BANDS_HELP = (
    "model: every band of the model (one per wavelength, e.g. 48 from 374 to 1046 nm). sentinel2 / landsat8-9: "
    "the bands of that satellite that lie within the model's range, each worked out from the model's spectrum "
    "through the band's published spectral response (Sentinel-2 B1-B9, Landsat 8/9 OLI B2-B5; the SWIR bands lie "
    "beyond the model's range), named like the sensor's bands (B4 Red) so that indices such as NDVI take the "
    "usual band numbers' places. response file: the bands of the CSV given below. No effect on time.")
OUTPUT_TYPE_HELP = (
    "How the values are stored. float32: full precision (4 bytes a value). float16: half the size, about 3 "
    "significant digits, enough to look at and for indices. uint16 / int16: half the size as whole numbers with a "
    "scale written in the file (as satellite reflectance products do); QGIS and GDAL show the real values. Values "
    "above eight times the brightest input are clipped (the log says how many).")
CLUSTER_HELP = ("Run the tiles on a Dask cluster instead of in QGIS's process. Empty: here. local:N starts N worker "
                "processes on this computer (one per GPU on a computer with several GPUs); tcp://HOST:8786 uses a "
                "running Dask scheduler whose workers can import the plugin's engine. The result is the same as "
                "without a cluster. An output named .vrt is written by the workers as GeoTIFF strips in a folder "
                "beside it (for outputs too large for one writer; the folder must be shared with the workers). "
                "Needs the Python packages dask and distributed.")


class SpectralSuperResolution(ScdmAlgorithm):
    NAME = "spectralsuperresolution"
    DISPLAY_NAME = "Spectral super-resolution"
    TAGS = ("hyperspectral", "rgb", "spectral", "super-resolution", "diffusion", "scdm", "reconstruction")
    SHORT_DESCRIPTION = "Reconstructs a hyperspectral GeoTIFF from an RGB raster with a diffusion model."
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(RasterFileParameter("INPUT", "RGB raster"))
        add_band_parameters(self, "INPUT")
        add_model_parameters(self)
        samples = QgsProcessingParameterNumber("SAMPLES", "Samples (averaged; 2 or more for the uncertainty)",
                                               QgsProcessingParameterNumber.Type.Integer, defaultValue=1,
                                               **limits("samples"))
        samples.setFlags(samples.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        samples.setHelp("The output is the mean of this many results, each drawn with the next random seed; "
                        "time grows in proportion. The Uncertainty output needs at least 2.")
        self.addParameter(samples)
        cluster = QgsProcessingParameterString("CLUSTER", "Dask cluster (empty: run here; local:N or tcp://HOST:8786)",
                                               optional=True)
        cluster.setFlags(cluster.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        cluster.setHelp(CLUSTER_HELP)
        self.addParameter(cluster)
        bands = QgsProcessingParameterEnum("OUTPUT_BANDS", "Output bands", options=list(OUTPUT_BAND_CHOICES),
                                           defaultValue=OUTPUT_BAND_CHOICES[0])
        bands.setUsesStaticStrings(True)
        bands.setHelp(OUTPUT_BANDS_HELP)
        self.addParameter(bands)
        response = QgsProcessingParameterFile("OUTPUT_RESPONSE", "Band responses (CSV: wavelength_nm, one column "
                                              "per band)", extension="csv", optional=True)
        response.setFlags(response.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        response.setHelp("The spectral responses of the bands to output when 'Output bands' is 'response file': "
                         "a header line naming the wavelength column (nm) and each band, then one row per "
                         "wavelength (resources/srf/ in the plugin folder has examples).")
        self.addParameter(response)
        self._add_storage_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Hyperspectral output"))
        for name, (_, label) in OPTIONAL_OUTPUTS.items():
            parameter = QgsProcessingParameterRasterDestination(name, label, optional=True, createByDefault=False)
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(parameter)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        feedback = feedback or QgsProcessingFeedback()  # QGIS may pass none
        eng = bridge.load_engine()  # torch and the engine are imported here, never at plugin load
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        extra = self._optional_outputs(parameters, context)
        fields = dict(inference_arguments(self, parameters, context),
                      input=raster_path(self, parameters, "INPUT", context), output=output,
                      samples=self.parameterAsInt(parameters, "SAMPLES", context),
                      cluster=_cluster(self.parameterAsString(parameters, "CLUSTER", context)),
                      band_set=self._band_set(parameters, context),
                      output_type=self.parameterAsEnumString(parameters, "OUTPUT_TYPE", context) or "float32",
                      overviews=self.parameterAsBoolean(parameters, "OVERVIEWS", context),
                      **{OPTIONAL_OUTPUTS[name][0]: path for name, path in extra.items()})
        report = bridge.run_inference(eng, feedback, fields, SETTING_PARAMETERS)
        feedback.pushInfo(
            f"Wrote {report.bands} bands of {report.width} x {report.height} px to {report.output_path} "
            f"in {report.seconds:.1f} s on {report.device} ({report.tiles_run} tiles run, "
            f"{report.tiles_skipped} without valid pixels skipped; sampler {report.sampler.get('name')}, "
            f"{report.sampler.get('steps')} steps, seed {report.seed}).")
        results = {"OUTPUT": output, **extra}
        self._style_loaded_layers(eng, results, parameters, context, feedback)
        return results

    def _style_loaded_layers(self, eng, results, parameters, context, feedback) -> None:
        """Name each output layer QGIS will load after the input layer, and have it shown as the engine
        chose (the same look as the .qml the engine wrote beside the file)."""
        input_name = self.parameterAsRasterLayer(parameters, "INPUT", context).name()
        for name, path in results.items():
            name_and_show_when_loaded(context, path, f"{input_name} {LAYER_NAME_SUFFIXES[name]}", eng, feedback)

    def _add_storage_parameters(self) -> None:
        types = bridge.engine_settings.OUTPUT_TYPES
        output_type = QgsProcessingParameterEnum("OUTPUT_TYPE", "Output data type", options=list(types),
                                                 defaultValue=types[0])
        output_type.setUsesStaticStrings(True)
        output_type.setHelp(OUTPUT_TYPE_HELP)
        overviews = QgsProcessingParameterBoolean("OVERVIEWS", "Build overviews (fast display of large outputs)",
                                                  defaultValue=True)
        overviews.setHelp("Stores reduced-resolution copies inside the output file, so that QGIS draws a large "
                          "output quickly when zoomed out (only for outputs larger than 2048 pixels on a side). Costs "
                          "about a third more file size and a little time after the last tile.")
        for parameter in (output_type, overviews):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(parameter)

    def _band_set(self, parameters, context) -> str:
        """The engine's band-set choice: a name, or the response file ("" when missing: the engine refuses it)."""
        choice = self.parameterAsEnumString(parameters, "OUTPUT_BANDS", context) or OUTPUT_BAND_CHOICES[0]
        if choice == "response file":
            return self.parameterAsFile(parameters, "OUTPUT_RESPONSE", context) or "(no response file given)"
        return choice

    def _optional_outputs(self, parameters, context) -> dict:
        """The optional outputs that were asked for: QGIS parameter name -> path."""
        extra = {}
        for name in OPTIONAL_OUTPUTS:
            path = self.parameterAsOutputLayer(parameters, name, context) if parameters.get(name) else ""
            if path:
                extra[name] = path
        return extra


def _cluster(value: str):
    """The CLUSTER parameter, or None to run here; names the install command when dask is missing."""
    value = (value or "").strip()
    if value and importlib.util.find_spec("distributed") is None:
        from engine.raster.runners.dask_cluster import DASK_REQUIREMENTS

        python = bridge.qgis_python()
        raise QgsProcessingException(
            f"CLUSTER needs the Python packages dask and distributed, which QGIS's Python ({python}) cannot import. "
            f"Install them with:\n    {python} -m pip install {' '.join(DASK_REQUIREMENTS)}\n"
            "and restart QGIS, or leave CLUSTER empty.")
    return value or None
