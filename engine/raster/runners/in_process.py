"""The in-process runner: the cascade on batches of tiles in this process, on its device.

``submit`` runs the batch at once (so ``completed`` never waits), in chunks of ``batch`` tiles,
halving the chunk on CUDA out-of-memory. With ``samples`` K > 1 it draws K samples per tile with
seeds ``seed .. seed + K - 1`` and returns their mean and (if asked) their unbiased per-band variance,
accumulated in float64.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

import numpy as np
import torch

from engine.diffusion.noise import sampler_noise
from engine.errors import EngineError
from engine.radiometry import as_linear_stretch, decoding_variance
from engine.raster.plan import ChannelLayout
from engine.raster.runners import ProgressFn, RunnerContext, TileJob, TileResult
from engine.raster.runners.precision import network_precision
from engine.raster.windows import reflect_pad


class SampleMoments:
    """Mean of K samples (full and stage-1 bands) and the variance of the full bands, written into
    a (tiles, channels, h, w) float32 array in model units."""

    def __init__(self, merged: np.ndarray, layout: ChannelLayout, samples: int):
        self.merged, self.layout, self.samples = merged, layout, samples
        self.sum = self.sum_sq = self.stage1_sum = None

    def add(self, full: np.ndarray, stage1: Optional[np.ndarray]) -> None:
        if self.samples == 1:
            self.merged[:, self.layout.full] = full
            if stage1 is not None:
                self.merged[:, self.layout.stage1] = stage1
            return
        # Several samples: float64 running sums for the mean and the variance.
        if self.sum is None:
            self.sum = full.astype(np.float64)
            self.sum_sq = np.square(self.sum) if self.layout.uncertainty is not None else None
            self.stage1_sum = stage1.astype(np.float64) if stage1 is not None else None
            return
        self.sum += full
        if self.sum_sq is not None:
            self.sum_sq += np.square(full, dtype=np.float64)
        if self.stage1_sum is not None:
            self.stage1_sum += stage1

    def finish(self, scale, calibration: Optional[Sequence[float]] = None) -> None:
        """Write the means and the variance (in output units: model units times ``scale`` squared;
        ``scale`` a number or per-pixel (tiles, 1, h, w)); ``calibration``: per-band factors on the
        standard deviation (the bundle's ``uncertainty_scale``), which leave the means alone."""
        k = self.samples
        if k == 1:
            return
        mean = self.sum
        mean /= k
        self.merged[:, self.layout.full] = mean
        if self.stage1_sum is not None:
            self.stage1_sum /= k
            self.merged[:, self.layout.stage1] = self.stage1_sum
        if self.sum_sq is not None:
            variance = self.sum_sq
            variance -= k * np.square(mean)
            variance /= (k - 1)
            np.maximum(variance, 0.0, out=variance)
            variance *= scale * scale
            if calibration is not None:
                variance *= np.square(np.asarray(calibration, dtype=np.float64))[None, :, None, None]
            self.merged[:, self.layout.uncertainty] = variance
        self.sum = self.sum_sq = self.stage1_sum = None


class InProcessRunner:
    """``engine.raster.runners.TileRunner`` running the cascade here; see the module docstring."""

    def __init__(self, context: RunnerContext):
        self.context = context
        self.plan = context.plan
        self.batch = self.plan.batch
        self.network_passes = 0
        self._finished: List[TileResult] = []

    def submit(self, jobs: Sequence[TileJob], progress: ProgressFn) -> None:
        start = 0
        while start < len(jobs):
            chunk = jobs[start:start + self.batch]
            try:
                self._finished.extend(self._run_chunk(chunk, lambda f: progress((start + f * len(chunk)) / len(jobs))))
            except Exception as exc:
                if not _is_cuda_oom(exc):
                    raise
                self._halve_batch(exc)
                continue
            start += len(chunk)

    def completed(self, wait: bool) -> List[TileResult]:
        finished, self._finished = self._finished, []
        return finished

    def _halve_batch(self, exc: BaseException) -> None:
        torch.cuda.empty_cache()
        if self.batch == 1:
            raise EngineError("out of GPU memory with a single tile: use a smaller tile or the cpu device",
                              parameter="tile") from exc
        self.batch = max(1, self.batch // 2)
        self.context.callbacks.say(f"CUDA out of memory: batch reduced to {self.batch}")

    def _condition(self, chunk: Sequence[TileJob], stats) -> torch.Tensor:
        """The chunk's condition (the bundle's input transform of its RGB under the raster's
        statistics ``stats``), padded to the network's size, on the device."""
        net_h, net_w = self.plan.tiling.network_size
        transform = self.context.cascade.config.normalisation
        cond = np.stack([reflect_pad(transform.condition(job.rgb, stats), net_h, net_w) for job in chunk])
        return torch.from_numpy(cond.astype(np.float32)).to(self.context.device)

    def _output_scale(self, chunk: Sequence[TileJob], stats):
        """(scale, offset) from model to output units: numbers for an affine transform, a per-pixel
        scale (tiles, 1, h, w) for the chromatic one."""
        transform = self.context.cascade.config.normalisation
        scales, offsets = zip(*(transform.output_scale(job.rgb, stats) for job in chunk))
        if np.ndim(scales[0]) == 0:
            return float(scales[0]), float(offsets[0])
        return np.stack(scales)[:, None], float(offsets[0])

    def _draw(self, cond: torch.Tensor, chunk: Sequence[TileJob], k: int, progress: ProgressFn,
              want_stage1: bool = True):
        """Sample ``k`` of every tile of the chunk: full and (if an output wants them and
        ``want_stage1``) stage-1 bands, cropped to the tile, as numpy arrays."""
        tile_h, tile_w = self.plan.tiling.tile_size
        noise = sampler_noise(self.plan.seed + k, cond, [job.origin for job in chunk],
                              per_pixel=self.context.cascade.config.context_radius == 0)
        with network_precision(self.context):
            out = self.context.cascade.sample(cond, self.plan.sampler, noise, progress=progress,
                                              cancel=self.context.callbacks.cancel)
        self.network_passes += out.network_passes * len(chunk)
        full = out.full[:, :, :tile_h, :tile_w].float().cpu().numpy()
        want_stage1 = want_stage1 and self.plan.layout.stage1 is not None
        stage1 = out.stage1[:, :, :tile_h, :tile_w].float().cpu().numpy() if want_stage1 else None
        return full, stage1

    def _run_chunk(self, chunk: Sequence[TileJob], progress: ProgressFn) -> List[TileResult]:
        plan, samples = self.plan, self.plan.samples
        merged = np.empty((len(chunk), plan.layout.total) + plan.tiling.tile_size, dtype=np.float32)
        moments = SampleMoments(merged, plan.layout, samples)
        cond = self._condition(chunk, self.context.statistics)
        both_readings = plan.uncertainty_has_decoding
        passes = 2 * samples if both_readings else samples
        for k in range(samples):
            full, stage1 = self._draw(cond, chunk, k, lambda f, k=k: progress((k + f) / passes))
            moments.add(full, stage1)
            del full, stage1
        scale, offset = self._output_scale(chunk, self.context.statistics)
        calibration = self.context.cascade.config.uncertainty_scale
        moments.finish(scale, calibration)
        # model units -> output units (the variance channels are already there)
        means = merged[:, plan.layout.means]
        means *= scale
        means += offset
        if both_readings:
            self._add_decoding_variance(chunk, merged, calibration, lambda f: progress(0.5 + f / 2))
        return [TileResult(job.index, job.tile, merged[i]) for i, job in enumerate(chunk)]

    def _add_decoding_variance(self, chunk: Sequence[TileJob], merged: np.ndarray, calibration,
                               progress: ProgressFn) -> None:
        """The guessed 8-bit decoding's share of the uncertainty: the chunk's mean estimate with its
        RGB read as a linear stretch (the same K seeds), its squared difference from the estimate in
        output units, under the same calibration as the samples' spread."""
        plan, stats = self.plan, self.context.stretch_statistics
        if stats is None:
            raise EngineError("internal error: the plan adds the decoding to the uncertainty but the runner was "
                              "given no linear-stretch statistics")
        stretched = [dataclasses.replace(job, rgb=as_linear_stretch(job.rgb)) for job in chunk]
        cond = self._condition(stretched, stats)
        total = np.zeros(merged[:, plan.layout.full].shape, np.float64)  # float64: K float32 draws summed
        for k in range(plan.samples):
            total += self._draw(cond, stretched, k, lambda f, k=k: progress((k + f) / plan.samples),
                                want_stage1=False)[0]
        scale, offset = self._output_scale(stretched, stats)
        alternative = total / plan.samples * scale + offset
        variance = decoding_variance(merged[:, plan.layout.full], alternative)
        if calibration is not None:
            variance *= np.square(np.asarray(calibration, dtype=np.float64))[None, :, None, None]
        merged[:, plan.layout.uncertainty] += variance.astype(np.float32)


def _is_cuda_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)
