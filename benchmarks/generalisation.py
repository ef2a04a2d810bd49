"""Generalisation protocol: leave-scene-out training and the real-sensor check on rgbn.tif.

``python -m benchmarks.generalisation --out docs/generalisation``

For each held-out scene the default recipe (configs/default_model.json) is trained again without it
(at a reduced budget, ``--mean-iterations`` / ``--iterations``, stated in the output) and tested on
it; the EnMAP mosaic is held out by location (its southern rows are left out of training and tested).
Each test scene is rendered through two responses (a consumer camera, Sentinel-2) and three encodings
(linear float; 8-bit sRGB; 8-bit per-channel percentile stretch, as orthophotos are; the 8-bit ones
decoded as the product decodes them), and reconstructed by:
- the linear floor: per-band least squares from the chromaticity to the spectrum over brightness,
  scale-invariant, fitted on the same training data as the held-out model;
- the previous bundle (benchmarks/models/scdm-v1), which saw every scene in training (in-sample for it);
- the held-out model at the bundle's default inference settings;
- the shipped default bundle, which like the previous bundle saw the scene in training (in-sample).
Scores: SAM over the bands the scene covers, and MPSNR after one least-squares gain per image (the
three methods output different units: the previous bundle's are the training scenes' mixed units).
``--label NAME --held-out-only`` adds another recipe's held-out models beside these rows (e.g. the previous
bundle's recipe, configs/multiscale_v1.json, trained without each scene at its own budget).

The real-sensor row runs the product (``engine.raster.infer_raster``) on rgbn.tif, an 8-bit RGB orthophoto
with a real near-infrared band 4, and correlates the 760-900 nm mean with it, for the linear floor
fitted on the full recipe's data, the previous bundle and the shipped default bundle; a quicklook PNG
puts the predicted near-infrared beside the real one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import rasterio

from benchmarks.data import SHARED_DATA
from engine.bundle import default_bundle_path, load_bundle
from engine.data import load_scene
from engine.evaluate import reconstruct, sampler_settings
from engine.imaging_data import scene_source
from engine.metrics import mpsnr, sam
from engine.radiometry import Radiometry, linear_to_srgb, linearise, resolve
from engine.rgb_simulation import Camera, camera_on_grid, geojson_response
from engine.spectral import load_srf_csv
from engine.spectral_library import load_earthlib
from engine.train import bundle_config_from_training, train, training_data
from engine.training_config import load_training_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / "configs" / "default_model.json"
PREVIOUS = REPO / "benchmarks" / "models" / "scdm-v1"
RGBN = REPO / "runs" / "demo" / "rgbn.tif"  # fetched by scripts/demo.sh
ENMAP = "enmap_potsdam_tiles_mosaic"
HELD_OUT = ("muufl_casi72", "vegetation_aviris224", "urban_hydice162", ENMAP)
HELD_OUT_LABEL = "default recipe, scene held out"
FLOOR, PREVIOUS_IN_SAMPLE, SHIPPED_IN_SAMPLE = ("linear floor", "previous bundle (scdm-v1, in-sample)",
                                                "shipped default (in-sample)")
ENMAP_TRAINING_SHARE = 0.6  # the northern 60 % of the mosaic's rows train, the rest is tested
NIR_RANGE_NM = (760.0, 900.0)
Reconstructor = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TestImage:
    scene: str
    camera: str
    encoding: str
    rgb: np.ndarray      # (3, H, W) as the model receives it (8-bit input already decoded)
    truth: np.ndarray    # (C, H, W) reflectance on the model grid
    valid: np.ndarray    # (H, W)
    covered: np.ndarray  # (C,) bands the scene measures


def test_cameras(srf_dir: Path, wavelengths_nm: Sequence[float]) -> Dict[str, Camera]:
    return {"nikon5100": camera_on_grid(load_srf_csv(srf_dir / "camera_nikon5100_npl.csv"), wavelengths_nm),
            "sentinel2": camera_on_grid(geojson_response(srf_dir / "sentinel2a_msi.geojson", ["B4", "B3", "B2"]),
                                        wavelengths_nm)}


ENCODINGS = ("linear", "srgb8", "stretch8")


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """Linear RGB -> what the product passes to the model: as is ("linear"); exposed to the 99.5th
    percentile and sRGB-encoded to 8 bit ("srgb8", a camera JPEG's tone curve); or stretched per
    channel between its 1st and 99th percentiles to 8 bit ("stretch8", as distributed orthophotos
    and rgbn.tif are); the 8-bit codes decoded again as ``auto`` radiometry does."""
    if encoding == "linear":
        return rgb.astype(np.float32)
    if encoding == "stretch8":
        low, high = (np.percentile(rgb, q, axis=(1, 2), keepdims=True) for q in (1, 99))
        codes = np.round(np.clip((rgb - low) / np.maximum(high - low, 1e-9), 0, 1) * 255.0)
        return linearise(codes, resolve(Radiometry.AUTO, "uint8"), "uint8").astype(np.float32)
    exposed = np.clip(rgb / max(float(np.percentile(rgb, 99.5)), 1e-9), 0, 1)
    codes = np.round(linear_to_srgb(exposed) * 255.0)
    return linearise(codes, resolve(Radiometry.AUTO, "uint8"), "uint8").astype(np.float32)


def absolute_recipe(recipe: dict, recipe_dir: Path) -> dict:
    """The recipe with its scene and response paths made absolute, so a copy written elsewhere
    trains on the same data."""
    scenes = [{**spec, "path": str((recipe_dir / spec["path"]).resolve())} for spec in recipe["scenes"]]
    return {**recipe, "scenes": scenes, "srf_dir": str((recipe_dir / recipe["srf_dir"]).resolve())}


def recipe_without(recipe: dict, recipe_dir: Path, held_out: str, out_dir: Path, budget: dict) -> Path:
    """The recipe with one scene held out (EnMAP: its southern rows), paths made absolute; written
    to ``out_dir`` and returned."""
    recipe = absolute_recipe(recipe, recipe_dir)
    scenes = []
    for spec in recipe["scenes"]:
        path = Path(spec["path"])
        if path.stem == held_out and held_out == ENMAP:
            rows = load_scene(path).cube.shape[1]
            spec = {**spec, "rows": [0, int(rows * ENMAP_TRAINING_SHARE)]}
        elif path.stem == held_out:
            continue
        scenes.append(spec)
    changed = {**recipe, **budget, "scenes": scenes, "output": str(out_dir / f"without-{held_out}")}
    path = out_dir / f"without-{held_out}.json"
    path.write_text(json.dumps(changed, indent=1))
    return path


def test_images(recipe_path: Path, held_out: str) -> List[TestImage]:
    config = load_training_config(recipe_path)
    bundle = bundle_config_from_training(config)
    spec = next(s for s in load_training_config(DEFAULT_RECIPE).scenes if s.path.stem == held_out)
    scene = load_scene(spec.path)
    if held_out == ENMAP:
        start = int(scene.cube.shape[1] * ENMAP_TRAINING_SHARE)
        scene = load_scene(spec.path, rows=(start, scene.cube.shape[1]))
    library = load_earthlib(bundle.wavelengths_nm, bundle.fwhm_nm)
    source = scene_source(scene, bundle, spec.units == "radiance", library)
    images = []
    for name, camera in test_cameras(config.srf_dir, bundle.wavelengths_nm).items():
        linear = camera.render(source.cube)
        for encoding in ENCODINGS:
            images.append(TestImage(held_out, name, encoding, encode(linear, encoding), source.cube,
                                    source.valid, source.covered.astype(bool)))
    return images


class LinearFloor:
    """Per-band weighted least squares from (chromaticity, 1) to the spectrum over brightness, on the
    chromatic transform's own channels: the best scale-invariant per-pixel linear map for the data."""

    def __init__(self, recipe_path: Path, batches: int = 16, seed: int = 0):
        config = load_training_config(recipe_path)
        self.bundle = bundle_config_from_training(config)
        data = training_data(config, self.bundle)
        rng = np.random.default_rng(seed)
        crops = [data.batch(config.batch_size, config.crop, rng) for _ in range(batches)]
        cond = np.concatenate([c.cond for c in crops])
        target = np.concatenate([c.cube for c in crops])
        weight = np.concatenate([c.weight for c in crops])[:, 0]
        covered = np.concatenate([c.mask for c in crops])
        features = self._features(np.moveaxis(cond, 1, 0))
        self.coefficients = np.zeros((target.shape[1], features.shape[0]), np.float64)
        for band in range(target.shape[1]):
            rows = covered[:, band] > 0
            x = features[:, rows].reshape(features.shape[0], -1).T
            y = target[rows, band].reshape(-1)
            w = np.sqrt(weight[rows].reshape(-1))
            self.coefficients[band] = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)[0]

    @staticmethod
    def _features(cond: np.ndarray) -> np.ndarray:
        chroma = cond[:3]
        return np.concatenate([chroma, np.ones_like(chroma[:1])])

    def __call__(self, rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
        transform = self.bundle.normalisation
        stats = transform.statistics(rgb, valid)
        features = self._features(transform.condition(rgb, stats))
        ratio = np.einsum("ck,khw->chw", self.coefficients, features)
        scale, offset = transform.output_scale(rgb, stats)
        return (ratio * scale + offset).astype(np.float32)


def model_reconstructor(bundle: Path) -> Reconstructor:
    cascade = load_bundle(bundle)
    settings = sampler_settings(cascade)
    return lambda rgb, valid: reconstruct(cascade, rgb, settings, valid=valid).full


def scores(image: TestImage, estimate: np.ndarray) -> dict:
    """SAM over covered bands; MPSNR (peak: the truth's maximum) after one least-squares gain."""
    truth, estimate = image.truth[image.covered], estimate[image.covered]
    pixels = image.valid
    t, e = truth[:, pixels], estimate[:, pixels]
    gain = float(np.sum(t * e) / max(float(np.sum(e * e)), 1e-12))
    return {"sam": sam(truth, estimate, pixels), "mpsnr": mpsnr(truth, gain * estimate, valid_mask=pixels),
            "gain": gain}


def train_or_reuse(recipe_path: Path, earlier: Optional[str], reuse: bool, log) -> Path:
    """The bundle the recipe at ``recipe_path`` names, trained; or, when ``reuse`` and the recipe's
    text equals ``earlier`` (the text that was there before it was written) and the bundle exists,
    the one an earlier run trained."""
    bundle = Path(json.loads(recipe_path.read_text())["output"])
    if reuse and earlier == recipe_path.read_text() and (bundle / "config.json").exists():
        log(f"{recipe_path.stem}: reusing {bundle}")
        return bundle
    started = time.time()
    bundle = Path(train(recipe_path, show_progress=False)["output"])
    log(f"{recipe_path.stem}: trained in {time.time() - started:.0f} s")
    return bundle


@dataclass(frozen=True)
class HeldOutProtocol:
    """One run's settings: ``recipe`` trains the held-out models (and fits the linear floor) at
    ``budget`` (mean_iterations / iterations) into ``work_dir``, reusing earlier bundles when
    ``reuse``; ``shipped`` is the model of the in-sample rows."""

    recipe: Path
    shipped: Path
    work_dir: Path
    budget: Dict[str, int]
    reuse: bool
    label: str = HELD_OUT_LABEL
    held_out_only: bool = False


def held_out_model(protocol: HeldOutProtocol, held_out: str, log) -> Path:
    """The recipe trained without the scene (an earlier run's bundle when ``reuse`` and its recipe is
    the same)."""
    recipe = json.loads(protocol.recipe.read_text())
    previous = protocol.work_dir / f"without-{held_out}.json"
    earlier = previous.read_text() if previous.exists() else None
    recipe_path = recipe_without(recipe, protocol.recipe.parent, held_out, protocol.work_dir, protocol.budget)
    return train_or_reuse(recipe_path, earlier, protocol.reuse, log)


def held_out_rows(protocol: HeldOutProtocol, held_out: str, log) -> List[dict]:
    bundle = held_out_model(protocol, held_out, log)
    recipe_path = protocol.work_dir / f"without-{held_out}.json"
    methods = {protocol.label: model_reconstructor(bundle)}
    if not protocol.held_out_only:
        methods = {FLOOR: LinearFloor(recipe_path), PREVIOUS_IN_SAMPLE: model_reconstructor(PREVIOUS), **methods,
                   SHIPPED_IN_SAMPLE: model_reconstructor(protocol.shipped)}
    rows = []
    for image in test_images(recipe_path, held_out):
        for method, run in methods.items():
            rows.append({"scene": image.scene, "camera": image.camera, "encoding": image.encoding,
                         "method": method, **scores(image, run(image.rgb, image.valid))})
            log(json.dumps(rows[-1]))
    return rows


def read_rgbn(path: Path):
    """rgbn.tif's RGB, decoded as ``auto`` decodes 8-bit input, and its near-infrared codes."""
    with rasterio.open(path) as dataset:
        codes = dataset.read().astype(np.float32)
    rgb = linearise(codes[:3], resolve(Radiometry.AUTO, "uint8"), "uint8")
    return rgb, codes[3]


def infer_file(bundle: Path, rgbn: Path, out: Path) -> np.ndarray:
    """The product's output for ``rgbn`` at the bundle's default settings, written to ``out``."""
    from engine.raster import infer_raster

    infer_raster(str(rgbn), str(out), model=str(bundle))
    with rasterio.open(out) as dataset:
        return dataset.read()


def nir_mean(cube: np.ndarray, wavelengths_nm: Sequence[float]) -> np.ndarray:
    wavelengths = np.asarray(wavelengths_nm)
    return cube[(wavelengths >= NIR_RANGE_NM[0]) & (wavelengths <= NIR_RANGE_NM[1])].mean(axis=0)


def nir_r(cube: np.ndarray, wavelengths_nm: Sequence[float], nir: np.ndarray) -> float:
    """Pearson r between the cube's 760-900 nm mean and the real near-infrared band."""
    return float(np.corrcoef(nir_mean(cube, wavelengths_nm).ravel(), nir.ravel())[0, 1])


def rgbn_rows(recipe_file: Path, shipped: Path, rgbn: Path, work_dir: Path, out_dir: Path, log) -> List[dict]:
    rgb, nir = read_rgbn(rgbn)
    grid = bundle_config_from_training(load_training_config(recipe_file)).wavelengths_nm
    estimates = {FLOOR: LinearFloor(recipe_file)(rgb, np.ones(nir.shape, bool)),
                 "previous bundle (scdm-v1)": infer_file(PREVIOUS, rgbn, work_dir / "rgbn_previous.tif"),
                 "default bundle": infer_file(shipped, rgbn, work_dir / "rgbn_default.tif")}
    rows, pictures = [], {}
    for method, cube in estimates.items():
        pictures[method] = nir_mean(cube, grid)
        rows.append({"method": method, "nir_r": nir_r(cube, grid, nir), "min": float(cube.min())})
        log(json.dumps(rows[-1]))
    quicklook(rgb, nir, pictures, out_dir / "rgbn_nir.png")
    return rows


def quicklook(rgb: np.ndarray, nir: np.ndarray, predicted: Dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def stretch(image):
        low, high = np.percentile(image, (1, 99), axis=(-2, -1), keepdims=True)
        return np.clip((image - low) / np.maximum(high - low, 1e-9), 0, 1)

    panels = [("RGB (as delivered)", linear_to_srgb(stretch(rgb)).transpose(1, 2, 0)),
              ("real NIR (band 4)", stretch(nir)),
              ("real NIR false colour", stretch(np.stack([nir, rgb[0], rgb[1]])).transpose(1, 2, 0))]
    for method, image in predicted.items():
        panels.append((f"{method}: 760-900 nm", stretch(image)))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for axis, (title, image) in zip(axes.ravel(), panels):
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
        axis.set_title(title)
        axis.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _mean_lines(rows: List[dict]) -> List[str]:
    """Per scene and method, the means over its renderings (cameras x encodings)."""
    groups: Dict[tuple, List[dict]] = {}
    for row in rows:
        groups.setdefault((row["scene"], row["method"]), []).append(row)
    lines = ["| held-out scene | method | mean SAM | mean MPSNR (dB) | renderings |", "|---|---|---|---|---|"]
    for (scene, method), group in groups.items():
        lines.append(f"| {scene} | {method} | {np.mean([r['sam'] for r in group]):.3f} | "
                     f"{np.mean([r['mpsnr'] for r in group]):.2f} | {len(group)} |")
    return lines


def _method_rank(method: str) -> int:
    """Within a scene: the references first, then the held-out models (recipes in the order they
    were measured: Python's sort is stable), the in-sample shipped model last."""
    return {FLOOR: 0, PREVIOUS_IN_SAMPLE: 1, SHIPPED_IN_SAMPLE: 3}.get(method, 2)


def _held_out_lines(rows: List[dict]) -> List[str]:
    if not rows:
        return ["No held-out scenes in these runs (`--held-out` named none): the rgbn.tif check only."]
    # rows that later runs added (another recipe's) sit beside their scene's rendering
    scene_order = {scene: i for i, scene in enumerate(dict.fromkeys(row["scene"] for row in rows))}
    rendering_order = {key: i for i, key in enumerate(dict.fromkeys((row["camera"], row["encoding"]) for row in rows))}
    rows = sorted(rows, key=lambda row: (scene_order[row["scene"]], rendering_order[(row["camera"], row["encoding"])],
                                         _method_rank(row["method"])))
    lines = _mean_lines(rows) + ["", "Every rendering:", "",
                                 "| scene | camera | encoding | method | SAM | MPSNR (dB) | gain |",
                                 "|---|---|---|---|---|---|---|"]
    return lines + [f"| {row['scene']} | {row['camera']} | {row['encoding']} | {row['method']} | "
                    f"{row['sam']:.4f} | {row['mpsnr']:.2f} | {row['gain']:.3g} |" for row in rows]


def _held_out_model_text(models: Dict[str, dict]) -> str:
    """Which recipe and budget trained each held-out method's models."""
    return "; ".join(f"'{label}': `{spec['recipe']}` without the test scene, {spec['mean_iterations']} mean-network "
                     f"and {spec['iterations']} diffusion iterations per stage" for label, spec in models.items())


def write_table(result: dict, out_dir: Path) -> None:
    commands = ", then ".join(f"`{c}`" for c in result["commands"])
    lines = ["# Generalisation: leave-scene-out and real-sensor check", "",
             f"Commands: {commands} (a later run replaces the rows it measures). Held-out models (a recipe's "
             f"mean-network budget applies only where it has mean networks): "
             f"{_held_out_model_text(result['held_out_models'])}. The 'shipped default' and 'default bundle' rows "
             "are the `--bundle` model (default: the bundled one), trained on every scene. MPSNR after one "
             "least-squares gain per image; SAM in radians over the bands the scene covers.", "", ""]
    lines += _held_out_lines(result["held_out"])
    lines += ["", "## rgbn.tif: real 8-bit orthophoto with a real near-infrared band", "",
              "| method | r (760-900 nm mean vs real NIR) | output minimum |", "|---|---|---|"]
    lines += [f"| {row['method']} | {row['nir_r']:.3f} | {row['min']:.4g} |" for row in result["rgbn"]]
    lines += ["", "![rgbn quicklook](rgbn_nir.png)", ""]
    (out_dir / "README.md").write_text("\n".join(lines))
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "generalisation")
    parser.add_argument("--held-out", nargs="*", default=list(HELD_OUT), help="scene names (file stems)")
    parser.add_argument("--mean-iterations", type=int, default=None,
                        help="mean-network iterations per stage of the held-out models (default: the recipe's)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="diffusion iterations per stage of the held-out models (default: the recipe's)")
    parser.add_argument("--rgbn", type=Path, default=RGBN, help="RGB + NIR GeoTIFF (default: the demo's, "
                        "fetched by scripts/demo.sh); the real-sensor rows are skipped when it is absent")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "generalisation")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE,
                        help="training recipe of the held-out models and the linear floor (default: the bundled model's)")
    parser.add_argument("--bundle", type=Path, default=default_bundle_path(),
                        help="the model in the 'shipped default' and 'default bundle' rows (default: the bundled model)")
    parser.add_argument("--reuse", action="store_true",
                        help="use the held-out bundles of an earlier run with the same recipe instead of training")
    parser.add_argument("--label", default=HELD_OUT_LABEL, help="the held-out models' method name in the table")
    parser.add_argument("--held-out-only", action="store_true",
                        help="measure the held-out models only (no linear floor, bundles or rgbn.tif rows), "
                             "e.g. another recipe beside the default's")
    args = parser.parse_args(argv)
    # absolute: the held-out recipes name their output, and a recipe's relative paths are its folder's
    args.out, args.work, args.recipe = args.out.resolve(), args.work.resolve(), args.recipe.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    budget = held_out_budget(args.recipe, args.mean_iterations, args.iterations)
    log = lambda message: print(message, flush=True)  # noqa: E731
    command = shlex.join(sys.argv[1:] if argv is None else argv)
    result = previous_result(args.out)
    result["commands"] = result.get("commands", []) + [f"python -m benchmarks.generalisation {command}".strip()]
    result["held_out_models"][args.label] = {"recipe": _repo_relative(args.recipe), **budget}
    protocol = HeldOutProtocol(args.recipe, args.bundle, args.work, budget, args.reuse, args.label,
                               args.held_out_only)
    for scene in args.held_out:
        result["held_out"] = merge_rows(result["held_out"], held_out_rows(protocol, scene, log))
        write_table(result, args.out)
    if args.rgbn.exists() and not args.held_out_only:
        result["rgbn"] = rgbn_rows(args.recipe, args.bundle, args.rgbn, args.work, args.out, log)
    write_table(result, args.out)


def held_out_budget(recipe: Path, mean_iterations: Optional[int], iterations: Optional[int]) -> Dict[str, int]:
    """The held-out models' iterations: the recipe's own (what a model shipped from it trains with)
    unless given."""
    config = load_training_config(recipe)
    return {"mean_iterations": config.mean_network_iterations if mean_iterations is None else mean_iterations,
            "iterations": config.iterations if iterations is None else iterations}


def merge_rows(earlier: List[dict], new: List[dict]) -> List[dict]:
    """A re-run replaces the rows of the (scene, method) pairs it measured and keeps the others."""
    measured = {(row["scene"], row["method"]) for row in new}
    return [row for row in earlier if (row["scene"], row["method"]) not in measured] + new


def _repo_relative(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def previous_result(out_dir: Path) -> dict:
    """The page's earlier results; pages written before ``--label`` hold one ``budget`` for the default
    label's models, whose recipe only their commands name."""
    path = out_dir / "results.json"
    result = json.loads(path.read_text()) if path.exists() else {"held_out": [], "rgbn": []}
    models = result.setdefault("held_out_models", {})
    if "budget" in result:
        models.setdefault(HELD_OUT_LABEL, {"recipe": "the --recipe of the commands above", **result.pop("budget")})
    return result

if __name__ == "__main__":
    main()
