"""Training of one or both cascade stages from a JSON config (``python -m engine train --config F``).

The stages train independently, as in the paper: stage 2 is conditioned on the *true* stage-1
bands (plus the RGB when the config says so). Checkpoints (safetensors + JSON) allow resuming;
the same config and seed give the same weights. ``train_network`` is the one training loop; what
a network learns is its ``TrainingTask``: how a batch becomes target and condition, and the
objective (the diffusion loss of Algorithm 1, or direct regression for a single-shot network).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from engine.bundle import save_bundle
from engine.cascade import Cascade, make_config
from engine.config import BundleConfig, houston_grid
from engine.data import TrainingSet, load_scene
from engine.device import resolve_device
from engine.diffusion.ema import EMA
from engine.diffusion.losses import LossBatch, LossTerms, diffusion_loss, masked_mse, spectral_angle_loss
from engine.diffusion.schedule import NoiseSchedule, TrainingTimesteps
from engine.errors import InputError
from engine.training_config import TrainingConfig, load_training_config

# (cube, RGB condition, band coverage, numpy rng) of a batch of crops -> (x_0, condition, band mask) of
# what a network learns (the rng draws any noise the selection adds).
Select = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, np.random.Generator],
                  Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def bundle_config_from_training(config: TrainingConfig) -> BundleConfig:
    """The bundle config (untrained: no baselines yet) that a training config describes."""
    if config.grid == "houston":
        wavelengths, fwhm = houston_grid(), None
    else:
        wavelengths, fwhm = config.grid.wavelengths_nm, config.grid.fwhm_nm
    networks = [config.unet, config.stage2_unet or config.unet]
    networks += [unet for unet in (config.mean_network_for(1), config.mean_network_for(2)) if unet is not None]
    # The tile that suits both stages: a multiscale stage's quality drifts with larger tiles.
    tile = config.inference_tile
    if tile is None:
        tile = min(unet.network_class.default_inference_tile for unet in networks)
    return make_config(
        config.name, wavelengths, fwhm, unet=config.unet, stage2_unet=config.stage2_unet,
        stage2_condition=config.stage2_condition, parameterisation=config.parameterisation,
        mean_networks=(config.mean_network_for(1), config.mean_network_for(2)),
        mean_activation="softplus" if config.normalisation.non_negative else "none",
        schedule=config.schedule, sampler=config.sampler, normalisation=config.normalisation,
        rgb_simulation=config.rgb, description=config.description, inference_tile=tile,
        null_condition=config.null_condition, input_wavelengths_nm=_input_wavelengths(config.rgb, wavelengths),
    )


def _input_wavelengths(simulation, wavelengths_nm) -> tuple:
    """What the model's three input channels stand for: the picked bands (the paper's pick is blue,
    green, red) or a camera's red, green and blue."""
    if simulation.kind == "bands" and all(0 <= i < len(wavelengths_nm) for i in simulation.band_indices):
        return tuple(float(wavelengths_nm[i]) for i in simulation.band_indices)
    return BundleConfig.input_wavelengths_nm


def _stage_tensors(stage: int, config: BundleConfig, cube: torch.Tensor, rgb: torch.Tensor, mask: torch.Tensor):
    """Target, condition and band mask of one stage from a batch of full cubes, stage 2 conditioned
    on the true stage-1 bands. A crop whose scene lacks a stage-1 band would carry a zero there, a
    condition inference never gives: its stage-2 loss is masked out entirely."""
    s1 = list(config.stage1_indices)
    if stage == 1:
        return cube[:, s1], rgb, mask[:, s1]
    truth1 = cube[:, s1]
    complete = (mask[:, s1] > 0).all(dim=1, keepdim=True).to(mask.dtype)
    return cube, stage2_condition(config, truth1, rgb), mask * complete


