"""Round 25: docs/paper000-003.md, docs/images.md (second half), docs/distributed.md against the code.

Each test pins one documented behaviour mechanically (a value, a default, a formula)."""
from __future__ import annotations

import math

import pytest
import torch

from ebmlab import schedules
from ebmlab.training.config import load_config
from ebmlab.data.dataset import build_dataset
from ebmlab.objectives.registry import build_objective


def _obj(name, overrides=()):
    cfg = load_config(name, list(overrides))
    return cfg, build_objective(cfg, build_dataset(cfg.data))


# ---------------------------------------------------------------- paper 000 -------------------------------------
def test_p000_linear_series_and_t0_entry():
    """docs/paper000.md: alpha_t = t/(T-1); t = 0 entry = log p_n - log T; log_conditional col 0 = log p_n;
    untrained increments (zero) give p(z | t) = p_n at every t."""
    a, b = schedules.interpolation_coefficients(5)
    assert torch.allclose(a, torch.tensor([0, .25, .5, .75, 1.])) and torch.allclose(a + b, torch.ones(5))
    from ebmlab.energies.time import JointTimeEnergy, gaussian_log_density
    e = JointTimeEnergy(torch.nn.Linear(2, 4), 4, T=7, sigma_n=0.3)
    z = torch.randn(9, 2)
    f = e.log_joint(z)
    lp = gaussian_log_density(z, 0.3)
    assert torch.allclose(f[:, 0], lp - math.log(7), atol=1e-5)
    assert torch.allclose(e.log_conditional(z), lp[:, None].expand(9, 7), atol=1e-5)


def test_p000_initial_steps_and_first_annealing_step():
    """docs/paper000.md: first stage starts from mu = 0.4 sigma_n (eps = mu^2 / 2); shared init at t = T/2."""
    from ebmlab.objectives.joint_time import JointTimeConfig, initial_steps
    cfg = JointTimeConfig(sigma_n=0.3, T=256)
    eps = initial_steps(cfg, torch.tensor([1.0]))
    assert torch.allclose(eps, torch.tensor([0.5 * (0.4 * 0.3) ** 2]))


def test_p000_chain_length_ramp_app_c2():
    """App. C.2 / docs: K = 5 for 40k steps, then linear to 100 over 40k."""
    assert schedules.chain_length(39999) == 5
    assert schedules.chain_length(60000) == round(5 + 95 * 0.5)
    assert schedules.chain_length(80000) == 100 and schedules.chain_length(300000) == 100


def test_p000_soft_annealing_weights_uniform_tail():
    """Alg. 4: p^(n)(t) = Uniform[t(n), T-1], t(n) linear 0 -> T-1."""
    T, N = 10, 4
    for n in range(N):
        w = schedules.soft_annealing_log_weights(n, N, T)
        t_n = round(n * (T - 1) / (N - 1))
        p = (w.exp() / T)
        assert torch.allclose(p[t_n:], torch.full((T - t_n,), 1.0 / (T - t_n)))
        assert bool((p[:t_n] == 0).all())


def test_p000_spiral_configs_and_defaults():
    """docs/paper000.md config table and 'Choices': K 3, T 256, sigma_n 0.3, 6000 steps, batch 256, no EMA,
    sample_levels 128 x sample_steps 3 = 384 steps, sample_adapt_steps 0, rate 0.5, marginal_step shared."""
    for name, method in (("paper000_spiral_cdce", "cd_ce"), ("paper000_spiral_jointcd", "joint_cd")):
        cfg = load_config(name)
        m = cfg.method
        assert (m.name, m.T, m.sigma_n, m.n_steps, m.sample_levels, m.sample_steps) == (method, 256, 0.3, 3, 128, 3)
        assert (cfg.train.steps, cfg.train.batch_size, cfg.train.lr, cfg.train.ema) == (6000, 256, 1e-3, None)
        assert (m.marginal_step, m.sample_adapt_steps, m.sample_adapt_rate, m.target_accept) == ("shared", 0, 0.5, 0.6)
        assert cfg.data.standardize is False


def test_p000_cifar_config_app_c2():
    cfg = load_config("paper000_cifar10_cdce")
    m, t = cfg.method, cfg.train
    assert (m.T, m.sigma_n, m.n_steps, m.n_steps_final, m.ramp_hold, m.ramp_steps) == (1024, 1.0, 5, 100, 40000, 40000)
    assert (t.optimizer, t.weight_decay, t.lr, t.warmup_steps, t.lr_decay_steps, t.lr_decay_factor,
            t.steps, t.batch_size, t.ema) == ("adamw", 1e-3, 1e-3, 4000, 200000, 0.1, 300000, 512, None)


