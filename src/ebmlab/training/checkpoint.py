"""Checkpoints: safetensors for every tensor, a JSON sidecar for everything else.

``checkpoints/step_00001000.safetensors`` + ``step_00001000.json`` (and, with ``train.select_every``, the
validation best ``best.safetensors`` + ``best.json``: ``training/selection.py``). A write is atomic (temp file,
fsync, rename) and the sidecar (which records the tensor file's size) is written last, so a checkpoint is
listed once both files exist; loading it refuses a size mismatch. Both files carry one ``pair`` token (the
sidecar's key, the safetensors header's metadata; a hash of the step and the tensors, so identical runs still write
identical files): the validation best is replaced in place while readers open it, and a reader that read one save's
sidecar and the next save's weights reads again instead of mixing them (older checkpoints, and tensor files written
by other tools, have no token). Reading never unpickles: a file that is not valid
safetensors (e.g. a pickle planted in its place) is refused with ``CheckpointError`` before
anything in it is interpreted.
"""
from __future__ import annotations

import json
import os
import hashlib
import re
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from ebmlab.files import atomic_write, atomic_write_all
from ebmlab.errors import CheckpointError, os_error_sentence  # CheckpointError: also importable from here
from ebmlab.training.lock import holder

_NAME = re.compile(r"^step_(\d{8})\.safetensors$")
_HALF = re.compile(r"step_(\d{8})\.(safetensors|json)")  # either file of a step checkpoint (prune)
BEST = "best"  # checkpoints/best.safetensors + best.json: the validation best (training/selection.py)
PAIR = "pair"  # the sidecar's key and the safetensors metadata's: one token per save (a pair, never two saves mixed)
_READS = 5  # reads of a pair whose files do not match (being replaced: best.*) before it is refused
# What a refused checkpoint's sentence advises: sample / eval / load take another one; --resume takes the newest, so
# there the pair goes (``for_resume``)
OTHER_CHECKPOINT = "use another checkpoint (--checkpoint FILE, checkpoint=)"
RESUME_ADVICE = "delete this checkpoint pair (the .safetensors file and its .json) to resume from the one before"


def for_resume(exc: CheckpointError) -> CheckpointError:
    """``exc`` with the advice ``--resume`` can follow (it has no --checkpoint: it continues from the newest pair)."""
    return CheckpointError(str(exc).replace(OTHER_CHECKPOINT, RESUME_ADVICE))


_atomic_write = atomic_write  # (a rank file: dist_checkpoint; mode 0o666 & ~umask, fsync, rename)


def _safetensors_os_error(exc: Exception, path: Path) -> OSError | None:
    """The OSError inside a safetensors I/O error message ("... Os { code: 28, ...") if there is one."""
    m = re.search(r"code: (\d+)", str(exc))
    return OSError(int(m.group(1)), os.strerror(int(m.group(1))), str(path)) if m else None


def step_name(step: int) -> str:
    """The file name of the checkpoint of ``step``: ``step_NNNNNNNN.safetensors``."""
    return f"step_{step:08d}.safetensors"


