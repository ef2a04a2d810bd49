"""Seamless, streaming, georeferenced spectral super-resolution of rasters of any size.

``run_inference(settings)`` reads an RGB raster tile by tile, has a tile runner run the cascade on
batches of tiles, blends the overlapping results and streams float32 hyperspectral rasters to disk.
The work is split into a plan (``engine.raster.plan``: tiling, channels, outputs, computed before
anything is opened), a runner (``engine.raster.runners``), the reassembly of its results in grid
order (``engine.raster.reassembly``), the blender (``engine.raster.blending``) and an output format
(``engine.raster.formats``). ``infer_raster`` is the same call with keyword arguments.

Seamlessness
    * Noise comes from ``PositionalNoise``: one Gaussian field keyed by (seed, stage, step, band,
      global row, global column), so two tiles draw identical noise where they overlap.
    * Normalisation is resolved once per raster from a decimated read (never per tile), and the
      invalid pixels of every tile are filled with the same per-raster RGB mean.
    * Progressive truncation runs with ``truncation_scope="pixel"``: its threshold comes from each
      pixel's own spectrum, which no tile border can change (the paper's per-sample quantile would
      differ between neighbouring tiles).
    * Overlaps are blended with separable raised-cosine weights (``windows.axis_weights``). For a
      cascade of local networks (``BundleConfig.context_radius``) the blend skips each tile's pixels
      whose context crosses its edge, so with an overlap of at least twice that radius plus one the
      tiles join exactly: the result equals one pass over the whole raster.
    * The raster is tiled as if extended by half the overlap in mirrored pixels on every side
      (``windows.border_margin``), so its own border gets the context a seam between two tiles gets;
      without it the network's zero padding showed as a 3-4 px rim of 2-4x too bright
      near-infrared on the demo image.
    For a multiscale network what remains tile dependent is its own context (receptive field, GroupNorm
    statistics, attention over the tile); the blending hides it, ``tests/test_raster_pipeline.py``
    measures it.

Streaming and memory
    Tiles are read in row-major order and blended in that order (``blending.TileBlender``); open
    cells are the overlap band below the current tile row (overlap rows x raster width) plus the
    overlap right of the current tile: for 16384 columns, 48 bands and 45 overlap rows that is
    ~145 MB. At most ``InferencePlan.tiles_in_flight`` tile results wait between the runner and the
    blender. Final pixels go to an ``io.BlockWriter`` which writes whole 256 x 256 output blocks
    exactly once (compressed blocks are never rewritten) and spills blocks that wait for the next
    tile row to an anonymous scratch file when more than its budget (default 128 MB) is held. GDAL's
    block cache is capped at 64 MB. Nothing else grows with the raster: peak memory is set by the
    tile size, batch and band count.

Atomic output
    Every output is written to a partial file beside its destination and renamed over the destination
    only after all outputs are complete; after an error, a cancel or a KeyboardInterrupt the partial
    files are deleted (``formats.atomic``). Input problems raise ``InputError`` before any file is
    created.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import rasterio

from engine.band_sets import BandSet, resolve_band_set
from engine.device import resolve_device
from engine.errors import Cancelled, EngineError, InputError
from engine.radiometry import Radiometry, as_linear_stretch, resolve as resolve_radiometry
from engine.raster import io as rio
from engine.raster.blending import TileBlender
from engine.raster.formats import OutputSpec, format_for
from engine.raster.formats.atomic import AtomicOutputs, check_free_space, space_need
from engine.raster.formats.encoding import OutputEncoding, bright_level, output_encoding
from engine.raster.plan import ChannelLayout, InferencePlan, ModelFacts, Tiling, make_plan
from engine.raster.reassembly import Reassembly
from engine.raster.spectral_metadata import channel_mismatch, read_wavelengths
from engine.raster.runners import InputSource, RunnerContext, TileJob, close_runner, in_flight_limit, runner_class
from engine.raster.style import write_styles
from engine.raster.windows import Tile, reflect_index
from engine.settings import Callbacks, InferenceSettings

GDAL_CACHE_MB = 64


@dataclass
class InferenceReport:
    input_path: str
    output_path: str
    stage1_output: Optional[str]
    uncertainty_output: Optional[str]
    width: int
    height: int
    bands: int
    tiles: int
    tiles_run: int
    tiles_skipped: int
    tile: int
    overlap: int
    batch: int
    device: str
    sampler: dict
    seed: int
    samples: int
    normalisation: dict
    nodata: Optional[float]
    seconds: float
    megapixels_per_second: float
    network_passes: int = 0
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# entry points


def infer_raster(input_path, output_path, *, model=None, progress=None, cancel=None, log=None,
                 **choices) -> InferenceReport:
    """``run_inference`` with keyword arguments: ``choices`` are ``InferenceSettings`` fields.

    ``model``: a loaded ``Cascade``, a bundle folder, or None for the bundled default.
    ``progress(fraction, message)``, ``cancel() -> bool`` and ``log(message)`` as in ``Callbacks``.
    """
    cascade = None if model is None or isinstance(model, (str, os.PathLike)) else model
    settings = InferenceSettings(input=input_path, output=output_path,
                                 model=None if cascade is not None else model, **choices)
    return run_inference(settings, Callbacks(progress, cancel, log), cascade=cascade)


def run_inference(settings: InferenceSettings, callbacks: Callbacks = Callbacks(), *,
                  cascade=None) -> InferenceReport:
    """Reconstruct a hyperspectral raster as ``settings`` say; see the module docstring.

    ``cascade``: an already loaded model to use instead of loading ``settings.model``. Raises
    ``InputError`` (nothing created) or ``Cancelled`` (nothing left behind).
    """
    started = time.perf_counter()
    with rio.gdal_notices(callbacks.say):
        return _run_inference(settings, callbacks, cascade, started)


def _run_inference(settings: InferenceSettings, callbacks: Callbacks, cascade, started: float) -> InferenceReport:
    job = prepare(settings, cascade)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        run = _run_class(job.settings)(job, callbacks)
        run.execute()
        write_styles([output.destination for output in job.plan.outputs], callbacks.say)
    seconds = time.perf_counter() - started
    callbacks.tell(1.0, "done")
    return run.report(seconds)


# ----------------------------------------------------------------------------------------------
# checks: nothing is created until all of them pass


@dataclass(frozen=True)
class PreparedRun:
    """A run that passed every check: its settings, input, device, model and plan."""

    settings: InferenceSettings
    info: rio.InputInfo
    radiometry: Radiometry
    device: str
    cascade: object
    plan: InferencePlan


def prepare(settings: InferenceSettings, cascade=None) -> PreparedRun:
    """Check the destinations, the input, the device and the model, and plan the run."""
    from engine.raster.runners.precision import check_precision  # imports torch, as loading the model does

    _check_destinations(settings)
    info = rio.inspect_input(settings.input, settings.bands, expected_bands=3)
    radiometry = resolve_radiometry(settings.radiometry, info.dtype)
    device = resolve_device(settings.device)
    check_precision(settings.precision, device)
    cascade = _load_model(settings.model, cascade, device)
    _check_channels(settings, cascade.config.input_wavelengths_nm)
    band_set = resolve_band_set(settings.band_set, cascade.config.wavelengths_nm)
    plan = make_plan(info, ModelFacts.of(cascade.config), settings, device, band_set)
    runner_class(settings.runner)
    return PreparedRun(settings, info, radiometry, device, cascade, plan)


def _check_channels(settings: InferenceSettings, expected_nm) -> None:
    """Refuse bands whose wavelength metadata says they are not the model's red, green, blue."""
    with rasterio.open(settings.input) as dataset:
        wavelengths = read_wavelengths(dataset)
    if wavelengths is None:
        return
    problem = channel_mismatch(wavelengths, settings.bands, expected_nm)
    if problem:
        raise InputError(problem, parameter="bands")


