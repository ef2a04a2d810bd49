"""What a caller chooses for one raster inference run, checked in one place.

``InferenceSettings`` is built once by each front end (``engine/raster/cli.py``, the QGIS adapter) and
passed to ``engine.raster.pipeline.run_inference``. It is checked when it is built: each refused value
raises ``InputError(..., parameter=<field name>)`` whose message names the problem and a value that
would be accepted. ``LIMITS`` holds the numeric ranges, so the command line, the QGIS parameters and
the engine use the same numbers. Checks that need the input raster, the model or the file system
(band numbers against the raster, the model's tile, writable folders) happen where those are known,
with the same field names.

This module imports only the standard library, numpy and engine modules that do the same: the QGIS
plugin may read ``LIMITS`` at load time, before it knows whether torch is installed.
"""

from __future__ import annotations

import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Tuple, Union

# Relative imports: the plugin may import this module as part of its own package (``scdm.engine``)
# before the engine is on ``sys.path``; both modules are standard library only.
from .band_sets import MODEL_GRID, check_band_set, parse_band_set
from .diffusion import sampler_catalog
from .errors import InputError
from .radiometry import Radiometry

DEFAULT_OVERLAP = 16  # pixels shared by neighbouring tiles unless the caller asks otherwise
DEFAULT_WRITER_BUDGET = 128 << 20  # bytes of unfinished output blocks held in memory before spilling
DEFAULT_RUNNER = "in-process"
CLUSTER_RUNNER = "dask"  # the runner a ``cluster`` setting selects
LOCAL_CLUSTER = "local"  # ``local:N``: a cluster of N worker processes on this machine
MAX_LOCAL_WORKERS = 1024
DEFAULT_SCHEDULER_PORT = 8786  # Dask's
PRECISIONS = ("fp32", "bf16", "fp16")  # float32, or autocast to bfloat16 / float16 (engine.raster.runners.precision)
OUTPUT_TYPES = ("float32", "float16", "uint16", "int16")  # engine.raster.formats.encoding stores each
PDT_OFF = "off"  # a PDT entry that switches truncation off for its stage

PdtChoice = Union[None, float, str]  # None: the model's own; PDT_OFF; or a percentile in (0, 1]


@dataclass(frozen=True)
class Limit:
    """The accepted range of one numeric setting (``high`` None: no upper bound)."""

    low: float
    high: Optional[float] = None
    whole: bool = True

    def nearest(self, value: float) -> float:
        """The accepted value closest to ``value`` (what an error message suggests)."""
        value = max(self.low, value)
        return value if self.high is None else min(self.high, value)

    def check(self, name: str, value, suggestion=None) -> None:
        """Refuse ``value`` outside the range; the message suggests ``suggestion`` (default: the
        nearest accepted value), which the caller makes valid for the other settings too."""
        kind = numbers.Integral if self.whole else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind):
            noun = "a whole number" if self.whole else "a number"
            raise InputError(f"{name} must be {noun}, got {value!r}: e.g. {_number(self.low)}", parameter=name)
        if self.low <= value and (self.high is None or value <= self.high):
            return
        allowed = f"at least {_number(self.low)}" if self.high is None else \
            f"from {_number(self.low)} to {_number(self.high)}"
        fix = self.nearest(value) if suggestion is None else suggestion
        raise InputError(f"{name} {_number(value)} is out of range: use a value {allowed}, e.g. {_number(fix)}",
                         parameter=name)


# The numeric ranges of InferenceSettings, by field name. Overlap is further capped at half the tile.
LIMITS: Mapping[str, Limit] = {
    "tile": Limit(8, 8192),
    "overlap": Limit(0, 4096),
    "steps": Limit(1, 1000),
    "guidance": Limit(0.0, 20.0, whole=False),
    "guidance_stage1": Limit(0.0, 20.0, whole=False),
    "pdt": Limit(0.0, 1.0, whole=False),  # a percentile p_T in (0, 1]; 0 is refused (use PDT_OFF)
    "seed": Limit(0, 2 ** 31 - 1),
    "batch": Limit(1, 1024),
    "samples": Limit(1, 64),
    "expected_band_count": Limit(1),
    "writer_memory_bytes": Limit(0),
}


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_overlap(overlap: int, tile: int) -> None:
    """Neighbouring tiles may share at most half a tile, else a pixel would lie in more than two."""
    if overlap > tile // 2:
        raise InputError(f"overlap {overlap} must lie between 0 and half the tile ({tile // 2}): "
                         f"e.g. {tile // 2}", parameter="overlap")


