"""A fifth mutation round, on the generation path (``src/ebmlab/samplers/``; docs/testing.md "A fifth mutation round:
the samplers"). Each test asserts a value written down from the formula or the docstring's promise (hand-computed
cases, exact Gaussian targets), not the code's output; each failed under the one-line mutation(s) named in its
docstring, which the suite before it let through.
"""
from __future__ import annotations

import math

import pytest
import torch

from ebmlab.samplers import ais as ais_mod
from ebmlab.samplers import langevin, mala
from ebmlab.samplers.base import ChainState, init, run_chain
from ebmlab.samplers.controller import StepSizeController


def _quad_energy(x):
    """E(x) = |x|^2 / 2 (B,)."""
    return 0.5 * x.flatten(1).pow(2).sum(1)


# ----- mala.py ------------------------------------------------------------------------------------------------------
def _log_ratio_by_hand(x, xp, eps, sigma, temperature):
    """log MH ratio for E = x^2/2 in 1-D, written from the module docstring: -(E(x') - E(x))/T + log q(x|x') -
    log q(x'|x) with q(a|b) = N(b - eps E'(b), sigma^2)."""
    def log_q(a, b):
        return -((a - (b - eps * b)) ** 2) / (2 * sigma ** 2)
    return -(0.5 * xp * xp - 0.5 * x * x) / temperature + log_q(x, xp) - log_q(xp, x)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_mala_log_accept_ratio_without_the_draw_matches_a_hand_computed_case(temperature):
    """``log_accept_ratio(state, prop, eps, sigma, T)`` (no z: the proposal densities recomputed) for E = x^2/2,
    x = 1 -> x' = 0.3, eps = 0.2, sigma = 0.5. Mutations: the density's variance sigma instead of sigma^2 (mala11);
    the two densities' gradients swapped (mala12); the target's energy difference reversed (mala13); the drift's
    sign in the density (mala14); the temperature left out (mala16)."""
    x, xp, eps, sigma = 1.0, 0.3, 0.2, 0.5
    s = init(_quad_energy, torch.tensor([[x]], dtype=torch.float64))
    p = init(_quad_energy, torch.tensor([[xp]], dtype=torch.float64))
    e = torch.tensor([[eps]], dtype=torch.float64)
    sg = torch.tensor([[sigma]], dtype=torch.float64)
    got = mala.log_accept_ratio(s, p, e, sg, temperature)
    assert got.item() == pytest.approx(_log_ratio_by_hand(x, xp, eps, sigma, temperature), rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_mala_log_accept_ratio_with_the_draw_agrees_with_the_recomputed_densities(temperature):
    """The z path (the fused product) equals the hand formula for the z that produced x'."""
    x, eps, sigma, z = 1.0, 0.2, 0.5, -0.7
    xp = x - eps * x + sigma * z
    s = init(_quad_energy, torch.tensor([[x]], dtype=torch.float64))
    p = init(_quad_energy, torch.tensor([[xp]], dtype=torch.float64))
    e = torch.tensor([[eps]], dtype=torch.float64)
    sg = torch.tensor([[sigma]], dtype=torch.float64)
    got = mala.log_accept_ratio(s, p, e, sg, temperature, torch.tensor([[z]], dtype=torch.float64))
    assert got.item() == pytest.approx(_log_ratio_by_hand(x, xp, eps, sigma, temperature), rel=1e-12)


# ----- controller.py ------------------------------------------------------------------------------------------------
def test_robbins_monro_moves_the_log_step_by_rate_times_the_shortfall_per_group():
    """Three groups: group 0 accepts everything, group 1 nothing, group 2 is not visited. log eps_g += rate (a_g -
    0.574) (the default target of the docstring), unvisited groups unchanged. Mutations: the direction reversed
    (ctl2), the target 0.6 (ctl3), unvisited groups moved (ctl7)."""
    c = StepSizeController(3, init_step=0.1, rate=0.05)
    c.update(torch.tensor([True, True, False]), torch.tensor([0, 0, 1]))
    want = [math.log(0.1) + 0.05 * (1 - 0.574), math.log(0.1) + 0.05 * (0 - 0.574), math.log(0.1)]
    assert c.log_step.tolist() == pytest.approx(want, abs=1e-6)


def test_robbins_monro_one_group_goes_up_on_acceptance_and_is_clamped():
    """One group: all accepted -> the step grows by exp(rate (1 - 0.574)); it never passes max_step, and with
    several groups neither. Mutations: the one-group direction (ctl1), the clamps left out (ctl8, ctl9)."""
    c = StepSizeController(1, init_step=0.1, rate=0.05)
    c.update(torch.tensor([True, True]), torch.tensor([0, 0]))
    assert c.log_step.item() == pytest.approx(math.log(0.1) + 0.05 * 0.426, abs=1e-6)
    for n_groups in (1, 2):
        c = StepSizeController(n_groups, init_step=0.1, rate=5.0, max_step=0.2, min_step=0.05)
        c.update(torch.ones(2, dtype=torch.bool), torch.tensor([0, n_groups - 1]))
        assert c.log_step.exp().tolist() == pytest.approx([0.2] * n_groups, rel=1e-5)
        c.update(torch.zeros(2, dtype=torch.bool), torch.tensor([0, n_groups - 1]))
        c.update(torch.zeros(2, dtype=torch.bool), torch.tensor([0, n_groups - 1]))
        assert c.log_step.exp().tolist() == pytest.approx([0.05] * n_groups, rel=1e-5)


def test_paper004_rule_shrinks_in_proportion_to_the_running_shortfall_and_never_grows():
    """Paper 004's rule, target 0.67, smoothing 0.9: first step sets a = its acceptance; a full acceptance leaves the
    step alone; then a = 0.9 a + 0.1 (this step); a group not visited keeps its NaN average and its step.
    Mutations: the clamp on the wrong side (ctl4), the average's weights swapped (ctl5), unvisited groups'
    averages overwritten (ctl6)."""
    c = StepSizeController(2, init_step=0.1, rate=0.1, rule="paper004")
    g0 = torch.tensor([0, 0])
    c.update(torch.tensor([True, True]), g0)                 # a = 1: no change
    assert c.log_step.tolist() == pytest.approx([math.log(0.1)] * 2, abs=1e-6)
    assert math.isnan(c.accept_avg[1].item())
    c.update(torch.tensor([False, False]), g0)               # a = 0.9
    assert c.accept_avg[0].item() == pytest.approx(0.9, abs=1e-6)
    assert c.log_step[0].item() == pytest.approx(math.log(0.1), abs=1e-6)
    for _ in range(3):                                       # a = 0.81, 0.729, 0.6561
        c.update(torch.tensor([False, False]), g0)
    assert c.accept_avg[0].item() == pytest.approx(0.6561, abs=1e-5)
    assert c.log_step[0].item() == pytest.approx(math.log(0.1) + 0.1 * (0.6561 - 0.67), abs=1e-6)
    assert math.isnan(c.accept_avg[1].item()) and c.log_step[1].item() == pytest.approx(math.log(0.1), abs=1e-6)


# ----- base.py / langevin.py ----------------------------------------------------------------------------------------
def _flat(x, **_):
    """A constant energy (zero gradient): the Langevin chain is a pure random walk x + sum sigma_k z_k."""
    return 0.0 * x.flatten(1).sum(1)


def test_a_per_step_noise_schedule_uses_row_k_at_step_k_and_the_default_noise_is_sqrt_2_eps_t():
    """Zero gradient, given draws z_k = 1: x_K = x_0 + sum_k sigma_k. A (K,) schedule [1, 2, 3] gives +6 (row k at
    step k); no noise_scale gives K sqrt(2 eps T). Mutations: the schedule read one row late (base4), the default
    noise 2 eps T / sqrt(2 eps / T) / no T on the controller path (base1, base2, base3)."""
    x0 = torch.zeros(2, 1)
    z = torch.ones(3, 2, 1)
    x, _ = run_chain(langevin, _flat, x0, 3, 0.5, noise_scale=torch.tensor([1.0, 2.0, 3.0]), noises=z)
    assert x.flatten().tolist() == pytest.approx([6.0, 6.0])
    x, _ = run_chain(langevin, _flat, x0, 3, 0.5, temperature=2.0, noises=z)
    assert x.flatten().tolist() == pytest.approx([3 * math.sqrt(2 * 0.5 * 2.0)] * 2, rel=1e-6)
    # the controller's path (sqrt(eps 2 T) built per step from the controller): MALA on the flat energy has log
    # ratio exactly 0 (symmetric proposal), so every move is taken and paper 004's rule keeps the step
    ctl = StepSizeController(1, init_step=0.5, rule="paper004")
    x, info = run_chain(mala, _flat, x0, 3, None, controller=ctl, temperature=2.0, noises=z)
    assert info.accept_rate.tolist() == [1.0, 1.0, 1.0]
    assert x.flatten().tolist() == pytest.approx([3 * math.sqrt(2 * 0.5 * 2.0)] * 2, rel=1e-6)


def test_run_chain_takes_exactly_n_steps_and_returns_detached_points():
    """A K-step chain calls back K times, reports K entries and (grad="none") detached points; fixed-step light
    chains (the fast path) take K steps too. Mutations: one step fewer in the loop or the fast path (base5, lan3)."""
    for diagnostics in ("light", "full"):
        calls = []
        cb = (lambda i, s, info: calls.append(i)) if diagnostics == "full" else None
        x, info = run_chain(langevin, _quad_energy, torch.ones(4, 2), 5, 0.01, callback=cb, diagnostics=diagnostics)
        assert info.energy.shape == (5,)
        if cb is not None:
            assert calls == [0, 1, 2, 3, 4]
    # exact: zero noise, E = x^2/2: x_K = (1 - eps)^K x_0
    x, _ = run_chain(langevin, _quad_energy, torch.ones(3, 2), 5, 0.1, noise_scale=1e-30)
    assert x.flatten().tolist() == pytest.approx([0.9 ** 5] * 6, rel=1e-6)


# ----- diagnostics.py -----------------------------------------------------------------------------------------------
def test_full_diagnostics_report_the_mean_euclidean_gradient_norm_and_per_step_step_sizes():
    """E = x^2/2 at x_0 rows (3, 4) and (0, 1): the gradient is x, norms 5 and 1, mean 3 before the first step.
    A controller's step size per step (a stride-0 view of one value) is reported step by step. Mutations: the
    squared norm (diag3), one norm for all chains (diag4), every step reported with the first step's size (diag2),
    step means taken across steps (diag1)."""
    x0 = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    _, info = run_chain(langevin, _quad_energy, x0, 1, 0.01, diagnostics="full")
    assert info.grad_norm.tolist() == pytest.approx([3.0])
    assert info.energy.tolist() == pytest.approx([(25 + 1) / 4])
    seen = []
    ctl = StepSizeController(1, init_step=0.5, rate=0.5)
    _, info = run_chain(mala, _flat, torch.zeros(3, 2), 4, None, controller=ctl,
                        callback=lambda i, s, inf: seen.append(inf.step_size.flatten()[0].item()))
    assert info.step_size.tolist() == pytest.approx(seen, rel=1e-6)
    assert seen[1] == pytest.approx(0.5 * math.exp(0.5 * (1 - 0.574)), rel=1e-5)  # all accepted: it grew


# ----- base.py: count="accepted" -----------------------------------------------------------------------------------
def test_count_accepted_runs_until_every_chain_has_n_accepted_moves():
    """paper 004: proposals continue until every chain has n accepted moves (not just one chain, not n + 1).
    Counted from the per-chain acceptances of the callback. Mutations: stopping when any chain is done (base7), at
    n + 1 (base6), the accepted count one step short (base10)."""
    torch.manual_seed(0)
    acc = []
    g = torch.Generator().manual_seed(3)
    x, info = run_chain(mala, _quad_energy, torch.randn(16, 2, generator=g), 6, 1.5, count="accepted",
                        check_every=1, generator=g, callback=lambda i, s, inf: acc.append(inf.accept_rate.clone()))
    per_chain = torch.stack(acc).sum(0)
    assert int(per_chain.min()) >= 6
    # it stopped at the first proposal after which all chains had 6: one proposal earlier some chain had < 6
    before = torch.stack(acc[:-1]).sum(0)
    assert int(before.min()) < 6
    assert len(acc) == info.accept_rate.shape[0] > 6


def test_count_accepted_stops_at_the_cap_with_a_warning():
    """max_proposals=8 with chains that rarely accept: exactly 8 proposals (the cap, not 7) and a warning.
    Mutation: the cap one short (base8)."""
    g = torch.Generator().manual_seed(0)
    with pytest.warns(RuntimeWarning, match="fewer than"):
        _, info = run_chain(mala, _quad_energy, 3 * torch.ones(8, 2), 6, 50.0, count="accepted", max_proposals=8,
                            check_every=1, generator=g)
    assert info.accept_rate.shape[0] == 8


# ----- ais.py -------------------------------------------------------------------------------------------------------
def _reference_energy(s):
    """E(x) = |x|^2 / (2 s^2): the AIS reference itself, so every stage's target is the same N(0, s^2 I)."""
    return lambda x: 0.5 * x.flatten(1).pow(2).sum(1) / s ** 2


@pytest.mark.parametrize("init_std", [1.0, 2.0])
def test_ais_to_its_own_reference_has_zero_weights_after_moves_and_rejections(init_std):
    """With E equal to the reference |x|^2/(2 s^2) every increment -(beta_k - beta_{k-1}) (E - |x|^2/(2 s^2)) is 0,
    whatever the moves do (accepted or rejected), so the log weights stay 0 and the chains stay N(0, s^2).
    Mutations: the reference's energy without the 1/2 (ais5) or with 1/s instead of 1/s^2 (ais14); the reference
    energy not kept on a rejection (ais12)."""
    g = torch.Generator().manual_seed(0)
    x0 = init_std * torch.randn(64, 3, generator=g)
    ctl = StepSizeController(1, init_step=2.0 * init_std ** 2, rate=0.0)   # a large step: many rejections
    res = ais_mod.ais(_reference_energy(init_std), x0, ais_mod.linear_betas(10), ctl, init_std=init_std, generator=g)
    assert 0.05 < res.info.accept_rate.mean().item() < 0.95
    assert res.log_weights.abs().max().item() < 1e-4


def test_ais_weights_with_frozen_chains_are_minus_the_energy_gap_whatever_the_betas():
    """A step of 1e-12 leaves the points where they start, so the increments sum to -(sum dbeta) (E(x_0)/T -
    |x_0|^2/2) = -(E(x_0)/T - |x_0|^2/2) for any increasing betas ending at 1 (E = 3 |x|^2 / 2 here).
    Mutations: the increment's sign (ais1), E T instead of E / T (ais2), the first stage's beta_0 = beta_1
    (ais3)."""
    x0 = torch.tensor([[1.0, 0.0], [0.5, -1.0]])
    energy = lambda x: 1.5 * x.pow(2).sum(1)   # noqa: E731
    for temperature in (1.0, 2.0):
        want = -(1.5 * x0.pow(2).sum(1) / temperature - 0.5 * x0.pow(2).sum(1))
        for betas in (torch.tensor([0.25, 0.5, 1.0]), torch.tensor([1.0])):
            ctl = StepSizeController(1, init_step=1e-12, rate=0.0, min_step=1e-14)
            res = ais_mod.ais(energy, x0, betas, ctl, temperature=temperature, generator=torch.Generator().manual_seed(0))
            assert res.log_weights.tolist() == pytest.approx(want.tolist(), abs=1e-5)


def test_linear_betas_and_the_stage_energy_gradient():
    """linear_betas(4) = 1/4, 2/4, 3/4, 1; the stage energy beta E/T + (1 - beta) |x|^2/(2 s^2) has gradient
    beta dE/dx / T + (1 - beta) x / s^2. Mutations: betas starting at 0 (ais4), the reference's gradient without
    1/s^2 (ais6)."""
    assert ais_mod.linear_betas(4).tolist() == [0.25, 0.5, 0.75, 1.0]
    x = torch.tensor([[2.0]])
    s2 = 4.0
    sched = ais_mod._schedule(torch.tensor([0.25]), 1.0 / s2)
    e_s, g_s = ais_mod._stage(torch.tensor([3.0]), torch.tensor([[5.0]]), x, torch.tensor([0.5 * 4.0 / s2]),
                              sched.beta[0], sched.rest[0], sched.rest_iv[0], 1.0)
    assert e_s.item() == pytest.approx(0.25 * 3.0 + 0.75 * 0.5)
    assert g_s.item() == pytest.approx(0.25 * 5.0 + 0.75 * 2.0 / s2)


def test_ais_moves_along_the_stage_gradient_leave_the_target_invariant():
    """E = 2 |x|^2 (target N(0, 1/4)) from N(0, 1) over 30 stages of MALA with a moderate step: the weighted
    second moment is 1/4 and the unweighted chains' is between 1/4 and 1. A move along the raw dE/dx while the
    MH ratio assumes the stage gradient (ais15) breaks the invariance (the chains collapse)."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4000, 1, generator=g)
    ctl = StepSizeController(1, init_step=0.3, rate=0.05)
    res = ais_mod.ais(lambda x: 2.0 * x.pow(2).sum(1), x0, ais_mod.linear_betas(30), ctl, generator=g)
    w = ais_mod.normalized_weights(res.log_weights)
    m2 = (w * res.x[:, 0] ** 2).sum().item()
    assert m2 == pytest.approx(0.25, rel=0.1)


def test_resampling_keeps_the_mean_weight_and_is_skipped_above_the_threshold():
    """_resample sets every log weight to log(mean w) = logsumexp - log B; equal weights (ESS = B) never trigger a
    resample (the run equals the plain AIS run draw for draw). Mutations: the mean without - log B (ais7), the
    ESS test reversed (ais10)."""
    lw = torch.tensor([0.0, math.log(3.0)])
    *_, new = ais_mod._resample(lw, torch.Generator().manual_seed(0), torch.zeros(2, 1))
    assert new.tolist() == pytest.approx([math.log(2.0)] * 2)
    runs = []
    for rb in (None, 0.5):
        g = torch.Generator().manual_seed(0)
        x0 = torch.randn(32, 2, generator=g)
        ctl = StepSizeController(1, init_step=0.5)
        runs.append(ais_mod.ais(_reference_energy(1.0), x0, ais_mod.linear_betas(5), ctl, generator=g,
                                resample_below=rb).x)
    assert torch.equal(runs[0], runs[1])


# ----- annealed.py --------------------------------------------------------------------------------------------------
def test_per_level_controller_keeps_an_acceptance_ema_only_for_visited_levels():
    """Levels 0, 1 visited, 2 not: the first update sets the EMA to the acceptance, the next one mixes ema * old +
    (1 - ema) * new; level 2 stays NaN. Mutations: unvisited levels overwritten (ann1), the EMA weights swapped
    (ann2)."""
    from ebmlab.samplers.annealed import PerLevelController
    c = PerLevelController(3, 0.1, ema=0.9)
    c.update(torch.tensor([True, True, False, False]), torch.tensor([0, 0, 1, 1]))
    c.update(torch.tensor([False, False, True, True]), torch.tensor([0, 0, 1, 1]))
    assert c.accept_ema[:2].tolist() == pytest.approx([0.9, 0.1])
    assert math.isnan(c.accept_ema[2].item())


def test_simulated_annealing_visits_the_levels_in_order_and_reports_each_stages_last_step():
    """The energy records the levels it is called with: Alg. 3 runs t = 0, 1, 2 in that order; a stage's step size is
    its last step's (the one carried on). Mutations: the levels reversed (ann6), the stage's first step reported
    (ann4)."""
    from ebmlab.samplers.annealed import simulated_annealing
    calls = []

    def energy(x, t):
        calls.append(int(t[0]))
        return 0.5 * x.pow(2).sum(1) * (1.0 + t.float())
    x0 = torch.zeros(4, 2)
    _, info = simulated_annealing(energy, x0, [0, 1, 2], 3, init_step=0.1, generator=torch.Generator().manual_seed(0))
    order = [c for i, c in enumerate(calls) if i == 0 or c != calls[i - 1]]
    assert order == [0, 1, 2]
    assert info["level"].tolist() == [0, 1, 2]
    steps = info["step_size"]                    # (9,) per step
    assert info["stage_step_size"].tolist() == pytest.approx(steps[2::3].tolist())


def test_soft_annealing_reports_the_level_of_each_stage():
    """t(n) = round(n (T - 1) / (N - 1)): stages 0..3 of T = 7 are at levels 0, 2, 4, 6. Mutation: stage n reported
    at t(n + 1) (ann5)."""
    from ebmlab.samplers.annealed import soft_annealing

    def energy(x, log_weights):
        return 0.5 * x.pow(2).sum(1)
    _, info = soft_annealing(energy, torch.zeros(2, 1), 7, 4, 1, init_step=0.1,
                             generator=torch.Generator().manual_seed(0))
    assert info["level"].tolist() == [0, 2, 4, 6]


# ----- recovery.py --------------------------------------------------------------------------------------------------
def _levels(T=2, n_steps=4):
    from ebmlab.samplers.recovery import RecoveryLevels
    return RecoveryLevels(alpha=torch.tensor([0.5, 0.8]), sigma_sq=torch.tensor([0.25, 0.5]),
                          step_sq=torch.tensor([0.04, 0.09]), init_std=None, abar0=torch.tensor(0.5),
                          sbar0=torch.tensor(0.3), n_steps=n_steps)


def test_recovery_step_sizes_conditional_energy_and_tweedie_by_hand():
    """s_t = sqrt(s_t^2), times sqrt(K / K'); E(y) = E_net(y)/s_t^2 + |y - x|^2 / (2 sigma^2); Tweedie (x - c sbar^2
    dE_0/dx) / abar with E_0(x) = E_net(alpha_1 x) / s_0^2. Mutations: the step not square-rooted (rec10), the
    K'/K ratio inverted (rec2), the quadratic without the 2 (rec3), E_net times s^2 (rec4), sbar not squared
    (rec7), alpha_1 left out (rec9)."""
    from ebmlab.samplers.recovery import conditional_energy, step_sizes, tweedie
    lv = _levels()
    t = torch.tensor([1])
    assert step_sizes(lv, t, 4).tolist() == pytest.approx([0.3])
    assert step_sizes(lv, t, 16).tolist() == pytest.approx([0.15])
    net = lambda y, t: 2.0 * y.flatten(1).sum(1)   # noqa: E731  (dE_net/dy = 2)
    e = conditional_energy(net, torch.tensor([[1.0]]), t, lv.step_sq, lv.sigma_sq)(torch.tensor([[3.0]]))
    assert e.item() == pytest.approx(6.0 / 0.09 + 4.0 / (2 * 0.5))
    out = tweedie(net, torch.tensor([[1.0]]), lv, coef=1.0)
    # dE_0/dx = 2 alpha_1 / s_0^2 = 2 * 0.5 / 0.04 = 25
    assert out.item() == pytest.approx((1.0 - 0.09 * 25.0) / 0.5)


def test_reverse_process_runs_the_levels_down_with_step_s2_over_2_and_divides_by_alpha():
    """A flat network energy and sigma^2 huge: the conditional energy is ~0, so with the initializer's mean = x
    (no proposal noise) each level is K Langevin steps of noise std s_t (step s_t^2 / 2, noise sqrt(2 step) =
    s_t) and then x / alpha_{t+1}; levels are visited T-1 then 0. Mutations: step s^2 (rec1: noise s sqrt 2),
    x times alpha (rec5), the levels upward (rec6)."""
    from ebmlab.samplers.recovery import RecoveryLevels, reverse_process
    lv = RecoveryLevels(alpha=torch.tensor([0.5, 0.8]), sigma_sq=torch.tensor([1e12, 1e12]),
                        step_sq=torch.tensor([0.04, 0.09]), init_std=None, abar0=torch.tensor(0.5),
                        sbar0=torch.tensor(0.3), n_steps=1)
    seen = []

    def net(y, t):
        seen.append(int(t[0]))
        return 0.0 * y.flatten(1).sum(1)
    x_T = torch.zeros(20000, 1)
    x, _, _ = reverse_process(net, lambda x, t: x, x_T, lv, generator=torch.Generator().manual_seed(0))
    assert [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]] == [1, 0]
    # level 1: N(0, 0.09), / 0.8; level 0: + N(0, 0.04), / 0.5  ->  var = (0.09 / 0.64 + 0.04) / 0.25
    want = (0.09 / 0.64 + 0.04) / 0.25
    assert x.var().item() == pytest.approx(want, rel=0.05)


# ----- implicit_sweep.py --------------------------------------------------------------------------------------------
def test_implicit_noise_schedule_and_sweep_order():
    """noise_schedule(1, 2, 3) = 1, 0.8, ..., 0 (linear to 0 at the last step); the sweep runs t = T..1, each with
    the noise stds of steps (T - t) K .. (T - t) K + K - 1, and eta/2 as the step. Mutations: the schedule
    / n instead of / (n - 1) (imp1), step eta (imp2), t = T-1..0 (imp3), the stage offset (imp4)."""
    from ebmlab.samplers.implicit_sweep import implicit_sweep, noise_schedule
    assert noise_schedule(1.0, 2, 3).tolist() == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
    ts = []

    def energy(x, t):
        ts.append(int(t[0]))
        return 0.5 * x.pow(2).sum(1)
    sched = torch.tensor([0.0, 0.0, 1.0, 0.0])
    z = torch.ones(4, 2, 1)
    x, _, _ = implicit_sweep(energy, torch.ones(2, 1), 2, 2, 0.2, sched, noises=z)
    assert sorted(set(ts), reverse=True) == [2, 1] and ts[0] == 2 and ts[-1] == 1
    # x <- 0.9 x twice, then 0.9 x + 1, then 0.9 x
    assert x.flatten().tolist() == pytest.approx([(0.9 ** 3 + 1.0) * 0.9] * 2, rel=1e-6)


# ----- augmented.py -------------------------------------------------------------------------------------------------
def test_augmented_langevin_rounds_cover_exactly_n_steps():
    """5 steps in rounds of 2: rounds of 2, 2, 1 (the last shorter), an augmentation before each. Mutations: every
    round full length (augd1), the partial round dropped (augd2)."""
    from ebmlab.samplers.augmented import augmented_langevin
    rounds = []

    def aug(x, g):
        rounds.append(1)
        return x
    _, info = augmented_langevin(_quad_energy, torch.ones(2, 1), 5, 2, 0.01, 0.0 + 1e-12, augment=aug)
    assert len(rounds) == 3 and info.energy.shape == (5,)


def test_one_ais_stage_moves_by_the_stage_drift_and_noise_sqrt_2_eps_at_any_temperature():
    """One stage (beta = 1), T = 2, E = x^2/2: the stage energy is E/T = x^2/4 (gradient x/2) and its target
    exp(-x^2/4) already holds the temperature, so the proposal is x - eps x/2 + sqrt(2 eps) z (module docstring:
    "noise sqrt(2 eps)"). The draws z (then u) are replayed from the same seed; every chain that moved sits exactly
    on that proposal. Mutations: noise sqrt(2 eps T) (ais11), the move along the raw dE/dx (ais15)."""
    eps, temperature = 0.1, 2.0
    x0 = torch.linspace(-2.0, 2.0, 16).view(16, 1)
    ctl = StepSizeController(1, init_step=eps, rate=0.0)
    res = ais_mod.ais(lambda x: 0.5 * x.pow(2).sum(1), x0, torch.tensor([1.0]), ctl, temperature=temperature,
                      generator=torch.Generator().manual_seed(5))
    z = torch.empty_like(x0).normal_(generator=torch.Generator().manual_seed(5))
    prop = x0 - eps * x0 / temperature + math.sqrt(2 * eps) * z
    moved = (res.x != x0).flatten()
    assert moved.sum() >= 8
    assert res.x[moved].flatten().tolist() == pytest.approx(prop[moved].flatten().tolist(), abs=1e-5)


def test_flat_norm_is_per_example():
    """flat_norm (B, ...) -> (B,) Euclidean norms (objectives/implicit_diffusion.py uses it per example).
    Mutation: every example given the batch's mean norm (diag4; the chain's mean gradient norm is unchanged by it)."""
    from ebmlab.samplers.diagnostics import flat_norm
    assert flat_norm(torch.tensor([[[3.0, 4.0]], [[0.0, 1.0]]])).tolist() == pytest.approx([5.0, 1.0])


def test_run_chain_returns_detached_points_from_a_start_with_a_graph():
    """grad="none": "Returns the final points (detached unless grad != none)", also for a zero-step chain from a
    caller's ``start`` whose points carry a graph. Mutation: the final detach left out (base12)."""
    x = torch.ones(2, 1, requires_grad=True)
    xs = 2.0 * x
    st = ChainState(xs, _quad_energy(xs), xs)
    out, _ = run_chain(langevin, _quad_energy, xs, 0, 0.1, start=st)
    assert not out.requires_grad


