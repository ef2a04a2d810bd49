"""Helpers of the QGIS tests (imported by conftest.py and the test modules; tests/qgis is on sys.path)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
ENMAP_TILE = (REPO_ROOT.parent / "shared" / "data" / "geotiff" / "enmap_potsdam"
              / "enmap_potsdam_tile_64_32.tif")
ENMAP_RGB_BANDS = (44, 28, 11)  # 641, 551, 468 nm
QGIS_PROCESS = shutil.which("qgis_process.bin", path="/usr/bin:/usr/local/bin") or "/usr/bin/qgis_process.bin"
VENV_BIN = Path(sys.executable).parent
PLUGIN_NAME = "scdm"
ALG_ID = "scdm:spectralsuperresolution"
EVAL_ID = "scdm:evaluatespectralsuperresolution"
TRAIN_ID = "scdm:trainspectralsuperresolution"
DEFAULT_MODEL = REPO_ROOT / "resources" / "models" / "scdm-default"
EXAMPLE_MODEL = REPO_ROOT / "examples" / "clip_and_superresolve.model3"
# Settings that keep a run of the tiny model on a 24 x 24 raster well under a second of sampling.
FAST = {"STEPS": 2, "TILE_SIZE": 16, "OVERLAP": 4, "DEVICE": "cpu"}


def write_geotiff(path: Path, data: np.ndarray, nodata=None) -> Path:
    """A (bands, h, w) array as a 5 m UTM 18N GeoTIFF."""
    from osgeo import gdal, osr

    bands, height, width = data.shape
    gdal_type = {np.dtype("float32"): gdal.GDT_Float32, np.dtype("uint16"): gdal.GDT_UInt16}[data.dtype]
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), width, height, bands, gdal_type)
    dataset.SetGeoTransform((500000.0, 5.0, 0.0, 4000000.0, 0.0, -5.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32618)
    dataset.SetProjection(srs.ExportToWkt())
    for index in range(bands):
        band = dataset.GetRasterBand(index + 1)
        band.WriteArray(data[index])
        if nodata is not None:
            band.SetNoDataValue(nodata)
    dataset.FlushCache()
    dataset = None
    return path


def georeference(path):
    """(EPSG/WKT, geotransform, width, height, band count) of a raster, read with GDAL."""
    from osgeo import gdal

    dataset = gdal.Open(str(path))
    try:
        return (dataset.GetSpatialRef().ExportToWkt(), dataset.GetGeoTransform(), dataset.RasterXSize,
                dataset.RasterYSize, dataset.RasterCount)
    finally:
        dataset = None


def band_metadata(path, band: int) -> dict:
    from osgeo import gdal

    dataset = gdal.Open(str(path))
    try:
        return dict(dataset.GetRasterBand(band).GetMetadata())
    finally:
        dataset = None


def leftovers(folder: Path, stem: str) -> list:
    """Files in ``folder`` that belong to an output called ``stem`` (final or partial)."""
    return sorted(p.name for p in folder.iterdir() if stem in p.name)


def _recording_feedback_class():
    from qgis.core import QgsProcessingFeedback

    class Recording(QgsProcessingFeedback):
        """Keeps what the algorithm reported (pushInfo is virtual; progress arrives by signal).
        ``cancel_at_progress``: cancel as soon as progress reaches that percentage."""

        def __init__(self, cancel_at_progress=None):
            super().__init__()
            self.infos, self.errors, self.progress_values = [], [], []
            self.cancel_at_progress = cancel_at_progress
            self.progressChanged.connect(self._on_progress)

        def _on_progress(self, value):
            self.progress_values.append(value)
            if self.cancel_at_progress is not None and value >= self.cancel_at_progress:
                self.cancel()

        def pushInfo(self, info):  # noqa: N802
            self.infos.append(info)
            super().pushInfo(info)

        def reportError(self, error, fatalError=False):  # noqa: N802, N803
            self.errors.append(error)
            super().reportError(error, fatalError)

        @property
        def log(self):
            return "\n".join(self.infos)

    return Recording


def RecordingFeedback(*args, **kwargs):  # noqa: N802 (a factory: qgis.core is imported lazily)
    return _recording_feedback_class()(*args, **kwargs)


def qgis_process_env(profile: Path, plugins: Path = None, venv_first: bool = True) -> dict:
    """The environment qgis_process needs (docs: README 'Running qgis_process by hand')."""
    env = dict(os.environ)
    env.pop("QGIS_OPTIONS_PATH", None)  # pytest-qgis points these at its own settings folder
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(profile)
    env["QT_QPA_PLATFORM"] = "offscreen"
    # qgis_process embeds the python3 first on PATH: the venv's has torch, Debian's has not.
    env["PATH"] = (f"{VENV_BIN}:" if venv_first else "") + "/usr/local/bin:/usr/bin:/bin"
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    if plugins is None:
        env.pop("QGIS_PLUGINPATH", None)
    else:
        env["QGIS_PLUGINPATH"] = str(plugins)
    return env


def run_qgis_process(args, env, timeout=300, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([QGIS_PROCESS, *map(str, args)], env=env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"qgis_process {' '.join(map(str, args))} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}")
    return result


def enable_plugin(env, profile: Path) -> None:
    run_qgis_process(["plugins", "enable", PLUGIN_NAME], env)
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    assert f"{PLUGIN_NAME}=true" in ini.read_text(), ini.read_text()
