"""Shape equivariance of the generation procedures: the same chains on (B, C, H, W) images as on (B, D) vectors.

The oracle tests (test_oracle_00*.py) run every generation procedure on exact energies at shape (2,); image runs
(CIFAR-10, digits) run the same code on (B, C, H, W) tensors, where a reduction over dim 1 instead of all non-batch
dims, or a per-chain (B,) step size or noise broadcast to the wrong axis, would give wrong samples without any error.
Here each procedure runs with one seed on one energy of D = 16 flat vectors (``FlatInput``: x reshaped to (B, 16),
extra arguments such as t, log_weights or labels passed through) at shape (16,) and at the image shapes (1, 4, 4) and
(4, 2, 2) (several channels: with one, a bug that reads or reduces channel 0 only passes unseen). Each image run's
samples, flattened, must equal the flat run's bit for bit (``torch.equal``; no tolerance was needed anywhere), and so
must the per-chain diagnostics (acceptance, step size and energy of every chain at every step, AIS log weights,
controller steps) and the per-step / per-stage summaries.

Covered: ``run_chain`` (samplers/base.py) with unadjusted Langevin (fixed step; per-chain (B,) steps with a (K, B)
noise schedule and injected noises) and with MALA plus the ``StepSizeController`` (controller.py; several groups,
Robbins-Monro and paper 004's shrink-only rule, ``count="accepted"``); AIS (ais.py, Neal 2001) with resample-move
SMC resampling on; paper 000's simulated and soft annealing (annealed.py, Alg. 3-4) through ``JointTime.sample``;
paper 001's Alg. 2 (augmented.py) through ``ImprovedCD.sample`` and with the real augmentation transition D;
paper 002's T x K sweep (implicit_sweep.py) through ``ImplicitDiffusion.sample`` and its training stage at
per-chain times; paper 003's Alg. 2 + Tweedie (samplers/recovery.py) through ``RecoveryLikelihood.sample`` with
each initializer parameterisation (Table 10) and classifier-free guidance (Sec. 3.5) through the real
``RecoveryEnergy.net_energy``; paper 004's chains (``ContrastiveDivergence.sample``: short-run Langevin / MALA,
paper004 rule, AIS + resampling, and the hybrid loss's data and noise chains of ``forward``).
"""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ebmlab.energies.embedding import sinusoidal_embedding
from ebmlab.energies.initializer import MLPInitializer
from ebmlab.energies.mlp import MLPEnergy
from ebmlab.objectives.contrastive import ContrastiveConfig, ContrastiveDivergence
from ebmlab.objectives.implicit_diffusion import ImplicitDiffusion, ImplicitDiffusionConfig
from ebmlab.objectives.improved_cd import ImprovedCD, ImprovedCDConfig
from ebmlab.objectives.joint_time import JointTime, JointTimeConfig
from ebmlab.objectives.recovery import RecoveryConfig, RecoveryLikelihood
from ebmlab.samplers import StepSizeController, langevin, mala, run_chain
from ebmlab.samplers.ais import ais, linear_betas
from ebmlab.samplers.augment import augment
from ebmlab.samplers.augmented import augmented_langevin
from ebmlab.samplers.implicit_sweep import noise_schedule, sweep_stage
from tests.oracle.exact import ExactMixture, SeriesEnergy, TimeSmoothedEnergy, recovery_net_energy

D = 16                     # the flat dimension
IMAGES = ((1, 4, 4), (4, 2, 2))  # image shapes with as many pixels: one channel (the brief's) and several
SHAPES = ((D,), *IMAGES)
N = 64                     # chains per run


# ----- energies ----------------------------------------------------------------------------------
def mixture16() -> ExactMixture:
    """A fixed 4-component isotropic Gaussian mixture in D = 16 dimensions (means ~1.5 apart per coordinate)."""
    g = torch.Generator().manual_seed(123)
    means = 1.5 * torch.randn(4, D, generator=g, dtype=torch.float64)
    return ExactMixture([0.4, 0.3, 0.2, 0.1], means, [0.5, 0.6, 0.7, 0.8])


