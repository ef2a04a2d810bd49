"""The paper-protocol evaluation on houston2018_casi48 (``python -m benchmarks.paper_protocol``).

4-fold cross-validation over the four 64 x 64 quadrants (train on three, test on one), input RGB =
bands [4, 11, 22], the paper's normalisation (x - 3693) / 7410. Every method gets the same data,
iterations, batch and crop: per-pixel linear regression (the floor), a single-shot CNN, one-stage
diffusion (RGB -> 48 bands) and the two-stage cascade (RGB -> 12 -> 48) sampled with the paper's
1000-step DDPM (ICMG + PDT on the noise, one sample as in the paper) and with the fast sampler, one
sample and the mean of K; plus the PDT / ICMG ablation (Table VI) on one fold. The diffusion
networks use EDM preconditioning unless ``--parameterisation eps`` asks for the paper's. Writes a
Markdown table, JSON and the figures to ``--out``. ``--merge DIR DIR ...`` combines earlier runs of the
same settings on other folds or seeds (their paper_protocol.json) into one table at ``--out``; the
figures need the estimates, which the JSON does not keep, so a merged page has none.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from benchmarks.calibration import spread_scores
from benchmarks.data import HOUSTON_SCENE
from engine.cascade import Cascade, apply_affine, make_config
from engine.consistency import CameraResponse, project
from engine.config import (PARAMETERISATIONS, BundleConfig, Normalisation, RGBSimulation, SamplerConfig, UNetConfig,
                           houston_grid)
from engine.data import TrainingSet, load_scene
from engine.diffusion.noise import PositionalNoise
from engine.diffusion.schedule import TrainingTimesteps
from engine.metrics import all_metrics, per_band_psnr
from engine.model.regressor import SingleShotCNN
from engine.train import (LoopOptions, RegressionObjective, TrainingTask, fit_baseline, inner, stage_selector,
                          train_network, train_stage)
from engine.training_config import TrainingConfig

RGB_BANDS = (4, 11, 22)
QUADRANTS = [((0, 64), (0, 64)), ((0, 64), (64, 128)), ((64, 128), (0, 64)), ((64, 128), (64, 128))]
NORMALISATION = Normalisation(kind="fixed", offset=3693.0, scale=7410.0)
# The shape of each architecture's network in the learned rows (width, blocks and window come from
# the command line).
NETWORK_SHAPES = {
    "local": {"channel_multipliers": (1,), "attention_downsample": ()},
    "multiscale": {"channel_multipliers": (1, 2, 2), "attention_downsample": (4,)},
}
QUIET = LoopOptions(show_progress=False)


def _metrics(reference, estimate) -> dict:
    kept_all = all_metrics(reference, estimate)
    without = all_metrics(reference, estimate, exclude_bands=RGB_BANDS)
    return {"rmse": without["rmse"], "sam": without["sam"], "mssim": without["mssim"],
            "mpsnr": without["mpsnr"], "mpsnr_all_bands": kept_all["mpsnr"],
            "rmse_all_bands": kept_all["rmse"], "sam_all_bands": kept_all["sam"],
            "mssim_all_bands": kept_all["mssim"]}


def linear_regression(train_cubes, test_rgb):
    x = np.concatenate([c[list(RGB_BANDS)].reshape(3, -1) for c in train_cubes], axis=1).T
    y = np.concatenate([c.reshape(c.shape[0], -1) for c in train_cubes], axis=1).T
    design = np.hstack([x, np.ones((x.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    test = np.hstack([test_rgb.reshape(3, -1).T, np.ones((test_rgb[0].size, 1))])
    return (test @ coef).T.reshape(-1, *test_rgb.shape[1:])


def mean_of_samples(draw, count: int, seed: int):
    """The average of ``count`` samples drawn with seeds seed, seed + 1, ... (``draw(seed)`` returns
    (estimate, network passes)): a Monte-Carlo estimate of the posterior mean, which a single sample
    cannot match in RMSE (a sample's expected squared error is the mean's plus the posterior variance).
    Returns (mean, standard deviation over the samples or None for one sample, network passes)."""
    estimates, passes = zip(*(draw(seed + k) for k in range(count)))
    stacked = torch.stack(estimates).double()
    std = stacked.std(dim=0).float() if count > 1 else None  # unbiased (ddof 1)
    return stacked.mean(dim=0).float(), std, sum(passes)


def uncertainty_scores(reference: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict:
    """The K-sample spread against the error of their mean on the held-out quadrant (the input
    bands excluded, as the table's metrics): benchmarks.calibration's coverage and rank correlation."""
    kept = [b for b in range(reference.shape[0]) if b not in RGB_BANDS]
    truth, mean, std = (a[kept].reshape(len(kept), -1) for a in (reference, mean, std))
    error, spread = np.abs(truth - mean), np.maximum(std, 1e-12)
    scores = spread_scores(error / spread, spread.mean(axis=0), error.mean(axis=0))
    return {key: scores[key] for key in ("coverage68", "coverage95", "spearman")}


def paper_sampler(guidance: float, pdt: bool = True) -> SamplerConfig:
    return SamplerConfig(name="ddpm", steps=1000, guidance=guidance, pdt_stage1=0.96 if pdt else None,
                         pdt_stage2=0.88 if pdt else None, truncation_target="eps")


def protocol_unet(args, stage: int = 1) -> UNetConfig:
    """The network of the learned rows (``--architecture``, the local UNet by default). Stage 2 of
    the cascade (12 bands + RGB -> 48 bands, a spectral interpolation) takes its own window."""
    window = args.stage2_window if stage == 2 else args.condition_window
    return UNetConfig(base_channels=args.width, encoder_res_blocks=args.blocks, decoder_res_blocks=args.blocks + 1,
                      condition_window=window, architecture=args.architecture, **NETWORK_SHAPES[args.architecture])


def stage_crop(args, stage: int) -> int:
    """Training crop of a network: the whole context of one pixel when its output depends on a
    window of the condition, 32 px when it depends on the whole crop."""
    if args.crop is not None:
        return args.crop
    radius = protocol_unet(args, stage).context_radius
    return 32 if radius is None else 2 * radius + 1


def one_stage_cascade(config: BundleConfig) -> Cascade:
    """The one-stage diffusion (RGB -> every band): a cascade whose stage 1 outputs every band; its
    stage 2 is never trained or sampled. So built, it trains and samples through the product's own
    stage code (``train_stage``, ``Cascade.sample_stage``)."""
    every_band = tuple(range(config.band_count))
    return Cascade(replace(config, name="one-stage", stage1=replace(config.stage1, output_indices=every_band)))


@dataclass(frozen=True)
class FoldRun:
    """One (fold, training seed) of the protocol and what every method on it shares."""

    fold: int
    seed: int
    args: argparse.Namespace
    device: str
    log: Callable[[str], None]
    config: BundleConfig
    training: TrainingConfig
    data: TrainingSet
    train_cubes: List[np.ndarray]
    test_cube: np.ndarray
    rgb_model: torch.Tensor  # the test RGB in model units, (1, 3, H, W) on the device

    @property
    def first_seed(self) -> bool:
        """The paper sampler and the ablation run for the first seed only (they cost as much as all
        other rows together)."""
        return self.seed == self.args.seeds[0]

    def estimate_in_units(self, estimate: torch.Tensor) -> np.ndarray:
        return NORMALISATION.from_model(estimate[0].cpu().numpy())


def prepare_fold(fold: int, seed: int, args, scene_path: Path, device: str, log) -> FoldRun:
    (tr, tc) = QUADRANTS[fold]
    test_cube = load_scene(scene_path).cube[:, tr[0]:tr[1], tc[0]:tc[1]]
    train_scenes = [load_scene(scene_path, r, c) for i, (r, c) in enumerate(QUADRANTS) if i != fold]
    fast = SamplerConfig(name="dpmpp", steps=args.fast_steps, guidance=args.fast_guidance, pdt_stage1=0.96,
                         pdt_stage2=0.88, truncation_target="x0")
    means = (protocol_unet(args), protocol_unet(args, stage=2)) if args.mean_anchored else (None, None)
    config = make_config("paper-protocol", houston_grid(), unet=protocol_unet(args),
                         stage2_unet=protocol_unet(args, stage=2), normalisation=NORMALISATION,
                         rgb_simulation=RGBSimulation(kind="bands", band_indices=RGB_BANDS), sampler=fast,
                         parameterisation=args.parameterisation, mean_networks=means)
    training = TrainingConfig(name=config.name, output=Path(args.out), scenes=(), iterations=args.iterations,
                              batch_size=args.batch, crop=stage_crop(args, 1), learning_rate=args.lr,
                              ema_decay=args.ema_decay, seed=seed, noise_levels=args.noise_levels,
                              log_sigma_mean=args.log_sigma_mean, log_sigma_std=args.log_sigma_std,
                              parameterisation=args.parameterisation, mean_network=means[0],
                              stage2_mean_network=means[1],
                              stage2_condition_source="stage1_mean" if args.mean_anchored else "truth",
                              stage2_condition_noise=args.stage2_condition_noise if args.mean_anchored else 0.0)
    rgb_model = torch.from_numpy(NORMALISATION.to_model(test_cube[list(RGB_BANDS)]))[None].float().to(device)
    return FoldRun(fold, seed, args, device, log, config, training, TrainingSet(config, train_scenes),
                   [scene.cube for scene in train_scenes], test_cube, rgb_model)


def train_single_shot(run: FoldRun, table) -> Dict[int, np.ndarray]:
    """The single-shot regressor: stage 1's network (its RGB window, the one the one-stage diffusion
    uses) with a constant input, the same linear baseline as the diffusion (it learns the residual),
    crops, batch and EMA, through the product's training loop with loss MSE + lambda * (1 - cos).
    The cascade trains two networks of ``iterations`` each, so it is shown after ``iterations`` and
    after twice that: {iterations: estimate of the test scene}."""
    iterations = run.args.iterations
    torch.manual_seed(run.seed)
    network = SingleShotCNN(run.config.stage1.unet, run.config.band_count, 3)
    estimates = {}

    def keep(network_now: torch.nn.Module, done: int) -> None:
        with torch.no_grad():
            estimates[done] = run.estimate_in_units(network_now(run.rgb_model) + apply_affine(table, run.rgb_model))

    def whole(cube, rgb, mask, rng):
        return cube, rgb, mask

    offset = NORMALISATION.offset / NORMALISATION.scale
    task = TrainingTask(whole, RegressionObjective(run.training.sam_weight, offset),
                        lambda cond, margin: apply_affine(table, inner(cond, margin)))
    options = LoopOptions(label="single-shot", show_progress=False,
                          on_step=lambda done, ema: keep(ema, done) if done == iterations else None)
    train_network(network, run.data, task, replace(run.training, iterations=2 * iterations), run.device, options)
    keep(network, 2 * iterations)
    return estimates


def train_diffusion(run: FoldRun, timings: dict):
    """The one-stage diffusion and the cascade, trained; their training seconds go to ``timings``."""
    torch.manual_seed(run.seed)
    cascade, one_stage = Cascade(run.config), one_stage_cascade(run.config)
    started = time.time()
    train_stage(1, one_stage, run.data, run.training, run.device, QUIET)
    timings["one-stage diffusion"] = {"train_s": round(time.time() - started, 1)}
    started = time.time()
    for stage in (1, 2):
        train_stage(stage, cascade, run.data, replace(run.training, crop=stage_crop(run.args, stage)), run.device,
                    QUIET)
    timings["cascade"] = {"train_s": round(time.time() - started, 1)}
    run.log(f"fold {run.fold}, seed {run.seed}: diffusion models trained")
    return cascade.to(run.device), one_stage.to(run.device)


def diffusion_runs(run: FoldRun, cascade: Cascade, one_stage: Cascade, timings: dict) -> dict:
    """{row label: (draw(seed) -> (estimate, network passes), samples averaged, training timing)}."""

    def one_stage_draw(settings):
        # The one-stage network outputs the final bands: truncate as the cascade's final stage does.
        final_stage = replace(settings, pdt_stage1=settings.pdt_stage2)

        def draw(seed):
            out = one_stage.sample_stage(1, run.rgb_model, final_stage, PositionalNoise(seed, [(0, 0)]))
            return out.x0, out.network_passes
        return draw

    def cascade_draw(settings):
        def draw(seed):
            out = cascade.sample(run.rgb_model, settings, PositionalNoise(seed, [(0, 0)]))
            return out.full, out.network_passes
        return draw

    fast, samples = run.config.sampler, run.args.samples
    mean_label = f"mean of {samples} samples"
    # One DDIM step from pure noise returns the denoiser's x_0 at t = T: its estimate of the
    # conditional mean, the quantity RMSE rewards, for two network passes.
    one_step = replace(fast, name="ddim", steps=1)
    one_stage_train, cascade_train = timings["one-stage diffusion"], timings["cascade"]
    runs = {
        "one-stage diffusion (fast), one sample": (one_stage_draw(fast), 1, one_stage_train),
        f"one-stage diffusion (fast), {mean_label}": (one_stage_draw(fast), samples, one_stage_train),
        "one-stage diffusion, DDIM 1 step": (one_stage_draw(one_step), 1, one_stage_train),
        "cascade, fast sampler, one sample": (cascade_draw(fast), 1, cascade_train),
        f"cascade, fast sampler, {mean_label}": (cascade_draw(fast), samples, cascade_train),
        "cascade, DDIM 1 step per stage": (cascade_draw(one_step), 1, cascade_train),
    }
    if not run.args.skip_ddpm and run.first_seed:
        runs["cascade, paper sampler (DDPM 1000), one sample"] = (cascade_draw(paper_sampler(run.args.guidance)), 1,
                                                                cascade_train)
    return runs


def ablation(run: FoldRun, cascade: Cascade) -> dict:
    """The PDT / ICMG ablation (Table VI) on the ablation fold, first seed; {} elsewhere. PDT clamps x_0
    and x_t in units of each band's std (``engine.diffusion.truncation``)."""
    if run.fold != run.args.ablation_fold or not run.first_seed:
        return {}
    fast, guidance = run.config.sampler, run.args.guidance
    variants = {
        "no ICMG, no PDT": replace(fast, guidance=0.0, pdt_stage1=None, pdt_stage2=None),
        "ICMG only": replace(fast, guidance=guidance, pdt_stage1=None, pdt_stage2=None),
        "PDT only": replace(fast, guidance=0.0),
        "ICMG + PDT (x0)": replace(fast, guidance=guidance),
        "ICMG on stage 2 only + PDT (x0, paper's best)": replace(fast, guidance=guidance, guidance_stage1=0.0),
        "ICMG + PDT (x_t, authors' code)": replace(fast, guidance=guidance, truncation_target="x_t"),
        "ICMG + PDT (eps, paper)": replace(fast, guidance=guidance, truncation_target="eps"),
    }
    if not run.args.skip_ddpm:
        variants.update({
            "DDPM: no ICMG, no PDT": paper_sampler(0.0, pdt=False),
            "DDPM: ICMG + PDT on x_t": replace(paper_sampler(guidance), truncation_target="x_t"),
        })
    rows = {}
    for label, settings in variants.items():
        out = cascade.sample(run.rgb_model, settings, PositionalNoise(run.seed, [(0, 0)]))
        rows[label] = _metrics(run.test_cube, run.estimate_in_units(out.full))
        run.log(f"ablation {label}: {rows[label]['rmse']:.1f} / {rows[label]['sam']:.4f}")
    return rows


