"""Training objectives, one file per method (``base.py`` the contract every method implements); the method registry
``METHODS``, ``register`` for a method of your own and the lookups of a run's method live in ``registry.py``.

A registered method is ``MethodSpec(config=<dataclass with a ``name`` field>, build=fn)`` where
``fn(cfg: Config, data: Dataset) -> Objective``; ``method.name`` in a config selects it.
"""
from __future__ import annotations

from ebmlab.objectives.base import LossOutput, NoLogDensity, Objective, ParamGroup, SampleOutput
from ebmlab.objectives.registry import (BUILT_IN, ENTRY_POINTS, METHODS, MethodSpec, build_objective, check_loss_output,
                                        installed, load_installed, method_module, method_names, open_method, register,
                                        warn_if_unloadable)

__all__ = ["LossOutput", "NoLogDensity", "Objective", "ParamGroup", "SampleOutput", "METHODS", "MethodSpec",
           "BUILT_IN", "ENTRY_POINTS", "register", "build_objective", "check_loss_output", "installed",
           "load_installed", "method_module", "method_names", "open_method", "warn_if_unloadable"]
