"""Atomic output files, for every format.

Each output is written to ``.<name>.partial-<host>-<pid>-<random><suffix>`` beside its destination
(``<host>``: a hash of this machine's name, ``<pid>``: the writing process). ``commit`` closes all of
them (each format checks that its file is complete, ``OutputError`` otherwise), flushes them to
disk, and only then renames each over its destination, removing the destination's stale sidecars
(an ``.aux.xml``, ``.ovr`` or ``.msk`` describing the previous file, which GDAL and QGIS would apply
to the new one) and moving the partial file's own. A failure while finishing any file leaves every
destination as it was. ``discard`` (after an error, a cancel, Ctrl-C or SIGTERM) closes and deletes
the partial files.

A run that is killed (SIGKILL, a power cut) cannot clean up: the next run to the same destination
removes the partial files whose name carries this machine's hash and the id of a process that no
longer exists (``remove_leftovers``); files of running processes and of other machines are kept.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

from engine.errors import InputError, OutputError
from engine.raster.formats.base import OutputFile, OutputFormat, OutputSpec

MEGABYTE = 1 << 20


def host_tag() -> str:
    """8 hex digits naming this machine in partial-file names (folders may be shared between machines,
    and a process id means something only on the machine that wrote it)."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _partial_prefix(dest: Path) -> str:
    return f".{dest.name}.partial-"


def partial_path(dest: Path, parameter: str = "output") -> Path:
    """Create (empty) and return a unique temporary file beside ``dest``:
    ``.<name>.partial-<host>-<pid>-<random><suffix>`` (the destination's suffix, so that a driver
    looking at it sees the same format)."""
    prefix = f"{_partial_prefix(dest)}{host_tag()}-{os.getpid()}-"
    try:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=dest.suffix, dir=str(dest.parent))
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


# ----------------------------------------------------------------------------------------------
# partial files of killed runs


def process_exists(pid: int) -> bool:
    """Whether a process with this id runs on this machine (an id in use by another user counts)."""
    if os.name == "nt":
        return _windows_process_exists(pid)
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def _windows_process_exists(pid: int) -> bool:
    # os.kill(pid, 0) would terminate the process on Windows: ask the kernel instead.
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def leftover_partials(dest: Path) -> List[Path]:
    """Partial files (and their companions) of ``dest`` written on this machine by processes that no
    longer exist: what killed runs left behind."""
    pattern = re.compile(re.escape(_partial_prefix(dest)) + re.escape(host_tag()) + r"-(\d+)-[a-z0-9_]+(\..*)?")
    try:
        names = os.listdir(dest.parent)
    except OSError:
        return []
    found = []
    for name in names:
        match = pattern.fullmatch(name)
        if match and int(match.group(1)) != os.getpid() and not process_exists(int(match.group(1))):
            found.append(dest.parent / name)
    return sorted(found)


def remove_leftovers(dest: Path) -> List[Path]:
    """Remove ``leftover_partials(dest)``; the files it removed."""
    removed = []
    for path in leftover_partials(dest):
        try:
            path.unlink()
            removed.append(path)
        except OSError:  # removed meanwhile by another run, or not ours to remove
            pass
    return removed


# ----------------------------------------------------------------------------------------------
# free space


@dataclass(frozen=True)
class SpaceNeed:
    """The least space one output will take (``bytes``) and how that was reckoned (``reckoning``)."""

    destination: Path
    bytes: int
    reckoning: str
    parameter: str


def space_need(output_format: OutputFormat, destination: Path, spec: OutputSpec, valid_fraction: float,
               parameter: str) -> SpaceNeed:
    """Bands x pixels x bytes per value (4 for float32) for the valid pixels, times the format's
    ``least_size_fraction`` (what compression can save at most; 1.0 when the format does not say)."""
    fraction = getattr(output_format, "least_size_fraction", 1.0)
    size = np.dtype(spec.encoding.dtype).itemsize  # float16: 2 bytes, as its file stores it
    raw = spec.band_count * spec.width * spec.height * size
    reckoning = f"{spec.band_count} bands x {spec.width} x {spec.height} px x {size} bytes"
    if valid_fraction < 1.0:
        reckoning += f" x {valid_fraction:.0%} valid pixels"
    if fraction < 1.0:
        reckoning += f", compressed to no less than {fraction:.0%}"
    return SpaceNeed(destination, int(raw * valid_fraction * fraction), reckoning, parameter)


