"""The run configuration schema: dataclasses read from YAML (``yaml.safe_load``), overridden with
``--set section.key=value``, validated; and the configs shipped inside the package.

A config has five sections: ``data``, ``model``, ``method``, ``train``, ``eval``. ``method`` is
validated against the dataclass its method declares; this module sits below ``objectives/`` (DESIGN.md:
``errors <- config <- energies <- ... <- objectives <- training``), so the parsing functions take that
lookup as an argument, ``method_configs = {name: config dataclass}``; ``ebmlab.training.config``
passes the objectives' registry and is what users call. Unknown keys and wrongly typed values raise
``ConfigError`` with one sentence that lists the valid keys or the expected type.

Shipped configs (``src/ebmlab/configs/*.yaml``, package data read with ``importlib.resources``):
``load_config("paper004_rings_hybrid")`` and ``ebmlab train --config paper004_rings_hybrid`` find
them by name; ``ebmlab configs`` lists them with the first comment line of each file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

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
    "parse_override",
    "read_config_file",
    "resolve_config",
    "save_config",
    "shipped_config_text",
    "shipped_configs",
]


@dataclass
class DataConfig:
    name: str = "rings"               # a toy (rings, spiral, checkerboard, 8gaussians), an image set, or "array"
    path: str | None = None           # user data: .npy/.npz/.csv (vectors) or image files/folders
    n_train: int = 50000              # toy: samples drawn for training
    n_test: int = 5000                # toy: held-out samples; arrays: size of the held-out split
    standardize: bool = True          # vectors: divide each coordinate by its std (see data/dataset.py)
    image_size: int | None = None     # images: resize to this side length
    channels: int | None = None       # images: force 1 or 3 channels
    crop: int | None = None           # images: centre crop before resize (CelebA: 140)
    classes: list | None = None       # images: keep only these labels
    seed: int = 1234                  # data generation / split seed (independent of train.seed)


@dataclass
class ModelConfig:
    name: str = "mlp"                 # mlp | resnet | ... (ebmlab.energies.build.MODELS)
    width: int = 128                  # mlp: hidden width
    depth: int = 3                    # mlp: residual blocks; resnet: blocks per resolution
    activation: str = "silu"
    fourier: int = 0                  # mlp: random Fourier input features (0: none); see energies/mlp.py
    fourier_scale: float = 1.0        # mlp: std of their frequencies, in units of the model coordinates
    channels: list | None = None      # resnet: channels per resolution
    norm: str | None = None           # resnet: group | layer | none
    attention: bool = False           # resnet: self-attention at the lowest resolution
    pool: str = "avg"                 # resnet down-sampling: avg | subpixel (paper 002 Sec. 5)
    spectral_norm: bool = False
    time_embed_dim: int = 64          # time/noise-conditioned variants
    num_classes: int | None = None    # class-conditioned variants


@dataclass
class TrainConfig:
    steps: int = 2500
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"           # adam | adamw
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"     # constant | cosine | step | cosine_restarts
    lr_decay_steps: int = 0           # step schedule: decay every N steps
    lr_decay_factor: float = 0.1
    lr_restart_steps: int = 0         # cosine_restarts: period of the warm restarts (SGDR, T_mult = 1)
    grad_clip: float | None = None
    ema: float | None = 0.999         # EMA decay of the weights (None: off)
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 0         # 0 keeps every checkpoint
    log_every: int = 10
    sample_every: int = 0             # image runs: write a sample grid every N steps (0: only at the end)
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    threads: int | None = None        # torch CPU threads (None: torch's default)
    amp: bool = False                 # bf16 autocast on CUDA
    compile: bool = False             # torch.compile the energy
    progress: bool = True


@dataclass
class EvalConfig:
    n_samples: int = 2000             # samples drawn for the sample metrics
    long_run_factor: int = 10         # long-run chains take this many times the training steps
    grid_size: int = 160              # density maps / KL grid resolution per axis
    grid_extent: float | None = None  # half-width of the density grid in data units (None: from data)
    plots: bool = True
    digits_fd: bool = True            # image runs on digits: compute the digits feature distance


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: Any = None                # the method's own dataclass (has .name)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is Any:
        return True
    base = origin or tp
    return isinstance(value, base)


def _type_name(tp) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def build_section(cls, values: dict, where: str):
    """Instantiate dataclass ``cls`` from ``values``, rejecting unknown keys and wrong types."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config section {where!r} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key not in valid:
            raise ConfigError(f"unknown config key {where}.{key}; valid keys in {where!r} are: {', '.join(valid)}")
        if isinstance(value, float) and hints[key] is int and value.is_integer():
            values[key] = value = int(value)
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"config key {where}.{key} expects {_type_name(hints[key])}, got {value!r}")
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


