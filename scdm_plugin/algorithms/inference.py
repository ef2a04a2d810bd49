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
    QgsProviderRegistry,
)
from qgis.PyQt.QtCore import QVariant

from .. import engine_bridge as bridge


def _sampler_option(sampler) -> str:
    """A catalogue entry as a QGIS enum label."""
    if sampler.uses_steps:
        return f"{sampler.display_name} with STEPS steps ({sampler.description})"
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
    "shifts every spectrum: a display-encoded image read as linear looks washed out to the model.")

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
}


def _advanced(parameter, help_text=None):
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
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
            QgsProcessingParameterBand(name, f"{label} (default {default})", defaultValue=default,
                                       parentLayerParameterName=parent, optional=True),
            f"The band of the RGB raster that holds {label.split()[0].lower()} (1-based, default {default})."))
    radiometry = QgsProcessingParameterEnum("RADIOMETRY", "Input values", options=list(RADIOMETRIES),
                                            defaultValue=RADIOMETRIES[0])
    radiometry.setUsesStaticStrings(True)
    alg.addParameter(_with_help(radiometry, RADIOMETRY_HELP))


def add_model_parameters(alg) -> None:
    """MODEL and SAMPLER (main) plus the sampler and tiling parameters (advanced)."""
    alg.addParameter(_with_help(
        QgsProcessingParameterFile(
            "MODEL", "Model bundle folder (empty: the bundled model)",
            behavior=QgsProcessingParameterFile.Folder, defaultValue=str(bridge.DEFAULT_MODEL), optional=True),
        "A folder holding config.json and weights.safetensors (an SCDM model bundle). "
        f"Empty means the model shipped with the plugin ({bridge.DEFAULT_MODEL})."))
    alg.addParameter(_with_help(
        QgsProcessingParameterEnum("SAMPLER", "Sampler", options=[label for label, _ in SAMPLERS], defaultValue=0),
        "The model's default: the sampler and steps stored with the model (for the bundled model the one "
        "that measured the lowest error). "
        + " ".join(f"{s.display_name}: {s.description}." for s in bridge.sampler_catalog.SAMPLERS)
        + " With a sampler that draws a sample, SAMPLES >= 2 turns the spread between samples into an uncertainty. "
        "Time grows with STEPS; a sampler over all diffusion steps is about 1000 / STEPS times slower."))
    alg.addParameter(_advanced(
        QgsProcessingParameterNumber("STEPS", "Sampler steps (empty: the model's default)",
                                     QgsProcessingParameterNumber.Integer, optional=True, minValue=1, maxValue=1000),
        "Network evaluations per stage for DDIM and DPM-Solver++; time grows linearly with it. "
        "Ignored by the DDPM sampler, which always takes all 1000 steps."))
    alg.addParameter(_advanced(
        QgsProcessingParameterNumber("GUIDANCE", "Guidance scale (empty: the model's default)",
                                     QgsProcessingParameterNumber.Double, optional=True, minValue=0.0, maxValue=20.0),
        "Image Condition Mixture Guidance (ICMG) scale. 0 runs the conditional network only; any other value "
        "runs the conditional and unconditional networks together (twice the work per step)."))
    for stage, label in ((1, "stage 1 (the few anchor bands)"), (2, "stage 2 (all bands)")):
        alg.addParameter(_advanced(
            QgsProcessingParameterNumber(f"PDT_STAGE{stage}", f"Progressive truncation percentile, stage {stage} "
                                         "(empty: the model's default; 0: off)",
                                         QgsProcessingParameterNumber.Double, optional=True,
                                         minValue=0.0, maxValue=1.0),
            f"Progressive Dynamic Truncation (PDT) percentile p_T in (0, 1] for {label}: values beyond "
            "that percentile of each pixel's spectrum are clamped while sampling. 0 switches it off."))
    alg.addParameter(_advanced(
        QgsProcessingParameterNumber("SEED", "Random seed", QgsProcessingParameterNumber.Integer,
                                     defaultValue=0, minValue=0),
        "The same seed, model and settings give the same result, whatever the tiling."))
    alg.addParameter(_advanced(
        QgsProcessingParameterNumber("TILE_SIZE", "Tile size (pixels, empty: the model's default)",
                                     QgsProcessingParameterNumber.Integer, optional=True, minValue=8, maxValue=8192),
        "The raster is processed in tiles of at most this size; memory grows with its square. Empty takes the "
        "size stored with the model. For the bundled model (a multiscale network) that is 64, about twice its "
        "training crops, which measured the lowest error (one 288 px tile: 39 % more RMSE on the Houston scene). "
        "A model of local networks (whose output at a pixel depends only on a small window around it) gives the "
        "same result at any tile size, so larger tiles only save overlap work."))
    alg.addParameter(_advanced(
        QgsProcessingParameterNumber("OVERLAP", "Tile overlap (pixels)", QgsProcessingParameterNumber.Integer,
                                     defaultValue=16, minValue=0, maxValue=4096),
        "Neighbouring tiles overlap by this many pixels and are blended there (at most half the tile size); "
        "half of it is mirrored beyond the raster's border as context for the edge pixels. For a model of local "
        "networks an overlap of at least twice their context plus one joins the tiles exactly (the run says so "
        "when it is smaller)."))
    device = QgsProcessingParameterEnum("DEVICE", "Device", options=list(DEVICES), defaultValue="auto")
    device.setUsesStaticStrings(True)
    alg.addParameter(_advanced(device, "auto: the first CUDA GPU if torch sees one, else the CPU."))


def _is_unset(value) -> bool:
    return value is None or value == "" or (isinstance(value, QVariant) and value.isNull())


def optional_int(alg, parameters, name, context):
    return None if _is_unset(parameters.get(name)) else alg.parameterAsInt(parameters, name, context)


def optional_double(alg, parameters, name, context):
    return None if _is_unset(parameters.get(name)) else alg.parameterAsDouble(parameters, name, context)


def raster_path(alg, parameters, name, context) -> str:
    """The file behind a raster layer parameter (the engine reads files with GDAL)."""
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        raise QgsProcessingException(alg.invalidRasterError(parameters, name))
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
    )
