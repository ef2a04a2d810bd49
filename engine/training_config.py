"""The training recipe (``python -m engine train --config F``): one typed, frozen ``TrainingConfig``
read from JSON by the same strict loader as a bundle's config (engine.config.from_dict).

A key the dataclasses do not know is refused with its name and the valid keys, so a typo cannot
pass silently; relative paths are resolved against the config file's folder. Every key is a field
below; configs/*.json are the recipes the README names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Tuple, Union

from engine.config import (Normalisation, Parameterisation, RGBSimulation, SamplerConfig, ScheduleConfig,
                           StrictConfig, UNetConfig, from_dict)
from engine.diffusion.schedule import TrainingTimesteps
from engine.errors import InputError


@dataclass(frozen=True)
class SceneSpec(StrictConfig):
    """A training scene (.npz or spectral GeoTIFF), optionally a [start, stop) crop of it."""

    path: Path
    rows: Optional[Tuple[int, int]] = None
    cols: Optional[Tuple[int, int]] = None
    # What the cube holds: reflectance (or anything proportional to it), or radiance-like DN, which
    # imaging training converts to reflectance by an empirical line (engine.imaging_data).
    units: Literal["reflectance", "radiance"] = "reflectance"


@dataclass(frozen=True)
class GridSpec(StrictConfig):
    """A band grid of its own; the FWHM default to the local band spacing."""

    wavelengths_nm: Tuple[float, ...]
    fwhm_nm: Optional[Tuple[float, ...]] = None


@dataclass(frozen=True)
class TrainingConfig(StrictConfig):
    """What to train and how. ``stages`` trains one or both stages (they train independently: stage 2
    on the true stage-1 bands); ``baseline`` fits the per-pixel affine map whose residual the
    networks learn; ``stage2_crop`` is stage 2's crop when it differs (a local network trains on
    crops of its own window); ``inference_tile`` defaults to the networks' own
    (``default_inference_tile``)."""

    name: str
    output: Path
    scenes: Tuple[SceneSpec, ...]
    description: str = ""
    grid: Union[Literal["houston"], GridSpec] = "houston"
    srf_dir: Optional[Path] = None
    rgb: RGBSimulation = field(default_factory=RGBSimulation)
    normalisation: Normalisation = field(default_factory=Normalisation)
    unet: UNetConfig = field(default_factory=UNetConfig)
    stage2_unet: Optional[UNetConfig] = None
    stage2_condition: Literal["stage1", "stage1+rgb"] = "stage1+rgb"
    parameterisation: Parameterisation = "edm"
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    inference_tile: Optional[int] = None
    stages: Tuple[Literal[1, 2], ...] = (1, 2)
    iterations: int = 2000
    batch_size: int = 8
    crop: int = 32
    stage2_crop: Optional[int] = None
    learning_rate: float = 2e-4
    # "cosine": the rate decays to zero over each network's iterations (after a resume, too)
    learning_rate_schedule: Literal["constant", "cosine"] = "constant"
    ema_decay: float = 0.995
    sam_weight: float = 1.0
    p_uncond: float = 0.1
    baseline: bool = True
    # The noise levels training draws: the kinds engine.diffusion.schedule.TrainingTimesteps implements.
    noise_levels: Literal[TrainingTimesteps.KINDS] = "uniform"
    log_sigma_mean: float = -0.5
    log_sigma_std: float = 1.2
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None
    # Mean-anchored stages: a deterministic network per stage (``mean_network``; stage 2 may have its
    # own) is trained first, for ``mean_iterations`` (default: ``iterations``), on MSE + the spectral
    # angle; the diffusion network then models the residual around it.
    mean_network: Optional[UNetConfig] = None
    stage2_mean_network: Optional[UNetConfig] = None
    mean_iterations: Optional[int] = None
    # What stage 2 is conditioned on in training: the true stage-1 bands (the paper), or stage 1's
    # mean estimate plus Gaussian noise of ``stage2_condition_noise`` x stage 1's residual std
    # (conditioning augmentation, Ho et al. 2021): what stage 2 receives at inference.
    stage2_condition_source: Literal["truth", "stage1_mean"] = "truth"
    stage2_condition_noise: float = 0.0
    # The value of a dropped condition (ICMG's unconditional model); 0 is the paper's black pixel.
    null_condition: float = 0.0
    # Imaging training data (rgb.kind "imaging"): the spectral library behind synthetic scenes, the
    # share of renderings made from synthetic scenes, their size, and the rendering pool.
    library: Literal["none", "earthlib"] = "none"  # "none": real scenes only (synthetic_share must be 0)
    synthetic_share: float = 0.0
    synthetic_size: int = 64
    # Synthetic tree crowns with their own shade (dark in the visible, bright in the near-infrared)
    # and dense stands; see engine.synthetic_scenes.
    canopy_structure: bool = False
    # The share of synthetic scenes laid out as a town (impervious ground, roofs with their
    # shadows, lawns and street trees) rather than countryside; see engine.synthetic_scenes.
    urban_share: float = 0.0
    # Std (log units) of a per-rendering shift of the chromatic condition's brightness channel.
    brightness_jitter: float = 0.0
    rendering_pool: int = 48
    rendering_refresh: int = 4
    # Fine-tuning: a bundle whose networks (of this recipe's shapes) the training starts from.
    init_from: Optional[Path] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("synthetic_share", "urban_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a share, between 0 and 1 (got {getattr(self, name)})")
        if self.brightness_jitter < 0:
            raise ValueError(f"brightness_jitter is a standard deviation, at least 0 (got {self.brightness_jitter})")

    def mean_network_for(self, stage: int) -> Optional[UNetConfig]:
        return (self.stage2_mean_network or self.mean_network) if stage == 2 else self.mean_network

    @property
    def mean_network_iterations(self) -> int:
        """How long the mean networks train: ``mean_iterations``, or ``iterations`` when unset."""
        return self.mean_iterations or self.iterations

    def crop_for(self, stage: int) -> int:
        """A stage's training crop: stage 2 may train on crops of its own network's window."""
        return (self.stage2_crop or self.crop) if stage == 2 else self.crop


def load_training_config(path) -> TrainingConfig:
    """The recipe in the JSON file ``path`` (InputError naming the problem when it is not one)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"training config {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"training config {path} is not valid JSON: {exc}") from None
    where = f"training config {path}"
    try:
        return from_dict(TrainingConfig, raw, where, relative_to=path.parent)
    except ValueError as exc:
        # from_dict names the file; a check across fields (__post_init__) does not know it
        message = str(exc)
        raise InputError(message if message.startswith(where) else f"{where}: {message}") from None
