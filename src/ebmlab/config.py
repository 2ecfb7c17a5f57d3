"""The run configuration schema: dataclasses read from YAML (``yaml.safe_load``), overridden with
``--set section.key=value``, validated; and the configs shipped inside the package.

A config has five sections: ``data``, ``model``, ``method``, ``train``, ``eval``. ``method`` is
validated against the dataclass its method declares; this module sits below ``objectives/`` (DESIGN.md:
``errors <- config <- energies <- ... <- objectives <- training``), so the parsing functions take that
lookup as an argument, ``method_configs = {name: config dataclass}``; ``ebmlab.training.config``
passes the objectives' registry and is what users call. Unknown keys and wrongly typed values raise
``ConfigError`` with one sentence that lists the valid keys or the expected type. Every value is checked
before any work (issue 13): floats finite and in range, counts positive, ``train.batch_size <=
data.n_train``, a known ``train.device``. The YAML reader (``yaml_load``) is ``safe_load`` plus floats
written without a dot (``1e-4``, a string in YAML 1.1) and minus aliases (a 400-byte file of nested
aliases expands to gigabytes). ``MUTABLE_KEYS`` may change when a run is resumed; ``Config.run_hash``
(stored in checkpoint sidecars) covers every other key.

Shipped configs (``src/ebmlab/configs/*.yaml``, package data read with ``importlib.resources``):
``load_config("paper004_rings_hybrid")`` and ``ebmlab train --config paper004_rings_hybrid`` find
them by name; ``ebmlab configs`` lists them with the first comment line of each file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
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
    "MUTABLE_KEYS",
    "SECTIONS",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "build_section",
    "config_changes",
    "config_description",
    "from_dict",
    "load_config",
    "parse_override",
    "read_config_file",
    "resolve_config",
    "run_hash",
    "save_config",
    "shipped_config_text",
    "shipped_configs",
    "yaml_load",
]


@dataclass
class DataConfig:
    """The ``data`` section: which dataset (a toy, an image set, or ``array`` for your vectors) and how it is split and scaled."""
    name: str = "rings"               # a toy (rings, spiral, checkerboard, 8gaussians), an image set, or "array"
    path: str | None = None           # user data: .npy/.npz/.csv (vectors) or image files/folders
    n_train: int = 50000              # toy: samples drawn for training
    n_test: int = 5000                # toy: held-out samples; arrays: size of the held-out split
    standardize: bool = True          # vectors: divide each coordinate by its std (see data/dataset.py)
    whiten: bool = False              # vectors: then ZCA-whiten (identity covariance; needs standardize)
    jitter: float | None = None       # std of Gaussian noise added to each training example as it is drawn,
                                      # model coordinates (training/loop.py; None: none)
    val_fraction: float | None = None  # vectors: this fraction of the training rows becomes a validation
                                      # split (train.select_every scores on it; data/dataset.py; None: none)
    image_size: int | None = None     # images: resize to this side length
    channels: int | None = None       # images: force 1 or 3 channels
    crop: int | None = None           # images: centre crop before resize (CelebA: 140)
    classes: list | None = None       # images: keep only these labels
    seed: int = 1234                  # data generation / split seed (independent of train.seed)
    hflip: bool | None = None         # images: random horizontal flips of training images (None/false: off)


@dataclass
class ModelConfig:
    """The ``model`` section: the energy network (``mlp``, ``resnet``, ``multiscale`` or your own ``custom`` class)."""
    name: str = "mlp"                 # mlp | resnet | multiscale | unet | plainconv | custom (ebmlab.energies.build.MODELS)
    target: str | None = None         # custom: "package.module:Class" of your own nn.Module energy
    kwargs: dict | None = None        # custom: its constructor's keyword arguments (JSON values)
    width: int = 128                  # mlp: hidden width
    depth: int = 3                    # mlp: residual blocks; resnet: blocks per resolution
    activation: str = "silu"
    fourier: int = 0                  # mlp: random Fourier input features (0: none); see energies/mlp.py
    fourier_scale: float = 1.0        # mlp: std of their frequencies, in units of the model coordinates
    base_std: float | None = None     # mlp: + |x|^2 / (2 base_std^2), a Gaussian base measure (energies/mlp.py)
    base: str | None = None           # mlp: gmm = + -log q(x) of a Gaussian mixture fitted on the training rows
                                      # (energies/mixture_base.py; contrastive methods); None: base_std or nothing
    channels: list | None = None      # resnet: channels per resolution
    norm: str | None = None           # resnet: group | layer | none
    attention: bool = False           # resnet: self-attention at the lowest resolution
    pool: str = "avg"                 # resnet down-sampling: avg | subpixel (paper 002 Sec. 5)
    spectral_norm: bool = False
    time_embed_dim: int = 64          # time/noise-conditioned variants
    num_classes: int | None = None    # class-conditioned variants
    blocks: list | None = None        # resnet: blocks per resolution, one entry per channels entry (None: depth each)
    down_last: bool | None = None     # resnet: also down-sample after the last resolution (paper 001 Tables 5-6)
    attention_at: int | None = None   # resnet: self-attention before resolution level i (None: lowest resolution)
    last_activation: str | None = None  # resnet/unet: activation before the readout (None: model.activation)


@dataclass
class TrainConfig:
    """The ``train`` section: optimisation, EMA, seeds, checkpointing, logging, device."""
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
    threads: int | None = None        # torch CPU threads (None: auto, 1 for vector data; see training/loop.py)
    amp: bool = False                 # bf16 autocast on CUDA
    compile: bool = False             # torch.compile the energy
    progress: bool = True
    time_budget: float | None = None  # seconds of training wall time per fit; stops at the first update after (None: off)
    select_every: int | None = None   # every N updates, score the EMA weights on data.val_fraction's rows and keep
                                      # the best as the run's result (training/selection.py; None: off)
    select_window: int = 1            # checks averaged for the choice, centred on each (odd; 1: each check alone)
    select_draws: int = 1             # validation draws per check, scored by the worst (stops once it cannot win)
    select_start: bool = False        # also check the starting weights (step 0): the result can be the untrained model
    select_refit: bool = False        # when the start wins, refit what it fitted (the data transform; with model.base
                                      # gmm, the mixture) on training + validation rows
    select_paired: bool = False       # every check draws the same noise (common random numbers) instead of its step's
    select_margin: float | None = None  # a trained check replaces the start only when it beats it by this many standard
                                        # errors over the validation rows (one-SE rule; needs select_start; None: off)
    select_likelihood: bool = False   # a trained check replaces the start only when it does not lower the validation
                                      # rows' log-likelihood below the base's (needs model.base gmm and select_start)


@dataclass
class EvalConfig:
    """The ``eval`` section: sample counts, long-run chains, the density grid and plots."""
    n_samples: int = 2000             # samples drawn for the sample metrics
    long_run_factor: int = 10         # long-run chains take this many times the training steps
    grid_size: int = 160              # density maps / KL grid resolution per axis
    grid_extent: float | None = None  # half-width of the density grid in data units (None: from data)
    plots: bool = True
    digits_fd: bool = True            # image runs on digits: compute the digits feature distance


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


@dataclass
class Config:
    """A full run configuration: ``data``, ``model``, ``method`` (the method's own dataclass), ``train``, ``eval``."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: Any = None                # the method's own dataclass (has .name)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """The config as a mapping of sections (what ``config.yaml`` holds)."""
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """16 hex digits of SHA-256 over the whole config."""
        flat = _hashed(self.to_dict())
        raw: dict = {}
        for key, v in flat.items():
            sec, k = key.split(".", 1)
            raw.setdefault(sec, {})[k] = v
        return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def run_hash(self) -> str:
        """Hash of what a checkpoint depends on: the config without ``MUTABLE_KEYS`` (those may change
        when a run is resumed). Checkpoint sidecars store it as ``config_hash``."""
        return run_hash(self.to_dict())


# Keys a resumed run may change (``ebmlab train --resume --set KEY=VALUE``): how long it trains, how often
# it logs, checkpoints and samples, and everything of ``eval``. Every other key is fixed by the checkpoints.
MUTABLE_KEYS = ("train.steps", "train.time_budget", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                "train.sample_every", "train.progress", "eval.*")


def is_mutable(key: str) -> bool:
    """Whether ``key`` (``section.key``) may change when a run is resumed (``MUTABLE_KEYS``)."""
    section = key.split(".", 1)[0]
    return key in MUTABLE_KEYS or f"{section}.*" in MUTABLE_KEYS


def _flat(raw: dict) -> dict[str, Any]:
    """{"section.key": value} of a config mapping (``Config.to_dict()``)."""
    return {f"{sec}.{k}": v for sec, vals in raw.items() if isinstance(vals, dict) for k, v in vals.items()}


# Keys added after runs existed: left out of the hashes while at their default (None), so the checkpoints
# of runs written before them still match their config.yaml.
_NEW_KEYS = ("model.target", "model.kwargs", "data.hflip", "model.blocks", "model.down_last",
             "model.attention_at", "model.last_activation")
# paper 004's MALA rule (objectives/contrastive.py, issue 15): None = the Robbins-Monro rule of older runs
_NEW_KEYS += ("method.step_rule", "method.proposal_cap")
# where noise-initialised training chains start (docs/paper004.md, the demo's ring masses): None = init_std
_NEW_KEYS += ("method.train_init_std",)
# a wall-clock cap on training (issue 18, the leaderboard): None = off
_NEW_KEYS += ("train.time_budget",)
# resample-move AIS for the noise chains (samplers/ais.py): None = plain AIS
_NEW_KEYS += ("method.ais_resample",)
# the MLP's Gaussian base measure (energies/mlp.py): None = none
_NEW_KEYS += ("model.base_std", "model.base")
# noise on the training examples as they are drawn (training/loop.py): None = none
_NEW_KEYS += ("data.jitter",)
# a validation split and the checkpoint chosen on it (training/selection.py): None = none
_NEW_KEYS += ("data.val_fraction", "train.select_every")
# the start kept unless a check beats it by a margin (training/selection.py): None = the plain minimum
_NEW_KEYS += ("train.select_margin",)
# Keys added with a non-None default that equals the older behaviour: left out of the hash at that default.
_NEW_KEY_DEFAULTS = {
    # importance-weighted noise chains (samplers/ais.py; docs/paper004.md, the demo's ring masses)
    "method.noise_chain": "short_run",
    # AIS noise chains resample by default since issue 18; 0 (never) is what AIS runs before did
    "method.ais_resample": 0.0,
    # ZCA whitening of vector data (data/dataset.py): off is what runs before did
    "data.whiten": False,
    # a check chosen on its own score (training/selection.py) is what runs before the window did
    "train.select_window": 1,
    # one validation draw per check is what runs before the confirming draws did
    "train.select_draws": 1,
    # the starting point was never a candidate before
    "train.select_start": False,
    # the transform was fitted on the training rows alone before the refit
    "train.select_refit": False,
    # each check drew noise seeded by its step before paired checks
    "train.select_paired": False,
    # no likelihood condition on a check before it
    "train.select_likelihood": False,
}
# Keys whose resolved default changed after runs existed: {key: (condition on the stored run's keys, the
# value those runs ran with)}. A stored config.yaml without the key, or with null, ran with that value
# (``stored_run_defaults``; the key is not hashed at it, above, so their checkpoints still match).
_STORED_RUN_DEFAULTS = {
    "method.ais_resample": ({"method.noise_chain": "ais"}, 0.0),
}


# What training on the user's own vectors adds when no config is given (``ebmlab train --data FILE``,
# ``ebmlab.train(data=...)``): whitening, noise on the rows, a base measure whose tilt starts at zero without the
# energy penalty (the leaderboard's GMM fitted on the training rows, ``model.base: gmm``; the whitened rows'
# Gaussian, ``model.base_std``, where the mixture does not apply), and the result chosen on a validation split
# among the checks and the start, each check scored by its worst of up to 5 draws, the start kept unless a check
# beats it by one standard error. Each key adopted by a rule fixed before its runs, on scikit-learn's breast-cancer
# and wine tables (docs/leaderboard.md, "the --data default" and after).
USER_DATA_DEFAULTS = {"data.whiten": True, "data.jitter": 0.3, "data.val_fraction": 0.1, "train.select_every": 50,
                      "train.select_draws": 5, "train.select_start": True, "train.select_margin": 1.0,
                      "model.base": "gmm", "model.base_std": 1.0, "method.energy_l2": 0.0}


def user_data_overrides(raw: dict) -> list[str]:
    """``section.key=value`` overrides for the ``USER_DATA_DEFAULTS`` that the config mapping ``raw`` (the user's
    own keys only) leaves out (a key given, even as null, is the user's); none when it turns standardising off
    (whitening and the noise act on z-scores). The mixture base goes to the MLP of paper 004's objectives
    (``MIXTURE_BASE_METHODS``) unless the user chose a base; the Gaussian base to any other
    MLP; the energy penalty is turned off only for the default method and only with a base measure (the penalty
    on the total energy pulls the tilt down to cancel the base: docs/leaderboard.md); the margin only where it
    applies (a checked start, one check at a time)."""
    def own(section: str) -> dict:  # the user's keys of one section
        return raw[section] if isinstance(raw.get(section), dict) else {}
    if own("data").get("standardize") is False:
        return []
    model, method, train = own("model"), own("method"), own("train")
    mlp = model.get("name", "mlp") == "mlp"
    mixture = (mlp and "base" not in model and "base_std" not in model
               and method.get("name", "hybrid") in MIXTURE_BASE_METHODS)
    skip = set() if mixture else {"model.base"}
    if mixture or not mlp or model.get("base") == "gmm":
        skip.add("model.base_std")
    gaussian = model.get("base_std", None if "model.base_std" in skip else USER_DATA_DEFAULTS["model.base_std"])
    if not (mixture or model.get("base") == "gmm" or gaussian is not None) or "name" in method:
        skip.add("method.energy_l2")
    if train.get("select_start") is False or train.get("select_window", 1) != 1:
        skip.add("train.select_margin")
    keys = [(key, *key.split(".", 1)) for key in USER_DATA_DEFAULTS if key not in skip]
    return [f"{key}={str(USER_DATA_DEFAULTS[key]).lower()}" for key, sec, name in keys if name not in own(sec)]


def stored_run_defaults(raw: dict) -> dict:
    """A run's stored config mapping ``raw`` with the values older runs ran with filled in for keys whose
    default changed since (``_STORED_RUN_DEFAULTS``); a new mapping, ``raw`` is not changed."""
    out = {sec: dict(vals) if isinstance(vals, dict) else vals for sec, vals in raw.items()}
    for key, (when, value) in _STORED_RUN_DEFAULTS.items():
        sec, name = key.split(".", 1)
        vals = out.get(sec)
        if not isinstance(vals, dict) or vals.get(name) is not None:
            continue
        if all(_flat(out).get(k) == v for k, v in when.items()):
            vals[name] = value
    return out


def _hashed(raw: dict) -> dict[str, Any]:
    return {k: v for k, v in _flat(raw).items()
            if not ((k in _NEW_KEYS and v is None) or (k in _NEW_KEY_DEFAULTS and v == _NEW_KEY_DEFAULTS[k]))}


def run_hash(raw: dict) -> str:
    """16 hex digits of SHA-256 over the config mapping ``raw`` without its mutable keys."""
    fixed = {k: v for k, v in _hashed(raw).items() if not is_mutable(k)}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_changes(old: Config, new: Config) -> dict[str, tuple]:
    """{"section.key": (old value, new value)} for every key that differs between two configs."""
    a, b = _flat(old.to_dict()), _flat(new.to_dict())
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


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
        raise ConfigError(f"config section {where!r} must be a mapping of keys to values, got a "
                          f"{type(values).__name__}")
    values = dict(values)
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key not in valid:
            raise ConfigError(f"unknown config key {where}.{key}; valid keys in {where!r} are: {', '.join(valid)}")
        if isinstance(value, float) and hints[key] is int and value.is_integer() and abs(value) < 2 ** 62:
            values[key] = value = int(value)
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"config key {where}.{key} expects {_type_name(hints[key])}, got {_short(value)}")
        _check_finite(f"{where}.{key}", value)
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except (TypeError, IndexError) as exc:  # e.g. a list of strings where numbers belong
            raise ConfigError(f"config section {where!r} holds a value of the wrong kind ({exc})") from None
    return obj


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_finite(key: str, value) -> None:
    """Every float of a config (also inside lists) is finite: .inf or .nan would train to garbage."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for v in items:
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"config key {key} must be a finite number, got {v}")


def from_dict(raw: dict, method_configs: Mapping[str, type]) -> Config:
    """A validated ``Config`` from a mapping of sections; ``method_configs`` maps each method name to
    the dataclass of its ``method`` section (``ebmlab.training.config`` passes the registered methods)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections (data, model, method, train, eval), "
                          f"got a {type(raw).__name__}")
    raw = dict(raw)
    unknown = set(raw) - set(SECTIONS) - {"method"}
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(map(str, unknown))}; valid sections are: "
                          f"data, model, method, train, eval")
    parts = {k: build_section(cls, raw.get(k) or {}, k) for k, cls in SECTIONS.items()}
    method_raw = raw.get("method") or {}
    if not isinstance(method_raw, dict):
        raise ConfigError(f"config section 'method' must be a mapping of keys to values, got a "
                          f"{type(method_raw).__name__}")
    method_raw = dict(method_raw)
    name = method_raw.get("name", "hybrid")
    if not isinstance(name, str) or name not in method_configs:
        raise ConfigError(f"unknown method name {name!r}; available methods are: {', '.join(sorted(method_configs))}")
    method_raw["name"] = name
    parts["method"] = build_section(method_configs[name], method_raw, "method")
    cfg = Config(**parts)
    _validate(cfg)
    return cfg


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_SEED_MAX = 2 ** 62
MAX_POINTS = 100_000_000   # sanity caps: beyond them a typo allocates until the machine gives up
MAX_THREADS = 256