def _check_destinations(settings: InferenceSettings) -> None:
    from engine.raster.sharded import check_sharded_outputs

    sharded = check_sharded_outputs(settings)  # .vrt outputs: strips written by a cluster's workers
    if sharded and settings.consistency is not None:
        raise InputError("the consistency step runs where the output is assembled, which a sharded (.vrt) output "
                         "is not: write a GeoTIFF, or set consistency off", parameter="consistency")
    for parameter in ("output", "stage1_output", "uncertainty_output"):
        path = getattr(settings, parameter)
        if path is not None or parameter == "output":
            rio.check_output_path(path, settings.input, parameter)
            if not sharded:
                format_for(path, parameter)


def _run_class(settings: InferenceSettings):
    """``_Run``, or ``engine.raster.sharded.ShardedRun`` for sharded (``.vrt``) outputs."""
    from engine.raster.sharded import ShardedRun, is_sharded

    return ShardedRun if is_sharded(settings) else _Run


def _load_model(folder: Optional[str], cascade, device: str):
    if cascade is not None:
        return cascade.to(device) if str(cascade.device) != device else cascade
    from engine.bundle import default_bundle_path, load_bundle

    path = default_bundle_path() if folder is None else Path(folder)
    if folder is None and not path.exists():
        raise InputError(f"no model given and the default model is not installed at {path}: "
                         "give a model bundle folder", parameter="model")
    return load_bundle(path, device=device)


