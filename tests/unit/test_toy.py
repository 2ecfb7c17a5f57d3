"""Exact densities of the toy distributions: normalisation and agreement with the samplers."""
import math

import pytest
import torch

from ebmlab.data.toy import TOYS, Checkerboard2D, Rings10D
from ebmlab.metrics.density import make_grid, sample_precision


def _grid_mass(logp_fn, extent, n=400):
    grid, xs, ys = make_grid(extent, n)
    cell = float((xs[1] - xs[0]) * (ys[1] - ys[0]))
    return float(logp_fn(grid).double().exp().sum() * cell)


@pytest.mark.parametrize("name,extent", [("spiral", 1.0), ("checkerboard", 2.5), ("8gaussians", 2.6)])
def test_2d_densities_integrate_to_one(name, extent):
    dist = TOYS[name]()
    assert abs(_grid_mass(dist.log_prob, extent, 300) - 1.0) < 0.02


def test_rings_slice_density_integrates_to_one():
    assert abs(_grid_mass(Rings10D().slice_log_prob, 3.8, 500) - 1.0) < 0.01


def test_rings_full_density_factorises():
    d = Rings10D()
    x = d.sample(500, torch.Generator().manual_seed(0))
    rest = torch.distributions.Normal(0.0, d.std_vector()[2:]).log_prob(x[:, 2:]).sum(1)
    assert torch.allclose(d.log_prob(x), d.slice_log_prob(x[:, :2]) + rest, atol=1e-3)


def test_rings_radius_histogram_matches_density():
    d = Rings10D()
    x = d.sample(30000, torch.Generator().manual_seed(1))
    r = x[:, :2].norm(dim=1)
    for radius in d.radii:  # equal thirds, each within ~4 std of its ring
        frac = float(((r - radius).abs() < 0.4).float().mean())
        assert abs(frac - 1 / 3) < 0.015


@pytest.mark.parametrize("name", sorted(TOYS))
def test_true_samples_have_precision_near_099(name):
    dist = TOYS[name]()
    g = torch.Generator().manual_seed(2)
    a, b = dist.sample(5000, g), dist.sample(5000, g)
    assert sample_precision(dist.log_prob(a), dist.log_prob(b)) > 0.97


def test_precision_sees_structure_that_energy_distance_misses():
    """A ring-less disc of matching radius has low precision (issue 2's motivating case)."""
    d = Rings10D()
    g = torch.Generator().manual_seed(3)
    ref = d.sample(4000, g)
    r = torch.sqrt(torch.rand(4000, generator=g)) * 3.2
    phi = torch.rand(4000, generator=g) * 2 * math.pi
    disc = ref.clone()
    disc[:, 0], disc[:, 1] = r * torch.cos(phi), r * torch.sin(phi)
    assert sample_precision(d.log_prob(disc), d.log_prob(ref)) < 0.8  # true samples: ~0.99


def test_checkerboard_samples_lie_on_dark_cells():
    d = Checkerboard2D()
    x = d.sample(2000, torch.Generator().manual_seed(4))
    assert torch.isfinite(d.log_prob(x)).all()
    assert torch.isinf(d.log_prob(torch.tensor([[0.5, -0.5], [5.0, 0.0]]))).all()
