"""Training crops for models of real imagery: renderings of real and synthetic scenes as real RGB
imagery looks (engine.rgb_simulation), normalised the way inference normalises a raster.

Sources (one rendering each):
- the real scenes of the training config, on the model grid, in reflectance: a scene marked as
  radiance (Houston's CASI DN) is converted by an empirical line first (``empirical_line``);
- synthetic scenes (engine.synthetic_scenes) that place the spectral library's materials, and water
  taken from the real scenes, into aerial layouts; ``synthetic_share`` of the renderings.
Each rendering draws a camera (a named one, or for ``random_camera_share`` of them a random
plausible one) and imaging conditions, is normalised by the bundle's chromatic transform from its own
statistics (as a raster is, once, from the whole image), and becomes:
- the condition (the transform's channels);
- the target: the cube in the input's scale (multiplied by the ratio of the rendered input's white
  level to the linear rendering's), divided by the transform's per-pixel brightness, i.e. what the
  networks output;
- a per-pixel loss weight (brightness / white)^2, so that the loss is the squared error in units of
  the image's white: a black pixel, whose spectrum-per-brightness no colour can tell, counts little.
A pool of renderings is kept and a few are replaced per batch, since making one costs more than a
training step's worth of crops from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from engine.config import BundleConfig
from engine.data import Crops, Scene, dihedral_batch, scene_on_grid
from engine.errors import InputError
from engine.rgb_simulation import Camera, random_camera, simulate_rgb
from engine.spectral import fill_uncovered
from engine.spectral_library import SpectralLibrary
from engine.synthetic_scenes import SyntheticScenes

DARK_TARGET = 0.02  # reflectance the empirical line gives a scene's darkest pixels (water, shade)


@dataclass
class Rendering:
    """One rendered image: condition (K, H, W), target (C, H, W) in model units, loss weight (H, W),
    valid pixels (H, W) and the bands the source covers (C,)."""

    cond: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    valid: np.ndarray
    covered: np.ndarray


def empirical_line(cube: np.ndarray, valid: np.ndarray, bright_reference: np.ndarray) -> np.ndarray:
    """Radiance-like DN -> reflectance: the 0.5th percentile per band maps to ``DARK_TARGET`` and
    the mean spectrum of the brightest 1 % of pixels to ``bright_reference`` (a bright built
    surface's reflectance): the empirical-line method with the scene's own dark and bright targets."""
    pixels = cube[:, valid]
    dark = np.percentile(pixels, 0.5, axis=1)
    brightness = pixels.mean(axis=0)
    bright = pixels[:, brightness >= np.percentile(brightness, 99)].mean(axis=1)
    gain = (bright_reference - DARK_TARGET) / np.maximum(bright - dark, 1e-9)
    return ((cube - dark[:, None, None]) * gain[:, None, None] + DARK_TARGET).astype(np.float32)


def water_spectra(sources: Sequence["SceneSource"]) -> np.ndarray:
    """Water (and other dark, near-infrared-poor) pixels of the real scenes: darker than the
    scene's 20th percentile in the visible and with near-infrared below 0.6 x visible."""
    found = []
    for source in sources:
        wavelengths = source.wavelengths
        pixels = source.cube[:, source.valid].T
        pixels = pixels / max(float(np.percentile(pixels.mean(axis=1), 99)), 1e-9)
        visible = pixels[:, (wavelengths > 450) & (wavelengths < 600)].mean(axis=1)
        infrared = pixels[:, (wavelengths > 760) & (wavelengths < 900)].mean(axis=1)
        chosen = (infrared < 0.6 * visible) & (visible < np.percentile(visible, 20))
        found.append(pixels[chosen])
    water = np.concatenate(found) if found else np.zeros((0, 0), np.float32)
    if len(water) == 0:
        raise ValueError("none of the training scenes has water or other dark, infrared-poor pixels; "
                         "synthetic scenes need some: add a scene with water")
    return water.astype(np.float32)


@dataclass
class SceneSource:
    """A real scene on the model grid, in reflectance, with uncovered bands filled for rendering."""

    name: str
    cube: np.ndarray
    valid: np.ndarray
    covered: np.ndarray
    wavelengths: np.ndarray


def scene_source(scene: Scene, config: BundleConfig, radiance: bool, library: Optional[SpectralLibrary]) -> SceneSource:
    cube, covered = scene_on_grid(scene, config.wavelengths_nm, config.fwhm_nm)
    if radiance:
        if library is None:
            raise InputError(f"scene {scene.name} is radiance: converting it to reflectance needs the spectral "
                             "library (\"library\": \"earthlib\")")
        built = library.group("built")
        bright = built[built.mean(axis=1) >= np.median(built.mean(axis=1))]
        reference = fill_uncovered(np.median(bright, axis=0), library.covered)
        cube = empirical_line(cube, scene.valid, reference)
    return SceneSource(scene.name, fill_uncovered(cube, covered), scene.valid, covered,
                       np.asarray(config.wavelengths_nm, dtype=np.float64))


@dataclass(frozen=True)
class ImagingSetOptions:
    """How renderings are drawn: ``synthetic_share`` of them from synthetic scenes of
    ``synthetic_size`` px (crowns with their own shade and dense stands when ``canopy_structure``;
    ``urban_share`` of them laid out as a town); a pool of ``pool`` renderings of which ``refresh`` are
    replaced per batch; each rendering's brightness channel shifted by a Gaussian of std
    ``brightness_jitter`` (log units)."""

    synthetic_share: float = 0.5
    synthetic_size: int = 64
    pool: int = 48
    refresh: int = 4
    canopy_structure: bool = False
    urban_share: float = 0.0
    brightness_jitter: float = 0.0


class ImagingTrainingSet:
    """Crops of renderings, as ``engine.data.TrainingSet``'s but with a per-pixel loss weight; see
    the module docstring."""

    def __init__(self, config: BundleConfig, sources: Sequence[SceneSource], library: Optional[SpectralLibrary],
                 cameras: Sequence[Camera], options: ImagingSetOptions = ImagingSetOptions(), seed: int = 0):
        if config.normalisation.kind != "chromatic":
            raise ValueError("imaging training data is made for the chromatic normalisation")
        if library is None and (options.synthetic_share > 0 or not sources):
            raise ValueError("synthetic scenes (synthetic_share > 0, or no real scene) need the spectral library")
        self.config, self.sources, self.cameras, self.options = config, list(sources), list(cameras), options
        self.synthetic = None if library is None else \
            SyntheticScenes(library.filled(), water_spectra(self.sources), config.wavelengths_nm,
                            options.canopy_structure, options.urban_share)
        self.library_covered = None if library is None else library.covered
        self._rng = np.random.default_rng([seed, 71])
        self.pool: List[Rendering] = [self._render(self._rng) for _ in range(options.pool)]

    def summary(self) -> list:
        scenes = [{"scene": s.name, "size": list(s.valid.shape), "bands_covered": int(s.covered.sum())}
                  for s in self.sources]
        return scenes + [{"scene": "synthetic (spectral library)", "share": self.options.synthetic_share,
                          "canopy_structure": self.options.canopy_structure,
                          "urban_share": self.options.urban_share,
                          "brightness_jitter": self.options.brightness_jitter}]

    def _source(self, rng: np.random.Generator):
        if self.synthetic is not None and (rng.random() < self.options.synthetic_share or not self.sources):
            cube = self.synthetic.make(rng, self.options.synthetic_size)
            return cube, np.ones(cube.shape[1:], bool), self.library_covered
        source = self.sources[rng.integers(len(self.sources))]
        return source.cube, source.valid, source.covered

    def _camera(self, rng: np.random.Generator) -> Camera:
        share = self.config.rgb_simulation.random_camera_share
        if rng.random() < share or not self.cameras:
            return random_camera(rng, self.config.wavelengths_nm)
        return self.cameras[rng.integers(len(self.cameras))]

    def _render(self, rng: np.random.Generator) -> Rendering:
        cube, valid, covered = self._source(rng)
        camera = self._camera(rng)
        rgb, _ = simulate_rgb(cube, camera, rng, self.config.rgb_simulation.conditions)
        transform = self.config.normalisation
        stats = transform.statistics(rgb, valid)
        scale, _ = transform.output_scale(rgb, stats)
        linear = transform.statistics(camera.render(cube), valid)
        target = cube * np.float32(stats.white_level / linear.white_level) / scale[None]
        weight = np.square(scale / np.float32(stats.white_level))
        condition = transform.condition(rgb, stats)
        if self.options.brightness_jitter > 0:
            # one shift per rendering: a pixel's brightness against the scene's white keeps its order
            # within the scene but stops naming a material across scenes
            condition[3] += np.float32(rng.normal(0.0, self.options.brightness_jitter))
        return Rendering(condition, target.astype(np.float32), weight.astype(np.float32),
                         valid, covered.astype(np.float32))

    def batch(self, size: int, crop: int, rng: np.random.Generator) -> Crops:
        """``size`` crops of ``crop`` px from the pool (a few renderings replaced first), turned and
        mirrored at random."""
        for slot in rng.choice(len(self.pool), size=min(self.options.refresh, len(self.pool)), replace=False):
            self.pool[slot] = self._render(rng)
        parts = [self._crop(self.pool[rng.integers(len(self.pool))], crop, rng) for _ in range(size)]
        cube, cond, weight = (np.stack(arrays) for arrays in zip(*(p[:3] for p in parts)))
        mask = np.stack([p[3] for p in parts])
        cube, cond, weight = dihedral_batch((cube, cond, weight), rng)
        return Crops(cube, cond, mask, weight)

    @staticmethod
    def _crop(rendering: Rendering, crop: int, rng: np.random.Generator):
        h, w = rendering.valid.shape
        row, col = rng.integers(h - crop + 1), rng.integers(w - crop + 1)
        window = (slice(row, row + crop), slice(col, col + crop))
        valid = rendering.valid[window]
        weight = rendering.weight[window] * valid  # invalid pixels take no part in the loss
        return rendering.target[(slice(None),) + window], rendering.cond[(slice(None),) + window], \
            weight[None], rendering.covered
