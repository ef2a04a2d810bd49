"""Parameters shared by both algorithms: which RGB bands, which model and how to sample it.

They become fields of ``engine.settings.InferenceSettings`` (built and checked by
``engine_bridge.run_inference``); nothing here computes. ``SETTING_PARAMETERS`` says which QGIS
parameter sets each engine setting, so that an engine error is shown with the parameter to change.
"""

from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProviderRegistry,
)
from qgis.PyQt.QtCore import QVariant

from .. import engine_bridge as bridge


def _sampler_option(sampler) -> str:
    """A catalogue entry as a QGIS enum label."""
    if sampler.uses_steps:
        return f"{sampler.display_name}, Sampler steps as set ({sampler.description})"
    return f"{sampler.display_name} ({sampler.description})"


# (label shown in QGIS, engine sampler name or None for the bundle's own). QGIS saves the index in models
# and batch files: 0 is the model's default, then the catalogue's samplers in its order, where new ones are
# appended, so a saved index keeps its meaning.
_BUNDLED = bridge.default_sampler_label()
SAMPLERS = (
    (f"The model's default (bundled model: {_BUNDLED})" if _BUNDLED else "The model's default", None),
    *((_sampler_option(sampler), sampler.name) for sampler in bridge.sampler_catalog.SAMPLERS),
)
DEVICES = ("auto", "cpu", "cuda")
RADIOMETRIES = ("auto", "linear", "srgb")
RADIOMETRY_HELP = (
    "What the RGB values mean. auto: 8-bit images (photos, orthophoto and satellite quick-looks) are "
    "display-encoded and are decoded to linear light first; anything else is taken as linear. linear: the "
    "values are proportional to light (reflectance, radiance, raw sensor values) whatever the data type. "
    "srgb: the values are sRGB-encoded over the data type's full range (8 or 16 bit). A wrong choice "
    "shifts every spectrum: a display-encoded image read as linear looks washed out to the model. With auto "
    "on 8-bit input the decoding is a guess (a stretched orthophoto is not sRGB), so the Uncertainty output "
    "also holds the difference from reading the input as a linear stretch; choose srgb or linear when you know.")

CONSISTENCY_CHOICES = ("off", "estimate", "camera file")
CONSISTENCY_HELP = (
    "off: the spectra as the model gives them. camera file: each spectrum is changed as little as possible so "
    "that, integrated over the camera response given below, it gives back the input RGB exactly (the "
    "response is first scaled to the image's exposure and white balance). estimate: the same with a "
    "response estimated from the image (logged and stored in the output's SCDM_CONSISTENCY tag). The "
    "step changes only what the camera sees; the near-infrared stays the model's.")

# The QGIS parameter(s) that set each engine setting (an ``InferenceSettings`` field, or ``radiometry``),
# as an error message names them: an engine error carries the setting it is about in ``parameter``
# and ``engine_bridge.call_engine`` puts these words in front of its message ("OVERLAP: overlap 32 must
# ..."). The one table of that mapping, for both algorithms; the evaluation algorithm replaces the
# entries of the parameters it names differently (``evaluate.SETTING_PARAMETERS``). A setting missing
# here is shown without a parameter name.
SETTING_PARAMETERS = {
    "input": "INPUT",
    "output": "OUTPUT",
    "stage1_output": "STAGE1_OUTPUT",
    "uncertainty_output": "UNCERTAINTY_OUTPUT",
    "bands": "the RED, GREEN and BLUE band parameters",
    "model": "MODEL",
    "sampler": "SAMPLER",
    "steps": "STEPS",
    "guidance": "GUIDANCE",
    "pdt": "PDT_STAGE1 and PDT_STAGE2",
    "seed": "SEED",
    "tile": "TILE_SIZE",
    "overlap": "OVERLAP",
    "device": "DEVICE",
    "samples": "SAMPLES",
    "expected_band_count": "REFERENCE",  # only the evaluation algorithm sets it, from its reference raster
    "radiometry": "RADIOMETRY",
    "consistency": "CONSISTENCY and CAMERA_RESPONSE",
    "cluster": "CLUSTER",
    "band_set": "OUTPUT_BANDS and OUTPUT_RESPONSE",
    "output_type": "OUTPUT_TYPE",
    "overviews": "OVERVIEWS",
}


def limits(setting: str) -> dict:
    """``minValue`` / ``maxValue`` of the QGIS number parameter that sets ``setting``: the engine's
    range (``engine.settings.LIMITS``), so that QGIS and the engine's command line refuse the same values."""
    limit = bridge.engine_settings.LIMITS[setting]
    return {"minValue": limit.low} if limit.high is None else {"minValue": limit.low, "maxValue": limit.high}


