"""Writes a bundle's model card (``MODEL_CARD.md`` beside the weights) with measured quality.

``python -m benchmarks.model_card --model resources/models/scdm-default --data ../shared/data``
evaluates the bundle on a central crop of every scene with every training camera (default sampler)
and records the metrics next to what the config says about training data, bands and units.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.data import SHARED_DATA
from engine.bundle import load_bundle
from engine.data import load_scene
from engine.evaluate import evaluate_scene

PARAMETERISATION_TEXT = {"eps": "the paper's noise prediction (with a Gaussian skip path)",
                         "edm": "EDM preconditioning (x_0 prediction scaled by the residual's per-band std)"}


def network_text(config) -> str:
    unet = config.stage1.unet
    text = (f"Each stage's network is the {unet.architecture} UNet (width {unet.base_channels}, multipliers "
            f"{list(unet.channel_multipliers)}, {unet.encoder_res_blocks} encoder block(s), condition window "
            f"{unet.condition_window} px), {unet.network_class.description}.")
    if config.context_radius is not None:
        text += (f" The whole cascade sees {config.context_radius} px of RGB on each side of a pixel, so any tile "
                 "size gives the same result.")
    return text + f" Default tile: {config.inference_tile} px."


def measure(model_dir: Path, data_dir: Path, crop: int, seed: int) -> list:
    cascade = load_bundle(model_dir)
    config = cascade.config
    scenes = sorted((data_dir / "scenes").glob("*.npz")) + [data_dir / "geotiff" / "enmap_potsdam" /
                                                           "enmap_potsdam_tiles_mosaic.tif"]
    rows = []
    for scene in scenes:
        h, w = load_scene(scene).cube.shape[1:]
        r0, c0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        region = ((r0, min(h, r0 + crop)), (c0, min(w, c0 + crop)))
        for camera in config.rgb_simulation.cameras:
            srf = data_dir / "srf" / f"{camera}.csv"
            try:
                result = evaluate_scene(cascade, scene, f"srf:{srf}", config.sampler, seed, *region)
            except ValueError as exc:
                rows.append({"scene": scene.stem, "camera": camera, "error": str(exc)})
                continue
            rows.append({"scene": scene.stem, "camera": camera, **result["metrics"],
                         "seconds": result["seconds"]})
            print(rows[-1], flush=True)
    return rows


LIMITS = [
    "## Limits",
    "- Near-infrared bands (above about 700 nm) are inferred from visible light: an RGB camera with an "
    "IR-cut filter records nothing there, so they come from the correlations learned on the training "
    "scenes (vegetation, roofs, water) and are the least reliable.",
    "- The training data are a few small scenes (urban, vegetation, agricultural); unusual materials "
    "get plausible, not measured, spectra.",
    "- A trained-on-CPU model: small network, short training. Expect smoother spectra than a sensor's.",
    "- Saturated or heavily compressed RGB (JPEG) breaks the relation between the channels that it relies on.",
    "",
]


def _model_lines(config) -> list:
    wl = config.wavelengths_nm
    return [
        f"# Model card: {config.name}", "", config.description, "",
        "## What it does",
        f"Estimates {config.band_count} bands from {wl[0]:.1f} to {wl[-1]:.1f} nm "
        f"(spacing {wl[1] - wl[0]:.1f} nm, FWHM {config.fwhm_nm[0]:.1f} nm) from an RGB image, through a two-stage "
        f"spectral cascade: stage 1 estimates {len(config.stage1_indices)} bands (indices {list(config.stage1_indices)}), "
        f"stage 2 all {config.band_count} conditioned on stage 1 and the RGB. Each stage is a conditional diffusion "
        f"model on the residual of a per-pixel affine map from its condition; networks use "
        f"{PARAMETERISATION_TEXT[config.stage1.parameterisation]}. {network_text(config)}", "",
        "## Units of the output",
        "The same radiometric units as the input RGB. The model works in units of the input's "
        f"{config.normalisation.percentile:g}th-percentile RGB value, computed once per raster; the output is scaled "
        "back by that value. Give it reflectance x 10000 and it answers in reflectance x 10000; give it 8-bit "
        "DN and it answers in the same 8-bit scale (values can exceed 255, and near-infrared bands often do).", "",
    ]


def _training_lines(config) -> list:
    t = config.training
    lines = [
        "## Training data",
        f"Iterations per stage: {t.get('iterations')}, batch {t.get('batch_size')}, crops {t.get('crop')} px, "
        f"learning rate {t.get('learning_rate')}, seed {t.get('seed')}, device {t.get('device')}, "
        f"{t.get('seconds')} s in all.", "",
        "| scene | size | grid bands covered | RGB renderings |", "|---|---|---|---|",
    ]
    for s in t.get("scenes", []):
        lines.append(f"| {s['scene']} | {s['size'][0]} x {s['size'][1]} | {s['bands_covered']} / {config.band_count} | "
                     f"{s['renderings']} |")
    sim = config.rgb_simulation
    lines += ["", "Bands a scene does not cover are masked out of the loss.", "",
              "## RGB simulation",
              f"Each crop's RGB is the scene integrated against one of the camera responses {list(sim.cameras)} "
              f"(shared/data/srf), then multiplied per channel by a white balance drawn from {list(sim.white_balance_range)} "
              f"and by a gain drawn log-uniformly from {list(sim.gain_range)}.", "",
              "## Loss curve",
              ]
    for stage, loss in t.get("loss", {}).items():
        lines.append(f"- {stage}: {loss['first']:.4f} (first 10 %) -> {loss['last']:.4f} (last 10 %)")
    return lines


def _quality_lines(config, rows: list, command: str) -> list:
    ok = [r for r in rows if "error" not in r]
    lines = ["", "## Measured quality",
             f"Produced by `{command}`: a central crop of every scene, every training camera, the default sampler "
             f"({config.sampler.name}, {config.sampler.steps} steps, guidance {config.sampler.guidance}). These scenes "
             "were seen in training, so these are in-sample figures; out-of-sample figures are in "
             "docs/paper-protocol/paper_protocol.md.", "",
             "| scene | camera | RMSE | MPSNR (dB) | MSSIM | SAM (rad) |", "|---|---|---|---|---|---|"]
    for r in ok:
        lines.append(f"| {r['scene']} | {r['camera']} | {r['rmse']:.4g} | {r['mpsnr']:.2f} | {r['mssim']:.3f} | {r['sam']:.3f} |")
    if ok:
        lines.append(f"| mean | | | {np.mean([r['mpsnr'] for r in ok]):.2f} | {np.mean([r['mssim'] for r in ok]):.3f} | "
                     f"{np.mean([r['sam'] for r in ok]):.3f} |")
    for r in rows:
        if "error" in r:
            lines.append(f"\nNot measured: {r['scene']} with {r['camera']}: {r['error']}")
    return lines + [""]


def write_card(model_dir: Path, rows: list, command: str) -> Path:
    from engine.bundle import read_config

    config = read_config(model_dir)
    lines = _model_lines(config) + _training_lines(config) + _quality_lines(config, rows, command) + LIMITS
    path = model_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> int:
    import sys

    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_card", description=__doc__)
    parser.add_argument("--model", default="resources/models/scdm-default")
    parser.add_argument("--data", default=str(SHARED_DATA))
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.time()
    rows = measure(Path(args.model), Path(args.data), args.crop, args.seed)
    command = "python -m benchmarks.model_card " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_card(Path(args.model), rows, command.strip())
    print(f"{path} written in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
