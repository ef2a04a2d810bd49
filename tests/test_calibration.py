"""The bundle's per-band uncertainty calibration scales the K-sample standard deviation and leaves the
mean estimate alone; a wrong calibration is refused when the bundle is read."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from engine.bundle import default_bundle_path, load_bundle
from engine.raster import infer_raster


def _run(cascade, source, tmp_path, name):
    out, unc = tmp_path / f"{name}.tif", tmp_path / f"{name}_std.tif"
    infer_raster(source, out, model=cascade, samples=3, uncertainty_output=unc, sampler="dpmpp", steps=3,
                 device="cpu")
    with rasterio.open(out) as mean, rasterio.open(unc) as std:
        return mean.read(), std.read()


def test_calibration_scales_the_spread_and_not_the_mean(tmp_path):
    if not default_bundle_path().exists():
        pytest.skip("no bundled model")
    codes = np.random.default_rng(0).integers(40, 200, size=(3, 12, 10)).astype(np.uint8)
    source = tmp_path / "rgb.tif"
    with rasterio.open(source, "w", driver="GTiff", width=10, height=12, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(codes)
    raw = load_bundle(default_bundle_path())
    raw.config = replace(raw.config, uncertainty_scale=None)
    calibrated = copy.copy(raw)
    factors = np.linspace(0.5, 3.0, raw.config.band_count)
    calibrated.config = replace(raw.config, uncertainty_scale=tuple(float(f) for f in factors))
    mean_raw, std_raw = _run(raw, source, tmp_path, "raw")
    mean_cal, std_cal = _run(calibrated, source, tmp_path, "calibrated")
    np.testing.assert_array_equal(mean_cal, mean_raw)
    np.testing.assert_allclose(std_cal, std_raw * factors[:, None, None], rtol=1e-4, atol=1e-7)


def test_a_calibration_of_the_wrong_length_is_refused():
    config = load_bundle(default_bundle_path()).config if default_bundle_path().exists() else None
    if config is None:
        pytest.skip("no bundled model")
    with pytest.raises(ValueError, match="uncertainty_scale"):
        replace(config, uncertainty_scale=(1.0, 2.0)).validate()
