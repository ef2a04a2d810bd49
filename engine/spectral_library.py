"""Reflectance spectra from the earthlib spectral library, for training.

earthlib (PyPI, MIT) ships 7,261 surface reflectance spectra at 10 nm from 400 to 2450 nm: 4,185
soils (ICRAF-ISRIC), 2,000 PROSAIL canopies, about 900 built surfaces (roofs, roads, paint, ...),
non-photosynthetic vegetation and burned surfaces. It is a training-time dependency only: the plugin
never imports it. Its ENVI library file is read directly (float32, bands as columns) so that neither
earthlib's own imports (pandas, spectral, loguru) nor a network connection are needed.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from engine.errors import InputError
from engine.spectral import fill_uncovered, resample_cube

LIBRARY_FWHM_NM = 10.0  # earthlib's spectra are sampled (and, for the ASD ones, resampled) at 10 nm

# Material groups the synthetic scenes draw from: earthlib's (LEVEL_2, LEVEL_3) labels -> group.
ROAD_SURFACES = ("road", "asphalt", "parking_lot", "driveway", "gravel", "bridge", "sidewalk")


def material_group(level2: str, level3: str) -> str:
    """The synthetic-scene group of one library spectrum (vegetation, soil, npv, built or road)."""
    if level2 == "vegetation":
        return "vegetation"
    if level2 == "bare":
        return "soil"
    if level2 in ("npv", "burned"):
        return "npv"
    return "road" if level3 in ROAD_SURFACES else "built"


@dataclass(frozen=True)
class SpectralLibrary:
    """Spectra on a model grid (N, C), the bands they cover (C,), and each spectrum's group (N,)."""

    spectra: np.ndarray
    covered: np.ndarray
    groups: np.ndarray

    def group(self, name: str) -> np.ndarray:
        return self.spectra[self.groups == name]

    def filled(self) -> "SpectralLibrary":
        """The library with each spectrum's uncovered bands set to its nearest covered band (for
        rendering through camera responses that reach a little beyond 400 nm)."""
        return SpectralLibrary(fill_uncovered(self.spectra.T, self.covered).T, self.covered, self.groups)

    def counts(self) -> Dict[str, int]:
        names, counts = np.unique(self.groups, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}


def earthlib_data_folder() -> Path:
    """earthlib's data folder, found without importing earthlib."""
    spec = importlib.util.find_spec("earthlib")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the earthlib spectral library is not installed: pip install earthlib "
                         "(it is needed for training only)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _read_envi_library(stem: Path):
    header = Path(str(stem) + ".sli.hdr").read_text()
    fields = {}
    for key in ("samples", "lines"):
        fields[key] = int(header.split(f"{key} = ")[1].split()[0])
    text = header.split("wavelength = {")[1].split("}")[0]
    wavelengths = np.array([float(v) for v in text.split(",")])
    if "Micrometers" in header:
        wavelengths = wavelengths * 1000.0
    values = np.fromfile(str(stem) + ".sli", dtype="<f4").reshape(fields["lines"], fields["samples"])
    return values, wavelengths


def load_earthlib(wavelengths_nm: Sequence[float], fwhm_nm: Sequence[float], folder: Path = None) -> SpectralLibrary:
    """Every earthlib spectrum resampled to the grid (Gaussian responses, the library's 10 nm width
    taken into account); bands outside 400-2450 nm are flagged uncovered."""
    folder = Path(folder) if folder is not None else earthlib_data_folder()
    values, source_wavelengths = _read_envi_library(folder / "spectra")
    with open(folder / "spectra.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != len(values):
        raise InputError(f"earthlib's spectra.csv lists {len(rows)} spectra, its library holds {len(values)}")
    cube = values.T[:, :, None]
    resampled, covered = resample_cube(cube, source_wavelengths, wavelengths_nm, fwhm_nm, LIBRARY_FWHM_NM)
    groups = np.array([material_group(r["LEVEL_2"], r["LEVEL_3"]) for r in rows])
    return SpectralLibrary(resampled[:, :, 0].T.astype(np.float32), covered, groups)
