"""Tile grid and blend weights (engine.raster.windows): properties over many raster shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.raster.windows import (
    axis_segments,
    axis_spans,
    border_margin,
    padded_size,
    raised_cosine_ramp,
    reflect_index,
    reflect_pad,
    tile_grid,
)


@st.composite
def grids(draw):
    tile = draw(st.integers(min_value=4, max_value=64))
    overlap = draw(st.integers(min_value=0, max_value=tile // 2))
    height = draw(st.integers(min_value=1, max_value=200))
    width = draw(st.integers(min_value=1, max_value=200))
    return height, width, tile, overlap


@settings(max_examples=100, deadline=None)
@given(grids())
def test_tiles_lie_inside_and_cover_every_pixel(args):
    height, width, tile, overlap = args
    grid = tile_grid(height, width, tile, overlap)
    cover = np.zeros((height, width), dtype=np.int32)
    for t in grid:
        assert 0 <= t.row_off and t.row_end <= height
        assert 0 <= t.col_off and t.col_end <= width
        assert t.height <= tile and t.width <= tile
        assert (t.height, t.width) == (grid.row_spans[0][1], grid.col_spans[0][1]), "one network size per raster"
        cover[t.slices] += 1
    assert cover.min() >= 1


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2000), st.integers(2, 600), st.data())
def test_axis_spans_overlap_at_least_as_asked_and_no_more_tiles_than_needed(length, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    spans = axis_spans(length, tile, overlap)
    starts = [s for s, _ in spans]
    assert starts == sorted(set(starts)), "spans must be distinct and ordered"
    assert starts[0] == 0 and spans[-1][0] + spans[-1][1] == length
    for (s0, n0), (s1, _) in zip(spans[:-1], spans[1:]):
        assert s0 + n0 - s1 >= overlap
    span = spans[0][1]
    assert span <= tile and all(n == span for _, n in spans)
    if length > tile:
        # one pixel shorter spans could not cover the axis with the asked overlap
        assert len(spans) * (span - 1) - (len(spans) - 1) * overlap < length
        # one tile fewer could not cover the axis with the asked overlap
        assert (len(spans) - 1) * (tile - overlap) + overlap < length
        gaps = np.diff(starts)
        assert gaps.max() - gaps.min() <= 1, "overlaps are spread evenly"


@settings(max_examples=100, deadline=None)
@given(grids(), st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32))
def test_normalised_weights_reproduce_a_constant_field(args, value):
    height, width, tile, overlap = args
    grid = tile_grid(height, width, tile, overlap)
    acc = np.zeros((height, width), dtype=np.float64)
    wsum = np.zeros((height, width), dtype=np.float64)
    for t in grid:
        w = grid.weights(t).astype(np.float64)
        assert w.shape == (t.height, t.width)
        assert w.min() > 0 and w.max() <= 1
        acc[t.slices] += value * w
        wsum[t.slices] += w
    # exact up to float64 rounding (a few ulps)
    np.testing.assert_allclose(acc / wsum, value, rtol=1e-13, atol=0)


@settings(max_examples=100, deadline=None)
@given(grids())
def test_weights_are_one_at_the_raster_border_and_in_tile_cores(args):
    height, width, tile, overlap = args
    grid = tile_grid(height, width, tile, overlap)
    wsum = np.zeros((height, width))
    for t in grid:
        w = grid.weights(t)
        if t.row_off == 0:
            assert np.all(w[0, :][w[0, :] > 0] <= 1)
        wsum[t.slices] += w
    # A pixel covered by a single tile has weight exactly 1: no seam can come from there.
    cover = np.zeros((height, width), dtype=int)
    for t in grid:
        cover[t.slices] += 1
    np.testing.assert_array_equal(wsum[cover == 1], 1.0)
    # Corners of the raster are covered by one tile only.
    assert cover[0, 0] == cover[-1, -1] == cover[0, -1] == cover[-1, 0] == 1


def _within_inset_of_shared_edges(spans, index, inset):
    """Pixels of span ``index`` closer than ``inset`` to an edge it shares with a neighbour (the
    inset shrinks, as the ramp does, where the overlap is narrow)."""
    start, length = spans[index]
    near = np.zeros(length, bool)
    if index > 0:
        prev_start, prev_length = spans[index - 1]
        common = prev_start + prev_length - start
        edge = min(inset, min(max(common, 0), length // 2) // 2)
        near[:edge] = True
    if index + 1 < len(spans):
        common = start + length - spans[index + 1][0]
        edge = min(inset, min(max(common, 0), length // 2) // 2)
        near[length - edge:] = True
    return near


@settings(max_examples=150, deadline=None)
@given(grids(), st.integers(0, 8))
def test_inset_weights_take_each_pixel_only_from_tiles_holding_its_context(args, inset):
    """With an inset, a pixel closer than ``inset`` to a tile edge shared with a neighbour gets no
    weight from that tile, yet every pixel keeps a total weight and a constant field is reproduced."""
    height, width, tile, overlap = args
    grid = tile_grid(height, width, tile, overlap)
    acc = np.zeros((height, width))
    wsum = np.zeros((height, width))
    for t in grid:
        w = grid.weights(t, inset).astype(np.float64)
        assert w.min() >= 0 and w.max() <= 1
        rows_near = _within_inset_of_shared_edges(grid.row_spans, t.row, inset)
        cols_near = _within_inset_of_shared_edges(grid.col_spans, t.col, inset)
        assert np.all(w[rows_near, :] == 0) and np.all(w[:, cols_near] == 0)
        acc[t.slices] += 3.5 * w
        wsum[t.slices] += w
    assert wsum.min() > 0
    np.testing.assert_allclose(acc / wsum, 3.5, rtol=1e-13)


def test_inset_ramps_still_form_a_partition_of_unity():
    grid = tile_grid(64 + 48, 64 + 48, 64, 16)
    w0, w1 = grid.weights(grid.tile(0, 0), 6), grid.weights(grid.tile(0, 1), 6)
    np.testing.assert_allclose(w0[10, 48:] + w1[10, :16], 1.0, atol=1e-6)
    np.testing.assert_array_equal(w1[10, :6], 0.0)
    np.testing.assert_array_equal(w0[10, 58:], 0.0)
    np.testing.assert_array_equal(w0[10, 48:54], 1.0)
    assert np.all(np.diff(w1[10, 6:10]) > 0)


def test_neighbouring_ramps_form_a_partition_of_unity():
    ramp = raised_cosine_ramp(32)
    assert ramp.min() > 0 and ramp.max() < 1
    np.testing.assert_allclose(ramp + ramp[::-1], 1.0, rtol=0, atol=1e-15)
    # A raster exactly two strides long: both overlaps are exactly `overlap` wide.
    grid = tile_grid(64 + 48, 64 + 48, 64, 16)
    assert grid.row_spans == ((0, 64), (48, 64))
    w0, w1 = grid.weights(grid.tile(0, 0)), grid.weights(grid.tile(0, 1))
    np.testing.assert_allclose(w0[10, 48:] + w1[10, :16], 1.0, atol=1e-6)
    assert np.all(np.diff(w1[10, :16]) > 0), "the ramp rises smoothly"


def test_small_raster_is_one_tile_of_its_own_size():
    grid = tile_grid(7, 13, 256, 32)
    assert len(grid) == 1
    t = grid.tile(0, 0)
    assert (t.row_off, t.col_off, t.height, t.width) == (0, 0, 7, 13)
    np.testing.assert_array_equal(grid.weights(t), 1.0)


def test_one_pixel_past_a_tile_adds_a_tile_and_shortens_them_all():
    assert axis_spans(256, 256, 32) == [(0, 256)]
    assert axis_spans(257, 256, 32) == [(0, 145), (112, 145)]  # 145 + 145 - 32 = 258 >= 257
    assert axis_spans(256 + 224, 256, 32) == [(0, 256), (224, 256)]
    spans = axis_spans(256 + 224 + 1, 256, 32)
    assert spans == [(0, 182), (150, 182), (299, 182)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 40)), min_size=1, max_size=6))
def test_axis_segments_partition_the_covered_axis(spans):
    pieces = axis_segments(spans)
    covered = set()
    for s, n in spans:
        covered.update(range(s, s + n))
    seen = []
    for a, b, cover in pieces:
        assert a < b and cover
        seen.extend(range(a, b))
        for i, (s, n) in enumerate(spans):
            assert (i in cover) == (s <= a and b <= s + n)
    assert sorted(seen) == sorted(covered) and len(seen) == len(set(seen))


@pytest.mark.parametrize("shape,target", [((3, 1, 1), (4, 4)), ((2, 5, 3), (8, 8)), ((1, 8, 8), (8, 8)),
                                          ((1, 2, 7), (16, 8))])
def test_reflect_pad_reaches_the_size_and_keeps_the_original(shape, target):
    a = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    p = reflect_pad(a, *target)
    assert p.shape == shape[:1] + target
    np.testing.assert_array_equal(p[:, : shape[1], : shape[2]], a)
    if shape[1] > 1 and target[0] > shape[1]:
        np.testing.assert_array_equal(p[:, shape[1], : shape[2]], a[:, shape[1] - 2])  # reflection


@given(st.integers(1, 40), st.integers(-150, 150))
def test_reflect_index_mirrors_about_both_ends_at_any_distance(size, position):
    index = int(reflect_index(np.array([position]), size)[0])
    assert 0 <= index < size
    assert index == int(reflect_index(np.array([-position]), size)[0])  # mirror about pixel 0
    assert index == int(reflect_index(np.array([2 * (size - 1) - position]), size)[0])  # about the last pixel
    if 0 <= position < size:
        assert index == position


@given(st.integers(2, 40), st.data())
def test_reflect_index_is_numpy_reflect_padding(size, data):
    pad = data.draw(st.integers(0, size - 1))
    axis = np.arange(size) * 10
    np.testing.assert_array_equal(axis[reflect_index(np.arange(-pad, size + pad), size)],
                                  np.pad(axis, pad, mode="reflect"))


def test_border_margin_is_half_the_overlap():
    assert border_margin(16) == 8 and border_margin(33) == 16 and border_margin(0) == 0


def test_padded_size_and_argument_checks():
    assert padded_size(1, 4) == 4 and padded_size(8, 4) == 8 and padded_size(9, 4) == 12
    with pytest.raises(ValueError):
        axis_spans(0, 16, 4)
    with pytest.raises(ValueError):
        axis_spans(10, 16, 16)
