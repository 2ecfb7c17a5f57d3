"""Paper 003 options: the authors' toy set-up (top-level marginal, sigma_1/sigma_{t+1} loss weight,
constant step rule), Gao et al.'s DRL, Table 10's initializer variants, Sec. 4.5's composition labels."""
import dataclasses

import pytest
import torch

from ebmlab import schedules
from ebmlab.energies.mlp import MLPEnergy
from ebmlab.objectives.recovery import DRLConfig, RecoveryConfig, RecoveryLikelihood
from ebmlab.training.config import ConfigError


def _objective(cfg_cls=RecoveryConfig, **kw):
    cfg = cfg_cls(**kw)
    torch.manual_seed(0)
    return RecoveryLikelihood(MLPEnergy(2, 32, 1, cond_dim=cfg.embed_dim), cfg, (2,))


def test_const_step_rule_is_the_authors_toy_rule():
    lv = schedules.vp_levels(schedules.cosine_logsnr(6, 9.8, -5.1))
    s2 = schedules.recovery_step_sizes(lv, 0.27, "const") ** 2
    assert torch.allclose(s2, 0.27 * lv["sigma"] ** 2)
    # toy_example.py: sz_square = 2 * 1e-3 / sqrt(1 - sigmoid(lambda_max)) * sigma^2 = 0.27 sigma^2
    assert 2e-3 / float(lv["sbar"][0]) == pytest.approx(0.27, abs=0.005)
    obj = _objective(step_rule="const", step_coef=0.27)
    assert torch.allclose(obj.energy.step_sq.double(), s2, rtol=1e-5)
    with pytest.raises(ValueError):
        schedules.recovery_step_sizes(lv, 0.27, "nope")