class FlatInput(nn.Module):
    """``flat`` (a (B, D) -> (B,) energy) on inputs of any shape (B, ...): x is reshaped to (B, D) and every other
    argument is passed on unchanged, so both runs evaluate the very same function. Both runs use it: at (D,) the
    reshape is a no-op view, but it gives both autograd graphs the same view node, so that dE/dx of an energy that
    uses x several times (or twice, as guidance does) sums its contributions in the same order (without it, the
    flat run's leaf received them one by one and the image run's summed at the view first: 3e-8 apart)."""

    def __init__(self, flat):
        super().__init__()
        self.flat = flat

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        return self.flat(x.reshape(x.shape[0], -1), *args, **kwargs)


def flat_input_fn(flat):
    """``FlatInput`` for a plain function (B, D) -> ... (a closure such as paper 003's network energy)."""
    return lambda x, *args, **kwargs: flat(x.reshape(x.shape[0], -1), *args, **kwargs)


def energies(flat) -> dict:
    """{shape: energy}: ``flat`` behind ``FlatInput`` at (D,) and at each image shape."""
    return {shape: FlatInput(flat) for shape in SHAPES}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def start(shape: tuple[int, ...], seed: int = 0, std: float = 1.0) -> Tensor:
    """(N, *shape) standard-normal chain starts; the same numbers at either shape."""
    return std * torch.randn((N, *shape), generator=gen(seed))


# ----- comparisons -------------------------------------------------------------------------------
def assert_same(flat, image, what: str) -> None:
    """``image`` (a tensor, or a list / tuple / dict of them) equals ``flat`` bit for bit, tensors compared after
    reshaping the image one to the flat one's shape (same number of elements required)."""
    if isinstance(flat, dict):
        assert flat.keys() == image.keys(), f"{what}: keys {sorted(flat)} vs {sorted(image)}"
        for k in flat:
            assert_same(flat[k], image[k], f"{what}[{k!r}]")
        return
    if isinstance(flat, (list, tuple)):
        assert len(flat) == len(image), f"{what}: {len(flat)} vs {len(image)} entries"
        for i, (a, b) in enumerate(zip(flat, image)):
            assert_same(a, b, f"{what}[{i}]")
        return
    if not torch.is_tensor(flat):
        assert flat == image, f"{what}: {flat!r} vs {image!r}"
        return
    assert flat.numel() == image.numel(), f"{what}: shapes {tuple(flat.shape)} vs {tuple(image.shape)}"
    b = image.reshape(flat.shape)
    if not _identical(flat, b):
        diff = (flat.double() - b.double()).abs()
        raise AssertionError(f"{what}: image run differs from the flat run (max |diff| {float(diff.nan_to_num(1e30).max()):.3g}, "
                             f"{int((diff != 0).sum())} of {flat.numel()} entries differ)")


def _identical(a: Tensor, b: Tensor) -> bool:
    """``torch.equal``, with NaN equal to NaN (light diagnostics report NaN gradient norms)."""
    if torch.equal(a, b):
        return True
    return a.dtype == b.dtype and a.is_floating_point() and bool(((a == b) | (a.isnan() & b.isnan())).all())


class PerChain:
    """A ``run_chain`` callback that keeps every step's per-chain acceptance (B,), step size (B,) and energy (B,)."""

    def __init__(self):
        self.rows: list[tuple] = []

    def __call__(self, i: int, state, info) -> None:
        acc = None if info.accept_rate is None else info.accept_rate.clone()
        step = info.step_size.expand(state.x.shape[0], *info.step_size.shape[1:]).reshape(state.x.shape[0], -1)[:, 0]
        self.rows.append((acc, step.clone(), None if state.energy is None else state.energy.clone()))


def run_both(fn, flat_energy, **kw):
    """``fn(energy, shape, **kw)`` at the flat and the image shape; returns {shape: result}."""
    return {shape: fn(e, shape, **kw) for shape, e in energies(flat_energy).items()}


