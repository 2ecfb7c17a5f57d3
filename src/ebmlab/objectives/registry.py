"""The method registry ``METHODS`` ({``method.name``: ``MethodSpec``}) and a method of the user's own.

The built-in methods are listed here (no module registers itself on import). ``register`` adds a user's own
method (README "Your own method"). The registry remembers the module whose top-level code registered it; a run
records that module in its ``run.json`` (``method_module``) and opening the run in another process imports it
(``open_method``), so a run of your own method loads, samples and evaluates like any other wherever the module is
importable. An installed package offers methods to the command line through the entry-point group
``ebmlab.methods`` (``NAME = "package.module"``, the module whose import registers NAME), imported when a config
first names NAME (``load_installed``). What a user's method gives is checked where it first arrives, in one
sentence (``ConfigError``): its config class at ``register``, its objective at ``build_objective``, its loss at
every update (``check_loss_output``).
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import types
import typing
import warnings
from typing import Any, Callable, NamedTuple

import torch

from ebmlab.errors import ConfigError
from ebmlab.objectives import contrastive, implicit_diffusion, improved_cd, joint_time, recovery
from ebmlab.objectives.base import LossOutput, Objective


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
ENTRY_POINTS = "ebmlab.methods"


# ----- registering ---------------------------------------------------------------------------------------------
def register(name: str, config: type, build: Callable) -> None:
    """Add a method of your own under ``name`` (``method.name`` in a config, ``ebmlab.train(name, ...)``): ``config``
    a dataclass with a ``name`` field whose other fields are the ``method`` section's keys, each with a default and a
    type a YAML config holds (int, float, str, bool, None, list, dict; an optional ``validate()`` raises
    ``ConfigError``), and ``build(cfg, data) -> Objective``. Call it at the top level of a module: a run records
    that module and opening the run elsewhere imports it. Registering a name again replaces it (a re-run notebook
    cell); a built-in method's name is refused, and so is a name that differs from another only in case."""
    if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)):
        raise ConfigError(f"a method's name must be a Python-style identifier (letters, digits, _), got {name!r}")
    if name in BUILT_IN:
        raise ConfigError(f"{name!r} is a built-in method; register yours under another name")
    taken = next((m for m in [*BUILT_IN, *METHODS] if m != name and m.lower() == name.lower()), None)
    if taken is not None:  # their runs' folders (cells/DATA/METHOD/...) would be one on macOS's and Windows' disks
        raise ConfigError(f"method name {name!r} differs from {taken!r} only in case, and file systems that ignore "
                          "case (macOS, Windows) would give both one folder; choose another name")
    _check_config(name, config)
    if not callable(build):
        raise ConfigError(f"method {name!r}: build must be callable as build(cfg, data) -> Objective, got {build!r}")
    METHODS[name] = MethodSpec(config, build, _registering_module())


def _registering_module() -> str:
    """The module whose import registers the method: the caller's, or when the caller is a function that a module's
    top-level code called (a helper that registers for it), that module."""
    caller = inspect.currentframe().f_back.f_back  # register's caller
    if caller is None:
        return "__main__"
    parent = caller.f_back
    if caller.f_code.co_name != "<module>" and parent is not None and parent.f_code.co_name == "<module>":
        caller = parent
    name = caller.f_globals.get("__name__") or "__main__"
    return "__main__" if name == "__mp_main__" else name  # (a script re-run by a spawned worker is still __main__)


_YAML_TYPES = (int, float, str, bool, type(None), list, dict, Any)


def _yaml_type(tp) -> bool:
    """Whether the config schema can check a value of type ``tp`` read back from YAML (``config.build_section``)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return all(_yaml_type(a) for a in typing.get_args(tp))
    return tp in _YAML_TYPES or origin in (list, dict)


def _check_config(name: str, config) -> None:
    """The config class of a method: a dataclass with a ``name`` field, a default for every field and types that a
    run's ``config.yaml`` gives back as they were (a tuple would come back a list, and the run could not be opened)."""
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)
            and "name" in {f.name for f in dataclasses.fields(config)}):
        raise ConfigError(f"method {name!r}: config must be a dataclass (the class, not an instance) with a 'name' "
                          f"field, got {config!r}")
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"method {name!r}: config field {f.name!r} has no default; every key of a method "
                              "section needs one (a config may leave it out)")
        if not _yaml_type(hints[f.name]):
            raise ConfigError(f"method {name!r}: config field {f.name!r} has type {hints[f.name]}, which a YAML config "
                              "cannot hold and give back; use int, float, str, bool, None, list or dict (and check "
                              "allowed values in the config's validate())")


