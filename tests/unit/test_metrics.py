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
