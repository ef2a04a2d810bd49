"""Output layers shown as the engine chose (``engine.display``): a multiband colour renderer with the
composite's bands and their cumulative-cut stretch, set when Processing loads the layer.

The engine decides (bands from wavelengths, stretch from pixel values) and also writes the same choice
as a ``.qml`` beside the file; this module only turns an ``engine.display.Display`` into QGIS objects.
"""

from __future__ import annotations

from qgis.core import (
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterMinMaxOrigin,
)

from . import engine_bridge as bridge


def multiband_renderer(provider, display) -> QgsMultiBandColorRenderer:
    """A renderer for ``display`` (an ``engine.display.Display``) on a raster data provider."""
    red, green, blue = display.composite.bands
    renderer = QgsMultiBandColorRenderer(provider, red, green, blue)
    setters = (renderer.setRedContrastEnhancement, renderer.setGreenContrastEnhancement,
               renderer.setBlueContrastEnhancement)
    for set_enhancement, band, stretch in zip(setters, display.composite.bands, display.stretches):
        enhancement = QgsContrastEnhancement(provider.dataType(band))
        enhancement.setContrastEnhancementAlgorithm(
            QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum)
        enhancement.setMinimumValue(stretch.minimum)
        enhancement.setMaximumValue(stretch.maximum)
        set_enhancement(enhancement)
    # Recorded so that the layer's properties show how the range was found (and can redo it).
    origin = renderer.minMaxOrigin()
    origin.setLimits(QgsRasterMinMaxOrigin.Limits.CumulativeCut)
    origin.setCumulativeCutLower(display.cut[0])
    origin.setCumulativeCutUpper(display.cut[1])
    renderer.setMinMaxOrigin(origin)
    return renderer


class DisplayPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Sets an ``engine.display.Display`` on the layer Processing loads for an output."""

    # Processing keeps only a C++ pointer to a post-processor: the Python object must be held here
    # until it has run, or it is collected and the layer silently keeps QGIS's default look.
    _waiting = []

    def __init__(self, display):
        super().__init__()
        self.display = display

    @classmethod
    def create(cls, display) -> "DisplayPostProcessor":
        processor = cls(display)
        cls._waiting.append(processor)
        return processor

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS's name)
        if self in self._waiting:
            self._waiting.remove(self)
        layer.setRenderer(multiband_renderer(layer.dataProvider(), self.display))
        layer.triggerRepaint()


def name_and_show_when_loaded(context, path: str, name: str, eng, feedback) -> None:
    """When Processing loads the output at ``path`` after the run: call its layer ``name`` and show it
    as the engine (``eng``, from ``engine_bridge.load_engine``) chooses. Nothing is read when it is not
    loaded."""
    if not context.willLoadLayerOnCompletion(path):
        return
    details = context.layerToLoadOnCompletionDetails(path)
    details.name = name
    display = bridge.call_engine(eng, feedback, {}, eng.read_display, path)  # an error about no setting
    details.setPostProcessor(DisplayPostProcessor.create(display))
