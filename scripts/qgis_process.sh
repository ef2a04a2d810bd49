#!/usr/bin/env bash
# qgis_process with this checkout's plugin enabled, headless, using the venv's Python (torch):
#   scripts/qgis_process.sh run scdm:spectralsuperresolution -- INPUT=rgb.tif OUTPUT=out.tif
# What it sets (to do the same by hand):
#   QT_QPA_PLATFORM=offscreen          headless Qt (without it qgis_process aborts, exit 134)
#   PATH=<repo>/.venv/bin:$PATH        qgis_process embeds the `python3` first on PATH: the venv has torch
#   QGIS_CUSTOM_CONFIG_PATH=<dir>      a QGIS profile of its own (default <repo>/build/qgis-profile)
#   QGIS_PLUGINPATH=<dir>              a folder holding `scdm` -> <repo> (the folder name is the plugin's)
# and runs `qgis_process.bin plugins enable scdm` once per profile. It calls /usr/bin/qgis_process.bin
# because Debian's /usr/bin/qgis_process wrapper is broken on 3.22 (qgis/QGIS#57683).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "qgis_process.sh: $ROOT/.venv is missing: run scripts/setup.sh first" >&2
    exit 2
fi
QGIS_PROCESS_BIN="${QGIS_PROCESS_BIN:-/usr/bin/qgis_process.bin}"

export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
export PATH="$ROOT/.venv/bin:$PATH"
export QGIS_CUSTOM_CONFIG_PATH="${QGIS_CUSTOM_CONFIG_PATH:-$ROOT/build/qgis-profile}"
plugins="${SCDM_PLUGINPATH:-$ROOT/build/qgis-plugins}"
mkdir -p "$plugins" "$QGIS_CUSTOM_CONFIG_PATH"
if [ "$(readlink "$plugins/scdm" 2>/dev/null)" != "$ROOT" ]; then
    rm -rf "$plugins/scdm"
    ln -s "$ROOT" "$plugins/scdm"
fi
export QGIS_PLUGINPATH="$plugins"

ini="$QGIS_CUSTOM_CONFIG_PATH/profiles/default/QGIS/QGIS3.ini"
if ! grep -qs '^scdm=true' "$ini"; then
    "$QGIS_PROCESS_BIN" plugins enable scdm >/dev/null
fi
exec "$QGIS_PROCESS_BIN" "$@"
