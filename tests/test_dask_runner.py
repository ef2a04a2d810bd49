"""The Dask runner and the sharded mode on a real ``distributed.LocalCluster`` of two worker processes.

Every run uses the session's tiny random-weight bundle on small rasters made here (a georeferenced
uint16 RGB with a nodata corner), one DDIM step and 32 px tiles, and compares with the in-process
runner bit for bit. One cluster serves the module (the runner connects to it by its scheduler
address); one test starts its own ``local:2``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile
from rasterio.transform import Affine

from engine.errors import Cancelled, EngineError, InputError
from engine.raster import sharded
from engine.raster.pipeline import infer_raster
from engine.raster.runners import dask_cluster as dc
from engine.raster.spectral_metadata import read_wavelengths
from engine.settings import InferenceSettings, parse_cluster

distributed = pytest.importorskip("distributed")

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST = dict(tile=32, overlap=8, sampler="ddim", steps=1, guidance=0.0, seed=4, device="cpu")
CRS = "EPSG:32633"


def write_rgb(path: Path, height: int, width: int, nodata_corner: bool = True) -> Path:
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([900 + 400 * np.sin(rows / 7), 800 + 300 * np.cos(cols / 5), 600 + 3 * (rows + cols)])
    rgb = rgb.astype(np.uint16)
    if nodata_corner:
        rgb[:, :40, :40] = 0  # a whole tile and more without valid pixels: skipped tiles and nodata cells
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint16", nodata=0, crs=CRS,
                   transform=Affine(30.0, 0, 500000.0, 0, -30.0, 5800000.0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rgb)
    return path


def read(path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read()


def listing(folder: Path):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two single-threaded worker processes; the runner connects by address."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as local, \
            distributed.Client(local, set_as_default=False) as client:
        yield local.scheduler_address, client


@pytest.fixture(scope="module")
def rgb(tmp_path_factory) -> Path:
    return write_rgb(tmp_path_factory.mktemp("dask") / "rgb.tif", 88, 72)


@pytest.fixture(scope="module")
def reference(tiny_bundle, rgb, tmp_path_factory) -> Path:
    """The in-process runner's output (with the stage-1 bands) for ``rgb``."""
    folder = tmp_path_factory.mktemp("reference")
    infer_raster(rgb, folder / "out.tif", model=tiny_bundle, stage1_output=folder / "out_stage1.tif", **FAST)
    return folder / "out.tif"


def workers(client) -> dict:
    client.wait_for_workers(2, timeout=60)
    return client.run(os.getpid)


# ----------------------------------------------------------------------------------------------
# settings, worker planning, dependencies (no cluster)


