"""Atomic output files, for every format.

Each output is written to ``.<name>.partial-<random><suffix>`` beside its destination; ``commit``
closes all of them and only then renames each (with its companion files) over its destination, so
a failure while finishing one file leaves every destination as it was. ``discard`` (after an error,
a cancel or a KeyboardInterrupt) closes and deletes the partial files.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from engine.errors import InputError
from engine.raster.formats.base import OutputFile, OutputFormat, OutputSpec


def partial_path(dest: Path, parameter: str = "output") -> Path:
    """Create (empty) and return a unique temporary file beside ``dest``: ``.<name>.partial-XXXX<suffix>``
    (the destination's suffix, so that a driver looking at it sees the same format)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.partial-", suffix=dest.suffix, dir=str(dest.parent))
    except OSError as exc:
        raise InputError(f"cannot write in the output folder '{dest.parent}' ({exc.strerror}): "
                         "choose a folder you can write to", parameter=parameter) from None
    os.close(fd)
    # mkstemp makes the file private (0600); the result should get the usual permissions.
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(name, 0o666 & ~mask)
    return Path(name)


def remove_quietly(*paths) -> None:
    for path in paths:
        try:
            Path(path).unlink()
        except OSError:  # already gone, or never written: nothing to clean up
            pass


@dataclass
class _Pending:
    format: OutputFormat
    partial: Path
    destination: Path
    file: Optional[OutputFile] = None


class AtomicOutputs:
    """The outputs of one run: created as partial files, committed or discarded together."""

    def __init__(self):
        self._pending: List[_Pending] = []

    def create(self, output_format: OutputFormat, destination: Path, spec: OutputSpec,
               parameter: str = "output") -> OutputFile:
        item = _Pending(output_format, partial_path(destination, parameter), destination)
        self._pending.append(item)  # before creating, so that discard removes the partial file
        item.file = output_format.create(item.partial, spec)
        return item.file

    def commit(self) -> None:
        for item in self._pending:
            item.file.close()
        for item in self._pending:
            os.replace(item.partial, item.destination)
            for partial, final in zip(item.format.companions(item.partial), item.format.companions(item.destination)):
                if partial.exists():
                    os.replace(partial, final)
        self._pending = []

    def discard(self) -> None:
        for item in self._pending:
            if item.file is not None:
                try:
                    item.file.close()
                except Exception:  # the run already failed; its error is the one to report
                    pass
            remove_quietly(item.partial, *item.format.companions(item.partial))
        self._pending = []
