"""The engine CLI's bench and sample commands and its error handling."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

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


def test_infer_refuses_settings_outside_the_limits_naming_the_flag(tiny_bundle, tmp_path):
    """The command line checks through InferenceSettings: the same ranges as QGIS, the fix named."""
    rgb = tmp_path / "rgb.tif"
    rgb.write_bytes(b"not read: the settings are refused first")
    for flags, expected in ((["--steps", "100000"], "--steps: steps 100000 is out of range: use a value from 1 to 1000"),
                            (["--guidance", "-5"], "--guidance: guidance -5 is out of range: use a value from 0 to 20"),
                            (["--samples", "1", "--uncertainty", str(tmp_path / "u.tif")], "--samples: an uncertainty")):
        run = _engine("infer", str(rgb), str(tmp_path / "out.tif"), "--model", str(tiny_bundle), *flags)
        assert run.returncode == 2 and expected in run.stderr, run.stderr
    run = _engine("infer", str(rgb), str(tmp_path / "out.img"), "--model", str(tiny_bundle))
    assert run.returncode == 2 and "output: output" in run.stderr and "GeoTIFF (.tif, .tiff)" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgb.tif"]


# ----------------------------------------------------------------------------------------------
# engine errors name the flag of their setting (EngineError.parameter), the messages none


def _infer_flags() -> dict:
    from engine.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices
    return commands["infer"].get_default("setting_flags")


def test_every_inference_setting_error_is_printed_with_its_flag():
    from engine.cli import error_message
    from engine.errors import BundleError, EngineError, InputError
    from engine.settings import InferenceSettings

    flags = _infer_flags()
    without_flag = {"writer_memory_bytes", "runner"}  # not offered on the command line
    settings = {f.name for f in dataclasses.fields(InferenceSettings)} - without_flag
    assert settings <= set(flags), settings - set(flags)
    assert {name: flags[name] for name in ("tile", "bands", "uncertainty_output", "expected_band_count", "output")} \
        == {"tile": "--tile", "bands": "--bands", "uncertainty_output": "--uncertainty",
            "expected_band_count": "--expect-bands", "output": "output"}
    for name in settings:
        assert error_message(InputError("refused", parameter=name), flags) == f"{flags[name]}: refused"
    assert error_message(BundleError("truncated"), flags) == "--model: truncated"
    assert error_message(EngineError("no valid pixel"), flags) == "no valid pixel"
    assert error_message(InputError("refused", parameter="runner"), flags) == "refused"


def _rgb_raster(path):
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 30, 30)) as ds:
        ds.write(np.full((3, 8, 8), 1000, np.uint16))
    return path


@pytest.mark.parametrize("arguments, expected", [
    (["--tile", "4"], "--tile: tile 4 is out of range"),
    (["--tile", "16", "--overlap", "12"], "--overlap: overlap 12 must lie between 0 and half the tile (8)"),
    (["--bands", "1,x,3"], "--bands: cannot read band list '1,x,3'"),
    (["--bands", "1,2,9"], "--bands: band number 9 out of range"),
    (["--pdt", "0", "0.5"], "--pdt: pdt 0 is out of range"),
    (["--seed", "-1"], "--seed: seed -1 is out of range"),
    (["--samples", "0"], "--samples: samples 0 is out of range"),
    (["--expect-bands", "0"], "--expect-bands: expected_band_count 0 is out of range"),
    (["--device", "tpu"], "--device: unknown device 'tpu'"),
    (["--model", "{tmp}/no_model"], "--model: model bundle "),
    (["--stage1-output", "{tmp}/out.tif"], "--stage1-output: the output and stage1_output paths are the same"),
])
def test_infer_errors_name_the_flag(tiny_bundle, tmp_path, capsys, arguments, expected):
    from engine.cli import main

    rgb = _rgb_raster(tmp_path / "rgb.tif")
    arguments = [a.format(tmp=tmp_path) for a in arguments]
    model = [] if "--model" in arguments else ["--model", str(tiny_bundle)]
    assert main(["infer", str(rgb), str(tmp_path / "out.tif"), *model, "--quiet", *arguments]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith(f"error: {expected}"), printed
    assert not (tmp_path / "out.tif").exists()


def test_cuda_without_a_gpu_names_the_device_flag(tiny_bundle, tmp_path, capsys):
    import torch

    from engine.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rgb = _rgb_raster(tmp_path / "rgb.tif")
    assert main(["infer", str(rgb), str(tmp_path / "o.tif"), "--model", str(tiny_bundle), "--device", "cuda",
                 "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: --device: device 'cuda' was asked for but torch sees no "
                                              "CUDA GPU: use cpu or auto")


@pytest.mark.parametrize("arguments, expected", [
    (["--rgb", "bands:1,2"], "--rgb: cannot read 'bands:1,2': give three 0-based band indices"),
    (["--region", "0-16,0:16"], "--region: cannot read '0-16,0:16': use ROW0:ROW1,COL0:COL1"),
    (["--model", "{tmp}/none"], "--model: model bundle "),
])
def test_evaluate_errors_name_the_flag(tiny_bundle, tmp_path, capsys, arguments, expected):
    from engine.cli import main

    arguments = [a.format(tmp=tmp_path) for a in arguments]
    model = [] if "--model" in arguments else ["--model", str(tiny_bundle)]
    assert main(["evaluate", *model, "--scene", str(tmp_path / "x.npz"), *arguments]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith(f"error: {expected}"), printed


def test_a_refused_sampler_override_keeps_its_setting():
    """The plan passes the sampler overrides' own InputError on, so the front ends name the right setting."""
    from engine.config import SamplerConfig
    from engine.errors import InputError
    from engine.raster.plan import sampler_settings

    chosen = SimpleNamespace(sampler=None, steps=0, guidance=None, guidance_stage1=None, pdt=(None, None))
    with pytest.raises(InputError) as raised:
        sampler_settings(SamplerConfig(), chosen)
    assert raised.value.parameter == "steps"
    with pytest.raises(InputError) as raised:
        sampler_settings(SamplerConfig(), SimpleNamespace(sampler="euler", steps=None, guidance=None, guidance_stage1=None,
                                                              pdt=(None, None)))
    assert raised.value.parameter == "sampler"


FLAG = re.compile(r"(?:^|[\s(`'\"])--[a-z]")


def _raised_strings(tree: ast.AST):
    """(line, text) of every string literal inside the exception of a ``raise`` statement."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for inner in ast.walk(node.exc):
                if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                    yield node.lineno, inner.value


def test_no_engine_error_message_names_a_command_line_flag():
    """The front ends put their own name for a setting in front of a message; the message names none."""
    found = []
    for path in sorted((REPO_ROOT / "engine").rglob("*.py")):
        for line, text in _raised_strings(ast.parse(path.read_text(), str(path))):
            if FLAG.search(text):
                found.append(f"{path.relative_to(REPO_ROOT)}:{line}: {text!r}")
    assert not found, "\n".join(found)
