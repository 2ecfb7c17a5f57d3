"""Paper 004's image energy (energies/plainconv.py, ``model.name: plainconv``): Nijkamp et al.'s ConvNet
with n_f = 128 (1024 channels in the final conv layer) plus one self-attention layer."""
from __future__ import annotations

import pytest
import torch

from ebmlab.energies.build import MODELS, build_energy
from ebmlab.energies.plainconv import PlainConvEnergy
from ebmlab.training.config import ModelConfig


def test_shapes_gradient_and_batch_independence():
    torch.manual_seed(0)
    net = PlainConvEnergy(3, [8, 16, 32, 64], 32, attention=True)
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    e = net(x)
    assert e.shape == (3,) and torch.isfinite(e).all()
    (g,) = torch.autograd.grad(e.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert torch.allclose(net(x[:1]), e[:1], atol=1e-5)
    assert net.convs[-1].out_channels == 64 and net.final.kernel_size == (4, 4)


def test_small_images_and_errors():
    net = PlainConvEnergy(1, [4, 8, 8, 8], 8)  # 8 -> 4 -> 2 -> 1: the last kernel shrinks to 1
    assert net(torch.randn(2, 1, 8, 8)).shape == (2,)
    with pytest.raises(ValueError, match="four"):
        PlainConvEnergy(3, [8, 16], 32)


def test_registered_with_n_f_128():
    assert "plainconv" in MODELS
    cfg = ModelConfig(name="plainconv", channels=[128, 256, 512, 1024], activation="leaky_relu", attention=True)
    net = build_energy(cfg, (3, 32, 32))
    assert net.convs[-1].out_channels == 1024  # Sec. 3: "1024 output channels in the final convolutional layer"
    assert 10e6 < sum(p.numel() for p in net.parameters()) < 12e6
