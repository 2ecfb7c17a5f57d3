"""Paper 004's own MALA rule (Sec. 4.2.5, issue 15 item 2c) on energies with known answers.

The paper: "we replace the fixed step size eps with a dynamic step that decreases in proportion as
the acceptance ratio falls below the optimal ratio of 0.67 (Neal, 2011)" and "rejected samples do
not count toward Langevin steps". Implemented as ``StepSizeController(rule="paper004")`` (shrink
only) and ``run_chain(..., count="accepted")`` (every chain proposes until all have >= L accepted
moves, capped); exposed as ``method.step_rule: paper004`` of the contrastive objective.

Checks: the rule samples the right distribution (the moment method of test_samplers.py: many
independent chains, 4 Monte-Carlo standard errors; and the oracle check of tests/oracle on the
exact 2-D mixture through ``ContrastiveDivergence.sample``); acceptance control (eps shrinks when
acceptance is below 0.67, never grows, and acceptance ends >= 0.67); rejected proposals are not
counted; the proposal cap; and eps = c / ||E|| recomputed for the weights in place (EMA swap).
"""
import math
import warnings

import pytest
import torch

from ebmlab.errors import ConfigError
from ebmlab.objectives.contrastive import ContrastiveConfig, ContrastiveDivergence
from ebmlab.samplers import StepSizeController, langevin, mala, run_chain
from ebmlab.samplers.base import PAPER004_ACCEPT
from tests.statistical.test_samplers import COV, MEAN, MIX_MEAN, MIX_VAR, gaussian_energy, mixture_energy


def _ctrl(init_step: float, rate: float = 0.05) -> StepSizeController:
    return StepSizeController(1, init_step, rate=rate, rule="paper004")


def _collect(energy, x0, ctrl, n_burn, n_keep, thin, gen):
    """Burn-in then ``n_keep`` sets, each ``thin`` accepted moves apart (every chain), pooled."""
    x, _ = run_chain(mala, energy, x0, n_burn, None, controller=ctrl, generator=gen, count="accepted")
    out = []
    for _ in range(n_keep):
        x, _ = run_chain(mala, energy, x, thin, None, controller=ctrl, generator=gen, count="accepted")
        out.append(x)
    return torch.cat(out)


def test_rule_constants():
    assert PAPER004_ACCEPT == 0.67
    assert _ctrl(0.1).target == 0.67
    assert StepSizeController(1, 0.1).target == 0.574  # the library default is the general MALA optimum


def test_gaussian_mean_and_covariance_under_the_paper_rule():
    """From a step far too large (acceptance ~0.1), the rule shrinks it; the pooled samples of 4000
    chains then match N(MEAN, COV) within 4 standard errors (as test_samplers.py's MALA test)."""
    gen = torch.Generator().manual_seed(11)
    n_chains = 4000
    x0 = torch.randn(n_chains, 2, generator=gen) * 2
    ctrl = _ctrl(1.0)
    s = _collect(gaussian_energy, x0, ctrl, 400, 4, 50, gen)
    assert float(ctrl.log_step.exp()) < 0.5  # it did shrink
    se_mean = (COV.diag() / n_chains).sqrt()
    assert ((s.mean(0) - MEAN).abs() < 4 * se_mean).all(), s.mean(0)
    se_cov = ((COV ** 2 + COV.diag()[:, None] * COV.diag()[None, :]) / n_chains).sqrt()
    assert ((torch.cov(s.T) - COV).abs() < 4 * se_cov).all(), torch.cov(s.T)


def test_mixture_mean_and_variance_under_the_paper_rule():
    gen = torch.Generator().manual_seed(12)
    x0 = torch.randn(3000, 1, generator=gen) * 2
    s = _collect(mixture_energy, x0, _ctrl(3.0), 1000, 3, 100, gen)
    se_mean, se_var = math.sqrt(MIX_VAR / 3000), MIX_VAR * math.sqrt(3 / 3000)
    assert abs(float(s.mean()) - MIX_MEAN) < 4 * se_mean
    assert abs(float(s.var()) - MIX_VAR) < 4 * se_var


