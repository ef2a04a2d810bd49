"""The SCDM training objective: MSE(eps, eps_hat) + lambda * (1 - cos(x_0, x0_hat)) (Eqs. 13-15).

With EDM preconditioning the first term is EDM's: MSE between the raw network output and its
unit-variance target, which is the eps MSE reweighted towards high noise levels, where the
conditional mean is learned. Both terms skip the bands a training scene does not cover; the squared
error may carry a per-pixel weight (models of real imagery weight a pixel by its brightness, see
engine.imaging_data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from engine.diffusion.schedule import NoiseSchedule, TrainingTimesteps


def spectral_angle_loss(x0: torch.Tensor, x0_hat: torch.Tensor, band_mask: Optional[torch.Tensor] = None,
                        eps: float = 1e-8) -> torch.Tensor:
    """1 - mean cosine between per-pixel spectra (Eq. 14); masked bands take no part."""
    if band_mask is not None:
        m = band_mask[:, :, None, None]
        x0, x0_hat = x0 * m, x0_hat * m
    dot = (x0 * x0_hat).sum(dim=1)
    norms = x0.norm(dim=1) * x0_hat.norm(dim=1)
    return 1 - (dot / (norms + eps)).mean()


def masked_mse(squared_error: torch.Tensor, band_mask: Optional[torch.Tensor] = None,
               pixel_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of (B, C, H, W) squared errors over covered bands (``band_mask`` (B, C)), each pixel
    weighted by ``pixel_weight`` (B, 1, H, W) when given."""
    weight = torch.ones_like(squared_error[:, :1]) if pixel_weight is None else pixel_weight
    if band_mask is not None:
        weight = weight * band_mask[:, :, None, None]
    weight = weight.expand_as(squared_error)
    return (squared_error * weight).sum() / weight.sum().clamp(min=1e-12)


@dataclass(frozen=True)
class LossTerms:
    """How the terms are combined: ``sam_weight`` is lambda; ``sam_offset`` is added to both spectra
    before the angle so it is measured in physical units ((x - offset) / scale puts the physical zero
    at -offset / scale); the condition is replaced by ``null_condition`` per item with probability
    ``p_uncond`` (ICMG's unconditional model)."""

    sam_weight: float = 1.0
    p_uncond: float = 0.1
    sam_offset: float = 0.0
    null_condition: float = 0.0


@dataclass(frozen=True)
class LossBatch:
    """What one loss evaluation sees: the clean target (the residual, when the network models one),
    its condition, the covered bands (B, C), the baseline the residual is added to (so the angle is
    that of the full spectra), and per-pixel weights (B, 1, H, W)."""

    x0: torch.Tensor
    cond: torch.Tensor
    band_mask: Optional[torch.Tensor] = None
    x0_base: Optional[torch.Tensor] = None
    pixel_weight: Optional[torch.Tensor] = None


def drop_condition(cond: torch.Tensor, p_uncond: float, null_value: float, generator) -> torch.Tensor:
    """The condition with each item replaced by the null condition with probability ``p_uncond``."""
    drop = (torch.rand(cond.shape[0], generator=generator) < p_uncond).to(cond.device)
    return torch.where(drop[:, None, None, None], torch.full_like(cond, null_value), cond)


def diffusion_loss(model, schedule: NoiseSchedule, batch: LossBatch, terms: LossTerms = LossTerms(),
                   generator: Optional[torch.Generator] = None,
                   timesteps: Optional[Callable[..., torch.Tensor]] = None) -> dict:
    """One Monte-Carlo estimate of the loss of Algorithm 1. ``timesteps(batch, generator)`` draws the
    noise levels (a ``TrainingTimesteps``); uniform over t when not given."""
    x0 = batch.x0
    draw = timesteps if timesteps is not None else TrainingTimesteps(schedule)
    t = draw(x0.shape[0], generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    cond = drop_condition(batch.cond, terms.p_uncond, terms.null_condition, generator)
    x_t = schedule.q_sample(x0, t, noise)
    if getattr(model, "parameterisation", "eps") == "edm":
        # EDM's loss weighting: unit-variance regression target for the raw network output.
        x0_hat, raw = model.denoise(x_t, t, cond)
        error = (raw - model.target(x0, x_t, t)) ** 2
    else:
        eps_hat = model(x_t, t, cond)
        error = (eps_hat - noise) ** 2
        x0_hat = schedule.predict_x0(x_t, t, eps_hat)
    mse = masked_mse(error, batch.band_mask, batch.pixel_weight)
    base = terms.sam_offset if batch.x0_base is None else batch.x0_base + terms.sam_offset
    sam = spectral_angle_loss(x0 + base, x0_hat + base, batch.band_mask)
    total = mse + terms.sam_weight * sam
    return {"loss": total, "mse": mse.detach(), "sam": sam.detach()}
