"""Annealed importance sampling (samplers/ais.py) on energies with known answers, and the contrastive
objective's ``method.noise_chain: ais`` option (docs/paper004.md, the demo's ring masses).

Known answers: for E(x) = (x - mu)² / (2 s²) in D dimensions, annealed from N(0, I), the mean weight
estimates Z_1 / Z_0 = s^D exactly (Neal 2001, Sec. 2) and the weighted moments are mu and s²; for a
two-mode target the weighted mode mass is the true one although the chains do not cross between modes.
Tolerances: 4 Monte-Carlo standard errors of the weighted estimate (from the effective sample size).
"""
import math

import numpy as np
import pytest
import torch

from ebmlab.errors import ConfigError
from ebmlab.objectives.contrastive import ContrastiveConfig, ContrastiveDivergence
from ebmlab.samplers import StepSizeController
from ebmlab.samplers.ais import ais, effective_sample_size, linear_betas, normalized_weights, systematic_resample

MU, S, D = 1.5, 0.5, 3


def _gauss(x):
    return (x - MU).pow(2).sum(1) / (2 * S * S)


def _run(energy, n, stages, seed, dim=D, step=0.1):
    g = torch.Generator().manual_seed(seed)
    ctrl = StepSizeController(1, step, 0.574, rate=0.2)
    return ais(energy, torch.randn(n, dim, generator=g), linear_betas(stages), ctrl, generator=g)


def test_mean_weight_estimates_the_normalising_constant():
    r = _run(_gauss, 4000, 50, 0)
    log_z = torch.logsumexp(r.log_weights, 0) - math.log(len(r.log_weights))
    ess = float(effective_sample_size(r.log_weights))
    # the relative standard error of a mean of weights is about sqrt(n / ess - 1) / sqrt(n)
    tol = 4 * math.sqrt(max(4000 / ess - 1, 1e-3) / 4000)
    assert abs(float(log_z) - D * math.log(S)) < tol, (float(log_z), D * math.log(S), ess)


def test_weighted_moments_match_the_target():
    r = _run(_gauss, 4000, 50, 1)
    w = normalized_weights(r.log_weights)[:, None]
    mean = (w * r.x).sum(0)
    var = (w * (r.x - mean).pow(2)).sum(0)
    ess = float(effective_sample_size(r.log_weights))
    assert torch.allclose(mean, torch.full((D,), MU), atol=4 * S / math.sqrt(ess)), (mean, ess)
    assert torch.allclose(var, torch.full((D,), S * S), atol=4 * S * S * math.sqrt(2 / ess)), (var, ess)


def test_weights_give_the_mode_masses_the_chains_cannot():
    """Two modes at x1 = -2 / +2 (std 0.3, weights 0.8 / 0.2): the chains stay in their start basins."""
    w_true, s = torch.tensor([0.8, 0.2]), 0.3

    def energy(x):
        comp = torch.stack([-(x[:, 0] - m) ** 2 / (2 * s * s) for m in (-2.0, 2.0)], 1) + w_true.log()
        return -torch.logsumexp(comp, 1) + x[:, 1] ** 2 / (2 * s * s)

    r = _run(energy, 4000, 30, 2, dim=2)
    left = (r.x[:, 0] < 0).float()
    weighted = float((normalized_weights(r.log_weights) * left).sum())
    ess = float(effective_sample_size(r.log_weights))
    assert abs(float(left.mean()) - 0.5) < 0.05          # unweighted: the start basins' shares
    assert abs(weighted - 0.8) < 4 * math.sqrt(0.16 / ess), (weighted, ess)


def test_ais_needs_a_stage():
    with pytest.raises(ValueError, match="at least one stage"):
        linear_betas(0)


def _objective(**kw):
    cfg = ContrastiveConfig(name="hybrid", n_steps=5, n_steps_data=3, noise_chain="ais", **kw)
    torch.manual_seed(0)
    energy = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1), torch.nn.Flatten(0))
    return ContrastiveDivergence(energy, cfg, (2,))


