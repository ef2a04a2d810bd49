"""Sentinel-2 bands from the demo image, and their NDVI against the NDVI of its real near-infrared band.

``python -m benchmarks.sensor_bands --out docs/band-sets``

Runs the product (``engine.raster.infer_raster`` with ``band_set="sentinel2"``, default settings
otherwise) on rgbn.tif, an 8-bit RGB orthophoto whose band 4 is a real near-infrared band, for the
bundled model and the previous bundle (benchmarks/models/scdm-v1); writes the output's band list and
the correlation of NDVI = (B8 - B4) / (B8 + B4) with the real NDVI = (NIR - red) / (NIR + red), both
real bands decoded as the product decodes 8-bit input (sRGB; the orthophoto's bands are stretched
one by one, so only the pattern of its NDVI compares, not its values), to ``README.md`` and ``results.json``,
and the two NDVI maps side by side to ``ndvi.png``.
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

from benchmarks.generalisation import PREVIOUS, RGBN
from engine.bundle import default_bundle_path
from engine.radiometry import Radiometry, linearise, resolve
from engine.raster import infer_raster

REPO = Path(__file__).resolve().parents[1]


def real_red_and_nir(path: Path):
    """rgbn.tif's red and near-infrared bands decoded as the product decodes 8-bit input."""
    with rasterio.open(path) as dataset:
        codes = dataset.read([1, 4]).astype(np.float32)
    return linearise(codes, resolve(Radiometry.AUTO, "uint8"), "uint8")


def ndvi(nir: np.ndarray, red: np.ndarray) -> np.ndarray:
    return (nir - red) / np.maximum(nir + red, 1e-6)


def sentinel2_run(bundle: Path, rgbn: Path, out: Path) -> dict:
    started = time.time()
    infer_raster(str(rgbn), str(out), model=str(bundle), band_set="sentinel2")
    seconds = time.time() - started
    with rasterio.open(out) as dataset:
        bands = {description.split()[0]: dataset.read(i + 1) for i, description in enumerate(dataset.descriptions)}
        listing = [{"band": d.rsplit(" (", 1)[0], "wavelength_nm": float(dataset.tags(i + 1)["wavelength"]),
                    "fwhm_nm": float(dataset.tags(i + 1)["fwhm"])} for i, d in enumerate(dataset.descriptions)]
    return {"bands": bands, "listing": listing, "seconds": seconds}


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def picture(real: np.ndarray, estimates: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("NDVI from the real NIR band", real)] + [(f"NDVI from {name} (Sentinel-2 B8, B4)", image)
                                                        for name, image in estimates.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6))
    for axis, (title, image) in zip(axes, panels):
        # Each panel stretched over its own 2-98 % range: the orthophoto's bands are stretched per band, so
        # its NDVI has another offset and scale than a reflectance NDVI; the pattern is what compares.
        low, high = np.percentile(image, (2, 98))
        shown = axis.imshow(image, cmap="RdYlGn", vmin=low, vmax=high)
        axis.set_title(f"{title}\n(colours: {low:.2f} to {high:.2f})", fontsize=10)
        axis.axis("off")
        fig.colorbar(shown, ax=axis, shrink=0.7)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "band-sets")
    parser.add_argument("--rgbn", type=Path, default=RGBN, help="RGB + NIR GeoTIFF (default: the demo's, "
                        "fetched by scripts/demo.sh)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "band-sets")
    args = parser.parse_args(argv)
    if not args.rgbn.exists():
        sys.exit(f"{args.rgbn} not found: run scripts/demo.sh first (it fetches rgbn.tif) or give --rgbn")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    red, nir = real_red_and_nir(args.rgbn)
    real = ndvi(nir, red)
    rows, maps, listing = [], {}, None
    for name, bundle in (("the bundled model", default_bundle_path()), ("the previous bundle", PREVIOUS)):
        run = sentinel2_run(bundle, args.rgbn, args.work / f"{bundle.name}-sentinel2.tif")
        estimate = ndvi(run["bands"]["B8"], run["bands"]["B4"])
        maps[name] = estimate
        listing = listing or run["listing"]
        rows.append({"model": name, "bundle": str(bundle.relative_to(REPO)), "ndvi_r": correlation(estimate, real),
                     "seconds": round(run["seconds"], 1)})
        print(json.dumps(rows[-1]), flush=True)
    picture(real, maps, args.out / "ndvi.png")
    command = "python -m benchmarks.sensor_bands " + " ".join(sys.argv[1:] if argv is None else argv)
    (args.out / "results.json").write_text(json.dumps({"command": command.strip(), "bands": listing, "rows": rows},
                                                      indent=1))
    write_readme(args.out, command.strip(), listing, rows)


def write_readme(out: Path, command: str, listing: list, rows: list) -> None:
    lines = ["# Sentinel-2 bands from an RGB orthophoto", "",
             f"Produced by `{command}` on this machine's CPU: the demo image (rgbn.tif, 515 x 403 px, 8-bit RGB "
             "with a real near-infrared band 4) through the product with `band_set=\"sentinel2\"` (CLI "
             "`--band-set sentinel2`, QGIS *Output bands* = sentinel2).", "",
             "| band | centre (nm) | FWHM (nm) |", "|---|---|---|"]
    lines += [f"| {b['band']} | {b['wavelength_nm']:.1f} | {b['fwhm_nm']:.0f} |" for b in listing]
    lines += ["", "B10-B12 (cirrus, SWIR) lie beyond the model's 374-1046 nm and are left out.", "",
              "NDVI = (B8 - B4) / (B8 + B4) of the output against the real NDVI = (NIR - red) / (NIR + red) of "
              "rgbn.tif (both bands decoded from 8-bit sRGB, as the product decodes the RGB):", "",
              "| model | Pearson r with the real NDVI | run time (s) |", "|---|---|---|"]
    lines += [f"| {r['model']} (`{r['bundle']}`) | {r['ndvi_r']:.3f} | {r['seconds']:.1f} |" for r in rows]
    lines += ["", "![NDVI maps](ndvi.png)", ""]
    (out / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
