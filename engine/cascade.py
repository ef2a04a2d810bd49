"""The spectral cascade: stage 1 reconstructs n = floor(3 sqrt(N/3)) bands at equal spectral
intervals from the RGB, stage 2 all N bands conditioned on stage 1 (Section III-B, Eq. 12)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import BundleConfig, SamplerConfig
from engine.diffusion.guidance import noise_predictor
from engine.diffusion.noise import NoiseSource
from engine.diffusion.preconditioning import make_denoiser
from engine.diffusion.samplers import SampleResult, SamplingOptions, sample, sampler_timesteps
from engine.diffusion.schedule import NoiseSchedule
from engine.model import make_network
from engine.model.regressor import SingleShotCNN


def stage_band_count(total_bands: int) -> int:
    """Eq. 12: n = floor(3 * sqrt(N / 3)); 48 -> 12, 102 -> 17."""
    if total_bands < 1:
        raise ValueError("a cascade needs at least one band")
    return int(math.floor(3 * math.sqrt(total_bands / 3) + 1e-9))


def stage1_band_indices(total_bands: int) -> tuple:
    """n bands sampled at equal intervals of N // n (every 4th of 48, every 6th of 102)."""
    n = stage_band_count(total_bands)
    step = total_bands // n
    return tuple(i * step for i in range(n))


def apply_affine(table, cond: torch.Tensor) -> torch.Tensor:
    """Per-pixel affine map (out, cond + 1), bias last, applied to (B, cond, H, W)."""
    matrix = torch.tensor(table, dtype=cond.dtype, device=cond.device)
    return torch.einsum("oc,bchw->bohw", matrix[:, :-1], cond) + matrix[:, -1][None, :, None, None]


@dataclass
class CascadeOutput:
    stage1: torch.Tensor
    full: torch.Tensor
    nfe: int
    network_passes: int


