"""The run configuration schema: dataclasses read from YAML, overridden with ``--set section.key=value``,
validated; and what training on a user's own vectors adds to it (``USER_DATA_DEFAULTS``).

A config has five sections: ``data``, ``model``, ``method``, ``train``, ``eval``. ``method`` is
validated against the dataclass its method declares; this module sits below ``objectives/`` (DESIGN.md:
``errors <- config <- energies <- ... <- objectives <- training``), so the parsing functions take that
lookup as an argument, ``method_configs = {name: config dataclass}``; ``ebmlab.training.config``
passes the objectives' registry and is what users call. Unknown keys and wrongly typed values raise
``ConfigError`` with one sentence that lists the valid keys or the expected type.

Beside it, one concern each (all at this level of the imports; ``__all__`` below re-exports some of
their names): ``config_checks`` (the value checks run when a config is built: issue 13), ``config_hash``
(``run_hash``, the keys a resumed run may change, what older stored runs ran with), ``config_files`` (the
YAML reader and the configs shipped in the package: ``load_config("paper004_rings_hybrid")``,
``ebmlab configs``) and ``files`` (atomic writes).
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ebmlab.config_checks import MIXTURE_BASE_METHODS, check_finite, check_magnitude, plain_value, short, validate
from ebmlab.config_files import (
    config_description,
    read_config_file,
    resolve_config,
    shipped_config_text,
    shipped_configs,
    yaml_load,
)
from ebmlab.config_hash import MUTABLE_KEYS, config_changes, full_hash, run_hash
from ebmlab.errors import ConfigError
from ebmlab.files import write_text_atomic

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
    name: str = "rings"               # a toy (rings, spiral, checkerboard, 8gaussians, mixture), an image set,
                                      # a table (breast_cancer, wine) or "array" (data/dataset.py DATASETS)
    path: str | None = None           # user data: .npy/.npz/.csv (vectors) or image files/folders
    n_train: int = 50000              # toy: samples drawn for training
    n_test: int = 5000                # toy: held-out samples; arrays, tables: held-out rows, min(n_test, N // 10)
    standardize: bool = True          # vectors: subtract each coordinate's mean, divide by its std (data/dataset.py)
    whiten: bool = False              # vectors: then ZCA-whiten (identity covariance; needs standardize)
    jitter: float | None = None       # std of Gaussian noise added to each training example as it is drawn,
                                      # model coordinates (training/loop.py; None: none)
    val_fraction: float | None = None  # vectors: this fraction of the training rows becomes a validation
                                      # split (train.select_every scores on it; data/dataset.py; None: none)
    image_size: int | None = None     # images: resize to this side length
    channels: int | None = None       # images: force 1 or 3 channels
    crop: int | None = None           # image folders: centre crop before resize (CelebA: 140)
    classes: list | None = None       # images: keep only these labels
    seed: int = 1234                  # data generation / split seed (independent of train.seed)
    hflip: bool | None = None         # images: random horizontal flips of training images (None/false: off)


@dataclass
class ModelConfig:
    """The ``model`` section: the energy network (``mlp``, ``resnet``, ``multiscale``, ``unet``, ``plainconv`` or
    your own ``custom`` class)."""
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
    attention: bool = False           # resnet: self-attention at the lowest resolution; plainconv: see attention_at
    pool: str = "avg"                 # resnet down-sampling: avg | subpixel (paper 002 Sec. 5)
    spectral_norm: bool = False       # resnet, plainconv, unet; mlp: paper 003's methods only (their toy EBM)
    time_embed_dim: int = 64          # time/noise-conditioned variants
    num_classes: int | None = None    # unused: the class count comes from the data (checked >= 1 when set)
    blocks: list | None = None        # resnet: blocks per resolution, one entry per channels entry (None: depth each)
    down_last: bool | None = None     # resnet: also down-sample after the last resolution (paper 001 Tables 5-6)
    attention_at: int | None = None   # resnet: self-attention before resolution level i (None: lowest resolution);
                                      # plainconv: before conv i, 0..4 (None: 2; energies/plainconv.py)
    last_activation: str | None = None  # resnet/unet: activation before the readout (None: model.activation)
    readout: str | None = None        # resnet: mean (None: global mean + Dense) | sum (paper 003 A.1: sum over C, H, W)


@dataclass
class TrainConfig:
    """The ``train`` section: optimisation, EMA, seeds, checkpointing, logging, device."""
    steps: int = 2500
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"           # adam | adamw
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_steps: int = 0             # linear lr warm-up (paper 003: method.ebm_warmup, init_warmup instead)
    lr_schedule: str = "constant"     # constant | cosine | step | cosine_restarts (training/loop.lr_factor; cosine
                                      # ends at train.steps for every parameter group)
    lr_decay_steps: int = 0           # step schedule: decay every N steps, counted from step 0 (as torch's StepLR)
    lr_decay_factor: float = 0.1
    lr_restart_steps: int = 0         # cosine_restarts: period of the warm restarts (SGDR, T_mult = 1)
    grad_clip: float | None = None
    ema: float | None = 0.999         # EMA decay of the weights (None: off)
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 0         # 0 keeps every checkpoint
    log_every: int = 10
    sample_every: int = 0             # write a sample figure (image grid, vector scatter) every N steps and at the end (0: image grid at the end only)
    device: str = "auto"              # auto | cpu | cuda | cuda:N | mps
    threads: int | None = None        # torch CPU threads (None: auto, the idle cores, re-counted every 10 s; training/threads.py)
    amp: bool = False                 # bf16 autocast on CUDA
    compile: bool = False             # torch.compile the energy
    progress: bool = True             # tqdm's bar on a terminal, a plain line every 30 s in a log (ebmlab/progress_lines.py)
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
                                        # errors over the validation rows (one-SE rule; needs select_start and
                                        # select_window 1; None: off)
    select_likelihood: bool = False   # a trained check replaces the start only when it does not lower the validation
                                      # rows' log-likelihood below the base's (needs model.base gmm, select_start
                                      # and select_window 1)


@dataclass
class EvalConfig:
    """The ``eval`` section: sample counts, long-run chains, the density grid and plots."""
    n_samples: int = 2000             # samples drawn for the sample metrics
    long_run_factor: int = 10         # vector runs: long-run chains take this many times the method's generation
                                      # steps (n_steps_default; training/evaluate.py); 1: no long run (image runs
                                      # draw none)
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
        """16 hex digits of SHA-256 over the whole config (mutable keys included), less the keys added after runs
        existed while at their old default (``config_hash._NEW_KEYS``, ``_NEW_KEY_DEFAULTS``)."""
        return full_hash(self.to_dict())

    def run_hash(self) -> str:
        """Hash of what a checkpoint depends on: the config without ``MUTABLE_KEYS`` (those may change
        when a run is resumed) and, as in ``hash``, without keys added later that sit at their old default.
        Checkpoint sidecars store it as ``config_hash``."""
        return run_hash(self.to_dict())


# What training on the user's own vectors adds when no config is given (``ebmlab train --data FILE``,
# ``ebmlab.train(data=...)``): whitening, noise on the rows, a base measure whose tilt starts at zero without the
# energy penalty (the leaderboard's GMM fitted on the training rows, ``model.base: gmm``; the whitened rows'
# Gaussian, ``model.base_std``, where the mixture does not apply), and the result chosen on a validation split
# among the checks and the start, each check scored by its worst of up to 5 draws, the start kept unless a check
# beats it by one standard error. Each key adopted by a rule fixed before its runs, on scikit-learn's breast-cancer
# and wine tables (docs/data_defaults.md).
USER_DATA_DEFAULTS = {"data.whiten": True, "data.jitter": 0.3, "data.val_fraction": 0.1, "train.select_every": 50,
                      "train.select_draws": 5, "train.select_start": True, "train.select_margin": 1.0,
                      "model.base": "gmm", "model.base_std": 1.0, "method.energy_l2": 0.0}
# a method's settings for a user's vectors where its defaults are the image ones (unless set): paper 001's image-only
# components off and its Langevin step for standardised vectors, not pixels (lambda 500 diverges on whitened rows at
# once), all as in the shipped paper001_toy.yaml (a test keeps them equal)
VECTOR_METHOD_DEFAULTS = {"improved_cd": {"method.augment": False, "method.multiscale": False, "method.step_size": 0.01,
                                          "method.noise_scale": 0.01, "method.n_steps": 20, "method.sample_rounds": 10}}


def user_data_overrides(raw: dict) -> list[str]:
    """``section.key=value`` overrides for the ``USER_DATA_DEFAULTS`` that the config mapping ``raw`` (the user's
    own keys only) leaves out (a key given, even as null, is the user's); none when it turns standardising off
    (whitening and the noise act on z-scores). The mixture base goes to the MLP of paper 004's objectives
    (``MIXTURE_BASE_METHODS``) unless the user chose a base; the Gaussian base to any other
    MLP; the energy penalty is turned off only for the default method (``hybrid``, named or not) and only with a
    base measure (the penalty on the total energy pulls the tilt down to cancel the base: docs/data_defaults.md);
    the margin only where it applies (a checked start, one check at a time) and the worst-of-draws score only
    without the user's ``train.select_window`` (the two are exclusive); a method's vector settings where its
    defaults are the image ones (``VECTOR_METHOD_DEFAULTS``)."""
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
    if not (mixture or model.get("base") == "gmm" or gaussian is not None) or method.get("name", "hybrid") != "hybrid":
        skip.add("method.energy_l2")
    data = own("data")
    if ("select_every" in train and train["select_every"] is None  # the user turned the validation checks off,
            or ("val_fraction" in data and data["val_fraction"] is None and "select_every" not in train)):  # or split
        skip |= {"train.select_every", "train.select_draws", "train.select_start", "train.select_margin"}
    if train.get("select_start") is False or train.get("select_window", 1) != 1:
        skip.add("train.select_margin")
    if train.get("select_window", 1) != 1:  # a window averages checks: the worst-of-draws score is the other way
        skip.add("train.select_draws")
    defaults = {**USER_DATA_DEFAULTS, **VECTOR_METHOD_DEFAULTS.get(method.get("name", "hybrid"), {})}
    keys = [(key, *key.split(".", 1)) for key in defaults if key not in skip]
    return [f"{key}={str(defaults[key]).lower()}" for key, sec, name in keys if name not in own(sec)]


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
            shown = f"{where}.{key}" if str(key).isprintable() else repr(f"{where}.{key}")  # (an invisible character)
            raise ConfigError(f"unknown config key {shown}; valid keys in {where!r} are: {', '.join(valid)}")
        values[key] = value = plain_value(value)
        if isinstance(value, float) and hints[key] is int and value.is_integer() and abs(value) < 2 ** 62:
            values[key] = value = int(value)
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"config key {where}.{key} expects {_type_name(hints[key])}, got {short(value)}")
        check_magnitude(f"{where}.{key}", value)
        check_finite(f"{where}.{key}", value)
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except (TypeError, IndexError) as exc:  # e.g. a list of strings where numbers belong
            raise ConfigError(f"config section {where!r} holds a value of the wrong kind ({exc})") from None
    return obj


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
    parts = {k: build_section(cls, raw.get(k), k) for k, cls in SECTIONS.items()}  # (a section of 0 or '' is refused)
    method_raw = {} if raw.get("method") is None else raw["method"]
    if not isinstance(method_raw, dict):
        raise ConfigError(f"config section 'method' must be a mapping of keys to values, got a "
                          f"{type(method_raw).__name__}")
    method_raw = dict(method_raw)
    name = method_raw.get("name", "hybrid")
    if not isinstance(name, str) or name not in method_configs:
        raise ConfigError(f"unknown method name {name!r}; available methods are: {', '.join(sorted(method_configs))} "
                          "(a method of your own: ebmlab.objectives.register, README 'Your own method')")
    method_raw["name"] = name
    parts["method"] = build_section(method_configs[name], method_raw, "method")
    cfg = Config(**parts)
    validate(cfg)
    return cfg


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
    if not isinstance(parsed, (bool, int, float)) and _has_comment(value):
        # a comment cut the text (a number's is harmless; a ' #' inside quotes is the value's)
        raise ConfigError(f"--set {key}={value}: YAML reads ' #' as the start of a comment and drops the rest; quote "
                          f"the value ({key}='\"...\"') if the '#' belongs to it")
    return parts, parsed


def _has_comment(value: str) -> bool:
    """Whether YAML reads a comment in ``value``: a '#' at the start or after white space that no scalar holds. PyYAML's
    own scanner says where the scalars are (a quote opens one only where YAML allows: in ``o'brien #2`` it does not);
    text that is not YAML (taken whole) is judged by the '#' alone."""
    hashes = [m.start() for m in re.finditer(r"(?:^|(?<=\s))#", value)]
    try:
        spans = [(t.start_mark.index, t.end_mark.index) for t in yaml.scan(value, Loader=yaml.SafeLoader)
                 if isinstance(t, yaml.ScalarToken)]
    except yaml.YAMLError:
        return bool(hashes)
    return any(not any(a <= i < b for a, b in spans) for i in hashes)


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
    """Write ``config.yaml`` atomically (temp file + rename), mode 0666 minus the umask (0644 under umask 022)."""
    write_text_atomic(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
