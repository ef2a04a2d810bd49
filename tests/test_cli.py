"""The engine CLI's bench and sample commands and its error handling."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from conftest import REPO_ROOT


def _engine(*args):
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)


def test_bench_reports_network_passes_and_speed(tiny_bundle, tmp_path):
    run = _engine("bench", "--model", str(tiny_bundle), "--size", "16", "--samplers", "ddim:3,dpmpp:2",
                  "--json", str(tmp_path / "bench.json"))
    assert run.returncode == 0, run.stderr
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [(r["sampler"], r["nfe"], r["network_passes"]) for r in rows] == [("ddim", 6, 12), ("dpmpp", 4, 8)]
    assert all(r["seconds_per_megapixel"] > 0 for r in rows)
    assert "s/MP" in run.stdout


def test_sample_writes_cube(tiny_bundle, tmp_path, shared_data):
    out = tmp_path / "cube.npz"
    run = _engine("sample", "--model", str(tiny_bundle), "--scene", str(shared_data / "scenes" / "houston2018_casi48.npz"),
                  "--region", "0:16,0:24", "--sampler", "ddim", "--steps", "2", "--out", str(out))
    assert run.returncode == 0, run.stderr
    with np.load(out) as data:
        assert data["cube"].shape == (16, 24, 48) and data["stage1"].shape == (16, 24, 12)
        assert np.isfinite(data["cube"]).all()


def test_clear_errors(tiny_bundle, tmp_path):
    missing = _engine("evaluate", "--model", str(tmp_path / "none"), "--scene", "x.npz")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_rgb = _engine("evaluate", "--model", str(tiny_bundle), "--scene", str(tmp_path / "x.npz"), "--rgb", "bands:1,2")
    assert bad_rgb.returncode == 2 and "three 0-based band indices" in bad_rgb.stderr
    bad_steps = _engine("bench", "--model", str(tiny_bundle), "--samplers", "ddim:0")
    assert bad_steps.returncode == 2 and "steps must be at least 1" in bad_steps.stderr


def test_evaluate_averages_samples(tiny_bundle, tmp_path, shared_data):
    """--samples K costs K times the passes and gives the mean of the seeds' samples."""
    from engine.bundle import load_bundle
    from engine.config import SamplerConfig
    from engine.evaluate import reconstruct

    scene = str(shared_data / "scenes" / "houston2018_casi48.npz")
    results = {}
    for k in (1, 3):
        run = _engine("evaluate", "--model", str(tiny_bundle), "--scene", scene, "--region", "0:16,0:16",
                      "--sampler", "ddim", "--steps", "2", "--samples", str(k), "--json", str(tmp_path / f"{k}.json"))
        assert run.returncode == 0, run.stderr
        results[k] = json.loads((tmp_path / f"{k}.json").read_text())
    assert results[3]["network_passes"] == 3 * results[1]["network_passes"] and results[3]["samples"] == 3

    cascade = load_bundle(tiny_bundle)
    rgb = np.random.default_rng(0).uniform(100, 2000, (3, 16, 16)).astype(np.float32)
    settings = SamplerConfig(name="ddim", steps=2, guidance=0.0)
    singles = [reconstruct(cascade, rgb, settings, seed=s).full for s in (5, 6, 7)]
    mean = reconstruct(cascade, rgb, settings, seed=5, samples=3).full
    assert np.allclose(mean, np.mean(singles, axis=0), rtol=1e-4, atol=1e-5 * np.abs(mean).max())
    assert not np.allclose(singles[0], singles[1])
