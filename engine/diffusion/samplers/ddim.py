"""DDIM (Song et al. 2021, Eq. 12) on respaced timesteps; eta = 0 is deterministic."""

from __future__ import annotations

import math

import torch

from engine.diffusion.samplers.base import NoiseDraw, SamplerStep


class DDIMStep(SamplerStep):
    """x_{t_prev} = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z."""

    def step(self, *, x: torch.Tensor, t: int, t_prev: int, eps: torch.Tensor, x0: torch.Tensor,
             noise: NoiseDraw) -> torch.Tensor:
        ab, ab_prev = self.schedule.alpha_bar(t), self.schedule.alpha_bar(t_prev)
        sigma = self.eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        x_prev = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma ** 2, 0.0)) * eps
        if sigma > 0:
            x_prev = x_prev + sigma * noise()
        return x_prev
