"""What samplers exist: one ``SamplerInfo`` line per sampler, and every list of names derived from it.

This module imports nothing beyond the standard library, not even the ``engine`` package's other
modules: the QGIS plugin imports it at load time (as ``scdm.engine.diffusion.sampler_catalog``),
before it knows whether torch exists. The implementations live in ``engine.diffusion.samplers``.

Adding a sampler: write its step class (one file in ``engine/diffusion/samplers/``) and add one line
to ``SAMPLERS``. Validation, the command-line choices, the QGIS enum and the display labels follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# The timestep spacing of a sampler that takes every step of the schedule (``steps`` is then ignored).
FULL_SPACING = "full"


@dataclass(frozen=True)
class SamplerInfo:
    """One sampler's metadata.

    ``spacing``: how its timesteps are chosen: ``FULL_SPACING`` (all T steps) or a spacing of
    ``NoiseSchedule.spaced_timesteps`` ("uniform", "quadratic", "logsnr").
    ``truncation_target``: the quantity PDT clamps in the form the sampler is defined with ("eps",
    "x_t", "x0"), the default when a user switches to it.
    ``description``: one line for help texts and QGIS labels (no parameter names of any front end).
    ``implementation``: dotted path of its step class (a ``engine.diffusion.samplers.SamplerStep``).
    """

    name: str
    display_name: str
    spacing: str
    truncation_target: str
    description: str
    implementation: str

    @property
    def uses_steps(self) -> bool:
        """Whether the caller's step count matters (a sampler over all T steps ignores it)."""
        return self.spacing != FULL_SPACING


# THE registry. Order matters: the QGIS SAMPLER enum lists these after "the model's default" and saved
# models and batch files store its index, so a new sampler goes at the end.
SAMPLERS = (
    SamplerInfo("ddim", "DDIM", "quadratic", "x0",
                "deterministic: with 1-2 steps the conditional-mean estimate, the most accurate",
                "engine.diffusion.samplers.ddim.DDIMStep"),
    SamplerInfo("dpmpp", "DPM-Solver++(2M)", "logsnr", "x0",
                "draws a sample of the distribution: sharper detail, more error",
                "engine.diffusion.samplers.dpmpp.DPMSolverPP2MStep"),
    SamplerInfo("ddpm", "DDPM", FULL_SPACING, "eps",
                "the paper's ancestral sampler over all diffusion steps, slow",
                "engine.diffusion.samplers.ddpm.DDPMStep"),
)


def names() -> tuple:
    """Every sampler name, in registry order."""
    return tuple(sampler.name for sampler in SAMPLERS)


def _valid_names() -> str:
    listed = names()
    return listed[0] if len(listed) == 1 else f"{', '.join(listed[:-1])} or {listed[-1]}"


def info(name: str) -> SamplerInfo:
    """The sampler called ``name``; ValueError naming the valid names otherwise."""
    for sampler in SAMPLERS:
        if sampler.name == name:
            return sampler
    raise ValueError(f"unknown sampler '{name}': use {_valid_names()}")


def label(name: str, steps: int, timesteps: Optional[int] = None) -> str:
    """``"DDIM, 2 steps"``. A sampler over all steps shows ``timesteps`` (the schedule's T) when
    given, else says "all steps"."""
    sampler = info(name)
    if sampler.uses_steps:
        count = int(steps)
    elif timesteps is not None:
        count = int(timesteps)
    else:
        return f"{sampler.display_name}, all steps"
    return f"{sampler.display_name}, {count} step{'s' if count != 1 else ''}"


def help_text() -> str:
    """Every sampler with its description, for a command-line help."""
    return "; ".join(f"{sampler.name}: {sampler.display_name}, {sampler.description}" for sampler in SAMPLERS)
