"""Typed configuration of a model bundle, saved as JSON beside the weights.

Every dataclass round-trips through ``to_dict`` / ``from_dict``; ``from_dict`` refuses unknown or
missing fields so a foreign or damaged ``config.json`` fails loudly instead of loading half a model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

FORMAT_VERSION = 1


def _from_dict(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}")
    kwargs = {}
    for name, f in names.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{where}: missing field '{name}'")
            continue
        value = data[name]
        if name == "baseline" and value is not None:
            kwargs[name] = tuple(tuple(float(v) for v in row) for row in value)
            continue
        nested = _NESTED.get((cls.__name__, name))
        if nested is not None:
            value = _from_dict(nested, value, f"{where}.{name}")
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[name] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class UNetConfig:
    """Width, depth and attention placement of one stage's noise-prediction UNet.

    ``architecture`` "multiscale" is the paper's UNet (downsampling levels, GroupNorm, attention);
    ``paper()`` is Section III-B-1's network and the default is small enough to train on two CPU
    cores. "local" is the same two-branch topology at one resolution with per-pixel blocks
    (engine.model.local_unet): its only spatial operator is the condition's first convolution, a
    ``condition_window`` x ``condition_window`` window (for "multiscale" that convolution's kernel).
    A local network takes ``channel_multipliers`` (1,) and no attention.
    """

    base_channels: int = 32
    channel_multipliers: tuple = (1, 2, 2)
    encoder_res_blocks: int = 1
    decoder_res_blocks: int = 2
    attention_downsample: tuple = (4,)
    attention_heads: int = 4
    dropout: float = 0.0
    # The paper feeds the condition through the time-conditioned encoder; a time-free condition
    # branch lets samplers encode the condition once per tile instead of once per step.
    condition_uses_time: bool = False
    architecture: str = "multiscale"
    condition_window: int = 3

    ARCHITECTURES = ("multiscale", "local")

    @staticmethod
    def local(width: int = 128, blocks: int = 1, condition_window: int = 5, dropout: float = 0.0) -> "UNetConfig":
        return UNetConfig(base_channels=width, channel_multipliers=(1,), encoder_res_blocks=blocks,
                          decoder_res_blocks=blocks + 1, attention_downsample=(), dropout=dropout,
                          architecture="local", condition_window=condition_window)

    def validate(self) -> None:
        if self.architecture not in self.ARCHITECTURES:
            raise ValueError(f"unknown UNet architecture '{self.architecture}': use "
                             + " or ".join(f"'{a}'" for a in self.ARCHITECTURES))
        if self.decoder_res_blocks != self.encoder_res_blocks + 1:
            # Each decoder block consumes exactly one skip of each branch, as in improved-diffusion.
            raise ValueError("decoder_res_blocks must equal encoder_res_blocks + 1")
        if self.condition_window < 1 or self.condition_window % 2 == 0:
            raise ValueError(f"condition_window must be an odd number of pixels, got {self.condition_window}")
        if self.architecture == "local" and (tuple(self.channel_multipliers) != (1,) or self.attention_downsample):
            raise ValueError("a local UNet has one resolution and no attention: set channel_multipliers to [1] "
                             "and attention_downsample to []")

    @staticmethod
    def paper() -> "UNetConfig":
        return UNetConfig(
            base_channels=128,
            channel_multipliers=(1, 2, 2, 2, 2, 2, 2),
            encoder_res_blocks=2,
            decoder_res_blocks=3,
            attention_downsample=(16,),
            attention_heads=4,
            dropout=0.0,
            condition_uses_time=True,
        )

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.channel_multipliers) - 1)


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "linear"  # "linear" (DDPM) or "cosine" (improved DDPM)
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02


@dataclass(frozen=True)
class SamplerConfig:
    """How to sample both stages.

    ``truncation_target``: "eps" clamps the guided noise (the paper), "x_t" clamps the state (the
    authors' code), "x0" clamps the predicted clean image (the form DDIM/DPM-Solver++ use), "none".
    ``truncation_scope``: "sample" takes the percentile over a whole tile (the paper); "pixel" over
    each pixel's spectrum, which no tile border can change.
    """

    name: str = "dpmpp"  # "ddpm" | "ddim" | "dpmpp"
    steps: int = 20
    guidance: float = 1.0
    pdt_stage1: Optional[float] = 0.96
    pdt_stage2: Optional[float] = 0.88
    truncation_target: str = "x0"
    truncation_scope: str = "sample"
    eta: float = 0.0

    def pdt_for_stage(self, stage: int) -> Optional[float]:
        return self.pdt_stage1 if stage == 1 else self.pdt_stage2

    def validate(self) -> None:
        if self.name not in ("ddpm", "ddim", "dpmpp"):
            raise ValueError(f"unknown sampler '{self.name}': use ddpm, ddim or dpmpp")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.truncation_target not in ("eps", "x_t", "x0", "none"):
            raise ValueError(f"unknown truncation target '{self.truncation_target}': use eps, x_t, x0 or none")
        if self.truncation_scope not in ("sample", "pixel"):
            raise ValueError(f"unknown truncation scope '{self.truncation_scope}': use sample or pixel")
        for p in (self.pdt_stage1, self.pdt_stage2):
            if p is not None and not 0.0 < p <= 1.0:
                raise ValueError(f"PDT percentile p_T must lie in (0, 1], got {p}")


def _pdt_override(value, default):
    if value is None:
        return default
    if value is False or (isinstance(value, str) and value.lower() in ("off", "none", "no")):
        return None
    return float(value)


def override_sampler(base: SamplerConfig, sampler: Optional[str] = None, steps: Optional[int] = None,
                     guidance: Optional[float] = None, pdt=(None, None), truncation_target: Optional[str] = None,
                     truncation_scope: Optional[str] = None) -> SamplerConfig:
    """``base`` with the given fields replaced; None keeps a field, a PDT entry "off" or False disables it.

    Switching sampler without naming a truncation target picks the one that sampler is defined with:
    the guided noise for the paper's DDPM, the predicted x_0 for DDIM and DPM-Solver++.
    """
    pdt = (None, None) if pdt is None else tuple(pdt)
    if len(pdt) != 2:
        raise ValueError(f"pdt takes two values (stage 1, stage 2), got {pdt!r}")
    if truncation_target is None and sampler is not None and sampler != base.name:
        truncation_target = "eps" if sampler == "ddpm" else "x0"
    settings = dataclasses.replace(
        base,
        name=sampler or base.name,
        steps=int(steps) if steps is not None else base.steps,
        guidance=float(guidance) if guidance is not None else base.guidance,
        pdt_stage1=_pdt_override(pdt[0], base.pdt_stage1),
        pdt_stage2=_pdt_override(pdt[1], base.pdt_stage2),
        truncation_target=truncation_target or base.truncation_target,
        truncation_scope=truncation_scope or base.truncation_scope,
    )
    settings.validate()
    return settings


@dataclass(frozen=True)
class Normalisation:
    """Affine map between physical units and model units: v = (x - offset) / scale.

    kind "fixed" uses the stored offset and scale (the paper: 3693 / 7410 on Houston DN);
    kind "rgb_percentile" derives ``scale`` from the input RGB (its ``percentile``-th value divided
    by ``target``), once per raster, so any radiometric scale maps to the range the model knows.
    """

    kind: str = "fixed"
    offset: float = 0.0
    scale: float = 1.0
    percentile: float = 99.0
    target: float = 1.0

    def to_model(self, x):
        return (x - self.offset) / self.scale

    def from_model(self, v):
        return v * self.scale + self.offset

    def resolved(self, rgb: np.ndarray, valid: Optional[np.ndarray] = None) -> "Normalisation":
        """The fixed normalisation to use for this RGB image (itself when kind is "fixed")."""
        if self.kind == "fixed":
            return self
        if self.kind != "rgb_percentile":
            raise ValueError(f"unknown normalisation kind '{self.kind}'")
        values = np.asarray(rgb, dtype=np.float64)
        if valid is not None:
            values = values[:, np.asarray(valid, dtype=bool)]
        values = values[np.isfinite(values)]
        level = float(np.percentile(values, self.percentile)) if values.size else 0.0
        scale = level / self.target if level > 0 else 1.0
        return dataclasses.replace(self, kind="fixed", offset=0.0, scale=scale)


@dataclass(frozen=True)
class RGBSimulation:
    """How training RGB was made from the cubes; also the default for evaluation.

    kind "bands": the RGB is three bands of the cube (``band_indices``, the paper's [4, 11, 22]).
    kind "srf": integration against camera responses (``cameras``: file stems in shared/data/srf),
    with per-channel white-balance and global gain drawn from the given ranges during training.
    """

    kind: str = "bands"
    band_indices: tuple = (4, 11, 22)
    cameras: tuple = ()
    white_balance_range: tuple = (1.0, 1.0)
    gain_range: tuple = (1.0, 1.0)


PARAMETERISATIONS = ("eps", "edm")


@dataclass(frozen=True)
class StageConfig:
    """One diffusion stage: which bands it outputs and what conditions it.

    ``baseline`` (optional) is a per-pixel affine map from the condition channels to the output
    bands, (out, cond + 1) with the bias last, fitted by least squares on the training data. The
    diffusion then models the residual x_0 - baseline(c), a far smaller and easier signal than x_0
    itself. ``x0_limit`` bounds the predicted residual at every sampler step (clip_denoised of
    improved-diffusion), set from the training residuals; None leaves it unbounded. ``data_std``
    (the residual's standard deviation, one per band) turns on the Gaussian skip path of the eps
    predictor and scales the EDM preconditioning. ``parameterisation`` is "eps" (the paper's noise
    prediction) or "edm" (x_0 prediction through EDM's preconditioning, engine.diffusion.preconditioning);
    bundles written before it existed are "eps".
    """

    output_indices: tuple
    condition: str  # "rgb" or "stage1+rgb" / "stage1"
    unet: UNetConfig = field(default_factory=UNetConfig)
    baseline: Optional[tuple] = None
    x0_limit: Optional[float] = None
    data_std: Optional[object] = None
    parameterisation: str = "eps"

    @property
    def out_channels(self) -> int:
        return len(self.output_indices)

    def cond_channels(self, stage1_bands: int) -> int:
        return {"rgb": 3, "stage1": stage1_bands, "stage1+rgb": stage1_bands + 3}[self.condition]


def unknown_parameterisation(name: str) -> str:
    return f"unknown parameterisation '{name}': use " + " or ".join(f"'{p}'" for p in PARAMETERISATIONS)


@dataclass(frozen=True)
class BundleConfig:
    name: str
    wavelengths_nm: tuple
    fwhm_nm: tuple
    stage1: StageConfig
    stage2: StageConfig
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    normalisation: Normalisation = field(default_factory=Normalisation)
    rgb_simulation: RGBSimulation = field(default_factory=RGBSimulation)
    output_units: str = "same units as the input RGB"
    description: str = ""
    training: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # The raster pipeline's tile edge unless the caller asks for another. A multiscale network is best
    # near twice its training crop (its statistics drift with the tile: docs/tiling.md); a local one
    # is size-invariant, so larger tiles only save work on overlaps.
    inference_tile: int = 64

    @property
    def band_count(self) -> int:
        return len(self.wavelengths_nm)

    @property
    def stage1_indices(self) -> tuple:
        return tuple(self.stage1.output_indices)

    @property
    def size_multiple(self) -> int:
        return max(self.stage1.unet.size_multiple, self.stage2.unet.size_multiple)

    @property
    def context_radius(self) -> Optional[int]:
        """Pixels of RGB on each side that the cascade's output at a pixel depends on, when both
        stages are local networks (stage 2 sees stage 1's output within its own window); else None."""
        stages = (self.stage1.unet, self.stage2.unet)
        if any(unet.architecture != "local" for unet in stages):
            return None
        return sum(unet.condition_window // 2 for unet in stages)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BundleConfig":
        version = data.get("format_version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            raise ValueError(f"format_version {version!r} is not {FORMAT_VERSION}")
        config = _from_dict(cls, data, "config")
        config.validate()
        return config

    def validate(self) -> None:
        n_bands = self.band_count
        if len(self.fwhm_nm) != n_bands:
            raise ValueError(f"{len(self.fwhm_nm)} FWHM values for {n_bands} wavelengths")
        if self.stage2.out_channels != n_bands:
            raise ValueError(f"stage 2 outputs {self.stage2.out_channels} bands, the grid has {n_bands}")
        if any(not 0 <= i < n_bands for i in self.stage1.output_indices):
            raise ValueError("stage-1 band indices fall outside the band grid")
        if self.inference_tile < 8:
            raise ValueError(f"inference_tile must be at least 8 pixels, got {self.inference_tile}")
        for stage in (self.stage1, self.stage2):
            stage.unet.validate()
            if stage.parameterisation not in PARAMETERISATIONS:
                raise ValueError(unknown_parameterisation(stage.parameterisation))
        self.sampler.validate()


_NESTED = {
    ("BundleConfig", "stage1"): StageConfig,
    ("BundleConfig", "stage2"): StageConfig,
    ("BundleConfig", "schedule"): ScheduleConfig,
    ("BundleConfig", "sampler"): SamplerConfig,
    ("BundleConfig", "normalisation"): Normalisation,
    ("BundleConfig", "rgb_simulation"): RGBSimulation,
    ("StageConfig", "unet"): UNetConfig,
}


def equal_spacing_fwhm(wavelengths_nm: Sequence[float]) -> tuple:
    """FWHM equal to the local band spacing, the usual assumption for a nominal grid."""
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    if wl.size < 2:
        return tuple(float(10.0) for _ in wl)
    spacing = np.gradient(wl)
    return tuple(float(round(abs(s), 4)) for s in spacing)


def houston_grid() -> tuple:
    """The paper's Houston grid: 48 bands from 374.4 nm in 14.3 nm steps."""
    return tuple(round(374.4 + 14.3 * i, 2) for i in range(48))


