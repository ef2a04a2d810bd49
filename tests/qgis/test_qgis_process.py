"""qgis_process.bin as a subprocess, as a user runs it: list, help, run --json, the example model,
the plugin without torch, and the plugin zip built with pb_tool installed into a fresh profile."""

from __future__ import annotations

import json
import subprocess
import zipfile

import pytest

from scdm_testing import (
    ALG_ID,
    DEFAULT_MODEL,
    EVAL_ID,
    EXAMPLE_MODEL,
    FAST,
    PLUGIN_NAME,
    REPO_ROOT,
    band_metadata,
    enable_plugin,
    georeference,
    leftovers,
    qgis_process_env,
    run_qgis_process,
)

pytestmark = pytest.mark.qgis_process


def fast_args(**overrides):
    return [f"{key}={value}" for key, value in {**FAST, **overrides}.items()]


def test_list_shows_both_algorithms(qgis_process_profile):
    out = run_qgis_process(["list"], qgis_process_profile).stdout
    assert f"{ALG_ID}\tSpectral super-resolution" in out
    assert f"{EVAL_ID}\tEvaluate spectral super-resolution" in out


def test_help_documents_the_algorithm(qgis_process_profile):
    out = run_qgis_process(["help", ALG_ID], qgis_process_profile).stdout
    assert "Spectral super-resolution (scdm:spectralsuperresolution)" in out
    for name in ("INPUT", "RED", "GREEN", "BLUE", "MODEL", "SAMPLER", "STEPS", "GUIDANCE", "PDT_STAGE1", "PDT_STAGE2",
                 "SEED", "TILE_SIZE", "OVERLAP", "DEVICE", "OUTPUT", "STAGE1_OUTPUT", "UNCERTAINTY_OUTPUT", "SAMPLES"):
        assert f"\n{name}: " in out, name
    assert "same units as the input RGB" in out and "<b>Time</b>" in out
    from engine.diffusion import sampler_catalog

    # Every registered sampler is offered, the paper's DDPM among them.
    assert "DDPM (the paper's ancestral sampler" in out
    assert all(s.display_name in out and s.description in out for s in sampler_catalog.SAMPLERS)


def test_run_json_writes_a_georeferenced_spectral_geotiff(qgis_process_profile, rgb_tif, tiny_bundle, tmp_path):
    out = tmp_path / "hsi.tif"
    result = run_qgis_process(["run", ALG_ID, "--json", "--", f"INPUT={rgb_tif}", f"MODEL={tiny_bundle}",
                               f"OUTPUT={out}", *fast_args()], qgis_process_profile)
    report = json.loads(result.stdout)
    assert report["results"]["OUTPUT"] == str(out)
    log = "\n".join(report["log"]["info"])
    assert "Model: tiny-test" in log and "Device: CPU" in log and "tile 4 / 4" in log
    crs, transform, width, height, count = georeference(out)
    assert (crs, transform, width, height) == georeference(rgb_tif)[:4]
    assert count == 48
    meta = band_metadata(out, 10)
    assert meta["wavelength_units"] == "Nanometers" and float(meta["wavelength"]) > 0 and float(meta["fwhm"]) > 0


def test_run_with_only_input_and_output_uses_the_bundled_model(qgis_process_profile, rgb_tif, tmp_path):
    """`qgis_process run scdm:spectralsuperresolution -- INPUT=... OUTPUT=...`: every other parameter has
    a default. Until the bundled model is in resources/models the run fails and says so."""
    out = tmp_path / "default.tif"
    result = run_qgis_process(["run", ALG_ID, "--", f"INPUT={rgb_tif}", f"OUTPUT={out}"], qgis_process_profile,
                              check=DEFAULT_MODEL.exists())
    if DEFAULT_MODEL.exists():
        assert georeference(out)[:4] == georeference(rgb_tif)[:4]
        assert "Model: " in result.stdout and str(DEFAULT_MODEL) in result.stdout
    else:
        assert result.returncode != 0
        assert "the bundled model is missing" in result.stdout + result.stderr
        assert leftovers(tmp_path, "default") == []


