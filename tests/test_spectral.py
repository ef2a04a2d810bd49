"""Wavelength resampling, SRF loading and RGB simulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.spectral import (
    SpectralResponse,
    coverage_mask,
    gaussian_response_matrix,
    load_srf_csv,
    resample_cube,
    simulate_rgb_from_bands,
    simulate_rgb_from_srf,
    srf_coverage,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SRF_DIR = DATA / "srf"
needs_data = pytest.mark.skipif(not SRF_DIR.is_dir(), reason="shared data folder not present")


def _smooth_cube(wavelengths: np.ndarray, rows: int = 3, cols: int = 4) -> np.ndarray:
    """Pixels with broad Gaussian-bump spectra of different centres and heights."""
    centres = np.linspace(500, 800, rows * cols)
    spectra = [
        (1 + 0.1 * i) * np.exp(-0.5 * ((wavelengths - c) / 90.0) ** 2) + 0.2 for i, c in enumerate(centres)
    ]
    return np.stack(spectra, axis=1).reshape(wavelengths.size, rows, cols)


def test_resampling_onto_own_grid_is_near_identity_for_smooth_spectra() -> None:
    wavelengths = np.arange(400.0, 1001.0, 10.0)
    cube = _smooth_cube(wavelengths)
    out, covered = resample_cube(cube, wavelengths, wavelengths)
    assert out.dtype == np.float32 and out.shape == cube.shape and covered.all()
    interior = slice(3, -3)
    assert np.max(np.abs(out[interior] - cube[interior])) < 0.01 * cube.max()


def test_equal_source_and_target_fwhm_is_exact_identity() -> None:
    wavelengths = np.arange(400.0, 1001.0, 10.0)
    weights = gaussian_response_matrix(wavelengths, wavelengths, target_fwhm=10.0, source_fwhm=10.0)
    np.testing.assert_allclose(weights, np.eye(wavelengths.size), atol=1e-12)


def test_narrow_target_interpolates_linearly_between_source_bands() -> None:
    source = np.array([400.0, 410.0, 420.0])
    weights = gaussian_response_matrix(source, [403.0], target_fwhm=5.0, source_fwhm=8.0)
    np.testing.assert_allclose(weights, [[0.7, 0.3, 0.0]], atol=1e-12)


def test_linear_spectrum_stays_linear_on_a_coarser_grid() -> None:
    source = np.arange(400.0, 1001.0, 5.0)
    target = np.arange(420.0, 981.0, 20.0)
    weights = gaussian_response_matrix(source, target)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    out = weights @ (3.0 * source - 200.0)
    # The outermost targets sit 2.4 sigma from the source edge, where the truncated response tilts.
    interior = slice(2, -2)
    np.testing.assert_allclose(out[interior], 3.0 * target[interior] - 200.0, atol=1e-6)


def test_rows_sum_to_one_on_irregular_unsorted_grids() -> None:
    source = np.array([410.0, 405.0, 420.0, 440.0, 445.0, 470.0, 500.0])
    target = np.array([480.0, 412.0, 430.0, 455.0])
    weights = gaussian_response_matrix(source, target)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(weights >= 0)
    order = np.argsort(source)
    sorted_weights = gaussian_response_matrix(source[order], target)
    np.testing.assert_allclose(weights[:, order], sorted_weights, atol=1e-12)


def test_uncovered_target_bands_are_zero_and_flagged() -> None:
    source = np.arange(400.0, 701.0, 10.0)
    target = np.array([300.0, 385.0, 550.0, 715.0, 900.0])
    fwhm = 20.0
    assert coverage_mask(source, target, fwhm).tolist() == [False, True, True, True, False]
    weights = gaussian_response_matrix(source, target, target_fwhm=fwhm)
    np.testing.assert_allclose(weights.sum(axis=1), [0, 1, 1, 1, 0], atol=1e-12)

    cube = np.ones((source.size, 2, 2)) * 7.0
    out, covered = resample_cube(cube, source, target, target_fwhm=fwhm)
    assert covered.tolist() == [False, True, True, True, False]
    assert np.all(out[~covered] == 0)
    np.testing.assert_allclose(out[covered], 7.0, rtol=1e-6)


def test_very_narrow_response_just_outside_range_uses_the_edge_band() -> None:
    source = np.array([400.0, 410.0, 420.0])
    weights = gaussian_response_matrix(source, [421.0], target_fwhm=2.0, source_fwhm=2.0)
    np.testing.assert_allclose(weights, [[0.0, 0.0, 1.0]])


def test_resampling_input_errors() -> None:
    with pytest.raises(ValueError, match="target_fwhm"):
        gaussian_response_matrix([400.0, 410.0], [405.0])
    with pytest.raises(ValueError, match="repeat"):
        gaussian_response_matrix([400.0, 400.0, 410.0], [400.0, 405.0])
    with pytest.raises(ValueError, match="source wavelengths"):
        resample_cube(np.zeros((3, 2, 2)), [400.0, 410.0], [400.0, 405.0])


def test_band_index_rgb_picks_the_bands() -> None:
    cube = np.arange(48, dtype=np.uint16)[:, None, None] * np.ones((48, 2, 3), dtype=np.uint16)
    rgb = simulate_rgb_from_bands(cube, [4, 11, 22])
    assert rgb.dtype == np.float32 and rgb.shape == (3, 2, 3)
    assert rgb[:, 0, 0].tolist() == [4.0, 11.0, 22.0]
    with pytest.raises(ValueError, match="48"):
        simulate_rgb_from_bands(cube, [4, 11, 48])


def _triangle_srf() -> SpectralResponse:
    wavelengths = np.arange(400.0, 701.0, 1.0)
    centres = (620.0, 540.0, 460.0)
    responses = np.stack([np.clip(1 - np.abs(wavelengths - c) / 60.0, 0, None) for c in centres])
    return SpectralResponse(wavelengths, responses, "triangles")


def test_flat_spectrum_gives_its_value_in_every_channel() -> None:
    wavelengths = np.arange(380.0, 1001.0, 14.3)
    cube = np.full((wavelengths.size, 3, 2), 1234.5)
    rgb, coverage = simulate_rgb_from_srf(cube, wavelengths, _triangle_srf())
    assert rgb.dtype == np.float32 and rgb.shape == (3, 3, 2)
    np.testing.assert_allclose(rgb, 1234.5, rtol=1e-6)
    np.testing.assert_allclose(coverage, 1.0)


def test_srf_integration_matches_dense_numerical_integral() -> None:
    wavelengths = np.arange(374.4, 1050.0, 14.3)
    cube = _smooth_cube(wavelengths, 2, 2)
    srf = _triangle_srf()
    rgb, _ = simulate_rgb_from_srf(cube, wavelengths, srf)
    dense = np.linspace(400.0, 700.0, 30001)
    for channel in range(3):
        response = np.interp(dense, srf.wavelengths_nm, srf.responses[channel])
        spectrum = np.interp(dense, wavelengths, cube[:, 1, 0])
        expected = np.trapz(response * spectrum, dense) / np.trapz(response, dense)
        assert rgb[channel, 1, 0] == pytest.approx(expected, rel=1e-6)
    # Blue weighs short wavelengths, red long ones: a rising spectrum orders them.
    rising = (wavelengths - 300.0)[:, None, None] * np.ones((1, 1, 1))
    ramp_rgb, _ = simulate_rgb_from_srf(rising, wavelengths, srf)
    assert ramp_rgb[0, 0, 0] > ramp_rgb[1, 0, 0] > ramp_rgb[2, 0, 0]


def test_partial_coverage_is_reported_and_too_little_raises() -> None:
    srf = _triangle_srf()
    wavelengths = np.arange(520.0, 1000.0, 10.0)  # cuts away the blue triangle and half the green
    coverage = srf_coverage(wavelengths, srf)
    assert coverage[0] == pytest.approx(1.0)
    # Green's triangle (480-600 nm, area 60) loses its 480-520 nm part, area 0.5 * 40 * 40 / 60.
    assert coverage[1] == pytest.approx(1 - (0.5 * 40 * 40 / 60) / 60, rel=1e-9)
    assert coverage[2] == pytest.approx(0.0)
    cube = np.ones((wavelengths.size, 2, 2))
    with pytest.raises(ValueError) as error:
        simulate_rgb_from_srf(cube, wavelengths, srf)
    message = str(error.value)
    assert "520-990 nm" in message and "400-700 nm" in message and "blue" in message


@needs_data
@pytest.mark.parametrize(
    ("name", "first", "last", "rows"),
    [
        ("camera_nikon_d700", 377.0, 948.0, 572),
        ("camera_nikon5100_npl", 380.0, 780.0, 81),
        ("camera_sigma_sdmerill_npl", 400.0, 680.0, 29),
    ],
)
def test_real_srf_csvs_load(name: str, first: float, last: float, rows: int) -> None:
    srf = load_srf_csv(SRF_DIR / f"{name}.csv")
    assert srf.name == name
    assert srf.wavelengths_nm.shape == (rows,) and srf.responses.shape == (3, rows)
    assert srf.wavelengths_nm[0] == first and srf.wavelengths_nm[-1] == last
    assert np.all(np.diff(srf.wavelengths_nm) > 0)
    assert np.all(srf.responses >= 0) and np.all(srf.responses.max(axis=1) > 0)
    # Red peaks at longer wavelengths than blue for every camera.
    peaks = srf.wavelengths_nm[np.argmax(srf.responses, axis=1)]
    assert peaks[0] > peaks[2]


@needs_data
def test_houston_scene_rgb_from_real_srf() -> None:
    scene = np.load(DATA / "scenes" / "houston2018_casi48.npz")
    cube = scene["cube"][:16, :16].transpose(2, 0, 1)
    srf = load_srf_csv(SRF_DIR / "camera_nikon5100_npl.csv")
    rgb, coverage = simulate_rgb_from_srf(cube, scene["wavelengths_nm"], srf)
    assert rgb.shape == (3, 16, 16) and np.all(coverage > 0.99)
    # A weighted average of the spectrum stays inside its range at every pixel.
    assert np.all(rgb >= cube.min(axis=0) - 1e-3) and np.all(rgb <= cube.max(axis=0) + 1e-3)


def test_csv_without_blue_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "two_channels.csv"
    path.write_text("# my camera\nwavelength_nm,red,green\n400,0.1,0.2\n410,0.2,0.3\n")
    with pytest.raises(ValueError) as error:
        load_srf_csv(path)
    assert "two_channels.csv" in str(error.value) and "blue" in str(error.value)


def test_csv_in_micrometres_with_plain_header(tmp_path: Path) -> None:
    path = tmp_path / "micro.csv"
    path.write_text("wavelength_um,b,g,r\n0.41,1,0,0\n0.40,0.5,0.1,0\n0.42,0,1,1\n")
    srf = load_srf_csv(path)
    np.testing.assert_allclose(srf.wavelengths_nm, [400.0, 410.0, 420.0])
    np.testing.assert_allclose(srf.responses, [[0, 0, 1], [0.1, 0, 1], [0.5, 1, 0]])