def test_step_shrinks_below_target_and_acceptance_ends_above_it():
    gen = torch.Generator().manual_seed(13)
    x0 = MEAN + torch.randn(2000, 2, generator=gen) @ torch.linalg.cholesky(COV).T
    ctrl = _ctrl(2.0)
    _, diag = run_chain(mala, gaussian_energy, x0, 300, None, controller=ctrl, generator=gen, count="accepted")
    assert float(diag.accept_rate[:5].mean()) < 0.3                      # started far below 0.67
    assert (diag.step_size[1:] <= diag.step_size[:-1] + 1e-7).all()      # never increases
    assert float(diag.step_size[-1]) < 0.5 * float(diag.step_size[0])    # shrank
    assert float(diag.accept_rate[-100:].mean()) >= PAPER004_ACCEPT      # ends at or above 0.67
    assert float(ctrl.accept_avg) >= PAPER004_ACCEPT - 0.02


def test_step_is_never_increased_when_acceptance_is_high():
    gen = torch.Generator().manual_seed(14)
    ctrl = _ctrl(1e-3)
    _, diag = run_chain(mala, gaussian_energy, torch.randn(500, 2, generator=gen), 50, None, controller=ctrl,
                        generator=gen, count="accepted")
    assert float(diag.accept_rate.mean()) > 0.95
    assert torch.allclose(ctrl.log_step.exp(), torch.tensor([1e-3]))  # Robbins-Monro would have grown it


def test_update_is_proportional_to_the_shortfall():
    ctrl = _ctrl(0.1, rate=0.5)
    groups = torch.zeros(10, dtype=torch.long)
    ctrl.update(torch.tensor([True] * 3 + [False] * 7), groups)  # first step: the average is 0.3
    assert math.isclose(float(ctrl.accept_avg), 0.3, rel_tol=1e-6)
    assert math.isclose(float(ctrl.log_step), math.log(0.1) + 0.5 * (0.3 - 0.67), rel_tol=1e-5)
    before = float(ctrl.log_step)
    for _ in range(40):
        ctrl.update(torch.ones(10, dtype=torch.bool), groups)  # acceptance 1: the average climbs past 0.67
    assert float(ctrl.accept_avg) > 0.67 and float(ctrl.log_step) <= before  # shrinks while below, then stops
    last = float(ctrl.log_step)
    ctrl.update(torch.ones(10, dtype=torch.bool), groups)
    assert float(ctrl.log_step) == last
    c = ctrl.copy()
    assert c.rule == "paper004" and torch.equal(c.accept_avg, ctrl.accept_avg) and torch.equal(c.log_step, ctrl.log_step)


def test_rejected_proposals_do_not_count_as_steps():
    """Fixed eps 0.2 with acceptance ~0.5: every chain ends with >= L accepted moves, which needs more
    than L proposals; the ChainInfo has one entry per proposal."""
    gen = torch.Generator().manual_seed(15)
    L = 20
    per_chain = torch.zeros(1000, dtype=torch.long)

    def count(i, state, info):
        per_chain.add_(info.accept_rate.long())

    x0 = MEAN + torch.randn(1000, 2, generator=gen) @ torch.linalg.cholesky(COV).T
    _, diag = run_chain(mala, gaussian_energy, x0, L, 0.2, generator=gen, count="accepted", callback=count,
                        check_every=1)
    proposals = diag.accept_rate.numel()
    assert 0.2 < float(diag.accept_rate.mean()) < 0.8
    assert int(per_chain.min()) == L                       # the slowest chain has exactly L (checked every step)
    assert proposals > L / 0.8 and proposals <= 5 * L      # more proposals than steps, within the default cap
    assert math.isclose(float(diag.accept_rate.sum()), float(per_chain.float().mean()), rel_tol=1e-5)
    # the default "steps" count: L proposals, accepted or not
    _, d2 = run_chain(mala, gaussian_energy, x0, L, 0.2, generator=gen)
    assert d2.accept_rate.numel() == L


def test_the_proposal_cap_stops_the_chain_and_warns():
    gen = torch.Generator().manual_seed(16)
    with pytest.warns(RuntimeWarning, match="fewer than 10 accepted moves"):
        x, diag = run_chain(mala, gaussian_energy, torch.randn(200, 2, generator=gen), 10, 50.0, generator=gen,
                            count="accepted", max_proposals=25)
    assert diag.accept_rate.numel() == 25 and torch.isfinite(x).all()


