"""Known answers for the objectives' internals other than their loss formulas (a mutation check, docs/testing.md,
eighth round): paper 001's replay buffer, entropy set, stop-gradients and initial box
(``objectives/improved_cd.py``, ``buffers.py``); paper 003's levels, top-marginal pairs, optimizer groups and
fewer-step bookkeeping (``objectives/recovery.py``); paper 002's interpolates, gradient penalty and time buffer
(``objectives/implicit_diffusion.py``, ``buffers_time.py``); paper 000's level draws and per-t controllers
(``objectives/joint_time.py``); paper 004's bank and AIS weights (``objectives/contrastive.py``); the base class's
``steps_run`` and ``per_level_steps``; and the schedules' pair construction and initializer std.

No training beyond single ``forward`` calls: energies whose gradients have closed forms (a quadratic, a linear
function), chains without noise where the answer must be exact, and draw counts with a tolerance stated in
standard errors before running.
"""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ebmlab.objectives.improved_cd import ImprovedCD, ImprovedCDConfig, _init_box, nn_entropy_loss
from tests.builders import LinearEnergy as Linear


# ----- paper 001 (improved CD) --------------------------------------------------------------------------------
class Quadratic(nn.Module):
    """E_a(x) = a/2 |x|^2 (B,), float64."""

    def __init__(self, a: float = 1.5):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, x, **_):
        return 0.5 * self.a * x.flatten(1).pow(2).sum(1)


def _icd(dim=2, **kw) -> ImprovedCD:
    cfg = ImprovedCDConfig(**{"augment": False, "n_steps": 3, "step_size": 0.1, "noise_scale": 1e-30,
                              "reset_prob": 0.0, "buffer_size": 1000, **kw})
    return ImprovedCD(Quadratic(), cfg, (dim,), kind="vector", low=torch.full((dim,), -2.0),
                      high=torch.full((dim,), 2.0)).double()


def test_the_entropy_set_is_n_entropy_distinct_rows_of_the_buffer():
    """X of Alg. 1 is drawn without replacement: a buffer of 100 distinct rows gives all 100 once (n_entropy
    100) or 30 distinct ones (n_entropy 30); drawn with replacement about 37 of the 100 would be missing."""
    for n_entropy in (100, 30):
        obj = _icd(n_entropy=n_entropy)
        rows = torch.stack([torch.arange(100.0), torch.zeros(100)], 1).double()
        obj.buffer.push(rows)
        past = obj.past_samples(torch.Generator().manual_seed(0))
        ids = past[:, 0].long()
        assert past.shape == (n_entropy, 2) and ids.unique().numel() == n_entropy
        assert torch.equal(past, rows[ids])


@pytest.mark.parametrize("backprop_all", [False, True])
def test_the_loss_gradient_is_the_cd_term_on_detached_samples_plus_the_kl_term_through_the_last_step(backprop_all):
    """E = a/2 |x|^2 and noise 1e-30: the chain is x_k = (1 - lam a)^k x_0, so x_{K-1} = x_K / (1 - lam a).
    dL/da = (mean |x+|^2 - mean |x-|^2) / 2 (L_CD on stop-gradient samples: no term through x-)
          + mean a x_K . dx_K/da with dx_K/da = -lam x_{K-1} (Eq. 7, the last step only) or -K lam x_{K-1}
    (``backprop_all``: all K steps)."""
    lam, a, K = 0.1, 1.5, 3
    obj = _icd(kl=True, entropy=False, backprop_all=backprop_all, step_size=lam, n_steps=K)
    g = torch.Generator().manual_seed(0)
    obj.buffer.push(torch.randn(50, 2, generator=g).double())
    x_pos = torch.randn(16, 2, generator=g).double()
    out = obj(x_pos, generator=g)
    x_neg = out.negatives
    assert not x_neg.requires_grad
    (grad,) = torch.autograd.grad(out.loss, obj.energy.a)
    cd = 0.5 * (x_pos.pow(2).sum(1).mean() - x_neg.pow(2).sum(1).mean())
    steps = K if backprop_all else 1
    kl = (a * (x_neg * (-steps * lam * x_neg / (1 - lam * a))).sum(1)).mean()
    assert float(grad) == pytest.approx(float(cd + kl), rel=1e-9, abs=1e-12)