def check(results: dict, what: str) -> None:
    """Each image run's result equals the flat run's (``assert_same``)."""
    for shape in IMAGES:
        assert_same(results[(D,)], results[shape], f"{what} at {shape}")


# ----- run_chain: Langevin and MALA with the controller --------------------------------------------
def _langevin_fixed(energy, shape):
    x, info = run_chain(langevin, energy, start(shape), 20, 0.01, generator=gen(1))
    return x, info


def test_run_chain_langevin_fixed_step():
    """The fixed-step fast path (``langevin.fixed_step_chain``)."""
    check(run_both(_langevin_fixed, mixture16().energy()), "langevin fixed step")


def _langevin_per_chain(energy, shape, injected: bool):
    steps = 0.002 + 0.02 * torch.rand(N, generator=gen(2))            # (B,) one step per chain
    noise = (2 * steps).sqrt()[None] * torch.linspace(1.0, 0.2, 12)[:, None]  # (K, B) per step and chain
    noises = torch.randn((12, N, *shape), generator=gen(3)) if injected else None
    cb = PerChain()
    x, info = run_chain(langevin, energy, start(shape), 12, steps, noise_scale=noise, noises=noises,
                        diagnostics="full", callback=cb, generator=gen(4))
    return x, info, cb.rows


@pytest.mark.parametrize("injected", [False, True], ids=["drawn_noise", "injected_noise"])
def test_run_chain_langevin_per_chain_steps_and_noise(injected):
    """The general loop: (B,) steps, a (K, B) noise schedule, given noises (K, B, ...), full diagnostics."""
    check(run_both(_langevin_per_chain, mixture16().energy(), injected=injected), "langevin per-chain")


def _mala_controlled(energy, shape, rule: str, count: str, init: float):
    ctrl = StepSizeController(3, init, rate=0.1, rule=rule)
    groups = torch.arange(N) % 3                                      # (B,) three step sizes
    cb = PerChain()
    x, info = run_chain(mala, energy, start(shape), 25, None, controller=ctrl, groups=groups, callback=cb,
                        generator=gen(5), count=count, diagnostics="full")
    return x, info, cb.rows, ctrl.log_step.clone()


@pytest.mark.parametrize("rule,count,init", [("robbins_monro", "steps", 0.05), ("paper004", "accepted", 0.3)])
def test_run_chain_mala_with_controller(rule, count, init):
    """MALA's MH ratio (``mala._log_ratio``) and per-group steps gathered per chain (``per_chain_step``)."""
    out = run_both(_mala_controlled, mixture16().energy(), rule=rule, count=count, init=init)
    check(out, f"mala {rule}")
    acc = torch.stack([r[0] for r in out[(D,)][2]]).float().mean()
    assert 0.05 < acc < 0.95, f"acceptance {acc:.2f}: the test should see both accepts and rejects"


# ----- AIS ----------------------------------------------------------------------------------------
def _ais(energy, shape):
    ctrl = StepSizeController(1, 0.05)
    r = ais(energy, start(shape, std=1.5), linear_betas(30), ctrl, init_std=1.5, generator=gen(6),
            resample_below=0.5)
    return r.x, r.log_weights, r.info, ctrl.log_step.clone()


def test_ais_with_resampling():
    """Neal's AIS with one MALA move per stage and resample-move SMC below half the chains' ESS."""
    out = run_both(_ais, mixture16().energy())
    check(out, "ais")
    assert not torch.equal(out[(D,)][1], out[(D,)][1][:1].expand(N)), "no spread in the log weights to compare"


# ----- paper 000: Alg. 3 / Alg. 4 through JointTime.sample ------------------------------------------
T000, SIGMA_N = 16, 0.3


