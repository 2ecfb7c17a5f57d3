"""A user's own energy network in a run (``ebmlab.train(..., energy=MyEnergy(...))``): its class is recorded in
the config (``model.name: custom``, ``model.target: "module:Class"``, ``model.kwargs``: the constructor's
arguments, read from the instance's attributes when not given), checked to rebuild a network with the same
parameters before any training (the (B, ...) -> (B,) energy contract is probed where the method builds it, with
its conditioning: ``objectives/registry._probe_energy``), and its weights become training's starting point (unless the
method's own arguments, such as paper 003's ``cond_dim``, change its parameters: ``start_from``).
"""
from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ebmlab.config import Config
from ebmlab.errors import ConfigError

__all__ = ["check_custom_model_settings", "check_no_model_settings", "check_rebuilds", "energy_record", "model_keys",
           "start_from"]


def energy_record(energy: nn.Module, energy_kwargs: Mapping[str, Any] | None) -> dict:
    """{"target": "module:Class", "kwargs": {...}} for the user's energy instance."""
    from ebmlab.energies.build import import_target

    if not isinstance(energy, nn.Module):
        raise ConfigError(f"energy must be an nn.Module instance, got a {type(energy).__name__}")
    if isinstance(energy, torch.jit.ScriptModule):
        raise ConfigError("energy is a TorchScript module (torch.jit.script / trace); pass the plain nn.Module it was "
                          "made from: a run rebuilds the energy from its class and arguments")
    if energy_kwargs is not None and not isinstance(energy_kwargs, Mapping):
        raise ConfigError(f"energy_kwargs must be a mapping of the energy's arguments (e.g. {{'dim': 2}}), got a "
                          f"{type(energy_kwargs).__name__}")
    cls = type(energy)
    target = f"{cls.__module__}:{cls.__qualname__}"
    if "<locals>" in cls.__qualname__:
        raise ConfigError(f"energy class {cls.__qualname__} is defined inside a function; define it at the top "
                          "level of a module so a run can rebuild it")
    if cls.__module__ == "__main__":
        warnings.warn(f"energy class {cls.__name__} is defined in __main__ (a script or notebook): the run can be "
                      "loaded only where __main__ defines it; move it into a module to load it anywhere",
                      stacklevel=3)
    elif import_target(target) is not cls:
        raise ConfigError(f"energy class {target!r} is not what importing that name gives; define it at module level")
    _check_trainable(energy)  # (after the checks of where its class lives: those come first, by name)
    kwargs = dict(energy_kwargs) if energy_kwargs is not None else _init_kwargs(energy)
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError):
        raise ConfigError(f"energy_kwargs of {cls.__name__} must be JSON values (numbers, strings, lists, "
                          f"mappings), got {kwargs!r}") from None
    return {"target": target, "kwargs": kwargs}


def _check_trainable(energy: nn.Module) -> None:
    """An energy to train has parameters that train; BatchNorm is warned of (its energies depend on the batch)."""
    params = list(energy.parameters())
    if not any(p.requires_grad for p in params):
        what = "no parameters" if not params else "no parameter that requires grad (all frozen)"
        raise ConfigError(f"your energy has {what}, so training would change nothing; to draw from a fixed energy, "
                          "call ebmlab's samplers on it (README 'The samplers on an energy of your own')")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in energy.modules()):
        warnings.warn("your energy holds BatchNorm: in training the chains run in train mode, where each point's "
                      "energy depends on the others in its batch and every chain step moves the running statistics, "
                      "while sampling after training uses eval mode; prefer GroupNorm, LayerNorm or none",
                      UserWarning, stacklevel=4)


def check_no_model_settings(sections: Mapping[str, Any], overrides) -> None:
    """Refuse ``model=`` / ``model.*`` overrides given with ``energy=``: the user's module is the model, so
    ebmlab's network settings (``base``, ``width``, ...) would be dropped without effect. (A config's model
    section is replaced by the energy's record, as documented.)"""
    given = list((sections.get("model") or {}) if isinstance(sections.get("model"), Mapping) else [])
    items = [overrides] if isinstance(overrides, str) else (overrides or ())
    given += model_keys(str(k).split("=", 1)[0] for k in items)
    if given:
        raise ConfigError(f"model settings ({', '.join(sorted(set(given)))}) do not apply to your own energy "
                          "(energy=): your module is the model; remove them, or set its own arguments when you "
                          "build it (model.kwargs records them)")


