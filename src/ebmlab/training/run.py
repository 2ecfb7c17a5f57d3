"""A run directory: open, lock, check, resume (DESIGN.md "Runs on disk").

``ebmlab.load(RUN)`` returns the trained energy as a module that maps data-coordinate inputs
(B, ...) to energies (B,): it standardises inputs exactly as training did.

A run is self-contained. Besides ``config.yaml`` (the full resolved config, data path absolute) it
holds ``run.json``: the method, the model, the data's kind, shape, absolute path and SHA-256 (files
only; toys are regenerated from their seed), and the data transform (per-coordinate mean/std for
vectors, with ``data.whiten`` also the whitening matrix and its inverse; the [-1, 1] range for images; a
refitted best checkpoint carries its own in its sidecar). So ``load``, ``sample`` and ``eval`` work from any directory,
``load`` and ``sample --init noise`` even without the data file, and a data file that changed since
training is refused by name (``DataError``). Every checkpoint sidecar stores ``config_hash``
(``Config.run_hash``: the config without the keys a resumed run may change); it is compared with the
run's ``config.yaml`` on every load, so a checkpoint from another run or method is refused.

The lock on a run directory (``RunLock``, ``run.lock``) is ``training/lock.py``, re-exported here; the run's data
(``run.json``, finding and checking the data file, the run's ``Dataset``) are ``training/run_data.py``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ebmlab.config import Config, apply_overrides
from ebmlab.config_files import yaml_load
from ebmlab.config_hash import MUTABLE_KEYS, config_changes, is_mutable, run_hash, stored_run_defaults
from ebmlab.errors import CheckpointError, ConfigError, RunError, RunNotFound, os_error_sentence
from ebmlab.files import is_temp_file, with_temps
from ebmlab.training import checkpoint as ckpt
from ebmlab.training.config import from_dict
from ebmlab.training.lock import LOCK_NAME, RunLock  # noqa: F401 (re-exported)
from ebmlab.training.run_data import (INFO_NAME, data_fingerprint, read_run_info, record_relocation,  # noqa: F401
                                     run_dataset, stored_transform, transform_info)
from ebmlab.training.run_data import relocation as run_relocation

CHANGES_NAME = "config_changes.jsonl"
# What ``ebmlab train`` writes into a run directory (``--overwrite`` deletes these and nothing else).
# ``data.npy``: data that ``ebmlab.train`` received in memory, saved into the run (the run's data file).
RUN_ENTRIES = ("config.yaml", INFO_NAME, CHANGES_NAME, "checkpoints", "metrics.jsonl", "metrics.json", "tb",
               "samples", "plots", "data.npy", LOCK_NAME)
TOP_TEMPS = with_temps("|".join(re.escape(name) for name in RUN_ENTRIES))  # their temp files (only_leftovers)


class DataSpaceEnergy(nn.Module):
    """E(x) for x in the data's own coordinates: wraps the model-coordinate energy."""

    def __init__(self, energy: nn.Module, transform):
        super().__init__()
        self.energy, self.transform = energy, transform

    def forward(self, x: torch.Tensor, **cond) -> torch.Tensor:
        """(B,) energies of data-coordinate inputs ``x`` (B, ...)."""
        return self.energy(self.transform.to_model(x), **cond)


