"""Classical density estimators as reference rows for the leaderboard (issue 18), fitted with scikit-learn
on the same training rows (model coordinates) as the EBMs, and scored by the same metric code.

- ``fit_gmm``: ``sklearn.mixture.GaussianMixture`` (EM; Dempster, Laird & Rubin 1977) over
  ``GMM_COMPONENTS`` x ``GMM_COVARIANCES``; each candidate is fitted on 80 % of the training rows and
  scored by its mean log-likelihood on the other 20 % (a validation split of the training rows, never
  the held-out test split); the best is refitted on all training rows. A candidate that cannot be fitted
  (more components than half the fitting rows, a singular covariance) is skipped and its reason kept. At most
  ``GMM_MAX_ROWS`` training rows, drawn at random (EM's cost grows with the rows times the dimension squared: a
  million rows of 100 columns kept ``model.base: gmm`` fitting for minutes before the first update).
- ``fit_kde``: ``sklearn.neighbors.KernelDensity`` with a Gaussian kernel (Parzen 1962), the bandwidth
  chosen from ``KDE_BANDWIDTHS`` (in units of the standardised coordinates) by ``GridSearchCV``
  (``KDE_FOLDS``-fold cross-validated held-out log-likelihood), on at most ``KDE_MAX_ROWS`` training rows
  (a KDE keeps every row it is fitted on, and its query cost grows with them).

A ``FittedBaseline`` gives ``log_density(x)`` (exact, normalised, model coordinates) and ``sample(n,
generator)``: what ``density_kl``, the sample metrics and the OOD AUROC need.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

GMM_COMPONENTS = (1, 2, 4, 8, 16)
GMM_COVARIANCES = ("full", "diag")
KDE_BANDWIDTHS = tuple(float(b) for b in np.logspace(-1.5, 0.5, 9))  # 0.032 ... 3.2 standard deviations
KDE_FOLDS, KDE_MAX_ROWS, VALIDATION_SHARE = 3, 5000, 0.2
GMM_MAX_ROWS = 20_000  # (the leaderboard's toys train on 20,000 rows: fitted on all of them)


@dataclass
class FittedBaseline:
    """A fitted scikit-learn density on flattened rows; ``shape`` is one example's shape (samples are reshaped)."""
    name: str
    model: object
    shape: tuple
    chosen: dict = field(default_factory=dict)    # the selected hyper-parameters
    search: dict = field(default_factory=dict)    # candidate -> validation score (or the reason it failed)

    def log_density(self, x: Tensor) -> Tensor:
        """(B,) normalised log-density of model-coordinate rows ``x`` (B, ...)."""
        flat = x.detach().cpu().reshape(len(x), -1).double().numpy()
        return torch.from_numpy(self.model.score_samples(flat)).float()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, ...) independent samples in model coordinates (shuffled: a GMM returns them by component)."""
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        if self.name == "gmm":
            self.model.random_state = seed
            x = self.model.sample(n)[0][rng.permutation(n)]
        else:
            x = self.model.sample(n, random_state=seed)
        return torch.from_numpy(np.asarray(x)).float().reshape(n, *self.shape)


def _rows(x: Tensor) -> np.ndarray:
    return x.detach().cpu().reshape(len(x), -1).double().numpy()


def _subsample(x: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """At most ``cap`` rows of ``x``, drawn without replacement with ``seed`` (all of them, in order, when fewer)."""
    return x[np.random.default_rng(seed).permutation(len(x))[:cap]] if len(x) > cap else x


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * VALIDATION_SHARE))
    return perm[n_val:], perm[:n_val]


def fit_gmm(train: Tensor, seed: int = 0, components=GMM_COMPONENTS, covariances=GMM_COVARIANCES) -> FittedBaseline:
    """The best ``GaussianMixture`` by validation log-likelihood (module docstring), refitted on all its rows
    (at most ``GMM_MAX_ROWS`` of ``train``, drawn with ``seed``)."""
    from sklearn.mixture import GaussianMixture

    x = _subsample(_rows(train), GMM_MAX_ROWS, seed)
    fit_idx, val_idx = _split(len(x), seed)
    search, best = {}, None
    for cov in covariances:
        for k in components:
            key = f"{cov}/{k}"
            if k > len(fit_idx) // 2:
                search[key] = "skipped: more components than half the fitting rows"
                continue
            try:
                gmm = GaussianMixture(k, covariance_type=cov, random_state=seed, max_iter=200).fit(x[fit_idx])
                search[key] = float(gmm.score(x[val_idx]))  # mean held-out log-likelihood
            except (ValueError, np.linalg.LinAlgError) as err:
                search[key] = f"failed: {err}".split("\n")[0]
                continue
            if best is None or search[key] > search[best]:
                best = key
    if best is None:
        raise ValueError(f"no Gaussian mixture could be fitted to {len(x)} rows: {search}")
    cov, k = best.split("/")
    model = GaussianMixture(int(k), covariance_type=cov, random_state=seed, max_iter=200).fit(x)
    return FittedBaseline("gmm", model, tuple(train.shape[1:]), {"covariance_type": cov, "n_components": int(k)}, search)


def fit_kde(train: Tensor, seed: int = 0, bandwidths=KDE_BANDWIDTHS) -> FittedBaseline:
    """A Gaussian ``KernelDensity`` with the cross-validated bandwidth (module docstring)."""
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.neighbors import KernelDensity

    x = _subsample(_rows(train), KDE_MAX_ROWS, seed)
    cv = KFold(KDE_FOLDS, shuffle=True, random_state=seed)
    grid = GridSearchCV(KernelDensity(kernel="gaussian"), {"bandwidth": list(bandwidths)}, cv=cv).fit(x)
    # the cross-validated held-out log-likelihood (summed over each fold, averaged over folds) per bandwidth
    search = {f"bandwidth {b:.4g}": float(s) for b, s in zip(bandwidths, grid.cv_results_["mean_test_score"])}
    chosen = {"bandwidth": float(grid.best_params_["bandwidth"]), "rows": len(x)}
    return FittedBaseline("kde", grid.best_estimator_, tuple(train.shape[1:]), chosen, search)


BASELINES = {"gmm": fit_gmm, "kde": fit_kde}  # name -> fn(train, seed) -> FittedBaseline

__all__ = ["BASELINES", "GMM_COMPONENTS", "GMM_COVARIANCES", "GMM_MAX_ROWS", "KDE_BANDWIDTHS", "FittedBaseline", "fit_gmm",
           "fit_kde"]
