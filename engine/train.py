"""Training of one or both cascade stages from a JSON config (``python -m engine train --config F``).

The stages train independently, as in the paper: stage 2 is conditioned on the *true* stage-1
bands (plus the RGB when the config says so). Checkpoints (safetensors + JSON) allow resuming;
the same config and seed give the same weights.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from engine.bundle import save_bundle
from engine.cascade import Cascade, make_config
from engine.config import (BundleConfig, Normalisation, RGBSimulation, SamplerConfig, ScheduleConfig, UNetConfig,
                           equal_spacing_fwhm, houston_grid)
from engine.data import TrainingSet, load_scene
from engine.device import resolve_device
from engine.diffusion.ema import EMA
from engine.diffusion.losses import diffusion_loss
from engine.diffusion.schedule import TrainingTimesteps
from engine.errors import InputError

DEFAULTS = {
    "iterations": 2000, "batch_size": 8, "crop": 32, "learning_rate": 2e-4, "ema_decay": 0.995,
    "sam_weight": 1.0, "p_uncond": 0.1, "checkpoint_every": 500, "seed": 0, "device": "auto",
    "stages": [1, 2], "stage2_condition": "stage1+rgb", "srf_dir": None, "threads": None, "baseline": True,
    "parameterisation": "edm", "noise_levels": "uniform", "log_sigma_mean": -0.5, "log_sigma_std": 1.2,
    # Stage 2's crop when it differs from stage 1's (local networks train on crops of their own window).
    "stage2_crop": None,
}


def _resolve(base: Path, value: Optional[str]) -> Optional[Path]:
    if value is None:
        return None
    path = Path(value)
    return path if path.is_absolute() else (base / path).resolve()


def load_training_config(path) -> dict:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"training config {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"training config {path} is not valid JSON: {exc}") from None
    spec = {**DEFAULTS, **raw}
    for key in ("name", "output", "scenes"):
        if key not in spec:
            raise InputError(f"training config {path} lacks '{key}'")
    if spec["noise_levels"] not in TrainingTimesteps.KINDS:
        raise InputError(f"training config {path}: unknown noise_levels '{spec['noise_levels']}': "
                         f"use {' or '.join(TrainingTimesteps.KINDS)}")
    base = path.parent
    spec["output"] = _resolve(base, spec["output"])
    spec["srf_dir"] = _resolve(base, spec["srf_dir"])
    spec["scenes"] = [{**s, "path": _resolve(base, s["path"])} for s in spec["scenes"]]
    return spec


def _tuples(fields: dict) -> dict:
    """JSON lists as the tuples the frozen config dataclasses hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


def bundle_config_from_spec(spec: dict) -> BundleConfig:
    grid = spec.get("grid", "houston")
    if grid == "houston":
        wavelengths, fwhm = houston_grid(), None
    else:
        wavelengths, fwhm = grid["wavelengths_nm"], grid.get("fwhm_nm")
    unet = UNetConfig(**_tuples(spec.get("unet", {})))
    stage2_unet = UNetConfig(**_tuples(spec["stage2_unet"])) if spec.get("stage2_unet") else None
    rgb = _tuples(spec.get("rgb", {}))
    return make_config(
        spec["name"], wavelengths, fwhm if fwhm is not None else equal_spacing_fwhm(wavelengths),
        unet=unet, stage2_unet=stage2_unet, stage2_condition=spec["stage2_condition"],
        parameterisation=spec["parameterisation"],
        schedule=ScheduleConfig(**spec.get("schedule", {})),
        sampler=SamplerConfig(**spec.get("sampler", {})),
        normalisation=Normalisation(**spec.get("normalisation", {})),
        rgb_simulation=RGBSimulation(**rgb),
        description=spec.get("description", ""),
        # A local network is size-invariant: large tiles only save overlap work.
        inference_tile=int(spec.get("inference_tile", 256 if unet.architecture == "local" else 64)),
    )


def _stage_tensors(stage: int, config: BundleConfig, cube: torch.Tensor, rgb: torch.Tensor, mask: torch.Tensor):
    """Target, condition and band mask of one stage from a batch of full cubes."""
    s1 = list(config.stage1_indices)
    if stage == 1:
        return cube[:, s1], rgb, mask[:, s1]
    truth1 = cube[:, s1]
    cond = truth1 if config.stage2.condition == "stage1" else torch.cat([truth1, rgb], dim=1)
    return cube, cond, mask


def _checkpoint_paths(output: Path, stage: int):
    folder = output.parent / f"{output.name}.checkpoints"
    return folder / f"stage{stage}.safetensors", folder / f"stage{stage}.json"


