"""A single-shot regressor (RGB -> all bands in one pass), the baseline the cascade must beat.

It is a stage's own network with a constant input, so the comparison with the diffusion stages is
about the method, not about a different network family.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.config import UNetConfig
from engine.model import make_network


class SingleShotCNN(nn.Module):
    """The conditional UNet with its noisy-image input fixed at zero and its timestep at 0."""

    def __init__(self, config: UNetConfig, out_channels: int, cond_channels: int):
        super().__init__()
        self.unet = make_network(config, out_channels, cond_channels)
        self.out_channels = out_channels

    @property
    def training_margin(self) -> int:
        return self.unet.training_margin

    def forward(self, cond: torch.Tensor, margin: int = 0) -> torch.Tensor:
        """The estimate for ``cond`` less ``margin`` pixels of context on every side."""
        b, _, h, w = cond.shape
        blank = cond.new_zeros(b, self.out_channels, h - 2 * margin, w - 2 * margin)
        return self.unet(blank, torch.zeros(b, dtype=torch.long, device=cond.device), cond)
