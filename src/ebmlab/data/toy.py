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
- ``UnequalMixture2D`` (``mixture``): 4 well-separated Gaussians with weights 0.4 / 0.3 / 0.2 / 0.1
  at the spiral's scale (paper 000's mode-weight toy).

Every distribution has ``sample(n, generator) -> (n, D)`` and ``log_prob(x) -> (n,)`` (float64 maths,
returned as float32 tensors; the checkerboard's in the input's dtype) and ``dim``. Registry: ``TOYS``.

Structure (``metrics/structure.py``), all in data coordinates:
- ``mode_weights``: the true probability of each mode (a tuple summing to 1);
- ``mode_index(x) -> (n,) long``: the mode each point belongs to, every point assigned to its nearest
  mode (rings: the ring whose radius is nearest to sqrt(x1² + x2²); 8gaussians: the nearest centre;
  checkerboard: the nearest dark square, distance 0 inside it; spiral: one of ``n_segments`` arcs of
  equal curve parameter, hence equal mass, of the nearest point on the curve);
- ``in_support(x) -> (n,) bool``: inside the true support. Checkerboard: exactly the dark squares.
  The noisy toys have no hard edge, so their support is a band of ``support_k`` = 3 of the toy's own
  noise stds about the noiseless structure: rings |sqrt(x1² + x2²) - r| <= 3 * 0.1 for the nearest
  radius r (x3..x10 are not checked: ``sample_precision`` sees them); spiral: distance to the curve
  <= 3 * 0.02; 8gaussians: distance to the nearest centre <= 3 * 0.1. For the rings and the spiral
  the distance is the normal component of 1-D noise, so true samples score about 0.997; for the
  8gaussians it is a 2-D Rayleigh radius, 1 - exp(-4.5) = 0.989. Each method accepts (n, >= 2)
  points and reads the first two coordinates only where the structure lives there (rings).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import i0e, logsumexp
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)
SUPPORT_K = 3.0  # the noisy toys' support band: this many noise stds about the noiseless structure


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

    mode_weights = (1 / 3, 1 / 3, 1 / 3)  # equal mass per ring (z uniform in ``sample``)
    mode_names = ("r=1", "r=2", "r=3")
    support_k = SUPPORT_K

    def _ring_gap(self, x: Tensor) -> Tensor:
        """(n, 3) | sqrt(x1² + x2²) - r_z | for each ring (float64)."""
        ell = x[:, :2].detach().cpu().double().norm(dim=1, keepdim=True)
        return (ell - torch.tensor(self.radii, dtype=torch.float64)[None]).abs()

    def mode_index(self, x: Tensor) -> Tensor:
        """(n,) the ring whose radius is nearest to sqrt(x1² + x2²) (boundaries at 1.5 and 2.5)."""
        return self._ring_gap(x).argmin(1)

    def in_support(self, x: Tensor) -> Tensor:
        """(n,) within ``support_k`` x 0.1 (the (x1, x2) noise std) of a ring radius."""
        return self._ring_gap(x).min(1).values <= self.support_k * self.std_big


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

    n_segments = 4  # modes: four arcs of equal curve parameter (s uniform in ``sample``: equal mass)
    mode_weights = (0.25, 0.25, 0.25, 0.25)
    mode_names = ("s<0.25", "0.25<=s<0.5", "0.5<=s<0.75", "s>=0.75")
    support_k = SUPPORT_K

    def _nearest_node(self, x: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
        """(n,) index of the nearest of the ``n_nodes`` curve nodes and (n,) the distance to it."""
        s = (torch.arange(self.n_nodes, dtype=torch.float64) + 0.5) / self.n_nodes
        nodes = self._curve(s)
        xs = x[:, :2].detach().cpu().double()
        idx, dist = [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, dtype=torch.float64)]
        for i in range(0, len(xs), chunk):
            d, j = torch.cdist(xs[i:i + chunk], nodes).min(1)
            idx.append(j)
            dist.append(d)
        return torch.cat(idx), torch.cat(dist)

    def mode_index(self, x: Tensor) -> Tensor:
        """(n,) the arc (``n_segments`` equal ranges of the curve parameter) of the nearest curve point."""
        j, _ = self._nearest_node(x)
        return (j * self.n_segments) // self.n_nodes

    def in_support(self, x: Tensor) -> Tensor:
        """(n,) within ``support_k`` x 0.02 (the noise std) of the curve."""
        return self._nearest_node(x)[1] <= self.support_k * self.noise


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

    mode_weights = (0.125,) * 8  # the 8 dark squares, uniform density: equal mass
    mode_names = tuple(f"row {k // 2} col {2 * (k % 2) + (k // 2) % 2}" for k in range(8))

    def _squares(self) -> Tensor:
        """(8, 4) the dark squares as (x0, x1, y0, y1), numbered as ``sample`` numbers them (k)."""
        cell = 2 * self.half / self.n_cells
        k = torch.arange(self.n_cells * self.n_cells // 2)
        row = k // (self.n_cells // 2)
        col = 2 * (k % (self.n_cells // 2)) + (row % 2)
        x0, y0 = col * cell - self.half, row * cell - self.half
        return torch.stack([x0, x0 + cell, y0, y0 + cell], 1).double()

    def mode_index(self, x: Tensor) -> Tensor:
        """(n,) the nearest dark square (Euclidean distance to the square, 0 inside it; ties: lowest k)."""
        sq = self._squares()
        xs = x[:, :2].detach().cpu().double()
        dx = (sq[None, :, 0] - xs[:, :1]).clamp(min=0) + (xs[:, :1] - sq[None, :, 1]).clamp(min=0)
        dy = (sq[None, :, 2] - xs[:, 1:2]).clamp(min=0) + (xs[:, 1:2] - sq[None, :, 3]).clamp(min=0)
        return (dx ** 2 + dy ** 2).argmin(1)

    def in_support(self, x: Tensor) -> Tensor:
        """(n,) on a dark square (where the density is positive)."""
        return torch.isfinite(self.log_prob(x[:, :2]))


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

    mode_weights = (0.125,) * 8
    mode_names = tuple(f"{45 * i} deg" for i in range(8))
    support_k = SUPPORT_K

    def _centre_dist(self, x: Tensor) -> Tensor:
        return torch.cdist(x[:, :2].detach().cpu().double(), self._centres())

    def mode_index(self, x: Tensor) -> Tensor:
        """(n,) the nearest centre."""
        return self._centre_dist(x).argmin(1)

    def in_support(self, x: Tensor) -> Tensor:
        """(n,) within ``support_k`` stds (``std``) of a centre."""
        return self._centre_dist(x).min(1).values <= self.support_k * self.std


class UnequalMixture2D(EightGaussians2D):
    """Four well-separated Gaussians with unequal weights (2-D); exact log-density. Paper 000's second
    toy (issue 15): at the spiral's scale (data std ~0.25, below the reference std 0.3 as App. C.1
    recommends), centres (+-0.25, +-0.25), std 0.04 (centres 12.5 stds apart), weights 0.4, 0.3, 0.2,
    0.1, so a sampler that does not stitch the levels together gets the mode masses wrong."""
    name, dim = "mixture", 2
    std, k = 0.04, 4
    centres = ((0.25, 0.25), (-0.25, 0.25), (-0.25, -0.25), (0.25, -0.25))
    mode_weights = (0.4, 0.3, 0.2, 0.1)
    mode_names = ("(+,+) 0.4", "(-,+) 0.3", "(-,-) 0.2", "(+,-) 0.1")

    def _centres(self) -> Tensor:
        return torch.tensor(self.centres, dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, 2) exact samples."""
        idx = torch.multinomial(torch.tensor(self.mode_weights), n, replacement=True, generator=generator)
        return self._centres().float()[idx] + self.std * torch.randn(n, 2, generator=generator)

    def log_prob(self, x: Tensor) -> Tensor:
        """(n,) exact log-density of ``x`` (n, 2)."""
        d = _np(x)[:, None, :] - _np(self._centres())[None]  # (n, k, 2)
        comp = _gauss_logpdf(d, self.std).sum(-1) + np.log(np.asarray(self.mode_weights))[None]
        return torch.from_numpy(logsumexp(comp, axis=1)).float()


TOYS = {c.name: c for c in (Rings10D, Spiral2D, Checkerboard2D, EightGaussians2D, UnequalMixture2D)}


def get_toy(name: str):
    """The toy distribution named ``name`` (``TOYS``)."""
    if name not in TOYS:
        raise ValueError(f"unknown toy distribution {name!r}; expected one of {sorted(TOYS)}")
    return TOYS[name]()
