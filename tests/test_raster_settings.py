"""InferenceSettings (engine.settings) and the inference plan (engine.raster.plan): refused values name
their field and a fix that is itself accepted; the plan is a pure function of input, model and settings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import SamplerConfig
from engine.errors import InputError
from engine.raster.io import InputInfo
from engine.raster.plan import ModelFacts, make_plan
from engine.raster.windows import border_margin, tile_grid
from engine.settings import LIMITS, PDT_OFF, InferenceSettings

REPO = Path(__file__).resolve().parents[1]
BUNDLED_CONFIG = REPO / "resources" / "models" / "scdm-default" / "config.json"


def settings(**choices) -> InferenceSettings:
    return InferenceSettings(input="in.tif", output="out.tif", **choices)


def refused(parameter: str, **choices) -> str:
    with pytest.raises(InputError) as raised:
        settings(**choices)
    assert raised.value.parameter == parameter, str(raised.value)
    message = str(raised.value)
    assert "--" not in message, "engine messages never name a command-line flag"
    return message


def suggested(message: str) -> str:
    return re.search(r"e\.g\. (\S+)$", message).group(1)


@pytest.mark.parametrize("name, value", [
    ("steps", 100000), ("steps", 0), ("guidance", -5.0), ("guidance", 25.0), ("samples", 0), ("samples", 65),
    ("tile", 4), ("tile", 10 ** 5), ("overlap", -1), ("seed", -1), ("batch", 0), ("expected_band_count", 0),
])
def test_out_of_range_values_name_their_field_and_an_accepted_value(name, value):
    message = refused(name, **{name: value})
    limit = LIMITS[name]
    assert "out of range" in message
    fix = float(suggested(message))
    assert limit.low <= fix and (limit.high is None or fix <= limit.high)
    settings(**{name: int(fix) if limit.whole else fix})  # the suggested value is accepted


def test_whole_numbers_are_whole_and_booleans_are_not_numbers():
    assert "whole number" in refused("steps", steps=2.5)
    assert "whole number" in refused("tile", tile=True)
    assert "a number" in refused("guidance", guidance="1")


def test_overlap_at_most_half_the_tile():
    message = refused("overlap", tile=32, overlap=20)
    assert "overlap 20" in message
    settings(tile=32, overlap=int(suggested(message)))


def test_pdt_entries_none_off_or_a_percentile():
    assert settings(pdt=(False, "off")).pdt == (PDT_OFF, PDT_OFF)
    assert settings(pdt=[0.5, None]).pdt == (0.5, None)
    assert "(0, 1]" in refused("pdt", pdt=(0.0, 0.9))
    refused("pdt", pdt=(1.5, 0.9))
    refused("pdt", pdt=(0.5,))


def test_sampler_names_come_from_the_catalogue():
    assert "unknown sampler 'euler'" in refused("sampler", sampler="euler")
    assert settings(sampler="dpmpp").sampler == "dpmpp"


def test_cross_field_rules():
    message = refused("samples", uncertainty_output="u.tif")
    assert "at least two samples" in message
    settings(uncertainty_output="u.tif", samples=int(suggested(message)))
    assert "must differ" in refused("stage1_output", stage1_output="./out.tif")
    assert "must differ" in refused("uncertainty_output", samples=2, stage1_output="s.tif", uncertainty_output="s.tif")
    with pytest.raises(InputError) as raised:
        InferenceSettings(input="in.tif", output="")
    assert raised.value.parameter == "output"


def test_front_end_values_are_normalised():
    chosen = settings(bands="3, 2,1", stage1_output=Path("s1.tif"), device=None)
    assert chosen.bands == (3, 2, 1) and chosen.stage1_output == "s1.tif" and chosen.device == "auto"
    assert "1-based band numbers" in refused("bands", bands="red,green,blue")
    with pytest.raises(TypeError):
        settings(tiles=64)  # an unknown setting is refused, not ignored


# ----------------------------------------------------------------------------------------------
# the plan


WAVELENGTHS = tuple(400.0 + 10 * i for i in range(48))
STAGE1 = tuple(range(0, 48, 4))


def facts(**changes) -> ModelFacts:
    fields = dict(name="m", wavelengths_nm=WAVELENGTHS, fwhm_nm=(10.0,) * 48, stage1_indices=STAGE1, input_bands=3,
                  size_multiple=16, context_radius=0, inference_tile=64, sampler=SamplerConfig(name="ddim", steps=2))
    fields.update(changes)
    return ModelFacts(**fields)


def info(height=100, width=70, nodata=None, can_be_invalid=False) -> InputInfo:
    return InputInfo(path="in.tif", width=width, height=height, count=3, bands=(1, 2, 3), dtype="uint16", crs=None,
                     transform=None, nodata=nodata, gcps=([], None), can_be_invalid=can_be_invalid)


def test_plan_tiles_the_mirrored_extension_and_lays_out_the_channels():
    chosen = settings(tile=48, overlap=12, samples=3, stage1_output="s1.tif", uncertainty_output="u.tif")
    plan = make_plan(info(), facts(), chosen, "cpu")
    tiling, layout = plan.tiling, plan.layout
    margin = border_margin(12)
    assert tiling.margin == margin and tiling.inset == 0 and tiling.tile == 48 and tiling.overlap == 12
    assert tiling.grid == tile_grid(100 + 2 * margin, 70 + 2 * margin, 48, 12)
    assert tiling.tile_size == (tiling.grid.row_spans[0][1], tiling.grid.col_spans[0][1])
    assert all(net % 16 == 0 and 0 <= net - size < 16 for net, size in zip(tiling.network_size, tiling.tile_size))
    assert (layout.full, layout.stage1, layout.uncertainty) == (slice(0, 48), slice(48, 60), slice(60, 108))
    assert layout.total == 108 and layout.means == slice(0, 60)
    assert [(o.parameter, o.channels, o.band_count) for o in plan.outputs] == [
        ("output", layout.full, 48), ("stage1_output", layout.stage1, 12), ("uncertainty_output", layout.uncertainty, 48)]
    assert plan.outputs[1].wavelengths_nm == tuple(WAVELENGTHS[i] for i in STAGE1)
    assert plan.outputs[0].product == "mean of samples" and "3 samples" in plan.outputs[2].product
    assert plan.sampler.truncation_scope == "pixel" and plan.nodata is None
    assert (plan.batch, make_plan(info(), facts(), chosen, "cuda:0").batch) == (1, 8)
    assert plan.tiles_in_flight >= plan.batch


def test_plan_defaults_and_refusals():
    plan = make_plan(info(nodata=-1, can_be_invalid=True), facts(), settings(), "cpu")
    assert plan.tiling.tile == 64 and plan.layout.stage1 is None and plan.nodata == -1.0
    assert (plan.sampler.name, plan.sampler.steps, plan.samples) == ("ddim", 2, 1)
    assert make_plan(info(height=1, width=1), facts(), settings(), "cpu").tiling.network_size == (32, 32)
    with pytest.raises(InputError, match="half the tile \\(32\\)") as raised:
        make_plan(info(), facts(), settings(overlap=33), "cpu")
    assert raised.value.parameter == "overlap"
    with pytest.raises(InputError, match="produces 48 bands but 224 were expected") as raised:
        make_plan(info(), facts(), settings(expected_band_count=224), "cpu")
    assert raised.value.parameter == "model"
    with pytest.raises(InputError, match="takes 4 input bands") as raised:
        make_plan(info(), facts(input_bands=4), settings(), "cpu")
    assert raised.value.parameter == "model"


def test_local_networks_get_an_inset_margin_and_a_wide_enough_overlap():
    local = facts(context_radius=6)
    plan = make_plan(info(), local, settings(tile=32, overlap=13), "cpu")
    assert plan.tiling.inset == 6 and plan.tiling.margin == 6
    with pytest.raises(InputError, match="at least 13 px") as raised:
        make_plan(info(), local, settings(tile=32, overlap=12), "cpu")
    assert raised.value.parameter == "overlap"
    with pytest.raises(InputError, match="with a tile of at least 26 px \\(e.g. 13\\)"):
        make_plan(info(), local, settings(tile=16, overlap=8), "cpu")


def test_model_facts_of_a_bundle_config():
    from engine.config import BundleConfig

    config = BundleConfig.from_dict(json.loads(BUNDLED_CONFIG.read_text()))
    model = ModelFacts.of(config)
    assert model.band_count == config.band_count and model.stage1_indices == tuple(config.stage1_indices)
    assert model.size_multiple == config.size_multiple and model.context_radius == (config.context_radius or 0)
    assert model.inference_tile == config.inference_tile and model.input_bands == 3


def test_tiling_keeps_what_lies_on_the_raster():
    tiling = make_plan(info(height=20, width=30), facts(), settings(tile=32, overlap=8), "cpu").tiling
    m = tiling.margin
    assert tiling.on_raster(0, 0, m, m) is None  # a corner of the mirrored margin
    rows, cols, row, col = tiling.on_raster(0, 0, m + 5, m + 30 + m)
    assert (rows, cols, row, col) == (slice(m, m + 5), slice(m, m + 30), 0, 0)
    tile = next(iter(tiling.grid))
    assert tiling.raster_origin(tile) == (-m, -m)


def test_settings_and_plan_need_neither_torch_nor_files():
    code = ("import sys; from engine.config import SamplerConfig; from engine.raster.io import InputInfo; "
            "from engine.raster.plan import ModelFacts, make_plan; from engine.settings import InferenceSettings; "
            "model = ModelFacts('m', (500.0, 600.0, 700.0), None, (1,), 3, 16, 0, 64, SamplerConfig()); "
            "info = InputInfo('x.tif', 40, 30, 3, (1, 2, 3), 'uint8', None, None, None, ([], None), False); "
            "plan = make_plan(info, model, InferenceSettings(input='x.tif', output='y.tif', sampler='ddim'), 'cpu'); "
            "assert 'torch' not in sys.modules, 'torch was imported'; print(len(plan.tiling.grid))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) >= 1


def test_the_plugin_can_read_the_limits_at_load_time(tmp_path):
    """As ``scdm.engine.settings`` (the plugin's own package), without the engine on sys.path or torch."""
    (tmp_path / "scdm").symlink_to(REPO, target_is_directory=True)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import scdm.engine.settings as s; "
            "assert 'engine' not in sys.modules and 'torch' not in sys.modules; print(s.LIMITS['steps'].high)")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "1000"
