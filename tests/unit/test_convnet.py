"""Convolutional energies: (B,) outputs, gradients in x, conditioning on t / y, multi-scale sum."""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from ebmlab.energies.build import MODELS, build_energy
from ebmlab.energies.convnet import ResNetEnergy, make_norm
from ebmlab.energies.multiscale import MultiScaleEnergy
from ebmlab.training.config import ModelConfig


def _x(b=4, c=1, s=8, seed=0):
    return torch.randn(b, c, s, s, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("norm", ["group", "layer", "none"])
@pytest.mark.parametrize("activation,attention,sn", [("swish", False, False), ("leaky_relu", True, True)])
def test_resnet_energy_shape_grad_and_batch_independence(norm, activation, attention, sn):
    torch.manual_seed(0)
    net = ResNetEnergy(3, [8, 16], depth=2, norm=norm, activation=activation, attention=attention, spectral_norm=sn)
    net.eval()  # spectral norm: no power-iteration update between the two calls below
    x = _x(c=3, s=8).requires_grad_()
    e = net(x)
    assert e.shape == (4,) and torch.isfinite(e).all()
    (g,) = torch.autograd.grad(e.sum(), x)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    # no batch statistics: the energy of one image does not depend on the rest of the batch
    assert torch.allclose(net(x[:1]), e[:1], atol=1e-5)


def test_double_backward_through_attention():
    """Paper 001 differentiates through a Langevin step: grad of a function of dE/dx w.r.t. theta."""
    torch.manual_seed(0)
    net = ResNetEnergy(1, [8, 8], attention=True, norm="group")
    x = _x().requires_grad_()
    (g,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    x_next = x - 0.1 * g
    loss = net(x_next.detach()).sum() + x_next.pow(2).sum()
    grads = torch.autograd.grad(loss, [p for p in net.parameters()], allow_unused=True)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads)


def test_spectral_norm_wraps_layers():
    net = ResNetEnergy(1, [8], spectral_norm=True)
    assert hasattr(net.inp, "parametrizations") and hasattr(net.out, "parametrizations")


def test_time_conditioned_depends_on_t():
    torch.manual_seed(0)
    net = ResNetEnergy(1, [8, 16], time_cond=True, embed_dim=16)
    x = _x()
    e0, e5 = net(x, t=torch.zeros(4)), net(x, t=torch.full((4,), 5.0))
    assert e0.shape == (4,) and not torch.allclose(e0, e5)
    assert torch.allclose(net(x, t=5.0), e5)  # scalar t broadcasts
    assert torch.allclose(net(x), net(x, t=1.0))  # t=None -> default_t = 1
    mixed = net(x, t=torch.tensor([0.0, 5.0, 0.0, 5.0]))
    assert torch.allclose(mixed[0], e0[0], atol=1e-5) and torch.allclose(mixed[1], e5[1], atol=1e-5)
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(net(xg, t=torch.rand(4)).sum(), xg)
    assert torch.isfinite(g).all()


def test_class_conditioned_depends_on_y():
    torch.manual_seed(0)
    net = ResNetEnergy(1, [8, 16], num_classes=10, embed_dim=16)
    x = _x()
    e_a, e_b = net(x, y=torch.zeros(4, dtype=torch.long)), net(x, y=torch.full((4,), 3))
    assert not torch.allclose(e_a, e_b)
    uncond = net(x)  # y=None: the "no label" token (classifier-free guidance)
    assert torch.allclose(net(x, y=torch.full((4,), -1)), uncond)
    assert not torch.allclose(uncond, e_a)
    both = ResNetEnergy(1, [8], time_cond=True, num_classes=3, embed_dim=8)
    assert not torch.allclose(both(x, t=2.0, y=torch.zeros(4, dtype=torch.long)), both(x, t=2.0, y=torch.ones(4, dtype=torch.long)))


def test_unconditional_refuses_conditions():
    net = ResNetEnergy(1, [8])
    with pytest.raises(ValueError, match="not time-conditioned"):
        net(_x(), t=1.0)
    with pytest.raises(ValueError, match="not class-conditioned"):
        net(_x(), y=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="B, C, H, W"):
        net(torch.randn(4, 64))
    with pytest.raises(ValueError, match="unknown norm"):
        make_norm("batch", 8)


def test_registered_builders():
    assert {"resnet", "multiscale"} <= set(MODELS)
    cfg = ModelConfig(name="resnet", channels=[8, 16], depth=1, norm="group", attention=True, time_embed_dim=16)
    net = build_energy(cfg, (1, 8, 8), time_cond=True, n_times=20)  # paper 002 passes n_times
    assert "t" in inspect.signature(net.forward).parameters and net.time_cond
    assert build_energy(cfg, (3, 16, 16), num_classes=10).num_classes == 10
    plain = build_energy(ModelConfig(name="resnet", width=8), (1, 8, 8))
    assert len(plain.levels) == 3  # default: width at 3 resolutions for 8x8
    with pytest.raises(ValueError, match="image data"):
        build_energy(cfg, (64,))


def test_multiscale_is_sum_of_scales():
    torch.manual_seed(0)
    cfg = ModelConfig(name="multiscale", channels=[8, 16, 16], depth=1, norm="group")
    net = build_energy(cfg, (1, 8, 8))
    assert isinstance(net, MultiScaleEnergy) and net.factors == [1, 2, 4]
    assert [len(n.levels) for n in net.nets] == [3, 2, 1]  # first down-sampled block(s) removed (App. B.1)
    x = _x().requires_grad_()
    e = net(x)
    assert e.shape == (4,)
    assert torch.allclose(e, sum(net.scale_energies(x)))
    (g,) = torch.autograd.grad(e.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # the coarse scales see only the pooled image: a change that keeps 2x2 means leaves them unchanged
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(4, 4)[None, None] * 0.1
    before, after = net.scale_energies(x.detach()), net.scale_energies(x.detach() + checker)
    assert torch.allclose(before[1], after[1], atol=1e-5) and torch.allclose(before[2], after[2], atol=1e-5)
    assert not torch.allclose(before[0], after[0])
    cond = build_energy(cfg, (1, 8, 8), num_classes=10)
    assert not torch.allclose(cond(x, y=torch.zeros(4, dtype=torch.long)), cond(x, y=torch.ones(4, dtype=torch.long)))


def _final_map(net, x, **cond):
    """(C, H, W) of the feature map the readout pools (the input of the last activation)."""
    seen = {}

    def record(module, inputs, output):
        seen.setdefault("shape", tuple(inputs[0].shape[1:]))  # returns None: the output is kept

    hook = net.act.register_forward_hook(record)
    net(x, **cond)
    hook.remove()
    return seen["shape"]


def test_layout_options_default_to_the_old_layout():
    """blocks / down_last / attention_at / last_activation unset: the same modules and state-dict keys as before."""
    torch.manual_seed(0)
    old = ResNetEnergy(1, [8, 16], depth=2, attention=True)
    new = ResNetEnergy(1, [8, 16], depth=2, attention=True, blocks=None, down_last=False, attention_at=None,
                       last_activation=None)
    assert list(old.state_dict()) == list(new.state_dict())
    assert _final_map(old, _x()) == (16, 4, 4)
    cfg = ModelConfig(name="resnet", channels=[8, 16], depth=2, attention=True)
    assert list(build_energy(cfg, (1, 8, 8)).state_dict()) == list(old.state_dict())


def test_down_last_blocks_and_attention_place():
    """Paper 001 Table 5: 'ResBlock Down' also after the last resolution (32 -> 2x2), Self Attention 64 after the
    second down-sampling; Table 6: per-resolution block counts."""
    torch.manual_seed(0)
    net = ResNetEnergy(3, [8, 8, 16, 32], depth=2, attention=True, down_last=True, attention_at=2)
    x = _x(b=2, c=3, s=32)
    assert _final_map(net, x) == (32, 2, 2)
    seen = []
    net.attn.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[1:])))
    net(x)
    assert seen == [(8, 8, 8)]  # after the second down-sampling, before the third resolution
    six = ResNetEnergy(3, [8, 16, 16, 32, 64], blocks=[1, 1, 1, 2, 2], down_last=True, attention=True,
                       attention_at=4)
    assert [len(level) for level in six.levels] == [1, 1, 1, 2, 2]
    assert _final_map(six, x) == (64, 1, 1)
    assert six.attn.qkv.in_channels == 32
    sub = ResNetEnergy(3, [8, 16], pool="subpixel", down_last=True)
    assert len(sub.down) == 2 and _final_map(sub, _x(b=2, c=3, s=8)) == (16, 2, 2)
    with pytest.raises(ValueError, match="blocks"):
        ResNetEnergy(3, [8, 16], blocks=[1])
    with pytest.raises(ValueError, match="attention_at"):
        ResNetEnergy(3, [8, 16], attention=True, attention_at=3)


