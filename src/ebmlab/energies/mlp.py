"""Residual MLP energy for vector data (papers 000 App. C.1, 003 toy, 004 rings).

x (B, D) -> Linear -> n_blocks × [h + W2 act(W1 act(h))] -> act -> Linear -> (B,) energy.
No normalisation layers: batch statistics would couple the chains of one batch, and the energy of a
point must not depend on its neighbours.

``fourier > 0`` prepends random Fourier features [x, sin(2 pi x B), cos(2 pi x B)], B (D, fourier)
~ N(0, fourier_scale²) fixed at initialisation (Tancik et al. 2020). A plain MLP learns
low-frequency functions first ("spectral bias"); densities with thin structure (paper 004's rings
are 0.065 wide in standardised units) need energies that change by several nats over that width,
which a plain MLP reaches only after many thousand updates. The features make such energies cheap. ``out_dim > 1`` returns (B, out_dim) for heads that need a
vector (paper 000's joint time head).

``base_std = s`` adds |x|^2 / (2 s^2) to the energy: the model becomes an exponential tilt of the Gaussian
base measure N(0, s^2 I) (model coordinates), p(x) ∝ N(x; 0, s^2 I) exp(-net(x)). The network grows at most
linearly far from the data, so the quadratic wins there: the density is normalisable and a chain that
wanders off is pulled back, where a plain network can slope downwards into a sink no short-run training
chain ever reaches (docs/leaderboard.md, breast cancer). The output layer starts at zero, so the untrained
model is the base itself (zeroed after the usual initialisation, so the other weights are those of the
plain network with the same seed). Not in the papers; None (default): no base term. ``base_mixture=True``
adds a fitted Gaussian mixture's -log q(x) instead (``energies/mixture_base.py``, ``model.base: gmm``), with
the output layer zeroed the same way.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ebmlab.energies.mixture_base import GaussianMixtureBase

ACTIVATIONS = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,  # plain logistic sigmoid (paper 002 Sec. 5: "Sigmoid activations")
}


def make_activation(name: str) -> nn.Module:
    """The activation module named ``name`` (``ACTIVATIONS``: silu or swish, softplus, elu, gelu, tanh,
    leaky_relu, relu, sigmoid)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class ResidualBlock(nn.Module):
    """h + Linear(act(Linear(act(h)))): the residual block of ``MLPEnergy``."""
    def __init__(self, width: int, activation: str):
        super().__init__()
        self.net = nn.Sequential(
            make_activation(activation), nn.Linear(width, width),
            make_activation(activation), nn.Linear(width, width),
        )

    def forward(self, h: Tensor) -> Tensor:  # (B, W) -> (B, W)
        """The block applied to hidden features ``h`` (B, width)."""
        return h + self.net(h)


class MLPEnergy(nn.Module):
    """Residual MLP; ``forward(x)`` returns (B,) energies, or (B, out_dim) when out_dim > 1."""

    def __init__(self, in_dim: int, width: int = 128, depth: int = 3, activation: str = "silu",
                 out_dim: int = 1, cond_dim: int = 0, fourier: int = 0, fourier_scale: float = 1.0,
                 base_std: float | None = None, base_mixture: bool = False):
        super().__init__()
        if in_dim <= 0 or width <= 0 or depth < 0:
            raise ValueError(f"MLPEnergy needs in_dim>0, width>0, depth>=0; got {in_dim}, {width}, {depth}")
        if base_std is not None and (out_dim != 1 or not base_std > 0):
            raise ValueError(f"base_std must be positive and needs a scalar energy (out_dim 1); got {base_std}, "
                             f"out_dim {out_dim}")
        if base_mixture and (out_dim != 1 or base_std is not None):
            raise ValueError("a mixture base measure needs a scalar energy (out_dim 1) and no base_std")
        self.in_dim, self.out_dim = in_dim, out_dim
        # -log q(x) of a fitted Gaussian mixture (a submodule of buffers), or None
        self.base = GaussianMixtureBase(in_dim) if base_mixture else None
        # 1 / (2 s^2) of the Gaussian base term, or None (a number, not a buffer: the config carries it)
        self.base_coef = None if base_std is None else 0.5 / float(base_std) ** 2
        # (D, F) fixed random frequencies; a buffer so that checkpoints carry it
        freqs = torch.randn(in_dim, fourier) * fourier_scale if fourier > 0 else None
        self.register_buffer("freqs", freqs)  # None: not in the state dict (plain MLP checkpoints)
        self.inp = nn.Linear(in_dim + 2 * fourier + cond_dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, activation) for _ in range(depth))
        self.act = make_activation(activation)
        self.out = nn.Linear(width, out_dim)
        if base_std is not None or base_mixture:  # the tilt starts at zero: the untrained model is its base exactly
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def features(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """(B, D) [+ (B, C) conditioning] -> (B, width) trunk features."""
        h = x.flatten(1)  # (B, D)
        if self.freqs is not None:
            proj = 2 * torch.pi * h @ self.freqs  # (B, F)
            h = torch.cat([h, torch.sin(proj), torch.cos(proj)], dim=1)  # (B, D + 2F)
        if cond is not None:
            h = torch.cat([h, cond], dim=1)
        h = self.inp(h)
        for block in self.blocks:
            h = block(h)
        return self.act(h)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """(B,) energies of ``x`` (B, ...) (flattened), or (B, out_dim) for a vector head; ``cond`` (B, cond_dim) is
        concatenated to the input when the network was built with ``cond_dim``."""
        out = self.out(self.features(x, cond))  # (B, out_dim)
        if self.out_dim != 1:
            return out
        if self.base is not None:
            return out.squeeze(1) + self.base(x)  # (B,) + -log q(x)
        if self.base_coef is None:
            return out.squeeze(1)
        return out.squeeze(1) + self.base_coef * x.flatten(1).pow(2).sum(1)  # (B,) + |x|^2 / (2 s^2)
