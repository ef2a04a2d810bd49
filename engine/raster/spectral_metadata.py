"""Band wavelengths in raster metadata: written by the output formats, read back for evaluation.

Written (the conventions GDAL, QGIS, ENVI and the EnMAP-Box read):

- per band, default domain: ``wavelength`` (nm), ``wavelength_units=Nanometers``, ``fwhm`` (nm);
- per band, ``IMAGERY`` domain (GDAL's RFC 100 convention): ``CENTRAL_WAVELENGTH_UM``, ``FWHM_UM``;
- per band description ``Band 12 (550.0 nm)``, or a sensor band's name: ``B4 Red (664.6 nm)``;
- dataset ``ENVI`` domain: ``wavelength``, ``fwhm`` as ``{v1, v2, ...}`` and ``wavelength_units``.

Read: any of these, and the same written by other tools (other units, descriptions such as
``band 1 (418.24 Nanometers)``). Both work on an open rasterio dataset; this module imports neither
rasterio nor torch.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

_UNIT_TO_NM = {
    "nanometers": 1.0,
    "nanometer": 1.0,
    "nm": 1.0,
    "micrometers": 1000.0,
    "micrometer": 1000.0,
    "microns": 1000.0,
    "micron": 1000.0,
    "um": 1000.0,
    "µm": 1000.0,
}
_DESCRIPTION_WAVELENGTH = re.compile(r"\(\s*([0-9.eE+-]+)\s*(nanometers?|nm|micrometers?|um|µm)\s*\)", re.I)


# ----------------------------------------------------------------------------------------------
# writing


def envi_list(values: Sequence[float], digits: int = 4) -> str:
    return "{" + ", ".join(f"{v:.{digits}f}".rstrip("0").rstrip(".") for v in values) + "}"


def format_nm(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")


def format_um(value_nm: float) -> str:
    return f"{value_nm / 1000.0:.7f}".rstrip("0").rstrip(".")


def _write_band(dst, band: int, wavelength_nm: float, fwhm_nm: Optional[float], name: Optional[str]) -> None:
    band_tags = {"wavelength": format_nm(wavelength_nm), "wavelength_units": "Nanometers"}
    imagery = {"CENTRAL_WAVELENGTH_UM": format_um(wavelength_nm)}
    if fwhm_nm is not None:
        band_tags["fwhm"] = format_nm(fwhm_nm)
        imagery["FWHM_UM"] = format_um(fwhm_nm)
    dst.update_tags(band, **band_tags)
    dst.update_tags(band, ns="IMAGERY", **imagery)
    dst.set_band_description(band, f"{name or f'Band {band}'} ({wavelength_nm:.1f} nm)")


def write_spectral_metadata(dst, wavelengths_nm: Sequence[float], fwhm_nm: Optional[Sequence[float]],
                            tags: Optional[dict] = None, band_names: Optional[Sequence[str]] = None) -> None:
    """Write per-band and dataset-level spectral metadata (see the module docstring) and ``tags``;
    ``band_names`` (a sensor's) go into the band descriptions and the ENVI ``band names``."""
    wavelengths = [float(w) for w in wavelengths_nm]
    if len(wavelengths) != dst.count:
        raise ValueError(f"{len(wavelengths)} wavelengths for {dst.count} bands")
    fwhms = [float(f) for f in fwhm_nm] if fwhm_nm is not None else None
    for b, wl in enumerate(wavelengths, start=1):
        _write_band(dst, b, wl, fwhms[b - 1] if fwhms is not None else None, band_names[b - 1] if band_names else None)
    envi = {"wavelength": envi_list(wavelengths), "wavelength_units": "Nanometers", "bands": str(len(wavelengths))}
    if band_names:
        envi["band_names"] = "{" + ", ".join(band_names) + "}"
    if fwhms is not None:
        envi["fwhm"] = envi_list(fwhms)
    dst.update_tags(ns="ENVI", **envi)
    if tags:
        dst.update_tags(**{k: str(v) for k, v in tags.items()})


# ----------------------------------------------------------------------------------------------
# reading


def _to_nm(values: np.ndarray, unit: Optional[str]) -> np.ndarray:
    if unit:
        factor = _UNIT_TO_NM.get(unit.strip().lower())
        if factor is not None:
            return values * factor
    # Unknown or missing unit: visible/infrared wavelengths below 100 can only be micrometres.
    return values * 1000.0 if values.max() < 100 else values


def _from_tags(dataset) -> Optional[np.ndarray]:
    """From per-band default-domain, per-band IMAGERY or dataset ENVI tags; None if none has them all."""
    count = dataset.count
    band_tags = [{k.lower(): v for k, v in dataset.tags(b).items()} for b in range(1, count + 1)]
    if all("wavelength" in tags for tags in band_tags):
        values = np.array([float(tags["wavelength"]) for tags in band_tags])
        return _to_nm(values, band_tags[0].get("wavelength_units"))
    imagery = [dataset.tags(b, ns="IMAGERY") for b in range(1, count + 1)]
    if all("CENTRAL_WAVELENGTH_UM" in tags for tags in imagery):
        return np.array([float(tags["CENTRAL_WAVELENGTH_UM"]) for tags in imagery]) * 1000.0
    envi = {k.lower(): v for k, v in dataset.tags(ns="ENVI").items()}
    if "wavelength" in envi:
        values = np.array([float(v) for v in envi["wavelength"].strip("{} ").split(",")])
        if values.size == count:
            return _to_nm(values, envi.get("wavelength_units"))
    return None


def read_wavelengths(dataset) -> Optional[np.ndarray]:
    """Band centre wavelengths in nm from a rasterio dataset's metadata, or None.

    Looked up in order: per-band default-domain ``wavelength`` (+ ``wavelength_units``, the EnMAP-Box
    / QGIS convention), per-band ``IMAGERY`` ``CENTRAL_WAVELENGTH_UM`` (GDAL >= 3.10), the dataset's
    ENVI-domain ``wavelength`` list, and band descriptions like ``band 1 (418.24 Nanometers)``.
    """
    try:
        values = _from_tags(dataset)
    except ValueError:
        return None
    if values is not None:
        return values
    matches = [_DESCRIPTION_WAVELENGTH.search(d or "") for d in dataset.descriptions]
    if all(matches):
        return np.array([_to_nm(np.array([float(m.group(1))]), m.group(2))[0] for m in matches])
    return None


# ----------------------------------------------------------------------------------------------
# checking an input's channels

CHANNEL_TOLERANCE_NM = 80.0  # a camera's red, green or blue centre lies this close to the nominal one


def channel_mismatch(band_wavelengths_nm: Sequence[float], bands: Sequence[int],
                     expected_nm: Sequence[float]) -> Optional[str]:
    """Why the chosen ``bands`` (1-based) of an input whose bands have ``band_wavelengths_nm`` are not
    the red, green and blue a model expects (``expected_nm``, in the model's channel order), or None.

    The fix proposed is the input's bands nearest to each expected wavelength, so an input stored
    blue, green, red (as the paper's band pick is) is never read with red and blue swapped."""
    chosen = [float(band_wavelengths_nm[b - 1]) for b in bands]
    if all(abs(c - e) <= CHANNEL_TOLERANCE_NM for c, e in zip(chosen, expected_nm)):
        return None
    nearest = [int(np.argmin(np.abs(np.asarray(band_wavelengths_nm) - e))) + 1 for e in expected_nm]
    found = ", ".join(f"band {b} at {format_nm(c)} nm" for b, c in zip(bands, chosen))
    wanted = ", ".join(format_nm(e) for e in expected_nm)
    return (f"the input's metadata puts the chosen bands at {found}, but the model expects red, green and blue "
            f"(about {wanted} nm, in that order): choose bands {','.join(map(str, nearest))}")
