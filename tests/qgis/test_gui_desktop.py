"""The plugin in the real QGIS desktop (Xvfb, a fresh profile, the plugin linked as ``scdm`` and
enabled, the venv's Python first on PATH): the Spectral super-resolution dialog opens on an RGB layer,
runs with the bundled model on a small real raster, and loads a layer named after the input and shown
in the engine's false colour; screenshots of the dialog and the map are taken (scripts/gui_session.py).
About 20-30 s."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from scdm_testing import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from qgis_gui import run_session  # noqa: E402


@pytest.fixture(scope="module")
def session(rgb_tif, tmp_path_factory):
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run is missing: run scripts/setup.sh (Debian package xvfb)")
    out = tmp_path_factory.mktemp("gui")
    status, report = run_session(rgb_tif, out, {"DEVICE": "cpu"}, timeout_s=240)
    return status, report, out


def test_the_dialog_runs_and_exits_cleanly(session):
    status, report, _ = session
    assert report["failures"] == [] and status == 0, report
    assert "Model: " in report["log"] and "Device: CPU" in report["log"]


def test_the_loaded_layer_is_named_after_the_input_and_shown_in_false_colour(session, rgb_tif):
    _, report, _ = session
    layer = report["layer"]
    assert layer["name"] == f"{rgb_tif.stem} hyperspectral"
    assert layer["renderer"] == "multibandcolor" and layer["composite"] == "near-infrared false colour"
    assert layer["rgb_bands"] == layer["expected_rgb_bands"]
    assert report["layers"] == sorted([rgb_tif.stem, f"{rgb_tif.stem} hyperspectral"])


def _pixels(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(str(path))[..., :3]


def test_the_screenshots_show_the_dialog_and_the_layer(session):
    _, report, out = session
    assert [shot["file"] for shot in report["screenshots"]] == ["dialog.png", "map.png"]
    dialog, window = _pixels(out / "dialog.png"), _pixels(out / "map.png")
    assert dialog.shape[:2] == (760, 880) and window.shape[:2] == (800, 1280)
    # The map area (right of the layer panel) holds the layer: many colours, not an empty canvas.
    canvas = window[150:750, 400:1200].reshape(-1, 3)
    assert len(np.unique(np.round(canvas * 255).astype(int), axis=0)) > 100
