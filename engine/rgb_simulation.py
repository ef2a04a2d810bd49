"""Training RGB that looks like what users feed the engine.

A spectral cube becomes an RGB image the way a real one is made, then goes through what the engine
does to a real input before the model sees it:

1. a camera: a response matrix on the model's band grid (the shared camera responses with an IR-cut
   filter where the sensor has none, satellite red/green/blue bands, or a random plausible camera);
   each row sums to one, so a flat reflectance gives a grey pixel (white balance for reflectance);
2. the atmosphere and the camera's colour handling: path radiance (haze: an additive, bluish
   offset), a white-balance error per channel;
3. an encoding: linear float, or 8-bit sRGB, a gamma curve, or a per-channel percentile stretch
   (distributed orthophotos and satellite quick-looks), with quantisation, sensor noise, mild JPEG,
   slight blur and misregistration of the channels;
4. the engine's own input handling for that data type (``engine.radiometry``): 8-bit input is
   decoded as sRGB, float input taken as linear. So a stretch or a gamma curve reaches the model as
   the engine would misread it, and the model learns to cope.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
from scipy import ndimage

from engine.config import ImagingConditions, RGBSimulation
from engine.radiometry import Radiometry, linear_to_srgb, linearise, resolve
from engine.spectral import SpectralResponse, _integration_weights, load_srf_csv


@dataclass(frozen=True)
class Camera:
    """A camera on the model grid: ``weights`` (3, C), rows red, green, blue, each summing to 1."""

    name: str
    weights: np.ndarray

    def render(self, cube: np.ndarray) -> np.ndarray:
        """(C, H, W) -> (3, H, W) linear RGB in the cube's units."""
        return np.tensordot(self.weights, cube, axes=1).astype(np.float32)


def camera_on_grid(response: SpectralResponse, wavelengths_nm: Sequence[float]) -> Camera:
    """A response integrated against the grid's bands (linear between band centres), rows normalised."""
    wavelengths = np.asarray(wavelengths_nm, dtype=np.float64)
    positive = SpectralResponse(response.wavelengths_nm, np.clip(response.responses, 0, None), response.name)
    weights, _ = _integration_weights(wavelengths, positive)
    negative = np.clip(-response.responses, 0, None)
    if negative.any():  # colour-matching functions (the sRGB observer) have negative lobes
        weights = weights - _integration_weights(wavelengths, SpectralResponse(
            response.wavelengths_nm, negative, response.name))[0]
    return Camera(response.name, (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32))


def with_ir_cut(response: SpectralResponse, cut_nm: float = 690.0, width_nm: float = 15.0) -> SpectralResponse:
    """The response behind an IR-cut filter (a logistic edge at ``cut_nm``), as consumer cameras have."""
    transmission = 1.0 / (1.0 + np.exp((response.wavelengths_nm - cut_nm) * 4.0 / width_nm))
    return SpectralResponse(response.wavelengths_nm, response.responses * transmission, f"{response.name} + IR cut")


def random_camera(rng: np.random.Generator, wavelengths_nm: Sequence[float]) -> Camera:
    """Gaussian red, green and blue responses with random centres and widths (20-60 nm FWHM)."""
    wavelengths = np.asarray(wavelengths_nm, dtype=np.float64)
    centres = np.array([rng.uniform(585, 625), rng.uniform(525, 560), rng.uniform(440, 475)])
    sigmas = rng.uniform(20, 60, size=3) / 2.355
    curves = np.exp(-0.5 * ((wavelengths[None] - centres[:, None]) / sigmas[:, None]) ** 2)
    return Camera("random", (curves / curves.sum(axis=1, keepdims=True)).astype(np.float32))


def _white(rgb: np.ndarray) -> float:
    level = float(np.percentile(rgb.mean(axis=0), 99.5))
    return level if level > 0 else 1.0


def _atmosphere(rgb: np.ndarray, rng: np.random.Generator, conditions: ImagingConditions) -> np.ndarray:
    white = _white(rgb)
    if rng.random() < conditions.haze_probability:
        # Rayleigh-like path radiance: lambda^-k with k in 1-4, at the channels' nominal wavelengths
        shape = (np.array([640.0, 550.0, 460.0]) / 550.0) ** -rng.uniform(1, 4)
        rgb = rgb + (rng.uniform(0, conditions.haze_max) * white * shape)[:, None, None]
    gains = np.exp(rng.normal(0, conditions.white_balance_sigma, size=3))
    return (rgb * gains[:, None, None]).astype(np.float32)


def _optics(rgb: np.ndarray, rng: np.random.Generator, conditions: ImagingConditions) -> np.ndarray:
    sigma = rng.uniform(0, conditions.blur_max)
    if sigma > 0.2:
        rgb = ndimage.gaussian_filter(rgb, (0, sigma, sigma), mode="reflect")
    shift = conditions.misregistration_max
    if shift > 0:
        for channel in (0, 2):
            rgb[channel] = ndimage.shift(rgb[channel], rng.uniform(-shift, shift, size=2), order=1, mode="nearest")
    noise = rng.uniform(0, conditions.noise_max) * _white(rgb)
    return (rgb + rng.normal(0, noise, size=rgb.shape)).astype(np.float32)


