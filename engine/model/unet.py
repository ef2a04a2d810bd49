"""The conditional noise-prediction UNet of SCDM (Section III-B-1), after improved-diffusion.

The noisy image and the image condition each get their own first convolution and then run through
the *same* encoder layers; both skip stacks are concatenated into the decoder. When the condition
branch does not see the timestep (``UNetConfig.condition_uses_time=False``), its features can be
computed once per tile with ``encode_condition`` and reused at every sampler step.
"""

from __future__ import annotations

import math
from typing import ClassVar, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import UNetConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in the Transformer and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(32, channels)
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.out_norm = _norm(out_ch)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        # Zero-initialised last conv makes every block start as the identity, which keeps deep
        # UNets trainable from step one (improved-diffusion's zero_module).
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads if channels % heads == 0 else 1
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).permute(1, 0, 2, 4, 3)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.permute(0, 1, 3, 2).reshape(b, c, h * w)
        return x + self.proj(out).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Level(nn.Module):
    """A ResBlock optionally followed by attention: one encoder or decoder entry."""

    def __init__(self, layers: List[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, emb)
        return x


class TwoBranchUNet(nn.Module):
    """What both SCDM UNets share (Section III-B-1): the time embedding, the condition branch's
    embedding (time, or a learned constant in a time-free branch) and the encoder that the noisy
    image and the condition run through in turn, and the call that takes either the condition image
    or its cached features. Subclasses build ``encoder`` and the rest, and define how condition
    features are made for an ``x_t`` (``_condition_features_for``) and how both feature stacks are
    decoded (``_decode``). Each subclass states the metadata of ``DenoisingNetwork``
    (engine.model.protocol)."""

    architecture: ClassVar[str] = ""

    def __init__(self, config: UNetConfig, out_channels: int, cond_channels: int, emb_dim: int):
        super().__init__()
        self.validate_config(config)
        self.config = config
        self.out_channels = out_channels
        self.cond_channels = cond_channels
        base = config.base_channels
        self.time_embed = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # Stands in for the time embedding in a time-free condition branch.
        self.condition_embedding = nn.Parameter(torch.zeros(emb_dim))

    @classmethod
    def validate_config(cls, config: UNetConfig) -> None:
        if config.architecture != cls.architecture:
            raise ValueError(f"{cls.__name__} needs architecture '{cls.architecture}', got '{config.architecture}'")
        if config.decoder_res_blocks != config.encoder_res_blocks + 1:
            # Each decoder block consumes exactly one skip of each branch, as in improved-diffusion.
            raise ValueError("decoder_res_blocks must equal encoder_res_blocks + 1")
        if config.condition_window < 1 or config.condition_window % 2 == 0:
            raise ValueError(f"condition_window must be an odd number of pixels, got {config.condition_window}")

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_embed(timestep_embedding(t, self.config.base_channels))

    def condition_branch_embedding(self, t: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        """The embedding the condition branch's blocks see; ``t`` is needed only when it sees time."""
        if self.config.condition_uses_time:
            if t is None:
                raise ValueError("this network's condition branch depends on t: pass t")
            return self.time_embedding(t)
        return self.condition_embedding.expand(batch, -1)

    def _encode(self, h: torch.Tensor, emb: torch.Tensor) -> List[torch.Tensor]:
        features = [h]
        for block in self.encoder:
            h = block(h, emb)
            features.append(h)
        return features

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: Optional[torch.Tensor] = None,
        cond_features: Optional[List[torch.Tensor]] = None,
    ) -> torch.Tensor:
        """The prediction for ``x_t`` at ``t``, from the condition image or its cached features."""
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        if cond_features is None:
            if cond is None:
                raise ValueError("pass the condition image or its precomputed features")
            cond_features = self._condition_features_for(x_t, cond, t)
        return self._decode(x_t, self.time_embedding(t), cond_features)


class ConditionalUNet(TwoBranchUNet):
    """eps_theta(x_t, t, c): predicts the noise in ``x_t`` given the image condition ``c``."""

    architecture = "multiscale"
    description = ("the paper's UNet: downsampling levels, GroupNorm and attention; its output at a pixel "
                   "depends on the whole tile")
    # Its GroupNorm and attention statistics follow the tile's extent, so it is best near twice its
    # training crop (docs/tiling.md).
    default_inference_tile = 64

    def __init__(self, config: UNetConfig, out_channels: int, cond_channels: int):
        base = config.base_channels
        emb_dim = 4 * base
        super().__init__(config, out_channels, cond_channels, emb_dim)

        self.input_x = nn.Conv2d(out_channels, base, 3, padding=1)
        self.input_c = nn.Conv2d(cond_channels, base, config.condition_window, padding=config.condition_window // 2)

        self.encoder = nn.ModuleList()
        skip_channels = [base]
        ch = base
        downsample = 1
        for level, mult in enumerate(config.channel_multipliers):
            for _ in range(config.encoder_res_blocks):
                layers: List[nn.Module] = [ResBlock(ch, mult * base, emb_dim, config.dropout)]
                ch = mult * base
                if downsample in config.attention_downsample:
                    layers.append(AttentionBlock(ch, config.attention_heads))
                self.encoder.append(Level(layers))
                skip_channels.append(ch)
            if level != len(config.channel_multipliers) - 1:
                self.encoder.append(Level([Downsample(ch)]))
                skip_channels.append(ch)
                downsample *= 2

        # The bottleneck sees both branches' deepest features side by side.
        self.middle = Level([
            ResBlock(2 * ch, ch, emb_dim, config.dropout),
            AttentionBlock(ch, config.attention_heads),
            ResBlock(ch, ch, emb_dim, config.dropout),
        ])

        self.decoder = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_multipliers))):
            for i in range(config.decoder_res_blocks):
                skip = skip_channels.pop()
                layers = [ResBlock(ch + 2 * skip, mult * base, emb_dim, config.dropout)]
                ch = mult * base
                if downsample in config.attention_downsample:
                    layers.append(AttentionBlock(ch, config.attention_heads))
                if level and i == config.decoder_res_blocks - 1:
                    layers.append(Upsample(ch))
                    downsample //= 2
                self.decoder.append(Level(layers))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @classmethod
    def context_radius(cls, config: UNetConfig) -> Optional[int]:
        return None

    @classmethod
    def size_multiple(cls, config: UNetConfig) -> int:
        return 2 ** (len(config.channel_multipliers) - 1)

    @property
    def training_margin(self) -> int:
        """Trains on whole crops (zero padded), so the loss covers every pixel of a crop."""
        return 0

    def encode_condition(self, cond: torch.Tensor, t: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """Features of the condition branch; ``t`` is needed only when the branch sees time."""
        return self._encode(self.input_c(cond), self.condition_branch_embedding(t, cond.shape[0]))

    def _condition_features_for(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> List[torch.Tensor]:
        return self.encode_condition(cond, t)

    def _decode(self, x_t: torch.Tensor, emb: torch.Tensor, cond_features: List[torch.Tensor]) -> torch.Tensor:
        x_features = self._encode(self.input_x(x_t), emb)
        h = self.middle(torch.cat([x_features[-1], cond_features[-1]], dim=1), emb)
        x_skips, c_skips = list(x_features), list(cond_features)
        for level in self.decoder:
            h = level(torch.cat([h, x_skips.pop(), c_skips.pop()], dim=1), emb)
        return self.out(h)
