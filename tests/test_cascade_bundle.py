"""Band allocation, the cascade's shapes, the UNet's condition cache, and bundle safety."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from engine.bundle import CONFIG_NAME, WEIGHTS_NAME, load_bundle, read_config, save_bundle
from engine.cascade import Cascade, make_config, stage1_band_indices, stage_band_count
from engine.config import BundleConfig, SamplerConfig, UNetConfig, houston_grid
from engine.diffusion.noise import PositionalNoise, TorchNoise
from engine.errors import BundleError, Cancelled
from engine.model import ConditionalUNet


@pytest.mark.parametrize("total, expected", [(48, 12), (102, 17), (3, 3), (12, 6), (224, 25)])
def test_band_allocation_follows_eq_12(total, expected):
    assert stage_band_count(total) == expected


def test_stage1_bands_are_equally_spaced():
    assert stage1_band_indices(48) == tuple(range(0, 48, 4))
    idx = np.array(stage1_band_indices(102))
    assert len(idx) == 17 and np.all(np.diff(idx) == 6)


def test_paper_unet_is_reachable_by_config():
    config = UNetConfig.paper()
    assert config.base_channels == 128 and config.channel_multipliers == (1, 2, 2, 2, 2, 2, 2)
    assert config.attention_downsample == (16,) and config.size_multiple == 64


def test_condition_features_cache_equals_direct_pass():
    torch.manual_seed(0)
    net = ConditionalUNet(UNetConfig(base_channels=8, channel_multipliers=(1, 2), attention_downsample=(2,)), 4, 3)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, c, t = torch.randn(2, 4, 16, 16), torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    assert torch.allclose(net(x, t, c), net(x, t, cond_features=net.encode_condition(c)), atol=1e-5)


def test_cascade_returns_both_resolutions(tiny_bundle):
    cascade = load_bundle(tiny_bundle)
    out = cascade.sample(torch.rand(2, 3, 16, 16), SamplerConfig(name="ddim", steps=3, guidance=1.0), TorchNoise(0))
    assert out.stage1.shape == (2, 12, 16, 16) and out.full.shape == (2, 48, 16, 16)
    assert out.nfe == 6 and out.network_passes == 12  # 3 steps x 2 stages, doubled by guidance
    assert torch.isfinite(out.full).all()


def test_same_seed_same_output_and_cancel(tiny_bundle):
    cascade = load_bundle(tiny_bundle)
    settings = SamplerConfig(name="dpmpp", steps=3)
    a = cascade.sample(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)), settings, PositionalNoise(4, [(0, 0)]))
    b = cascade.sample(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)), settings, PositionalNoise(4, [(0, 0)]))
    assert torch.equal(a.full, b.full)
    with pytest.raises(Cancelled):
        cascade.sample(torch.rand(1, 3, 8, 8), settings, TorchNoise(0), cancel=lambda: True)


def test_bundle_round_trip(tmp_path):
    config = make_config("rt", houston_grid(), unet=UNetConfig(base_channels=8, channel_multipliers=(1, 2)))
    cascade = Cascade(config)
    for p in cascade.stage2_model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    save_bundle(cascade, tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")
    assert loaded.config == config
    for a, b in zip(cascade.stage2_model.state_dict().values(), loaded.stage2_model.state_dict().values()):
        assert torch.equal(a, b)
    assert BundleConfig.from_dict(json.loads((tmp_path / "b" / CONFIG_NAME).read_text())) == config


def test_edm_bundle_round_trips_and_older_bundles_read_as_eps(tmp_path):
    from dataclasses import replace

    from engine.config import SamplerConfig
    from engine.diffusion.noise import TorchNoise

    config = make_config("edm", houston_grid(), unet=UNetConfig(base_channels=8, channel_multipliers=(1, 2)),
                         parameterisation="edm")
    config = replace(config, stage1=replace(config.stage1, data_std=tuple([0.1] * 12)),
                     stage2=replace(config.stage2, data_std=0.05))
    save_bundle(Cascade(config), tmp_path / "edm")
    loaded = load_bundle(tmp_path / "edm")
    assert loaded.config == config and loaded.denoiser(1).parameterisation == "edm"
    out = loaded.sample(torch.rand(1, 3, 8, 8), SamplerConfig(name="dpmpp", steps=3, guidance=1.0), TorchNoise(0))
    assert torch.isfinite(out.full).all()

    raw = json.loads((tmp_path / "edm" / CONFIG_NAME).read_text())
    for stage in ("stage1", "stage2"):
        del raw[stage]["parameterisation"]
    assert BundleConfig.from_dict(raw).stage1.parameterisation == "eps"
    raw["stage2"]["parameterisation"] = "v"
    with pytest.raises(ValueError, match="parameterisation 'v'"):
        BundleConfig.from_dict(raw)


def test_bundle_refuses_pickle_truncation_mismatch_and_foreign(tmp_path, tiny_bundle):
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_bundle, pickled)
    (pickled / WEIGHTS_NAME).write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    with pytest.raises(BundleError, match="never load"):
        load_bundle(pickled)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(pickle.dumps({}))
    with pytest.raises(BundleError, match="pickle"):
        load_bundle(checkpoint)

    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_bundle, truncated)
    data = (truncated / WEIGHTS_NAME).read_bytes()
    (truncated / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated"):
        load_bundle(truncated)

    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_bundle, mismatched)
    config = json.loads((mismatched / CONFIG_NAME).read_text())
    config["stage1"]["unet"]["base_channels"] = 16
    (mismatched / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(BundleError, match="different models"):
        load_bundle(mismatched)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / CONFIG_NAME).write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(BundleError, match="not an SCDM bundle"):
        read_config(foreign)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    (foreign / CONFIG_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_config(foreign)