def test_objective_weights_the_noise_term_and_logs_the_ess():
    obj = _objective()
    out = obj(torch.randn(64, 2), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    assert 1.0 <= float(out.metrics["ais_ess"]) <= 64.0
    out.loss.backward()
    assert all(p.grad is not None for p in obj.energy.parameters())


def test_systematic_resampling_draws_each_chain_floor_or_ceil_of_its_share_times_and_is_unbiased():
    for seed in range(10):  # equal weights, n = B: every chain exactly once (draws with replacement keep ~63 %)
        idx = systematic_resample(torch.full((64,), 1 / 64), 64, torch.Generator().manual_seed(seed))
        assert torch.equal(idx.sort().values, torch.arange(64))
    g = torch.Generator().manual_seed(0)
    w = torch.rand(50, generator=g) ** 3
    w[7] = 0.0  # a chain of weight 0 is never drawn
    w = w / w.sum()
    n, reps = 200, 4000
    counts = torch.stack([torch.bincount(systematic_resample(w, n, g), minlength=50) for _ in range(reps)]).double()
    share = n * w.double()
    assert ((counts >= share.floor() - 1e-9) & (counts <= share.ceil() + 1e-9)).all()
    assert counts[:, 7].max() == 0
    # unbiased: each chain's mean count is n w_i; a count takes two neighbouring values, so its s.d. is at
    # most 1/2 and the mean over reps has s.e. <= 0.5 / sqrt(reps); 5 s.e.
    assert (counts.mean(0) - share).abs().max() <= 5 * 0.5 / math.sqrt(reps)


def test_objective_sampling_with_equal_weights_returns_every_chain_once():
    """The generation's resampling on an exact energy whose AIS weights are all equal (the target is the
    start, N(0, I)): the n samples are the n chains, none repeated."""
    class StandardNormal(torch.nn.Module):
        def forward(self, x):
            return 0.5 * x.pow(2).sum(1)
    obj = ContrastiveDivergence(StandardNormal(), ContrastiveConfig(name="hybrid", n_steps=5, noise_chain="ais"), (2,))
    s = obj.sample(256, generator=torch.Generator().manual_seed(0))
    assert float(s.info["ais_ess"][0]) == pytest.approx(256, rel=1e-4)
    assert torch.unique(s.x, dim=0).shape[0] == 256


def test_objective_sampling_resamples_by_weight_and_honours_x0():
    obj = _objective()
    s = obj.sample(100, generator=torch.Generator().manual_seed(1))
    assert s.x.shape == (100, 2) and "ais_ess" in s.info
    x0 = torch.zeros(10, 2)
    s0 = obj.sample(10, x0=x0, generator=torch.Generator().manual_seed(1))  # a given start: plain chains
    assert "ais_ess" not in s0.info


@pytest.mark.parametrize("bad, match", [
    (dict(noise_chain="anneal"), "short_run or ais"),
    (dict(noise_chain="ais", name="persistent"), "noise or hybrid"),
    (dict(noise_chain="ais", sampler="langevin"), "noise or hybrid"),
    (dict(noise_chain="ais", target_accept=None), "adapted step"),
])
def test_config_validation(bad, match):
    with pytest.raises(ConfigError, match=match):
        ContrastiveConfig(**bad).validate()


def test_noise_chain_resolves_and_short_run_keeps_old_run_hashes():
    """``noise_chain: null`` is written out resolved; at short_run (every Langevin config, every paper-004
    config) the run hash is the one of runs made before the key existed; AIS changes it."""
    from ebmlab.config import run_hash
    from ebmlab.training.config import load_config
    assert load_config(None, []).method.noise_chain == "ais"          # the default: hybrid, MALA, adapted step
    for over in (["method.sampler=langevin"], ["method.name=persistent"], ["method.step_rule=paper004"],
                 ["method.target_accept=null"]):
        assert load_config(None, over).method.noise_chain == "short_run", over
    cfg = load_config("paper004_rings_hybrid", [])
    assert cfg.method.noise_chain == "short_run"
    raw = cfg.to_dict()
    old = {sec: dict(vals) for sec, vals in raw.items()}
    del old["method"]["noise_chain"]
    assert run_hash(raw) == run_hash(old)
    assert load_config("paper004_rings_hybrid", ["method.sampler=mala", "method.target_accept=0.574"]).run_hash() != \
        load_config("paper004_rings_hybrid", ["method.sampler=mala", "method.target_accept=0.574",
                                               "method.noise_chain=short_run"]).run_hash()


def _run_smc(energy, n, stages, seed, dim, resample_below):
    g = torch.Generator().manual_seed(seed)
    ctrl = StepSizeController(1, 0.1, 0.574, rate=0.2)
    return ais(energy, torch.randn(n, dim, generator=g), linear_betas(stages), ctrl, generator=g,
               resample_below=resample_below)


def test_resampling_keeps_the_normalising_constant_and_the_moments_in_high_dimension():
    """Resample-move (Del Moral et al. 2006) on the Gaussian target in 20 dimensions, where plain AIS's
    weights degenerate: the ESS stays high, log Z and the moments are still right."""
    dim, n = 20, 2000
    energy = lambda x: (x - MU).pow(2).sum(1) / (2 * S * S)  # noqa: E731
    plain = _run_smc(energy, n, 30, 4, dim, None)
    smc = _run_smc(energy, n, 30, 4, dim, 0.5)
    ess_plain, ess_smc = float(effective_sample_size(plain.log_weights)), float(effective_sample_size(smc.log_weights))
    assert ess_plain < 0.05 * n and ess_smc > 0.5 * n, (ess_plain, ess_smc)
    true = dim * math.log(S)
    err = {k: abs(float(torch.logsumexp(r.log_weights, 0)) - math.log(n) - true) for k, r in (("plain", plain), ("smc", smc))}
    # measured at seeds 4-6: SMC 0.5-0.9 nats off (one MALA move per stage does not equilibrate), plain 2.0-2.4
    assert err["smc"] < err["plain"] and err["smc"] < 1.0, err
    w = normalized_weights(smc.log_weights)[:, None]
    mean = (w * smc.x).sum(0)
    var = (w * (smc.x - mean).pow(2)).sum(0).mean()
    # measured: SMC max |mean - mu| 0.03-0.04, variance 0.248-0.254; plain AIS 0.4-0.8 and 0.20-0.24
    assert (mean - MU).abs().max() < 0.1 and abs(float(var) - S * S) < 0.02, (mean, var)


def test_resampling_threshold_is_checked_and_off_means_plain_ais():
    a = _run_smc(_gauss, 200, 10, 5, D, None)
    b = _run(_gauss, 200, 10, 5)
    assert torch.equal(a.x, b.x) and torch.equal(a.log_weights, b.log_weights)
    with pytest.raises(ValueError, match="resample_below"):
        _run_smc(_gauss, 10, 3, 0, D, 1.5)
    c = _run_smc(_gauss, 200, 10, 5, D, 0.0)  # 0: never resample
    assert torch.equal(c.x, b.x) and torch.equal(c.log_weights, b.log_weights)
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="ais_resample"):
            ContrastiveConfig(name="hybrid", sampler="mala", noise_chain="ais", ais_resample=bad).validate()
    with pytest.raises(ConfigError, match="only with method.noise_chain ais"):
        ContrastiveConfig(name="hybrid", sampler="mala", noise_chain="short_run", ais_resample=0.5).validate()


