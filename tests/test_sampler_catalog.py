"""The sampler registry: every list of names derives from it, it loads without torch, each step class
matches its closed form, and one new registry line makes a sampler usable by name end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from engine.bundle import default_bundle_path, read_config
from engine.config import TRUNCATION_TARGETS, SamplerConfig, ScheduleConfig, override_sampler
from engine.diffusion import sampler_catalog
from engine.diffusion.sampler_catalog import SamplerInfo
from engine.diffusion.samplers import SamplerStep, SamplingOptions, make_step, sample, sampler_timesteps
from engine.diffusion.samplers.ddim import DDIMStep
from engine.diffusion.samplers.ddpm import DDPMStep
from engine.diffusion.samplers.dpmpp import DPMSolverPP2MStep
from engine.diffusion.schedule import NoiseSchedule
from engine.errors import InputError


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule(ScheduleConfig())


def _sampler_choices(parser) -> dict:
    """{command: choices of its --sampler} for every subcommand that has the option."""
    commands = next(a for a in parser._actions if a.dest == "command").choices
    found = {}
    for command, sub in commands.items():
        for action in sub._actions:
            if "--sampler" in action.option_strings:
                found[command] = tuple(action.choices)
    return found


def _run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# --- the registry and what derives from it ------------------------------------------------------------

def test_registry_entries_are_complete_and_consistent(schedule):
    assert sampler_catalog.names() == tuple(s.name for s in sampler_catalog.SAMPLERS)
    assert len(set(sampler_catalog.names())) == len(sampler_catalog.SAMPLERS)
    assert len({s.display_name for s in sampler_catalog.SAMPLERS}) == len(sampler_catalog.SAMPLERS)
    for entry in sampler_catalog.SAMPLERS:
        assert entry.truncation_target in TRUNCATION_TARGETS
        assert entry.description and "\n" not in entry.description
        step = make_step(entry.name, schedule)
        assert isinstance(step, SamplerStep)
        timesteps = step.timesteps(7)
        assert timesteps[-1] == 0 and all(a > b for a, b in zip(timesteps, timesteps[1:]))
        assert len(timesteps) == (7 if entry.uses_steps else schedule.num_timesteps)


def test_every_registered_sampler_is_in_the_cli_choices_and_passes_validation():
    from engine.cli import build_parser

    choices = _sampler_choices(build_parser())
    assert set(choices) >= {"sample", "evaluate", "infer"}
    assert all(found == sampler_catalog.names() for found in choices.values())
    for name in sampler_catalog.names():
        SamplerConfig(name=name).validate()


def test_switching_sampler_takes_its_registered_truncation_target():
    for entry in sampler_catalog.SAMPLERS:
        other = next(s.name for s in sampler_catalog.SAMPLERS if s.name != entry.name)
        base = SamplerConfig(name=other, truncation_target="none")
        assert override_sampler(base, sampler=entry.name).truncation_target == entry.truncation_target
        assert override_sampler(base, sampler=entry.name, truncation_target="x_t").truncation_target == "x_t"


def test_unknown_sampler_is_refused_naming_the_setting_and_every_valid_name():
    with pytest.raises(InputError) as caught:
        SamplerConfig(name="euler").validate()
    assert caught.value.parameter == "sampler"
    assert all(name in str(caught.value) for name in sampler_catalog.names())
    with pytest.raises(InputError) as caught:
        override_sampler(SamplerConfig(), sampler="euler")
    assert caught.value.parameter == "sampler" and "unknown sampler 'euler'" in str(caught.value)
    with pytest.raises(ValueError, match="use ddim, dpmpp or ddpm"):
        sampler_catalog.info("euler")


def test_labels_name_the_sampler_and_its_step_count():
    assert sampler_catalog.label("ddim", 2) == "DDIM, 2 steps"
    assert sampler_catalog.label("dpmpp", 1) == "DPM-Solver++(2M), 1 step"
    assert sampler_catalog.label("ddpm", 20, 1000) == "DDPM, 1000 steps"
    assert sampler_catalog.label("ddpm", 20) == "DDPM, all steps"
    assert all(entry.display_name in sampler_catalog.help_text() for entry in sampler_catalog.SAMPLERS)


def test_catalogue_imports_without_torch_or_any_other_engine_module():
    out = _run_python("""
        import sys
        sys.modules["torch"] = None  # `import torch` now raises ImportError
        from engine.diffusion import sampler_catalog
        print(sorted(m for m in sys.modules if m.startswith(("engine", "numpy"))))
        print(",".join(sampler_catalog.names()))
    """)
    loaded, names = out.splitlines()
    assert loaded == str(["engine", "engine.diffusion", "engine.diffusion.sampler_catalog"])
    assert names == ",".join(sampler_catalog.names())


def test_qgis_enum_is_the_models_default_then_the_registry_in_its_saved_order():
    pytest.importorskip("qgis.core")
    out = _run_python(f"""
        import importlib.util, json, sys
        sys.modules["torch"] = None
        spec = importlib.util.spec_from_file_location("scdm", {str(REPO_ROOT / "__init__.py")!r},
                                                      submodule_search_locations=[{str(REPO_ROOT)!r}])
        sys.modules["scdm"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["scdm"])
        from scdm.scdm_plugin.algorithms import inference
        print(json.dumps(inference.SAMPLERS))
    """)
    enum = json.loads(out)
    assert [name for _, name in enum] == [None, *sampler_catalog.names()]
    # Saved models and batch files store the index: these must never move.
    assert [name for _, name in enum[:4]] == [None, "ddim", "dpmpp", "ddpm"]
    bundled = read_config(default_bundle_path())
    assert f"bundled model: {sampler_catalog.label(bundled.sampler.name, bundled.sampler.steps)}" in enum[0][0]
    for (label, _), entry in zip(enum[1:], sampler_catalog.SAMPLERS):
        assert label.startswith(entry.display_name) and entry.description in label


# --- each step class against its closed form ------------------------------------------------------------

def _tensors(seed: int, count: int):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 4, 4, generator=generator) for _ in range(count)]


class _Noise:
    """A noise draw that records how often it was called."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value