def test_a_projected_chain_evaluates_the_final_point_when_final_energy_is_kept():
    """With ``project`` the energy is recomputed at the projected point after every step, the last one included
    unless final_energy=False: the callback's final state carries E at the projected point. Mutation: the final
    projected point never evaluated (base13)."""
    states = []
    proj = lambda x: x.clamp(-0.5, 0.5)   # noqa: E731
    run_chain(langevin, _quad_energy, torch.ones(3, 2), 2, 0.01, project=proj,
              callback=lambda i, s, info: states.append(s))
    last = states[-1]
    assert last.energy is not None
    assert last.energy.tolist() == pytest.approx(_quad_energy(last.x).tolist())
    states.clear()
    run_chain(langevin, _quad_energy, torch.ones(3, 2), 2, 0.01, project=proj, final_energy=False,
              callback=lambda i, s, info: states.append(s))
    assert states[-1].energy is None and states[0].energy is not None


def test_systematic_resampling_of_equal_weights_keeps_every_chain_even_at_u_zero(monkeypatch):
    """Equal weights, n = B: "every chain exactly once" for every U in [0, 1), U = 0 included (the positions j / n
    then fall exactly on the CDF's steps). Mutation: ``searchsorted(..., right=False)``, which maps j / n to chain
    j - 1 there and drops the last chain (ais9; the other U differ from it only on a null set)."""
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros(1))
    idx = ais_mod.systematic_resample(torch.full((4,), 0.25), 4)
    assert idx.tolist() == [0, 1, 2, 3]