def stage2_condition(config: BundleConfig, stage1: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    return stage1 if config.stage2.condition == "stage1" else torch.cat([stage1, rgb], dim=1)


def stage_selector(stage: int, cascade: Cascade, config: TrainingConfig) -> Select:
    """How a batch becomes a stage's (x_0, condition, band mask): stage 2's condition is the true
    stage-1 bands or, with ``stage2_condition_source`` "stage1_mean", stage 1's mean estimate plus
    noise of ``stage2_condition_noise`` x stage 1's residual std (what inference feeds it)."""
    if stage == 1 or config.stage2_condition_source == "truth":
        return lambda cube, rgb, mask, rng: _stage_tensors(stage, cascade.config, cube, rgb, mask)

    def select(cube, rgb, mask, rng):
        with torch.no_grad():
            estimate = cascade.baseline(1, rgb)
        std = np.atleast_1d(np.asarray(cascade.config.stage1.data_std or 0.0, dtype=np.float32))
        if config.stage2_condition_noise > 0:
            noise = rng.standard_normal(estimate.shape).astype(np.float32) * std[None, :, None, None]
            estimate = estimate + config.stage2_condition_noise * torch.from_numpy(noise).to(estimate.device)
        if cascade.config.normalisation.non_negative:
            estimate = estimate.clamp(min=0.0)
        return cube, stage2_condition(cascade.config, estimate, rgb), mask

    return select


@dataclass(frozen=True)
class Checkpoint:
    """One network's checkpoints, in ``<output>.checkpoints`` beside the bundle folder ``output``;
    ``resume`` continues from the last one."""

    output: Path
    stage: int
    resume: bool = False
    kind: str = "stage"  # "stage": the stage's diffusion network; "mean": its mean network

    @property
    def paths(self) -> Tuple[Path, Path]:
        folder = self.output.parent / f"{self.output.name}.checkpoints"
        name = f"{self.kind}{self.stage}"
        return folder / f"{name}.safetensors", folder / f"{name}.json"


@dataclass(frozen=True)
class _Learner:
    """What a training step updates."""

    model: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer

    def adam_states(self):
        """(index, parameter) of every parameter the optimiser holds a state for, in a fixed order."""
        return enumerate(p for group in self.optimizer.param_groups for p in group["params"])


def _save_checkpoint(checkpoint: Checkpoint, step: int, learner: _Learner, losses: list) -> None:
    weights, meta = checkpoint.paths
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in learner.model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in learner.ema.shadow.state_dict().items()})
    for i, param in learner.adam_states():
        state = learner.optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                tensors[f"adam.{i}.{key}"] = state[key].detach().cpu().contiguous()
        if "step" in state:
            tensors[f"adam.{i}.step"] = torch.as_tensor(state["step"]).reshape(1).float().cpu()
    save_file(tensors, str(weights))
    meta.write_text(json.dumps({"step": step, "losses": losses}))


def _load_checkpoint(checkpoint: Optional[Checkpoint], learner: _Learner) -> Tuple[int, list]:
    """(steps done, losses so far): (0, []) unless resuming from a checkpoint that exists."""
    if checkpoint is None or not checkpoint.resume:
        return 0, []
    weights, meta = checkpoint.paths
    if not (weights.is_file() and meta.is_file()):
        return 0, []
    tensors = load_file(str(weights))
    learner.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    learner.ema.shadow.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    device = next(learner.model.parameters()).device
    for i, param in learner.adam_states():
        if f"adam.{i}.exp_avg" in tensors:
            learner.optimizer.state[param] = {
                "step": tensors[f"adam.{i}.step"].reshape(()),
                "exp_avg": tensors[f"adam.{i}.exp_avg"].to(device),
                "exp_avg_sq": tensors[f"adam.{i}.exp_avg_sq"].to(device),
            }
    info = json.loads(meta.read_text())
    learner.ema.updates_done = int(info["step"])
    return int(info["step"]), list(info["losses"])


