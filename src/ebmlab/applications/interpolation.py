"""Interpolation between two generated samples (paper 002 Sec. 5.1, Fig. 3).

"We perform spherical interpolation between both the initial Gaussian noises and the Langevin noises
at each sampling step." Two samples A and B are defined by all of their randomness: the start
x_T ~ N(0, I) and the T x K per-step noises z_s of Eq. 17. For weights w in [0, 1] we slerp every one
of these between A and B (per example, over the flattened tensor) and rerun the deterministic
generation with the interpolated randomness, so w = 0 reproduces A and w = 1 reproduces B (up to the
rounding of slerp's trigonometric weights, ~1e-7).

Why slerp and not a straight line: for Gaussian vectors in high dimension the norm concentrates at
sqrt(D); the midpoint of a straight line has norm ~ sqrt(D / 2), i.e. it is atypical noise, while
slerp between two (near-orthogonal) noises keeps the norm. Works with any objective whose
``generate(x0, noises=..., generator=...)`` takes given noises (``ImplicitDiffusion``).
"""
from __future__ import annotations

import torch
from torch import Tensor


def slerp(a: Tensor, b: Tensor, w: float, eps: float = 1e-7) -> Tensor:
    """Spherical interpolation per example: a, b (N, ...) -> (N, ...), over the flattened trailing dims.

    The unit directions are slerped and the norms interpolated linearly: |x_w| = (1-w)|a| + w|b|.
    (The textbook formula sin((1-w)W)/sin W a + sin(wW)/sin W b on unnormalised vectors blows up when
    a and b are nearly opposite with different norms, which is common for 2-D noises; in high
    dimension, where |a| ~ |b| ~ sqrt(D), both agree.) Exactly (anti)parallel directions (sin W < eps)
    fall back to linear interpolation of the directions.
    """
    fa, fb = a.flatten(1), b.flatten(1)  # (N, D)
    na, nb = fa.norm(dim=1, keepdim=True), fb.norm(dim=1, keepdim=True)  # (N, 1)
    ua, ub = fa / na.clamp_min(eps), fb / nb.clamp_min(eps)
    omega = torch.arccos((ua * ub).sum(1).clamp(-1.0, 1.0))  # (N,)
    so = torch.sin(omega)
    lin = so.abs() < eps
    ca = torch.where(lin, torch.full_like(so, 1.0 - w), torch.sin((1.0 - w) * omega) / so.where(~lin, 1.0))
    cb = torch.where(lin, torch.full_like(so, w), torch.sin(w * omega) / so.where(~lin, 1.0))
    direction = ca.view(-1, 1) * ua + cb.view(-1, 1) * ub  # (N, D) unit (except the fallback)
    return (((1.0 - w) * na + w * nb) * direction).view_as(a)


@torch.no_grad()
def interpolate(objective, n_points: int = 8, n_pairs: int = 1, generator: torch.Generator | None = None):
    """(n_pairs, n_points, ...) samples along slerp paths between pairs of generated samples.

    Draws for each pair two starts (n_pairs, ...) and two noise sets (T*K, n_pairs, ...), slerps both
    at ``n_points`` equally spaced weights in [0, 1] and generates each point with its own randomness.
    """
    if n_points < 2 or n_pairs < 1:
        raise ValueError(f"interpolation needs n_points >= 2 and n_pairs >= 1, got {n_points}, {n_pairs}")
    steps = objective.cfg.T * objective.cfg.K
    x_a, x_b = objective.prior(n_pairs, generator), objective.prior(n_pairs, generator)  # (P, ...)
    z_a = torch.randn((steps, *x_a.shape), generator=generator, device=x_a.device)       # (S, P, ...)
    z_b = torch.randn((steps, *x_a.shape), generator=generator, device=x_a.device)
    rows = []
    for w in torch.linspace(0.0, 1.0, n_points).tolist():
        x0 = slerp(x_a, x_b, w)
        z = torch.stack([slerp(z_a[s], z_b[s], w) for s in range(steps)])  # (S, P, ...)
        x, _, _ = objective.generate(x0, noises=z)
        rows.append(x)
    return torch.stack(rows, dim=1)  # (P, n_points, ...)
