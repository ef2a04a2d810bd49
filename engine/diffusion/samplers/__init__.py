"""Samplers: one step class per file (``ddpm``, ``ddim``, ``dpmpp``), all run by one loop (``loop.sample``).

Which samplers exist, and their names, spacing and default truncation target, is the catalogue's
business (``engine.diffusion.sampler_catalog``, torch-free). Adding a sampler: a new file here with a
``SamplerStep`` subclass and one line in ``sampler_catalog.SAMPLERS``.
"""

from engine.diffusion.samplers.base import NoiseDraw, SamplerStep
from engine.diffusion.samplers.loop import (
    SampleResult,
    SamplingOptions,
    make_step,
    sample,
    sampler_timesteps,
)

__all__ = ["NoiseDraw", "SampleResult", "SamplerStep", "SamplingOptions", "make_step", "sample", "sampler_timesteps"]
