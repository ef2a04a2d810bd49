"""The GPU path: mixed precision, the out-of-memory back-off on a real GPU, one local worker per GPU,
and the CPU side of scripts/gpu_check.sh.

Tests whose name contains ``cuda`` need a CUDA GPU and are skipped without one; scripts/gpu_check.sh
runs them (with the pipeline's ``test_cuda_out_of_memory_halves_the_batch``) on a GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from engine.bundle import load_bundle
from engine.errors import InputError
from engine.raster.pipeline import infer_raster
from engine.raster.runners.precision import precision_scope

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST = dict(tile=32, overlap=8, sampler="ddim", steps=1, guidance=0.0, seed=3)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")


def write_rgb(path: Path, height: int = 48, width: int = 40) -> Path:
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([900 + 400 * np.sin(rows / 7), 800 + 300 * np.cos(cols / 5), 600 + 3 * (rows + cols)])
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint16",
                       crs="EPSG:32633", transform=Affine(30.0, 0, 500000.0, 0, -30.0, 5800000.0)) as dst:
        dst.write(rgb.astype(np.uint16))
    return path


def read(path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read()


def relative_differences(values: np.ndarray, reference: np.ndarray):
    """(max, mean) absolute difference, relative to the mean absolute reference value."""
    difference = np.abs(values.astype(np.float64) - reference)
    scale = float(np.abs(reference).mean())
    return float(difference.max()) / scale, float(difference.mean()) / scale


# ----------------------------------------------------------------------------------------------
# precision, on any machine


def test_fp32_scope_changes_nothing(tiny_bundle):
    cascade = load_bundle(tiny_bundle)
    weights = {name: p.clone() for name, p in cascade.model(1).named_parameters()}
    with precision_scope(cascade, "cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    assert all(torch.equal(weights[name], p) for name, p in cascade.model(1).named_parameters())


def test_bf16_runs_under_autocast_close_to_fp32(tiny_bundle, tmp_path):
    """bf16 autocast really changes the network calls (the output differs) and stays close: within
    5 % (worst pixel) and 1 % (mean) of the mean output value."""
    rgb = write_rgb(tmp_path / "rgb.tif")
    full = read(infer_raster(rgb, tmp_path / "fp32.tif", model=tiny_bundle, device="cpu", **FAST).output_path)
    mixed = read(infer_raster(rgb, tmp_path / "bf16.tif", model=tiny_bundle, device="cpu", precision="bf16",
                              **FAST).output_path)
    assert np.isfinite(mixed).all() and not np.array_equal(mixed, full)
    worst, mean = relative_differences(mixed, full)
    assert worst < 0.05 and mean < 0.01, (worst, mean)


def test_mixed_precision_puts_the_networks_in_channels_last(tiny_bundle):
    cascade = load_bundle(tiny_bundle)
    with precision_scope(cascade, "cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")
    four_d = [p for network in cascade.networks().values() for p in network.parameters() if p.dim() == 4]
    assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_fp16_without_a_gpu_is_refused_before_any_file(tiny_bundle, tmp_path):
    rgb = write_rgb(tmp_path / "rgb.tif")
    with pytest.raises(InputError, match="fp16 needs a CUDA device") as error:
        infer_raster(rgb, tmp_path / "out.tif", model=tiny_bundle, device="cpu", precision="fp16", **FAST)
    assert error.value.parameter == "precision"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgb.tif"]


def test_precision_flag_on_the_command_line(tiny_bundle, tmp_path):
    from engine.cli import main

    rgb = write_rgb(tmp_path / "rgb.tif")
    assert main(["infer", str(rgb), str(tmp_path / "o.tif"), "--model", str(tiny_bundle), "--device", "cpu",
                 "--tile", "32", "--steps", "1", "--precision", "bf16", "--quiet"]) == 0
    with rasterio.open(tmp_path / "o.tif") as dataset:
        assert dataset.count == 48


# ----------------------------------------------------------------------------------------------
# the CPU side of scripts/gpu_check.sh


def test_gpu_check_script_runs_every_step_in_smoke_mode(tiny_bundle, tmp_path):
    """SCDM_GPU_CHECK_SMOKE=1: the same steps on the CPU at tiny sizes (the CUDA tests listed, not
    run; DDPM, which always takes its 1000 steps, left out). Every step ends with exit 0 and the
    measurements come out as JSON lines. The time limits are the GPU's: a CPU shared with other
    work gets ten times as long."""
    out = tmp_path / "gpu-check.txt"
    env = dict(os.environ, SCDM_GPU_CHECK_SMOKE="1", SCDM_GPU_CHECK_MODEL=str(tiny_bundle), SCDM_PYTHON=sys.executable,
               SCDM_GPU_CHECK_TIME_FACTOR="10", SCDM_GPU_CHECK_SAMPLERS="ddim dpmpp")
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_check.sh"), str(out)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=3600)
    text = out.read_text()
    assert result.returncode == 0, result.stderr + text
    for title in ("## machine", "## CUDA tests", "## bench ddim", "## bench dpmpp", "## throughput", "## precision"):
        assert title in text, title
    assert text.count("-> exit 0 after") == 5 and "test_cuda_out_of_memory_back_off" in text
    assert "test_cuda_out_of_memory_halves_the_batch" in text and "test_bf16_runs" not in text  # CUDA tests only
    measured = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert [row["throughput"] for row in measured if "throughput" in row] == ["fp32", "bf16"]
    assert [row["precision"] for row in measured if "precision" in row] == ["fp32", "bf16"]


# ----------------------------------------------------------------------------------------------
# on a CUDA GPU (scripts/gpu_check.sh)


OOM_CHILD = """
import sys, torch
from engine.raster.pipeline import infer_raster
model, rgb, out, fraction = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
torch.cuda.set_per_process_memory_fraction(fraction)
messages = []
report = infer_raster(rgb, out, model=model, device="cuda", batch=64, tile=512, overlap=16, sampler="ddim", steps=1,
                      guidance=0.0, seed=3, log=messages.append)