def test_ais_resample_default_resolves_and_old_ais_runs_load_as_plain_ais(tmp_path):
    """AIS chains resample at ESS < B/2 by default (AIS_RESAMPLE); other chains keep None (their run hashes
    unchanged). A run written before (config.yaml without the key, or null, with noise_chain ais) ran plain
    AIS: read back it is 0 (never) and hashes as it did."""
    import yaml

    from ebmlab.config import run_hash
    from ebmlab.objectives.contrastive import AIS_RESAMPLE
    from ebmlab.training.config import load_config
    from ebmlab.training.run import read_run_config
    cfg = load_config(None, [])
    assert cfg.method.noise_chain == "ais" and cfg.method.ais_resample == AIS_RESAMPLE == 0.5
    assert load_config("default", []).method.ais_resample == 0.5  # the shipped file says the same
    assert load_config(None, ["method.sampler=langevin"]).method.ais_resample is None
    for stored in ("absent", None):
        old = load_config(None, ["method.ais_resample=0"]).to_dict()
        if stored == "absent":
            del old["method"]["ais_resample"]
        else:
            old["method"]["ais_resample"] = None
        old_hash = run_hash(old)  # what the run's checkpoints were stamped with
        run = tmp_path / f"run_{stored}"
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump(old))
        back = read_run_config(run)
        assert back.method.ais_resample == 0.0 and back.run_hash() == old_hash, stored
    assert load_config(None, []).run_hash() != old_hash  # the new default is another run


