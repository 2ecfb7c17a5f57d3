"""Sinusoidal time embedding and a time-conditioned MLP energy for vectors.

``sinusoidal_embedding`` is the transformer / DDPM (Ho et al. 2020) position embedding used by
paper 002 Sec. 4.1 / Sec. 5 ("time-conditioned UNet as in DDPM"): for a time t and dim d,
[sin(t w_0), ..., sin(t w_{d/2-1}), cos(t w_0), ..., cos(t w_{d/2-1})] with
w_i = max_period^(-i / (d/2)). Shared by every time- or noise-conditioned energy.

``TimeMLPEnergy`` is f(x, t) for vector data: ``MLPEnergy`` with the embedding concatenated to the
input (``cond_dim``). ``forward(x, t=None)``: t (B,) integer or float times; ``t=None`` means
``default_t`` (paper 002: t = 1, the last sampling step), so the module also satisfies the plain
Energy protocol (B, D) -> (B,) used by ``ebmlab.load`` and the evaluators.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ebmlab.energies.mlp import MLPEnergy


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(B,) times -> (B, dim) sinusoidal features (dim must be even)."""
    if dim <= 0 or dim % 2:
        raise ValueError(f"time embedding dimension must be a positive even number, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float().reshape(-1, 1) * freqs.reshape(1, -1)  # (B, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class TimeMLPEnergy(nn.Module):
    """f(x, t): residual MLP on [x, embed(t)] -> (B,) energy."""

    def __init__(self, in_dim: int, width: int = 128, depth: int = 3, activation: str = "silu",
                 embed_dim: int = 64, default_t: int = 1):
        super().__init__()
        self.embed_dim, self.default_t = embed_dim, default_t
        self.net = MLPEnergy(in_dim, width, depth, activation, cond_dim=embed_dim)

    def forward(self, x: Tensor, t: Tensor | int | None = None) -> Tensor:
        """(B,) energies of ``x`` (B, D) at time step ``t`` (an int or (B,) long)."""
        t = self.default_t if t is None else t
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])  # one time for the whole batch
        return self.net(x, sinusoidal_embedding(t, self.embed_dim))  # (B,)


def condition_embedding(net: nn.Module, x: Tensor, t, y: Tensor | None, sin_dim: int) -> Tensor | None:
    """(B, D) embedding of the conditions of an image energy ``net`` (its ``t_mlp``, ``default_t``,
    ``y_emb``, ``num_classes``): the sinusoidal embedding of t (scalar or (B,)) through ``t_mlp`` plus
    the class embedding of y, where label -1 / None is the extra "no label" class (classifier-free
    guidance); None for an unconditional net. Passing a condition the net was not built for raises."""
    name = type(net).__name__
    emb = None
    if net.t_mlp is not None:
        t = torch.as_tensor(net.default_t if t is None else t, device=x.device)
        t = t.expand(x.shape[0]) if t.dim() == 0 else t.reshape(-1)  # (B,)
        emb = net.t_mlp(sinusoidal_embedding(t, sin_dim).to(x.dtype))
    elif t is not None:
        raise ValueError(f"this {name} is not time-conditioned; build it with time_cond=True to pass t")
    if net.y_emb is not None:
        null = torch.full((x.shape[0],), net.num_classes, dtype=torch.long, device=x.device)
        y = null if y is None else torch.where(y.long() < 0, null, y.long())  # -1 / None: no label
        emb = net.y_emb(y) if emb is None else emb + net.y_emb(y)
    elif y is not None:
        raise ValueError(f"this {name} is not class-conditioned; build it with num_classes > 0 to pass y")
    return emb
