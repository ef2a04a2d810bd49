"""Which torch device to run on. A device that cannot be used raises ``InputError(parameter="device")``."""

from __future__ import annotations

from typing import Optional

from engine.errors import InputError


def resolve_device(device: Optional[str]) -> str:
    """"auto" (or None) -> "cuda" when torch sees a GPU else "cpu"; checks "cuda:N" exists."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device).strip().lower()
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"device '{device}' was asked for but torch sees no CUDA GPU: use cpu or auto",
                             parameter="device")
        if ":" in device:
            try:
                index = int(device.split(":", 1)[1])
            except ValueError:
                raise InputError(f"cannot read device '{device}': use auto, cpu, cuda or cuda:N",
                                 parameter="device") from None
            if not 0 <= index < torch.cuda.device_count():
                raise InputError(f"device '{device}' does not exist: torch sees {torch.cuda.device_count()} GPU(s), "
                                 f"cuda:0 to cuda:{torch.cuda.device_count() - 1}", parameter="device")
        return device
    raise InputError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N", parameter="device")