def test_the_entropy_term_follows_its_own_switch_and_uses_the_buffer_before_the_push():
    """L_ent = -mean log NN(x^-, X) with X the buffer *before* this iteration's push (here all 40 rows,
    n_entropy 100); ``entropy`` off gives 0 whatever ``kl`` says."""
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(40, 2, generator=g).double()
    for kl, entropy in ((False, True), (True, True), (True, False)):
        obj = _icd(kl=kl, entropy=entropy)
        obj.buffer.push(rows)
        out = obj(torch.randn(16, 2, generator=g).double(), generator=g)
        want = float(nn_entropy_loss(out.negatives, rows)) if entropy else 0.0
        assert float(out.metrics["loss_ent"]) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_the_buffer_receives_the_chain_ends():
    """Alg. 1: B <- B u x^K (the chains' last states, not their starts); FIFO, so the 16 new rows follow the 50."""
    obj = _icd()
    g = torch.Generator().manual_seed(2)
    obj.buffer.push(torch.randn(50, 2, generator=g).double())
    out = obj(torch.randn(16, 2, generator=g).double(), generator=g)
    assert len(obj.buffer) == 66 and torch.equal(obj.buffer.data[50:66], out.negatives)


def test_the_uniform_box_is_the_data_range_widened_by_ten_percent_each_side():
    train = torch.tensor([[0.0, -1.0], [2.0, 3.0], [1.0, 1.0]])
    lo, hi = _init_box(SimpleNamespace(kind="vector", train=train))
    assert torch.allclose(lo, torch.tensor([-0.2, -1.4])) and torch.allclose(hi, torch.tensor([2.2, 3.4]))
    lo, hi = _init_box(SimpleNamespace(kind="image", train=None))
    assert float(lo) == -1.0 and float(hi) == 1.0


# ----- paper 003 (recovery likelihood) ------------------------------------------------------------------------
def _recovery(**kw):
    from ebmlab.energies.mlp import MLPEnergy
    from ebmlab.objectives.recovery import RecoveryConfig, RecoveryLikelihood
    cfg = RecoveryConfig(**{"T": 4, "n_steps": 1, **kw})
    torch.manual_seed(0)
    return RecoveryLikelihood(MLPEnergy(2, 16, 1, cond_dim=cfg.embed_dim), cfg, (2,))


def _record_net_energy(obj):
    calls = []
    net_energy = obj.energy.net_energy

    def recording(y, t, labels=None):
        calls.append((y.detach().clone(), t.clone()))
        return net_energy(y, t, labels)
    obj.energy.net_energy = recording
    return calls


@pytest.mark.parametrize("top_marginal", [False, True])
def test_the_positive_pairs_are_alpha_x_t_and_at_the_marginal_top_x_t_itself(top_marginal, monkeypatch):
    """Data x_0 = 0 and shared noise e: x_t = sbar_t e, x_{t+1} = sbar_{t+1} e, so the positive y_t (the second-last
    network call, e_pos) is alpha_{t+1} sbar_t / sbar_{t+1} x_{t+1}, and x_{T-1} = sbar_{T-1} / sbar_T x_T at the top
    level of ``top_marginal`` (its y is x_{T-1} itself)."""
    obj = _recovery(top_marginal=top_marginal, cooperative=False)
    calls = _record_net_energy(obj)
    captured = {}
    import ebmlab.objectives.recovery as rec
    orig = rec.schedules.shared_noise_pair

    def pair(*a, **k):
        captured["pair"] = orig(*a, **k)
        return captured["pair"]
    monkeypatch.setattr(rec.schedules, "shared_noise_pair", pair)
    obj(torch.zeros(400, 2), generator=torch.Generator().manual_seed(0))
    y, t = calls[-2]
    x_next = captured["pair"][1]
    lv = {k: v.float() for k, v in obj.levels.items()}
    ratio = lv["alpha"][t] * lv["sbar"][t] / lv["sbar"][t + 1]
    if top_marginal:
        top = t == obj.cfg.T - 1
        ratio = torch.where(top, lv["sbar"][t] / lv["sbar"][t + 1], ratio)
    assert set(t.tolist()) == set(range(obj.cfg.T))
    assert torch.allclose(y, ratio[:, None] * x_next, rtol=1e-5, atol=1e-6)


