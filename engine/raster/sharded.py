"""Sharded output: the cluster's workers write the raster as strips, the client a VRT over them.

For an output too large to funnel through one writer, name it ``.vrt`` and give a cluster. The
raster is cut into horizontal strips along the tile grid (``plan_strips``); each strip is one Dask
task that reads its input windows (or gets them from the client when the workers cannot read the
input), runs its tiles with the in-process runner, blends them and writes its rows as a tiled,
compressed GeoTIFF ``<folder>/strip-NNNNN.tif`` (with its own georeference, so each strip is a
raster of its own too). The client only plans, waits and finally writes ``<name>.vrt`` (the
georeference, nodata, spectral metadata of ``engine.raster.spectral_metadata`` and the SCDM tags),
which QGIS and GDAL read as one raster. Output pixels never pass through the client.

Strips and identity
    Strip k owns the rows between the starts of its first and of the next strip's first tile row,
    and also runs the tile rows above that reach into them (one per strip boundary with the usual
    overlap of at most half a tile: that tile row runs twice, once for each strip). Every pixel is
    then blended from the same tiles, in the same order, with the same weights as in a single-writer
    run, so with one tile per network call (the CPU default) the strips hold exactly the pixels the
    single writer writes. With a batch of several tiles a strip starts its own batches, so the tiles
    that share a network call can differ from the single-writer run's at the start of each strip:
    float rounding, not seams.

Files
    Strips are written into ``.<folder>.partial-XXXX`` beside the destination (each strip file
    itself through ``formats.atomic``, so a worker that dies leaves no half file and its rerun
    writes it again); once all are done the folder is renamed to ``<name>-strips`` and the VRT is
    written and renamed into place. A cancel or an error removes the partial folders: no file
    remains. The output folder must be one that every worker sees (a shared file system).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.transform import Affine

from engine.errors import Cancelled, EngineError, InputError
from engine.raster import io as rio
from engine.raster.blending import TileBlender
from engine.raster.formats.atomic import AtomicOutputs, remove_quietly
from engine.raster.formats.base import OutputSpec
from engine.raster.formats.geotiff import GeoTIFF
from engine.raster.formats.encoding import bright_level, output_encoding
from engine.raster.pipeline import (CellWriter, cell_fill, InferenceReport, PreparedRun, _fill_value, _statistics_sample,
                                    _tags, read_tile, stretch_statistics)
from engine.raster.plan import Tiling
from engine.raster.reassembly import Reassembly
from engine.raster.runners import InputSource, RunnerContext, TileJob
from engine.raster.runners import dask_cluster as dc
from engine.raster.windows import Tile, TileGrid, reflect_index
from engine.settings import Callbacks, InferenceSettings

SHARDED_EXTENSION = ".vrt"
STRIP_ROWS = 2048  # raster rows per strip, about: the unit of work, of a retry and of a worker's memory
STRIPS_PER_WORKER = 2  # at least this many strips per worker, so that none idles at the end
CANCEL_CHECK_SECONDS = 1.0  # how often a strip asks the scheduler whether the run was cancelled


def is_sharded(settings: InferenceSettings) -> bool:
    return Path(settings.output).suffix.lower() == SHARDED_EXTENSION


def check_sharded_outputs(settings: InferenceSettings) -> bool:
    """Whether the run writes sharded output; refuses a ``.vrt`` output without a cluster and a mix
    of ``.vrt`` and other outputs (``InputError``)."""
    outputs = {name: getattr(settings, name) for name in ("output", "stage1_output", "uncertainty_output")
               if getattr(settings, name) is not None}
    sharded = {name for name, path in outputs.items() if Path(path).suffix.lower() == SHARDED_EXTENSION}
    if not sharded:
        return False
    if settings.cluster is None:
        name = sorted(sharded)[0]
        raise InputError(f"a {SHARDED_EXTENSION} output is written as strips by the workers of a cluster: set "
                         "cluster (e.g. local:2 or a scheduler address), or write a .tif", parameter=name)
    if len(sharded) != len(outputs):
        name = sorted(set(outputs) - sharded)[0]
        raise InputError(f"the outputs of a sharded run are all {SHARDED_EXTENSION} files: give {name} the "
                         f"{SHARDED_EXTENSION} extension too", parameter=name)
    return True


def strip_folder(destination: Path) -> Path:
    """The folder of a sharded output's strips: ``mosaic.vrt`` -> ``mosaic-strips``."""
    return destination.with_name(destination.stem + "-strips")


