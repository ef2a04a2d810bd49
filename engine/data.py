"""Training scenes: loading, putting them on the model's band grid, and drawing augmented crops."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from engine.config import BundleConfig, RGBSimulation
from engine.errors import InputError
from engine.spectral import SpectralResponse, load_srf_csv, resample_cube, simulate_rgb_from_bands, simulate_rgb_from_srf


class Crops(NamedTuple):
    """A training batch: targets ``cube`` (N, C, s, s) and conditions ``cond`` (N, K, s, s) in model
    units, which bands each crop covers ``mask`` (N, C), and optionally a per-pixel loss ``weight``
    (N, 1, s, s)."""

    cube: np.ndarray
    cond: np.ndarray
    mask: np.ndarray
    weight: Optional[np.ndarray] = None


@dataclass
class Scene:
    name: str
    cube: np.ndarray            # (C, H, W) float32, native units
    wavelengths_nm: np.ndarray  # (C,)
    valid: np.ndarray           # (H, W) bool
    units: str = ""


def load_scene(path, rows: Optional[Sequence[int]] = None, cols: Optional[Sequence[int]] = None) -> Scene:
    """A scene from a ``.npz`` (schema in shared/data/README.md) or a GeoTIFF with band wavelengths."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"scene {path} does not exist: check the path in the training config")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            cube = np.moveaxis(np.asarray(data["cube"], dtype=np.float32), -1, 0)
            wavelengths = np.asarray(data["wavelengths_nm"], dtype=np.float64)
            valid = np.asarray(data["valid_mask"], dtype=bool) if "valid_mask" in data else np.ones(cube.shape[1:], bool)
            meta = json.loads(str(data["meta"])) if "meta" in data else {}
        units = str(meta.get("units", ""))
    else:
        import rasterio

        from engine.raster.spectral_metadata import read_wavelengths

        with rasterio.open(path) as ds:
            cube = ds.read().astype(np.float32)
            wl = read_wavelengths(ds)
            if wl is None:
                raise InputError(f"{path} has no band wavelengths: add 'wavelength' band metadata")
            wavelengths = np.asarray(wl, dtype=np.float64)
            valid = np.ones(cube.shape[1:], bool)
            if ds.nodata is not None:
                cube[cube == ds.nodata] = np.nan
        units = "file units"
    # Bands without any data (e.g. EnMAP's water-vapour bands) leave the scene; other gaps mask pixels.
    has_data = np.isfinite(cube).any(axis=(1, 2))
    cube, wavelengths = cube[has_data], wavelengths[has_data]
    valid &= np.isfinite(cube).all(axis=0)
    cube = np.where(np.isfinite(cube), cube, 0).astype(np.float32)
    if rows is not None:
        cube, valid = cube[:, rows[0]:rows[1]], valid[rows[0]:rows[1]]
    if cols is not None:
        cube, valid = cube[:, :, cols[0]:cols[1]], valid[:, cols[0]:cols[1]]
    return Scene(path.stem, cube, wavelengths, valid, units)


def scene_on_grid(scene: Scene, wavelengths_nm, fwhm_nm) -> tuple:
    """The scene resampled to the model grid and which grid bands it covers.

    The scene's own bands are taken to be as wide as their spacing, so the resampling adds only the
    blur the grid's bands have beyond them (a 10 nm band becomes 14.3 nm wide, not 19.7)."""
    target = np.asarray(wavelengths_nm, dtype=np.float64)
    source = scene.wavelengths_nm
    if source.shape == target.shape and np.allclose(source, target, atol=0.05):
        return scene.cube, np.ones(target.size, bool)
    order = np.argsort(source)
    source_fwhm = np.abs(np.gradient(source[order])) if source.size > 1 else None
    resampled, covered = resample_cube(scene.cube[order], source[order], target, np.asarray(fwhm_nm), source_fwhm)
    return resampled, covered


def render_rgb(scene: Scene, camera: SpectralResponse) -> np.ndarray:
    """The scene seen through a camera's responses, in the cube's units (InputError if uncovered)."""
    order = np.argsort(scene.wavelengths_nm)
    rgb, _ = simulate_rgb_from_srf(scene.cube[order], scene.wavelengths_nm[order], camera)
    return rgb.astype(np.float32)


def rgb_for_scene(scene: Scene, grid_cube: np.ndarray, simulation: RGBSimulation,
                  cameras: Sequence[SpectralResponse]) -> List[np.ndarray]:
    """One RGB rendering of the scene per camera (or the band-index RGB), in the cube's units."""
    if simulation.kind == "bands":
        return [simulate_rgb_from_bands(grid_cube, simulation.band_indices)]
    renderings = []
    for camera in cameras:
        try:
            renderings.append(render_rgb(scene, camera))
        except InputError:
            continue  # this camera's responses fall outside the scene's spectral range
    if not renderings:
        raise InputError(f"scene {scene.name} covers none of the camera responses")
    return renderings


# Crops of one batch share at most this many (scene, camera, white balance, gain) draws: resolving the
# percentile normalisation per crop would dominate a batch of hundreds of small windows.
RENDERINGS_PER_BATCH = 16
MIN_VALID_FRACTION = 0.95  # crops start only where at least this share of their pixels is valid
# Valid pixels per rendering that the rgb_percentile normalisation is taken from (all of a smaller
# scene), as inference takes it from a decimated read of the raster.
NORMALISATION_PIXELS = 4096