def model_keys(keys, allowed: tuple[str, ...] = ()) -> list[str]:
    """The ``model.*`` keys among override keys (as ``apply_overrides`` reads them: spaces stripped), without the
    section and without ``allowed``."""
    names = [k.strip()[len("model."):] for k in map(str, keys) if k.strip().startswith("model.")]
    return [n for n in names if n not in allowed]


def check_custom_model_settings(overrides: list[str]) -> None:
    """The CLI's ``--set model.name=custom``: other ``model.*`` settings beside ``target`` and ``kwargs`` are refused,
    as ``ebmlab.train(energy=...)`` refuses them (they configure ebmlab's own networks)."""
    keys = [o.split("=", 1)[0] for o in overrides]
    custom = any(k.strip() == "model.name" and o.split("=", 1)[-1].strip() == "custom" for k, o in zip(keys, overrides))
    extra = model_keys(keys, ("name", "target", "kwargs")) if custom else []
    if extra:
        raise ConfigError(f"model settings ({', '.join(sorted(set(extra)))}) do not apply to model.name custom (your "
                          "own nn.Module is the model); remove them, or pass its own arguments as model.kwargs")


def _same_shapes(a: nn.Module, b: nn.Module) -> bool:
    """Whether two networks hold the same parameter and buffer names with the same shapes."""
    return {k: tuple(v.shape) for k, v in a.state_dict().items()} == {k: tuple(v.shape) for k, v in b.state_dict().items()}


def _call(kwargs: dict) -> str:
    """``{"cond_dim": 32}`` -> ``cond_dim=32``: arguments as the user would write them."""
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _init_kwargs(energy: nn.Module, strict: bool = True) -> dict:
    """The constructor arguments of ``energy`` read from its attributes of the same names (``strict``: a required
    one that cannot be read is a ConfigError; else it is left out)."""
    cls = type(energy)
    out = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = getattr(energy, name, inspect.Parameter.empty)
        ok = value is not inspect.Parameter.empty
        if ok:
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                ok = False
        if ok:
            out[name] = value
        elif p.default is inspect.Parameter.empty and strict:
            raise ConfigError(f"cannot tell {cls.__name__}'s argument {name!r} from the instance (no attribute "
                              f"{name!r} holding a JSON value); pass energy_kwargs={{'{name}': ...}}")
    return out


def check_rebuilds(cfg: Config, energy: nn.Module | None) -> None:
    """The recorded class and kwargs must rebuild a network with the parameters of ``energy`` (None: no energy of the
    user's, nothing to check). Its forward is probed where the method is built, as the method calls it
    (``objectives/registry._probe_energy``)."""
    from ebmlab.energies.build import construct_custom

    if energy is None:
        return
    if not _same_shapes(construct_custom(cfg.model), energy):
        raise ConfigError(f"{cfg.model.target}(**{cfg.model.kwargs}) does not rebuild the energy you passed (its "
                          "parameters differ), so the run could not be reloaded; pass the constructor's arguments "
                          "as energy_kwargs")


def start_from(trainer, energy: nn.Module) -> None:
    """Training starts from the weights of the user's ``energy`` (the EMA restarts from them too). Where the method
    built the class with arguments of its own (paper 002's ``time_cond``/``n_times``, paper 003's ``cond_dim``) that
    change its parameters' shapes, it starts from that build's own initialisation, with a warning naming them."""
    from ebmlab.training.ema import EMA

    built = [m for m in trainer.objective.modules() if type(m) is type(energy)]
    if len(built) != 1:
        return  # the method wraps the network in a way we cannot map: its own initialisation stands
    if not _same_shapes(built[0], energy):
        theirs = {k: v for k, v in _init_kwargs(built[0], strict=False).items() if getattr(energy, k, None) != v}
        warnings.warn(f"{trainer.cfg.method.name} builds {type(energy).__name__} with arguments of its own "
                      f"({_call(theirs) or 'not readable from its attributes'}), which change its parameters, so "
                      "training starts from that network's own initialisation, not your instance's weights; to start "
                      f"from your weights, build your instance with {_call(theirs) or 'them'}", stacklevel=5)
        return
    built[0].load_state_dict(energy.state_dict())
    if trainer.ema is not None:
        trainer.ema = EMA(trainer.objective, trainer.cfg.train.ema)
