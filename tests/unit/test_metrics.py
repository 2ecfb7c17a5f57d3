import math

import pytest
import torch

from ebmlab.metrics import auroc, energy_distance, grid_kl, mmd


def test_grid_kl_zero_for_equal_and_positive_otherwise():
    a = torch.randn(100)
    assert abs(grid_kl(a, a + 3.0)) < 1e-9  # normalisation removes constants
    assert grid_kl(a, torch.zeros(100)) > 0


def test_grid_kl_ignores_zero_true_mass():
    p = torch.tensor([0.0, 0.0, -float("inf")])
    assert grid_kl(p, torch.tensor([0.0, 0.0, 5.0])) > 0


def test_energy_distance_and_mmd():
    g = torch.Generator().manual_seed(0)
    x, y, z = torch.randn(800, 3, generator=g), torch.randn(800, 3, generator=g), torch.randn(800, 3, generator=g) + 1
    assert energy_distance(x, y) < 0.02 < energy_distance(x, z)
    assert mmd(x, y) < mmd(x, z)


def test_auroc_known_values():
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])) == 0.5


def test_density_kl_of_an_evaluation_is_kl_of_the_true_density_from_the_models():
    """``density_kl`` = KL(true || model) on the grid (docs and the density plot's title say so). True N(0, I),
    model N(0, 4 I), a +-10 grid of 201 x 201 points: 2 (ln 2 + 1/8 - 1/2) = 0.636 nats; the reverse direction is
    1.614 (a mutation swapped the arguments at the call and no test noticed)."""
    from types import SimpleNamespace

    from torch import nn

    from ebmlab.training.evaluate import _density_metrics
    same = SimpleNamespace(to_model=lambda x: x, to_data=lambda x: x, dtype=torch.float32)  # (an Affine's dtype)
    dist = SimpleNamespace(dim=2, log_prob=lambda x: -0.5 * x.pow(2).sum(1))
    data = SimpleNamespace(shape=(2,), dist=dist, transform=same, test=torch.zeros(4, 2))

    class Wide(nn.Module):
        has_log_density = True

        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

        def log_density(self, x):
            return -0.5 * x.pow(2).sum(1) / 4.0
    cfg = SimpleNamespace(eval=SimpleNamespace(grid_extent=10.0, grid_size=201, plots=False))
    kl = _density_metrics(Wide(), data, cfg, None)["density_kl"]
    assert kl == pytest.approx(2 * (math.log(2) + 1 / 8 - 1 / 2), abs=1e-3)
