"""Networks. Nothing here knows about noise schedules or sampling."""

from torch import nn

from engine.config import UNetConfig
from engine.model.local_unet import LocalUNet
from engine.model.unet import ConditionalUNet

__all__ = ["ConditionalUNet", "LocalUNet", "make_network"]


def make_network(config: UNetConfig, out_channels: int, cond_channels: int) -> nn.Module:
    """The noise-prediction network a UNet config describes (its constructor validates the config)."""
    network = LocalUNet if config.architecture == "local" else ConditionalUNet
    return network(config, out_channels, cond_channels)
