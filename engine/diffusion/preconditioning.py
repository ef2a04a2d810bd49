"""How a stage's network output becomes the noise prediction samplers use.

``GaussianSkip`` keeps the paper's eps prediction and adds a fixed skip path (in the spirit of
EDM's c_skip); ``EDMPreconditioning`` predicts x_0 through EDM's c_skip / c_out / c_in.

The Gaussian skip path: for zero-mean data of standard deviation sigma (one value, or one per band) the optimal noise
prediction is linear in x_t:
eps*(x_t) = sqrt(1 - ab) x_t / (ab sigma^2 + 1 - ab). The network adds its correction to that,
so an untrained network already samples data of the right scale and training only has to learn
what is not Gaussian. The loss is still MSE(eps, eps_hat): only the parameterisation changes.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from engine.config import unknown_parameterisation
from engine.diffusion.schedule import NoiseSchedule


class _Preconditioned(nn.Module):
    """A network wrapped with the schedule; samplers and guidance still see its config and condition encoder."""

    def __init__(self, network: nn.Module, schedule: NoiseSchedule):
        super().__init__()
        self.network = network
        self.register_buffer("alphas_cumprod", schedule.alphas_cumprod.float(), persistent=False)

    @property
    def config(self):
        return self.network.config

    @property
    def out_channels(self) -> int:
        return self.network.out_channels

    @property
    def training_margin(self) -> int:
        return self.network.training_margin

    def encode_condition(self, cond: torch.Tensor, t: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        return self.network.encode_condition(cond, t)


class GaussianSkip(_Preconditioned):
    parameterisation = "eps"

    def __init__(self, network: nn.Module, schedule: NoiseSchedule,
                 data_std: Optional[Union[float, Sequence[float]]]):
        super().__init__(network, schedule)
        self.data_std = data_std
        variance = 0.0 if data_std is None else torch.as_tensor(data_std, dtype=torch.float32) ** 2
        self.register_buffer("data_variance", torch.as_tensor(variance).reshape(1, -1, 1, 1), persistent=False)

    def skip(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod.to(x_t.device)[t.long()].reshape(-1, 1, 1, 1)
        return (1 - ab).sqrt() * x_t / (ab * self.data_variance + 1 - ab)

    def forward(self, x_t, t, cond=None, cond_features=None):
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        out = self.network(x_t, t, cond=cond, cond_features=cond_features)
        return out if self.data_std is None else out + self.skip(x_t, t)


STD_FLOOR = 1e-3  # smallest per-band data std, as a fraction of the largest


class EDMPreconditioning(_Preconditioned):
    """Karras et al. 2022 (EDM) preconditioning expressed for a VP schedule.

    With sigma = sqrt(1 - ab) / sqrt(ab) and x~ = x_t / sqrt(ab), the denoiser is
    x0_hat = c_skip x~ + c_out F(c_in x~, t, c), c_skip = sd^2 / (sigma^2 + sd^2),
    c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2), sd the per-band data std.
    Why: with eps prediction a network error e becomes an x_0 error of e * sigma, which at high noise
    is two orders of magnitude above the residual's scale, so early sampler steps pull the sample
    away from the conditional mean; here the network's x_0 contribution is bounded by sd at every
    noise level and its target has unit variance. Samplers still receive eps (derived from x0_hat).
    """

    parameterisation = "edm"

    def __init__(self, network: nn.Module, schedule: NoiseSchedule, data_std: Union[float, Sequence[float]]):
        super().__init__(network, schedule)
        if data_std is None:
            raise ValueError("EDM preconditioning needs the data standard deviation (data_std)")
        self.data_std = data_std
        std = torch.as_tensor(data_std, dtype=torch.float32).reshape(1, -1, 1, 1)
        # A band the baseline reproduces exactly (a condition band copied to the output) has a residual
        # std of ~1e-16; c_out that small would turn float32 rounding into huge regression targets.
        std = std.clamp(min=float(std.max()) * STD_FLOOR)
        self.register_buffer("std", std, persistent=False)

    def coefficients(self, t: torch.Tensor):
        """sqrt(ab), sqrt(1 - ab), c_skip, c_out, c_in for timesteps t, shaped to broadcast."""
        ab = self.alphas_cumprod.to(t.device)[t.long()].reshape(-1, 1, 1, 1)
        alpha, noise_scale = ab.sqrt(), (1 - ab).sqrt()
        sigma = noise_scale / alpha
        total = (sigma ** 2 + self.std ** 2).sqrt()
        return alpha, noise_scale, self.std ** 2 / total ** 2, sigma * self.std / total, 1 / total

    def denoise(self, x_t, t, cond=None, cond_features=None):
        """(x0_hat, raw network output F)."""
        alpha, _, c_skip, c_out, c_in = self.coefficients(t)
        scaled = x_t / alpha
        raw = self.network(c_in * scaled, t, cond=cond, cond_features=cond_features)
        return c_skip * scaled + c_out * raw, raw

    def target(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What F should output: (x_0 - c_skip x~) / c_out."""
        alpha, _, c_skip, c_out, _ = self.coefficients(t)
        return (x0 - c_skip * x_t / alpha) / c_out

    def forward(self, x_t, t, cond=None, cond_features=None):
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        x0_hat, _ = self.denoise(x_t, t, cond, cond_features)
        alpha, noise_scale, *_ = self.coefficients(t)
        return (x_t - alpha * x0_hat) / noise_scale


def make_denoiser(network: nn.Module, schedule: NoiseSchedule, parameterisation: str,
                  data_std: Optional[Union[float, Sequence[float]]]) -> nn.Module:
    """The noise predictor a stage samples with: "eps" (the paper's, with the Gaussian skip when
    data_std is known) or "edm"."""
    if parameterisation == "eps":
        return GaussianSkip(network, schedule, data_std)
    if parameterisation == "edm":
        return EDMPreconditioning(network, schedule, data_std)
    raise ValueError(unknown_parameterisation(parameterisation))
