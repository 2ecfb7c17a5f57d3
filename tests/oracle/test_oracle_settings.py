"""Oracle tests at NON-default generation settings: each paper's ``Objective.sample`` on exact energies
(tests/oracle/exact.py) at a setting a user can choose, beside the one setting test_oracle_00[0-4].py use.

Covered (seeds fixed before any result was seen):
- 000: Alg. 3 on 32 of 256 levels with a total ``n_steps`` not divisible by the stages; Alg. 3 with
  ``sample_adapt_steps``; Alg. 4 with 32 ``soft_stages`` x 6 steps;
- 001: Alg. 2 with a 2x larger step (0.01) in 100 rounds of 20 steps;
- 002: the sweep with eta = 2 and (T, K) = (50, 40) (eta cancels in the exact energy, test_oracle_002);
- 003: K' = 0 (the proposals alone) and K' = 30 != K (Sec. 4.2 step rescaling) with exact posterior draws;
  ``denoise: false``; class-conditional sampling (``cond={"y": ...}``) and ``guided_sample`` at w = 0 with exact
  per-class energies; Eq. 11's guided energy; a strict xfail documenting that guided samples (w = 1) are far
  narrower than the closed-form target p(x|c)^(1+w) p(x)^-w (a property of Eq. 11-12 applied level by level);
- 004: ``temperature`` 2 (MALA, unadjusted Langevin, AIS) against the tempered law p^(1/2) computed on a grid;
  ``step_rule: paper004``; ``init_std`` 3; ``ais_resample`` 0.5; ``model.base: gmm`` (AIS from a mixture base).

Statistics (n = 2000 independent chains per test, every test): precision (checks.PRECISION_MIN), per-mode
mass within 0.05 (SE of a mass <= sqrt(0.25 / 2000) = 0.011: 4.5 SE), per-coordinate mean within
5 SE (SE = sd / sqrt(n)), per-coordinate variance within 15 % (the SE of a sample variance of this
mixture is ~4 % of it at n = 2000 (kurtosis ~3): ~4 SE). Targets are exact: the mixture's moments in
closed form, or a 601 x 601 grid quadrature of p^(1/T) on [-6, 6]^2 (tail mass < 1e-8).
"""
import math
import types

import numpy as np
import pytest
import torch

from ebmlab.applications.guidance import guided_energy, guided_sample
from ebmlab.energies.mixture_base import GaussianMixtureBase
from ebmlab.energies.mlp import MLPEnergy
from ebmlab.metrics.density import sample_precision
from ebmlab.objectives.contrastive import ContrastiveConfig, ContrastiveDivergence
from ebmlab.objectives.implicit_diffusion import ImplicitDiffusion, ImplicitDiffusionConfig
from ebmlab.objectives.improved_cd import ImprovedCD, ImprovedCDConfig
from ebmlab.objectives.joint_time import JointTime, JointTimeConfig
from ebmlab.objectives.recovery import RecoveryConfig, RecoveryLikelihood
from tests.oracle.checks import PRECISION_MIN, reference
from tests.oracle.exact import ExactMixture, SeriesEnergy, TimeSmoothedEnergy, recovery_net_energy, \
    recovery_posterior_sampler
from tests.oracle.test_oracle_002 import stage_scales

N = 2000
MASS_TOL, MEAN_SE, VAR_REL = 0.05, 5.0, 0.15


