"""Synthetic training scenes: library spectra placed in plausible aerial layouts.

The real scenes give the networks real spatial structure but only a few hundred materials, and a
network with spatial context trained on them alone learns their layout. These scenes put the
spectral library's materials into layouts an orthophoto shows: a background cover (grass, crop,
soil or litter), parcels and fields, roofs, roads, a water body, tree crowns with their cast
shadows. Each region mixes two spectra of its material with a smooth abundance field and a little
brightness texture, and a slight blur mixes materials across edges as pixels do. So the texture
cues a window network can use (a crown against a lawn, a shadow beside a roof) come with many
spectra, and no layout repeats.

With ``canopy_structure`` tree crowns are not lawns seen from above: part of a crown lies in its own
shade, and that shade is lit by light the sunlit leaves scattered, which has the leaves' own spectral
shape. So a crown darkens in the visible, where leaves absorb, and keeps its near-infrared, where they
scatter (the reason dense forest is dark green in a photograph and bright in the near-infrared). Some
scenes then hold a dense stand of crowns (an orchard, a plantation, a forest edge).

With ``urban_share`` that share of the scenes is a town rather than countryside: an impervious
background (pavement or roofs), blocks of roofs with the shadows buildings cast, more roads, lawns
and street trees. Grey, flat spectra then make up a share of the pixels near what an urban scene
holds; the rural layout alone teaches that a grey pixel is mostly a mixture of vegetation and soil,
and so puts a red edge under asphalt and concrete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage

from engine.spectral_library import SpectralLibrary

# (material, probability) of the background cover and of parcels
BACKGROUNDS = (("vegetation", 0.5), ("soil", 0.35), ("npv", 0.15))
PARCELS = (("vegetation", 0.45), ("soil", 0.3), ("npv", 0.1), ("built", 0.15))
URBAN_BACKGROUNDS = (("road", 0.4), ("built", 0.4), ("vegetation", 0.2))
URBAN_PARCELS = (("vegetation", 0.45), ("built", 0.35), ("soil", 0.1), ("npv", 0.1))


def smooth_field(rng: np.random.Generator, shape: Tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise smoothed over ``sigma`` pixels."""
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return field / (field.std() + 1e-9)


def _choose(rng: np.random.Generator, table) -> str:
    names, weights = zip(*table)
    return str(rng.choice(names, p=np.asarray(weights) / sum(weights)))


@dataclass
class Layout:
    """A label map, the material of each label, and a cast-shadow mask."""

    labels: np.ndarray
    materials: List[str]
    shadow: np.ndarray


def _rectangles(rng, layout: Layout, count: int, sizes: Tuple[int, int], table,
                shadow_length: Optional[float] = None) -> np.ndarray:
    """Paint ``count`` rectangles of a material (``table``: a name, or (name, probability) pairs
    drawn per rectangle); with ``shadow_length`` (px) each casts its shadow to the same side (one
    sun). Returns the painted pixels."""
    size = layout.labels.shape[0]
    painted = np.zeros_like(layout.shadow)
    for _ in range(count):
        h, w = rng.integers(sizes[0], max(sizes[0] + 1, sizes[1]), size=2)
        r, c = rng.integers(0, max(1, size - h)), rng.integers(0, max(1, size - w))
        if shadow_length is not None:
            offset = int(round(shadow_length * rng.uniform(0.5, 1.5)))
            layout.shadow[r + offset:r + h + offset, c + offset:c + w + offset] = True
        painted[r:r + h, c:c + w] = True
        layout.labels[r:r + h, c:c + w] = len(layout.materials)
        layout.materials.append(table if isinstance(table, str) else _choose(rng, table))
    return painted


