"""Seamless, streaming, georeferenced spectral super-resolution of rasters of any size.

``infer_raster`` reads an RGB raster tile by tile, runs the cascade on batches of tiles, blends the
overlapping results and streams float32 hyperspectral GeoTIFF(s) to disk; see docs/architecture.md.

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

Streaming and memory (the blending scheme)
    Tiles are processed in row-major order. Each axis is cut at every tile start and end into
    *pieces*; a *cell* (row piece x column piece) is covered by a known set of tiles. A cell covered
    by one tile (a tile's core) is final as soon as that tile is done and is passed on at once; a
    cell in an overlap keeps a weighted sum and a weight sum only until its last covering tile has
    been added, then is normalised and passed on. Open cells are therefore the overlap band below
    the current tile row (overlap rows x raster width) plus the overlap right of the current tile:
    for 16384 columns, 48 bands and 45 overlap rows that is ~145 MB. Final pixels go to an
    ``io.BlockWriter`` which writes whole 256 x 256 output blocks exactly once (compressed blocks are
    never rewritten) and spills blocks that wait for the next tile row to an anonymous scratch file
    when more than its budget (default 128 MB) is held. GDAL's block cache is capped at 64 MB.
    Nothing else grows with the raster: peak memory is set by the tile size, batch and band count.

Atomic output
    Every output is written to ``.<name>.partial-<random>.tif`` beside its destination and renamed
    over the destination only after all outputs are complete; after an error, a cancel or a
    KeyboardInterrupt the partial files are deleted. Input problems raise ``InputError`` before any
    file is created.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio

from engine.config import override_sampler
from engine.device import resolve_device
from engine.errors import Cancelled, EngineError, InputError
from engine.raster import io as rio
from engine.raster.windows import (DEFAULT_OVERLAP, Tile, TileGrid, axis_segments, border_margin,
                                   padded_size, reflect_index, reflect_pad, tile_grid)

ProgressFn = Optional[Callable[[float, str], None]]
CancelFn = Optional[Callable[[], bool]]
LogFn = Optional[Callable[[str], None]]

GDAL_CACHE_MB = 64
DEFAULT_WRITER_BUDGET = 128 << 20


# ----------------------------------------------------------------------------------------------
# blending


class TileBlender:
    """Blends overlapping tile results and hands on each finished cell exactly once.

    ``add(tile, values, weights, valid)`` takes a tile's (C, h, w) float32 values (or ``None`` for a
    tile that was skipped because it holds no valid pixel), its (h, w) blend weights and validity.
    ``emit(row_off, col_off, values_or_None, valid)`` receives finished rectangles: they are disjoint
    and cover the raster once all tiles have been added. ``None`` means no tile contributed (the
    rectangle lies inside a skipped tile, so it is entirely invalid).
    """

    def __init__(self, grid: TileGrid, channels: int,
                 emit: Callable[[int, int, Optional[np.ndarray], np.ndarray], None]):
        self.grid = grid
        self.channels = channels
        self.emit = emit
        self.row_pieces = axis_segments(grid.row_spans)
        self.col_pieces = axis_segments(grid.col_spans)
        self._rows_of = [[k for k, p in enumerate(self.row_pieces) if i in p[2]] for i in range(len(grid.row_spans))]
        self._cols_of = [[k for k, p in enumerate(self.col_pieces) if j in p[2]] for j in range(len(grid.col_spans))]
        self._open: Dict[Tuple[int, int], list] = {}
        self.peak_open_bytes = 0
        self._open_bytes = 0

    def add(self, tile: Tile, values: Optional[np.ndarray], weights: np.ndarray, valid: np.ndarray) -> None:
        for a in self._rows_of[tile.row]:
            r0, r1, rcover = self.row_pieces[a]
            rs = slice(r0 - tile.row_off, r1 - tile.row_off)
            for b in self._cols_of[tile.col]:
                c0, c1, ccover = self.col_pieces[b]
                cs = slice(c0 - tile.col_off, c1 - tile.col_off)
                total = len(rcover) * len(ccover)
                if total == 1:
                    self.emit(r0, c0, None if values is None else values[:, rs, cs], valid[rs, cs])
                    continue
                entry = self._open.get((a, b))
                if entry is None:
                    entry = [total, None, None]
                    self._open[(a, b)] = entry
                if values is not None:
                    w = weights[rs, cs]
                    if entry[1] is None:
                        entry[1] = values[:, rs, cs] * w
                        entry[2] = w.copy()
                        self._open_bytes += entry[1].nbytes + entry[2].nbytes
                        self.peak_open_bytes = max(self.peak_open_bytes, self._open_bytes)
                    else:
                        entry[1] += values[:, rs, cs] * w
                        entry[2] += w
                entry[0] -= 1
                if entry[0] == 0:
                    del self._open[(a, b)]
                    if entry[1] is None:
                        self.emit(r0, c0, None, valid[rs, cs])
                    else:
                        self._open_bytes -= entry[1].nbytes + entry[2].nbytes
                        # Zero total weight only where every covering tile skipped its own edge
                        # pixels, i.e. inside a tile without valid pixels: those are nodata anyway.
                        np.divide(entry[1], entry[2], out=entry[1], where=entry[2] > 0)
                        self.emit(r0, c0, entry[1], valid[rs, cs])

    @property
    def open_cells(self) -> int:
        return len(self._open)


# ----------------------------------------------------------------------------------------------
# settings and report


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


def sampler_settings(config, sampler=None, steps=None, guidance=None, pdt=(None, None)):
    """The bundle's sampler with the caller's overrides; tiles need the per-pixel truncation scope."""
    try:
        return override_sampler(config.sampler, sampler, steps, guidance, pdt, truncation_scope="pixel")
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _load_model(model, device: str):
    from engine.cascade import Cascade

    if isinstance(model, Cascade):
        return model.to(device) if str(model.device) != device else model
    from engine.bundle import default_bundle_path, load_bundle

    folder = default_bundle_path() if model is None else Path(model)
    if model is None and not folder.exists():
        raise InputError(f"no model given and the default model is not installed at {folder}: "
                         "pass a bundle folder with --model")
    return load_bundle(folder, device=device)


def _statistics_sample(reader: rio.RGBReader, max_pixels: int = 1 << 20) -> Tuple[np.ndarray, np.ndarray]:
    """RGB values and validity from a decimated read; a strided full scan if that finds no valid pixel."""
    rgb, valid = reader.read_overview(max_pixels)
    if valid.any():
        return rgb, valid
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
        return rgb, valid
    values = np.concatenate(chunks, axis=1)[:, None, :]
    return values, np.ones(values.shape[1:], dtype=bool)


# ----------------------------------------------------------------------------------------------
# the pipeline


class _Outputs:
    """The partial files, their datasets and their final destinations."""

    def __init__(self):
        self.items: List[Tuple[Path, Path, object]] = []  # (partial, destination, dataset)

    def create(self, dest: Path, info: rio.InputInfo, count: int, nodata, wavelengths, fwhm, tags) -> object:
        partial = rio.partial_path(dest)
        self.items.append((partial, dest, None))
        dataset = rio.open_output(partial, info, count, nodata)
        self.items[-1] = (partial, dest, dataset)
        rio.write_spectral_metadata(dataset, wavelengths, fwhm, tags)
        return dataset

    def commit(self) -> None:
        for partial, _, dataset in self.items:
            dataset.close()
        for partial, dest, _ in self.items:
            os.replace(partial, dest)
            aux = Path(str(partial) + ".aux.xml")
            if aux.exists():
                os.replace(aux, Path(str(dest) + ".aux.xml"))
        self.items = []

    def discard(self) -> None:
        for partial, _, dataset in self.items:
            if dataset is not None:
                try:
                    dataset.close()
                except Exception:
                    pass
            rio.remove_quietly(partial)
        self.items = []


def infer_raster(
    input_path,
    output_path,
    *,
    model=None,
    bands=(1, 2, 3),
    tile: Optional[int] = None,
    overlap: int = DEFAULT_OVERLAP,
    sampler: Optional[str] = None,
    steps: Optional[int] = None,
    guidance: Optional[float] = None,
    pdt=(None, None),
    seed: int = 0,
    device: Optional[str] = "auto",
    batch: Optional[int] = None,
    stage1_output=None,
    uncertainty_output=None,
    samples: int = 1,
    progress: ProgressFn = None,
    cancel: CancelFn = None,
    log: LogFn = None,
    expected_band_count: Optional[int] = None,
    writer_memory_bytes: int = DEFAULT_WRITER_BUDGET,
) -> InferenceReport:
    """Reconstruct a hyperspectral GeoTIFF from an RGB raster; see the module docstring.

    ``model``: a ``Cascade``, a bundle folder, or None for the bundled default. ``tile`` None takes the
    bundle's ``inference_tile``. ``sampler``, ``steps``,
    ``guidance`` and ``pdt`` entries left None take the bundle's defaults (a pdt entry "off" or False
    disables truncation for that stage). ``samples`` > 1 averages that many samples drawn with seeds
    ``seed, seed + 1, ...``; ``uncertainty_output`` then receives their per-band standard deviation
    (ddof = 1). ``expected_band_count``: the number of output bands the caller counts on; a model
    producing another number is refused. Raises ``InputError`` (nothing created), ``Cancelled`` (nothing left behind).
    """
    started = time.perf_counter()
    say = log or (lambda message: None)
    tell = progress or (lambda fraction, message: None)

    # ---- checks: nothing is created until all of them pass
    try:
        overlap, samples, seed = int(overlap), int(samples), int(seed)
        tile = None if tile is None else int(tile)
    except (TypeError, ValueError):
        raise InputError("tile, overlap, samples and seed must be whole numbers") from None
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    if uncertainty_output is not None and samples < 2:
        raise InputError("an uncertainty output needs at least two samples: add --samples K with K >= 2")
    if batch is not None and int(batch) < 1:
        raise InputError(f"batch must be at least 1, got {batch}")
    dest = rio.check_output_path(output_path, input_path)
    extra_dests = {}
    for name, path in (("stage1", stage1_output), ("uncertainty", uncertainty_output)):
        if path is not None:
            extra_dests[name] = rio.check_output_path(path, input_path)
    all_dests = [dest.resolve()] + [p.resolve() for p in extra_dests.values()]
    if len(set(all_dests)) != len(all_dests):
        raise InputError("the output, stage-1 and uncertainty paths must differ: give each its own file name")
    info = rio.inspect_input(input_path, bands, expected_bands=3)
    device = resolve_device(device)
    cascade = _load_model(model, device)
    config = cascade.config
    model_inputs = int(getattr(cascade.stage1_model, "cond_channels", 3))
    if model_inputs != len(info.bands):
        raise InputError(f"model '{config.name}' takes {model_inputs} input bands but {len(info.bands)} were chosen "
                         f"({','.join(map(str, info.bands))}): use a model made for RGB input or choose {model_inputs} bands")
    if expected_band_count is not None and int(expected_band_count) != config.band_count:
        raise InputError(f"model '{config.name}' produces {config.band_count} bands but {int(expected_band_count)} "
                         "were expected: choose a model with that band count or drop the expectation")
    settings = sampler_settings(config, sampler, steps, guidance, pdt)
    tile = config.inference_tile if tile is None else tile
    if tile < 8:
        raise InputError(f"tile size {tile} is too small: use at least 8 (e.g. --tile 256)")
    if not 0 <= overlap < tile // 2 + 1:
        raise InputError(f"overlap {overlap} must lie between 0 and half the tile ({tile // 2}): e.g. --overlap 32")
    inset = config.context_radius or 0
    if batch is None:
        batch = 8 if device.startswith("cuda") else 1
    batch = int(batch)

    n_full = config.band_count
    stage1_idx = list(config.stage1_indices)
    n_stage1 = len(stage1_idx)
    want_stage1 = "stage1" in extra_dests
    want_unc = "uncertainty" in extra_dests
    channels = n_full + (n_stage1 if want_stage1 else 0) + (n_full if want_unc else 0)
    s1_slice = slice(n_full, n_full + n_stage1) if want_stage1 else None
    var_slice = slice(channels - n_full, channels) if want_unc else None

    margin = max(border_margin(overlap), inset)
    grid = tile_grid(info.height + 2 * margin, info.width + 2 * margin, tile, overlap)
    if inset and len(grid) > 1 and overlap < 2 * inset + 1:
        raise InputError(f"overlap {overlap} px is too small for model '{config.name}', whose output at a pixel "
                         f"depends on {inset} px of context on each side: use an overlap of at least "
                         f"{2 * inset + 1} px (e.g. --overlap 16) so that tiles join exactly")
    multiple = config.size_multiple
    tile_h, tile_w = grid.row_spans[0][1], grid.col_spans[0][1]
    # Tiles are padded (by reflection) to a multiple of the network's downsampling factor, and to
    # at least twice that (and 16 px), so that normalisation layers still see several pixels at the
    # bottleneck even for a 1 x 1 raster.
    least = max(2 * multiple, 16)
    net_h, net_w = padded_size(max(tile_h, least), multiple), padded_size(max(tile_w, least), multiple)
    nodata = rio.output_nodata(info)
    fill_nodata = np.float32(nodata if nodata is not None else np.nan)

    outputs = _Outputs()
    reader = None
    writer = None
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            reader = rio.RGBReader(info)
            tell(0.0, "reading image statistics")
            sample_rgb, sample_valid = _statistics_sample(reader)
            norm = cascade.normalisation_for(sample_rgb, sample_valid)
            if sample_valid.any():
                fill = np.array([float(np.mean(sample_rgb[c][sample_valid])) for c in range(3)], dtype=np.float32)
            else:
                fill = np.zeros(3, dtype=np.float32)
            say(f"{info.width} x {info.height} px, {len(grid)} tiles of {tile_h} x {tile_w} "
                f"(network {net_h} x {net_w}), device {device}, batch {batch}, normalisation "
                f"offset {norm.offset:g} scale {norm.scale:g}")

            tags = {
                "SCDM_MODEL": config.name,
                "SCDM_SAMPLER": settings.name,
                "SCDM_STEPS": settings.steps,
                "SCDM_GUIDANCE": settings.guidance,
                "SCDM_PDT": f"{settings.pdt_stage1},{settings.pdt_stage2}",
                "SCDM_TRUNCATION": f"{settings.truncation_target}/{settings.truncation_scope}",
                "SCDM_SEED": seed,
                "SCDM_SAMPLES": samples,
                "SCDM_INPUT": os.path.abspath(info.path),
                "SCDM_INPUT_BANDS": ",".join(map(str, info.bands)),
                "SCDM_TILE": f"{tile_h}x{tile_w}",
                "SCDM_OVERLAP": overlap,
                "SCDM_NORMALISATION": f"offset={norm.offset:g},scale={norm.scale:g}",
                "SCDM_UNITS": config.output_units,
            }
            fwhm = list(config.fwhm_nm) if config.fwhm_nm else None
            wl = list(config.wavelengths_nm)
            targets = []
            main_ds = outputs.create(dest, info, n_full, nodata, wl, fwhm,
                                     dict(tags, SCDM_PRODUCT="mean of samples" if samples > 1 else "sample"))
            targets.append(rio.OutputTarget(main_ds, slice(0, n_full)))
            if want_stage1:
                ds = outputs.create(extra_dests["stage1"], info, n_stage1, nodata,
                                    [wl[i] for i in stage1_idx], [fwhm[i] for i in stage1_idx] if fwhm else None,
                                    dict(tags, SCDM_PRODUCT="stage-1 estimate"))
                targets.append(rio.OutputTarget(ds, s1_slice))
            if want_unc:
                ds = outputs.create(extra_dests["uncertainty"], info, n_full, nodata, wl, fwhm,
                                    dict(tags, SCDM_PRODUCT=f"per-band standard deviation of {samples} samples"))
                targets.append(rio.OutputTarget(ds, var_slice))

            writer = rio.BlockWriter(targets, info.height, info.width, channels,
                                     memory_bytes=writer_memory_bytes, scratch_dir=str(dest.parent))

            def emit(row_off, col_off, values, valid):
                # Cells arrive in the coordinates of the mirrored extension: keep what lies on the raster.
                rows = slice(max(0, margin - row_off), min(valid.shape[0], info.height + margin - row_off))
                cols = slice(max(0, margin - col_off), min(valid.shape[1], info.width + margin - col_off))
                if rows.start >= rows.stop or cols.start >= cols.stop:
                    return
                valid = valid[rows, cols]
                if values is not None:
                    values = np.ascontiguousarray(values[:, rows, cols])
                row_off, col_off = row_off + rows.start - margin, col_off + cols.start - margin
                if values is None:
                    values = np.full((channels,) + valid.shape, fill_nodata, dtype=np.float32)
                else:
                    if var_slice is not None:
                        np.sqrt(np.maximum(values[var_slice], 0.0), out=values[var_slice])
                    if not valid.all():
                        values[:, ~valid] = fill_nodata
                writer.put(row_off, col_off, values)

            blender = TileBlender(grid, channels, emit)
            runner = _BatchRunner(cascade, settings, seed, samples, batch, norm, device, cancel, say,
                                  n_full, stage1_idx if want_stage1 else None, want_unc, channels,
                                  (tile_h, tile_w), (net_h, net_w))
            total = len(grid)
            done = [0]
            skipped = 0

            def report(frac_in_batch: float, size: int):
                fraction = min(1.0, (done[0] + frac_in_batch * size) / total)
                tell(fraction, f"tile {min(done[0] + size, total)} / {total}")

            pending: List[Tuple[Tile, np.ndarray, np.ndarray]] = []

            def flush():
                if not pending:
                    return
                # Noise is keyed by raster pixel, whatever the margin (mirrored pixels sit at negative rows/cols).
                results = runner.run([(t.row_off - margin, t.col_off - margin, x) for t, x, _ in pending],
                                     lambda f: report(f, len(pending)))
                for (t, _, ok), values in zip(pending, results):
                    blender.add(t, values, grid.weights(t, inset), ok)
                done[0] += len(pending)
                pending.clear()
                del results
                release_memory()
                report(0.0, 0)

            for t in grid:
                if cancel is not None and cancel():
                    raise Cancelled("raster inference was cancelled")
                rgb, ok = _read_mirrored(reader, t, margin, info.height, info.width)
                if not ok.any():
                    # Keep row-major order: earlier tiles first, then this empty one.
                    flush()
                    blender.add(t, None, None, ok)
                    done[0] += 1
                    skipped += 1
                    report(0.0, 0)
                    continue
                if not ok.all():
                    rgb = np.where(ok[None], rgb, fill[:, None, None])
                pending.append((t, rgb, ok))
                if len(pending) >= runner.batch:
                    flush()
            flush()
            if cancel is not None and cancel():
                raise Cancelled("raster inference was cancelled")
            if writer.pending or blender.open_cells:
                raise EngineError(f"internal error: {writer.pending} output blocks and {blender.open_cells} "
                                  "cells left unfinished")
            reader.close()
            reader = None
            tell(1.0, "writing")
            outputs.commit()
    except BaseException:
        outputs.discard()
        raise
    finally:
        if writer is not None:
            writer.close()
        if reader is not None:
            reader.close()

    seconds = time.perf_counter() - started
    tell(1.0, "done")
    return InferenceReport(
        input_path=str(info.path), output_path=str(dest),
        stage1_output=str(extra_dests["stage1"]) if want_stage1 else None,
        uncertainty_output=str(extra_dests["uncertainty"]) if want_unc else None,
        width=info.width, height=info.height, bands=n_full, tiles=len(grid),
        tiles_run=len(grid) - skipped, tiles_skipped=skipped, tile=tile, overlap=overlap,
        batch=runner.batch, device=device, sampler=dataclasses.asdict(settings), seed=seed, samples=samples,
        normalisation={"offset": norm.offset, "scale": norm.scale}, nodata=nodata, seconds=seconds,
        megapixels_per_second=info.width * info.height / 1e6 / max(seconds, 1e-9),
        network_passes=runner.network_passes,
        extra={"peak_open_cell_bytes": blender.peak_open_bytes, "peak_block_bytes": writer.peak_held_bytes,
               "blocks_spilled": writer.spilled, "blocks_written": writer.blocks_written},
    )


def _read_mirrored(reader: rio.RGBReader, tile: Tile, margin: int, height: int, width: int):
    """The tile of the raster extended by ``margin`` mirrored pixels per side: RGB and validity."""
    rows = reflect_index(np.arange(tile.row_off, tile.row_end) - margin, height)
    cols = reflect_index(np.arange(tile.col_off, tile.col_end) - margin, width)
    r0, c0 = int(rows.min()), int(cols.min())
    rgb, ok = reader.read(r0, c0, int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1)
    return rgb[:, rows - r0][:, :, cols - c0], ok[rows - r0][:, cols - c0]


class _BatchRunner:
    """Runs the cascade on batches of tiles; halves the batch on CUDA out-of-memory."""

    def __init__(self, cascade, settings, seed, samples, batch, norm, device, cancel, say,
                 n_full, stage1_idx, want_var, channels, tile_hw, net_hw):
        self.cascade, self.settings, self.seed, self.samples = cascade, settings, seed, samples
        self.batch, self.norm, self.device, self.cancel, self.say = batch, norm, device, cancel, say
        self.n_full, self.stage1, self.want_var, self.channels = n_full, stage1_idx, want_var, channels
        self.tile_hw, self.net_hw = tile_hw, net_hw
        self.network_passes = 0

    def run(self, items: Sequence[Tuple[int, int, np.ndarray]], progress: Callable[[float], None]) -> List[np.ndarray]:
        results: List[np.ndarray] = []
        start = 0
        while start < len(items):
            chunk = items[start:start + self.batch]
            try:
                results.extend(self._run_chunk(chunk, lambda f: progress((start + f * len(chunk)) / len(items))))
            except Exception as exc:
                if not _is_cuda_oom(exc):
                    raise
                import torch

                torch.cuda.empty_cache()
                if self.batch == 1:
                    raise EngineError("out of GPU memory with a single tile: use a smaller --tile or --device cpu") from exc
                self.batch = max(1, self.batch // 2)
                self.say(f"CUDA out of memory: batch reduced to {self.batch}")
                continue
            start += len(chunk)
        return results

    def _run_chunk(self, chunk, progress) -> List[np.ndarray]:
        import torch

        from engine.diffusion.noise import PositionalNoise

        th, tw = self.tile_hw
        nh, nw = self.net_hw
        cond = np.stack([reflect_pad(self.norm.to_model(x), nh, nw) for _, _, x in chunk]).astype(np.float32)
        cond_t = torch.from_numpy(cond).to(self.device)
        origins = [(r, c) for r, c, _ in chunk]
        k_total = self.samples
        n, scale, offset = self.n_full, float(self.norm.scale), float(self.norm.offset)
        merged = np.empty((len(chunk), self.channels, th, tw), dtype=np.float32)
        acc = acc2 = acc1 = None
        for k in range(k_total):
            noise = PositionalNoise(self.seed + k, origins)
            out = self.cascade.sample(cond_t, self.settings, noise,
                                      progress=lambda f, k=k: progress((k + f) / k_total), cancel=self.cancel)
            self.network_passes += out.network_passes * len(chunk)
            full = out.full[:, :, :th, :tw].float().cpu().numpy()
            s1 = out.stage1[:, :, :th, :tw].float().cpu().numpy() if self.stage1 is not None else None
            del out
            if k_total == 1:
                merged[:, :n] = full
                if s1 is not None:
                    merged[:, n:n + s1.shape[1]] = s1
                continue
            # Several samples: float64 running sums for the mean and the variance.
            if acc is None:
                acc = full.astype(np.float64)
                acc2 = np.square(acc) if self.want_var else None
                acc1 = s1.astype(np.float64) if s1 is not None else None
            else:
                acc += full
                if acc2 is not None:
                    acc2 += np.square(full, dtype=np.float64)
                if acc1 is not None:
                    acc1 += s1
            del full, s1
        if k_total > 1:
            acc /= k_total
            merged[:, :n] = acc
            if acc1 is not None:
                acc1 /= k_total
                merged[:, n:n + acc1.shape[1]] = acc1
            if acc2 is not None:
                # unbiased variance of the model-unit samples, then in output units (scale squared)
                acc2 -= k_total * np.square(acc)
                acc2 /= (k_total - 1)
                np.maximum(acc2, 0.0, out=acc2)
                acc2 *= scale * scale
                merged[:, self.channels - n:] = acc2
            del acc, acc1, acc2
        # model units -> output units (the variance channels are already there)
        mean_channels = self.channels - (n if self.want_var else 0)
        view = merged[:, :mean_channels]
        view *= scale
        view += offset
        return [merged[i] for i in range(len(chunk))]


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


def _is_cuda_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)
