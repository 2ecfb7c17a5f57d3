"""``energy_heldout_gap`` (training/evaluate.py): the mean energy of held-out rows minus that of training
rows, a memorisation signal in every run's metrics.json. Known answers on an energy that is low exactly on
the training rows (a memoriser) and on one that ignores which split a row came from."""
from types import SimpleNamespace

import torch
from torch import nn

from ebmlab.training.evaluate import heldout_energy_gap


class Scored(nn.Module):
    """The part of the Objective contract the metric uses: ``score`` (energies) and parameters."""

    def __init__(self, fn):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.fn = fn

    def score(self, x):
        return self.fn(x)


def _data(n_train=300, n_test=40):
    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(train=torch.randn(n_train, 3, generator=g), test=torch.randn(n_test, 3, generator=g))


def test_a_memoriser_has_a_large_gap_and_a_smooth_energy_none():
    data = _data()
    train = data.train

    def memoriser(x):  # 0 on a training row, 5 elsewhere
        hit = (torch.cdist(x, train, compute_mode="donot_use_mm_for_euclid_dist").min(1).values < 1e-6).float()
        return 5.0 * (1 - hit)

    m = heldout_energy_gap(Scored(memoriser), data)
    assert m["energy_heldout_gap"] == 5.0 and m["energy_heldout_gap_z"] > 1e6  # training energies all 0
    smooth = heldout_energy_gap(Scored(lambda x: 0.5 * x.pow(2).sum(1)), data)
    assert abs(smooth["energy_heldout_gap"]) < 0.5 and abs(smooth["energy_heldout_gap_z"]) < 0.5


def test_it_uses_equal_numbers_of_rows_in_batches_and_skips_what_it_cannot_measure():
    seen = []
    data = _data(n_train=1200, n_test=1100)
    heldout_energy_gap(Scored(lambda x: seen.append(len(x)) or x.sum(1)), data, n=1000, batch_size=300)
    assert sum(seen) == 2000 and max(seen) == 300
    assert heldout_energy_gap(Scored(lambda x: x.sum(1)), _data(n_test=1)) == {}
    skipped = heldout_energy_gap(Scored(lambda x: x.sum(1) / 0.0), _data())  # infinite energies: said, not NaN
    assert list(skipped) == ["energy_heldout_gap_skipped"] and "not finite" in skipped["energy_heldout_gap_skipped"]
    huge = heldout_energy_gap(Scored(lambda x: 1e37 * (1 + x.sum(1).abs())), _data())  # finite; float32 sums overflow
    assert set(huge) == {"energy_heldout_gap", "energy_heldout_gap_z"} and abs(huge["energy_heldout_gap"]) < 1e40