def save_checkpoint(ckpt_dir: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict,
                    name: str | None = None) -> Path:
    """Write ``step_NNNNNNNN.safetensors`` (or ``<name>.safetensors``: the validation best of
    ``training/selection.py``) with ``tensors`` and its JSON sidecar (``meta`` plus the step) atomically."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / (f"{name}.safetensors" if name else step_name(step))
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    pair, size = _pair_of(step, tensors), []

    def weights(p: Path) -> None:
        save_file(tensors, str(p), metadata={PAIR: pair})
        size.append(p.stat().st_size)

    def sidecar(p: Path) -> None:  # (after the tensor file's temp file is written: its size)
        side = dict(meta, step=step, tensor_file=path.name, tensor_bytes=size[0], pair=pair)
        p.write_text(json.dumps(side, indent=1), encoding="utf-8")
    try:  # both written before either is renamed: a full disk never pairs new weights with an old sidecar (best.*)
        atomic_write_all([(path, weights), (path.with_suffix(".json"), sidecar)])
    except SafetensorError as exc:
        raise _safetensors_os_error(exc, path) or CheckpointError(
            f"could not write checkpoint {str(path)!r} ({' '.join(str(exc).split())}); "
            "earlier checkpoints are kept") from None
    return path


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Step checkpoints whose tensor file and sidecar both exist, sorted by step (the sidecar's
    ``tensor_bytes`` is checked against the file only on loading)."""
    out = []
    if not ckpt_dir.is_dir():
        return out
    for p in ckpt_dir.iterdir():
        m = _NAME.match(p.name)
        side = p.with_suffix(".json")
        if m and side.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint (safetensors file with its sidecar) in ``ckpt_dir``, or None."""
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def best_path(ckpt_dir: Path) -> Path:
    """Where the validation best of ``train.select_every`` lives (its sidecar beside it)."""
    return Path(ckpt_dir) / f"{BEST}.safetensors"


def result_checkpoint(ckpt_dir: Path) -> Path | None:
    """The checkpoint that is the run's result: the validation best (``best_path`` with its sidecar,
    ``train.select_every``) when there is one, else the newest step checkpoint; None if there is neither."""
    best = best_path(ckpt_dir)
    pair = best.is_file(), best.with_suffix(".json").is_file()
    if pair[0] != pair[1]:  # half a best: the last step instead would be other weights than the run's result
        have, lack = (best, best.with_suffix(".json")) if pair[0] else (best.with_suffix(".json"), best)
        busy = holder(Path(ckpt_dir).parent, training=True)
        if busy:  # the trainer is replacing it (files.atomic_write_all): nothing to restore or delete
            raise CheckpointError(f"{str(have)!r}, the run's selected result, is being replaced by the process "
                                  f"training the run ({busy}); open the run again in a moment")
        raise CheckpointError(f"{str(have)!r} is the run's selected result, but {lack.name} beside it is missing; "
                              f"restore it, or delete {have.name} to use the newest step checkpoint instead")
    return best if pair[0] else latest_checkpoint(ckpt_dir)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta). Raises CheckpointError for anything that is not a complete safetensors pair with
    a well-formed sidecar whose ``tensor_bytes`` matches the file (also for an unreadable file: EACCES, EIO,
    ...). Values are not checked here: ``check_finite`` refuses NaN or inf weights."""
    try:
        return _load_checkpoint(Path(path))
    except OSError as exc:
        raise CheckpointError(os_error_sentence(exc, "read checkpoint")) from None


def _load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    side = path.with_suffix(".json")
    for attempt in range(_READS):
        if not path.is_file() or not side.is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} or its sidecar {side.name!r} is missing")
        meta = _sidecar(side)
        with open(path, "rb") as fh:  # header, size and bytes of one file (a replacement renamed in meanwhile: not seen)
            size, head = os.fstat(fh.fileno()).st_size, fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            # safetensors starts with a little-endian u64 header length followed by '{'. A pickle starts with 0x80.
            if n < 0 or n > size:
                raise CheckpointError(f"checkpoint {str(path)!r} is not a safetensors file; refusing to read it")
            size_ok = meta.get("tensor_bytes") in (None, size)
            token = _pair_token(fh.read(n)) if size_ok else None
            if size_ok and (token is None or meta.get(PAIR) in (None, token)):
                fh.seek(0)
                raw = fh.read()  # in memory, not mapped: Windows cannot replace or delete a mapped file
                break
        if attempt < _READS - 1:
            time.sleep(0.05 * (attempt + 1))  # best.* replaced between the two reads: read the new pair
    else:
        why = ("size differs; it may be truncated" if not size_ok else "written by another save: one of the two "
               "files was replaced or copied without the other")
        raise CheckpointError(f"checkpoint {str(path)!r} does not match its sidecar ({why}); {OTHER_CHECKPOINT}")
    try:
        tensors = load(raw)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} could not be read as safetensors "
                              f"({' '.join(str(exc).split())})") from None
    return tensors, meta


def _sidecar(side: Path) -> dict:
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint sidecar {str(side)!r} is not valid JSON "
                              f"({' '.join(str(exc).split())}); it is damaged, {OTHER_CHECKPOINT}") from None
    check_sidecar(meta, side)
    return meta


def _pair_token(header: bytes) -> str | None:
    """The ``PAIR`` token in a safetensors file's JSON header, None without (or a damaged header: load() says so)."""
    try:
        parsed = json.loads(header)
        return (parsed.get("__metadata__") or {}).get(PAIR) if isinstance(parsed, dict) else None
    except (ValueError, UnicodeDecodeError, RecursionError, AttributeError):
        return None