def test_cluster_setting_is_checked_and_selects_the_dask_runner(tmp_path):
    assert parse_cluster("local:2") == "local:2" and parse_cluster(" LOCAL:3 ") == "local:3"
    assert parse_cluster("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert parse_cluster("scheduler-host") == "tcp://scheduler-host:8786"
    assert parse_cluster("tls://node7:9000") == "tls://node7:9000" and parse_cluster("") is None
    settings = InferenceSettings(input="a.tif", output="b.tif", cluster="local:2")
    assert settings.runner == "dask" and InferenceSettings(input="a.tif", output="b.tif").runner == "in-process"
    for bad in ("local:0", "local:x", "local:5000", "http://host:8786", "host:99999", "two words"):
        with pytest.raises(InputError, match="local:N") as error:
            InferenceSettings(input="a.tif", output="b.tif", cluster=bad)
        assert error.value.parameter == "cluster"
    with pytest.raises(InputError, match="needs a cluster") as error:
        InferenceSettings(input="a.tif", output="b.tif", runner="dask")
    assert error.value.parameter == "cluster"
    with pytest.raises(InputError) as error:
        InferenceSettings(input="a.tif", output="b.tif", precision="fp8")
    assert error.value.parameter == "precision"
    with pytest.raises(InputError, match="cluster") as error:  # a .vrt output is written by a cluster's workers
        infer_raster(rgb_path := write_rgb(tmp_path / "in.tif", 16, 16), tmp_path / "out.vrt", **FAST)
    assert error.value.parameter == "output" and listing(tmp_path) == [rgb_path.name]


def test_local_workers_are_pinned_one_per_gpu():
    gpus = {worker.name: worker.env.get("CUDA_VISIBLE_DEVICES") for worker in dc.plan_local_workers(6, "auto", 4)}
    assert list(gpus.values()) == ["0", "1", "2", "3", "0", "1"] and len(gpus) == 6
    assert [w.env for w in dc.plan_local_workers(2, "cuda", 2)] == [{"CUDA_VISIBLE_DEVICES": "0"},
                                                                    {"CUDA_VISIBLE_DEVICES": "1"}]
    # No GPU, the CPU asked for, or one GPU named for all: the environment is left alone.
    for count, device, gpu_count in ((3, "auto", 0), (3, "cpu", 4), (3, "cuda:1", 4)):
        assert all(not w.env for w in dc.plan_local_workers(count, device, gpu_count))


def test_local_workers_start_python_not_the_qgis_program():
    assert dc.worker_python("/opt/venv/bin/python3", "/opt/venv", False) == "/opt/venv/bin/python3"
    assert dc.worker_python("/usr/bin/qgis", "/usr", False) == "/usr/bin/python3"
    assert Path(dc.worker_python("C:/OSGeo4W/bin/qgis-bin.exe", "C:/OSGeo4W/apps/Python312", True)) == \
        Path("C:/OSGeo4W/apps/Python312/python.exe")


def test_dask_is_pinned_in_constraints_and_installed_by_ci(monkeypatch):
    constraints = (REPO_ROOT / "constraints.txt").read_text().split()
    assert all(requirement in constraints for requirement in dc.DASK_REQUIREMENTS)
    dev = (REPO_ROOT / "requirements-dev.txt").read_text().split()
    assert "dask" in dev and "distributed" in dev
    required = [line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert not any(line.startswith(("dask", "distributed")) for line in required)  # optional for users
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(EngineError, match="pip install dask==") as error:
        dc.import_distributed()
    assert error.value.parameter == "cluster"


# ----------------------------------------------------------------------------------------------
# identical output


def test_local_2_writes_what_the_in_process_runner_writes(tiny_bundle, rgb, reference, tmp_path):
    messages = []
    report = infer_raster(rgb, tmp_path / "out.tif", model=tiny_bundle, cluster="local:2",
                          stage1_output=tmp_path / "out_stage1.tif", log=messages.append, **FAST)
    np.testing.assert_array_equal(read(report.output_path), read(reference))
    np.testing.assert_array_equal(read(tmp_path / "out_stage1.tif"), read(reference.with_name("out_stage1.tif")))
    with rasterio.open(report.output_path) as a, rasterio.open(reference) as b:
        assert {**a.profile, "nodata": str(a.nodata)} == {**b.profile, "nodata": str(b.nodata)}  # NaN != NaN
        assert a.tags() == b.tags()
    assert report.tiles_skipped >= 1 and report.network_passes == 2 * report.tiles_run
    assert any("2 worker(s)" in m for m in messages)
    assert any("read their input windows themselves" in m for m in messages)


def test_input_the_workers_cannot_read_is_sent_by_the_client(tiny_bundle, rgb, reference, cluster, tmp_path):
    """/vsimem/ lives in this process only: the client sends the windows. /vsizip/ of a local zip is a
    GDAL virtual path the workers read themselves. Same output either way, and two runs (many tasks)
    load the model once in each worker process."""
    address, client = cluster
    zipped = tmp_path / "rgb.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.write(rgb, "rgb.tif")
    with MemoryFile(rgb.read_bytes(), filename="rgb.tif") as memory:
        for source, said in ((memory.name, "not readable from the workers"),
                             (f"/vsizip/{zipped}/rgb.tif", "read their input windows themselves")):
            messages = []
            out = tmp_path / f"{len(listing(tmp_path))}.tif"
            infer_raster(source, out, model=tiny_bundle, cluster=address, log=messages.append, **FAST)
            assert any(said in m for m in messages), messages
            np.testing.assert_array_equal(read(out), read(reference))
    loads = client.run(lambda: dc.MODEL_LOADS[0])
    assert max(loads.values()) == 1, loads


def test_a_worker_killed_mid_run_changes_nothing(tiny_bundle, rgb, reference, cluster, tmp_path):
    address, client = cluster
    before = workers(client)
    killed = []

    def progress(fraction, message):
        if fraction > 0.2 and not killed:
            victim = sorted(before.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    report = infer_raster(rgb, tmp_path / "out.tif", model=tiny_bundle, cluster=address, progress=progress, **FAST)
    np.testing.assert_array_equal(read(report.output_path), read(reference))
    after = workers(client)  # the nanny started a new process in place of the killed one
    assert killed and killed[0] not in after.values() and len(after) == 2


# ----------------------------------------------------------------------------------------------
# cancel, memory


def _tasks_on_scheduler(client) -> int:
    return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


@pytest.mark.parametrize("output", ["out.tif", "out.vrt"])
def test_cancel_leaves_no_file_and_no_task(tiny_bundle, rgb, cluster, tmp_path, output, monkeypatch):
    address, client = cluster
    monkeypatch.setattr(sharded, "STRIP_ROWS", 32)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 6

    with pytest.raises(Cancelled):
        infer_raster(rgb, tmp_path / output, model=tiny_bundle, cluster=address, cancel=cancel, **FAST)
    assert listing(tmp_path) == []
    deadline = time.monotonic() + 20
    while _tasks_on_scheduler(client) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _tasks_on_scheduler(client) == 0


def test_ctrl_c_on_the_command_line_leaves_no_file(tiny_bundle, rgb, cluster, tmp_path):
    address, client = cluster
    out = tmp_path / "out.tif"
    command = [sys.executable, "-m", "engine", "infer", str(rgb), str(out), "--model", str(tiny_bundle),
               "--cluster", address, "--tile", "16", "--overlap", "4", "--steps", "3", "--samples", "16", "--device",
               "cpu"]  # long enough that the interrupt always lands while tiles run
    # A terminal's Ctrl-C reaches a process whose SIGINT is the default; a test run started in the
    # background by a shell without job control (`.ci/run &`) passes SIGINT on ignored, and Python
    # then installs no KeyboardInterrupt handler, so the child gets the default back.
    process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = ""
    while "thread(s)" not in seen:  # the runner has started: tiles are running on the workers
        line = process.stderr.readline()
        assert line, f"the run ended before its tiles: {seen}"
        seen += line
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == 130, seen + rest
    assert listing(tmp_path) == []
    assert _tasks_on_scheduler(client) == 0


CLIENT_MEMORY = """
import sys, tracemalloc
from engine.raster.pipeline import infer_raster
for index, path in enumerate(sys.argv[3:]):
    if index == 1:
        tracemalloc.start()  # after a first run, which imports what a run imports
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    infer_raster(path, path + ".out.tif", model=sys.argv[1], cluster=sys.argv[2], tile=64, overlap=8, steps=1,
                 guidance=0.0, device="cpu")
    print(tracemalloc.get_traced_memory()[1] - before)
"""


def test_client_memory_does_not_grow_with_the_raster_height(tiny_bundle, cluster, tmp_path):
    """What the client process allocates at its peak (numpy arrays included: tracemalloc) for a
    128-row and a 768-row raster of the same width, after a first run that imports what a run
    imports: the taller one's output is 5.9 MB larger, its peak not (measured: 5.0 and 3.8 MB)."""
    address, _ = cluster
    first, short, tall = (write_rgb(tmp_path / f"{h}.tif", h, 48, nodata_corner=False) for h in (16, 128, 768))
    result = subprocess.run([sys.executable, "-c", CLIENT_MEMORY, str(tiny_bundle), address, *map(str, (first, short, tall))],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    _, peak_short, peak_tall = (int(v) for v in result.stdout.split())
    output_growth = 48 * (768 - 128) * 48 * 4
    assert peak_tall - peak_short < output_growth / 10, (peak_short, peak_tall)


# ----------------------------------------------------------------------------------------------
# sharded output


def test_sharded_vrt_is_the_single_writer_output(tiny_bundle, rgb, reference, cluster, tmp_path, monkeypatch):
    address, _ = cluster
    monkeypatch.setattr(sharded, "STRIP_ROWS", 32)  # four strips of a 120-row raster
    report = infer_raster(rgb, tmp_path / "out.vrt", model=tiny_bundle, cluster=address,
                          stage1_output=tmp_path / "out_stage1.vrt", **FAST)
    assert report.extra["strips"] == 4
    assert listing(tmp_path) == ["out-strips", "out.qml", "out.vrt", "out_stage1-strips", "out_stage1.qml",
                                 "out_stage1.vrt"]
    assert listing(tmp_path / "out-strips") == [f"strip-0000{i}.tif" for i in range(4)]
    np.testing.assert_array_equal(read(tmp_path / "out.vrt"), read(reference))
    np.testing.assert_array_equal(read(tmp_path / "out_stage1.vrt"), read(reference.with_name("out_stage1.tif")))
    with rasterio.open(tmp_path / "out.vrt") as vrt, rasterio.open(reference) as tif:
        assert (vrt.crs, vrt.transform, vrt.count, str(vrt.nodata)) == (tif.crs, tif.transform, tif.count, str(tif.nodata))
        np.testing.assert_allclose(read_wavelengths(vrt), read_wavelengths(tif))
        assert vrt.tags()["SCDM_MODEL"] == tif.tags()["SCDM_MODEL"] and vrt.descriptions == tif.descriptions
    with rasterio.open(tmp_path / "out-strips" / "strip-00000.tif") as first, \
            rasterio.open(tmp_path / "out-strips" / "strip-00001.tif") as second, rasterio.open(reference) as tif:
        assert second.profile["tiled"] and second.profile["compress"] == "zstd"
        assert second.transform == tif.transform * Affine.translation(0, first.height)


def test_strips_cover_every_row_once_and_run_the_tile_rows_reaching_into_them():
    from engine.raster.plan import Tiling
    from engine.raster.windows import tile_grid

    for height, tile, overlap, count in ((120, 32, 8, 4), (547, 288, 144, 3), (1000, 64, 16, 7), (20, 32, 8, 3)):
        margin = overlap // 2
        grid = tile_grid(height + 2 * margin, 50, tile, overlap)
        tiling = Tiling(height, 50, grid, margin, 0, tile, overlap, (tile, tile))
        strips = sharded.plan_strips(tiling, count)
        assert strips[0].row_start == 0 and strips[-1].row_stop == height
        assert all(a.row_stop == b.row_start for a, b in zip(strips, strips[1:]))
        for strip in strips:  # every tile row over a strip's rows is run by it
            lo, hi = strip.row_start + margin, strip.row_stop + margin
            needed = [i for i, (s, n) in enumerate(grid.row_spans) if s < hi and s + n > lo]
            assert strip.first_row <= min(needed) and strip.last_row >= max(needed)


def test_sharded_sensor_bands_and_integers_are_the_single_writer_output(tiny_bundle, rgb, cluster, tmp_path,
                                                                        monkeypatch):
    address, _ = cluster
    monkeypatch.setattr(sharded, "STRIP_ROWS", 32)
    choices = dict(FAST, band_set="landsat8-9", output_type="int16")
    single = infer_raster(rgb, tmp_path / "one.tif", model=tiny_bundle, **choices)
    infer_raster(rgb, tmp_path / "out.vrt", model=tiny_bundle, cluster=address, **choices)
    with rasterio.open(tmp_path / "out.vrt") as vrt, rasterio.open(single.output_path) as tif:
        assert vrt.count == tif.count == 4 and vrt.descriptions == tif.descriptions
        assert vrt.dtypes == tif.dtypes and vrt.scales == tif.scales and vrt.nodata == tif.nodata == -32768
        np.testing.assert_array_equal(vrt.read(), tif.read())
        np.testing.assert_array_equal(vrt.read_masks(), tif.read_masks())


def test_the_guessed_8_bit_decoding_reaches_the_workers(tiny_bundle, cluster, tmp_path, monkeypatch):
    """8-bit input under auto radiometry with an uncertainty output: the workers (tile batches and
    strips) add the linear-stretch reading's difference exactly as the in-process runner does."""
    address, _ = cluster
    monkeypatch.setattr(sharded, "STRIP_ROWS", 32)
    source = tmp_path / "rgb8.tif"
    with rasterio.open(write_rgb(tmp_path / "rgb16.tif", 88, 72, nodata_corner=False)) as wide:
        codes = (wide.read().astype(np.float32) / 1300.0 * 255.0).clip(0, 255).astype(np.uint8)
        profile = dict(wide.profile, dtype="uint8", nodata=None)
    with rasterio.open(source, "w", **profile) as dst:
        dst.write(codes)
    choices = dict(FAST, sampler="dpmpp", steps=2, samples=2)
    runs = {"single": dict(), "tiles": dict(cluster="local:2"), "strips": dict(cluster=address)}
    std = {}
    for name, extra in runs.items():
        out = tmp_path / (f"{name}.vrt" if name == "strips" else f"{name}.tif")
        infer_raster(source, out, model=tiny_bundle, uncertainty_output=out.with_name(f"{name}_std{out.suffix}"),
                     **choices, **extra)
        with rasterio.open(out.with_name(f"{name}_std{out.suffix}")) as dataset:
            std[name] = dataset.read()
            assert "linear stretch" in dataset.tags()["SCDM_PRODUCT"]
    np.testing.assert_array_equal(std["tiles"], std["single"])
    np.testing.assert_array_equal(std["strips"], std["single"])