def test_last_activation_is_separate_from_the_blocks():
    """Paper 003 A.1: leaky ReLU in the blocks, ReLU on the final feature map."""
    net = ResNetEnergy(1, [8], activation="leaky_relu", last_activation="relu", time_cond=True, embed_dim=8)
    assert isinstance(net.act, torch.nn.ReLU)
    assert isinstance(net.levels[0][0].act1, torch.nn.LeakyReLU)
    cfg = ModelConfig(name="resnet", channels=[8], depth=1, activation="leaky_relu", last_activation="relu")
    assert isinstance(build_energy(cfg, (1, 8, 8)).act, torch.nn.ReLU)


def test_sum_readout_is_minus_the_sum_of_the_final_map_over_channels_and_positions():
    """Paper 003 A.1: "Spatial and channel dimensions are summed to obtain the energy output" (f; E = -f), no Dense.
    The mean + Dense readout cannot stand in for it under spectral norm: the Dense's norm is capped at 1, so its
    energy is at most the norm of the mean-pooled features, far below the sum (H W sqrt(C) times the cap here)."""
    torch.manual_seed(0)
    net = ResNetEnergy(3, [8, 16], activation="leaky_relu", last_activation="relu", spectral_norm=True,
                       time_cond=True, embed_dim=8, readout="sum").eval()  # eval: no power iteration per call
    x, t = _x(c=3), torch.tensor([0, 1, 2, 3])
    assert net.out is None and not any(isinstance(m, torch.nn.Linear) and m.out_features == 1 for m in net.modules())
    assert torch.allclose(net(x, t), -net.final_map(x, t).sum(dim=(1, 2, 3)))
    assert torch.allclose(net.features(x, t), net.final_map(x, t).mean(dim=(2, 3)))
    dense = ResNetEnergy(3, [8, 16], activation="leaky_relu", last_activation="relu", spectral_norm=True,
                         time_cond=True, embed_dim=8)
    dense.load_state_dict(net.state_dict(), strict=False)  # the same trunk, the same normalised weights
    dense.eval()
    bound = dense.features(x, t).norm(dim=1) + dense.out.bias.abs()
    assert bool((dense(x, t).abs() <= bound + 1e-5).all())
    assert bool((net(x, t).abs() > 4 * bound).all())
    cfg = ModelConfig(name="resnet", channels=[8], depth=1, readout="sum")
    assert build_energy(cfg, (1, 8, 8)).out is None
    with pytest.raises(ValueError, match="readout"):
        ResNetEnergy(1, [8], readout="max")


def test_multiscale_keeps_the_attention_at_the_same_place():
    """App. B.1: the half / quarter nets drop the first one / two resolutions; Table 5's attention stays at 8x8."""
    cfg = ModelConfig(name="multiscale", channels=[8, 8, 16, 32], depth=2, attention=True, attention_at=2,
                      down_last=True, norm="group")
    net = build_energy(cfg, (3, 32, 32))
    assert [n.attention_at for n in net.nets] == [2, 1, 0]
    x = _x(b=2, c=3, s=32)
    sizes = []
    hooks = [n.attn.register_forward_hook(lambda m, i, o: sizes.append(tuple(i[0].shape[-2:]))) for n in net.nets]
    net(x)
    for h in hooks:
        h.remove()
    assert sizes == [(8, 8)] * 3
    assert [_final_map(n, F.avg_pool2d(x, f) if f > 1 else x) for n, f in zip(net.nets, net.factors)] == \
        [(32, 2, 2)] * 3
