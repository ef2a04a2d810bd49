"""Networks. Nothing here knows about noise schedules or sampling."""

from engine.model.unet import ConditionalUNet

__all__ = ["ConditionalUNet"]
