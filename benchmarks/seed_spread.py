"""Seed spread: how much the real-sensor check moves when the default recipe is trained again with
another seed.

``python -m benchmarks.seed_spread --seeds 1 [--reuse]``

The shipped bundle is the default recipe (configs/default_model.json) trained with seed 0. Each
``--seeds`` value trains the same recipe, data and budget with that seed instead (into
runs/seeds/seed-N; ``--reuse`` keeps an earlier run's bundle when its recipe is unchanged). All of
them, and the mean of their outputs (an ensemble that no score chose), run through the product on
rgbn.tif (the 8-bit orthophoto with a real near-infrared band of ``benchmarks.generalisation``); the
table gives each one's r between the 760-900 nm mean and the real band. A difference between two
models on rgbn.tif smaller than this spread says nothing about the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks.generalisation import (DEFAULT_RECIPE, REPO, RGBN, absolute_recipe, infer_file, nir_r, read_rgbn,
                                       train_or_reuse)
from engine.bundle import default_bundle_path, load_bundle


def seed_recipe(recipe_file: Path, seed: int, work_dir: Path) -> Path:
    """The recipe with ``seed`` and its output in ``work_dir`` (seed-N), paths absolute; written to
    ``work_dir`` and returned."""
    recipe = absolute_recipe(json.loads(recipe_file.read_text()), recipe_file.parent)
    recipe = {**recipe, "seed": seed, "output": str(work_dir / f"seed-{seed}")}
    path = work_dir / f"seed-{seed}.json"
    path.write_text(json.dumps(recipe, indent=1))
    return path


def seed_bundle(recipe_file: Path, seed: int, work_dir: Path, reuse: bool, log) -> Path:
    path = work_dir / f"seed-{seed}.json"
    earlier = path.read_text() if path.exists() else None
    return train_or_reuse(seed_recipe(recipe_file, seed, work_dir), earlier, reuse, log)


def spread_rows(bundles: Dict[str, Path], rgbn: Path, work_dir: Path) -> List[dict]:
    """Per bundle and for the mean of their outputs: r against the real near-infrared, and the
    output's minimum."""
    _, nir = read_rgbn(rgbn)
    cubes, rows = [], []
    grid = None
    for index, (name, bundle) in enumerate(bundles.items()):
        bundle_grid = load_bundle(bundle).config.wavelengths_nm
        if grid is not None and tuple(bundle_grid) != tuple(grid):
            raise ValueError(f"{bundle} has another band grid than the other models: their outputs cannot be averaged")
        grid = bundle_grid
        cube = infer_file(bundle, rgbn, work_dir / f"rgbn_{index}.tif")
        cubes.append(cube)
        training = load_bundle(bundle).config.training
        rows.append({"model": name, "nir_r": nir_r(cube, grid, nir), "min": float(cube.min()),
                     "training_seconds": training.get("seconds")})
    ensemble = np.mean(cubes, axis=0)
    rows.append({"model": f"mean of the {len(cubes)} models' outputs", "nir_r": nir_r(ensemble, grid, nir),
                 "min": float(ensemble.min()), "training_seconds": None})
    return rows


def write_table(result: dict, out_dir: Path) -> None:
    singles = [row["nir_r"] for row in result["rows"][:-1]]
    lines = ["# Seed spread of the default recipe on rgbn.tif", "", f"Command: `{result['command']}`. "
             "The same recipe, data and budget trained with each seed; the product at its default settings "
             "on rgbn.tif; r between the output's 760-900 nm mean and the real near-infrared band.", "",
             "| model | r (760-900 nm mean vs real NIR) | output minimum | training (s, as recorded in the bundle) |",
             "|---|---|---|---|"]
    lines += [f"| {row['model']} | {row['nir_r']:.3f} | {row['min']:.4g} | "
              f"{'' if row['training_seconds'] is None else round(row['training_seconds'])} |" for row in result["rows"]]
    lines += ["", f"Spread over seeds (largest minus smallest r): {max(singles) - min(singles):.3f}.", ""]
    (out_dir / "README.md").write_text("\n".join(lines))
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="seeds other than the shipped 0")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--bundle", type=Path, default=default_bundle_path(),
                        help="the recipe trained with seed 0 (default: the bundled model)")
    parser.add_argument("--rgbn", type=Path, default=RGBN, help="RGB + NIR GeoTIFF (default: the demo's)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "seeds")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "generalisation" / "seeds")
    parser.add_argument("--reuse", action="store_true", help="keep an earlier run's bundle when its recipe is unchanged")
    args = parser.parse_args(argv)
    if not args.rgbn.exists():
        parser.error(f"{args.rgbn} does not exist: run scripts/demo.sh once (it fetches rgbn.tif) or pass --rgbn")
    if 0 in args.seeds:
        parser.error("seed 0 is the shipped bundle (--bundle); name other seeds")
    args.work, args.out, args.recipe = args.work.resolve(), args.out.resolve(), args.recipe.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda message: print(message, flush=True)  # noqa: E731
    bundles = {f"seed 0 ({args.bundle.name})": args.bundle}
    bundles.update({f"seed {seed}": seed_bundle(args.recipe, seed, args.work, args.reuse, log) for seed in args.seeds})
    command = " ".join(sys.argv[1:] if argv is None else argv)
    result = {"command": f"python -m benchmarks.seed_spread {command}".strip(),
              "rows": spread_rows(bundles, args.rgbn, args.work)}
    write_table(result, args.out)
    log((args.out / "README.md").read_text())


if __name__ == "__main__":
    main()
