"""Out-of-distribution detection by energy: AUROC (paper 001 Sec. 3.3; paper 004 Table 2).

A score is "more in-distribution" when higher; with energies pass ``-E``. AUROC is the probability
that an in-distribution example outscores an OOD one (ties count 1/2), computed by
``sklearn.metrics.roc_auc_score`` with in-distribution as the positive class.
"""
from __future__ import annotations

import torch
from torch import Tensor


def auroc(scores_in: Tensor, scores_out: Tensor) -> float:
    """Area under the ROC curve of separating ``scores_in`` (positives, (N,)) from ``scores_out``
    (negatives, (M,)) by thresholding the score; 1 = perfect, 0.5 = chance. ``FloatingPointError``
    for NaN or inf scores, ``ValueError`` for an empty set."""
    from sklearn.metrics import roc_auc_score

    s_in, s_out = scores_in.detach().cpu().double().flatten(), scores_out.detach().cpu().double().flatten()
    if len(s_in) == 0 or len(s_out) == 0:
        raise ValueError(f"AUROC needs in-distribution and OOD scores, got {len(s_in)} and {len(s_out)}")
    s = torch.cat([s_in, s_out])
    if not torch.isfinite(s).all():
        raise FloatingPointError("OOD scores contain NaN or inf")
    labels = torch.cat([torch.ones(len(s_in)), torch.zeros(len(s_out))])
    return float(roc_auc_score(labels.numpy(), s.numpy()))