def _coefficients(t: int):
    """Float64 betas, alpha_bar and alpha_bar_prev of the default linear schedule at t."""
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    return betas[t], ab[t], (ab[t - 1] if t > 0 else 1.0)


def test_one_ddim_step_from_x_T_to_the_data_returns_x0(schedule):
    x, eps, x0, z = _tensors(0, 4)
    step = DDIMStep(schedule, spacing="quadratic", eta=0.7)
    noise = _Noise(z)
    out = step.step(x=x, t=999, t_prev=-1, eps=eps, x0=x0, noise=noise)
    assert torch.equal(out, x0) and noise.calls == 0


def test_a_ddim_step_is_eq_12(schedule):
    x, eps, x0, z = _tensors(1, 4)
    t, t_prev, eta = 700, 400, 0.5
    ab, ab_prev = _coefficients(t)[1], _coefficients(t_prev)[1]
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
    expected = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev - sigma ** 2) * eps + sigma * z
    noise = _Noise(z)
    out = DDIMStep(schedule, spacing="quadratic", eta=eta).step(x=x, t=t, t_prev=t_prev, eps=eps, x0=x0, noise=noise)
    assert torch.allclose(out, expected, atol=1e-5) and noise.calls == 1
    deterministic = _Noise(z)
    DDIMStep(schedule, spacing="quadratic").step(x=x, t=t, t_prev=t_prev, eps=eps, x0=x0, noise=deterministic)
    assert deterministic.calls == 0


@pytest.mark.parametrize("t", [500, 0])
def test_a_ddpm_step_is_the_posterior_mean_plus_its_deviation_times_noise(schedule, t):
    x, eps, x0, z = _tensors(2, 4)
    beta, ab, ab_prev = _coefficients(t)
    mean = (beta * math.sqrt(ab_prev) / (1 - ab)) * x0 + ((1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab)) * x
    variance = beta * (1 - ab_prev) / (1 - ab)
    noise = _Noise(z)
    out = DDPMStep(schedule, spacing="full").step(x=x, t=t, t_prev=t - 1, eps=eps, x0=x0, noise=noise)
    expected = mean + math.sqrt(variance) * z if t > 0 else mean
    assert torch.allclose(out, expected, atol=1e-5)
    assert noise.calls == (1 if t > 0 else 0)


