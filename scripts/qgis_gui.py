"""Run scripts/gui_session.py in the real QGIS desktop on a virtual screen (Xvfb), the way a user who
installed the plugin runs it: a fresh QGIS profile, the plugin folder linked as ``scdm`` and enabled, the
venv's Python first on PATH (QGIS embeds the ``python3`` it finds there; the venv's has torch).

    .venv/bin/python scripts/qgis_gui.py RGB.tif OUT_DIR [PARAMETER=VALUE ...]

prints the session's report (OUT_DIR/session.json) and exits with the session's status; the
screenshots are OUT_DIR/dialog.png and OUT_DIR/map.png. Needs Debian's ``xvfb`` and ``qgis`` packages
(scripts/setup.sh installs them). tests/qgis/test_gui_desktop.py and scripts/screenshots.sh call
``run_session``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SESSION_SCRIPT = REPO_ROOT / "scripts" / "gui_session.py"
PLUGIN_NAME = "scdm"


def _fresh_profile(folder: Path) -> dict:
    """A QGIS profile with the plugin enabled and a plugins folder holding ``scdm`` -> the repository;
    the environment that points QGIS at them."""
    plugins = folder / "plugins"
    plugins.mkdir(parents=True)
    (plugins / PLUGIN_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    settings = folder / "profile" / "profiles" / "default" / "QGIS"
    settings.mkdir(parents=True)
    (settings / "QGIS3.ini").write_text(f"[PythonPlugins]\n{PLUGIN_NAME}=true\n", encoding="utf-8")
    env = {key: value for key, value in os.environ.items()
           if key not in ("QT_QPA_PLATFORM", "QGIS_OPTIONS_PATH", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(QGIS_CUSTOM_CONFIG_PATH=str(folder / "profile"), QGIS_PLUGINPATH=str(plugins),
               PATH=f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin")
    return env


def run_session(rgb: Path, out_dir: Path, parameters: dict, timeout_s: float = 300,
                window=(1280, 800)) -> tuple[int, dict]:
    """(QGIS's exit status, the session's report) of one session; see the module docstring."""
    for program in ("xvfb-run", "qgis"):
        if shutil.which(program) is None:
            raise RuntimeError(f"{program} is missing: run scripts/setup.sh (Debian packages xvfb and qgis)")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "session.json").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="scdm-gui-") as folder:
        env = _fresh_profile(Path(folder))
        settings = Path(folder) / "session.json"
        settings.write_text(json.dumps({"input": str(rgb), "parameters": parameters, "out_dir": str(out_dir),
                                        "timeout_s": timeout_s}), encoding="utf-8")
        env["SCDM_GUI_SESSION"] = str(settings)
        width, height = window
        command = ["xvfb-run", "-a", "-s", f"-screen 0 {width}x{height}x24", "qgis", "--nologo",
                   "--noversioncheck", "--code", str(SESSION_SCRIPT)]
        started = time.monotonic()
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s + 120,
                                stdin=subprocess.DEVNULL)
    report_file = out_dir / "session.json"
    report = json.loads(report_file.read_text(encoding="utf-8")) if report_file.exists() else {
        "failures": ["QGIS wrote no session report"], "stderr": result.stderr[-4000:]}
    report.setdefault("seconds", {})["qgis"] = round(time.monotonic() - started, 1)
    return result.returncode, report


def main(argv) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    parameters = dict(argument.split("=", 1) for argument in argv[2:])
    status, report = run_session(Path(argv[0]).resolve(), Path(argv[1]).resolve(), parameters)
    print(json.dumps(report, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
