"""Typed configuration of a model bundle, saved as JSON beside the weights, and the strict loader
that every config (a bundle's and a training run's) is read with.

Every dataclass round-trips through ``to_dict`` / ``from_dict``. ``from_dict`` refuses unknown or
missing fields and values of the wrong type, so a foreign or damaged ``config.json`` fails loudly
instead of loading half a model. How a field is read comes from its type hint: a dataclass field
is loaded recursively, a tuple from a JSON list, a ``Literal`` is a choice, a ``Path`` is resolved
against the config file's folder. Choices are checked in one place, ``check_choice``, both when a
config is loaded and when one is made in code (``StrictConfig.__post_init__``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Tuple, Union

import numpy as np

from engine.diffusion import sampler_catalog
from engine.errors import InputError
from engine.input_transform import (CHROMATIC_CHANNELS, ImageStatistics, affine_statistics, chromatic_condition,
                                    chromatic_scale, chromatic_statistics)

FORMAT_VERSION = 3
# Bundle format versions this engine reads: 2 adds mean networks and the chromatic normalisation, 3 the
# calibrated 95 % interval (uncertainty_interval95).
READABLE_FORMAT_VERSIONS = (1, 2, 3)
# the half-width of a Gaussian's central 95 % interval, in standard deviations
GAUSSIAN_95 = 1.959964

Parameterisation = Literal["eps", "edm"]
# What a stage is conditioned on: stage 1 on the RGB, stage 2 on stage 1's bands (and the RGB).
StageCondition = Literal["rgb", "stage1", "stage1+rgb"]


def choice_message(name: str, value: Any, choices: Sequence) -> str:
    return f"unknown {name} {value!r}: use {' or '.join(str(c) for c in choices)}"


def check_choice(name: str, value: Any, choices: Sequence) -> Any:
    """``value`` when it is one of ``choices``; else a ValueError naming the setting and the choices."""
    if value not in choices:
        raise ValueError(choice_message(name, value, choices))
    return value


@dataclass(frozen=True)
class _Source:
    """Where a config is being read from, for error messages and relative paths."""

    where: str
    relative_to: Optional[Path]

    def error(self, key: Tuple[str, ...], message: str) -> ValueError:
        place = f"{self.where} ({'.'.join(key)})" if key else self.where
        return ValueError(f"{place}: {message}")


def from_dict(cls, data: Any, where: str = "config", relative_to: Optional[Path] = None):
    """A ``cls`` (a dataclass) from parsed JSON, read by its fields' type hints.

    ``where`` names the source in errors; relative ``Path`` fields are resolved against ``relative_to``.
    """
    return _load_dataclass(cls, data, _Source(where, relative_to), ())


def _load_dataclass(cls, data: Any, source: _Source, key: Tuple[str, ...]):
    if not isinstance(data, dict):
        raise source.error(key, f"expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise source.error(key, _unknown_fields_message(unknown, list(fields)))
    hints = _type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _load(hints[name], data[name], source, key + (name,))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise source.error(key, f"missing field '{name}'")
    return cls(**values)


def _unknown_fields_message(unknown: list, valid: list) -> str:
    guesses = [f"'{name}' (did you mean '{close[0]}'?)" if close else f"'{name}'"
               for name in unknown for close in [difflib.get_close_matches(name, valid, n=1)]]
    return f"unknown field(s) {', '.join(guesses)}; valid fields: {', '.join(valid)}"


@functools.lru_cache(maxsize=None)
def _type_hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", dict: "object", list: "list", tuple: "list"}.get(type(value), type(value).__name__)


def _hint_kind(hint) -> str:
    """The JSON kind a type hint reads from."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) or hint is dict or origin is dict:
        return "object"
    if hint is tuple or origin is tuple:
        return "list"
    if origin is Literal:
        return _json_kind(typing.get_args(hint)[0])
    return {bool: "boolean", int: "number", float: "number", str: "string", Path: "string",
            type(None): "null"}.get(hint, "any")