def check_free_space(needs: Sequence[SpaceNeed]) -> None:
    """Refuse (``OutputError``) outputs that cannot fit on their disks, before anything is written.
    Outputs on one file system add up; the previous outputs they replace still count as used (they
    are replaced only once all new files are complete)."""
    by_device = {}
    for need in needs:
        device = os.stat(need.destination.parent).st_dev
        by_device.setdefault(device, []).append(need)
    for group in by_device.values():
        folder = group[0].destination.parent
        needed = sum(need.bytes for need in group)
        free = shutil.disk_usage(folder).free
        if needed > free:
            what = "; ".join(f"'{need.destination.name}' at least {need.bytes / MEGABYTE:.1f} MB ({need.reckoning})"
                             for need in group)
            raise OutputError(f"not enough free space in '{folder}': {what}, but the disk has "
                              f"{free / MEGABYTE:.1f} MB free: free some space or choose a folder on another disk",
                              parameter=group[0].parameter)


# ----------------------------------------------------------------------------------------------
# one run's outputs


def write_failure(destination: Path, detail: str, parameter: str) -> OutputError:
    """The error for an output that could not be written: what failed, the disk's free space, and that
    the destination was left as it was."""
    try:
        free = f"{shutil.disk_usage(destination.parent).free / MEGABYTE:.1f} MB free on its disk"
    except OSError:
        free = "its disk cannot be asked for free space"
    kept = "the previous file is unchanged" if destination.exists() else "nothing was written"
    return OutputError(f"could not write '{destination}': {detail} ({free}); {kept}: free some space or choose a "
                       "folder on another disk, and check the disk", parameter=parameter)


class _NamedFile:
    """An output file whose ``OutputError`` names its destination (the format only sees the partial file)."""

    def __init__(self, file: OutputFile, destination: Path, parameter: str):
        self.file, self.destination, self.parameter = file, destination, parameter

    @property
    def clipped(self) -> int:
        return self.file.clipped

    def write_block(self, values, row_off: int, col_off: int) -> None:
        try:
            self.file.write_block(values, row_off, col_off)
        except OutputError as exc:
            raise write_failure(self.destination, str(exc), self.parameter) from None

    def close(self) -> None:
        try:
            self.file.close()
        except OutputError as exc:
            raise write_failure(self.destination, str(exc), self.parameter) from None


@dataclass
class _Pending:
    format: OutputFormat
    partial: Path
    destination: Path
    parameter: str
    file: Optional[OutputFile] = None


def _flush_to_disk(path: Path, destination: Path, parameter: str) -> None:
    """fsync: the rename must not land before the data (and some file systems, e.g. NFS, report a
    failed write only here)."""
    try:
        fd = os.open(path, os.O_RDWR)  # writable: Windows flushes only such handles
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise write_failure(destination, f"flushing it to disk failed ({exc.strerror})", parameter) from None


class AtomicOutputs:
    """The outputs of one run: created as partial files, committed or discarded together.
    ``log(message)`` hears about removed leftovers and stale sidecars."""

    def __init__(self, log: Optional[Callable[[str], None]] = None):
        self._pending: List[_Pending] = []
        self._log = log or (lambda message: None)

    def create(self, output_format: OutputFormat, destination: Path, spec: OutputSpec,
               parameter: str = "output") -> OutputFile:
        removed = remove_leftovers(destination)
        if removed:
            self._log(f"removed {len(removed)} partial file(s) left beside '{destination.name}' by runs that "
                      f"were killed: {', '.join(path.name for path in removed)}")
        item = _Pending(output_format, partial_path(destination, parameter), destination, parameter)
        self._pending.append(item)  # before creating, so that discard removes the partial file
        try:
            item.file = _NamedFile(output_format.create(item.partial, spec), destination, parameter)
        except OutputError as exc:
            raise write_failure(destination, str(exc), parameter) from None
        return item.file

    def commit(self) -> None:
        for item in self._pending:
            file, item.file = item.file, None  # closed (or failed closing): discard must not close it again
            file.close()
        for item in self._pending:
            _flush_to_disk(item.partial, item.destination, item.parameter)
        for item in self._pending:
            self._replace(item)
        self._pending = []

    def _replace(self, item: _Pending) -> None:
        pairs = list(zip(item.format.companions(item.partial), item.format.companions(item.destination)))
        stale = [final for partial, final in pairs if final.exists() and not partial.exists()]
        remove_quietly(*stale)  # before the rename: no reader ever sees the new file with the old sidecars
        if stale:
            self._log(f"removed {', '.join(path.name for path in stale)}: sidecar file(s) of the previous "
                      f"'{item.destination.name}', which GDAL and QGIS would apply to the new one")
        try:
            os.replace(item.partial, item.destination)
            for partial, final in pairs:
                if partial.exists():
                    os.replace(partial, final)
        except OSError as exc:
            raise write_failure(item.destination, f"renaming the finished file failed ({exc.strerror})",
                                item.parameter) from None

    def discard(self) -> None:
        for item in self._pending:
            if item.file is not None:
                try:
                    item.file.close()
                except Exception:  # the run already failed; its error is the one to report
                    pass
            remove_quietly(item.partial, *item.format.companions(item.partial))
        self._pending = []
