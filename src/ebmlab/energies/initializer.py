"""Initializer networks g_phi(x_{t+1}, lambda_t [, c]) of paper 003 (CDRL, Sec. 3.2, Eq. 6; App. A.1).

The initializer proposes y_t ~ N(g_phi(x_{t+1}; t), sigma~_t^2 I): it predicts the less noisy sample
y_t directly (not the noise, not x_0: App. A.1 and Table 10). Both networks take a conditioning
vector ``cond`` (B, C) built by the objective (the logSNR embedding, plus a class one-hot for
classifier-free guidance), so that the same code serves the conditional and unconditional cases.

- ``MLPInitializer`` (vectors): the residual ``MLPEnergy`` trunk with a D-dimensional head on
  [x_{t+1}, cond]; output x_{t+1} + head, i.e. a skip connection from the input (our choice: the
  prediction is still y_t itself, the skip only eases optimisation at the low-noise levels where
  y_t ≈ x_{t+1}).
- ``UNetInitializer`` (images): a small UNet (Ronneberger et al. 2015) in the spirit of Nichol &
  Dhariwal (2021) with fewer channels: per resolution two residual blocks with GroupNorm, SiLU and
  the conditioning as a per-channel scale and shift after the second GroupNorm (their scale-shift norm), 2x2
  average-pool down, nearest up, skip concatenations; same input-skip as the MLP. Self-attention is left out
  (CPU scale).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ebmlab.energies.mlp import MLPEnergy


class MLPInitializer(nn.Module):
    """(B, D) x_{t+1}, (B, C) cond -> (B, D) predicted y_t."""

    def __init__(self, dim: int, cond_dim: int, width: int = 128, depth: int = 3, activation: str = "silu"):
        super().__init__()
        self.net = MLPEnergy(dim, width, depth, activation, out_dim=dim, cond_dim=cond_dim)
        nn.init.zeros_(self.net.out.weight)  # start at g = x_{t+1} (the DRL initialisation)
        nn.init.zeros_(self.net.out.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """The initializer's output for ``x`` (B, D) conditioned on ``cond`` (B, E) (paper 003 Eq. 6-8)."""
        return x + self.net(x.flatten(1), cond).view_as(x)


# The design of UNetInitializer's blocks, which no config key names: experiment caches record it (paper003.
# blocks_fingerprint), so that cells trained with an earlier design run again. Change it with the design.
BLOCKS = "scale-shift"  # since 2026-12-07 (before: the condition added ahead of the second GroupNorm)


def _groups(ch: int) -> int:
    return math.gcd(ch, 8)


class _ResBlock(nn.Module):
    """GroupNorm, SiLU, conv; the condition as a scale and shift of the second GroupNorm's output (Nichol & Dhariwal's
    scale-shift norm); SiLU, conv; plus the skip. (A shift added before that norm, as in Ho et al.'s block, is removed
    by it wherever a group is one channel, init_channels of 8 or fewer, and in part elsewhere.)"""

    def __init__(self, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.cond = nn.Linear(cond_dim, 2 * c_out)  # (scale, shift) per channel
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:  # (B, c_in, H, W) -> (B, c_out, H, W)
        scale, shift = self.cond(cond)[:, :, None, None].chunk(2, dim=1)  # (B, c_out, 1, 1) each
        z = self.norm2(self.conv1(self.act(self.norm1(h)))) * (1 + scale) + shift
        return self.skip(h) + self.conv2(self.act(z))


class UNetInitializer(nn.Module):
    """(B, C, H, W) x_{t+1}, (B, cond_dim) cond -> (B, C, H, W) predicted y_t.

    ``channels``: feature channels per resolution (H, H/2, ...); H must be divisible by
    2^(len(channels)-1)."""

    def __init__(self, in_ch: int, cond_dim: int, channels: tuple[int, ...] = (32, 64, 64)):
        super().__init__()
        self.cond = nn.Sequential(nn.Linear(cond_dim, 4 * channels[0]), nn.SiLU(),
                                  nn.Linear(4 * channels[0], 4 * channels[0]))
        cd = 4 * channels[0]
        self.inp = nn.Conv2d(in_ch, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        prev = channels[0]
        for ch in channels:
            self.down.append(nn.ModuleList([_ResBlock(prev, ch, cd), _ResBlock(ch, ch, cd)]))
            prev = ch
        self.mid = _ResBlock(prev, prev, cd)
        self.up = nn.ModuleList()
        for ch in reversed(channels):
            self.up.append(nn.ModuleList([_ResBlock(prev + ch, ch, cd), _ResBlock(ch, ch, cd)]))
            prev = ch
        self.out = nn.Sequential(nn.GroupNorm(_groups(prev), prev), nn.SiLU(), nn.Conv2d(prev, in_ch, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # start at g = x_{t+1}
        nn.init.zeros_(self.out[-1].bias)
        self.n_levels = len(channels)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """The initializer's output for images ``x`` (B, C, H, W) conditioned on ``cond`` (paper 003 Eq. 6-8)."""
        if x.shape[-1] % (2 ** (self.n_levels - 1)) or x.shape[-2] % (2 ** (self.n_levels - 1)):
            raise ValueError(f"UNetInitializer with {self.n_levels} resolutions needs image sides divisible by "
                             f"{2 ** (self.n_levels - 1)}, got {tuple(x.shape[-2:])}")
        c = self.cond(cond)                       # (B, cd)
        h, skips = self.inp(x), []
        for i, (b1, b2) in enumerate(self.down):
            h = b2(b1(h, c), c)
            skips.append(h)                       # (B, ch_i, H_i, W_i)
            if i < self.n_levels - 1:
                h = nn.functional.avg_pool2d(h, 2)
        h = self.mid(h, c)
        for i, (b1, b2) in enumerate(self.up):
            if i > 0:
                h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
            h = b2(b1(torch.cat([h, skips.pop()], 1), c), c)
        return x + self.out(h)


def build_initializer(shape: tuple[int, ...], cond_dim: int, width: int = 128, depth: int = 3,
                      activation: str = "silu", channels: tuple[int, ...] | None = None) -> nn.Module:
    """An MLP for vector data (shape (D,)), a UNet for images (shape (C, H, W))."""
    if len(shape) == 1:
        return MLPInitializer(shape[0], cond_dim, width, depth, activation)
    if len(shape) == 3:
        return UNetInitializer(shape[0], cond_dim, tuple(channels or (32, 64, 64)))
    raise ValueError(f"the initializer supports vectors (D,) or images (C, H, W), got data shape {shape}")
