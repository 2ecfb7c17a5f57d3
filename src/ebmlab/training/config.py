"""Run configuration as users load it: ``ebmlab.config``'s schema with ``method`` validated against the
registered methods (``ebmlab.objectives.METHODS``).

The schema (dataclasses, YAML loading, validation, overrides, shipped configs) lives in
``ebmlab/config.py``, below ``objectives/``; this layer only supplies the method lookup, so that
``load_config(path, overrides)`` and ``from_dict(raw)`` keep their signatures. Every name this module
exported before is re-exported (``from ebmlab.training.config import ConfigError, DataConfig`` works).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
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


class _MethodConfigs(Mapping):
    """{method name: dataclass of its ``method`` section}, read from the objectives' registry when asked; a name the
    registry lacks is first looked for among the installed packages' methods (``objectives.load_installed``)."""

    def __getitem__(self, name: str) -> type:
        from ebmlab.objectives import METHODS, load_installed  # here: importing a config stays light (no torch)

        if isinstance(name, str):
            load_installed(name)
        return METHODS[name].config

    def __iter__(self) -> Iterator[str]:  # (the names installed packages offer too: what an error lists)
        from ebmlab.objectives import method_names

        return iter(method_names())

    def __len__(self) -> int:
        from ebmlab.objectives import method_names

        return len(method_names())


def method_configs() -> Mapping[str, type]:
    """{method name: dataclass of its ``method`` section}, from the objectives' registry (``_MethodConfigs``)."""
    return _MethodConfigs()


def from_dict(raw: dict) -> Config:
    """A validated ``Config`` from a mapping of sections (e.g. a run's ``config.yaml``)."""
    return _schema.from_dict(raw, method_configs())


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (a file, a shipped config's name such as ``paper004_rings_hybrid``, or the
    built-in defaults when ``path`` is None) and apply ``section.key=value`` overrides."""
    return _schema.load_config(path, overrides, method_configs=method_configs())
