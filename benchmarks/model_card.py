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

PARAMETERISATION_TEXT = {"eps": "the paper's noise prediction (with a Gaussian skip path)",
                         "edm": "EDM preconditioning (x_0 prediction scaled by the residual's per-band std)"}


def network_text(config) -> str:
    unet = config.stage1.unet
    text = (f"Each stage's diffusion network is the {unet.architecture} network (width {unet.base_channels}, "
            f"multipliers {list(unet.channel_multipliers)}, {unet.encoder_res_blocks} block(s), condition window "
            f"{unet.condition_window} px), {unet.network_class.description}.")
    mean = config.stage1.mean_network
    if mean is not None:
        text += (f" Each stage is mean-anchored: a deterministic {mean.architecture} network (width "
                 f"{mean.base_channels}, {mean.encoder_res_blocks} block(s)) predicts the conditional mean, trained "
                 "with MSE + the spectral-angle term, and the diffusion model samples the residual around it.")
    if config.context_radius == 0:
        text += " The networks are per-pixel: a pixel's spectrum does not depend on the tiling."
    elif config.context_radius is not None:
        text += (f" The whole cascade sees {config.context_radius} px of RGB on each side of a pixel, so any tile "
                 "size gives the same result.")
    return text + f" Default tile: {config.inference_tile} px."


RADIANCE_SCENES = ("houston2018_casi48",)  # radiance-like DN: converted to reflectance as training does


def measure(model_dir: Path, data_dir: Path, crop: int, seed: int) -> list:
    """Every shared scene (a central crop) through every training camera, linear light, scored as
    ``benchmarks.generalisation`` scores: SAM over the bands the scene covers, MPSNR after one
    least-squares gain, against the scene in reflectance."""
    from benchmarks.generalisation import TestImage, model_reconstructor, scores
    from engine.imaging_data import scene_source
    from engine.rgb_simulation import camera_on_grid
    from engine.spectral import load_srf_csv
    from engine.spectral_library import load_earthlib

    config = load_bundle(model_dir).config
    run = model_reconstructor(model_dir)
    library = load_earthlib(config.wavelengths_nm, config.fwhm_nm)
    scenes = sorted((data_dir / "scenes").glob("*.npz")) + [data_dir / "geotiff" / "enmap_potsdam" /
                                                           "enmap_potsdam_tiles_mosaic.tif"]
    rows = []
    for scene_path in scenes:
        h, w = load_scene(scene_path).cube.shape[1:]
        r0, c0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        scene = load_scene(scene_path, (r0, min(h, r0 + crop)), (c0, min(w, c0 + crop)))
        source = scene_source(scene, config, scene_path.stem in RADIANCE_SCENES, library)
        for camera_name in config.rgb_simulation.cameras:
            camera = camera_on_grid(load_srf_csv(data_dir / "srf" / f"{camera_name}.csv"), config.wavelengths_nm)
            image = TestImage(scene_path.stem, camera_name, "linear", camera.render(source.cube), source.cube,
                              source.valid, source.covered.astype(bool))
            started = time.time()
            rows.append({"scene": scene_path.stem, "camera": camera_name, **scores(image, run(image.rgb, image.valid)),
                         "seconds": round(time.time() - started, 2)})
            print(rows[-1], flush=True)
    return rows


LIMITS = [
    "## Limits",
    "- Near-infrared bands (above about 700 nm) are inferred from visible light: an RGB camera with an "
    "IR-cut filter records nothing there, so they come from the correlations learned on the training "
    "scenes (vegetation, roofs, water) and are the least reliable.",
    "- Dark, dense vegetation (tree crowns, full canopies) gets too little near-infrared: on rgbn.tif the tree "
    "plantation is dark in the estimate and bright in the real NIR band (docs/generalisation/README.md).",
    "- The training data are a few small scenes (urban, vegetation, agricultural); unusual materials "
    "get plausible, not measured, spectra.",
    "- A trained-on-CPU model: small networks, short training. Expect smoother spectra than a sensor's.",
    "- The output's shape is reflectance's, its level follows the image's exposure and white balance: it is "
    "proportional to reflectance only for a white-balanced image, and absolute only after calibration.",
    "- Saturated or heavily compressed RGB (JPEG) breaks the relation between the channels that it relies on.",
    "",
]