def single_shot_baseline(run: FoldRun, one_stage: Cascade):
    """The affine map the single-shot network learns the residual of: the one-stage diffusion's, or
    (mean-anchored stages fit none) the same least-squares fit made here."""
    table = one_stage.stage_config(1).baseline
    if table is None:
        table = fit_baseline(run.data, stage_selector(1, one_stage, run.training), run.training)[0]
    return table


# The estimates that get an RGB-consistent twin (engine.consistency with the paper's band pick).
CONSISTENT = ("cascade, DDIM 1 step per stage", "cascade, fast sampler, one sample", "one-stage diffusion, DDIM 1 step")


def band_pick_response(band_count: int) -> CameraResponse:
    """The paper's "camera": the RGB is bands RGB_BANDS of the cube, one band per channel."""
    weights = np.zeros((3, band_count))
    weights[np.arange(3), list(RGB_BANDS)] = 1.0
    return CameraResponse(weights, f"band pick {RGB_BANDS}")


def rgb_consistent(run: FoldRun, estimates: Dict[str, np.ndarray], timings: dict) -> Dict[str, np.ndarray]:
    """``<label>, RGB-consistent``: the CONSISTENT estimates projected onto the spectra that render
    exactly to the input RGB. With a band pick only the three input bands change (they become the
    input), so the table without the input bands is unchanged by construction; the all-band one is not.
    No non-negativity step: it would also touch other bands, and these rows isolate the projection."""
    response = band_pick_response(run.test_cube.shape[0])
    rgb = run.test_cube[list(RGB_BANDS)]
    out = {}
    for label in CONSISTENT:
        if label in estimates:
            out[f"{label}, RGB-consistent"] = project(estimates[label], rgb, response, non_negative=False)
            timings[f"{label}, RGB-consistent"] = timings.get(label, {})
    return out