def test_dpmpp_first_step_is_first_order_then_second_order_then_x0(schedule):
    x, eps, x0_first, x0_second, z = _tensors(3, 5)
    t0, t1, t2 = 900, 600, 300
    alpha = {t: math.sqrt(_coefficients(t)[1]) for t in (t0, t1, t2)}
    sigma = {t: math.sqrt(1 - _coefficients(t)[1]) for t in (t0, t1, t2)}
    lam = {t: math.log(alpha[t] / sigma[t]) for t in (t0, t1, t2)}
    step = DPMSolverPP2MStep(schedule, spacing="logsnr")
    noise = _Noise(z)
    # First order (DPM-Solver++ 1, the same as DDIM with eta = 0): x' = sigma'/sigma x - alpha' (e^-h - 1) x0.
    h1 = lam[t1] - lam[t0]
    first = step.step(x=x, t=t0, t_prev=t1, eps=eps, x0=x0_first, noise=noise)
    expected = sigma[t1] / sigma[t0] * x - alpha[t1] * math.expm1(-h1) * x0_first
    assert torch.allclose(first, expected, atol=1e-5)
    # Second order: D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev with r = h_prev / h.
    h2 = lam[t2] - lam[t1]
    r = h1 / h2
    d = (1 + 1 / (2 * r)) * x0_second - 1 / (2 * r) * x0_first
    second = step.step(x=first, t=t1, t_prev=t2, eps=eps, x0=x0_second, noise=noise)
    assert torch.allclose(second, sigma[t2] / sigma[t1] * first - alpha[t2] * math.expm1(-h2) * d, atol=1e-5)
    assert torch.equal(step.step(x=second, t=t2, t_prev=-1, eps=eps, x0=x0_first, noise=noise), x0_first)
    assert noise.calls == 0


def test_a_fresh_dpmpp_step_object_forgets_the_previous_run(schedule):
    x, eps, x0 = _tensors(4, 3)
    used = make_step("dpmpp", schedule)
    used.step(x=x, t=900, t_prev=600, eps=eps, x0=x0 * 3, noise=_Noise(x))
    fresh = make_step("dpmpp", schedule)
    first_of_fresh = fresh.step(x=x, t=600, t_prev=300, eps=eps, x0=x0, noise=_Noise(x))
    assert not torch.equal(first_of_fresh, used.step(x=x, t=600, t_prev=300, eps=eps, x0=x0, noise=_Noise(x)))


# --- a new sampler is one step class plus one registry line ---------------------------------------------

class ToyStep(SamplerStep):
    """DDIM with eta = 0 written in its own words; registered only by the test below."""

    def step(self, *, x, t, t_prev, eps, x0, noise):
        ab_prev = self.schedule.alpha_bar(t_prev)
        return math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps


TOY = SamplerInfo("toy", "Toy sampler", "uniform", "x_t", "a test-only sampler", f"{__name__}.ToyStep")


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setattr(sampler_catalog, "SAMPLERS", sampler_catalog.SAMPLERS + (TOY,))


def test_one_registry_line_makes_a_new_sampler_usable_by_name(toy_registered, schedule, tiny_bundle, tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    from engine.cli import build_parser, main

    assert "toy" in sampler_catalog.names() and sampler_catalog.label("toy", 3) == "Toy sampler, 3 steps"
    assert all("toy" in found for found in _sampler_choices(build_parser()).values())
    assert override_sampler(SamplerConfig(), sampler="toy", steps=3).truncation_target == "x_t"
    assert sampler_timesteps("toy", schedule, 4) == schedule.spaced_timesteps(4, "uniform")

    bench = tmp_path / "bench.json"
    assert main(["bench", "--model", str(tiny_bundle), "--size", "16", "--samplers", "toy:3",
                 "--device", "cpu", "--json", str(bench)]) == 0
    (row,) = json.loads(bench.read_text())["rows"]
    assert (row["sampler"], row["steps"], row["nfe"]) == ("toy", 3, 6)

    rgb = tmp_path / "rgb.tif"
    with rasterio.open(rgb, "w", driver="GTiff", width=16, height=16, count=3, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(0, 160, 10, 10)) as ds:
        ds.write(np.random.default_rng(0).integers(200, 4000, (3, 16, 16), dtype=np.uint16))
    out = tmp_path / "toy.tif"
    assert main(["infer", str(rgb), str(out), "--model", str(tiny_bundle), "--sampler", "toy", "--steps", "2",
                 "--tile", "16", "--overlap", "0", "--device", "cpu", "--quiet"]) == 0
    with rasterio.open(out) as ds:
        assert ds.count == 48 and np.isfinite(ds.read()).all()


def test_a_registered_toy_sampler_reaches_the_gaussian_toy_data(toy_registered, schedule):
    from test_diffusion import MU, SIGMA, _noise, exact_eps

    result = sample(exact_eps(schedule), schedule, (1, 1, 100, 100), _noise(5), SamplingOptions("toy", 200))
    assert result.nfe == 200
    assert result.x0.mean().item() == pytest.approx(MU, abs=0.02)
    assert result.x0.std().item() == pytest.approx(SIGMA, abs=0.03)