def _pixels(tensor: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) -> (B * H * W, C) float64."""
    return tensor.permute(0, 2, 3, 1).reshape(-1, tensor.shape[1]).double().numpy()


def _training_pixels(data: TrainingSet, select: Select, config: TrainingConfig, batches: int,
                     baseline: Optional[Callable] = None):
    """(condition, target, covered, weight) per pixel of ``batches`` seeded training batches; with
    ``baseline(cond, margin)`` the target is the residual from it (the condition then being the
    crops less the baseline network's margin)."""
    conds, targets, masks, weights = [], [], [], []
    for i in range(batches):
        rng = np.random.default_rng([config.seed, 99, i])
        crops = data.batch(config.batch_size, config.crop, rng)
        x0, cond, band_mask = select(*(torch.from_numpy(a) for a in crops[:3]), rng)
        if baseline is not None:
            with torch.no_grad():
                x0 = x0 - baseline(cond, 0)
        weight = np.ones((len(x0), 1) + tuple(x0.shape[2:])) if crops.weight is None else crops.weight
        conds.append(_pixels(cond))
        targets.append(_pixels(x0))
        masks.append(np.repeat(band_mask.numpy(), x0.shape[2] * x0.shape[3], axis=0) > 0)
        weights.append(_pixels(torch.from_numpy(np.asarray(weight)))[:, 0])
    return np.concatenate(conds), np.concatenate(targets), np.concatenate(masks), np.concatenate(weights)


def _per_band_std(values: np.ndarray, mask: np.ndarray, weight: Optional[np.ndarray] = None) -> tuple:
    """Root mean square per band over covered pixels (weighted per pixel when ``weight`` is given)."""
    weights = mask * (1.0 if weight is None else weight[:, None])
    return tuple(float(v) for v in np.sqrt((weights * values ** 2).sum(axis=0) / np.maximum(weights.sum(axis=0), 1e-12)))


def target_std(data: TrainingSet, select: Select, config: TrainingConfig, batches: int = 32) -> tuple:
    """Per-band root mean square of the target itself, the data scale when no baseline is fitted."""
    _, target, mask, weight = _training_pixels(data, select, config, batches)
    return _per_band_std(target, mask, weight)


def residual_statistics(data: TrainingSet, select: Select, config: TrainingConfig, baseline: Callable,
                        batches: int = 32):
    """(x0_limit, per-band std) of the residual from a learned mean: the std weighted as the loss
    weights pixels; the bound 1.5 x the largest residual among pixels whose weight is at least 1 %
    (the black pixels' spectra per unit of brightness are noise)."""
    _, residual, mask, weight = _training_pixels(data, select, config, batches, baseline)
    counted = mask & (weight[:, None] >= 0.01)
    limit = float(1.5 * np.abs(np.where(counted, residual, 0.0)).max())
    return limit, _per_band_std(residual, mask, weight)


def fit_baseline(data: TrainingSet, select: Select, config: TrainingConfig, batches: int = 32):
    """Least-squares per-pixel affine map condition -> target on training crops, and the residual bound.

    Returns (table, x0_limit, per-band residual std): table rows are output bands, columns the
    condition channels then the bias; bands a crop does not cover are left out of their band's fit.
    """
    cond, target, mask, _ = _training_pixels(data, select, config, batches)
    design = np.hstack([cond, np.ones((len(cond), 1))])
    table = np.zeros((target.shape[1], design.shape[1]))
    for band in range(target.shape[1]):
        rows = mask[:, band]
        if rows.sum() > design.shape[1]:
            table[band], *_ = np.linalg.lstsq(design[rows], target[rows, band], rcond=None)
    residual = np.where(mask, target - design @ table.T, 0.0)
    limit = float(1.5 * np.abs(residual).max())
    # One std per band: a scalar would give the well-predicted visible bands the sampling noise of
    # the poorly predicted near-infrared ones.
    return tuple(tuple(float(v) for v in row) for row in table), limit, _per_band_std(residual, mask)


def _median_data_std(model) -> float:
    """The typical per-band residual std, which log-normal noise levels are centred on (1 when the
    stage has none). The median, because bands the baseline reproduces exactly have ~0 std."""
    std = getattr(model, "data_std", None)
    return 1.0 if std is None else float(np.median(np.atleast_1d(np.asarray(std, dtype=np.float64))))


def inner(tensor: torch.Tensor, margin: int) -> torch.Tensor:
    """``tensor`` (..., H, W) less ``margin`` pixels on every side: a training window's target extent."""
    if margin == 0:
        return tensor
    return tensor[..., margin:tensor.shape[-2] - margin, margin:tensor.shape[-1] - margin]


def check_crop(crop: int, margin: int) -> None:
    if crop <= 2 * margin:
        raise InputError(f"crop {crop} px leaves no target pixel inside the network's {margin}-px context "
                         f"margin: set crop to at least {2 * margin + 1}")


@dataclass(frozen=True)
class TrainingBatch:
    """One step's batch. ``x0`` covers the crops less the network's context ``margin``; ``cond``
    the whole crops; ``base`` is the baseline's estimate of ``x0`` (None without a baseline);
    ``pixel_weight`` (B, 1, h, w) weighs each pixel's squared error (None: all alike)."""

    x0: torch.Tensor
    cond: torch.Tensor
    band_mask: torch.Tensor
    base: Optional[torch.Tensor]
    margin: int
    pixel_weight: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class DiffusionObjective:
    """Algorithm 1's loss (engine.diffusion.losses.diffusion_loss) on the residual from the baseline."""

    schedule: NoiseSchedule
    timesteps: TrainingTimesteps
    terms: LossTerms

    def __call__(self, model: nn.Module, batch: TrainingBatch, generator: torch.Generator) -> torch.Tensor:
        x0 = batch.x0 - batch.base if batch.base is not None else batch.x0
        inputs = LossBatch(x0, batch.cond, batch.band_mask, batch.base, batch.pixel_weight)
        return diffusion_loss(model, self.schedule, inputs, self.terms, generator, self.timesteps)["loss"]


def diffusion_objective(denoiser: nn.Module, schedule: NoiseSchedule, config: TrainingConfig,
                        sam_offset: float = 0.0) -> DiffusionObjective:
    """The diffusion loss for ``denoiser`` (a preconditioned network), its noise levels centred on
    its data std. ``sam_offset`` puts the spectral angle in physical units (see diffusion_loss)."""
    timesteps = TrainingTimesteps(schedule, config.noise_levels, _median_data_std(denoiser),
                                  config.log_sigma_mean, config.log_sigma_std)
    terms = LossTerms(config.sam_weight, config.p_uncond, sam_offset, config.null_condition)
    return DiffusionObjective(schedule, timesteps, terms)


@dataclass(frozen=True)
class RegressionObjective:
    """Direct regression of x_0 by a single-shot network (engine.model.regressor, called as
    ``model(cond, margin)``, then ``activation`` when given): MSE + sam_weight * (1 - cos), over the
    bands the scene covers, each pixel's squared error weighted as the batch says."""

    sam_weight: float
    sam_offset: float = 0.0
    activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    def __call__(self, model: nn.Module, batch: TrainingBatch, generator: torch.Generator) -> torch.Tensor:
        estimate = model(batch.cond, batch.margin)
        if self.activation is not None:
            estimate = self.activation(estimate)
        if batch.base is not None:
            estimate = estimate + batch.base
        mse = masked_mse((estimate - batch.x0) ** 2, batch.band_mask, batch.pixel_weight)
        offset = self.sam_offset
        return mse + self.sam_weight * spectral_angle_loss(batch.x0 + offset, estimate + offset, batch.band_mask)


@dataclass(frozen=True)
class TrainingTask:
    """What one network learns: ``select`` turns a batch of crops into (x_0, condition, band mask),
    ``objective(model, batch, generator)`` gives the loss, and ``baseline(cond, margin)``, when
    given, is the per-pixel estimate the network corrects (``cond`` carrying ``margin`` px of context)."""

    select: Select
    objective: Callable[[nn.Module, TrainingBatch, torch.Generator], torch.Tensor]
    baseline: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None


@dataclass(frozen=True)
class LoopOptions:
    """``label`` names the run in the progress bar and seeds its batches; ``on_step(steps done,
    EMA network)`` is called after every step."""

    label: str = ""
    checkpoint: Optional[Checkpoint] = None
    show_progress: bool = True
    on_step: Optional[Callable[[int, nn.Module], None]] = None


def _draw_batch(data: TrainingSet, task: TrainingTask, config: TrainingConfig, margin: int, step_rng,
                device) -> TrainingBatch:
    crops = data.batch(config.batch_size, config.crop, step_rng)
    x0, cond, band_mask = task.select(*(torch.from_numpy(a).to(device) for a in crops[:3]), step_rng)
    with torch.no_grad():
        base = task.baseline(cond, margin) if task.baseline is not None else None
    weight = None if crops.weight is None else inner(torch.from_numpy(crops.weight).to(device), margin)
    return TrainingBatch(inner(x0, margin), cond, band_mask, base, margin, weight)


def _step(learner: _Learner, loss: torch.Tensor) -> None:
    learner.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(learner.model.parameters(), 1.0)
    learner.optimizer.step()
    learner.ema.update(learner.model)


def _set_learning_rate(learner: _Learner, config: TrainingConfig, step: int) -> None:
    """The rate for ``step``: constant, or cosine-decayed from ``learning_rate`` to zero."""
    rate = config.learning_rate
    if config.learning_rate_schedule == "cosine":
        rate *= 0.5 * (1.0 + math.cos(math.pi * step / max(config.iterations, 1)))
    for group in learner.optimizer.param_groups:
        group["lr"] = rate


def train_network(model: nn.Module, data: TrainingSet, task: TrainingTask, config: TrainingConfig, device,
                  options: LoopOptions = LoopOptions()) -> dict:
    """The training loop (Algorithm 1 for a diffusion objective) for one network; the EMA weights
    end up in ``model``. A network with a context margin (``model.training_margin`` > 0) learns each
    crop's inner pixels, whose context lies wholly inside the crop."""
    from tqdm import tqdm

    margin = model.training_margin
    check_crop(config.crop, margin)
    model = model.to(device).train()
    learner = _Learner(model, EMA(model, config.ema_decay),
                       torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0))
    start, losses = _load_checkpoint(options.checkpoint, learner)
    bar = tqdm(range(start, config.iterations), desc=options.label, disable=not options.show_progress,
               initial=start, total=config.iterations)
    for step in bar:
        # Seeding from (seed, label, step) makes an interrupted-and-resumed run equal an uninterrupted one.
        rng = np.random.default_rng([config.seed, sum(map(ord, options.label)), step])
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        loss = task.objective(model, _draw_batch(data, task, config, margin, rng, device), generator)
        _set_learning_rate(learner, config, step)
        _step(learner, loss)
        losses.append(round(loss.item(), 5))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        done = step + 1
        if options.checkpoint and (done % config.checkpoint_every == 0 or done == config.iterations):
            _save_checkpoint(options.checkpoint, done, learner, losses)
        if options.on_step is not None:
            options.on_step(done, learner.ema.shadow)
    model.load_state_dict(learner.ema.shadow.state_dict())
    model.eval()
    window = max(1, len(losses) // 10)
    return {"iterations": config.iterations, "loss_first": float(np.mean(losses[:window])) if losses else None,
            "loss_last": float(np.mean(losses[-window:])) if losses else None, "losses": losses}


def _sam_offset(cascade: Cascade) -> float:
    """Where the physical zero lies in model units (the spectral angle is measured from there)."""
    normalisation = cascade.config.normalisation
    return 0.0 if normalisation.kind == "chromatic" else normalisation.offset / normalisation.scale


def train_mean_network(stage: int, cascade: Cascade, data: TrainingSet, select: Select, config: TrainingConfig,
                       device, options: LoopOptions) -> dict:
    """A mean-anchored stage's deterministic network: MSE + the spectral angle on the target itself."""
    activation = F.softplus if cascade.stage_config(stage).mean_activation == "softplus" else None
    objective = RegressionObjective(config.sam_weight, _sam_offset(cascade), activation)
    mean_config = replace(config, iterations=config.mean_network_iterations)
    checkpoint = None if options.checkpoint is None else replace(options.checkpoint, kind="mean")
    summary = train_network(cascade.mean_models[stage], data, TrainingTask(select, objective), mean_config, device,
                            replace(options, label=f"stage {stage} mean", checkpoint=checkpoint))
    cascade.mean_models[stage].eval()
    return summary


def _fit_stage_baseline(stage: int, cascade: Cascade, data: TrainingSet, select: Select, config: TrainingConfig,
                        device, options: LoopOptions):
    """The stage config with what its diffusion needs: the learned mean (trained here) or the affine
    baseline, the residual bound and the residual's per-band std; and the mean network's summary."""
    stage_config = cascade.stage_config(stage)
    if stage_config.mean_network is not None:
        summary = train_mean_network(stage, cascade, data, select, config, device, options)
        limit, std = residual_statistics(data, select, config, lambda cond, margin: cascade.baseline(stage, cond, margin))
        return replace(stage_config, x0_limit=limit, data_std=std), summary
    if config.baseline:
        table, limit, std = fit_baseline(data, select, config)
        return replace(stage_config, baseline=table, x0_limit=limit, data_std=std), None
    if stage_config.parameterisation == "edm":
        return replace(stage_config, data_std=target_std(data, select, config)), None
    return stage_config, None


def train_stage(stage: int, cascade: Cascade, data: TrainingSet, config: TrainingConfig, device,
                options: LoopOptions = LoopOptions()) -> dict:
    """Train the stage's mean network or fit its affine baseline (when it has either), then its
    diffusion network on the residual; the run is labelled "stage N" whatever ``options.label`` says."""
    select = stage_selector(stage, cascade, config)
    stage_config, mean_summary = _fit_stage_baseline(stage, cascade, data, select, config, device, options)
    cascade.config = replace(cascade.config, **{f"stage{stage}": stage_config})
    denoiser = cascade.denoiser(stage)
    objective = diffusion_objective(denoiser, cascade.schedule, config, _sam_offset(cascade))
    anchored = stage_config.baseline is not None or stage_config.mean_network is not None
    baseline = (lambda cond, margin: cascade.baseline(stage, cond, margin)) if anchored else None
    summary = train_network(denoiser, data, TrainingTask(select, objective, baseline), config, device,
                            replace(options, label=f"stage {stage}"))
    cascade.model(stage).eval()
    if mean_summary is not None:
        summary["mean"] = {key: mean_summary[key] for key in ("iterations", "loss_first", "loss_last")}
    return summary


def _training_record(config: TrainingConfig, data: TrainingSet, device: str, summaries: dict, seconds: float) -> dict:
    """What the bundle's ``training`` field records about the run."""
    return {
        "scenes": data.summary(),
        "iterations": config.iterations, "batch_size": config.batch_size, "crop": config.crop,
        "stage2_crop": config.crop_for(2), "ema_decay": config.ema_decay,
        "learning_rate": config.learning_rate, "seed": config.seed, "device": device,
        "stages_trained": list(config.stages), "seconds": round(seconds, 1),
        "loss": {k: {"first": v["loss_first"], "last": v["loss_last"]} for k, v in summaries.items()},
        "mean_networks": {k: v["mean"] for k, v in summaries.items() if "mean" in v},
        "mean_iterations": config.mean_network_iterations,
        "stage2_condition": {"source": config.stage2_condition_source, "noise": config.stage2_condition_noise},
        "threads": torch.get_num_threads(),
    }


def training_data(config: TrainingConfig, bundle: BundleConfig):
    """The crops a run trains on: renderings of real and synthetic scenes for an "imaging" RGB
    simulation (engine.imaging_data), else the paper's crops of the scenes (engine.data)."""
    scenes = [load_scene(spec.path, spec.rows, spec.cols) for spec in config.scenes]
    if config.rgb.kind != "imaging":
        return TrainingSet(bundle, scenes, config.srf_dir)
    from engine.imaging_data import ImagingSetOptions, ImagingTrainingSet, scene_source
    from engine.rgb_simulation import training_cameras
    from engine.spectral_library import load_earthlib

    if config.srf_dir is None:
        raise InputError(f"training config {config.name}: imaging data needs an srf_dir (the camera responses)")
    if config.library != "earthlib" and config.synthetic_share > 0:
        raise InputError(f"training config {config.name}: synthetic scenes need \"library\": \"earthlib\" "
                         "(or set synthetic_share to 0)")
    library = load_earthlib(bundle.wavelengths_nm, bundle.fwhm_nm) if config.library == "earthlib" else None
    sources = [scene_source(scene, bundle, spec.units == "radiance", library) for scene, spec in zip(scenes, config.scenes)]
    cameras = training_cameras(config.rgb, config.srf_dir, bundle.wavelengths_nm)
    options = ImagingSetOptions(config.synthetic_share, config.synthetic_size, config.rendering_pool,
                                config.rendering_refresh, config.canopy_structure, config.urban_share,
                                config.brightness_jitter)
    return ImagingTrainingSet(bundle, sources, library, cameras, options, config.seed)


def start_from(cascade: Cascade, folder: Path) -> None:
    """Copy the networks of the bundle in ``folder`` into ``cascade`` (fine-tuning starts there);
    InputError when its networks are not this recipe's."""
    from engine.bundle import load_bundle

    source = load_bundle(folder)
    mine, theirs = cascade.networks(), source.networks()
    if set(mine) != set(theirs):
        raise InputError(f"the model to start from ({folder}) has the networks {sorted(theirs)}, this training "
                         f"{sorted(mine)}: start from a model trained with the same recipe", parameter="init_from")
    for name, network in mine.items():
        try:
            network.load_state_dict(theirs[name].state_dict())
        except RuntimeError as exc:
            raise InputError(f"the model to start from ({folder}) has a {name} network of another shape "
                             f"({str(exc).splitlines()[0]}): start from a model trained with the same recipe",
                             parameter="init_from") from None


def train(config_path, resume: bool = False, seed: Optional[int] = None, iterations: Optional[int] = None,
          device: Optional[str] = None, show_progress: bool = True,
          on_step: Optional[Callable[[str, int], None]] = None) -> dict:
    """Train what the config asks for and write the bundle; returns a summary with the loss curves.
    ``on_step("stage N", steps done)`` is called after every training step of every network (it may
    raise, e.g. ``Cancelled``: the checkpoints written so far stay)."""
    config = load_training_config(config_path)
    config = replace(config, seed=config.seed if seed is None else seed)
    if iterations is not None:  # a quick run: every network, mean networks included, trains this long
        config = replace(config, iterations=iterations, mean_iterations=iterations)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(device or config.device)
    torch.manual_seed(config.seed)
    bundle = bundle_config_from_training(config)
    data = training_data(config, bundle)
    cascade = Cascade(bundle, device="cpu")
    if config.init_from is not None:
        start_from(cascade, config.init_from)
    started = time.time()
    summaries = {}
    for stage in config.stages:
        report = None if on_step is None else (lambda done, _network, stage=stage: on_step(f"stage {stage}", done))
        options = LoopOptions(checkpoint=Checkpoint(config.output, stage, resume), show_progress=show_progress,
                              on_step=report)
        summaries[f"stage{stage}"] = train_stage(stage, cascade, data, replace(config, crop=config.crop_for(stage)),
                                                 device, options)
    training = _training_record(config, data, device, summaries, time.time() - started)
    cascade.config = replace(cascade.config, training=training)
    save_bundle(cascade.to("cpu"), config.output)
    return {"output": str(config.output), "training": training,
            "losses": {k: v["losses"] for k, v in summaries.items()}}
