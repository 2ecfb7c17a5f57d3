"""Training objectives, one file per method; this package owns the method registry ``METHODS``.

A registered method is ``MethodSpec(config=<dataclass with a ``name`` field>, build=fn)`` where
``fn(cfg: Config, data: Dataset) -> Objective``; ``method.name`` in a config selects it. The
built-in methods are listed here (no module registers itself on import); ``register`` adds a
user's own method.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from ebmlab.objectives import contrastive, implicit_diffusion, improved_cd, joint_time, recovery
from ebmlab.objectives.base import LossOutput, NoLogDensity, Objective, ParamGroup, SampleOutput


class MethodSpec(NamedTuple):
    """A registered method: its config dataclass and ``build(cfg, data) -> Objective``."""
    config: type
    build: Callable


METHODS: dict[str, MethodSpec] = {
    **{s: MethodSpec(contrastive.ContrastiveConfig, contrastive.build) for s in contrastive.SCHEMES},  # 004
    **{n: MethodSpec(joint_time.JointTimeConfig, joint_time.build) for n in joint_time.METHOD_NAMES},  # 000
    "improved_cd": MethodSpec(improved_cd.ImprovedCDConfig, improved_cd.build),                       # 001
    "implicit_diffusion": MethodSpec(implicit_diffusion.ImplicitDiffusionConfig, implicit_diffusion.build),  # 002
    "cdrl": MethodSpec(recovery.RecoveryConfig, recovery.build),                                       # 003
    "drl": MethodSpec(recovery.DRLConfig, recovery.build),
}


def register(name: str, config: type, build: Callable) -> None:
    """Add a method: ``config`` a dataclass with a ``name`` field (and an optional ``validate``),
    ``build(cfg, data) -> Objective``."""
    METHODS[name] = MethodSpec(config, build)


def build_objective(cfg, data) -> Objective:
    """The Objective of ``cfg.method.name`` built for ``data`` (the registry's builder)."""
    return METHODS[cfg.method.name].build(cfg, data)


__all__ = ["LossOutput", "NoLogDensity", "Objective", "ParamGroup", "SampleOutput", "METHODS", "MethodSpec",
           "register", "build_objective"]
