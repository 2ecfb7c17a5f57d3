"""Paper 002 (implicit diffusion): buffer cycle, WGAN-LP, noise schedule, sign convention,
interpolation and a short toy training run."""
import math

import pytest
import torch
from torch import nn

from ebmlab.applications.interpolation import interpolate, slerp
from ebmlab.buffers_time import TimeCyclicBuffer
from ebmlab.energies.embedding import TimeMLPEnergy, sinusoidal_embedding
from ebmlab.objectives.implicit_diffusion import (ImplicitDiffusion, ImplicitDiffusionConfig, noise_schedule,
                                                  wgan_lp)
from ebmlab.training.config import ConfigError, load_config
from tests.builders import LinearEnergy as Linear


class Quadratic(nn.Module):
    """E(x, t) = scale * ||x - centre||^2 / 2, independent of t; lower near the centre."""

    def __init__(self, centre, scale=1.0):
        super().__init__()
        self.centre = nn.Parameter(torch.as_tensor(centre, dtype=torch.float32))
        self.scale = scale

    def forward(self, x, t=None):
        return 0.5 * self.scale * (x - self.centre).pow(2).sum(1)




def make(energy, **kw):
    cfg = ImplicitDiffusionConfig(**{"T": 4, "K": 2, "eta": 0.1, "sigma": 0.3, "buffer_size": 64, **kw})
    return ImplicitDiffusion(energy, cfg, (2,))


# ----- buffer ---------------------------------------------------------------------------------------
def test_buffer_initial_times_cover_1_to_T(gen):
    buf = TimeCyclicBuffer(2000, (3,), 5, lambda n, g: torch.randn(n, 3, generator=g), generator=gen)
    counts = torch.bincount(buf.t, minlength=7)
    assert counts[0] == 0 and counts[6] == 0
    assert counts[1:6].min() > 300  # ~400 each for U{1..5}
    assert abs(float(buf.data.std()) - 1.0) < 0.05


def test_buffer_time_cycles_T_to_1_then_refresh(gen):
    T, cap = 3, 6
    marker = lambda n, g: torch.full((n, 2), 7.0)  # noqa: E731  fresh noise is recognisable
    buf = TimeCyclicBuffer(cap, (2,), T, marker, generator=gen)
    history = [buf.t.clone()]
    for _ in range(2 * T):
        x, t, idx = buf.sample(cap, gen)
        assert len(set(idx.tolist())) == cap  # distinct slots in one batch
        assert torch.equal(t, buf.t[idx])
        buf.update(torch.zeros_like(x), idx, gen)  # "advanced" chains are zeros
        history.append(buf.t.clone())
        refreshed = t == 1
        assert torch.all(buf.t[idx[refreshed]] == T)
        assert torch.all(buf.data[idx[refreshed]] == 7.0)          # t = 0 -> fresh noise at T
        assert torch.all(buf.data[idx[~refreshed]] == 0.0)         # others keep their chain
        assert torch.all(buf.t[idx[~refreshed]] == t[~refreshed] - 1)
    h = torch.stack(history)  # (2T+1, cap): each slot runs ... T, T-1, ..., 1, T, ...
    expected_next = torch.where(h[:-1] == 1, torch.full_like(h[:-1], T), h[:-1] - 1)
    assert torch.equal(h[1:], expected_next)


def test_buffer_state_dict_roundtrip(gen):
    obj = make(Quadratic([0.0, 0.0]))
    obj(torch.randn(16, 2, generator=gen), generator=gen)
    state = obj.state_dict()
    assert "buffer.data" in state and "buffer.t" in state
    other = make(Quadratic([0.0, 0.0]))
    other.load_state_dict(state)
    assert torch.equal(other.buffer.t, obj.buffer.t) and torch.equal(other.buffer.data, obj.buffer.data)


