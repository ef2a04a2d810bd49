"""Where a held-out model loses: its spectral shape bias and its SAM per kind of pixel, beside the
linear floor's, on one held-out scene of ``benchmarks.generalisation``.

``python -m benchmarks.spectral_bias --scene urban_hydice162 --work runs/generalisation-full``

The model is the one the generalisation run trained without the scene (``--work``/without-SCENE);
the floor is fitted on the same recipe's data. For each rendering through the consumer camera:
- the shape bias per band: the median over pixels of estimate / its spectral mean minus truth / its
  spectral mean (brightness-free; negative where the estimate's spectrum is too low in that band);
- SAM per kind of pixel: vegetated (truth NDVI > 0.4), mixed (0.1-0.4), non-vegetated (<= 0.1) and
  the darkest fifth.
Writes ``--out``/bias-SCENE.md and a PNG of the bias curves.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks.generalisation import FLOOR, REPO, LinearFloor, model_reconstructor, test_images
from benchmarks.sensor_bands import ndvi
from engine.metrics import sam
from engine.train import bundle_config_from_training
from engine.training_config import load_training_config

CAMERA = "nikon5100"
SHOWN_NM = (420, 480, 550, 620, 700, 750, 800, 900, 1000)


def shape_bias(truth: np.ndarray, estimate: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per band: median over valid pixels of estimate / its spectral mean - truth / its spectral mean.
    The median, because the floor is linear and unbounded: where its spectrum averages near zero the
    ratio explodes."""
    def shape(cube):
        mean = cube.mean(axis=0, keepdims=True)
        return cube / np.where(np.abs(mean) > 1e-12, mean, 1e-12)
    return np.median((shape(estimate) - shape(truth))[:, valid], axis=1)


def pixel_kinds(truth: np.ndarray, wavelengths_nm: np.ndarray, valid: np.ndarray) -> Dict[str, np.ndarray]:
    """Masks of vegetated, mixed, non-vegetated (truth NDVI, 660 / 860 nm) and the darkest fifth."""
    red, nir = (truth[np.argmin(np.abs(wavelengths_nm - nm))] for nm in (660, 860))
    index = ndvi(nir, red)
    brightness = truth.mean(axis=0)
    return {"vegetated": valid & (index > 0.4), "mixed": valid & (index > 0.1) & (index <= 0.4),
            "non-vegetated": valid & (index <= 0.1),
            "darkest fifth": valid & (brightness < np.quantile(brightness[valid], 0.2))}


def measure(scene: str, work_dir: Path) -> List[dict]:
    recipe = work_dir / f"without-{scene}.json"
    bundle = work_dir / f"without-{scene}"
    # the grid test_images puts the truth on, from the recipe: no second load of the bundle's weights
    grid = np.asarray(bundle_config_from_training(load_training_config(recipe)).wavelengths_nm)
    methods = {FLOOR: LinearFloor(recipe), "held-out model": model_reconstructor(bundle)}
    rows = []
    for image in (im for im in test_images(recipe, scene) if im.camera == CAMERA):
        truth, wavelengths = image.truth[image.covered], grid[image.covered]
        kinds = pixel_kinds(truth, wavelengths, image.valid)
        for method, run in methods.items():
            estimate = run(image.rgb, image.valid)[image.covered]
            rows.append({"encoding": image.encoding, "method": method, "wavelengths": wavelengths,
                         "bias": shape_bias(truth, estimate, image.valid), "sam": sam(truth, estimate, image.valid),
                         "kinds": {k: (sam(truth, estimate, m) if m.any() else None, int(m.sum()))
                                   for k, m in kinds.items()}})
    return rows


def write_page(scene: str, rows: List[dict], command: str, out_dir: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(rows[0]["kinds"])
    lines = [f"# Where the held-out model loses on {scene}", "", f"Command: `{command}`. Camera: {CAMERA}. "
             "Shape bias: median over pixels of estimate / its spectral mean minus truth / its spectral mean "
             "(negative: too low in that band). SAM in radians; pixel counts in brackets.", "",
             "| encoding | method | SAM | " + " | ".join(kinds) + " | " +
             " | ".join(f"bias {nm} nm" for nm in SHOWN_NM) + " |",
             "|---" * (3 + len(kinds) + len(SHOWN_NM)) + "|"]
    figure, axes = plt.subplots(1, len({r["encoding"] for r in rows}), figsize=(13, 3.6), sharey=True)
    encodings = list(dict.fromkeys(r["encoding"] for r in rows))
    for row in rows:
        cells = [f"{a:.3f} ({n})" if a is not None else f"- ({n})" for a, n in row["kinds"].values()]
        at = [int(np.argmin(np.abs(row["wavelengths"] - nm))) for nm in SHOWN_NM]
        lines.append(f"| {row['encoding']} | {row['method']} | {row['sam']:.3f} | " + " | ".join(cells) + " | " +
                     " | ".join(f"{row['bias'][i]:+.2f}" for i in at) + " |")
        axis = axes[encodings.index(row["encoding"])]
        axis.plot(row["wavelengths"], row["bias"], label=f"{row['method']} (SAM {row['sam']:.3f})")
        axis.axhline(0, color="grey", lw=0.5)
        axis.set_title(row["encoding"])
        axis.set_xlabel("wavelength (nm)")
        axis.legend(fontsize=8)
    axes[0].set_ylabel("shape bias (estimate - truth)")
    figure.tight_layout()
    figure.savefig(out_dir / f"bias-{scene}.png", dpi=110)
    plt.close(figure)
    lines += ["", f"![shape bias](bias-{scene}.png)", ""]
    (out_dir / f"bias-{scene}.md").write_text("\n".join(lines))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="urban_hydice162", help="a held-out scene of benchmarks.generalisation")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "generalisation-full",
                        help="the generalisation run's work folder, holding without-SCENE(.json)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "generalisation")
    args = parser.parse_args(argv)
    if not (args.work / f"without-{args.scene}").exists():
        parser.error(f"{args.work}/without-{args.scene} is missing: run benchmarks.generalisation with "
                     f"--held-out {args.scene} --work {args.work} first")
    rows = measure(args.scene, args.work.resolve())
    command = "python -m benchmarks.spectral_bias " + shlex.join(sys.argv[1:] if argv is None else argv)
    write_page(args.scene, rows, command, args.out)
    print(f"wrote {args.out / f'bias-{args.scene}.md'}")


if __name__ == "__main__":
    main()