def run_fold(fold: int, seed: int, args, scene_path: Path, device: str, log) -> dict:
    """Every method on one fold with one training seed."""
    run = prepare_fold(fold, seed, args, scene_path, device, log)
    timings = {}
    started = time.time()
    estimates = {"linear regression": linear_regression(run.train_cubes, run.test_cube[list(RGB_BANDS)])}
    timings["linear regression"] = {"train_s": round(time.time() - started, 2)}
    cascade, one_stage = train_diffusion(run, timings)
    started = time.time()
    single_shot = train_single_shot(run, single_shot_baseline(run, one_stage))
    seconds = round(time.time() - started, 1)
    log(f"fold {fold}, seed {seed}: single-shot network done in {seconds} s")
    for iterations, estimate in single_shot.items():
        label = f"single-shot network, {iterations} iterations"
        estimates[label] = estimate
        timings[label] = {"train_s": round(seconds * iterations / (2 * args.iterations), 1)}
    for label, (draw, count, train_timing) in diffusion_runs(run, cascade, one_stage, timings).items():
        started = time.time()
        estimate, std, passes = mean_of_samples(draw, count, seed)
        estimates[label] = run.estimate_in_units(estimate)
        timings[label] = {**train_timing, "sample_s": round(time.time() - started, 1), "network_passes": passes}
        if std is not None:
            spread = std[0].cpu().numpy() * NORMALISATION.scale  # the affine normalisation's scale only
            timings[label].update(uncertainty_scores(run.test_cube, estimates[label], spread))
        log(f"fold {fold}, seed {seed}: {label} sampled in {timings[label]['sample_s']} s")
    estimates.update(rgb_consistent(run, estimates, timings))
    results = {label: {**_metrics(run.test_cube, estimate), **timings.get(label, {})}
               for label, estimate in estimates.items()}
    per_band = {label: per_band_psnr(run.test_cube, est).tolist() for label, est in estimates.items()}
    return {"fold": fold, "seed": seed, "results": results, "ablation": ablation(run, cascade),
            "per_band_psnr": per_band, "reference": run.test_cube, "estimates": estimates}


