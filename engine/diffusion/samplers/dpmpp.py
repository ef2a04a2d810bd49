"""DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): multistep second order in the data prediction,
with the last step taken to sigma = 0."""

from __future__ import annotations

import math

import torch

from engine.diffusion.samplers.base import NoiseDraw, SamplerStep


class DPMSolverPP2MStep(SamplerStep):
    """Keeps the previous step's x_0 and log-SNR step h: the first step is first order, the rest
    second order."""

    def __init__(self, schedule, *, spacing: str, eta: float = 0.0):
        super().__init__(schedule, spacing=spacing, eta=eta)
        self.previous_x0 = None
        self.previous_h = None

    def log_snr(self, t: int) -> float:
        """lambda(t) = log(alpha_t / sigma_t)."""
        ab = self.schedule.alpha_bar(t)
        return 0.5 * math.log(ab / (1 - ab))

    def step(self, *, x: torch.Tensor, t: int, t_prev: int, eps: torch.Tensor, x0: torch.Tensor,
             noise: NoiseDraw) -> torch.Tensor:
        if t_prev < 0:
            # The last step goes to sigma = 0, where the first-order update is exactly x_0.
            return x0
        ab, ab_next = self.schedule.alpha_bar(t), self.schedule.alpha_bar(t_prev)
        h = self.log_snr(t_prev) - self.log_snr(t)
        if self.previous_x0 is None:
            d = x0
        else:
            r = self.previous_h / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * self.previous_x0
        sigma_ratio = math.sqrt((1 - ab_next) / (1 - ab))
        x_next = sigma_ratio * x - math.sqrt(ab_next) * math.expm1(-h) * d
        self.previous_x0, self.previous_h = x0, h
        return x_next
