"""What a denoising network must offer: the contract samplers, preconditioning, training and the
raster pipeline rely on. A new architecture implements it in one file and adds one line to
``engine.model.ARCHITECTURES``; nothing else names architectures.

The network maps a noisy image ``x_t`` (B, out_channels, H, W), its timesteps ``t`` (B,) and an
image condition (B, cond_channels, H + 2m, W + 2m) to a prediction shaped like ``x_t``. What that
prediction is (noise, or EDM's raw output) is the preconditioning's business
(engine.diffusion.preconditioning), not the network's.
"""

from __future__ import annotations

from typing import ClassVar, List, Optional, Protocol, runtime_checkable

import torch
from torch import nn

from engine.config import UNetConfig


@runtime_checkable
class DenoisingNetwork(Protocol):
    """A conditional denoising network (an ``nn.Module``) and what it states about itself."""

    #: The name a ``UNetConfig.architecture`` uses for this class (its key in ``ARCHITECTURES``).
    architecture: ClassVar[str]
    #: One line for model cards and help texts.
    description: ClassVar[str]
    #: The raster pipeline's tile edge for a bundle of these networks when its config names none.
    default_inference_tile: ClassVar[int]

    config: UNetConfig
    out_channels: int
    cond_channels: int
    #: The last layer, zero-initialised so an untrained network predicts nothing; the test fixtures
    #: and benchmarks draw it at random to get a spatially varying output from random weights.
    out: nn.Module

    @property
    def training_margin(self) -> int:
        """Pixels on each side of a training crop that are context only: the loss covers the crop
        less this margin (0 when the network is trained on whole, zero-padded crops)."""

    def encode_condition(self, cond: torch.Tensor, t: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """The condition branch's features, to pass as ``cond_features`` at every sampler step;
        ``t`` is needed only when ``config.condition_uses_time``."""

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None,
                cond_features: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        """The prediction for ``x_t`` at ``t`` from the condition image or its encoded features."""

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None,
                 cond_features: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        """``forward`` through ``nn.Module.__call__``."""

    @classmethod
    def validate_config(cls, config: UNetConfig) -> None:
        """Raise ValueError naming the field and the fix when ``config`` does not fit this class."""

    @classmethod
    def context_radius(cls, config: UNetConfig) -> Optional[int]:
        """Pixels of condition on each side that the output at a pixel depends on; None when it
        depends on the whole tile (then tile size is a quality setting, not only a memory one)."""

    @classmethod
    def size_multiple(cls, config: UNetConfig) -> int:
        """What the input's height and width must be multiples of."""
