"""Evaluation reports: metric tables, per-band PSNR and spectral-profile figures, raster evaluation.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, so no pyplot GUI
backend is ever selected (QGIS runs its own Qt event loop).
"""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.errors import InputError
from engine.metrics import Peak, all_metrics, kept_bands, per_band_psnr, per_band_ssim
from engine.raster.spectral_metadata import read_wavelengths


def _save(figure: Figure, path_png: str | Path) -> Path:
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=110)
    return path


def _broken_line(x: Sequence[float], y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert gaps where wavelengths step backwards, so overlapping detectors (EnMAP VNIR/SWIR) are
    drawn as separate lines instead of a zigzag."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    breaks = np.flatnonzero(np.diff(x) <= 0) + 1
    return np.insert(x, breaks, np.nan), np.insert(y, breaks, np.nan)


def plot_per_band_psnr(
    wavelengths_nm: Sequence[float],
    curves: Mapping[str, np.ndarray],
    path_png: str | Path,
    title: str = "Per-band PSNR",
    x_label: str = "Wavelength (nm)",
) -> Path:
    """Line plot of per-band PSNR (dB) for each method; NaN entries (excluded bands) leave gaps."""
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    for name, values in curves.items():
        axes.plot(*_broken_line(wavelengths_nm, values), marker="o", markersize=3, label=name)
    axes.set_xlabel(x_label)
    axes.set_ylabel("PSNR (dB)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return _save(figure, path_png)


def plot_spectral_profiles(
    wavelengths_nm: Sequence[float],
    reference: np.ndarray,
    estimates: Mapping[str, np.ndarray],
    pixels: Sequence[tuple[int, int]],
    path_png: str | Path,
    title: str = "Spectral profiles",
    x_label: str = "Wavelength (nm)",
) -> Path:
    """One panel per ``(row, col)`` pixel: the reference spectrum and each estimate's."""
    if not pixels:
        raise InputError("plot_spectral_profiles needs at least one (row, col) pixel")
    columns = min(len(pixels), 2)
    rows = -(-len(pixels) // columns)
    figure = Figure(figsize=(5 * columns, 3.2 * rows))
    for index, (row, col) in enumerate(pixels):
        axes = figure.add_subplot(rows, columns, index + 1)
        spectrum = _broken_line(wavelengths_nm, reference[:, row, col])
        axes.plot(*spectrum, color="black", linewidth=2, label="reference")
        for name, estimate in estimates.items():
            axes.plot(*_broken_line(wavelengths_nm, estimate[:, row, col]), linestyle="--", label=name)
        axes.set_title(f"pixel (row {row}, col {col})", fontsize=9)
        axes.set_xlabel(x_label)
        axes.grid(True, alpha=0.3)
        if index == 0:
            axes.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path_png)


def select_profile_pixels(
    reference: np.ndarray, count: int = 4, valid_mask: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """Pixels at evenly spread quantiles (10 % to 90 %) of mean reference brightness, deterministic."""
    brightness = np.asarray(reference, dtype=np.float64).mean(axis=0)
    valid = np.isfinite(brightness)
    if valid_mask is not None:
        valid &= np.asarray(valid_mask, dtype=bool)
    rows, cols = np.nonzero(valid)
    if rows.size == 0:
        raise InputError("no valid pixel to draw a spectral profile from")
    order = np.argsort(brightness[rows, cols], kind="stable")
    quantiles = np.linspace(0.1, 0.9, count) if count > 1 else np.array([0.5])
    picks = order[np.round(quantiles * (order.size - 1)).astype(int)]
    return [(int(rows[i]), int(cols[i])) for i in picks]


def _resolved_peak(reference: np.ndarray, kept: np.ndarray, valid: np.ndarray | None, peak: Peak) -> Peak:
    """The numeric cube peak all_metrics uses, so per-band values of excluded bands match it."""
    if peak != "cube":
        return peak
    values = reference[kept] if valid is None else reference[kept][:, valid]
    return float(values.max())


def write_report(
    reference: np.ndarray,
    estimate: np.ndarray,
    wavelengths_nm: Sequence[float] | None,
    out_path: str | Path,
    exclude_bands: Sequence[int] = (),
    title: str = "Spectral reconstruction evaluation",
    valid_mask: np.ndarray | None = None,
    method_name: str = "estimate",
    peak: Peak = "cube",
) -> dict[str, float]:
    """Compute the metrics and write an ``.html`` or ``.csv`` report plus two PNG figures beside it.

    The figures are ``<stem>_psnr.png`` and ``<stem>_profiles.png``. ``wavelengths_nm=None`` labels
    bands by number. Returns :func:`engine.metrics.all_metrics`'s dict.
    """
    out = Path(out_path)
    suffix = out.suffix.lower()
    if suffix not in (".html", ".htm", ".csv"):
        raise InputError(f"report path {out} must end in .html or .csv")
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    metrics = all_metrics(reference, estimate, exclude_bands, valid_mask, peak)

    band_count = reference.shape[0]
    if wavelengths_nm is None:
        x_values = np.arange(1, band_count + 1, dtype=np.float64)
        x_label = "Band"
    else:
        x_values = np.asarray(wavelengths_nm, dtype=np.float64)
        if x_values.shape != (band_count,):
            raise InputError(f"{x_values.size} wavelengths given for {band_count} bands")
        x_label = "Wavelength (nm)"

    valid = None if valid_mask is None else np.asarray(valid_mask, dtype=bool)
    kept = kept_bands(band_count, exclude_bands)
    excluded = np.ones(band_count, dtype=bool)
    excluded[kept] = False
    band_peak = _resolved_peak(reference, kept, valid, peak)
    ref_pixels = reference.reshape(band_count, -1) if valid is None else reference[:, valid]
    est_pixels = estimate.reshape(band_count, -1) if valid is None else estimate[:, valid]
    # Excluded bands may lack data (NaN); they get NaN per-band values instead of an error.
    finite = np.all(np.isfinite(ref_pixels) & np.isfinite(est_pixels), axis=1)
    psnr = np.full(band_count, np.nan)
    ssim = np.full(band_count, np.nan)
    psnr[finite] = per_band_psnr(reference[finite], estimate[finite], band_peak, valid)
    ssim[finite] = per_band_ssim(reference[finite], estimate[finite], band_peak, valid)
    diff = ref_pixels - est_pixels
    band_rmse = np.sqrt(np.mean(diff * diff, axis=1))

    out.parent.mkdir(parents=True, exist_ok=True)
    psnr_png = out.with_name(out.stem + "_psnr.png")
    profiles_png = out.with_name(out.stem + "_profiles.png")
    curve = {method_name: np.where(excluded, np.nan, psnr)}
    plot_per_band_psnr(x_values, curve, psnr_png, f"{title}: per-band PSNR", x_label)
    plot_spectral_profiles(
        x_values,
        reference,
        {method_name: estimate},
        select_profile_pixels(reference[kept], 4, valid),
        profiles_png,
        f"{title}: spectral profiles",
        x_label,
    )

    columns = (x_values, psnr, band_rmse, ssim, excluded)
    bands = list(zip(range(1, band_count + 1), *(column.tolist() for column in columns)))
    if suffix == ".csv":
        x_column = "wavelength_nm" if wavelengths_nm is not None else "band_number"
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["band", x_column, "psnr_db", "rmse", "ssim", "excluded"])
            for number, x, p, r, s, ex in bands:
                writer.writerow([number, f"{x:g}", f"{p:.4f}", f"{r:.6g}", f"{s:.5f}", int(ex)])
    else:
        out.write_text(
            _html(title, metrics, bands, x_label, psnr_png.name, profiles_png.name, kept, peak, valid),
            encoding="utf-8",
        )
    return metrics


def _html(
    title: str,
    metrics: Mapping[str, float],
    bands: Sequence[tuple[int, float, float, float, float, bool]],
    x_label: str,
    psnr_png: str,
    profiles_png: str,
    kept: np.ndarray,
    peak: Peak,
    valid: np.ndarray | None,
) -> str:
    esc = html.escape
    pixel_note = "all pixels" if valid is None else f"{int(valid.sum())} valid pixels (nodata excluded)"
    peak_note = {"cube": "maximum of the reference cube", "band": "maximum of each reference band"}.get(
        str(peak), f"{peak}"
    )
    summary = [
        ("RMSE", f"{metrics['rmse']:.6g}", "data units"),
        ("MPSNR", f"{metrics['mpsnr']:.3f}", f"dB, peak = {peak_note}"),
        ("MSSIM", f"{metrics['mssim']:.4f}", "Gaussian window 11 x 11, sigma 1.5"),
        ("SAM", f"{metrics['sam']:.5f}", f"rad ({np.degrees(metrics['sam']):.3f} degrees)"),
    ]
    excluded_class = ' class="excluded"'
    summary_rows = "\n".join(
        f"<tr><th>{name}</th><td>{value}</td><td>{esc(note)}</td></tr>" for name, value, note in summary
    )
    band_rows = "\n".join(
        f"<tr{excluded_class if ex else ''}><td>{number}</td><td>{x:g}</td><td>{p:.3f}</td>"
        f"<td>{r:.6g}</td><td>{s:.4f}</td><td>{'yes' if ex else ''}</td></tr>"
        for number, x, p, r, s, ex in bands
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #bbb; padding: 3px 8px; text-align: right; }}
tr.excluded {{ color: #888; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>Metrics over {len(kept)} bands and {esc(pixel_note)}; excluded bands are listed below but not averaged.</p>
<table>
<tr><th>metric</th><th>value</th><th>note</th></tr>
{summary_rows}
</table>
<img src="{esc(psnr_png)}" alt="per-band PSNR">
<img src="{esc(profiles_png)}" alt="spectral profiles">
<h2>Per band</h2>
<table>
<tr><th>band</th><th>{esc(x_label)}</th><th>PSNR (dB)</th><th>RMSE</th><th>SSIM</th><th>excluded</th></tr>
{band_rows}
</table>
</body></html>
"""


def _read_raster(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(cube (C, H, W) float64 with NaN where invalid, valid (C, H, W), wavelengths or None)."""
    # Imported here so the figure functions stay usable where rasterio is missing.
    import rasterio

    if not path.exists():
        raise InputError(f"raster {path} does not exist")
    with rasterio.open(path) as dataset:
        cube = dataset.read().astype(np.float64)
        # read_masks covers nodata values, NaN nodata and internal mask bands alike.
        valid = dataset.read_masks() > 0
        wavelengths = read_wavelengths(dataset)
    valid &= np.isfinite(cube)
    cube[~valid] = np.nan
    return cube, valid, wavelengths


def evaluate_rasters(
    reference_path: str | Path,
    estimate_path: str | Path,
    exclude_bands: Sequence[int] = (),
    report_path: str | Path | None = None,
) -> dict[str, float]:
    """Metrics of an estimated raster against a reference raster (pixel by pixel, band by band).

    Bands that are nodata everywhere in the reference (e.g. EnMAP's water-vapour bands) have no
    ground truth and are excluded like ``exclude_bands``. Of the remaining bands, a pixel counts only
    if it is valid (not nodata, finite) in every band of both rasters. Wavelengths come from the
    reference's metadata (else the estimate's, else band numbers). If ``report_path`` is given,
    :func:`write_report` writes an HTML or CSV report there.
    """
    reference_path = Path(reference_path)
    estimate_path = Path(estimate_path)
    reference, ref_valid, ref_wl = _read_raster(reference_path)
    estimate, est_valid, est_wl = _read_raster(estimate_path)
    if reference.shape != estimate.shape:
        raise InputError(
            f"reference {reference_path.name} has {reference.shape[0]} bands of "
            f"{reference.shape[1]} x {reference.shape[2]} pixels but estimate {estimate_path.name} has "
            f"{estimate.shape[0]} bands of {estimate.shape[1]} x {estimate.shape[2]}; compare an "
            "estimate made from this reference's own RGB, or crop/resample one raster to match the other"
        )
    if ref_wl is not None and est_wl is not None and reference.shape[0] > 1:
        tolerance = 0.5 * float(np.median(np.abs(np.diff(ref_wl))))
        worst = float(np.max(np.abs(ref_wl - est_wl)))
        if worst > tolerance:
            raise InputError(
                f"band wavelengths of {reference_path.name} and {estimate_path.name} differ by up to "
                f"{worst:.1f} nm, so band i is not the same band in both; resample the estimate onto "
                "the reference's wavelength grid first"
            )

    band_count = reference.shape[0]
    no_truth = ~ref_valid.any(axis=(1, 2))
    kept = np.array([b for b in kept_bands(band_count, exclude_bands) if not no_truth[b]], dtype=np.int64)
    if kept.size == 0:
        raise InputError(f"{reference_path.name} has no valid value in any band that is not excluded")
    empty_estimate = [int(b) + 1 for b in kept if not est_valid[b].any()]
    if empty_estimate:
        raise InputError(
            f"{estimate_path.name} is nodata everywhere in band(s) {empty_estimate} (1-based), which "
            f"{reference_path.name} has data for; exclude those bands or fix the estimate"
        )
    valid = np.all(ref_valid[kept] & est_valid[kept], axis=0)
    if not valid.any():
        raise InputError(
            f"{reference_path.name} and {estimate_path.name} share no pixel that is valid in every "
            "band of both; check their nodata values and that they cover the same area"
        )
    excluded = np.setdiff1d(np.arange(band_count), kept).tolist()
    mask = None if valid.all() else valid
    if report_path is None:
        return all_metrics(reference, estimate, excluded, mask)
    return write_report(
        reference,
        estimate,
        ref_wl if ref_wl is not None else est_wl,
        report_path,
        excluded,
        title=f"{estimate_path.name} vs {reference_path.name}",
        valid_mask=mask,
        method_name=estimate_path.stem,
    )