def test_p000_digits_config():
    cfg = load_config("paper000_digits_cdce")
    assert (cfg.method.T, cfg.method.n_steps, cfg.train.steps, cfg.model.norm, cfg.model.activation,
            cfg.method.sample_levels) == (128, 5, 800, "none", "leaky_relu", 64)


def test_p000_sample_levels_128_of_256():
    _, obj = _obj("paper000_spiral_cdce", ["data.n_train=300", "data.n_test=100", "model.width=8", "model.depth=1"])
    lv = obj.annealing_levels()
    assert len(lv) == 128 and lv[0] == 0 and lv[-1] == 255
    assert obj.n_steps_default == 384


def test_p000_cd_plain_refuses_multilevel_keys():
    from ebmlab.objectives.joint_time import JointTimeConfig
    cfg = JointTimeConfig(name="cd_plain", ce_weight=1.0, per_t_weight=1.0, marginal_step="per_level",
                          increments_init="torch", sample_adapt_steps=2)
    assert len(cfg.inert_keys()) == 5


def test_p000_experiment_arms_and_margins():
    from ebmlab.experiments import claims, paper000
    assert set(paper000.ARMS) == {"per_t", "cd_ce", "joint_cd", "cd_plain"}
    assert set(paper000.DATASETS) == {"spiral", "mixture"}
    assert claims.SEEDS == (0, 1, 2) and paper000.STEPS == 3000 and "train.ema=null" in paper000.COMMON
    assert (paper000.PRECISION_MARGIN, paper000.MODE_MARGIN) == (0.05, 0.10)


def test_p000_mixture_weights():
    from ebmlab.data.toy import UnequalMixture2D
    assert UnequalMixture2D.mode_weights == (0.4, 0.3, 0.2, 0.1)


# ---------------------------------------------------------------- paper 001 -------------------------------------
def test_p001_method_defaults():
    """docs/paper001.md: defaults lambda 500, sigma 0.001, blur on, reset 0.01, |X| 100, K 40."""
    from ebmlab.objectives.improved_cd import ImprovedCDConfig
    c = ImprovedCDConfig()
    assert (c.step_size, c.noise_scale, c.augment_blur, c.reset_prob, c.n_entropy, c.n_steps) == (
        500.0, 0.001, True, 0.01, 100, 40)
    assert (c.kl_weight, c.entropy_weight, c.augment_scale) == (1.0, 1.0, [0.02, 1.0])


@pytest.mark.parametrize("name,lam,scale", [("paper001_cifar10", 2000.0, [0.02, 1.0]),
                                            ("paper001_celebahq", 4000.0, [0.08, 1.0])])
def test_p001_paper_configs(name, lam, scale):
    m = load_config(name).method
    assert (m.step_size, m.noise_scale, m.reset_prob, m.buffer_size, m.n_steps, m.augment_blur, m.augment_flip,
            m.augment_strength, list(m.augment_scale)) == (lam, 0.002, 0.001, 10000, 40, False, True, 1.0, scale)
    assert load_config(name).train.ema == 0.9999


def test_p001_cpu_configs():
    d = load_config("paper001_digits")
    m = d.method
    assert (m.step_size, m.noise_scale, m.n_steps, m.sample_rounds, m.sample_steps, m.reset_prob) == (10.0, 0.01, 10, 3, 10, 0.01)
    assert (m.augment_flip, m.augment_blur, m.augment_strength, list(m.augment_scale)) == (False, False, 0.5, [0.7, 1.0])
    assert (d.train.ema, d.train.lr, d.train.batch_size, list(d.model.channels), d.model.norm) == (0.99, 1e-3, 64, [16, 32], "none")
    t = load_config("paper001_toy").method
    assert (t.sample_rounds, t.sample_steps, t.reset_prob, t.augment, t.multiscale) == (10, 20, 0.01, False, False)


def test_p001_entropy_floor_and_collapse():
    """Entropy: collapsed set -> -log 1e-8 = 18.42; factor-100 collapse adds log 100."""
    from ebmlab.objectives.improved_cd import nn_entropy_loss
    x = torch.zeros(4, 3)
    assert abs(float(nn_entropy_loss(x, x.clone())) - (-math.log(1e-8))) < 1e-4
    past = torch.zeros(1, 3)
    y = torch.ones(4, 3)
    assert abs(float(nn_entropy_loss(y / 100, past) - nn_entropy_loss(y, past)) - math.log(100)) < 1e-4


