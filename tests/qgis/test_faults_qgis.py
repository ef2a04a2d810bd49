"""Issue 15's faults on the QGIS side: one range per setting for QGIS and the engine, outputs no format
writes, inputs that exist but are no raster or are damaged, a full disk, a quiet and sidecar-free
successful run, and qgis_process stopped by Ctrl-C or SIGTERM. ``tests/test_faults.py`` covers the
engine's command line."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from scdm_testing import ALG_ID, EVAL_ID, FAST, QGIS_PROCESS, leftovers, run_qgis_process
from test_faults import noise_rgb, partials, small_disk, write_raster  # noqa: F401 (small_disk: a fixture)

# QGIS parameter -> the engine setting it sets, for the numeric parameters.
NUMBER_SETTINGS = {"STEPS": "steps", "GUIDANCE": "guidance", "PDT_STAGE1": "pdt", "PDT_STAGE2": "pdt", "SEED": "seed",
                   "TILE_SIZE": "tile", "OVERLAP": "overlap", "SAMPLES": "samples"}
# What qgis_process prints whatever the plugin does (Qt without a session, PyQt's sip API).
QGIS_NOISE = ("QStandardPaths: XDG_RUNTIME_DIR not set", "DeprecationWarning: setapi() is deprecated")


@pytest.fixture
def refused(run_alg):
    """Run an algorithm that must fail; its message."""
    from qgis.core import QgsProcessingException

    def run(parameters, alg_id=ALG_ID):
        with pytest.raises(QgsProcessingException) as raised:
            run_alg(alg_id, parameters)
        return str(raised.value)

    return run


# ----------------------------------------------------------------------------------------------
# one range per setting


def _algorithm(alg_id):
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().algorithmById(alg_id)


@pytest.mark.parametrize("alg_id", [ALG_ID, EVAL_ID])
def test_number_parameters_take_their_range_from_the_engine(scdm_plugin, alg_id):
    from engine.settings import LIMITS

    numbers = {p.name(): p for p in _algorithm(alg_id).parameterDefinitions() if p.name() in NUMBER_SETTINGS}
    assert set(numbers) >= set(NUMBER_SETTINGS) - {"SAMPLES"}
    for name, parameter in numbers.items():
        limit = LIMITS[NUMBER_SETTINGS[name]]
        assert (parameter.minimum(), parameter.maximum()) == (limit.low, limit.high), name


def _outside(limit):
    """Values just outside a range (whole or not), below and above."""
    step = 1 if limit.whole else 0.5
    return [limit.low - step] + ([] if limit.high is None else [limit.high + step])


def test_qgis_and_the_engine_refuse_the_same_values(scdm_plugin, rgb_tif, tmp_path):
    """Each number just outside its range is refused by QGIS's parameter check and by the engine's
    settings (the command line's), each naming the parameter; the limits themselves pass both."""
    from qgis.core import QgsProcessingContext

    from engine.errors import InputError
    from engine.settings import LIMITS

    alg, context = _algorithm(ALG_ID), QgsProcessingContext()
    base = {"INPUT": str(rgb_tif), "OUTPUT": str(tmp_path / "o.tif")}
    for name, setting in NUMBER_SETTINGS.items():
        limit = LIMITS[setting]
        for value in _outside(limit):
            ok, message = alg.checkParameterValues({**base, name: value}, context)
            assert not ok and name in message, (name, value, message)
            with pytest.raises(InputError) as raised:
                engine_settings(setting, value)
            assert raised.value.parameter == setting
        for value in (limit.low, limit.high):
            assert alg.checkParameterValues({**base, name: value}, context)[0], (name, value)
            if not (setting == "pdt" and value == 0):  # QGIS's PDT 0 means "off", which the engine spells so
                engine_settings(setting, value)


def engine_settings(setting, value):
    """The engine's settings with one value chosen (overlap 0 unless chosen: a small tile is then valid)."""
    from engine.settings import InferenceSettings

    chosen = {"overlap": 0, setting: (value, None) if setting == "pdt" else value}
    return InferenceSettings(input="in.tif", output="out.tif", **chosen)


# ----------------------------------------------------------------------------------------------
# outputs and inputs


@pytest.mark.parametrize("name", ["out.img", "out.vrt", "out"])
def test_an_output_no_format_writes_is_refused(refused, rgb_tif, tiny_bundle, tmp_path, name):
    message = refused({"INPUT": str(rgb_tif), "MODEL": str(tiny_bundle), "OUTPUT": str(tmp_path / name), **FAST})
    assert message.startswith("OUTPUT: ") and ".tif" in message
    assert leftovers(tmp_path, "out") == []


@pytest.fixture
def not_rasters(tmp_path):
    empty, text, folder = tmp_path / "empty.tif", tmp_path / "text.tif", tmp_path / "folder.tif"
    empty.write_bytes(b"")
    text.write_text("not a raster\n")
    folder.mkdir()
    return {"empty": (empty, "is an empty file (0 bytes)"), "text": (text, "as a raster (`"),
            "folder": (folder, "is a folder, not a raster file")}


@pytest.mark.parametrize("kind", ["empty", "text", "folder"])
def test_an_input_that_exists_but_is_no_raster_is_not_called_missing(refused, not_rasters, tiny_bundle, tmp_path,
                                                                     kind):
    path, said = not_rasters[kind]
    message = refused({"INPUT": str(path), "MODEL": str(tiny_bundle), "OUTPUT": str(tmp_path / "o.tif"), **FAST})
    assert "INPUT: " in message and said in message and str(path) in message
    assert "not found" not in message


def test_a_damaged_input_is_named_as_damaged(refused, tiny_bundle, tmp_path):
    whole = write_raster(tmp_path / "whole.tif", noise_rgb(64, 64))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    message = refused({"INPUT": str(cut), "MODEL": str(tiny_bundle), "OUTPUT": str(tmp_path / "o.tif"), **FAST})
    assert message.startswith(f"INPUT: input raster '{cut}' is damaged: ") and "Unexpected error" not in message
    assert not (tmp_path / "o.tif").exists() and partials(tmp_path) == []


def test_a_full_disk_fails_the_run_and_keeps_the_previous_output(refused, small_disk, tiny_bundle, tmp_path):
    out = small_disk / "out.tif"
    out.write_bytes(b"the previous output")
    big = write_raster(tmp_path / "big.tif", noise_rgb(200, 200))
    message = refused({"INPUT": str(big), "MODEL": str(tiny_bundle), "OUTPUT": str(out), **FAST})
    assert message.startswith("OUTPUT: not enough free space")
    assert out.read_bytes() == b"the previous output" and partials(small_disk) == []


# ----------------------------------------------------------------------------------------------
# qgis_process


def _problem_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if any(word in line for word in ("ERROR", "Warning", "Traceback"))
            and not any(noise in line for noise in QGIS_NOISE)]