def _load(hint, value: Any, source: _Source, key: Tuple[str, ...]):
    origin = typing.get_origin(hint)
    if origin is Union:
        return _load_union(typing.get_args(hint), value, source, key)
    kind = _hint_kind(hint)
    if kind == "any":
        return _plain(value)
    if _json_kind(value) != kind:
        raise source.error(key, f"expected {_describe(hint)}, got {_json_kind(value)} {value!r}")
    if dataclasses.is_dataclass(hint):
        return _load_dataclass(hint, value, source, key)
    if origin is Literal:
        try:
            # Named by its field, also inside a list (``stages.1`` is one of the stages).
            return check_choice(next(k for k in reversed(key) if not k.isdigit()), value, typing.get_args(hint))
        except ValueError as exc:
            raise source.error(key, str(exc)) from None
    if kind == "list":
        return _load_tuple(typing.get_args(hint), value, source, key)
    if hint is float:
        return float(value)
    if hint is int and not isinstance(value, int):
        raise source.error(key, f"expected an integer, got {value!r}")
    if hint is Path:
        path = Path(value)
        return path if path.is_absolute() or source.relative_to is None else (source.relative_to / path).resolve()
    return value


def _load_union(members: tuple, value: Any, source: _Source, key: Tuple[str, ...]):
    """The member whose JSON kind the value has (None for an Optional)."""
    for member in members:
        if _hint_kind(member) in (_json_kind(value), "any"):
            return _load(member, value, source, key)
    expected = " or ".join(_describe(m) for m in members)
    raise source.error(key, f"expected {expected}, got {_json_kind(value)} {value!r}")


def _load_tuple(args: tuple, value: list, source: _Source, key: Tuple[str, ...]) -> tuple:
    """A ``Tuple[X, ...]`` (any length), a ``Tuple[X, Y]`` (that length) or a bare ``tuple``."""
    if not args:
        return _plain(value)
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(value)
    if len(args) != len(value):
        raise source.error(key, f"expected {len(args)} values, got {len(value)}")
    return tuple(_load(arg, item, source, key + (str(i),)) for i, (arg, item) in enumerate(zip(args, value)))


def _plain(value: Any) -> Any:
    """An untyped value as the frozen configs hold it: lists as tuples, all the way down."""
    return tuple(_plain(v) for v in value) if isinstance(value, list) else value


def _describe(hint) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(hint))
    return {"object": "an object", "list": "a list", "number": "an integer" if hint is int else "a number",
            "string": "a string", "boolean": "true or false", "null": "null"}.get(_hint_kind(hint), str(hint))


@functools.lru_cache(maxsize=None)
def _choice_fields(cls) -> dict:
    """{field name: choices} of the fields typed ``Literal[...]`` or ``Optional[Literal[...]]``."""
    choices = {}
    for name, hint in _type_hints(cls).items():
        members = [m for m in typing.get_args(hint) if m is not type(None)] if typing.get_origin(hint) is Union else [hint]
        if len(members) == 1 and typing.get_origin(members[0]) is Literal:
            choices[name] = typing.get_args(members[0]) + ((None,) if len(typing.get_args(hint)) > 1 else ())
    return choices