# ----------------------------------------------------------------------------------------------
# strips


@dataclass(frozen=True)
class Strip:
    """Tile rows ``first_row`` .. ``last_row`` of the grid run for raster rows ``row_start`` .. ``row_stop``."""

    index: int
    first_row: int
    last_row: int
    row_start: int
    row_stop: int

    @property
    def file_name(self) -> str:
        return f"strip-{self.index:05d}.tif"

    @property
    def height(self) -> int:
        return self.row_stop - self.row_start


def plan_strips(tiling: Tiling, count: int) -> Tuple[Strip, ...]:
    """About ``count`` strips along the tile rows (see the module docstring); strips whose rows lie
    entirely in the mirrored margin are left out (they own no raster row)."""
    spans = tiling.grid.row_spans
    n = len(spans)
    count = max(1, min(count, n))
    owners = [round(i * n / count) for i in range(count)] + [n]  # the first tile row each strip owns
    strips: List[Strip] = []
    for lo, hi in zip(owners[:-1], owners[1:]):
        start = spans[lo][0] if lo else 0
        stop = spans[hi][0] if hi < n else tiling.grid.height
        row_start = min(max(start - tiling.margin, 0), tiling.height)
        row_stop = min(max(stop - tiling.margin, 0), tiling.height)
        if row_stop > row_start:
            first = min(i for i, (s, length) in enumerate(spans) if s + length > start)
            strips.append(Strip(len(strips), first, hi - 1, row_start, row_stop))
    return tuple(strips)