def test_p001_uniform_box_vectors_and_ema_warmup():
    _, obj = _obj("paper001_toy", ["data.n_train=500", "data.n_test=100", "model.width=8", "model.depth=1"])
    data = build_dataset(load_config("paper001_toy", ["data.n_train=500", "data.n_test=100"]).data).train
    lo, hi = data.min(0).values, data.max(0).values
    assert torch.allclose(obj.init_low, lo - 0.1 * (hi - lo)) and torch.allclose(obj.init_high, hi + 0.1 * (hi - lo))
    from ebmlab.training.ema import EMA
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    ema = EMA(lin, 0.9999)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update(lin)  # update t = 1: decay min(0.9999, (1 + t) / (10 + t)) = 2 / 11
    assert float(ema.shadow["weight"]) == pytest.approx(9 / 11)


def test_p001_experiment_grid():
    from ebmlab.experiments import paper001 as p
    assert p.ROWS["aug_multiscale_kl_opt"] == dict(kl=True, entropy=False, augment=True, multiscale=True)
    assert p.ROWS["none"] == dict(kl=False, entropy=False, augment=False, multiscale=False)
    assert set(p.ARCHS) == {"plain", "sn", "attn", "sn_attn"}
    assert p.STABILITY_SETUP == ["method.step_size=2000.0", "method.noise_scale=0.002"]
    assert (p.ABLATION_STEPS, p.STABILITY_STEPS, p.COMPOSITION_STEPS, p.FD_MARGIN) == (400, 600, 400, 25.0)


# ---------------------------------------------------------------- paper 002 -------------------------------------
def test_p002_noise_schedule_linear_std_to_zero():
    """docs/paper002.md: step s = (T - t) K + k uses sigma (1 - s / (TK - 1))."""
    from ebmlab.samplers.implicit_sweep import noise_schedule
    s = noise_schedule(0.3, 4, 3)
    assert torch.allclose(s, 0.3 * (1 - torch.arange(12) / 11.0)) and float(s[-1]) == 0.0


def test_p002_training_sigma_matches_generation():
    _, obj = _obj("paper002_8gaussians", ["data.n_train=300", "data.n_test=100", "model.width=8", "model.depth=1"])
    T, K = obj.cfg.T, obj.cfg.K
    t = torch.tensor([T, 1])
    sig = obj._sigmas(t)
    assert torch.allclose(sig[:, 0], obj.sched[:K]) and torch.allclose(sig[:, 1], obj.sched[-K:])


def test_p002_wgan_lp_and_buffer_cycle():
    from ebmlab.objectives.implicit_diffusion import wgan_lp
    assert float(wgan_lp(torch.tensor([0.5, 1.0, 3.0]))) == pytest.approx(4.0 / 3)
    from ebmlab.buffers_time import TimeCyclicBuffer
    buf = TimeCyclicBuffer(8, (2,), 3, lambda n, g: torch.full((n, 2), 7.0))
    assert int(buf.t.min()) >= 1 and int(buf.t.max()) <= 3
    buf.t.fill_(1)
    idx = torch.arange(4)
    buf.update(torch.zeros(4, 2), idx)
    assert bool((buf.t[idx] == 3).all()) and bool((buf.data[idx] == 7.0).all())


def test_p002_drift_is_eta_over_two():
    """Eq. 17 / Alg. 1 line 333: x <- x - eta/2 dE/dx + sigma z (no noise at sigma 0)."""
    from ebmlab.samplers.implicit_sweep import sweep_stage

    class Quad(torch.nn.Module):
        def forward(self, x, t=None):
            return 0.5 * x.pow(2).sum(1)
    x = torch.ones(3, 2)
    out, _ = sweep_stage(Quad(), x, torch.ones(3, dtype=torch.long), 0.4, torch.zeros(1))
    assert torch.allclose(out, x * (1 - 0.2))