def test_training_levels_are_uniform_over_all_T_levels():
    """Alg. 1: t ~ U{0, ..., T-1} per example: each of T = 4 levels has 1/4 of 8,000 draws within 5 binomial SE
    (the top level T-1 is drawn too)."""
    obj = _recovery(cooperative=False)
    calls = _record_net_energy(obj)
    n = 8000
    obj(torch.zeros(n, 2), generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(calls[-2][1], minlength=obj.cfg.T).double()
    p = 1 / obj.cfg.T
    assert counts.numel() == obj.cfg.T
    assert (counts / n - p).abs().max() < 5 * math.sqrt(p * (1 - p) / n)


# ----- paper 002 (implicit diffusion) -------------------------------------------------------------------------
class Centred(nn.Module):
    """E(x, t) = s/2 |x - m|^2: gradient s (x - m), norm s |x - m|; float32."""

    def __init__(self, s=3.0):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(float(s)))
        self.m = nn.Parameter(torch.zeros(2))

    def forward(self, x, t=None):
        return 0.5 * self.s * (x - self.m).pow(2).sum(1)




def _implicit(energy, **kw):
    from ebmlab.objectives.implicit_diffusion import ImplicitDiffusion, ImplicitDiffusionConfig
    cfg = ImplicitDiffusionConfig(**{"T": 4, "K": 2, "eta": 0.1, "sigma": 0.3, "buffer_size": 4000, **kw})
    torch.manual_seed(0)
    return ImplicitDiffusion(energy, cfg, (2,))