# ----- WGAN-LP and noise schedule -------------------------------------------------------------------
def test_wgan_lp_zero_below_one_quadratic_above():
    norms = torch.tensor([0.0, 0.3, 0.99, 1.0])
    assert float(wgan_lp(norms)) == 0.0
    for n in (1.5, 2.0, 3.0, 11.0):
        assert float(wgan_lp(torch.tensor([n]))) == pytest.approx((n - 1) ** 2)
    assert float(wgan_lp(torch.tensor([0.5, 3.0]))) == pytest.approx(4.0 / 2)  # batch mean


@pytest.mark.parametrize("c", [0.2, 0.7, 2.0])
def test_loss_is_gap_plus_lambda_times_lp(c, gen):
    """Linear energy: gradient norm c*sqrt(2) everywhere, so the loss is known in closed form."""
    obj = make(Linear(c), lam=200.0)
    x_pos = torch.randn(32, 2, generator=gen)
    out = obj(x_pos, generator=gen)
    gap = float(c * x_pos.sum(1).mean() - c * out.negatives.sum(1).mean())
    lp = max(0.0, c * math.sqrt(2) - 1) ** 2
    assert float(out.metrics["wgan_lp"]) == pytest.approx(lp, rel=1e-5, abs=1e-7)
    assert float(out.loss.detach()) == pytest.approx(gap + 200.0 * lp, rel=1e-4, abs=1e-5)


def test_noise_schedule_is_linear_and_reaches_zero_at_last_step():
    s = noise_schedule(0.3, 20, 3)
    assert s.shape == (60,)
    assert float(s[0]) == pytest.approx(0.3) and float(s[-1]) == 0.0
    assert torch.allclose(s[1:] - s[:-1], torch.full((59,), -0.3 / 59), atol=1e-6)
    assert float(noise_schedule(0.3, 1, 1)[0]) == 0.0


def test_training_sigmas_match_generation_schedule():
    obj = make(Quadratic([0.0, 0.0]), T=4, K=2)
    sig = obj._sigmas(torch.tensor([4, 1]))  # (K, B)
    s = noise_schedule(0.3, 4, 2)
    assert torch.allclose(sig[:, 0], s[:2]) and torch.allclose(sig[:, 1], s[-2:])
    assert float(sig[-1, 1]) == 0.0  # the last step at t = 1 is noise-free


def test_generation_ignores_the_noise_of_the_last_step(gen):
    obj = make(Quadratic([1.0, -1.0]), T=3, K=2)
    x0 = obj.prior(5, gen)
    z = torch.randn(6, 5, 2, generator=gen)
    z2 = z.clone()
    z2[-1] = torch.randn(5, 2, generator=gen)
    a, _, _ = obj.generate(x0, noises=z)
    b, _, _ = obj.generate(x0, noises=z2)
    z2[0] += 1.0
    c, _, _ = obj.generate(x0, noises=z2)
    assert torch.equal(a, b) and not torch.allclose(a, c)


# ----- sign convention ------------------------------------------------------------------------------
def test_sampler_descends_energy_and_loss_lowers_energy_on_data(gen):
    """Lower energy = more probable: chains move to the minimum, training moves the minimum to data."""
    obj = make(Quadratic([2.0, -1.0]), T=5, K=4, eta=0.2, sigma=0.0)
    x, path, diag = obj.generate(obj.prior(200, gen), keep_path=True)
    assert path.shape == (6, 200, 2)
    assert float((x - torch.tensor([2.0, -1.0])).norm(dim=1).mean()) < 0.3
    assert diag.energy[-1] < diag.energy[0]
    obj = make(Quadratic([0.0, 0.0]), lam=0.0)
    data = torch.full((64, 2), 3.0)
    out = obj(data, generator=gen)
    out.loss.backward()
    centre_grad = obj.energy.centre.grad  # a descent step moves the centre towards the data
    assert float(centre_grad @ torch.tensor([-1.0, -1.0])) > 0


# ----- energy, config, interpolation ----------------------------------------------------------------
def test_time_mlp_default_time_is_one(gen):
    f = TimeMLPEnergy(2, 16, 1, embed_dim=8)
    x = torch.randn(7, 2, generator=gen)
    assert f(x).shape == (7,)
    assert torch.equal(f(x), f(x, t=torch.ones(7, dtype=torch.long)))
    assert not torch.allclose(f(x, t=1), f(x, t=5))
    assert sinusoidal_embedding(torch.tensor([0, 3]), 8).shape == (2, 8)


