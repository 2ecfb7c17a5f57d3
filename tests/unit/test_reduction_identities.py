"""Reduction identities between methods: settings under which, by the papers and the code's own docstrings, one
method's objective (or generation procedure) must become another's, or a known closed form.

- paper 004 (Eq. 6, Alg. 1; ``objectives/contrastive.py``): the hybrid loss is the noise scheme's loss plus lambda
  times the data scheme's (its data chain runs first on the shared generator, so running ``data`` then ``noise`` on
  one generator reproduces it); ``persistent_refresh`` with ``refresh_prob`` 0 is ``persistent``, with 1 every batch
  restarts from noise like the ``noise`` scheme (short-run chains); AIS chains on an energy equal to their Gaussian
  reference carry equal weights;
- paper 001 (Alg. 1, Eq. 5-8; ``objectives/improved_cd.py``): with KL, entropy, augmentation and multiscale off and
  reset rate 1 the loss is noise-initialised CD (paper 004's ``noise`` scheme with the same start and Langevin
  knobs); the KL / entropy terms change neither the chain nor L_CD; on a linear energy E = w.x the L_opt gradient is
  -lambda w through the last step (Eq. 7), -K lambda w through all K (App. D.2);
- paper 000 (Eq. 3-8, Alg. 1-2; ``objectives/joint_time.py``): ``cd_plain`` is paper 004's ``data`` scheme with the
  same MALA step rule; ``cd_ce`` with ``ce_weight`` 0 is CD on the marginal energy -logsumexp f; on one chain
  JointCD - (CD + CE) = <log p(t~ | z~)>; ``per_t`` is E(z|t) - E(z^c|t) (+ ce_weight x CE); a model whose
  increments are zero has p(t | z) uniform, CE = log T;
- paper 003 (``objectives/recovery.py``, ``DRLConfig``): ``cdrl`` with DRLConfig's settings (cooperative off, ...) is
  ``drl``; Alg. 2 with 0 Langevin steps and no initializer is x_0 = x_T / prod_t y_scale_t;
- paper 002 (Sec. 4.1-4.4, Alg. 1; ``objectives/implicit_diffusion.py``): with sigma = 0 on E = (t/T)|x - c|^2/2
  the sweep is the closed form c + prod_t (1 - eta t / 2T)^K (x_T - c), and T training iterations of the (x, t)
  buffer reproduce the generation sweep bit for bit (the buffers_time.py docstring's claim).

Tolerances: where both sides run the same float32 operations in the same order the test asks for equality (bit for
bit); where one side sums terms the other adds separately (the hybrid's gradient, JointCD's difference, closed
forms), the tolerance is a few float32 ulps of the values involved (values of order 1: 1e-5).
"""
import math

import pytest
import torch
from torch import nn

from ebmlab.data import build_dataset
from ebmlab.objectives import build_objective
from ebmlab.schedules import sample_levels, sample_series
from ebmlab.training.config import load_config

BASE = ["model.width=16", "model.depth=1", "data.n_train=256", "data.n_test=64", "train.batch_size=16",
        "data.name=checkerboard"]


def _build(name, *extra, seed=0):
    """The objective of ``name`` on a tiny 2-D toy; the same seed gives the same initial weights for every method
    whose network is built the same way."""
    cfg = load_config(None, BASE + [f"method.name={name}", *extra])
    torch.manual_seed(seed)
    data = build_dataset(cfg.data)
    torch.manual_seed(seed)
    return build_objective(cfg, data), data


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if k in sb and sa[k].is_floating_point())