def _encode_8bit(rgb: np.ndarray, encoding: str, rng: np.random.Generator) -> np.ndarray:
    """Linear RGB -> 8-bit codes (float array of 0..255 integers)."""
    if encoding == "stretch":
        low = np.percentile(rgb, rng.uniform(0, 2), axis=(1, 2))[:, None, None]
        high = np.percentile(rgb, rng.uniform(98, 100), axis=(1, 2))[:, None, None]
        floor, span = rng.uniform(0, 0.2), rng.uniform(0.7, 1.0)
        encoded = floor + span * (1 - floor) * np.clip((rgb - low) / np.maximum(high - low, 1e-9), 0, 1)
    else:
        exposed = np.clip(rgb / (_white(rgb) / rng.uniform(0.7, 1.0)), 0, 1)
        if encoding == "srgb":
            encoded = linear_to_srgb(exposed)
        else:
            encoded = exposed ** (1.0 / rng.uniform(1.0, 2.4))
    return np.round(np.clip(encoded, 0, 1) * 255.0)


def _jpeg(codes: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.moveaxis(codes.astype(np.uint8), 0, -1)).save(buffer, "JPEG", quality=int(quality))
    buffer.seek(0)
    return np.moveaxis(np.asarray(Image.open(buffer), dtype=np.float32), -1, 0)


def simulate_rgb(cube: np.ndarray, camera: Camera, rng: np.random.Generator,
                 conditions: ImagingConditions = ImagingConditions()) -> Tuple[np.ndarray, str]:
    """(C, H, W) reflectance -> ((3, H, W) RGB as the model receives it, the encoding drawn).

    For 8-bit encodings the result is what ``engine.radiometry`` makes of the codes in ``auto`` mode.
    """
    rgb = _optics(_atmosphere(camera.render(cube), rng, conditions), rng, conditions)
    encoding = str(rng.choice(conditions.encodings))
    if encoding == "linear":
        return rgb, encoding
    codes = _encode_8bit(rgb, encoding, rng)
    if rng.random() < conditions.jpeg_probability:
        codes = _jpeg(codes, rng.integers(*conditions.jpeg_quality, endpoint=True))
    return linearise(codes, resolve(Radiometry.AUTO, "uint8"), "uint8"), encoding


def geojson_response(path: Path, band_names: Sequence[str]) -> SpectralResponse:
    """Red, green and blue bands of a sensor's EnMAP-Box response GeoJSON (features named like
    "B4 - Red (...)"; ``band_names`` are the names' first words, e.g. B4, B3, B2)."""
    features = json.loads(Path(path).read_text())["features"]
    by_name = {f["properties"]["name"].split()[0]: f["properties"]["response"] for f in features}
    missing = [name for name in band_names if name not in by_name]
    if missing:
        raise ValueError(f"{path} has no band(s) {missing}; it has {sorted(by_name)}")
    grid = np.arange(300.0, 2601.0)
    curves = np.array([np.interp(grid, by_name[n]["x"], by_name[n]["y"], left=0.0, right=0.0) for n in band_names])
    return SpectralResponse(grid, curves, f"{Path(path).stem}:{','.join(band_names)}")


# XYZ -> linear sRGB (IEC 61966-2-1)
XYZ_TO_SRGB = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])


def srgb_observer(cmf_csv: Path, illuminant_csv: Path) -> SpectralResponse:
    """The camera an sRGB image ideally comes from: the CIE 1931 observer under the illuminant
    (D65), mapped to linear sRGB. Its responses have negative lobes, as colour-matching functions do."""
    cmf = np.loadtxt(cmf_csv, delimiter=",", comments="#")
    light = np.loadtxt(illuminant_csv, delimiter=",", comments="#")
    weighted = cmf[:, 1:].T * np.interp(cmf[:, 0], light[:, 0], light[:, 1])
    return SpectralResponse(cmf[:, 0], XYZ_TO_SRGB @ weighted, "sRGB observer (CIE 1931, D65)")


def training_cameras(simulation: RGBSimulation, srf_dir: Path, wavelengths_nm: Sequence[float]) -> List[Camera]:
    """The named cameras an "imaging" simulation renders through, on the model grid."""
    srf_dir = Path(srf_dir)
    responses = [load_srf_csv(srf_dir / f"{name}.csv") for name in simulation.cameras]
    if simulation.srgb_observer:
        responses.append(srgb_observer(srf_dir / "cie1931_2deg_xyz_cmf.csv", srf_dir / "illuminant_D65.csv"))
    responses += [with_ir_cut(load_srf_csv(srf_dir / f"{name}.csv")) for name in simulation.ir_cut_cameras]
    for item in simulation.satellite_bands:
        file_name, _, bands = item.partition(":")
        responses.append(geojson_response(srf_dir / file_name, bands.split(",")))
    return [camera_on_grid(response, wavelengths_nm) for response in responses]
