"""Paper 000: the series, the joint T-vector head (Eq. 3-5), the CD+CE / JointCD / Option 1 losses,
the per-t adaptive MALA (App. C.1), the chain-length ramp (App. C.2) and the configs."""
import math

import pytest
import torch

from ebmlab.config import shipped_configs
from ebmlab.data.dataset import build_dataset
from ebmlab.energies.mlp import MLPEnergy
from ebmlab.energies.time import FeatureTrunk, JointTimeEnergy, gaussian_log_density
from ebmlab.objectives import build_objective
from ebmlab.schedules import (annealing_level, chain_length, interpolation_coefficients, sample_series,
                              soft_annealing_log_weights)
from ebmlab.training.config import ConfigError, load_config
from ebmlab.training.loop import Trainer

CONFIGS = [n for n in shipped_configs() if n.startswith("paper000_")]  # shipped configs, by name


# ----- schedules ---------------------------------------------------------------------------------
def test_interpolation_endpoints_and_series(gen):
    alpha, beta = interpolation_coefficients(5)
    assert alpha.tolist() == [0, 0.25, 0.5, 0.75, 1] and torch.allclose(alpha + beta, torch.ones(5))
    x = torch.full((3000, 2), 0.7)
    z0 = sample_series(x, torch.zeros(3000, dtype=torch.long), alpha, beta, 0.3, gen)
    zT = sample_series(x, torch.full((3000,), 4), alpha, beta, 0.3, gen)
    assert torch.equal(zT, x)  # t = T-1 is the data
    assert abs(z0.mean().item()) < 0.02 and abs(z0.std().item() - 0.3) < 0.01  # t = 0 is p_n
    with pytest.raises(ValueError):
        interpolation_coefficients(1)


def test_chain_length_ramp_app_c2():
    assert chain_length(0) == 5 and chain_length(39999) == 5
    assert chain_length(60000) == 52 or chain_length(60000) == 53
    assert chain_length(80000) == 100 and chain_length(300000) == 100
    assert chain_length(10, 5, 100, hold=5, ramp=0) == 100


def test_soft_annealing_weights_are_uniform_tails():
    T = 10
    for n, n_total in [(0, 7), (3, 7), (6, 7)]:
        w = soft_annealing_log_weights(n, n_total, T)
        t_n = annealing_level(n, n_total, T)
        p = w.exp() / T  # p^(n)(t) = p_t(t) * exp(w_t)
        assert math.isclose(p.sum().item(), 1.0, rel_tol=1e-6)
        assert torch.all(p[:t_n] == 0) and torch.allclose(p[t_n:], torch.full((T - t_n,), 1 / (T - t_n)))
    assert annealing_level(0, 7, T) == 0 and annealing_level(6, 7, T) == T - 1


# ----- the joint head ----------------------------------------------------------------------------
def _head(T=7, sigma=0.3, seed=0):
    torch.manual_seed(seed)
    head = JointTimeEnergy(FeatureTrunk(MLPEnergy(2, 32, 2)), 32, T, sigma)
    with torch.no_grad():  # a trained-looking head: non-zero increments
        head.increments.weight.normal_(0, 0.5), head.increments.bias.normal_(0, 0.5)
    return head


def test_head_identities(gen):
    head = _head()
    z = torch.randn(16, 2, generator=gen)
    f = head.log_joint(z)  # (B, T)
    assert f.shape == (16, 7)
    assert torch.allclose(head.log_marginal(z), torch.logsumexp(f, 1))  # Eq. 4
    assert torch.allclose(head.log_t_given_z(z), torch.log_softmax(f, 1))  # Eq. 5
    assert torch.allclose(head(z), -torch.logsumexp(f, 1))  # marginal energy = -log p(z)
    t = torch.randint(7, (16,), generator=gen)
    assert torch.allclose(head(z, t=t), -(f.gather(1, t[:, None]).squeeze(1) + math.log(7)))
    assert torch.allclose(head(z, log_weights=torch.zeros(7)), head(z))
    # cumulative-sum layer: consecutive differences are the linear increments
    inc = head.increments(head.trunk(z))
    assert torch.allclose(f[:, 1:] - f[:, :-1], inc, atol=1e-5)