print(report.batch, sum("batch reduced" in m for m in messages))
"""


@needs_cuda
def test_cuda_out_of_memory_back_off_under_a_memory_fraction(tiny_bundle, tmp_path):
    """A process limited to the memory of a few 512 px tiles starts at batch 64, runs out of GPU
    memory for real, halves its batch until the tiles fit, and writes what a batch-1 run writes
    (up to the rounding that batching changes)."""
    rgb = write_rgb(tmp_path / "rgb.tif", 2048, 2048)
    reference = read(infer_raster(rgb, tmp_path / "ref.tif", model=tiny_bundle, device="cuda", batch=1, tile=512,
                                  overlap=16, sampler="ddim", steps=1, guidance=0.0, seed=3).output_path)
    torch.cuda.reset_peak_memory_stats()
    one_tile = _peak_bytes_of_one_tile(tiny_bundle)
    fraction = min(0.9, 4 * one_tile / torch.cuda.get_device_properties(0).total_memory)
    result = subprocess.run([sys.executable, "-c", OOM_CHILD, str(tiny_bundle), str(rgb), str(tmp_path / "out.tif"),
                             str(fraction)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    batch, halvings = (int(v) for v in result.stdout.split()[-2:])
    assert 1 <= batch < 64 and halvings >= 1
    np.testing.assert_allclose(read(tmp_path / "out.tif"), reference, rtol=1e-4,
                               atol=1e-4 * float(np.abs(reference).mean()))


def _peak_bytes_of_one_tile(bundle) -> int:
    from engine.diffusion.noise import PositionalNoise
    from engine.evaluate import sampler_settings

    cascade = load_bundle(bundle, device="cuda")
    cond = torch.rand(1, cascade.config.normalisation.condition_channels, 544, 544, device="cuda")
    before = torch.cuda.memory_allocated()
    with torch.no_grad():
        cascade.sample(cond, sampler_settings(cascade, "ddim", 1, 0.0), PositionalNoise(0, [(0, 0)]))
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_stays_close_to_fp32(tiny_bundle, tmp_path, precision):
    rgb = write_rgb(tmp_path / "rgb.tif", 256, 256)
    full = read(infer_raster(rgb, tmp_path / "fp32.tif", model=tiny_bundle, device="cuda", **FAST).output_path)
    mixed = read(infer_raster(rgb, tmp_path / f"{precision}.tif", model=tiny_bundle, device="cuda",
                              precision=precision, **FAST).output_path)
    assert np.isfinite(mixed).all()
    worst, mean = relative_differences(mixed, full)
    assert worst < 0.05 and mean < 0.01, (worst, mean)


@needs_cuda
def test_cuda_local_cluster_has_one_worker_per_gpu_and_writes_the_in_process_output(tiny_bundle, tmp_path):
    distributed = pytest.importorskip("distributed")
    from engine.raster.runners import dask_cluster as dc

    gpus = torch.cuda.device_count()
    connection = dc.connect(f"local:{gpus}", "cuda", lambda message: None)
    try:
        seen = connection.client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
    finally:
        connection.close()
    assert sorted(seen.values()) == [str(i) for i in range(gpus)], (seen, distributed.__version__)
    rgb = write_rgb(tmp_path / "rgb.tif", 256, 256)
    here = read(infer_raster(rgb, tmp_path / "here.tif", model=tiny_bundle, device="cuda", **FAST).output_path)
    there = read(infer_raster(rgb, tmp_path / "there.tif", model=tiny_bundle, device="cuda", cluster=f"local:{gpus}",
                              **FAST).output_path)
    np.testing.assert_array_equal(there, here)
