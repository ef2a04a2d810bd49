"""Quality and time against tile size and overlap (``python -m benchmarks.tile_quality``).

Renders a scene's RGB through a camera response, writes it as a GeoTIFF, runs the raster pipeline
(``infer``, the bundle's default sampler) at several tile / overlap pairs and writes a Markdown table
of RMSE (all pixels and the pixels at least 8 from the border), MPSNR, SAM, tiles and seconds to
``--out``. Why it exists: a network trained on small crops is not size-invariant (GroupNorm and
attention statistics follow the input's extent), so the tile size is a quality setting, not only a
memory one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from benchmarks.data import HOUSTON_SCENE, NIKON_SRF
from engine.bundle import load_bundle
from engine.data import load_scene, scene_on_grid
from engine.evaluate import parse_rgb_spec, scene_rgb
from engine.metrics import all_metrics, kept_bands, rmse
from engine.raster.pipeline import infer_raster

DEFAULT_RUNS = "32:16,48:16,64:16,64:32,96:32,128:32,288:32"
INNER = 8  # border pixels left out of the inner RMSE


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3,
                       dtype="float32", crs="EPSG:32615", transform=rasterio.Affine(1, 0, 0, 0, -1, 0)) as ds:
        ds.write(rgb)


def measure(cascade, scene, rgb: np.ndarray, runs: str, seed: int) -> list:
    """(tile, overlap, tiles, RMSE, inner RMSE, MPSNR, SAM, seconds) per TILE:OVERLAP pair in ``runs``."""
    reference, covered = scene_on_grid(scene, cascade.config.wavelengths_nm, cascade.config.fwhm_nm)
    uncovered = tuple(int(i) for i in np.flatnonzero(~covered))
    kept = kept_bands(reference.shape[0], uncovered)
    inner = (slice(None), slice(INNER, -INNER), slice(INNER, -INNER))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "rgb.tif", Path(tmp) / "hsi.tif"
        _write_rgb(src, rgb)
        for item in runs.split(","):
            tile, overlap = (int(v) for v in item.split(":"))
            started = time.perf_counter()
            report = infer_raster(src, dst, model=cascade, tile=tile, overlap=overlap, seed=seed, device="cpu")
            seconds = time.perf_counter() - started
            with rasterio.open(dst) as ds:
                estimate = ds.read()
            metrics = all_metrics(reference, estimate, exclude_bands=uncovered, valid_mask=scene.valid)
            inner_rmse = rmse(reference[kept][inner], estimate[kept][inner], valid_mask=scene.valid[inner[1:]])
            rows.append((tile, overlap, report.tiles, metrics["rmse"], inner_rmse, metrics["mpsnr"], metrics["sam"],
                         seconds))
            print(f"tile {tile} overlap {overlap}: {report.tiles} tiles, RMSE {metrics['rmse']:.0f} "
                  f"(inner {inner_rmse:.0f}), {seconds:.1f} s", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tile_quality", description=__doc__)
    parser.add_argument("--model", default="resources/models/scdm-default")
    parser.add_argument("--scene", default=str(HOUSTON_SCENE))
    parser.add_argument("--rgb", default=f"srf:{NIKON_SRF}")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="comma-separated TILE:OVERLAP pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/tiling.md")
    args = parser.parse_args(argv)
    cascade = load_bundle(args.model)
    kind, value = parse_rgb_spec(args.rgb)
    scene = load_scene(args.scene)
    reference, _ = scene_on_grid(scene, cascade.config.wavelengths_nm, cascade.config.fwhm_nm)
    rgb = scene_rgb(scene, reference, kind, value).astype(np.float32)
    rows = measure(cascade, scene, rgb, args.runs, args.seed)
    settings = cascade.config.sampler
    lines = [
        f"# Quality against tile size ({cascade.config.name})",
        "",
        f"Produced by `{' '.join(['python -m benchmarks.tile_quality', *(argv if argv is not None else sys.argv[1:])])}` "
        f"on this machine's CPU: scene {scene.name} ({rgb.shape[2]} x {rgb.shape[1]} px), RGB {args.rgb}, the "
        f"bundle's sampler ({settings.name}, {settings.steps} steps), seed {args.seed}. Inner RMSE leaves out the "
        f"{INNER} px next to the border.",
        "",
        "| tile | overlap | tiles | RMSE | inner RMSE | MPSNR (dB) | SAM (rad) | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for tile, overlap, tiles, whole_rmse, inner_rmse, mpsnr, sam, seconds in rows:
        lines.append(f"| {tile} | {overlap} | {tiles} | {whole_rmse:.0f} | {inner_rmse:.0f} | {mpsnr:.2f} | {sam:.4f} | "
                     f"{seconds:.1f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"{out} written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