class StrictConfig:
    """Base of the config dataclasses: choices are checked however a config is made, and
    ``from_dict`` / ``to_dict`` round-trip it through JSON."""

    def __post_init__(self) -> None:
        for name, choices in _choice_fields(type(self)).items():
            check_choice(name, getattr(self, name), choices)

    @classmethod
    def from_dict(cls, data: Any, where: str = "config", relative_to: Optional[Path] = None):
        return from_dict(cls, data, where, relative_to)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class UNetConfig(StrictConfig):
    """Width, depth and attention placement of one stage's network.

    ``architecture`` names the network class in ``engine.model.ARCHITECTURES``, which states what the
    other fields mean for it and which values it accepts (``validate_config``). "multiscale" is the
    paper's UNet (downsampling levels, GroupNorm, attention); ``paper()`` is Section III-B-1's network
    and the default is small enough to train on two CPU cores. "local" is the same two-branch
    topology at one resolution with per-pixel blocks (engine.model.local_unet): its only spatial
    operator is the condition's first convolution, a ``condition_window`` x ``condition_window``
    window (for "multiscale" that convolution's kernel).
    """

    base_channels: int = 32
    channel_multipliers: Tuple[int, ...] = (1, 2, 2)
    encoder_res_blocks: int = 1
    decoder_res_blocks: int = 2
    attention_downsample: Tuple[int, ...] = (4,)
    attention_heads: int = 4
    dropout: float = 0.0
    # The paper feeds the condition through the time-conditioned encoder; a time-free condition
    # branch lets samplers encode the condition once per tile instead of once per step.
    condition_uses_time: bool = False
    architecture: str = "multiscale"
    condition_window: int = 3

    @staticmethod
    def local(width: int = 128, blocks: int = 1, condition_window: int = 5, dropout: float = 0.0) -> "UNetConfig":
        return UNetConfig(base_channels=width, channel_multipliers=(1,), encoder_res_blocks=blocks,
                          decoder_res_blocks=blocks + 1, attention_downsample=(), dropout=dropout,
                          architecture="local", condition_window=condition_window)

    @staticmethod
    def paper() -> "UNetConfig":
        return UNetConfig(
            base_channels=128,
            channel_multipliers=(1, 2, 2, 2, 2, 2, 2),
            encoder_res_blocks=2,
            decoder_res_blocks=3,
            attention_downsample=(16,),
            attention_heads=4,
            dropout=0.0,
            condition_uses_time=True,
        )

    @property
    def network_class(self):
        """The network class ``architecture`` names (ValueError when none does)."""
        # Imported here: the networks import torch and this module, which stays torch-free.
        from engine.model import network_class

        return network_class(self.architecture)

    def validate(self) -> None:
        self.network_class.validate_config(self)

    @property
    def size_multiple(self) -> int:
        """What the tile edge must be a multiple of for this network."""
        return self.network_class.size_multiple(self)

    @property
    def context_radius(self) -> Optional[int]:
        """Pixels of condition on each side that the output at a pixel depends on; None when the
        output depends on the whole tile."""
        return self.network_class.context_radius(self)


@dataclass(frozen=True)
class ScheduleConfig(StrictConfig):
    kind: Literal["linear", "cosine"] = "linear"  # DDPM's linear or improved DDPM's cosine betas
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02


TRUNCATION_TARGETS = ("eps", "x_t", "x0", "none")


@dataclass(frozen=True)
class SamplerConfig:
    """How to sample both stages.

    ``name``: a sampler of ``engine.diffusion.sampler_catalog``.
    ``truncation_target``: "eps" clamps the guided noise (the paper), "x_t" clamps the state (the
    authors' code), "x0" clamps the predicted clean image (the form DDIM/DPM-Solver++ use), "none".
    ``truncation_scope``: "sample" takes the percentile over a whole tile (the paper); "pixel" over
    each pixel's spectrum, which no tile border can change. PDT clamps x_0 and x_t in units of each
    band's std (the stage's ``data_std``), so its floor of 1 means one std, as it does for the noise.
    ``guidance``: the ICMG scale of stage 2, and of stage 1 unless ``guidance_stage1`` is set (the
    paper's best setting, Table VI, guides stage 2 only: ``guidance_stage1`` 0).
    """

    name: str = "dpmpp"
    steps: int = 20
    guidance: float = 1.0
    guidance_stage1: Optional[float] = None
    pdt_stage1: Optional[float] = 0.96
    pdt_stage2: Optional[float] = 0.88
    truncation_target: str = "x0"
    truncation_scope: str = "sample"
    eta: float = 0.0

    def pdt_for_stage(self, stage: int) -> Optional[float]:
        return self.pdt_stage1 if stage == 1 else self.pdt_stage2

    def guidance_for_stage(self, stage: int) -> float:
        return self.guidance_stage1 if stage == 1 and self.guidance_stage1 is not None else self.guidance

    def validate(self) -> None:
        """InputError (a ValueError) naming the inference setting: these fields are also what a user
        overrides at inference time."""
        _sampler_info(self.name)
        if self.steps < 1:
            raise InputError(f"steps must be at least 1, got {self.steps}", parameter="steps")
        if self.truncation_target not in TRUNCATION_TARGETS:
            raise InputError(f"unknown truncation target '{self.truncation_target}': use "
                             f"{', '.join(TRUNCATION_TARGETS[:-1])} or {TRUNCATION_TARGETS[-1]}")
        if self.truncation_scope not in ("sample", "pixel"):
            raise InputError(f"unknown truncation scope '{self.truncation_scope}': use sample or pixel")
        for p in (self.pdt_stage1, self.pdt_stage2):
            if p is not None and not 0.0 < p <= 1.0:
                raise InputError(f"PDT percentile p_T must lie in (0, 1], got {p}", parameter="pdt")


