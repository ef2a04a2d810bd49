"""Samplers. Each takes the noise predictor and the schedule as arguments (as in improved-diffusion)
and reports how many times it called the predictor.

- ``ddpm_sample``: the paper's ancestral sampler (Algorithm 2) over all T steps.
- ``ddim_sample``: DDIM on respaced timesteps (eta = 0 is deterministic).
- ``dpmpp_2m_sample``: DPM-Solver++(2M), Lu et al. 2022, multistep second order in the data
  prediction, with the last step taken to sigma = 0.

Noise comes from ``noise(step, shape)``: step 0 is x_T, step k the noise added after step k.
Truncation is a ``ProgressiveTruncation``; its target says which quantity it clamps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from engine.diffusion.schedule import NoiseSchedule
from engine.diffusion.truncation import NO_TRUNCATION, ProgressiveTruncation
from engine.errors import Cancelled

NoiseFn = Callable[[int, tuple], torch.Tensor]
StepCallback = Optional[Callable[[int, int], None]]
CancelCheck = Optional[Callable[[], bool]]


SPACING = {"ddim": "quadratic", "dpmpp": "logsnr"}


def sampler_timesteps(name: str, schedule: NoiseSchedule, steps: int) -> list:
    """The timesteps at which a sampler evaluates the network."""
    if name == "ddpm":
        return list(range(schedule.num_timesteps - 1, -1, -1))
    return schedule.spaced_timesteps(steps, SPACING[name])


@dataclass
class SampleResult:
    x0: torch.Tensor
    nfe: int            # predictor calls
    network_passes: int  # network evaluations per item (2 per call with ICMG)


class _Counter:
    def __init__(self, predictor):
        self.predictor = predictor
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        return self.predictor(x, t)

    def result(self, x0: torch.Tensor) -> SampleResult:
        passes = getattr(self.predictor, "network_passes_per_call", 1)
        return SampleResult(x0, self.calls, self.calls * passes)


def _check(cancel: CancelCheck):
    if cancel is not None and cancel():
        raise Cancelled("sampling was cancelled")


def _eps_and_x0(predict, schedule: NoiseSchedule, x: torch.Tensor, t: int, trunc: ProgressiveTruncation,
                x0_limit: Optional[float] = None):
    """Guided noise and the x_0 it implies, each truncated when PDT targets it; x_0 then bounded
    to [-x0_limit, x0_limit] when a limit is given (improved-diffusion's clip_denoised)."""
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    eps = predict(x, t)
    if trunc.active_for("eps"):
        eps = trunc(eps, t)
    x0 = schedule.predict_x0(x, tt, eps)
    changed = False
    if trunc.active_for("x0"):
        x0 = trunc(x0, t)
        changed = True
    if x0_limit is not None:
        x0 = x0.clamp(-x0_limit, x0_limit)
        changed = True
    if changed:
        eps = schedule.predict_eps(x, tt, x0)
    return eps, x0


@torch.no_grad()
def ddpm_sample(predict, schedule: NoiseSchedule, shape: tuple, noise: NoiseFn,
                truncation: ProgressiveTruncation = NO_TRUNCATION,
                on_step: StepCallback = None, cancel: CancelCheck = None,
                x0_limit: Optional[float] = None) -> SampleResult:
    counter = _Counter(predict)
    x = noise(0, shape)
    T = schedule.num_timesteps
    for k, t in enumerate(range(T - 1, -1, -1)):
        _check(cancel)
        tt = torch.full((shape[0],), t, device=x.device, dtype=torch.long)
        eps, x0 = _eps_and_x0(counter, schedule, x, t, truncation, x0_limit)
        # With x0 recomputed from the (possibly truncated) eps, the posterior mean equals Eq. 16.
        mean, variance = schedule.q_posterior(x0, x, tt)
        x = mean + variance.sqrt() * noise(k + 1, shape) if t > 0 else mean
        if truncation.active_for("x_t"):
            x = truncation(x, t)
        if on_step is not None:
            on_step(k + 1, T)
    return counter.result(x)


@torch.no_grad()
def ddim_sample(predict, schedule: NoiseSchedule, shape: tuple, noise: NoiseFn, steps: int,
                truncation: ProgressiveTruncation = NO_TRUNCATION, eta: float = 0.0,
                on_step: StepCallback = None, cancel: CancelCheck = None,
                x0_limit: Optional[float] = None) -> SampleResult:
    counter = _Counter(predict)
    timesteps = schedule.spaced_timesteps(steps, SPACING["ddim"])
    x = noise(0, shape)
    for k, t in enumerate(timesteps):
        _check(cancel)
        t_prev = timesteps[k + 1] if k + 1 < len(timesteps) else -1
        eps, x0 = _eps_and_x0(counter, schedule, x, t, truncation, x0_limit)
        ab, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma ** 2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * noise(k + 1, shape)
        if truncation.active_for("x_t") and t_prev >= 0:
            x = truncation(x, t_prev)
        if on_step is not None:
            on_step(k + 1, len(timesteps))
    return counter.result(x)


@torch.no_grad()
def dpmpp_2m_sample(predict, schedule: NoiseSchedule, shape: tuple, noise: NoiseFn, steps: int,
                    truncation: ProgressiveTruncation = NO_TRUNCATION,
                    on_step: StepCallback = None, cancel: CancelCheck = None,
                    x0_limit: Optional[float] = None) -> SampleResult:
    counter = _Counter(predict)
    timesteps = schedule.spaced_timesteps(steps, SPACING["dpmpp"])

    def lam(t: int) -> float:
        ab = schedule.alpha_bar(t)
        return 0.5 * math.log(ab / (1 - ab))

    x = noise(0, shape)
    previous_x0, previous_h = None, None
    for k, t in enumerate(timesteps):
        _check(cancel)
        _, x0 = _eps_and_x0(counter, schedule, x, t, truncation, x0_limit)
        if k + 1 == len(timesteps):
            # The last step goes to sigma = 0, where the first-order update is exactly x_0.
            x = x0
        else:
            t_next = timesteps[k + 1]
            ab, ab_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
            h = lam(t_next) - lam(t)
            if previous_x0 is None:
                d = x0
            else:
                r = previous_h / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
            sigma_ratio = math.sqrt((1 - ab_next) / (1 - ab))
            x = sigma_ratio * x - math.sqrt(ab_next) * math.expm1(-h) * d
            if truncation.active_for("x_t"):
                x = truncation(x, t_next)
            previous_x0, previous_h = x0, h
        if on_step is not None:
            on_step(k + 1, len(timesteps))
    return counter.result(x)


def run_sampler(name: str, predict, schedule: NoiseSchedule, shape: tuple, noise: NoiseFn, steps: int,
                truncation: ProgressiveTruncation = NO_TRUNCATION, eta: float = 0.0,
                on_step: StepCallback = None, cancel: CancelCheck = None,
                x0_limit: Optional[float] = None) -> SampleResult:
    """Dispatch by name; DDPM always runs the schedule's full T steps."""
    if name == "ddpm":
        return ddpm_sample(predict, schedule, shape, noise, truncation, on_step, cancel, x0_limit)
    if name == "ddim":
        return ddim_sample(predict, schedule, shape, noise, steps, truncation, eta, on_step, cancel, x0_limit)
    if name == "dpmpp":
        return dpmpp_2m_sample(predict, schedule, shape, noise, steps, truncation, on_step, cancel, x0_limit)
    raise ValueError(f"unknown sampler '{name}': use ddpm, ddim or dpmpp")