# ----- the mutants the helper listed but did not run (run afterwards against the same test sets) -------------------
# Each test below failed under the named mutation, which those sets let through. Equivalent: recovery.reverse_process's
# projection of the proposal (rec11) -- ``refine`` hands ``project`` to ``run_chain``, which projects the start itself.

def _flat(x, **_):
    """E(x) = 0 with a graph (B,): every MALA proposal is accepted (a symmetric proposal, no energy change)."""
    return 0.0 * x.flatten(1).sum(1)


def test_an_unevaluated_langevin_step_is_detached_without_create_graph():
    """lan8: the final (unevaluated) step handed back the graph of the incoming x."""
    x = torch.randn(4, 2, requires_grad=True)
    state = ChainState(x, None, torch.ones_like(x))
    new, _ = langevin.step(_flat, state, 0.1, evaluate=False)
    assert not new.x.requires_grad and new.energy is None
    kept, _ = langevin.step(_flat, state, 0.1, evaluate=False, create_graph=True)
    assert kept.x.requires_grad


def test_counting_accepted_moves_stops_at_the_cap_exactly():
    """base9: the last round of proposals ran ``check_every`` steps past ``max_proposals``."""
    def sharp(x, **_):
        return 1e4 * x.pow(2).sum(1)  # step 1: every proposal rejected
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="3 of 3 chains made fewer than 2 accepted moves within the cap of 5"):
        _, info = run_chain(mala, sharp, x, 2, 1.0, count="accepted", max_proposals=5, check_every=10)
    assert info.accept_rate.numel() == 5


