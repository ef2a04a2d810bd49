"""Faults a run meets outside the happy path (issue 15), through the engine's command line as a user
meets them: a full disk, SIGTERM and SIGKILL mid-run, stale sidecars of a replaced output, a damaged
input, two runs writing one path. Each must end in a complete output or in a clear message, with the
destination as it was and no partial file left (after the next run, for a killed one).

``tests/test_faults_fuzz.py`` throws generated inputs and settings at the same command line;
``tests/qgis/test_faults_qgis.py`` covers the QGIS side.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from engine.cli import main
from engine.errors import InputError
from engine.raster import io as rio
from engine.raster.formats.atomic import host_tag
from engine.raster.formats.geotiff import check_written
from engine.raster.pipeline import infer_raster

REPO = Path(__file__).resolve().parents[1]
UTM = dict(crs="EPSG:32618", transform=Affine(5.0, 0.0, 500000.0, 0.0, -5.0, 4000000.0))
# Settings that keep a tiny-model run short.
FAST = ("--tile", "32", "--overlap", "4", "--steps", "1", "--guidance", "0", "--device", "cpu", "--quiet")


def write_raster(path: Path, data: np.ndarray, nodata=None, georeference=UTM, **profile) -> Path:
    """(bands, h, w) ``data`` as a tiled, DEFLATE-compressed GeoTIFF (16 px blocks, so that damage hits blocks)."""
    bands, height, width = data.shape
    options = dict(driver="GTiff", width=width, height=height, count=bands, dtype=str(data.dtype), nodata=nodata,
                   tiled=True, blockxsize=16, blockysize=16, compress="deflate", **georeference)
    options.update(profile)
    with rio.quiet_rasterio_warnings(), rasterio.open(path, "w", **options) as dst:
        dst.write(data)
    return path


def noise_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(100, 4000, (3, height, width)).astype(np.uint16)


def infer(*arguments) -> tuple:
    """``python -m engine infer ...`` in this process: (exit status, stdout, stderr); argparse's own
    refusals (an unknown --sampler) exit as they do on the command line, with status 2."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(["infer", *map(str, arguments)])
        except SystemExit as exit:
            status = exit.code
    return status, out.getvalue(), err.getvalue()