def _train(obj, data, steps=3, seed=1):
    """``steps`` Adam updates on consecutive batches; the losses."""
    opt, g, losses = torch.optim.Adam(obj.parameters(), lr=1e-2), _g(seed), []
    for i in range(steps):
        out = obj(data.train[16 * i:16 * (i + 1)], generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    return losses


# ----- paper 004 --------------------------------------------------------------------------------------------------
CHAINS = {"mala_ais": [], "langevin": ["method.sampler=langevin", "method.target_accept=null"],
          "paper004_rule": ["method.step_rule=paper004", "method.step_size=0.3"]}


@pytest.mark.parametrize("chains", sorted(CHAINS))
@pytest.mark.parametrize("lam", [0.0, 5.0])
def test_hybrid_loss_is_the_noise_schemes_plus_lambda_times_the_data_schemes(lam, chains):
    """Eq. 6: L_hybrid = L_noise + lambda L_data. The hybrid runs its data chain first on the shared generator, so
    ``data`` then ``noise`` on one generator see the same draws: the losses, gaps and negatives are bit-identical,
    the summed gradients equal to float32 rounding (the hybrid sums before the backward pass). lambda = 0: the
    hybrid is the noise scheme. Default energy_l2 (0.01) included: the hybrid's data bracket carries lambda x its L2."""
    extra = ["method.n_steps=3", "method.n_steps_data=2", *CHAINS[chains]]
    hyb, data = _build("hybrid", f"method.lam={lam}", *extra)
    dat, _ = _build("data", *extra)
    noi, _ = _build("noise", *extra, f"method.noise_chain={hyb.cfg.noise_chain}")
    assert _same_weights(hyb.energy, dat.energy) and _same_weights(hyb.energy, noi.energy)
    x = data.train[:16]
    oh = hyb(x, generator=_g(1))
    g = _g(1)
    od, on = dat(x, generator=g), noi(x, generator=g)
    assert torch.equal(oh.metrics["energy_gap_data"], od.metrics["energy_gap"])
    assert torch.equal(oh.metrics["energy_gap"], on.metrics["energy_gap"])
    assert torch.equal(oh.negatives, on.negatives)
    want = on.loss + lam * od.loss
    assert float(oh.loss.detach()) == pytest.approx(float(want.detach()), rel=1e-6, abs=1e-7)
    oh.loss.backward()
    want.backward()
    for ph, pn, pd in zip(hyb.energy.parameters(), noi.energy.parameters(), dat.energy.parameters()):
        assert torch.allclose(ph.grad, pn.grad + pd.grad, rtol=1e-5, atol=1e-6)  # pd.grad already carries lambda


def test_persistent_refresh_with_refresh_prob_0_is_persistent():
    """Sec. 3: the refresh variant restarts a batch from noise with probability refresh_prob; at 0 it is the
    persistent scheme (the bank draws the same random numbers): 3 updates, losses and weights bit-identical."""
    extra = ["method.n_steps=3", "method.buffer_size=64"]
    per, data = _build("persistent", *extra)
    ref, _ = _build("persistent_refresh", *extra, "method.refresh_prob=0.0")
    assert torch.equal(per.bank.data, ref.bank.data)
    assert _train(per, data) == _train(ref, data)
    assert _same_weights(per, ref)
    g1, g2 = _g(4), _g(4)  # 200 more bank draws (no chains: cheap): a refresh at any rate > 1 % shows
    for _ in range(200):
        (x1, i1), (x2, i2) = per._start(16, g1), ref._start(16, g2)
        assert torch.equal(x1, x2) and torch.equal(i1, i2)


def test_persistent_refresh_with_refresh_prob_1_restarts_every_batch_like_the_noise_scheme():
    """refresh_prob 1: every batch starts from N(0, init_std^2), drawn first from the generator as the noise scheme
    draws it (bit-identical starts); with the chain noise made negligible (noise_scale 1e-30 vanishes against x in
    float32) the short-run chains, negatives and loss are bit-identical too."""
    extra = ["method.n_steps=3", "method.buffer_size=64", "method.sampler=langevin", "method.target_accept=null",
             "method.noise_scale=1e-30"]
    ref, data = _build("persistent_refresh", *extra, "method.refresh_prob=1.0")
    noi, _ = _build("noise", *extra, "method.noise_chain=short_run")
    assert torch.equal(ref._start(16, _g(3))[0], noi._start(16, _g(3))[0])
    x = data.train[:16]
    a, b = ref(x, generator=_g(1)), noi(x, generator=_g(1))
    assert torch.equal(a.negatives, b.negatives) and torch.equal(a.loss, b.loss)


class _Quadratic(nn.Module):
    """E(x) = a |x|^2 / 2."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))

    def forward(self, x):
        return 0.5 * self.a * x.pow(2).sum(1)


@pytest.mark.parametrize("std", [1.0, 0.5])
def test_ais_weights_are_equal_when_the_energy_is_its_gaussian_reference(std):
    """samplers/ais.py: f_k = exp(-beta_k E - (1 - beta_k)|x|^2 / 2s^2); E = |x|^2 / 2s^2 makes every increment 0,
    so the weights are uniform and Kish's ESS is the batch size (to float32 rounding of the softmax)."""
    from ebmlab.objectives.contrastive import ContrastiveConfig, ContrastiveDivergence
    cfg = ContrastiveConfig(name="noise", noise_chain="ais", n_steps=5, energy_l2=0.0, init_std=std, ais_resample=0.0)
    obj = ContrastiveDivergence(_Quadratic(1 / std ** 2), cfg, (2,))
    out = obj(torch.randn(64, 2, generator=_g(0)), generator=_g(1))
    assert float(out.metrics["ais_ess"]) == pytest.approx(64.0, rel=1e-5)


# ----- paper 001 --------------------------------------------------------------------------------------------------
OFF = ["method.augment=false", "method.multiscale=false", "method.kl=false", "method.entropy=false",
       "method.n_steps=3", "method.step_size=0.01", "method.noise_scale=0.1", "method.buffer_size=64"]


def test_improved_cd_without_its_additions_and_reset_rate_1_is_noise_initialised_cd():
    """Alg. 1 with r = 1 and no KL / entropy / augmentation / multiscale: chains from the uniform prior, K Langevin
    steps (lambda, sigma), loss <E(x+)> - <E(x->)> (Eq. 5) = paper 004's noise scheme with the same start and knobs
    (Langevin, step lambda, noise sigma, no L2): bit-identical negatives and loss on the first update."""
    icd, data = _build("improved_cd", *OFF, "method.reset_prob=1.0")
    noi, _ = _build("noise", "method.sampler=langevin", "method.target_accept=null", "method.noise_chain=short_run",
                    "method.n_steps=3", "method.step_size=0.01", "method.noise_scale=0.1", "method.energy_l2=0")
    assert _same_weights(icd.energy, noi.energy)
    noi.prior = icd.prior  # paper 001's uniform box instead of N(0, I)
    x = data.train[:16]
    a, b = icd(x, generator=_g(1)), noi(x, generator=_g(1))
    assert torch.equal(a.negatives, b.negatives) and torch.equal(a.loss, b.loss)


@pytest.mark.parametrize("term", ["kl", "entropy"])
def test_improved_cd_kl_and_entropy_terms_change_neither_the_chain_nor_the_cd_loss(term):
    """L_KL = L_opt + L_ent (Eq. 6-8) is added to L_CD; differentiating through the last step (grad="last") must not
    change the chain's values or the replay buffer: 3 iterations, negatives and L_CD bit-identical with the term on
    and off (the term itself is nonzero from the second iteration at the latest)."""
    off, data = _build("improved_cd", *OFF, "method.reset_prob=0.5")
    on, _ = _build("improved_cd", *[o for o in OFF if o != f"method.{term}=false"], f"method.{term}=true",
                   "method.reset_prob=0.5")
    g1, g2, seen = _g(1), _g(1), 0.0
    for k in range(3):
        x = data.train[16 * k:16 * (k + 1)]
        a, b = off(x, generator=g1), on(x, generator=g2)
        assert torch.equal(a.negatives, b.negatives)
        assert torch.equal(a.metrics["loss_cd"], b.metrics["loss_cd"])
        seen += abs(float(b.metrics["loss_opt" if term == "kl" else "loss_ent"]))
    assert seen > 0


class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.7, -1.3]))

    def forward(self, x):
        return x @ self.w