def test_example_model_runs_in_qgis_process(qgis_process_profile, rgb_tif, tiny_bundle, tmp_path):
    _, (x0, dx, _, y0, _, dy), *_ = georeference(rgb_tif)
    extent = f"{x0},{x0 + 12 * dx},{y0 + 12 * dy},{y0}"
    out = tmp_path / "model_out.tif"
    result = run_qgis_process(["run", EXAMPLE_MODEL, "--json", "--", f"rgb={rgb_tif}", f"extent={extent}",
                               f"model={tiny_bundle}", "steps=2", f"superresolve:hyperspectral={out}"],
                              qgis_process_profile)
    assert json.loads(result.stdout)["results"]["superresolve:hyperspectral"] == str(out)
    assert georeference(out)[2:] == (12, 12, 48)


def test_without_torch_the_plugin_loads_and_the_run_names_the_install_command(
        tmp_path, plugins_folder, rgb_tif, tiny_bundle):
    """With Debian's python3 first on PATH (no torch there), as in a QGIS without the engine's packages."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("/usr/bin/python3 can import torch on this machine")
    env = qgis_process_env(tmp_path / "profile", plugins_folder, venv_first=False)
    enable_plugin(env, tmp_path / "profile")
    assert ALG_ID in run_qgis_process(["list"], env).stdout
    out = tmp_path / "out.tif"
    result = run_qgis_process(["run", ALG_ID, "--", f"INPUT={rgb_tif}", f"MODEL={tiny_bundle}", f"OUTPUT={out}"],
                              env, check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "needs the Python package(s) torch" in text
    expected = (f"/usr/bin/python3 -m pip install --user --break-system-packages -c {REPO_ROOT}/constraints.txt "
                f"-r {REPO_ROOT}/requirements.txt")
    assert expected in text
    assert not out.exists()


def test_plugin_zip_installs_into_a_fresh_profile_and_runs(tmp_path, rgb_tif):
    """scripts/build_zip.sh (pb_tool deploy + pb_tool zip), then what 'Install from ZIP' does: unpack into
    <profile>/python/plugins, enable, run; no QGIS_PLUGINPATH, nothing from the checkout."""
    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build_zip.sh"), str(tmp_path / "dist")], check=True,
                   capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    archive = tmp_path / "dist" / "scdm.zip"
    with zipfile.ZipFile(archive) as bundle:
        names = bundle.namelist()
        assert {"scdm/metadata.txt", "scdm/__init__.py", "scdm/resources/icon.png", "scdm/resources/icon.svg",
                "scdm/scdm_plugin/provider.py", "scdm/engine/raster/pipeline.py", "scdm/requirements.txt",
                "scdm/examples/clip_and_superresolve.model3"} <= set(names)
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        # The measurement commands (benchmarks/) are development tools: none of their code ships.
        # (A benchmark named like an engine module, e.g. consistency.py, is told apart by its folder only.)
        engine_names = {p.name for p in (REPO_ROOT / "engine").rglob("*.py")}
        measurement = ({p.name for p in (REPO_ROOT / "benchmarks").glob("*.py")}
                       - {"__init__.py", "data.py"} - engine_names)
        assert measurement >= {"paper_protocol.py", "bench_raster.py", "model_card.py", "sampler_quality.py",
                               "tile_quality.py"}
        assert not [n for n in names if "/benchmarks/" in n or n.rsplit("/", 1)[-1] in measurement]
        assert all(n.startswith(f"{PLUGIN_NAME}/") for n in names)
        profile = tmp_path / "fresh_profile"
        plugins = profile / "profiles" / "default" / "python" / "plugins"
        plugins.mkdir(parents=True)
        bundle.extractall(plugins)
    env = qgis_process_env(profile, plugins=None)
    enable_plugin(env, profile)
    out = tmp_path / "from_zip.tif"
    result = run_qgis_process(["run", ALG_ID, "--json", "--", f"INPUT={rgb_tif}", f"OUTPUT={out}", *fast_args()],
                              env)
    report = json.loads(result.stdout)
    assert report["results"]["OUTPUT"] == str(out)
    assert georeference(out)[4] == 48
    # The installed copy, not the checkout, answered: with MODEL empty it ran the model the zip holds.
    installed_model = plugins / PLUGIN_NAME / "resources" / "models" / "scdm-default"
    assert f"from {installed_model}" in "\n".join(report["log"]["info"])
