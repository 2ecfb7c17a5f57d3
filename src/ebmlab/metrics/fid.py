"""Frechet distance between feature sets, and Inception Score from logits.

Frechet distance (Heusel et al. 2017, "GANs trained by a two time-scale update rule", Eq. 6): the
2-Wasserstein distance between Gaussians fitted to two feature sets (N, D) and (M, D),

    FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}).

Matrix square root, and what happens to imaginary parts. ``S1 S2`` is not symmetric, so a general
``sqrtm`` (scipy) returns a complex matrix whose imaginary part is round-off. We avoid it: with
A = S1^{1/2} S2 S1^{1/2} (symmetric positive semi-definite, similar to S1 S2), tr((S1 S2)^{1/2}) =
sum_i sqrt(lambda_i(A)). Both square roots come from ``numpy.linalg.eigh`` of symmetric matrices in
float64, so the result is real by construction. Eigenvalues that come out negative are round-off on
a rank-deficient covariance (fewer samples than dimensions): those within ``1e-6 * max|lambda|`` of
zero are set to 0; a larger negative eigenvalue means the input was not a covariance and raises.
``method="sqrtm"`` uses ``scipy.linalg.sqrtm(S1 @ S2)`` instead (the pytorch-fid route): an imaginary
part larger than ``1e-3`` (relative to the trace) raises, a smaller one is dropped (real part kept).
Both routes agree to ~1e-6 on full-rank covariances (tested).

Inception Score (Salimans et al. 2016, Sec. 4): IS = exp(E_x KL(p(y|x) || p(y))), computed on
``splits`` equal chunks and reported as mean and std over chunks (the standard 10 splits).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_NEG_EIG_TOL = 1e-6   # relative round-off allowed on eigenvalues that should be >= 0
_IMAG_TOL = 1e-3      # sqrtm route: largest imaginary part tolerated (relative to the trace)


def _as_np(x) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all():
        raise FloatingPointError("features contain NaN or inf; the generator's samples are probably not finite")
    return a


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), float64."""
    f = _as_np(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2, got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via eigh (round-off negatives -> 0)."""
    lam, v = np.linalg.eigh((s + s.T) / 2)
    lam = _clip_roundoff(lam, "covariance")
    return (v * np.sqrt(lam)) @ v.T


def _clip_roundoff(lam: np.ndarray, what: str) -> np.ndarray:
    scale = max(float(np.abs(lam).max()), 1e-300)
    if lam.min() < -_NEG_EIG_TOL * scale:
        raise FloatingPointError(f"{what} has a negative eigenvalue {lam.min():.3g} (largest {scale:.3g}); "
                                 "it is not a covariance matrix")
    return np.clip(lam, 0.0, None)


def _trace_sqrt_product_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    r1 = _psd_sqrt(s1)
    a = r1 @ s2 @ r1  # (D, D) symmetric PSD, same eigenvalues as S1 S2
    lam = _clip_roundoff(np.linalg.eigvalsh((a + a.T) / 2), "S1^1/2 S2 S1^1/2")
    return float(np.sqrt(lam).sum())


def _trace_sqrt_product_sqrtm(s1: np.ndarray, s2: np.ndarray) -> float:
    from scipy import linalg

    root = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(root).all():
        raise FloatingPointError("scipy.linalg.sqrtm(S1 S2) is not finite; use method='eigh'")
    if np.iscomplexobj(root):
        imag = float(np.abs(root.imag).max())
        scale = max(float(np.trace(s1) + np.trace(s2)), 1e-300)
        if imag > _IMAG_TOL * scale:
            raise FloatingPointError(f"sqrtm(S1 S2) has an imaginary part {imag:.3g}, more than round-off")
        root = root.real  # the imaginary part is round-off: dropped explicitly
    return float(np.trace(root))


def frechet_distance_from_stats(mu1, s1, mu2, s2, method: str = "eigh") -> float:
    """FD between N(mu1, s1) and N(mu2, s2); method 'eigh' (default) or 'sqrtm' (see module doc)."""
    mu1, mu2, s1, s2 = (np.asarray(a, dtype=np.float64) for a in (mu1, mu2, s1, s2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"mismatched statistics: means {mu1.shape}, {mu2.shape}, covariances {s1.shape}, {s2.shape}")
    if method == "eigh":
        tr_root = _trace_sqrt_product_eigh(s1, s2)
    elif method == "sqrtm":
        tr_root = _trace_sqrt_product_sqrtm(s1, s2)
    else:
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_root)
    # FD >= 0 in exact arithmetic: a tiny negative is round-off (identical sets) and becomes 0
    scale = max(float(np.trace(s1) + np.trace(s2) + diff @ diff), 1e-300)
    if fd < -_NEG_EIG_TOL * scale:
        raise FloatingPointError(f"Frechet distance came out negative ({fd:.3g}); the statistics are inconsistent")
    return max(fd, 0.0)


def frechet_distance(feats1, feats2, method: str = "eigh") -> float:
    """FD between the Gaussians fitted to two feature sets (N, D) and (M, D)."""
    return frechet_distance_from_stats(*gaussian_stats(feats1), *gaussian_stats(feats2), method=method)


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over ``splits`` chunks of exp(E_x KL(p(y|x) || p(y))) from logits (N, K)."""
    logits = logits.detach().cpu().double()
    if logits.dim() != 2 or logits.shape[0] < splits:
        raise ValueError(f"logits must be (N, K) with N >= splits={splits}, got {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        raise FloatingPointError("logits contain NaN or inf")
    scores = []
    for chunk in torch.tensor_split(logits, splits):
        logp = torch.log_softmax(chunk, 1)                          # (n, K) log p(y|x)
        log_marg = torch.logsumexp(logp, 0) - np.log(chunk.shape[0])  # (K,) log p(y)
        kl = (logp.exp() * (logp - log_marg)).sum(1)                # (n,)
        scores.append(float(kl.mean().exp()))
    s = np.asarray(scores)
    return float(s.mean()), float(s.std())
