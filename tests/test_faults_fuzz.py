"""Property-based fuzz of ``python -m engine infer`` (issue 15): generated rasters (types, sizes, band
counts, NaN/Inf, constant and all-nodata content, nodata values, georeferences, damaged or not rasters
at all) and settings (in and out of range, unknown names, unsupported extensions), run in this process
through the command line's ``main`` with the tiny random-weight bundle. Every case must end either in
a complete output with the input's size, georeference and nodata, or in exit status 2 with one
"error: ..." line, the destination as it was and no partial file; never in a traceback, a warning or a
GDAL "ERROR" line. A fixed example budget, derandomised (the same cases in every run): ``VALID_EXAMPLES``
cases with nothing broken, and ``EXAMPLES_PER_FAULT`` cases of each of the 18 ``FAULTS`` (one damaged
input, one refused setting or one output name no format writes, everything else valid).

Also the settings' own property: every suggested fix ("e.g. ...") is accepted, so following the
messages always ends in a valid run (``test_following_the_suggested_fixes_always_ends_in_valid_settings``).
"""

from __future__ import annotations

import math
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from rasterio.control import GroundControlPoint
from rasterio.transform import Affine

from engine.config import SamplerConfig
from engine.errors import InputError
from engine.raster import io as rio
from engine.raster.plan import ModelFacts, make_plan
from engine.settings import InferenceSettings

from test_faults import UTM, infer, partials, write_raster

# The example budget: valid cases, and cases of each fault (``FAULTS``: one example breaks one thing,
# so that each fault meets a run whose everything else is valid, and every fault is tried in every run).
VALID_EXAMPLES = 50
EXAMPLES_PER_FAULT = 5

GEOREFERENCES = {
    "utm": UTM,
    "rotated": dict(crs="EPSG:32633", transform=Affine(25.0, 8.0, 364095.0, 6.0, -25.0, 5809965.0)),
    "crs only": dict(crs="EPSG:4326"),
    "none": {},
    "gcps": {},  # set after writing
}
NODATA = {"uint8": [None, 0, 255], "uint16": [None, 0], "int16": [None, -9999], "float32": [None, -9999.0, "nan"],
          "float64": [None, "nan", -1e300]}  # -1e300: float32 cannot hold it, the output's nodata is NaN
DAMAGES = ["cut in half", "garbled block", "empty file", "text file", "folder", "missing", "too few bands"]
OUTPUT_NAMES = [".img", ".vrt", "", ".jpg"]  # extensions no format writes (.vrt: only with a cluster)


@dataclass(frozen=True)
class RasterCase:
    dtype: str
    height: int
    width: int
    count: int
    content: str
    nodata: object
    georeference: str
    damage: str


@st.composite
def raster_cases(draw, damage: str) -> RasterCase:
    dtype = draw(st.sampled_from(sorted(NODATA)))
    return RasterCase(dtype=dtype, height=draw(st.integers(1, 40)), width=draw(st.integers(1, 40)),
                      count=draw(st.sampled_from([1, 2] if damage == "too few bands" else [3, 3, 3, 4])),
                      content=draw(st.sampled_from(["noise", "noise", "constant", "nan and inf", "all nodata"])),
                      nodata=draw(st.sampled_from(NODATA[dtype])), georeference=draw(st.sampled_from(sorted(GEOREFERENCES))),
                      damage=damage)