def _at_least(section: str, obj, low, keys) -> None:
    for key in keys:
        v = getattr(obj, key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < low:
            what = "positive" if low == 1 else f"at least {low}"
            what = "non-negative" if low == 0 else what
            raise ConfigError(f"{section}.{key} must be {what}, got {v}")


# paper 004's schemes (objectives/contrastive.py): the objective that fits a mixture base measure when it is built
MIXTURE_BASE_METHODS = ("data", "noise", "persistent", "persistent_refresh", "hybrid")


def _validate(cfg: Config) -> None:
    _validate_data(cfg.data)
    _validate_model(cfg.model)
    _validate_train(cfg.train, cfg.data)
    _validate_eval(cfg.eval)
    if cfg.model.base == "gmm" and cfg.method.name not in MIXTURE_BASE_METHODS:
        raise ConfigError(f"model.base gmm is fitted by paper 004's objectives ({', '.join(MIXTURE_BASE_METHODS)}), "
                          f"not by method {cfg.method.name!r}")
    if cfg.train.select_likelihood and not (cfg.model.base == "gmm" and cfg.train.select_start
                                            and cfg.train.select_window == 1):
        raise ConfigError("train.select_likelihood compares a check's validation log-likelihood with its base measure's "
                          "(the start): it needs model.base gmm, train.select_start=true and train.select_window=1")


def _at_most(section: str, obj, high: int, keys) -> None:
    for key in keys:
        v = getattr(obj, key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > high:
            raise ConfigError(f"{section}.{key} must be at most {high:,}, got {v:,}")


def _validate_data(d: DataConfig) -> None:
    _at_least("data", d, 2, ("n_train",))
    _at_least("data", d, 1, ("n_test", "image_size", "crop"))
    _at_most("data", d, MAX_POINTS, ("n_train", "n_test"))
    _at_most("data", d, 8192, ("image_size", "crop"))
    if d.channels is not None and d.channels not in (1, 3):
        raise ConfigError(f"data.channels must be 1 or 3 (or null), got {d.channels}")
    if not 0 <= d.seed < _SEED_MAX:
        raise ConfigError(f"data.seed must lie in [0, 2^62), got {d.seed}")
    if d.classes is not None and not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                         for c in d.classes):
        raise ConfigError(f"data.classes must be a list of non-negative integer labels, got {_short(d.classes)}")
    if d.jitter is not None and not d.jitter > 0:
        raise ConfigError(f"data.jitter (the std of the noise on training examples) must be positive or null, "
                          f"got {d.jitter}")
    if d.whiten and not d.standardize:
        raise ConfigError("data.whiten whitens the standardised vectors: it needs data.standardize=true")
    if d.val_fraction is not None and not 0 < d.val_fraction < 0.5:
        raise ConfigError(f"data.val_fraction (the share of training rows kept for validation) must lie in "
                          f"(0, 0.5) or be null, got {d.val_fraction}")


_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _validate_model(m: ModelConfig) -> None:
    if m.name == "custom":
        if not isinstance(m.target, str) or not _TARGET.match(m.target):
            raise ConfigError(f"model.name custom needs model.target = 'package.module:Class' (your nn.Module "
                              f"energy, importable where the run is trained and loaded), got {_short(m.target)}")
        try:
            json.dumps(m.kwargs or {}, allow_nan=False)
        except (TypeError, ValueError):
            raise ConfigError(f"model.kwargs must hold JSON values (numbers, strings, lists, mappings) so the "
                              f"run can rebuild the energy, got {_short(m.kwargs)}") from None
    elif m.target is not None or m.kwargs is not None:
        raise ConfigError(f"model.target and model.kwargs belong to model.name custom, not {m.name!r}; remove "
                          "them or set model.name=custom")
    _at_least("model", m, 1, ("width", "time_embed_dim", "num_classes"))
    _at_least("model", m, 0, ("depth", "fourier"))
    if not m.fourier_scale > 0:
        raise ConfigError(f"model.fourier_scale must be positive, got {m.fourier_scale}")
    if m.base not in (None, "gmm"):
        raise ConfigError(f"model.base must be gmm (a fitted Gaussian mixture) or null, got {m.base!r}")
    if m.base == "gmm" and not (m.name == "mlp" and m.base_std is None):
        raise ConfigError(f"model.base gmm (a fitted Gaussian mixture base measure) applies to model.name mlp "
                          f"without model.base_std, got {m.name!r} with base_std {m.base_std}")
    if m.base_std is not None and not (m.name == "mlp" and m.base_std > 0):
        raise ConfigError(f"model.base_std (a Gaussian base measure) must be positive and applies to model.name mlp, "
                          f"got {m.base_std} with {m.name!r}")
    if m.channels is not None and not (m.channels and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1
                                                          for c in m.channels)):
        raise ConfigError(f"model.channels must be a non-empty list of positive integers, got {_short(m.channels)}")


