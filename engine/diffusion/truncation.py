"""Progressive Dynamic Truncation (Section III-D), as small composable pieces.

At each step a value (the guided noise in the paper, x_t in the authors' code, or the predicted x_0
for DDIM / DPM-Solver++) is clamped to [-tau, tau], where tau is the p(t)-th quantile of its absolute
values but never below 1, and p(t) rises linearly from p_T at t = T to 1.0 at t = 0 (Eq. 20).

The noise has unit variance, so "never below 1" means one std there. x_0 and x_t are in data units,
where a band's std can be far below 1 (a stage-2 residual's is 0.005-0.04), and a floor of 1 would
never let PDT act: given ``band_scale`` (each band's std), they are clamped in units of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch


def pdt_percentile(t: float, num_timesteps: int, p_T: float) -> float:
    """p(t) = p_0 + (p_T - p_0) * t / T with p_0 = 1, for a 0-based timestep t in [0, T-1]."""
    frac = (t + 1) / num_timesteps
    return 1.0 + (p_T - 1.0) * frac


def quantile_abs(values: torch.Tensor, q: float, dims: tuple) -> torch.Tensor:
    """The q-quantile of |values| over ``dims`` with linear interpolation (numpy's default).

    Built from two ``kthvalue`` calls because ``torch.quantile`` refuses inputs above 16M elements.
    """
    keep = [d for d in range(values.ndim) if d not in dims]
    moved = values.abs().permute(*keep, *dims)
    flat = moved.reshape(*moved.shape[: len(keep)], -1).float()
    n = flat.shape[-1]
    position = q * (n - 1)
    lower = int(position)
    upper = min(lower + 1, n - 1)
    frac = position - lower
    lo = torch.kthvalue(flat, lower + 1, dim=-1).values
    hi = lo if upper == lower else torch.kthvalue(flat, upper + 1, dim=-1).values
    result = lo + (hi - lo) * frac
    shape = [values.shape[d] if d in keep else 1 for d in range(values.ndim)]
    return result.reshape(shape)


def percentile_clamp(values: torch.Tensor, q: float, scope: str = "sample", floor: float = 1.0) -> torch.Tensor:
    """Clamp to [-tau, tau], tau = max(q-quantile of |values|, floor).

    scope "sample": one tau per batch item (all bands and pixels, the paper); "pixel": one tau per
    pixel from its spectrum, which makes the clamp independent of tile borders.
    """
    if q >= 1.0:
        tau = values.abs().amax(dim=tuple(range(1, values.ndim)) if scope == "sample" else 1, keepdim=True)
    else:
        dims = tuple(range(1, values.ndim)) if scope == "sample" else (1,)
        tau = quantile_abs(values, q, dims)
    tau = tau.clamp(min=floor)
    return torch.maximum(torch.minimum(values, tau), -tau)


@dataclass(frozen=True)
class ProgressiveTruncation:
    """What to clamp ("eps", "x_t", "x0"), p_T, and the quantile scope; ``p_T=None`` turns it off."""

    target: str
    p_T: Optional[float]
    num_timesteps: int
    scope: str = "sample"
    band_scale: Optional[Tuple[float, ...]] = None  # each band's std: clamp in those units

    def active_for(self, target: str) -> bool:
        return self.p_T is not None and self.target == target

    def __call__(self, values: torch.Tensor, t: int) -> torch.Tensor:
        q = pdt_percentile(t, self.num_timesteps, self.p_T)
        if self.band_scale is None:
            return percentile_clamp(values, q, self.scope)
        scale = torch.tensor(self.band_scale, dtype=values.dtype, device=values.device).view(1, -1, 1, 1)
        return percentile_clamp(values / scale, q, self.scope) * scale


NO_TRUNCATION = ProgressiveTruncation("none", None, 1)
