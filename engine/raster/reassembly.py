"""Between the runner and the blender: tile results back in grid order, with few tiles in flight.

``TileBlender`` needs tiles in grid (row-major) order: a cell in an overlap is final once its last
covering tile has been added, and it keeps only the overlap band below the current tile row open. A
runner may finish tiles in any order, so ``Reassembly`` holds the results that arrive early until
every tile before them has arrived, then delivers them in order. It never lets more than ``limit``
tiles be in flight (submitted or skipped, not yet delivered): before a submission that would pass
the limit it waits for the runner. Memory held here is therefore at most ``limit`` tile results.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from engine.raster.runners import ProgressFn, TileJob, TileRunner
from engine.raster.windows import Tile

# deliver(tile, values or None for a skipped tile, validity mask)
DeliverFn = Callable[[Tile, Optional[np.ndarray], np.ndarray], None]


class Reassembly:
    """Submits jobs to a runner and delivers their results in grid order; see the module docstring."""

    def __init__(self, runner: TileRunner, deliver: DeliverFn, limit: int):
        if limit < 1:
            raise ValueError(f"at least one tile must be allowed in flight, got {limit}")
        self.runner, self.deliver, self.limit = runner, deliver, limit
        self._next = 0  # grid index of the next tile to deliver
        self._valid: Dict[int, np.ndarray] = {}  # in flight: grid index -> validity mask
        # finished (out of order, or skipped), waiting for earlier tiles: grid index -> (tile, values)
        self._arrived: Dict[int, Tuple[Tile, Optional[np.ndarray]]] = {}
        self._outstanding = 0  # submitted to the runner, not yet returned by it
        self.peak_in_flight = 0

    @property
    def in_flight(self) -> int:
        return len(self._valid)

    def submit(self, jobs: Sequence[TileJob], valid: Sequence[np.ndarray], progress: ProgressFn) -> None:
        """Run ``jobs`` (``valid``: their validity masks), first waiting for room if needed."""
        self._make_room(len(jobs))
        for job, mask in zip(jobs, valid):
            self._valid[job.index] = mask
        self._outstanding += len(jobs)
        self.runner.submit(jobs, progress)
        self._collect(wait=False)

    def skip(self, index: int, tile: Tile, valid: np.ndarray) -> None:
        """A tile without valid pixels: delivered without values, after the tiles before it."""
        self._make_room(1)
        self._valid[index] = valid
        self._arrived[index] = (tile, None)
        self._release()

    def drain(self) -> None:
        """Wait for every outstanding tile and deliver all."""
        while self._outstanding:
            self._collect(wait=True)
        self._release()

    def _make_room(self, count: int) -> None:
        if count > self.limit:
            raise ValueError(f"{count} tiles submitted at once, more than the {self.limit} allowed in flight")
        while self.in_flight + count > self.limit and self._outstanding:
            self._collect(wait=True)
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight + count)

    def _collect(self, wait: bool) -> None:
        results = self.runner.completed(wait)
        self._outstanding -= len(results)
        for result in results:
            self._arrived[result.index] = (result.tile, result.values)
        self._release()

    def _release(self) -> None:
        while self._next in self._arrived:
            tile, values = self._arrived.pop(self._next)
            self.deliver(tile, values, self._valid.pop(self._next))
            self._next += 1