def test_unadjusted_langevin_counts_every_step():
    gen = torch.Generator().manual_seed(17)
    _, diag = run_chain(langevin, gaussian_energy, torch.randn(10, 2, generator=gen), 7, 0.01, generator=gen,
                        count="accepted")
    assert diag.accept_rate.numel() == 7


def test_accepted_count_rejects_what_it_cannot_do():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="count"):
        run_chain(mala, gaussian_energy, x, 3, 0.1, count="bogus")
    with pytest.raises(ValueError, match="accepted"):
        run_chain(mala, gaussian_energy, x, 3, 0.1, count="accepted", noises=torch.randn(3, 4, 2))
    with pytest.raises(ValueError, match="max_proposals must be at least n_steps = 3, got 2"):  # (raised silently)
        run_chain(mala, gaussian_energy, x, 3, 0.1, count="accepted", max_proposals=2)


def test_a_noise_scale_tensor_is_one_row_per_step():
    """A (B,) tensor meant per chain was read as a per-step schedule of its first K entries (any B >= K)."""
    x = torch.randn(8, 2)
    with pytest.raises(ValueError, match=r"needs 2 rows \(K, or \(K, B\) per chain\), got \(8,\)"):
        run_chain(langevin, gaussian_energy, x, 2, 0.1, noise_scale=torch.full((8,), 0.1))
    out, _ = run_chain(langevin, gaussian_energy, x, 2, 0.1, noise_scale=torch.full((2, 8), 0.1))
    assert out.shape == x.shape


def test_a_projection_with_a_gradient_through_the_chain_is_refused():
    """``project`` detaches the points after every step: ``grad="last"``/``"all"`` returned them without a
    gradient and without an error."""
    x = torch.randn(4, 2)
    for grad in ("last", "all"):
        with pytest.raises(ValueError, match="project detaches the points"):
            run_chain(langevin, gaussian_energy, x, 2, 0.1, grad=grad, project=lambda y: y.clamp(-3, 3))
    out, _ = run_chain(langevin, gaussian_energy, x, 2, 0.1, project=lambda y: y.clamp(-3, 3))
    assert out.shape == x.shape


def test_objective_option_recovers_the_oracle_mixture():
    """``method.step_rule: paper004`` through ``ContrastiveDivergence.sample`` on the exact mixture
    energy of tests/oracle (the same recovery check as test_oracle_004.py). 1000 accepted moves (~2000
    proposals): about ten of the ~100-step mode-switch time constants measured there."""
    from tests.oracle.checks import N_SAMPLES, assert_recovers, reference
    from tests.oracle.exact import default_mixture

    mixture = default_mixture()
    cfg = ContrastiveConfig(name="hybrid", sampler="mala", step_size=0.5, adapt_rate=0.05, init_std=1.0,
                            step_rule="paper004")
    obj = ContrastiveDivergence(mixture.energy(), cfg, shape=(2,))
    out = obj.sample(N_SAMPLES, generator=torch.Generator().manual_seed(43), n_steps=1000)
    acc = out.info["accept_rate"]
    assert acc.numel() > 1000                                 # rejections did not count
    assert float(acc.sum()) >= 1000
    assert float(acc[-200:].mean()) >= PAPER004_ACCEPT - 0.02
    assert_recovers(out.x, reference(mixture), "004 paper rule from noise",
                    {"accept_rate_last_200": round(float(acc[-200:].mean()), 3), "proposals": acc.numel()})


def test_objective_logs_proposals_and_accepted_moves():
    torch.manual_seed(0)
    energy = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1), torch.nn.Flatten(0))
    cfg = ContrastiveConfig(name="hybrid", n_steps=12, n_steps_data=5, step_rule="paper004", step_size=0.5)
    obj = ContrastiveDivergence(energy, cfg, shape=(2,))
    out = obj(torch.randn(32, 2), generator=torch.Generator().manual_seed(0))
    m = out.metrics
    assert 12 <= float(m["proposals"]) <= 60 and float(m["accepted_moves"]) >= 12
    assert 5 <= float(m["proposals_data"]) <= 25 and float(m["accepted_moves_data"]) >= 5
    assert obj.ctrl_noise.rule == "paper004" and obj.ctrl_noise.target == 0.67
    # the default rule logs no proposal counts
    plain = ContrastiveDivergence(energy, ContrastiveConfig(name="hybrid", n_steps=3, n_steps_data=2), shape=(2,))
    assert "proposals" not in plain(torch.randn(8, 2), generator=torch.Generator().manual_seed(0)).metrics


