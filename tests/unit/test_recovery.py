"""Paper 003 (CDRL): schedule, Eq. 9 pairs, conditional energy, sampling pieces, applications."""
import math

import pytest
import torch
from scipy import stats

from ebmlab import schedules
from ebmlab.applications.guidance import guided_energy, guided_init, guided_sample
from ebmlab.applications.inpainting import inpaint
from ebmlab.applications.recovery_composition import composed_energy
from ebmlab.energies.initializer import UNetInitializer
from ebmlab.samplers.recovery import conditional_energy, step_sizes
from ebmlab.training.config import ConfigError, load_config
from tests.builders import recovery_objective as _objective




def test_cosine_schedule_hits_ends_and_decreases():
    lam = schedules.cosine_logsnr(6, 9.8, -5.1)
    assert lam.shape == (7,)
    assert lam[0].item() == pytest.approx(9.8, abs=1e-9) and lam[-1].item() == pytest.approx(-5.1, abs=1e-9)
    assert bool((lam[1:] < lam[:-1]).all())
    lv = schedules.vp_levels(lam)
    assert torch.allclose(lv["abar"] ** 2 + lv["sbar"] ** 2, torch.ones(7, dtype=torch.float64))
    # the one-step factors compose to the cumulative ones, and sigma^2 = 1 - alpha^2 keeps VP
    assert torch.allclose(lv["abar"][0] * torch.cumprod(lv["alpha"], 0), lv["abar"][1:])
    assert torch.allclose(lv["alpha"] ** 2 * lv["sbar"][:-1] ** 2 + lv["sigma"] ** 2, lv["sbar"][1:] ** 2)
    assert torch.log(lv["abar"] ** 2 / lv["sbar"] ** 2).sub(lam).abs().max() < 1e-9


def test_step_sizes_follow_eq16():
    lv = schedules.vp_levels(schedules.cosine_logsnr())
    s = schedules.recovery_step_sizes(lv, 0.054)
    assert torch.allclose(s ** 2, 0.054 * lv["sbar"][:-1] * lv["sigma"] ** 2)


@pytest.mark.parametrize("shared", [True, False])
def test_eq9_pairs_have_the_diffusion_marginals(shared):
    """x_t and x_{t+1} given x_0 must be N(abar x0, sbar^2) whether or not the noise is shared."""
    lv = schedules.vp_levels(schedules.cosine_logsnr())
    g = torch.Generator().manual_seed(1)
    n, level = 20000, 2
    x0 = torch.full((n, 1), 1.5)
    t = torch.full((n,), level, dtype=torch.long)
    y, x_next = schedules.shared_noise_pair(x0, t, lv, shared=shared, generator=g)
    x_t = y / lv["alpha"][level].float()
    for x, k in ((x_t, level), (x_next, level + 1)):
        z = ((x[:, 0] - lv["abar"][k] * 1.5) / lv["sbar"][k]).double().numpy()
        assert stats.kstest(z, "norm").pvalue > 1e-3
    # shared noise makes x_t a deterministic function of (x0, x_{t+1}); independent noise does not
    resid = x_t - (lv["abar"][level] * 1.5 + lv["sbar"][level] / lv["sbar"][level + 1]
                   * (x_next - lv["abar"][level + 1] * 1.5)).float()
    assert (resid.abs().max() < 1e-4) if shared else (resid.std() > 0.05)


def test_conditional_energy_gradient_includes_quadratic_term():
    obj = _objective()
    g = torch.Generator().manual_seed(2)
    y = torch.randn(8, 2, generator=g)
    x_next = torch.randn(8, 2, generator=g)
    t = torch.arange(8) % obj.cfg.T
    net_e = lambda v, tt: obj.energy.net_energy(v, tt)  # noqa: E731
    fn = conditional_energy(net_e, x_next, t, obj.energy.step_sq, obj.sigma ** 2)
    yy = y.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(yy).sum(), yy)
    yn = y.clone().requires_grad_(True)
    (g_net,) = torch.autograd.grad(net_e(yn, t).sum(), yn)
    s2, v = obj.energy.step_sq[t][:, None], (obj.sigma ** 2)[t][:, None]
    expected = g_net / s2 + (y - x_next) / v
    assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-3)
    assert ((y - x_next) / v).abs().max() > 0.1  # the quadratic term is not negligible here


