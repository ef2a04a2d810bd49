"""Output band sets: the model's own band grid, or the bands of a sensor simulated from it.

A sensor band's value is its spectral response's weighted mean of the spectrum. The spectrum between
the model's band centres is taken as linear (a hat function around each centre), so a sensor band is
a fixed linear combination of the model's bands: row i of ``BandSet.matrix`` holds, for each model
band j, the share of band i's response area that band j's hat function covers. Rows sum to one, a
flat spectrum stays flat, and a spectrum linear in wavelength gives its value at the band's response
centroid (``tests/test_band_sets.py`` checks both).

Response tables (``resources/srf/*.csv``, made from the sensors' published responses by
``scripts/make_band_set_tables.py``; a user's own table has the same form): comment lines, then a
header line (``# wavelength_nm,B2,B3,...``, the ``#`` optional) right before the numeric rows: the
wavelength in nm, then one column per band named by the band. Sensor bands that reach beyond
the model's grid (Sentinel-2 B10-B12, Landsat SWIR) are left out and named in ``BandSet.left_out``.

This module imports only numpy and the engine's error type: settings validation and the QGIS plugin
use it before torch is loaded.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError

MODEL_GRID = "model"
TABLES = Path(__file__).resolve().parent.parent / "resources" / "srf"
# Named band sets: choice -> (table file in resources/srf, what the sensor is called)
SENSORS: Dict[str, Tuple[str, str]] = {
    "sentinel2": ("sentinel2a_msi.csv", "Sentinel-2A MSI"),
    "landsat8-9": ("landsat_oli.csv", "Landsat 8/9 OLI"),
}
INSIDE_SHARE = 0.99  # a sensor band is produced when this share of its response lies on the model's grid


@dataclass(frozen=True)
class ResponseTable:
    """Sensor band responses sampled on one wavelength grid: ``curves`` (bands, wavelengths)."""

    source: str
    band_names: Tuple[str, ...]
    wavelengths_nm: np.ndarray
    curves: np.ndarray


@dataclass(frozen=True)
class BandSet:
    """The bands an output holds instead of the model's grid (see the module docstring)."""

    name: str
    band_names: Tuple[str, ...]
    wavelengths_nm: Tuple[float, ...]  # response centroids
    fwhm_nm: Tuple[float, ...]  # widths at half the response's maximum
    matrix: Tuple[Tuple[float, ...], ...]  # (sensor bands, model bands)
    left_out: Tuple[str, ...] = ()

    def apply(self, spectra: np.ndarray) -> np.ndarray:
        """(model bands, ...) -> (sensor bands, ...) float32."""
        weights = np.asarray(self.matrix, dtype=np.float32)
        return np.tensordot(weights, np.asarray(spectra, dtype=np.float32), axes=1)


def read_csv_rows(path) -> Tuple[Optional[List[str]], List[List[str]]]:
    """(header, rows) of a table CSV: stripped fields; the last non-numeric line before the first
    numeric one is the header (``#`` removed), earlier ones are comments; blank lines skipped. Also
    reads the camera responses of ``engine.spectral.load_srf_csv``."""
    header, rows = None, []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        for fields in csv.reader(handle):
            fields = [field.strip() for field in fields]
            if not any(fields):
                continue
            if rows or _is_number(fields[0]):
                rows.append(fields)
            else:
                header = [field.lstrip("#").strip() for field in fields]
    return header, rows