def _moments(mix: ExactMixture, temperature: float = 1.0):
    """(mean (D,), var (D,), mode mass (K,)) of p^(1/T): closed form at T = 1, else grid quadrature."""
    if temperature == 1.0:
        w, m, s = mix.weights, mix.means, mix.stds
        mean = (w[:, None] * m).sum(0)
        var = (w[:, None] * (s[:, None] ** 2 + m ** 2)).sum(0) - mean ** 2
        return mean, var, w
    g = torch.linspace(-6, 6, 601, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    w = torch.softmax(mix.log_prob(pts) / temperature, 0)
    mean = (w[:, None] * pts).sum(0)
    var = (w[:, None] * (pts - mean) ** 2).sum(0)
    return mean, var, torch.bincount(mix.assign(pts), weights=w, minlength=mix.n_components)


def _check(x: torch.Tensor, mix: ExactMixture, label: str, temperature: float = 1.0) -> None:
    x = x.detach().double().cpu()
    assert x.shape == (N, mix.dim) and bool(torch.isfinite(x).all()), f"[{label}] bad samples {tuple(x.shape)}"
    mean, var, mass = _moments(mix, temperature)
    got_mass = mix.mode_mass(x)
    se = (var / N).sqrt()
    text = (f"[{label}] mean {x.mean(0).tolist()} vs {mean.tolist()} (tol {(MEAN_SE * se).tolist()}); var "
            f"{x.var(0).tolist()} vs {var.tolist()}; mass {got_mass.tolist()} vs {mass.tolist()}")
    bad = []
    if temperature == 1.0:
        ref = reference(mix)
        prec = sample_precision(mix.log_prob(x.float()), ref.data_logp)
        text += f"; precision {prec:.3f}"
        bad += ["precision"] if prec < PRECISION_MIN else []
    bad += ["mass"] if float((got_mass - mass).abs().max()) > MASS_TOL else []
    bad += ["mean"] if bool(((x.mean(0) - mean).abs() > MEAN_SE * se).any()) else []
    bad += ["var"] if bool(((x.var(0) / var - 1).abs() > VAR_REL).any()) else []
    print(text)
    assert not bad, f"{bad} failed: {text}"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----- paper 000 ----------------------------------------------------------------------------------
T0, SIGMA_N = 256, 0.3


def _joint(mixture, **kw):
    mix = mixture.affine(0.2)
    cfg = JointTimeConfig(**{**dict(name="cd_ce", T=T0, sigma_n=SIGMA_N, target_accept=0.6, sample_levels=128,
                                    sample_steps=3, soft_stages=128), **kw})
    return mix, JointTime(SeriesEnergy(mix, T0, SIGMA_N), cfg, shape=(2,))


def test_000_alg3_level_subset_and_indivisible_total(mixture):
    mix, obj = _joint(mixture, sample_levels=32)
    out = obj.sample(N, generator=_gen(100), n_steps=97)  # 97 / 32 stages: ceil -> 4 steps per level
    assert out.info["level"].tolist()[-1] == T0 - 1 and len(out.info["level"]) == 32
    _check(out.x, mix, "000 Alg. 3, 32 levels, n_steps 97")


def test_000_alg3_with_adapt_steps(mixture):
    mix, obj = _joint(mixture, sample_levels=64, sample_adapt_steps=2, sample_adapt_rate=0.2)
    out = obj.sample(N, generator=_gen(101))
    assert int(out.info["n_adapt_steps"]) == 64 * 2
    _check(out.x, mix, "000 Alg. 3, adapt steps")


def test_000_alg4_fewer_stages_more_steps(mixture):
    mix, obj = _joint(mixture, sample_method="soft", soft_stages=32, sample_steps=6)
    _check(obj.sample(N, generator=_gen(102)).x, mix, "000 Alg. 4, 32 stages x 6")


# ----- paper 001 ----------------------------------------------------------------------------------
def test_001_larger_step_rounds(mixture, ref):
    step = 0.01  # unadjusted bias ~ step / (2 s^2) = 5 % on the narrowest mode's variance: inside VAR_REL
    cfg = ImprovedCDConfig(augment=False, multiscale=False, step_size=step, noise_scale=(2 * step) ** 0.5,
                           sample_rounds=100, sample_steps=20)
    lo, hi = ref.data.min(0).values, ref.data.max(0).values
    obj = ImprovedCD(mixture.energy(), cfg, shape=(2,), kind="vector", low=lo - 0.1 * (hi - lo),
                     high=hi + 0.1 * (hi - lo))
    _check(obj.sample(N, generator=_gen(110)).x, mixture, "001 step 0.01, 100 x 20")


# ----- paper 002 ----------------------------------------------------------------------------------
def test_002_eta_and_level_count(mixture):
    T, K, eta, sigma = 50, 40, 2.0, 0.2  # total Langevin time T K sigma^2 / 6 = 13 (>3 mode-switch times)
    energy = TimeSmoothedEnergy(mixture, torch.zeros(T + 1), stage_scales(T, K, eta, sigma))
    obj = ImplicitDiffusion(energy, ImplicitDiffusionConfig(T=T, K=K, eta=eta, sigma=sigma), shape=(2,))
    _check(obj.sample(N, generator=_gen(120)).x, mixture, "002 eta 2, T 50, K 40")


# ----- paper 003 ----------------------------------------------------------------------------------
def _recovery(mixture, **kw):
    cfg = RecoveryConfig(**{**dict(T=6, n_steps=15, denoise=True, denoise_coef=1.0), **kw})
    obj = RecoveryLikelihood(MLPEnergy(2, 16, 1, cond_dim=cfg.embed_dim), cfg, (2,))
    obj.energy.net_energy = recovery_net_energy(mixture, obj)
    obj.init_mean = recovery_posterior_sampler(mixture, obj, _gen(131))
    obj.init_std.zero_()
    return obj


@pytest.mark.parametrize("total", [0, 180])  # K' = 0 (proposals alone), K' = 30 (step s_t sqrt(15 / 30))
def test_003_step_count_with_exact_posterior_draws(mixture, total):
    out = _recovery(mixture).sample(N, generator=_gen(130), n_steps=total)
    assert out.info["step_size"].numel() == total
    if total:  # Sec. 4.2: step s_t^2 K / K' (K = 15, K' = 30), i.e. Langevin step_size s_t^2 / 2 x 15 / 30, levels 5..0
        obj = _recovery(mixture)
        want = (obj.energy.step_sq.flip(0) / 2 * 15 / (total // 6)).repeat_interleave(total // 6)
        torch.testing.assert_close(out.info["step_size"].float(), want.float())
    _check(out.x, mixture, f"003 K' = {total // 6}")


def test_003_without_denoising(mixture):
    _check(_recovery(mixture, denoise=False).sample(N, generator=_gen(132)).x, mixture, "003 denoise off")


S_CLASS, S_NULL = 0.5, 1.5
CLASS_MEANS = [[1.0, 0.0], [-1.0, 0.5]]


def _conditional(draws: bool):
    """A conditional cdrl objective whose class c energy is N(m_c, 0.5^2 I) and null energy N(0, 1.5^2 I), all
    levels exact; initializer: exact posterior draws (``draws``) or exact posterior means."""
    comps = [ExactMixture([1.0], [m], [S_CLASS]) for m in CLASS_MEANS] + [ExactMixture([1.0], [[0.0, 0.0]], [S_NULL])]
    cfg = RecoveryConfig(T=6, n_steps=15, denoise=True, denoise_coef=1.0, conditional=True)
    obj = RecoveryLikelihood(MLPEnergy(2, 16, 1, cond_dim=cfg.embed_dim + 3), cfg, (2,), num_classes=2)
    abar, sbar, alpha, sigma, step_sq = obj.abar, obj.sbar, obj.alpha, obj.sigma, obj.energy.step_sq
    g = _gen(133)

    def pick(fn, labels, t):
        lab = torch.full_like(t, 2) if labels is None else labels
        outs = torch.stack([fn(c) for c in comps])  # (3, B, ...)
        return outs.gather(0, lab.view(1, -1, *([1] * (outs.dim() - 2))).expand(1, *outs.shape[1:]))[0]

    def net_energy(y, t, labels=None):
        return pick(lambda c: step_sq[t].to(y) * -c.log_prob_affine(y, abar[t + 1], (alpha[t] * sbar[t]) ** 2), labels, t)

    def init_mean(x, t, labels=None):
        a, b2, v = abar[t + 1], (alpha[t] * sbar[t]) ** 2, sigma[t] ** 2
        if draws:
            return pick(lambda c: c.posterior_sample(x, a, b2, v, g), labels, t)
        return pick(lambda c: c.posterior_mean(x, a, b2, v).to(x), labels, t)
    obj.energy.net_energy, obj.init_mean = net_energy, init_mean
    if draws:
        obj.init_std.zero_()
    return obj


@pytest.mark.parametrize("c", [0, 1])
def test_003_class_conditional_and_w0_guidance(c):
    target = ExactMixture([1.0], [CLASS_MEANS[c]], [S_CLASS])
    obj = _conditional(draws=True)
    labels = torch.full((N,), c, dtype=torch.long)
    _check(obj.sample(N, generator=_gen(134), cond={"y": labels}).x, target, f"003 class {c}")
    _check(guided_sample(obj, labels, 0.0, generator=_gen(135)), target, f"003 guided w=0 class {c}")


def test_003_guided_energy_is_eq11():
    obj, w = _conditional(draws=False), 1.5
    y, t = torch.randn(64, 2, generator=_gen(136)), torch.arange(64) % 6
    labels = torch.arange(64) % 2
    want = (1 + w) * obj.energy.net_energy(y, t, labels) - w * obj.energy.net_energy(y, t, None)
    torch.testing.assert_close(guided_energy(obj, labels, w)(y, t), want)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "a property of Eq. 11-12 applied at every level, not a code bug (Eq. 11 is checked above): guided samples "
    "(w = 1, exact class/null energies and initializer means) have variance 0.033 against the closed-form "
    "p(x|c)^2 p(x)^-1 = N(1.059 m, 0.132 I), mean 1.117 vs 1.059; K' = 200 gives the same (K' rescaling keeps "
    "K s_t^2). Measured with n = 8000, seed 32."))
def test_003_guidance_matches_the_closed_form_target():
    w = 1.0
    prec = (1 + w) / S_CLASS ** 2 - w / S_NULL ** 2
    mean = (1 + w) / S_CLASS ** 2 * torch.tensor(CLASS_MEANS[0], dtype=torch.float64) / prec
    target = ExactMixture([1.0], [mean.tolist()], [prec ** -0.5])
    x = guided_sample(_conditional(draws=False), torch.zeros(N, dtype=torch.long), w, generator=_gen(137))
    _check(x, target, "003 guided w=1")


# ----- paper 004 ----------------------------------------------------------------------------------
def _contrastive(energy, **kw):
    cfg = dict(name="hybrid", sampler="mala", step_size=0.01, target_accept=0.574, adapt_rate=0.05, init_std=1.0,
               noise_chain="short_run")
    cfg.update(kw)
    if cfg.get("step_rule") == "paper004" or cfg["sampler"] == "langevin":
        cfg["target_accept"] = None
    return ContrastiveDivergence(energy, ContrastiveConfig(**cfg), shape=(2,))


@pytest.mark.parametrize("kw,steps", [
    (dict(), 1000),                                        # MALA: at T = 2 the barriers halve, mixing is faster
    (dict(sampler="langevin", step_size=0.005), 2000),    # unadjusted: bias ~ eps T / (2 s^2) < 7 % in var
    (dict(noise_chain="ais"), 30),                         # AIS to exp(-E/2), then resampling
])
def test_004_temperature_two(mixture, kw, steps):
    obj = _contrastive(mixture.energy(), temperature=2.0, **kw)
    _check(obj.sample(N, generator=_gen(140), n_steps=steps).x, mixture, f"004 T=2 {kw}", temperature=2.0)


@pytest.mark.parametrize("kw,steps", [
    (dict(step_rule="paper004", step_size=0.1), 1000),     # shrink-only rule, accepted moves counted
    (dict(init_std=3.0), 1500),
    (dict(noise_chain="ais", ais_resample=0.5), 30),
])
def test_004_settings(mixture, kw, steps):
    _check(_contrastive(mixture.energy(), **kw).sample(N, generator=_gen(141), n_steps=steps).x, mixture,
           f"004 {kw}")


class _BasedEnergy(torch.nn.Module):
    """E = -log p (exact) carrying a two-component ``GaussianMixtureBase`` (``model.base: gmm``)."""

    def __init__(self, mix):
        super().__init__()
        self.mix, self.base = mix, GaussianMixtureBase(2)
        self.base.fit_from_sklearn(types.SimpleNamespace(
            means_=np.array([[-0.5, -0.5], [0.8, 0.8]]), weights_=np.array([0.6, 0.4]),
            precisions_cholesky_=np.array([1 / 1.2, 1 / 0.9]), covariance_type="spherical"))

    def forward(self, x):
        return -self.mix.log_prob(x)


def test_004_ais_from_a_mixture_base(mixture):
    obj = _contrastive(_BasedEnergy(mixture), noise_chain="ais")
    _check(obj.sample(N, generator=_gen(142), n_steps=30).x, mixture, "004 AIS from gmm base")
    assert math.isfinite(float(obj.prior(4, _gen(1)).sum()))
