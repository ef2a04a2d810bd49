#!/usr/bin/env bash
# Builds the installable plugin zip with pb_tool: deploys the plugin into a temporary plugins folder
# (pb_tool deploy) and zips that copy (pb_tool zip). Writes <out dir>/scdm.zip (default: build/).
# Install it in QGIS with Plugins > Manage and Install Plugins > Install from ZIP.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$(mkdir -p "${1:-build}" && cd "${1:-build}" && pwd)"
PB_TOOL="$ROOT/.venv/bin/pb_tool"
if [ ! -x "$PB_TOOL" ]; then
    echo "build_zip.sh: $PB_TOOL is missing: run scripts/setup.sh first" >&2
    exit 2
fi
deploy="$(mktemp -d)"
trap 'rm -rf "$deploy"' EXIT

"$PB_TOOL" deploy -y -n -p "$deploy" > "$deploy.log" 2>&1 || { cat "$deploy.log" >&2; rm -f "$deploy.log"; exit 1; }
# zip -q zips the copy deployed above into the current folder; run it in $OUT.
(cd "$OUT" && rm -f scdm.zip && "$PB_TOOL" zip -q -n -p "$deploy" --config_file "$ROOT/pb_tool.cfg") \
    >> "$deploy.log" 2>&1 || { cat "$deploy.log" >&2; rm -f "$deploy.log"; exit 1; }
rm -f "$deploy.log"
echo "$OUT/scdm.zip"