def test_p002_configs():
    g = load_config("paper002_8gaussians")
    assert (g.method.buffer_size, g.train.lr, g.train.ema, g.train.steps, g.method.eta, g.model.fourier) == (
        2560, 2e-3, 0.99, 1500, 0.2, 64)
    c = load_config("paper002_checkerboard")
    assert (c.method.eta, c.method.buffer_size, c.train.lr, c.train.ema, c.model.fourier) == (0.1, 10000, 1e-3, 0.999, 0)
    d = load_config("paper002_digits")
    assert (d.method.T, d.method.K, d.method.eta, d.train.steps, list(d.model.channels), d.model.pool) == (
        10, 3, 1.0, 1500, [32, 64], "avg")
    for name, T, K, eta, bs in (("paper002_cifar10", 20, 3, 1.7, 256), ("paper002_celeba64", 10, 6, 2.89, 128)):
        cfg = load_config(name)
        assert (cfg.method.T, cfg.method.K, cfg.method.eta, cfg.method.sigma, cfg.method.lam, cfg.method.buffer_size) == (
            T, K, eta, 0.3, 200.0, 10000)
        assert (cfg.train.batch_size, cfg.train.lr, cfg.train.ema, tuple(cfg.train.betas), cfg.train.lr_schedule,
                cfg.train.lr_restart_steps) == (bs, 2e-4, 0.999, (0.9, 0.999), "cosine_restarts", 50000)
        assert (cfg.model.pool, cfg.model.norm, cfg.model.activation) == ("subpixel", "layer", "sigmoid")


def test_p002_fewer_steps_rounds_up():
    from ebmlab.objectives.base import per_level_steps
    assert per_level_steps(100, 3, 20) == 5 and per_level_steps(101, 3, 20) == 6


def test_p002_experiment_constants():
    from ebmlab.experiments import paper002 as p
    assert (p.GRID_T, p.GRID_K, p.SIGMAS, p.DIGITS_T, p.DIGITS_STEPS) == ((3, 10, 20, 30), (1, 3, 10),
                                                                         (0.005, 0.05, 0.1, 0.5), (3, 10, 20), 500)
    assert (p.ETA_CANDIDATES, p.TUNE_STEPS, p.TUNE_SEED, p.DIGITS_ETA_CANDIDATES, p.ED_MARGIN) == (
        (0.1, 0.2, 0.4, 0.8), 300, 100, (0.125, 0.25, 0.5, 1.0), 0.005)
    assert max(p.FULL_T) == 40 and max(p.FULL_K) == 30


# ---------------------------------------------------------------- paper 003 -------------------------------------
def test_p003_schedule_and_step_rules():
    lam = schedules.cosine_logsnr(6, 9.8, -5.1)
    assert float(lam[0]) == pytest.approx(9.8) and float(lam[-1]) == pytest.approx(-5.1)
    lv = schedules.vp_levels(lam)
    s_eq16 = schedules.recovery_step_sizes(lv, 0.054, "eq16") ** 2
    assert torch.allclose(s_eq16, 0.054 * lv["sbar"][:-1] * lv["sigma"] ** 2)
    s_const = schedules.recovery_step_sizes(lv, 0.27, "const") ** 2
    assert torch.allclose(s_const, 0.27 * lv["sigma"] ** 2)
    # docs: abar_0 = 0.99997, sbar_0 = 0.0074
    assert float(lv["abar"][0]) == pytest.approx(0.99997, abs=1e-5) and float(lv["sbar"][0]) == pytest.approx(0.0074, abs=1e-4)


def test_p003_fewer_steps_rescale():
    """Sec. 4.2: step s_t sqrt(K / K')."""
    from ebmlab.samplers.recovery import RecoveryLevels, step_sizes
    lv = RecoveryLevels(torch.ones(2), torch.ones(2), torch.tensor([0.04, 0.09]), None, torch.tensor(1.),
                        torch.tensor(0.), 15)
    s = step_sizes(lv, torch.tensor([0, 1]), 5)
    assert torch.allclose(s, torch.tensor([0.2, 0.3]) * math.sqrt(3.0))


def test_p003_drl_defaults_and_loss_weight():
    from ebmlab.objectives.recovery import DRLConfig, RecoveryConfig
    d = DRLConfig()
    assert (d.schedule, d.n_steps, d.step_coef, d.cooperative, d.variance_reduction, d.top_marginal, d.loss_weight,
            d.denoise) == ("drl", 30, 0.02, False, False, True, "sigma", False)
    c = RecoveryConfig()
    assert (c.loss_weight, c.n_steps, c.step_coef, c.T, c.init_lr, c.ebm_warmup, c.init_warmup, c.init_head_start) == (
        "none", 15, 0.054, 6, 1e-5, 10000, 10000, 500)


