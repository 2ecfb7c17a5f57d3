"""Build an energy network from ``ModelConfig`` and the data shape. Registry: ``MODELS``.

Each builder takes (model_cfg, data_shape, **extra) and returns an ``nn.Module``; ``extra`` carries
method needs such as ``out_dim`` (paper 000's T-vector head) or ``cond_dim``. This module owns the
registry: it imports the model modules (mlp, convnet, multiscale, unet, plainconv, time), none of which
imports it. ``unet``: paper 002's DDPM encoder (energies/unet.py); ``plainconv``: paper 004's plain
ConvNet after Nijkamp et al. 2019 (energies/plainconv.py).

``model.name: custom`` builds a user's own ``nn.Module`` energy: ``model.target`` names its class as
``"package.module:Class"`` and ``model.kwargs`` holds its constructor's keyword arguments (JSON
values), so a run trained on it reloads in a fresh process wherever that module is importable
(``ebmlab.train(energy=MyEnergy(...))`` records both). The class is called as
``Class(**kwargs, **extra)``, the method's ``extra`` replacing an argument of the same name in ``kwargs`` (a
user's instance built with ``cond_dim=0`` records it; paper 003 builds the class with its own); a method that
needs ``extra`` (conditioning, a T-vector head) needs a class that accepts them.
"""
from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

from torch import nn

from ebmlab.energies import convnet, multiscale, plainconv, unet
from ebmlab.energies.mlp import MLPEnergy
from ebmlab.energies.time import JointTimeEnergy, joint_energy_on
from ebmlab.errors import ConfigError


def _mlp(cfg, shape, out_dim: int = 1, cond_dim: int = 0, time_cond: bool = False, num_classes: int = 0, **_):
    if time_cond or num_classes:  # refused, not dropped: the energy would be blind to what the method conditions on
        what = "time / noise-level" if time_cond else "class"
        raise ConfigError(f"model 'mlp' takes no {what} input, which this method needs on data of shape {tuple(shape)}; use "
                          "model.name resnet for images (as the shipped image configs do: ebmlab configs)")
    return MLPEnergy(math.prod(shape), cfg.width, cfg.depth, cfg.activation, out_dim=out_dim, cond_dim=cond_dim,
                     fourier=cfg.fourier, fourier_scale=cfg.fourier_scale,
                     base_std=cfg.base_std if out_dim == 1 else None,
                     base_mixture=cfg.base == "gmm" and out_dim == 1)


def import_target(target: str) -> type:
    """The class named by ``"package.module:Class"``; ``ConfigError`` (one sentence) when it cannot be imported."""
    module, _, qualname = str(target).partition(":")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 -- any failure of the user's module is reported the same way
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        if module == "__main__":  # trained from a script or notebook (api.train warned then)
            raise ConfigError(f"model.target {target!r} was defined in the script or notebook that trained the run, "
                              f"so only a Python process that defines {qualname} in its own __main__ can load it (not "
                              "the ebmlab command): define it there before ebmlab.load (to load a run anywhere, train it "
                              "with the class in an importable module)") from None
        raise ConfigError(f"model.target {target!r} cannot be imported ({text}); install its module or put it "
                          f"on PYTHONPATH where the run is trained or loaded{cwd_hint(exc, module)}") from None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ConfigError(f"model.target {target!r} is not an nn.Module class")
    return obj


def cwd_hint(exc: Exception, module: str) -> str:
    """The likely fix when the module lies in the current directory, which the ``ebmlab`` command (a console
    script, unlike ``python script.py`` or ``python -m``) does not search."""
    top = module.split(".")[0]
    cwd = Path.cwd()
    if not (isinstance(exc, ModuleNotFoundError) and exc.name == top):
        return ""
    if not ((cwd / f"{top}.py").is_file() or (cwd / top / "__init__.py").is_file()):
        return ""
    if any(p in ("", ".") or Path(p).resolve() == cwd for p in sys.path if isinstance(p, str)):
        return ""
    return (f" ({top} lies in the current directory, which the ebmlab command does not search: run "
            "PYTHONPATH=. ebmlab ... or python -m ebmlab ...)")


# What a method asks of a custom energy through each ``extra`` argument (said when the class does not take it).
_NEEDS = {"cond_dim": "cond_dim=K and forward(x, cond) with cond (B, K) (paper 003's vector energies)",
          "time_cond": "time_cond=True and forward(x, t=...) (paper 002: n_times=T and t (B,) long; paper 003's images: "
                       "t the level's logSNR (B,) float, and y= labels or None)",
          "num_classes": "num_classes=C and forward(x, y=labels) (class-conditional runs)",
          "out_dim": "out_dim=T and an output (B, T)"}
ANY_ENERGY = "hybrid, noise, data, persistent, persistent_refresh, improved_cd and cd_plain take any (B, ...) -> (B,) module"


def _custom(cfg, shape, **extra):
    return construct_custom(cfg, **extra)  # (probed as the method calls it: objectives/registry.build_objective)


def construct_custom(cfg, **extra) -> nn.Module:
    """``model.target(**model.kwargs, **extra)``, the method's ``extra`` replacing arguments of the same name; a
    class that does not take them is one sentence saying what the method needs."""
    cls = import_target(cfg.target)
    try:
        return cls(**{**(cfg.kwargs or {}), **extra})  # the method's own arguments win
    except TypeError as exc:
        needs = "; ".join(_NEEDS[k] for k in extra if k in _NEEDS)
        more = f" plus the method's {sorted(extra)}: this method needs an energy that takes {needs} ({ANY_ENERGY})" \
            if extra else ""
        raise ConfigError(f"model.target {cfg.target!r} could not be built from model.kwargs "
                          f"{sorted(cfg.kwargs or {})}{more} ({' '.join(str(exc).split())})") from None


MODELS = {"mlp": _mlp, "resnet": convnet.build_resnet, "multiscale": multiscale.build_multiscale,
          "unet": unet.build_unet, "plainconv": plainconv.build_plainconv, "custom": _custom}


def build_energy(cfg, shape: tuple[int, ...], **extra) -> nn.Module:
    """The energy network ``MODELS[cfg.name](cfg, shape, **extra)`` for data of shape ``shape``."""
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model name {cfg.name!r}; available models are: {', '.join(sorted(MODELS))}")
    return MODELS[cfg.name](cfg, tuple(shape), **extra)


def build_joint_energy(model_cfg, shape: tuple[int, ...], T: int, sigma_n: float,
                       zero_increments: bool = True) -> JointTimeEnergy:
    """Paper 000's joint (z, t) energy: any registered model with a ``features`` method (``mlp``; the
    image ``resnet``) as the trunk of the T-vector head (``energies/time.py``)."""
    net = build_energy(model_cfg, shape)
    if not hasattr(net, "features"):
        raise ConfigError(f"paper 000's joint (z, t) methods put a T-vector head on the energy's trunk, so model "
                          f"{model_cfg.name!r} ({type(net).__name__}) needs a features(x) -> (B, F) method (as "
                          f"ebmlab's mlp and resnet have; {ANY_ENERGY})")
    return joint_energy_on(net, tuple(shape), T, sigma_n, zero_increments)