def test_config_validation_and_sample_steps():
    with pytest.raises(ConfigError):
        load_config(None, ["method.name=implicit_diffusion", "method.T=0"])
    cfg = load_config(None, ["method.name=implicit_diffusion", "method.buffer_size=10", "train.batch_size=20"])
    from ebmlab.objectives import build_objective
    from ebmlab.data import build_dataset
    with pytest.raises(ConfigError, match="buffer_size"):
        build_objective(cfg, build_dataset(load_config(None, ["data.name=8gaussians", "data.n_train=100",
                                                            "train.batch_size=20"]).data))  # batch <= n_train
    obj = make(Quadratic([0.0, 0.0]), T=4, K=2)
    out = obj.sample(3, n_steps=12)  # n_steps is the total: K' = 12 / T = 3
    assert out.x.shape == (3, 2) and out.info["energy"].shape == (12,)
    assert obj.sample(3, n_steps=10).info["energy"].shape == (12,)  # rounded up to K' = 3
    with pytest.raises(ValueError, match="non-negative"):
        obj.sample(3, n_steps=-1)


def test_slerp_endpoints_and_norm(gen):
    a, b = torch.randn(4, 50, generator=gen), torch.randn(4, 50, generator=gen)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(dim=1), a.norm(dim=1), rtol=1e-4)  # stays on the sphere
    assert torch.allclose(slerp(a, a, 0.3), a, atol=1e-5)  # parallel fallback


def test_interpolation_endpoints_reproduce_generation(gen):
    obj = make(Quadratic([1.0, 0.5], scale=0.5), T=3, K=2, sigma=0.5)
    g1 = torch.Generator().manual_seed(5)
    strip = interpolate(obj, n_points=5, n_pairs=2, generator=g1)
    assert strip.shape == (2, 5, 2)
    g2 = torch.Generator().manual_seed(5)  # redraw the same randomness by hand
    x_a, x_b = obj.prior(2, g2), obj.prior(2, g2)
    z_a, z_b = torch.randn(6, 2, 2, generator=g2), torch.randn(6, 2, 2, generator=g2)
    assert torch.allclose(strip[:, 0], obj.generate(x_a, noises=z_a)[0], atol=1e-5)
    assert torch.allclose(strip[:, -1], obj.generate(x_b, noises=z_b)[0], atol=1e-5)


# ----- a short training run on a toy with an exact density -------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_toy_training_beats_noise(tmp_path, seed):
    """8 Gaussians with the shipped paper002_8gaussians config (1500 steps, ~45 s per seed on an idle
    core), T x K = 60 steps from N(0, I), on several training seeds: the samples must lie near the data
    (energy distance <= 0.025; floor ~0.005, starting noise ~0.085) and in the modes (sample precision
    >= 0.5; data ~0.99, samples spread uniformly along the ring of modes ~0.38) on each of seeds 0-4
    (issue 16: >= 5 seeds). Seeds 0 and 3 are the ones that stayed at precision ~0.39 before the toy
    got Fourier input features (docs/paper002.md). Measured (CLI runs, seeds 0-4): energy distance
    0.0166 / 0.0147 / 0.0151 / 0.0149 / 0.0121, precision 0.951 / 0.941 / 0.923 / 0.930 / 0.929;
    ~45 s per seed on an idle core. Shorter runs (400 steps) do not beat noise yet, so this test is slow."""
    from ebmlab.metrics.density import sample_precision
    from ebmlab.metrics.distances import energy_distance
    from ebmlab.training.loop import Trainer
    cfg = load_config("paper002_8gaussians", ["train.progress=false", "train.checkpoint_every=100000",
                                              f"train.seed={seed}", "train.threads=1"])
    assert cfg.method.T * cfg.method.K <= 60
    trainer = Trainer(cfg, tmp_path)
    trainer.fit()
    trainer.ema.copy_to(trainer.objective)
    obj, data, g = trainer.objective, trainer.data, torch.Generator().manual_seed(1)
    ref, ref2 = data.fresh(2000, g), data.fresh(2000, g)
    noise = data.transform.to_data(obj.prior(2000, g))
    samples = data.transform.to_data(obj.sample(2000, generator=g).x)
    floor, ceiling = energy_distance(ref2, ref), energy_distance(noise, ref)
    ed = energy_distance(samples, ref)
    prec = sample_precision(data.dist.log_prob(samples), data.dist.log_prob(ref2))
    print(f"paper002 toy seed {seed}: floor {floor:.4f}, samples {ed:.4f}, noise ceiling {ceiling:.4f}, "
          f"precision {prec:.3f}")
    assert floor < 0.01 and ceiling > 0.06
    assert ed <= 0.025 and ed < 0.35 * ceiling, (seed, floor, ed, ceiling)
    assert prec >= 0.5, (seed, prec)


