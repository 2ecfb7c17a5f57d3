"""The value checks of a config, run when it is built (issue 13: one sentence saying what was wrong and what
is expected): numbers in range, combinations of keys that cannot run, ``train``'s named choices (optimizer,
schedule, device) and ``model.base`` / ``readout`` / ``target``; ``config.py`` adds unknown keys, types and
the method's name, and each method's config class its own keys (its ``validate``). Names checked later, when
the trainer builds the data and the energy (before the first update): ``data.name`` (``DataError``) and
``model.name``, ``norm``, ``pool``, ``activation`` (``ValueError``). ``config.from_dict`` calls ``validate``
on the ``Config`` it built; ``build_section`` calls ``check_finite`` on every value. (The sections'
dataclasses live in ``config.py``, which imports this module; the checks take them unannotated,
``d``/``m``/``t``/``e`` for the data, model, train and eval sections.)
"""
from __future__ import annotations

import json
import math
import numbers
import re

import numpy as np

from ebmlab.errors import ConfigError

__all__ = ["MAX_POINTS", "MAX_THREADS", "MIXTURE_BASE_METHODS", "check_finite", "check_integer", "check_magnitude",
           "plain_value", "short", "validate"]


def short(value) -> str:
    """repr(value), cut to 80 characters for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_integer(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int (a Python or NumPy integer, not a bool); ConfigError (a ValueError) naming ``name`` (an
    argument of the Python API or the command line) otherwise or outside ``minimum`` .. ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (
            minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        need = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer {'of at least' if maximum is None else 'from'} {minimum}")
        raise ConfigError(f"{name} must be {need}{f' up to {maximum}' if maximum is not None else ''}, got {value!r}")
    return int(value)


def check_finite(key: str, value) -> None:
    """Every float of a config (also inside lists) is finite: .inf or .nan would train to garbage."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for v in items:
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"config key {key} must be a finite number, got {v}")


def check_ranges(section: str, obj, *, positive=(), nonnegative=(), fraction=()) -> None:
    """ConfigError for the first key of ``obj`` out of its range: ``positive`` (> 0), ``nonnegative`` (>= 0),
    ``fraction`` ([0, 1]); a None value is left to the key's own rule. For the methods' own config classes."""
    for keys, ok, what in ((positive, lambda v: v > 0, "positive"), (nonnegative, lambda v: v >= 0, "non-negative"),
                           (fraction, lambda v: 0 <= v <= 1, "in [0, 1]")):
        for key in keys:
            v = getattr(obj, key)
            if v is not None and not ok(v):  # (NaN fails every rule)
                raise ConfigError(f"{section}.{key} must be {what}, got {v}")


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


def plain_value(value):
    """``value`` as the plain Python type a YAML file holds (NumPy numbers and strings from a sweep, a tuple such as
    torch's ``betas=(0.9, 0.99)``): accepted as what they are, and written back into the run's config.yaml."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    return value


def positive_ints(values) -> bool:
    """Whether ``values`` is a non-empty list of positive integers (a network's channel widths)."""
    return bool(values) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in values)


def check_magnitude(key: str, value) -> None:
    """Integers within 2**62 (a C long: beyond it the networks and buffers fail at their first allocation) and
    within float range (an integer given for a float key)."""
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2 ** 62:
            raise ConfigError(f"config key {key} is {short(v)}, beyond what ebmlab takes (|value| < 2^62)")


# paper 004's schemes (objectives/contrastive.py): the objective that fits a mixture base measure when it is built
MIXTURE_BASE_METHODS = ("data", "noise", "persistent", "persistent_refresh", "hybrid")


def check_new_run(cfg) -> None:
    """``ConfigError`` for a run about to start with a key that would do nothing: the data, model and evaluation keys
    of ``inert_settings`` and the method section's ``inert_keys()`` (e.g. paper 004's ``adaptive_step`` beside the MALA
    controller). Not part of ``validate``: a run stored before a key was refused still opens, samples, evaluates and
    resumes as it ran."""
    inert = getattr(cfg.method, "inert_keys", None)
    said = inert_settings(cfg) + (inert() if callable(inert) else [])
    if said:
        raise ConfigError(said[0])


SELECTION_KEYS = ("select_window", "select_draws", "select_start", "select_refit", "select_paired", "select_margin",
                  "select_likelihood")  # read only by the validation checks of train.select_every


def inert_settings(cfg) -> list[str]:
    """Sentences for data and model keys set where they are read by nothing (docs/testing.md, "Is every data, model
    and evaluation setting live?"): a file given to a dataset that is built, not read; a crop off image folders;
    spectral norm and Fourier features on networks that have none; paper 003's label for the initializer of an
    unconditional run."""
    from ebmlab.data.dataset import PATHLESS

    d, m, said = cfg.data, cfg.model, []
    if d.path and d.name in PATHLESS:
        said.append(f"data.path {d.path!r} is not read by the dataset {d.name!r}, which is built without a file; to "
                    "train on your file give --data FILE (Python: data=FILE), or data.name array / npy / imagefolder")
    if d.crop is not None and d.name != "imagefolder":
        said.append(f"data.crop applies to image folders (data.name imagefolder); {d.name!r} images are used at their "
                    "size: leave it unset")
    if m.spectral_norm and m.name == "mlp" and cfg.method.name not in ("cdrl", "drl"):
        said.append("model.spectral_norm applies to the resnet, plainconv and unet networks, and to the mlp of paper "
                    "003's methods (cdrl, drl: their toy EBM); this method's mlp has none: leave it unset")
    if getattr(cfg.method, "init_conditional", None) and not getattr(cfg.method, "conditional", False):
        said.append("method.init_conditional lets paper 003's initializer see the class label; this run is "
                    "unconditional (method.conditional false), so there is no label: leave it unset")
    t = cfg.train
    moved = [k for k in SELECTION_KEYS if getattr(t, k) != getattr(type(t)(), k)]
    if t.select_every is None and moved:
        said.append(f"train.{moved[0]} sets the validation checks that train.select_every turns on, and it is null "
                    "(no checks): set train.select_every and data.val_fraction (e.g. 0.1; vector data only), or leave it unset")
    if m.name != "mlp" and m.fourier:
        said.append(f"model.fourier (random Fourier input features) applies to model.name mlp, not {m.name!r}")
    elif m.fourier_scale != 1.0 and not m.fourier:
        said.append("model.fourier_scale is the frequency scale of model.fourier's features: set model.fourier > 0 "
                    "or leave it at 1")
    return said


