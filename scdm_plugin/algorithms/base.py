"""What both SCDM algorithms share: their Toolbox group, icon and help text."""

from __future__ import annotations

from qgis.core import QgsProcessingAlgorithm
from qgis.PyQt.QtGui import QIcon


class ScdmAlgorithm(QgsProcessingAlgorithm):
    HELP = ""

    def group(self):
        return "Spectral super-resolution"

    def groupId(self):  # noqa: N802
        return "spectral"

    def shortHelpString(self):  # noqa: N802
        return self.HELP

    def icon(self):
        from ..provider import ICON

        return QIcon(str(ICON))

    def createInstance(self):  # noqa: N802
        return type(self)()