# ----- finding a method in another process ------------------------------------------------------------------------
def installed() -> dict[str, list[str]]:
    """{method name: [module, ...]} of the installed packages' entry points (group ``ebmlab.methods``), imported or
    not (two packages may offer one name)."""
    from importlib.metadata import entry_points

    found: dict[str, list[str]] = {}
    for ep in entry_points(group=ENTRY_POINTS):
        found.setdefault(ep.name, []).append(ep.value.partition(":")[0])
    return found


def method_names() -> list[str]:
    """Every method a config can name: the registered ones and those installed packages offer, sorted."""
    return sorted(set(METHODS) | set(installed()))


def load_installed(name: str) -> None:
    """Register the installed package's method ``name`` by importing the module its entry point names; nothing when
    ``name`` is registered already or no package offers it; ``ConfigError`` when two packages offer it."""
    if name in METHODS:
        return
    modules = sorted(set(installed().get(name, [])))
    if len(modules) > 1:
        raise ConfigError(f"method {name!r} is offered by several installed packages (entry points {ENTRY_POINTS}: "
                          f"{', '.join(modules)}); uninstall all but one")
    if modules:
        _import(name, modules[0], f"the module of the installed entry point ({ENTRY_POINTS}: {name} = {modules[0]})")


def open_method(name: str, recorded: str | None) -> None:
    """Make the method of a run known in this process: ``recorded`` is the module that registered it where the run
    was trained (``run.json``'s ``method_module``; None: a built-in method or a run written before it). An installed
    package's entry point comes first, then the recorded module; a method now registered by another module than the
    recorded one is opened with a warning naming both."""
    if name not in METHODS:
        load_installed(name)
    if name not in METHODS and recorded:
        if recorded == "__main__":
            raise ConfigError(f"method {name!r} was registered by the script or notebook that trained the run, so "
                              "only a Python process that registers it too can open the run (not the ebmlab "
                              "command): call ebmlab.objectives.register there first (to open the run anywhere, "
                              "register it in an importable module)")
        _import(name, recorded, f"module {recorded!r}, which registered it where the run was trained,")
    now = METHODS[name].module if name in METHODS else None
    if recorded and now and now != recorded:
        warnings.warn(f"method {name!r} of this run was registered by module {recorded!r} where it was trained; here "
                      f"module {now!r} registers it, whose objective opens the run", stacklevel=3)


def _import(name: str, module: str, source: str) -> None:
    """Import ``module`` to register ``name``; one sentence naming ``source`` when that fails."""
    from ebmlab.energies.build import cwd_hint

    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 -- any failure of the user's module is reported the same way
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ConfigError(f"method {name!r}: {source} cannot be imported ({text}); install it or put it on "
                          f"PYTHONPATH{cwd_hint(exc, module)}") from None
    if name not in METHODS:
        raise ConfigError(f"importing module {module!r} did not register method {name!r}: call "
                          "ebmlab.objectives.register at the top level of that module")


def method_module(name: str) -> str | None:
    """The module that registered the user's method ``name`` (None for a built-in one)."""
    return METHODS[name].module


def warn_if_unloadable(name: str) -> None:
    """At training: a method registered from ``__main__`` (a script or notebook) can be opened only where
    ``__main__`` registers it again (said once, as for an energy class defined there)."""
    if METHODS[name].module == "__main__":
        warnings.warn(f"method {name!r} is registered in __main__ (a script or notebook): its runs can be opened "
                      "only where __main__ registers it too; register it in a module to open them anywhere",
                      stacklevel=3)


