"""Networks, by architecture name. Nothing here knows about noise schedules or sampling.

Adding an architecture: a module with a class that implements ``DenoisingNetwork``
(engine/model/protocol.py) and one line in ``ARCHITECTURES``. Configs name it in
``UNetConfig.architecture``; training, bundles and the raster pipeline ask the class for the rest.
"""

from typing import Dict, Type

from engine.config import UNetConfig, choice_message
from engine.model.local_unet import LocalUNet
from engine.model.pixel_mlp import PixelMLP
from engine.model.protocol import DenoisingNetwork
from engine.model.unet import ConditionalUNet

__all__ = ["ARCHITECTURES", "ConditionalUNet", "DenoisingNetwork", "LocalUNet", "PixelMLP", "make_network",
           "network_class"]

ARCHITECTURES: Dict[str, Type[DenoisingNetwork]] = {
    "multiscale": ConditionalUNet,
    "local": LocalUNet,
    "pixel_mlp": PixelMLP,
}


def network_class(architecture: str) -> Type[DenoisingNetwork]:
    """The class registered under ``architecture`` (ValueError naming the registered ones otherwise)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(choice_message("UNet architecture", architecture, sorted(ARCHITECTURES)))
    return ARCHITECTURES[architecture]


def make_network(config: UNetConfig, out_channels: int, cond_channels: int) -> DenoisingNetwork:
    """The network a UNet config describes (its constructor validates the config)."""
    return network_class(config.architecture)(config, out_channels, cond_channels)
