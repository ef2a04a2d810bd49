"""A quicklook PNG of a hyperspectral GeoTIFF: a near-infrared false-colour composite (NIR, red,
green as R, G, B) and the spectra of a few pixels (``python -m engine.quicklook IN.tif OUT.png``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rasterio.enums import Resampling

from engine.report import read_wavelengths, select_profile_pixels

FALSE_COLOUR_NM = (860.0, 650.0, 550.0)


def _stretch(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    values = band[valid]
    if values.size == 0:
        return np.zeros_like(band)
    lo, hi = np.percentile(values, (2, 98))
    return np.clip((band - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def quicklook(path, out_png, max_size: int = 800, pixels: int = 5) -> Path:
    with rasterio.open(path) as ds:
        wavelengths = read_wavelengths(ds)
        if wavelengths is None:
            wavelengths = np.arange(1, ds.count + 1, dtype=float)
        scale = max(1.0, max(ds.width, ds.height) / max_size)
        shape = (ds.count, max(1, int(ds.height / scale)), max(1, int(ds.width / scale)))
        cube = ds.read(out_shape=shape, resampling=Resampling.average, masked=True).astype(np.float32)
    valid = ~np.ma.getmaskarray(cube).any(axis=0)
    data = np.ma.filled(cube, np.nan)
    bands = [int(np.argmin(np.abs(np.asarray(wavelengths) - nm))) for nm in FALSE_COLOUR_NM]
    composite = np.dstack([_stretch(data[b], valid) for b in bands])
    composite[~valid] = 1.0
    figure = Figure(figsize=(12, 5), dpi=100)
    FigureCanvasAgg(figure)
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    left.imshow(composite)
    left.set_title(f"False colour: {', '.join(f'{wavelengths[b]:.0f}' for b in bands)} nm as R, G, B")
    left.set_axis_off()
    chosen = select_profile_pixels(np.nan_to_num(data), pixels, valid)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for i, (row, col) in enumerate(chosen):
        colour = colours[i % len(colours)]
        left.plot(col, row, "o", markersize=8, markerfacecolor="none", markeredgecolor=colour, markeredgewidth=2)
        right.plot(wavelengths, data[:, row, col], color=colour, label=f"pixel ({row * scale:.0f}, {col * scale:.0f})")
    right.axvspan(700, max(wavelengths), color="0.9", zorder=0, label="near infrared (inferred)")
    right.set_xlabel("Wavelength (nm)")
    right.set_ylabel("Estimated value (input units)")
    right.set_title("Spectral profiles")
    right.legend(fontsize=8)
    figure.suptitle(Path(path).name)
    figure.tight_layout()
    out_png = Path(out_png)
    figure.savefig(out_png)
    return out_png


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.quicklook", description=__doc__)
    parser.add_argument("input")
    parser.add_argument("output")
    args = parser.parse_args(argv)
    print(quicklook(args.input, args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