class Cascade:
    """Two conditional diffusion stages with one schedule and one band grid."""

    def __init__(self, config: BundleConfig, device: str = "cpu"):
        self.config = config
        self.schedule = NoiseSchedule(config.schedule)
        self.stage1_model = make_network(config.stage1.unet, *self._channels(1))
        self.stage2_model = make_network(config.stage2.unet, *self._channels(2))
        self.mean_models = {stage: SingleShotCNN(self.stage_config(stage).mean_network, *self._channels(stage))
                            for stage in (1, 2) if self.stage_config(stage).mean_network is not None}
        self.device = torch.device("cpu")
        self.to(device)

    def _channels(self, stage: int):
        """(output bands, condition channels) of a stage's networks."""
        n1 = self.config.stage1.out_channels
        out = n1 if stage == 1 else self.config.band_count
        return out, self.stage_config(stage).cond_channels(n1, self.config.normalisation.condition_channels)

    def to(self, device) -> "Cascade":
        self.device = torch.device(device)
        for network in self.networks().values():
            network.to(self.device).eval()
        return self

    def model(self, stage: int) -> nn.Module:
        """The stage's diffusion network."""
        return self.stage1_model if stage == 1 else self.stage2_model

    def networks(self) -> Dict[str, nn.Module]:
        """Every network, by the prefix its weights carry in a bundle ("stage1", "stage2", "mean1", "mean2")."""
        named = {"stage1": self.stage1_model, "stage2": self.stage2_model}
        named.update({f"mean{stage}": network for stage, network in self.mean_models.items()})
        return named

    def denoiser(self, stage: int):
        """The stage's noise predictor: its network under the stage's parameterisation."""
        stage_config = self.stage_config(stage)
        return make_denoiser(self.model(stage), self.schedule, stage_config.parameterisation,
                             stage_config.data_std).to(self.device)

    def stage2_condition(self, stage1: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        kind = self.config.stage2.condition
        if kind == "stage1":
            return stage1
        if kind == "stage1+rgb":
            return torch.cat([stage1, rgb], dim=1)
        raise ValueError(f"unknown stage-2 condition '{kind}'")

    def stage_config(self, stage: int):
        return self.config.stage1 if stage == 1 else self.config.stage2

    def baseline(self, stage: int, cond: torch.Tensor, margin: int = 0) -> Optional[torch.Tensor]:
        """The stage's estimate that its diffusion corrects: the mean network's (mean-anchored
        stages), the per-pixel affine map's, or None. ``margin``: px of context around the output
        extent that ``cond`` carries (training windows)."""
        stage_config = self.stage_config(stage)
        if stage in self.mean_models:
            estimate = self.mean_models[stage](cond, margin)
            return F.softplus(estimate) if stage_config.mean_activation == "softplus" else estimate
        table = stage_config.baseline
        if table is None:
            return None
        return apply_affine(table, cond if margin == 0 else cond[..., margin:-margin, margin:-margin])

    def image_statistics(self, rgb, valid=None):
        """What the bundle's input transform needs to know about a whole image (once per raster)."""
        return self.config.normalisation.statistics(rgb, valid)

    @torch.no_grad()
    def sample_stage(self, stage: int, cond: torch.Tensor, settings: SamplerConfig, noise: NoiseSource,
                     on_step: Optional[Callable[[int, int], None]] = None,
                     cancel: Optional[Callable[[], bool]] = None) -> SampleResult:
        model = self.denoiser(stage)
        predictor = noise_predictor(model, cond, settings.guidance_for_stage(stage), self.config.null_condition)
        options = SamplingOptions.for_stage(settings, stage, self.schedule.num_timesteps,
                                            self.stage_config(stage).x0_limit, self.stage_config(stage).data_std)
        shape = (cond.shape[0], model.out_channels, cond.shape[2], cond.shape[3])
        result = sample(predictor, self.schedule, shape, lambda step, shp: noise.draw(stage, step, shp, cond.device),
                        options, on_step=on_step, cancel=cancel)
        base = self.baseline(stage, cond)
        return result if base is None else dataclasses.replace(result, x0=result.x0 + base)

    def steps_per_stage(self, settings: SamplerConfig) -> int:
        return len(sampler_timesteps(settings.name, self.schedule, settings.steps))

    @torch.no_grad()
    def sample(self, cond_rgb: torch.Tensor, settings: SamplerConfig, noise: NoiseSource,
               progress: Optional[Callable[[float], None]] = None,
               cancel: Optional[Callable[[], bool]] = None) -> CascadeOutput:
        """The RGB condition (B, C, H, W: the normalisation's ``condition``) -> stage-1 (B, n, H, W) and
        full (B, N, H, W) estimates in model units."""
        settings.validate()
        multiple = self.config.size_multiple
        if cond_rgb.shape[2] % multiple or cond_rgb.shape[3] % multiple:
            raise ValueError(f"tile size {tuple(cond_rgb.shape[2:])} is not a multiple of {multiple}")
        cond_rgb = cond_rgb.to(self.device, torch.float32)
        per_stage = self.steps_per_stage(settings)

        def reporter(stage):
            if progress is None:
                return None
            return lambda k, total: progress(((stage - 1) * per_stage + k) / (2 * per_stage))

        first = self.sample_stage(1, cond_rgb, settings, noise, reporter(1), cancel)
        stage1 = self._bounded(first.x0)
        second = self.sample_stage(2, self.stage2_condition(stage1, cond_rgb), settings, noise, reporter(2), cancel)
        return CascadeOutput(stage1, self._bounded(second.x0), first.nfe + second.nfe,
                             first.network_passes + second.network_passes)

    def _bounded(self, values: torch.Tensor) -> torch.Tensor:
        """Spectra per unit of brightness (a non-negative normalisation) are clamped at zero: a
        sample's residual may reach below it, light may not."""
        return values.clamp(min=0.0) if self.config.normalisation.non_negative else values


def make_config(name: str, wavelengths_nm, fwhm_nm=None, *, unet=None, stage2_unet=None,
                stage2_condition: str = "stage1+rgb", parameterisation: str = "eps", mean_networks=(None, None),
                mean_activation: str = "none", **fields) -> BundleConfig:
    """A bundle config whose stage-1 bands follow Eq. 12 on the given grid; ``mean_networks`` (one
    UNetConfig or None per stage) makes stages mean-anchored."""
    from engine.config import StageConfig, UNetConfig, equal_spacing_fwhm

    wavelengths = tuple(float(w) for w in wavelengths_nm)
    fwhm = tuple(float(f) for f in (fwhm_nm if fwhm_nm is not None else equal_spacing_fwhm(wavelengths)))
    unet = unet or UNetConfig()
    config = BundleConfig(
        name=name,
        wavelengths_nm=wavelengths,
        fwhm_nm=fwhm,
        stage1=StageConfig(stage1_band_indices(len(wavelengths)), "rgb", unet, parameterisation=parameterisation,
                           mean_network=mean_networks[0], mean_activation=mean_activation),
        stage2=StageConfig(tuple(range(len(wavelengths))), stage2_condition, stage2_unet or unet,
                           parameterisation=parameterisation, mean_network=mean_networks[1],
                           mean_activation=mean_activation),
        **fields,
    )
    config.validate()
    return config