def test_the_gradient_penalty_is_taken_at_uniform_interpolates_of_negatives_and_data(monkeypatch):
    """Eq. 18: x^ = a x- + (1 - a) x+, a ~ U[0, 1] per example: every x^ lies on its segment, the a's have mean
    1/2 and variance 1/12 (5 SE of 2,000 draws), and ``grad_norm_hat`` is s |x^| for E = s/2 |x|^2."""
    import ebmlab.objectives.implicit_diffusion as imp
    seen = []
    orig = imp.energy_and_grad

    def recording(energy, x, **kw):
        seen.append(x.detach().clone())
        return orig(energy, x, **kw)
    monkeypatch.setattr(imp, "energy_and_grad", recording)
    obj = _implicit(Centred(3.0))
    g = torch.Generator().manual_seed(0)
    x_pos = 4.0 + torch.randn(2000, 2, generator=g)
    out = obj(x_pos, generator=g)
    (x_hat,) = seen
    d = out.negatives - x_pos
    a = ((x_hat - x_pos) * d).sum(1) / d.pow(2).sum(1)
    assert torch.allclose(x_pos + a[:, None] * d, x_hat, atol=1e-4)
    assert float(a.min()) >= -1e-4 and float(a.max()) <= 1 + 1e-4
    n = a.numel()
    assert abs(float(a.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(float(a.var()) - 1 / 12) < 5 * math.sqrt(1 / 180 / n)  # var of (a - 1/2)^2 is 1/180
    assert float(out.metrics["grad_norm_hat"]) == pytest.approx(float(3.0 * x_hat.norm(dim=1).mean()), rel=1e-5)


def test_the_gradient_penalty_reaches_the_parameters():
    """E = c sum x: loss = c (mean sum x+ - mean sum x-) + lam (c sqrt 2 - 1)^2, so
    dloss/dc = mean sum x+ - mean sum x- + 2 lam sqrt 2 (c sqrt 2 - 1) (the chain's x- carry no graph)."""
    c, lam = 2.0, 5.0
    obj = _implicit(Linear(c), lam=lam, buffer_size=64)
    g = torch.Generator().manual_seed(1)
    x_pos = torch.randn(32, 2, generator=g)
    out = obj(x_pos, generator=g)
    (grad,) = torch.autograd.grad(out.loss, obj.energy.c)
    want = x_pos.sum(1).mean() - out.negatives.sum(1).mean() + 2 * lam * math.sqrt(2) * (c * math.sqrt(2) - 1)
    assert float(grad) == pytest.approx(float(want), rel=1e-5)


def test_the_buffer_slots_drawn_hold_the_advanced_chains_one_time_lower():
    """Alg. 1: each drawn slot gets its chain's end x- at t - 1 (t = 1 slots: fresh noise at T); the slots not
    drawn are untouched."""
    obj = _implicit(Centred(3.0), buffer_size=64)
    data0, t0 = obj.buffer.data.clone(), obj.buffer.t.clone()
    g = torch.Generator().manual_seed(2)
    out = obj(torch.randn(16, 2, generator=g), generator=g)
    data1, t1 = obj.buffer.data, obj.buffer.t
    changed = (t1 != t0)
    assert int(changed.sum()) == 16
    assert torch.equal(t1[changed], torch.where(t0[changed] == 1, torch.full_like(t0[changed], obj.cfg.T),
                                                t0[changed] - 1))
    assert torch.equal(data1[~changed], data0[~changed])
    moved = changed & (t0 > 1)
    dist = torch.cdist(data1[moved], out.negatives)  # each advanced slot holds one of the batch's chain ends
    assert int(moved.sum()) > 0 and float(dist.min(1).values.max()) == 0.0


# ----- paper 000 (joint time) ---------------------------------------------------------------------------------
def _joint(name, *extra):
    from ebmlab.objectives import build_objective
    from ebmlab.training.config import load_config
    from tests.contracts.test_objective_contract import tiny_overrides
    cfg = load_config(None, tiny_overrides(name) + ["method.T=8", *extra])
    torch.manual_seed(0)
    data = SimpleNamespace(kind="vector", shape=(2,), name="toy", num_classes=0, train=torch.randn(64, 2), info={})
    return build_objective(cfg, data)


@pytest.mark.parametrize("levels", [[2], [1, 6]])
def test_the_per_t_chains_adapt_the_step_sizes_of_their_own_levels_only(levels):
    """Option 1's chains on p(z | t) adapt ``ctrl_cond``'s entry t of the chain's own level, no other."""
    obj = _joint("per_t")
    g = torch.Generator().manual_seed(0)
    t = torch.tensor(levels).repeat_interleave(16)
    before = obj.ctrl_cond.log_step.clone()
    obj._per_t_loss(0.3 * torch.randn(t.numel(), 2, generator=g), t, 3, g)
    changed = (obj.ctrl_cond.log_step != before).nonzero().flatten().tolist()
    assert changed == levels


def test_the_shared_marginal_step_starts_from_the_middle_levels_beta():
    """App. C.1: eps = mu^2 / 2, mu = 0.4 sigma_n max(beta_t, floor); the shared step at t = T/2 (beta = 3/7 for
    T = 8), per level at every t, and plain CD at the data level (beta = 0: the floor)."""
    def eps(beta, o):
        return 0.5 * (0.4 * o.cfg.sigma_n * max(beta, o.cfg.init_beta_floor)) ** 2
    shared = _joint("cd_ce")
    assert shared.ctrl.log_step.shape == (1,)
    assert float(shared.ctrl.log_step.exp()[0]) == pytest.approx(eps(3 / 7, shared), rel=1e-5)
    per_level = _joint("cd_ce", "method.marginal_step=per_level")
    want = torch.tensor([eps(1 - t / 7, per_level) for t in range(8)])
    assert torch.allclose(per_level.ctrl.log_step.exp(), want.float(), rtol=1e-5)
    plain = _joint("cd_plain")
    assert float(plain.ctrl.log_step.exp()[0]) == pytest.approx(eps(0.0, plain), rel=1e-5)


# ----- paper 004 (contrastive divergence) ---------------------------------------------------------------------
class Gauss(nn.Module):
    """E(x) = |x|^2 / (2 s^2): exp(-E) is N(0, s^2 I)."""

    def __init__(self, s=1.0):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(float(s)))

    def forward(self, x):
        return 0.5 * x.pow(2).sum(1) / self.s ** 2


def _cd(name, energy=None, **kw):
    from ebmlab.objectives.contrastive import ContrastiveConfig, ContrastiveDivergence
    cfg = ContrastiveConfig(**{"name": name, "n_steps": 3, "n_steps_data": 2, "buffer_size": 64, **kw})
    torch.manual_seed(0)
    return ContrastiveDivergence(energy or Gauss(), cfg, (2,))


@pytest.mark.parametrize("name", ["persistent", "persistent_refresh"])
def test_the_bank_slots_drawn_are_overwritten_by_their_chains_ends(name):
    obj = _cd(name, refresh_prob=0.5)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        before = obj.bank.data.clone()
        out = obj(torch.randn(16, 2, generator=g), generator=g)
        changed = (obj.bank.data != before).any(1)
        assert int(changed.sum()) == 16
        assert float(torch.cdist(obj.bank.data[changed], out.negatives).min(1).values.max()) == 0.0


def test_the_data_and_noise_chains_adapt_their_own_step_size_controllers():
    """One controller per chain family: the data scheme adapts ``ctrl_data`` only; the noise scheme ``ctrl_noise``
    only; hybrid both."""
    g = torch.Generator().manual_seed(1)
    for name, moved in (("data", {"ctrl_data"}), ("noise", {"ctrl_noise"}), ("hybrid", {"ctrl_data", "ctrl_noise"})):
        obj = _cd(name, noise_chain="short_run")
        before = {k: getattr(obj, k).log_step.clone() for k in ("ctrl_data", "ctrl_noise")}
        obj(torch.randn(32, 2, generator=g), generator=g)
        after = {k for k in before if not torch.equal(getattr(obj, k).log_step, before[k])}
        assert after == moved, name


def test_ais_chains_from_the_target_itself_have_equal_weights():
    """``noise_chain: ais`` from N(0, train_init_std^2) towards exp(-E) = N(0, s^2) with s = train_init_std: every
    log-weight increment is the same constant, so the weights are equal and Kish's ESS is the batch size; a
    reference of the wrong std (init_std 1) gives unequal weights."""
    obj = _cd("noise", Gauss(0.5), noise_chain="ais", train_init_std=0.5, init_std=1.0, ais_resample=0.0)
    out = obj(torch.randn(64, 2, generator=torch.Generator().manual_seed(2)),
              generator=torch.Generator().manual_seed(3))
    assert float(out.metrics["ais_ess"]) == pytest.approx(64.0, rel=1e-4)


def test_ais_weights_are_the_softmax_of_the_ais_log_weights(monkeypatch):
    """``_ais`` returns softmax(log w) of the AIS run (the weight of chain i grows with its log-weight)."""
    import ebmlab.objectives.contrastive as con
    seen = []
    orig = con.ais

    def recording(*a, **k):
        seen.append(orig(*a, **k))
        return seen[-1]
    monkeypatch.setattr(con, "ais", recording)
    obj = _cd("noise", Gauss(0.5), noise_chain="ais", ais_resample=0.0)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(4))
    _, w, _ = obj._ais(x0, obj.ctrl_noise, torch.Generator().manual_seed(5))
    lw = seen[0].log_weights
    assert float(lw.std()) > 0.1
    assert torch.allclose(w, torch.softmax(lw, 0)) and int(w.argmax()) == int(lw.argmax())