# ----- metrics keys, image variant and lr schedule used by the paper-scale configs -------------------
def test_logged_metric_names_do_not_depend_on_the_batch_times(gen):
    """DDP averages metrics by name: every step must log the same keys, with or without t = 1 chains."""
    obj = make(Quadratic([0.0, 0.0]), T=4, K=1)
    keys = set()
    for t_value in (1, 3):
        obj.buffer.t.fill_(t_value)
        out = obj(torch.randn(8, 2, generator=gen), generator=gen)
        keys.add(tuple(sorted(out.metrics)))
        assert float(out.metrics["frac_t1"]) == (1.0 if t_value == 1 else 0.0)
    assert len(keys) == 1


def test_subpixel_resnet_is_time_conditioned_and_built_from_the_configs():
    from ebmlab.energies.convnet import ResNetEnergy, SubPixelDown
    from ebmlab.objectives.implicit_diffusion import time_energy
    down = SubPixelDown(3)
    assert down(torch.randn(2, 3, 8, 8)).shape == (2, 3, 4, 4) and down(torch.randn(2, 3, 5, 5)).shape == (2, 3, 3, 3)
    net = ResNetEnergy(1, [8, 16], norm="layer", activation="silu", time_cond=True, embed_dim=8, pool="subpixel")
    x = torch.randn(4, 1, 8, 8)
    assert net(x, t=torch.tensor([1, 2, 3, 4])).shape == (4,)
    assert not torch.allclose(net(x, t=1), net(x, t=7))
    cfg = load_config("paper002_cifar10")
    assert cfg.model.pool == "subpixel" and cfg.train.lr_schedule == "cosine_restarts"
    f = time_energy(cfg, (3, 32, 32))
    assert any(isinstance(m, SubPixelDown) for m in f.modules())
    with pytest.raises(ValueError, match="pool"):
        ResNetEnergy(1, [8], pool="max")


def test_cosine_warm_restarts_schedule():
    from ebmlab.training.loop import lr_factor
    tc = load_config(None, ["train.lr_schedule=cosine_restarts", "train.lr_restart_steps=10", "train.steps=40"]).train
    f = [lr_factor(tc, s) for s in range(40)]
    assert f[0] == 1.0 and f[10] == 1.0 and f[20] == 1.0  # restarts
    assert f[5] == pytest.approx(0.5) and f[9] < 0.03 and all(a > b for a, b in zip(f[:9], f[1:10]))
    with pytest.raises(ConfigError, match="lr_restart_steps"):
        load_config(None, ["train.lr_schedule=cosine_restarts"])


def test_slerp_stays_bounded_for_nearly_opposite_vectors_of_different_norms():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[-2.0, 0.05]])  # nearly opposite, twice as long
    for w in torch.linspace(0, 1, 11).tolist():
        n = float(slerp(a, b, w).norm())
        assert n == pytest.approx(1.0 + w, rel=1e-3)  # norms interpolate linearly, no blow-up


