"""The SCDM training objective: MSE(eps, eps_hat) + lambda * (1 - cos(x_0, x0_hat)) (Eqs. 13-15).

With EDM preconditioning the first term is EDM's: MSE between the raw network output and its
unit-variance target, which is the eps MSE reweighted towards high noise levels, where the
conditional mean is learned."""

from __future__ import annotations

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


def diffusion_loss(model, schedule: NoiseSchedule, x0: torch.Tensor, cond: torch.Tensor, *,
                   band_mask: Optional[torch.Tensor] = None, sam_weight: float = 1.0,
                   p_uncond: float = 0.1, sam_offset: float = 0.0, x0_base: Optional[torch.Tensor] = None,
                   generator: Optional[torch.Generator] = None,
                   timesteps: Optional[Callable[..., torch.Tensor]] = None) -> dict:
    """One Monte-Carlo estimate of the loss of Algorithm 1.

    ``band_mask`` (B, C) is 1 where the scene covers a band. ``sam_offset`` is added to both spectra
    before the angle so it is measured in physical units ((x - offset) / scale puts the physical
    zero at -offset / scale). When the network models a residual, ``x0_base`` is the baseline the
    residual is added to, so the angle is still that of the full spectra. The condition is zeroed
    per item with probability ``p_uncond`` (ICMG). ``timesteps(batch, generator)`` draws the noise
    levels (a ``TrainingTimesteps``); uniform over t when not given.
    """
    b = x0.shape[0]
    device = x0.device
    draw = timesteps if timesteps is not None else TrainingTimesteps(schedule)
    t = draw(b, generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    drop = (torch.rand(b, generator=generator) < p_uncond).to(device)
    cond = torch.where(drop[:, None, None, None], torch.zeros_like(cond), cond)
    x_t = schedule.q_sample(x0, t, noise)
    if getattr(model, "parameterisation", "eps") == "edm":
        # EDM's loss weighting: unit-variance regression target for the raw network output.
        x0_hat, raw = model.denoise(x_t, t, cond)
        error = (raw - model.target(x0, x_t, t)) ** 2
    else:
        eps_hat = model(x_t, t, cond)
        error = (eps_hat - noise) ** 2
        x0_hat = schedule.predict_x0(x_t, t, eps_hat)
    if band_mask is None:
        mse = error.mean()
    else:
        m = band_mask[:, :, None, None].expand_as(x0)
        mse = (error * m).sum() / m.sum().clamp(min=1)
    base = sam_offset if x0_base is None else x0_base + sam_offset
    sam = spectral_angle_loss(x0 + base, x0_hat + base, band_mask)
    total = mse + sam_weight * sam
    return {"loss": total, "mse": mse.detach(), "sam": sam.detach()}
