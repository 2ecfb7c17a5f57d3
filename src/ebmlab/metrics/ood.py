"""Out-of-distribution detection by energy: AUROC (paper 001 Sec. 3.3; paper 004 Table 2).

A score is "more in-distribution" when higher; with energies pass ``-E``. AUROC is the
Mann-Whitney probability that an in-distribution example outscores an OOD one (ties count 1/2).
"""
from __future__ import annotations

import torch
from torch import Tensor


def auroc(scores_in: Tensor, scores_out: Tensor) -> float:
    s = torch.cat([scores_in, scores_out]).double()
    if not torch.isfinite(s).all():
        raise FloatingPointError("OOD scores contain NaN or inf")
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    # average ranks over ties
    uniq, inv = torch.unique(s, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, ranks)
    counts = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, torch.ones_like(ranks))
    ranks = (sums / counts)[inv]
    n_in, n_out = len(scores_in), len(scores_out)
    u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2
    return float(u / (n_in * n_out))
