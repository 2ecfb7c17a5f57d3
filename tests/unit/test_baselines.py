"""Classical baselines (metrics/baselines.py): the GMM search finds a known mixture, the KDE bandwidth comes
from its grid, samples and log-densities have the right shapes and are reproducible."""
import math

import torch

from ebmlab.metrics.baselines import KDE_BANDWIDTHS, fit_gmm, fit_kde
from ebmlab.metrics.density import grid_kl, make_grid


def _two_gaussians(n: int, seed: int = 0) -> torch.Tensor:
    """Two well-separated unit-variance Gaussians at (-3, 0) and (3, 0), weights 0.7 / 0.3."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.where(torch.rand(n, generator=g) < 0.7, -3.0, 3.0)
    x = torch.randn(n, 2, generator=g)
    x[:, 0] += centre
    return x


def _true_log_density(x: torch.Tensor) -> torch.Tensor:
    def comp(mu):
        return -0.5 * ((x[:, 0] - mu) ** 2 + x[:, 1] ** 2) - math.log(2 * math.pi)
    return torch.logsumexp(torch.stack([comp(-3.0) + math.log(0.7), comp(3.0) + math.log(0.3)]), 0)


def test_gmm_finds_two_components_and_density_kl_is_near_zero():
    g = fit_gmm(_two_gaussians(3000), seed=0, components=(1, 2, 4), covariances=("full",))
    assert g.chosen["n_components"] in (2, 4)  # 4 may tie with 2 on held-out likelihood; 1 must lose
    assert g.search["full/2"] > g.search["full/1"]
    grid, _, _ = make_grid(7.0, 80)
    assert grid_kl(_true_log_density(grid), g.log_density(grid)) < 0.02


def test_gmm_log_density_is_normalised_and_samples_match():
    g = fit_gmm(_two_gaussians(3000), seed=0, components=(2,), covariances=("full",))
    grid, xs, ys = make_grid(8.0, 120)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert abs(float(g.log_density(grid).exp().sum() * cell) - 1.0) < 0.02
    s = g.sample(4000, torch.Generator().manual_seed(1))
    assert s.shape == (4000, 2)
    assert abs(float((s[:, 0] < 0).float().mean()) - 0.7) < 0.03  # the weights survive sampling
    assert abs(float((s[:2000, 0] < 0).float().mean()) - 0.7) < 0.05  # shuffled: not sorted by component
    assert torch.equal(s, g.sample(4000, torch.Generator().manual_seed(1)))


def test_kde_bandwidth_is_chosen_within_the_grid():
    k = fit_kde(_two_gaussians(1500), seed=0)
    assert k.chosen["bandwidth"] in KDE_BANDWIDTHS
    assert KDE_BANDWIDTHS[0] < k.chosen["bandwidth"] < KDE_BANDWIDTHS[-1]  # an interior optimum on this data
    assert len(k.search) == len(KDE_BANDWIDTHS)
    s = k.sample(100, torch.Generator().manual_seed(0))
    assert s.shape == (100, 2) and torch.isfinite(k.log_density(s)).all()


def test_baselines_keep_the_example_shape():
    x = torch.randn(300, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for fitted in (fit_gmm(x, components=(1, 2)), fit_kde(x, bandwidths=(0.5, 1.0))):
        assert fitted.sample(5, torch.Generator().manual_seed(0)).shape == (5, 1, 4, 4)
        assert fitted.log_density(x[:7]).shape == (7,)


def test_unfittable_candidates_are_skipped_with_a_reason():
    g = fit_gmm(torch.randn(10, 3, generator=torch.Generator().manual_seed(0)), components=(1, 16))
    assert g.chosen["n_components"] == 1 and g.search["full/16"].startswith("skipped")