class RasterFileParameter(QgsProcessingParameterRasterLayer):
    """A raster layer parameter whose file QGIS opens (to check it) without leaving an ``.aux.xml`` of
    statistics beside it and without printing GDAL's complaints about NaN or constant bands
    (``engine_bridge.quiet_gdal_reads``); the engine reads the file itself."""

    def checkValueIsAcceptable(self, value, context=None):  # noqa: N802 (QGIS's name)
        with bridge.quiet_gdal_reads():
            return super().checkValueIsAcceptable(value, context)


def _advanced(parameter, help_text=None):
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    if help_text:
        parameter.setHelp(help_text)
    return parameter


def _with_help(parameter, help_text):
    parameter.setHelp(help_text)
    return parameter


def add_band_parameters(alg, parent: str) -> None:
    # Optional so that an unset band takes its default: QGIS 3.22's qgis_process treats a mandatory band
    # parameter that is not given as missing, whatever its default.
    for name, label, default in (("RED", "Red band", 1), ("GREEN", "Green band", 2), ("BLUE", "Blue band", 3)):
        alg.addParameter(_with_help(
            QgsProcessingParameterBand(name, label, defaultValue=default,
                                       parentLayerParameterName=parent, optional=True),
            f"The band of the RGB raster that holds {label.split()[0].lower()} (1-based, default {default})."))
    radiometry = QgsProcessingParameterEnum("RADIOMETRY", "Input values", options=list(RADIOMETRIES),
                                            defaultValue=RADIOMETRIES[0])
    radiometry.setUsesStaticStrings(True)
    alg.addParameter(_with_help(radiometry, RADIOMETRY_HELP))
    consistency = QgsProcessingParameterEnum("CONSISTENCY", "Make spectra consistent with the RGB",
                                             options=list(CONSISTENCY_CHOICES), defaultValue=CONSISTENCY_CHOICES[0])
    consistency.setUsesStaticStrings(True)
    alg.addParameter(_advanced(consistency, CONSISTENCY_HELP))
    alg.addParameter(_advanced(QgsProcessingParameterFile(
        "CAMERA_RESPONSE", "Camera response (CSV: wavelength nm, red, green, blue)", extension="csv", optional=True),
        "The camera's spectral response, used when 'Make spectra consistent with the RGB' is 'camera file'."))


def add_model_parameters(alg) -> None:
    """MODEL and SAMPLER (main) plus the sampler and tiling parameters (advanced)."""
    alg.addParameter(_with_help(
        QgsProcessingParameterFile(
            "MODEL", "Model folder (empty: the bundled model)",
            behavior=QgsProcessingParameterFile.Behavior.Folder, optional=True),
        # Empty by default and resolved when the algorithm runs (engine_bridge.model_folder): an install
        # path as default would be saved into history, batch files and models and break them elsewhere.
        "A folder holding config.json and weights.safetensors (an SCDM model bundle). Empty: the model "
        "that comes with the plugin."))
    alg.addParameter(_with_help(
        QgsProcessingParameterEnum("SAMPLER", "Sampler", options=[label for label, _ in SAMPLERS], defaultValue=0),
        "How each pixel's spectrum is worked out. The model's default: the method and steps stored with the "
        "model, chosen for the lowest error. "
        + " ".join(f"{s.display_name}: {s.description}." for s in bridge.sampler_catalog.SAMPLERS)
        + " With a method that draws one of many plausible spectra, Samples of 2 or more turn their spread into "
        "an uncertainty. Time grows with Sampler steps; a method over all steps is hundreds of times slower."))
    alg.addParameter(_advanced(
        QgsProcessingParameterNumber("STEPS", "Sampler steps (empty: the model's default)",
                                     QgsProcessingParameterNumber.Type.Integer, optional=True, **limits("steps")),
        "How many refinement passes DDIM and DPM-Solver++ make in each of the two stages: time grows in "
        "proportion, and more is not always better (empty takes the number stored with the model). DDPM "
        "ignores it and always makes all of them."))
    alg.addParameter(_advanced(
        QgsProcessingParameterNumber("GUIDANCE", "Guidance scale (empty: the model's default)",
                                     QgsProcessingParameterNumber.Type.Double, optional=True, **limits("guidance")),
        "How strongly the spectra are pushed towards what the RGB shows. 0 takes the model as it is; any "
        "other value pushes further and doubles the time of every step. Empty: the model's default."))
    for stage, label in ((1, "stage 1 (which works out a few key bands)"), (2, "stage 2 (which works out all bands)")):
        alg.addParameter(_advanced(
            QgsProcessingParameterNumber(f"PDT_STAGE{stage}", f"Progressive truncation percentile, stage {stage} "
                                         "(empty: the model's default; 0: off)",
                                         QgsProcessingParameterNumber.Type.Double, optional=True,
                                         **limits("pdt")),
            f"For {label}: while a pixel's spectrum is being worked out, its values beyond this percentile "
            "(between 0 and 1) of the spectrum are clipped, which keeps outliers in check. 0 switches it off; "
            "empty: the model's default. No effect on time."))
    alg.addParameter(_advanced(
        QgsProcessingParameterNumber("SEED", "Random seed", QgsProcessingParameterNumber.Type.Integer,
                                     defaultValue=0, **limits("seed")),
        "The same seed, model and settings (tile size and overlap included) give the same result; another seed "
        "gives another result, by how much depends on the model and the sampler. Models whose networks see only "
        "a fixed window around each pixel give the same result whatever the tile size and overlap; for other "
        "models the result changes a little with the tiling. With per-pixel models (the default one) pixels of "
        "the same colour get the same spectrum, so a uniform area stays uniform."))
    alg.addParameter(_advanced(
        QgsProcessingParameterNumber("TILE_SIZE", "Tile size (pixels, empty: the model's default)",
                                     QgsProcessingParameterNumber.Type.Integer, optional=True, **limits("tile")),
        "The raster is processed in square pieces of at most this many pixels a side; memory grows with the "
        "square of the size. Empty takes the size stored with the model. A model whose result at a pixel "
        "depends only on a small neighbourhood gives the same result at any size, so larger pieces only save "
        "time; for a model that looks at a wider area the size stored with it gave the best results."))
    alg.addParameter(_advanced(
        QgsProcessingParameterNumber("OVERLAP", "Tile overlap (pixels)", QgsProcessingParameterNumber.Type.Integer,
                                     defaultValue=bridge.engine_settings.DEFAULT_OVERLAP, **limits("overlap")),
        "Neighbouring tiles share this many pixels and are blended there, so that no seams show (at most half "
        "the tile size); the shared pixels are computed twice, which costs time. The run's log says when the "
        "overlap is too small for the model to join the tiles without a trace."))
    device = QgsProcessingParameterEnum("DEVICE", "Device", options=list(DEVICES), defaultValue="auto")
    device.setUsesStaticStrings(True)
    alg.addParameter(_advanced(device, "Where the work runs. auto: an NVIDIA graphics card (CUDA) if one can be "
                                       "used, else the processor (CPU), which is many times slower."))


