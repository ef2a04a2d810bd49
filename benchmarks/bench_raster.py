"""Big-raster benchmark of the streaming pipeline: peak resident memory and throughput.

    python -m benchmarks.bench_raster --size 16384 --tile 512
    python -m benchmarks.bench_raster --size 4096 --size 16384 --tile 512   # memory does not grow with size

For each size it writes (in a temporary folder, in windows, compressed) a synthetic uint16 RGB
GeoTIFF, then runs ``infer_raster`` on it in a fresh child process with a tiny random-weight 48-band
cascade and a one-network-pass sampler (DDIM, 1 step, guidance 0, no truncation) on the chosen
device, and reports the child's peak resident set size (``ru_maxrss``), its resident size before
inference began (Python + torch + model), the run time and megapixels per second. The input is made
by another child, so its buffers never count. Outputs are deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])  # the repository: the child processes run from it


def tiny_cascade(seed: int = 0):
    """A 48-band cascade (12 stage-1 bands) with small random weights.

    Five levels put the bottleneck's attention at 1/16 resolution (1024 positions for a 512 tile),
    as the paper's network does; attention at full or half resolution would need gigabytes per tile.
    """
    import torch

    from engine.cascade import Cascade, make_config
    from engine.config import Normalisation, SamplerConfig, UNetConfig, houston_grid

    torch.manual_seed(seed)
    unet = UNetConfig(base_channels=8, channel_multipliers=(1, 1, 2, 2, 2), encoder_res_blocks=1,
                      decoder_res_blocks=2, attention_downsample=(16,), attention_heads=2)
    config = make_config("bench-tiny", houston_grid(), unet=unet,
                         normalisation=Normalisation(kind="rgb_percentile", percentile=99.0, target=1.0),
                         sampler=SamplerConfig(name="ddim", steps=1, guidance=0.0, pdt_stage1=None, pdt_stage2=None))
    cascade = Cascade(config)
    for stage in (1, 2):
        torch.nn.init.normal_(cascade.model(stage).out[-1].weight, std=0.05)
    return cascade


def make_input(path: str, size: int, height: int = None, rows_per_write: int = 256) -> None:
    """A synthetic uint16 RGB GeoTIFF, ``size`` wide and ``height`` (default ``size``) tall, written
    window by window (memory ~ one window)."""
    height = size if height is None else height
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=size, height=height, count=3, dtype="uint16", crs="EPSG:32633",
                   transform=from_origin(300000.0, 5800000.0, 1.0, 1.0), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate", predictor=2, bigtiff="IF_SAFER", nodata=0)
    cols = np.arange(size, dtype=np.float32)[None, :]
    with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(path, "w", **profile) as dst:
        for r in range(0, height, rows_per_write):
            h = min(rows_per_write, height - r)
            rows = np.arange(r, r + h, dtype=np.float32)[:, None]
            base = 2000 + 900 * np.sin(cols / 211.0) * np.cos(rows / 173.0)
            texture = 300 * np.sin((cols + 2 * rows) / 23.0)
            data = np.stack([base + texture, 0.8 * base + 0.5 * texture + 200, 0.6 * base - 0.3 * texture + 400])
            dst.write(np.clip(data, 1, 65535).astype(np.uint16), window=Window(0, r, size, h))


def run_child(input_path: str, output_path: str, tile: int, overlap: int, batch: int, device: str) -> dict:
    import torch

    from engine.raster.pipeline import infer_raster

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cascade = tiny_cascade()
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    last = [0.0]

    def progress(fraction, message):
        now = time.perf_counter()
        if now - last[0] > 30 or fraction >= 1.0:
            last[0] = now
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"  {100 * fraction:5.1f}% {message}  {now - started:7.1f} s  peak RSS {rss:.0f} MB",
                  file=sys.stderr, flush=True)

    report = infer_raster(input_path, output_path, model=cascade, tile=tile, overlap=overlap,
                          sampler="ddim", steps=1, guidance=0.0, pdt=("off", "off"), seed=0,
                          device=device, batch=batch, progress=progress)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "width": report.width, "height": report.height, "tiles": report.tiles, "tile": tile, "overlap": overlap, "batch": report.batch,
        "device": report.device, "bands": report.bands, "seconds": round(seconds, 2),
        "megapixels_per_second": round(report.width * report.height / 1e6 / seconds, 4),
        "seconds_per_tile": round(seconds / max(1, report.tiles_run), 3),
        "peak_rss_mb": round(peak_kb / 1024, 1), "rss_before_inference_mb": round(before_kb / 1024, 1),
        "output_gb": round(os.path.getsize(output_path) / 1e9, 3),
        "network_passes": report.network_passes, "peak_open_cell_mb": round(report.extra["peak_open_cell_bytes"] / 2**20, 1),
        "peak_block_buffer_mb": round(report.extra["peak_block_bytes"] / 2**20, 1),
        "blocks_spilled": report.extra["blocks_spilled"],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_raster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, action="append", help="raster side in pixels (repeatable; default 4096 and 16384)")
    parser.add_argument("--height", type=int, default=None,
                        help="raster height (default: the size); memory depends on the width, so a full-width "
                             "strip shows a big raster's peak in a fraction of its time")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", default=None, help="folder for the temporary rasters (default: the system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the rasters")
    parser.add_argument("--limit-mb", type=float, default=1536.0, help="peak RSS bound to check (MB)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--child", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--make-input", nargs=3, metavar=("PATH", "WIDTH", "HEIGHT"), help=argparse.SUPPRESS)
    return parser


def bench_size(size: int, work: Path, args, env: dict) -> dict:
    """One size: its input made by one child process, the inference measured in another."""
    height = args.height or size
    src, out = work / f"rgb_{size}x{height}.tif", work / f"hsi_{size}x{height}.tif"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmarks.bench_raster", "--make-input", str(src), str(size),
                    str(height)], check=True, env=env, cwd=ROOT)
    print(f"[{size}] input written in {time.perf_counter() - t0:.1f} s ({src.stat().st_size / 1e6:.0f} MB)", flush=True)
    child = subprocess.run([sys.executable, "-m", "benchmarks.bench_raster", "--child", str(src), str(out),
                            "--tile", str(args.tile), "--overlap", str(args.overlap),
                            "--batch", str(args.batch), "--device", args.device],
                           check=True, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    # (the child's progress lines go to stderr, straight through)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["within_limit"] = result["peak_rss_mb"] < args.limit_mb
    print(f"[{size}] {size} x {height} px, {result['tiles']} tiles of {args.tile}, {result['bands']} bands, "
          f"device {result['device']}: {result['seconds']} s, {result['megapixels_per_second']} MPix/s, "
          f"peak RSS {result['peak_rss_mb']} MB (before inference {result['rss_before_inference_mb']} MB), "
          f"output {result['output_gb']} GB", flush=True)
    if not args.keep:
        src.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    return result


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.make_input:
        make_input(args.make_input[0], int(args.make_input[1]), int(args.make_input[2]))
        return 0
    if args.child:
        print(json.dumps(run_child(args.child[0], args.child[1], args.tile, args.overlap, args.batch, args.device)))
        return 0
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    work = Path(tempfile.mkdtemp(prefix="scdm-bench-", dir=args.workdir))
    try:
        results = [bench_size(size, work, args, env) for size in args.size or [4096, 16384]]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["within_limit"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
