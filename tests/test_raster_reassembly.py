"""Tile runners that finish out of order: the reassembly hands tiles to the blender in grid order, keeps
the number of tiles in flight bounded, and the output file is the one the in-process runner writes."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import rasterio

from engine.raster import runners
from engine.raster.pipeline import infer_raster
from engine.raster.reassembly import Reassembly
from engine.raster.runners import TileJob, TileResult
from engine.raster.runners.in_process import InProcessRunner
from engine.raster.windows import tile_grid

ENMAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geotiff" / "enmap_potsdam"
MOSAIC = ENMAP / "enmap_potsdam_tiles_mosaic.tif"
RGB = (44, 28, 9)


class HoldingRunner:
    """A fake runner: 'runs' a job by returning its RGB mean as values, but hands results back late
    and shuffled; counts how many jobs it holds at most."""

    def __init__(self, batch: int, seed: int):
        self.batch, self.network_passes = batch, 0
        self.rng = random.Random(seed)
        self.held = []
        self.peak_held = 0
        self.returned = []

    def submit(self, jobs, progress):
        self.held += [TileResult(job.index, job.tile, job.rgb.mean(axis=0, keepdims=True)) for job in jobs]
        self.peak_held = max(self.peak_held, len(self.held))
        progress(1.0)

    def completed(self, wait):
        if not self.held:
            return []
        self.rng.shuffle(self.held)
        count = self.rng.randint(1 if wait else 0, len(self.held))
        finished, self.held = self.held[:count], self.held[count:]
        self.returned += [result.index for result in finished]
        return finished


@pytest.mark.parametrize("seed", range(5))
def test_results_reach_the_blender_in_grid_order_with_few_tiles_in_flight(seed):
    grid = tile_grid(50, 70, 16, 4)
    empty = {3, 4, 11}
    runner = HoldingRunner(batch=3, seed=seed)
    delivered = []
    reassembly = Reassembly(runner, lambda tile, values, valid: delivered.append((tile, values, valid)), limit=6)
    jobs, masks = [], []

    def flush():
        reassembly.submit(jobs, masks, lambda fraction: None)
        jobs.clear()
        masks.clear()

    for index, tile in enumerate(grid):
        valid = np.full((tile.height, tile.width), index not in empty)
        if index in empty:
            flush()
            reassembly.skip(index, tile, valid)
            continue
        jobs.append(TileJob(index, tile, (tile.row_off, tile.col_off),
                            np.full((3, tile.height, tile.width), float(index), np.float32)))
        masks.append(valid)
        if len(jobs) == runner.batch:
            flush()
        assert reassembly.in_flight <= 6
    flush()
    reassembly.drain()
    assert [tile for tile, _, _ in delivered] == list(grid)
    for index, (tile, values, valid) in enumerate(delivered):
        assert (values is None) == (index in empty) and valid.all() == (index not in empty)
        if values is not None:
            assert values.shape == (1, tile.height, tile.width) and np.all(values == index)
    assert runner.returned != sorted(runner.returned), "the fake runner did return tiles out of order"
    assert runner.peak_held <= 6 and reassembly.peak_in_flight <= 6 and reassembly.in_flight == 0


def test_a_submission_larger_than_the_limit_is_refused():
    grid = tile_grid(40, 40, 16, 4)
    jobs = [TileJob(i, tile, (0, 0), np.zeros((3, tile.height, tile.width), np.float32)) for i, tile in enumerate(grid)]
    reassembly = Reassembly(HoldingRunner(batch=4, seed=0), lambda *args: None, limit=2)
    with pytest.raises(ValueError, match="more than the 2 allowed"):
        reassembly.submit(jobs[:3], [None] * 3, lambda f: None)


# ----------------------------------------------------------------------------------------------
# end to end, through the runner registry


class ShuffledRunner:
    """The in-process runner's work, handed back late and shuffled (as a pool or a cluster would)."""

    instances = []

    def __init__(self, context):
        self.inner = InProcessRunner(context)
        self.rng = random.Random(7)
        self.held = []
        self.returned = []
        ShuffledRunner.instances.append(self)

    @property
    def batch(self):
        return self.inner.batch

    @property
    def network_passes(self):
        return self.inner.network_passes

    def submit(self, jobs, progress):
        self.inner.submit(jobs, progress)
        self.held += self.inner.completed(wait=True)

    def completed(self, wait):
        self.rng.shuffle(self.held)
        count = self.rng.randint(1 if wait and self.held else 0, len(self.held))
        finished, self.held = self.held[:count], self.held[count:]
        self.returned += [result.index for result in finished]
        return finished


@pytest.mark.skipif(not MOSAIC.exists(), reason=f"shared data not found at {ENMAP}")
def test_out_of_order_runner_writes_the_identical_file(tiny_bundle, tmp_path, monkeypatch):
    from engine.bundle import load_bundle

    with rasterio.open(MOSAIC) as src:
        window = ((40, 120), (0, 72))  # partly nodata: skipped tiles between run ones
        profile = dict(driver="GTiff", width=72, height=80, count=3, dtype=src.dtypes[0], crs=src.crs,
                       transform=src.window_transform(window), nodata=src.nodata)
        with rasterio.open(tmp_path / "in.tif", "w", **profile) as dst:
            dst.write(src.read(RGB, window=window))
    monkeypatch.setitem(runners.RUNNERS, "shuffled", f"{__name__}.ShuffledRunner")
    cascade = load_bundle(tiny_bundle, device="cpu")
    options = dict(model=cascade, tile=24, overlap=8, sampler="ddim", steps=1, guidance=0.0, seed=2, device="cpu",
                   batch=2, samples=2, stage1_output=None)
    ordered = infer_raster(tmp_path / "in.tif", tmp_path / "ordered.tif", **options)
    shuffled = infer_raster(tmp_path / "in.tif", tmp_path / "shuffled.tif", runner="shuffled", **options)
    assert 0 < ordered.tiles_skipped and ordered.tiles_run > 4
    returned = ShuffledRunner.instances[-1].returned
    assert returned != sorted(returned), "the runner did hand tiles back out of order"
    assert (tmp_path / "shuffled.tif").read_bytes() == (tmp_path / "ordered.tif").read_bytes()
    assert shuffled.extra["peak_tiles_in_flight"] <= 2 * 2  # two batches of two
    assert shuffled.network_passes == ordered.network_passes