def _validate_eval(e: EvalConfig) -> None:
    _at_least("eval", e, 1, ("n_samples", "long_run_factor"))
    _at_least("eval", e, 2, ("grid_size",))
    _at_most("eval", e, MAX_POINTS, ("n_samples",))
    _at_most("eval", e, 4096, ("grid_size",))
    if e.grid_extent is not None and not e.grid_extent > 0:
        raise ConfigError(f"eval.grid_extent must be positive (or null), got {e.grid_extent}")


def _validate_train(t: TrainConfig, d: DataConfig) -> None:
    _at_least("train", t, 1, ("steps", "batch_size", "checkpoint_every", "log_every", "threads", "select_every"))
    if not (isinstance(t.select_window, int) and t.select_window >= 1 and t.select_window % 2 == 1):
        raise ConfigError(f"train.select_window (the checks averaged, centred on each) must be an odd integer "
                          f">= 1, got {t.select_window!r}")
    if not (isinstance(t.select_draws, int) and t.select_draws >= 1):
        raise ConfigError(f"train.select_draws (validation draws per check) must be an integer >= 1, "
                          f"got {t.select_draws!r}")
    if t.select_draws > 1 and t.select_window > 1:
        raise ConfigError("train.select_draws > 1 (a check scored by its worst draw) and train.select_window > 1 "
                          "(checks averaged with their neighbours) are two ways of choosing: set one of them")
    if t.select_margin is not None and not (t.select_margin >= 0 and t.select_start and t.select_window == 1):
        raise ConfigError(f"train.select_margin (standard errors a check must beat the start by) must be >= 0 and "
                          f"needs train.select_start=true and train.select_window=1, got {t.select_margin!r} with "
                          f"select_start={t.select_start}, select_window={t.select_window}")
    if t.select_every is not None and d.val_fraction is None:
        raise ConfigError("train.select_every scores the weights on a validation split: set data.val_fraction "
                          "(e.g. 0.1) too")
    _at_least("train", t, 0, ("warmup_steps", "lr_decay_steps", "lr_restart_steps", "keep_checkpoints",
                              "sample_every"))
    _at_most("train", t, MAX_THREADS, ("threads",))
    if t.batch_size > d.n_train:
        raise ConfigError(f"train.batch_size ({t.batch_size}) must not exceed data.n_train ({d.n_train})")
    if not t.lr > 0:
        raise ConfigError(f"train.lr must be positive, got {t.lr}")
    if t.grad_clip is not None and not t.grad_clip > 0:
        raise ConfigError(f"train.grad_clip must be positive (or null for no clipping), got {t.grad_clip}")
    if t.weight_decay < 0 or not t.lr_decay_factor > 0:
        raise ConfigError(f"train.weight_decay must be non-negative and train.lr_decay_factor positive, "
                          f"got {t.weight_decay} and {t.lr_decay_factor}")
    if len(t.betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                    for b in t.betas):
        raise ConfigError(f"train.betas must be two numbers in [0, 1), got {_short(t.betas)}")
    if not 0 <= t.seed < _SEED_MAX:
        raise ConfigError(f"train.seed must lie in [0, 2^62), got {t.seed}")
    if not _DEVICE.match(t.device):
        raise ConfigError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {_short(t.device)}")
    if t.optimizer not in ("adam", "adamw"):
        raise ConfigError(f"train.optimizer must be adam or adamw, got {t.optimizer!r}")
    if t.lr_schedule not in ("constant", "cosine", "step", "cosine_restarts"):
        raise ConfigError(f"train.lr_schedule must be constant, cosine, step or cosine_restarts, got {t.lr_schedule!r}")
    if t.lr_schedule == "cosine_restarts" and t.lr_restart_steps <= 0:
        raise ConfigError(f"train.lr_schedule cosine_restarts needs train.lr_restart_steps > 0, got {t.lr_restart_steps}")
    if t.ema is not None and not 0.0 <= t.ema < 1.0:
        raise ConfigError(f"train.ema must lie in [0, 1), got {t.ema}")
    if t.time_budget is not None and not t.time_budget > 0:
        raise ConfigError(f"train.time_budget must be positive seconds (or null for no budget), got {t.time_budget}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``(['section', 'key'], value)`` of an override ``section.key=value`` (the value read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value (e.g. train.steps=100), got {text!r}")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set key must be section.key (e.g. train.steps), got {key!r}")
    try:
        parsed = yaml_load(value, f"--set {key}") if value.strip() else None
    except ConfigError:
        if "*" in value or "&" in value:
            raise
        parsed = value
    return parts, parsed


