"""The tile-size measurement command on the tiny bundle: one table row per tile / overlap pair, with
the tile counts the raster pipeline reports."""

from __future__ import annotations

import pytest

from benchmarks.data import SHARED_DATA

SCENE = SHARED_DATA / "scenes" / "houston2018_casi48.npz"
SRF = SHARED_DATA / "srf" / "camera_nikon5100_npl.csv"

pytestmark = pytest.mark.skipif(not SCENE.exists(), reason=f"shared data not found at {SCENE}")


def test_tile_quality_writes_one_row_per_setting(tiny_bundle, tmp_path):
    from benchmarks.tile_quality import main
    from engine.raster.windows import border_margin, tile_grid

    out = tmp_path / "tiling.md"
    assert main(["--model", str(tiny_bundle), "--scene", str(SCENE), "--rgb", f"srf:{SRF}", "--runs", "64:16,128:0",
                 "--out", str(out)]) == 0
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ")][1:]
    assert [(int(r[0]), int(r[1]), int(r[2])) for r in rows] == [
        (64, 16, len(tile_grid(128 + 2 * border_margin(16), 128 + 2 * border_margin(16), 64, 16))),
        (128, 0, 1),
    ]
    for row in rows:
        rmse, inner, seconds = float(row[3]), float(row[4]), float(row[7])
        assert rmse > 0 and inner > 0 and seconds > 0
    assert rows[0][3] != rows[1][3], "the tiling changes the result"