def _sampler_info(name: str) -> sampler_catalog.SamplerInfo:
    try:
        return sampler_catalog.info(name)
    except ValueError as exc:
        raise InputError(str(exc), parameter="sampler") from None


def _pdt_override(value, default):
    if value is None:
        return default
    if value is False or (isinstance(value, str) and value.lower() in ("off", "none", "no")):
        return None
    return float(value)


def override_sampler(base: SamplerConfig, sampler: Optional[str] = None, steps: Optional[int] = None,
                     guidance: Optional[float] = None, pdt=(None, None), truncation_target: Optional[str] = None,
                     truncation_scope: Optional[str] = None, guidance_stage1: Optional[float] = None) -> SamplerConfig:
    """``base`` with the given fields replaced; None keeps a field, a PDT entry "off" or False disables it.

    Switching sampler without naming a truncation target picks the one that sampler is defined with
    (its catalogue line: the guided noise for the paper's DDPM, the predicted x_0 for DDIM and
    DPM-Solver++). Raises InputError naming the setting.
    """
    pdt = (None, None) if pdt is None else tuple(pdt)
    if len(pdt) != 2:
        raise InputError(f"pdt takes two values (stage 1, stage 2), got {pdt!r}", parameter="pdt")
    if truncation_target is None and sampler is not None and sampler != base.name:
        truncation_target = _sampler_info(sampler).truncation_target
    settings = dataclasses.replace(
        base,
        name=sampler or base.name,
        steps=int(steps) if steps is not None else base.steps,
        guidance=float(guidance) if guidance is not None else base.guidance,
        guidance_stage1=float(guidance_stage1) if guidance_stage1 is not None else base.guidance_stage1,
        pdt_stage1=_pdt_override(pdt[0], base.pdt_stage1),
        pdt_stage2=_pdt_override(pdt[1], base.pdt_stage2),
        truncation_target=truncation_target or base.truncation_target,
        truncation_scope=truncation_scope or base.truncation_scope,
    )
    settings.validate()
    return settings


