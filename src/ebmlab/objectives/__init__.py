"""Training objectives, one file per method; this package owns the method registry ``METHODS``.

A registered method is ``MethodSpec(config=<dataclass with a ``name`` field>, build=fn)`` where
``fn(cfg: Config, data: Dataset) -> Objective``; ``method.name`` in a config selects it. The
built-in methods are listed here (no module registers itself on import); ``register`` adds a
user's own method (README "Your own method"); an installed package offers its methods to the command line through
the entry-point group ``ebmlab.methods`` (``NAME = "package.module"``, the module whose import registers NAME),
imported when a config first names NAME (``load_installed``). The registry remembers the module that registered it: a run
records that module in its ``run.json`` (``method_module``), and opening the run in another process imports it
(``import_method``), so a run of your own method loads, samples and evaluates like any other wherever the module
is importable.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import warnings
from typing import Callable, NamedTuple

import torch

from ebmlab.errors import ConfigError
from ebmlab.objectives import contrastive, implicit_diffusion, improved_cd, joint_time, recovery
from ebmlab.objectives.base import LossOutput, NoLogDensity, Objective, ParamGroup, SampleOutput


class MethodSpec(NamedTuple):
    """A registered method: its config dataclass, ``build(cfg, data) -> Objective``, and for a user's method the
    module that registered it (None: built in)."""
    config: type
    build: Callable
    module: str | None = None


METHODS: dict[str, MethodSpec] = {
    **{s: MethodSpec(contrastive.ContrastiveConfig, contrastive.build) for s in contrastive.SCHEMES},  # 004
    **{n: MethodSpec(joint_time.JointTimeConfig, joint_time.build) for n in joint_time.METHOD_NAMES},  # 000
    "improved_cd": MethodSpec(improved_cd.ImprovedCDConfig, improved_cd.build),                       # 001
    "implicit_diffusion": MethodSpec(implicit_diffusion.ImplicitDiffusionConfig, implicit_diffusion.build),  # 002
    "cdrl": MethodSpec(recovery.RecoveryConfig, recovery.build),                                       # 003
    "drl": MethodSpec(recovery.DRLConfig, recovery.build),
}


BUILT_IN = frozenset(METHODS)


def register(name: str, config: type, build: Callable) -> None:
    """Add a method of your own under ``name`` (``method.name`` in a config, ``ebmlab.train(name, ...)``): ``config``
    a dataclass with a ``name`` field (its other fields are the ``method`` section's keys; an optional ``validate()``
    raises ``ConfigError``), ``build(cfg, data) -> Objective``. Call it at the top level of a module: a run records
    that module and opening the run elsewhere imports it. Registering a name again replaces it (a re-run notebook
    cell); a built-in method's name is refused."""
    if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)):
        raise ConfigError(f"a method's name must be a Python-style identifier (letters, digits, _), got {name!r}")
    if name in BUILT_IN:
        raise ConfigError(f"{name!r} is a built-in method; register yours under another name")
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)
            and "name" in {f.name for f in dataclasses.fields(config)}):
        raise ConfigError(f"method {name!r}: config must be a dataclass (the class, not an instance) with a 'name' "
                          f"field, got {config!r}")
    if not callable(build):
        raise ConfigError(f"method {name!r}: build must be callable as build(cfg, data) -> Objective, got {build!r}")
    caller = inspect.currentframe().f_back
    module = caller.f_globals.get("__name__") if caller is not None else None
    METHODS[name] = MethodSpec(config, build, module or "__main__")


def method_module(name: str) -> str | None:
    """The module that registered the user's method ``name`` (None for a built-in one)."""
    return METHODS[name].module


def import_method(name: str, module: str | None) -> None:
    """Make the user's method ``name`` known in this process by importing ``module``, the module that registered it
    where the run was trained (its ``run.json``'s ``method_module``); nothing when it is known already. One sentence
    (``ConfigError``) when that cannot be done."""
    if name in METHODS or not module:
        return
    from ebmlab.energies.build import cwd_hint

    if module == "__main__":
        raise ConfigError(f"method {name!r} was registered by the script or notebook that trained the run, so only a "
                          "Python process that registers it too can open the run (not the ebmlab command): call "
                          "ebmlab.objectives.register there first (to open the run anywhere, register it in an "
                          "importable module)")
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 -- any failure of the user's module is reported the same way
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ConfigError(f"method {name!r} is registered by module {module!r}, which cannot be imported ({text}); "
                          f"install it or put it on PYTHONPATH where the run is opened{cwd_hint(exc, module)}") from None
    if name not in METHODS:
        raise ConfigError(f"importing module {module!r} did not register method {name!r}: call "
                          "ebmlab.objectives.register at the top level of that module")


ENTRY_POINTS = "ebmlab.methods"


def installed() -> dict[str, str]:
    """{method name: module} of the installed packages' entry points (group ``ebmlab.methods``), imported or not."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINTS)}


def method_names() -> list[str]:
    """Every method a config can name: the registered ones and those installed packages offer, sorted."""
    return sorted(set(METHODS) | set(installed()))


def load_installed(name: str) -> None:
    """Register the installed package's method ``name`` by importing the module its entry point names; nothing when
    ``name`` is registered already or no package offers it."""
    if name in METHODS:
        return
    module = installed().get(name)
    if module is not None:
        import_method(name, module.partition(":")[0])


def build_objective(cfg, data) -> Objective:
    """The Objective of ``cfg.method.name`` built for ``data`` (the registry's builder); a user's method's build is
    checked to return an ``Objective`` with what the training loop and evaluation call (``_check_built``)."""
    spec = METHODS[cfg.method.name]
    objective = spec.build(cfg, data)
    if spec.module is not None:
        _check_built(cfg.method.name, objective)
    return objective


_REQUIRED = ("forward", "prior", "sample", "n_steps_default")


def _check_built(name: str, objective) -> None:
    """A user's objective has the contract's required members (``objectives/base.py``), said in one sentence."""
    if not isinstance(objective, Objective):
        raise ConfigError(f"method {name!r}: build(cfg, data) must return an ebmlab.objectives.Objective, got a "
                          f"{type(objective).__name__}")
    missing = [m for m in _REQUIRED if getattr(type(objective), m) is getattr(Objective, m)]
    if not isinstance(getattr(objective, "energy", None), torch.nn.Module):
        missing.append("self.energy (an nn.Module)")
    if not isinstance(getattr(objective, "shape", None), tuple):
        missing.append("self.shape (a tuple: one data point's shape)")
    if missing:
        raise ConfigError(f"method {name!r}: its Objective {type(objective).__name__} does not define "
                          f"{', '.join(missing)} (the contract: ebmlab/objectives/base.py)")


def warn_if_unloadable(name: str) -> None:
    """At training: a method registered from ``__main__`` (a script or notebook) can be opened only where
    ``__main__`` registers it again (said once, as for an energy class defined there)."""
    if METHODS[name].module == "__main__":
        warnings.warn(f"method {name!r} is registered in __main__ (a script or notebook): its runs can be opened "
                      "only where __main__ registers it too; register it in a module to open them anywhere",
                      stacklevel=3)


__all__ = ["LossOutput", "NoLogDensity", "Objective", "ParamGroup", "SampleOutput", "METHODS", "MethodSpec",
           "register", "build_objective", "import_method", "installed", "load_installed", "method_module",
           "method_names"]