def test_head_t0_entry_is_reference_density(gen):
    head = _head(sigma=0.4)
    z = torch.randn(16, 2, generator=gen)
    ref = -(z ** 2).sum(1) / (2 * 0.16) - math.log(2 * math.pi * 0.16)  # log N(z; 0, 0.4^2 I), D = 2
    assert torch.allclose(head.log_conditional(z)[:, 0], ref, atol=1e-5)
    assert torch.allclose(gaussian_log_density(z, 0.4), ref, atol=1e-5)
    # the t = 0 entry carries no parameter dependence: its gradient is exactly zero
    head.log_joint(z)[:, 0].sum().backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in head.parameters())


def test_untrained_head_starts_at_reference(gen):
    head = JointTimeEnergy(FeatureTrunk(MLPEnergy(2, 16, 1)), 16, 5, 0.3)
    z = torch.randn(8, 2, generator=gen)
    cond = head.log_conditional(z)
    assert torch.allclose(cond, cond[:, :1].expand(-1, 5))


# ----- objectives --------------------------------------------------------------------------------
def _cfg(name, *extra):
    sets = ["data.name=spiral", "data.standardize=false", "data.n_train=2000", "data.n_test=200",
            f"method.name={name}", "method.T=16", "model.width=32", "model.depth=1", "train.batch_size=64",
            "train.progress=false", "train.checkpoint_every=100000", "train.threads=1", *extra]
    return load_config(None, sets)


@pytest.mark.parametrize("name,extra", [("cd_ce", []), ("joint_cd", []), ("cd_plain", []),
                                        ("cd_ce", ["method.per_t_weight=1.0"]), ("per_t", []),
                                        ("joint_cd", ["method.ce_weight=0.5", "method.n_steps_final=6",
                                                      "method.ramp_hold=0", "method.ramp_steps=10"])])
def test_objective_losses_backprop(name, extra, gen):
    cfg = _cfg(name, *extra)
    data = build_dataset(cfg.data)
    obj = build_objective(cfg, data)
    out = obj(data.train[:64], generator=gen)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.parameters())
    assert 0 <= float(out.metrics["accept_rate"]) <= 1 and out.negatives.shape == (64, 2)
    if name != "cd_plain":  # CE of Eq. 8 on T = 16 levels: positive, at most ~log T at initialisation
        assert 0 < out.metrics["ce"] < math.log(16) + 0.5
    x = obj.sample(20, generator=gen).x
    assert x.shape == (20, 2) and torch.isfinite(x).all()


def _loss_and_series(name: str, perturb: bool = False, transition=None):
    """One loss on 64 spiral points with seed 3, and the (t, z) the objective drew (same seed, recomputed).
    ``perturb``: the head's parameters moved off their start, where every level is the reference density and
    log p(t | z) = -log T for every t (a cross-entropy with the wrong target level would match there);
    ``transition``: replaces the objective's chain (z, t, k, generator) -> (z~, t~, diagnostics)."""
    cfg = _cfg(name)
    data = build_dataset(cfg.data)
    obj = build_objective(cfg, data)
    if transition is not None:
        obj.transition = transition
    if perturb:
        with torch.no_grad():
            for p in obj.energy.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out = obj(data.train[:64], generator=g1)
    t = torch.randint(16, (64,), generator=g2)
    return obj, out, t, sample_series(data.train[:64], t, obj.alpha, obj.beta, 0.3, g2)


def test_option1_loss_is_the_per_t_cd_loss(gen):
    """``per_t`` (Option 1): the loss is E(z | t) - E(z^c | t) on the conditional chains' negatives,
    with no marginal or CE term (the same seed gives the same t and z as recomputed here)."""
    obj, out, t, z = _loss_and_series("per_t")
    expect = obj.energy(z, t=t).mean() - obj.energy(out.negatives, t=t).mean()
    assert torch.allclose(out.loss, expect, atol=1e-5)