@dataclass(frozen=True)
class Normalisation(StrictConfig):
    """How an RGB image becomes the networks' condition and their output returns to units
    (engine.input_transform holds the arithmetic).

    kind "fixed": v = (x - offset) / scale with the stored offset and scale (the paper: 3693 / 7410
    on Houston DN), the same map for the RGB condition and the output; "rgb_percentile": the same
    with ``scale`` derived from the input RGB (its ``percentile``-th value divided by ``target``),
    once per raster; "chromatic": the condition is the pixel's colour after per-channel dark-object
    subtraction (``dark_percentile``) and white point (``white_percentile``), and the output is the
    network's value times the pixel's brightness (at least ``brightness_floor`` x the image's white),
    so spectra come out in the input's scale and never negative. With ``brightness_input`` false the
    chromatic condition's brightness channel is held at 0: the network then maps colour alone, as
    the linear floor of benchmarks.generalisation does, and cannot learn how a training scene's
    materials rank in brightness against its white (which another scene does not share). With
    ``brightness_cap`` (a fraction of the image's white) the channel tells only the pixels darker
    than the cap apart (shade, water, where colour is unreliable) and reads the cap for the rest.
    """

    kind: Literal["fixed", "rgb_percentile", "chromatic"] = "fixed"
    offset: float = 0.0
    scale: float = 1.0
    percentile: float = 99.0
    target: float = 1.0
    dark_percentile: float = 1.0
    white_percentile: float = 99.0
    brightness_floor: float = 0.02
    brightness_input: bool = True
    brightness_cap: Optional[float] = None

    def __post_init__(self):
        super().__post_init__()
        if self.brightness_cap is not None and not 0 < self.brightness_cap <= 1:
            raise ValueError(f"brightness_cap is a fraction of the image's white in (0, 1], got {self.brightness_cap}")
        if self.brightness_cap is not None and not (self.kind == "chromatic" and self.brightness_input):
            raise ValueError("brightness_cap needs the chromatic normalisation with brightness_input true")

    @property
    def condition_channels(self) -> int:
        """Channels of the condition made from an RGB image."""
        return CHROMATIC_CHANNELS if self.kind == "chromatic" else 3

    @property
    def non_negative(self) -> bool:
        """Whether outputs are spectra per unit of brightness, which are never negative."""
        return self.kind == "chromatic"

    def statistics(self, rgb: np.ndarray, valid: Optional[np.ndarray] = None) -> ImageStatistics:
        """What the transform needs to know about a whole image (taken once per raster)."""
        if self.kind == "chromatic":
            return chromatic_statistics(rgb, valid, self.dark_percentile, self.white_percentile)
        return affine_statistics(self.kind, self.offset, self.scale, self.percentile, self.target, rgb, valid)

    def condition(self, rgb: np.ndarray, stats: ImageStatistics) -> np.ndarray:
        """(3, H, W) RGB -> (condition_channels, H, W) network condition."""
        if self.kind == "chromatic":
            condition = chromatic_condition(rgb, stats, self.brightness_cap)
            if not self.brightness_input:
                condition[3] = 0.0  # the channel stays, so networks keep their shapes across recipes
            return condition
        return (rgb - stats.offset) / stats.scale

    def output_scale(self, rgb: np.ndarray, stats: ImageStatistics):
        """(scale, offset) that take network values to output units: output = v * scale + offset,
        scale a (H, W) array for the chromatic transform, a number for the affine ones."""
        if self.kind == "chromatic":
            return chromatic_scale(rgb, stats, self.brightness_floor), 0.0
        return float(stats.scale), float(stats.offset)

    def to_model(self, x):
        return (x - self.offset) / self.scale

    def from_model(self, v):
        return v * self.scale + self.offset

    def resolved(self, rgb: np.ndarray, valid: Optional[np.ndarray] = None) -> "Normalisation":
        """The fixed affine normalisation to use for this RGB image (itself when kind is "fixed")."""
        if self.kind == "chromatic":
            raise ValueError("a chromatic normalisation is not an affine map: use statistics() and condition()")
        stats = self.statistics(rgb, valid)
        return self if self.kind == "fixed" else dataclasses.replace(self, kind="fixed", offset=0.0, scale=stats.scale)


ENCODINGS = ("linear", "srgb", "gamma", "stretch")


@dataclass(frozen=True)
class ImagingConditions(StrictConfig):
    """Ranges that training renderings are drawn from (engine.rgb_simulation): haze (path radiance
    at 550 nm as a share of the scene's white), per-channel white-balance error (log-normal sigma),
    the encodings (linear float; 8-bit sRGB, gamma or per-channel percentile stretch, which the
    engine decodes as sRGB), sensor noise, mild JPEG, blur and misregistration of the channels."""

    haze_probability: float = 0.7
    haze_max: float = 0.25
    white_balance_sigma: float = 0.1
    encodings: Tuple[str, ...] = ENCODINGS
    noise_max: float = 0.01
    jpeg_probability: float = 0.3
    jpeg_quality: Tuple[int, int] = (75, 95)
    blur_max: float = 0.7
    misregistration_max: float = 0.4

    def __post_init__(self):
        super().__post_init__()
        unknown = sorted(set(self.encodings) - set(ENCODINGS))
        if unknown or not self.encodings:
            raise ValueError(f"unknown encodings {unknown}: use some of {', '.join(ENCODINGS)}")