METRIC_KEYS = ("rmse", "sam", "mssim", "mpsnr", "rmse_all_bands", "sam_all_bands", "mssim_all_bands",
               "mpsnr_all_bands")
# Rows whose estimates are also averaged over the training seeds ("ensemble of S seeds"): the
# deterministic estimate of each method family.
ENSEMBLED = ("single-shot network", "one-stage diffusion, DDIM 1 step", "cascade, DDIM 1 step per stage",
             "cascade, fast sampler, mean of")


def _ensembles(units: list) -> dict:
    """{fold: {label: metrics}} of the estimates averaged over the seeds, for the ENSEMBLED rows."""
    seeds = sorted({u["seed"] for u in units})
    out = {}
    for fold in sorted({u["fold"] for u in units}):
        members = [u for u in units if u["fold"] == fold]
        # merged runs (read back from JSON) keep no estimates to average
        if len(members) < len(seeds) or len(seeds) < 2 or "estimates" not in members[0]:
            continue
        reference = members[0]["reference"]
        single_shot = [m for m in members[0]["estimates"] if m.startswith("single-shot")]
        labels = [m for m in members[0]["estimates"]
                  if m.startswith(ENSEMBLED) and (not m.startswith("single-shot") or m == single_shot[-1])]
        out[fold] = {f"{m}, ensemble of {len(seeds)} seeds":
                     _metrics(reference, np.mean([u["estimates"][m] for u in members], axis=0)) for m in labels}
    return out