@pytest.mark.parametrize("perturb", [False, True])
def test_cd_ce_loss_value_matches_equations(perturb):
    """With K = 1 and a frozen seed the loss equals Eq. 6 + Eq. 8 recomputed outside the objective, also for a
    head whose levels differ (a mutation audit moved the CE target to t + 1 and only a recorded value saw it)."""
    obj, out, t, z = _loss_and_series("cd_ce", perturb)
    f = obj.energy.log_joint(z)
    if perturb:
        assert float(torch.log_softmax(f, 1).detach().std()) > 0.01  # log p(t | z) depends on t
    lp_neg = obj.energy.log_marginal(out.negatives)
    expect = lp_neg.mean() - torch.logsumexp(f, 1).mean() - torch.log_softmax(f, 1).gather(1, t[:, None]).mean()
    assert torch.allclose(out.loss, expect, atol=1e-5)


def test_joint_cd_reads_the_negatives_at_the_levels_their_chains_ended_on():
    """Alg. 2: loss = log p(z~, t~) - log p(z, t) + ce_weight CE, with each negative at its own level t~ (a mutation
    audit read them at the positives' t and no test noticed). The chain is replaced by fixed points and levels."""
    from types import SimpleNamespace
    z_neg = torch.randn(64, 2, generator=torch.Generator().manual_seed(9))
    levels = {}

    def fixed(z, t, k, generator):
        levels["t_neg"] = (t + 5) % 16  # other levels than the positives'
        return z_neg, levels["t_neg"], SimpleNamespace(accept_rate=torch.ones(1))
    obj, out, t, z = _loss_and_series("joint_cd", perturb=True, transition=fixed)
    with torch.no_grad():
        f_pos, f_neg = obj.energy.log_joint(z), obj.energy.log_joint(z_neg)
        ce = -(f_pos.gather(1, t[:, None]) - torch.logsumexp(f_pos, 1, keepdim=True)).mean()
        want = f_neg.gather(1, levels["t_neg"][:, None]).mean() - f_pos.gather(1, t[:, None]).mean() + obj.ce_weight * ce
    assert float(out.loss.detach()) == pytest.approx(float(want), rel=1e-5, abs=1e-6)


def test_the_per_t_weight_scales_the_per_t_loss():
    """loss = loss_cd + ce_weight ce + per_t_weight loss_per_t, read from the reported terms (the weight was tested
    only at 1.0, so an ignored weight went unnoticed)."""
    cfg = _cfg("cd_ce", "method.per_t_weight=0.37", "method.ce_weight=0.6")
    data = build_dataset(cfg.data)
    out = build_objective(cfg, data)(data.train[:64], generator=torch.Generator().manual_seed(3))
    m = out.metrics
    want = m["loss_cd"] + 0.6 * m["ce"] + 0.37 * m["loss_per_t"]
    assert float(out.loss.detach()) == pytest.approx(float(want), rel=1e-5, abs=1e-6)


def test_chain_ramp_follows_training_step():
    cfg = _cfg("cd_ce", "method.n_steps=5", "method.n_steps_final=100", "method.ramp_hold=10",
               "method.ramp_steps=10")
    obj = build_objective(cfg, build_dataset(cfg.data))
    assert obj.n_chain_steps() == 5
    obj.after_step(15)
    assert obj.n_chain_steps() == 52 or obj.n_chain_steps() == 53
    obj.after_step(25)
    assert obj.n_chain_steps() == 100
    assert "train_step" in dict(obj.named_buffers())  # carried by checkpoints


def test_config_errors():
    with pytest.raises(ConfigError):
        _cfg("cd_ce", "method.T=1")
    with pytest.raises(ConfigError):
        _cfg("cd_ce", "method.sample_method=magic")
    with pytest.raises(ConfigError):
        _cfg("joint_cd", "method.sigma_n=0")