def _save_checkpoint(output: Path, stage: int, step: int, model, ema: EMA, optimizer, losses: list) -> None:
    weights, meta = _checkpoint_paths(output, stage)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.shadow.state_dict().items()})
    for i, param in enumerate(p for group in optimizer.param_groups for p in group["params"]):
        state = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                tensors[f"adam.{i}.{key}"] = state[key].detach().cpu().contiguous()
        if "step" in state:
            tensors[f"adam.{i}.step"] = torch.as_tensor(state["step"]).reshape(1).float().cpu()
    save_file(tensors, str(weights))
    meta.write_text(json.dumps({"step": step, "losses": losses}))


def _load_checkpoint(output: Path, stage: int, model, ema: EMA, optimizer):
    weights, meta = _checkpoint_paths(output, stage)
    if not (weights.is_file() and meta.is_file()):
        return 0, []
    tensors = load_file(str(weights))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.shadow.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    device = next(model.parameters()).device
    for i, param in enumerate(p for group in optimizer.param_groups for p in group["params"]):
        if f"adam.{i}.exp_avg" in tensors:
            optimizer.state[param] = {
                "step": tensors[f"adam.{i}.step"].reshape(()),
                "exp_avg": tensors[f"adam.{i}.exp_avg"].to(device),
                "exp_avg_sq": tensors[f"adam.{i}.exp_avg_sq"].to(device),
            }
    info = json.loads(meta.read_text())
    return int(info["step"]), list(info["losses"])


def _training_pixels(data: TrainingSet, select, spec: dict, batches: int):
    """(condition, target, covered) per pixel of ``batches`` seeded training batches."""
    conds, targets, masks = [], [], []
    for i in range(batches):
        rng = np.random.default_rng([spec["seed"], 99, i])
        cube, rgb, mask = (torch.from_numpy(a) for a in data.batch(spec["batch_size"], spec["crop"], rng))
        x0, cond, band_mask = select(cube, rgb, mask)
        conds.append(cond.permute(0, 2, 3, 1).reshape(-1, cond.shape[1]).double().numpy())
        targets.append(x0.permute(0, 2, 3, 1).reshape(-1, x0.shape[1]).double().numpy())
        masks.append(np.repeat(band_mask.numpy(), x0.shape[2] * x0.shape[3], axis=0) > 0)
    return np.concatenate(conds), np.concatenate(targets), np.concatenate(masks)


def _per_band_std(values: np.ndarray, mask: np.ndarray) -> tuple:
    """Root mean square per band over covered pixels."""
    return tuple(float(v) for v in np.sqrt((np.where(mask, values, 0.0) ** 2).sum(axis=0) /
                                           np.maximum(mask.sum(axis=0), 1)))


def target_std(data: TrainingSet, select, spec: dict, batches: int = 32) -> tuple:
    """Per-band root mean square of the target itself, the data scale when no baseline is fitted."""
    _, target, mask = _training_pixels(data, select, spec, batches)
    return _per_band_std(target, mask)


def fit_baseline(data: TrainingSet, select, spec: dict, batches: int = 32):
    """Least-squares per-pixel affine map condition -> target on training crops, and the residual bound.

    Returns (table, x0_limit, per-band residual std): table rows are output bands, columns the
    condition channels then the bias; bands a crop does not cover are left out of their band's fit.
    """
    cond, target, mask = _training_pixels(data, select, spec, batches)
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


def training_crop(spec: dict, stage: int) -> int:
    """A stage's training crop: stage 2 may train on crops of its own network's window."""
    return (spec["stage2_crop"] or spec["crop"]) if stage == 2 else spec["crop"]


def check_crop(spec: dict, margin: int) -> None:
    if spec["crop"] <= 2 * margin:
        raise InputError(f"crop {spec['crop']} px leaves no target pixel inside the network's {margin}-px context "
                         f"margin: set crop to at least {2 * margin + 1}")


