"""The Processing provider ``scdm``."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms.evaluate import EvaluateSpectralSuperResolution
from .algorithms.spectral_super_resolution import SpectralSuperResolution
from .algorithms.train import TrainSpectralSuperResolution

ICON = Path(__file__).resolve().parents[1] / "resources" / "icon.svg"


def _metadata_version() -> str:
    metadata = Path(__file__).resolve().parents[1] / "metadata.txt"
    try:
        for line in metadata.read_text(encoding="utf-8").splitlines():
            if line.strip().startswith("version="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return ""


class ScdmProvider(QgsProcessingProvider):
    def id(self):
        return "scdm"

    def name(self):
        return "SCDM"

    def longName(self):  # noqa: N802
        version = _metadata_version()
        return f"SCDM spectral super-resolution {version}".strip()

    def icon(self):
        return QIcon(str(ICON))

    def svgIconPath(self):  # noqa: N802
        return str(ICON)

    def versionInfo(self):  # noqa: N802
        return _metadata_version()

    def loadAlgorithms(self):  # noqa: N802
        self.addAlgorithm(SpectralSuperResolution())
        self.addAlgorithm(EvaluateSpectralSuperResolution())
        self.addAlgorithm(TrainSpectralSuperResolution())

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802
        # The engine writes GeoTIFF only.
        return ["tif"]

    def defaultRasterFileExtension(self):  # noqa: N802
        return "tif"