def test_time_mlp_honours_model_fourier():
    """model.fourier adds random Fourier input features to the time-conditioned MLP (the 8 Gaussians toy
    needs them, docs/paper002.md); without it the network is the plain [x, embed(t)] MLP."""
    from ebmlab.objectives.implicit_diffusion import time_energy
    cfg = load_config("paper002_8gaussians", ["model.fourier=8", "model.fourier_scale=2.0"])
    f = time_energy(cfg, (2,))
    assert f.net.freqs.shape == (2, 8) and f.net.inp.in_features == 2 + 16 + cfg.model.time_embed_dim
    x = torch.randn(5, 2)
    assert f(x, t=torch.tensor([1, 2, 3, 4, 5])).shape == (5,) and not torch.allclose(f(x, t=1), f(x, t=7))
    plain = time_energy(load_config("paper002_8gaussians", ["model.fourier=0"]), (2,))
    assert plain.net.freqs is None and plain.net.inp.in_features == 2 + cfg.model.time_embed_dim
    assert load_config("paper002_8gaussians").model.fourier > 0  # the shipped toy uses them


class _TimeSpy(nn.Module):
    """A quadratic energy that records the time of every call (one t per call: a stage runs at one time)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.times = []

    def forward(self, x, t=None):
        assert t is not None and t.unique().numel() == 1
        self.times.append(int(t[0]))
        return 0.5 * self.w * x.pow(2).sum(1)


@pytest.mark.parametrize("n_steps", [None, 7])
def test_the_sweep_runs_k_steps_at_each_time_from_t_equals_T_down_to_1(n_steps):
    """Eq. 9 / Alg. 1: K Langevin steps at t = T, then T - 1, ..., 1, never at t = 0 (a mutation audit shifted the
    sweep to T - 1 .. 0 and every oracle still passed: its levels share one target)."""
    T, K = 4, 3
    spy = _TimeSpy()
    obj = ImplicitDiffusion(spy, ImplicitDiffusionConfig(T=T, K=K, eta=0.1, sigma=0.1), shape=(2,))
    obj.sample(5, generator=torch.Generator().manual_seed(0), n_steps=n_steps)
    k = K if n_steps is None else -(-n_steps // T)
    assert spy.times == [t for t in range(T, 0, -1) for _ in range(k)]


class _TimeLinear(nn.Module):
    """E(x, t) = c t sum(x): the energy of a point depends on the time it is read at."""

    def __init__(self, c):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(float(c)))

    def forward(self, x, t=None):
        t = torch.ones(x.shape[0]) if t is None else torch.as_tensor(t).float()
        return self.c * t * x.sum(1)


def test_the_positives_are_read_at_their_chains_time():
    """Eq. 10: E(x+, t) - E(x-, t) with x+ paired with the chain's t. Every buffer element at t = 3 and lambda = 0:
    the loss is 3 c (<sum x+> - <sum x->). A mutation read the positives at t = 1 and only a recorded value saw it."""
    c = 0.2
    obj = make(_TimeLinear(c), lam=0.0)
    obj.buffer.t.fill_(3)
    x_pos = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    out = obj(x_pos, generator=torch.Generator().manual_seed(1))
    want = 3 * c * (x_pos.sum(1).mean() - out.negatives.sum(1).mean())
    assert float(out.loss.detach()) == pytest.approx(float(want), rel=1e-5, abs=1e-6)


def test_the_multiscale_image_energy_is_time_conditioned_for_paper_002():
    """``model.name: multiscale`` passes ``t`` to every scale's ResNet, but paper 002's build refused it as "not
    time-conditioned" (its forward takes ``**cond``, not a parameter named t)."""
    from ebmlab.data.dataset import build_dataset
    from ebmlab.objectives import build_objective
    cfg = load_config("paper002_digits", ["model.name=multiscale"])
    obj = build_objective(cfg, build_dataset(cfg.data))
    assert obj.energy.time_cond and len(obj.energy.nets) == 3
    torch.manual_seed(0)
    for p in obj.energy.parameters():  # no zero-initialised head: the energy's dependence on t shows
        torch.nn.init.normal_(p, std=0.1)
    x = torch.zeros(2, 1, 8, 8)
    assert not torch.allclose(obj.energy(x, t=torch.ones(2)), obj.energy(x, t=torch.full((2,), 5.0)))