def test_chains_that_made_their_moves_exactly_at_the_cap_are_not_warned_about(recwarn):
    """base11: a chain with exactly n accepted moves was counted short when the cap was reached."""
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    _, info = run_chain(mala, _flat, x, 2, 0.1, count="accepted", max_proposals=2)
    assert info.accept_rate.tolist() == [1.0, 1.0]
    assert not [w for w in recwarn if "accepted moves" in str(w.message)]


def test_the_start_is_projected():
    """base15: ``project`` applied after each step only, so a chain of no steps returned an unprojected start."""
    x = torch.full((2, 3), 5.0)
    out, _ = run_chain(langevin, _flat, x, 0, 0.1, project=lambda v: v.clamp(-1.0, 1.0))
    assert torch.equal(out, torch.ones(2, 3))


def test_a_non_finite_sample_with_a_finite_energy_is_refused():
    """base16: only the energy was checked."""
    from ebmlab.samplers.base import check_finite_chain
    with pytest.raises(FloatingPointError, match="non-finite"):
        check_finite_chain(ChainState(torch.tensor([[0.0, float("inf")]]), torch.zeros(1), None))
    check_finite_chain(ChainState(torch.zeros(1, 2), None, None))  # no energy (an unevaluated last step): fine


def test_a_controllers_copy_keeps_its_step_bounds():
    """ctl10: ``copy`` dropped min_step/max_step (back to the defaults)."""
    c = StepSizeController(1, 0.1, min_step=1e-3, max_step=0.5).copy()
    assert (c.log_min, c.log_max) == (math.log(1e-3), math.log(0.5))