def train_network(model, schedule, data: TrainingSet, select, spec: dict, device: str,
                  checkpoint: Optional[tuple] = None, label: str = "", sam_offset: float = 0.0,
                  show_progress: bool = True, baseline=None) -> dict:
    """Algorithm 1 for one noise-prediction network; ``select(cube, rgb, mask)`` gives (x_0, c, band mask).
    ``baseline(c)``, when given, is subtracted from x_0 so the network learns the residual.

    ``checkpoint`` is (output path, stage) to save and resume; the EMA weights end up in ``model``.
    A local network (``model.training_margin`` > 0) learns each crop's inner pixels, whose context
    lies wholly inside the crop.
    """
    from tqdm import tqdm

    margin = model.training_margin
    check_crop(spec, margin)
    model = model.to(device).train()
    ema = EMA(model, spec["ema_decay"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["learning_rate"], weight_decay=0.0)
    start, losses = _load_checkpoint(*checkpoint, model, ema, optimizer) if checkpoint and spec.get("resume") else (0, [])
    iterations = spec["iterations"]
    timesteps = TrainingTimesteps(schedule, spec["noise_levels"], _median_data_std(model),
                                  spec["log_sigma_mean"], spec["log_sigma_std"])
    bar = tqdm(range(start, iterations), desc=label, disable=not show_progress, initial=start, total=iterations)
    for step in bar:
        # Seeding from (seed, label, step) makes an interrupted-and-resumed run equal an uninterrupted one.
        rng = np.random.default_rng([spec["seed"], sum(map(ord, label)), step])
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        cube, rgb, mask = (torch.from_numpy(a).to(device) for a in data.batch(spec["batch_size"], spec["crop"], rng))
        x0, cond, band_mask = select(cube, rgb, mask)
        x0 = inner(x0, margin)
        base = baseline(inner(cond, margin)) if baseline is not None else None
        out = diffusion_loss(model, schedule, x0 - base if base is not None else x0, cond, band_mask=band_mask,
                             sam_weight=spec["sam_weight"], p_uncond=spec["p_uncond"], sam_offset=sam_offset,
                             x0_base=base, generator=generator, timesteps=timesteps)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.update(model)
        losses.append(round(out["loss"].item(), 5))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if checkpoint and ((step + 1) % spec["checkpoint_every"] == 0 or step + 1 == iterations):
            _save_checkpoint(*checkpoint, step + 1, model, ema, optimizer, losses)
    model.load_state_dict(ema.shadow.state_dict())
    model.eval()
    window = max(1, len(losses) // 10)
    return {"iterations": iterations, "loss_first": float(np.mean(losses[:window])) if losses else None,
            "loss_last": float(np.mean(losses[-window:])) if losses else None, "losses": losses}


def train_stage(stage: int, cascade: Cascade, data: TrainingSet, spec: dict, device: str,
                output: Optional[Path], show_progress: bool = True) -> dict:
    """Fit the stage's baseline (when the spec asks for one), then train its network on the residual."""
    config = cascade.config

    def select(cube, rgb, mask):
        return _stage_tensors(stage, config, cube, rgb, mask)

    field_name = f"stage{stage}"
    stage_config = getattr(config, field_name)
    if spec.get("baseline", True):
        table, limit, std = fit_baseline(data, select, spec)
        stage_config = replace(stage_config, baseline=table, x0_limit=limit, data_std=std)
    elif stage_config.parameterisation == "edm":
        stage_config = replace(stage_config, data_std=target_std(data, select, spec))
    config = cascade.config = replace(cascade.config, **{field_name: stage_config})
    offset = config.normalisation.offset / config.normalisation.scale
    baseline = (lambda cond: cascade.baseline(stage, cond)) if spec.get("baseline", True) else None
    summary = train_network(cascade.denoiser(stage), cascade.schedule, data, select, spec, device,
                            (output, stage) if output is not None else None, f"stage {stage}", offset,
                            show_progress, baseline)
    cascade.model(stage).eval()
    return summary


def train(config_path, resume: bool = False, seed: Optional[int] = None, iterations: Optional[int] = None,
          device: Optional[str] = None, show_progress: bool = True) -> dict:
    """Train what the config asks for and write the bundle; returns a summary with the loss curves."""
    spec = load_training_config(config_path)
    spec["resume"] = resume
    if seed is not None:
        spec["seed"] = seed
    if iterations is not None:
        spec["iterations"] = iterations
    if spec["threads"]:
        torch.set_num_threads(int(spec["threads"]))
    device = resolve_device(device or spec["device"])
    torch.manual_seed(spec["seed"])
    config = bundle_config_from_spec(spec)
    scenes = [load_scene(s["path"], s.get("rows"), s.get("cols")) for s in spec["scenes"]]
    data = TrainingSet(config, scenes, spec["srf_dir"])
    cascade = Cascade(config, device="cpu")
    output = spec["output"]
    started = time.time()
    summaries = {}
    for stage in spec["stages"]:
        stage_spec = {**spec, "crop": training_crop(spec, stage)}
        summaries[f"stage{stage}"] = train_stage(stage, cascade, data, stage_spec, device, output, show_progress)
    training = {
        "scenes": data.summary(),
        "iterations": spec["iterations"], "batch_size": spec["batch_size"], "crop": spec["crop"],
        "stage2_crop": training_crop(spec, 2), "ema_decay": spec["ema_decay"],
        "learning_rate": spec["learning_rate"], "seed": spec["seed"], "device": device,
        "stages_trained": spec["stages"], "seconds": round(time.time() - started, 1),
        "loss": {k: {"first": v["loss_first"], "last": v["loss_last"]} for k, v in summaries.items()},
    }
    cascade.config = replace(cascade.config, training=training)
    save_bundle(cascade.to("cpu"), output)
    return {"output": str(output), "training": training, "losses": {k: v["losses"] for k, v in summaries.items()}}