# ----- YAML -----------------------------------------------------------------------------------------------
# YAML 1.1 (PyYAML) reads 1e-4 as a string (its floats need a dot); YAML 1.2 and every user read it as a
# number. This resolver adds the dot-less exponent form. Aliases (*name) are refused: a 400-byte file of
# nested aliases expands to gigabytes ("billion laughs"), and a config never needs them.
_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$")
MAX_CONFIG_BYTES = 1_000_000


class _NoAlias(Exception):
    pass


class _Loader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _NoAlias(self.peek_event().anchor)
        return super().compose_node(parent, index)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))


def yaml_load(text: str, where: str):
    """``text`` parsed by ``yaml.safe_load`` rules (plus 1e-4 floats, minus aliases); ConfigError naming
    ``where`` for anything that is not plain YAML."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where} is {len(text)} bytes, more than a config may hold ({MAX_CONFIG_BYTES})")
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no python tags
    except _NoAlias as exc:
        raise ConfigError(f"{where} uses a YAML alias (*{exc.args[0]}); ebmlab configs do not accept "
                          "anchors and aliases, write the values out") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML ({' '.join(str(exc).split())})") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. an invalid timestamp
        raise ConfigError(f"{where} holds a value YAML cannot read ({' '.join(str(exc).split())})") from None


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
        try:
            if p.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"config file {str(p)!r} is {p.stat().st_size} bytes, more than a config may hold "
                                  f"({MAX_CONFIG_BYTES})")
            return str(p), p.read_text()
        except UnicodeDecodeError:
            raise ConfigError(f"config file {str(p)!r} is not UTF-8 text; pass a YAML file") from None
    if p.is_dir():
        raise ConfigError(f"--config {str(p)!r} is a directory; pass a YAML file or a shipped config's name")
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
    raw = yaml_load(text, f"config {where!r}") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {where!r} must hold a mapping of sections (data, model, method, train, eval), "
                          f"got a {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                method_configs: Mapping[str, type]) -> Config:
    """Read a YAML config (a file, a shipped config's name, or the built-in defaults when ``path`` is
    None), apply ``section.key=value`` overrides and validate (``from_dict``)."""
    raw: dict = read_config_file(path) if path is not None else {}
    return from_dict(apply_overrides(raw, overrides), method_configs)


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """``raw`` (a mapping of sections) with ``section.key=value`` overrides applied (a new mapping)."""
    raw = dict(raw)
    for text in overrides or []:
        (section, key), value = parse_override(text)
        current = raw.get(section)
        if current is None:
            current = {}
        if not isinstance(current, dict):
            raise ConfigError(f"config section {section!r} must be a mapping of keys to values, got a "
                              f"{type(current).__name__}")
        raw[section] = {**current, key: value}
    return raw


def save_config(cfg: Config, path: Path) -> None:
    """Write ``config.yaml`` atomically (temp file + rename), mode 0644 minus the umask."""
    write_text_atomic(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def file_mode() -> int:
    """0o666 minus the process umask: the mode ``open()`` gives a new file (0644 under umask 022)."""
    try:  # Linux: read it without changing it (os.umask is process-wide, not thread-safe)
        with open("/proc/self/status") as fh:
            mask = next(int(ln.split()[1], 8) for ln in fh if ln.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write) -> None:
    """``write(tmp)``, fsync, mode 0644 minus the umask, rename onto ``path``; the temp file is
    removed when anything fails (a full disk leaves the previous file as it was)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_write``)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)
    atomic_write(Path(path), write)