@pytest.mark.parametrize("path", CONFIGS)
def test_configs_load(path):
    cfg = load_config(path)
    assert cfg.method.name in ("cd_ce", "joint_cd", "cd_plain")


def test_per_t_step_sizes_converge_to_60_percent(tmp_path):
    """App. C.1 (``marginal_step: per_level``): the per-t step sizes settle and the measured
    acceptance is 0.6 +- 0.05 at the end."""
    cfg = _cfg("joint_cd", "train.steps=240", "train.log_every=10", "method.T=8", "train.batch_size=128",
               "method.adapt_rate=0.1", "method.marginal_step=per_level")
    tr = Trainer(cfg, tmp_path)
    tr.fit()
    import json
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [r["accept_rate"] for r in logs[-6:]]  # the batch acceptance of the last 60 steps (logged)
    assert abs(sum(last) / len(last) - 0.6) < 0.05, last
    acc = tr.objective.ctrl.accept_ema
    assert torch.all((acc - 0.6).abs() < 0.1), acc  # every level near the target
    log_step = tr.objective.ctrl.log_step.clone()
    steps_before = torch.tensor([r["step_size_t0"] for r in logs[-6:]]).log()
    assert (steps_before.max() - steps_before.min()) < 0.5  # settled: small drift over the last 60 steps
    assert torch.isfinite(log_step).all()


def test_checkpoint_carries_sampler_state():
    cfg = _cfg("joint_cd", "method.per_t_weight=0.5")
    obj = build_objective(cfg, build_dataset(cfg.data))
    keys = set(obj.state_dict())
    assert {"ctrl.log_step", "ctrl.accept_ema", "ctrl_cond.log_step", "train_step", "alpha", "beta"} <= keys
    assert obj.ctrl.log_step.shape == (1,)  # App. A: one t-independent step for the marginal chain
    assert obj.ctrl_cond.log_step.shape == (16,)  # Option 1's chains on p(z | t): one per t
    cfg = _cfg("joint_cd", "method.marginal_step=per_level")
    assert build_objective(cfg, build_dataset(cfg.data)).ctrl.log_step.shape == (16,)


def test_increments_start_at_zero_or_at_torchs_initialisation_with_the_same_trunk():
    """method.increments_init: zero (the default) makes every level p_n before training; torch keeps nn.Linear's
    initialisation, the effective operator cumsum W that Sec. 3.2 credits the cumulative sum with. Both draw the
    same random numbers, so the trunks are equal and only the head differs."""
    objs = {}
    for init in ("zero", "torch"):
        torch.manual_seed(0)
        cfg = _cfg("cd_ce", f"method.increments_init={init}")
        objs[init] = build_objective(cfg, build_dataset(cfg.data))
    zero, rand = objs["zero"].energy, objs["torch"].energy
    trunk = {k: v for k, v in zero.state_dict().items() if not k.startswith("increments")}
    assert all(torch.equal(v, rand.state_dict()[k]) for k, v in trunk.items())
    z = torch.randn(8, 2)
    reference = gaussian_log_density(z, zero.sigma_n).unsqueeze(1)  # (8, 1)
    assert torch.allclose(zero.log_conditional(z), reference.expand(-1, zero.T))
    with torch.no_grad():
        assert float(zero.increments.weight.abs().max()) == 0.0 < float(rand.increments.weight.abs().max())
    levels = (rand.log_conditional(z) - reference).detach()  # the cumulative sums of random increments
    assert torch.allclose(levels[:, 0], torch.zeros(8), atol=1e-5) and float(levels[:, 1:].abs().max()) > 0.1
    with pytest.raises(ConfigError, match="increments_init"):
        _cfg("cd_ce", "method.increments_init=ones")


