"""The only place where the plugin touches the engine.

Everything here is imported at plugin load time, so it imports neither torch nor the engine at
module level: ``load_engine()`` does that inside ``processAlgorithm`` and turns a missing dependency
into a ``QgsProcessingException`` that names the exact command to install it. The exceptions are
the engine's sampler catalogue and its settings module (standard library and numpy only), which the
parameter lists, their ranges (``engine.settings.LIMITS``) and the input-path messages come from:
they are imported relative to the plugin package, so no ``sys.path`` change is needed and no other
package named ``engine`` can stand in for them.

Input rasters: QGIS opens a raster layer parameter's file when it checks the parameter, computing
statistics that GDAL then keeps in ``<input>.aux.xml`` and complaining about NaN or constant bands
("ERROR 1/5" lines). ``quiet_gdal_reads`` opens them without either (``inference.RasterFileParameter``),
and ``raster_problem`` says why a file that exists cannot be opened, instead of QGIS's "not found".
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import shlex
import sys
import sysconfig
import traceback
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import List, Mapping, Optional

from qgis.core import QgsProcessingException

from ..engine import band_sets as engine_band_sets
from ..engine import settings as engine_settings
from ..engine.diffusion import sampler_catalog

PLUGIN_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = PLUGIN_ROOT / "resources" / "models" / "scdm-default"
REQUIREMENTS = PLUGIN_ROOT / "requirements.txt"
CONSTRAINTS = PLUGIN_ROOT / "constraints.txt"

# Import name -> pip requirement, in the order they are checked.
DEPENDENCIES = (
    ("numpy", "numpy<2"),
    ("torch", "torch==2.13.0"),
    ("rasterio", "rasterio>=1.3,<2"),
    ("safetensors", "safetensors>=0.4"),
    ("matplotlib", "matplotlib>=3.6"),
)


def default_sampler_label() -> str:
    """The bundled model's default sampler in words ("DDIM, 2 steps"), read from its config.json
    without loading the model (the plugin must load where torch is missing); empty if it cannot be
    read or names a sampler this plugin does not know."""
    try:
        config = json.loads((DEFAULT_MODEL / "config.json").read_text())
        sampler = config["sampler"]
        return sampler_catalog.label(sampler["name"], int(sampler["steps"]), config["schedule"]["timesteps"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def qgis_python() -> str:
    """The interpreter whose site-packages QGIS's Python reads (QGIS embeds it, so sys.executable
    is often the QGIS binary itself)."""
    exe = Path(sys.executable or "")
    if exe.name.lower().startswith("python") and exe.is_file():
        return str(exe)
    if os.name == "nt":
        candidate = Path(sys.exec_prefix) / "python.exe"
        return str(candidate) if candidate.is_file() else "python"
    for name in (f"python{sys.version_info.major}.{sys.version_info.minor}", "python3"):
        for folder in (Path(sys.exec_prefix) / "bin", Path(sys.base_exec_prefix) / "bin"):
            if (folder / name).is_file():
                return str(folder / name)
    return "python3"


def _externally_managed() -> bool:
    """Debian/Ubuntu mark the system Python (PEP 668); pip then needs --user --break-system-packages."""
    if sys.prefix != sys.base_prefix:  # inside a virtual environment
        return False
    stdlib = sysconfig.get_paths().get("stdlib")
    return bool(stdlib) and (Path(stdlib) / "EXTERNALLY-MANAGED").is_file()


def install_command() -> str:
    """The exact shell command that installs the engine's dependencies into QGIS's Python."""
    parts = [qgis_python(), "-m", "pip", "install"]
    if _externally_managed():
        parts += ["--user", "--break-system-packages"]
    if REQUIREMENTS.is_file():
        if CONSTRAINTS.is_file():
            parts += ["-c", str(CONSTRAINTS)]
        parts += ["-r", str(REQUIREMENTS)]
    else:
        parts += [requirement for _, requirement in DEPENDENCIES]
    return " ".join(shlex.quote(part) for part in parts)


def missing_dependencies() -> list:
    """Import names of the engine's dependencies that cannot be imported (e.g. torch)."""
    missing = []
    for module, _ in DEPENDENCIES:
        try:
            importlib.import_module(module)
        except Exception:  # ImportError, or a broken install (e.g. a numpy ABI clash): as good as missing
            missing.append(module)
    return missing


