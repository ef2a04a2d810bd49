"""Input radiometry: the sRGB curve in closed form, auto resolution, and the reader's decoding."""

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InputError
from engine.radiometry import (Radiometry, as_linear_stretch, decoding_is_guessed, decoding_variance, linear_to_srgb,
                               linearise, resolve, srgb_to_linear)
from engine.raster import io as rio


def test_srgb_curve_closed_form():
    # IEC 61966-2-1: the linear segment below 0.04045 and the 2.4 power above it.
    assert srgb_to_linear(np.array([0.0]))[0] == 0.0
    assert srgb_to_linear(np.array([1.0]))[0] == pytest.approx(1.0)
    assert srgb_to_linear(np.array([0.04]))[0] == pytest.approx(0.04 / 12.92)
    assert srgb_to_linear(np.array([0.5]))[0] == pytest.approx(((0.5 + 0.055) / 1.055) ** 2.4, rel=1e-6)
    # 8-bit mid grey 128 is about 21.6 % linear light
    assert linearise(np.array([128.0]), Radiometry.SRGB, "uint8")[0] == pytest.approx(0.2158605, rel=1e-5)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1.0, allow_nan=False))
def test_srgb_encode_decode_round_trip(value):
    assert float(srgb_to_linear(linear_to_srgb(np.array([value])))[0]) == pytest.approx(value, abs=2e-6)


def test_auto_is_srgb_for_8_bit_and_linear_otherwise():
    assert resolve("auto", "uint8") is Radiometry.SRGB
    for dtype in ("uint16", "int16", "float32", "float64"):
        assert resolve("auto", dtype) is Radiometry.LINEAR
    assert resolve("linear", "uint8") is Radiometry.LINEAR
    assert resolve("srgb", "uint16") is Radiometry.SRGB


def test_refusals_name_the_setting():
    with pytest.raises(InputError) as bad_name:
        resolve("gamma", "uint8")
    assert bad_name.value.parameter == "radiometry" and "linear, srgb, auto" in str(bad_name.value)
    with pytest.raises(InputError) as float_srgb:
        resolve("srgb", "float32")
    assert float_srgb.value.parameter == "radiometry" and "linear" in str(float_srgb.value)


def test_the_reader_decodes_8_bit_input(tmp_path):
    path = tmp_path / "rgb.tif"
    codes = np.array([[[0, 128], [255, 64]]] * 3, dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=2, height=2, count=3, dtype="uint8") as ds:
        ds.write(codes)
    info = rio.inspect_input(path)
    with rio.RGBReader(info, resolve("auto", info.dtype)) as reader:
        decoded, valid = reader.read(0, 0, 2, 2)
    with rio.RGBReader(info, Radiometry.LINEAR) as reader:
        raw, _ = reader.read(0, 0, 2, 2)
    np.testing.assert_allclose(decoded, srgb_to_linear(codes / 255.0), rtol=1e-6)
    np.testing.assert_array_equal(raw, codes.astype(np.float32))
    assert valid.all()


def test_only_auto_on_8_bit_input_guesses_the_decoding():
    assert decoding_is_guessed("auto", "uint8")
    assert not any(decoding_is_guessed("auto", dtype) for dtype in ("uint16", "int16", "float32"))
    assert not decoding_is_guessed("srgb", "uint8") and not decoding_is_guessed("linear", "uint8")


def test_the_linear_stretch_reading_is_the_codes_over_their_white():
    codes = np.arange(256, dtype=np.float32)
    decoded = linearise(codes, Radiometry.SRGB, "uint8")
    np.testing.assert_allclose(as_linear_stretch(decoded), codes / 255.0, atol=2e-6)


def test_the_decoding_variance_is_the_squared_difference():
    estimate = np.array([0.2, 0.5, 0.5], dtype=np.float32)
    other = np.array([0.1, 0.5, 0.8], dtype=np.float32)
    np.testing.assert_allclose(decoding_variance(estimate, other), [0.01, 0.0, 0.09], rtol=1e-6)
