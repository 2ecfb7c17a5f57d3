"""Frechet distance and Inception Score (metrics/fid.py)."""
import math

import numpy as np
import pytest
import torch

from ebmlab.metrics.fid import frechet_distance, frechet_distance_from_stats, gaussian_stats, inception_score


def _feats(n=600, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g) / math.sqrt(d)
    return torch.randn(n, d, generator=g) @ a.T + 0.5  # correlated, full rank


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_fd_of_a_set_with_itself_is_zero(method):
    x = _feats()
    assert frechet_distance(x, x, method=method) < 1e-8


def test_fd_grows_with_a_shift_as_the_squared_mean_difference():
    x = _feats()
    prev = 0.0
    for s in (0.1, 0.5, 1.0, 2.0):
        fd = frechet_distance(x, x + s)
        # same covariance: FD = |shift|^2 = D s^2 exactly
        assert fd == pytest.approx(x.shape[1] * s * s, rel=1e-6)
        assert fd > prev
        prev = fd


def test_closed_form_for_isotropic_gaussians():
    d = 5
    # N(0, I) vs N(1, 4I): |mu|^2 + tr(I + 4I - 2 * 2I) = d + d
    fd = frechet_distance_from_stats(np.zeros(d), np.eye(d), np.ones(d), 4 * np.eye(d))
    assert fd == pytest.approx(2 * d, rel=1e-10)


def test_eigh_and_sqrtm_agree_on_different_sets():
    x, y = _feats(seed=0), _feats(seed=1) * 1.3
    a, b = frechet_distance(x, y, method="eigh"), frechet_distance(x, y, method="sqrtm")
    assert a > 0.1
    assert a == pytest.approx(b, rel=1e-6)


def test_rank_deficient_covariances_give_a_real_finite_value():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 64, generator=g), torch.randn(20, 64, generator=g) + 0.2  # N < D
    fd = frechet_distance(x, y)
    assert math.isfinite(fd) and fd > 0


def test_non_finite_features_raise():
    x = _feats()
    x[3, 2] = float("nan")
    with pytest.raises(FloatingPointError):
        frechet_distance(x, _feats())
    with pytest.raises(ValueError):
        gaussian_stats(torch.zeros(1, 4))


def test_inception_score_bounds():
    g = torch.Generator().manual_seed(0)
    uniform = torch.zeros(1000, 10)
    assert inception_score(uniform)[0] == pytest.approx(1.0)
    labels = torch.randint(10, (1000,), generator=g)
    confident = torch.nn.functional.one_hot(labels, 10).float() * 50.0  # sure and balanced
    mean, std = inception_score(confident, splits=10)
    assert 9.0 < mean <= 10.0 and std < 0.5
    collapsed = torch.nn.functional.one_hot(torch.zeros(1000, dtype=torch.long), 10).float() * 50.0
    assert inception_score(collapsed)[0] == pytest.approx(1.0, abs=1e-6)


def test_gaussian_stats_is_the_unbiased_covariance_by_hand():
    """The four points (+-1, 0), (0, +-1): mean 0 and covariance diag(2/3, 2/3) (sum of squares 2 over n - 1 = 3).
    The biased 1/n covariance (diag(1/2, 1/2)) went unnoticed: every FD test compared sets of one size."""
    mu, s = gaussian_stats(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    np.testing.assert_allclose(mu, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(s, [[2 / 3, 0.0], [0.0, 2 / 3]], atol=1e-12)
