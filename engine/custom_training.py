"""A model of one's own: train a cascade from hyperspectral rasters and a camera response (the
engine side of the QGIS algorithm "Train spectral super-resolution model").

The user gives hyperspectral rasters with band wavelengths (GDAL / EnMAP-Box metadata: what
``engine.data.load_scene`` reads), the camera whose RGB the model will receive (the red, green and
blue bands of a sensor of ``engine.band_sets.SENSORS``, or a response CSV with red, green and blue
columns), a preset and an output folder. The recipe is the bundled model's (configs/default_model.json)
with the user's rasters and camera: the model grid (RGB -> 12 -> 48 bands, 374-1046 nm), per stage
a per-pixel mean network and a diffusion model of its residual, one DDIM step per stage by default,
the chromatic input transform, and training RGB made as real imagery is (engine.rgb_simulation:
haze, white-balance error, blur, noise, linear / sRGB / gamma / percentile-stretch 8-bit encodings,
JPEG) through the given camera. Only the spectral library's synthetic scenes are left out (the
library is a development dependency), so the model learns from the given rasters alone. Because the
networks are the bundled model's, training can start from it (``start_from="bundled"``) or from
another model trained here: fine-tuning.

Training writes into ``<output>.training/`` (the recipe, the camera table, checkpoints every 100
steps); the bundle appears at ``<output>`` only when every network is trained (an earlier bundle
there is replaced then), with ``MODEL_CARD.md`` beside its weights, and the working folder is
removed. A cancelled or failed run keeps the working folder, and ``resume`` continues it.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from engine.band_sets import SENSORS, TABLES, read_response_table
from engine.errors import Cancelled, InputError


@dataclass(frozen=True)
class Preset:
    """Iterations of each mean network and each diffusion network, and the batch size."""

    mean_iterations: int
    iterations: int
    batch_size: int
    about: str


PRESETS: Dict[str, Preset] = {
    "cpu-quick": Preset(150, 75, 256, "a first look"),
    "cpu": Preset(600, 300, 256, "a usable model on a CPU; the budget of the leave-scene-out models"),
    "gpu": Preset(6000, 3000, 1024, "ten times the cpu preset's iterations, four times its batch, for a CUDA GPU"),
}
# The red, green and blue bands of each sensor's response table (engine.band_sets.SENSORS).
SENSOR_RGB = {"sentinel2": ("B4", "B3", "B2"), "landsat8-9": ("B4", "B3", "B2")}
CAMERA_STEM = "camera"
BUNDLED = "bundled"  # start_from: the plugin's own model


def working_folder(output: Path) -> Path:
    return output.with_name(output.name + ".training")


def write_camera(camera: str, folder: Path) -> None:
    """``folder/camera.csv`` with red, green and blue columns: a sensor's RGB bands or the user's CSV."""
    if camera in SENSOR_RGB:
        table = read_response_table(TABLES / SENSORS[camera][0])
        first_words = [name.split()[0] for name in table.band_names]
        rows = np.stack([table.curves[first_words.index(band)] for band in SENSOR_RGB[camera]])
        wavelengths = table.wavelengths_nm
    else:
        from engine.spectral import load_srf_csv

        try:
            response = load_srf_csv(camera)  # InputError naming what is missing (red, green, blue columns)
        except InputError as exc:
            raise InputError(str(exc), parameter="camera") from None
        wavelengths, rows = response.wavelengths_nm, response.responses
    lines = ["wavelength_nm,red,green,blue"] + [",".join([f"{w:g}"] + [f"{v:.6g}" for v in column])
                                                for w, column in zip(wavelengths, rows.T)]
    (folder / f"{CAMERA_STEM}.csv").write_text("\n".join(lines) + "\n")


def check_rasters(rasters: Sequence[str]) -> None:
    from engine.data import load_scene

    if not rasters:
        raise InputError("no hyperspectral raster given: choose one or more rasters with band wavelengths",
                         parameter="scenes")
    for path in rasters:
        if not Path(path).is_file():
            raise InputError(f"hyperspectral raster {path} not found", parameter="scenes")
        try:
            load_scene(path)
        except InputError as exc:
            raise InputError(str(exc), parameter="scenes") from None


def camera_label(camera: str) -> str:
    return f"{camera} (bands {', '.join(SENSOR_RGB[camera])})" if camera in SENSOR_RGB else Path(camera).name


def start_folder(start_from: Optional[str]) -> Optional[Path]:
    """None (from scratch), the bundled model for "bundled", or the model folder given."""
    if start_from in (None, ""):
        return None
    if start_from == BUNDLED:
        from engine.bundle import default_bundle_path

        return default_bundle_path()
    folder = Path(start_from).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise InputError(f"the model to start from, {folder}, is no model folder (it has no config.json)",
                         parameter="init_from")
    return folder


def recipe(rasters: Sequence[str], work: Path, preset: Preset, name: str, camera: str,
           start: Optional[Path] = None) -> dict:
    """The training config (``engine.training_config.TrainingConfig`` fields) for the run."""
    fine_tune = {"init_from": str(start)} if start is not None else {}
    return {**fine_tune,
        "name": name,
        "description": f"Trained from {len(rasters)} hyperspectral raster(s) with RGB through {camera_label(camera)}: "
                       "RGB -> 12 -> 48 bands (374.4-1046.5 nm), mean-anchored per-pixel stages.",
        "output": str(work / "bundle"),
        "grid": "houston",
        "scenes": [{"path": str(Path(r).resolve())} for r in rasters],
        "srf_dir": str(work),
        "library": "none",
        "synthetic_share": 0.0,
        "rgb": {"kind": "imaging", "cameras": [CAMERA_STEM]},
        "normalisation": {"kind": "chromatic", "dark_percentile": 1.0, "white_percentile": 99.0,
                          "brightness_floor": 0.02},
        "unet": {"architecture": "pixel_mlp", "base_channels": 64, "channel_multipliers": [1],
                 "encoder_res_blocks": 2, "attention_downsample": [], "condition_window": 1},
        "mean_network": {"architecture": "pixel_mlp", "base_channels": 128, "channel_multipliers": [1],
                         "encoder_res_blocks": 3, "attention_downsample": [], "condition_window": 1},
        "stage2_condition_source": "stage1_mean",
        "stage2_condition_noise": 1.0,
        "null_condition": -10.0,
        "parameterisation": "edm",
        "sampler": {"name": "ddim", "steps": 1, "guidance": 0.0, "pdt_stage1": None, "pdt_stage2": None,
                    "truncation_target": "x0", "truncation_scope": "pixel"},
        "iterations": preset.iterations,
        "mean_iterations": preset.mean_iterations,
        "batch_size": preset.batch_size,
        "crop": 8,
        "learning_rate": 0.001,
        "learning_rate_schedule": "cosine",
        "ema_decay": 0.999,
        "sam_weight": 1.0,
        "p_uncond": 0.1,
        "checkpoint_every": 100,
    }


def train_model(rasters: Sequence[str], camera: str, preset: str, output, device: str = "auto",
                resume: bool = False, progress: Optional[Callable[[float, str], None]] = None,
                cancel: Optional[Callable[[], bool]] = None, start_from: Optional[str] = None) -> dict:
    """Train a bundle at ``output`` (see the module docstring), from scratch or starting from
    ``start_from`` ("bundled" or a model folder); returns ``engine.train.train``'s summary with the
    bundle's path and the seconds taken."""
    from engine.train import train

    if preset not in PRESETS:
        raise InputError(f"unknown preset '{preset}': use {', '.join(PRESETS)}", parameter="preset")
    output = Path(output).expanduser().resolve()
    if output.exists() and not (output / "config.json").is_file():
        raise InputError(f"{output} exists and is not a model folder: choose a new folder name", parameter="output")
    check_rasters(rasters)
    start = start_folder(start_from)
    work = working_folder(output)
    if work.exists() and not resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_camera(camera, work)
    recipe_path = work / "recipe.json"
    recipe_path.write_text(json.dumps(recipe(rasters, work, PRESETS[preset], output.name, camera, start), indent=1))
    started = time.time()
    summary = train(recipe_path, resume=resume, device=device, show_progress=False,
                    on_step=_step_reporter(PRESETS[preset], progress, cancel))
    _put_in_place(Path(summary["output"]), output)
    shutil.copy(recipe_path, output / "training_recipe.json")
    write_card(output, rasters, camera, preset, time.time() - started, start)
    shutil.rmtree(work, ignore_errors=True)
    return {**summary, "output": str(output), "seconds": time.time() - started}


