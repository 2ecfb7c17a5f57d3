"""Round 45: run ``ebmlab ARGV`` with every file-system mutation under $CRASH_ROOT (and every write to a descriptor)
counted; ``os._exit(137)`` right before (or after) the K-th. Usage:
``python -m tests.crash_child K|PATTERN#N before|after LOGFILE -- ARGV...`` (K=0: never killed; LOGFILE: the
mutations seen, one a line).
"""
from __future__ import annotations

import builtins
import io
import os
import shutil
import sys

K, WHEN, COUNTFILE = sys.argv[1], sys.argv[2], sys.argv[3]
# K: a number (the K-th mutation, 0: none) or PATTERN#N: the N-th mutation whose description contains PATTERN
PATTERN, NTH = (K.rsplit("#", 1)[0], int(K.rsplit("#", 1)[1])) if "#" in K else (None, 0)
K = 0 if PATTERN is not None else int(K)
_seen = [0]
ARGV = sys.argv[sys.argv.index("--") + 1:]
_n = [0]
_log = []
_write_fd = set()
_WFLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


ROOT = os.environ.get("CRASH_ROOT", "/")


def _desc(a) -> str | None:
    """The path a call mutates (None: outside ROOT, not counted); fd calls are counted as ``fd N``."""
    for x in a[:2]:
        if isinstance(x, int):
            return f"fd {x}"
        if isinstance(x, (str, bytes, os.PathLike)):
            p = os.path.abspath(os.fsdecode(os.fspath(x)))
            return p if p.startswith(ROOT) else None
    return None


def _mutation(what: str, fn, *a, **kw):
    where = _desc(a if what != "safetensors.save_file" else a[1:])
    if where is None:
        return fn(*a, **kw)
    _n[0] += 1
    k = _n[0]
    _log.append(f"{k} {what} {where}")
    if PATTERN is not None and PATTERN in f"{what} {where}":
        _seen[0] += 1
        if _seen[0] == NTH:
            globals()["K"] = k
    if k == K and WHEN == "before":
        _die()
    out = fn(*a, **kw)
    if k == K and WHEN == "after":
        _die()
    return out


def _die():
    _flush_log()
    os._exit(137)


def _flush_log():
    with _orig_open(COUNTFILE, "w", encoding="utf-8") as fh:
        fh.write("\n".join(_log) + "\n")


def _wrap(mod, name, what=None):
    orig = getattr(mod, name)

    def wrapped(*a, **kw):
        return _mutation(what or name, orig, *a, **kw)
    wrapped.__wrapped__ = orig
    setattr(mod, name, wrapped)


_orig_open = builtins.open
_orig_os_open = os.open


def _is_write_mode(mode) -> bool:
    return any(c in mode for c in "wax+")


def _open(file, mode="r", *a, **kw):
    if not isinstance(file, int) and _is_write_mode(mode) and os.fspath(file) != COUNTFILE:
        return _mutation(f"open[{mode}]", _orig_open, file, mode, *a, **kw)
    return _orig_open(file, mode, *a, **kw)


def _os_open(path, flags, *a, **kw):
    if flags & _WFLAGS:
        return _mutation("os.open", _orig_os_open, path, flags, *a, **kw)
    return _orig_os_open(path, flags, *a, **kw)


builtins.open = _open
io.open = _open
os.open = _os_open
for _name in ("replace", "rename", "link", "symlink", "unlink", "remove", "rmdir", "mkdir", "makedirs", "fsync",
              "chmod", "truncate", "ftruncate", "write"):
    _wrap(os, _name, f"os.{_name}")
_wrap(shutil, "rmtree", "shutil.rmtree")
_wrap(shutil, "move", "shutil.move")
_wrap(shutil, "copyfile", "shutil.copyfile")
_wrap(shutil, "copy2", "shutil.copy2")

import pathlib  # noqa: E402
if hasattr(pathlib, "_NormalAccessor"):  # Python 3.10: Path methods call class attributes of an accessor, bound at
    for _name in ("open", "replace", "rename", "link", "symlink", "unlink", "rmdir", "mkdir", "chmod"):  # its import;
        if hasattr(pathlib._NormalAccessor, _name):  # a Python function there would be bound as a method: staticmethod
            setattr(pathlib._NormalAccessor, _name, staticmethod(io.open if _name == "open" else getattr(os, _name)))

import safetensors.torch as _st  # noqa: E402  (safetensors writes through Rust, not Python's open)
import torch  # noqa: E402

_wrap(_st, "save_file", "safetensors.save_file")
_wrap(torch, "save", "torch.save")

import ebmlab.files as _files  # noqa: E402  (a rename through ctypes: renameat2(RENAME_NOREPLACE), sample --out)

_wrap(_files, "_rename_noreplace", "renameat2")

from ebmlab.cli import main  # noqa: E402

try:
    code = main(ARGV)
finally:
    _flush_log()
sys.exit(code)
