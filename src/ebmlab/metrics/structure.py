"""Metrics that see a toy's structure: how mass is shared among its modes, and how much lies on its support.

The toy supplies ``mode_weights``, ``mode_index(x)`` and ``in_support(x)`` in data coordinates
(``data/toy.py`` defines them and the support bands: 3 noise stds about the noiseless structure).

- ``mode_masses(x, toy)``: the fraction of the points assigned (nearest mode) to each mode, (K,);
- ``grid_mode_masses(logp, grid, toy)``: the same for a density: the grid-normalised probability of
  the grid points assigned to each mode (for the rings: the (x1, x2) slice of ``density_kl``);
- ``mode_mass_error(masses, weights)``: the largest relative error max_k |m_k - w_k| / w_k (0 is
  perfect; all mass on one of three equal modes scores 2, a mode with no mass scores 1);
- ``in_support_share(x, toy)``: the fraction of the points inside the true support;
- ``structure_metrics``: the dict that ``training/evaluate.py`` writes into ``metrics.json``.

True samples do not score 0 / 1: a set of n true samples has a multinomial mode-mass error of order
sqrt((1 - w) / (n w)) and the noisy toys leave a few true points outside the band, so
``evaluate`` reports each metric's floor from true data of the same size.
"""
from __future__ import annotations

import torch
from torch import Tensor


def has_structure(toy) -> bool:
    """Whether ``toy`` exposes modes and support (every toy of ``data/toy.py`` does; user data do not)."""
    return toy is not None and all(hasattr(toy, a) for a in ("mode_weights", "mode_index", "in_support"))


def mode_weights(toy) -> Tensor:
    """(K,) the toy's true mode weights, float64."""
    return torch.tensor(toy.mode_weights, dtype=torch.float64)


def mode_masses(x: Tensor, toy) -> Tensor:
    """(K,) fraction of the points ``x`` (n, D) (data coordinates) assigned to each of the toy's modes."""
    k = len(toy.mode_weights)
    if x.shape[0] == 0:
        raise ValueError("mode_masses needs at least one point")
    idx = toy.mode_index(x)
    return torch.bincount(idx, minlength=k).double() / x.shape[0]


def grid_mode_masses(logp: Tensor, grid: Tensor, toy) -> Tensor:
    """(K,) the grid-normalised probability of each mode: softmax of the unnormalised log-density
    ``logp`` (G,) over the grid points ``grid`` (G, D), summed over the points each mode owns."""
    p = torch.softmax(logp.double(), 0)
    if not torch.isfinite(p).all():
        raise FloatingPointError("the log-density is not finite on the grid")
    out = torch.zeros(len(toy.mode_weights), dtype=torch.float64)
    return out.index_add_(0, toy.mode_index(grid), p)


def mode_mass_error(masses: Tensor, weights: Tensor) -> float:
    """max_k |m_k - w_k| / w_k: the largest relative error of the mode masses."""
    m, w = torch.as_tensor(masses, dtype=torch.float64), torch.as_tensor(weights, dtype=torch.float64)
    return float(((m - w).abs() / w).max())


def in_support_share(x: Tensor, toy) -> float:
    """Fraction of the points ``x`` (n, D) (data coordinates) inside the toy's true support."""
    return float(toy.in_support(x).double().mean())


def _rounded(v: Tensor) -> list[float]:
    return [round(float(a), 5) for a in v]


def structure_metrics(x: Tensor, toy, prefix: str) -> dict:
    """``{prefix}mode_mass`` (per-mode list), ``{prefix}mode_mass_error``, ``{prefix}in_support_share``."""
    m = mode_masses(x, toy)
    return {f"{prefix}mode_mass": _rounded(m),
            f"{prefix}mode_mass_error": mode_mass_error(m, mode_weights(toy)),
            f"{prefix}in_support_share": in_support_share(x, toy)}


def density_structure_metrics(model_logp: Tensor, true_logp: Tensor, grid: Tensor, toy) -> dict:
    """The mode masses of a model density on a grid (``density_mode_mass``, ``density_mode_mass_error``)
    and, as the floor, of the exact density on the same grid (the grid's own truncation and
    discretisation error)."""
    m = grid_mode_masses(model_logp, grid, toy)
    t = grid_mode_masses(true_logp, grid, toy)
    w = mode_weights(toy)
    return {"density_mode_mass": _rounded(m), "density_mode_mass_error": mode_mass_error(m, w),
            "density_mode_mass_floor": _rounded(t), "density_mode_mass_error_floor": mode_mass_error(t, w)}
