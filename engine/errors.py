"""Exceptions the engine raises; callers (CLI, QGIS adapter) show their message as is."""


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(EngineError, ValueError):
    """A user-supplied input is unusable; the message names the problem and the fix."""


class BundleError(EngineError):
    """A model bundle is missing, truncated, mismatched or not a bundle at all."""


class Cancelled(EngineError):
    """The caller asked to stop; nothing was written."""