def test_p003_eq15_warmups():
    from ebmlab.training.loop import lr_factor

    class TC:
        warmup_steps, lr_schedule, steps = 0, "constant", 400000
    assert lr_factor(TC, 0, 10000, 0) == pytest.approx(1 / 10000)
    assert lr_factor(TC, 0, 10000, -500) == pytest.approx(501 / 10000)
    assert lr_factor(TC, 9499, 10000, -500) == 1.0


def test_p003_checkerboard_config():
    cfg = load_config("paper003_checkerboard")
    m = cfg.method
    assert (m.step_rule, m.step_coef, m.top_marginal, m.loss_weight, m.denoise, m.data_scale) == (
        "const", 0.27, True, "sigma", False, 4.0)
    assert (cfg.data.standardize, cfg.model.activation, cfg.model.spectral_norm, cfg.model.width, cfg.model.depth) == (
        False, "leaky_relu", True, 128, 3)
    assert (cfg.train.batch_size, cfg.train.steps, cfg.train.lr, m.init_lr, m.ebm_warmup, m.init_warmup,
            cfg.train.ema, cfg.train.grad_clip) == (256, 8000, 1e-3, 1e-3, 100, 100, 0.998, 1.0)


@pytest.mark.parametrize("name", ["paper003_digits", "paper003_digits_cond"])
def test_p003_digits_configs(name):
    m = load_config(name).method
    assert (m.denoise, m.denoise_coef, list(m.init_channels)) == (True, 2.0, [16, 32])


@pytest.mark.parametrize("name", ["paper003_cifar10", "paper003_cifar10_large", "paper003_imagenet32",
                                  "paper003_imagenet32_cond", "paper003_celeba64_compose", "paper003_celeba64_inpaint"])
def test_p003_paper_scale_common(name):
    cfg = load_config(name)
    m = cfg.method
    assert (m.n_steps, m.step_coef, m.denoise_coef, m.loss_weight, m.top_marginal, m.init_lr) == (
        15, 0.054, 2.0, "sigma", False, 1e-5)
    assert (cfg.train.ema, cfg.train.lr, cfg.train.steps, cfg.train.grad_clip, cfg.model.readout) == (
        0.9999, 1e-4, 400000, 1.0, "sum")


def test_p003_loss_weight_sigma_values():
    _, obj = _obj("paper003_checkerboard", ["data.n_train=300", "data.n_test=100", "model.width=8", "model.depth=1",
                                            "method.init_width=8", "method.init_depth=1"])
    assert torch.allclose(obj.loss_w, (obj.sigma[0] / obj.sigma).float())


def test_p003_experiment_constants():
    from ebmlab.experiments import paper003 as p
    assert p.KS == (15, 8, 5, 3) and (p.CB_STEPS, p.CB_STEPS_FULL) == (5000, 8000)
    assert p.WEIGHTS == (0.0, 1.0, 3.0) and p.COMPOSE_W == 3.0
    assert p.GUIDANCE_PER_CLASS * 10 == 500 and p.COMPOSE_PER_PAIR == 10
    assert (p.SUPPORT_MARGIN, p.KL_MARGIN, p.ACC_MARGIN, p.BOTH_MARGIN) == (0.05, 0.05, 0.06, 0.10)
    assert set(p.ARMS) == {"cdrl", "no_coop", "drl"}


# ---------------------------------------------------------------- images / distributed ---------------------------
def test_images_groupnorm_rule():
    from ebmlab.energies import convnet
    fn = [convnet.make_norm]
    groups = {c: max(g for g in range(1, max(1, min(32, c // 4)) + 1) if c % g == 0) for c in (8, 64, 128, 256)}
    assert groups == {8: 2, 64: 16, 128: 32, 256: 32}
    if fn:
        assert fn[0]("group", 64).num_groups == 16 and fn[0]("layer", 64).num_groups == 1


def test_images_transform_defaults():
    import inspect
    from ebmlab.data import transforms as T
    assert inspect.signature(T.gaussian_blur).parameters["p"].default == 0.5
    assert tuple(inspect.signature(T.gaussian_blur).parameters["sigma"].default) == (0.1, 2.0)
    assert inspect.signature(T.color_jitter).parameters["p"].default == 0.8


def test_distributed_checkpoint_names():
    from ebmlab.training import checkpoint, dist_checkpoint
    names = [checkpoint.step_name(40)]
    assert dist_checkpoint.rank_file("c", 40, 1).name == "step_00000040.rank1.safetensors"
    for n in names:
        assert n == "step_00000040.safetensors"