def _step_reporter(preset: Preset, progress, cancel):
    """A training-loop callback: progress over all four networks, and Cancelled when asked."""
    total = 2 * (preset.mean_iterations + preset.iterations)
    done = [0]

    def on_step(label: str, step: int) -> None:
        done[0] += 1
        if progress is not None:  # a log line every 100 steps, the fraction at every step
            progress(min(1.0, done[0] / total), f"{label}: step {step}" if step % 100 == 0 else "")
        if cancel is not None and cancel():
            raise Cancelled("training was cancelled: the checkpoints are kept; resume to continue")
    return on_step


def _put_in_place(bundle: Path, output: Path) -> None:
    """The finished bundle at ``output``, replacing an earlier one only now."""
    if output.exists():
        old = output.with_name(f".{output.name}.old-{uuid.uuid4().hex[:8]}")
        output.rename(old)
        bundle.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        bundle.rename(output)


def write_card(output: Path, rasters: Sequence[str], camera: str, preset: str, seconds: float,
               start: Optional[Path] = None) -> Path:
    """``MODEL_CARD.md`` beside the weights: what it was trained from, how, how long, and its limits."""
    config = json.loads((output / "config.json").read_text())
    training = config.get("training", {})
    scenes = training.get("scenes", [])
    lines = [f"# Model card: {config['name']}", "", config.get("description", ""), "",
             "## Training", "",
             f"- Rasters ({len(rasters)}): " + "; ".join(
                 f"{Path(r).name} ({s.get('size', ['?', '?'])[0]} x {s.get('size', ['?', '?'])[1]} px, "
                 f"{s.get('bands_covered', '?')} of 48 bands covered)" for r, s in zip(rasters, scenes)),
             f"- Camera: {camera_label(camera)} (the RGB the model expects)",
             f"- Started from: {start} (fine-tuned)" if start is not None else "- Started from: scratch",
             f"- Preset: {preset} ({PRESETS[preset].about}): {PRESETS[preset].mean_iterations} iterations per mean "
             f"network, {PRESETS[preset].iterations} per diffusion network, batch {PRESETS[preset].batch_size}",
             f"- Time: {seconds:.0f} s on {training.get('device', '?')} ({training.get('threads', '?')} torch thread(s))",
             f"- Final losses: " + ", ".join(f"{k} {v['last']:.4f}" for k, v in training.get("loss", {}).items()),
             "", "## Limits", "",
             "- It knows the materials of the rasters it was trained on, nothing else: test it on a raster it did not "
             "see before trusting it (the Evaluate algorithm compares an estimate with a reference).",
             "- It expects RGB from the camera above (trained on linear, sRGB, gamma and per-band stretched 8-bit "
             "renderings of it); another camera's colours shift its spectra.",
             "- Bands the rasters do not cover are learned from nothing (see the coverage above).", ""]
    path = output / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path