def load_engine() -> SimpleNamespace:
    """Import the engine lazily; raise QgsProcessingException naming the install command if not possible."""
    missing = missing_dependencies()
    if missing:
        raise QgsProcessingException(
            f"Spectral super-resolution needs the Python package(s) {', '.join(missing)}, which QGIS's Python "
            f"({qgis_python()}) cannot import. Install them with:\n    {install_command()}\n"
            "and restart QGIS."
        )
    root = str(PLUGIN_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)
    engine = importlib.import_module("engine")
    engine_dir = Path(engine.__file__).resolve().parent
    if engine_dir != PLUGIN_ROOT / "engine":
        raise QgsProcessingException(
            f"Another Python package named 'engine' ({engine_dir}) hides the plugin's engine "
            f"({PLUGIN_ROOT / 'engine'}); remove it from QGIS's Python path or restart QGIS."
        )
    from engine import custom_training, errors, report
    from engine.bundle import read_config
    from engine.device import resolve_device
    from engine.raster import pipeline
    from engine.raster.style import read_display

    return SimpleNamespace(
        errors=errors,
        infer_raster=pipeline.infer_raster,
        resolve_device=resolve_device,
        read_config=read_config,
        evaluate_rasters=report.evaluate_rasters,
        read_display=read_display,
        train_model=custom_training.train_model,
    )


def model_folder(value) -> Path:
    """The MODEL parameter as a path; empty means the bundled default model."""
    text = (value or "").strip() if isinstance(value, str) else value
    return Path(text) if text else DEFAULT_MODEL


def describe_model(eng: SimpleNamespace, folder: Path) -> str:
    """One line naming the model, its band grid and where it comes from (raises the engine's BundleError)."""
    if folder == DEFAULT_MODEL and not folder.exists():
        raise eng.errors.BundleError(
            f"the bundled model is missing: {folder} does not exist. Reinstall the plugin zip, or set MODEL "
            "to a model bundle folder (one holding config.json and weights.safetensors)."
        )
    config = eng.read_config(folder)
    wl = config.wavelengths_nm
    return (f"Model: {config.name} ({config.band_count} bands, {min(wl):.0f}-{max(wl):.0f} nm, "
            f"units: {config.output_units}) from {folder}")


def describe_device(eng: SimpleNamespace, device: str) -> str:
    """'cpu' or the GPU's name, after the engine resolved 'auto' (raises InputError for a missing GPU)."""
    import torch

    resolved = eng.resolve_device(device)
    if resolved.startswith("cuda"):
        index = int(resolved.split(":", 1)[1]) if ":" in resolved else torch.cuda.current_device()
        return f"Device: {resolved} ({torch.cuda.get_device_name(index)})"
    return f"Device: CPU ({os.cpu_count()} cores, torch {torch.__version__})"