# ----- building and running it ------------------------------------------------------------------------------------
def build_objective(cfg, data) -> Objective:
    """The Objective of ``cfg.method.name`` built for ``data`` (the registry's builder); a user's method's build is
    checked to return an ``Objective`` with what the training loop and evaluation call (``_check_built``)."""
    spec = METHODS[cfg.method.name]
    objective = spec.build(cfg, data)
    if spec.module is not None:
        _check_built(cfg.method.name, objective)
    if cfg.model.name == "custom":
        _probe_energy(cfg.method.name, objective, tuple(data.shape))
    return objective


def _probe_energy(method: str, objective: Objective, shape: tuple[int, ...]) -> None:
    """A user's own energy network (``model.name: custom``) evaluated as the method evaluates it (``data_energy``:
    paper 003's conditioning vector or its level and label, paper 002's time, paper 000's T-vector head on its
    features) on a batch of two zeros, in eval mode and without touching the random streams, must give energies
    (B,): a network that does not fit the data or the method is one sentence before anything is written, not a
    traceback from the first update. Evaluated with a gradient to x, which it must have."""
    param = next(objective.parameters(), None)
    x = torch.zeros((2, *shape), device=param.device if param is not None else "cpu", requires_grad=True)
    was = objective.training
    objective.eval()
    try:
        with torch.enable_grad(), torch.random.fork_rng(devices=[]):
            e = objective.data_energy(x, **objective.energy_cond({}, 2))
    except Exception as exc:  # noqa: BLE001 -- the user's forward
        raise ConfigError(f"your energy fails on a batch of shape {(2, *shape)} as {method} calls it "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    finally:
        objective.train(was)
    if not isinstance(e, torch.Tensor) or tuple(e.shape) != (2,):
        got = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
        raise ConfigError(f"your energy, as {method} calls it, must map a batch (B, {', '.join(map(str, shape))}) "
                          f"to energies (B,), got {got} for B = 2")
    if not e.requires_grad:  # every method's chains and losses need dE/dx
        raise ConfigError("your energy has no gradient with respect to x: its value is detached from x (.detach(), "
                          ".item(), torch.no_grad inside, or an integer dtype); the samplers need dE/dx")


_REQUIRED = ("forward", "prior", "sample")  # and n_steps_default, which may also be set in __init__


def _check_built(name: str, objective) -> None:
    """A user's objective has the contract's required members (``objectives/base.py``), said in one sentence."""
    if not isinstance(objective, Objective):
        raise ConfigError(f"method {name!r}: build(cfg, data) must return an ebmlab.objectives.Objective, got a "
                          f"{type(objective).__name__}")
    missing = [m for m in _REQUIRED if getattr(type(objective), m) is getattr(Objective, m)]
    try:
        objective.n_steps_default
    except NotImplementedError:
        missing.append("n_steps_default")
    if not isinstance(getattr(objective, "energy", None), torch.nn.Module):
        missing.append("self.energy (an nn.Module)")
    shape = getattr(objective, "shape", None)
    if not isinstance(shape, tuple):
        missing.append("self.shape (a tuple: one data point's shape" + (f"; got a {type(shape).__name__})"
                                                                         if shape is not None else ")"))
    if missing:
        raise ConfigError(f"method {name!r}: its Objective {type(objective).__name__} does not define "
                          f"{', '.join(missing)} (the contract: ebmlab/objectives/base.py)")


def check_loss_output(out, objective) -> LossOutput:
    """``out`` of ``objective(batch)`` as the training loop needs it (a ``LossOutput`` whose loss is one number), or
    one sentence naming what a method's ``forward`` returned instead."""
    if isinstance(out, LossOutput) and torch.is_tensor(out.loss) and out.loss.dim() == 0:
        return out
    what = (f"a loss of shape {tuple(out.loss.shape)}" if isinstance(out, LossOutput) and torch.is_tensor(out.loss)
            else f"a {type(out).__name__}" if not isinstance(out, LossOutput) else "a loss that is not a tensor")
    raise ConfigError(f"{type(objective).__name__}.forward must return LossOutput(loss, metrics) with the loss a "
                      f"0-d tensor (one number: e.g. a mean over the batch), got {what}")