def test_step_size_adjustment_scales_by_sqrt_k_ratio():
    obj = _objective()
    t = torch.arange(6)
    lv = obj.levels_for_sampling()
    s15, s5 = step_sizes(lv, t, 15), step_sizes(lv, t, 5)
    assert torch.allclose(s5, s15 * math.sqrt(3.0))
    assert torch.allclose(s15 ** 2, obj.energy.step_sq[t])


def test_training_step_param_groups_and_sampling_shapes():
    obj = _objective(n_steps=3, T=3)
    g = torch.Generator().manual_seed(3)
    out = obj(torch.randn(16, 2, generator=g), generator=g)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in obj.initializer.parameters() if p.requires_grad)
    groups = obj.param_groups(1e-4)
    assert [gr["name"] for gr in groups] == ["energy", "initializer"]
    assert groups[1]["lr"] == 1e-5 and groups[1]["delay"] == -500  # Eq. 15: initializer 500 its earlier
    x, diag = obj.sample(5, generator=g, n_steps=6)  # 6 steps in all: 2 per level
    assert x.shape == (5, 2) and diag["grad_norm"].shape == (3 * 2,)
    assert torch.isfinite(obj.log_density(x)).all()


def test_drl_has_no_initializer_and_starts_at_x_next():
    obj = _objective(cooperative=False, n_steps=0, T=3, denoise=False)
    assert obj.initializer is None and len(obj.param_groups(1e-4)) == 1
    x_T = torch.randn(4, 2)
    x, _, _ = obj.reverse_process(x_T, generator=torch.Generator().manual_seed(0))
    # with K = 0 and no initializer, every level only rescales: x_0 = x_T / prod(alpha)
    assert torch.allclose(x, x_T / torch.prod(obj.alpha), atol=1e-5)


def test_inpainting_keeps_known_pixels():
    obj = _objective(dim=6, n_steps=2, T=3)
    g = torch.Generator().manual_seed(4)
    x_obs = torch.randn(5, 6, generator=g)
    mask = torch.tensor([1, 1, 1, 0, 0, 0.0]).expand(5, 6)
    out, path = inpaint(obj, x_obs, mask, generator=g, keep_levels=True)
    assert torch.equal(out[:, :3], x_obs[:, :3])
    assert not torch.allclose(out[:, 3:], x_obs[:, 3:])
    # before the final reset the known region already follows the noisy observation at level 0
    lvl0 = path[-1][:, :3]
    assert (lvl0 - obj.abar[0] * x_obs[:, :3]).abs().max() < 5 * obj.sbar[0]


def test_guidance_and_composition_coefficients():
    obj = _objective(num_classes=3, n_steps=1, T=2)
    g = torch.Generator().manual_seed(5)
    y, t = torch.randn(4, 2, generator=g), torch.zeros(4, dtype=torch.long)
    c1, c2 = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2])
    e = obj.energy.net_energy
    w = 1.5
    assert torch.allclose(guided_energy(obj, c1, w)(y, t), (w + 1) * e(y, t, c1) - w * e(y, t, None))
    assert torch.allclose(guided_init(obj, c1, 0.0)(y, t), obj.init_mean(y, t, c1))
    comp = composed_energy(obj, [c1, c2], w)(y, t)
    assert torch.allclose(comp, (w + 1) * (e(y, t, c1) + e(y, t, c2)) - (2 * w + 1) * e(y, t, None), atol=1e-5)
    # M = 2, w = 0 (Eq. 13): sum of the conditionals minus one prior
    comp0 = composed_energy(obj, [c1, c2], 0.0)(y, t)
    assert torch.allclose(comp0, e(y, t, c1) + e(y, t, c2) - e(y, t, None), atol=1e-5)
    assert guided_sample(obj, c1, 1.0, generator=g).shape == (4, 2)
    for bad in (-1.0, float("nan"), float("inf")):  # NaN passed "w < 0" and ran the chain into NaN
        with pytest.raises(ValueError, match="a finite number >= 0"):
            guided_sample(obj, c1, bad, generator=g)


