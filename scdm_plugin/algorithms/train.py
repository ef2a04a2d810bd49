"""``scdm:trainspectralsuperresolution``: a model bundle from the user's hyperspectral rasters and camera
(``engine.custom_training``), usable by the super-resolution algorithm's MODEL parameter."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
)

from .. import engine_bridge as bridge
from .base import ScdmAlgorithm
from .inference import DEVICES

CAMERAS = ("sentinel2", "landsat8-9", "camera file")
PRESETS = ("cpu-quick", "cpu", "gpu")
STARTS = ("scratch", "bundled model", "model folder")
# Engine setting -> the parameter(s) that set it, as error messages name them.
SETTING_PARAMETERS = {"scenes": "SCENES", "camera": "CAMERA and CAMERA_RESPONSE", "preset": "PRESET",
                      "output": "OUTPUT_MODEL", "init_from": "START_FROM and START_MODEL"}

HELP = """<p>Trains a <b>model of your own</b> for <i>Spectral super-resolution</i> from hyperspectral rasters \
of your area or materials and the camera whose RGB the model will receive.</p>
<p><b>Hyperspectral rasters</b>: one or more rasters whose bands carry their wavelengths (GDAL metadata \
<i>wavelength</i> and <i>wavelength_units</i>, as the EnMAP-Box and GDAL's ENVI driver write them). The \
model's bands run from 374 to 1046 nm in 48 steps; bands your rasters do not cover are learned from \
nothing. <b>Camera</b>: the red, green and blue bands of Sentinel-2 or Landsat 8/9, or a CSV of your \
camera's responses (a wavelength column in nm, then red, green, blue). The training RGB is each raster \
rendered through it as real imagery is (haze, white balance, noise, linear, sRGB and stretched 8-bit \
encodings). <b>Start from</b>: a new model, or fine-tune the bundled model (or one trained here before) \
to your rasters and camera.</p>
<p><b>Preset</b>: cpu took 13 min for one 192 x 160 px raster on a 2-core computer (measured, the \
cores shared with other work); cpu-quick has a quarter of its iterations, a first look; gpu ten times \
the cpu preset's iterations with a 4 times larger batch, for a CUDA GPU. The result is a model folder (<i>Model folder</i> of <i>Spectral super-resolution</i> takes \
it) with a <code>MODEL_CARD.md</code> saying what it was trained on, how long it took and its limits.</p>
<p>Progress shows the step; <b>Cancel</b> keeps the checkpoints in <i>&lt;folder&gt;.training</i> beside \
the output, and a run with <i>Continue an interrupted training</i> picks up from them. The model folder \
appears (or replaces an earlier one) only when training has finished.</p>"""


class TrainSpectralSuperResolution(ScdmAlgorithm):
    NAME = "trainspectralsuperresolution"
    DISPLAY_NAME = "Train spectral super-resolution model"
    TAGS = ("hyperspectral", "training", "model", "rgb", "spectral", "scdm", "fine-tune")
    SHORT_DESCRIPTION = "Trains a spectral super-resolution model from hyperspectral rasters and a camera."
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers("SCENES", "Hyperspectral rasters (band wavelengths)",
                                                               layerType=QgsProcessing.SourceType.TypeRaster))
        camera = QgsProcessingParameterEnum("CAMERA", "Camera", options=list(CAMERAS), defaultValue=CAMERAS[0])
        camera.setUsesStaticStrings(True)
        camera.setHelp("Whose RGB the model will receive: Sentinel-2's B4, B3, B2, Landsat 8/9's B4, B3, B2, or "
                       "the CSV given below.")
        self.addParameter(camera)
        self.addParameter(QgsProcessingParameterFile(
            "CAMERA_RESPONSE", "Camera response (CSV: wavelength nm, red, green, blue)", extension="csv",
            optional=True))
        preset = QgsProcessingParameterEnum("PRESET", "Preset", options=list(PRESETS), defaultValue=PRESETS[0])
        preset.setUsesStaticStrings(True)
        preset.setHelp("How long to train: cpu-quick (a few minutes), cpu (13 min measured on a 2-core computer), "
                       "gpu (ten times the cpu preset, for a CUDA GPU).")
        self.addParameter(preset)
        start = QgsProcessingParameterEnum("START_FROM", "Start from", options=list(STARTS), defaultValue=STARTS[0])
        start.setUsesStaticStrings(True)
        start.setHelp("scratch: a new model. bundled model: fine-tune the model that comes with the plugin to your "
                      "rasters and camera (keeps what it learned elsewhere; usually better with few rasters). model "
                      "folder: fine-tune a model trained here before (the folder given below). Same time either way.")
        self.addParameter(start)
        self.addParameter(QgsProcessingParameterFile("START_MODEL", "Model folder to start from", optional=True,
                                                     behavior=QgsProcessingParameterFile.Behavior.Folder))
        device = QgsProcessingParameterEnum("DEVICE", "Device", options=list(DEVICES), defaultValue=DEVICES[0])
        device.setUsesStaticStrings(True)
        resume = QgsProcessingParameterBoolean("RESUME", "Continue an interrupted training", defaultValue=False)
        for parameter in (device, resume):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_MODEL", "Model folder"))

    def _start(self, parameters, context):
        """None, "bundled", or the model folder to fine-tune ("" when missing: the engine refuses it)."""
        choice = self.parameterAsEnumString(parameters, "START_FROM", context) or STARTS[0]
        if choice == "model folder":
            return self.parameterAsFile(parameters, "START_MODEL", context) or "(no model folder given)"
        return "bundled" if choice == "bundled model" else None

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        feedback = feedback or QgsProcessingFeedback()
        eng = bridge.load_engine()
        scenes = [layer.source() for layer in self.parameterAsLayerList(parameters, "SCENES", context)]
        camera = self.parameterAsEnumString(parameters, "CAMERA", context) or CAMERAS[0]
        if camera == "camera file":
            camera = self.parameterAsFile(parameters, "CAMERA_RESPONSE", context)
            if not camera:
                raise QgsProcessingException("CAMERA and CAMERA_RESPONSE: 'camera file' needs a CSV in CAMERA_RESPONSE")
        output = self.parameterAsString(parameters, "OUTPUT_MODEL", context)
        adapter = bridge.FeedbackAdapter(feedback)
        try:
            result = bridge.call_engine(
                eng, feedback, SETTING_PARAMETERS, eng.train_model, scenes, camera,
                self.parameterAsEnumString(parameters, "PRESET", context) or PRESETS[0], output,
                device=self.parameterAsEnumString(parameters, "DEVICE", context) or "auto",
                resume=self.parameterAsBoolean(parameters, "RESUME", context),
                progress=adapter.progress, cancel=adapter.cancel, start_from=self._start(parameters, context))
        except bridge.Cancelled:
            raise QgsProcessingException("Cancelled: the checkpoints are kept; run again with 'Continue an "
                                         "interrupted training' to go on.") from None
        feedback.pushInfo(f"Wrote the model {result['output']} in {result['seconds']:.0f} s "
                          f"(model card: {result['output']}/MODEL_CARD.md)")
        return {"OUTPUT_MODEL": result["output"]}