# ----------------------------------------------------------------------------------------------
# one run


def _statistics_sample(reader: rio.RGBReader, max_pixels: int = 1 << 20) -> Tuple[np.ndarray, np.ndarray, float]:
    """RGB values and validity from a decimated read, a strided full scan if that finds no valid pixel;
    and the fraction of valid pixels in the decimated read."""
    rgb, valid = reader.read_overview(max_pixels)
    if valid.any():
        return rgb, valid, float(valid.mean())
    info = reader.info
    step = max(1, int(math.sqrt(info.height * info.width / max_pixels)))
    chunks = []
    for r in range(0, info.height, 256):
        h = min(256, info.height - r)
        part, ok = reader.read(r, 0, h, info.width)
        sel = part[:, ::step, ::step][:, ok[::step, ::step]]
        if sel.size:
            chunks.append(sel)
    if not chunks:
        return rgb, valid, 0.0
    values = np.concatenate(chunks, axis=1)[:, None, :]
    return values, np.ones(values.shape[1:], dtype=bool), values.shape[2] * step * step / (info.height * info.width)


def _fill_value(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The per-raster RGB mean that replaces invalid pixels in every tile."""
    if not valid.any():
        return np.zeros(3, dtype=np.float32)
    return np.array([float(np.mean(rgb[c][valid])) for c in range(3)], dtype=np.float32)


def _read_mirrored(reader: rio.RGBReader, tile: Tile, tiling: Tiling) -> Tuple[np.ndarray, np.ndarray]:
    """The tile of the raster extended by the mirrored margin: RGB and validity."""
    rows = reflect_index(np.arange(tile.row_off, tile.row_end) - tiling.margin, tiling.height)
    cols = reflect_index(np.arange(tile.col_off, tile.col_end) - tiling.margin, tiling.width)
    r0, c0 = int(rows.min()), int(cols.min())
    rgb, ok = reader.read(r0, c0, int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1)
    return rgb[:, rows - r0][:, :, cols - c0], ok[rows - r0][:, cols - c0]


def read_tile(reader: rio.RGBReader, tile: Tile, tiling: Tiling, fill) -> Tuple[np.ndarray, np.ndarray]:
    """The tile's RGB with its mirrored context, invalid pixels replaced by ``fill`` (the per-raster
    RGB), and its validity. Runners whose workers read their own tiles call it too."""
    rgb, ok = _read_mirrored(reader, tile, tiling)
    if ok.any() and not ok.all():
        rgb = np.where(ok[None], rgb, np.asarray(fill, dtype=np.float32)[:, None, None])
    return rgb, ok


ESTIMATE_CROP = 128  # px of the decimated statistics sample the camera estimate reconstructs


def _camera_response(job: "PreparedRun", sample_rgb: np.ndarray, sample_valid: np.ndarray, callbacks: Callbacks):
    """The consistency setting's camera response: None; or a CSV's, scaled to the image's exposure and
    white balance; or estimated. Both fit on the model's reconstruction of a central crop of the
    decimated image; the result is logged and tagged on the output."""
    from engine.consistency import estimate_response, response_from_csv, with_channel_gains
    from engine.evaluate import reconstruct

    choice, config = job.settings.consistency, job.cascade.config
    if choice is None:
        return None
    h, w = sample_valid.shape
    rows = slice(max(0, h // 2 - ESTIMATE_CROP // 2), h // 2 + ESTIMATE_CROP // 2)
    cols = slice(max(0, w // 2 - ESTIMATE_CROP // 2), w // 2 + ESTIMATE_CROP // 2)
    rgb, valid = sample_rgb[:, rows, cols], sample_valid[rows, cols]
    spectra = reconstruct(job.cascade, rgb, job.plan.sampler, seed=job.settings.seed, valid=valid).full
    if choice == "estimate":
        response = estimate_response(spectra[:, valid], rgb[:, valid])
    else:
        response = with_channel_gains(response_from_csv(Path(choice), config.wavelengths_nm), spectra[:, valid],
                                      rgb[:, valid])
    peaks = ", ".join(f"{config.wavelengths_nm[int(np.argmax(row))]:.0f}" for row in response.weights)
    callbacks.say(f"consistency: {response.source}; red, green, blue peak at {peaks} nm")
    return response


def _describe_statistics(transform, stats) -> str:
    """One phrase: how this raster is normalised for the model."""
    if transform.kind == "chromatic":
        dark = ", ".join(f"{v:.4g}" for v in stats.dark)
        white = ", ".join(f"{v:.4g}" for v in stats.white)
        return f"chromatic normalisation: dark levels {dark}, white {white} (red, green, blue)"
    return f"normalisation offset {stats.offset:g} scale {stats.scale:g}"


def _normalisation_tag(transform, stats) -> str:
    if transform.kind == "chromatic":
        return (f"chromatic: dark={','.join(f'{v:g}' for v in stats.dark)};"
                f"white={','.join(f'{v:g}' for v in stats.white)}")
    return f"offset={stats.offset:g},scale={stats.scale:g}"


def stretch_statistics(job: PreparedRun, sample_rgb: np.ndarray, sample_valid: np.ndarray, callbacks: Callbacks):
    """The raster's statistics read as a linear stretch (``RunnerContext.stretch_statistics``) when the
    plan puts the guessed decoding into the uncertainty output; None otherwise."""
    if not job.plan.uncertainty_has_decoding:
        return None
    callbacks.say("8-bit input read as sRGB by guess (radiometry auto): the uncertainty output also holds the "
                  "difference from reading it as a linear stretch, which doubles the samples drawn; set the "
                  "input values to srgb or linear when you know them")
    return job.cascade.image_statistics(as_linear_stretch(sample_rgb), sample_valid)


def _tags(job: PreparedRun, stats) -> dict:
    """The SCDM_* tags every output carries (their order is the order they are written in)."""
    sampler, tiling = job.plan.sampler, job.plan.tiling
    tile_h, tile_w = tiling.tile_size
    return {
        "SCDM_MODEL": job.cascade.config.name,
        "SCDM_SAMPLER": sampler.name,
        "SCDM_STEPS": sampler.steps,
        "SCDM_GUIDANCE": sampler.guidance if sampler.guidance_stage1 is None  # else "stage 1,stage 2", as PDT
        else f"{sampler.guidance_for_stage(1)},{sampler.guidance}",
        "SCDM_PDT": f"{sampler.pdt_stage1},{sampler.pdt_stage2}",
        "SCDM_TRUNCATION": f"{sampler.truncation_target}/{sampler.truncation_scope}",
        "SCDM_SEED": job.plan.seed,
        "SCDM_SAMPLES": job.plan.samples,
        "SCDM_INPUT": os.path.abspath(job.info.path),
        "SCDM_INPUT_BANDS": ",".join(map(str, job.info.bands)),
        "SCDM_RADIOMETRY": job.radiometry.value,
        "SCDM_TILE": f"{tile_h}x{tile_w}",
        "SCDM_OVERLAP": tiling.overlap,
        "SCDM_NORMALISATION": _normalisation_tag(job.cascade.config.normalisation, stats),
        "SCDM_UNITS": job.cascade.config.output_units,
    }


def _consistency_tag(response) -> str:
    """The projection's camera: where it came from and its rows (red, green, blue) over the bands."""
    rows = "; ".join(",".join(f"{v:.5g}" for v in row) for row in response.weights)
    return f"spectra integrate to the input RGB through the {response.source} response: {rows}"


