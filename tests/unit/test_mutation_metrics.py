"""A seventh mutation round: the evaluation metrics (``src/ebmlab/metrics/``; docs/testing.md "A seventh mutation
round: the metrics"). Known answers computed by hand or in closed form, each failing under one or more planted
one-line bugs that the modules' own test files let through.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ebmlab.metrics import baselines, novelty
from ebmlab.metrics.density import grid_kl, make_grid, sample_precision, uniform_grid_kl
from ebmlab.metrics.distances import energy_distance, mmd, self_mean
from ebmlab.metrics.fid import frechet_distance_from_stats, gaussian_stats, inception_score
from ebmlab.metrics.ood import auroc
from ebmlab.metrics.structure import (density_structure_metrics, grid_mode_masses, mode_mass_error, mode_masses,
                                      structure_metrics)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------- distances.py
def test_energy_distance_by_hand_v_and_u():
    # x = {0, 1}, y = {3, 5}: E|X-Y| = (3+5+2+4)/4 = 3.5; E|X-X'| V 0.5, U 1; E|Y-Y'| V 1, U 2
    x, y = _t([[0.], [1.]]), _t([[3.], [5.]])
    assert energy_distance(x, y) == pytest.approx(2 * 3.5 - 0.5 - 1.0, abs=1e-12)
    assert energy_distance(x, y, unbiased=True) == pytest.approx(2 * 3.5 - 1.0 - 2.0, abs=1e-12)
    assert float(self_mean(y, True)) == pytest.approx(2.0, abs=1e-12)
    assert float(self_mean(y, False)) == pytest.approx(1.0, abs=1e-12)


def test_energy_distance_of_a_single_point_against_a_set():
    # x = {0}: 2 * E|0 - Y| - 0 - E|Y-Y'| = 2 * 4 - 1 = 7 (V-statistic)
    assert energy_distance(_t([[0.]]), _t([[3.], [5.]])) == pytest.approx(7.0, abs=1e-12)


def test_energy_distance_uses_the_given_y_self():
    x, y = _t([[0.], [1.]]), _t([[3.], [5.]])
    assert energy_distance(x, y, y_self=torch.tensor(0.0, dtype=torch.float64)) == pytest.approx(7 - 0.5, abs=1e-12)


def test_mmd_with_a_given_and_the_median_bandwidth():
    x, y = _t([[0.]]), _t([[2.]])
    # one pair at squared distance 4: k = exp(-4 / (2 h^2)); median bandwidth sqrt(4) = 2
    assert mmd(x, y, bandwidth=1.0) == pytest.approx(2 - 2 * math.exp(-2.0), abs=1e-12)
    assert mmd(x, y) == pytest.approx(2 - 2 * math.exp(-0.5), abs=1e-12)
    # x = {0, 1}, y = {3}: squared distances 1, 9, 4 -> median 4 -> h = 2
    x, y = _t([[0.], [1.]]), _t([[3.]])
    k = lambda d2: math.exp(-d2 / 8)  # noqa: E731
    want = (2 * 1 + 2 * k(1)) / 4 + 1 - 2 * (k(9) + k(4)) / 2
    assert mmd(x, y) == pytest.approx(want, abs=1e-12)


# ---------------------------------------------------------------- density.py
def test_grid_kl_of_two_known_distributions_in_nats():
    # p = (1/4, 3/4), q = (1/2, 1/2), both given unnormalised (arbitrary offsets)
    p_log = torch.tensor([0.0, math.log(3)]) + 5.0
    q_log = torch.tensor([-7.0, -7.0])
    want = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert grid_kl(p_log, q_log) == pytest.approx(want, abs=1e-7)
    # KL(q || p) differs: 1/2 ln 2 + 1/2 ln(2/3)
    assert grid_kl(q_log, p_log) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-7)
    # the uniform ceiling: ln G - H(p)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert uniform_grid_kl(p_log) == pytest.approx(math.log(2) - h, abs=1e-7)


def test_make_grid_order_and_extent():
    pts, xs, ys = make_grid((0.0, 2.0, 10.0, 11.0), 3)
    assert xs.tolist() == [0.0, 1.0, 2.0] and ys.tolist() == [10.0, 10.5, 11.0]
    # x varies fastest ("xy" indexing: row i of the image is y = ys[i])
    assert pts[:4].tolist() == [[0.0, 10.0], [1.0, 10.0], [2.0, 10.0], [0.0, 10.5]]
    pts, xs, _ = make_grid(1.0, 3)
    assert xs.tolist() == [-1.0, 0.0, 1.0] and pts[0].tolist() == [-1.0, -1.0]


def test_sample_precision_counts_ties_and_uses_the_lower_quantile_of_heldout():
    held = torch.arange(101, dtype=torch.float64)  # q = 0.1 quantile: 10.0
    samples = torch.tensor([10.0, 9.0, 50.0, 100.0])
    assert sample_precision(samples, held, q=0.1) == pytest.approx(0.75)
    assert sample_precision(torch.tensor([20.0, 30.0]), held, q=0.1) == 1.0  # the held-out set's quantile
    assert sample_precision(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0, 1.0])) == 1.0


# ---------------------------------------------------------------- structure.py
class _LineToy:
    """Three modes on a line: x < 1 -> 0, 1 <= x < 2 -> 1, else 2; equal weights."""
    mode_weights = (1 / 3, 1 / 3, 1 / 3)

    def mode_index(self, x):
        return (x[:, 0] >= 1).long() + (x[:, 0] >= 2).long()

    def in_support(self, x):
        return x[:, 0] < 3


def test_mode_masses_and_error_by_hand():
    toy = _LineToy()
    x = _t([[0.5], [0.2], [1.5], [0.1]])
    assert mode_masses(x, toy).tolist() == [0.75, 0.25, 0.0]
    # errors |m - w| / w: 5/4, 1/4, 1 -> max 1.25
    assert mode_mass_error(torch.tensor([0.75, 0.25, 0.0]), torch.tensor(toy.mode_weights)) == pytest.approx(1.25)
    # a mode over-weighted (m > w) and one under-weighted by more: the absolute error counts
    assert mode_mass_error(torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.25, 0.5])) == pytest.approx(1.0)
    assert mode_mass_error(torch.tensor([0.4, 0.3, 0.3]), torch.tensor([0.5, 0.25, 0.25])) == pytest.approx(0.2)
    # the largest error an under-weighted mode's: -0.75 against +2/3 and +1/3
    assert mode_mass_error(torch.tensor([0.1, 0.5, 0.4]), torch.tensor([0.4, 0.3, 0.3])) == pytest.approx(0.75)
    out = structure_metrics(x, toy, "p_")
    assert out["p_mode_mass_error"] == pytest.approx(1.25)
    assert out["p_mode_mass"] == [0.75, 0.25, 0.0]
    m = structure_metrics(_t([[0.5]] * 2 + [[1.5]] * 3 + [[2.5]] * 2), toy, "")
    assert m["mode_mass"] == [round(2 / 7, 5), round(3 / 7, 5), round(2 / 7, 5)]


def test_grid_mode_masses_normalise_and_the_floor_uses_the_true_density():
    toy = _LineToy()
    grid = _t([[0.5], [1.5], [2.5], [2.6]])
    logp = torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0])) + 3.0  # unnormalised
    assert grid_mode_masses(logp, grid, toy).tolist() == pytest.approx([0.1, 0.2, 0.7])
    true = torch.log(torch.tensor([1.0, 1.0, 0.5, 0.5]))
    out = density_structure_metrics(logp, true, grid, toy)
    assert out["density_mode_mass_floor"] == pytest.approx([1 / 3, 1 / 3, 1 / 3], abs=1e-5)
    assert out["density_mode_mass_error_floor"] == pytest.approx(0.0, abs=1e-6)
    assert out["density_mode_mass_error"] == pytest.approx((0.7 - 1 / 3) * 3)


# ---------------------------------------------------------------- novelty.py
def test_nearest_neighbour_is_found_by_the_fast_search():
    # a = (1.2, 0): training (0, 0) at 1.2, (2, 0) at 0.8 -> the second is nearest
    train = _t([[0., 0.], [2., 0.]])
    d, j = novelty.nearest_neighbours(_t([[1.2, 0.]]), train, k=1)
    assert j.tolist() == [[1]] and float(d[0, 0]) == pytest.approx(0.8)


def test_k_nearest_sorted_with_matching_indices_across_training_chunks(monkeypatch):
    monkeypatch.setattr(novelty, "TRAIN_CHUNK", 2)  # the index offset of later chunks matters
    train = _t([[5.], [0.], [3.], [1.], [10.]])
    d, j = novelty.nearest_neighbours(_t([[0.9]]), train, k=3)
    assert j.tolist() == [[3, 1, 2]]
    assert d[0].tolist() == pytest.approx([0.1, 0.9, 2.1])
    assert novelty.nn_distances(_t([[0.9], [4.8]]), train).tolist() == pytest.approx([0.1, 0.2])


def test_indices_follow_the_exact_distances_when_the_fast_search_ties():
    # at 1e8 the matmul form rounds both candidates' |b|^2 - 2 a.b to -1e16 (a tie); the exact distances are 0 (a
    # copy, row 1) and 1 (row 0): the indices must be reordered with them
    train = torch.tensor([[1e8 + 1], [1e8], [5.0]], dtype=torch.float64)
    d, j = novelty.nearest_neighbours(torch.tensor([[1e8]], dtype=torch.float64), train, k=2)
    assert d[0].tolist() == [0.0, 1.0] and j[0].tolist() == [1, 0]


def test_novelty_summary_by_hand():
    train = _t([[0.], [10.]])
    test = _t([[1.], [2.], [3.], [4.], [5.]])         # NN distances 1..5
    samples = _t([[0.5], [9.0], [6.0]])                # NN distances 0.5, 1, 4
    out = novelty.novelty_summary(samples, train, test, q=0.25)   # quantile 0.25 of 1..5: 2
    assert out["novelty_close_threshold"] == pytest.approx(2.0)
    assert out["novelty_frac_close"] == pytest.approx(2 / 3)
    assert out["novelty_nn_mean_data"] == pytest.approx(3.0)
    assert out["novelty_nn_min_data"] == pytest.approx(1.0)
    assert out["novelty_nn_mean"] == pytest.approx(5.5 / 3)
    assert out["novelty_nn_median"] == pytest.approx(1.0)


# ---------------------------------------------------------------- ood.py
def test_auroc_of_a_hand_ranking_with_ties():
    # in {3, 1}, out {2, 0}: 3 of 4 pairs ordered -> 0.75
    assert auroc(torch.tensor([3., 1.]), torch.tensor([2., 0.])) == pytest.approx(0.75)
    # a tie counts 1/2: in {1, 2}, out {1}: (1/2 + 1) / 2
    assert auroc(torch.tensor([1., 2.]), torch.tensor([1.])) == pytest.approx(0.75)
    assert auroc(torch.tensor([1., 1.]), torch.tensor([1., 1.])) == pytest.approx(0.5)


def test_auroc_keeps_float64_resolution():
    s_in = torch.tensor([1.0 + 1e-12], dtype=torch.float64)
    assert auroc(s_in, torch.tensor([1.0], dtype=torch.float64)) == 1.0


# ---------------------------------------------------------------- fid.py
def test_gaussian_stats_unbiased_covariance_by_feature():
    mu, s = gaussian_stats(np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]]))
    assert mu.tolist() == pytest.approx([2.0, 2.0])
    # var of (0, 2, 4) with n-1: 4; of (1, 1, 4): 3; cov: ((-2)(-1) + 0 + 2*2) / 2 = 3
    assert s.flatten().tolist() == pytest.approx([4.0, 3.0, 3.0, 3.0])


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_of_gaussians_in_closed_form(method):
    # diagonal covariances: |mu1-mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    mu1, mu2 = np.array([0.0, 0.0]), np.array([3.0, 4.0])
    s1, s2 = np.diag([4.0, 1.0]), np.diag([1.0, 9.0])
    want = 25.0 + (2 - 1) ** 2 + (1 - 3) ** 2
    assert frechet_distance_from_stats(mu1, s1, mu2, s2, method=method) == pytest.approx(want, abs=1e-8)
    # non-commuting: S1 = I, S2 = R diag(4, 9) R^T -> tr(S2^1/2) = 5: FD = 2 + 13 - 10
    c, s = math.cos(0.3), math.sin(0.3)
    r = np.array([[c, -s], [s, c]])
    s2 = r @ np.diag([4.0, 9.0]) @ r.T
    assert frechet_distance_from_stats(mu1, np.eye(2), mu1, s2, method=method) == pytest.approx(5.0, abs=1e-8)


def test_frechet_distance_refuses_a_non_covariance():
    with pytest.raises(FloatingPointError):
        frechet_distance_from_stats(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def test_inception_score_closed_forms():
    big = 60.0
    # one-hot on class 0, one-hot on class 1, uniform: p(y) = (1/2, 1/2); KL = ln 2, ln 2, 0 -> IS = 2^(2/3)
    logits = torch.tensor([[big, 0.0], [0.0, big], [0.0, 0.0]])
    mean, std = inception_score(logits, splits=1)
    assert mean == pytest.approx(2 ** (2 / 3), abs=1e-9) and std == 0.0
    # two splits: {class 0, class 1} -> 2; {class 0, class 0} -> 1: mean 1.5, std (ddof 0) 0.5
    logits = torch.tensor([[big, 0.0], [0.0, big], [big, 0.0], [big, 0.0]])
    mean, std = inception_score(logits, splits=2)
    assert mean == pytest.approx(1.5, abs=1e-9) and std == pytest.approx(0.5, abs=1e-9)


# ---------------------------------------------------------------- baselines.py
def test_split_sizes_are_disjoint_and_cover_the_rows():
    fit, val = baselines._split(10, 3)
    assert len(fit) == 8 and len(val) == 2
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(10))


def test_subsample_draws_with_the_seed():
    x = np.arange(20.0)[:, None]
    a = baselines._subsample(x, 5, 7)
    assert a[:, 0].tolist() == x[np.random.default_rng(7).permutation(20)[:5], 0].tolist()
    assert baselines._subsample(x, 30, 7) is x


def _two_blobs(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(n // 2, 2, generator=g) * 0.1 - 5, torch.randn(n // 2, 2, generator=g) * 0.1 + 5])


def test_gmm_is_refit_on_all_rows_and_its_log_density_is_the_gaussian_one():
    x = _two_blobs(60)
    fitted = baselines.fit_gmm(x, components=(1,), covariances=("full",))
    rows = x.double().numpy()
    mu, cov = rows.mean(0), np.cov(rows, rowvar=False, bias=True)
    assert fitted.model.means_[0] == pytest.approx(mu, abs=1e-9)
    pt = torch.tensor([[0.5, -0.25]])
    d = pt.double().numpy()[0] - mu
    want = -0.5 * d @ np.linalg.solve(cov, d) - 0.5 * math.log(np.linalg.det(2 * math.pi * cov))
    assert float(fitted.log_density(pt)[0]) == pytest.approx(want, rel=1e-3)


def test_gmm_chooses_the_best_validation_score_and_skips_too_many_components():
    x = _two_blobs(12)                     # 10 fitting rows: 8 components > 5 skipped
    fitted = baselines.fit_gmm(x, components=(1, 2, 8), covariances=("diag",))
    assert fitted.search["diag/8"].startswith("skipped")
    scores = {k: v for k, v in fitted.search.items() if isinstance(v, float)}
    best = max(scores, key=scores.get)
    assert f"{fitted.chosen['covariance_type']}/{fitted.chosen['n_components']}" == best


def test_gmm_samples_are_shuffled_and_follow_the_generator():
    fitted = baselines.fit_gmm(_two_blobs(200), components=(2,), covariances=("diag",))
    a = fitted.sample(200, torch.Generator().manual_seed(1))
    b = fitted.sample(200, torch.Generator().manual_seed(1))
    c = fitted.sample(200, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # other draws, not the same draws in another order
    assert not torch.equal(a[:, 0].sort().values, c[:, 0].sort().values)
    left = (a[:, 0] < 0).long()
    assert 0 < int(left[:100].sum()) < 100   # both blobs among the first half (not sorted by component)


def test_kde_subsample_follows_the_seed(monkeypatch):
    monkeypatch.setattr(baselines, "KDE_MAX_ROWS", 6)
    x = torch.arange(40, dtype=torch.float64)[:, None]
    fitted = baselines.fit_kde(x, seed=3, bandwidths=(0.5,))
    want = baselines._subsample(x.numpy(), 6, 3)
    assert np.asarray(fitted.model.tree_.data).tolist() == want.tolist()


# ---------------------------------------------------------------- digits.py
class _FixedLogits(torch.nn.Module):
    """A stand-in net: the first 10 pixels of an 8x8 image are its logits, the first 4 its features."""

    def features(self, x):
        return x.flatten(1)[:, :4].double()

    def forward(self, x):
        return x.flatten(1)[:, :10]


def _clf():
    from ebmlab.metrics.digits import DigitsClassifier, DigitsClassifierConfig
    return DigitsClassifier(_FixedLogits(), DigitsClassifierConfig())


def _images(logit_rows):
    x = torch.zeros(len(logit_rows), 1, 8, 8)
    x.view(len(logit_rows), -1)[:, :10] = torch.tensor(logit_rows)
    return x


def test_classifier_probabilities_are_per_image():
    rows = [[1.0] + [0.0] * 9, [0.0, 2.0] + [0.0] * 8, [0.0] * 10]
    labels, probs = _clf().classify(_images(rows))
    assert probs.sum(1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert probs[0, 0] == pytest.approx(math.e / (math.e + 9))
    assert labels.tolist()[:2] == [0, 1]


def test_class_scores_by_hand():
    from ebmlab.metrics.digits import class_scores
    big = 60.0
    # images confidently 0, 1, 1 and one uniform: histogram of argmax 0, 1, 1, 0 (ties -> 0)
    rows = [[big] + [0.0] * 9, [0.0, big] + [0.0] * 8, [0.0, big] + [0.0] * 8, [0.0] * 10]
    out = class_scores(_clf(), _images(rows))
    assert out["class_entropy"] == pytest.approx(math.log(2), abs=1e-9)
    assert out["confidence"] == pytest.approx((3 + 0.1) / 4, abs=1e-9)
    marg = np.array([1 + 0.1, 2 + 0.1] + [0.1] * 8) / 4
    kl = [math.log(1 / marg[0]), math.log(1 / marg[1]), math.log(1 / marg[1]), float(np.sum(0.1 * np.log(0.1 / marg)))]
    assert out["is"] == pytest.approx(math.exp(np.mean(kl)), abs=1e-9)


def test_to_native_averages_channels_and_digits_split_range():
    from ebmlab.metrics.digits import digits_split, to_native
    x = torch.zeros(1, 3, 8, 8)
    x[:, 0], x[:, 1], x[:, 2] = 0.3, -0.6, 0.9
    assert to_native(x, 8).flatten().tolist() == pytest.approx([0.2] * 64)
    xtr, _, xte, _ = digits_split()
    assert float(xtr.min()) == -1.0 and float(xtr.max()) == 1.0


def test_digits_metrics_floor_and_noise_ceiling():
    from ebmlab.metrics.digits import digits_metrics
    from ebmlab.metrics.fid import frechet_distance
    clf = _clf()
    g = torch.Generator().manual_seed(0)
    train, test = torch.rand(30, 1, 8, 8, generator=g) - 0.3, torch.rand(25, 1, 8, 8, generator=g)
    samples = torch.rand(20, 1, 8, 8, generator=g) * 0.5
    out = digits_metrics(samples, torch.Generator().manual_seed(5), train=train, test=test, clf=clf)
    f_test = clf.features(test)
    assert out["digits_fd_floor"] == pytest.approx(frechet_distance(clf.features(train), f_test), rel=1e-12)
    noise = torch.rand(samples.shape, generator=torch.Generator().manual_seed(5)) * 2 - 1
    assert out["digits_fd_noise"] == pytest.approx(frechet_distance(clf.features(noise), f_test), rel=1e-12)


def test_kde_folds_are_shuffled():
    # rows sorted by blob: unshuffled folds would each hold out a whole blob and push the bandwidth to its largest
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(15, 1, generator=g) * 0.05 + c for c in (-10.0, 0.0, 10.0)])
    fitted = baselines.fit_kde(x, seed=0, bandwidths=(0.05, 0.1, 3.0))
    assert fitted.chosen["bandwidth"] < 1.0


def test_frechet_distance_refuses_a_non_covariance_even_when_the_total_is_positive():
    # S1 = diag(4, -1): with |lambda| taken, FD would come out 100 + 3 + 2 - 6 = 99 and pass unnoticed
    with pytest.raises(FloatingPointError):
        frechet_distance_from_stats(np.zeros(2), np.diag([4.0, -1.0]), np.array([10.0, 0.0]), np.eye(2))


def test_sqrtm_imaginary_tolerance_is_relative_to_the_trace(monkeypatch):
    import scipy.linalg

    def fake_sqrtm(a):  # the true root plus an imaginary part of 0.01 (round-off at traces of 400)
        lam, v = np.linalg.eigh(a)
        return (v * np.sqrt(lam)) @ v.T + 0.01j * np.ones_like(a)

    monkeypatch.setattr(scipy.linalg, "sqrtm", fake_sqrtm)
    s = 100.0 * np.eye(2)
    assert frechet_distance_from_stats(np.zeros(2), s, np.ones(2), s, method="sqrtm") == pytest.approx(2.0)
    with pytest.raises(FloatingPointError):  # 0.01 against traces of 4: more than round-off
        frechet_distance_from_stats(np.zeros(2), np.eye(2), np.ones(2), np.eye(2), method="sqrtm")


# ---------------------------------------------------------------- inception.py
def test_inception_average_pool_ignores_the_padding():
    from ebmlab.metrics.inception import _avg3
    assert _avg3(torch.ones(1, 1, 3, 3)).flatten().tolist() == pytest.approx([1.0] * 9)
    x = torch.arange(9.0).view(1, 1, 3, 3)
    assert float(_avg3(x)[0, 0, 0, 0]) == pytest.approx((0 + 1 + 3 + 4) / 4)


def test_inception_preprocess_grey_and_resize_by_the_half_pixel_rule():
    from ebmlab.metrics.inception import InceptionV3
    x = torch.tensor([[[[0.0, 1.0]]]])               # (1, 1, 1, 2): a horizontal ramp
    out = InceptionV3.preprocess(x)
    assert out.shape == (1, 3, 299, 299)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    # align_corners=False: source x = (c + 0.5) * 2 / 299 - 0.5, clamped to [0, 1]
    for c in (1, 149, 200, 298):
        want = min(max((c + 0.5) * 2 / 299 - 0.5, 0.0), 1.0)
        assert float(out[0, 0, 0, c]) == pytest.approx(want, abs=1e-6)
    g = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    grey = InceptionV3.preprocess(g)
    assert torch.equal(grey[:, 0], InceptionV3.preprocess(g.repeat(1, 3, 1, 1))[:, 0])
    assert not torch.equal(grey[0], grey[1])


def test_inception_pool_features_average_the_last_block():
    from ebmlab.metrics.inception import InceptionV3
    model = InceptionV3()
    last = torch.arange(2048 * 64, dtype=torch.float32).view(1, 2048, 8, 8)

    class Const(torch.nn.Module):
        def forward(self, x):
            return last

    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
        setattr(model, f"Mixed_{name}", Const())
    with torch.no_grad():
        feats = model.pool_features(torch.zeros(1, 3, 299, 299))
    assert torch.allclose(feats, last.mean((2, 3)))