def parse_bands(bands) -> Tuple[int, ...]:
    """``"1,2,3"`` or a sequence of ints -> tuple of ints (their range is checked against the raster)."""
    if isinstance(bands, str):
        parts = [p.strip() for p in bands.split(",") if p.strip()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise InputError(f"cannot read band list '{bands}': give 1-based band numbers such as 1,2,3",
                             parameter="bands") from None
    try:
        return tuple(int(b) for b in bands)
    except (TypeError, ValueError):
        raise InputError(f"cannot read band list {bands!r}: give 1-based band numbers such as (1, 2, 3)",
                         parameter="bands") from None


_SCHEDULER_ADDRESS = re.compile(r"^(?:(?P<protocol>tcp|tls|ucx|ws|wss)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
                                r"(?::(?P<port>[0-9]{1,5}))?$")


CONSISTENCY_ESTIMATE = "estimate"


def parse_consistency(value) -> Optional[str]:
    """None / "" / "off" -> None; "estimate" or a file path as a string."""
    if value is None or str(value).strip().lower() in ("", "off", "none"):
        return None
    text = str(value).strip()
    return CONSISTENCY_ESTIMATE if text.lower() == CONSISTENCY_ESTIMATE else text


def parse_cluster(value) -> Optional[str]:
    """``None`` / ``""`` (run here), ``"local:N"`` or a Dask scheduler address, normalised to
    ``local:N`` or ``protocol://host:port`` (tcp and Dask's port 8786 when left out)."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    if text.lower().startswith(LOCAL_CLUSTER + ":"):
        count = text.split(":", 1)[1].strip()
        if not count.isdigit() or not 1 <= int(count) <= MAX_LOCAL_WORKERS:
            raise InputError(f"cannot read cluster '{text}': local:N takes a number of worker processes from 1 to "
                             f"{MAX_LOCAL_WORKERS}, e.g. local:2", parameter="cluster")
        return f"{LOCAL_CLUSTER}:{int(count)}"
    match = _SCHEDULER_ADDRESS.match(text)
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
        raise InputError(f"cannot read cluster '{text}': give local:N (N worker processes on this machine) or the "
                         f"address of a Dask scheduler, e.g. tcp://scheduler-host:{DEFAULT_SCHEDULER_PORT}",
                         parameter="cluster")
    return f"{match['protocol'] or 'tcp'}://{match['host']}:{match['port'] or DEFAULT_SCHEDULER_PORT}"


def input_path_problem(path) -> Optional[str]:
    """Why ``path`` cannot be an input raster, from the file system alone (None when GDAL may open
    it): the engine and the QGIS algorithm give these same messages. A ``/vsi...`` path is GDAL's own
    (a URL, an archive member) and is left to GDAL."""
    path = os.fspath(path)
    if path.startswith("/vsi"):
        return None
    if not os.path.exists(path):
        return f"input raster '{path}' does not exist: check the path"
    if os.path.isdir(path):
        return f"input '{path}' is a folder, not a raster file: give the path of a GeoTIFF or other GDAL raster"
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return f"input '{path}' is an empty file (0 bytes), not a raster: write or copy the raster again"
    if not os.access(path, os.R_OK):
        return f"input '{path}' cannot be read (permission denied): give a raster you can read"
    return None


def not_a_raster(path: str, reason: str) -> str:
    """The message for a file GDAL does not open as a raster, with GDAL's ``reason``."""
    return f"cannot read '{path}' as a raster ({reason}): give a GeoTIFF or another format GDAL opens"


def _path(value) -> Optional[str]:
    return None if value is None or value == "" else os.fspath(value)


def _pdt_entry(value) -> PdtChoice:
    if value is None:
        return None
    if value is False or (isinstance(value, str) and value.lower() in ("off", "none", "no")):
        return PDT_OFF
    LIMITS["pdt"].check("pdt", value)
    if value <= 0:
        raise InputError(f"pdt {_number(value)} is out of range: a percentile lies in (0, 1]; "
                         f"switch truncation off with '{PDT_OFF}', e.g. ({PDT_OFF}, 0.9)", parameter="pdt")
    return float(value)


@dataclass(frozen=True)
class InferenceSettings:
    """One raster inference run as the caller chose it; see the module docstring.

    ``model``: a bundle folder, None for the bundled model. ``tile`` None takes the model's own tile;
    ``sampler``, ``steps``, ``guidance`` (stage 2, and stage 1 unless ``guidance_stage1`` or the model
    sets stage 1's own), ``guidance_stage1`` and the ``pdt`` entries left None take the model's defaults (a
    pdt entry ``"off"`` switches truncation off for that stage). ``samples`` > 1 averages that many
    samples drawn with seeds ``seed, seed + 1, ...``; ``uncertainty_output`` then receives their
    per-band standard deviation. ``batch`` None: 8 tiles per network call on CUDA, 1 on the CPU.
    ``radiometry``: what the input's values mean (``engine.radiometry``): "auto", "linear" or "srgb".
    ``expected_band_count``: refuse a model with another number of output bands.
    ``cluster``: None runs here; ``"local:N"`` or a Dask scheduler address runs the tiles on a Dask
    cluster (``engine.raster.runners.dask_runner``, which it selects as the runner). ``precision``:
    "fp32", or "bf16" / "fp16" to run the networks under autocast (``engine.raster.runners.precision``).
    ``consistency``: None (or "off") leaves the spectra as the model gives them; "estimate" or a camera
    response CSV projects each output spectrum onto those that integrate to the input RGB exactly
    (``engine.consistency``), with the camera's response estimated from the image or read from the file.
    ``band_set``: the output's bands: "model" (the model's grid), a sensor of ``engine.band_sets.SENSORS``
    ("sentinel2", "landsat8-9") or a response CSV, each sensor band simulated from the model's spectrum.
    ``output_type``: how the outputs store values (``OUTPUT_TYPES``; ``engine.raster.formats.encoding``).
    ``overviews``: build internal overviews in GeoTIFF outputs (fast display of large outputs).
    """

    input: str
    output: str
    model: Optional[str] = None
    bands: Tuple[int, ...] = (1, 2, 3)
    tile: Optional[int] = None
    overlap: int = DEFAULT_OVERLAP
    sampler: Optional[str] = None
    steps: Optional[int] = None
    guidance: Optional[float] = None
    guidance_stage1: Optional[float] = None
    pdt: Tuple[PdtChoice, PdtChoice] = (None, None)
    seed: int = 0
    device: str = "auto"
    batch: Optional[int] = None
    samples: int = 1
    stage1_output: Optional[str] = None
    uncertainty_output: Optional[str] = None
    expected_band_count: Optional[int] = None
    writer_memory_bytes: int = DEFAULT_WRITER_BUDGET
    runner: str = DEFAULT_RUNNER
    radiometry: str = Radiometry.AUTO.value
    cluster: Optional[str] = None
    precision: str = PRECISIONS[0]
    consistency: Optional[str] = None
    band_set: str = MODEL_GRID
    output_type: str = OUTPUT_TYPES[0]
    overviews: bool = True

    def __post_init__(self):
        # Front ends hand over what they have (Paths, "1,2,3", lists); the fields hold one form.
        for name in ("input", "output", "model", "stage1_output", "uncertainty_output"):
            object.__setattr__(self, name, _path(getattr(self, name)))
        object.__setattr__(self, "bands", parse_bands(self.bands))
        object.__setattr__(self, "device", "auto" if self.device in (None, "") else str(self.device))
        object.__setattr__(self, "pdt", self._pdt_pair())
        object.__setattr__(self, "radiometry", Radiometry.parse(self.radiometry).value)
        object.__setattr__(self, "cluster", parse_cluster(self.cluster))
        object.__setattr__(self, "consistency", parse_consistency(self.consistency))
        object.__setattr__(self, "band_set", parse_band_set(self.band_set))
        if self.cluster is not None and self.runner == DEFAULT_RUNNER:
            object.__setattr__(self, "runner", CLUSTER_RUNNER)
        self.validate()

    def _pdt_pair(self) -> Tuple[PdtChoice, PdtChoice]:
        pair = (None, None) if self.pdt is None else tuple(self.pdt)
        if len(pair) != 2:
            raise InputError(f"pdt takes two values (stage 1, stage 2), got {self.pdt!r}: e.g. (0.96, 0.88)",
                             parameter="pdt")
        return _pdt_entry(pair[0]), _pdt_entry(pair[1])

    def validate(self) -> None:
        """Raise ``InputError(parameter=<field>)`` for the first refused value."""
        for name in ("input", "output"):
            if getattr(self, name) is None:
                raise InputError(f"no {name} path given: name the raster to {'read' if name == 'input' else 'write'}",
                                 parameter=name)
        for name, limit in LIMITS.items():
            value = getattr(self, name, None)
            if name not in ("pdt", "tile") and value is not None:
                limit.check(name, value)
        if self.tile is not None:
            tile_limit = LIMITS["tile"]
            # The suggested tile must also hold the overlap (at most half a tile).
            tile_limit.check("tile", self.tile, tile_limit.nearest(max(self.tile, 2 * self.overlap)))
            check_overlap(self.overlap, self.tile)
        if self.sampler is not None:
            self._check_sampler()
        if self.uncertainty_output is not None and self.samples < 2:
            raise InputError("an uncertainty output needs at least two samples (their standard deviation): "
                             "set samples to 2 or more, e.g. 4", parameter="samples")
        self._check_distinct_outputs()
        self._check_cluster_and_precision()
        self._check_consistency()
        self._check_band_set()
        if self.output_type not in OUTPUT_TYPES:
            raise InputError(f"unknown output type '{self.output_type}': use {', '.join(OUTPUT_TYPES)} (float32 keeps "
                             "full precision; float16 halves the file; uint16 / int16 store scaled integers)",
                             parameter="output_type")

    def _check_band_set(self) -> None:
        check_band_set(self.band_set)
        if self.band_set != MODEL_GRID and self.uncertainty_output is not None:
            # A sensor band's spread needs the samples' covariance across the model's bands, not their stds.
            raise InputError("the uncertainty output is given on the model's own bands only: choose the model's "
                             f"band set ({MODEL_GRID}) or leave the uncertainty output empty", parameter="band_set")

    def _check_consistency(self) -> None:
        if self.consistency not in (None, CONSISTENCY_ESTIMATE) and not Path(self.consistency).is_file():
            raise InputError(f"camera response file {self.consistency} not found: give a CSV (wavelength in nm, "
                             f"red, green, blue), or '{CONSISTENCY_ESTIMATE}' to estimate the response from the "
                             "image, or 'off'", parameter="consistency")

    def _check_cluster_and_precision(self) -> None:
        if self.runner == CLUSTER_RUNNER and self.cluster is None:
            raise InputError("the dask runner needs a cluster: set cluster to local:N or a Dask scheduler address, "
                             f"e.g. local:2 or tcp://scheduler-host:{DEFAULT_SCHEDULER_PORT}", parameter="cluster")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision '{self.precision}': use {', '.join(PRECISIONS)} (fp32 unless the "
                             "device is a GPU)", parameter="precision")

    def _check_sampler(self) -> None:
        try:
            sampler_catalog.info(self.sampler)
        except ValueError as exc:
            raise InputError(str(exc), parameter="sampler") from None

    def _check_distinct_outputs(self) -> None:
        seen = {}
        for name in ("output", "stage1_output", "uncertainty_output"):
            path = getattr(self, name)
            if path is None:
                continue
            key = Path(path).expanduser().resolve()
            if key in seen:
                raise InputError(f"the {seen[key]} and {name} paths are the same file '{path}': give each "
                                 "output its own file name (the output, stage-1 and uncertainty paths must differ)",
                                 parameter=name)
            seen[key] = name


@dataclass(frozen=True)
class Callbacks:
    """How a caller follows a run: ``progress(fraction, message)``, ``cancel() -> bool`` (checked
    between tiles and sampler steps) and ``log(message)``; each may be None."""

    progress: Optional[Callable[[float, str], None]] = None
    cancel: Optional[Callable[[], bool]] = None
    log: Optional[Callable[[str], None]] = None

    def tell(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(fraction, message)

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    def cancelled(self) -> bool:
        return self.cancel is not None and bool(self.cancel())
