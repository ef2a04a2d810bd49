"""The plan of one raster inference run: a frozen value computed by ``make_plan`` from the input's
description, what the plan needs to know about the model (``ModelFacts``, read from its config) and
the caller's settings, without torch, files or side effects.

Tiling
    The raster is tiled as if extended by ``margin`` mirrored pixels on every side (half the overlap,
    or the model's context radius if larger: ``windows.border_margin``), so its own border gets the
    context a seam between two tiles gets. ``inset``: the context radius of a cascade of local
    networks; their blending skips each tile's pixels whose context crosses its edge.
    ``network_size``: a tile padded by reflection to the network's size multiple.

Channels
    A tile's result carries the full bands (the mean over samples), then the stage-1 bands if asked,
    then the per-band variance between samples if an uncertainty output is asked (written as its
    square root, the standard deviation; for 8-bit input whose decoding ``auto`` guessed, plus the
    squared difference from the estimate of the other reading, ``uncertainty_has_decoding``):
    ``ChannelLayout``. When the output's band set is a sensor's (``engine.band_sets``), its bands are
    computed from the full bands as the pixels are written and follow the rest
    (``ChannelLayout.sensor``). Each output file takes one slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from engine.band_sets import MODEL_GRID, BandSet
from engine.config import GAUSSIAN_95, BundleConfig, SamplerConfig, override_sampler
from engine.errors import InputError
from engine.radiometry import decoding_is_guessed
from engine.raster.io import InputInfo, output_nodata
from engine.raster.windows import Tile, TileGrid, border_margin, padded_size, tile_grid
from engine.settings import InferenceSettings, check_overlap

CUDA_BATCH = 8  # tiles per network call on a GPU unless the caller asks otherwise (1 on the CPU)


@dataclass(frozen=True)
class ModelFacts:
    """What planning needs to know about a model. ``of(config)`` reads it from a bundle config (its
    network classes give the size multiple and the context radius, so that needs torch); tests may
    write it down directly."""

    name: str
    wavelengths_nm: Tuple[float, ...]
    fwhm_nm: Optional[Tuple[float, ...]]
    stage1_indices: Tuple[int, ...]
    input_bands: int
    size_multiple: int
    context_radius: int  # 0: the output at a pixel depends on the whole tile
    inference_tile: int
    sampler: SamplerConfig  # the model's own sampler settings
    interval95_half_width: float = GAUSSIAN_95  # in the uncertainty output's standard deviations

    @classmethod
    def of(cls, config: BundleConfig) -> "ModelFacts":
        return cls(name=config.name, wavelengths_nm=tuple(float(w) for w in config.wavelengths_nm),
                   fwhm_nm=tuple(float(f) for f in config.fwhm_nm) if config.fwhm_nm else None,
                   stage1_indices=tuple(config.stage1_indices),
                   input_bands=config.stage1.cond_channels(config.stage1.out_channels),
                   size_multiple=config.size_multiple, context_radius=config.context_radius or 0,
                   inference_tile=config.inference_tile, sampler=config.sampler,
                   interval95_half_width=config.interval95_half_width)

    @property
    def band_count(self) -> int:
        return len(self.wavelengths_nm)


@dataclass(frozen=True)
class Tiling:
    """How the raster (``height`` x ``width``) is cut into tiles; see the module docstring."""

    height: int
    width: int
    grid: TileGrid
    margin: int
    inset: int
    tile: int
    overlap: int
    network_size: Tuple[int, int]

    @property
    def tile_size(self) -> Tuple[int, int]:
        """(height, width) of every tile of the grid."""
        return self.grid.row_spans[0][1], self.grid.col_spans[0][1]

    def raster_origin(self, tile: Tile) -> Tuple[int, int]:
        """The raster pixel at the tile's top left (negative inside the mirrored margin); noise is
        keyed by it, so it does not depend on the margin."""
        return tile.row_off - self.margin, tile.col_off - self.margin

    def on_raster(self, row_off: int, col_off: int, height: int, width: int):
        """The part of a rectangle of the extended grid that lies on the raster: (rows, cols) slices
        into the rectangle and the raster pixel of their top left, or None if none of it does."""
        rows = slice(max(0, self.margin - row_off), min(height, self.height + self.margin - row_off))
        cols = slice(max(0, self.margin - col_off), min(width, self.width + self.margin - col_off))
        if rows.start >= rows.stop or cols.start >= cols.stop:
            return None
        return rows, cols, row_off + rows.start - self.margin, col_off + cols.start - self.margin


@dataclass(frozen=True)
class ChannelLayout:
    """Where each product lies in a tile result's channels; see the module docstring."""

    full: slice
    stage1: Optional[slice]
    uncertainty: Optional[slice]
    sensor: Optional[slice] = None  # added when pixels are written, after the tile result's channels

    @property
    def total(self) -> int:
        """Channels of a tile result."""
        return max(s.stop for s in (self.full, self.stage1, self.uncertainty) if s is not None)

    @property
    def written(self) -> int:
        """Channels of the pixels handed to the writer (the sensor bands included)."""
        return self.sensor.stop if self.sensor is not None else self.total

    @property
    def means(self) -> slice:
        """The channels holding means (model units, until converted): all but the variance."""
        return slice(0, self.uncertainty.start if self.uncertainty is not None else self.total)