@pytest.mark.parametrize("bad,match", [
    ({"step_rule": "paper004", "sampler": "langevin"}, "needs method.sampler mala"),
    ({"step_rule": "adaptive"}, "step_rule"),
    ({"proposal_cap": 4.0}, "only with"),
    ({"step_rule": "paper004", "proposal_cap": 0.5}, "at least 1"),
])
def test_config_validation(bad, match):
    with pytest.raises(ConfigError, match=match):
        ContrastiveConfig(**bad).validate()


def test_new_keys_at_their_defaults_keep_old_run_hashes():
    from ebmlab.training.config import load_config
    cfg = load_config(None, ["method.name=hybrid"])
    raw = cfg.to_dict()
    old = {sec: dict(vals) for sec, vals in raw.items()}
    del old["method"]["step_rule"], old["method"]["proposal_cap"]
    from ebmlab.config import run_hash
    assert run_hash(raw) == run_hash(old)
    cfg2 = load_config(None, ["method.name=hybrid", "method.step_rule=paper004"])
    assert cfg2.run_hash() != cfg.run_hash()


# ----- eps = c / ||E(x)|| and the EMA swap (issue 15, item 2c.3) ---------------------------------------

def _adaptive_objective():
    torch.manual_seed(1)
    energy = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1), torch.nn.Flatten(0))
    cfg = ContrastiveConfig(name="data", sampler="langevin", n_steps=3, n_steps_data=3, adaptive_step=True,
                            adaptive_c=0.05, energy_l2=0.0)
    return ContrastiveDivergence(energy, cfg, shape=(2,))


def test_sampling_step_is_computed_from_the_weights_in_place():
    from ebmlab.training.ema import EMA
    obj = _adaptive_objective()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(2))
    obj(x, generator=torch.Generator().manual_seed(3))
    raw_eps = float(obj.last_step_size)
    assert math.isclose(obj.sampling_step_size(), raw_eps, rel_tol=1e-6)  # same weights, same eps
    ema = EMA(obj, 0.9)
    with torch.no_grad():  # other weights: the averaged model has energies 3x larger (and shifted)
        ema.shadow["energy.2.weight"].mul_(3.0)
        ema.shadow["energy.2.bias"].add_(1.0)
    with ema.applied(obj), torch.no_grad():
        e = obj.energy(x)
        expected = 0.05 / float(e.pow(2).mean().sqrt())
        assert math.isclose(obj.sampling_step_size(), expected, rel_tol=1e-5)
        assert abs(expected - raw_eps) > 0.1 * raw_eps
        out = obj.sample(16, generator=torch.Generator().manual_seed(4))
        assert torch.allclose(out.info["step_size"], torch.full((3,), expected), rtol=1e-5)
    assert math.isclose(obj.sampling_step_size(), raw_eps, rel_tol=1e-6)  # raw weights back: raw eps


def test_reference_batch_round_trips_and_old_checkpoints_load():
    obj = _adaptive_objective()
    obj(torch.randn(300, 2), generator=torch.Generator().manual_seed(5))
    assert obj.ref_data.shape == (256, 2)
    fresh = _adaptive_objective()
    fresh.load_state_dict(obj.state_dict())  # a (0, 2) buffer takes the stored (256, 2)
    assert torch.equal(fresh.ref_data, obj.ref_data)
    assert math.isclose(fresh.sampling_step_size(), obj.sampling_step_size(), rel_tol=1e-6)
    old = {k: v for k, v in obj.state_dict().items() if k != "ref_data"}  # written before ref_data existed
    older = _adaptive_objective()
    older.load_state_dict(old)
    assert math.isclose(older.sampling_step_size(), float(obj.last_step_size), rel_tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        older.sample(4, generator=torch.Generator().manual_seed(6))
