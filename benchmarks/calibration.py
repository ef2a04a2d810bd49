"""Is the K-sample standard deviation an honest error bar? Coverage, rank correlation, calibration.

``python -m benchmarks.calibration --out docs/calibration [--write-bundle]``

Uses the held-out models of ``benchmarks.generalisation`` (runs/generalisation/without-<scene>, each
trained without its test scene) on their test images. Per image: K samples with the DPM-Solver++
sampler, their mean and standard deviation (after the image's least-squares gain, as the
generalisation scores are; for 8-bit renderings the standard deviation also holds the difference from
the estimate of the input read as a linear stretch, as the raster pipeline's uncertainty does for 8-bit
input under ``auto`` radiometry, unless ``--without-decoding``), and against the truth:
- coverage of the central 68 % and 95 % Gaussian intervals (|error| <= 1.0 / 1.96 std);
- Spearman correlation between a pixel's predicted std and its absolute error (means over bands).
Calibration: per band, the factor on the std that makes 68 % of |error| / std fall within 1, fitted
on the other held-out scenes and tested on this one (leave-one-scene-out), so the calibrated rows are
held out too. ``--write-bundle`` stores the factors fitted on all held-out scenes in the default
bundle (``uncertainty_scale``), which the raster pipeline applies to its uncertainty output, when
they bring the held-out reliability curves nearer the diagonal than the raw spread; otherwise it
removes the bundle's calibration.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks.generalisation import ENCODINGS, HELD_OUT, REPO, TestImage, test_images
from engine.bundle import CONFIG_NAME, default_bundle_path, load_bundle, read_config
from engine.evaluate import reconstruct, sampler_settings
from engine.radiometry import as_linear_stretch, decoding_variance

Z68, Z95 = 1.0, 1.959964
# benchmarks.generalisation.encode's 8-bit renderings (all but "linear"), decoded as auto decodes 8-bit
# input: by a guess (engine.radiometry.decoding_is_guessed)
EIGHT_BIT_ENCODINGS = tuple(encoding for encoding in ENCODINGS if encoding != "linear")
NOMINAL = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.8, 0.9, 0.95])


def _gaussian_z(p: np.ndarray) -> np.ndarray:
    from scipy.stats import norm

    return norm.ppf((1 + p) / 2)


def sample_moments(cascade, image: TestImage, samples: int, steps: int, decoding: bool = True):
    """Mean and standard deviation of the samples; for 8-bit renderings (decoded as ``auto`` decodes
    them) and ``decoding``, the standard deviation also holds the guessed decoding's variance, as the
    raster pipeline's uncertainty output does."""
    settings = sampler_settings(cascade, "dpmpp", steps)

    def moments(rgb):
        draws = np.stack([reconstruct(cascade, rgb, settings, seed=k, valid=image.valid).full
                          for k in range(samples)])
        return draws.mean(axis=0), draws.var(axis=0, ddof=1)

    mean, variance = moments(image.rgb)
    if decoding and image.encoding in EIGHT_BIT_ENCODINGS:
        variance = variance + decoding_variance(mean, moments(as_linear_stretch(image.rgb))[0])
    return mean, np.sqrt(variance)


def normalised_errors(image: TestImage, mean: np.ndarray, std: np.ndarray):
    """|error| / std per covered band and valid pixel (bands, pixels), and the per-pixel mean std
    and mean |error|, after the image's least-squares gain."""
    truth, mean, std = (a[image.covered][:, image.valid] for a in (image.truth, mean, std))
    gain = float(np.sum(truth * mean) / max(float(np.sum(mean * mean)), 1e-12))
    error = np.abs(truth - gain * mean)
    spread = np.maximum(gain * std, 1e-12)
    return error / spread, spread.mean(axis=0), error.mean(axis=0)