def _is_unset(value) -> bool:
    return value is None or value == "" or (isinstance(value, QVariant) and value.isNull())


def optional_int(alg, parameters, name, context):
    return None if _is_unset(parameters.get(name)) else alg.parameterAsInt(parameters, name, context)


def optional_double(alg, parameters, name, context):
    return None if _is_unset(parameters.get(name)) else alg.parameterAsDouble(parameters, name, context)


def raster_path(alg, parameters, name, context) -> str:
    """The file behind a raster layer parameter (the engine reads files with GDAL)."""
    with bridge.quiet_gdal_reads():
        layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        value = parameters.get(name)
        problem = bridge.raster_problem(value) if isinstance(value, str) and value else None
        raise QgsProcessingException(f"{name}: {problem}" if problem else alg.invalidRasterError(parameters, name))
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"{name}: layer '{layer.name()}' is a {layer.providerType()} layer; this algorithm reads raster "
            "files (GeoTIFF or anything else GDAL opens). Export it to a GeoTIFF first.")
    path = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or layer.source()
    return path


def inference_arguments(alg, parameters, context) -> dict:
    """The band, model, sampler and tiling parameters as ``InferenceSettings`` fields (name -> value);
    each algorithm adds its input, outputs and the rest."""
    pdt = []
    for stage in (1, 2):
        value = optional_double(alg, parameters, f"PDT_STAGE{stage}", context)
        pdt.append("off" if value is not None and value <= 0 else value)
    return dict(
        model=str(bridge.model_folder(alg.parameterAsFile(parameters, "MODEL", context))),
        bands=tuple(alg.parameterAsInt(parameters, name, context) for name in ("RED", "GREEN", "BLUE")),
        sampler=SAMPLERS[alg.parameterAsEnum(parameters, "SAMPLER", context)][1],
        steps=optional_int(alg, parameters, "STEPS", context),
        guidance=optional_double(alg, parameters, "GUIDANCE", context),
        pdt=tuple(pdt),
        seed=alg.parameterAsInt(parameters, "SEED", context),
        tile=optional_int(alg, parameters, "TILE_SIZE", context),
        overlap=alg.parameterAsInt(parameters, "OVERLAP", context),
        device=alg.parameterAsEnumString(parameters, "DEVICE", context) or "auto",
        radiometry=alg.parameterAsEnumString(parameters, "RADIOMETRY", context) or "auto",
        consistency=_consistency(alg, parameters, context),
    )


def _consistency(alg, parameters, context):
    """None, "estimate", or the camera file ("" when it is missing, which the engine refuses by name)."""
    choice = alg.parameterAsEnumString(parameters, "CONSISTENCY", context) or CONSISTENCY_CHOICES[0]
    if choice == "camera file":
        return alg.parameterAsFile(parameters, "CAMERA_RESPONSE", context) or "(none given)"
    return None if choice == "off" else choice
