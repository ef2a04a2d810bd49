"""Where sampler noise comes from.

A sampler asks for noise by (stage, step). ``TorchNoise`` draws it from a seeded generator.
``PositionalNoise`` computes it from a counter-based hash of (seed, stage, step, band, global row,
global column): two overlapping tiles receive identical noise where they overlap, whatever their
order, batch or device, which is what makes tiled diffusion seamless. ``ConditionKeyedNoise``
computes it from a hash of (seed, stage, step, band, the pixel's condition values): for a per-pixel
network, identical input pixels then give identical outputs wherever they are (a uniform input gives
a uniform output), and tiling cannot matter either. ``sampler_noise`` chooses between the two.
"""

from __future__ import annotations

from typing import Protocol, Sequence, Tuple

import torch

_MASK32 = 0xFFFFFFFF


class NoiseSource(Protocol):
    def draw(self, stage: int, step: int, shape: Tuple[int, ...], device: torch.device) -> torch.Tensor:
        ...


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """Chris Wellons' lowbias32 integer hash on int64 tensors holding 32-bit values."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def _mix32_int(x: int) -> int:
    x &= _MASK32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def _uniform(bits: torch.Tensor) -> torch.Tensor:
    # 24 bits fit a float32 mantissa exactly; the half offset keeps log() away from 0.
    return ((bits >> 8).double() + 0.5) / float(1 << 24)


def gaussian_field(seed: int, stream: int, channels: int, row0: int, col0: int, height: int, width: int,
                   device: torch.device) -> torch.Tensor:
    """Standard normal values (channels, height, width) at global pixels [row0:, col0:]."""
    key = _mix32_int(_mix32_int(seed) ^ _mix32_int(stream + 0x9E3779B9))
    band = torch.arange(channels, device=device, dtype=torch.int64)[:, None, None]
    rows = torch.arange(row0, row0 + height, device=device, dtype=torch.int64)[None, :, None]
    cols = torch.arange(col0, col0 + width, device=device, dtype=torch.int64)[None, None, :]
    return _normal(_mix32(_mix32(_mix32(band + key) + rows) + cols))


def _normal(h: torch.Tensor) -> torch.Tensor:
    """Box-Muller from 32-bit hashes: float32 standard normal values shaped like ``h``."""
    u1 = _uniform(h)
    u2 = _uniform(_mix32(h ^ 0x68E31DA4))
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)).float()


class PositionalNoise:
    """Noise keyed by global pixel position; ``origins[i]`` is the (row, col) of batch item i.

    The field is drawn in strips of ``rows`` rows: a strip keyed by its own global rows equals
    those rows of a whole draw, and 48 bands of a 512 x 512 tile at once would hold several
    100 MB of int64/float64 temporaries.
    """

    def __init__(self, seed: int, origins: Sequence[Tuple[int, int]], rows: int = 32):
        self.seed = int(seed)
        self.origins = [(int(r), int(c)) for r, c in origins]
        self.rows = max(1, int(rows))

    def draw(self, stage: int, step: int, shape, device) -> torch.Tensor:
        batch, channels, height, width = shape
        if batch != len(self.origins):
            raise ValueError(f"noise asked for {batch} tiles but {len(self.origins)} origins are known")
        stream = stage * 1_000_003 + step
        device = torch.device(device)
        out = torch.empty(shape, dtype=torch.float32, device=device)
        for i, (r, c) in enumerate(self.origins):
            for k in range(0, height, self.rows):
                h = min(self.rows, height - k)
                out[i, :, k:k + h] = gaussian_field(self.seed, stream, channels, r + k, c, h, width, device)
        return out


KEY_STEP = 2.0 ** -10  # condition values are keyed on this grid: float rounding (a gain on the input,
# another device) rarely moves a value across a grid line, while any visible colour difference does


def condition_keys(cond: torch.Tensor) -> torch.Tensor:
    """(B, H, W) int64 32-bit hashes of each pixel's condition channels, rounded to ``KEY_STEP``."""
    steps = torch.round(cond.double() / KEY_STEP).clamp(-2.0 ** 31, 2.0 ** 31 - 1).to(torch.int64) & _MASK32
    key = torch.zeros(steps.shape[:1] + steps.shape[2:], dtype=torch.int64, device=cond.device)
    for channel in range(steps.shape[1]):
        key = _mix32(key ^ _mix32(steps[:, channel] + channel))
    return key


class ConditionKeyedNoise:
    """Noise keyed by each pixel's condition values (``cond`` (B, K, H, W), as the network gets it).

    Meant for per-pixel networks only: a network that looks at neighbouring pixels of x_t expects
    noise independent between pixels, and a uniform area would get one value repeated."""

    def __init__(self, seed: int, cond: torch.Tensor, rows: int = 32):
        self.seed = int(seed)
        self.keys = condition_keys(cond)
        self.rows = max(1, int(rows))

    def draw(self, stage: int, step: int, shape, device) -> torch.Tensor:
        if tuple(shape[:1]) + tuple(shape[2:]) != tuple(self.keys.shape):
            raise ValueError(f"noise asked for shape {tuple(shape)} but the condition is {tuple(self.keys.shape)}")
        stream = stage * 1_000_003 + step
        key = _mix32_int(_mix32_int(self.seed) ^ _mix32_int(stream + 0x9E3779B9))
        out = torch.empty(shape, dtype=torch.float32, device=device)
        band = torch.arange(shape[1], device=device, dtype=torch.int64)[None, :, None, None]
        for k in range(0, shape[2], self.rows):  # strips, as PositionalNoise, to bound the temporaries
            pixel = self.keys[:, None, k:k + self.rows].to(device)
            out[:, :, k:k + self.rows] = _normal(_mix32(_mix32(band + key) ^ pixel))
        return out


def sampler_noise(seed: int, cond: torch.Tensor, origins: Sequence[Tuple[int, int]], per_pixel: bool):
    """The noise a run samples with: keyed by condition for a per-pixel cascade, by position otherwise."""
    return ConditionKeyedNoise(seed, cond) if per_pixel else PositionalNoise(seed, origins)


class TorchNoise:
    """Noise from torch's generator, drawn on the CPU so a seed gives the same numbers on any device."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(int(seed))

    def draw(self, stage: int, step: int, shape, device) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator).to(device)
