"""Tiling arithmetic for raster inference: plain functions on integers and numpy arrays.

A *tile grid* covers a ``(height, width)`` raster with tiles of at most ``tile`` x ``tile`` pixels that
overlap by at least ``overlap`` pixels. Along each axis the grid is the product of one-dimensional
*spans* ``(start, length)``:

- an axis no longer than ``tile`` gets one span covering all of it (the pipeline pads such a tile by
  reflection up to the network's size multiple and crops the result back);
- a longer axis gets ``n = ceil((L - overlap) / (tile - overlap))`` spans, the fewest that can cover it
  with ``tile``-pixel spans, each of the shortest equal length that still covers it with the asked
  overlap, ``ceil((L + (n - 1) overlap) / n)`` (at most ``tile``: a 547 px axis takes three 204 px
  spans rather than three of 288, 30 % less network work); the first starts at 0, the last ends at
  ``L``, and the ones in between are spread evenly, so every overlap is at least ``overlap`` and
  neighbouring overlaps differ by at most one pixel.

*Blend weights* are separable: along an axis, a tile's weight rises as a raised-cosine ramp across
the part it shares with its previous neighbour, is 1 in its interior, and falls across the part it
shares with its next neighbour. At the raster border there is no ramp, so the weight there is 1,
and a ramp never reaches 0 (its samples sit at half-pixel positions). Where two neighbours overlap
by exactly the ramp width the two ramps sum to 1 (a partition of unity); elsewhere the
normalisation does it.

With an ``inset`` (a network whose output at a pixel depends on a bounded window, the local UNet),
a tile's ``inset`` pixels next to a neighbour get weight 0, the neighbour's matching pixels weight
1, and the ramp spans the rest of the shared part: every pixel then takes its value only from tiles
in which its whole context lies, so an overlap of at least ``2 * inset + 1`` joins tiles exactly
(the result equals one pass over the whole raster). A zero-weight pixel always lies inside a
neighbour that has weight 1 there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

import numpy as np

Span = Tuple[int, int]  # (start, length) along one axis


def axis_spans(length: int, tile: int, overlap: int) -> List[Span]:
    """The spans covering ``range(length)``; see the module docstring."""
    if length < 1:
        raise ValueError(f"cannot tile an axis of length {length}")
    if tile < 1:
        raise ValueError(f"tile size must be at least 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must lie in [0, tile), got overlap {overlap} for tile {tile}")
    if length <= tile:
        return [(0, length)]
    stride = tile - overlap
    count = math.ceil((length - overlap) / stride)
    span = math.ceil((length + (count - 1) * overlap) / count)
    last = length - span
    starts = [round(i * last / (count - 1)) for i in range(count)]
    return [(s, span) for s in starts]


@dataclass(frozen=True)
class Tile:
    """One tile: its grid position (``row``, ``col``) and its window in raster pixels."""

    row: int
    col: int
    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_end(self) -> int:
        return self.row_off + self.height

    @property
    def col_end(self) -> int:
        return self.col_off + self.width

    @property
    def slices(self) -> Tuple[slice, slice]:
        return slice(self.row_off, self.row_end), slice(self.col_off, self.col_end)


@dataclass(frozen=True)
class TileGrid:
    """The separable tile grid of a raster: ``row_spans`` x ``col_spans``, row-major order."""

    height: int
    width: int
    row_spans: Tuple[Span, ...]
    col_spans: Tuple[Span, ...]

    @property
    def shape(self) -> Tuple[int, int]:
        return len(self.row_spans), len(self.col_spans)

    def __len__(self) -> int:
        return len(self.row_spans) * len(self.col_spans)

    def tile(self, row: int, col: int) -> Tile:
        (r0, h), (c0, w) = self.row_spans[row], self.col_spans[col]
        return Tile(row, col, r0, c0, h, w)

    def __iter__(self) -> Iterator[Tile]:
        for i in range(len(self.row_spans)):
            for j in range(len(self.col_spans)):
                yield self.tile(i, j)

    def weights(self, tile: Tile, inset: int = 0) -> np.ndarray:
        """The tile's (height, width) float32 blend weights."""
        return tile_weights(self.row_spans, tile.row, self.col_spans, tile.col, inset)


def tile_grid(height: int, width: int, tile: int, overlap: int) -> TileGrid:
    """The grid of tiles covering a ``height`` x ``width`` raster (row-major)."""
    return TileGrid(height, width, tuple(axis_spans(height, tile, overlap)), tuple(axis_spans(width, tile, overlap)))