# ----- the base class and paper 003's optimizer groups ---------------------------------------------------------
def test_the_default_param_groups_hold_every_trainable_parameter_of_the_objective_once():
    """``Objective.param_groups``: one group at ``lr`` with all trainable parameters (the energy's and any other
    module's, e.g. a learned prior), none frozen."""
    from ebmlab.objectives.base import Objective

    class TwoParts(Objective):
        def __init__(self):
            super().__init__()
            self.energy, self.extra, self.frozen = nn.Linear(2, 1), nn.Linear(2, 2), nn.Linear(2, 2)
            self.frozen.requires_grad_(False)
    obj = TwoParts()
    (group,) = obj.param_groups(3e-4)
    want = list(obj.energy.parameters()) + list(obj.extra.parameters())
    assert group["lr"] == 3e-4 and len(group["params"]) == len(want)
    assert {id(p) for p in group["params"]} == {id(p) for p in want}


def test_recovery_param_groups_split_the_two_networks_with_their_own_lr_warmup_and_head_start():
    """Eq. 15: the EBM at ``train.lr`` with ``ebm_warmup``; the initializer at ``init_lr`` with ``init_warmup``,
    its schedule shifted ``init_head_start`` iterations earlier (delay -500); every parameter in exactly one group."""
    obj = _recovery(init_lr=2e-5, ebm_warmup=7, init_warmup=11, init_head_start=500)
    energy, init = obj.param_groups(1e-4)
    assert (energy["name"], energy["lr"], energy["warmup"], energy["delay"]) == ("energy", 1e-4, 7, 0)
    assert (init["name"], init["lr"], init["warmup"], init["delay"]) == ("initializer", 2e-5, 11, -500)
    assert {id(p) for p in energy["params"]} == {id(p) for p in obj.energy.parameters()}
    assert {id(p) for p in init["params"]} == {id(p) for p in obj.initializer.parameters()}
    assert len(energy["params"]) + len(init["params"]) == len(list(obj.parameters()))


