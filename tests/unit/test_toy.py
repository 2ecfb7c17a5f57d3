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


# Each toy's sampler against its exact density: a chi-square goodness-of-fit test on a grid of cells. Fixed before
# running: 20,000 samples (seed 3), 12 x 12 cells over the extent, cells expecting < 5 samples pooled with the mass
# outside the extent, and the test at p >= 1e-3. The cell masses integrate exp(log_prob) by the midpoint rule on a
# 16 x 16 sub-grid per cell; its error (~1e-4 of a cell's mass for the smooth densities) is far below the
# sampling error a chi-square can see at this N (1 / sqrt(E) ~ 2-5 % per cell). The checkerboard's density jumps at
# its squares' edges, where the midpoint rule errs by up to half a sub-cell strip, so its cells are aligned with the
# board (extent 2: the edges -2, -1, 0, 1, 2 fall on cell boundaries) and the rule is exact there.
SAMPLER_EXTENTS = {"spiral": 0.75, "checkerboard": 2.0, "8gaussians": 2.4, "mixture": 2.4, "rings": 3.6}


def _cell_masses(logp_fn, half: float, cells: int, sub: int = 16) -> torch.Tensor:
    """(cells, cells) probability of each cell of [-half, half]^2 (rows: x2, columns: x1), midpoint rule."""
    n = cells * sub
    h = 2 * half / n
    axis = -half + h * (torch.arange(n, dtype=torch.float64) + 0.5)  # midpoints
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")  # (n, n): gx varies along columns
    dens = logp_fn(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1).float()).double().exp().view(n, n)
    return dens.view(cells, sub, cells, sub).sum((1, 3)) * h * h


@pytest.mark.parametrize("name", sorted(SAMPLER_EXTENTS))
def test_each_toys_sampler_draws_from_its_exact_density(name):
    from scipy.stats import chisquare
    dist = TOYS[name]()
    logp = dist.slice_log_prob if name == "rings" else dist.log_prob  # rings: the (x1, x2) marginal
    half, cells, n = SAMPLER_EXTENTS[name], 12, 20000
    x = dist.sample(n, torch.Generator().manual_seed(3))[:, :2].double()
    masses = _cell_masses(logp, half, cells).reshape(-1)
    col = ((x[:, 0] + half) / (2 * half) * cells).floor().long()
    row = ((x[:, 1] + half) / (2 * half) * cells).floor().long()
    inside = (col >= 0) & (col < cells) & (row >= 0) & (row < cells)
    counts = torch.bincount(row[inside] * cells + col[inside], minlength=cells * cells).double()
    expected = n * masses
    small = expected < 5
    obs = torch.cat([counts[~small], (counts[small].sum() + (~inside).sum()).view(1)])
    exp = torch.cat([expected[~small], (n - expected[~small].sum()).view(1)])
    assert float(exp[-1]) >= 0 and masses.sum() <= 1 + 1e-3, "the cell masses exceed 1: the density is not normalised"
    p = chisquare(obs.numpy(), exp.numpy()).pvalue
    assert p >= 1e-3, f"{name}: samples and exact density disagree (chi-square p = {p:.2g}, {len(obs)} bins)"
