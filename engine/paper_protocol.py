"""The paper-protocol evaluation on houston2018_casi48 (``python -m engine.paper_protocol``).

4-fold cross-validation over the four 64 x 64 quadrants (train on three, test on one), input RGB =
bands [4, 11, 22], the paper's normalisation (x - 3693) / 7410. Every method gets the same data,
iterations, batch and crop: per-pixel linear regression (the floor), a single-shot CNN, one-stage
diffusion (RGB -> 48 bands) and the two-stage cascade (RGB -> 12 -> 48) sampled with the paper's
1000-step DDPM (ICMG + PDT on the noise, one sample as in the paper) and with the fast sampler, one
sample and the mean of K; plus the PDT / ICMG ablation (Table VI) on one fold. The diffusion
networks use EDM preconditioning unless ``--parameterisation eps`` asks for the paper's. Writes a
Markdown table, JSON and the figures to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from engine.cascade import Cascade, apply_affine, make_config
from engine.config import PARAMETERISATIONS, Normalisation, RGBSimulation, SamplerConfig, UNetConfig, houston_grid
from engine.data import HOUSTON_SCENE, TrainingSet, load_scene
from engine.diffusion.guidance import noise_predictor
from engine.diffusion.noise import PositionalNoise
from engine.diffusion.preconditioning import make_denoiser
from engine.diffusion.samplers import run_sampler
from engine.diffusion.schedule import TrainingTimesteps
from engine.diffusion.truncation import ProgressiveTruncation
from engine.metrics import all_metrics, per_band_psnr
from engine.model.regressor import SingleShotCNN
from engine.model import make_network
from engine.train import DEFAULTS, check_crop, fit_baseline, inner, train_network, train_stage

RGB_BANDS = (4, 11, 22)
QUADRANTS = [((0, 64), (0, 64)), ((0, 64), (64, 128)), ((64, 128), (0, 64)), ((64, 128), (64, 128))]
NORMALISATION = Normalisation(kind="fixed", offset=3693.0, scale=7410.0)


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


def train_cnn(config, data, spec, device, table, test_rgb, snapshots=()):
    """Single-shot regressor: stage 1's network (its RGB window, the one the one-stage diffusion uses)
    with a constant input, the same linear baseline as the diffusion stages (it learns the residual),
    the same crops, batch and EMA; loss MSE +
    lambda * (1 - cos) on the output. Returns its estimate of ``test_rgb`` after ``spec["iterations"]``
    and after each iteration count in ``snapshots`` ({iterations: estimate})."""
    from engine.diffusion.ema import EMA
    from engine.diffusion.losses import spectral_angle_loss

    torch.manual_seed(spec["seed"])
    net = SingleShotCNN(config.stage1.unet, config.band_count, 3).to(device).train()
    margin = net.training_margin
    check_crop(spec, margin)
    ema = EMA(net, spec["ema_decay"])
    optimizer = torch.optim.AdamW(net.parameters(), lr=spec["learning_rate"], weight_decay=0.0)
    offset = NORMALISATION.offset / NORMALISATION.scale

    def estimate():
        with torch.no_grad():
            return ema.shadow(test_rgb) + apply_affine(table, test_rgb)

    seen = {}
    for step in range(spec["iterations"]):
        rng = np.random.default_rng([spec["seed"], 7, step])
        cube, rgb, _ = (torch.from_numpy(a).to(device) for a in data.batch(spec["batch_size"], spec["crop"], rng))
        target = inner(cube, margin)
        pred = net(rgb, margin) + apply_affine(table, inner(rgb, margin))
        loss = ((pred - target) ** 2).mean() + spec["sam_weight"] * spectral_angle_loss(target + offset, pred + offset)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        ema.update(net)
        if step + 1 in snapshots:
            seen[step + 1] = estimate()
    return estimate(), seen


def one_stage_sample(model, schedule, rgb, settings: SamplerConfig, seed: int, table, limit):
    predictor = noise_predictor(model, rgb, settings.guidance)
    truncation = ProgressiveTruncation(settings.truncation_target, settings.pdt_stage2, schedule.num_timesteps,
                                       settings.truncation_scope)
    noise = PositionalNoise(seed, [(0, 0)])
    shape = (1, model.out_channels, rgb.shape[2], rgb.shape[3])
    result = run_sampler(settings.name, predictor, schedule, shape,
                         lambda step, shp: noise.draw(3, step, shp, rgb.device), settings.steps, truncation,
                         settings.eta, x0_limit=limit)
    return result.x0 + apply_affine(table, rgb), result.network_passes


def mean_of_samples(draw, count: int, seed: int):
    """The average of ``count`` samples drawn with seeds seed, seed + 1, ... (``draw(seed)`` returns
    (estimate, network passes)): a Monte-Carlo estimate of the posterior mean, which a single sample
    cannot match in RMSE (a sample's expected squared error is the mean's plus the posterior variance)."""
    total, passes = None, 0
    for k in range(count):
        estimate, used = draw(seed + k)
        total = estimate if total is None else total + estimate
        passes += used
    return total / count, passes


def paper_sampler(guidance: float, pdt: bool = True) -> SamplerConfig:
    return SamplerConfig(name="ddpm", steps=1000, guidance=guidance, pdt_stage1=0.96 if pdt else None,
                         pdt_stage2=0.88 if pdt else None, truncation_target="eps")


def protocol_unet(args, stage: int = 1) -> UNetConfig:
    """The network of the learned rows: the local UNet (default) or the multiscale one. Stage 2 of
    the cascade (12 bands + RGB -> 48 bands, a spectral interpolation) takes its own window."""
    window = args.stage2_window if stage == 2 else args.condition_window
    if args.architecture == "local":
        return UNetConfig.local(args.width, args.blocks, window)
    return UNetConfig(base_channels=args.width, channel_multipliers=(1, 2, 2), encoder_res_blocks=args.blocks,
                      decoder_res_blocks=args.blocks + 1, attention_downsample=(4,), attention_heads=4,
                      condition_window=window)


def stage_crop(args, stage: int) -> int:
    """Training crop of a network: the whole context of one pixel for a local network."""
    if args.crop is not None:
        return args.crop
    if args.architecture != "local":
        return 32
    return args.stage2_window if stage == 2 else args.condition_window


def run_fold(fold: int, seed: int, args, scene_path: Path, device: str, log) -> dict:
    """Every method on one fold with one training seed; the paper sampler and the ablation only for
    the first seed (they cost as much as all other rows together)."""
    first_seed = seed == args.seeds[0]
    (tr, tc) = QUADRANTS[fold]
    full = load_scene(scene_path)
    test_cube = full.cube[:, tr[0]:tr[1], tc[0]:tc[1]]
    train_scenes = [load_scene(scene_path, r, c) for i, (r, c) in enumerate(QUADRANTS) if i != fold]
    unet = protocol_unet(args)
    fast = SamplerConfig(name="dpmpp", steps=args.fast_steps, guidance=args.fast_guidance, pdt_stage1=0.96,
                         pdt_stage2=0.88, truncation_target="x0")
    config = make_config("paper-protocol", houston_grid(), unet=unet, stage2_unet=protocol_unet(args, stage=2),
                         normalisation=NORMALISATION,
                         rgb_simulation=RGBSimulation(kind="bands", band_indices=RGB_BANDS), sampler=fast,
                         parameterisation=args.parameterisation)
    data = TrainingSet(config, train_scenes)
    spec = {**DEFAULTS, "iterations": args.iterations, "batch_size": args.batch, "crop": stage_crop(args, 1),
            "learning_rate": args.lr, "ema_decay": args.ema_decay, "seed": seed, "resume": False,
            "noise_levels": args.noise_levels,
            "log_sigma_mean": args.log_sigma_mean, "log_sigma_std": args.log_sigma_std}
    offset = NORMALISATION.offset / NORMALISATION.scale
    test_rgb = test_cube[list(RGB_BANDS)]
    rgb_model = torch.from_numpy(NORMALISATION.to_model(test_rgb))[None].float().to(device)
    results, estimates, timings = {}, {}, {}

    started = time.time()
    estimates["linear regression"] = linear_regression([s.cube for s in train_scenes], test_rgb)
    timings["linear regression"] = {"train_s": round(time.time() - started, 2)}

    def whole(cube, rgb, mask):
        return cube, rgb, mask

    table, limit, residual_std = fit_baseline(data, whole, spec)
    started = time.time()
    # The cascade trains two networks of ``iterations`` each: the single-shot network is shown at
    # the same iterations per network and at the cascade's total.
    final, early = train_cnn(config, data, {**spec, "iterations": 2 * args.iterations}, device, table, rgb_model,
                             (args.iterations,))
    cnn_train = round(time.time() - started, 1)
    for iterations, estimate in ((args.iterations, early[args.iterations]), (2 * args.iterations, final)):
        label = f"single-shot network, {iterations} iterations"
        estimates[label] = NORMALISATION.from_model(estimate[0].cpu().numpy())
        timings[label] = {"train_s": round(cnn_train * iterations / (2 * args.iterations), 1)}
    log(f"fold {fold}, seed {seed}: single-shot network done in {cnn_train} s")

    torch.manual_seed(seed)
    cascade = Cascade(config, device="cpu")
    one_stage = make_denoiser(make_network(unet, config.band_count, 3), cascade.schedule, args.parameterisation,
                              residual_std)
    started = time.time()
    train_network(one_stage, cascade.schedule, data, whole, spec, device, label="one-stage", sam_offset=offset,
                  show_progress=False, baseline=lambda cond: apply_affine(table, cond))
    timings["one-stage diffusion"] = {"train_s": round(time.time() - started, 1)}
    started = time.time()
    for stage in (1, 2):
        train_stage(stage, cascade, data, {**spec, "crop": stage_crop(args, stage)}, device, None,
                    show_progress=False)
    cascade.to(device)
    train_s = round(time.time() - started, 1)
    log(f"fold {fold}, seed {seed}: diffusion models trained")

    one_stage_train = timings.pop("one-stage diffusion")
    one_stage.to(device).eval()

    def one_stage_draw(settings):
        def draw(seed):
            return one_stage_sample(one_stage, cascade.schedule, rgb_model, settings, seed, table, limit)
        return draw

    def cascade_draw(settings):
        def draw(seed):
            out = cascade.sample(rgb_model, settings, PositionalNoise(seed, [(0, 0)]))
            return out.full, out.network_passes
        return draw

    mean_label = f"mean of {args.samples} samples"
    # One DDIM step from pure noise returns the denoiser's x_0 at t = T: its estimate of the
    # conditional mean, the quantity RMSE rewards, for two network passes.
    one_step = replace(fast, name="ddim", steps=1)
    runs = {
        "one-stage diffusion (fast), one sample": (one_stage_draw(fast), 1, one_stage_train),
        f"one-stage diffusion (fast), {mean_label}": (one_stage_draw(fast), args.samples, one_stage_train),
        "one-stage diffusion, DDIM 1 step": (one_stage_draw(one_step), 1, one_stage_train),
        "cascade, fast sampler, one sample": (cascade_draw(fast), 1, {"train_s": train_s}),
        f"cascade, fast sampler, {mean_label}": (cascade_draw(fast), args.samples, {"train_s": train_s}),
        "cascade, DDIM 1 step per stage": (cascade_draw(one_step), 1, {"train_s": train_s}),
    }
    if not args.skip_ddpm and first_seed:
        runs["cascade, paper sampler (DDPM 1000), one sample"] = (cascade_draw(paper_sampler(args.guidance)), 1,
                                                                {"train_s": train_s})
    for label, (draw, count, train_timing) in runs.items():
        started = time.time()
        estimate, passes = mean_of_samples(draw, count, seed)
        estimates[label] = NORMALISATION.from_model(estimate[0].cpu().numpy())
        timings[label] = {**train_timing, "sample_s": round(time.time() - started, 1), "network_passes": passes}
        log(f"fold {fold}, seed {seed}: {label} sampled in {timings[label]['sample_s']} s")

    ablation = {}
    if fold == args.ablation_fold and first_seed:
        variants = {
            "no ICMG, no PDT": replace(fast, guidance=0.0, pdt_stage1=None, pdt_stage2=None),
            "ICMG only": replace(fast, guidance=args.guidance, pdt_stage1=None, pdt_stage2=None),
            "PDT only": replace(fast, guidance=0.0),
            "ICMG + PDT (x0)": replace(fast, guidance=args.guidance),
            "ICMG + PDT (x_t, authors' code)": replace(fast, guidance=args.guidance, truncation_target="x_t"),
            "ICMG + PDT (eps, paper)": replace(fast, guidance=args.guidance, truncation_target="eps"),
        }
        if not args.skip_ddpm:
            variants.update({
                "DDPM: no ICMG, no PDT": paper_sampler(0.0, pdt=False),
                "DDPM: ICMG + PDT on x_t": replace(paper_sampler(args.guidance), truncation_target="x_t"),
            })
        for label, settings in variants.items():
            out = cascade.sample(rgb_model, settings, PositionalNoise(seed, [(0, 0)]))
            ablation[label] = _metrics(test_cube, NORMALISATION.from_model(out.full[0].cpu().numpy()))
            log(f"ablation {label}: {ablation[label]['rmse']:.1f} / {ablation[label]['sam']:.4f}")

    for label, estimate in estimates.items():
        results[label] = {**_metrics(test_cube, estimate), **timings.get(label, {})}
    per_band = {label: per_band_psnr(test_cube, est).tolist() for label, est in estimates.items()}
    return {"fold": fold, "seed": seed, "results": results, "ablation": ablation, "per_band_psnr": per_band,
            "reference": test_cube, "estimates": estimates}


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
        if len(members) < len(seeds) or len(seeds) < 2:
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
        for extra in ("train_s", "sample_s", "network_passes"):
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


def write_outputs(units: list, args, out: Path) -> None:
    from engine.report import plot_per_band_psnr, plot_spectral_profiles, select_profile_pixels

    out.mkdir(parents=True, exist_ok=True)
    table = summarise(units)
    methods = list(table)
    folds = sorted({u["fold"] for u in units})
    seeds = sorted({u["seed"] for u in units})
    trained = [m for m in methods if "ensemble" not in m]
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
    summary = {"settings": vars(args),
               "units": [{k: v for k, v in u.items() if k not in ("reference", "estimates")} for u in units],
               "mean": table}
    (out / "paper_protocol.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    lines = [
        "# Paper-protocol evaluation (houston2018_casi48, 4-fold quadrant CV)",
        "",
        f"Produced by `python -m engine.paper_protocol {' '.join(args.argv)}` "
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
        "| method | RMSE | RMSE spread | SAM (rad) | MSSIM | MPSNR (dB) | seeds | network passes | train s | sample s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        r = table[m]
        spread = f"{r['rmse_seed_std']:.1f}" if "rmse_seed_std" in r else ""
        lines.append(f"| {m} | {r['rmse']:.1f} | {spread} | {r['sam']:.4f} | {r['mssim']:.4f} | {r['mpsnr']:.2f} | "
                     f"{r['seeds']} | {r.get('network_passes', 1):.0f} | {r.get('train_s', 0):.0f} | "
                     f"{r.get('sample_s', 0):.1f} |")
    lines += ["", "Paper (full Houston data, SCDM): RMSE 359.48, SAM 0.0672.", "",
              "## The same, all 48 bands (input bands included)", "",
              "| method | RMSE | SAM (rad) | MSSIM | MPSNR (dB) |", "|---|---|---|---|---|"]
    for m in methods:
        r = table[m]
        lines.append(f"| {m} | {r['rmse_all_bands']:.1f} | {r['sam_all_bands']:.4f} | {r['mssim_all_bands']:.4f} | "
                     f"{r['mpsnr_all_bands']:.2f} |")
    lines += ["", "## RMSE / SAM per fold (input bands excluded, mean over the seeds)", "",
              "| method | " + " | ".join(f"fold {f}" for f in folds) + " |", "|---|" + "---|" * len(folds)]
    for m in methods:
        cells = " | ".join(f"{table[m]['folds'][f]['rmse']:.1f} / {table[m]['folds'][f]['sam']:.4f}"
                           if f in table[m]["folds"] else "" for f in folds)
        lines.append(f"| {m} | {cells} |")
    lines.append("")
    ablations = [u for u in units if u["ablation"]]
    if ablations:
        u = ablations[0]
        lines += [f"## PDT / ICMG ablation (fold {u['fold']}, seed {u['seed']}, Table VI)", "",
                  "| variant | RMSE | SAM (rad) | MSSIM | MPSNR (dB) |", "|---|---|---|---|---|"]
        for label, r in u["ablation"].items():
            lines.append(f"| {label} | {r['rmse']:.1f} | {r['sam']:.4f} | {r['mssim']:.4f} | {r['mpsnr']:.2f} |")
    lines += ["", "![per-band PSNR](per_band_psnr.png)", "", "![spectral profiles](spectral_profiles.png)", ""]
    (out / "paper_protocol.md").write_text("\n".join(lines))


def _log(message: str) -> None:
    print(message, flush=True)


def _run_fold_in_worker(fold: int, seed: int, args, device: str) -> dict:
    torch.set_num_threads(args.threads or 1)
    return run_fold(fold, seed, args, Path(args.scene), device, _log)


def main(argv=None) -> int:
    import sys

    parser = argparse.ArgumentParser(prog="python -m engine.paper_protocol", description=__doc__)
    parser.add_argument("--scene", default=str(HOUSTON_SCENE))
    parser.add_argument("--out", default="docs/paper-protocol")
    parser.add_argument("--folds", default="0,1,2,3")
    parser.add_argument("--iterations", type=int, default=8000, help="training iterations per network")
    parser.add_argument("--architecture", choices=UNetConfig.ARCHITECTURES, default="local",
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
    parser.add_argument("--guidance", type=float, default=1.0, help="ICMG scale of the paper sampler and the ablation")
    parser.add_argument("--fast-guidance", type=float, default=0.0,
                        help="ICMG scale of the fast sampler (0: the ablation shows s = 1 costs accuracy here)")
    parser.add_argument("--fast-steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=16, help="samples averaged in the 'mean of K samples' rows")
    parser.add_argument("--parameterisation", choices=PARAMETERISATIONS, default="edm",
                        help="eps: the paper's noise prediction; edm: EDM preconditioning (x_0 prediction)")
    parser.add_argument("--noise-levels", choices=TrainingTimesteps.KINDS, default="uniform",
                        help="training noise levels of the diffusion networks: uniform in t (the paper's) or "
                             "log-normal in sigma around the residual's std (EDM)")
    parser.add_argument("--log-sigma-mean", type=float, default=DEFAULTS["log_sigma_mean"],
                        help="mean of log(sigma / residual std) for --noise-levels lognormal")
    parser.add_argument("--log-sigma-std", type=float, default=DEFAULTS["log_sigma_std"])
    parser.add_argument("--ablation-fold", type=int, default=0)
    parser.add_argument("--skip-ddpm", action="store_true", help="leave out the 1000-step runs")
    parser.add_argument("--seeds", default="0",
                        help="training seeds, comma-separated: every fold runs once per seed; the table gives the "
                             "mean, the spread over seeds and the ensemble of the seeds' estimates")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 when other jobs share the cores)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="folds run side by side in this many processes (each with --threads threads, default 1)")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    from engine.device import resolve_device

    device = resolve_device(args.device)
    work = [(int(f), seed) for seed in args.seeds for f in args.folds.split(",")]
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
    print((Path(args.out) / "paper_protocol.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
