"""Numeric precision of the network calls: float32, or mixed precision under ``torch.autocast``.

``InferenceSettings.precision`` chooses: "fp32" (the default) changes nothing, so outputs stay
byte-identical to earlier versions; "bf16" and "fp16" run convolutions and matrix products in
bfloat16 / float16 while the sampler's own arithmetic stays float32 (autocast leaves elementwise
operations in their input type, and each runner converts results to float32). Mixed precision also
puts the networks' weights in channels-last memory order, where it helps: cuDNN's tensor-core
convolutions want NHWC, and on a CPU without native bfloat16, bfloat16 convolutions in NCHW measured
12 times slower than in NHWC (still ten times slower than float32 there: mixed precision is for GPUs).
float16 needs a CUDA device (its narrow range needs the GPU's kernels to be safe); the differences
against float32 are measured by ``python -m benchmarks.scale_out precision`` (docs/scale-out.md).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager

import torch

from engine.errors import InputError
from engine.settings import PRECISIONS

FULL = PRECISIONS[0]
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: str) -> None:
    """Refuse a precision the device cannot run (``InputError(parameter="precision")``)."""
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise InputError(f"fp16 needs a CUDA device, not {device}: use bf16 or fp32", parameter="precision")


def precision_scope(cascade, device: str, precision: str) -> ContextManager:
    """The context the cascade's networks run in for ``precision`` on ``device``; for mixed
    precision it also moves the networks' weights to channels-last order (once: it is idempotent)."""
    if precision == FULL:
        return nullcontext()
    check_precision(precision, device)
    for network in cascade.networks().values():
        network.to(memory_format=torch.channels_last)
    return torch.autocast(torch.device(device).type, dtype=AUTOCAST_DTYPES[precision])


def network_precision(context) -> ContextManager:
    """``precision_scope`` for a runner's ``RunnerContext`` (float32 when it carries no settings)."""
    precision = context.settings.precision if context.settings is not None else FULL
    return precision_scope(context.cascade, context.device, precision)