@dataclass(frozen=True)
class OutputPlan:
    """One output file: where it goes, which channels and wavelengths it takes, what it holds."""

    parameter: str  # the settings field that named it: "output", "stage1_output" or "uncertainty_output"
    destination: Path
    channels: slice
    wavelengths_nm: Tuple[float, ...]
    fwhm_nm: Optional[Tuple[float, ...]]
    product: str  # the SCDM_PRODUCT tag
    band_names: Optional[Tuple[str, ...]] = None  # a sensor's band names; None: "Band N"

    @property
    def band_count(self) -> int:
        return len(self.wavelengths_nm)


@dataclass(frozen=True)
class InferencePlan:
    tiling: Tiling
    layout: ChannelLayout
    stage1_bands: Tuple[int, ...]  # indices of the stage-1 bands in the full band grid
    outputs: Tuple[OutputPlan, ...]
    sampler: SamplerConfig
    samples: int
    seed: int
    batch: int
    nodata: Optional[float]
    band_set: Optional[BandSet] = None  # the output's sensor bands (None: the model's grid)
    # The uncertainty output also holds the difference between the sRGB reading ``auto`` guessed for
    # 8-bit input and a linear-stretch reading (``engine.radiometry.decoding_variance``).
    uncertainty_has_decoding: bool = False

    @property
    def tiles_in_flight(self) -> int:
        """Tiles allowed between reading and blending: two batches, so that a runner may hold one
        while the next is read."""
        return 2 * self.batch


def make_plan(info: InputInfo, model: ModelFacts, settings: InferenceSettings, device: str,
              band_set: Optional[BandSet] = None) -> InferencePlan:
    """The plan for running ``model`` on ``info`` with ``settings`` on ``device`` (a resolved device:
    "cpu", "cuda", "cuda:N"), its output holding ``band_set``'s bands (None: the model's, and
    ``settings.band_set`` must say so). Raises ``InputError`` for a model or settings that do not fit."""
    _check_model(info, model, settings, band_set)
    layout = channel_layout(model.band_count, len(model.stage1_indices), settings, band_set)
    with_decoding = layout.uncertainty is not None and decoding_is_guessed(settings.radiometry, info.dtype)
    return InferencePlan(
        tiling=plan_tiling(info, model, settings), layout=layout, stage1_bands=model.stage1_indices,
        outputs=plan_outputs(model, settings, layout, band_set, with_decoding),
        sampler=sampler_settings(model.sampler, settings), samples=settings.samples, seed=settings.seed,
        batch=settings.batch if settings.batch is not None else (CUDA_BATCH if device.startswith("cuda") else 1),
        nodata=output_nodata(info), band_set=band_set, uncertainty_has_decoding=with_decoding,
    )


def _check_model(info: InputInfo, model: ModelFacts, settings: InferenceSettings, band_set: Optional[BandSet]) -> None:
    if (band_set is None) != (settings.band_set == MODEL_GRID):
        raise ValueError(f"band set {settings.band_set!r} asked but {band_set!r} given")  # a caller's mistake
    if band_set is not None and len(band_set.matrix[0]) != model.band_count:
        raise ValueError(f"band set made for {len(band_set.matrix[0])} bands, model has {model.band_count}")
    if model.input_bands != len(info.bands):
        raise InputError(f"model '{model.name}' takes {model.input_bands} input bands but {len(info.bands)} were "
                         f"chosen ({','.join(map(str, info.bands))}): use a model made for RGB input or choose "
                         f"{model.input_bands} bands", parameter="model")
    expected = settings.expected_band_count
    produced = model.band_count if band_set is None else len(band_set.band_names)
    if expected is not None and expected != produced:
        raise InputError(f"model '{model.name}' produces {produced} bands but {expected} were expected: "
                         "choose a model with that band count or drop the expectation", parameter="model")