@pytest.mark.parametrize("backprop_all", [False, True])
def test_improved_cd_kl_gradient_on_a_linear_energy_is_minus_lambda_w_per_differentiable_step(backprop_all):
    """E = w.x: a Langevin step x - lambda w + noise has d x / d w = -lambda I, and L_opt = <E_stopgrad(x^)> gives
    dL_opt/dw = -lambda w per differentiable step: 1 (Eq. 7, the last step) or K (App. D.2, all). The CD part's
    gradient is <x+> - <x->. Tolerance: float32 rounding of sums over 16 rows of order-1 values."""
    from ebmlab.objectives.improved_cd import ImprovedCD, ImprovedCDConfig
    cfg = ImprovedCDConfig(n_steps=4, step_size=0.1, noise_scale=0.05, kl=True, entropy=False, augment=False,
                           buffer_size=64, backprop_all=backprop_all)
    obj = ImprovedCD(_Linear(), cfg, (2,), kind="vector", low=torch.tensor(-1.0), high=torch.tensor(1.0))
    x = torch.randn(16, 2, generator=_g(0))
    out = obj(x, generator=_g(1))
    out.loss.backward()
    kl_grad = obj.energy.w.grad - (x.mean(0) - out.negatives.mean(0))
    want = -cfg.step_size * obj.energy.w.detach() * (cfg.n_steps if backprop_all else 1)
    assert torch.allclose(kl_grad, want, rtol=1e-5, atol=1e-6)


