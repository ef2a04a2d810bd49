"""Evaluation reports: metric tables, per-band PSNR and spectral-profile figures, raster evaluation.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, so no pyplot GUI
backend is ever selected (QGIS runs its own Qt event loop).
"""

from __future__ import annotations

import csv
import html
from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

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


# ----------------------------------------------------------------------------------------------
# reports


@dataclass(frozen=True, eq=False)
class ReportOptions:
    """What a report states besides the numbers: its title, the estimate's name in the figures, the
    bands left out of the averages, the pixels counted (``valid_mask`` (H, W), None: all) and the
    PSNR peak (``engine.metrics``)."""

    title: str = "Spectral reconstruction evaluation"
    estimate_name: str = "estimate"
    exclude_bands: Tuple[int, ...] = ()
    valid_mask: Optional[np.ndarray] = None
    peak: Peak = "cube"


@dataclass(frozen=True, eq=False)
class BandTable:
    """The per-band part of a report: one entry per band of the reference."""

    x_values: np.ndarray  # wavelengths in nm, or band numbers when the rasters have none
    x_label: str
    psnr: np.ndarray  # NaN where a band has no data (only excluded bands may lack it)
    rmse: np.ndarray
    ssim: np.ndarray
    excluded: np.ndarray  # bool

    def rows(self) -> List[Tuple[int, float, float, float, float, bool]]:
        """(band number, x, PSNR, RMSE, SSIM, excluded) per band."""
        columns = (self.x_values, self.psnr, self.rmse, self.ssim, self.excluded)
        return list(zip(range(1, self.x_values.size + 1), *(column.tolist() for column in columns)))


def _resolved_peak(reference: np.ndarray, kept: np.ndarray, valid: np.ndarray | None, peak: Peak) -> Peak:
    """The numeric cube peak all_metrics uses, so per-band values of excluded bands match it."""
    if peak != "cube":
        return peak
    values = reference[kept] if valid is None else reference[kept][:, valid]
    return float(values.max())


def _band_axis(wavelengths_nm: Sequence[float] | None, band_count: int) -> Tuple[np.ndarray, str]:
    """The x values and label of per-band plots and tables: wavelengths, or band numbers without them."""
    if wavelengths_nm is None:
        return np.arange(1, band_count + 1, dtype=np.float64), "Band"
    x_values = np.asarray(wavelengths_nm, dtype=np.float64)
    if x_values.shape != (band_count,):
        raise InputError(f"{x_values.size} wavelengths given for {band_count} bands")
    return x_values, "Wavelength (nm)"


def band_table(reference: np.ndarray, estimate: np.ndarray, wavelengths_nm: Sequence[float] | None,
               options: ReportOptions) -> BandTable:
    """Per-band PSNR, RMSE and SSIM over the valid pixels, with the same peak as the summary."""
    band_count = reference.shape[0]
    x_values, x_label = _band_axis(wavelengths_nm, band_count)
    valid = None if options.valid_mask is None else np.asarray(options.valid_mask, dtype=bool)
    kept = kept_bands(band_count, options.exclude_bands)
    excluded = np.ones(band_count, dtype=bool)
    excluded[kept] = False
    band_peak = _resolved_peak(reference, kept, valid, options.peak)
    ref_pixels = reference.reshape(band_count, -1) if valid is None else reference[:, valid]
    est_pixels = estimate.reshape(band_count, -1) if valid is None else estimate[:, valid]
    # Excluded bands may lack data (NaN); they get NaN per-band values instead of an error.
    finite = np.all(np.isfinite(ref_pixels) & np.isfinite(est_pixels), axis=1)
    psnr = np.full(band_count, np.nan)
    ssim = np.full(band_count, np.nan)
    psnr[finite] = per_band_psnr(reference[finite], estimate[finite], band_peak, valid)
    ssim[finite] = per_band_ssim(reference[finite], estimate[finite], band_peak, valid)
    diff = ref_pixels - est_pixels
    return BandTable(x_values, x_label, psnr, np.sqrt(np.mean(diff * diff, axis=1)), ssim, excluded)


def _figure_paths(out: Path) -> Tuple[Path, Path]:
    """The per-band PSNR plot and the spectral-profile figure beside a report."""
    return out.with_name(out.stem + "_psnr.png"), out.with_name(out.stem + "_profiles.png")


def _write_figures(reference: np.ndarray, estimate: np.ndarray, table: BandTable, out: Path,
                   options: ReportOptions) -> None:
    psnr_png, profiles_png = _figure_paths(out)
    name = options.estimate_name
    curve = {name: np.where(table.excluded, np.nan, table.psnr)}
    plot_per_band_psnr(table.x_values, curve, psnr_png, f"{options.title}: per-band PSNR", table.x_label)
    kept = ~table.excluded
    pixels = select_profile_pixels(reference[kept], 4, options.valid_mask)
    plot_spectral_profiles(table.x_values, reference, {name: estimate}, pixels, profiles_png,
                           f"{options.title}: spectral profiles", table.x_label)


