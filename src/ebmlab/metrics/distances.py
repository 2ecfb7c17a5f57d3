"""Two-sample distances between sample sets (B, D): energy distance and MMD.

Both are blind to fine structure (issue 2: a ring-less disc of the right radius scores nearly the
energy distance of true ring samples); report them beside ``sample_precision``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _mean_pdist(a: Tensor, b: Tensor, chunk: int = 2048) -> Tensor:
    total, b = torch.zeros((), dtype=torch.float64), b.double()
    for i in range(0, a.shape[0], chunk):
        total += torch.cdist(a[i:i + chunk].double(), b).sum()
    return total / (a.shape[0] * b.shape[0])


def energy_distance(x: Tensor, y: Tensor, unbiased: bool = False, y_self: Tensor | None = None) -> float:
    """Székely's energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (0 iff equal in law). V-statistic by default
    (the within-set means include each point's zero distance to itself: biased up by about
    E|X-X'|/n + E|Y-Y'|/m); ``unbiased=True`` leaves those out (the U-statistic, for sets of different
    sizes, whose V-statistic biases differ). ``y_self``: ``self_mean(y, unbiased)`` computed once for a fixed ``y``
    scored against many ``x`` (its m^2 distances dominate when m is large)."""
    x, y = x.flatten(1), y.flatten(1)
    y_self = self_mean(y, unbiased) if y_self is None else y_self
    return float(2 * _mean_pdist(x, y) - self_mean(x, unbiased) - y_self)


def self_mean(a: Tensor, unbiased: bool) -> Tensor:
    """E|A-A'| over all n^2 pairs, or (``unbiased``) over the n(n-1) pairs of distinct points."""
    n = a.shape[0]
    if not unbiased:
        return _mean_pdist(a, a)
    if n < 2:
        raise ValueError("the unbiased energy distance needs at least 2 points per set")
    return _mean_pdist(a, a) * (n / (n - 1))


def mmd(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Gaussian-kernel MMD² (biased); bandwidth defaults to the median distance between distinct points of both
    sets (1 where every point is the same). The distances are taken without cdist's matrix-product shortcut, whose
    round-off left self-distances above 0 in the median and made it move with a translation of both sets."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist").pow(2)  # (n+m, n+m), exact zero diagonal
    if bandwidth is None:
        pairs = d2[tuple(torch.triu_indices(len(z), len(z), 1))]  # each pair once
        bandwidth = float(pairs[pairs > 0].median().sqrt()) if (pairs > 0).any() else 1.0
    k = torch.exp(-d2 / (2 * bandwidth ** 2))
    n = x.shape[0]
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())