class TrainingSet:
    """Augmented (RGB, cube) crops in model units, with per-band coverage masks.

    Crops are drawn with probability proportional to scene area; flips and rot90 on every crop; with
    SRF simulation, a random camera, per-channel white balance and a global gain, and the
    ``rgb_percentile`` normalisation taken from the augmented scene's valid pixels as inference does.
    A batch draws up to ``RENDERINGS_PER_BATCH`` such renderings and spreads its crops over them.
    """

    def __init__(self, config: BundleConfig, scenes: Sequence[Scene], srf_dir: Optional[Path] = None):
        self.config = config
        simulation = config.rgb_simulation
        cameras = [load_srf_csv(Path(srf_dir) / f"{name}.csv") for name in simulation.cameras] if simulation.kind == "srf" else []
        self.items = []
        pick = np.random.default_rng(0)
        for scene in scenes:
            cube, covered = scene_on_grid(scene, config.wavelengths_nm, config.fwhm_nm)
            rgbs = rgb_for_scene(scene, cube, simulation, cameras)
            valid = np.flatnonzero(scene.valid)
            chosen = np.sort(pick.choice(valid, size=min(valid.size, NORMALISATION_PIXELS), replace=False))
            # Each rendering's valid pixels, or a fixed sample of them: what its normalisation is taken from.
            statistics = [rgb.reshape(3, 1, -1)[:, :, chosen] for rgb in rgbs]
            self.items.append((scene, cube, covered.astype(np.float32), rgbs, statistics))
        areas = np.array([item[0].valid.sum() for item in self.items], dtype=np.float64)
        self.weights = areas / areas.sum()
        self._starts = {}

    def summary(self) -> list:
        return [{"scene": s.name, "size": [int(s.cube.shape[1]), int(s.cube.shape[2])],
                 "bands_covered": int(c.sum()), "renderings": len(r)} for s, _, c, r, _ in self.items]

    def _crop_starts(self, item: int, ch: int, cw: int) -> np.ndarray:
        """Flat indices (row * W + col) of the crop origins whose crop is valid enough; where none
        is, those of the most valid crops."""
        key = (item, ch, cw)
        if key not in self._starts:
            valid = self.items[item][0].valid
            sums = np.pad(valid.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            share = (sums[ch:, cw:] - sums[:-ch, cw:] - sums[ch:, :-cw] + sums[:-ch, :-cw]) / (ch * cw)
            good = share >= min(MIN_VALID_FRACTION, share.max())
            rows, cols = np.nonzero(good)
            self._starts[key] = rows * valid.shape[1] + cols
        return self._starts[key]

    def batch(self, size: int, crop: int, rng: np.random.Generator) -> Crops:
        """``size`` crops: cube (size, C, crop, crop), RGB condition (size, 3, crop, crop), coverage (size, C)."""
        groups = min(size, RENDERINGS_PER_BATCH)
        counts = np.full(groups, size // groups)
        counts[:size % groups] += 1
        cubes, rgbs, masks = (np.concatenate(arrays) for arrays in zip(*(self._crops(int(n), crop, rng) for n in counts)))
        cubes, rgbs = dihedral_batch((cubes, rgbs), rng)
        return Crops(cubes, rgbs, masks)

    def _crops(self, count: int, crop: int, rng: np.random.Generator):
        sim = self.config.rgb_simulation
        item = rng.choice(len(self.items), p=self.weights)
        scene, cube, covered, renderings, statistics = self.items[item]
        rendering = rng.integers(len(renderings))
        rgb = renderings[rendering]
        rgb_factor = np.ones((3, 1, 1), np.float32)
        cube_factor = np.float32(1.0)
        if sim.kind == "srf":
            balance = rng.uniform(*sim.white_balance_range, size=3).astype(np.float32)
            cube_factor = np.float32(np.exp(rng.uniform(np.log(sim.gain_range[0]), np.log(sim.gain_range[1]))))
            rgb_factor = (balance * cube_factor)[:, None, None]
        fixed = self.config.normalisation.resolved(statistics[rendering] * rgb_factor)
        h, w = cube.shape[1:]
        ch, cw = min(crop, h), min(crop, w)
        starts = self._crop_starts(item, ch, cw)
        rows, cols = np.divmod(starts[rng.integers(starts.size, size=count)], w)
        r_index = (rows[:, None] + np.arange(ch))[:, :, None]
        c_index = (cols[:, None] + np.arange(cw))[:, None, :]
        x = fixed.to_model(np.moveaxis(cube[:, r_index, c_index], 0, 1) * cube_factor)
        y = fixed.to_model(np.moveaxis(rgb[:, r_index, c_index], 0, 1) * rgb_factor)
        if ch < crop or cw < crop:
            pad = ((0, 0), (0, 0), (0, crop - ch), (0, crop - cw))
            x, y = np.pad(x, pad, mode="reflect"), np.pad(y, pad, mode="reflect")
        return x.astype(np.float32), y.astype(np.float32), np.repeat(covered[None], count, axis=0)


def _dihedral(crops: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """(N, C, s, s) crops turned ``turns`` x 90 degrees, then mirrored left-right when ``flip``."""
    out = np.rot90(crops, turns, axes=(2, 3))
    return out[..., ::-1] if flip else out


def dihedral_batch(arrays: Tuple[np.ndarray, ...], rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
    """Each crop (the same item of every array, (N, C, s, s)) turned and mirrored at random, the
    same way in every array."""
    size = len(arrays[0])
    turns = rng.integers(4, size=size)
    flips = rng.random(size) < 0.5
    arrays = [np.array(a) for a in arrays]
    for k in range(4):
        for flip in (False, True):
            chosen = np.flatnonzero((turns == k) & (flips == flip))
            if chosen.size:
                for a in arrays:
                    a[chosen] = _dihedral(a[chosen], k, flip)
    return tuple(np.ascontiguousarray(a) for a in arrays)
