"""The residual MLP energy: shapes, gradients, the optional random Fourier features, checkpoints."""
import pytest
import torch

from ebmlab.energies.base import energy_and_grad
from ebmlab.energies.mlp import MLPEnergy


def test_energy_shape_and_input_gradient():
    torch.manual_seed(0)
    net = MLPEnergy(5, width=16, depth=2)
    x = torch.randn(7, 5)
    e, g = energy_and_grad(net, x)
    assert e.shape == (7,) and g.shape == (7, 5) and torch.isfinite(g).all()


def test_plain_mlp_state_dict_has_no_fourier_buffer():
    assert "freqs" not in MLPEnergy(3, width=8, depth=1).state_dict()


def test_fourier_features_are_saved_and_restored():
    torch.manual_seed(0)
    a = MLPEnergy(3, width=8, depth=1, fourier=4, fourier_scale=2.0)
    torch.manual_seed(1)
    b = MLPEnergy(3, width=8, depth=1, fourier=4, fourier_scale=2.0)
    x = torch.randn(5, 3)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


def test_fourier_scale_sets_the_frequency_spread():
    torch.manual_seed(0)
    net = MLPEnergy(4, width=8, depth=1, fourier=2000, fourier_scale=3.0)
    assert abs(float(net.freqs.std()) - 3.0) < 0.1


def test_plain_sigmoid_is_a_selectable_activation():
    """Paper 002 Sec. 5 "Sigmoid activations": ``sigmoid`` is the logistic function, next to silu = x sigmoid(x)."""
    from ebmlab.energies.mlp import ACTIVATIONS, make_activation
    assert {"sigmoid", "silu"} <= set(ACTIVATIONS)
    x = torch.linspace(-3, 3, 7)
    assert torch.allclose(make_activation("sigmoid")(x), torch.sigmoid(x))
    assert torch.allclose(make_activation("silu")(x), x * torch.sigmoid(x))
    net = MLPEnergy(3, width=8, depth=1, activation="sigmoid")
    assert any(isinstance(m, torch.nn.Sigmoid) for m in net.modules())
    assert net(torch.randn(4, 3)).shape == (4,)


def test_base_std_adds_the_gaussian_base_measure():
    """``base_std = s``: E(x) = net(x) + |x|^2 / (2 s^2) with the same network, and its gradient x / s^2 more."""
    torch.manual_seed(0)
    plain = MLPEnergy(3, width=8, depth=1)
    torch.manual_seed(0)
    tilted = MLPEnergy(3, width=8, depth=1, base_std=2.0)
    x = torch.randn(6, 3)
    # the tilt starts at zero (the base exactly); the trunk is the plain network's with the same seed
    assert torch.equal(tilted(x), x.pow(2).sum(1) / 8.0) and not tilted.out.weight.any()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in tilted.state_dict().items() if not k.startswith("out."))
    tilted.load_state_dict(plain.state_dict())
    assert torch.allclose(tilted(x), plain(x) + x.pow(2).sum(1) / 8.0)
    assert torch.allclose(energy_and_grad(tilted, x)[1], energy_and_grad(plain, x)[1] + x / 4.0)
    with pytest.raises(ValueError, match="base_std"):
        MLPEnergy(3, width=8, depth=1, base_std=0.0)
    with pytest.raises(ValueError, match="scalar energy"):
        MLPEnergy(3, width=8, depth=1, out_dim=2, base_std=1.0)


def test_base_std_config_is_checked_and_left_out_of_older_hashes():
    from ebmlab.config import ConfigError
    from ebmlab.energies.build import build_energy
    from ebmlab.training.config import load_config
    cfg = load_config("default", ["model.base_std=3"])
    assert build_energy(cfg.model, (10,)).base_coef == pytest.approx(0.5 / 9)
    assert load_config("default").hash() != cfg.hash()
    assert load_config("default", ["model.base_std=null"]).hash() == load_config("default").hash()
    for bad in (["model.base_std=-1"], ["model.base_std=1", "model.name=resnet"]):
        with pytest.raises(ConfigError, match="base_std"):
            load_config("default", bad)