# ----- paper 000 --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("step", [0.01, 0.003])
def test_cd_plain_is_paper_004s_data_scheme_with_the_same_mala_rule(step):
    """cd_plain (vanilla CD, Hinton 2002: K MALA steps from the data, one Robbins-Monro step size) and paper 004's
    data scheme with MALA, the same initial step, target acceptance and rate, no L2: 3 updates bit-identical
    (losses, weights, adapted step)."""
    pla, data = _build("cd_plain", "method.n_steps=3", f"method.init_step={step}", "method.target_accept=0.6")
    dat, _ = _build("data", "method.n_steps_data=3", "method.sampler=mala", f"method.step_size={step}",
                    "method.target_accept=0.6", "method.energy_l2=0", "method.noise_chain=short_run")
    assert _same_weights(pla.energy, dat.energy)
    assert _train(pla, data) == _train(dat, data)
    assert _same_weights(pla.energy, dat.energy)
    assert torch.equal(pla.ctrl.log_step, dat.ctrl_data.log_step)


def _capture_transition(obj):
    box, orig = {}, obj.transition

    def transition(*a, **k):
        box["out"] = orig(*a, **k)
        return box["out"]
    obj.transition = transition
    return box


J = ["method.T=4", "method.n_steps=3", "method.increments_init=torch"]


def _series(obj, x, seed):
    """(z, t) as ``forward`` draws them first from a generator seeded ``seed``."""
    g = _g(seed)
    t = sample_levels(x.shape[0], obj.cfg.T, g, x.device)
    return sample_series(x, t, obj.alpha, obj.beta, obj.cfg.sigma_n, g), t


def test_cd_ce_with_ce_weight_0_is_cd_on_the_marginal_energy():
    """Eq. 6 alone: log p(z~) - log p(z) = E(z) - E(z~) with E = -logsumexp_t f_t (Eq. 4), bit for bit."""
    obj, data = _build("cd_ce", *J, "method.ce_weight=0")
    x = data.train[:16]
    out = obj(x, generator=_g(1))
    z, _ = _series(obj, x, 1)
    with torch.no_grad():
        assert torch.equal(out.loss.detach(), obj.energy(z).mean() - obj.energy(out.negatives).mean())