def raised_cosine_ramp(width: int) -> np.ndarray:
    """``width`` samples rising from near 0 to near 1: 0.5 - 0.5 cos(pi (i + 0.5) / width).

    Strictly between 0 and 1, and ``ramp + ramp[::-1] == 1``.
    """
    if width < 1:
        return np.zeros(0, dtype=np.float64)
    i = np.arange(width, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / width)


def _side(shared: int, inset: int) -> Tuple[int, np.ndarray]:
    """Zero-weight pixels at the tile edge and the rising ramp after them, for a shared part."""
    edge = min(inset, shared // 2)
    return edge, raised_cosine_ramp(shared - 2 * edge)


def axis_weights(spans: Sequence[Span], index: int, inset: int = 0) -> np.ndarray:
    """The 1-D blend weights (float64) of span ``index`` along an axis tiled by ``spans``.

    The ramp on each side spans the overlap with that neighbour, capped at half the tile so the
    rising and the falling ramp never meet; a side without neighbour (the raster border) has none.
    ``inset`` pixels at an edge shared with a neighbour weigh 0 (see the module docstring).
    """
    start, length = spans[index]
    w = np.ones(length, dtype=np.float64)
    half = length // 2
    if index > 0:
        prev_start, prev_len = spans[index - 1]
        edge, ramp = _side(min(max(prev_start + prev_len - start, 0), half), inset)
        w[:edge] = 0.0
        w[edge:edge + ramp.size] *= ramp
    if index + 1 < len(spans):
        next_start = spans[index + 1][0]
        edge, ramp = _side(min(max(start + length - next_start, 0), half), inset)
        w[length - edge:] = 0.0
        w[length - edge - ramp.size:length - edge] *= ramp[::-1]
    return w


def tile_weights(row_spans: Sequence[Span], row: int, col_spans: Sequence[Span], col: int,
                 inset: int = 0) -> np.ndarray:
    """Separable 2-D weights (float32) of tile (row, col)."""
    wr = axis_weights(row_spans, row, inset)
    wc = axis_weights(col_spans, col, inset)
    return np.outer(wr, wc).astype(np.float32)


def axis_segments(spans: Sequence[Span]) -> List[Tuple[int, int, Tuple[int, ...]]]:
    """Split an axis at every span start and end.

    Returns ``(start, stop, covering)`` for each piece, where ``covering`` lists the indices of the
    spans containing it; every position of the axis lies in exactly one piece.
    """
    cuts = sorted({s for s, _ in spans} | {s + n for s, n in spans})
    pieces = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        covering = tuple(i for i, (s, n) in enumerate(spans) if s <= a and b <= s + n)
        if covering:
            pieces.append((a, b, covering))
    return pieces


def reflect_index(positions: np.ndarray, size: int) -> np.ndarray:
    """Indices into ``range(size)`` for positions on an axis mirrored about its first and last
    pixel (numpy's "reflect", repeated as often as needed, so any integer maps into the axis)."""
    positions = np.asarray(positions, dtype=np.int64)
    if size == 1:
        return np.zeros_like(positions)
    period = 2 * (size - 1)
    folded = np.mod(positions, period)
    return np.where(folded < size, folded, period - folded)


def border_margin(overlap: int) -> int:
    """Mirrored pixels added beyond each raster border: half the overlap, the context each tile has
    beyond the middle of a seam (8 px at the default overlap of 16)."""
    return overlap // 2


def padded_size(size: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is at least ``size``."""
    return -(-size // multiple) * multiple


def reflect_pad(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad the last two axes at the bottom and right to (height, width) by reflection.

    Reflection needs the axis to be longer than the pad; for very small tiles the padding repeats
    (``symmetric`` then ``edge``) until the size is reached.
    """
    h, w = array.shape[-2:]
    if (h, w) == (height, width):
        return array
    pad = [(0, 0)] * (array.ndim - 2)
    out = array
    while out.shape[-2] < height or out.shape[-1] < width:
        ph = min(height - out.shape[-2], max(out.shape[-2] - 1, 0))
        pw = min(width - out.shape[-1], max(out.shape[-1] - 1, 0))
        if ph == 0 and pw == 0:
            out = np.pad(out, pad + [(0, height - out.shape[-2]), (0, width - out.shape[-1])], mode="edge")
            break
        out = np.pad(out, pad + [(0, ph), (0, pw)], mode="reflect")
    return out