def sampler_settings(model_sampler: SamplerConfig, settings: InferenceSettings) -> SamplerConfig:
    """The model's sampler with the caller's overrides; tiles need the per-pixel truncation scope.
    ``override_sampler`` raises ``InputError`` naming the refused setting (sampler, steps or pdt)."""
    return override_sampler(model_sampler, settings.sampler, settings.steps, settings.guidance, settings.pdt,
                            guidance_stage1=settings.guidance_stage1,
                            truncation_scope="pixel")


def _network_size(tile_size: Tuple[int, int], multiple: int) -> Tuple[int, int]:
    # Tiles are padded (by reflection) to a multiple of the network's downsampling factor, and to
    # at least twice that (and 16 px), so that normalisation layers still see several pixels at the
    # bottleneck even for a 1 x 1 raster.
    least = max(2 * multiple, 16)
    return padded_size(max(tile_size[0], least), multiple), padded_size(max(tile_size[1], least), multiple)


def plan_tiling(info: InputInfo, model: ModelFacts, settings: InferenceSettings) -> Tiling:
    tile = model.inference_tile if settings.tile is None else settings.tile
    overlap = settings.overlap
    check_overlap(overlap, tile)
    inset = model.context_radius
    margin = max(border_margin(overlap), inset)
    grid = tile_grid(info.height + 2 * margin, info.width + 2 * margin, tile, overlap)
    if inset and len(grid) > 1 and overlap < 2 * inset + 1:
        least = 2 * inset + 1
        fix = f"use an overlap of at least {least} px" + \
            ("" if least <= tile // 2 else f" with a tile of at least {2 * least} px")
        raise InputError(f"overlap {overlap} px is too small for model '{model.name}', whose output at a pixel "
                         f"depends on {inset} px of context on each side: {fix} (e.g. {least}) so that tiles "
                         "join exactly", parameter="overlap")
    tile_size = grid.row_spans[0][1], grid.col_spans[0][1]
    return Tiling(height=info.height, width=info.width, grid=grid, margin=margin, inset=inset, tile=tile,
                  overlap=overlap, network_size=_network_size(tile_size, model.size_multiple))


def channel_layout(full_bands: int, stage1_bands: int, settings: InferenceSettings,
                   band_set: Optional[BandSet] = None) -> ChannelLayout:
    full = slice(0, full_bands)
    stage1 = slice(full_bands, full_bands + stage1_bands) if settings.stage1_output is not None else None
    end = stage1.stop if stage1 is not None else full.stop
    uncertainty = slice(end, end + full_bands) if settings.uncertainty_output is not None else None
    end = uncertainty.stop if uncertainty is not None else end
    sensor = slice(end, end + len(band_set.band_names)) if band_set is not None else None
    return ChannelLayout(full, stage1, uncertainty, sensor)


def plan_outputs(model: ModelFacts, settings: InferenceSettings, layout: ChannelLayout,
                 band_set: Optional[BandSet] = None, with_decoding: bool = False) -> Tuple[OutputPlan, ...]:
    wavelengths, fwhm, samples = model.wavelengths_nm, model.fwhm_nm, settings.samples
    product = "mean of samples" if samples > 1 else "sample"
    if band_set is None:
        outputs = [OutputPlan("output", Path(settings.output).expanduser(), layout.full, wavelengths, fwhm, product)]
    else:
        outputs = [OutputPlan("output", Path(settings.output).expanduser(), layout.sensor, band_set.wavelengths_nm,
                              band_set.fwhm_nm, f"{product}, {band_set.name} bands", band_set.band_names)]
    if layout.stage1 is not None:
        picked = model.stage1_indices
        outputs.append(OutputPlan("stage1_output", Path(settings.stage1_output).expanduser(), layout.stage1,
                                  tuple(wavelengths[i] for i in picked),
                                  tuple(fwhm[i] for i in picked) if fwhm else None, "stage-1 estimate"))
    if layout.uncertainty is not None:
        outputs.append(OutputPlan("uncertainty_output", Path(settings.uncertainty_output).expanduser(),
                                  layout.uncertainty, wavelengths, fwhm,
                                  f"per-band standard deviation of {samples} samples"
                                  + (" and of the 8-bit input read as sRGB or as a linear stretch" if with_decoding
                                     else "")
                                  + f"; central 95 % interval: +/- {model.interval95_half_width:.2f} of it"))
    return tuple(outputs)