def cell_fill(nodata: Optional[float], encoding: OutputEncoding) -> Optional[float]:
    """What invalid pixels hold on their way to the writer: the output's nodata, or NaN for an integer
    encoding (which stores NaN as its own nodata code)."""
    return float("nan") if encoding.is_integer and nodata is not None else nodata


class CellWriter:
    """Finished cells of the extended grid -> the raster's pixels in output form -> the BlockWriter:
    the mirrored margin is cut off, variance becomes standard deviation, a sensor's bands are added,
    invalid pixels nodata."""

    def __init__(self, tiling: Tiling, layout: ChannelLayout, nodata: Optional[float], writer: rio.BlockWriter,
                 band_set: Optional[BandSet] = None):
        self.tiling, self.layout, self.writer, self.band_set = tiling, layout, writer, band_set
        self.fill_nodata = np.float32(nodata if nodata is not None else np.nan)

    def __call__(self, row_off: int, col_off: int, values: Optional[np.ndarray], valid: np.ndarray) -> None:
        part = self.tiling.on_raster(row_off, col_off, *valid.shape)
        if part is None:
            return
        rows, cols, row, col = part
        valid = valid[rows, cols]
        if values is None:
            values = np.full((self.layout.written,) + valid.shape, self.fill_nodata, dtype=np.float32)
        else:
            values = np.ascontiguousarray(values[:, rows, cols])
            if self.layout.uncertainty is not None:
                variance = values[self.layout.uncertainty]
                np.sqrt(np.maximum(variance, 0.0), out=variance)
            if self.band_set is not None:
                values = np.concatenate([values, self.band_set.apply(values[self.layout.full])])
            if not valid.all():
                values[:, ~valid] = self.fill_nodata
        self.writer.put(row, col, values)