def infer_process(*arguments) -> subprocess.Popen:
    """``python -m engine infer ...`` as a child process (for signals and concurrency)."""
    return subprocess.Popen([sys.executable, "-m", "engine", "infer", *map(str, arguments)], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def partials(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def listing(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


def wait_for_partial(process: subprocess.Popen, folder: Path, timeout: float = 120.0) -> None:
    """Wait until the run has created its partial file (it is then writing tiles)."""
    deadline = time.monotonic() + timeout
    while not partials(folder):
        assert process.poll() is None, f"the run ended before writing: {process.communicate()}"
        assert time.monotonic() < deadline, "no partial file appeared"
        time.sleep(0.05)


def assert_clean_failure(status: int, err: str, text: str) -> None:
    assert status == 2, err
    assert "Traceback" not in err and text in err, err
    assert err.strip().splitlines()[-1].startswith("error: "), err


# ----------------------------------------------------------------------------------------------
# a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (needs root, as in CI)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mount.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_fails_the_run_and_keeps_the_previous_output(small_disk, tmp_path, tiny_bundle):
    out = small_disk / "out.tif"
    status, _, err = infer(write_raster(tmp_path / "small.tif", noise_rgb(16, 16)), out, "--model", tiny_bundle, *FAST)
    assert status == 0, err
    previous = out.read_bytes()

    # Refused before any tile runs: the output cannot fit even compressed to half.
    big = write_raster(tmp_path / "big.tif", noise_rgb(200, 200))
    status, _, err = infer(big, out, "--model", tiny_bundle, *FAST)
    assert_clean_failure(status, err, "not enough free space")
    assert "48 bands x 200 x 200 px x 4 bytes" in err and "--output" not in err
    assert out.read_bytes() == previous and partials(small_disk) == []

    # Passes that check (half its float32 size fits) but not the disk: GDAL only logs "No space left
    # on device" from its compression threads; the file check after closing fails the run.
    side = int((0.9 * shutil.disk_usage(small_disk).free / (48 * 4 * 0.5)) ** 0.5)
    status, _, err = infer(write_raster(tmp_path / "fits_half.tif", noise_rgb(side, side)), out, "--model", tiny_bundle,
                           *FAST)
    assert_clean_failure(status, err, f"could not write '{out}'")
    assert "the previous file is unchanged" in err
    assert out.read_bytes() == previous and partials(small_disk) == []
    check_written(out, (48, 16, 16))


# ----------------------------------------------------------------------------------------------
# signals


@pytest.fixture
def long_run(tmp_path, tiny_bundle):
    """Arguments of a run that takes long enough to be stopped midway (tiles of 16 px over 256 x 256),
    and a previous output at its destination."""
    src = write_raster(tmp_path / "in.tif", noise_rgb(256, 256))
    out = tmp_path / "out.tif"
    out.write_bytes(b"the previous output")
    return (src, out, "--model", tiny_bundle, "--tile", "16", "--overlap", "4", "--steps", "2", "--device", "cpu",
            "--quiet")


def test_sigterm_stops_a_run_like_ctrl_c(long_run, tmp_path):
    process = infer_process(*long_run)
    wait_for_partial(process, tmp_path)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM (exit status 143)" in err and "Traceback" not in err
    assert partials(tmp_path) == [] and (tmp_path / "out.tif").read_bytes() == b"the previous output"


def test_sigkill_leaves_a_partial_file_that_the_next_run_removes(long_run, tmp_path, tiny_bundle):
    process = infer_process(*long_run)
    wait_for_partial(process, tmp_path)
    process.kill()
    process.communicate(timeout=60)
    left = partials(tmp_path)
    assert process.returncode == -signal.SIGKILL and len(left) == 1
    assert left[0].startswith(f".out.tif.partial-{host_tag()}-{process.pid}-")
    # Partial files the next run must keep: one of a running process, one written on another machine.
    running = tmp_path / f".out.tif.partial-{host_tag()}-{os.getppid()}-abcd1234.tif"
    elsewhere = tmp_path / f".out.tif.partial-00000000-{process.pid}-abcd1234.tif"
    running.write_bytes(b"")
    elsewhere.write_bytes(b"")

    small = write_raster(tmp_path / "small.tif", noise_rgb(24, 24))
    status, _, err = infer(small, tmp_path / "out.tif", "--model", tiny_bundle, *FAST)
    assert status == 0, err
    assert f"removed 1 partial file(s) left beside 'out.tif' by runs that were killed: {left[0]}" in err
    assert partials(tmp_path) == sorted([running.name, elsewhere.name])
    check_written(tmp_path / "out.tif", (48, 24, 24))


# ----------------------------------------------------------------------------------------------
# stale sidecars


def test_replacing_an_output_removes_the_sidecars_of_the_previous_one(tmp_path, tiny_bundle):
    src = write_raster(tmp_path / "in.tif", noise_rgb(24, 24))
    out = tmp_path / "out.tif"
    assert infer(src, out, "--model", tiny_bundle, *FAST)[0] == 0
    # What QGIS and gdalinfo -stats leave: statistics, an old nodata and wavelength that GDAL would apply.
    aux = Path(f"{out}.aux.xml")
    aux.write_text('<PAMDataset><PAMRasterBand band="41"><NoDataValue>7</NoDataValue><Metadata>'
                   '<MDI key="STATISTICS_MINIMUM">48</MDI><MDI key="STATISTICS_MAXIMUM">879</MDI>'
                   '<MDI key="wavelength">1</MDI></Metadata></PAMRasterBand></PAMDataset>')
    sidecars = [aux, Path(f"{out}.ovr"), Path(f"{out}.msk"), tmp_path / "out.tfw"]
    for sidecar in sidecars[1:]:
        sidecar.write_bytes(b"stale")
    with rasterio.open(out) as dataset:
        assert dataset.nodatavals[40] == 7  # GDAL applies the sidecar

    status, _, err = infer(src, out, "--model", tiny_bundle, "--bands", "1,2,9", *FAST)
    assert status == 2 and all(s.exists() for s in sidecars), "a failed run keeps the previous output whole"

    status, _, err = infer(src, out, "--model", tiny_bundle, *FAST)
    assert status == 0, err
    assert not any(s.exists() for s in sidecars)
    assert "out.tif.aux.xml, out.tif.ovr, out.tif.msk, out.tfw: sidecar file(s) of the previous 'out.tif'" in err
    with rasterio.open(out) as dataset:
        assert dataset.nodatavals[40] is None and "STATISTICS_MINIMUM" not in dataset.tags(41)
        assert float(dataset.tags(41)["wavelength"]) > 300


def test_a_run_writes_no_sidecar_beside_its_input(tmp_path, tiny_bundle):
    src = write_raster(tmp_path / "in.tif", noise_rgb(24, 24))
    assert infer(src, tmp_path / "out.tif", "--model", tiny_bundle, *FAST)[0] == 0
    assert listing(tmp_path) == ["in.tif", "out.qml", "out.tif"]


# ----------------------------------------------------------------------------------------------
# a damaged input


@pytest.fixture
def damaged(tmp_path):
    """A real tiled GeoTIFF cut in half, and one whose block table is whole but one block is garbage."""
    whole = write_raster(tmp_path / "whole.tif", noise_rgb(64, 64))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    garbled = tmp_path / "garbled.tif"
    shutil.copy(whole, garbled)
    with rasterio.open(garbled) as dataset:
        offset = int(dataset.get_tag_item("BLOCK_OFFSET_2_2", "TIFF", bidx=1))
        size = int(dataset.get_tag_item("BLOCK_SIZE_2_2", "TIFF", bidx=1))
    with open(garbled, "r+b") as file:
        file.seek(offset)
        file.write(b"\xff" * size)
    return {"cut": cut, "garbled": garbled}


@pytest.mark.parametrize("name, said", [("cut", "ends at byte"), ("garbled", "ZIPDecode")])
def test_a_damaged_input_is_named_as_damaged(damaged, tmp_path, tiny_bundle, name, said):
    out = tmp_path / "out.tif"
    status, _, err = infer(damaged[name], out, "--model", tiny_bundle, *FAST)
    assert_clean_failure(status, err, f"error: input: input raster '{damaged[name]}' is damaged: ")
    assert said in err and "copy or export it again" in err
    assert not out.exists() and partials(tmp_path) == []


def test_a_read_that_fails_late_at_a_tile_is_named_too(damaged, tmp_path, tiny_bundle, monkeypatch):
    """Reads may fail only at one tile (the statistics come from a decimated read, which on a large
    raster skips most blocks): here the statistics read is made to succeed."""
    from engine.bundle import load_bundle

    def statistics_only(reader, max_pixels=1 << 20):
        shape = (3, reader.info.height, reader.info.width)
        return np.full(shape, 1000.0, np.float32), np.ones(shape[1:], bool)

    monkeypatch.setattr(rio.RGBReader, "read_overview", statistics_only)
    with pytest.raises(InputError, match=r"is damaged: GDAL could not read rows \d+ to \d+, columns \d+ to \d+: "
                                         r"ZIPDecode") as raised:
        infer_raster(damaged["garbled"], tmp_path / "out.tif", model=load_bundle(tiny_bundle), tile=16, overlap=4,
                     steps=1, guidance=0.0, device="cpu")
    assert raised.value.parameter == "input"
    assert not (tmp_path / "out.tif").exists() and partials(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# two writers


def test_two_runs_writing_one_path_leave_one_complete_file(tmp_path, tiny_bundle):
    src = write_raster(tmp_path / "in.tif", noise_rgb(48, 48))
    out = tmp_path / "out.tif"
    arguments = (src, out, "--model", tiny_bundle, "--tile", "16", "--overlap", "4", "--steps", "1", "--device", "cpu",
                 "--quiet")
    writers = [infer_process(*arguments, "--seed", str(seed)) for seed in (1, 2)]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    assert partials(tmp_path) == []
    check_written(out, (48, 48, 48))
    with rasterio.open(out) as dataset:
        seed, written = dataset.tags()["SCDM_SEED"], dataset.read()
    assert seed in ("1", "2")
    reference = tmp_path / "reference.tif"  # that writer's run again, alone
    assert infer(src, reference, *arguments[2:], "--seed", seed)[0] == 0
    with rasterio.open(reference) as dataset:
        # the same run up to float summation order (torch's CPU kernels under another load); the other
        # writer's seed differs from it by the values' own size
        np.testing.assert_allclose(dataset.read(), written, rtol=1e-4, atol=1e-5 * float(np.abs(written).max()))
