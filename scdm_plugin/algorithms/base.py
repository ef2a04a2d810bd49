"""What both SCDM algorithms share: their place in the Toolbox and icon; each subclass states its identity
(NAME, DISPLAY_NAME, TAGS, SHORT_DESCRIPTION) and help text as class attributes."""

from __future__ import annotations

from qgis.core import QgsProcessingAlgorithm
from qgis.PyQt.QtGui import QIcon

from .. import engine_bridge as bridge


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

    # No group: the Toolbox shows SCDM > Spectral super-resolution, not the name twice over.
    def group(self):
        return ""

    def groupId(self):  # noqa: N802
        return ""

    def shortHelpString(self):  # noqa: N802
        return self.HELP

    def icon(self):
        from ..provider import ICON

        return QIcon(str(ICON))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        # QGIS says "<path> not found" for any raster file it cannot open; say why (empty, a folder, not a raster).
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            message = bridge.raster_parameter_problem(self, parameters, context) or message
        return ok, message

    def createInstance(self):  # noqa: N802
        return type(self)()
