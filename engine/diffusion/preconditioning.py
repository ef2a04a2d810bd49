"""A fixed skip path for the noise predictor (in the spirit of EDM's c_skip preconditioning).

For zero-mean data of standard deviation sigma (one value, or one per band) the optimal noise
prediction is linear in x_t:
eps*(x_t) = sqrt(1 - ab) x_t / (ab sigma^2 + 1 - ab). The network adds its correction to that,
so an untrained network already samples data of the right scale and training only has to learn
what is not Gaussian. The loss is still MSE(eps, eps_hat): only the parameterisation changes.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from engine.diffusion.schedule import NoiseSchedule


class GaussianSkip(nn.Module):
    def __init__(self, network: nn.Module, schedule: NoiseSchedule,
                 data_std: Optional[Union[float, Sequence[float]]]):
        super().__init__()
        self.network = network
        self.data_std = data_std
        self.register_buffer("alphas_cumprod", schedule.alphas_cumprod.float(), persistent=False)
        variance = 0.0 if data_std is None else torch.as_tensor(data_std, dtype=torch.float32) ** 2
        self.register_buffer("data_variance", torch.as_tensor(variance).reshape(1, -1, 1, 1), persistent=False)

    @property
    def config(self):
        return self.network.config

    @property
    def out_channels(self) -> int:
        return self.network.out_channels

    def encode_condition(self, cond: torch.Tensor, t: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        return self.network.encode_condition(cond, t)

    def skip(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod.to(x_t.device)[t.long()].reshape(-1, 1, 1, 1)
        return (1 - ab).sqrt() * x_t / (ab * self.data_variance + 1 - ab)

    def forward(self, x_t, t, cond=None, cond_features=None):
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        out = self.network(x_t, t, cond=cond, cond_features=cond_features)
        return out if self.data_std is None else out + self.skip(x_t, t)