def validate(cfg) -> None:
    """``ConfigError`` for the first value of the ``Config`` ``cfg`` that is out of range or combined with keys
    it cannot run with; nothing when every value is one that runs."""
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


def _validate_data(d) -> None:
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
        raise ConfigError(f"data.classes must be a list of non-negative integer labels, got {short(d.classes)}")
    if d.jitter is not None and not d.jitter > 0:
        raise ConfigError(f"data.jitter (the std of the noise on training examples) must be positive or null, "
                          f"got {d.jitter}")
    if d.whiten and not d.standardize:
        raise ConfigError("data.whiten whitens the standardised vectors: it needs data.standardize=true")
    if d.val_fraction is not None and not 0 < d.val_fraction < 0.5:
        raise ConfigError(f"data.val_fraction (the share of training rows kept for validation) must lie in "
                          f"(0, 0.5) or be null, got {d.val_fraction}")


_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _validate_model(m) -> None:
    if m.name == "custom":
        if not isinstance(m.target, str) or not _TARGET.match(m.target):
            raise ConfigError(f"model.name custom needs model.target = 'package.module:Class' (your nn.Module "
                              f"energy, importable where the run is trained and loaded), got {short(m.target)}")
        try:
            json.dumps(m.kwargs or {}, allow_nan=False)
        except (TypeError, ValueError):
            raise ConfigError(f"model.kwargs must hold JSON values (numbers, strings, lists, mappings) so the "
                              f"run can rebuild the energy, got {short(m.kwargs)}") from None
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
    if m.base_std is not None and not (m.name == "mlp" and m.base_std >= 1e-150):  # (0.5 / std² must be a float)
        raise ConfigError(f"model.base_std (a Gaussian base measure) must be positive (at least 1e-150) and applies to "
                          f"model.name mlp, "
                          f"got {m.base_std} with {m.name!r}")
    if m.channels is not None and not positive_ints(m.channels):
        raise ConfigError(f"model.channels must be a non-empty list of positive integers, got {short(m.channels)}")
    if m.readout not in (None, "mean", "sum") or (m.readout == "sum" and m.name != "resnet"):
        raise ConfigError(f"model.readout must be mean (global mean pooling + Dense) or sum (paper 003 A.1: the sum "
                          f"over channels and positions; model.name resnet), got {m.readout!r} with {m.name!r}")


def _validate_eval(e) -> None:
    _at_least("eval", e, 1, ("n_samples", "long_run_factor"))
    _at_least("eval", e, 2, ("grid_size",))
    _at_most("eval", e, MAX_POINTS, ("n_samples",))
    _at_most("eval", e, 4096, ("grid_size",))
    if e.grid_extent is not None and not e.grid_extent > 0:
        raise ConfigError(f"eval.grid_extent must be positive (or null), got {e.grid_extent}")


def _validate_train(t, d) -> None:
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
                          "(e.g. 0.1) too (vector data only: on images, set train.select_every=null)")
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
        raise ConfigError(f"train.betas must be two numbers in [0, 1), got {short(t.betas)}")
    if not 0 <= t.seed < _SEED_MAX:
        raise ConfigError(f"train.seed must lie in [0, 2^62), got {t.seed}")
    if not _DEVICE.match(t.device):
        raise ConfigError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {short(t.device)}")
    if t.optimizer not in ("adam", "adamw"):
        raise ConfigError(f"train.optimizer must be adam or adamw, got {t.optimizer!r}")
    if t.lr_schedule not in ("constant", "cosine", "step", "cosine_restarts"):
        raise ConfigError(f"train.lr_schedule must be constant, cosine, step or cosine_restarts, got {t.lr_schedule!r}")
    if t.lr_schedule == "cosine_restarts" and t.lr_restart_steps <= 0:
        raise ConfigError(f"train.lr_schedule cosine_restarts needs train.lr_restart_steps > 0, got {t.lr_restart_steps}")
    if t.lr_schedule == "step" and t.lr_decay_steps <= 0:  # (else a constant rate, in silence)
        raise ConfigError(f"train.lr_schedule step needs train.lr_decay_steps > 0, got {t.lr_decay_steps}")
    if t.ema is not None and not 0.0 <= t.ema < 1.0:
        raise ConfigError(f"train.ema must lie in [0, 1), got {t.ema}")
    if t.time_budget is not None and not t.time_budget > 0:
        raise ConfigError(f"train.time_budget must be positive seconds (or null for no budget), got {t.time_budget}")
