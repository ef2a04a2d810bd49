"""Writes examples/clip_and_superresolve.model3: a graphical-modeler model that clips an RGB raster
to an extent (GDAL's built-in "Clip raster by extent") and runs "Spectral super-resolution" on the clip.

The .model3 is committed; this script documents how it was made and re-creates it:
    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/make_example_model.py
(It registers QGIS's Processing providers and the plugin's provider, so that the model's output
parameter can be derived from the child algorithms.)
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource as Source,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QPointF  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "examples" / "clip_and_superresolve.model3"


def build() -> QgsProcessingModelAlgorithm:
    model = QgsProcessingModelAlgorithm("Clip and spectral super-resolution", "SCDM examples", "scdm_examples")
    model.setHelpContent({
        "ALG_DESC": "Clips an RGB raster to an extent with GDAL's Clip raster by extent, then reconstructs a "
                    "hyperspectral GeoTIFF of the clip with Spectral super-resolution (plugin SCDM).",
        "rgb": "The RGB raster (bands 1, 2, 3 = red, green, blue).",
        "extent": "The area to process, in the raster's CRS.",
        "model": "A model bundle folder; empty = the model bundled with the plugin.",
        "steps": "Sampler steps; empty = the model's default.",
    })

    inputs = [
        QgsProcessingParameterRasterLayer("rgb", "RGB raster"),
        QgsProcessingParameterExtent("extent", "Area to process"),
        QgsProcessingParameterFile("model", "Model bundle folder (empty: the bundled model)",
                                   behavior=QgsProcessingParameterFile.Behavior.Folder, optional=True),
        QgsProcessingParameterNumber("steps", "Sampler steps (empty: the model's default)",
                                     QgsProcessingParameterNumber.Type.Integer, optional=True, minValue=1),
    ]
    for row, definition in enumerate(inputs):
        component = QgsProcessingModelParameter(definition.name())
        component.setPosition(QPointF(120, 60 + 70 * row))
        model.addModelParameter(definition, component)

    clip = QgsProcessingModelChildAlgorithm("gdal:cliprasterbyextent")
    clip.setChildId("clip")
    clip.setDescription("Clip raster by extent")
    clip.setPosition(QPointF(420, 120))
    clip.addParameterSources("INPUT", [Source.fromModelParameter("rgb")])
    clip.addParameterSources("PROJWIN", [Source.fromModelParameter("extent")])
    clip.addParameterSources("OVERCRS", [Source.fromStaticValue(False)])
    clip.addParameterSources("DATA_TYPE", [Source.fromStaticValue(0)])  # as the input
    clip.addParameterSources("OPTIONS", [Source.fromStaticValue("")])
    clip.addParameterSources("EXTRA", [Source.fromStaticValue("")])
    model.addChildAlgorithm(clip)

    ssr = QgsProcessingModelChildAlgorithm("scdm:spectralsuperresolution")
    ssr.setChildId("superresolve")
    ssr.setDescription("Spectral super-resolution")
    ssr.setPosition(QPointF(420, 260))
    ssr.addParameterSources("INPUT", [Source.fromChildOutput("clip", "OUTPUT")])
    ssr.addParameterSources("RED", [Source.fromStaticValue(1)])
    ssr.addParameterSources("GREEN", [Source.fromStaticValue(2)])
    ssr.addParameterSources("BLUE", [Source.fromStaticValue(3)])
    ssr.addParameterSources("MODEL", [Source.fromModelParameter("model")])
    ssr.addParameterSources("SAMPLER", [Source.fromStaticValue(0)])
    ssr.addParameterSources("STEPS", [Source.fromModelParameter("steps")])
    output = QgsProcessingModelOutput("hyperspectral", "Hyperspectral output")
    output.setChildId("superresolve")
    output.setChildOutputName("OUTPUT")
    output.setPosition(QPointF(680, 300))
    ssr.setModelOutputs({"hyperspectral": output})
    model.addChildAlgorithm(ssr)

    # The model's own destination parameter for the output (what qgis_process and the dialog ask for).
    model.updateDestinationParameters()
    return model


def main() -> int:
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    sys.path.insert(0, str(ROOT))
    from processing.core.Processing import Processing
    from scdm_plugin.provider import ScdmProvider

    Processing.initialize()
    provider = ScdmProvider()  # keep a reference, or the registry drops it
    QgsApplication.processingRegistry().addProvider(provider)
    try:
        model = build()
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        if not model.toFile(str(TARGET)):
            print(f"cannot write {TARGET}", file=sys.stderr)
            return 1
        print(TARGET)
        names = [p.name() for p in model.parameterDefinitions()]
        print("parameters:", names)
        assert any(isinstance(p, QgsProcessingParameterRasterDestination) for p in model.parameterDefinitions())
    finally:
        app.exitQgis()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