class FeedbackAdapter:
    """Engine callbacks backed by a QgsProcessingFeedback: progress (mapped onto start..end percent),
    cancel and log."""

    def __init__(self, feedback, start: float = 0.0, end: float = 100.0):
        self.feedback = feedback
        self.start, self.end = start, end
        self._last_message = None

    def progress(self, fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.feedback.setProgress(self.start + (self.end - self.start) * fraction)
        if message and message != self._last_message:
            self._last_message = message
            self.feedback.pushInfo(message)

    def cancel(self) -> bool:
        return self.feedback.isCanceled()

    def log(self, message: str) -> None:
        self.feedback.pushInfo(message)


CANCELLED_MESSAGE = "Cancelled: no output was written."


class Cancelled(Exception):
    """Raised by ``call_engine`` when the engine stopped because the user cancelled."""


def qgis_message(exc, parameter_names: Mapping[str, str]) -> str:
    """An engine error as QGIS shows it: the parameter(s) that set ``exc.parameter`` in front
    ("OVERLAP: overlap 32 must ..."); the message alone for an error about no parameter."""
    name = parameter_names.get(exc.parameter)
    return f"{name}: {exc}" if name else str(exc)


def call_engine(eng: SimpleNamespace, feedback, parameter_names: Mapping[str, str], function, *args, **kwargs):
    """Run an engine function; engine errors become QgsProcessingException with the engine's message
    after the QGIS parameter that ``parameter_names`` (engine setting -> parameter, the algorithm's
    ``SETTING_PARAMETERS``) gives for the error's setting; a cancel becomes ``Cancelled`` (the engine
    has already removed its partial output)."""
    try:
        return function(*args, **kwargs)
    except eng.errors.Cancelled as exc:
        raise Cancelled(str(exc)) from None
    except eng.errors.EngineError as exc:
        raise QgsProcessingException(qgis_message(exc, parameter_names)) from None
    except QgsProcessingException:
        raise
    except Exception as exc:
        feedback.pushDebugInfo(traceback.format_exc())
        raise QgsProcessingException(f"Unexpected error in the engine: {type(exc).__name__}: {exc}") from None


def run_inference(eng: SimpleNamespace, feedback, fields: dict, parameter_names: Mapping[str, str],
                  start: float = 0.0, end: float = 100.0):
    """Build the engine's ``InferenceSettings`` from ``fields`` (its field names -> values read from
    the QGIS parameters), log the model and the device, then run the engine with its progress
    (start..end percent), cancel and log callbacks wired to the feedback. A refused setting becomes a
    QgsProcessingException like any engine error, naming the parameter ``parameter_names`` gives for
    it. Returns the engine's InferenceReport. A cancel (the Cancel button, Ctrl-C in qgis_process)
    raises a QgsProcessingException too: the engine leaves no output behind, and the run must not
    end as a success (qgis_process would exit 0 with no output file). SIGTERM (qgis_process being
    stopped) lets the engine remove its partial files first, then ends the process as the signal
    asked (exit status 143)."""
    from engine.cli import terminating_signals_interrupt
    from engine.raster.pipeline import run_inference as run
    from engine.settings import Callbacks, InferenceSettings

    call = functools.partial(call_engine, eng, feedback, parameter_names)
    settings = call(InferenceSettings, **fields)
    feedback.pushInfo(call(describe_model, eng, model_folder(settings.model)))
    feedback.pushInfo(call(describe_device, eng, settings.device))
    adapter = FeedbackAdapter(feedback, start, end)
    try:
        with terminating_signals_interrupt():  # only where QGIS runs the algorithm on the main thread
            return call(run, settings, Callbacks(adapter.progress, adapter.cancel, adapter.log))
    except Cancelled:
        raise QgsProcessingException(CANCELLED_MESSAGE) from None
    except eng.errors.Terminated as exc:
        os.kill(os.getpid(), exc.signal_number)  # the handler QGIS had is back: end (or go on) as it would have
        raise QgsProcessingException(f"Stopped by {exc.name}: no output was written.") from None


# ----------------------------------------------------------------------------------------------
# input rasters as QGIS opens them


@contextmanager
def quiet_gdal_reads(errors: Optional[List[str]] = None):
    """On this thread, while inside: GDAL keeps no ``.aux.xml`` beside what it opens (QGIS's layer
    statistics would be written there) and collects its error messages in ``errors`` instead of
    printing them. QGIS's own GDAL (``osgeo``), not the engine's."""
    from osgeo import gdal

    errors = [] if errors is None else errors
    previous = gdal.GetThreadLocalConfigOption("GDAL_PAM_ENABLED", None)
    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "NO")
    gdal.PushErrorHandler(lambda level, number, message: errors.append(str(message).strip()))
    try:
        yield errors
    finally:
        gdal.PopErrorHandler()
        gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", previous)


def raster_problem(path) -> Optional[str]:
    """Why the file at ``path`` cannot be read as a raster (the engine's words for a missing, empty
    or folder path; what GDAL says otherwise), or None when GDAL opens it."""
    problem = engine_settings.input_path_problem(path)
    if problem is not None:
        return problem
    from osgeo import gdal

    with quiet_gdal_reads() as errors:
        dataset = gdal.OpenEx(str(path), gdal.OF_RASTER | gdal.OF_VERBOSE_ERROR)
    if dataset is not None:
        return None
    return engine_settings.not_a_raster(str(path), errors[-1] if errors else "no GDAL driver recognises it")


def raster_parameter_problem(alg, parameters, context) -> Optional[str]:
    """Why QGIS refuses the first raster layer parameter of ``alg`` that it refuses, when it was
    given as a file path that cannot be read ("INPUT: input '/x.tif' is an empty file ..."); None
    otherwise (QGIS's own message then stands)."""
    for definition in alg.parameterDefinitions():
        value = parameters.get(definition.name())
        if definition.type() != "raster" or not isinstance(value, str) or not value:
            continue
        with quiet_gdal_reads():
            refused = not definition.checkValueIsAcceptable(value, context)
        if refused:
            problem = raster_problem(value)
            return None if problem is None else f"{definition.name()}: {problem}"
    return None
