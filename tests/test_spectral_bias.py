"""benchmarks.spectral_bias: the per-band shape bias and the pixel kinds in closed form."""

from __future__ import annotations

import numpy as np

from benchmarks.spectral_bias import pixel_kinds, shape_bias


def test_shape_bias_ignores_brightness_and_signs_the_band_that_is_too_low():
    truth = np.ones((3, 2, 2))
    estimate = np.stack([np.full((2, 2), 0.5), np.ones((2, 2)), np.full((2, 2), 1.5)]) * 7.0
    valid = np.ones((2, 2), bool)
    np.testing.assert_allclose(shape_bias(truth, estimate, valid), [-0.5, 0.0, 0.5])
    np.testing.assert_allclose(shape_bias(truth, 3.0 * truth, valid), 0.0)


def test_pixel_kinds_split_by_the_truths_ndvi():
    wavelengths = np.array([660.0, 860.0])
    truth = np.array([[[0.1, 0.3, 0.3]], [[0.5, 0.45, 0.3]]])  # NDVI 0.67, 0.2, 0
    kinds = pixel_kinds(truth, wavelengths, np.ones((1, 3), bool))
    assert kinds["vegetated"].tolist() == [[True, False, False]]
    assert kinds["mixed"].tolist() == [[False, True, False]]
    assert kinds["non-vegetated"].tolist() == [[False, False, True]]
