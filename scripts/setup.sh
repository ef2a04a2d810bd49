#!/usr/bin/env bash
# Idempotent set-up on Debian 12 (run as root, or as a user with sudo):
#   1. Debian's QGIS 3.22 (qgis_process, Python bindings), GDAL, python3-venv and Xvfb (GUI test),
#   2. .venv made from /usr/bin/python3 with --system-site-packages (so it sees QGIS's bindings),
#   3. the Python packages of requirements-dev.txt (torch==2.13.0, rasterio, pytest, pytest-qgis,
#      pb_tool, ...) under constraints.txt (numpy<2, affine<3, PyQt5==5.15.9: see that file).
# A second run changes nothing and takes a few seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

APT_PACKAGES=(qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-scipy python3-venv zip unzip ca-certificates
              xvfb xauth)  # xvfb, xauth: the desktop GUI test (tests/qgis/test_gui_desktop.py)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for package in "${APT_PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)" != "installed" ]; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]} (apt)"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The venv must come from Debian's /usr/bin/python3 (QGIS's bindings are built for it) and see its
# site-packages; anything else is rebuilt.
venv_ok() {
    [ -x .venv/bin/python ] &&
        grep -qs '^include-system-site-packages *= *true' .venv/pyvenv.cfg &&
        [ "$(.venv/bin/python -c 'import sys; print(sys.base_prefix)' 2>/dev/null)" = "/usr" ] &&
        .venv/bin/python -c 'import qgis.core' 2>/dev/null
}
if ! venv_ok; then
    echo "setup: creating .venv (/usr/bin/python3 -m venv --system-site-packages)"
    rm -rf .venv
    /usr/bin/python3 -m venv --system-site-packages .venv
fi

# pip runs only when the requirement files changed since the last successful install.
stamp=.venv/.scdm-requirements.sha256
wanted="$(cat requirements.txt requirements-dev.txt constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: pip install -c constraints.txt -r requirements-dev.txt"
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements-dev.txt
    echo "$wanted" > "$stamp"
fi

# Fail here, with a clear message, rather than in the first test.
.venv/bin/python - <<'PY'
import qgis.core, torch, rasterio, safetensors, matplotlib, numpy
print(f"setup: ok: QGIS {qgis.core.Qgis.QGIS_VERSION}, torch {torch.__version__}, rasterio {rasterio.__version__}, "
      f"numpy {numpy.__version__}, CUDA {'yes' if torch.cuda.is_available() else 'no'}")
PY
