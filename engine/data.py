"""Training scenes: loading, putting them on the model's band grid, and drawing augmented crops."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from engine.config import BundleConfig, RGBSimulation
from engine.errors import InputError
from engine.spectral import SpectralResponse, load_srf_csv, resample_cube, simulate_rgb_from_bands, simulate_rgb_from_srf

# Where the measurement commands find the shared scenes by default: ../shared/data beside the repository.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HOUSTON_SCENE = SHARED_DATA / "scenes" / "houston2018_casi48.npz"


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

        from engine.report import read_wavelengths

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
    """The scene resampled to the model grid and which grid bands it covers."""
    target = np.asarray(wavelengths_nm, dtype=np.float64)
    source = scene.wavelengths_nm
    if source.shape == target.shape and np.allclose(source, target, atol=0.05):
        return scene.cube, np.ones(target.size, bool)
    order = np.argsort(source)
    resampled, covered = resample_cube(scene.cube[order], source[order], target, np.asarray(fwhm_nm))
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
    if simulation.kind != "srf":
        raise InputError(f"unknown RGB simulation '{simulation.kind}': use bands or srf")
    renderings = []
    for camera in cameras:
        try:
            renderings.append(render_rgb(scene, camera))
        except InputError:
            continue  # this camera's responses fall outside the scene's spectral range
    if not renderings:
        raise InputError(f"scene {scene.name} covers none of the camera responses")
    return renderings


class TrainingSet:
    """Augmented (RGB, cube) crops in model units, with per-band coverage masks.

    Crops are drawn with probability proportional to scene area; flips and rot90 on every crop; with
    SRF simulation, a random camera, per-channel white balance and a global gain, and the
    ``rgb_percentile`` normalisation taken from the whole augmented scene as inference does.
    """

    def __init__(self, config: BundleConfig, scenes: Sequence[Scene], srf_dir: Optional[Path] = None):
        self.config = config
        simulation = config.rgb_simulation
        cameras = [load_srf_csv(Path(srf_dir) / f"{name}.csv") for name in simulation.cameras] if simulation.kind == "srf" else []
        self.items = []
        for scene in scenes:
            cube, covered = scene_on_grid(scene, config.wavelengths_nm, config.fwhm_nm)
            rgbs = rgb_for_scene(scene, cube, simulation, cameras)
            self.items.append((scene, cube, covered.astype(np.float32), rgbs))
        areas = np.array([s.valid.sum() for s, *_ in self.items], dtype=np.float64)
        self.weights = areas / areas.sum()

    def summary(self) -> list:
        return [{"scene": s.name, "size": [int(s.cube.shape[1]), int(s.cube.shape[2])],
                 "bands_covered": int(c.sum()), "renderings": len(r)} for s, _, c, r in self.items]

    def batch(self, size: int, crop: int, rng: np.random.Generator):
        sim = self.config.rgb_simulation
        norm = self.config.normalisation
        cubes, rgbs, masks = [], [], []
        for _ in range(size):
            scene, cube, covered, renderings = self.items[rng.choice(len(self.items), p=self.weights)]
            rgb = renderings[rng.integers(len(renderings))]
            if sim.kind == "srf":
                balance = rng.uniform(*sim.white_balance_range, size=3).astype(np.float32)
                gain = np.float32(np.exp(rng.uniform(np.log(sim.gain_range[0]), np.log(sim.gain_range[1]))))
                rgb = rgb * (balance * gain)[:, None, None]
                cube = cube * gain
            fixed = norm.resolved(rgb, scene.valid)
            h, w = cube.shape[1:]
            ch, cw = min(crop, h), min(crop, w)
            for _attempt in range(20):
                r = rng.integers(0, h - ch + 1)
                c = rng.integers(0, w - cw + 1)
                if scene.valid[r:r + ch, c:c + cw].mean() >= 0.95:
                    break
            x = fixed.to_model(cube[:, r:r + ch, c:c + cw])
            y = fixed.to_model(rgb[:, r:r + ch, c:c + cw])
            if ch < crop or cw < crop:
                pad = ((0, 0), (0, crop - ch), (0, crop - cw))
                x, y = np.pad(x, pad, mode="reflect"), np.pad(y, pad, mode="reflect")
            k = rng.integers(4)
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
            if rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, :, ::-1]
            cubes.append(np.ascontiguousarray(x))
            rgbs.append(np.ascontiguousarray(y))
            masks.append(covered)
        return np.stack(cubes), np.stack(rgbs), np.stack(masks)