def test_joint_cd_minus_cd_ce_is_the_mean_log_p_t_given_z_of_the_chain_ends():
    """Same chain (both draw t~ ~ p(t|z~), Eq. 9): f_t~(z~) - f_t(z) = [log p(z~) - log p(z) - log p(t|z)] +
    log p(t~|z~), i.e. JointCD (Eq. 3, ce 0) = CD+CE (Eq. 6 + Eq. 8, ce 1) + <log p(t~|z~)>; to float32 rounding."""
    ce, data = _build("cd_ce", *J, "method.ce_weight=1")
    jc, _ = _build("joint_cd", *J, "method.ce_weight=0")
    bc, bj = _capture_transition(ce), _capture_transition(jc)
    x = data.train[:16]
    a, b = ce(x, generator=_g(1)), jc(x, generator=_g(1))
    (zc, tc, _), (zj, tj, _) = bc["out"], bj["out"]
    assert torch.equal(zc, zj) and torch.equal(tc, tj)
    with torch.no_grad():
        log_pt = ce.energy.log_t_given_z(zc).gather(1, tc[:, None]).mean()
    assert float((b.loss - a.loss).detach()) == pytest.approx(float(log_pt), abs=1e-5)


def test_per_t_is_the_conditional_cd_loss_plus_ce_weight_times_ce():
    """Option 1: E[log p(z^c|t) - log p(z|t)] = <E(z|t)> - <E(z^c|t)>, plus ce_weight x CE when set (same chain)."""
    p0, data = _build("per_t", *J)
    p1, _ = _build("per_t", *J, "method.ce_weight=0.5")
    x = data.train[:16]
    a, b = p0(x, generator=_g(1)), p1(x, generator=_g(1))
    z, t = _series(p0, x, 1)
    with torch.no_grad():
        assert torch.equal(a.loss.detach(), p0.energy(z, t=t).mean() - p0.energy(a.negatives, t=t).mean())
    assert torch.equal(a.negatives, b.negatives)
    assert float(b.loss.detach()) == pytest.approx(float(a.loss.detach()) + 0.5 * float(b.metrics["ce"]), rel=1e-6)


@pytest.mark.parametrize("T", [2, 5])
def test_zero_increments_make_p_t_given_z_uniform(T):
    """increments_init zero (the default): every f_t = log p_n + log p_t, so log p(t|z) = -log T and CE = log T."""
    obj, data = _build("cd_ce", f"method.T={T}", "method.n_steps=2")
    out = obj(data.train[:16], generator=_g(1))
    assert float(out.metrics["ce"]) == pytest.approx(math.log(T), rel=1e-6)


# ----- paper 003 --------------------------------------------------------------------------------------------------
def test_cdrl_with_drls_settings_is_drl():
    """DRLConfig differs from RecoveryConfig only in its defaults (its docstring lists them): cdrl with those
    values (cooperative off, DRL schedule, step_coef, no variance reduction, top marginal, sigma weights, no
    Tweedie) is drl: loss, negatives and Alg. 2 samples bit-identical."""
    drl_keys = ["method.schedule=drl", "method.step_coef=0.02", "method.cooperative=false",
                "method.variance_reduction=false", "method.denoise=false", "method.top_marginal=true",
                "method.loss_weight=sigma"]
    extra = ["method.T=4", "method.n_steps=3"]
    c, data = _build("cdrl", *extra, *drl_keys)
    d, _ = _build("drl", *extra)
    from ebmlab.objectives.recovery import DRLConfig, RecoveryConfig
    import dataclasses
    differs = {f.name for f in dataclasses.fields(DRLConfig) if getattr(DRLConfig(), f.name) != getattr(RecoveryConfig(), f.name)}
    assert differs - {"name", "n_steps"} == {k.split(".")[1].split("=")[0] for k in drl_keys}  # the list is complete
    assert _same_weights(c, d) and c.initializer is None and d.initializer is None
    x = data.train[:16]
    a, b = c(x, generator=_g(1)), d(x, generator=_g(1))
    assert torch.equal(a.loss, b.loss) and torch.equal(a.negatives, b.negatives)
    assert torch.equal(c.sample(8, generator=_g(2)).x, d.sample(8, generator=_g(2)).x)


