"""Training of one or both cascade stages from a JSON config (``python -m engine train --config F``).

The stages train independently, as in the paper: stage 2 is conditioned on the *true* stage-1
bands (plus the RGB when the config says so). Checkpoints (safetensors + JSON) allow resuming;
the same config and seed give the same weights. ``train_network`` is the one training loop; what
a network learns is its ``TrainingTask``: how a batch becomes target and condition, and the
objective (the diffusion loss of Algorithm 1, or direct regression for a single-shot network).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from engine.bundle import save_bundle
from engine.cascade import Cascade, make_config
from engine.config import BundleConfig, houston_grid
from engine.data import TrainingSet, load_scene
from engine.device import resolve_device
from engine.diffusion.ema import EMA
from engine.diffusion.losses import diffusion_loss, spectral_angle_loss
from engine.diffusion.schedule import NoiseSchedule, TrainingTimesteps
from engine.errors import InputError
from engine.training_config import TrainingConfig, load_training_config

# (cube, rgb, band coverage) of a batch of crops -> (x_0, condition, band mask) of what a network learns.
Select = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def bundle_config_from_training(config: TrainingConfig) -> BundleConfig:
    """The bundle config (untrained: no baselines yet) that a training config describes."""
    if config.grid == "houston":
        wavelengths, fwhm = houston_grid(), None
    else:
        wavelengths, fwhm = config.grid.wavelengths_nm, config.grid.fwhm_nm
    networks = (config.unet, config.stage2_unet or config.unet)
    # The tile that suits both stages: a multiscale stage's quality drifts with larger tiles.
    tile = config.inference_tile
    if tile is None:
        tile = min(unet.network_class.default_inference_tile for unet in networks)
    return make_config(
        config.name, wavelengths, fwhm, unet=config.unet, stage2_unet=config.stage2_unet,
        stage2_condition=config.stage2_condition, parameterisation=config.parameterisation,
        schedule=config.schedule, sampler=config.sampler, normalisation=config.normalisation,
        rgb_simulation=config.rgb, description=config.description, inference_tile=tile,
    )


def _stage_tensors(stage: int, config: BundleConfig, cube: torch.Tensor, rgb: torch.Tensor, mask: torch.Tensor):
    """Target, condition and band mask of one stage from a batch of full cubes."""
    s1 = list(config.stage1_indices)
    if stage == 1:
        return cube[:, s1], rgb, mask[:, s1]
    truth1 = cube[:, s1]
    cond = truth1 if config.stage2.condition == "stage1" else torch.cat([truth1, rgb], dim=1)
    return cube, cond, mask


@dataclass(frozen=True)
class Checkpoint:
    """One network's checkpoints, in ``<output>.checkpoints`` beside the bundle folder ``output``;
    ``resume`` continues from the last one."""

    output: Path
    stage: int
    resume: bool = False

    @property
    def paths(self) -> Tuple[Path, Path]:
        folder = self.output.parent / f"{self.output.name}.checkpoints"
        return folder / f"stage{self.stage}.safetensors", folder / f"stage{self.stage}.json"


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
    return int(info["step"]), list(info["losses"])


def _training_pixels(data: TrainingSet, select: Select, config: TrainingConfig, batches: int):
    """(condition, target, covered) per pixel of ``batches`` seeded training batches."""
    conds, targets, masks = [], [], []
    for i in range(batches):
        rng = np.random.default_rng([config.seed, 99, i])
        cube, rgb, mask = (torch.from_numpy(a) for a in data.batch(config.batch_size, config.crop, rng))
        x0, cond, band_mask = select(cube, rgb, mask)
        conds.append(cond.permute(0, 2, 3, 1).reshape(-1, cond.shape[1]).double().numpy())
        targets.append(x0.permute(0, 2, 3, 1).reshape(-1, x0.shape[1]).double().numpy())
        masks.append(np.repeat(band_mask.numpy(), x0.shape[2] * x0.shape[3], axis=0) > 0)
    return np.concatenate(conds), np.concatenate(targets), np.concatenate(masks)


def _per_band_std(values: np.ndarray, mask: np.ndarray) -> tuple:
    """Root mean square per band over covered pixels."""
    return tuple(float(v) for v in np.sqrt((np.where(mask, values, 0.0) ** 2).sum(axis=0) /
                                           np.maximum(mask.sum(axis=0), 1)))


def target_std(data: TrainingSet, select: Select, config: TrainingConfig, batches: int = 32) -> tuple:
    """Per-band root mean square of the target itself, the data scale when no baseline is fitted."""
    _, target, mask = _training_pixels(data, select, config, batches)
    return _per_band_std(target, mask)


def fit_baseline(data: TrainingSet, select: Select, config: TrainingConfig, batches: int = 32):
    """Least-squares per-pixel affine map condition -> target on training crops, and the residual bound.

    Returns (table, x0_limit, per-band residual std): table rows are output bands, columns the
    condition channels then the bias; bands a crop does not cover are left out of their band's fit.
    """
    cond, target, mask = _training_pixels(data, select, config, batches)
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
    the whole crops; ``base`` is the baseline's estimate of ``x0`` (None without a baseline)."""

    x0: torch.Tensor
    cond: torch.Tensor
    band_mask: torch.Tensor
    base: Optional[torch.Tensor]
    margin: int


