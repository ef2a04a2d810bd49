"""What the Dask runner and the sharded mode share: the cluster connection and the worker side.

Client side
    ``connect(cluster, device, say)`` opens a ``distributed.Client`` on an existing scheduler
    (``tcp://host:8786``) or starts a ``LocalCluster`` (``local:N``) of N single-threaded worker
    processes; on a machine with GPUs each local worker is pinned to one of them
    (``plan_local_workers``). ``bundle_payload(cascade)`` turns the model into bytes with their
    SHA-256 (sent once to every worker with ``scatter(broadcast=True)``), and ``workers_can_read``
    asks every worker whether it reads the input exactly as the client does.

Worker side
    ``cached_cascade`` loads a payload once per worker process and device (keyed by its hash), so a
    worker runs many tasks with one model load. ``read_job_rgb`` reads a tile's RGB with the
    pipeline's own ``read_tile`` through a reader kept open per process. ``WorkerTask`` is what
    every task of a run shares; ``worker_device`` resolves the run's device on the worker, and
    sets torch's thread count to the client's: CPU reductions split their work by thread count and
    the rounding follows it, so equal thread counts are what makes the output bit-for-bit the
    in-process runner's.

This module imports ``distributed`` only inside functions: the engine runs without it, and asking
for a cluster without it installed raises an ``EngineError`` naming the pip command.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import multiprocessing
import sys
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from engine.errors import Cancelled, EngineError, InputError
from engine.raster.plan import InferencePlan
from engine.raster.runners import InputSource, TileJob
from engine.settings import LOCAL_CLUSTER, InferenceSettings

# The versions CI installs (constraints.txt pins the same; tests/test_dask_runner.py checks it).
DASK_REQUIREMENTS = ("dask==2026.8.0", "distributed==2026.8.0")
CONNECT_SECONDS = 20  # to reach a scheduler
WORKERS_SECONDS = 120  # for the first worker to join (local workers import torch)
MODELS_PER_WORKER = 2  # loaded models a worker process keeps (one per bundle and device)


def import_distributed():
    """The ``distributed`` package, or an ``EngineError`` naming the pip command that installs it."""
    try:
        import distributed
    except ImportError:
        python = sys.executable or "python3"
        raise EngineError(f"running on a cluster needs the Python packages dask and distributed, which are not "
                          f"installed: install them with `{python} -m pip install {' '.join(DASK_REQUIREMENTS)}`, or "
                          "leave the cluster empty to run here", parameter="cluster") from None
    return distributed


# ----------------------------------------------------------------------------------------------
# client side: connecting


@dataclass(frozen=True)
class LocalWorker:
    """One worker process of a ``local:N`` cluster: its name and the environment it starts with."""

    name: str
    env: Mapping[str, str]


def plan_local_workers(count: int, device: str, gpu_count: int) -> Tuple[LocalWorker, ...]:
    """The workers of ``local:count``: with GPUs and the device "auto" or "cuda", worker i sees only
    GPU i mod ``gpu_count`` (``CUDA_VISIBLE_DEVICES``; "cuda" then means its own GPU); otherwise
    (the CPU, or one named GPU "cuda:N" that every worker shares) the environment is left alone."""
    pinned = gpu_count > 0 and device in ("auto", "cuda")
    return tuple(LocalWorker(f"scdm-{i}", {"CUDA_VISIBLE_DEVICES": str(i % gpu_count)} if pinned else {})
                 for i in range(count))


@dataclass
class ClusterConnection:
    """A client on a cluster, and the local cluster it started (closed with it)."""

    client: object
    cluster: Optional[object]
    address: str

    @property
    def workers(self) -> int:
        return max(1, len(self.client.nthreads()))

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def connect(cluster: str, device: str, say: Callable[[str], None]) -> ClusterConnection:
    """A connection to ``cluster`` ("local:N" or a scheduler address) with at least one worker."""
    distributed = import_distributed()
    if cluster.startswith(LOCAL_CLUSTER + ":"):
        connection = _start_local(distributed, int(cluster.split(":", 1)[1]), device)
    else:
        try:
            client = distributed.Client(cluster, timeout=CONNECT_SECONDS, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {cluster} ({exc}): start one there with "
                             "`dask scheduler` and workers with `dask worker ADDRESS`, or use local:N to run N "
                             "worker processes on this machine", parameter="cluster") from None
        connection = ClusterConnection(client, None, cluster)
    try:
        connection.client.wait_for_workers(1, timeout=WORKERS_SECONDS)
    except (OSError, TimeoutError):
        connection.close()
        raise InputError(f"no Dask worker joined the scheduler at {cluster} within {WORKERS_SECONDS} s: start "
                         f"workers with `dask worker {cluster}`", parameter="cluster") from None
    say(f"Dask cluster {cluster}: {connection.workers} worker(s), scheduler {connection.client.scheduler.address}")
    return connection


def _gpu_count(device: str) -> int:
    if device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count()


def worker_python(executable: str, exec_prefix: str, windows: bool) -> str:
    """The Python interpreter local worker processes start with: ``executable`` when it is one, else
    (inside QGIS, whose ``sys.executable`` may be the QGIS program) the interpreter of ``exec_prefix``."""
    if Path(executable).name.lower().startswith("python"):
        return executable
    return str(Path(exec_prefix) / ("python.exe" if windows else "bin/python3"))


def _start_local(distributed, count: int, device: str) -> ClusterConnection:
    """A LocalCluster of ``count`` single-threaded worker processes, each with its own environment."""
    python = worker_python(sys.executable or "", sys.exec_prefix, sys.platform == "win32")
    if python != sys.executable:
        multiprocessing.set_executable(python)  # the workers are spawned: never start a second QGIS
    cluster = distributed.LocalCluster(n_workers=0, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, silence_logs=logging.ERROR)
    try:
        for worker in plan_local_workers(count, device, _gpu_count(device)):
            spec = copy.deepcopy(cluster.new_spec)
            spec["options"]["env"] = dict(worker.env)
            cluster.worker_spec[worker.name] = spec
        cluster.scale(count)
        client = distributed.Client(cluster, set_as_default=False)
        client.wait_for_workers(count, timeout=WORKERS_SECONDS)
    except BaseException:
        cluster.close()
        raise
    return ClusterConnection(client, cluster, f"{LOCAL_CLUSTER}:{count}")


# ----------------------------------------------------------------------------------------------
# the model, sent once


@dataclass(frozen=True)
class BundlePayload:
    """A model as the bytes of its bundle files; ``key`` is the SHA-256 of its content (the config,
    then each tensor's name and bytes in name order: safetensors may order its header differently
    each time it saves the same weights)."""

    key: str
    config: bytes
    weights: bytes


def bundle_payload(cascade) -> BundlePayload:
    from engine.bundle import CONFIG_NAME, WEIGHTS_NAME, save_bundle

    with tempfile.TemporaryDirectory(prefix="scdm-bundle-") as folder:
        save_bundle(cascade, folder)
        config, weights = (Path(folder) / CONFIG_NAME).read_bytes(), (Path(folder) / WEIGHTS_NAME).read_bytes()
    return BundlePayload(_content_key(config, weights), config, weights)


def _content_key(config: bytes, weights: bytes) -> str:
    import torch
    from safetensors.torch import load

    digest = hashlib.sha256(config)
    tensors = load(weights)
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_LOCK = threading.Lock()
_CASCADES: "OrderedDict[Tuple[str, str], object]" = OrderedDict()
MODEL_LOADS = [0]  # models loaded by this process (tests check "once per process")


def cached_cascade(payload: BundlePayload, device: str):
    """The payload's cascade on ``device``, loaded once per process."""
    from engine.bundle import CONFIG_NAME, WEIGHTS_NAME, load_bundle

    key = (payload.key, device)
    with _LOCK:
        if key not in _CASCADES:
            with tempfile.TemporaryDirectory(prefix="scdm-bundle-") as folder:
                (Path(folder) / CONFIG_NAME).write_bytes(payload.config)
                (Path(folder) / WEIGHTS_NAME).write_bytes(payload.weights)
                _CASCADES[key] = load_bundle(folder, device=device)
            MODEL_LOADS[0] += 1
            while len(_CASCADES) > MODELS_PER_WORKER:
                _CASCADES.popitem(last=False)
        _CASCADES.move_to_end(key)
        return _CASCADES[key]