def read_response_table(path) -> ResponseTable:
    """A response CSV: header ``wavelength_nm,<band>,<band>...`` (``#`` allowed before it), numeric rows."""
    path = Path(path)
    try:
        header, rows = read_csv_rows(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the response table {path}: {exc}", parameter="band_set") from None
    problem = _table_problem(header, rows)
    if problem:
        raise InputError(f"{path} is not a response table ({problem}): give a CSV with a header "
                         "'wavelength_nm,<band name>,...' and one row per wavelength in nm", parameter="band_set")
    values = np.array(rows, dtype=np.float64)
    order = np.argsort(values[:, 0])
    return ResponseTable(str(path), tuple(header[1:]), values[order, 0], values[order, 1:].T)


def _table_problem(header, rows) -> Optional[str]:
    if header is None or len(header) < 2:
        return "no header naming a wavelength column and at least one band"
    if not rows:
        return "no numeric rows"
    if any(len(row) != len(header) for row in rows):
        return f"rows do not all have the header's {len(header)} columns"
    if not all(_is_number(value) for row in rows for value in row):
        return "a value is not a number"
    values = np.array(rows, dtype=np.float64)
    if not np.isfinite(values).all() or (values[:, 1:] < 0).any():
        return "responses must be finite and not negative"
    if (values[:, 1:].max(axis=0) <= 0).any():
        return "a band's response is zero everywhere"
    if len(np.unique(values[:, 0])) != len(values):
        return "a wavelength appears twice"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def hat_weights(table: ResponseTable, model_wavelengths_nm: Sequence[float], step_nm: float = 0.5) -> np.ndarray:
    """(sensor bands, model bands): each band's response integrated against each model band's hat
    function (1 at its centre, 0 at the neighbouring centres), over the response's total area
    (trapezoidal rule on the table's wavelengths and a ``step_nm`` grid together)."""
    centres = np.asarray(model_wavelengths_nm, dtype=np.float64)
    grid = np.union1d(table.wavelengths_nm, np.arange(table.wavelengths_nm[0], table.wavelengths_nm[-1], step_nm))
    curves = np.array([np.interp(grid, table.wavelengths_nm, c, left=0.0, right=0.0) for c in table.curves])
    hats = np.array([np.interp(grid, centres, np.eye(len(centres))[j], left=0.0, right=0.0)
                     for j in range(len(centres))])
    widths = np.gradient(grid) if len(grid) > 1 else np.ones(1)  # trapezoid weights (half at both ends)
    widths[[0, -1]] *= 0.5 if len(grid) > 1 else 1.0
    areas = curves @ widths
    return (curves * widths) @ hats.T / np.maximum(areas, 1e-300)[:, None]


def _centroid_and_fwhm(table: ResponseTable, band: int) -> Tuple[float, float]:
    wavelengths, curve = table.wavelengths_nm, table.curves[band]
    centroid = float(np.sum(wavelengths * curve) / np.sum(curve))
    above = wavelengths[curve >= 0.5 * curve.max()]
    spacing = float(np.median(np.diff(wavelengths))) if len(wavelengths) > 1 else 1.0
    return centroid, float(above[-1] - above[0] + spacing)


def band_set_from_table(name: str, table: ResponseTable, model_wavelengths_nm: Sequence[float]) -> BandSet:
    """The table's bands that lie on the model's grid, as a ``BandSet``."""
    weights = hat_weights(table, model_wavelengths_nm)
    inside = weights.sum(axis=1) >= INSIDE_SHARE
    if not inside.any():
        low, high = float(model_wavelengths_nm[0]), float(model_wavelengths_nm[-1])
        raise InputError(f"no band of {name} lies within the model's {low:.0f}-{high:.0f} nm: choose a sensor "
                         "with bands in that range, or the model's own bands", parameter="band_set")
    rows = weights[inside] / weights[inside].sum(axis=1, keepdims=True)
    shape = [_centroid_and_fwhm(table, b) for b in np.flatnonzero(inside)]
    return BandSet(name, tuple(n for n, keep in zip(table.band_names, inside) if keep),
                   tuple(round(c, 2) for c, _ in shape), tuple(round(f, 2) for _, f in shape),
                   tuple(tuple(float(v) for v in row) for row in rows),
                   tuple(n for n, keep in zip(table.band_names, inside) if not keep))


def parse_band_set(value) -> str:
    """None / "" -> the model grid; a sensor name; or a response CSV path, as a string."""
    text = "" if value is None else str(value).strip()
    if text == "" or text.lower() == MODEL_GRID:
        return MODEL_GRID
    return text.lower() if text.lower() in SENSORS else text


def check_band_set(choice: str) -> None:
    """Refuse a choice that is neither a known band set nor an existing file."""
    if choice != MODEL_GRID and choice not in SENSORS and not Path(choice).is_file():
        raise InputError(f"unknown band set '{choice}': use {MODEL_GRID}, {', '.join(SENSORS)} or the path of a "
                         "response CSV (wavelength_nm, then one column per band)", parameter="band_set")


def resolve_band_set(choice: str, model_wavelengths_nm: Sequence[float]) -> Optional[BandSet]:
    """None for the model's grid, else the band set (a named sensor's or a CSV's)."""
    if choice == MODEL_GRID:
        return None
    if choice in SENSORS:
        table_file, sensor = SENSORS[choice]
        return band_set_from_table(sensor, read_response_table(TABLES / table_file), model_wavelengths_nm)
    return band_set_from_table(Path(choice).stem, read_response_table(choice), model_wavelengths_nm)