@dataclass(frozen=True)
class DiffusionObjective:
    """Algorithm 1's loss (engine.diffusion.losses.diffusion_loss) on the residual from the baseline."""

    schedule: NoiseSchedule
    timesteps: TrainingTimesteps
    sam_weight: float
    p_uncond: float
    sam_offset: float = 0.0

    def __call__(self, model: nn.Module, batch: TrainingBatch, generator: torch.Generator) -> torch.Tensor:
        x0 = batch.x0 - batch.base if batch.base is not None else batch.x0
        return diffusion_loss(model, self.schedule, x0, batch.cond, band_mask=batch.band_mask,
                              sam_weight=self.sam_weight, p_uncond=self.p_uncond, sam_offset=self.sam_offset,
                              x0_base=batch.base, generator=generator, timesteps=self.timesteps)["loss"]


def diffusion_objective(denoiser: nn.Module, schedule: NoiseSchedule, config: TrainingConfig,
                        sam_offset: float = 0.0) -> DiffusionObjective:
    """The diffusion loss for ``denoiser`` (a preconditioned network), its noise levels centred on
    its data std. ``sam_offset`` puts the spectral angle in physical units (see diffusion_loss)."""
    timesteps = TrainingTimesteps(schedule, config.noise_levels, _median_data_std(denoiser),
                                  config.log_sigma_mean, config.log_sigma_std)
    return DiffusionObjective(schedule, timesteps, config.sam_weight, config.p_uncond, sam_offset)


@dataclass(frozen=True)
class RegressionObjective:
    """Direct regression of x_0 by a single-shot network (engine.model.regressor, called as
    ``model(cond, margin)``): MSE + sam_weight * (1 - cos), over the bands the scene covers."""

    sam_weight: float
    sam_offset: float = 0.0

    def __call__(self, model: nn.Module, batch: TrainingBatch, generator: torch.Generator) -> torch.Tensor:
        estimate = model(batch.cond, batch.margin)
        if batch.base is not None:
            estimate = estimate + batch.base
        covered = batch.band_mask[:, :, None, None].expand_as(estimate)
        mse = (((estimate - batch.x0) ** 2) * covered).sum() / covered.sum().clamp(min=1)
        offset = self.sam_offset
        return mse + self.sam_weight * spectral_angle_loss(batch.x0 + offset, estimate + offset, batch.band_mask)


@dataclass(frozen=True)
class TrainingTask:
    """What one network learns: ``select`` turns a batch of crops into (x_0, condition, band mask),
    ``objective(model, batch, generator)`` gives the loss, and ``baseline(cond)``, when given, is
    the per-pixel estimate the network corrects."""

    select: Select
    objective: Callable[[nn.Module, TrainingBatch, torch.Generator], torch.Tensor]
    baseline: Optional[Callable[[torch.Tensor], torch.Tensor]] = None


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
    cube, rgb, mask = (torch.from_numpy(a).to(device) for a in data.batch(config.batch_size, config.crop, step_rng))
    x0, cond, band_mask = task.select(cube, rgb, mask)
    base = task.baseline(inner(cond, margin)) if task.baseline is not None else None
    return TrainingBatch(inner(x0, margin), cond, band_mask, base, margin)


def _step(learner: _Learner, loss: torch.Tensor) -> None:
    learner.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(learner.model.parameters(), 1.0)
    learner.optimizer.step()
    learner.ema.update(learner.model)


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


def train_stage(stage: int, cascade: Cascade, data: TrainingSet, config: TrainingConfig, device,
                options: LoopOptions = LoopOptions()) -> dict:
    """Fit the stage's baseline (when the config asks for one), then train its network on the
    residual; the run is labelled "stage N" whatever ``options.label`` says."""
    bundle = cascade.config

    def select(cube, rgb, mask):
        return _stage_tensors(stage, bundle, cube, rgb, mask)

    field_name = f"stage{stage}"
    stage_config = getattr(bundle, field_name)
    if config.baseline:
        table, limit, std = fit_baseline(data, select, config)
        stage_config = replace(stage_config, baseline=table, x0_limit=limit, data_std=std)
    elif stage_config.parameterisation == "edm":
        stage_config = replace(stage_config, data_std=target_std(data, select, config))
    cascade.config = replace(cascade.config, **{field_name: stage_config})
    normalisation = cascade.config.normalisation
    denoiser = cascade.denoiser(stage)
    objective = diffusion_objective(denoiser, cascade.schedule, config, normalisation.offset / normalisation.scale)
    baseline = (lambda cond: cascade.baseline(stage, cond)) if config.baseline else None
    summary = train_network(denoiser, data, TrainingTask(select, objective, baseline), config, device,
                            replace(options, label=f"stage {stage}"))
    cascade.model(stage).eval()
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
    }


def train(config_path, resume: bool = False, seed: Optional[int] = None, iterations: Optional[int] = None,
          device: Optional[str] = None, show_progress: bool = True) -> dict:
    """Train what the config asks for and write the bundle; returns a summary with the loss curves."""
    config = load_training_config(config_path)
    config = replace(config, seed=config.seed if seed is None else seed,
                     iterations=config.iterations if iterations is None else iterations)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(device or config.device)
    torch.manual_seed(config.seed)
    bundle = bundle_config_from_training(config)
    data = TrainingSet(bundle, [load_scene(s.path, s.rows, s.cols) for s in config.scenes], config.srf_dir)
    cascade = Cascade(bundle, device="cpu")
    started = time.time()
    summaries = {}
    for stage in config.stages:
        options = LoopOptions(checkpoint=Checkpoint(config.output, stage, resume), show_progress=show_progress)
        summaries[f"stage{stage}"] = train_stage(stage, cascade, data, replace(config, crop=config.crop_for(stage)),
                                                 device, options)
    training = _training_record(config, data, device, summaries, time.time() - started)
    cascade.config = replace(cascade.config, training=training)
    save_bundle(cascade.to("cpu"), config.output)
    return {"output": str(config.output), "training": training,
            "losses": {k: v["losses"] for k, v in summaries.items()}}
