"""Training data for real imagery: the chromatic input transform, camera rendering, the empirical
line, and synthetic scenes (engine.input_transform, engine.rgb_simulation, engine.imaging_data,
engine.synthetic_scenes). Closed forms where the arithmetic has one, properties elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import ImagingConditions, Normalisation, houston_grid
from conftest import REPO_ROOT
from engine.imaging_data import DARK_TARGET, ImagingSetOptions, ImagingTrainingSet, SceneSource, empirical_line
from engine.input_transform import (LOG_BRIGHTNESS_FLOOR, ImageStatistics, chromatic_condition, chromatic_scale,
                                    chromatic_statistics)
from engine.radiometry import linear_to_srgb, srgb_to_linear
from engine.rgb_simulation import camera_on_grid, random_camera, simulate_rgb, with_ir_cut
from engine.spectral import SpectralResponse
from engine.spectral_library import SpectralLibrary
from engine.train import bundle_config_from_training
from engine.training_config import load_training_config
from engine.synthetic_scenes import SyntheticScenes, crown_shading, make_layout

WAVELENGTHS = np.asarray(houston_grid())
VISIBLE = (WAVELENGTHS > 450) & (WAVELENGTHS < 680)
NEAR_INFRARED = (WAVELENGTHS > 760) & (WAVELENGTHS < 900)


def _leaf(scale: float) -> np.ndarray:
    """A green-leaf shape: low visible with a green bump, a red edge at 715 nm, a bright plateau."""
    green = 0.05 * np.exp(-0.5 * ((WAVELENGTHS - 550) / 25) ** 2)
    edge = 0.45 / (1 + np.exp(-(WAVELENGTHS - 715) / 12))
    return scale * (0.03 + green + edge)


def _library() -> SpectralLibrary:
    ramp = 0.1 + 0.3 * (WAVELENGTHS - WAVELENGTHS[0]) / np.ptp(WAVELENGTHS)
    spectra = np.stack([_leaf(1.0), _leaf(0.8), ramp, 0.8 * ramp, 0.5 * ramp + 0.1,
                        np.full(WAVELENGTHS.shape, 0.3), np.full(WAVELENGTHS.shape, 0.12)])
    groups = np.array(["vegetation", "vegetation", "soil", "soil", "npv", "built", "road"])
    return SpectralLibrary(spectra.astype(np.float32), np.ones(WAVELENGTHS.size, bool), groups)


def _scenes(canopy_structure: bool) -> SyntheticScenes:
    water = np.full((2, WAVELENGTHS.size), 0.02, np.float32)
    return SyntheticScenes(_library(), water, WAVELENGTHS, canopy_structure)


# -- the chromatic input transform -------------------------------------------------------------

def test_a_pixel_at_the_white_point_is_grey_with_unit_brightness():
    rgb = np.random.default_rng(0).uniform(0.05, 0.9, size=(3, 20, 20)).astype(np.float32)
    stats = chromatic_statistics(rgb, None, 1.0, 99.0)
    rgb[:, 0, 0] = np.asarray(stats.dark) + np.asarray(stats.white)
    condition = chromatic_condition(rgb, stats)
    np.testing.assert_allclose(condition[:3, 0, 0], 1.0, rtol=1e-5)
    assert condition[3, 0, 0] == pytest.approx(np.log(1 + LOG_BRIGHTNESS_FLOOR), rel=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.floats(1e-3, 1e3), st.integers(0, 2**31 - 1))
def test_the_condition_does_not_depend_on_exposure(exposure, seed):
    """Units and exposure are divided out: the same scene k times brighter gives the same condition."""
    rgb = np.random.default_rng(seed).uniform(0.01, 1.0, size=(3, 16, 16)).astype(np.float32)
    first = chromatic_condition(rgb, chromatic_statistics(rgb, None, 1.0, 99.0))
    brighter = (rgb * np.float32(exposure)).astype(np.float32)
    second = chromatic_condition(brighter, chromatic_statistics(brighter, None, 1.0, 99.0))
    np.testing.assert_allclose(second, first, atol=2e-4)


def test_the_output_scale_is_the_pixel_brightness_above_its_floor():
    rgb = np.zeros((3, 1, 3), np.float32)
    rgb[:, 0, 0] = (0.3, 0.6, 0.9)
    rgb[:, 0, 1] = (0.001, 0.001, 0.001)
    rgb[:, 0, 2] = (-0.5, 0.2, 0.2)  # negative noise counts as 0
    stats = chromatic_statistics(np.ones((3, 4, 4), np.float32), None, 1.0, 99.0)
    scale = chromatic_scale(rgb, stats, floor=0.02)
    np.testing.assert_allclose(scale[0], [0.6, 0.02 * stats.white_level, 0.4 / 3], rtol=1e-6)


# -- cameras and rendering ---------------------------------------------------------------------

def _gaussian_response(centres) -> SpectralResponse:
    wavelengths = np.arange(350.0, 1100.0, 1.0)
    curves = np.stack([np.exp(-0.5 * ((wavelengths - c) / 30) ** 2) for c in centres])
    return SpectralResponse(wavelengths, curves, "test camera")


def test_a_flat_reflectance_renders_grey_through_any_camera():
    cameras = [camera_on_grid(_gaussian_response((600, 540, 460)), WAVELENGTHS),
               random_camera(np.random.default_rng(3), WAVELENGTHS)]
    flat = np.full((WAVELENGTHS.size, 2, 2), 0.37, np.float32)
    for camera in cameras:
        np.testing.assert_allclose(camera.weights.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(camera.render(flat), 0.37, rtol=1e-5)


def test_the_ir_cut_filter_removes_near_infrared_light():
    response = _gaussian_response((760, 540, 460))
    cut = with_ir_cut(response)
    beyond = response.wavelengths_nm > 750
    assert cut.responses[:, beyond].max() < 0.02 * response.responses[:, beyond].max()
    below = response.wavelengths_nm < 600
    np.testing.assert_allclose(cut.responses[:, below], response.responses[:, below], rtol=1e-3)


@pytest.mark.parametrize("encoding", ["srgb", "gamma", "stretch"])
def test_8_bit_renderings_are_what_the_engine_decodes_from_codes(encoding):
    """An 8-bit rendering is the sRGB decoding of integer codes 0..255, as the engine reads 8-bit input."""
    conditions = ImagingConditions(encodings=(encoding,), jpeg_probability=0.0)
    cube = np.random.default_rng(1).uniform(0.02, 0.6, size=(WAVELENGTHS.size, 12, 12)).astype(np.float32)
    camera = camera_on_grid(_gaussian_response((600, 540, 460)), WAVELENGTHS)
    rgb, drawn = simulate_rgb(cube, camera, np.random.default_rng(2), conditions)
    assert drawn == encoding
    codes = linear_to_srgb(rgb) * 255.0
    np.testing.assert_allclose(codes, np.round(codes), atol=2e-3)
    np.testing.assert_allclose(srgb_to_linear(np.round(codes) / 255.0), rgb, atol=1e-6)


# -- the empirical line (radiance scenes to reflectance) ----------------------------------------

def test_the_empirical_line_maps_the_dark_and_bright_targets():
    rng = np.random.default_rng(4)
    reflectance = rng.uniform(0.02, 0.5, size=(WAVELENGTHS.size, 40, 40)).astype(np.float32)
    gains = np.linspace(800, 3000, WAVELENGTHS.size)[:, None, None]
    radiance = reflectance * gains + 150.0  # path radiance: an offset per band
    valid = np.ones((40, 40), bool)
    reference = np.full(WAVELENGTHS.size, 0.4)
    converted = empirical_line(radiance, valid, reference)
    pixels = converted.reshape(WAVELENGTHS.size, -1)
    np.testing.assert_allclose(np.percentile(pixels, 0.5, axis=1), DARK_TARGET, rtol=1e-4)
    brightness = radiance.reshape(WAVELENGTHS.size, -1).mean(axis=0)
    brightest = pixels[:, brightness >= np.percentile(brightness, 99)].mean(axis=1)
    np.testing.assert_allclose(brightest, reference, rtol=1e-4)


# -- synthetic scenes --------------------------------------------------------------------------

def test_crown_shading_closed_form():
    spectrum = _leaf(1.0).astype(np.float32)
    peak = spectrum.max()
    for sunlit in (0.2, 0.5, 1.0):
        shaded = crown_shading(spectrum[None], np.array([sunlit]))[0]
        np.testing.assert_allclose(shaded, spectrum * (sunlit + (1 - sunlit) * spectrum / peak), rtol=1e-6)
        assert shaded[np.argmax(spectrum)] == pytest.approx(peak)
    np.testing.assert_allclose(crown_shading(spectrum[None], np.array([1.0]))[0], spectrum, rtol=1e-6)
    flat = np.full((1, WAVELENGTHS.size), 0.3, np.float32)
    np.testing.assert_allclose(crown_shading(flat, np.array([0.3])), flat, rtol=1e-6)


def _tree_ratios(canopy_structure: bool, scenes: int = 24):
    """Near-infrared / visible of each scene's crowns, and each scene's crown cover."""
    generator = _scenes(canopy_structure)
    ratios, covers = [], []
    for seed in range(scenes):
        layout = make_layout(np.random.default_rng(seed), 48, dense_stands=canopy_structure)
        covers.append(float(np.mean(layout.labels == layout.materials.index("tree")))
                      if "tree" in layout.materials else 0.0)
        cube = generator.make(np.random.default_rng(seed), 48)
        if "tree" in layout.materials:
            crowns = layout.labels == layout.materials.index("tree")
            ratios.append(cube[NEAR_INFRARED][:, crowns].mean() / cube[VISIBLE][:, crowns].mean())
    return np.asarray(ratios), np.asarray(covers)


def test_crowns_with_their_own_shade_are_darker_in_the_visible_and_keep_their_near_infrared():
    plain, plain_cover = _tree_ratios(False)
    shaded, shaded_cover = _tree_ratios(True)
    leaf = _leaf(1.0)
    assert np.median(plain) == pytest.approx(leaf[NEAR_INFRARED].mean() / leaf[VISIBLE].mean(), rel=0.15)
    assert np.median(shaded) > 1.2 * np.median(plain)
    assert plain_cover.max() < 0.5 and shaded_cover.max() > 0.5  # dense stands appear only with the option


def test_synthetic_scenes_are_reproducible_and_physical():
    for canopy_structure in (False, True):
        generator = _scenes(canopy_structure)
        first = generator.make(np.random.default_rng(9), 32)
        np.testing.assert_array_equal(first, generator.make(np.random.default_rng(9), 32))
        assert first.shape == (WAVELENGTHS.size, 32, 32)
        assert np.isfinite(first).all() and first.min() >= 0 and first.max() < 1.5


def _grey_share(urban_share: float, scenes: int = 24) -> float:
    """The share of pixels whose near-infrared is at most 1.2 x their visible (roofs, pavement, shade)."""
    water = np.full((2, WAVELENGTHS.size), 0.02, np.float32)
    generator = SyntheticScenes(_library(), water, WAVELENGTHS, urban_share=urban_share)
    shares = []
    for seed in range(scenes):
        cube = generator.make(np.random.default_rng(seed), 48)
        ratio = cube[NEAR_INFRARED].mean(axis=0) / cube[VISIBLE].mean(axis=0)
        shares.append(np.mean(ratio <= 1.2))
    return float(np.mean(shares))


def test_urban_scenes_are_mostly_grey_and_rural_ones_mostly_not():
    rural, urban = _grey_share(0.0), _grey_share(1.0)
    assert rural < 0.35 < 0.5 < urban
    assert rural < _grey_share(0.4) < urban


def _impervious_share(layout) -> float:
    impervious = [label for label, material in enumerate(layout.materials) if material in ("built", "road")]
    return float(np.isin(layout.labels, impervious).mean())


def test_urban_layouts_are_mostly_impervious_with_shadows_and_rural_ones_are_not():
    for seed in range(12):
        layout = make_layout(np.random.default_rng(seed), 48, urban=True)
        assert _impervious_share(layout) > 0.3
        assert layout.shadow.any()
    rural = [make_layout(np.random.default_rng(seed), 48) for seed in range(12)]
    assert np.mean([_impervious_share(layout) for layout in rural]) < 0.3


def test_without_the_brightness_input_the_condition_is_the_colour_alone():
    rng = np.random.default_rng(3)
    rgb = rng.uniform(0.02, 0.9, size=(3, 16, 16)).astype(np.float32)
    with_brightness = Normalisation(kind="chromatic")
    colour_only = Normalisation(kind="chromatic", brightness_input=False)
    stats = with_brightness.statistics(rgb)
    full, colour = with_brightness.condition(rgb, stats), colour_only.condition(rgb, stats)
    np.testing.assert_array_equal(colour[:3], full[:3])
    assert np.ptp(full[3]) > 1.0 and not colour[3].any()
    # without a dark level, the same colour at half the brightness gives the same condition
    no_dark = ImageStatistics(white=stats.white, white_level=stats.white_level)
    dimmer = rgb.copy()
    dimmer[:, :8] *= 0.5
    np.testing.assert_allclose(colour_only.condition(dimmer, no_dark)[:, :8],
                               colour_only.condition(rgb, no_dark)[:, :8], rtol=1e-5)


def test_a_brightness_cap_tells_only_the_darker_pixels_apart():
    rng = np.random.default_rng(4)
    rgb = rng.uniform(0.0, 1.0, size=(3, 16, 16)).astype(np.float32)
    uncapped = Normalisation(kind="chromatic")
    capped = Normalisation(kind="chromatic", brightness_cap=0.2)
    stats = uncapped.statistics(rgb)
    full, limited = uncapped.condition(rgb, stats), capped.condition(rgb, stats)
    np.testing.assert_array_equal(limited[:3], full[:3])
    dark = full[3] < np.log(0.2 + LOG_BRIGHTNESS_FLOOR)
    assert dark.any() and (~dark).any()
    np.testing.assert_array_equal(limited[3][dark], full[3][dark])
    np.testing.assert_allclose(limited[3][~dark], np.log(0.2 + LOG_BRIGHTNESS_FLOOR), rtol=1e-6)


@pytest.mark.parametrize("fields, message", [({"brightness_cap": 0.0}, "fraction of the image's white"),
                                             ({"brightness_cap": 0.2, "brightness_input": False}, "brightness_input"),
                                             ({"brightness_cap": 0.2, "kind": "fixed"}, "chromatic")])
def test_a_brightness_cap_outside_its_range_or_without_the_channel_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        Normalisation(**{"kind": "chromatic", **fields})


def _first_rendering(brightness_jitter: float):
    config = bundle_config_from_training(load_training_config(REPO_ROOT / "configs" / "default_model.json"))
    camera = camera_on_grid(_gaussian_response((600, 540, 460)), config.wavelengths_nm)
    options = ImagingSetOptions(synthetic_share=1.0, synthetic_size=24, pool=1, refresh=1,
                                brightness_jitter=brightness_jitter)
    # a real scene only as the source of water spectra (synthetic_share 1: it is never rendered)
    cube = np.repeat(np.repeat(_leaf(1.0)[:, None, None], 8, axis=1), 8, axis=2).astype(np.float32)
    cube[:, :4] = np.where(WAVELENGTHS < 700, 0.05, 0.01)[:, None, None] * np.linspace(0.5, 1.0, 32).reshape(4, 8)
    water = SceneSource("pond", cube, np.ones((8, 8), bool), np.ones(WAVELENGTHS.size, bool), WAVELENGTHS)
    return ImagingTrainingSet(config, [water], _library(), [camera], options, seed=5).pool[0]


def test_brightness_jitter_shifts_a_renderings_brightness_channel_as_a_whole_and_nothing_else():
    plain, jittered = _first_rendering(0.0), _first_rendering(0.7)
    np.testing.assert_array_equal(jittered.cond[:3], plain.cond[:3])
    np.testing.assert_array_equal(jittered.target, plain.target)
    shift = jittered.cond[3] - plain.cond[3]
    assert abs(float(shift.mean())) > 1e-3
    np.testing.assert_allclose(shift, shift.mean(), atol=1e-5)