def test_top_marginal_has_no_quadratic_term_and_no_alpha_at_the_top():
    obj = _objective(top_marginal=True)
    T = obj.cfg.T
    assert float(obj.y_scale[-1]) == 1.0 and torch.equal(obj.y_scale[:-1], obj.alpha[:-1])
    assert torch.isinf(obj.quad_var[-1]) and torch.isfinite(obj.quad_var[:-1]).all()
    lv = obj.levels_for_sampling()
    assert float(lv.init_std[-1]) == pytest.approx(float(obj.sbar[T - 1] * obj.sigma[-1] / obj.sbar[T]), rel=1e-5)
    # the top level's conditional energy is the marginal one: independent of x_{T}
    from ebmlab.samplers.recovery import conditional_energy
    y, t = torch.randn(5, 2), torch.full((5,), T - 1)
    net = lambda v, tt: obj.energy.net_energy(v, tt)  # noqa: E731
    e1 = conditional_energy(net, torch.zeros(5, 2), t, lv.step_sq, lv.sigma_sq)(y)
    e2 = conditional_energy(net, torch.full((5, 2), 3.0), t, lv.step_sq, lv.sigma_sq)(y)
    assert torch.allclose(e1, e2) and torch.isfinite(e1).all()
    # training pairs: at the top level y = x_{T-1} (unscaled); sampling returns finite points
    out = obj(torch.randn(64, 2), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    assert torch.isfinite(obj.sample(16, generator=torch.Generator().manual_seed(1), n_steps=12).x).all()


def test_sigma_loss_weight_scales_each_level():
    obj = _objective(loss_weight="sigma")
    assert float(obj.loss_w[0]) == pytest.approx(1.0) and bool((obj.loss_w[1:] < 1).all())
    assert torch.allclose(obj.loss_w, obj.sigma[0] / obj.sigma)
    plain = _objective()
    assert torch.equal(plain.loss_w, torch.ones_like(plain.loss_w))
    assert torch.isfinite(obj(torch.randn(32, 2), generator=torch.Generator().manual_seed(0)).loss)


def test_drl_is_gao_et_al():
    cfg = DRLConfig()
    assert (cfg.schedule, cfg.n_steps, cfg.cooperative, cfg.variance_reduction, cfg.top_marginal, cfg.loss_weight,
            cfg.denoise) == ("drl", 30, False, False, True, "sigma", False)
    obj = _objective(DRLConfig)
    lv = schedules.vp_levels(schedules.drl_logsnr(6))
    # Gao et al.: s_t^2 = b^2 sbar_t / sbar_0 sigma_{t+1}^2, b^2 = 2e-4, sbar_0 = 0.01
    assert float(lv["sbar"][0]) == pytest.approx(0.01, rel=1e-3)
    assert torch.allclose(obj.energy.step_sq.double(), 2e-4 * lv["sbar"][:-1] / lv["sbar"][0] * lv["sigma"] ** 2,
                          rtol=1e-3)
    assert obj.initializer is None and obj.levels_for_sampling().init_std is None
    x = torch.randn(8, 2)
    assert torch.equal(obj.init_mean(x, torch.zeros(8, dtype=torch.long)), x)


@pytest.mark.parametrize("kind", ["x0", "eps"])
def test_initializer_variants_give_the_posterior_mean(kind):
    obj = _objective(init_predicts=kind)
    x0, e = torch.randn(16, 2), torch.randn(16, 2)
    t = torch.randint(obj.cfg.T, (16,))
    bc = lambda v: v[t].view(-1, 1)  # noqa: E731
    x_next = bc(obj.abar[1:]) * x0 + bc(obj.sbar[1:]) * e
    # make the network output exactly x0 (or eps): the mean must be alpha E[x_t | x0, x_{t+1}]
    target = x0 if kind == "x0" else e
    obj.initializer.forward = lambda x, c: target  # noqa: ARG005
    mean = obj.init_mean(x_next, t)
    ab, sb, a, s = (bc(obj.abar[:-1]).double(), bc(obj.sbar[:-1]).double(), bc(obj.alpha).double(),
                    bc(obj.sigma).double())
    sb1 = bc(obj.sbar[1:]).double()
    post = ab * s ** 2 / sb1 ** 2 * x0.double() + a * sb ** 2 / sb1 ** 2 * x_next.double()
    assert torch.allclose(mean.double(), a * post, atol=1e-4)
    # with no noise in between (sbar_t -> its value), the posterior mean of x_t is between x0 and x_{t+1}
    assert torch.isfinite(mean).all()


def test_option_errors():
    for bad in ({"loss_weight": "x"}, {"step_rule": "x"}, {"init_predicts": "x"}):
        with pytest.raises(ConfigError):
            RecoveryConfig(**bad).validate()


def test_composition_dataset_doubles_with_attribute_classes():
    from ebmlab.applications.composition import ThicknessAttribute
    from ebmlab.applications.recovery_composition import composition_dataset

    @dataclasses.dataclass
    class D:
        train: torch.Tensor
        train_labels: torch.Tensor
        test: torch.Tensor
        test_labels: torch.Tensor
        num_classes: int
        info: dict

    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8, generator=g) * 2 - 1
    y = torch.arange(40) % 10
    attr = ThicknessAttribute.fit(x, y, 10)
    d = composition_dataset(D(x, y, x[:20], y[:20], 10, {}), attr)
    assert d.num_classes == 12 and d.train.shape[0] == 80 and d.test.shape[0] == 40
    assert torch.equal(d.train_labels[:40], y) and bool((d.train_labels[40:] >= 10).all())
    assert torch.equal(d.train_labels[40:] - 10, attr(x, y))


def test_data_scale_runs_the_diffusion_on_scaled_data():
    plain, scaled = _objective(), _objective(data_scale=4.0)
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(6, 2)
    # the level-0 energy of x is the plain model's energy of 4 x
    assert torch.allclose(scaled.energy(x), plain.energy(4.0 * x), atol=1e-5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = plain.sample(8, generator=g1, n_steps=12).x
    b = scaled.sample(8, generator=g2, n_steps=12).x
    assert torch.allclose(b * 4.0, a, atol=1e-4)  # same chains, returned in data units
    with pytest.raises(ConfigError):
        RecoveryConfig(data_scale=0.0).validate()