@pytest.mark.parametrize("target", [0.0, 1.0])
def test_a_target_acceptance_of_zero_or_one_is_refused(target):
    """ctl12: the bounds of (0, 1) accepted (1: the step only shrinks; 0: only grows)."""
    with pytest.raises(ValueError, match=r"lie in \(0, 1\)"):
        StepSizeController(1, 0.1, target)


def test_ais_refuses_betas_that_do_not_end_at_one():
    """ais13: betas ending below 1 annealed to a tempered target E/T' silently."""
    ctrl = StepSizeController(1, 0.1)
    with pytest.raises(ValueError, match="ending at 1"):
        ais_mod.ais(_flat, torch.zeros(2, 2), torch.tensor([0.5, 0.9]), ctrl)


def _info(accept: float, steps: int):
    from ebmlab.samplers.base import ChainInfo
    full = torch.full((steps,), accept)
    return ChainInfo(full, torch.full((steps,), 0.1), full, full)


def test_stage_recorder_counts_adapt_steps_keeps_the_listed_snapshots_and_averages_the_last_tenth():
    """ann3 (floor for ceil in the last 10 %), ann7 (the sampling steps counted as adapt steps), ann9 (the snapshot
    of stage i kept under i + 1)."""
    from ebmlab.samplers.annealed import StageRecorder
    rec = StageRecorder(15, keep=[1])
    for i in range(15):
        rec.record(i, i, _info(0.5, 3), _info(i / 14, 5), torch.full((2, 1), float(i)))
    info = rec.info()
    assert int(info["n_adapt_steps"]) == 45
    assert set(info["snapshots"]) == {1} and torch.equal(info["snapshots"][1], torch.ones(2, 1))
    assert float(info["accept_rate_last10"]) == pytest.approx((13 / 14 + 1.0) / 2)  # ceil(1.5) = 2 stages


