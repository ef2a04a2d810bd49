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
Calibration, fitted on the other held-out scenes and tested on this one (leave-one-scene-out), so the
calibrated rows are held out too: one factor on the std under which +/- 1 std covers 68 % of the error
(coverage averaged over images, as the table averages it), and the half-width, in calibrated std, of the
interval that covers 95 % (held-out errors have heavier tails than a Gaussian, so 1.96 falls short).
One factor for all bands: per-band factors fitted on three scenes carry worse to the fourth (the
per-band fit of commit 44d365f: 67.7 % / 87.0 % held out). ``--write-bundle`` stores the factor (in
``uncertainty_scale``) and the half-width (``uncertainty_interval95``) fitted on all held-out scenes
in the default bundle, whose raster pipeline applies the one and names the other in the uncertainty
output's tag, when they bring held-out coverage at 68 % and 95 % nearer nominal than the raw spread's
Gaussian intervals; otherwise it removes the bundle's calibration.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks.generalisation import ENCODINGS, HELD_OUT, REPO, TestImage, test_images
from engine.bundle import CONFIG_NAME, default_bundle_path, load_bundle, read_config
from engine.config import GAUSSIAN_95
from engine.evaluate import reconstruct, sampler_settings
from engine.radiometry import as_linear_stretch, decoding_variance

Z68, Z95 = 1.0, GAUSSIAN_95
NOMINAL68, NOMINAL95 = 0.682689, 0.95
# the factors on the std and the 95 % half-widths tried, 1 % apart
FACTORS = np.geomspace(0.2, 10.0, 394)
HALF_WIDTHS = np.geomspace(1.0, 20.0, 302)
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


@dataclass(frozen=True)
class Calibration:
    """The std's factor and the 95 % interval's half-width in calibrated std (1 and 1.96: none)."""

    factor: float = 1.0
    half_width95: float = Z95

    def scores(self, z: np.ndarray, spread: np.ndarray, error: np.ndarray) -> dict:
        """``spread_scores`` of the calibrated std, the 95 % coverage at the fitted half-width."""
        calibrated_z = z / self.factor
        scores = spread_scores(calibrated_z, spread * self.factor, error)
        scores["coverage95"] = float(np.mean(calibrated_z <= self.half_width95))
        return scores


def image_row(image: TestImage, z: np.ndarray, spread: np.ndarray, error: np.ndarray,
              calibration: Calibration = Calibration()) -> dict:
    return {"scene": image.scene, "camera": image.camera, "encoding": image.encoding,
            **calibration.scores(z, spread, error)}


def coverage(z_per_image: Sequence[np.ndarray], thresholds: np.ndarray) -> np.ndarray:
    """The images' mean share of |error| / std at or below each threshold (each image counts once)."""
    shares = []
    for z in z_per_image:
        ordered = np.sort(np.ravel(z))
        shares.append(np.searchsorted(ordered, thresholds, side="right") / ordered.size)
    return np.mean(shares, axis=0)


def fit_calibration(z_per_image: Sequence[np.ndarray]) -> Calibration:
    """The factor under which +/- 1 std covers 68 % of the images' errors on average, then the
    half-width of calibrated std that covers 95 %."""
    factor = float(FACTORS[np.argmin(np.abs(coverage(z_per_image, FACTORS * Z68) - NOMINAL68))])
    half_width = float(HALF_WIDTHS[np.argmin(np.abs(coverage(z_per_image, factor * HALF_WIDTHS) - NOMINAL95))])
    return Calibration(factor, half_width)


def coverage_miss(rows: List[dict]) -> float:
    """Mean over the two stated levels of |mean coverage - nominal|: what the uncertainty output's
    +/- 1 std and 95 % interval promise, against what held-out scenes show."""
    return float(np.mean([abs(np.mean([r["coverage68"] for r in rows]) - NOMINAL68),
                          abs(np.mean([r["coverage95"] for r in rows]) - NOMINAL95)]))