@pytest.mark.parametrize("algorithm", ["annealing", "soft"])
def test_paper000_joint_time_sample(algorithm):
    flat = SeriesEnergy(mixture16().affine(0.2), T000, SIGMA_N)

    def run(energy, shape):
        cfg = JointTimeConfig(name="cd_ce", T=T000, sigma_n=SIGMA_N, sample_method=algorithm, sample_levels=8,
                              sample_steps=2, soft_stages=8, sample_adapt_steps=1)
        out = JointTime(energy, cfg, shape=shape).sample(N, generator=gen(7))
        return out.x, out.info

    check(run_both(run, flat), f"000 {algorithm}")


# ----- paper 001: Alg. 2 through ImprovedCD.sample --------------------------------------------------
@pytest.mark.parametrize("kind", ["vector", "image"])
def test_paper001_improved_cd_sample(kind):
    """Alg. 2 without augmentation (uniform start over the box, rounds of Langevin steps, the final clip)."""
    def run(energy, shape):
        cfg = ImprovedCDConfig(augment=False, multiscale=False, step_size=0.01, noise_scale=0.1 ** 0.5,
                               sample_rounds=3, sample_steps=5)
        obj = ImprovedCD(energy, cfg, shape=shape, kind=kind, low=torch.tensor(-1.0), high=torch.tensor(1.0))
        out = obj.sample(N, generator=gen(8))
        return out.x, out.info

    out = run_both(run, mixture16().energy())
    check(out, f"001 {kind}")
    if kind == "image":
        assert float(out[(D,)][0].abs().max()) <= 1.0


def test_paper001_augmented_chains_with_the_transition():
    """Alg. 2 with the real augmentation D (an image operation, so the flat run applies it to the same pixels
    viewed as images): the rounds, the generator's stream and the clip are shape-independent. One channel only
    (D's colour ops know 1 or 3 channels)."""
    def d(x, generator):
        return augment(x, generator, strength=1.0, scale=(0.3, 1.0))

    def run(energy, shape):
        aug = d if shape == IMAGES[0] else (lambda x, g: d(x.view(-1, *IMAGES[0]), g).flatten(1))
        return augmented_langevin(energy, start(shape).clamp(-1, 1), 15, 5, 0.01, 0.1 ** 0.5, augment=aug,
                                  clip=lambda v: v.clamp(-1, 1), generator=gen(9))

    out = {shape: run(FlatInput(mixture16().energy()), shape) for shape in ((D,), IMAGES[0])}
    assert_same(out[(D,)], out[IMAGES[0]], "001 augmented")


# ----- paper 002: the sweep and its training stage ------------------------------------------------------
T002, K002 = 5, 3


def _time_energy() -> TimeSmoothedEnergy:
    var = torch.linspace(0.0, 1.0, T002 + 1)
    return TimeSmoothedEnergy(mixture16(), var, torch.full((T002 + 1,), 0.02))


def test_paper002_implicit_diffusion_sample():
    def run(energy, shape):
        obj = ImplicitDiffusion(energy, ImplicitDiffusionConfig(T=T002, K=K002, eta=1.0, sigma=0.2), shape=shape)
        out = obj.sample(N, generator=gen(10))
        return out.x, out.info

    check(run_both(run, _time_energy()), "002 sweep")


def test_paper002_training_stage_at_per_chain_times():
    """``sweep_stage`` at per-chain times t (B,) with a (K, B) noise schedule (the training chains)."""
    sched = noise_schedule(0.2, T002, K002)

    def run(energy, shape):
        t = torch.randint(1, T002 + 1, (N,), generator=gen(11))
        sigmas = sched[(T002 - t).view(1, -1) * K002 + torch.arange(K002).view(-1, 1)]  # (K, B)
        return sweep_stage(energy, start(shape), t, 1.0, sigmas, generator=gen(12), diagnostics="full")

    check(run_both(run, _time_energy()), "002 stage")


# ----- paper 003: Alg. 2 + Tweedie, the initializer, guidance ----------------------------------------
N_CLASSES = 3