def pixel_values(case: RasterCase, rng) -> np.ndarray:
    shape = (case.count, case.height, case.width)
    floating = case.dtype.startswith("float")
    low, high = (0.0, 1.0) if floating else (1, 250) if case.dtype == "uint8" else (100, 4000)
    data = rng.uniform(low, high, shape) if floating else rng.integers(low, high, shape)
    data = data.astype(case.dtype)
    nodata = None if case.nodata is None else float(case.nodata)
    if case.content == "constant":
        data[...] = data.flat[0]
    elif case.content == "nan and inf" and floating:
        data[0, : case.height // 2] = np.nan
        data[-1, -1, -1] = np.inf
    elif case.content == "all nodata":
        data[...] = np.nan if floating and (nodata is None or math.isnan(nodata)) else (nodata or 0)
    return data


def make_input(case: RasterCase, folder: Path, seed: int) -> Path:
    path = folder / "in.tif"
    if case.damage == "missing":
        return path
    if case.damage == "folder":
        path.mkdir()
        return path
    if case.damage in ("empty file", "text file"):
        path.write_text("" if case.damage == "empty file" else "not a raster\n")
        return path
    nodata = None if case.nodata is None else float(case.nodata)
    write_raster(path, pixel_values(case, np.random.default_rng(seed)), nodata=nodata,
                 georeference=GEOREFERENCES[case.georeference])
    if case.georeference == "gcps":
        points = [GroundControlPoint(row, col, 500000.0 + 5 * col, 4000000.0 - 5 * row)
                  for row, col in ((0, 0), (0, case.width), (case.height, 0))]
        with rio.open_raster(path, "r+") as dataset:
            dataset.gcps = (points, rasterio.crs.CRS.from_epsg(32618))
    if case.damage == "cut in half":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case.damage == "garbled block":
        with rio.open_raster(path) as dataset:
            offset = int(dataset.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
        with open(path, "r+b") as file:
            file.seek(offset)
            file.write(b"\xff" * 8)
    return path


# Each flag: values a run accepts (None: the flag left out) and values it must refuse.
FLAGS = {
    "--bands": ([None, "1,2,3", "3,2,1"], ["1,2,4", "2,2,3", "0,1,2", "1,2", "red,green,blue"]),
    # (tile, overlap), None: left out (the model's tile, overlap 16); the overlap is at most half the tile
    "--tile --overlap": ([None, (8, 4), (16, 0), (16, 8), (32, None), (64, 4), (None, 8)],
                         [(0, None), (4, 0), (100000, None), (None, -1), (None, 5000), (32, 32), (8, None)]),
    "--steps": ([None, 1, 2], [0, 100000]),
    "--guidance": ([None, 0.0, 1.0, 3.5], [-5.0, 25.0, "nan", "inf"]),
    "--seed": ([None, 0, 3, 2 ** 31 - 1], [-1, 2 ** 31]),
    "--samples": ([None, 1, 2], [0, 65]),
    "--sampler": ([None, "ddim", "dpmpp"], ["euler"]),
    "--radiometry": ([None, "auto", "linear", "srgb"], ["rgb"]),
    "--pdt": ([None, ("0.9", "0.8"), "off"], [("1.5", "0.5"), ("0", "0.9")]),
}


def _flag(name: str, value) -> list:
    if value is None:
        return []
    if name == "--pdt":
        return ["--no-pdt"] if value == "off" else ["--pdt", *value]
    if name == "--tile --overlap":
        return [part for flag, number in zip(("--tile", "--overlap"), value) if number is not None
                for part in (flag, str(number))]
    return [name, str(value)]


@st.composite
def argument_lists(draw, broken: Optional[str], badly_named: bool, dtype: str) -> Tuple[list, str, bool, bool, bool]:
    """(flags, output extension, stage-1 output asked, uncertainty output asked, a previous output
    exists); the ``broken`` flag (or an uncertainty output with one sample) refused, an extension no
    format writes if ``badly_named``. sRGB radiometry only for unsigned integers (``dtype``), the only
    pixel types that can hold display-encoded values."""
    uncertainty = broken == "uncertainty with one sample" or draw(st.booleans())
    flags = []
    for name, (good, bad) in FLAGS.items():
        if name == "--samples" and uncertainty and broken != name:  # an uncertainty output needs 2 or more
            good = ["1"] if broken == "uncertainty with one sample" else [2]
        if name == "--radiometry" and dtype not in ("uint8", "uint16"):
            good = [value for value in good if value != "srgb"]
        flags += _flag(name, draw(st.sampled_from(bad if name == broken else good)))
    named = OUTPUT_NAMES if badly_named else [".tif", ".tif", ".tiff", ".TIFF"]
    return flags, draw(st.sampled_from(named)), draw(st.booleans()), uncertainty, draw(st.booleans())


FAULTS = [*(f"input: {damage}" for damage in DAMAGES), *(f"setting: {flag}" for flag in FLAGS),
          "setting: uncertainty with one sample", "output name"]


@st.composite
def fuzz_cases(draw, fault: Optional[str]) -> Tuple[RasterCase, tuple]:
    """One raster and one argument list with ``fault`` (one of ``FAULTS``) and no other; None: valid."""
    kind, _, what = (fault or "").partition(": ")
    case = draw(raster_cases(what if kind == "input" else "none"))
    return case, draw(argument_lists(what if kind == "setting" else None, fault == "output name", case.dtype))


def expected_nodata(source: Path) -> Optional[float]:
    return rio.output_nodata(rio.inspect_input(source))


def same_nodata(a, b) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def _points(gcps) -> tuple:
    points, crs = gcps
    return tuple((p.row, p.col, p.x, p.y) for p in points or []), crs


def check_output(source: Path, out: Path) -> None:
    """The output: 48 bands, the input's size, georeference and (translated) nodata."""
    with rio.open_raster(source) as src, rio.open_raster(out) as dst:
        assert (dst.count, dst.height, dst.width) == (48, src.height, src.width)
        assert dst.crs == src.crs and dst.transform == src.transform
        assert _points(dst.gcps) == _points(src.gcps)
        assert same_nodata(dst.nodata, expected_nodata(source)), (dst.nodata, expected_nodata(source))


FUZZ = dict(deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=VALID_EXAMPLES, **FUZZ)
@given(data=st.data(), seed=st.integers(0, 1000))
def test_valid_inputs_and_settings_give_a_complete_output(tiny_bundle, data, seed):
    run_case(tiny_bundle, None, data.draw(fuzz_cases(None)), seed)


@pytest.mark.parametrize("fault", FAULTS)
@settings(max_examples=EXAMPLES_PER_FAULT, **FUZZ)
@given(data=st.data(), seed=st.integers(0, 1000))
def test_each_fault_gives_a_clean_error_and_leaves_the_destination_alone(tiny_bundle, fault, data, seed):
    run_case(tiny_bundle, fault, data.draw(fuzz_cases(fault)), seed)


def run_case(tiny_bundle, fault: Optional[str], drawn, seed: int) -> None:
    """Run one drawn case through the command line: a complete output when nothing is broken, a clean
    error otherwise; never a traceback, a warning, a GDAL error line or a partial file."""
    case, (flags, extension, stage1, uncertainty, previous) = drawn
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        source = make_input(case, folder, seed)
        out = folder / f"out{extension}"
        if previous:
            out.write_bytes(b"the previous output")
        extra = {"--stage1-output": folder / "stage1.tif"} if stage1 else {}
        if uncertainty:
            extra["--uncertainty"] = folder / "uncertainty.tif"
        before = sorted(p.name for p in folder.iterdir())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            status, _, err = infer(source, out, "--model", tiny_bundle, "--device", "cpu", "--quiet", *flags,
                                   *(part for pair in extra.items() for part in pair))
        assert [str(w.message) for w in caught] == []
        assert "Traceback" not in err and "Warning" not in err and "ERROR" not in err, err
        assert partials(folder) == []
        assert (status == 0) == (fault is None), f"fault {fault}, exit status {status}: {err}"
        if status == 0:
            event(f"run with {case.georeference} georeference, {case.content}")
            assert "GDAL: " not in err, err  # GDAL had nothing to complain about
            check_output(source, out)
            assert all(path.exists() for path in extra.values())
            assert sorted(p.name for p in folder.iterdir() if "aux.xml" in p.name) == []
        else:
            assert status == 2, err
            last = err.strip().splitlines()[-1]  # the engine's message, or argparse's for a choice it refuses
            assert last.startswith("error: ") or last.startswith("python -m engine infer: error: argument"), err
            assert sorted(p.name for p in folder.iterdir()) == before
            assert not previous or out.read_bytes() == b"the previous output"


# ----------------------------------------------------------------------------------------------
# suggested fixes


WAVELENGTHS = tuple(400.0 + 10 * i for i in range(48))


def _facts(context_radius: int) -> ModelFacts:
    return ModelFacts(name="m", wavelengths_nm=WAVELENGTHS, fwhm_nm=None, stage1_indices=tuple(range(0, 48, 4)),
                      input_bands=3, size_multiple=16, context_radius=context_radius, inference_tile=64,
                      sampler=SamplerConfig(name="ddim", steps=2))


_INFO = rio.InputInfo(path="in.tif", width=300, height=200, count=3, bands=(1, 2, 3), dtype="uint16", crs=None,
                      transform=None, nodata=None, gcps=([], None), can_be_invalid=False)
_SUGGESTION = re.compile(r"e\.g\. (-?[0-9.]+(?:e[-+]?[0-9]+)?|nan|inf)\b")
_TILE_TOO = re.compile(r"with a tile of at least (\d+) px")


def _apply(choices: dict, error: InputError) -> dict:
    """``choices`` with the fix the message suggests for the setting it names."""
    message = str(error)
    found = _SUGGESTION.search(message)
    assert found, f"no suggested value: {message}"
    value = float(found.group(1))
    fixed = dict(choices, **{error.parameter: int(value) if value.is_integer() else value})
    tile_too = _TILE_TOO.search(message)  # a fix that needs a larger tile says so
    if tile_too:
        fixed["tile"] = int(tile_too.group(1))
    return fixed


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(tile=st.one_of(st.none(), st.integers(-5, 10000)), overlap=st.integers(-5, 6000),
       steps=st.one_of(st.none(), st.integers(-3, 2000)), guidance=st.one_of(st.none(), st.floats(-50, 50), st.just(math.nan)),
       seed=st.integers(-5, 2 ** 32), samples=st.integers(-3, 100), batch=st.one_of(st.none(), st.integers(-3, 3000)),
       context_radius=st.sampled_from([0, 0, 1, 2, 6, 40]))
def test_following_the_suggested_fixes_always_ends_in_valid_settings(tile, overlap, steps, guidance, seed, samples,
                                                                    batch, context_radius):
    """E.g. tile 32 with overlap 32 suggests overlap 16, never 32 again; a local model's wider overlap
    comes with the larger tile it needs."""
    choices = dict(tile=tile, overlap=overlap, steps=steps, guidance=guidance, seed=seed, samples=samples, batch=batch)
    for _ in range(10):
        try:
            chosen = InferenceSettings(input="in.tif", output="out.tif", **choices)
            make_plan(_INFO, _facts(context_radius), chosen, "cpu")
            return
        except InputError as error:
            fixed = _apply(choices, error)
            assert fixed != choices, f"the suggestion repeats the refused value: {error}"
            choices = fixed
    pytest.fail(f"following the suggestions did not end in valid settings: {choices}")
