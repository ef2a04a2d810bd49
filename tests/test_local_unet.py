"""The local UNet (engine/model/local_unet.py): locality, windows with context margins, size
invariance, the condition cache, config checks, and bundles."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.config import UNetConfig, houston_grid
from engine.model import LocalUNet, make_network


def _network(window: int = 5, seed: int = 0) -> LocalUNet:
    torch.manual_seed(seed)
    net = make_network(UNetConfig.local(width=16, blocks=1, condition_window=window), 6, 3)
    # Zero-initialised output and block layers would hide every dependence the tests look for.
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return net.eval()


def _inputs(size: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 6, size, size, generator=g), torch.randn(2, 3, size, size, generator=g)


@pytest.mark.parametrize("window", [1, 3, 5, 7])
def test_output_at_a_pixel_sees_exactly_its_condition_window(window):
    net = _network(window)
    x, cond = _inputs()
    t = torch.tensor([10, 500])
    with torch.no_grad():
        base = net(x, t, cond)
        radius = window // 2
        for distance in range(0, radius + 2):
            moved = cond.clone()
            moved[:, :, 8, 8 + distance] += 5.0
            change = (net(x, t, moved) - base).abs().amax(dim=(0, 1))
            assert (change[8, 8] > 1e-4) == (distance <= radius), distance
        moved = x.clone()
        moved[:, :, 3, 4] += 5.0
        change = (net(moved, t, cond) - base).abs().amax(dim=(0, 1))
        assert change[3, 4] > 1e-4
        change[3, 4] = 0
        assert change.max() == 0  # x_t enters pixel by pixel


def test_a_window_with_its_context_margin_equals_the_whole_image_computation():
    """Training feeds windows whose margin carries the context: their output must equal what the
    network computes for those pixels of the whole image."""
    net = _network(5)
    x, cond = _inputs(20)
    t = torch.tensor([3, 900])
    with torch.no_grad():
        whole = net(x, t, cond)
        window = net(x[:, :, 6:10, 7:12], t, cond[:, :, 4:12, 5:14])
        single = net(x[:, :, 9:10, 9:10], t, cond[:, :, 7:12, 7:12])
    torch.testing.assert_close(window, whole[:, :, 6:10, 7:12], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single, whole[:, :, 9:10, 9:10], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [6, 17, 40])
def test_output_is_size_invariant_away_from_the_border(size):
    net = _network(5)
    x, cond = _inputs(48)
    t = torch.tensor([100, 100])
    with torch.no_grad():
        whole = net(x, t, cond)
        part = net(x[:, :, 4:4 + size, 3:3 + size], t, cond[:, :, 4:4 + size, 3:3 + size])
    inner = slice(2, size - 2)
    torch.testing.assert_close(part[:, :, inner, inner], whole[:, :, 4:4 + size, 3:3 + size][:, :, inner, inner],
                               atol=1e-5, rtol=1e-5)


def test_mirrored_context_at_the_border_and_tiny_images():
    net = _network(5)
    x, cond = _inputs(8)
    t = torch.tensor([5, 5])
    mirrored = torch.nn.functional.pad(cond, (2, 2, 2, 2), mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, cond), net(x, t, mirrored), atol=1e-5, rtol=1e-5)
        assert net(x[:, :, :1, :2], t, cond[:, :, :1, :2]).shape == (2, 6, 1, 2)


def test_condition_features_cache_equals_direct_pass():
    net = _network(3)
    x, cond = _inputs(9)
    t = torch.tensor([7, 700])
    with torch.no_grad():
        features = net.encode_condition(cond)
        torch.testing.assert_close(net(x, t, cond_features=features), net(x, t, cond))
        torch.testing.assert_close(net(x, t, cond_features=features), net(x, t, cond))  # the cache is not consumed


def test_bad_margins_are_refused():
    net = _network(5)
    x, cond = _inputs(8)
    t = torch.tensor([1, 1])
    with pytest.raises(ValueError, match="exceeds the network's context radius"):
        net(x[:, :, 3:5, 3:5], t, cond)
    with pytest.raises(ValueError, match="same margin on every side"):
        net(x[:, :, :4, :6], t, cond)


@pytest.mark.parametrize("fields, message", [
    ({"architecture": "pyramid"}, "unknown UNet architecture"),
    ({"architecture": "local", "channel_multipliers": (1, 2), "attention_downsample": ()}, "one resolution"),
    ({"architecture": "local", "channel_multipliers": (1,), "attention_downsample": (2,)}, "no attention"),
    ({"condition_window": 4}, "odd"),
    ({"encoder_res_blocks": 2, "decoder_res_blocks": 2}, "decoder_res_blocks"),
])
def test_unet_config_checks(fields, message):
    with pytest.raises(ValueError, match=message):
        make_network(UNetConfig(**fields), 6, 3)


def test_training_margin_of_both_architectures():
    assert _network(7).training_margin == 3
    multiscale = make_network(UNetConfig(base_channels=8, channel_multipliers=(1, 2), attention_downsample=(2,)), 4, 3)
    assert multiscale.training_margin == 0


def test_local_bundle_round_trips(tmp_path):
    from engine.bundle import load_bundle, save_bundle
    from engine.cascade import Cascade, make_config
    from engine.config import SamplerConfig
    from engine.diffusion.noise import PositionalNoise

    config = make_config("local", houston_grid(), unet=UNetConfig.local(width=8, blocks=1, condition_window=3),
                         parameterisation="edm", sampler=SamplerConfig(name="ddim", steps=2, guidance=0.0))
    config = replace(config, stage1=replace(config.stage1, data_std=0.1), stage2=replace(config.stage2, data_std=0.1))
    torch.manual_seed(0)
    cascade = Cascade(config)
    for stage in (1, 2):
        torch.nn.init.normal_(cascade.model(stage).out.weight, std=0.1)
    save_bundle(cascade, tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")
    assert loaded.config.stage1.unet == config.stage1.unet and loaded.config.size_multiple == 1
    rgb = torch.rand(1, 3, 13, 11)
    a = cascade.sample(rgb, config.sampler, PositionalNoise(0, [(0, 0)])).full
    b = loaded.sample(rgb, config.sampler, PositionalNoise(0, [(0, 0)])).full
    assert a.shape == (1, 48, 13, 11) and torch.equal(a, b)
    assert float(np.abs(a.numpy()).max()) > 0
