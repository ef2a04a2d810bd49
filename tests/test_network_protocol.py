"""The network contract (engine/model/protocol.py) and the architecture registry: every registered
class keeps the protocol, and a new architecture registered by name alone trains, saves, loads and
samples with no other edit."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import List, Optional

import numpy as np
import pytest
import torch
from torch import nn

from engine.config import UNetConfig, houston_grid
from engine.model import ARCHITECTURES, DenoisingNetwork, make_network, network_class


def _small_config(architecture: str) -> UNetConfig:
    """One level, no attention: a shape every two-branch architecture accepts."""
    return UNetConfig(base_channels=8, channel_multipliers=(1,), encoder_res_blocks=1, decoder_res_blocks=2,
                      attention_downsample=(), architecture=architecture, condition_window=3)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_registered_network_keeps_the_protocol(name):
    cls = ARCHITECTURES[name]
    assert cls.architecture == name and network_class(name) is cls
    assert cls.description and cls.default_inference_tile >= 8
    config = _small_config(name)
    cls.validate_config(config)
    with pytest.raises(ValueError, match=name):
        cls.validate_config(replace(config, architecture="elsewhere"))
    torch.manual_seed(0)
    net = make_network(config, 5, 3).eval()
    assert isinstance(net, DenoisingNetwork) and isinstance(net, nn.Module) and isinstance(net.out, nn.Module)
    assert (net.config, net.out_channels, net.cond_channels) == (config, 5, 3)
    radius, multiple = cls.context_radius(config), cls.size_multiple(config)
    assert (config.context_radius, config.size_multiple) == (radius, multiple)
    assert 0 <= net.training_margin and (radius is None or net.training_margin <= radius)
    size = 4 * multiple
    x, cond, t = torch.randn(2, 5, size, size), torch.randn(2, 3, size, size), torch.tensor([3, 900])
    with torch.no_grad():
        out = net(x, t, cond)
        assert out.shape == x.shape and out.abs().max() == 0  # the zero-initialised `out` layer
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.1)
        torch.testing.assert_close(net(x, t, cond_features=net.encode_condition(cond)), net(x, t, cond))


def test_unknown_architectures_name_the_registered_ones():
    with pytest.raises(ValueError, match="unknown UNet architecture 'pyramid': use local or multiscale"):
        network_class("pyramid")


class PixelToy(nn.Module):
    """A per-pixel linear map of (x_t, condition, t): the least a network must be."""

    architecture = "toy"
    description = "a per-pixel linear map, for tests"
    default_inference_tile = 40

    def __init__(self, config: UNetConfig, out_channels: int, cond_channels: int):
        super().__init__()
        self.validate_config(config)
        self.config, self.out_channels, self.cond_channels = config, out_channels, cond_channels
        self.out = nn.Conv2d(out_channels + cond_channels + 1, out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @classmethod
    def validate_config(cls, config: UNetConfig) -> None:
        if config.architecture != cls.architecture:
            raise ValueError(f"PixelToy needs architecture 'toy', got '{config.architecture}'")

    @classmethod
    def context_radius(cls, config: UNetConfig) -> Optional[int]:
        return 0

    @classmethod
    def size_multiple(cls, config: UNetConfig) -> int:
        return 1

    @property
    def training_margin(self) -> int:
        return 0

    def encode_condition(self, cond: torch.Tensor, t: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        return [cond]

    def forward(self, x_t, t, cond=None, cond_features=None):
        condition = cond_features[0] if cond_features is not None else cond
        time = (t.float() / 1000)[:, None, None, None].expand(-1, 1, *x_t.shape[-2:])
        return self.out(torch.cat([x_t, condition, time], dim=1))


def test_a_registered_architecture_trains_saves_loads_and_samples(tmp_path, monkeypatch):
    from engine.bundle import load_bundle
    from engine.diffusion.noise import PositionalNoise
    from engine.train import train

    monkeypatch.setitem(ARCHITECTURES, "toy", PixelToy)
    assert isinstance(PixelToy(UNetConfig(architecture="toy"), 4, 3), DenoisingNetwork)
    rng = np.random.default_rng(0)
    cube = rng.uniform(100, 1000, size=(24, 24, 48)).astype(np.float32)
    np.savez(tmp_path / "scene.npz", cube=cube, wavelengths_nm=np.asarray(houston_grid()))
    (tmp_path / "toy.json").write_text(json.dumps({
        "name": "toy", "output": "toy-bundle", "scenes": [{"path": "scene.npz"}],
        "unet": {"architecture": "toy"}, "normalisation": {"kind": "fixed", "offset": 500, "scale": 300},
        "sampler": {"name": "ddim", "steps": 2, "guidance": 0.0}, "iterations": 3, "batch_size": 2, "crop": 8,
    }))
    summary = train(tmp_path / "toy.json", device="cpu", show_progress=False)
    assert summary["training"]["loss"]["stage2"]["last"] is not None
    cascade = load_bundle(tmp_path / "toy-bundle")
    config = cascade.config
    assert config.stage2.unet.architecture == "toy" and isinstance(cascade.model(1), PixelToy)
    assert (config.inference_tile, config.context_radius, config.size_multiple) == (40, 0, 1)
    assert cascade.model(2).out.weight.abs().max() > 0  # trained away from its zero start
    rgb = torch.rand(1, 3, 5, 7)
    out = cascade.sample(rgb, config.sampler, PositionalNoise(0, [(0, 0)]))
    assert out.full.shape == (1, 48, 5, 7) and torch.isfinite(out.full).all()