@dataclass(frozen=True)
class RGBSimulation(StrictConfig):
    """How training RGB was made from the cubes; also the default for evaluation.

    kind "bands": the RGB is three bands of the cube (``band_indices``, the paper's [4, 11, 22]).
    kind "srf": integration against camera responses (``cameras``: file stems in the training
    config's ``srf_dir``), with per-channel white-balance and global gain drawn from the given ranges.
    kind "imaging": what real imagery goes through (engine.rgb_simulation): the ``cameras``, the
    ``ir_cut_cameras`` behind an IR-cut filter, satellite red/green/blue bands (``satellite_bands``:
    "file.geojson:RED,GREEN,BLUE" feature names), the sRGB observer (``srgb_observer``: CIE 1931 under
    D65, from the same folder) and, for ``random_camera_share`` of the renderings, a random plausible
    camera; then the ``conditions``.
    """

    kind: Literal["bands", "srf", "imaging"] = "bands"
    band_indices: Tuple[int, int, int] = (4, 11, 22)
    cameras: Tuple[str, ...] = ()
    white_balance_range: Tuple[float, float] = (1.0, 1.0)
    gain_range: Tuple[float, float] = (1.0, 1.0)
    ir_cut_cameras: Tuple[str, ...] = ()
    satellite_bands: Tuple[str, ...] = ()
    random_camera_share: float = 0.0
    srgb_observer: bool = False
    conditions: ImagingConditions = field(default_factory=ImagingConditions)


PARAMETERISATIONS = typing.get_args(Parameterisation)


@dataclass(frozen=True)
class StageConfig(StrictConfig):
    """One diffusion stage: which bands it outputs and what conditions it.

    ``baseline`` (optional) is a per-pixel affine map from the condition channels to the output
    bands, (out, cond + 1) with the bias last, fitted by least squares on the training data. The
    diffusion then models the residual x_0 - baseline(c), a far smaller and easier signal than x_0
    itself. ``mean_network`` (optional) makes the stage mean-anchored instead: a deterministic
    network of that architecture, trained first to predict the conditional mean (MSE + the spectral
    angle), is the baseline the diffusion models the residual around; ``mean_activation`` "softplus"
    keeps its output positive (spectra per unit of brightness). ``x0_limit`` bounds the predicted residual at every sampler step (clip_denoised of
    improved-diffusion), set from the training residuals; None leaves it unbounded. ``data_std``
    (the residual's standard deviation, one per band) turns on the Gaussian skip path of the eps
    predictor and scales the EDM preconditioning. ``parameterisation`` is "eps" (the paper's noise
    prediction) or "edm" (x_0 prediction through EDM's preconditioning, engine.diffusion.preconditioning);
    bundles written before it existed are "eps".
    """

    output_indices: Tuple[int, ...]
    condition: StageCondition
    unet: UNetConfig = field(default_factory=UNetConfig)
    baseline: Optional[Tuple[Tuple[float, ...], ...]] = None
    x0_limit: Optional[float] = None
    data_std: Union[None, float, Tuple[float, ...]] = None
    parameterisation: Parameterisation = "eps"
    mean_network: Optional[UNetConfig] = None
    mean_activation: Literal["none", "softplus"] = "none"

    @property
    def out_channels(self) -> int:
        return len(self.output_indices)

    def cond_channels(self, stage1_bands: int, rgb_channels: int = 3) -> int:
        """Channels of the condition: the RGB's (as the normalisation makes it), stage 1's, or both."""
        return {"rgb": rgb_channels, "stage1": stage1_bands, "stage1+rgb": stage1_bands + rgb_channels}[self.condition]


def unknown_parameterisation(name: str) -> str:
    return choice_message("parameterisation", name, PARAMETERISATIONS)


