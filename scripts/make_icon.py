"""Render resources/icon.svg to resources/icon.png (64 x 64) with Qt's SVG renderer.

Run with the venv's python: QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/make_icon.py
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.PyQt.QtCore import Qt  # noqa: E402
from qgis.PyQt.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from qgis.PyQt.QtSvg import QSvgRenderer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    app = QGuiApplication(sys.argv[:1])  # noqa: F841 (needed by QPainter)
    renderer = QSvgRenderer(str(ROOT / "resources" / "icon.svg"))
    if not renderer.isValid():
        print("resources/icon.svg is not a valid SVG", file=sys.stderr)
        return 1
    image = QImage(64, 64, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    renderer.render(painter)
    painter.end()
    out = ROOT / "resources" / "icon.png"
    if not image.save(str(out)):
        print(f"cannot write {out}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
