"""Raster inference end to end (engine.raster.pipeline) on real EnMAP GeoTIFFs and rasters made from them.

Every run uses the session's tiny random-weight bundle (48 bands, 12 stage-1 bands), tiles of 32
pixels and one or two DDIM steps, so the whole file stays within a few seconds per test.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from engine.errors import Cancelled, InputError
from engine.raster.blending import TileBlender
from engine.raster.pipeline import infer_raster
from engine.raster.windows import border_margin, tile_grid

ENMAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geotiff" / "enmap_potsdam"
MOSAIC = ENMAP / "enmap_potsdam_tiles_mosaic.tif"
TILE = ENMAP / "enmap_potsdam_tile_64_0.tif"
RGB = (44, 28, 9)  # 641, 551, 459 nm

pytestmark = pytest.mark.skipif(not MOSAIC.exists(), reason=f"shared data not found at {ENMAP}")


@pytest.fixture(scope="module")
def cascade(tiny_bundle):
    from engine.bundle import load_bundle

    return load_bundle(tiny_bundle, device="cpu")


def run(cascade, src, dst, **kw):
    options = dict(model=cascade, bands=RGB, tile=32, overlap=8, sampler="ddim", steps=1, guidance=0.0,
                   seed=3, device="cpu", batch=4)
    options.update(kw)
    return infer_raster(src, dst, **options)


def read(path):
    with rasterio.open(path) as ds:
        return ds.read()


def mosaic_crop(rows, cols) -> tuple:
    with rasterio.open(MOSAIC) as src:
        window = (rows, cols)
        return src.read(RGB, window=window), src.window_transform(window), src.crs, src.nodata


def write_rgb(path, data, transform, crs, nodata, **extra):
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=3, dtype=str(data.dtype),
                   crs=crs, transform=transform, nodata=nodata)
    profile.update(extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def listing(folder: Path):
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------------------------
# georeference, size, nodata, metadata


def test_real_enmap_tile_keeps_georeference_size_nodata_and_gets_spectral_metadata(cascade, tmp_path):
    out = tmp_path / "hsi.tif"
    report = run(cascade, TILE, out, seed=11, tile=48)  # 32 px + 2 x 4 mirrored: one tile
    assert listing(tmp_path) == ["hsi.qml", "hsi.tif"], "no partial or scratch file is left, only the style"
    with rasterio.open(TILE) as src, rasterio.open(out) as ds:
        assert (ds.width, ds.height) == (src.width, src.height) == (32, 32)
        assert ds.crs == src.crs and ds.transform == src.transform and ds.nodata == src.nodata == -32768
        assert ds.count == 48 and set(ds.dtypes) == {"float32"}
        assert ds.profile["tiled"] and ds.compression.name.lower() == "zstd"
        tags = ds.tags()
        assert tags["SCDM_MODEL"] == cascade.config.name and tags["SCDM_SAMPLER"] == "ddim"
        assert tags["SCDM_STEPS"] == "1" and float(tags["SCDM_GUIDANCE"]) == 0.0 and tags["SCDM_SEED"] == "11"
        assert tags["SCDM_INPUT"] == str(TILE) and tags["SCDM_INPUT_BANDS"] == "44,28,9"
        data = ds.read()
    assert np.isfinite(data).all() and not (data == -32768).any()
    assert data.std() > 0
    assert report.tiles == report.tiles_run == 1 and report.tiles_skipped == 0

    wl, fwhm = cascade.config.wavelengths_nm, cascade.config.fwhm_nm
    gdalinfo = shutil.which("gdalinfo")
    if gdalinfo is None:
        pytest.skip("gdalinfo not installed")
    doc = json.loads(subprocess.run([gdalinfo, "-json", "-mdd", "all", str(out)], check=True,
                                    capture_output=True, text=True).stdout)
    band = doc["bands"][11]
    assert band["description"] == f"Band 12 ({wl[11]:.1f} nm)"
    assert float(band["metadata"][""]["wavelength"]) == pytest.approx(wl[11])
    assert band["metadata"][""]["wavelength_units"] == "Nanometers"
    assert float(band["metadata"][""]["fwhm"]) == pytest.approx(fwhm[11])
    assert float(band["metadata"]["IMAGERY"]["CENTRAL_WAVELENGTH_UM"]) == pytest.approx(wl[11] / 1000)
    assert float(band["metadata"]["IMAGERY"]["FWHM_UM"]) == pytest.approx(fwhm[11] / 1000)
    envi = doc["metadata"]["ENVI"]["wavelength"].strip("{}").split(",")
    assert [float(v) for v in envi] == pytest.approx(list(wl))
    assert band["noDataValue"] == -32768


def test_rotated_geotransform_and_missing_crs_are_kept(cascade, tmp_path):
    data, transform, crs, nodata = mosaic_crop((0, 20), (0, 24))
    rotated = Affine(25.0, 8.0, 364095.0, 6.0, -25.0, 5809965.0)  # rotation and shear terms
    src = write_rgb(tmp_path / "rot.tif", data, rotated, crs, nodata)
    run(cascade, src, tmp_path / "rot_out.tif", bands=(1, 2, 3))
    with rasterio.open(tmp_path / "rot_out.tif") as ds:
        assert ds.transform == rotated and ds.crs == crs and (ds.height, ds.width) == (20, 24)

    src = write_rgb(tmp_path / "nocrs.tif", data, transform, None, nodata)
    run(cascade, src, tmp_path / "nocrs_out.tif", bands=(1, 2, 3))
    with rasterio.open(tmp_path / "nocrs_out.tif") as ds:
        assert ds.crs is None and ds.transform == transform and ds.nodata == nodata


@pytest.mark.parametrize("height,width,dtype", [
    (1, 1, "uint8"), (7, 13, "uint16"), (33, 65, "float32"), (17, 9, "float64"), (13, 7, "int16"),
])
def test_sizes_and_input_types(cascade, tmp_path, height, width, dtype):
    data, transform, crs, _ = mosaic_crop((0, height), (0, width))
    scale = {"uint8": 1 / 16, "uint16": 1.0, "int16": 1.0, "float32": 1e-4, "float64": 1e-4}[dtype]
    src = write_rgb(tmp_path / "in.tif", (data * scale).astype(dtype), transform, crs, None)
    out = tmp_path / "out.tif"
    report = run(cascade, src, out, bands=(1, 2, 3))
    margin = border_margin(8)
    grid = tile_grid(height + 2 * margin, width + 2 * margin, 32, 8)
    assert report.tiles == len(grid)
    if (height, width) == (33, 65):  # with the mirrored margin, past one tile in both directions
        assert grid.shape == (2, 3)
    with rasterio.open(out) as ds:
        assert (ds.height, ds.width, ds.count) == (height, width, 48)
        assert ds.transform == transform
        values = ds.read()
        if np.issubdtype(np.dtype(dtype), np.integer):
            assert ds.nodata is None  # an integer raster without nodata cannot mark pixels invalid
        else:
            assert math.isnan(ds.nodata)
    assert np.isfinite(values).all()


def test_nodata_is_written_and_empty_tiles_are_skipped(cascade, tmp_path):
    data, transform, crs, nodata = mosaic_crop((48, 144), (0, 64))  # 96 x 64, more than half nodata
    src = write_rgb(tmp_path / "in.tif", data, transform, crs, nodata)
    invalid = np.any(data == nodata, axis=0)
    assert 0.3 < invalid.mean() < 0.9
    report = run(cascade, src, tmp_path / "out.tif", bands=(1, 2, 3))
    out = read(tmp_path / "out.tif")
    assert np.all(out[:, invalid] == nodata)
    assert np.isfinite(out[:, ~invalid]).all() and not np.any(out[:, ~invalid] == nodata)
    assert report.tiles_skipped >= 3 and report.tiles_run + report.tiles_skipped == report.tiles
    passes_per_tile = 2  # one DDIM step without guidance, two stages
    assert report.network_passes == passes_per_tile * report.tiles_run


# ----------------------------------------------------------------------------------------------
# determinism, samples, seams


def test_same_seed_gives_the_same_output_whatever_the_batch(cascade, tmp_path):
    data, transform, crs, nodata = mosaic_crop((0, 24), (0, 56))
    src = write_rgb(tmp_path / "in.tif", data, transform, crs, nodata)
    a = read(run(cascade, src, tmp_path / "a.tif", bands=(1, 2, 3), seed=5).output_path)
    b = read(run(cascade, src, tmp_path / "b.tif", bands=(1, 2, 3), seed=5).output_path)
    c = read(run(cascade, src, tmp_path / "c.tif", bands=(1, 2, 3), seed=5, batch=1).output_path)
    d = read(run(cascade, src, tmp_path / "d.tif", bands=(1, 2, 3), seed=6).output_path)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-3 * float(np.abs(a).mean()))
    assert np.abs(a - d).mean() > 0.1 * a.std()


def test_samples_give_mean_stage1_and_standard_deviation(cascade, tmp_path):
    kw = dict(steps=2, tile=48, bands=RGB)
    one = run(cascade, TILE, tmp_path / "s7.tif", seed=7, stage1_output=tmp_path / "s7_1.tif", **kw)
    run(cascade, TILE, tmp_path / "s8.tif", seed=8, stage1_output=tmp_path / "s8_1.tif", **kw)
    report = run(cascade, TILE, tmp_path / "mean.tif", seed=7, samples=2, stage1_output=tmp_path / "mean_1.tif",
                 uncertainty_output=tmp_path / "std.tif", **kw)
    assert one.tiles == 1  # one tile: no blending between the two runs' statistics
    a, b = read(tmp_path / "s7.tif"), read(tmp_path / "s8.tif")
    scale = float(np.abs(a).mean())
    np.testing.assert_allclose(read(tmp_path / "mean.tif"), (a + b) / 2, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(read(tmp_path / "std.tif"), np.abs(a - b) / np.sqrt(2), rtol=1e-4, atol=1e-4 * scale)
    a1, b1, m1 = read(tmp_path / "s7_1.tif"), read(tmp_path / "s8_1.tif"), read(tmp_path / "mean_1.tif")
    assert m1.shape[0] == 12
    np.testing.assert_allclose(m1, (a1 + b1) / 2, rtol=1e-5, atol=1e-5 * scale)
    stage1_wl = [cascade.config.wavelengths_nm[i] for i in cascade.config.stage1_indices]
    with rasterio.open(tmp_path / "mean_1.tif") as ds:
        assert [float(ds.tags(b)["wavelength"]) for b in range(1, 13)] == pytest.approx(stage1_wl)
        assert ds.tags()["SCDM_PRODUCT"] == "stage-1 estimate"
    with rasterio.open(tmp_path / "std.tif") as ds:
        assert "standard deviation of 2 samples" in ds.tags()["SCDM_PRODUCT"]
    assert report.samples == 2 and report.uncertainty_output == str(tmp_path / "std.tif")


def _jump_ratio(x: np.ndarray, borders, axis: int) -> float:
    """Mean |x[i+1] - x[i]| over the given border positions i divided by the mean over all others."""
    jumps = np.abs(np.diff(x, axis=axis)).mean(axis=tuple(a for a in range(3) if a != axis))
    inside = np.delete(jumps, borders)
    return float(jumps[borders].mean() / inside.mean())


def test_seams(cascade, tmp_path):
    """Seam measure on a 64 x 64 real image that fits in one tile.

    Measured (tiny random bundle, DDIM 2 steps, no guidance, seed 1), tiled = 32 px tiles with
    16 px overlaps (4 x 4 tiles over the image and its 8 px mirrored margin) against the untiled
    run (one 80 px tile, the same margin): mean |difference| 0.011 and max 0.10 of the output's
    standard deviation. Jumps across tile borders / jumps inside tiles: 1.00-1.01 on the output and
    1.04 on the tiled-minus-untiled difference, against 4.6-4.9 on that difference for hard
    tiling (no overlap, no blending, no margin). The tiled and untiled results cannot agree exactly:
    GroupNorm statistics, attention and zero padding see a 32 px tile instead of the whole image (the
    shared positional noise and the per-raster normalisation are identical). Bounds asserted: mean
    0.05, max 0.4, jump ratios 1.5, and the measure must flag hard tiling (ratio > 3).
    """
    data, transform, crs, nodata = mosaic_crop((0, 64), (0, 64))
    src = write_rgb(tmp_path / "in.tif", data, transform, crs, nodata)
    kw = dict(bands=(1, 2, 3), steps=2, guidance=0.0, seed=1)
    margin = border_margin(16)
    untiled_report = run(cascade, src, tmp_path / "untiled.tif", tile=64 + 2 * margin, overlap=16, **kw)
    untiled = read(untiled_report.output_path)
    report = run(cascade, src, tmp_path / "tiled.tif", tile=32, overlap=16, **kw)
    tiled = read(report.output_path)
    hard = read(run(cascade, src, tmp_path / "hard.tif", tile=32, overlap=0, **kw).output_path)
    assert untiled_report.tiles == 1 and report.tiles == 16

    spread = float(untiled.std())
    diff = np.abs(tiled - untiled)
    assert diff.mean() / spread < 0.05
    assert diff.max() / spread < 0.4

    grid = tile_grid(64 + 2 * margin, 64 + 2 * margin, 32, 16)
    edges = sorted({s - margin for s, _ in grid.col_spans if s > 0}
                   | {s + n - margin for s, n in grid.col_spans if s + n < 64 + 2 * margin})
    borders = [e - 1 for e in edges if 0 < e < 64]  # diff index i compares pixels i and i + 1
    assert len(borders) >= 4
    for axis in (1, 2):
        assert _jump_ratio(tiled, borders, axis) < 1.5
        assert _jump_ratio(tiled - untiled, borders, axis) < 1.5
        # the same measure does see the seam of hard tiling
        assert _jump_ratio(hard - untiled, [31], axis) > 3.0


@pytest.mark.parametrize("sampler, steps", [("ddim", 2), ("dpmpp", 4)])
def test_local_networks_tile_exactly(tiny_local_bundle, tmp_path, sampler, steps):
    """A cascade of local networks (2 px of context) tiled with 16 px tiles and a 5 px overlap gives
    the result of one pass over the whole raster, to float32 rounding; an overlap below 2 x 2 + 1
    is refused, and without the inset blending seams would show."""
    from engine.bundle import load_bundle

    local = load_bundle(tiny_local_bundle)
    assert local.config.context_radius == 2
    data, transform, crs, nodata = mosaic_crop((0, 40), (0, 52))
    src = write_rgb(tmp_path / "in.tif", data, transform, crs, nodata)
    kw = dict(bands=(1, 2, 3), sampler=sampler, steps=steps, guidance=1.0, seed=4, pdt=(0.9, 0.8))
    whole = run(local, src, tmp_path / "whole.tif", tile=64, overlap=5, **kw)
    tiled = run(local, src, tmp_path / "tiled.tif", tile=16, overlap=5, **kw)
    assert whole.tiles == 1 and tiled.tiles > 12
    a, b = read(whole.output_path), read(tiled.output_path)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    with pytest.raises(InputError, match="overlap 4 px is too small .* at least 5 px"):
        run(local, src, tmp_path / "narrow.tif", tile=16, overlap=4, **kw)
    assert not (tmp_path / "narrow.tif").exists()


def test_blender_reproduces_a_field_and_skipped_tiles_stay_empty():
    rng = np.random.default_rng(1)
    height, width, channels = 45, 70, 2
    field = rng.normal(size=(channels, height, width)).astype(np.float32) * 100
    grid = tile_grid(height, width, 16, 5)
    out = np.full((channels, height, width), np.nan, dtype=np.float32)
    seen = np.zeros((height, width), dtype=int)
    empty = {(1, 2)}

    def emit(r, c, values, valid):
        h, w = valid.shape
        seen[r:r + h, c:c + w] += 1
        if values is not None:
            out[:, r:r + h, c:c + w] = values

    blender = TileBlender(grid, channels, emit)
    for t in grid:
        if (t.row, t.col) in empty:
            blender.add(t, None, None, np.zeros((t.height, t.width), dtype=bool))
        else:
            blender.add(t, field[:, t.slices[0], t.slices[1]].copy(), grid.weights(t),
                        np.ones((t.height, t.width), dtype=bool))
    assert blender.open_cells == 0
    np.testing.assert_array_equal(seen, 1)
    only_empty = np.zeros((height, width), dtype=bool)
    covered_by_other = np.zeros((height, width), dtype=bool)
    for t in grid:
        (only_empty if (t.row, t.col) in empty else covered_by_other)[t.slices] = True
    only_empty &= ~covered_by_other
    assert np.isnan(out[:, only_empty]).all()
    np.testing.assert_allclose(out[:, ~only_empty], field[:, ~only_empty], rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# progress, cancel, failures


def test_progress_and_cancel_between_tiles_and_sampler_steps(cascade, tmp_path):
    data, transform, crs, nodata = mosaic_crop((0, 24), (0, 40))
    src = write_rgb(tmp_path / "in.tif", data, transform, crs, nodata)
    calls = []
    seen = []
    report = run(cascade, src, tmp_path / "out.tif", bands=(1, 2, 3), steps=2, batch=1,
                 progress=lambda f, m: seen.append((f, m)), cancel=lambda: calls.append(1) and False)
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any("tile" in m for _, m in seen)
    # one check per tile plus one per sampler step of each stage
    assert report.tiles == 2 and len(calls) >= report.tiles * (1 + 2 * 2)

    dest = tmp_path / "cancelled.tif"
    dest.write_bytes(b"old result")
    before = listing(tmp_path)
    for stop_at in (1, 4, len(calls) - 1):  # before the first tile, inside a sampler, at the end
        count = [0]

        def cancel():
            count[0] += 1
            return count[0] >= stop_at

        with pytest.raises(Cancelled):
            run(cascade, src, dest, bands=(1, 2, 3), steps=2, batch=1, cancel=cancel,
                stage1_output=tmp_path / "s1.tif")
        assert listing(tmp_path) == before
        assert dest.read_bytes() == b"old result"


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failure_leaves_nothing_behind(cascade, tmp_path, error):
    data, transform, crs, nodata = mosaic_crop((0, 24), (0, 56))
    src = write_rgb(tmp_path / "in.tif", data, transform, crs, nodata)
    before = listing(tmp_path)
    count = [0]

    def progress(fraction, message):
        count[0] += 1
        if count[0] == 4:
            raise error

    with pytest.raises(type(error)):
        run(cascade, src, tmp_path / "out.tif", bands=(1, 2, 3), batch=1, progress=progress,
            uncertainty_output=tmp_path / "u.tif", samples=2)
    assert listing(tmp_path) == before


def test_cuda_out_of_memory_halves_the_batch(tiny_bundle, tmp_path):
    from engine.bundle import load_bundle

    data, transform, crs, nodata = mosaic_crop((0, 24), (0, 64))  # three tiles
    src = write_rgb(tmp_path / "in.tif", data, transform, crs, nodata)
    reference = read(run(load_bundle(tiny_bundle), src, tmp_path / "ref.tif", bands=(1, 2, 3), batch=1).output_path)

    flaky = load_bundle(tiny_bundle)
    real_sample = flaky.sample
    sizes = []

    def sample(cond, *args, **kwargs):  # a GPU that holds one tile only
        sizes.append(cond.shape[0])
        if cond.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_sample(cond, *args, **kwargs)

    flaky.sample = sample
    messages = []
    report = run(flaky, src, tmp_path / "out.tif", bands=(1, 2, 3), batch=4, log=messages.append)
    assert report.tiles == 3 and report.batch == 1 and sizes[:3] == [3, 2, 1]
    assert any("batch reduced to 2" in m for m in messages) and any("batch reduced to 1" in m for m in messages)
    np.testing.assert_allclose(read(report.output_path), reference, rtol=1e-4,
                               atol=1e-4 * float(np.abs(reference).mean()))


# ----------------------------------------------------------------------------------------------
# bad inputs


@pytest.fixture
def rgb_file(tmp_path):
    data, transform, crs, nodata = mosaic_crop((0, 16), (0, 16))
    return write_rgb(tmp_path / "rgb.tif", data, transform, crs, nodata)


def _bad_cases(tmp_path, rgb_file):
    data, transform, crs, nodata = mosaic_crop((0, 16), (0, 16))
    one = tmp_path / "one.tif"
    with rasterio.open(one, "w", driver="GTiff", width=16, height=16, count=1, dtype="float32") as dst:
        dst.write(data[:1])
    two = tmp_path / "two.tif"
    with rasterio.open(two, "w", driver="GTiff", width=16, height=16, count=2, dtype="float32") as dst:
        dst.write(data[:2])
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    out = tmp_path / "out.tif"
    return {
        "1-band raster": (dict(input_path=one, output_path=out), r"1 band.*at least three"),
        "2-band raster": (dict(input_path=two, output_path=out), r"2 bands.*at least three"),
        "band out of range": (dict(input_path=rgb_file, output_path=out, bands=(1, 2, 4)), r"4 out of range.*1 to 3"),
        "four bands": (dict(input_path=rgb_file, output_path=out, bands=(1, 2, 3, 1)), r"exactly 3"),
        "unreadable file": (dict(input_path=junk, output_path=out), r"cannot read .* as a raster"),
        "missing input": (dict(input_path=tmp_path / "nope.tif", output_path=out), r"does not exist"),
        "missing output folder": (dict(input_path=rgb_file, output_path=tmp_path / "no" / "out.tif"),
                                  r"folder .* does not exist"),
        "band count contradicts model": (dict(input_path=rgb_file, output_path=out, expected_band_count=224),
                                         r"produces 48 bands but 224 were expected"),
        "uncertainty needs samples": (dict(input_path=rgb_file, output_path=out, uncertainty_output=tmp_path / "u.tif"),
                                      r"at least two samples"),
        "same output twice": (dict(input_path=rgb_file, output_path=out, stage1_output=out), r"must differ"),
        "output is the input": (dict(input_path=rgb_file, output_path=rgb_file), r"is the input"),
        "overlap too large": (dict(input_path=rgb_file, output_path=out, tile=32, overlap=20), r"overlap 20"),
        "unknown sampler": (dict(input_path=rgb_file, output_path=out, sampler="euler"), r"unknown sampler"),
        "unknown device": (dict(input_path=rgb_file, output_path=out, device="tpu"), r"unknown device"),
    }


# The setting each bad input is about (InferenceSettings field names; front ends map them to their words).
BAD_CASE_PARAMETERS = {
    "1-band raster": "input", "2-band raster": "input", "band out of range": "bands", "four bands": "bands",
    "unreadable file": "input", "missing input": "input", "missing output folder": "output",
    "band count contradicts model": "model", "uncertainty needs samples": "samples", "same output twice": "stage1_output",
    "output is the input": "output", "overlap too large": "overlap", "unknown sampler": "sampler",
    "unknown device": "device",
}


def test_bad_inputs_raise_clear_errors_and_create_nothing(cascade, tmp_path, rgb_file):
    cases = _bad_cases(tmp_path, rgb_file)
    before = listing(tmp_path)
    for name, (kwargs, pattern) in cases.items():
        options = dict(model=cascade, tile=32, overlap=8, sampler="ddim", steps=1, device="cpu")
        options.update(kwargs)
        src, dst = options.pop("input_path"), options.pop("output_path")
        with pytest.raises(InputError, match=pattern) as raised:
            infer_raster(src, dst, **options)
        assert raised.value.parameter == BAD_CASE_PARAMETERS[name], name
        assert listing(tmp_path) == before, name


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_an_input_error(cascade, rgb_file, tmp_path):
    with pytest.raises(InputError, match="no CUDA GPU: use cpu or auto") as raised:
        run(cascade, rgb_file, tmp_path / "o.tif", bands=(1, 2, 3), device="cuda:0")
    assert raised.value.parameter == "device"


def test_read_only_output_folder(cascade, rgb_file, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    try:
        import os

        if os.geteuid() == 0:
            if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode:
                pytest.skip("root without chattr +i: cannot make a read-only folder")
            immutable = True
        with pytest.raises(InputError, match="read-only|cannot write"):
            run(cascade, rgb_file, folder / "out.tif", bands=(1, 2, 3))
        assert listing(folder) == []
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


# ----------------------------------------------------------------------------------------------
# command line


def test_cli_infer(tiny_bundle, tmp_path, rgb_file, capsys):
    from engine.cli import main

    out = tmp_path / "cli.tif"
    code = main(["infer", str(rgb_file), str(out), "--model", str(tiny_bundle), "--bands", "3,2,1",
                 "--tile", "16", "--overlap", "4", "--sampler", "ddim", "--steps", "1", "--guidance", "0",
                 "--seed", "2", "--device", "cpu", "--batch", "2", "--stage1-output", str(tmp_path / "s1.tif"),
                 "--no-pdt"])
    assert code == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and str(out) in captured.out
    with rasterio.open(out) as ds:
        assert ds.count == 48 and ds.tags()["SCDM_INPUT_BANDS"] == "3,2,1" and ds.tags()["SCDM_SEED"] == "2"
        assert ds.tags()["SCDM_PDT"] == "None,None"
    with rasterio.open(tmp_path / "s1.tif") as ds:
        assert ds.count == 12

    code = main(["infer", str(rgb_file), str(tmp_path / "bad.tif"), "--model", str(tiny_bundle), "--bands", "1,2,9"])
    assert code == 2
    assert "9 out of range" in capsys.readouterr().err
    assert not (tmp_path / "bad.tif").exists()