def _write_csv(out: Path, table: BandTable, has_wavelengths: bool) -> None:
    x_column = "wavelength_nm" if has_wavelengths else "band_number"
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["band", x_column, "psnr_db", "rmse", "ssim", "excluded"])
        for number, x, p, r, s, ex in table.rows():
            writer.writerow([number, f"{x:g}", f"{p:.4f}", f"{r:.6g}", f"{s:.5f}", int(ex)])


def write_report(reference: np.ndarray, estimate: np.ndarray, wavelengths_nm: Sequence[float] | None,
                 out_path: str | Path, options: ReportOptions = ReportOptions()) -> dict[str, float]:
    """Compute the metrics and write an ``.html`` or ``.csv`` report plus two PNG figures beside it.

    The figures are ``<stem>_psnr.png`` and ``<stem>_profiles.png``. ``wavelengths_nm=None`` labels
    bands by number. Returns :func:`engine.metrics.all_metrics`'s dict.
    """
    out = Path(out_path)
    if out.suffix.lower() not in (".html", ".htm", ".csv"):
        raise InputError(f"report path {out} must end in .html or .csv")
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    metrics = all_metrics(reference, estimate, options.exclude_bands, options.valid_mask, options.peak)
    table = band_table(reference, estimate, wavelengths_nm, options)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_figures(reference, estimate, table, out, options)
    if out.suffix.lower() == ".csv":
        _write_csv(out, table, wavelengths_nm is not None)
    else:
        figures = tuple(path.name for path in _figure_paths(out))
        out.write_text(_html(metrics, table, figures, options), encoding="utf-8")
    return metrics


# ----------------------------------------------------------------------------------------------
# the HTML page

