"""Checkpoints: safetensors for every tensor, a JSON sidecar for everything else.

``checkpoints/step_00001000.safetensors`` + ``step_00001000.json``. A write is atomic (temp file,
fsync, rename) and the sidecar is written last, so a checkpoint counts only when both files exist
and the sidecar names the tensor file's size. Reading never unpickles: a file that is not valid
safetensors (e.g. a pickle planted in its place) is refused with ``CheckpointError`` before
anything in it is interpreted.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ebmlab.errors import CheckpointError  # also importable from here, its older home

_NAME = re.compile(r"^step_(\d{8})\.safetensors$")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(ckpt_dir: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step_{step:08d}.safetensors"
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_write(path, lambda p: save_file(tensors, str(p)))
    meta = dict(meta, step=step, tensor_file=path.name, tensor_bytes=path.stat().st_size)
    _atomic_write(path.with_suffix(".json"), lambda p: p.write_text(json.dumps(meta, indent=1)))
    return path


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (tensor file + sidecar naming its size), sorted by step."""
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
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta). Raises CheckpointError for anything that is not a complete safetensors pair."""
    path = Path(path)
    side = path.with_suffix(".json")
    if not path.is_file() or not side.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} or its sidecar {side.name!r} is missing")
    with open(path, "rb") as fh:
        head = fh.read(8)
    # safetensors starts with a little-endian u64 header length followed by '{'. A pickle starts with 0x80.
    if len(head) < 8 or int.from_bytes(head, "little") > path.stat().st_size:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a safetensors file; refusing to read it")
    try:
        meta = json.loads(side.read_text())
        tensors = load_file(str(path))
    except (SafetensorError, json.JSONDecodeError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} could not be read as safetensors + JSON: {exc}") from None
    if meta.get("tensor_bytes") not in (None, path.stat().st_size):
        raise CheckpointError(f"checkpoint {str(path)!r} does not match its sidecar (size differs); it may be truncated")
    return tensors, meta


def prune(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0: keep all)."""
    if keep <= 0:
        return
    for _, p in list_checkpoints(ckpt_dir)[:-keep]:
        p.with_suffix(".json").unlink(missing_ok=True)
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
    state: dict = {int(pid): dict(st) for pid, st in rest["state"].items()}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": rest["param_groups"]}
