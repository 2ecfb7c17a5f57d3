"""The held-out energy distance: how close a run's samples are to rows no weight and no statistic has seen
(not from the papers: issue 18, docs/leaderboard.md "breast cancer").

For data without an exact sampler (user arrays, tables) the sample metrics compare equal-sized halves of a
small held-out split in data units, where one wide column dominates. Here instead, in *z-scored data
coordinates* (each column centred and scaled by the training rows' mean and std, whatever the model's own
transform), the energy distance (U-statistic, ``metrics.distances.energy_distance(unbiased=True)``) between
n samples and every held-out row: ``sample_energy_distance_heldout`` in ``metrics.json``; the validation
checks (``training/selection.py``) score the same way against the validation rows. One draw of samples is one
reading, and a sampler's draws can be heavy-tailed (AIS on a small table), so ``heldout_draws`` repeats it
over independently seeded draws (``ebmlab eval --heldout-draws K --draw-seed S``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ebmlab.data.dataset import column_scale, column_stats
from ebmlab.metrics.distances import energy_distance, self_mean
from ebmlab.samplers.progress import sampling_progress


def zscorer(data) -> Callable[[Tensor], Tensor]:
    """model coordinates (B, D) -> z-scored data coordinates (B, D) float64: each column centred and scaled
    by the training rows' mean and std, whatever the model's own transform (whitening, none); a constant column by
    the widest column's std (a 1e-12 floor put samples 1e-8 off a column of zeros 1e4 z-units away)."""
    mean, std = column_stats(data.train, data.transform.to_data)  # (D,) float64, without a float64 copy of the rows
    std = column_scale(std, 1.0)  # a constant column in the widest column's units
    return lambda x: (data.transform.to_data(x.detach().cpu().float()).double() - mean) / std


VALIDATION_ROWS = 5000  # validation rows a check scores against at most (the held-out split's default size)


@dataclass(frozen=True)
class Reference:
    """Rows scored against in z-scored data coordinates (``rows``, (m, D) float64), with their z-scoring ``z`` and
    their own mean distance (``self_term``, the U-statistic's E|Y - Y'|): made once (``reference``) and shared by
    every score against the same rows, so that a validation check costs n x m distances, not also m x m."""
    z: Callable[[Tensor], Tensor]
    rows: Tensor
    self_term: Tensor

    def energy_distance(self, x: Tensor) -> float:
        """The energy distance (U-statistic) between samples ``x`` (model coordinates) and the rows."""
        return energy_distance(self.z(x), self.rows, unbiased=True, y_self=self.self_term)


def reference(data, rows: Tensor, cap: int | None = None) -> Reference:
    """The ``Reference`` of ``rows`` (model coordinates; the first ``cap`` when given: the splits come in random
    order) of ``data``."""
    z = zscorer(data)
    y = z(rows if cap is None else rows[:cap])
    return Reference(z, y, self_mean(y, unbiased=True))


def validation_score(objective, data, n: int, generator: torch.Generator, ref: Reference | None = None) -> float:
    """The energy distance between ``n`` samples of ``objective`` and the validation rows (``data.val``, the first
    ``VALIDATION_ROWS``) in z-scored data coordinates; ``ref``: their ``reference``, made once by the caller."""
    ref = ref or reference(data, data.val, VALIDATION_ROWS)
    return ref.energy_distance(objective.sample(n, generator=generator).x)


def validation_terms(objective, data, n: int, generator: torch.Generator,
                     ref: Reference | None = None) -> tuple[float, Tensor]:
    """``validation_score`` of one draw and its per-row terms (m,): 2 E|X - y_j| over the draw's samples X for
    each validation row y_j (float64; what a difference of two scores on the same rows varies with)."""
    ref = ref or reference(data, data.val, VALIDATION_ROWS)
    x = ref.z(objective.sample(n, generator=generator).x)  # (n, D) float64
    per_row, cross = _cross_terms(x, ref.rows)  # (m,), (): the n x m distances taken once for both
    return float(2 * cross - self_mean(x, unbiased=True) - ref.self_term), 2 * per_row