def strip_count(height: int, workers: int) -> int:
    return max(-(-height // STRIP_ROWS), STRIPS_PER_WORKER * workers)


# ----------------------------------------------------------------------------------------------
# the worker side


@dataclass(frozen=True)
class StripOutput:
    """One output of the run as a strip writes it: its partial folder, channels and full-raster spec."""

    folder: str
    channels: slice
    spec: OutputSpec


@dataclass(frozen=True)
class StripTask:
    worker: dc.WorkerTask
    outputs: Tuple[StripOutput, ...]
    cancel_event: str  # name of the distributed.Event the client sets to cancel


@dataclass(frozen=True)
class StripInput:
    """The input rows a strip reads, sent by the client when the workers cannot read the input."""

    row_off: int
    rgb: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class StripOutcome:
    index: int
    tiles_run: int
    tiles_skipped: int
    network_passes: int


class _ArrayReader:
    """``RGBReader.read`` over the rows the client sent (full width)."""

    def __init__(self, window: StripInput):
        self.window = window

    def read(self, row_off: int, col_off: int, height: int, width: int):
        rows = slice(row_off - self.window.row_off, row_off - self.window.row_off + height)
        cols = slice(col_off, col_off + width)
        return self.window.rgb[:, rows, cols], self.window.valid[rows, cols]


class _StripRows:
    """Passes on the finished pixels inside the strip's rows, shifted to the strip file's rows."""

    def __init__(self, writer: rio.BlockWriter, strip: Strip):
        self.writer, self.strip = writer, strip

    def put(self, row: int, col: int, values: np.ndarray) -> None:
        top, bottom = max(row, self.strip.row_start), min(row + values.shape[1], self.strip.row_stop)
        if bottom > top:
            self.writer.put(top - self.strip.row_start, col, values[:, top - row:bottom - row])


def _strip_georeference(georeference: rio.Georeference, row_start: int) -> rio.Georeference:
    points, crs = georeference.gcps
    shifted = [GroundControlPoint(row=p.row - row_start, col=p.col, x=p.x, y=p.y, z=p.z, id=p.id, info=p.info)
               for p in points]
    transform = georeference.transform * Affine.translation(0, row_start) if georeference.transform else None
    return rio.Georeference(georeference.crs, transform, (shifted, crs))


def _cancel_check(event_name: str):
    """A cancel callback that asks the scheduler at most every ``CANCEL_CHECK_SECONDS``."""
    from distributed import Event

    event, last = Event(event_name), [0.0]

    def cancelled() -> bool:
        if time.monotonic() - last[0] < CANCEL_CHECK_SECONDS:
            return False
        last[0] = time.monotonic()
        return event.is_set()

    return cancelled


def run_strip(task: StripTask, payload: dc.BundlePayload, strip: Strip,
              window: Optional[StripInput]) -> StripOutcome:
    """On a worker: run, blend and write one strip (one GeoTIFF per output, atomically)."""
    source = task.worker.source
    reader = _ArrayReader(window) if window is not None else dc.reader_of(source)
    callbacks = Callbacks(cancel=_cancel_check(task.cancel_event))
    device = dc.worker_device(task.worker)
    cascade = dc.cached_cascade(payload, device)
    outputs = AtomicOutputs()
    writer = None
    try:
        writer = _strip_writer(task, strip, outputs)
        outcome = _StripTiles(task, strip, reader, writer, callbacks,
                              RunnerContext(cascade, task.worker.plan, task.worker.statistics, device, callbacks,
                                            task.worker.settings,
                                            stretch_statistics=task.worker.stretch_statistics)).run()
        if writer.pending:
            raise EngineError(f"internal error: {writer.pending} blocks of strip {strip.index} left unwritten")
        writer.close()
        outputs.commit()
        return outcome
    except BaseException:
        outputs.discard()
        raise
    finally:
        if writer is not None:
            writer.close()


def _strip_writer(task: StripTask, strip: Strip, outputs: AtomicOutputs) -> rio.BlockWriter:
    targets = []
    for output in task.outputs:
        spec = dataclasses.replace(output.spec, height=strip.height,
                                   georeference=_strip_georeference(output.spec.georeference, strip.row_start))
        sink = outputs.create(GeoTIFF(), Path(output.folder) / strip.file_name, spec)
        targets.append(rio.OutputTarget(sink, output.channels))
    plan = task.worker.plan
    return rio.BlockWriter(targets, strip.height, plan.tiling.width, plan.layout.written,
                           memory_bytes=task.worker.settings.writer_memory_bytes, scratch_dir=task.outputs[0].folder)


class _StripTiles:
    """A strip's tiles through the in-process runner and a blender over its tile rows. Batches are
    formed as the pipeline forms them: cut at ``batch`` tiles and before a tile without valid pixels."""

    def __init__(self, task: StripTask, strip: Strip, reader, writer: rio.BlockWriter, callbacks: Callbacks,
                 context: RunnerContext):
        from engine.raster.runners.in_process import InProcessRunner

        plan = task.worker.plan
        self.tiling, self.strip, self.reader, self.callbacks = plan.tiling, strip, reader, callbacks
        self.fill = task.worker.source.fill
        grid = plan.tiling.grid
        rows = TileGrid(grid.height, grid.width, grid.row_spans[strip.first_row:strip.last_row + 1], grid.col_spans)
        fill = cell_fill(plan.nodata, task.outputs[0].spec.encoding)
        self.blender = TileBlender(rows, plan.layout.total,
                                   CellWriter(plan.tiling, plan.layout, fill, _StripRows(writer, strip), plan.band_set))
        self.runner = InProcessRunner(context)
        self.reassembly = Reassembly(self.runner, self._deliver, plan.tiles_in_flight)
        self.skipped = 0

    def tiles(self):
        columns = len(self.tiling.grid.col_spans)
        for row in range(self.strip.first_row, self.strip.last_row + 1):
            for col in range(columns):
                yield (row - self.strip.first_row) * columns + col, self.tiling.grid.tile(row, col)

    def run(self) -> StripOutcome:
        pending: List[TileJob] = []
        masks: List[np.ndarray] = []
        for index, tile in self.tiles():
            if self.callbacks.cancelled():
                raise Cancelled("raster inference was cancelled")
            rgb, ok = read_tile(self.reader, tile, self.tiling, self.fill)
            if not ok.any():
                self._flush(pending, masks)
                self.reassembly.skip(index, tile, ok)
                self.skipped += 1
                continue
            pending.append(TileJob(index, tile, self.tiling.raster_origin(tile), rgb))
            masks.append(ok)
            if len(pending) >= self.runner.batch:
                self._flush(pending, masks)
        self._flush(pending, masks)
        self.reassembly.drain()
        tiles = (self.strip.last_row - self.strip.first_row + 1) * len(self.tiling.grid.col_spans)
        return StripOutcome(self.strip.index, tiles - self.skipped, self.skipped, self.runner.network_passes)

    def _flush(self, pending: List[TileJob], masks: List[np.ndarray]) -> None:
        if pending:
            self.reassembly.submit(list(pending), list(masks), lambda fraction: None)
            pending.clear()
            masks.clear()

    def _deliver(self, tile: Tile, values: Optional[np.ndarray], valid: np.ndarray) -> None:
        # Weights from the whole grid (a strip's first and last tile rows keep their ramps);
        # the blender indexes the strip's own rows.
        weights = None if values is None else self.tiling.grid.weights(tile, self.tiling.inset)
        self.blender.add(dataclasses.replace(tile, row=tile.row - self.strip.first_row), values, weights, valid)


# ----------------------------------------------------------------------------------------------
# the VRT


def _vrt_xml(spec: OutputSpec, strips: Sequence[Strip], folder_name: str) -> str:
    def source(band: int, strip: Strip) -> str:
        size = f'xSize="{spec.width}" ySize="{strip.height}"'
        return (f'<SimpleSource><SourceFilename relativeToVRT="1">{folder_name}/{strip.file_name}</SourceFilename>'
                f'<SourceBand>{band}</SourceBand><SrcRect xOff="0" yOff="0" {size}/>'
                f'<DstRect xOff="0" yOff="{strip.row_start}" {size}/></SimpleSource>')

    encoding = spec.encoding  # float16 strips read as Float32 (GDAL before 3.11 has no Float16 type)
    data_type = {"uint16": "UInt16", "int16": "Int16"}.get(encoding.dtype, "Float32")
    scaling = f"<Offset>{encoding.offset!r}</Offset><Scale>{encoding.scale!r}</Scale>" if encoding.is_integer else ""
    bands = "".join(f'<VRTRasterBand dataType="{data_type}" band="{band}">{scaling}'
                    + "".join(source(band, strip) for strip in strips) + "</VRTRasterBand>"
                    for band in range(1, spec.band_count + 1))
    return f'<VRTDataset rasterXSize="{spec.width}" rasterYSize="{spec.height}">{bands}</VRTDataset>\n'


def write_vrt(path: Path, spec: OutputSpec, strips: Sequence[Strip], folder_name: str) -> None:
    """A VRT at ``path`` over the strips in ``folder_name`` (relative to it) with the spec's
    georeference, nodata, spectral metadata and tags."""
    from engine.raster.spectral_metadata import write_spectral_metadata

    path.write_text(_vrt_xml(spec, strips, folder_name))
    with rasterio.open(str(path), "r+") as dataset:
        georeference = spec.georeference
        if georeference.gcps[0]:
            dataset.gcps = georeference.gcps
        else:
            dataset.transform = georeference.transform
            if georeference.crs is not None:
                dataset.crs = georeference.crs
        if spec.nodata is not None:
            dataset.nodata = spec.encoding.nodata(spec.nodata)
        write_spectral_metadata(dataset, spec.wavelengths_nm, spec.fwhm_nm, dict(spec.tags), spec.band_names)


def _commit_folder(partial: Path, final: Path) -> None:
    """Put ``partial`` in place of ``final`` (an earlier run's folder is removed after the swap)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(partial, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# the client side


class ShardedRun:
    """One sharded run on the client: the pipeline's ``_Run`` for ``.vrt`` outputs (``execute``,
    ``report``); see the module docstring."""

    def __init__(self, job: PreparedRun, callbacks: Callbacks):
        self.job, self.plan, self.callbacks = job, job.plan, callbacks
        self.partial: Dict[str, Path] = {}  # output parameter -> its partial strip folder
        self.outcomes: List[StripOutcome] = []
        self.strips: Tuple[Strip, ...] = ()
        self.tasks: Optional[dc.TaskSet] = None
        self.cancel_event: Optional[str] = None  # the distributed.Event running strips watch
        self.reader: Optional[rio.RGBReader] = None

    def execute(self) -> None:
        connection = None
        try:
            self._statistics()
            connection = dc.connect(self.job.settings.cluster, self.job.settings.device, self.callbacks.say)
            self._run_strips(connection.client, connection.workers)
            self._commit()
        except BaseException:
            if connection is not None:
                self._stop_workers(connection.client)
            for folder in self.partial.values():
                shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            if self.reader is not None:
                self.reader.close()
            if connection is not None:
                connection.close()

    def _statistics(self) -> None:
        job = self.job
        self.reader = rio.RGBReader(job.info, job.radiometry)
        self.callbacks.tell(0.0, "reading image statistics")
        sample_rgb, sample_valid = _statistics_sample(self.reader)[:2]  # as the pipeline's _Run takes them
        self.statistics = job.cascade.image_statistics(sample_rgb, sample_valid)
        self.stretch_statistics = stretch_statistics(job, sample_rgb, sample_valid, self.callbacks)
        self.encoding = output_encoding(job.settings.output_type, bright_level(sample_rgb, sample_valid))
        self.source = InputSource(job.info, job.radiometry,
                                  tuple(float(v) for v in _fill_value(sample_rgb, sample_valid)))

    def _specs(self) -> Dict[str, OutputSpec]:
        info, tags = self.job.info, _tags(self.job, self.statistics)
        return {output.parameter: OutputSpec(
            width=info.width, height=info.height, band_count=output.band_count, nodata=self.plan.nodata,
            georeference=info.georeference, wavelengths_nm=output.wavelengths_nm, fwhm_nm=output.fwhm_nm,
            tags=dict(tags, SCDM_PRODUCT=output.product), band_names=output.band_names, encoding=self.encoding,
            overviews=self.job.settings.overviews) for output in self.plan.outputs}

    def _create_folders(self, client) -> Tuple[StripOutput, ...]:
        specs, outputs = self._specs(), []
        for output in self.plan.outputs:
            final = strip_folder(output.destination)
            folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=str(final.parent)))
            self.partial[output.parameter] = folder
            outputs.append(StripOutput(str(folder), output.channels, specs[output.parameter]))
        seen = client.run(os.path.isdir, outputs[0].folder)
        if not all(seen.values()):
            raise InputError(f"the Dask workers do not see the output folder {self.plan.outputs[0].destination.parent}: "
                             "a sharded output needs a folder every worker can write to (a shared file system); "
                             "write a .tif to have this machine write the output", parameter="output")
        return tuple(outputs)

    def _run_strips(self, client, workers: int) -> None:
        import torch

        readable = dc.workers_can_read(client, self.source)
        self.callbacks.say("the workers read their input windows themselves" if readable else
                           "the input is not readable from the workers: the client sends each strip's rows")
        worker_task = dc.WorkerTask(self.job.settings, self.plan, self.statistics, torch.get_num_threads(),
                                    self.source, readable, self.stretch_statistics)
        task = StripTask(worker_task, self._create_folders(client), f"scdm-cancel-{uuid.uuid4().hex}")
        self.cancel_event = task.cancel_event
        payload = client.scatter(dc.bundle_payload(self.job.cascade), broadcast=True)
        self.strips = plan_strips(self.plan.tiling, strip_count(self.plan.tiling.height, workers))
        self.callbacks.say(f"{len(self.strips)} strips on {workers} worker(s)")
        self.tasks = dc.TaskSet(client, self.callbacks.cancelled)
        waiting = list(self.strips)
        while waiting or len(self.tasks):
            # At most two strips per worker outstanding: a strip's rows sent by the client stay bounded.
            while waiting and len(self.tasks) < STRIPS_PER_WORKER * workers:
                strip = waiting.pop(0)
                self.tasks.submit(run_strip, task, payload, strip, None if readable else self._rows(strip))
            self.tasks.wait_for_one()
            self.outcomes.extend(self.tasks.take_finished())
            self.callbacks.tell(len(self.outcomes) / len(self.strips),
                                f"strip {len(self.outcomes)} / {len(self.strips)}")

    def _rows(self, strip: Strip) -> StripInput:
        """The input rows a strip reads (its tiles' mirrored windows), read here."""
        grid, tiling = self.plan.tiling.grid, self.plan.tiling
        top, bottom = grid.tile(strip.first_row, 0), grid.tile(strip.last_row, 0)
        rows = reflect_index(np.arange(top.row_off, bottom.row_end) - tiling.margin, tiling.height)
        start, stop = int(rows.min()), int(rows.max()) + 1
        rgb, valid = self.reader.read(start, 0, stop - start, tiling.width)
        return StripInput(start, rgb, valid)

    def _stop_workers(self, client) -> None:
        """After a cancel or an error: tell running strips to stop, forget the waiting ones."""
        from distributed import Event

        if self.cancel_event is not None:
            Event(self.cancel_event, client=client).set()
        if self.tasks is not None:
            self.tasks.cancel()

    def _commit(self) -> None:
        self.callbacks.tell(1.0, "writing the VRT")
        specs = self._specs()
        for output in self.plan.outputs:
            folder = strip_folder(output.destination)
            _commit_folder(self.partial.pop(output.parameter), folder)
            fd, name = tempfile.mkstemp(prefix=f".{output.destination.name}.partial-", suffix=SHARDED_EXTENSION,
                                        dir=str(output.destination.parent))
            os.close(fd)
            try:
                write_vrt(Path(name), specs[output.parameter], self.strips, folder.name)
                os.replace(name, output.destination)
            except BaseException:
                remove_quietly(name)
                raise

    def report(self, seconds: float) -> InferenceReport:
        job, plan, info = self.job, self.plan, self.job.info
        destinations = {output.parameter: str(output.destination) for output in plan.outputs}
        return InferenceReport(
            input_path=str(info.path), output_path=destinations["output"],
            stage1_output=destinations.get("stage1_output"), uncertainty_output=destinations.get("uncertainty_output"),
            width=info.width, height=info.height, bands=plan.outputs[0].band_count, tiles=len(plan.tiling.grid),
            tiles_run=sum(o.tiles_run for o in self.outcomes), tiles_skipped=sum(o.tiles_skipped for o in self.outcomes),
            tile=plan.tiling.tile, overlap=plan.tiling.overlap, batch=plan.batch, device=job.device,
            sampler=dataclasses.asdict(plan.sampler), seed=plan.seed, samples=plan.samples,
            normalisation=dataclasses.asdict(self.statistics), nodata=plan.nodata, seconds=seconds,
            megapixels_per_second=info.width * info.height / 1e6 / max(seconds, 1e-9),
            network_passes=sum(o.network_passes for o in self.outcomes),
            extra={"strips": len(self.strips), "strip_folders": [str(strip_folder(o.destination)) for o in plan.outputs]},
        )
