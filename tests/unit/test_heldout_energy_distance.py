"""``sample_energy_distance_heldout`` (training/heldout.heldout_energy_distance) and the unbiased energy
distance it uses: known answers by hand, and the metric's order on samples from the data's law, from a
shifted law and from training rows."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ebmlab.data.base import Affine
from ebmlab.metrics.distances import energy_distance
from ebmlab.objectives.base import SampleOutput
from ebmlab.training.heldout import heldout_energy_distance


def test_energy_distance_by_hand():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [3.0]])
    # cross mean (0 + 3 + 1 + 2) / 4 = 1.5; within x: 1 over distinct pairs, 0.5 over all four; within y: 3, 1.5
    assert energy_distance(x, y) == pytest.approx(2 * 1.5 - 0.5 - 1.5)
    assert energy_distance(x, y, unbiased=True) == pytest.approx(2 * 1.5 - 1.0 - 3.0)
    with pytest.raises(ValueError, match="at least 2"):
        energy_distance(x[:1], y, unbiased=True)


def test_unbiased_energy_distance_is_near_zero_for_equal_laws_of_unequal_sizes():
    g = torch.Generator().manual_seed(0)
    vals = [energy_distance(torch.randn(400, 5, generator=g), torch.randn(30, 5, generator=g), unbiased=True)
            for _ in range(40)]
    v_stat = [energy_distance(torch.randn(400, 5, generator=g), torch.randn(30, 5, generator=g)) for _ in range(40)]
    mean_u, mean_v = sum(vals) / 40, sum(v_stat) / 40
    assert abs(mean_u) < 0.03 < mean_v  # the V-statistic's bias E|Y-Y'|/30 (about 0.1) is gone


class Drawn(nn.Module):
    """The part of the Objective contract the metric uses: ``sample`` and ``prior`` (model coordinates)."""

    def __init__(self, shift: float):
        super().__init__()
        self.shift = shift

    def sample(self, n, *, generator=None, **_):
        return SampleOutput(torch.randn(n, 6, generator=generator) * 0.5 + self.shift, {})

    def prior(self, n, generator=None):
        return torch.randn(n, 6, generator=generator)


def _table(transform=None):
    g = torch.Generator().manual_seed(1)
    tf = transform or Affine(torch.zeros(6), torch.ones(6))
    return SimpleNamespace(train=torch.randn(300, 6, generator=g) * 0.5, test=torch.randn(40, 6, generator=g) * 0.5,
                           transform=tf)


def test_samples_from_the_data_law_score_near_the_training_rows_and_a_shift_scores_worse():
    data = _table()
    good = heldout_energy_distance(Drawn(0.0), data, 1000, torch.Generator().manual_seed(2))
    bad = heldout_energy_distance(Drawn(1.0), data, 1000, torch.Generator().manual_seed(2))
    assert set(good) == {"sample_energy_distance_heldout", "sample_energy_distance_heldout_train",
                         "sample_energy_distance_heldout_noise"}
    assert good["sample_energy_distance_heldout_train"] == bad["sample_energy_distance_heldout_train"]
    assert abs(good["sample_energy_distance_heldout"] - good["sample_energy_distance_heldout_train"]) < 0.1
    assert bad["sample_energy_distance_heldout"] > 1.0 > 0.1 > good["sample_energy_distance_heldout"]
    # z-scored, the data have std 1 and N(0, I) model noise std 2: 2 E|X-Y| - E|X-X'| - E|Y-Y'| in 6-D
    # ~ (2 sqrt(5) - sqrt(8) - sqrt(2)) E|chi_6| ~ 0.23 x 2.35 ~ 0.54
    assert 0.4 < good["sample_energy_distance_heldout_noise"] < 0.9
    given = heldout_energy_distance(Drawn(9.0), data, 1000, None, samples=data.train)  # passed samples are used
    assert given["sample_energy_distance_heldout"] == pytest.approx(given["sample_energy_distance_heldout_train"], abs=1e-6)
    short = SimpleNamespace(train=data.train, test=data.test[:1], transform=data.transform)
    assert heldout_energy_distance(Drawn(0.0), short, 10, None) == {}


def test_it_does_not_depend_on_the_models_transform_or_the_columns_units():
    """The same rows and samples in data coordinates score the same whatever the model's transform, and a
    column in units 1,000 times larger does not dominate (the metric z-scores with the training rows)."""
    data = _table()
    units = Affine(torch.tensor([5.0, 0, 0, 0, 0, 0]), torch.tensor([1000.0, 1, 1, 1, 1, 1]))
    other = Affine(torch.full((6,), -3.0), torch.full((6,), 0.1))
    a = heldout_energy_distance(Drawn(0.0), SimpleNamespace(**{**vars(data), "transform": units}), 500, None,
                                samples=data.train[:200] + 0.3)
    # the same data-coordinate points, expressed in another model's coordinates
    moved = lambda x: other.to_model(units.to_data(x))  # noqa: E731
    b = heldout_energy_distance(Drawn(0.0), SimpleNamespace(train=moved(data.train), test=moved(data.test),
                                                            transform=other), 500, None,
                                samples=moved(data.train[:200] + 0.3))
    for k in ("sample_energy_distance_heldout", "sample_energy_distance_heldout_train"):
        assert a[k] == pytest.approx(b[k], rel=1e-4)
    plain = heldout_energy_distance(Drawn(0.0), data, 500, None, samples=data.train[:200] + 0.3)
    assert a["sample_energy_distance_heldout"] == pytest.approx(plain["sample_energy_distance_heldout"], rel=1e-4)
