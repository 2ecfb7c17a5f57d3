"""Build an energy network from ``ModelConfig`` and the data shape. Registry: ``MODELS``.

Each builder takes (model_cfg, data_shape, **extra) and returns an ``nn.Module``; ``extra`` carries
method needs such as ``out_dim`` (paper 000's T-vector head) or ``cond_dim``. The image stack
registers its convolutional energies here.
"""
from __future__ import annotations

import math

from torch import nn

from ebmlab.energies.mlp import MLPEnergy


def _mlp(cfg, shape, out_dim: int = 1, cond_dim: int = 0, **_):
    return MLPEnergy(math.prod(shape), cfg.width, cfg.depth, cfg.activation, out_dim=out_dim, cond_dim=cond_dim,
                     fourier=cfg.fourier, fourier_scale=cfg.fourier_scale)


MODELS = {"mlp": _mlp}


def build_energy(cfg, shape: tuple[int, ...], **extra) -> nn.Module:
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model name {cfg.name!r}; available models are: {', '.join(sorted(MODELS))}")
    return MODELS[cfg.name](cfg, tuple(shape), **extra)


def _register_builtins() -> None:
    from ebmlab.energies import convnet, multiscale, time  # noqa: F401  (register their models)


_register_builtins()