# ----- sampling paths and the FIFO buffer ---------------------------------------------------------------------
def test_a_conditional_improved_cd_model_samples_every_class_uniformly_by_default(monkeypatch):
    """``sample`` without ``cond`` draws y ~ U{0..C-1}: each of C = 3 classes has 1/3 of 6,000 labels within 5
    binomial SE (the last class included)."""
    obj = ImprovedCD(Quadratic(), ImprovedCDConfig(augment=False, conditional=True), (2,), kind="vector",
                     low=torch.full((2,), -2.0), high=torch.full((2,), 2.0), num_classes=3)
    seen = {}

    def generate(energy, x0, *, n_steps=None, generator=None, **cond):
        seen.update(cond)
        return x0, SimpleNamespace(as_dict=dict)
    monkeypatch.setattr(obj, "generate", generate)
    n = 6000
    obj.sample(n, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(seen["y"], minlength=3).double() / n
    assert freq.numel() == 3 and (freq - 1 / 3).abs().max() < 5 * math.sqrt(2 / 9 / n)


def test_sampling_never_adapts_the_training_controller():
    """Paper 004's ``sample`` runs with a private copy of the adapted MALA step: the controller stays as trained."""
    obj = _cd("noise", noise_chain="short_run")
    obj(torch.randn(32, 2, generator=torch.Generator().manual_seed(0)), generator=torch.Generator().manual_seed(1))
    before = obj.ctrl_noise.log_step.clone()
    obj.sample(64, generator=torch.Generator().manual_seed(2), n_steps=5)
    assert torch.equal(obj.ctrl_noise.log_step, before)


def test_annealing_starts_with_the_reference_levels_step(monkeypatch):
    """Alg. 3's first stage is p_n = N(0, sigma_n^2): its step is App. C.1's eps = (0.4 sigma_n beta_0)^2 / 2 with
    beta_0 = 1 (for annealing and soft annealing)."""
    import ebmlab.objectives.joint_time as jt
    obj = _joint("cd_ce")
    seen = []

    def fake(energy, x, *a, init_step, **k):
        seen.append(init_step)
        return x, {}
    monkeypatch.setattr(jt, "simulated_annealing", fake)
    monkeypatch.setattr(jt, "soft_annealing", fake)
    for algorithm in ("annealing", "soft"):
        obj.generate(4, algorithm=algorithm, generator=torch.Generator().manual_seed(0))
    want = 0.5 * (0.4 * obj.cfg.sigma_n) ** 2
    assert seen == [pytest.approx(want, rel=1e-6)] * 2


def test_a_push_larger_than_the_fifo_keeps_the_newest_rows():
    from ebmlab.buffers import ReplayBuffer
    buf = ReplayBuffer(5, (1,), lambda n, g=None: torch.zeros(n, 1))
    buf.push(torch.arange(8.0)[:, None])
    assert len(buf) == 5 and sorted(buf.data[:, 0].tolist()) == [3.0, 4.0, 5.0, 6.0, 7.0]
    buf.push(torch.tensor([[8.0], [9.0]]))  # the two oldest (3, 4) go
    assert sorted(buf.data[:, 0].tolist()) == [5.0, 6.0, 7.0, 8.0, 9.0]