def test_cifar10_config_builds_app_c2_model():
    """App. C.2: ResNet18-sized trunk without BatchNorm, LeakyReLU, cumulative-sum head over 1024 levels."""
    from ebmlab.energies.build import build_joint_energy
    cfg = load_config("paper000_cifar10_cdce")
    assert (cfg.method.T, cfg.train.batch_size, cfg.train.optimizer, cfg.train.steps) == (1024, 512, "adamw", 300000)
    assert (cfg.method.n_steps, cfg.method.n_steps_final, cfg.method.ramp_hold) == (5, 100, 40000)
    torch.manual_seed(0)
    head = build_joint_energy(cfg.model, (3, 32, 32), cfg.method.T, cfg.method.sigma_n)
    kinds = {type(m).__name__ for m in head.modules()}
    assert "LeakyReLU" in kinds and not any("Norm" in k for k in kinds)
    assert 8e6 < sum(p.numel() for p in head.parameters()) < 15e6  # ResNet18 scale (~11 M)
    z = torch.randn(2, 3, 32, 32)
    assert head.log_joint(z).shape == (2, 1024)
    assert torch.allclose(head.log_conditional(z)[:, 0], gaussian_log_density(z, cfg.method.sigma_n))


@pytest.mark.parametrize("T", [16, 256])
@pytest.mark.parametrize("L", [2, 3, 7, 15, 128, None, 300])
def test_annealing_levels_start_at_the_reference_and_end_at_the_data(T, L):
    """Alg. 3 visits increasing levels from t = 0 (p_n) to t = T-1 (the data), evenly spaced when fewer than T.
    A mutation audit found the last level could be 253 of 255 with every oracle still passing."""
    obj = build_objective(_cfg("cd_ce", f"method.T={T}", f"method.sample_levels={L if L else 'null'}"),
                          build_dataset(_cfg("cd_ce").data))
    levels = obj.annealing_levels()
    want = T if L is None or L >= T else L
    assert levels[0] == 0 and levels[-1] == T - 1 and len(levels) == want
    gaps = [b - a for a, b in zip(levels, levels[1:])]
    assert min(gaps) >= 1 and max(gaps) - min(gaps) <= 1  # strictly increasing, evenly spaced


def test_simulated_annealing_evaluates_each_level_in_order_and_ends_on_the_data_level(gen):
    """The levels the energy is called at during Alg. 3 (a forward pre-hook reads ``t``): the planned levels in
    increasing order, each stage at one level, the last at T - 1."""
    obj = build_objective(_cfg("cd_ce", "method.sample_levels=5", "method.sample_steps=2"),
                          build_dataset(_cfg("cd_ce").data))
    seen = []

    def spy(module, args, kwargs):
        t = kwargs.get("t")
        assert t is not None and t.unique().numel() == 1, "every call of a stage is at one level"
        if not seen or seen[-1] != int(t[0]):
            seen.append(int(t[0]))
    hook = obj.energy.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        obj.generate(8, algorithm="annealing", generator=gen)
    finally:
        hook.remove()
    assert seen == obj.annealing_levels() == [0, 4, 8, 11, 15]


@pytest.mark.parametrize("name", ["cd_ce", "joint_cd", "per_t", "cd_plain"])
def test_ood_and_histogram_scores_are_the_datas_energy_not_the_mixture_over_levels(name, gen):
    """``Objective.score`` (``eval --ood``, the energy histogram, the leaderboard's OOD AUROC) returned ``energy``,
    which for paper 000 is the marginal over all T levels, a mixture that is not the data's density."""
    cfg = _cfg(name)
    obj = build_objective(cfg, build_dataset(cfg.data))
    torch.nn.init.normal_(next(p for p in reversed(list(obj.energy.parameters())) if p.dim() == 2))  # levels differ
    x = torch.randn(16, 2, generator=gen)
    assert torch.equal(obj.score(x), obj.data_energy(x))
    assert torch.allclose(obj.score(x), -obj.log_density(x))
    if name != "cd_plain":
        assert not torch.allclose(obj.score(x), obj.energy(x))