class _Run:
    """One run's open files, stages and counters (see the module docstring)."""

    def __init__(self, job: PreparedRun, callbacks: Callbacks):
        self.job, self.plan, self.callbacks = job, job.plan, callbacks
        self.outputs = AtomicOutputs(callbacks.say)
        self.reader: Optional[rio.RGBReader] = None
        self.writer: Optional[rio.BlockWriter] = None
        self.runner = None
        self.tiles_done = 0
        self.tiles_skipped = 0

    def execute(self) -> None:
        try:
            self._open()
            self._run_tiles()
            self._finish()
        except BaseException:
            self.outputs.discard()
            raise
        finally:
            close_runner(self.runner)
            if self.writer is not None:
                self.writer.close()
            if self.reader is not None:
                self.reader.close()

    def _open(self) -> None:
        job, plan = self.job, self.plan
        self.reader = rio.RGBReader(job.info, job.radiometry)
        self.callbacks.tell(0.0, "reading image statistics")
        sample_rgb, sample_valid, self.valid_fraction = _statistics_sample(self.reader)
        self.statistics = job.cascade.image_statistics(sample_rgb, sample_valid)
        self.encoding = output_encoding(job.settings.output_type, bright_level(sample_rgb, sample_valid))
        self.fill = _fill_value(sample_rgb, sample_valid)
        self.consistency = _camera_response(job, sample_rgb, sample_valid, self.callbacks)
        self._log_start()
        self._create_outputs()
        self.blender = TileBlender(plan.tiling.grid, plan.layout.total,
                                   CellWriter(plan.tiling, plan.layout, cell_fill(plan.nodata, self.encoding),
                                              self.writer, plan.band_set))
        source = InputSource(job.info, job.radiometry, tuple(float(v) for v in self.fill))
        context = RunnerContext(job.cascade, plan, self.statistics, job.device, self.callbacks, job.settings, source,
                                stretch_statistics(job, sample_rgb, sample_valid, self.callbacks))
        self.runner = runner_class(job.settings.runner)(context)
        self.reassembly = Reassembly(self.runner, self._deliver, in_flight_limit(self.runner, plan))

    def _log_start(self) -> None:
        job, tiling = self.job, self.plan.tiling
        (tile_h, tile_w), (net_h, net_w) = tiling.tile_size, tiling.network_size
        self.callbacks.say(f"{job.info.width} x {job.info.height} px {job.info.dtype}, read as {job.radiometry.value} "
                           f"(see radiometry), {len(tiling.grid)} tiles of {tile_h} x {tile_w} "
                           f"(network {net_h} x {net_w}), device {job.device}, batch {self.plan.batch}, "
                           f"{_describe_statistics(job.cascade.config.normalisation, self.statistics)}")
        band_set = self.plan.band_set
        if band_set is not None:
            self.callbacks.say(f"output bands: {band_set.name} {', '.join(band_set.band_names)}"
                               + (f" ({', '.join(band_set.left_out)} lie beyond the model's bands and are left out)"
                                  if band_set.left_out else ""))
        if not job.info.georeference.present:
            self.callbacks.say("the input has no georeference (no CRS, geotransform or ground control points): "
                               "the output has none either and lines up with the input pixel for pixel")

    def _create_outputs(self) -> None:
        info, tags = self.job.info, _tags(self.job, self.statistics)
        if self.consistency is not None:
            tags["SCDM_CONSISTENCY"] = _consistency_tag(self.consistency)
        specs = [OutputSpec(width=info.width, height=info.height, band_count=output.band_count,
                            nodata=self.plan.nodata, georeference=info.georeference,
                            wavelengths_nm=output.wavelengths_nm, fwhm_nm=output.fwhm_nm,
                            tags=dict(tags, SCDM_PRODUCT=output.product), band_names=output.band_names,
                            encoding=self.encoding, overviews=self.job.settings.overviews)
                 for output in self.plan.outputs]
        formats = [format_for(output.destination, output.parameter) for output in self.plan.outputs]
        check_free_space([space_need(output_format, output.destination, spec, self.valid_fraction, output.parameter)
                          for output_format, output, spec in zip(formats, self.plan.outputs, specs)])
        targets = []
        for output_format, output, spec in zip(formats, self.plan.outputs, specs):
            sink = self.outputs.create(output_format, output.destination, spec, output.parameter)
            targets.append(rio.OutputTarget(sink, output.channels))
        self.writer = rio.BlockWriter(targets, info.height, info.width, self.plan.layout.written,
                                      memory_bytes=self.job.settings.writer_memory_bytes,
                                      scratch_dir=str(self.plan.outputs[0].destination.parent))

    def _run_tiles(self) -> None:
        tiling = self.plan.tiling
        pending: List[TileJob] = []
        masks: List[np.ndarray] = []
        for index, tile in enumerate(tiling.grid):
            self._check_cancel()
            rgb, ok = read_tile(self.reader, tile, tiling, self.fill)
            if not ok.any():
                # Batches are cut before an empty tile, as they always were: which tiles share a
                # network call changes float rounding, and results stay identical to earlier versions.
                self._flush(pending, masks)
                self.reassembly.skip(index, tile, ok)
                self.tiles_skipped += 1
                self._report(0.0, 0)
                continue
            pending.append(TileJob(index, tile, tiling.raster_origin(tile), rgb))
            masks.append(ok)
            if len(pending) >= self.runner.batch:
                self._flush(pending, masks)
        self._flush(pending, masks)
        self.reassembly.drain()
        self._check_cancel()

    def _flush(self, pending: List[TileJob], masks: List[np.ndarray]) -> None:
        if not pending:
            return
        size = len(pending)
        self.reassembly.submit(list(pending), list(masks), lambda fraction: self._report(fraction, size))
        pending.clear()
        masks.clear()
        release_memory()
        self._report(0.0, 0)

    def _deliver(self, tile: Tile, values: Optional[np.ndarray], valid: np.ndarray) -> None:
        if values is not None and self.consistency is not None:
            self._make_consistent(tile, values)
        weights = None if values is None else self.plan.tiling.grid.weights(tile, self.plan.tiling.inset)
        self.blender.add(tile, values, weights, valid)
        self.tiles_done += 1

    def _make_consistent(self, tile: Tile, values: np.ndarray) -> None:
        """Project the tile's full-band spectra onto those that integrate to its input RGB."""
        from engine.consistency import project

        rgb, _ = read_tile(self.reader, tile, self.plan.tiling, self.fill)
        full = self.plan.layout.full
        values[full] = project(values[full], rgb, self.consistency)

    def _report(self, fraction_of_batch: float, batch_size: int) -> None:
        total = len(self.plan.tiling.grid)
        fraction = min(1.0, (self.tiles_done + fraction_of_batch * batch_size) / total)
        self.callbacks.tell(fraction, f"tile {min(self.tiles_done + batch_size, total)} / {total}")

    def _check_cancel(self) -> None:
        if self.callbacks.cancelled():
            raise Cancelled("raster inference was cancelled")

    def _finish(self) -> None:
        if self.writer.pending or self.blender.open_cells:
            raise EngineError(f"internal error: {self.writer.pending} output blocks and {self.blender.open_cells} "
                              "cells left unfinished")
        self.reader.close()
        self.reader = None
        clipped = sum(target.sink.clipped for target in self.writer.targets)
        if clipped:
            self.callbacks.say(f"{clipped} values lay beyond what {self.encoding.dtype} stores and were clipped: "
                               "choose float32 to keep them")
        self.callbacks.tell(1.0, "writing")
        self.outputs.commit()

    def report(self, seconds: float) -> InferenceReport:
        job, plan, info = self.job, self.plan, self.job.info
        destinations = {output.parameter: str(output.destination) for output in plan.outputs}
        tiles = len(plan.tiling.grid)
        return InferenceReport(
            input_path=str(info.path), output_path=destinations["output"],
            stage1_output=destinations.get("stage1_output"), uncertainty_output=destinations.get("uncertainty_output"),
            width=info.width, height=info.height, bands=plan.outputs[0].band_count, tiles=tiles,
            tiles_run=tiles - self.tiles_skipped, tiles_skipped=self.tiles_skipped, tile=plan.tiling.tile,
            overlap=plan.tiling.overlap, batch=self.runner.batch, device=job.device,
            sampler=dataclasses.asdict(plan.sampler), seed=plan.seed, samples=plan.samples,
            normalisation=dataclasses.asdict(self.statistics), nodata=plan.nodata,
            seconds=seconds, megapixels_per_second=info.width * info.height / 1e6 / max(seconds, 1e-9),
            network_passes=self.runner.network_passes,
            extra={"peak_open_cell_bytes": self.blender.peak_open_bytes, "peak_block_bytes": self.writer.peak_held_bytes,
                   "blocks_spilled": self.writer.spilled, "blocks_written": self.writer.blocks_written,
                   "peak_tiles_in_flight": self.reassembly.peak_in_flight},
        )


_LIBC = []


def release_memory() -> None:
    """Give freed heap memory back to the system (glibc's malloc_trim; a no-op elsewhere).

    Tile-sized tensors come and go once per batch; without trimming, glibc keeps the freed pages
    and the resident size creeps up by a few hundred MB.
    """
    if not _LIBC:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
            _LIBC.append(libc)
        except (OSError, AttributeError):
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0].malloc_trim(0)
