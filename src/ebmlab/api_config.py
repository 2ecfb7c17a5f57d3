"""The config of ``ebmlab.train`` (``api.py``) from its arguments: a base (a ``Config``, a mapping of sections, a YAML
file or a shipped config's name), the method, the section keywords (``model=``, ``train=``, ``eval=``...) and the
overrides (``["train.steps=500"]`` or ``{"train.steps": 500}``), in that order. Split out of ``api.py``.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from ebmlab.config import Config, apply_overrides, read_config_file
from ebmlab.errors import ConfigError

__all__ = ["raw_config", "validated"]


def raw_config(config, method, sections, overrides) -> dict:
    """The mapping of sections from ``config``, with ``method``, the section mappings and ``overrides``."""
    if config is None:
        raw: dict = {}
    elif isinstance(config, Config):
        raw = config.to_dict()
    elif isinstance(config, Mapping):
        raw = json.loads(json.dumps(dict(config), default=str))  # a deep copy of plain values
    elif isinstance(config, (str, os.PathLike)):
        raw = read_config_file(config)
    else:
        raise ConfigError(f"config must be a Config, a mapping of sections, a YAML file or a shipped config's "
                          f"name, got a {type(config).__name__}")
    raw = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()}
    if method is not None:
        from ebmlab.objectives import METHODS

        if not isinstance(method, str):  # e.g. ebmlab.train(x), as scikit-learn's fit(X): the data go in data=
            raise ConfigError(f"method must be a method's name (ebmlab.methods()), got a {type(method).__name__}; "
                              "pass your data as data=, e.g. ebmlab.train(data=x) or ebmlab.train('hybrid', data=x)")
        section = raw.get("method") if isinstance(raw.get("method"), dict) else {}
        old, new = METHODS.get(section.get("name", "hybrid")), METHODS.get(method)
        same = old is not None and new is not None and old.config is new.config  # e.g. paper 004's five schemes
        raw["method"] = {**section, "name": method} if same else {"name": method}  # other methods' keys differ
        dropped = sorted(k for k in section if k != "name") if not same else []
        if dropped and new is not None:  # not silent: a config's method settings that do not apply to ``method``
            warnings.warn(f"method={method!r} replaces the config's method {section.get('name', 'hybrid')!r}, whose "
                          f"settings ({', '.join(dropped)}) do not apply to it and are dropped: {method}'s defaults "
                          "are used (set them as overrides={'method.KEY': value})", stacklevel=3)
    for sec, values in sections.items():
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{sec}= must be a mapping of keys to values, got a {type(values).__name__}")
        raw[sec] = {**(raw.get(sec) or {}), **values}
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            sec, _, k = str(key).partition(".")
            if not sec or not k:
                raise ConfigError(f"an override key must be section.key (e.g. train.steps), got {key!r}")
            raw[sec] = {**(raw.get(sec) or {}), k: value}
    elif overrides is not None:
        if isinstance(overrides, str):
            overrides = [overrides]
        raw = apply_overrides(raw, list(overrides))
    return raw


def validated(raw: dict) -> Config:
    """The validated ``Config`` of ``raw``, a relative ``data.path`` made absolute (against the current directory)."""
    from ebmlab.training.config import from_dict

    cfg = from_dict(raw)
    absolute_data_path(cfg)
    return cfg


def absolute_data_path(cfg: Config) -> None:
    """A relative ``data.path``, or one starting with ``~``, made absolute (against the current directory): what
    config.yaml and run.json store, which every later command reads as it is."""
    if cfg.data.path and not Path(cfg.data.path).is_absolute():  # (``~/x`` is not absolute)
        cfg.data.path = str(Path(cfg.data.path).expanduser().absolute())