def _cross_terms(x: Tensor, y: Tensor, block: int = 2048) -> tuple[Tensor, Tensor]:
    """The mean over the rows of ``x`` (n, D) of their distance to each row of ``y`` (m, D), (m,), and the mean over
    all n x m pairs, (): one pass over the distances in blocks of ``block`` rows of ``x``, each mean summed as
    ``energy_distance`` sums it (``validation_terms``' score has the bits of ``validation_score``'s)."""
    total, per_row = torch.zeros((), dtype=torch.float64), torch.zeros(y.shape[0], dtype=torch.float64)
    for i in range(0, x.shape[0], block):
        d = torch.cdist(x[i:i + block], y)  # (<= block, m)
        total += d.sum()
        per_row += d.sum(0)
    whole = x.shape[0] <= block  # one block: the row means as they always were taken
    return (d.mean(0) if whole else per_row / x.shape[0]), total / (x.shape[0] * y.shape[0])


def heldout_energy_distance(objective, data, n: int, generator, samples: torch.Tensor | None = None,
                            ref: Reference | None = None) -> dict:
    """For data without an exact sampler: the energy distance (U-statistic) between ``n`` samples
    (``samples``, model coordinates, or drawn here) and every held-out row, in *z-scored data coordinates*
    (each column centred and scaled by the training rows' mean and std, whatever the model's own transform),
    ``sample_energy_distance_heldout``, with two references on the same held-out rows: ``..._train``
    (min(n, N) training rows, what replaying the training set scores) and ``..._noise`` (n draws of the
    prior). Unlike ``sample_energy_distance`` (data coordinates, two halves of the held-out split), no
    column dominates by its units and the samples are not cut to half the held-out split
    (docs/leaderboard.md, breast cancer). {} when the held-out split has fewer than 2 rows."""
    if data.test.shape[0] < 2:
        return {}
    if samples is None:
        samples = objective.sample(n, generator=generator).x
    ref = ref or reference(data, data.test)  # every held-out row, their own distances computed once
    g = torch.Generator().manual_seed(0)
    rows = data.train[torch.randperm(data.train.shape[0], generator=g)[:n]]
    sets = {"": samples, "_train": rows, "_noise": objective.prior(n, generator=generator)}
    return {f"sample_energy_distance_heldout{k}": ref.energy_distance(x) for k, x in sets.items()}


def heldout_draws(objective, data, n: int, draws: int, seed: int) -> dict:
    """``heldout_energy_distance`` of ``draws`` independent draws of ``n`` samples, the k-th from a generator
    seeded ``seed + k``: one draw is a noisy reading when the sampler's draws are heavy-tailed (AIS on a small
    table: docs/data_defaults.md). ``sample_energy_distance_heldout_draws`` (each), ``..._mean`` and the seeds."""
    dev = next(objective.parameters()).device
    ref = reference(data, data.test)
    values = [heldout_energy_distance(objective, data, n, torch.Generator(dev).manual_seed(seed + k), ref=ref)
              ["sample_energy_distance_heldout"] for k in range(draws)]
    return {"sample_energy_distance_heldout_draws": values,
            "sample_energy_distance_heldout_mean": sum(values) / draws, "heldout_draw_seeds": [seed, seed + draws - 1]}


def draws_extension(args, cfg, objective, data) -> dict:
    """``ebmlab eval --heldout-draws K [--draw-seed S]``: ``heldout_draws`` of ``eval.n_samples`` samples."""
    k = getattr(args, "heldout_draws", None)
    if not k:
        return {}
    with torch.no_grad(), sampling_progress(k * objective.steps_run(None), desc="held-out draws",
                                            enabled=None if cfg.train.progress else False):
        return heldout_draws(objective, data, cfg.eval.n_samples, k, getattr(args, "draw_seed", None) or 0)
