"""Run configuration as users load it: ``ebmlab.config``'s schema with ``method`` validated against the
registered methods (``ebmlab.objectives.METHODS``).

The schema (dataclasses, YAML loading, validation, overrides, shipped configs) lives in
``ebmlab/config.py``, below ``objectives/``; this layer only supplies the method lookup, so that
``load_config(path, overrides)`` and ``from_dict(raw)`` keep their signatures. Every name this module
exported before is re-exported (``from ebmlab.training.config import ConfigError, DataConfig`` works).
"""
from __future__ import annotations

from pathlib import Path

from ebmlab import config as _schema
from ebmlab.config import (
    SECTIONS,
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    build_section,
    config_description,
    parse_override,
    save_config,
    shipped_config_text,
    shipped_configs,
)
from ebmlab.errors import ConfigError

__all__ = [
    "SECTIONS",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "build_section",
    "config_description",
    "from_dict",
    "load_config",
    "method_configs",
    "parse_override",
    "save_config",
    "shipped_config_text",
    "shipped_configs",
]


def method_configs() -> dict[str, type]:
    """{method name: dataclass of its ``method`` section}, from the objectives' registry."""
    from ebmlab.objectives import METHODS  # here, not at the top: importing a config stays light (no torch)

    return {name: spec.config for name, spec in METHODS.items()}


def from_dict(raw: dict) -> Config:
    """A validated ``Config`` from a mapping of sections (e.g. a run's ``config.yaml``)."""
    return _schema.from_dict(raw, method_configs())


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (a file, a shipped config's name such as ``paper004_rings_hybrid``, or the
    built-in defaults when ``path`` is None) and apply ``section.key=value`` overrides."""
    return _schema.load_config(path, overrides, method_configs=method_configs())