def test_inpainting_refuses_a_model_without_paper_003s_noise_levels():
    """It raised AttributeError ('... has no attribute abar') on any other method."""
    from ebmlab.objectives.contrastive import ContrastiveDivergence

    other = ContrastiveDivergence.__new__(ContrastiveDivergence)  # the type is all inpaint looks at first
    with pytest.raises(ValueError, match="inpainting needs a cdrl or drl model"):
        inpaint(other, torch.zeros(2, 6), torch.ones(2, 6))


def test_unet_initializer_shapes():
    net = UNetInitializer(1, 8, channels=(8, 16))
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(net(x, torch.randn(2, 8)), x)  # zero-initialised head: starts at g = x_{t+1}
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(2, 1, 7, 7), torch.randn(2, 8))


def test_config_errors():
    with pytest.raises(ConfigError, match="schedule"):
        load_config(None, ["method.name=cdrl", "method.schedule=linear"])
    with pytest.raises(ConfigError, match="init_target"):
        load_config(None, ["method.name=cdrl", "method.init_target=x0"])
    # DRL's schedule reads 1000 fine steps at stride 1000 // (2 (T - 1)): above T = 501 its levels repeat
    load_config(None, ["method.name=drl", "method.T=501"])
    with pytest.raises(ConfigError, match=r"method.T must be >= 2 \(<= 501 with method.schedule drl\).*got 502"):
        load_config(None, ["method.name=drl", "method.T=502"])
    load_config(None, ["method.name=cdrl", "method.T=600"])  # the cosine schedule has no such bound
    cfg = load_config(None, ["method.name=drl"])
    assert cfg.method.cooperative is False and cfg.method.n_steps == 30 and cfg.method.schedule == "drl"


def test_conditional_langevin_samples_the_gaussian_when_the_ebm_is_flat():
    """With E_net = 0, p(y | x_{t+1}) = N(x_{t+1}, sigma_{t+1}^2 I) (Eq. 3): long chains of Eq. 5
    at the top level must reach that mean and variance (statistical test of the sampler wiring)."""
    obj = _objective()
    t_top = obj.cfg.T - 1
    n = 4000
    t = torch.full((n,), t_top)
    x_next = torch.full((n, 2), 0.7)
    flat = lambda v, tt: torch.zeros(v.shape[0])  # noqa: E731
    from ebmlab.samplers.recovery import refine
    fn = conditional_energy(flat, x_next, t, obj.energy.step_sq, obj.sigma ** 2)
    g = torch.Generator().manual_seed(6)
    y, _ = refine(fn, torch.zeros(n, 2), 800, step_sizes(obj.levels_for_sampling(), t, obj.cfg.n_steps), g)
    var = float(obj.sigma[t_top] ** 2)
    assert (y.mean(0) - 0.7).abs().max() < 4 * (var / n) ** 0.5 + 0.01
    assert abs(float(y.var(0).mean()) / var - 1) < 0.06


def test_class_conditional_training_step_uses_labels():
    obj = _objective(num_classes=3, n_steps=2, T=2, label_dropout=0.5)
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(32, 2, generator=g), torch.randint(3, (32,), generator=g)
    out = obj((x, y), generator=g)
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="labelled"):
        obj(x, generator=g)