def _pair_of(step: int, tensors: dict[str, torch.Tensor]) -> str:
    """``PAIR``'s token of one save: a SHA-256 of the step and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(str(step).encode())
    for name in sorted(tensors):
        v = tensors[name]
        h.update(f"{name}|{v.dtype}|{tuple(v.shape)}".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy())  # (contiguous CPU tensors: their bytes, no copy)
    return h.hexdigest()[:16]


# sidecar key -> JSON type(s) it must have when present; ``step`` is always required
_SIDECAR_TYPES = {"step": int, "optimizer": dict, "config": dict, "config_hash": str, "ema_updates": int,
                  "tensor_bytes": int, "world_size": int, PAIR: str}


def check_sidecar(meta, side: Path) -> None:
    """A sidecar is a JSON object with an integer ``step`` and well-typed known keys."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint sidecar {str(side)!r} holds a JSON {type(meta).__name__}, expected "
                              f"an object; it is damaged or not from ebmlab, {OTHER_CHECKPOINT}")
    if "step" not in meta:
        raise CheckpointError(f"checkpoint sidecar {str(side)!r} lacks 'step'; it is damaged or not from ebmlab")
    for key, tp in _SIDECAR_TYPES.items():
        if key in meta and (not isinstance(meta[key], tp) or isinstance(meta[key], bool)):
            raise CheckpointError(f"checkpoint sidecar {str(side)!r} has a malformed {key!r} "
                                  f"(expected a JSON {'integer' if tp is int else tp.__name__}); it is damaged")
    if meta["step"] < 0:
        raise CheckpointError(f"checkpoint sidecar {str(side)!r} has a negative step {meta['step']}")


def finite_names(objective: torch.nn.Module) -> set[str]:
    """The state-dict names ``check_finite`` checks: every parameter, and the buffers of a fitted base measure
    (``energies/mixture_base.py``: fitted numbers, never NaN by design)."""
    from ebmlab.energies.mixture_base import GaussianMixtureBase

    names = {n for n, _ in objective.named_parameters()}
    for prefix, module in objective.named_modules():
        if isinstance(module, GaussianMixtureBase):
            names |= {f"{prefix}.{b}" for b, _ in module.named_buffers(recurse=False)}
    return names


def check_finite(tensors: dict[str, torch.Tensor], path: Path, params: set[str]) -> None:
    """Refuse a checkpoint whose weights (``model.<p>`` for ``p`` in ``params``), EMA weights or optimizer
    state hold NaN or inf. Other buffers are not checked: some use NaN as "not measured yet"."""
    for key, v in tensors.items():
        weight = key.startswith(("ema.", "optim.")) or (key.startswith("model.") and key[6:] in params)
        if weight and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"checkpoint {str(path)!r} holds NaN or inf in tensor {key!r}; {OTHER_CHECKPOINT}")


def prune(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0: keep all), and the lone files of steps before them
    (``drop_halves``)."""
    if keep <= 0:
        return
    pairs = list_checkpoints(ckpt_dir)
    for _, p in pairs[:-keep]:
        p.with_suffix(".json").unlink(missing_ok=True)  # (the sidecar first: the pair is no longer listed)
        p.unlink(missing_ok=True)
    if pairs:
        drop_halves(ckpt_dir, pairs[-keep:][0][0])


def drop_halves(ckpt_dir: Path, before: int) -> None:
    """Delete the files of step checkpoints before step ``before`` that lack their other half (a kill between a
    prune's two unlinks, or a pair's two renames): no listing, of whole pairs, shows them, so nothing else would."""
    for p in Path(ckpt_dir).iterdir():
        m, other = _HALF.fullmatch(p.name), p.with_suffix(".safetensors" if p.suffix == ".json" else ".json")
        if m and int(m.group(1)) < before and not other.is_file():
            p.unlink(missing_ok=True)


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able rest."""
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, st in state["state"].items():
        rest["state"][str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                rest["state"][str(pid)][k] = v
    return tensors, rest


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    """The optimizer state dict from the tensors and JSON rest that ``flatten_optimizer`` produced."""
    state: dict = {int(pid): dict(st) for pid, st in rest["state"].items()}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": rest["param_groups"]}
