"""What both SCDM algorithms share: their Toolbox group and icon; each subclass states its identity
(NAME, DISPLAY_NAME, TAGS, SHORT_DESCRIPTION) and help text as class attributes."""

from __future__ import annotations

from qgis.core import QgsProcessingAlgorithm
from qgis.PyQt.QtGui import QIcon


class ScdmAlgorithm(QgsProcessingAlgorithm):
    NAME = ""
    DISPLAY_NAME = ""
    TAGS: tuple = ()
    SHORT_DESCRIPTION = ""
    HELP = ""

    def name(self):
        return self.NAME

    def displayName(self):  # noqa: N802
        return self.DISPLAY_NAME

    def tags(self):
        return list(self.TAGS)

    def shortDescription(self):  # noqa: N802
        return self.SHORT_DESCRIPTION

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
