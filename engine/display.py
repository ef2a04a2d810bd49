"""How a hyperspectral output is shown: which bands as red, green and blue, and each one's stretch.

A GIS opens a 48-band raster with bands 1, 2 and 3 (374, 389 and 403 nm for the bundled model) as
red, green and blue: a pink-cyan speckle. Shown as a near-infrared false-colour composite (bands
nearest 860, 650 and 550 nm, as for a colour-infrared photograph: vegetation red, water dark, roads
grey) with a 2-98 % cumulative-cut stretch, the same file reads at once; a model without a
near-infrared band is shown in natural colour (650, 550, 470 nm).

Pure functions of wavelengths and pixel values (numpy and the standard library only): the engine
writes the choice as a QGIS style (``.qml``) beside each output (``engine.raster.style``), and the
QGIS adapter sets the same renderer on the layer it loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

NEAR_INFRARED_FALSE_COLOUR_NM = (860.0, 650.0, 550.0)
NATURAL_COLOUR_NM = (650.0, 550.0, 470.0)
# Vegetation's red edge ends near 750 nm; a band at or beyond this counts as near-infrared.
NEAR_INFRARED_FROM_NM = 760.0
# The share of pixels clipped at the dark and at the bright end of each band (QGIS's default cut).
CUMULATIVE_CUT = (0.02, 0.98)


@dataclass(frozen=True)
class Composite:
    """Three bands shown as red, green and blue (1-based band numbers, as GDAL and QGIS count)."""

    name: str  # "near-infrared false colour" or "natural colour" or "first three bands"
    bands: Tuple[int, int, int]


@dataclass(frozen=True)
class Stretch:
    """The values mapped to black and to full intensity of one displayed band."""

    minimum: float
    maximum: float


@dataclass(frozen=True)
class Display:
    """A composite and the stretch of each of its three bands (red, green, blue)."""

    composite: Composite
    stretches: Tuple[Stretch, Stretch, Stretch]
    cut: Tuple[float, float] = CUMULATIVE_CUT


def nearest_band(wavelengths_nm: Sequence[float], target_nm: float) -> int:
    """The 1-based number of the band whose centre wavelength is closest to ``target_nm``."""
    return int(np.argmin(np.abs(np.asarray(wavelengths_nm, dtype=np.float64) - target_nm))) + 1


def choose_composite(wavelengths_nm: Optional[Sequence[float]], band_count: int) -> Composite:
    """Near-infrared false colour when some band reaches the near infrared, else natural colour;
    without wavelengths, bands 1, 2 and 3 (the first band repeated where there are fewer)."""
    if wavelengths_nm is None or len(wavelengths_nm) == 0:
        first = tuple(min(band, band_count) for band in (1, 2, 3))
        return Composite("first three bands", first)
    if max(wavelengths_nm) >= NEAR_INFRARED_FROM_NM:
        name, targets = "near-infrared false colour", NEAR_INFRARED_FALSE_COLOUR_NM
    else:
        name, targets = "natural colour", NATURAL_COLOUR_NM
    red, green, blue = (nearest_band(wavelengths_nm, target) for target in targets)
    return Composite(name, (red, green, blue))


def cumulative_cut(values: np.ndarray, cut: Tuple[float, float] = CUMULATIVE_CUT) -> Stretch:
    """The ``cut`` quantiles of the finite ``values``; a band without variation gets a range of one
    unit above its value (so that a renderer never divides by zero), one without values 0 to 1."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return Stretch(0.0, 1.0)
    low, high = (float(q) for q in np.quantile(finite, cut))
    return Stretch(low, high if high > low else low + 1.0)


def display_for(wavelengths_nm: Optional[Sequence[float]], band_count: int, band_values) -> Display:
    """The display of a raster: its composite, and each composite band's stretch from the sample of
    its values that ``band_values(band_number)`` returns (nodata already left out)."""
    composite = choose_composite(wavelengths_nm, band_count)
    red, green, blue = (cumulative_cut(band_values(band)) for band in composite.bands)
    return Display(composite, (red, green, blue))


# ----------------------------------------------------------------------------------------------
# the QGIS style file


def _contrast_element(colour: str, stretch: Stretch) -> str:
    return (f"      <{colour}ContrastEnhancement>\n"
            f"        <minValue>{stretch.minimum!r}</minValue>\n"
            f"        <maxValue>{stretch.maximum!r}</maxValue>\n"
            "        <algorithm>StretchToMinimumMaximum</algorithm>\n"
            f"      </{colour}ContrastEnhancement>\n")


def qgis_style(display: Display) -> str:
    """A QGIS layer style (``.qml``) with a multiband colour renderer for ``display``: QGIS applies it
    when it opens the raster beside which it lies under the same name."""
    red, green, blue = display.composite.bands
    lower, upper = display.cut
    contrast = "".join(_contrast_element(colour, stretch)
                       for colour, stretch in zip(("red", "green", "blue"), display.stretches))
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">\n'
        f"  <!-- {display.composite.name}, written by the SCDM engine -->\n"
        "  <pipe>\n"
        f'    <rasterrenderer type="multibandcolor" opacity="1" alphaBand="-1" redBand="{red}" '
        f'greenBand="{green}" blueBand="{blue}" nodataColor="">\n'
        "      <minMaxOrigin>\n"
        "        <limits>CumulativeCut</limits>\n"
        "        <extent>WholeRaster</extent>\n"
        "        <statAccuracy>Estimated</statAccuracy>\n"
        f"        <cumulativeCutLower>{lower!r}</cumulativeCutLower>\n"
        f"        <cumulativeCutUpper>{upper!r}</cumulativeCutUpper>\n"
        "        <stdDevFactor>2</stdDevFactor>\n"
        "      </minMaxOrigin>\n"
        f"{contrast}"
        "    </rasterrenderer>\n"
        "  </pipe>\n"
        "</qgis>\n"
    )