def _buildings(rng, layout: Layout, count: int) -> None:
    """Roofs of ``count`` buildings, each casting its shadow to the same side."""
    size = layout.labels.shape[0]
    height = rng.uniform(1, max(1.5, size / 16))  # a typical shadow length, in pixels
    roofs = _rectangles(rng, layout, count, (3, size // 4), "built", shadow_length=height)
    layout.shadow &= ~roofs  # a roof is lit even where a neighbour's shadow would fall at ground level


def _roads(rng, layout: Layout, most: int = 2) -> None:
    size = layout.labels.shape[0]
    for _ in range(rng.integers(0, most + 1)):
        width = int(rng.integers(2, 6))
        start = int(rng.integers(0, max(1, size - width)))
        if rng.random() < 0.5:
            layout.labels[start:start + width] = len(layout.materials)
        else:
            layout.labels[:, start:start + width] = len(layout.materials)
        layout.materials.append("road")


DENSE_STAND_SHARE = 0.25  # scenes with a dense stand of crowns, when canopy_structure is on


def _crowns(rng, layout: Layout, count: int) -> None:
    size = layout.labels.shape[0]
    yy, xx = np.mgrid[:size, :size]
    crowns = np.zeros((size, size), bool)
    for _ in range(count):
        radius = rng.uniform(1.5, max(2.0, size / 12))
        cy, cx = rng.uniform(0, size, size=2)
        crowns |= np.hypot(yy - cy, xx - cx) < radius
        # the shadow falls to one side (the same for every crown: one sun)
        layout.shadow |= np.hypot(yy - cy - 0.8 * radius, xx - cx - 0.8 * radius) < radius
    layout.shadow &= ~crowns
    if crowns.any():
        layout.labels[crowns] = len(layout.materials)
        layout.materials.append("tree")


def make_layout(rng: np.random.Generator, size: int, dense_stands: bool = False, urban: bool = False) -> Layout:
    backgrounds = URBAN_BACKGROUNDS if urban else BACKGROUNDS
    layout = Layout(np.zeros((size, size), np.int32), [_choose(rng, backgrounds)], np.zeros((size, size), bool))
    _rectangles(rng, layout, int(rng.integers(0, 8)), (size // 8, size // 2), URBAN_PARCELS if urban else PARCELS)
    if urban:
        _buildings(rng, layout, int(rng.integers(6, 30)))
        _roads(rng, layout, most=4)
    else:
        _rectangles(rng, layout, int(rng.integers(0, 12)), (3, size // 6), "built")
        _roads(rng, layout)
    if rng.random() < 0.25:
        water = smooth_field(rng, (size, size), size / 6) > rng.uniform(1.0, 2.0)
        layout.labels[water] = len(layout.materials)
        layout.materials.append("water")
    dense = dense_stands and rng.random() < DENSE_STAND_SHARE
    _crowns(rng, layout, int(rng.integers(60, 160)) if dense else int(rng.integers(0, 40)))
    return layout


def crown_shading(spectra: np.ndarray, sunlit_share: np.ndarray) -> np.ndarray:
    """(..., C) crown spectra -> the same crowns with part of each in its own shade.

    ``sunlit_share`` (...): the fraction of the crown's visible surface in direct sun. The shaded rest
    is lit by light the leaves scattered, whose spectrum is the leaves' own, relative to their
    brightest band; so a band keeps ``s + (1 - s) * rho / max(rho)`` of its reflectance: the
    near-infrared plateau keeps all of it and the visible, where leaves absorb, darkens towards s."""
    peak = np.maximum(spectra.max(axis=-1, keepdims=True), 1e-6)
    share = np.asarray(sunlit_share, dtype=spectra.dtype)[..., None]
    return spectra * (share + (1 - share) * spectra / peak)


class SyntheticScenes:
    """Draws (C, size, size) reflectance cubes from a spectral library and water spectra."""

    def __init__(self, library: SpectralLibrary, water: np.ndarray, wavelengths_nm, canopy_structure: bool = False,
                 urban_share: float = 0.0):
        self.wavelengths = np.asarray(wavelengths_nm, dtype=np.float32)
        self.canopy_structure = canopy_structure
        self.urban_share = urban_share
        self.pools = {name: library.group(name) for name in ("vegetation", "soil", "npv", "built", "road")}
        self.pools["tree"] = self.pools["vegetation"]
        self.pools["water"] = np.asarray(water, dtype=np.float32)
        self.covered = library.covered

    def _region(self, rng, material: str, size: int) -> np.ndarray:
        pool = self.pools[material]
        first, second = pool[rng.integers(len(pool), size=2)]
        share = 1 / (1 + np.exp(-1.5 * smooth_field(rng, (size, size), rng.uniform(1, 6))))
        texture = np.exp(rng.uniform(0.02, 0.15) * smooth_field(rng, (size, size), rng.uniform(0.5, 2)))
        return (share[..., None] * first + (1 - share[..., None]) * second) * texture[..., None]

    @staticmethod
    def _sunlit_share(rng: np.random.Generator, size: int) -> np.ndarray:
        """(size, size) sunlit share of crowns: a stand's own level (open to dense canopies), varying
        from crown to crown."""
        level = rng.uniform(0.35, 0.9)
        return np.clip(level + 0.1 * smooth_field(rng, (size, size), rng.uniform(0.5, 2)), 0.05, 1.0)

    def make(self, rng: np.random.Generator, size: int) -> np.ndarray:
        urban = self.urban_share > 0 and rng.random() < self.urban_share
        layout = make_layout(rng, size, dense_stands=self.canopy_structure, urban=urban)
        cube = np.zeros((size, size, len(self.wavelengths)), np.float32)
        for label, material in enumerate(layout.materials):
            mask = layout.labels == label
            if mask.any():
                cube[mask] = self._region(rng, material, size)[mask]
                if material == "tree" and self.canopy_structure:
                    cube[mask] = crown_shading(cube[mask], self._sunlit_share(rng, size)[mask])
        blur = rng.uniform(0.0, 0.8)
        if blur > 0.2:
            cube = ndimage.gaussian_filter(cube, (blur, blur, 0))
        if layout.shadow.any():
            # shade is lit by the sky alone: darker, and bluer (skylight falls off with wavelength)
            skylight = (self.wavelengths / 550.0) ** -rng.uniform(0.5, 2.0)
            cube[layout.shadow] *= rng.uniform(0.1, 0.4) * skylight
        return np.moveaxis(cube, -1, 0)