def summarise(units: list) -> dict:
    """Per method: the mean over folds of the mean over seeds, the spread over seeds of the fold mean
    (std, ddof 1), seeds counted, timings; ensembles of the seeds as rows of their own."""
    folds = sorted({u["fold"] for u in units})
    methods = list(dict.fromkeys(m for u in units for m in u["results"]))
    table = {}
    for m in methods:
        have = [u for u in units if m in u["results"]]
        seeds = sorted({u["seed"] for u in have})
        per_fold = {f: [u["results"][m] for u in have if u["fold"] == f] for f in folds}
        row = {k: float(np.mean([np.mean([r[k] for r in rs]) for rs in per_fold.values() if rs])) for k in METRIC_KEYS}
        row["folds"] = {f: {k: float(np.mean([r[k] for r in rs])) for k in ("rmse", "sam")}
                        for f, rs in per_fold.items() if rs}
        complete = [sd for sd in seeds if all(any(u["seed"] == sd and u["fold"] == f for u in have) for f in folds)]
        if len(complete) > 1:
            by_seed = [np.mean([u["results"][m]["rmse"] for u in have if u["seed"] == sd]) for sd in complete]
            row["rmse_seed_std"] = float(np.std(by_seed, ddof=1))
        row["seeds"] = len(seeds)
        for extra in ("train_s", "sample_s", "network_passes", "coverage68", "coverage95", "spearman"):
            values = [u["results"][m][extra] for u in have if u["results"][m].get(extra) is not None]
            if values:
                row[extra] = float(np.mean(values))
        table[m] = row
    ensembles = _ensembles(units)
    if ensembles and len(ensembles) == len(folds):
        for m in ensembles[folds[0]]:
            row = {k: float(np.mean([ensembles[f][m][k] for f in folds])) for k in METRIC_KEYS}
            row["folds"] = {f: {k: ensembles[f][m][k] for k in ("rmse", "sam")} for f in folds}
            row["seeds"] = len({u["seed"] for u in units})
            table[m] = row
    return table