@pytest.fixture
def awkward_inputs(tmp_path):
    """Inputs that run but that GDAL's statistics (which QGIS takes when it opens a layer) complain about."""
    rgb = noise_rgb(24, 24).astype(np.float32)
    rgb[0, :6] = np.nan
    rgb[1, 3, 3] = np.inf
    rgb[2] = 700.0  # a constant band
    return {"unreferenced, NaN, Inf and a constant band": write_raster(tmp_path / "odd.tif", rgb, georeference={}),
            "all nodata": write_raster(tmp_path / "empty_area.tif", np.full((3, 24, 24), -9999, np.float32), nodata=-9999)}


@pytest.mark.qgis_process
@pytest.mark.parametrize("kind", ["unreferenced, NaN, Inf and a constant band", "all nodata"])
def test_a_successful_run_is_quiet_and_writes_nothing_beside_its_input(qgis_process_profile, awkward_inputs,
                                                                      tiny_bundle, tmp_path, kind):
    source = awkward_inputs[kind]
    out = tmp_path / "out.tif"
    result = run_qgis_process(["run", ALG_ID, "--", f"INPUT={source}", f"MODEL={tiny_bundle}", f"OUTPUT={out}",
                               *(f"{k}={v}" for k, v in FAST.items())], qgis_process_profile)
    assert _problem_lines(result.stderr) == [], result.stderr
    assert not Path(f"{source}.aux.xml").exists()
    unreferenced = [line for line in result.stdout.splitlines() if "no georeference" in line]
    assert len(unreferenced) == (1 if kind.startswith("unreferenced") else 0), result.stdout


@pytest.mark.qgis_process
def test_a_refused_run_writes_nothing_beside_its_input_and_names_an_empty_file(qgis_process_profile, not_rasters,
                                                                               rgb_tif, tiny_bundle, tmp_path):
    source = tmp_path / "copy.tif"
    source.write_bytes(Path(rgb_tif).read_bytes())
    result = run_qgis_process(["run", ALG_ID, "--", f"INPUT={source}", f"MODEL={tiny_bundle}", "BLUE=5",
                               f"OUTPUT={tmp_path / 'o.tif'}", *(f"{k}={v}" for k, v in FAST.items())],
                              qgis_process_profile, check=False)
    assert result.returncode != 0 and not Path(f"{source}.aux.xml").exists()
    empty, said = not_rasters["empty"]
    result = run_qgis_process(["run", ALG_ID, "--", f"INPUT={empty}", f"MODEL={tiny_bundle}",
                               f"OUTPUT={tmp_path / 'o.tif'}"], qgis_process_profile, check=False)
    assert result.returncode != 0 and said in result.stderr and "not found" not in result.stderr


def _stopped(env, tiny_bundle, tmp_path, signal_number) -> subprocess.CompletedProcess:
    """A long qgis_process run (16 px tiles over 256 x 256 px) stopped by a signal once it writes."""
    source = write_raster(tmp_path / "in.tif", noise_rgb(256, 256))
    out = tmp_path / "out.tif"
    out.write_bytes(b"the previous output")
    process = subprocess.Popen([QGIS_PROCESS, "run", ALG_ID, "--", f"INPUT={source}", f"MODEL={tiny_bundle}",
                                f"OUTPUT={out}", "TILE_SIZE=16", "OVERLAP=4", "STEPS=2", "DEVICE=cpu"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not partials(tmp_path):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal_number)
    stdout, stderr = process.communicate(timeout=120)
    assert partials(tmp_path) == [] and out.read_bytes() == b"the previous output"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.qgis_process
def test_ctrl_c_ends_qgis_process_with_an_error(qgis_process_profile, tiny_bundle, tmp_path):
    result = _stopped(qgis_process_profile, tiny_bundle, tmp_path, signal.SIGINT)
    assert result.returncode == 1 and "Cancelled: no output was written." in result.stderr


@pytest.mark.qgis_process
def test_sigterm_ends_qgis_process_as_asked_after_removing_the_partial_file(qgis_process_profile, tiny_bundle,
                                                                            tmp_path):
    result = _stopped(qgis_process_profile, tiny_bundle, tmp_path, signal.SIGTERM)
    assert result.returncode == -signal.SIGTERM and "Traceback" not in result.stderr
