"""Output size and write time by data type, compression and overviews, on real model outputs.

``python -m benchmarks.output_storage --out docs/output-storage``

Two outputs of the bundled model are made by the product (``engine.raster.infer_raster``): the demo
image (rgbn.tif, 515 x 403 px) and a 4096 x 4096 px image made by mirror-tiling it (``--large``;
about 8 min on this machine's CPU). Each is then written again through the product's GeoTIFF writer
(``engine.raster.formats.geotiff``: 256 x 256 blocks, written as the pipeline writes them): the demo
output for every data type of ``engine.raster.formats.encoding`` and each compression, with and
without overviews; the large one (3.2 GB as float32) for ``LARGE_CASES``. File size (against float32
uncompressed) and seconds to write. The table and ``results.json`` go to
``--out``; the compression the writer uses (``geotiff.COMPRESSION``) is the one this measures best.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import rasterio

from benchmarks.generalisation import RGBN
from engine.raster import infer_raster
from engine.raster.formats.base import OutputSpec
from engine.raster.formats.encoding import bright_level, output_encoding
from engine.raster.formats.geotiff import COMPRESSION, OVERVIEWS_FROM, GeoTIFFFile, open_geotiff
from engine.raster.io import BLOCK_SIZE, Georeference
from engine.raster.spectral_metadata import read_wavelengths
from engine.settings import OUTPUT_TYPES

REPO = Path(__file__).resolve().parents[1]
COMPRESSIONS = ("deflate", "zstd", "lzw")
# (type, compression, overviews) written for the large image: each compression of float32, each type
# with the writer's compression, and the overviews' cost.
LARGE_CASES = (("float32", "deflate", False), ("float32", "zstd", False), ("float32", "lzw", False),
               ("float32", "deflate", True), ("float16", "deflate", False), ("uint16", "deflate", False),
               ("int16", "deflate", False))


def mirror_tiled(source: Path, target: Path, size: int) -> Path:
    """``source`` repeated with alternate mirroring to ``size`` x ``size`` px (no seams), georeferenced
    with its pixel size."""
    with rasterio.open(source) as dataset:
        data, profile = dataset.read(), dataset.profile
    rows = np.concatenate([data[:, ::(-1) ** i] for i in range(-(-size // data.shape[1]))], axis=1)[:, :size]
    tiled = np.concatenate([rows[:, :, ::(-1) ** i] for i in range(-(-size // data.shape[2]))], axis=2)[:, :, :size]
    profile.update(width=size, height=size, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    with rasterio.open(target, "w", **profile) as dataset:
        dataset.write(tiled)
    return target


def model_output(rgbn: Path, work: Path, name: str) -> Path:
    out = work / f"{name}-output.tif"
    if not out.exists():
        started = time.time()
        infer_raster(str(rgbn), str(out), bands=(1, 2, 3), overviews=False)
        print(f"{name}: inference {time.time() - started:.0f} s", flush=True)
    return out


def write_once(cube: np.ndarray, spec: OutputSpec, path: Path, compression: str) -> float:
    """Seconds to write ``cube`` block by block (as the pipeline does) and close the file."""
    started = time.time()
    sink = GeoTIFFFile(open_geotiff(path, spec, compression), spec.encoding, spec.overviews)
    for row in range(0, cube.shape[1], BLOCK_SIZE):
        for col in range(0, cube.shape[2], BLOCK_SIZE):
            sink.write_block(np.ascontiguousarray(cube[:, row:row + BLOCK_SIZE, col:col + BLOCK_SIZE]), row, col)
    sink.close()
    return time.time() - started


def all_cases():
    return [(t, c, o) for t in OUTPUT_TYPES for c in COMPRESSIONS for o in (False, True)]


def measure(output: Path, rgb_level: float, work: Path, label: str, cases) -> list:
    with rasterio.open(output) as dataset:
        cube = dataset.read()
        wavelengths = tuple(float(w) for w in read_wavelengths(dataset))
        georeference = Georeference(dataset.crs, dataset.transform, (None, None))
    raw = cube.size * 4
    rows = []
    for output_type, compression, overviews in cases:
        spec = OutputSpec(width=cube.shape[2], height=cube.shape[1], band_count=cube.shape[0], nodata=None,
                          georeference=georeference, wavelengths_nm=wavelengths, fwhm_nm=None, tags={},
                          encoding=output_encoding(output_type, rgb_level), overviews=overviews)
        path = work / f"{label}-{output_type}-{compression}-{int(overviews)}.tif"
        seconds = write_once(cube, spec, path, compression)
        rows.append({"image": label, "type": output_type, "compression": compression, "overviews": overviews,
                     "mb": round(path.stat().st_size / 1e6, 2), "of_raw": round(path.stat().st_size / raw, 3),
                     "seconds": round(seconds, 2)})
        path.unlink()
        print(json.dumps(rows[-1]), flush=True)
    return rows


def input_level(path: Path) -> float:
    """The bright level the pipeline derives from an 8-bit sRGB input (decoded as auto radiometry does)."""
    from engine.radiometry import Radiometry, linearise, resolve

    with rasterio.open(path) as dataset:
        codes = dataset.read([1, 2, 3]).astype(np.float32)
    rgb = linearise(codes, resolve(Radiometry.AUTO, "uint8"), "uint8")
    return bright_level(rgb, np.ones(rgb.shape[1:], bool))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "output-storage")
    parser.add_argument("--rgbn", type=Path, default=RGBN)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "output-storage")
    parser.add_argument("--large", type=int, default=4096, help="side of the large image (0: demo image only)")
    args = parser.parse_args(argv)
    if not args.rgbn.exists():
        sys.exit(f"{args.rgbn} not found: run scripts/demo.sh first (it fetches rgbn.tif) or give --rgbn")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    level = input_level(args.rgbn)
    images = [("demo", args.rgbn, all_cases())]
    if args.large:
        images.append((f"{args.large}x{args.large}",
                       mirror_tiled(args.rgbn, args.work / f"rgb{args.large}.tif", args.large), LARGE_CASES))
    rows = []
    for label, rgb, cases in images:
        rows += measure(model_output(rgb, args.work, label), level, args.work, label, cases)
    command = ("python -m benchmarks.output_storage " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    (args.out / "results.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    write_table(args.out, command, rows)


def write_table(out: Path, command: str, rows: list) -> None:
    lines = ["# Output storage: data type, compression, overviews", "",
             f"Produced by `{command}` on this machine (2 CPU cores): the bundled model's 48-band output of the "
             "demo image and of a mirror-tiled 4096 x 4096 px version, written again through the product's GeoTIFF "
             "writer. *of raw*: file size over 48 bands x pixels x 4 bytes. The writer compresses with "
             f"`{COMPRESSION}` (`engine/raster/formats/geotiff.py`). Overviews are built only for outputs over "
             f"{OVERVIEWS_FROM} px a side, so the demo's rows with and without them are the same file.", "",
             "| image | type | compression | overviews | size (MB) | of raw | write (s) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['image']} | {r['type']} | {r['compression']} | {'yes' if r['overviews'] else 'no'} | {r['mb']} | "
              f"{r['of_raw']} | {r['seconds']} |" for r in rows]
    (out / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