# ----- AIS from a mixture base measure (``base=``, model.base: gmm) --------------------------------------------
def _mixture_base():
    """A 2-D two-component mixture with correlated components, set from a fitted GaussianMixture."""
    from sklearn.mixture import GaussianMixture

    from ebmlab.energies.mixture_base import GaussianMixtureBase
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.normal(size=(300, 2)) @ [[0.6, 0.3], [0.0, 0.4]] - 1.5,
                           rng.normal(size=(700, 2)) * 0.5 + [1.5, 0.5]])
    return GaussianMixtureBase(2).fit_from_sklearn(GaussianMixture(2, random_state=0).fit(rows)).double()


def _tilted_mixture(base, a):
    """The exact law of q(x) exp(-a.x) for the mixture q: each component's mean moves by -Sigma_k a and its
    weight gets exp(-a.mu_k + a Sigma_k a / 2) (completing the square)."""
    u = base.prec_chol
    cov = torch.linalg.inv(u @ u.transpose(1, 2))                          # (K, D, D)
    means = base.means - cov @ a                                            # (K, D)
    logw = base.log_weights - base.means @ a + 0.5 * torch.einsum("d,kde,e->k", a, cov, a)
    return torch.softmax(logw, 0), means


def test_ais_from_a_mixture_base_has_equal_weights_on_the_untilted_base():
    """E = B: every stage's target is the base itself, so every log weight stays 0 and the points stay
    distributed as the base (exact moments)."""
    base = _mixture_base()
    g = torch.Generator().manual_seed(5)
    x0 = base.sample(4000, g)
    r = ais(base, x0, linear_betas(10), StepSizeController(1, 0.05, 0.574, rate=0.2), generator=g, base=base)
    assert torch.allclose(r.log_weights, torch.zeros_like(r.log_weights), atol=1e-9)
    w = torch.softmax(base.log_weights, 0)
    mean = (w[:, None] * base.means).sum(0)
    assert torch.allclose(r.x.mean(0), mean, atol=4 * float(r.x.std(0).max()) / math.sqrt(4000))


def test_ais_from_a_mixture_base_recovers_an_exact_tilt():
    """E(x) = B(x) + a.x, annealed from the base: the weighted mean and the mass of the right-hand component's
    side equal those of the exactly tilted mixture, within 4 standard errors of the weighted estimate."""
    base = _mixture_base()
    a = torch.tensor([0.8, -0.5], dtype=torch.float64)
    energy = lambda x: base(x) + x @ a  # noqa: E731
    g = torch.Generator().manual_seed(6)
    r = ais(energy, base.sample(4000, g), linear_betas(30), StepSizeController(1, 0.05, 0.574, rate=0.2),
            generator=g, base=base, resample_below=0.5)
    w = normalized_weights(r.log_weights)
    ess = float(effective_sample_size(r.log_weights))
    weights, means = _tilted_mixture(base, a)
    exact_mean = (weights[:, None] * means).sum(0)
    est = (w[:, None] * r.x).sum(0)
    assert torch.allclose(est, exact_mean, atol=4 * float(r.x.std(0).max()) / math.sqrt(ess)), (est, exact_mean, ess)
    side = (r.x[:, 0] > 0).double()
    exact_side = float(_side_mass(weights, means, base))
    assert abs(float((w * side).sum()) - exact_side) < 4 * math.sqrt(exact_side * (1 - exact_side) / ess)


def _side_mass(weights, means, base):
    """P(x_1 > 0) under the tilted mixture: each component's first coordinate is normal."""
    cov = torch.linalg.inv(base.prec_chol @ base.prec_chol.transpose(1, 2))
    sd = cov[:, 0, 0].sqrt()
    return (weights * 0.5 * torch.erfc(-means[:, 0] / (sd * math.sqrt(2)))).sum()
