"""Build an energy network from ``ModelConfig`` and the data shape. Registry: ``MODELS``.

Each builder takes (model_cfg, data_shape, **extra) and returns an ``nn.Module``; ``extra`` carries
method needs such as ``out_dim`` (paper 000's T-vector head) or ``cond_dim``. This module owns the
registry: it imports the model modules (mlp, convnet, multiscale, time), none of which imports it.
"""
from __future__ import annotations

import math

from torch import nn

from ebmlab.energies import convnet, multiscale
from ebmlab.energies.mlp import MLPEnergy
from ebmlab.energies.time import JointTimeEnergy, joint_energy_on


def _mlp(cfg, shape, out_dim: int = 1, cond_dim: int = 0, **_):
    return MLPEnergy(math.prod(shape), cfg.width, cfg.depth, cfg.activation, out_dim=out_dim, cond_dim=cond_dim,
                     fourier=cfg.fourier, fourier_scale=cfg.fourier_scale)


MODELS = {"mlp": _mlp, "resnet": convnet.build_resnet, "multiscale": multiscale.build_multiscale}


def build_energy(cfg, shape: tuple[int, ...], **extra) -> nn.Module:
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model name {cfg.name!r}; available models are: {', '.join(sorted(MODELS))}")
    return MODELS[cfg.name](cfg, tuple(shape), **extra)


def build_joint_energy(model_cfg, shape: tuple[int, ...], T: int, sigma_n: float) -> JointTimeEnergy:
    """Paper 000's joint (z, t) energy: any registered model with a ``features`` method (``mlp``; the
    image ``resnet``) as the trunk of the T-vector head (``energies/time.py``)."""
    return joint_energy_on(build_energy(model_cfg, shape), tuple(shape), T, sigma_n)
