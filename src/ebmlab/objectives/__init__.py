"""Training objectives, one file per method, registered by name in ``METHODS``.

A registered method is ``MethodSpec(config=<dataclass with a ``name`` field>, build=fn)`` where
``fn(cfg: Config, data: Dataset) -> Objective``. ``method.name`` in a config selects it.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from ebmlab.objectives.base import LossOutput, Objective


class MethodSpec(NamedTuple):
    config: type
    build: Callable


METHODS: dict[str, MethodSpec] = {}


def register(name: str, config: type, build: Callable) -> None:
    METHODS[name] = MethodSpec(config, build)


def build_objective(cfg, data) -> Objective:
    return METHODS[cfg.method.name].build(cfg, data)


# Importing a method module registers it (one module per paper; see DESIGN.md).
from ebmlab.objectives import contrastive  # noqa: E402,F401  paper 004
from ebmlab.objectives import joint_time  # noqa: E402,F401  paper 000
from ebmlab.objectives import improved_cd  # noqa: E402,F401  paper 001
from ebmlab.objectives import implicit_diffusion  # noqa: E402,F401  paper 002
from ebmlab.objectives import recovery  # noqa: E402,F401  paper 003

__all__ = ["LossOutput", "Objective", "METHODS", "MethodSpec", "register", "build_objective"]
