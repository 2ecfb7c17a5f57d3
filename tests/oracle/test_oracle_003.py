"""Paper 003 (CDRL): Alg. 2 + Tweedie (``RecoveryLikelihood.sample``, samplers/recovery.py) with the
exact network energy and an exact initializer.

Exact pieces (exact.py): levels x_t = abar_t x + sbar_t eps (t = 0..T), y_t = alpha_{t+1} x_t; the
network energy is E_net(y, t) = s_t^2 (-log p_{y_t}(y)) (recovery.py: the level-t energy is
E_net / s_t^2), so the Langevin target p(y_t | x_{t+1}) ∝ p_{y_t}(y) N(x_{t+1}; y, sigma_{t+1}^2 I) of
Eq. 3 is exact.

Settings (fixed before looking at results): the paper's (App. A.2-A.3): T = 6 cosine-logSNR levels
(9.8 -> -5.1), K = 15 Langevin steps per level with s_t^2 = 0.054 sbar_t sigma_{t+1}^2 (Eq. 16), the
exact Tweedie step (coefficient 1), x_6 ~ N(0, I).

1. ``test_alg2_tweedie_with_exact_initializer_mean``: the initializer mean is E[y_t | x_{t+1}] (what
   its MSE loss, Eq. 8, converges to) and the proposal adds the library's sigma~_t noise (Eq. 6), the
   posterior std for a *fixed* x_0. The true posterior is wider (x_0 is uncertain, and multimodal
   at the middle levels); K = 15 steps of s_t do not make up the difference: samples are
   under-dispersed (energy distance 4.4x the floor; precision and mode mass hold). Kept as a strict
   expected failure that documents this property of the paper's procedure.
2. ``test_alg2_tweedie_with_exact_posterior_draws`` (added after 1. failed, to tell the plumbing from
   the approximation; same seed and settings): the initializer returns a draw of the exact
   p(y_t | x_{t+1}) and sigma~_t is set to 0, so every level starts exact and Alg. 2's own parts (level
   order, the conditional energy and its scale, y / alpha_{t+1}, Tweedie) are what is tested.

Not tested: the DRL-style start at x_{t+1} (``cooperative=False``). It is not expected to recover the
target at its K: the steps relax a chain towards p(y_t | x_{t+1}) by h (1/V + 1/sigma_{t+1}^2) per step
(h = s_t^2 / 2, V the variance of a y_t component), which at level 0 is ~4e-4 per step with these
s_t, and K' != K rescales the step to keep K s_t^2 fixed (Sec. 4.2), so more steps do not help.
Measured at this seed: precision 0.998, energy distance 8x the floor (K = 15, cosine schedule): the
result measures the step schedule, not the code. (``DRLConfig``'s own schedule fails earlier: its
top level has alpha_6 = 0.023, so the exact y_5 has std ~0.023 while s_5 = 0.23, and unadjusted
Langevin on the exact conditional diverges.)
"""
import pytest
import torch

from ebmlab.energies.mlp import MLPEnergy
from ebmlab.objectives.recovery import RecoveryConfig, RecoveryLikelihood
from tests.oracle.checks import N_SAMPLES, assert_recovers
from tests.oracle.exact import recovery_init_mean, recovery_net_energy, recovery_posterior_sampler


def _objective(mixture):
    cfg = RecoveryConfig(T=6, n_steps=15, denoise=True, denoise_coef=1.0)
    obj = RecoveryLikelihood(MLPEnergy(2, 16, 1, cond_dim=cfg.embed_dim), cfg, (2,))  # net replaced below
    obj.energy.net_energy = recovery_net_energy(mixture, obj)
    return obj


@pytest.mark.xfail(strict=True, reason=(
    "a property of the paper's procedure, not of the code: sigma~_t is the posterior std for a fixed x_0, "
    "narrower than the exact (multimodal) p(y_t | x_{t+1}), and K = 15 steps of Eq. 16's s_t cannot widen it; "
    "measured: precision 0.997 (data 0.990), mode mass within 0.01, energy distance 4.4x the floor (std 0.93 "
    "vs 0.995). The exact-posterior-draws test below passes, so the plumbing is right. Strict: it must "
    "fail until the procedure changes."))
