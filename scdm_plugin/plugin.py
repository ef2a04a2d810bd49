"""The plugin class: registers the Processing provider (desktop QGIS and qgis_process alike)."""

from __future__ import annotations

from qgis.core import QgsApplication

from .provider import ScdmProvider


class ScdmPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS's name)
        """Called by qgis_process (hasProcessingProvider=yes) and by initGui in desktop QGIS."""
        if self.provider is None:
            self.provider = ScdmProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
