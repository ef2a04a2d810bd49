"""RGB consistency measured: re-projection error and spectral accuracy before and after the step.

``python -m benchmarks.consistency --out docs/consistency``

Each scene is rendered through a known camera (linear light), reconstructed by a bundle at its
default settings, and the output re-integrated through the camera: the relative RMS difference from
the input before and after ``engine.consistency.project`` with the known response, and with the
response estimated from the image (``estimate_response``), whose rows are plotted against the true
ones. SAM and MPSNR (one least-squares gain per image, as in benchmarks.generalisation) against the
scene show what the step does to accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from benchmarks.data import SHARED_DATA
from benchmarks.generalisation import TestImage, encode, scores
from engine.bundle import default_bundle_path, load_bundle
from engine.consistency import (CameraResponse, estimate_response, project, reprojection_error, response_from_csv,
                                with_channel_gains)
from engine.data import load_scene
from engine.evaluate import reconstruct, sampler_settings
from engine.imaging_data import scene_source
from engine.spectral_library import load_earthlib

SCENES = ("muufl_casi72", "vegetation_aviris224", "urban_hydice162", "samson156")
CAMERA = SHARED_DATA / "srf" / "camera_nikon5100_npl.csv"


def measure_scene(cascade, scene_name: str, library, encoding: str) -> dict:
    config = cascade.config
    scene = load_scene(SHARED_DATA / "scenes" / f"{scene_name}.npz")
    source = scene_source(scene, config, False, library)
    camera = response_from_csv(CAMERA, config.wavelengths_nm)
    rgb = encode(camera.render(source.cube).astype(np.float32), encoding)
    image = TestImage(scene_name, "nikon5100", encoding, rgb, source.cube, source.valid, source.covered.astype(bool))
    out = reconstruct(cascade, rgb, sampler_settings(cascade), valid=source.valid).full
    valid = source.valid
    estimated = estimate_response(out[:, valid], rgb[:, valid])
    known = with_channel_gains(camera, out[:, valid], rgb[:, valid])
    row = {"scene": scene_name, "encoding": encoding}
    for label, response in (("none", None), ("known camera", known), ("estimated camera", estimated)):
        spectra = out if response is None else project(out, rgb, response)
        reference = known if response is None else response
        row[label] = {"reprojection": reprojection_error(spectra[:, valid], rgb[:, valid], reference),
                      **scores(image, spectra)}
    row["estimated_response"] = estimated.weights.tolist()
    return row


def plot_responses(camera: CameraResponse, estimates: Sequence[dict], wavelengths, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), sharey=False)
    for channel, (axis, colour) in enumerate(zip(axes, ("red", "green", "blue"))):
        truth = camera.weights[channel]
        axis.plot(wavelengths, truth / truth.max(), color="black", lw=2, label="true (Nikon D5100)")
        for row in estimates:
            estimate = np.asarray(row["estimated_response"])[channel]
            axis.plot(wavelengths, estimate / max(estimate.max(), 1e-12), lw=1, label=f"estimated: {row['scene']}")
        axis.set_title(f"{colour} channel (peak-normalised)")
        axis.set_xlabel("nm")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_table(rows: list, command: str, out: Path) -> None:
    lines = ["# RGB consistency: re-projection error before and after", "",
             f"Command: `{command}`. Scenes rendered through the Nikon D5100 response; the default bundle at its "
             "default settings. Re-projection: RMS of (camera x output - input RGB) / RMS(input RGB), the known camera "
             "scaled per channel to the image's exposure and white balance (as the product does). "
             "MPSNR after one least-squares gain per image.", "",
             "| scene | encoding | step | re-projection | SAM | MPSNR (dB) |", "|---|---|---|---|---|---|"]
    for row in rows:
        for step in ("none", "known camera", "estimated camera"):
            m = row[step]
            lines.append(f"| {row['scene']} | {row['encoding']} | {step} | {m['reprojection']:.2e} | {m['sam']:.4f} | "
                         f"{m['mpsnr']:.2f} |")
    lines += ["", "![estimated against true camera response](estimated_response.png)", ""]
    (out / "README.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(rows, indent=1))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_bundle_path())
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "consistency")
    parser.add_argument("--scenes", nargs="*", default=list(SCENES))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cascade = load_bundle(args.model)
    library = load_earthlib(cascade.config.wavelengths_nm, cascade.config.fwhm_nm)
    rows = []
    for scene in args.scenes:
        for encoding in ("linear", "srgb8"):
            rows.append(measure_scene(cascade, scene, library, encoding))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "estimated_response"}), flush=True)
    camera = response_from_csv(CAMERA, cascade.config.wavelengths_nm)
    plot_responses(camera, [r for r in rows if r["encoding"] == "linear"], cascade.config.wavelengths_nm,
                   args.out / "estimated_response.png")
    command = " ".join(sys.argv[1:] if argv is None else argv)
    write_table(rows, f"python -m benchmarks.consistency {command}".strip(), args.out)


if __name__ == "__main__":
    main()
