"""Measurements behind docs/scale-out.md: cluster scaling, the single writer, GPU throughput, precision.

    python -m benchmarks.scale_out scaling --size 2048            # in-process, local:1, local:2, sharded
    python -m benchmarks.scale_out writer --size 2048             # the client's writing alone
    python -m benchmarks.scale_out throughput --megapixels 100 --device cuda --precision fp32,bf16
    python -m benchmarks.scale_out precision --input runs/demo/rgbn.tif --device cuda

``scaling`` runs ``infer_raster`` on one synthetic uint16 RGB (``benchmarks.bench_raster.make_input``)
with the bundled model (or ``--model``) four ways and checks that all four outputs are identical:
in this process, on ``local:1``, on ``local:2`` with the single writer (a ``.tif``) and on
``local:2`` sharded (a ``.vrt``), with the wall-clock time and the CPU time of the client and of
its worker processes: on a loaded machine the CPU times still say what each side costs (the
client's, in a single-writer run, is the writer's). Every process runs torch with one thread, so
one worker process uses one core. ``writer`` times what a single-writer client does per output pixel once the tiles
are computed (``BlockWriter`` into the GeoTIFF format) with the model's band count: past
(writer megapixels per second / one worker's) workers, the single writer is the bottleneck.
``throughput`` times the model's networks alone on random tiles (no raster I/O) for each precision,
``precision`` runs a raster at fp32 and at each mixed precision and prints the differences.
Each prints one JSON line per measurement (``--json`` also writes them to a file).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from benchmarks.bench_raster import make_input

ROWS_PER_READ = 256  # rows compared at a time, so comparing two outputs holds a strip only


def _emit(rows: List[dict], row: dict) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def same_pixels(a: Path, b: Path) -> bool:
    """Whether two rasters hold the same values (NaN equal to NaN), read strip by strip."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(a) as first, rasterio.open(b) as second:
        if (first.count, first.height, first.width) != (second.count, second.height, second.width):
            return False
        for row in range(0, first.height, ROWS_PER_READ):
            window = Window(0, row, first.width, min(ROWS_PER_READ, first.height - row))
            if not np.array_equal(first.read(window=window), second.read(window=window), equal_nan=True):
                return False
    return True


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _timed_run(rgb: Path, out: Path, model, **choices) -> Dict[str, float]:
    """Wall-clock seconds, and the CPU seconds of this process (the client: reading, blending,
    compressing, writing) and of the worker processes it started (counted once they have exited)."""
    from engine.raster.pipeline import infer_raster

    started, client, workers = time.perf_counter(), _cpu_seconds(resource.RUSAGE_SELF), \
        _cpu_seconds(resource.RUSAGE_CHILDREN)
    infer_raster(rgb, out, model=model, seed=0, **choices)
    return {"seconds": round(time.perf_counter() - started, 2),
            "client_cpu_seconds": round(_cpu_seconds(resource.RUSAGE_SELF) - client, 1),
            "worker_cpu_seconds": round(_cpu_seconds(resource.RUSAGE_CHILDREN) - workers, 1)}


def scaling(args) -> List[dict]:
    """In-process, local:1, local:2 (single writer), local:2 sharded: seconds, megapixels per second."""
    import torch

    torch.set_num_threads(1)  # one core per process, the workers take the client's count
    rows: List[dict] = []
    work = Path(tempfile.mkdtemp(prefix="scdm-scale-", dir=args.workdir))
    try:
        rgb = work / "rgb.tif"
        make_input(str(rgb), args.size)
        runs = [("in-process", None, "tif")] + [(f"local:{n}", f"local:{n}", "tif") for n in args.workers] \
            + [(f"local:{max(args.workers)} sharded", f"local:{max(args.workers)}", "vrt")]
        reference = None
        for label, cluster, extension in runs:
            out = work / f"{label.replace(':', '').replace(' ', '-')}.{extension}"
            timing = _timed_run(rgb, out, args.model, cluster=cluster, device=args.device, tile=args.tile)
            reference = reference or out
            _emit(rows, {"run": label, "size": args.size, **timing,
                         "megapixels_per_second": round(args.size ** 2 / 1e6 / timing["seconds"], 4),
                         "identical_to_in_process": same_pixels(reference, out)})
        by_run = {row["run"]: row["seconds"] for row in rows}
        if len(args.workers) > 1:
            low, high = min(args.workers), max(args.workers)
            _emit(rows, {"speed-up": f"local:{high} / local:{low}",
                         "ratio": round(by_run[f"local:{low}"] / by_run[f"local:{high}"], 3)})
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def writer(args) -> List[dict]:
    """The client's share of a single-writer run: finished 256-row strips of ``bands`` float32 bands
    through ``BlockWriter`` into the GeoTIFF format (compression included)."""
    from engine.raster import io as rio
    from engine.raster.formats.atomic import AtomicOutputs
    from engine.raster.formats.base import OutputSpec
    from engine.raster.formats.geotiff import GeoTIFF

    bands = args.bands or _model_bands(args.model)
    spec = OutputSpec(width=args.size, height=args.size, band_count=bands, nodata=None,
                      georeference=rio.Georeference(None, None), wavelengths_nm=tuple(400.0 + i for i in range(bands)),
                      fwhm_nm=None, tags={})
    values = _smooth_spectra(bands, ROWS_PER_READ, args.size)
    work = Path(tempfile.mkdtemp(prefix="scdm-writer-", dir=args.workdir))
    try:
        outputs = AtomicOutputs()
        sink = outputs.create(GeoTIFF(), work / "out.tif", spec)
        block_writer = rio.BlockWriter([rio.OutputTarget(sink, slice(0, bands))], args.size, args.size, bands)
        started = time.perf_counter()
        for row in range(0, args.size, ROWS_PER_READ):
            block_writer.put(row, 0, values[:, :min(ROWS_PER_READ, args.size - row)])
        block_writer.close()
        outputs.commit()
        seconds = time.perf_counter() - started
        size_mb = (work / "out.tif").stat().st_size / 1e6
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows: List[dict] = []
    _emit(rows, {"writer": "BlockWriter + GeoTIFF", "size": args.size, "bands": bands, "seconds": round(seconds, 2),
                 "megapixels_per_second": round(args.size ** 2 / 1e6 / seconds, 3), "file_mb": round(size_mb, 1)})
    return rows