# ----------------------------------------------------------------------------------------------
# what every task of a run shares


@dataclass(frozen=True)
class WorkerTask:
    """A run as its workers see it. ``reads_input``: the workers read the tiles' RGB themselves."""

    settings: InferenceSettings
    plan: InferencePlan
    statistics: object  # engine.input_transform.ImageStatistics of the raster, taken by the client
    threads: int  # torch threads, the client's
    source: Optional[InputSource]
    reads_input: bool
    stretch_statistics: object = None  # RunnerContext.stretch_statistics


def worker_device(task: WorkerTask) -> str:
    """The run's device as this worker resolves it (with ``local:N`` on GPUs, "cuda" is its own GPU)."""
    import torch

    from engine.device import resolve_device

    torch.set_num_threads(task.threads)
    return resolve_device(task.settings.device)


_READERS: Dict[Tuple[str, Tuple[int, ...], str], object] = {}


def reader_of(source: InputSource):
    """An RGB reader of the input kept open in this process (one per input)."""
    from engine.raster.io import RGBReader

    key = (source.info.path, source.info.bands, source.radiometry.value)
    with _LOCK:
        if key not in _READERS:
            for reader in _READERS.values():
                reader.close()
            _READERS.clear()
            _READERS[key] = RGBReader(source.info, source.radiometry)
        return _READERS[key]


