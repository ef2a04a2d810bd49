"""The contract every sampler's step class follows (after diffusers' schedulers: ``set_timesteps`` + ``step``).

A step class holds only its update rule. Everything samplers share (calling the noise predictor,
ICMG, PDT, the x_0 bound, noise by step, progress, cancel) lives once, in ``loop.sample``.
"""

from __future__ import annotations

import abc
from typing import Callable, Optional

import torch

from engine.diffusion.sampler_catalog import FULL_SPACING
from engine.diffusion.schedule import NoiseSchedule

# Draws this step's fresh noise; called at most once per step, and only by an update that adds noise
# (a seeded generator must not advance for noise nobody uses).
NoiseDraw = Callable[[], torch.Tensor]


class SamplerStep(abc.ABC):
    """One sampler's update x_t -> x_{t_prev}. A fresh instance per sampling run: a multistep method
    keeps its history (e.g. DPM-Solver++'s previous x_0) on it.

    ``spacing`` comes from the sampler's catalogue line; ``eta`` is the share of fresh noise per step
    for a sampler that has that freedom (DDIM), and is ignored by the others.
    """

    def __init__(self, schedule: NoiseSchedule, *, spacing: str, eta: float = 0.0):
        self.schedule = schedule
        self.spacing = spacing
        self.eta = eta

    def timesteps(self, steps: Optional[int]) -> list:
        """The timesteps at which the network is evaluated, from T-1 down to 0."""
        if self.spacing == FULL_SPACING:
            return list(range(self.schedule.num_timesteps - 1, -1, -1))
        return self.schedule.spaced_timesteps(steps, self.spacing)

    @abc.abstractmethod
    def step(self, *, x: torch.Tensor, t: int, t_prev: int, eps: torch.Tensor, x0: torch.Tensor,
             noise: NoiseDraw) -> torch.Tensor:
        """x_{t_prev} from x_t and the (guided, truncated) eps and x_0 predicted at t; t_prev = -1
        after the last timestep (the clean data)."""

    def state_truncation_step(self, t: int, t_prev: int) -> Optional[int]:
        """The timestep whose PDT percentile clamps the new state when PDT targets x_t; None leaves
        it alone. By default x_{t_prev} is clamped as the state at t_prev, and the clean result never."""
        return t_prev if t_prev >= 0 else None
