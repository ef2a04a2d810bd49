#!/usr/bin/env bash
# The QGIS project's PyQt5 -> PyQt6 migration check over this repository's Python code: the script
# scripts/pyqt5_to_pyqt6/pyqt5_to_pyqt6.py of qgis/QGIS, installed from PyPI as its authors publish it
# (package qgis-pyqt5to6, command pyqt5to6), with PyQt6 from PyPI.
#
#   scripts/pyqt6_check.sh [PATH ...]     default: the plugin (__init__.py, scdm_plugin, engine), scripts, tests
#
# Exit 0 when the tool finds nothing to migrate; otherwise it prints the changes it would make (a diff)
# and its warnings, and exits 1. The tool rewrites files in place, so it runs on a copy.
#
# It runs in a venv of its own (build/pyqt6-check, made once from Debian's python3 without system
# site-packages: PyQt6 and QGIS 3.22's PyQt5 bindings cannot share a process). Without QGIS classes to
# introspect the tool checks Qt's enums, exec_(), imports from PyQt5, QVariant and the other Qt 6
# changes; QGIS's own enums are checked by tests/qgis/test_gui_qt6_readiness.py against the installed
# QGIS. qgis-pyqt5to6 declares Python >= 3.12; Debian 12's Python is 3.11, on which the script runs
# unchanged, hence --ignore-requires-python.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${PYQT6_CHECK_VENV:-$ROOT/build/pyqt6-check}"
REQUIREMENTS="$ROOT/scripts/pyqt6-check-requirements.txt"

stamp="$VENV/.requirements.sha256"
wanted="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/pyqt5to6" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "pyqt6_check: installing the migration tool and PyQt6 into $VENV" >&2
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --ignore-requires-python -r "$REQUIREMENTS"
    echo "$wanted" > "$stamp"
fi

if [ "$#" -eq 0 ]; then
    set -- __init__.py scdm_plugin engine scripts tests
fi
copy="$(mktemp -d "${TMPDIR:-/tmp}/pyqt6-check.XXXXXX")"
trap 'rm -rf "$copy"' EXIT
mkdir -p "$copy/original" "$copy/checked"
for path in "$@"; do
    while IFS= read -r file; do
        mkdir -p "$copy/original/$(dirname "$file")"
        cp "$file" "$copy/original/$file"
    done < <(find "$path" -name '*.py' -not -path '*/__pycache__/*')
done
cp -r "$copy/original/." "$copy/checked"

status=0
"$VENV/bin/pyqt5to6" "$copy/checked" > "$copy/stdout" 2> "$copy/stderr" || status=$?
if ! diff -ru "$copy/original" "$copy/checked" | sed "s#$copy/checked/##; s#$copy/original/##"; then
    status=1
fi
if grep -E "WARNING|ERROR|Missing import" "$copy/stdout" "$copy/stderr" | sed "s#$copy/checked/##"; then
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "pyqt6_check: the PyQt5 -> PyQt6 migration check found code to change (above)" >&2
    exit 1
fi
echo "pyqt6_check: $(find "$copy/original" -name '*.py' | wc -l) Python files need no PyQt6 migration"
