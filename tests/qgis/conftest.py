"""Fixtures of the QGIS tests: the plugin loaded the way QGIS loads it, small real GeoTIFFs, and a
QGIS profile for qgis_process subprocesses. Helpers live in scdm_testing.py.

The repository root is the plugin folder, but QGIS wants the folder named like the plugin (``scdm``):
a temporary plugins folder holds a symlink ``scdm`` -> the repository root.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from scdm_testing import (
    ENMAP_RGB_BANDS,
    ENMAP_TILE,
    PLUGIN_NAME,
    QGIS_PROCESS,
    REPO_ROOT,
    RecordingFeedback,
    enable_plugin,
    qgis_process_env,
    write_geotiff,
)


@pytest.fixture(scope="session")
def plugins_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("qgis_plugins")
    (folder / PLUGIN_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    return folder


@pytest.fixture(scope="session")
def scdm_plugin(qgis_app, qgis_processing, plugins_folder):
    """The plugin imported and started through qgis.utils, as qgis_process does (startProcessingPlugin)."""
    import qgis.utils
    from qgis.core import QgsApplication

    sys.path.insert(0, str(plugins_folder))
    qgis.utils.plugin_paths.append(str(plugins_folder))
    qgis.utils.updateAvailablePlugins()
    assert qgis.utils.loadPlugin(PLUGIN_NAME), "the plugin package could not be imported"
    assert qgis.utils.startProcessingPlugin(PLUGIN_NAME), "classFactory() or initProcessing() failed"
    assert QgsApplication.processingRegistry().providerById("scdm") is not None
    yield qgis.utils.plugins[PLUGIN_NAME]
    qgis.utils.unloadPlugin(PLUGIN_NAME)


@pytest.fixture(scope="session")
def rgb_tif(tmp_path_factory) -> Path:
    """A 24 x 24 px, 30 m, EPSG:32633 RGB GeoTIFF cut from a real EnMAP tile (bands at 641, 551 and
    468 nm; reflectance x 10000; nodata -32768). Without ../shared/data (a user's machine) a synthetic
    5 m UTM 18N RGB stands in, so the tests still run."""
    path = tmp_path_factory.mktemp("rasters") / "rgb24.tif"
    if ENMAP_TILE.exists():
        from osgeo import gdal

        gdal.Translate(str(path), str(ENMAP_TILE), bandList=list(ENMAP_RGB_BANDS), srcWin=[4, 4, 24, 24])
        return path
    rows, cols = np.mgrid[0:24, 0:24].astype(np.float32)
    rgb = np.stack([800 + 300 * np.sin(rows / 4), 700 + 200 * np.cos(cols / 5), 500 + 10 * (rows + cols)])
    return write_geotiff(path, rgb.astype(np.uint16))


@pytest.fixture(scope="session")
def enmap_reference(tmp_path_factory, shared_data) -> Path:
    """All 224 bands of the same real 24 x 24 EnMAP crop, with its wavelength metadata and nodata."""
    from osgeo import gdal

    path = tmp_path_factory.mktemp("reference") / "enmap24.tif"
    gdal.Translate(str(path), str(ENMAP_TILE), srcWin=[4, 4, 24, 24])
    return path


@pytest.fixture(scope="session")
def one_band_tif(tmp_path_factory, rgb_tif) -> Path:
    from osgeo import gdal

    path = tmp_path_factory.mktemp("one_band") / "one_band.tif"
    gdal.Translate(str(path), str(rgb_tif), bandList=[1])
    return path


@pytest.fixture
def run_alg(scdm_plugin):
    """processing.run(alg_id, parameters) with a RecordingFeedback; returns (results, feedback)."""
    import processing

    def run(alg_id, parameters, feedback=None, context=None):
        feedback = feedback if feedback is not None else RecordingFeedback()
        return processing.run(alg_id, parameters, feedback=feedback, context=context), feedback

    return run


@pytest.fixture(scope="session")
def qgis_process_profile(tmp_path_factory, plugins_folder) -> dict:
    """A fresh QGIS profile with the plugin (through QGIS_PLUGINPATH) enabled; the env to run with."""
    if not Path(QGIS_PROCESS).exists():
        pytest.fail(f"{QGIS_PROCESS} not found: run scripts/setup.sh (apt package qgis)")
    profile = tmp_path_factory.mktemp("qgis_profile")
    env = qgis_process_env(profile, plugins_folder)
    enable_plugin(env, profile)
    return env
