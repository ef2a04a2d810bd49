"""Blending overlapping tile results into finished pixels, streamed in row-major order.

Each axis is cut at every tile start and end into *pieces*; a *cell* (row piece x column piece) is
covered by a known set of tiles. A cell covered by one tile (a tile's core) is final as soon as that
tile is added and is passed on at once; a cell in an overlap keeps a weighted sum and a weight sum
only until its last covering tile has been added, then is normalised and passed on. Tiles must
arrive in grid order (``engine.raster.reassembly`` sees to it), so open cells are the overlap band
below the current tile row plus the overlap right of the current tile.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np

from engine.raster.windows import Tile, TileGrid, axis_segments


class TileBlender:
    """Blends overlapping tile results and hands on each finished cell exactly once.

    ``add(tile, values, weights, valid)`` takes a tile's (C, h, w) float32 values (or ``None`` for a
    tile that was skipped because it holds no valid pixel), its (h, w) blend weights and validity.
    ``emit(row_off, col_off, values_or_None, valid)`` receives finished rectangles: they are disjoint
    and cover the raster once all tiles have been added. ``None`` means no tile contributed (the
    rectangle lies inside a skipped tile, so it is entirely invalid).
    """

    def __init__(self, grid: TileGrid, channels: int,
                 emit: Callable[[int, int, Optional[np.ndarray], np.ndarray], None]):
        self.grid = grid
        self.channels = channels
        self.emit = emit
        self.row_pieces = axis_segments(grid.row_spans)
        self.col_pieces = axis_segments(grid.col_spans)
        self._rows_of = [[k for k, p in enumerate(self.row_pieces) if i in p[2]] for i in range(len(grid.row_spans))]
        self._cols_of = [[k for k, p in enumerate(self.col_pieces) if j in p[2]] for j in range(len(grid.col_spans))]
        self._open: Dict[Tuple[int, int], list] = {}
        self.peak_open_bytes = 0
        self._open_bytes = 0

    def add(self, tile: Tile, values: Optional[np.ndarray], weights: np.ndarray, valid: np.ndarray) -> None:
        for a in self._rows_of[tile.row]:
            r0, r1, rcover = self.row_pieces[a]
            rs = slice(r0 - tile.row_off, r1 - tile.row_off)
            for b in self._cols_of[tile.col]:
                c0, c1, ccover = self.col_pieces[b]
                cs = slice(c0 - tile.col_off, c1 - tile.col_off)
                total = len(rcover) * len(ccover)
                if total == 1:
                    self.emit(r0, c0, None if values is None else values[:, rs, cs], valid[rs, cs])
                    continue
                entry = self._open.get((a, b))
                if entry is None:
                    entry = [total, None, None]
                    self._open[(a, b)] = entry
                if values is not None:
                    w = weights[rs, cs]
                    if entry[1] is None:
                        entry[1] = values[:, rs, cs] * w
                        entry[2] = w.copy()
                        self._open_bytes += entry[1].nbytes + entry[2].nbytes
                        self.peak_open_bytes = max(self.peak_open_bytes, self._open_bytes)
                    else:
                        entry[1] += values[:, rs, cs] * w
                        entry[2] += w
                entry[0] -= 1
                if entry[0] == 0:
                    del self._open[(a, b)]
                    if entry[1] is None:
                        self.emit(r0, c0, None, valid[rs, cs])
                    else:
                        self._open_bytes -= entry[1].nbytes + entry[2].nbytes
                        # Zero total weight only where every covering tile skipped its own edge
                        # pixels, i.e. inside a tile without valid pixels: those are nodata anyway.
                        np.divide(entry[1], entry[2], out=entry[1], where=entry[2] > 0)
                        self.emit(r0, c0, entry[1], valid[rs, cs])

    @property
    def open_cells(self) -> int:
        return len(self._open)
