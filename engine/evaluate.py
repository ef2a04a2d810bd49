"""Reconstruction of whole (small) scenes and their evaluation against the true cube."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from engine.cascade import Cascade
from engine.config import SamplerConfig, override_sampler
from engine.data import load_scene, render_rgb, scene_on_grid
from engine.diffusion.noise import sampler_noise
from engine.errors import InputError
from engine.metrics import all_metrics, per_band_psnr
from engine.spectral import load_srf_csv, simulate_rgb_from_bands


@dataclass
class Reconstruction:
    full: np.ndarray    # (N, H, W) physical units
    stage1: np.ndarray  # (n, H, W)
    nfe: int
    network_passes: int
    seconds: float


def sampler_settings(cascade: Cascade, sampler: Optional[str] = None, steps: Optional[int] = None,
                     guidance: Optional[float] = None, pdt: Sequence = (None, None),
                     truncation_target: Optional[str] = None, no_pdt: bool = False,
                     guidance_stage1: Optional[float] = None) -> SamplerConfig:
    """The bundle's default sampler with the given fields overridden (InputError naming the setting
    when invalid)."""
    return override_sampler(cascade.config.sampler, sampler=sampler, steps=steps, guidance=guidance,
                            pdt=("off", "off") if no_pdt else pdt, truncation_target=truncation_target,
                            guidance_stage1=guidance_stage1)


def reconstruct(cascade: Cascade, rgb: np.ndarray, settings: SamplerConfig, seed: int = 0,
                valid: Optional[np.ndarray] = None, progress=None, cancel=None, samples: int = 1) -> Reconstruction:
    """Run the cascade on one whole RGB image (3, H, W) in physical units; ``samples`` > 1 averages
    that many samples (seeds seed, seed + 1, ...), an estimate of the posterior mean."""
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    transform = cascade.config.normalisation
    stats = cascade.image_statistics(rgb, valid)
    h, w = rgb.shape[1:]
    m = cascade.config.size_multiple
    ph, pw = (-h) % m, (-w) % m
    model_rgb = transform.condition(rgb.astype(np.float32), stats)
    if ph or pw:
        model_rgb = np.pad(model_rgb, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge")
    cond = torch.from_numpy(np.ascontiguousarray(model_rgb))[None]
    started = time.time()
    full = stage1 = None
    nfe = passes = 0
    for k in range(samples):
        report = None if progress is None else (lambda f, k=k: progress((k + f) / samples))
        noise = sampler_noise(seed + k, cond, [(0, 0)], per_pixel=cascade.config.context_radius == 0)
        out = cascade.sample(cond, settings, noise, report, cancel)
        full = out.full if full is None else full + out.full
        stage1 = out.stage1 if stage1 is None else stage1 + out.stage1
        nfe, passes = nfe + out.nfe, passes + out.network_passes
    seconds = time.time() - started
    scale, offset = transform.output_scale(rgb.astype(np.float32), stats)
    full = (full / samples)[0, :, :h, :w].cpu().numpy() * scale + offset
    stage1 = (stage1 / samples)[0, :, :h, :w].cpu().numpy() * scale + offset
    return Reconstruction(full.astype(np.float32), stage1.astype(np.float32), nfe, passes, seconds)


def parse_rgb_spec(spec: str):
    """'bands:4,11,22' (0-based band indices of the model grid) or 'srf:FILE.csv'."""
    kind, _, value = spec.partition(":")
    if kind == "bands":
        try:
            indices = tuple(int(v) for v in value.split(","))
        except ValueError:
            indices = ()
        if len(indices) != 3:
            raise InputError(f"cannot read {spec!r}: give three 0-based band indices, e.g. bands:4,11,22",
                             parameter="rgb")
        return "bands", indices
    if kind == "srf":
        return "srf", load_srf_csv(value)
    raise InputError(f"cannot read {spec!r}: use bands:R,G,B or srf:FILE.csv", parameter="rgb")


def scene_rgb(scene, grid_cube: np.ndarray, kind: str, value) -> np.ndarray:
    """The RGB a parsed ``--rgb`` spec makes of a scene: grid bands by index, or an SRF rendering."""
    return simulate_rgb_from_bands(grid_cube, value) if kind == "bands" else render_rgb(scene, value)


def evaluate_scene(cascade: Cascade, scene_path, rgb_spec: str, settings: SamplerConfig, seed: int = 0,
                   rows=None, cols=None, progress=None, samples: int = 1) -> dict:
    """Metrics of the cascade on a scene; with band-index RGB the input bands are also excluded."""
    kind, value = parse_rgb_spec(rgb_spec)
    scene = load_scene(scene_path, rows, cols)
    cube, covered = scene_on_grid(scene, cascade.config.wavelengths_nm, cascade.config.fwhm_nm)
    rgb = scene_rgb(scene, cube, kind, value)
    input_bands = tuple(value) if kind == "bands" else ()
    rec = reconstruct(cascade, rgb, settings, seed, scene.valid, progress, samples=samples)
    uncovered = tuple(int(i) for i in np.flatnonzero(~covered))
    reference = cube
    metrics = all_metrics(reference, rec.full, exclude_bands=uncovered, valid_mask=scene.valid)
    metrics_no_input = all_metrics(reference, rec.full, exclude_bands=tuple(set(uncovered) | set(input_bands)),
                                   valid_mask=scene.valid)
    return {
        "scene": scene.name, "model": cascade.config.name, "rgb": rgb_spec,
        "sampler": settings.name, "steps": settings.steps, "guidance": settings.guidance,
        "pdt": [settings.pdt_stage1, settings.pdt_stage2], "truncation_target": settings.truncation_target,
        "seed": seed, "samples": samples, "nfe": rec.nfe, "network_passes": rec.network_passes, "seconds": round(rec.seconds, 2),
        "metrics": metrics, "metrics_without_input_bands": metrics_no_input,
        "per_band_psnr": [float(v) for v in per_band_psnr(reference, rec.full, valid_mask=scene.valid)],
        "_arrays": (reference, rec.full, scene.valid),
    }


def write_figures(result: dict, wavelengths, out_dir) -> list:
    from engine.report import plot_per_band_psnr, plot_spectral_profiles, select_profile_pixels

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reference, estimate, valid = result["_arrays"]
    label = f"{result['sampler']} {result['network_passes']} passes"
    psnr_png = plot_per_band_psnr(wavelengths, {label: np.array(result["per_band_psnr"])},
                                  out_dir / f"{result['scene']}_psnr.png", title=f"Per-band PSNR, {result['scene']}")
    pixels = select_profile_pixels(reference, 4, valid)
    profiles_png = plot_spectral_profiles(wavelengths, reference, {label: estimate}, pixels,
                                          out_dir / f"{result['scene']}_profiles.png")
    return [str(psnr_png), str(profiles_png)]


def save_json(result: dict, path) -> None:
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(clean, indent=2) + "\n")
