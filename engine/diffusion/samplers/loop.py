"""The one sampler loop: every sampler runs through ``sample``, which owns what they share.

The noise predictor comes in as an argument (improved-diffusion style): a callable ``(x_t, t) -> eps``
with the condition bound (``engine.diffusion.guidance``). Noise comes from ``noise(step, shape)``:
step 0 is x_T, step k the noise added after step k. PDT is a ``ProgressiveTruncation`` whose target
says which quantity it clamps.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from engine.config import SamplerConfig
from engine.diffusion import sampler_catalog
from engine.diffusion.samplers.base import SamplerStep
from engine.diffusion.schedule import NoiseSchedule
from engine.diffusion.truncation import NO_TRUNCATION, ProgressiveTruncation
from engine.errors import Cancelled

NoisePredictor = Callable[[torch.Tensor, int], torch.Tensor]
NoiseFn = Callable[[int, tuple], torch.Tensor]
StepCallback = Optional[Callable[[int, int], None]]
CancelCheck = Optional[Callable[[], bool]]


@dataclass(frozen=True)
class SamplingOptions:
    """Which sampler, how many steps (ignored by a sampler over all steps), PDT, DDIM's eta and the
    bound on the predicted x_0 (improved-diffusion's clip_denoised; None: unbounded)."""

    sampler: str
    steps: Optional[int] = None
    truncation: ProgressiveTruncation = NO_TRUNCATION
    eta: float = 0.0
    x0_limit: Optional[float] = None

    def __post_init__(self):
        if sampler_catalog.info(self.sampler).uses_steps and (self.steps is None or self.steps < 1):
            raise ValueError(f"sampler '{self.sampler}' needs at least 1 step, got {self.steps}")

    @classmethod
    def for_stage(cls, config: SamplerConfig, stage: int, num_timesteps: int,
                  x0_limit: Optional[float] = None,
                  data_std: Union[None, float, Sequence[float]] = None) -> "SamplingOptions":
        """A cascade stage's options from the bundle's (or the caller's) sampler config; ``data_std``
        (the stage's per-band std) sets the units PDT clamps x_0 and x_t in."""
        scale = None
        if data_std is not None and config.truncation_target in ("x0", "x_t"):
            scale = (float(data_std),) if isinstance(data_std, (int, float)) else tuple(float(v) for v in data_std)
        truncation = ProgressiveTruncation(config.truncation_target, config.pdt_for_stage(stage), num_timesteps,
                                           config.truncation_scope, scale)
        return cls(config.name, config.steps, truncation, config.eta, x0_limit)


@dataclass(frozen=True)
class SampleResult:
    x0: torch.Tensor
    nfe: int             # predictor calls
    network_passes: int  # network evaluations per item (2 per call with ICMG)


def make_step(name: str, schedule: NoiseSchedule, *, eta: float = 0.0) -> SamplerStep:
    """A fresh step object of the sampler registered as ``name`` (ValueError naming the valid names)."""
    sampler = sampler_catalog.info(name)
    module_name, _, class_name = sampler.implementation.rpartition(".")
    step_class = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(step_class, type) and issubclass(step_class, SamplerStep)):
        raise TypeError(f"sampler '{name}': {sampler.implementation} is not a SamplerStep subclass; "
                        "point its catalogue line at its step class")
    return step_class(schedule, spacing=sampler.spacing, eta=eta)


def sampler_timesteps(name: str, schedule: NoiseSchedule, steps: Optional[int]) -> list:
    """The timesteps at which a sampler evaluates the network."""
    return make_step(name, schedule).timesteps(steps)


class _Counter:
    def __init__(self, predictor: NoisePredictor):
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


def _eps_and_x0(predict: NoisePredictor, schedule: NoiseSchedule, x: torch.Tensor, t: int,
                options: SamplingOptions):
    """Guided noise and the x_0 it implies, each truncated when PDT targets it; x_0 then bounded
    to [-x0_limit, x0_limit] when a limit is given."""
    truncation, x0_limit = options.truncation, options.x0_limit
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    eps = predict(x, t)
    if truncation.active_for("eps"):
        eps = truncation(eps, t)
    x0 = schedule.predict_x0(x, tt, eps)
    changed = False
    if truncation.active_for("x0"):
        x0 = truncation(x0, t)
        changed = True
    if x0_limit is not None:
        x0 = x0.clamp(-x0_limit, x0_limit)
        changed = True
    if changed:
        eps = schedule.predict_eps(x, tt, x0)
    return eps, x0


@torch.no_grad()
def sample(predict: NoisePredictor, schedule: NoiseSchedule, shape: tuple, noise: NoiseFn,
           options: SamplingOptions, *, on_step: StepCallback = None, cancel: CancelCheck = None) -> SampleResult:
    """Run ``options.sampler`` from x_T = noise(0, shape) to x_0; ``on_step(k, total)`` after each step,
    ``cancel()`` checked before each (Cancelled when it returns True)."""
    stepper = make_step(options.sampler, schedule, eta=options.eta)
    timesteps = stepper.timesteps(options.steps)
    counter = _Counter(predict)
    x = noise(0, shape)
    for k, t in enumerate(timesteps):
        _check(cancel)
        t_prev = timesteps[k + 1] if k + 1 < len(timesteps) else -1
        eps, x0 = _eps_and_x0(counter, schedule, x, t, options)
        x = stepper.step(x=x, t=t, t_prev=t_prev, eps=eps, x0=x0, noise=functools.partial(noise, k + 1, shape))
        at = stepper.state_truncation_step(t, t_prev)
        if options.truncation.active_for("x_t") and at is not None:
            x = options.truncation(x, at)
        if on_step is not None:
            on_step(k + 1, len(timesteps))
    return counter.result(x)