@dataclass(frozen=True)
class BundleConfig(StrictConfig):
    name: str
    wavelengths_nm: Tuple[float, ...]
    fwhm_nm: Tuple[float, ...]
    stage1: StageConfig
    stage2: StageConfig
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    normalisation: Normalisation = field(default_factory=Normalisation)
    rgb_simulation: RGBSimulation = field(default_factory=RGBSimulation)
    output_units: str = "same units as the input RGB"
    description: str = ""
    training: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # The raster pipeline's tile edge unless the caller asks for another; training sets it from the
    # network classes (``default_inference_tile``), 64 is what bundles written before it meant.
    inference_tile: int = 64
    # The value a dropped condition is filled with: training's condition dropout and ICMG's
    # unconditional pass. 0 (a black pixel, the paper's) for bundles written before it existed; an
    # out-of-range value keeps "no condition" apart from every real pixel.
    null_condition: float = 0.0
    # The wavelengths (nm) the three input channels stand for, in the order the model takes them:
    # the pipeline checks a raster's red/green/blue against them so they are never swapped.
    input_wavelengths_nm: Tuple[float, float, float] = (640.0, 550.0, 460.0)
    # Per-band factors on the standard deviation of K samples, fitted on held-out scenes so that one
    # calibrated standard deviation covers 68 % of the error (benchmarks.calibration); None: raw spread.
    uncertainty_scale: Optional[Tuple[float, ...]] = None
    # The half-width, in calibrated standard deviations, of the interval that held 95 % of the error on
    # held-out scenes: their errors have heavier tails than a Gaussian, whose 1.96 it replaces. None: 1.96.
    uncertainty_interval95: Optional[float] = None

    @property
    def band_count(self) -> int:
        return len(self.wavelengths_nm)

    @property
    def stage1_indices(self) -> tuple:
        return tuple(self.stage1.output_indices)

    @property
    def size_multiple(self) -> int:
        return max(self.stage1.unet.size_multiple, self.stage2.unet.size_multiple)

    @property
    def context_radius(self) -> Optional[int]:
        """Pixels of RGB on each side that the cascade's output at a pixel depends on (stage 2 sees
        stage 1's output within its own window, so the radii add up); None when either stage's
        output depends on the whole tile."""
        radii = [self.stage1.unet.context_radius, self.stage2.unet.context_radius]
        return None if None in radii else sum(radii)

    @classmethod
    def from_dict(cls, data: Any, where: str = "config", relative_to: Optional[Path] = None) -> "BundleConfig":
        version = data.get("format_version") if isinstance(data, dict) else None
        if version not in READABLE_FORMAT_VERSIONS:
            raise ValueError(f"format_version {version!r} is not one this engine reads "
                             f"({', '.join(map(str, READABLE_FORMAT_VERSIONS))}): update the plugin")
        config = from_dict(cls, data, where, relative_to)
        config.validate()
        return config

    def validate(self) -> None:
        n_bands = self.band_count
        if len(self.fwhm_nm) != n_bands:
            raise ValueError(f"{len(self.fwhm_nm)} FWHM values for {n_bands} wavelengths")
        if self.stage2.out_channels != n_bands:
            raise ValueError(f"stage 2 outputs {self.stage2.out_channels} bands, the grid has {n_bands}")
        if any(not 0 <= i < n_bands for i in self.stage1.output_indices):
            raise ValueError("stage-1 band indices fall outside the band grid")
        if self.inference_tile < 8:
            raise ValueError(f"inference_tile must be at least 8 pixels, got {self.inference_tile}")
        for stage in (self.stage1, self.stage2):
            stage.unet.validate()
            if stage.mean_network is not None:
                stage.mean_network.validate()
                if stage.baseline is not None:
                    raise ValueError("a stage has either an affine baseline or a mean network, not both")
        self.sampler.validate()
        scale = self.uncertainty_scale
        if scale is not None and (len(scale) != n_bands or min(scale) <= 0):
            raise ValueError(f"uncertainty_scale needs {n_bands} positive factors, one per band")
        if self.uncertainty_interval95 is not None and not 1.0 < self.uncertainty_interval95 < 20.0:
            raise ValueError(f"uncertainty_interval95 is {self.uncertainty_interval95}: the 95 % interval's half-width "
                             "in standard deviations lies between 1 (the 68 % interval) and 20")

    @property
    def interval95_half_width(self) -> float:
        """The 95 % interval's half-width in (calibrated) standard deviations: fitted, or a Gaussian's."""
        return GAUSSIAN_95 if self.uncertainty_interval95 is None else self.uncertainty_interval95


def equal_spacing_fwhm(wavelengths_nm: Sequence[float]) -> tuple:
    """FWHM equal to the local band spacing, the usual assumption for a nominal grid."""
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    if wl.size < 2:
        return tuple(float(10.0) for _ in wl)
    spacing = np.gradient(wl)
    return tuple(float(round(abs(s), 4)) for s in spacing)


def houston_grid() -> tuple:
    """The paper's Houston grid: 48 bands from 374.4 nm in 14.3 nm steps."""
    return tuple(round(374.4 + 14.3 * i, 2) for i in range(48))


