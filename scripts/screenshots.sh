#!/usr/bin/env bash
# The README's screenshots, docs/images/dialog.png and docs/images/map.png: the Spectral
# super-resolution dialog, and the output loaded in its default style, taken in the real QGIS desktop
# on a virtual screen (scripts/qgis_gui.py, which also checks the layer's name and renderer) with the
# bundled model on the demo image runs/demo/rgbn.tif (scripts/demo.sh fetches it when it is missing).
# Run scripts/setup.sh first. About a minute.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RGB=runs/demo/rgbn.tif
if [ ! -s "$RGB" ]; then
    bash scripts/demo.sh runs/demo
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
.venv/bin/python scripts/qgis_gui.py "$RGB" "$out" DEVICE=cpu > "$out/report.txt" || {
    cat "$out/report.txt" >&2
    echo "screenshots.sh: the QGIS session failed (report above)" >&2
    exit 1
}
mkdir -p docs/images
cp "$out/dialog.png" "$out/map.png" docs/images/
echo "screenshots.sh: wrote docs/images/dialog.png and docs/images/map.png"