@pytest.mark.parametrize("name, extra", [("drl", []), ("cdrl", ["method.cooperative=false", "method.denoise=false"])])
def test_alg2_with_no_langevin_steps_and_no_initializer_only_rescales(name, extra):
    """Alg. 2 with K' = 0 and no initializer: y^ = x_{t+1} at every level, x_t = y / y_scale_t, so
    x_0 = x_T / prod_t y_scale_t (alpha_{t+1}, 1 at DRL's marginal top level). float32 products: rel 1e-5."""
    obj, _ = _build(name, "method.T=4", *extra)
    x_T = torch.randn(8, 2, generator=_g(5))
    out = obj.sample(8, n_steps=0, x0=x_T, generator=_g(3)).x
    assert torch.allclose(out, x_T / obj.y_scale.prod(), rtol=1e-5, atol=1e-6)


# ----- paper 002 --------------------------------------------------------------------------------------------------
class _TimeQuadratic(nn.Module):
    """E(x, t) = (t / T) |x - c|^2 / 2: a time-dependent energy, so a wrong t changes the result."""

    def __init__(self, T):
        super().__init__()
        self.c, self.T = nn.Parameter(torch.tensor([0.5, -0.2])), T

    def forward(self, x, t=None):
        t = torch.ones(x.shape[0], dtype=torch.long) if t is None else t
        return 0.5 * (t.float() / self.T) * (x - self.c).pow(2).sum(1)


def _implicit(T=4, K=3, eta=0.3):
    from ebmlab.objectives.implicit_diffusion import ImplicitDiffusion, ImplicitDiffusionConfig
    cfg = ImplicitDiffusionConfig(T=T, K=K, eta=eta, sigma=0.0, buffer_size=8)
    return ImplicitDiffusion(_TimeQuadratic(T), cfg, (2,))


def test_noiseless_sweep_on_a_quadratic_is_its_closed_form():
    """Eq. 17 with sigma = 0: x <- x - (eta/2) dE/dx = c + (1 - eta t / 2T)(x - c), K times at each t = T..1."""
    obj, (T, K, eta) = _implicit(), (4, 3, 0.3)
    x_T = torch.randn(8, 2, generator=_g(0))
    out = obj.sample(8, x0=x_T, generator=_g(1)).x
    c, want = obj.energy.c.detach(), x_T.clone()
    for t in range(T, 0, -1):
        want = c + (1 - eta / 2 * t / T) ** K * (want - c)
    assert torch.allclose(out, want, rtol=1e-5, atol=1e-6)


def test_t_training_iterations_of_the_buffer_reproduce_the_generation_sweep():
    """buffers_time.py: "a slot at time t always holds the input that generation would feed to stage t". Every slot
    at t = T holding x_T, T training iterations (fixed energy, sigma = 0) leave the chains where ``sample`` from x_T
    ends, bit for bit (same K steps, same eta, same t per stage)."""
    obj, T = _implicit(), 4
    x_T = torch.randn(8, 2, generator=_g(0))
    gen = obj.sample(8, x0=x_T, generator=_g(1)).x
    obj.buffer.data.copy_(x_T)
    obj.buffer.t.fill_(T)
    box, update = {}, obj.buffer.update

    def keep(x, idx, g=None):
        box["x"], box["idx"] = x.clone(), idx.clone()
        return update(x, idx, g)
    obj.buffer.update = keep
    g = _g(2)
    for _ in range(T):
        obj(torch.randn(8, 2, generator=g), generator=g)
    last = torch.empty_like(x_T)
    last[box["idx"]] = box["x"]
    assert torch.equal(last, gen)