def _smooth_spectra(bands: int, height: int, width: int) -> np.ndarray:
    """Spectra that compress like a model's output (smooth along bands and space), not like noise."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.3 + 0.1 * np.sin(cols / 37.0) * np.cos(rows / 23.0)
    slope = np.linspace(0.5, 1.5, bands, dtype=np.float32)[:, None, None]
    return (base[None] * slope + 0.01 * np.sin(cols / 3.0)[None]).astype(np.float32)


def _model_bands(model) -> int:
    from engine.bundle import default_bundle_path, read_config

    return len(read_config(model or default_bundle_path()).wavelengths_nm)


def throughput(args) -> List[dict]:
    """The model's networks alone on ``megapixels`` of random conditions in tiles of ``tile``, batches
    of ``batch``, for each precision: megapixels per second (the GPU figure of docs/scale-out.md)."""
    import torch

    from engine.bundle import load_bundle
    from engine.device import resolve_device
    from engine.diffusion.noise import PositionalNoise
    from engine.evaluate import sampler_settings
    from engine.raster.runners.precision import precision_scope

    device = resolve_device(args.device)
    cascade = load_bundle(args.model, device=device) if args.model else _default_cascade(device)
    settings = sampler_settings(cascade)
    calls = max(1, round(args.megapixels * 1e6 / (args.batch * args.tile ** 2)))
    rows: List[dict] = []
    for precision in args.precision.split(","):
        channels = cascade.config.normalisation.condition_channels
        cond = torch.rand(args.batch, channels, args.tile, args.tile, device=device)
        with torch.no_grad(), precision_scope(cascade, device, precision):
            seconds = _time_calls(lambda i: cascade.sample(cond, settings, PositionalNoise(i, _origins(args, i))),
                                  calls, device)
        _emit(rows, {"throughput": precision, "device": device, "tile": args.tile, "batch": args.batch,
                     "megapixels": round(calls * args.batch * args.tile ** 2 / 1e6, 3), "seconds": round(seconds, 2),
                     "megapixels_per_second": round(calls * args.batch * args.tile ** 2 / 1e6 / seconds, 3)})
    return rows


def _default_cascade(device: str):
    from engine.bundle import default_bundle_path, load_bundle

    return load_bundle(default_bundle_path(), device=device)


def _origins(args, call: int):
    return [(call * args.tile, i * args.tile) for i in range(args.batch)]


def _time_calls(run: Callable[[int], object], calls: int, device: str) -> float:
    import torch

    run(0)  # warm-up: kernels chosen, memory pools filled
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for call in range(calls):
        run(call)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def precision(args) -> List[dict]:
    """``args.input`` at fp32 and at each other precision: max and mean absolute difference, and
    both relative to the mean absolute fp32 value."""
    import rasterio

    work = Path(tempfile.mkdtemp(prefix="scdm-precision-", dir=args.workdir))
    rows: List[dict] = []
    try:
        outputs: Dict[str, Path] = {}
        for choice in ["fp32"] + [p for p in args.precision.split(",") if p != "fp32"]:
            outputs[choice] = work / f"{choice}.tif"
            seconds = _timed_run(Path(args.input), outputs[choice], args.model, precision=choice,
                                 device=args.device)["seconds"]
            with rasterio.open(outputs["fp32"]) as full, rasterio.open(outputs[choice]) as mixed:
                reference, values = full.read(masked=True), mixed.read(masked=True)
            difference = np.abs(values.astype(np.float64) - reference)
            scale = float(np.abs(reference).mean())
            worst, mean = float(difference.max()), float(difference.mean())
            _emit(rows, {"precision": choice, "device": args.device, "seconds": seconds,
                         "max_abs_difference": worst, "mean_abs_difference": mean,
                         "max_relative": worst / scale, "mean_relative": mean / scale})
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_out", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="bundle folder (default: the bundled model)")
    parser.add_argument("--workdir", help="folder for the temporary rasters (default: the system temp)")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("scaling", help="in-process against local:N and sharded, on one synthetic raster")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--workers", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2])
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=scaling)
    p = sub.add_parser("writer", help="the single writer alone")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--bands", type=int, help="default: the model's")
    p.set_defaults(func=writer)
    p = sub.add_parser("throughput", help="the networks alone, per precision")
    p.add_argument("--megapixels", type=float, default=100.0)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32,bf16")
    p.set_defaults(func=throughput)
    p = sub.add_parser("precision", help="fp32 against mixed precision on one raster")
    p.add_argument("--input", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="bf16")
    p.set_defaults(func=precision)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rows = args.func(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