def write_figures(units: list, table: dict, out: Path) -> None:
    from engine.report import plot_per_band_psnr, plot_spectral_profiles, select_profile_pixels

    folds, seeds = sorted({u["fold"] for u in units}), sorted({u["seed"] for u in units})
    trained = [m for m in table if "ensemble" not in m]
    wavelengths = houston_grid()
    plot_per_band_psnr(wavelengths, {m: np.mean([u["per_band_psnr"][m] for u in units if m in u["per_band_psnr"]],
                                                axis=0) for m in trained},
                       out / "per_band_psnr.png",
                       title=f"Per-band PSNR, houston2018_casi48, mean of {len(folds)} fold(s) x {len(seeds)} seed(s)")
    first = units[0]
    pixels = select_profile_pixels(first["reference"], 4)
    single_shot = [m for m in trained if m.startswith("single-shot")]
    shown = {m: first["estimates"][m] for m in trained
             if m in first["estimates"] and (m == "linear regression" or m == single_shot[-1] or m.startswith("cascade"))}
    plot_spectral_profiles(wavelengths, first["reference"], shown, pixels, out / "spectral_profiles.png",
                           title=f"Spectral profiles, test quadrant {first['fold']}, seed {first['seed']}")


def _table_header(units: list, args) -> list:
    folds, seeds = sorted({u["fold"] for u in units}), sorted({u["seed"] for u in units})
    return [
        "# Paper-protocol evaluation (houston2018_casi48, 4-fold quadrant CV)",
        "",
        f"Produced by `python -m benchmarks.paper_protocol {' '.join(args.argv)}` "
        f"(folds {folds}, training seeds {seeds}; {args.iterations} iterations x batch {args.batch} per network, "
        f"{args.architecture} UNet of width {args.width} with {args.blocks} encoder block(s), condition window "
        f"{args.condition_window} px (stage 2 of the cascade: {args.stage2_window} px), EMA {args.ema_decay}, "
        f"{args.parameterisation} parameterisation; fast sampler = DPM-Solver++(2M) {args.fast_steps} steps, PDT on "
        f"x_0, guidance s = {args.fast_guidance}; paper sampler and ICMG ablation rows s = {args.guidance}, first "
        "seed only; train and sample seconds on this machine, per network run).",
        "Mean over the folds of the mean over the seeds; metrics exclude the three input bands [4, 11, 22]; MPSNR "
        "and MSSIM peak = reference maximum. RMSE spread: standard deviation over the seeds of the 4-fold mean. "
        "Ensemble rows average the seeds' estimates before measuring.",
        "",
    ]