def read_job_rgb(job: TileJob, plan: InferencePlan, source: InputSource) -> TileJob:
    """``job`` with its RGB, read here if the client left it out."""
    import dataclasses

    from engine.raster.pipeline import read_tile

    if job.rgb is not None:
        return job
    rgb, _ = read_tile(reader_of(source), job.tile, plan.tiling, source.fill)
    return dataclasses.replace(job, rgb=rgb)


def _digest(reader, info) -> str:
    rgb, ok = reader.read(0, 0, min(256, info.height), min(256, info.width))
    digest = hashlib.sha256(np.ascontiguousarray(rgb).tobytes())
    digest.update(np.ascontiguousarray(ok).tobytes())
    return digest.hexdigest()


def window_digest(source: InputSource) -> Optional[str]:
    """SHA-256 of the input's first window (up to 256 x 256) as this worker reads it, or None if it
    cannot read it."""
    try:
        return _digest(reader_of(source), source.info)
    except Exception:  # unreachable path, missing driver, another file: this worker cannot read it
        return None


def workers_can_read(client, source: InputSource) -> bool:
    """Whether every worker reads the input's first window exactly as this process does (a shared
    path or a GDAL /vsi URL reachable from them, with the same decoding)."""
    from engine.raster.io import RGBReader

    with RGBReader(source.info, source.radiometry) as reader:
        expected = _digest(reader, source.info)
    answers = client.run(window_digest, source)
    return bool(answers) and all(answer == expected for answer in answers.values())


# ----------------------------------------------------------------------------------------------
# the tasks of a run, on the client


class TaskSet:
    """The outstanding tasks of one run: submitted, waited for while watching the cancel callback,
    and handed back once finished (each result once, in the order they finished)."""

    POLL_SECONDS = 0.2  # how often a wait looks at the cancel callback

    def __init__(self, client, cancelled: Callable[[], bool]):
        self.client, self.cancelled = client, cancelled
        self.futures: List[object] = []
        self._finished = threading.Event()  # set by every task as it finishes

    def __len__(self) -> int:
        return len(self.futures)

    def submit(self, function, *args) -> None:
        future = self.client.submit(function, *args, pure=False)
        future.add_done_callback(lambda _: self._finished.set())
        self.futures.append(future)

    def wait_for_one(self) -> None:
        """Block until a task has finished (none outstanding: return); ``Cancelled`` on a cancel."""
        while self.futures and not any(future.done() for future in self.futures):
            if self.cancelled():
                raise Cancelled("raster inference was cancelled")
            self._finished.wait(self.POLL_SECONDS)
            self._finished.clear()

    def take_finished(self) -> list:
        """The results of the tasks finished since the last call; a task's error is raised here, and
        one Dask gave up on (the workers running it kept dying) becomes an ``EngineError``."""
        from distributed.scheduler import KilledWorker

        done, self.futures = _split_done(self.futures)
        try:
            return [future.result() for future in done]
        except KilledWorker as exc:
            raise EngineError(f"Dask gave up on a task after the workers running it died ({exc}): look for workers "
                              "running out of memory, or use a smaller batch or tile") from None

    def cancel(self) -> None:
        if self.futures:
            self.client.cancel(self.futures, force=True)
        self.futures = []


def _split_done(futures: Sequence[object]) -> Tuple[list, list]:
    """(done, not done), deciding each future once (one may finish while the list is read)."""
    done, pending = [], []
    for future in futures:
        (done if future.done() else pending).append(future)
    return done, pending