def test_alg2_tweedie_with_exact_initializer_mean(mixture, ref):
    obj = _objective(mixture)
    obj.init_mean = recovery_init_mean(mixture, obj)
    out = obj.sample(N_SAMPLES, generator=torch.Generator().manual_seed(30))
    assert_recovers(out.x, ref, "003 Alg. 2 + Tweedie (exact initializer mean)")


def test_alg2_tweedie_with_exact_posterior_draws(mixture, ref):
    obj = _objective(mixture)
    obj.init_mean = recovery_posterior_sampler(mixture, obj, torch.Generator().manual_seed(31))
    obj.init_std.zero_()  # the proposal is the exact draw itself
    out = obj.sample(N_SAMPLES, generator=torch.Generator().manual_seed(30))
    assert_recovers(out.x, ref, "003 Alg. 2 + Tweedie (exact posterior draws)")



def _toy_objective(mixture, top_marginal: bool):
    """The authors' toy step rule s_t^2 = 0.27 sigma_{t+1}^2 (``step_rule: const``) with the exact network
    energy and the exact initializer mean E[y_t | x_{t+1}], y_t = y_scale_t x_t (y_scale = alpha_{t+1},
    1 at a ``top_marginal`` top level, where x_T = alpha_T y + sigma_T e', i.e. x_T / alpha_T = y + (sigma_T
    / alpha_T) e')."""
    cfg = RecoveryConfig(T=6, n_steps=15, denoise=True, denoise_coef=1.0, step_rule="const", step_coef=0.27,
                         top_marginal=top_marginal)
    obj = RecoveryLikelihood(MLPEnergy(2, 16, 1, cond_dim=cfg.embed_dim), cfg, (2,))
    abar, sbar, ys, alpha, sigma = obj.abar, obj.sbar, obj.y_scale, obj.alpha, obj.sigma
    step_sq = obj.energy.step_sq

    def net_energy(y, t, labels=None):
        return step_sq[t].to(y) * -mixture.log_prob_affine(y, ys[t] * abar[t], (ys[t] * sbar[t]) ** 2)

    def init_mean(x_next, t, labels=None):
        r = (ys[t] / alpha[t]).view(-1, 1)  # 1, or 1 / alpha_T at a marginal top level
        return mixture.posterior_mean(x_next * r, ys[t] * abar[t], (ys[t] * sbar[t]) ** 2,
                                      (sigma[t] * r.view(-1)) ** 2).to(x_next)
    obj.energy.net_energy, obj.init_mean = net_energy, init_mean
    return obj


@pytest.mark.xfail(strict=True, reason=(
    "measured: with the conditional top level (y_5 = alpha_6 x_5, alpha_6 = 0.24, so y_5 has variance ~0.06) "
    "the toy step s_5^2 = 0.27 sigma_6^2 = 0.25 is past Langevin's stability limit (h L ~ 2.3 > 2): the "
    "chains blow up (sample std 36 against 1). The authors pair this step rule with the marginal top level "
    "(next test). Strict: it documents why the toy rule needs ``top_marginal``."))
def test_toy_step_rule_with_a_conditional_top_level(mixture, ref):
    out = _toy_objective(mixture, top_marginal=False).sample(N_SAMPLES, generator=torch.Generator().manual_seed(30))
    assert_recovers(out.x, ref, "003 Alg. 2 + Tweedie (toy step rule, conditional top level)")


def test_toy_step_rule_with_the_marginal_top_level(mixture, ref):
    """Issue 17: the authors' toy set-up (``step_rule: const`` 0.27, ``top_marginal``) with the exact
    energies and the exact initializer mean: Alg. 2 + Tweedie recovers the target."""
    out = _toy_objective(mixture, top_marginal=True).sample(N_SAMPLES, generator=torch.Generator().manual_seed(30))
    assert_recovers(out.x, ref, "003 Alg. 2 + Tweedie (toy step rule, marginal top level)")