def test_annealing_adapts_with_its_adapt_rate():
    """ann8: the controller built with the default rate 0.05 instead of ``adapt_rate``."""
    from ebmlab.samplers.annealed import simulated_annealing
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    _, info = simulated_annealing(lambda x, t: _flat(x), x0, [0], 3, init_step=0.1, target=0.6, adapt_rate=0.5)
    steps = info["step_size"]
    assert info["accept_rate"].tolist() == [1.0, 1.0, 1.0]
    assert float(steps[1] / steps[0]) == pytest.approx(math.exp(0.5 * (1.0 - 0.6)), rel=1e-5)


def test_the_recovery_proposal_has_the_initializers_std():
    """rec8: the variance used as the standard deviation."""
    from ebmlab.samplers.recovery import propose
    mean, t = torch.zeros(3, 2), torch.tensor([0, 1, 1])
    y = propose(mean, t, torch.tensor([0.5, 0.25]), torch.Generator().manual_seed(3))
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(y, torch.tensor([0.5, 0.25, 0.25]).view(3, 1) * z)


def test_a_sweep_of_one_step_ends_without_noise():
    """imp5: the single step of T*K = 1 carried the full noise sigma."""
    from ebmlab.samplers.implicit_sweep import noise_schedule
    assert noise_schedule(0.5, 1, 1).tolist() == [0.0]
    assert noise_schedule(0.5, 2, 2)[-1] == 0.0


def test_augmented_langevin_clips_the_final_samples():
    """augd3: ``clip`` not applied to what is returned."""
    from ebmlab.samplers.augmented import augmented_langevin
    x0 = torch.full((2, 3), 4.0)
    x, info = augmented_langevin(_flat, x0, 3, 2, 0.01, 1.0, clip=lambda v: v.clamp(-1.0, 1.0),
                                 generator=torch.Generator().manual_seed(4))
    assert x.abs().max() <= 1.0 and info.accept_rate.numel() == 3


def test_augment_of_strength_zero_is_crop_flip_blur_only():
    """aug2 (colour jitter and greyscale run at strength 0: other draws), aug3 (strength 0 refused)."""
    from ebmlab.data import transforms as T
    from ebmlab.samplers.augment import augment
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    got = augment(x, torch.Generator().manual_seed(6), strength=0.0)
    g = torch.Generator().manual_seed(6)
    want = T.gaussian_blur(T.random_flip(T.random_resized_crop(x, g, scale=(0.02, 1.0)), g), g)
    assert torch.equal(got, want)
