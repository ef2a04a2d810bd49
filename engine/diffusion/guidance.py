"""Image Condition Mixture Guidance (Eq. 19) and the noise predictors samplers call.

A noise predictor is a callable ``(x_t, t) -> eps`` with the condition already bound. The guided
predictor runs the conditional and unconditional passes as one batched network call, and encodes
the condition once per sampling run when the network's condition branch does not depend on t.
"""

from __future__ import annotations

import torch


def icmg_combine(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """eps_c + s * (eps_c - eps_uncond)."""
    return eps_cond + scale * (eps_cond - eps_uncond)


def _timesteps(t, batch: int, device) -> torch.Tensor:
    return torch.full((batch,), int(t), device=device, dtype=torch.long)


class ConditionalPredictor:
    """eps_theta(x_t | c) for a fixed condition c."""

    network_passes_per_call = 1

    def __init__(self, model, cond: torch.Tensor):
        self.model = model
        self.cond = cond
        self.features = None if model.config.condition_uses_time else model.encode_condition(cond)

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        tt = _timesteps(t, x_t.shape[0], x_t.device)
        if self.features is None:
            return self.model(x_t, tt, cond=self.cond)
        return self.model(x_t, tt, cond_features=self.features)


class GuidedPredictor:
    """ICMG: one forward pass on [x_t; x_t] with conditions [c; null], then Eq. 19 (null: the value
    training's condition dropout used, 0 in the paper)."""

    network_passes_per_call = 2

    def __init__(self, model, cond: torch.Tensor, scale: float, null_condition: float = 0.0):
        self.model = model
        self.scale = float(scale)
        self.cond_pair = torch.cat([cond, torch.full_like(cond, null_condition)])
        self.features = None if model.config.condition_uses_time else model.encode_condition(self.cond_pair)

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        pair = torch.cat([x_t, x_t])
        tt = _timesteps(t, pair.shape[0], x_t.device)
        if self.features is None:
            eps = self.model(pair, tt, cond=self.cond_pair)
        else:
            eps = self.model(pair, tt, cond_features=self.features)
        eps_cond, eps_uncond = eps.chunk(2)
        return icmg_combine(eps_cond, eps_uncond, self.scale)


def noise_predictor(model, cond: torch.Tensor, guidance: float, null_condition: float = 0.0):
    """The guided predictor when guidance is non-zero, the plain conditional one otherwise."""
    if guidance == 0:
        return ConditionalPredictor(model, cond)
    return GuidedPredictor(model, cond, guidance, null_condition)