def _baseline_text(config) -> str:
    return "its mean network's estimate" if config.stage1.mean_network is not None else \
        "a per-pixel affine map from its condition"


def _model_lines(config) -> list:
    wl = config.wavelengths_nm
    return [
        f"# Model card: {config.name}", "", config.description, "",
        "## What it does",
        f"Estimates {config.band_count} bands from {wl[0]:.1f} to {wl[-1]:.1f} nm "
        f"(spacing {wl[1] - wl[0]:.1f} nm, FWHM {config.fwhm_nm[0]:.1f} nm) from an RGB image, through a two-stage "
        f"spectral cascade: stage 1 estimates {len(config.stage1_indices)} bands (indices {list(config.stage1_indices)}), "
        f"stage 2 all {config.band_count} conditioned on stage 1 and the RGB. Each stage is a conditional diffusion "
        f"model of the residual around {_baseline_text(config)}; networks use "
        f"{PARAMETERISATION_TEXT[config.stage1.parameterisation]}. {network_text(config)}", "",
        "## Units of the output", _units_text(config), "",
    ]


def _units_text(config) -> str:
    transform = config.normalisation
    if transform.kind == "chromatic":
        return ("Reflectance-shaped, in the input's scale: every training spectrum is reflectance (radiance scenes "
                "converted by an empirical line), and the model outputs spectrum / brightness, multiplied back by "
                "the pixel's mean linear RGB and the image's white level. For a white-balanced image the output is "
                "proportional to surface reflectance; with 8-bit input it is in linear-light units of the 0-255 "
                "codes (the engine decodes sRGB first, see radiometry). Never negative (softplus output). The "
                f"image's white and dark levels are its {transform.white_percentile:g}th and "
                f"{transform.dark_percentile:g}th percentiles per channel, computed once per raster. "
                + condition_text(transform))
    return ("The same radiometric units as the input RGB. The model works in units of the input's "
            f"{transform.percentile:g}th-percentile RGB value, computed once per raster; the output is scaled "
            "back by that value.")


def condition_text(transform) -> str:
    """What the networks see of a pixel under the chromatic transform."""
    if not transform.brightness_input:
        return "The networks see a pixel's colour alone (its chromaticity after those corrections), not its brightness."
    if transform.brightness_cap is not None:
        return (f"The networks see a pixel's colour and its brightness against the image's white up to "
                f"{transform.brightness_cap:g} of the white; brighter pixels read the same.")
    return "The networks see a pixel's colour and its brightness against the image's white."


def _scene_lines(config) -> list:
    lines = ["| source | size | grid bands covered |", "|---|---|---|"]
    for s in config.training.get("scenes", []):
        if "size" in s:
            lines.append(f"| {s['scene']} | {s['size'][0]} x {s['size'][1]} | {s['bands_covered']} / {config.band_count} |")
        else:
            lines.append(f"| {s['scene']}: share {s.get('share')} of the renderings | | |")
    return lines


def _library_lines(config) -> list:
    if config.rgb_simulation.kind != "imaging":
        return []
    from engine.spectral_library import load_earthlib

    counts = load_earthlib(config.wavelengths_nm, config.fwhm_nm).counts()
    listed = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
    return ["", f"Spectral library (earthlib, MIT; {sum(counts.values())} reflectance spectra): {listed}. "
            "Synthetic scenes place these materials, mixtures of them, and water taken from the real scenes in "
            "aerial layouts (fields, roofs, roads, tree crowns, shadows)." + _layout_text(config),
            "Radiance scenes (Houston CASI DN) are converted to reflectance by an empirical line on the scene's "
            "own dark and bright pixels before rendering."]


