"""Self-checks of the exact pieces (exact.py) and of the recovery check (checks.py): the oracle is
only as good as its own answers."""
import math

import pytest
import torch

from ebmlab.energies.base import energy_and_grad
from ebmlab.metrics.density import make_grid
from ebmlab.schedules import soft_annealing_log_weights
from tests.oracle.checks import N, N_SAMPLES, assert_recovers
from tests.oracle.exact import ExactMixture, SeriesEnergy, TimeSmoothedEnergy


def _grid_integral(logp_fn, half_width: float = 6.0, n: int = 401) -> float:
    pts, xs, _ = make_grid(half_width, n)
    dx = float(xs[1] - xs[0])
    return float(logp_fn(pts.double()).exp().sum()) * dx * dx


def _moments(mix: ExactMixture) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean (D,) and covariance (D, D) of a mixture."""
    w, m, s = mix.weights, mix.means, mix.stds
    mean = (w[:, None] * m).sum(0)
    outer = m[:, :, None] * m[:, None, :] + (s ** 2)[:, None, None] * torch.eye(mix.dim)  # (K, D, D)
    second = (w[:, None, None] * outer).sum(0)
    return mean, second - mean[:, None] * mean[None]


def test_log_prob_integrates_to_one(mixture):
    assert _grid_integral(mixture.log_prob) == pytest.approx(1.0, abs=1e-3)
    # a noisy, scaled version: a X + b N
    assert _grid_integral(lambda x: mixture.log_prob_affine(x, 0.6, 0.5)) == pytest.approx(1.0, abs=1e-3)


def test_affine_mixture_is_the_law_of_scaled_noisy_samples(mixture):
    a, b2 = 0.6, 0.5
    x = torch.randn(50, 2).double()
    assert torch.allclose(mixture.log_prob_affine(x, a, b2), mixture.affine(a, b2).log_prob(x), atol=1e-10)
    # per-row a, b2 (one level per row) give the same numbers as scalars
    rows = mixture.log_prob_affine(x, torch.full((50,), a), torch.full((50,), b2))
    assert torch.allclose(rows, mixture.log_prob_affine(x, a, b2), atol=1e-10)


def test_noisy_marginal_matches_monte_carlo(mixture):
    g = torch.Generator().manual_seed(11)
    a, b2, n = 0.6, 0.5, 200_000
    noise = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = a * mixture.sample(n, g).double() + math.sqrt(b2) * noise
    mean, cov = _moments(mixture.affine(a, b2))
    assert torch.allclose(y.mean(0), mean, atol=4 * math.sqrt(float(cov.diagonal().max()) / n))
    assert torch.allclose(torch.cov(y.T), cov, atol=0.01)
    # E[log p(Y)] by Monte Carlo equals the integral of p log p on a grid (density and sampler agree)
    pts, xs, _ = make_grid(7.0, 401)
    lp = mixture.log_prob_affine(pts.double(), a, b2)
    neg_entropy = float((lp.exp() * lp).sum()) * float(xs[1] - xs[0]) ** 2
    mc = mixture.log_prob_affine(y, a, b2)
    assert float(mc.mean()) == pytest.approx(neg_entropy, abs=4 * float(mc.std()) / math.sqrt(n))


def test_highest_responsibility_reproduces_the_weights(mixture):
    """The modes are distinct enough that assigning exact samples by responsibility is unbiased to
    < 0.01 (so the +-0.05 mode-mass tolerance is spent on the sampler, not on the assignment)."""
    x = mixture.sample(200_000, torch.Generator().manual_seed(12))
    assert (mixture.mode_mass(x) - mixture.weights).abs().max() < 0.01


def test_posterior_mean_is_tweedie_and_regression(mixture):
    a, b2, v = 0.8, 0.2, 0.3
    g = torch.Generator().manual_seed(13)
    n = 200_000
    noise = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = a * mixture.sample(n, g).double() + math.sqrt(b2) * noise
    obs = y + math.sqrt(v) * torch.randn(n, 2, generator=g, dtype=torch.float64)
    post = mixture.posterior_mean(obs, a, b2, v)
    # Tweedie: E[Y | obs] = obs + v grad log p_obs(obs), p_obs the law of a X + sqrt(b2 + v) N
    _, grad = energy_and_grad(lambda z: -mixture.log_prob_affine(z, a, b2 + v), obs[:1000])
    assert torch.allclose(post[:1000], obs[:1000] - v * grad, atol=1e-8)
    # regression: the residual has mean 0 and is uncorrelated with functions of the observation
    resid = y - post
    se = float(resid.std()) / math.sqrt(n)
    assert resid.mean(0).abs().max() < 4 * se
    for h in (obs, post, torch.tanh(obs)):
        prod = resid * (h - h.mean(0))
        assert (prod.mean(0).abs() < 4 * float(prod.std()) / math.sqrt(n)).all()


def test_expected_distances_match_monte_carlo(mixture):
    g = torch.Generator().manual_seed(14)
    x, x2 = mixture.sample(100_000, g).double(), mixture.sample(100_000, g).double()
    d = (x - x2).norm(dim=1)
    assert mixture.expected_pair_distance() == pytest.approx(float(d.mean()), abs=4 * float(d.std()) / 316)
    pts = torch.tensor([[0.0, 0.0], [1.0, -1.0], [3.0, 2.0]], dtype=torch.float64)
    exact = mixture.expected_distance_to(pts)
    for p, e in zip(pts, exact):
        dist = (x - p).norm(dim=1)
        assert float(e) == pytest.approx(float(dist.mean()), abs=4 * float(dist.std()) / 316)


def test_series_energy_levels_and_soft_target(mixture):
    mix = mixture.affine(0.2)
    E = SeriesEnergy(mix, 256, 0.3)
    z = 0.3 * torch.randn(64, 2, generator=torch.Generator().manual_seed(15))
    cond = E.log_conditional(z)                                               # (B, T)
    assert torch.allclose(cond[:, 0], E.reference_log_density(z), atol=1e-4)  # t = 0: p_n
    assert torch.allclose(cond[:, -1], mix.log_prob(z), atol=1e-3)             # t = T-1: the data
    t = torch.randint(256, (64,), generator=torch.Generator().manual_seed(16))
    assert torch.allclose(-E(z, t=t), cond.gather(1, t[:, None]).squeeze(1), atol=1e-3)
    assert torch.allclose(E.log_t_given_z(z).exp().sum(1), torch.ones(64), atol=1e-5)
    assert torch.allclose(-E(z), E.log_marginal(z), atol=1e-5)
    # Alg. 4's re-weighted marginal: the fused energy+gradient equals autograd through log_joint
    for stage in (0, 40, 127):
        w = soft_annealing_log_weights(stage, 128, 256)
        e_fast, g_fast = energy_and_grad(lambda v, w=w: E(v, log_weights=w), z)
        e_ref, g_ref = energy_and_grad(lambda v, w=w: -torch.logsumexp(E.log_joint(v) + w, 1), z)
        assert torch.allclose(e_fast, e_ref, atol=1e-3)
        assert torch.allclose(g_fast, g_ref, rtol=1e-3, atol=1e-3)


def test_recovery_pieces_are_the_exact_level_marginals(mixture):
    from ebmlab.energies.mlp import MLPEnergy
    from ebmlab.objectives.recovery import RecoveryConfig, RecoveryLikelihood
    from tests.oracle.exact import recovery_init_mean, recovery_net_energy

    cfg = RecoveryConfig(T=6, n_steps=15)
    obj = RecoveryLikelihood(MLPEnergy(2, 16, 1, cond_dim=cfg.embed_dim), cfg, (2,))
    net, init = recovery_net_energy(mixture, obj), recovery_init_mean(mixture, obj)
    g = torch.Generator().manual_seed(17)
    pts, xs, _ = make_grid(6.0, 401)
    cell = float(xs[1] - xs[0]) ** 2
    abar, sbar, alpha, sigma = (getattr(obj, k).double() for k in ("abar", "sbar", "alpha", "sigma"))
    for level in range(cfg.T):
        tt = torch.full((N,), level, dtype=torch.long)
        # E_net / s_t^2 is a normalised density of y_t ...
        s2 = obj.energy.step_sq[level].double()
        p = (-net(pts.double(), torch.full((pts.shape[0],), level)) / s2).exp() * cell  # (G,)
        assert float(p.sum()) == pytest.approx(1.0, abs=2e-3)
        # ... whose samples y_t = alpha_{t+1} (abar_t x + sbar_t eps) have its mean
        eps = torch.randn(N, 2, generator=g, dtype=torch.float64)
        y = alpha[level] * (abar[level] * mixture.sample(N, g).double() + sbar[level] * eps)
        grid_mean = (p[:, None] * pts.double()).sum(0)
        assert torch.allclose(y.mean(0), grid_mean, atol=4 * float(y.std()) / math.sqrt(N) + 2e-3)
        # the exact initializer: Tweedie on the marginal of x_{t+1} = abar_{t+1} x + sbar_{t+1} eps
        x_next = y + sigma[level] * torch.randn(N, 2, generator=g, dtype=torch.float64)
        a_next, b2_next = abar[level + 1], sbar[level + 1] ** 2
        _, grad = energy_and_grad(lambda z, a=a_next, b2=b2_next: -mixture.log_prob_affine(z, a, b2), x_next)
        tweedie = x_next - sigma[level] ** 2 * grad
        assert torch.allclose(init(x_next, tt), tweedie, atol=1e-3 * (1 + float(x_next.abs().max())))


def test_time_smoothed_energy_defaults_to_t1(mixture):
    E = TimeSmoothedEnergy(mixture, torch.linspace(0, 1, 6), torch.linspace(1, 2, 6))
    x = torch.randn(10, 2)
    assert torch.allclose(E(x), E(x, t=torch.ones(10, dtype=torch.long)))
    assert torch.allclose(E(x, t=torch.full((10,), 5)), -2.0 * mixture.log_prob_affine(x, 1.0, 1.0))


def test_the_check_accepts_exact_samples_and_rejects_wrong_ones(mixture, ref):
    assert_recovers(mixture.sample(N_SAMPLES, torch.Generator().manual_seed(3)), ref, "exact samples")
    w, m, s = mixture.weights, mixture.means, mixture.stds
    wrong = {"equal weights": ExactMixture([0.25] * 4, m, s),   # fails on mode mass
             "stds x 1.5": ExactMixture(w, m, 1.5 * s),          # fails on precision
             "means x 0.9": ExactMixture(w, 0.9 * m, s)}         # fails on energy distance
    for label, mix in wrong.items():
        with pytest.raises(AssertionError):
            assert_recovers(mix.sample(N_SAMPLES, torch.Generator().manual_seed(3)), ref, label)
