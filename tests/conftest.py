"""Shared fixtures: paths to the shared data and tiny random-weight model bundles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.data import SHARED_DATA

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_unet():
    from engine.config import UNetConfig

    return UNetConfig(base_channels=8, channel_multipliers=(1, 2), encoder_res_blocks=1,
                      decoder_res_blocks=2, attention_downsample=(2,), attention_heads=2)


def tiny_local_unet():
    from engine.config import UNetConfig

    return UNetConfig.local(width=8, blocks=1, condition_window=3)


def make_tiny_bundle(folder: Path, seed: int = 0, unet=None, **fields) -> Path:
    """A 48-band cascade (12 stage-1 bands) with random weights, small enough for any test."""
    import torch

    from engine.bundle import save_bundle
    from engine.cascade import Cascade, make_config
    from engine.config import Normalisation, SamplerConfig, houston_grid

    torch.manual_seed(seed)
    fields.setdefault("normalisation", Normalisation(kind="rgb_percentile", percentile=99.0, target=1.0))
    fields.setdefault("sampler", SamplerConfig(name="ddim", steps=2, guidance=1.0))
    config = make_config("tiny-test", houston_grid(), unet=unet or tiny_unet(), **fields)
    cascade = Cascade(config)
    randomise_output_layers(cascade)
    return save_bundle(cascade, folder)


def randomise_output_layers(cascade, std: float = 0.05) -> None:
    """Random non-zero output layers (``out``, zero-initialised in every network), so an untrained
    cascade still produces spatially varying output."""
    import torch

    for stage in (1, 2):
        last = [m for m in cascade.model(stage).out.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
        torch.nn.init.normal_(last.weight, std=std)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def tiny_local_bundle(tmp_path_factory) -> Path:
    """A tiny cascade of local networks (3 px condition windows: 2 px of context for the cascade)."""
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny-local", unet=tiny_local_unet())


@pytest.fixture(scope="session")
def tiny_pixel_bundle(tmp_path_factory) -> Path:
    """A tiny cascade of per-pixel networks (1 px condition windows: no context at all)."""
    from engine.config import UNetConfig

    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny-pixel",
                            unet=UNetConfig.local(width=8, blocks=1, condition_window=1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
