"""The Dask runner: the pipeline's batches of tiles run as tasks on a Dask cluster.

``InferenceSettings.cluster`` selects it: ``local:N`` starts N single-threaded worker processes here
(one per GPU on a GPU machine), a scheduler address (``tcp://host:8786``) uses an existing cluster
(``engine.raster.runners.dask_cluster``). Each ``submit`` becomes one task that runs the batch with
the in-process runner on a worker, so a tile shares its network call with the same tiles as in an
in-process run; with positional noise and the client's torch thread count on every worker, the
output is bit-for-bit the in-process runner's.

- The model goes to every worker once (``scatter(broadcast=True)``) and each worker process loads it
  once (``dask_cluster.cached_cascade``).
- When every worker reads the input exactly as the client does (a shared path or a GDAL /vsi URL:
  ``dask_cluster.workers_can_read``), tasks carry only the tiles' positions and the workers read
  the windows; otherwise each task carries its tiles' RGB. The client still reads each window once
  to find its valid pixels (batches are cut before tiles without any, which keeps the output the
  in-process runner's).
- Up to two batches per worker are in flight (``tiles_in_flight``); the reassembly holds early
  results and the client writes in grid order, so the client's memory does not grow with the
  raster's height.
- A worker that dies has its tasks rerun by the scheduler on the others (Dask gives up on a task
  after it was on three workers that died, ``distributed.scheduler.allowed-failures``). A cancel
  (checked while waiting) or any error cancels the outstanding tasks; ``close`` also stops a local
  cluster. The batch a worker lowered after running out of GPU memory lowers the client's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from engine.errors import InputError
from engine.raster.runners import ProgressFn, RunnerContext, TileJob, TileResult
from engine.raster.runners import dask_cluster as dc
from engine.settings import Callbacks

BATCHES_PER_WORKER = 2  # in flight: one running, one waiting, so no worker idles between batches


@dataclass(frozen=True)
class BatchOutcome:
    """What a task returns: its tiles' results, the batch its runner ended with, its network passes."""

    results: Tuple[TileResult, ...]
    batch: int
    network_passes: int


def run_batch(task: dc.WorkerTask, payload: dc.BundlePayload, jobs: Sequence[TileJob]) -> BatchOutcome:
    """On a worker: one batch through the in-process runner."""
    from engine.raster.runners.in_process import InProcessRunner

    device = dc.worker_device(task)
    cascade = dc.cached_cascade(payload, device)
    if task.reads_input:
        jobs = [dc.read_job_rgb(job, task.plan, task.source) for job in jobs]
    runner = InProcessRunner(RunnerContext(cascade, task.plan, task.statistics, device, Callbacks(), task.settings,
                                           stretch_statistics=task.stretch_statistics))
    runner.submit(jobs, lambda fraction: None)
    return BatchOutcome(tuple(runner.completed(wait=False)), runner.batch, runner.network_passes)


class DaskRunner:
    """``engine.raster.runners.TileRunner`` on a Dask cluster; see the module docstring."""

    def __init__(self, context: RunnerContext):
        settings = context.settings
        if settings is None or settings.cluster is None:
            raise InputError("the dask runner needs a cluster: set cluster to local:N or a scheduler address",
                             parameter="cluster")
        self.callbacks = context.callbacks
        self.batch = context.plan.batch
        self.network_passes = 0
        self.connection = dc.connect(settings.cluster, settings.device, context.callbacks.say)
        try:
            self._start(context)
        except BaseException:
            self.connection.close()
            raise
        self.tiles_in_flight = BATCHES_PER_WORKER * self.connection.workers * self.batch

    def _start(self, context: RunnerContext) -> None:
        import torch

        client = self.connection.client
        readable = context.source is not None and dc.workers_can_read(client, context.source)
        threads = torch.get_num_threads()
        self.callbacks.say(("the workers read their input windows themselves" if readable else
                            "the input is not readable from the workers: each task carries its tiles' RGB")
                           + f"; they run torch with {threads} thread(s), as this process does")
        self.task = dc.WorkerTask(context.settings, context.plan, context.statistics, threads, context.source, readable,
                                  context.stretch_statistics)
        self.payload = client.scatter(dc.bundle_payload(context.cascade), broadcast=True)
        self.tasks = dc.TaskSet(client, self.callbacks.cancelled)

    def submit(self, jobs: Sequence[TileJob], progress: ProgressFn) -> None:
        sent = [dataclasses.replace(job, rgb=None) for job in jobs] if self.task.reads_input else list(jobs)
        self.tasks.submit(run_batch, self.task, self.payload, sent)

    def completed(self, wait: bool) -> List[TileResult]:
        if wait:
            self.tasks.wait_for_one()
        results: List[TileResult] = []
        for outcome in self.tasks.take_finished():
            self.network_passes += outcome.network_passes
            self.batch = min(self.batch, outcome.batch)
            results.extend(outcome.results)
        return results

    def close(self) -> None:
        """Cancel what is still outstanding and close the connection (and a local cluster)."""
        try:
            if hasattr(self, "tasks"):
                self.tasks.cancel()
        finally:
            self.connection.close()