# ----- devices -------------------------------------------------------------------------------------------
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` as a torch device; ConfigError otherwise or when
    the accelerator is not available here."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise ConfigError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} (train.device or --device) needs CUDA, which is not available on this "
                              "machine; use cpu or auto")
        if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} "
                              "CUDA device(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' is not available on this machine; use cpu or auto")
    return torch.device(name)


# ----- the run's config and run.json -------------------------------------------------------------------
def read_run_raw(run_dir: str | Path) -> dict:
    """The mapping of sections in ``run_dir/config.yaml``; RunNotFound / ConfigError naming the file."""
    run_dir = Path(run_dir)
    p = run_dir / "config.yaml"
    if not run_dir.is_dir():
        why = "it is a file: give the run's directory" if run_dir.exists() else "it does not exist"
        raise RunNotFound(f"{str(run_dir)!r} is not an ebmlab run directory ({why})")
    if not p.is_file():
        raise RunNotFound(f"{str(run_dir)!r} is not an ebmlab run directory (no config.yaml)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        if isinstance(exc, OSError):
            raise RunError(os_error_sentence(exc, "read the run's config")) from None
        raise ConfigError(f"run config {str(p)!r} is not text; it is damaged, restore it") from None
    raw = yaml_load(text, f"run config {str(p)!r}")
    if not isinstance(raw, dict):
        raise ConfigError(f"run config {str(p)!r} must hold a mapping of sections, got a "
                          f"{type(raw).__name__}; it is damaged, restore it from a checkpoint sidecar's 'config'")
    return stored_run_defaults(raw)  # keys whose default changed since the run was written: what it ran with


def read_run_config(run_dir: str | Path) -> Config:
    """The run's validated ``Config`` (from its ``config.yaml``)."""
    raw = read_run_raw(run_dir)
    _import_users_method(run_dir, raw)
    try:
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"run config {str(Path(run_dir) / 'config.yaml')!r} is invalid: {exc}") from None


def _import_users_method(run_dir: str | Path, raw: dict) -> None:
    """A run of a method of the user's own: the module that registered it (``run.json``'s ``method_module``)
    imported, so that the config validates and the objective builds (``objectives.open_method``)."""
    from ebmlab.objectives import BUILT_IN, open_method

    method = raw.get("method")
    name = method.get("name") if isinstance(method, dict) else None
    if isinstance(name, str) and name not in BUILT_IN:
        open_method(name, (read_run_info(Path(run_dir)) or {}).get("method_module"))


def _checkpoint_transform(meta: dict, path: Path):
    """The ``Affine`` of a checkpoint sidecar's ``transform``; CheckpointError if it is malformed."""
    try:
        return stored_transform(meta["transform"])
    except (ValueError, TypeError, KeyError, RuntimeError):
        raise CheckpointError(f"checkpoint sidecar {str(path.with_suffix('.json'))!r} has a damaged 'transform'; "
                              "restore it or retrain the run") from None


# ----- checkpoints of a run ----------------------------------------------------------------------------
def check_config_hash(meta: dict, cfg: Config, path: Path) -> None:
    """Refuse a checkpoint whose sidecar ``config_hash`` differs from the run's ``config.yaml``."""
    got = meta.get("config_hash")
    if got is None:
        raise CheckpointError(f"checkpoint sidecar {str(Path(path).with_suffix('.json'))!r} has no config_hash; "
                              "it was not written by ebmlab train")
    if got in (cfg.run_hash(), cfg.hash()):
        return
    own = meta.get("config")
    if isinstance(own, dict) and got == _full_hash(own) and run_hash(own) == cfg.run_hash():
        return  # a sidecar written before run_hash existed (full-config hash); the fixed keys agree
    diff = ""
    if isinstance(meta.get("config"), dict):
        with contextlib.suppress(Exception):
            stored = from_dict(stored_run_defaults(meta["config"]))
            keys = [k for k, (a, b) in config_changes(stored, cfg).items() if not is_mutable(k)]
            if keys:
                old = stored.to_dict()
                sec, key = keys[0].split(".", 1)
                diff = f" ({keys[0]} is {old[sec][key]!r} there, {cfg.to_dict()[sec][key]!r} in config.yaml)"
    raise CheckpointError(f"checkpoint {str(path)!r} was written with another config than the run's config.yaml"
                          f"{diff}; it belongs to another run")


def _full_hash(raw: dict) -> str:
    """``Config.hash()`` of a config mapping (what sidecars stored before ``run_hash``)."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fit_error(path: Path, cfg: Config, exc: Exception) -> CheckpointError:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 160 else text[:157] + "..."
    return CheckpointError(f"checkpoint {str(path)!r} does not fit the run's {cfg.method.name} / {cfg.model.name} "
                           f"model ({text}); it belongs to another run, was edited, or was written by an ebmlab version "
                           "whose network differed (README: Runs of older versions): retrain it")


def load_weights(objective: nn.Module, tensors: dict, path: Path, cfg: Config, ema: bool) -> None:
    """Load ``model.*`` (strict) and, with ``ema``, the ``ema.*`` parameters; CheckpointError if they do
    not fit the objective or hold NaN/inf."""
    params = dict(objective.named_parameters())
    ckpt.check_finite(tensors, path, ckpt.finite_names(objective))
    try:
        objective.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if ema:
            with torch.no_grad():
                for k, v in tensors.items():
                    if k.startswith("ema."):
                        if k[4:] not in params:
                            raise KeyError(f"unexpected EMA tensor {k!r}")
                        params[k[4:]].copy_(v)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise _fit_error(path, cfg, exc) from None


class OpenedRun(NamedTuple):
    """A run opened at a checkpoint: config, objective (weights loaded), data, step and checkpoint path."""
    cfg: object              # the run's resolved Config
    objective: nn.Module     # the method's Objective, weights loaded, in eval mode
    data: object             # the run's Dataset (without examples when opened with need_data=False)
    step: int                # training step of the checkpoint used
    checkpoint: Path         # the checkpoint file used


def open_checkpoint(run_dir: str | Path, *, ema: bool = True, device: str = "cpu",
                    checkpoint: str | Path | int | None = None, need_data: bool = True) -> OpenedRun:
    """Open a run at its result (the validation best of ``train.select_every``, else the latest checkpoint) or
    at the given checkpoint, EMA weights swapped in (``ema``).

    Every failure is one of ebmlab's errors with one sentence (ConfigError, DataError, CheckpointError,
    RunError): a damaged config.yaml or sidecar, a checkpoint of another run, NaN weights, a bad device."""
    from ebmlab.objectives import build_objective

    run_dir = Path(run_dir)
    dev = resolve_device(device)
    cfg = read_run_config(run_dir)
    try:
        path, tensors, meta = (_read_checkpoint(run_dir, _checkpoint_path(run_dir, checkpoint))
                               if checkpoint is not None else _read_result(run_dir))  # (0 is step 0, not "none")
        check_config_hash(meta, cfg, path)
        check_checkpoint_data(meta, run_dir, path)
        data = run_dataset(run_dir, cfg, need_data=need_data)
        if "transform" in meta:  # a refitted result carries its own transform (training/selection.py)
            data = data.with_transform(_checkpoint_transform(meta, path))
        objective = build_objective(cfg, data)
        load_weights(objective, tensors, path, cfg, ema)
        objective.to(dev).eval()
    except OSError as exc:
        if isinstance(exc, RunError):
            raise
        raise RunError(os_error_sentence(exc, "read")) from None
    return OpenedRun(cfg, objective, data, int(meta.get("step", -1)), path)


def open_run(run_dir: str | Path, *, ema: bool = True, device: str = "cpu", checkpoint: str | None = None):
    """(cfg, objective, data) at the run's result (``result_checkpoint``: the validation best when selection
    kept one, else the latest checkpoint) or the given checkpoint, EMA weights swapped in."""
    run = open_checkpoint(run_dir, ema=ema, device=device, checkpoint=checkpoint)
    return run.cfg, run.objective, run.data


def load(run_dir: str | Path, device: str = "cpu") -> nn.Module:
    """The trained energy (EMA weights) of a run, mapping data-coordinate (B, D) to (B,). Needs only the
    run directory: the data transform is stored in the run (``run.json``)."""
    run = open_checkpoint(run_dir, device=device, need_data=False)
    return DataSpaceEnergy(run.objective.data_energy, run.data.transform).eval()


# ----- resuming ---------------------------------------------------------------------------------------
def _checkpoint_path(run_dir: Path, checkpoint: str | Path | int) -> Path:
    """``--checkpoint FILE`` as given, or a bare name that is not a file here in the run's ``checkpoints/``: the file
    name (``step_00000040.safetensors``), without its suffix (``step_00000040``, ``best``) or a step (40, "40")."""
    if isinstance(checkpoint, int) or (isinstance(checkpoint, str) and checkpoint.isascii() and checkpoint.isdigit()):
        checkpoint = ckpt.step_name(int(checkpoint))
    path = Path(checkpoint)
    if path.exists() or len(path.parts) != 1:
        return path
    for name in (path.name, path.name + ".safetensors"):
        if (run_dir / "checkpoints" / name).is_file():
            return run_dir / "checkpoints" / name
    return path


def _read_checkpoint(run_dir: Path, path: Path | None) -> tuple[Path, dict, dict]:
    """(path, tensors, meta) of the checkpoint at ``path``; one sentence when there is none, or it is missing."""
    if path is None:
        raise CheckpointError(f"no checkpoint in {str(run_dir / 'checkpoints')!r}; train the run first")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory; pass a step_NNNNNNNN.safetensors file")
    if not path.is_file():
        raise CheckpointError(_missing_checkpoint(run_dir, path))
    return (path, *ckpt.load_checkpoint(path))


def _read_result(run_dir: Path, tries: int = 10) -> tuple[Path, dict, dict]:
    """``_read_checkpoint`` of the run's result (``result_checkpoint``), chosen again when the checkpoints folder
    changed while it failed: a trainer with ``train.keep_checkpoints`` prunes the pair a reader picked, or replaces
    the best, between the reader's listing and its reading (every failure of a folder at rest is said at once)."""
    folder, failed = run_dir / "checkpoints", 0
    while True:
        before = _listing(folder)
        try:
            return _read_checkpoint(run_dir, ckpt.result_checkpoint(folder))
        except CheckpointError:
            failed += 1
            time.sleep(0.02)  # (a rename in progress)
            if failed == tries or _listing(folder) == before:
                raise


def _listing(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _missing_checkpoint(run_dir: Path, path: Path) -> str:
    """The sentence for a checkpoint that does not exist, naming the run's own."""
    names = [p.name for _, p in ckpt.list_checkpoints(run_dir / "checkpoints")]
    names += [f"{ckpt.BEST}.safetensors"] if (run_dir / "checkpoints" / f"{ckpt.BEST}.safetensors").is_file() else []
    shown = ", ".join(names[:3] + (["...", *names[-2:]] if len(names) > 5 else names[3:]))
    return (f"checkpoint {str(path)!r} does not exist; the run's are {shown} (a file name, the name without "
            ".safetensors, or a step number)" if names else f"checkpoint {str(path)!r} does not exist")


def resume_config(run_dir: Path, overrides: list[str] | None, config: str | None = None) -> Config:
    """The config of ``--resume``: the run's own ``config.yaml`` (or ``--config``, compared below) with
    ``--set`` overrides applied. ``check_resume_changes`` then refuses changes of fixed keys."""
    from ebmlab.config import read_config_file

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunNotFound(f"--resume: no checkpoint found: run directory {str(run_dir)!r} does not exist; "
                          "start the run without --resume")
    if not (run_dir / "config.yaml").is_file():
        left = [p for p in run_dir.iterdir() if p.name != LOCK_NAME]
        hint = ("; it stopped before writing its config: start it again without --resume (the directory is reused)"
                if only_leftovers(left) else "")
        raise RunNotFound(f"--resume: no checkpoint found: {str(run_dir)!r} is not an ebmlab run (no config.yaml){hint}")
    raw = read_config_file(config) if config is not None else read_run_config(run_dir).to_dict()
    return from_dict(apply_overrides(raw, overrides))


def only_leftovers(entries: list[Path]) -> bool:
    """Whether ``entries`` (a run directory's, less its lock) are only ebmlab's atomic writes' temp files of its top
    level: a start killed before its ``config.yaml`` was in place, which a new start reuses (``run_dir``)."""
    return all(TOP_TEMPS.fullmatch(p.name) and is_temp_file(p) for p in entries)


def relocation(run_dir: Path, cfg: Config) -> tuple[Config, str | None]:
    """A resumed run's ``cfg`` with its stored ``data.path`` back where ``cfg`` points to a moved copy of the same data,
    and that place, to read the data from (``run_dataset(..., relocate=)``) and record once the resume has started
    (``Trainer.resume(relocate=)``): ``run_data.relocation``; else (``cfg``, None), whose other path is refused."""
    return run_relocation(Path(run_dir), cfg, read_run_config(run_dir).data.path)


def data_sha_meta(run_dir: Path) -> dict:
    """A checkpoint sidecar's ``{"data_sha256": ...}``: run.json's fingerprint of the data the run trains on; ``{}``
    without one (a toy, no run.json, or a damaged one: the key is optional, ``check_checkpoint_data``)."""
    with contextlib.suppress(CheckpointError):
        sha = data_fingerprint(read_run_info(Path(run_dir)))
        return {"data_sha256": sha} if sha else {}
    return {}


def check_checkpoint_data(meta: dict, run_dir: Path, path: Path) -> None:
    """Refuse a checkpoint whose sidecar records other data (``data_sha256``) than run.json's: the same config, so the
    same hash, but trained on other bytes at the same path (a file edited between two runs). Older sidecars store none."""
    got, want = meta.get("data_sha256"), data_fingerprint(read_run_info(Path(run_dir)))
    if got is not None and want is not None and got != want:
        raise CheckpointError(f"checkpoint {str(path)!r} was trained on other data than run {str(run_dir)!r} (the "
                              "data's fingerprint, a file's SHA-256 or a folder's listing, differs from run.json's); it "
                              "belongs to another run")


def check_resume_changes(run_dir: Path, cfg: Config) -> dict[str, tuple]:
    """{key: (old, new)} of the allowed changes ``cfg`` makes to the run's config; ConfigError naming
    the first key that may not change in a resumed run."""
    old = read_run_config(run_dir)
    changes = config_changes(old, cfg)
    for key, (a, b) in changes.items():
        if not is_mutable(key):
            raise ConfigError(f"--resume cannot change {key} ({a!r} -> {b!r}): the run's checkpoints were "
                              f"trained with it; only {', '.join(MUTABLE_KEYS)} may change, or start a new run "
                              "with another --out (--resume without --config reads the run's own config.yaml)")
    if "train.steps" in changes and cfg.train.lr_schedule == "cosine":
        a, b = changes["train.steps"]
        raise ConfigError(f"--resume cannot change train.steps ({a!r} -> {b!r}) of a run with train.lr_schedule "
                          "cosine: its decay is laid out over train.steps, so the learning rate would jump back up "
                          "and the run would match no uninterrupted one; resume with the same train.steps, or start "
                          "a new run with another --out")
    return changes


def record_changes(run_dir: Path, cfg: Config, changes: dict[str, tuple], step: int | None) -> None:
    """Append the changes to ``config_changes.jsonl`` and rewrite ``config.yaml`` with ``cfg``."""
    from ebmlab.config import save_config

    if not changes:
        return
    row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed_at_step": step,
           "changes": {k: {"old": a, "new": b} for k, (a, b) in changes.items()}}
    if _last_changes(run_dir / CHANGES_NAME) != json.loads(json.dumps(row["changes"], default=str)):
        with open(run_dir / CHANGES_NAME, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
    save_config(cfg, run_dir / "config.yaml")


def _last_changes(path: Path) -> dict | None:
    """The ``changes`` of the file's last row, or None: the same changes again mean the previous resume wrote its row
    and then failed to rewrite ``config.yaml`` (a full disk), so its rerun must not record them twice."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return json.loads(lines[-1]).get("changes") if lines else None
    except (OSError, ValueError, AttributeError):  # none yet, or a torn last row
        return None