class ImageInitializer(nn.Module):
    """A flat initializer (x (B, D), cond) -> (B, D) on inputs of any shape: x reshaped to (B, D), the output back."""

    def __init__(self, flat: nn.Module):
        super().__init__()
        self.flat = flat

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        return self.flat(x.reshape(x.shape[0], -1), cond).view_as(x)


def flat_initializer(cond_dim: int) -> MLPInitializer:
    """A fixed MLP initializer with a small random output layer (not the identity it starts as)."""
    torch.manual_seed(31)
    init = MLPInitializer(D, cond_dim, 16, 1)
    nn.init.normal_(init.net.out.weight, std=0.05)
    return init.requires_grad_(False)


def _recovery(shape, cfg: RecoveryConfig, num_classes: int = 0) -> RecoveryLikelihood:
    net = MLPEnergy(D, 16, 1, cond_dim=cfg.embed_dim + (num_classes + 1 if num_classes else 0))  # replaced
    return RecoveryLikelihood(net, cfg, shape, num_classes)


@pytest.mark.parametrize("predicts", ["y", "x0", "eps"])
def test_paper003_recovery_sample_with_an_initializer(predicts):
    """Alg. 2 + Tweedie with the exact network energy (as test_oracle_003) and a network initializer."""
    mix = mixture16()
    cfg = RecoveryConfig(T=4, n_steps=5, denoise=True, denoise_coef=1.0, init_predicts=predicts)
    init = flat_initializer(_recovery((D,), cfg).energy.cond.dim)

    def run(shape):
        obj = _recovery(shape, cfg)
        flat_net = recovery_net_energy(mix, obj)
        obj.energy.net_energy = flat_input_fn(flat_net)
        obj.initializer = ImageInitializer(init)
        out = obj.sample(N, generator=gen(13))
        return out.x, out.info

    check({shape: run(shape) for shape in SHAPES}, f"003 initializer {predicts}")


def test_paper003_drl_without_initializer():
    """DRL (``cooperative: false``, the marginal top level, no Tweedie): chains start at x_{t+1}."""
    mix = mixture16()
    cfg = RecoveryConfig(T=4, n_steps=5, cooperative=False, top_marginal=True, denoise=False)

    def run(shape):
        obj = _recovery(shape, cfg)
        ys, abar, sbar = obj.y_scale, obj.abar, obj.sbar
        step_sq = obj.energy.step_sq

        def flat_net(y, t, labels=None):
            return step_sq[t] * -mix.log_prob_affine(y, ys[t] * abar[t], (ys[t] * sbar[t]) ** 2)
        obj.energy.net_energy = flat_input_fn(flat_net)
        out = obj.sample(N, generator=gen(14))
        return out.x, out.info

    check({shape: run(shape) for shape in SHAPES}, "003 drl")


