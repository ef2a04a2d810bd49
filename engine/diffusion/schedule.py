"""The forward process q(x_t | x_0) and the closed forms derived from it (Eqs. 1-3, 9, 14)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from engine.config import ScheduleConfig


def make_betas(config: ScheduleConfig) -> np.ndarray:
    T = config.timesteps
    if config.kind == "linear":
        return np.linspace(config.beta_start, config.beta_end, T, dtype=np.float64)
    if config.kind == "cosine":
        # Nichol & Dhariwal (2021), with their offset s = 0.008 and betas capped at 0.999.
        def alpha_bar(u):
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)])
    raise ValueError(f"unknown schedule kind '{config.kind}': use linear or cosine")


def _gather(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    out = values.to(t.device)[t.long()]
    return out.reshape(out.shape + (1,) * (ndim - out.ndim)).float()


class NoiseSchedule:
    """Discrete schedule with timesteps indexed 0..T-1 (the paper's t = 1..T)."""

    def __init__(self, config: ScheduleConfig):
        self.config = config
        betas = make_betas(config)
        alphas_cumprod = np.cumprod(1.0 - betas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        self.num_timesteps = len(betas)
        self.betas = torch.from_numpy(betas)
        self.alphas_cumprod = torch.from_numpy(alphas_cumprod)
        self.alphas_cumprod_prev = torch.from_numpy(alphas_cumprod_prev)
        self.posterior_variance = torch.from_numpy(betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod))
        self.posterior_coef_x0 = torch.from_numpy(betas * np.sqrt(alphas_cumprod_prev) / (1 - alphas_cumprod))
        self.posterior_coef_xt = torch.from_numpy(
            (1 - alphas_cumprod_prev) * np.sqrt(1 - betas) / (1 - alphas_cumprod)
        )

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor):
        ab = _gather(self.alphas_cumprod, t, x0.ndim)
        return ab.sqrt() * x0, (1 - ab).expand_as(x0)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ab = _gather(self.alphas_cumprod, t, x0.ndim)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean and variance of q(x_{t-1} | x_t, x_0), Eq. 9."""
        mean = _gather(self.posterior_coef_x0, t, x_t.ndim) * x0 + _gather(self.posterior_coef_xt, t, x_t.ndim) * x_t
        return mean, _gather(self.posterior_variance, t, x_t.ndim).expand_as(x_t)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ab = _gather(self.alphas_cumprod, t, x_t.ndim)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        ab = _gather(self.alphas_cumprod, t, x_t.ndim)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def alpha_bar(self, t: int) -> float:
        """alpha_bar at an integer timestep; t = -1 means the clean data (alpha_bar = 1)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def spaced_timesteps(self, steps: int, spacing: str = "quadratic") -> list:
        """``steps`` distinct timesteps from T-1 down to 0.

        "uniform" spaces them evenly in t; "quadratic" evenly in sqrt(t), denser near the data
        (DDIM's choice for few steps); "logsnr" evenly in lambda = log(alpha / sigma), the spacing
        DPM-Solver's error analysis favours.
        """
        T = self.num_timesteps
        if steps >= T:
            return list(range(T - 1, -1, -1))
        if steps == 1:
            return [T - 1]
        if spacing == "uniform":
            raw = np.linspace(T - 1, 0, steps)
        elif spacing == "quadratic":
            raw = np.linspace(np.sqrt(T - 1), 0, steps) ** 2
        elif spacing == "logsnr":
            ab = self.alphas_cumprod.numpy()
            lam = 0.5 * np.log(ab / (1 - ab))
            targets = np.linspace(lam[-1], lam[0], steps)
            raw = np.array([np.argmin(np.abs(lam - x)) for x in targets])
        else:
            raise ValueError(f"unknown timestep spacing '{spacing}': use uniform, quadratic or logsnr")
        # Rounding can merge neighbours near t = 0; push them apart so exactly ``steps`` remain.
        timesteps = [int(t) for t in np.round(raw).astype(int)]
        timesteps[-1] = 0
        for i in range(len(timesteps) - 2, -1, -1):
            timesteps[i] = max(timesteps[i], timesteps[i + 1] + 1)
        return timesteps


class TrainingTimesteps:
    """Which timesteps training visits: "uniform" in t (Algorithm 1) or "lognormal" in sigma
    (EDM's P_mean / P_std), with log(sigma / data_std) ~ N(mean, std) snapped to the nearest step.

    Why log-normal: with a linear beta schedule most uniform t have sigma hundreds of times the
    residual's std, where the denoiser can only output the conditional mean; the noise levels at
    which a sample acquires its detail, around the data std, get a small share of the budget.
    """

    KINDS = ("uniform", "lognormal")

    def __init__(self, schedule: NoiseSchedule, kind: str = "uniform", data_std: float = 1.0,
                 log_sigma_mean: float = -0.5, log_sigma_std: float = 1.2):
        if kind not in self.KINDS:
            raise ValueError(f"unknown training noise levels '{kind}': use {' or '.join(self.KINDS)}")
        self.kind = kind
        self.num_timesteps = schedule.num_timesteps
        ab = schedule.alphas_cumprod
        self.log_sigmas = (0.5 * torch.log((1 - ab) / ab)).float()
        self.log_sigma_mean = math.log(data_std) + log_sigma_mean
        self.log_sigma_std = log_sigma_std

    def __call__(self, batch: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if self.kind == "uniform":
            return torch.randint(0, self.num_timesteps, (batch,), generator=generator)
        log_sigma = self.log_sigma_mean + self.log_sigma_std * torch.randn(batch, generator=generator)
        upper = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, self.num_timesteps - 1)
        lower = upper - 1
        nearer_lower = (log_sigma - self.log_sigmas[lower]).abs() <= (self.log_sigmas[upper] - log_sigma).abs()
        return torch.where(nearer_lower, lower, upper)
