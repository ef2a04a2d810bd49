#!/usr/bin/env bash
# Runs the whole test suite (engine tests and the QGIS tests in tests/qgis) with the venv made by
# scripts/setup.sh. Extra arguments go to pytest, e.g. `scripts/test.sh tests/qgis -x`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then
    echo "test.sh: .venv is missing: run scripts/setup.sh first" >&2
    exit 2
fi

# QGIS headless, the venv's Python for qgis_process subprocesses, and a throw-away QGIS profile
# (pytest-qgis points the in-process QGIS at <repo>/.qgis-settings itself).
export QT_QPA_PLATFORM=offscreen
export PATH="$ROOT/.venv/bin:$PATH"
profile="$(mktemp -d "${TMPDIR:-/tmp}/scdm-qgis-profile.XXXXXX")"
trap 'rm -rf "$profile"' EXIT
export QGIS_CUSTOM_CONFIG_PATH="$profile"
export MPLBACKEND=Agg

.venv/bin/python -m pytest "$@"