class ConditionalNet(nn.Module):
    """A network for ``RecoveryEnergy.net`` that answers both of its call forms with one exact energy:
    vectors ``net(y, c)`` with c = [embed(lambda_t), one-hot(label or null)], images ``net(y, t=lambda_t, y=label)``
    (label -1 or None: the null token). Both are decoded to (t, label) and give
    s_t^2 (-log p_{y_t}(y) + 0.5 u_label . y) (u_null = 0): the exact level-t energy tilted per class."""

    def __init__(self, obj: RecoveryLikelihood, mix: ExactMixture):
        super().__init__()
        self.flat_net, self.cond, self.step_sq = recovery_net_energy(mix, obj), obj.energy.cond, obj.energy.step_sq
        u = torch.randn(N_CLASSES, D, generator=gen(15))
        self.register_buffer("u", torch.cat([u, torch.zeros(1, D)]))  # (classes + null, D)
        self.embeddings = sinusoidal_embedding(self.cond.lam, self.cond.embed_dim)  # (T, E)

    def forward(self, x: Tensor, c: Tensor | None = None, *, t: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        if c is not None:  # vector form: decode the level from its embedding, the label from its one-hot
            match = (c[:, None, :self.cond.embed_dim] == self.embeddings[None]).all(2)  # (B, T)
            label = c[:, self.cond.embed_dim:].argmax(1)
        else:              # image form: lambda_t and the label (-1 / None: null)
            match = t[:, None] == self.cond.lam[None]  # (B, T)
        assert bool((match.sum(1) == 1).all()), "the level could not be decoded from the network's input"
        level = match.float().argmax(1)
        if c is None:
            label = torch.full_like(level, N_CLASSES) if y is None else torch.where(y < 0, N_CLASSES, y)
        x2 = x.reshape(x.shape[0], -1)  # (a view node at either shape: see FlatInput)
        return self.flat_net(x2, level) + 0.5 * self.step_sq[level] * (self.u[label] * x2).sum(1)


@pytest.mark.parametrize("w", [0.0, 1.5])
def test_paper003_classifier_free_guidance(w):
    """Sec. 3.5 through ``guided_sample`` and the real ``RecoveryEnergy.net_energy`` (both network call forms)."""
    from ebmlab.applications.guidance import guided_sample

    mix = mixture16()
    cfg = RecoveryConfig(T=4, n_steps=5, conditional=True, denoise=True)
    init = flat_initializer(_recovery((D,), cfg, N_CLASSES).energy.cond.dim)
    labels = torch.arange(N) % N_CLASSES

    def run(shape):
        obj = _recovery(shape, cfg, N_CLASSES)
        obj.energy.net = ConditionalNet(obj, mix)
        obj.initializer = ImageInitializer(init)
        return guided_sample(obj, labels, w, generator=gen(16))

    out = {shape: run(shape) for shape in SHAPES}
    check(out, f"003 guidance w={w}")
    assert torch.isfinite(out[(D,)]).all()


# ----- paper 004: ContrastiveDivergence.sample and the hybrid chains ---------------------------------------
def _contrastive(energy, shape, **kw) -> ContrastiveDivergence:
    cfg = ContrastiveConfig(**{"name": "hybrid", "sampler": "mala", "step_size": 0.05, "target_accept": 0.574,
                               "adapt_rate": 0.05, "init_std": 1.0, "noise_chain": "short_run", "n_steps": 20,
                               "n_steps_data": 5, **kw})
    return ContrastiveDivergence(energy, cfg, shape=shape)


@pytest.mark.parametrize("kw", [
    {"sampler": "langevin", "target_accept": None, "step_size": 0.01},
    {},
    {"step_rule": "paper004", "step_size": 0.3},
    {"noise_chain": "ais"},
], ids=["langevin", "mala_robbins_monro", "mala_paper004", "ais_resampling"])
def test_paper004_contrastive_sample(kw):
    def run(energy, shape):
        out = _contrastive(energy, shape, **kw).sample(N, generator=gen(17))
        return out.x, out.info

    check(run_both(run, mixture16().energy()), f"004 sample {kw}")


def test_paper004_sample_from_given_starts():
    def run(energy, shape):
        out = _contrastive(energy, shape).sample(N, generator=gen(18), x0=start(shape, seed=19))
        return out.x, out.info

    check(run_both(run, mixture16().energy()), "004 sample from x0")


@pytest.mark.parametrize("noise_chain", ["short_run", "ais"])
def test_paper004_hybrid_training_chains(noise_chain):
    """Eq. 6's data-initialised chains (started from the batch's cached E and dE/dx) and noise-initialised chains
    (short-run MALA, or AIS with its weighted loss), through ``forward``: negatives, loss and metrics."""
    mix = mixture16()
    batch = mix.sample(N, gen(20))  # (N, D)

    def run(energy, shape):
        obj = _contrastive(energy, shape, noise_chain=noise_chain)
        out = obj.forward(batch.view(N, *shape), generator=gen(21))
        return out.negatives, out.loss.detach(), {k: v.detach() for k, v in out.metrics.items()}, \
            obj.ctrl_noise.log_step.clone(), obj.ctrl_data.log_step.clone()

    check(run_both(run, mix.energy()), f"004 hybrid {noise_chain}")
