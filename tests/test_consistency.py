"""The RGB-consistency step (engine.consistency): exact on random spectra and responses, a no-op on
spectra that already integrate to the input, non-negative, the camera estimate, and the raster run."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from engine.consistency import CameraResponse, estimate_response, project, reprojection_error, response_from_csv
from engine.errors import InputError
from engine.radiometry import Radiometry, linearise
from engine.settings import InferenceSettings

NIKON = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "srf" / "camera_nikon5100_npl.csv"


def _smooth_spectra(rng: np.random.Generator, bands: int, count: int) -> np.ndarray:
    knots = rng.uniform(0.02, 0.8, size=(count, 6))
    grid = np.linspace(0, 5, bands)
    return np.stack([np.interp(grid, np.arange(6), k) for k in knots], axis=1)  # (bands, count)


def _camera(rng: np.random.Generator, bands: int) -> CameraResponse:
    centres = np.array([0.75, 0.5, 0.25]) * bands + rng.uniform(-2, 2, 3)
    grid = np.arange(bands)
    weights = np.exp(-0.5 * ((grid[None] - centres[:, None]) / rng.uniform(2, 5, (3, 1))) ** 2)
    return CameraResponse(weights / weights.sum(axis=1, keepdims=True), "test")


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(6, 60))
def test_projection_is_exact_on_random_spectra_and_responses(seed, bands):
    rng = np.random.default_rng(seed)
    response = CameraResponse(rng.uniform(0, 1, (3, bands)), "random")
    spectra = rng.normal(size=(bands, 5, 4))
    rgb = rng.uniform(0, 2, (3, 5, 4))
    out = project(spectra, rgb, response, non_negative=False)
    np.testing.assert_allclose(response.render(out), rgb, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_consistent_spectra_are_left_as_they_are(seed):
    rng = np.random.default_rng(seed)
    response = _camera(rng, 48)
    spectra = _smooth_spectra(rng, 48, 30).reshape(48, 5, 6)
    np.testing.assert_allclose(project(spectra, response.render(spectra), response), spectra, atol=1e-9)


def test_non_negative_projection_reaches_reachable_rgb_exactly():
    rng = np.random.default_rng(1)
    response = _camera(rng, 48)
    truth, guess = _smooth_spectra(rng, 48, 200), _smooth_spectra(rng, 48, 200)
    rgb = response.render(truth)
    out = project(guess, rgb, response)
    assert out.min() >= 0
    assert reprojection_error(out, rgb, response) < 1e-6 < reprojection_error(guess, rgb, response)
    # keeping the guess's metameric black moves it towards the truth, never away on average
    assert np.abs(out - truth).mean() < np.abs(guess - truth).mean()


def test_the_camera_estimate_finds_a_smooth_response():
    rng = np.random.default_rng(2)
    response = _camera(rng, 48)
    spectra = _smooth_spectra(rng, 48, 3000)
    rgb = response.render(spectra) * (1 + rng.normal(0, 0.01, (3, 3000)))
    estimate = estimate_response(spectra, rgb)
    for true_row, row in zip(response.weights, estimate.weights):
        assert np.corrcoef(true_row, row)[0, 1] > 0.95
    assert reprojection_error(spectra, rgb, estimate) < 0.03


def test_a_missing_camera_file_is_refused_by_name(tmp_path):
    with pytest.raises(InputError) as refused:
        InferenceSettings(input="in.tif", output="out.tif", consistency=str(tmp_path / "none.csv"))
    assert refused.value.parameter == "consistency" and "estimate" in str(refused.value)
    assert InferenceSettings(input="in.tif", output="out.tif", consistency="off").consistency is None


@pytest.mark.parametrize("camera", ["file", "estimate"])
def test_raster_output_integrates_to_the_input(tmp_path, camera):
    from engine.raster import infer_raster

    if not NIKON.exists():
        pytest.skip("shared camera responses not found")
    # natural colours (a camera's gamut holds them; a noise image's saturated ones it does not)
    rng = np.random.default_rng(3)
    brightness, tint = rng.uniform(40, 200, size=(1, 24, 20)), rng.uniform(0.85, 1.15, size=(3, 24, 20))
    codes = np.round(np.clip(brightness * tint, 0, 255)).astype(np.uint8)
    source = tmp_path / "rgb.tif"
    with rasterio.open(source, "w", driver="GTiff", width=20, height=24, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(codes)
    out = tmp_path / "hsi.tif"
    infer_raster(source, out, device="cpu", consistency=str(NIKON) if camera == "file" else "estimate")
    with rasterio.open(out) as ds:
        spectra, tag = ds.read().astype(np.float64), ds.tags()["SCDM_CONSISTENCY"]
        wavelengths = [float(ds.tags(b)["wavelength"]) for b in range(1, ds.count + 1)]
    rows = [[float(v) for v in row.split(",")] for row in tag.split(": ", 1)[1].split("; ")]
    response = CameraResponse(np.array(rows), "from the tag")
    if camera == "file":
        nominal = response_from_csv(NIKON, wavelengths).weights  # scaled per channel to the image
        np.testing.assert_allclose(response.weights / response.weights.sum(axis=1, keepdims=True), nominal, rtol=1e-3, atol=1e-6)
    rgb = linearise(codes.astype(np.float32), Radiometry.SRGB, "uint8")
    assert spectra.min() >= 0
    assert reprojection_error(spectra, rgb, response) < 1e-3
