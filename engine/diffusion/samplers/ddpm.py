"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), the paper's sampler, over all T steps."""

from __future__ import annotations

from typing import Optional

import torch

from engine.diffusion.samplers.base import NoiseDraw, SamplerStep


class DDPMStep(SamplerStep):
    """x_{t-1} ~ q(x_{t-1} | x_t, x_0 = x0_hat): the posterior mean plus its standard deviation times
    fresh noise, and the mean alone at t = 0."""

    def step(self, *, x: torch.Tensor, t: int, t_prev: int, eps: torch.Tensor, x0: torch.Tensor,
             noise: NoiseDraw) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        # With x0 recomputed from the (possibly truncated) eps, the posterior mean equals Eq. 16.
        mean, variance = self.schedule.q_posterior(x0, x, tt)
        return mean + variance.sqrt() * noise() if t > 0 else mean

    def state_truncation_step(self, t: int, t_prev: int) -> Optional[int]:
        # The authors' code clamps the state right after step t with step t's percentile, the last too.
        return t