def reliability_png(rows: List[dict], calibrated: List[dict], path: Path, raw_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="grey", ls="--", label="ideal")
    axis.plot(NOMINAL, np.mean([r["reliability"] for r in rows], axis=0), "o-", label=raw_label)
    axis.plot(NOMINAL, np.mean([r["reliability"] for r in calibrated], axis=0), "s-",
              label="calibrated std, Gaussian intervals")
    axis.plot([NOMINAL95], [np.mean([r["coverage95"] for r in calibrated])], "*", markersize=14,
              label="calibrated std, fitted 95 % half-width")
    axis.set_xlabel("nominal coverage of the central interval")
    axis.set_ylabel("measured coverage on held-out scenes (leave-one-scene-out fit)")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_table(result: dict, out: Path) -> None:
    fitted, folds = result["fitted"], result["leave_one_scene_out"]
    lines = ["# Uncertainty calibration on held-out scenes", "",
             f"Command: `{result['command']}`. {result['samples']} DPM-Solver++ samples ({result['steps']} steps) per "
             "image from the model trained without the scene (benchmarks.generalisation); "
             + ("the samples' spread alone." if result.get("without_decoding") else
                "for the 8-bit renderings (srgb8, stretch8) the spread also holds the difference from the "
                "estimate of the input read as a linear stretch (the guessed decoding), as the raster "
                "pipeline's uncertainty output does for 8-bit input under auto radiometry."),
             "", "Raw: +/- 1 and +/- 1.96 standard deviations of the spread. Calibrated: the std times a factor "
             "under which +/- 1 std covers 68 %, and the half-width that covers 95 %, both fitted on the other "
             "three scenes: " + ", ".join(f"{scene} {c['factor']:.2f} / {c['half_width95']:.2f}"
                                          for scene, c in folds.items()) + ".", "",
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
              f"Mean miss of the two stated levels: raw {result['coverage_miss']['raw']:.3f}, calibrated "
              f"{result['coverage_miss']['calibrated']:.3f}. Distance of the reliability curve (the std's "
              f"Gaussian intervals) from the diagonal, mean over images and levels: raw "
              f"{result['reliability_miss']['raw']:.3f}, calibrated {result['reliability_miss']['calibrated']:.3f}. "
              + (f"Fitted on all four scenes: factor {fitted['factor']:.2f}, 95 % half-width "
                 f"{fitted['half_width95']:.2f} std; `--write-bundle` stores them." if result["bundle_calibrated"] else
                 "The fitted calibration does not bring held-out coverage nearer nominal: `--write-bundle` "
                 "removes the bundle's."), "",
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
                        help="store the calibration fitted on all held-out scenes in the default bundle")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    measured: Dict[str, List[tuple]] = {}  # scene -> [(image, z, spread, error)]
    raw_rows = []
    for scene in args.held_out:
        cascade = load_bundle(args.work / f"without-{scene}")
        measured[scene] = []
        for image in test_images(args.work / f"without-{scene}.json", scene):
            moments = sample_moments(cascade, image, args.samples, args.steps, not args.without_decoding)
            measured[scene].append((image, *normalised_errors(image, *moments)))
            raw_rows.append(image_row(*measured[scene][-1]))
            print(json.dumps({k: v for k, v in raw_rows[-1].items() if k != "reliability"}), flush=True)

    def fit(scenes) -> Calibration:
        return fit_calibration([z for scene in scenes for _, z, _, _ in measured[scene]])

    folds = {scene: fit([s for s in args.held_out if s != scene] or [scene]) for scene in args.held_out}
    calibrated = [image_row(*row, folds[scene]) for scene in args.held_out for row in measured[scene]]
    fitted = fit(args.held_out)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    result = {"command": f"python -m benchmarks.calibration {command}".strip(), "samples": args.samples,
              "steps": args.steps, "without_decoding": args.without_decoding, "raw": raw_rows,
              "calibrated": calibrated, "fitted": vars(fitted),
              "leave_one_scene_out": {scene: vars(c) for scene, c in folds.items()},
              "coverage_miss": {"raw": coverage_miss(raw_rows), "calibrated": coverage_miss(calibrated)},
              "reliability_miss": {"raw": reliability_miss(raw_rows), "calibrated": reliability_miss(calibrated)}}
    result["bundle_calibrated"] = result["coverage_miss"]["calibrated"] < result["coverage_miss"]["raw"]
    reliability_png(raw_rows, calibrated, args.out / "reliability.png",
                    "raw: K-sample std" + ("" if args.without_decoding else " (+ guessed 8-bit decoding)"))
    write_table(result, args.out)
    if args.write_bundle:
        write_bundle_calibration(fitted if result["bundle_calibrated"] else None)


def reliability_miss(rows: List[dict]) -> float:
    """Mean over the images and the nominal levels of |measured - nominal coverage|: how far the
    reliability curve lies from the diagonal."""
    return float(np.mean([np.abs(np.array(row["reliability"]) - NOMINAL) for row in rows]))


def write_bundle_calibration(calibration: Optional[Calibration]) -> None:
    """Store the calibration in the default bundle (the factor repeated per band, as the bundle holds
    it), or remove it (None): a calibration that does not bring held-out scenes nearer nominal would
    only add fitted numbers."""
    config = read_config(default_bundle_path())
    scale = None if calibration is None else (round(calibration.factor, 4),) * config.band_count
    interval95 = None if calibration is None else round(calibration.half_width95, 4)
    replace(config, uncertainty_scale=scale, uncertainty_interval95=interval95).validate()
    path = default_bundle_path() / CONFIG_NAME
    data = json.loads(path.read_text())
    data["uncertainty_scale"] = None if scale is None else list(scale)
    data["uncertainty_interval95"] = interval95
    if interval95 is not None:
        data["format_version"] = max(data["format_version"], 3)  # 3 adds uncertainty_interval95
    path.write_text(json.dumps(data, indent=2))
    print(f"calibration {'written to' if scale else 'removed from'} {path}")


if __name__ == "__main__":
    main()