def _table_rows(units: list, table: dict) -> list:
    lines = ["| method | RMSE | RMSE spread | SAM (rad) | MSSIM | MPSNR (dB) | seeds | network passes | train s | "
             "sample s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m, r in table.items():
        spread = f"{r['rmse_seed_std']:.1f}" if "rmse_seed_std" in r else ""
        lines.append(f"| {m} | {r['rmse']:.1f} | {spread} | {r['sam']:.4f} | {r['mssim']:.4f} | {r['mpsnr']:.2f} | "
                     f"{r['seeds']} | {r.get('network_passes', 1):.0f} | {r.get('train_s', 0):.0f} | "
                     f"{r.get('sample_s', 0):.1f} |")
    lines += ["", "Paper (full Houston data, SCDM): RMSE 359.48, SAM 0.0672.", "",
              "## The same, all 48 bands (input bands included)", "",
              "| method | RMSE | SAM (rad) | MSSIM | MPSNR (dB) |", "|---|---|---|---|---|"]
    for m, r in table.items():
        lines.append(f"| {m} | {r['rmse_all_bands']:.1f} | {r['sam_all_bands']:.4f} | {r['mssim_all_bands']:.4f} | "
                     f"{r['mpsnr_all_bands']:.2f} |")
    folds = sorted({u["fold"] for u in units})
    lines += ["", "## RMSE / SAM per fold (input bands excluded, mean over the seeds)", "",
              "| method | " + " | ".join(f"fold {f}" for f in folds) + " |", "|---|" + "---|" * len(folds)]
    for m, r in table.items():
        cells = " | ".join(f"{r['folds'][f]['rmse']:.1f} / {r['folds'][f]['sam']:.4f}" if f in r["folds"] else ""
                           for f in folds)
        lines.append(f"| {m} | {cells} |")
    return lines + [""] + _uncertainty_rows(table)


def _uncertainty_rows(table: dict) -> list:
    """The K-sample spread of the mean-of-K rows against the error of their mean on the held-out
    quadrants (benchmarks.calibration's measures; no calibration fitted)."""
    rows = [(m, r) for m, r in table.items() if "coverage68" in r]
    if not rows:
        return []
    lines = ["## Uncertainty on the held-out quadrants (K-sample std against the error of their mean)", "",
             "Nominal 68 % / 95 %: the share of values within 1 / 1.96 standard deviations of the mean (input "
             "bands excluded); Spearman: a pixel's mean std against its mean |error|. Mean over the folds.", "",
             "| method | 68 % interval | 95 % interval | Spearman |", "|---|---|---|---|"]
    lines += [f"| {m} | {r['coverage68']:.1%} | {r['coverage95']:.1%} | {r['spearman']:.2f} |" for m, r in rows]
    return lines + [""]


def _ablation_rows(units: list) -> list:
    ablations = [u for u in units if u["ablation"]]
    if not ablations:
        return []
    u = ablations[0]
    lines = [f"## PDT / ICMG ablation (fold {u['fold']}, seed {u['seed']}, Table VI)", "",
             "| variant | RMSE | SAM (rad) | MSSIM | MPSNR (dB) |", "|---|---|---|---|---|"]
    for label, r in u["ablation"].items():
        lines.append(f"| {label} | {r['rmse']:.1f} | {r['sam']:.4f} | {r['mssim']:.4f} | {r['mpsnr']:.2f} |")
    return lines


def write_outputs(units: list, args, out: Path, merged_from: Optional[Dict[str, str]] = None) -> None:
    """The table, JSON and figures of ``units``; ``merged_from`` ({run folder: its command}) when the
    units were read back from earlier runs' JSON, which keeps no estimates to draw the figures from."""
    out.mkdir(parents=True, exist_ok=True)
    table = summarise(units)
    summary = {"settings": vars(args),
               "units": [{k: v for k, v in u.items() if k not in ("reference", "estimates")} for u in units],
               "mean": table}
    lines = _table_header(units, args)
    if merged_from:
        summary["merged"] = merged_from
        lines += ["Merged from: " + ", ".join(f"`python -m benchmarks.paper_protocol {command}`"
                                              for command in merged_from.values()) + ".", ""]
    (out / "paper_protocol.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    lines += _table_rows(units, table) + _ablation_rows(units)
    if not merged_from:
        write_figures(units, table, out)
        lines += ["", "![per-band PSNR](per_band_psnr.png)", "", "![spectral profiles](spectral_profiles.png)", ""]
    (out / "paper_protocol.md").write_text("\n".join(lines).rstrip("\n") + "\n")


# Settings that may differ between runs merged into one table: where they ran, not what they measured.
MERGEABLE_SETTINGS = {"folds", "seeds", "out", "argv", "jobs", "threads", "device", "merge"}


def merged_units(runs: Sequence[Path]) -> Tuple[list, dict, Dict[str, str]]:
    """The (fold, seed) units of earlier runs, their common settings (the first run's) and each run's
    command line by folder. Raises ValueError naming the problem: a folder without a run's output, a setting in
    which two runs differ, or a (fold, seed) that two runs both measured."""
    missing = [str(run) for run in runs if not (run / "paper_protocol.json").is_file()]
    if missing:
        raise ValueError(f"no paper_protocol.json in {', '.join(missing)}: name the --out folders of earlier runs")
    summaries = [json.loads((run / "paper_protocol.json").read_text()) for run in runs]
    first = summaries[0]["settings"]
    units, seen = [], {}
    for run, summary in zip(runs, summaries):
        differing = sorted(k for k in set(first) | set(summary["settings"])
                           if k not in MERGEABLE_SETTINGS and first.get(k) != summary["settings"].get(k))
        if differing:
            raise ValueError(f"{run} was run with other settings than {runs[0]} ({', '.join(differing)}): "
                             "merge only runs of one command that differ in --folds / --seeds")
        for unit in summary["units"]:
            key = (unit["fold"], unit["seed"])
            if key in seen:
                raise ValueError(f"fold {key[0]}, seed {key[1]} is in both {seen[key]} and {run}: merge each once")
            seen[key] = run
            units.append(unit)
    commands = {str(run): " ".join(summary["settings"]["argv"]) for run, summary in zip(runs, summaries)}
    return sorted(units, key=lambda u: (u["seed"], u["fold"])), first, commands


def write_merged(runs: Sequence[Path], argv: List[str], out: Path) -> None:
    units, settings, commands = merged_units(runs)
    write_outputs(units, argparse.Namespace(**{**settings, "argv": argv}), out, merged_from=commands)


def _log(message: str) -> None:
    print(message, flush=True)


def _run_fold_in_worker(fold: int, seed: int, args, device: str) -> dict:
    torch.set_num_threads(args.threads or 1)
    return run_fold(fold, seed, args, Path(args.scene), device, _log)


def _add_network_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iterations", type=int, default=8000, help="training iterations per network")
    parser.add_argument("--architecture", choices=sorted(NETWORK_SHAPES), default="local",
                        help="local: one-resolution UNet with per-pixel blocks (engine.model.local_unet); "
                             "multiscale: the paper's UNet")
    parser.add_argument("--condition-window", type=int, default=7,
                        help="the condition's first convolution, pixels (the local UNet's field of view)")
    parser.add_argument("--stage2-window", type=int, default=3, help="the same for stage 2 of the cascade")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=2, help="encoder blocks (the decoder has one more)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--crop", type=int,
                        help="training crop in pixels; default: the network's condition window for the local UNet "
                             "(each crop teaches its centre pixel with its whole context), 32 for the multiscale one")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--parameterisation", choices=PARAMETERISATIONS, default="edm",
                        help="eps: the paper's noise prediction; edm: EDM preconditioning (x_0 prediction)")
    parser.add_argument("--noise-levels", choices=TrainingTimesteps.KINDS, default="uniform",
                        help="training noise levels of the diffusion networks: uniform in t (the paper's) or "
                             "log-normal in sigma around the residual's std (EDM)")
    parser.add_argument("--log-sigma-mean", type=float, default=TrainingConfig.log_sigma_mean,
                        help="mean of log(sigma / residual std) for --noise-levels lognormal")
    parser.add_argument("--log-sigma-std", type=float, default=TrainingConfig.log_sigma_std)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper_protocol", description=__doc__)
    parser.add_argument("--mean-anchored", action="store_true",
                        help="mean-anchored stages: each diffusion stage (one-stage and cascade) samples the residual "
                             "around a mean network trained first (MSE + SAM) for --iterations; stage 2 trains on "
                             "stage 1's mean estimate")
    parser.add_argument("--stage2-condition-noise", type=float, default=0.0,
                        help="with --mean-anchored: stage 2 trains on stage 1's mean estimate plus Gaussian noise of "
                             "this many stage-1 residual stds (conditioning augmentation, as the default model's "
                             "recipe), so the stage-1 samples it receives at inference look like its training input")
    parser.add_argument("--scene", default=str(HOUSTON_SCENE))
    parser.add_argument("--out", default="docs/paper-protocol")
    parser.add_argument("--folds", default="0,1,2,3")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="DIR",
                        help="write one table at --out from these earlier runs' outputs (same settings, other folds "
                             "or seeds) instead of training")
    _add_network_arguments(parser)
    parser.add_argument("--guidance", type=float, default=1.0, help="ICMG scale of the paper sampler and the ablation")
    parser.add_argument("--fast-guidance", type=float, default=0.0,
                        help="ICMG scale of the fast sampler (0: the ablation shows s = 1 costs accuracy here)")
    parser.add_argument("--fast-steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=16, help="samples averaged in the 'mean of K samples' rows")
    parser.add_argument("--ablation-fold", type=int, default=0)
    parser.add_argument("--skip-ddpm", action="store_true", help="leave out the 1000-step runs")
    parser.add_argument("--seeds", default="0",
                        help="training seeds, comma-separated: every fold runs once per seed; the table gives the "
                             "mean, the spread over seeds and the ensemble of the seeds' estimates")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 when other jobs share the cores)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="folds run side by side in this many processes (each with --threads threads, default 1)")
    return parser


def run_all(work: list, args, device: str) -> None:
    """Every (fold, seed) in ``work``; the outputs are rewritten as each one finishes."""
    units = []

    def finished(unit):
        units.append(unit)
        units.sort(key=lambda u: work.index((u["fold"], u["seed"])))
        write_outputs(units, args, Path(args.out))

    if args.jobs > 1:
        # Each (fold, seed) is seeded on its own, so running them side by side changes no number.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending = [pool.submit(_run_fold_in_worker, fold, seed, args, device) for fold, seed in work]
            for done in as_completed(pending):
                finished(done.result())
    else:
        for fold, seed in work:
            finished(run_fold(fold, seed, args, Path(args.scene), device, _log))


def main(argv=None) -> int:
    import sys

    from engine.device import resolve_device

    args = build_parser().parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.merge:
        try:
            write_merged(args.merge, args.argv, Path(args.out))
        except ValueError as error:
            print(f"paper_protocol --merge: {error}", file=sys.stderr)
            return 2
        print((Path(args.out) / "paper_protocol.md").read_text())
        return 0
    work = [(int(f), seed) for seed in args.seeds for f in args.folds.split(",")]
    run_all(work, args, resolve_device(args.device))
    print((Path(args.out) / "paper_protocol.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