_PEAK_NOTES = {"cube": "maximum of the reference cube", "band": "maximum of each reference band"}
_HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #bbb; padding: 3px 8px; text-align: right; }}
tr.excluded {{ color: #888; }}
</style></head><body>
<h1>{title}</h1>
<p>Metrics over {kept} bands and {pixels}; excluded bands are listed below but not averaged.</p>
<table>
<tr><th>metric</th><th>value</th><th>note</th></tr>
{summary_rows}
</table>
<img src="{psnr_png}" alt="per-band PSNR">
<img src="{profiles_png}" alt="spectral profiles">
<h2>Per band</h2>
<table>
<tr><th>band</th><th>{x_label}</th><th>PSNR (dB)</th><th>RMSE</th><th>SSIM</th><th>excluded</th></tr>
{band_rows}
</table>
</body></html>
"""


def _summary_rows(metrics: Mapping[str, float], peak: Peak) -> str:
    peak_note = _PEAK_NOTES.get(str(peak), f"{peak}")
    summary = (
        ("RMSE", f"{metrics['rmse']:.6g}", "data units"),
        ("MPSNR", f"{metrics['mpsnr']:.3f}", f"dB, peak = {peak_note}"),
        ("MSSIM", f"{metrics['mssim']:.4f}", "Gaussian window 11 x 11, sigma 1.5"),
        ("SAM", f"{metrics['sam']:.5f}", f"rad ({np.degrees(metrics['sam']):.3f} degrees)"),
    )
    return "\n".join(f"<tr><th>{name}</th><td>{value}</td><td>{html.escape(note)}</td></tr>"
                     for name, value, note in summary)


def _band_rows(table: BandTable) -> str:
    excluded_class = ' class="excluded"'
    return "\n".join(
        f"<tr{excluded_class if ex else ''}><td>{number}</td><td>{x:g}</td><td>{p:.3f}</td>"
        f"<td>{r:.6g}</td><td>{s:.4f}</td><td>{'yes' if ex else ''}</td></tr>"
        for number, x, p, r, s, ex in table.rows()
    )


def _html(metrics: Mapping[str, float], table: BandTable, figures: Tuple[str, str], options: ReportOptions) -> str:
    valid = options.valid_mask
    pixels = "all pixels" if valid is None else f"{int(np.count_nonzero(valid))} valid pixels (nodata excluded)"
    esc = html.escape
    return _HTML_PAGE.format(
        title=esc(options.title), kept=int(np.count_nonzero(~table.excluded)), pixels=esc(pixels),
        summary_rows=_summary_rows(metrics, options.peak), psnr_png=esc(figures[0]), profiles_png=esc(figures[1]),
        x_label=esc(table.x_label), band_rows=_band_rows(table),
    )


# ----------------------------------------------------------------------------------------------
# rasters


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


@dataclass(frozen=True, eq=False)
class _Raster:
    path: Path
    cube: np.ndarray  # (C, H, W) float64, NaN where invalid
    valid: np.ndarray  # (C, H, W) bool
    wavelengths: Optional[np.ndarray]

    @classmethod
    def read(cls, path) -> "_Raster":
        return cls(Path(path), *_read_raster(Path(path)))


def _check_same_grid(reference: _Raster, estimate: _Raster) -> None:
    """Refuse rasters whose size, band count or band wavelengths differ."""
    if reference.cube.shape != estimate.cube.shape:
        (rb, rh, rw), (eb, eh, ew) = reference.cube.shape, estimate.cube.shape
        raise InputError(
            f"reference {reference.path.name} has {rb} bands of {rh} x {rw} pixels but estimate "
            f"{estimate.path.name} has {eb} bands of {eh} x {ew}; compare an estimate made from this reference's "
            "own RGB, or crop/resample one raster to match the other")
    if reference.wavelengths is None or estimate.wavelengths is None or reference.cube.shape[0] < 2:
        return
    tolerance = 0.5 * float(np.median(np.abs(np.diff(reference.wavelengths))))
    worst = float(np.max(np.abs(reference.wavelengths - estimate.wavelengths)))
    if worst > tolerance:
        raise InputError(
            f"band wavelengths of {reference.path.name} and {estimate.path.name} differ by up to {worst:.1f} nm, "
            "so band i is not the same band in both; resample the estimate onto the reference's wavelength grid first")


def _compared_bands(reference: _Raster, estimate: _Raster, exclude_bands: Sequence[int]) -> np.ndarray:
    """The bands not excluded that have ground truth (0-based); refuses an estimate empty in one."""
    no_truth = ~reference.valid.any(axis=(1, 2))
    kept = np.array([b for b in kept_bands(no_truth.size, exclude_bands) if not no_truth[b]], dtype=np.int64)
    if kept.size == 0:
        raise InputError(f"{reference.path.name} has no valid value in any band that is not excluded")
    empty_estimate = [int(b) + 1 for b in kept if not estimate.valid[b].any()]
    if empty_estimate:
        raise InputError(
            f"{estimate.path.name} is nodata everywhere in band(s) {empty_estimate} (1-based), which "
            f"{reference.path.name} has data for; exclude those bands or fix the estimate")
    return kept


def _compared_pixels(reference: _Raster, estimate: _Raster, kept: np.ndarray) -> Optional[np.ndarray]:
    """The pixels valid in every compared band of both rasters (None: all of them)."""
    valid = np.all(reference.valid[kept] & estimate.valid[kept], axis=0)
    if not valid.any():
        raise InputError(
            f"{reference.path.name} and {estimate.path.name} share no pixel that is valid in every band of both; "
            "check their nodata values and that they cover the same area")
    return None if valid.all() else valid


def evaluate_rasters(
    reference_path: str | Path,
    estimate_path: str | Path,
    exclude_bands: Sequence[int] = (),
    report_path: str | Path | None = None,
    title: Optional[str] = None,
    estimate_name: Optional[str] = None,
) -> dict[str, float]:
    """Metrics of an estimated raster against a reference raster (pixel by pixel, band by band).

    Bands that are nodata everywhere in the reference (e.g. EnMAP's water-vapour bands) have no
    ground truth and are excluded like ``exclude_bands``. Of the remaining bands, a pixel counts only
    if it is valid (not nodata, finite) in every band of both rasters. Wavelengths come from the
    reference's metadata (else the estimate's, else band numbers). If ``report_path`` is given,
    :func:`write_report` writes an HTML or CSV report there, titled ``title`` (default
    "<estimate file> vs <reference file>"), with the estimate called ``estimate_name`` (default: its
    file name without extension) in the figures.
    """
    reference, estimate = _Raster.read(reference_path), _Raster.read(estimate_path)
    _check_same_grid(reference, estimate)
    kept = _compared_bands(reference, estimate, exclude_bands)
    excluded = tuple(np.setdiff1d(np.arange(reference.cube.shape[0]), kept).tolist())
    mask = _compared_pixels(reference, estimate, kept)
    if report_path is None:
        return all_metrics(reference.cube, estimate.cube, excluded, mask)
    options = ReportOptions(title=title or f"{estimate.path.name} vs {reference.path.name}",
                            estimate_name=estimate_name or estimate.path.stem, exclude_bands=excluded,
                            valid_mask=mask)
    wavelengths = reference.wavelengths if reference.wavelengths is not None else estimate.wavelengths
    return write_report(reference.cube, estimate.cube, wavelengths, report_path, options)