def spread_scores(z: np.ndarray, spread: np.ndarray, error: np.ndarray) -> dict:
    """How well a spread describes an error: the coverage of the central 68 % / 95 % Gaussian
    intervals and the reliability curve from ``z`` (|error| / std, any shape), and the Spearman
    correlation between a pixel's spread and its |error| (per-pixel values, e.g. means over bands)."""
    from scipy.stats import spearmanr

    return {"coverage68": float(np.mean(z <= Z68)), "coverage95": float(np.mean(z <= Z95)),
            "spearman": float(spearmanr(spread, error).correlation),
            "reliability": [float(np.mean(z <= q)) for q in _gaussian_z(NOMINAL)]}


def image_row(image: TestImage, z: np.ndarray, spread: np.ndarray, error: np.ndarray, factors=None) -> dict:
    if factors is not None:
        z = z / factors[:, None]
    return {"scene": image.scene, "camera": image.camera, "encoding": image.encoding,
            **spread_scores(z, spread, error)}


def band_factors(z_by_scene: Dict[str, List[np.ndarray]], bands: int, covered_by_scene, scenes) -> np.ndarray:
    """Per band the 68th percentile of |error| / std over the given scenes' images (1 where none covers it)."""
    values: List[List[np.ndarray]] = [[] for _ in range(bands)]
    for scene in scenes:
        for z, covered in zip(z_by_scene[scene], covered_by_scene[scene]):
            for row, band in enumerate(np.flatnonzero(covered)):  # z holds the covered bands only
                values[band].append(z[row])
    return np.array([float(np.percentile(np.concatenate(v), 68.27)) if v else 1.0 for v in values])