def _layout_text(config) -> str:
    synthetic = [entry for entry in config.training.get("scenes", []) if "share" in entry]
    options = synthetic[0] if synthetic else {}
    text = ""
    if options.get("canopy_structure"):
        text += (" Tree crowns carry their own shade, lit by light the leaves scattered (dark in the visible, "
                 "bright in the near-infrared), and a quarter of the scenes hold a dense stand of crowns.")
    if options.get("urban_share"):
        text += (f" {options['urban_share']:.0%} of the synthetic scenes are towns: impervious ground, roofs "
                 "casting shadows, roads, lawns and street trees.")
    return text


def _simulation_text(config) -> str:
    sim = config.rgb_simulation
    if sim.kind != "imaging":
        return (f"Each crop's RGB is the scene integrated against one of the camera responses {list(sim.cameras)} "
                f"(shared/data/srf), with white balance drawn from {list(sim.white_balance_range)}.")
    c = sim.conditions
    return (f"Each rendering draws a response: the cameras {list(sim.cameras)}, {list(sim.ir_cut_cameras)} behind an "
            f"IR-cut filter, the satellite bands {list(sim.satellite_bands)}"
            f"{', the CIE sRGB observer' if sim.srgb_observer else ''}, or for {sim.random_camera_share:.0%} of them a "
            f"random plausible response; haze (probability {c.haze_probability}, up to {c.haze_max} of the white), "
            f"white-balance error (sigma {c.white_balance_sigma}), blur up to {c.blur_max} px, misregistration up to "
            f"{c.misregistration_max} px, noise up to {c.noise_max} of the white; encodings {list(c.encodings)} "
            f"(8-bit ones decoded as the engine's auto radiometry does), JPEG (probability {c.jpeg_probability}, "
            f"quality {list(c.jpeg_quality)}).")


def _training_lines(config) -> list:
    t = config.training
    lines = [
        "## Training data",
        f"Diffusion iterations per stage: {t.get('iterations')}; mean networks: {t.get('mean_iterations')}; batch "
        f"{t.get('batch_size')}, crops {t.get('crop')} px, learning rate {t.get('learning_rate')}, seed {t.get('seed')}, "
        f"device {t.get('device')} with {t.get('threads')} thread(s), {t.get('seconds')} s "
        f"({float(t.get('seconds') or 0) / 3600:.2f} h) in all.", "",
    ] + _scene_lines(config) + _library_lines(config)
    lines += ["", "Bands a scene does not cover are masked out of the loss.", "",
              "## RGB simulation", _simulation_text(config), "", "## Loss curve"]
    for stage, loss in t.get("loss", {}).items():
        lines.append(f"- {stage}: {loss['first']:.4f} (first 10 %) -> {loss['last']:.4f} (last 10 %)")
    return lines


def _quality_lines(config, rows: list, command: str) -> list:
    lines = ["", "## Measured quality",
             f"Produced by `{command}`: a central crop of every shared scene through every training camera in linear "
             f"light, the default sampler ({config.sampler.name}, {config.sampler.steps} step(s), guidance "
             f"{config.sampler.guidance}), scored against the scene in reflectance (Houston converted as in training) "
             "over the bands it covers; MPSNR after one least-squares gain. These scenes were seen in training (pavia "
             "was not: it is stored per-band max-normalised, so its spectral shapes are not reflectance), so these are "
             "in-sample figures; held-out figures (leave-scene-out, and a real camera's near-infrared) are in "
             "docs/generalisation/README.md.", "",
             "| scene | camera | SAM (rad) | MPSNR (dB) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scene']} | {r['camera']} | {r['sam']:.3f} | {r['mpsnr']:.2f} |")
    if rows:
        lines.append(f"| mean | | {np.mean([r['sam'] for r in rows]):.3f} | {np.mean([r['mpsnr'] for r in rows]):.2f} |")
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
