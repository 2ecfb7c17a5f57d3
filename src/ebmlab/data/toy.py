"""Toy distributions with exact samplers and, where known, exact log-densities.

- ``Rings10D``: paper 004 App. A.1: three concentric rings of radius 1, 2, 3 (equal weight) in the
  (x1, x2) plane; Gaussian noise of std 0.1 on x1, x2, x3 and 0.01 on x4..x10. The (x1, x2)
  marginal is p(l) ∝ Σ_z I0(r_z l / s²) exp(-(l² + r_z²)/(2 s²)) (computed stably with
  ``scipy.special.i0e``); the full 10-D density multiplies it by the independent Gaussian factors of
  x3..x10. ``slice_log_prob`` is the (x1, x2) density, which is also the density of the slice with
  the other coordinates at 0 once normalised over a grid.
- ``Spiral2D``: paper 000 App. C.1 "shifted spiral" (the paper gives no formula; ours: 1.5 turns,
  radius growing linearly to 0.5, Gaussian noise 0.02, centre shifted by (0.1, -0.1), so that the
  data std (~0.2) is below the reference std 0.3 as App. C.1 recommends). Exact density up to a
  1024-node quadrature over the curve parameter
  (node spacing about noise/8, so the quadrature error is far below any metric's resolution).
- ``Checkerboard2D``: paper 003 Fig. 1: uniform on the 8 dark squares of a 4x4 board over [-2, 2]².
- ``EightGaussians2D``: 8 Gaussians (std 0.1) evenly spaced on a circle of radius 2.

Every distribution has ``sample(n, generator) -> (n, D)`` and ``log_prob(x) -> (n,)`` (float64 maths,
returned as float32 tensors) and ``dim``. Registry: ``TOYS``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import i0e, logsumexp
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def _gauss_logpdf(x: np.ndarray, std: float) -> np.ndarray:
    return -0.5 * (x / std) ** 2 - np.log(std) - 0.5 * LOG_2PI


def _np(x: Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


class Rings10D:
    """Paper 004's 10-D concentric rings (App. A.1): three rings of radius 1, 2, 3 in (x1, x2), Gaussian
    noise of std 0.1 in x1..x3 and 0.01 in the other seven coordinates; exact slice density in (x1, x2)."""
    name, dim = "rings", 10
    radii = (1.0, 2.0, 3.0)
    std_big, std_small = 0.1, 0.01
    n_big = 3  # x1, x2, x3 carry std_big

    def std_vector(self) -> Tensor:
        """(10,) per-coordinate noise std."""
        return torch.tensor([self.std_big] * self.n_big + [self.std_small] * (self.dim - self.n_big))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, 10) exact samples."""
        z = torch.randint(len(self.radii), (n,), generator=generator)
        r = torch.tensor(self.radii)[z]
        phi = torch.rand(n, generator=generator) * 2 * math.pi
        centre = torch.zeros(n, self.dim)
        centre[:, 0], centre[:, 1] = r * torch.cos(phi), r * torch.sin(phi)
        return centre + torch.randn(n, self.dim, generator=generator) * self.std_vector()

    def slice_log_prob(self, x12: Tensor) -> Tensor:
        """Exact log p(x1, x2), (n, 2) -> (n,)."""
        x = _np(x12)
        ell = np.sqrt((x ** 2).sum(1))[:, None]  # (n, 1)
        r = np.asarray(self.radii)[None, :]      # (1, 3)
        s2 = self.std_big ** 2
        # log[ I0(r l/s²) exp(-(l²+r²)/(2s²)) ] = log i0e(r l/s²) - (l - r)²/(2 s²)
        comp = np.log(i0e(r * ell / s2)) - (ell - r) ** 2 / (2 * s2)
        lp = logsumexp(comp, axis=1) - math.log(len(self.radii)) - math.log(2 * math.pi * s2)
        return torch.from_numpy(lp).float()

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact 10-D log-density, (n, 10) -> (n,)."""
        rest = _np(x[:, 2:])
        stds = self.std_vector().double().numpy()[2:]
        lp_rest = _gauss_logpdf(rest, stds[None, :]).sum(1) if rest.size else 0.0
        return self.slice_log_prob(x[:, :2]) + torch.from_numpy(np.asarray(lp_rest)).float()


class Spiral2D:
    """Paper 000's 2-D spiral (App. C.1): points along a spiral arm with Gaussian noise; exact log-density."""
    name, dim = "spiral", 2
    turns, r_max, noise, shift, n_nodes = 1.5, 0.5, 0.02, (0.1, -0.1), 1024

    def _curve(self, s: Tensor) -> Tensor:
        theta = 2 * math.pi * self.turns * s
        r = self.r_max * (0.1 + 0.9 * s)
        return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1) + torch.tensor(self.shift)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, 2) exact samples."""
        s = torch.rand(n, generator=generator, dtype=torch.float64)
        return (self._curve(s).float() + self.noise * torch.randn(n, 2, generator=generator))

    def log_prob(self, x: Tensor, chunk: int = 4096) -> Tensor:
        """(n,) exact log-density of ``x`` (n, 2), computed in chunks of ``chunk`` points."""
        s = (torch.arange(self.n_nodes, dtype=torch.float64) + 0.5) / self.n_nodes
        nodes = self._curve(s)  # (K, 2) quadrature nodes along the curve, float64
        xs = x.detach().cpu().double()
        out = []
        for i in range(0, len(xs), chunk):
            d2 = torch.cdist(xs[i:i + chunk], nodes).pow(2)  # (c, K)
            comp = -d2 / (2 * self.noise ** 2) - 2 * math.log(self.noise) - LOG_2PI
            out.append(torch.logsumexp(comp, 1) - math.log(self.n_nodes))
        return torch.cat(out).float() if out else torch.zeros(0)


class Checkerboard2D:
    """The 2-D checkerboard: uniform on the black squares of a 4 x 4 board; exact log-density."""
    name, dim = "checkerboard", 2
    half, n_cells = 2.0, 4  # board [-2, 2]², 4x4 cells, 8 dark ones

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, 2) exact samples."""
        cell = 2 * self.half / self.n_cells
        k = torch.randint(self.n_cells * self.n_cells // 2, (n,), generator=generator)
        row = k // (self.n_cells // 2)
        col = 2 * (k % (self.n_cells // 2)) + (row % 2)  # dark cells: (row + col) even
        u = torch.rand(n, 2, generator=generator)
        return torch.stack([(col + u[:, 0]) * cell - self.half, (row + u[:, 1]) * cell - self.half], 1)

    def log_prob(self, x: Tensor) -> Tensor:
        """(n,) exact log-density of ``x`` (n, 2) (-inf off the board's black squares)."""
        cell = 2 * self.half / self.n_cells
        inside = (x.abs() < self.half).all(1)
        idx = torch.floor((x + self.half) / cell).long()
        dark = ((idx[:, 0] + idx[:, 1]) % 2 == 0) & inside
        area = (self.n_cells ** 2 // 2) * cell ** 2
        return torch.where(dark, torch.full_like(x[:, 0], -math.log(area)), torch.full_like(x[:, 0], -math.inf))


class EightGaussians2D:
    """Eight Gaussians on a circle (2-D); exact log-density."""
    name, dim = "8gaussians", 2
    radius, std, k = 2.0, 0.1, 8

    def _centres(self) -> Tensor:
        a = torch.arange(self.k, dtype=torch.float64) * 2 * math.pi / self.k
        return torch.stack([torch.cos(a), torch.sin(a)], 1) * self.radius

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, 2) exact samples."""
        c = self._centres().float()[torch.randint(self.k, (n,), generator=generator)]
        return c + self.std * torch.randn(n, 2, generator=generator)

    def log_prob(self, x: Tensor) -> Tensor:
        """(n,) exact log-density of ``x`` (n, 2)."""
        d = _np(x)[:, None, :] - _np(self._centres())[None]  # (n, k, 2)
        comp = _gauss_logpdf(d, self.std).sum(-1)
        return torch.from_numpy(logsumexp(comp, axis=1) - math.log(self.k)).float()


TOYS = {c.name: c for c in (Rings10D, Spiral2D, Checkerboard2D, EightGaussians2D)}


def get_toy(name: str):
    """The toy distribution named ``name`` (``TOYS``)."""
    if name not in TOYS:
        raise ValueError(f"unknown toy distribution {name!r}; expected one of {sorted(TOYS)}")
    return TOYS[name]()