def reliability_png(rows: List[dict], calibrated: List[dict], path: Path, raw_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="grey", ls="--", label="ideal")
    axis.plot(NOMINAL, np.mean([r["reliability"] for r in rows], axis=0), "o-", label=raw_label)
    axis.plot(NOMINAL, np.mean([r["reliability"] for r in calibrated], axis=0), "s-",
              label="calibrated (leave-one-scene-out)")
    axis.set_xlabel("nominal coverage of the central interval")
    axis.set_ylabel("measured coverage on held-out scenes")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_table(result: dict, out: Path) -> None:
    lines = ["# Uncertainty calibration on held-out scenes", "",
             f"Command: `{result['command']}`. {result['samples']} DPM-Solver++ samples ({result['steps']} steps) per "
             "image from the model trained without the scene (benchmarks.generalisation); "
             + ("the samples' spread alone." if result.get("without_decoding") else
                "for the 8-bit renderings (srgb8, stretch8) the spread also holds the difference from the "
                "estimate of the input read as a linear stretch (the guessed decoding), as the raster "
                "pipeline's uncertainty output does for 8-bit input under auto radiometry."), "",
             "| scene | camera | encoding | raw 68 % | raw 95 % | calibrated 68 % | calibrated 95 % | Spearman |",
             "|---|---|---|---|---|---|---|---|"]
    for raw, cal in zip(result["raw"], result["calibrated"]):
        lines.append(f"| {raw['scene']} | {raw['camera']} | {raw['encoding']} | {raw['coverage68']:.1%} | "
                     f"{raw['coverage95']:.1%} | {cal['coverage68']:.1%} | {cal['coverage95']:.1%} | "
                     f"{raw['spearman']:.2f} |")
    lines += [f"| mean | | | {np.mean([r['coverage68'] for r in result['raw']]):.1%} | "
              f"{np.mean([r['coverage95'] for r in result['raw']]):.1%} | "
              f"{np.mean([r['coverage68'] for r in result['calibrated']]):.1%} | "
              f"{np.mean([r['coverage95'] for r in result['calibrated']]):.1%} | "
              f"{np.mean([r['spearman'] for r in result['raw']]):.2f} |", "",
              f"Distance of the reliability curve from the diagonal (mean |measured - nominal| over images and "
              f"levels): raw {result['reliability_miss']['raw']:.3f}, calibrated "
              f"{result['reliability_miss']['calibrated']:.3f}. The bundle's `uncertainty_scale` "
              + ("holds the factors fitted on all four scenes." if result["bundle_calibrated"] else
                 "is left empty: the fitted factors do not bring held-out scenes nearer the diagonal."), "",
              "![reliability diagram](reliability.png)", ""]
    (out / "README.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(result, indent=1))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "calibration")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "generalisation")
    parser.add_argument("--held-out", nargs="*", default=list(HELD_OUT))
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--without-decoding", action="store_true",
                        help="the samples' spread alone, without the guessed 8-bit decoding's variance")
    parser.add_argument("--write-bundle", action="store_true",
                        help="store the factors fitted on all held-out scenes in the default bundle")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    images, z_by_scene, covered_by_scene, raw_rows, stats = {}, {}, {}, [], {}
    for scene in args.held_out:
        cascade = load_bundle(args.work / f"without-{scene}")
        images[scene] = test_images(args.work / f"without-{scene}.json", scene)
        z_by_scene[scene], covered_by_scene[scene] = [], []
        for image in images[scene]:
            moments = sample_moments(cascade, image, args.samples, args.steps, not args.without_decoding)
            z, spread, error = normalised_errors(image, *moments)
            z_by_scene[scene].append(z)
            covered_by_scene[scene].append(image.covered)
            stats[(scene, image.camera, image.encoding)] = (z, spread, error)
            raw_rows.append(image_row(image, z, spread, error))
            print(json.dumps({k: v for k, v in raw_rows[-1].items() if k != "reliability"}), flush=True)
    bands = len(next(iter(images.values()))[0].covered)
    calibrated = []
    for scene in args.held_out:
        others = [s for s in args.held_out if s != scene] or [scene]
        factors = band_factors(z_by_scene, bands, covered_by_scene, others)
        for image in images[scene]:
            z, spread, error = stats[(scene, image.camera, image.encoding)]
            calibrated.append(image_row(image, z, spread, error, factors[image.covered]))
    everything = band_factors(z_by_scene, bands, covered_by_scene, args.held_out)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    result = {"command": f"python -m benchmarks.calibration {command}".strip(), "samples": args.samples,
              "steps": args.steps, "without_decoding": args.without_decoding, "raw": raw_rows,
              "calibrated": calibrated, "factors": everything.tolist()}
    result["reliability_miss"] = {"raw": reliability_miss(raw_rows), "calibrated": reliability_miss(calibrated)}
    result["bundle_calibrated"] = result["reliability_miss"]["calibrated"] < result["reliability_miss"]["raw"]
    reliability_png(raw_rows, calibrated, args.out / "reliability.png",
                    "raw: K-sample std" + ("" if args.without_decoding else " (+ guessed 8-bit decoding)"))
    write_table(result, args.out)
    if args.write_bundle:
        write_bundle_factors(everything if result["bundle_calibrated"] else None)


def reliability_miss(rows: List[dict]) -> float:
    """Mean over the images and the nominal levels of |measured - nominal coverage|: how far the
    reliability curve lies from the diagonal."""
    return float(np.mean([np.abs(np.array(row["reliability"]) - NOMINAL) for row in rows]))


def write_bundle_factors(factors: Optional[np.ndarray]) -> None:
    """Store the factors in the default bundle, or remove its calibration (None): factors that do not
    bring held-out scenes nearer the diagonal than the raw spread would only add a fitted number."""
    scale = None if factors is None else tuple(round(float(f), 4) for f in factors)
    replace(read_config(default_bundle_path()), uncertainty_scale=scale).validate()
    path = default_bundle_path() / CONFIG_NAME
    data = json.loads(path.read_text())
    data["uncertainty_scale"] = None if scale is None else list(scale)
    path.write_text(json.dumps(data, indent=2))
    print(f"uncertainty_scale {'written to' if scale else 'removed from'} {path}")


if __name__ == "__main__":
    main()