def from_dict(raw: dict, method_configs: Mapping[str, type]) -> Config:
    """A validated ``Config`` from a mapping of sections; ``method_configs`` maps each method name to
    the dataclass of its ``method`` section (``ebmlab.training.config`` passes the registered methods)."""
    raw = dict(raw or {})
    unknown = set(raw) - set(SECTIONS) - {"method"}
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; valid sections are: "
                          f"data, model, method, train, eval")
    parts = {k: build_section(cls, dict(raw.get(k) or {}), k) for k, cls in SECTIONS.items()}
    method_raw = dict(raw.get("method") or {})
    name = method_raw.get("name", "hybrid")
    if name not in method_configs:
        raise ConfigError(f"unknown method name {name!r}; available methods are: {', '.join(sorted(method_configs))}")
    method_raw["name"] = name
    parts["method"] = build_section(method_configs[name], method_raw, "method")
    cfg = Config(**parts)
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    t = cfg.train
    for key in ("steps", "batch_size", "checkpoint_every", "log_every"):
        if getattr(t, key) <= 0:
            raise ConfigError(f"train.{key} must be positive, got {getattr(t, key)}")
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be positive, got {t.lr}")
    if t.optimizer not in ("adam", "adamw"):
        raise ConfigError(f"train.optimizer must be adam or adamw, got {t.optimizer!r}")
    if t.lr_schedule not in ("constant", "cosine", "step", "cosine_restarts"):
        raise ConfigError(f"train.lr_schedule must be constant, cosine, step or cosine_restarts, got {t.lr_schedule!r}")
    if t.lr_schedule == "cosine_restarts" and t.lr_restart_steps <= 0:
        raise ConfigError(f"train.lr_schedule cosine_restarts needs train.lr_restart_steps > 0, got {t.lr_restart_steps}")
    if t.ema is not None and not 0.0 <= t.ema < 1.0:
        raise ConfigError(f"train.ema must lie in [0, 1), got {t.ema}")


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set expects key=value (e.g. train.steps=100), got {text!r}")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set key must be section.key (e.g. train.steps), got {key!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


# ----- shipped configs (package data) ------------------------------------------------------------------
def _shipped_dir():
    return resources.files("ebmlab") / "configs"


def shipped_configs() -> list[str]:
    """Names (file stems) of the configs shipped in ``ebmlab/configs/``, sorted."""
    return sorted(p.name[:-5] for p in _shipped_dir().iterdir() if p.name.endswith(".yaml"))


def shipped_config_text(name: str) -> str:
    """The YAML text of a shipped config; ``ConfigError`` listing the names if there is none."""
    names = shipped_configs()
    if name not in names:
        raise ConfigError(f"no shipped config named {name!r}; available configs are: {', '.join(names)}")
    return (_shipped_dir() / f"{name}.yaml").read_text(encoding="utf-8")


def config_description(text: str) -> str:
    """The first comment line of a YAML text, without its ``#`` (empty if the file starts otherwise)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip().rstrip(",:")
        if line:
            break
    return ""


def resolve_config(path_or_name: str | Path) -> tuple[str, str]:
    """(where, YAML text) of a config: an existing file, else a shipped config by name ("default",
    "paper004_rings_hybrid"). Anything else is a ``ConfigError`` that lists the shipped names."""
    p = Path(path_or_name).expanduser()
    if p.is_file():
        return str(p), p.read_text()
    text = str(path_or_name)
    names = shipped_configs()
    looks_like_path = p.name != text or p.suffix.lower() in (".yaml", ".yml")
    if not looks_like_path and text in names:
        return f"{text} (shipped)", shipped_config_text(text)
    what = f"config file {text!r} does not exist" if looks_like_path else \
        f"{text!r} is neither a config file nor a shipped config"
    raise ConfigError(f"{what}; the shipped configs (pass a name, e.g. --config {names[0]}) are: "
                      f"{', '.join(names)}")


def read_config_file(path_or_name: str | Path) -> dict:
    """The raw mapping of sections of a config file or shipped config (see ``resolve_config``)."""
    where, text = resolve_config(path_or_name)
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {where!r} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {where!r} must hold a mapping of sections")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                method_configs: Mapping[str, type]) -> Config:
    """Read a YAML config (a file, a shipped config's name, or the built-in defaults when ``path`` is
    None), apply ``section.key=value`` overrides and validate (``from_dict``)."""
    raw: dict = read_config_file(path) if path is not None else {}
    for text in overrides or []:
        (section, key), value = parse_override(text)
        raw.setdefault(section, {})
        if raw[section] is None:
            raw[section] = {}
        raw[section][key] = value
    return from_dict(raw, method_configs)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