@pytest.mark.parametrize("coef", [1.0, 2.0])
def test_tweedie_step_matches_eq18_for_gaussian_data(coef):
    """Data N(0, I) give the VP marginal x_0 ~ N(0, I): with the exact level-0 energy |x|^2/2 Eq. 18
    gives E[x | x_0] = abar_0 x_0; the coefficient c scales the gradient term (App. A.2, c = 2)."""
    obj = _objective(denoise_coef=coef)
    a0, s2 = obj.alpha[0], obj.energy.step_sq[0]
    exact = lambda v, tt: s2 * 0.5 * (v / a0).pow(2).sum(1)  # noqa: E731  E_net with E_0(x) = |x|^2 / 2
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(8))
    expected = (x - coef * obj.sbar[0] ** 2 * x) / obj.abar[0]
    assert torch.allclose(obj.denoise(x, exact), expected, atol=1e-5)
    if coef == 1.0:
        assert torch.allclose(obj.denoise(x, exact), obj.abar[0] * x, atol=1e-5)


def test_energy_module_is_the_level0_marginal_energy():
    obj = _objective()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(9))
    t0 = torch.zeros(5, dtype=torch.long)
    e = obj.energy(x)
    assert e.shape == (5,)
    assert torch.allclose(e, obj.energy.net_energy(obj.alpha[0] * x, t0) / obj.energy.step_sq[0])
    assert torch.allclose(obj.log_density(x), -e) and torch.allclose(obj.score(x), e)


def test_fewer_steps_sampling_uses_the_scaled_step():
    obj = _objective(T=2, n_steps=12)
    _, diag = obj.sample(4, generator=torch.Generator().manual_seed(10), n_steps=6)  # K' = 3 per level
    # diag step_size is the Langevin epsilon = s^2 / 2 per step, levels T-1..0, 3 steps each
    expected = torch.cat([obj.energy.step_sq[lv].repeat(3) * 4 / 2 for lv in (1, 0)]).float()
    assert torch.allclose(diag["step_size"], expected, rtol=1e-5)


def test_label_dropout_sends_labels_to_the_null_token_at_its_rate():
    """Sec. 3.5: each training label becomes the null token (``num_classes``) with probability ``label_dropout``,
    the others unchanged; 4 binomial standard errors of 20,000 labels (a mutation that never dropped passed)."""
    obj = _objective(num_classes=3, n_steps=2, T=2, label_dropout=0.3)
    n = 20000
    y = torch.randint(3, (n,), generator=torch.Generator().manual_seed(0))
    lab = obj._labels((torch.zeros(n, 2), y), torch.Generator().manual_seed(1))
    dropped = lab == 3
    assert abs(float(dropped.float().mean()) - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)
    assert torch.equal(lab[~dropped], y[~dropped])


def test_the_initializer_regresses_on_the_refined_samples(monkeypatch):
    """``init_target: refined`` (the default): the initializer's loss is its squared error to the Langevin-refined
    samples y~. A constant initializer (1.5) and a refinement that returns zeros give init_mse = 2.25 exactly (the
    targets swapped with the noisy y were seen only by a recorded loss value)."""
    import ebmlab.objectives.recovery as rec

    obj = _objective(n_steps=2, T=2)
    assert obj.cfg.init_target == "refined"

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Parameter(torch.tensor(1.5))

        def forward(self, x, c):
            return self.b.expand_as(x)
    obj.initializer = Constant()
    real = rec.refine

    def to_zero(cond_e, y_hat, *args, **kwargs):
        _, diag = real(cond_e, y_hat, *args, **kwargs)
        return torch.zeros_like(y_hat), diag
    monkeypatch.setattr(rec, "refine", to_zero)
    out = obj(torch.randn(32, 2, generator=torch.Generator().manual_seed(0)), generator=torch.Generator().manual_seed(1))
    assert float(out.metrics["init_mse"]) == pytest.approx(1.5 ** 2, rel=1e-6)
