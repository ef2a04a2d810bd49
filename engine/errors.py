"""Exceptions the engine raises; callers (CLI, QGIS adapter) show their message as is.

An error about one setting names it in ``parameter``: the name of the inference setting
(``engine.settings.InferenceSettings`` field, e.g. ``"tile"``, ``"bands"``, ``"output"``), never a
command-line flag or a QGIS parameter name. Each front end maps that field to its own words (the CLI
to ``--tile``, the QGIS adapter to ``TILE_SIZE``), so messages are written without either.
"""

from __future__ import annotations

from typing import Optional


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""

    def __init__(self, message: str = "", *, parameter: Optional[str] = None):
        super().__init__(message)
        self.parameter = parameter

    @property
    def message(self) -> str:
        return str(self)


class InputError(EngineError, ValueError):
    """A user-supplied input is unusable; the message names the problem and the fix."""


class BundleError(EngineError):
    """A model bundle is missing, truncated, mismatched or not a bundle at all."""

    def __init__(self, message: str = "", *, parameter: Optional[str] = "model"):
        super().__init__(message, parameter=parameter)


class OutputError(EngineError):
    """An output could not be written completely (a full disk, an I/O error, a file GDAL could not
    finish); its partial file is removed and the destination is left as it was."""


class Cancelled(EngineError):
    """The caller asked to stop; nothing was written."""


class Terminated(KeyboardInterrupt):
    """The process received a termination signal (e.g. SIGTERM) and stops as after Ctrl-C: partial
    files are removed. A ``KeyboardInterrupt``, so that every clean-up that handles Ctrl-C handles it;
    ``signal_number`` gives the command line its exit status (128 + the number)."""

    def __init__(self, signal_number: int, name: str):
        super().__init__(f"terminated by {name}")
        self.signal_number = signal_number
        self.name = name
