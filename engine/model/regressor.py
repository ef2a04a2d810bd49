"""A single-shot residual CNN (RGB -> all bands in one pass), the baseline the cascade must beat.

It reuses the UNet's building blocks with a constant embedding, so the comparison with the
diffusion stages is about the method, not about a different network family.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.config import UNetConfig
from engine.model.unet import ConditionalUNet


class SingleShotCNN(nn.Module):
    """The conditional UNet with its noisy-image input fixed at zero and its timestep at 0."""

    def __init__(self, config: UNetConfig, out_channels: int, cond_channels: int):
        super().__init__()
        self.unet = ConditionalUNet(config, out_channels, cond_channels)
        self.out_channels = out_channels

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        b, _, h, w = cond.shape
        blank = cond.new_zeros(b, self.out_channels, h, w)
        return self.unet(blank, torch.zeros(b, dtype=torch.long, device=cond.device), cond)
