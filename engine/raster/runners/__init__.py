"""Tile runners: what runs the model on tiles, behind one interface.

The pipeline reads tiles in grid order and submits them in batches (``TileRunner.submit``); a runner
hands results back through ``completed``, in any order and possibly later (a GPU batcher, a pool of
processes or a cluster would). ``engine.raster.reassembly`` puts them back in grid order for the
blender and bounds how many tiles are in flight.

Adding a runner: one module in this folder with a class built from a ``RunnerContext`` that
implements ``TileRunner``, and one line in ``RUNNERS``; ``InferenceSettings.runner`` picks it by name.
A runner that holds resources (processes, a cluster connection) also has ``close()``, and one that
keeps many tiles busy at once says how many may be in flight (``tiles_in_flight``): the pipeline
asks through ``close_runner`` and ``in_flight_limit``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from engine.errors import InputError
from engine.radiometry import Radiometry
from engine.raster.io import InputInfo
from engine.raster.plan import InferencePlan
from engine.raster.windows import Tile
from engine.settings import Callbacks, InferenceSettings

ProgressFn = Callable[[float], None]  # fraction in [0, 1] of the work of one submission


@dataclass(frozen=True)
class TileJob:
    """One tile to run: ``index`` is its position in grid order, ``origin`` the raster pixel of its
    top left (noise is keyed by it), ``rgb`` its (3, h, w) float32 input with invalid pixels filled."""

    index: int
    tile: Tile
    origin: Tuple[int, int]
    rgb: Optional[np.ndarray]  # None only between a runner and its workers, which then read the window


@dataclass(frozen=True)
class TileResult:
    """A job's (channels, h, w) float32 values in output units, laid out as ``plan.layout`` says
    (the uncertainty channels hold the variance)."""

    index: int
    tile: Tile
    values: np.ndarray


@dataclass(frozen=True)
class RunnerContext:
    """What a runner is built from."""

    cascade: object  # engine.cascade.Cascade (not imported here: this module stays torch-free)
    plan: InferencePlan
    statistics: object  # engine.input_transform.ImageStatistics of this raster (taken once per raster)
    device: str
    callbacks: Callbacks
    settings: Optional[InferenceSettings] = None  # the run's settings (cluster, precision, input)
    source: Optional["InputSource"] = None  # how to read a tile's RGB, for runners whose workers read it
    # The raster's statistics read as a linear stretch, for a plan whose uncertainty holds the guessed
    # decoding (``InferencePlan.uncertainty_has_decoding``; ``engine.raster.pipeline.stretch_statistics``).
    stretch_statistics: object = None


@dataclass(frozen=True)
class InputSource:
    """What reading a tile's RGB takes (``engine.raster.pipeline.read_tile``): the input, how its
    values are decoded, and the per-raster RGB that fills invalid pixels."""

    info: InputInfo
    radiometry: Radiometry
    fill: Tuple[float, float, float]


class TileRunner(Protocol):
    batch: int  # tiles it takes per submission; it may lower it (e.g. after running out of GPU memory)
    network_passes: int  # network evaluations so far, counted per tile

    def submit(self, jobs: Sequence[TileJob], progress: ProgressFn) -> None:
        """Start running ``jobs``; ``progress`` may be called while they run."""

    def completed(self, wait: bool) -> List[TileResult]:
        """The results finished since the last call, in any order; with ``wait`` blocks until at
        least one is finished, unless none is outstanding."""


# THE registry: runner name -> dotted path of its class (built with a RunnerContext). Imported only
# when chosen, so that a runner's dependencies never load for another.
RUNNERS: Dict[str, str] = {
    "in-process": "engine.raster.runners.in_process.InProcessRunner",
    "dask": "engine.raster.runners.dask_runner.DaskRunner",
}


def runner_class(name: str) -> Callable[[RunnerContext], TileRunner]:
    """The class registered as ``name``; ``InputError(parameter="runner")`` for an unknown name."""
    if name not in RUNNERS:
        raise InputError(f"unknown runner '{name}': use {' or '.join(RUNNERS)}", parameter="runner")
    module, _, attribute = RUNNERS[name].rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def in_flight_limit(runner: TileRunner, plan: InferencePlan) -> int:
    """Tiles allowed between reading and blending: the runner's own ``tiles_in_flight`` if it has
    one (a cluster keeps every worker busy), else the plan's."""
    return max(plan.tiles_in_flight, getattr(runner, "tiles_in_flight", 0))


def close_runner(runner: Optional[TileRunner]) -> None:
    """Release what the runner holds (cancels its outstanding work); a runner without ``close`` holds nothing."""
    close = getattr(runner, "close", None)
    if close is not None:
        close()
