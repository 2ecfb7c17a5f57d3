"""Atomic file writes: a crash, a full disk or a kill never leaves a half-written file where a complete
one stood (DESIGN.md, "runs never lose a user's files"). Used for ``config.yaml``, checkpoints and their
sidecars, ``run.json`` and the selection's files: write a temp file beside the target, fsync, give it
the mode ``open()`` would (0666 minus the umask), rename it onto the target.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write", "file_mode", "save_npy_atomic", "write_text_atomic"]


def file_mode() -> int:
    """0o666 minus the process umask: the mode ``open()`` gives a new file (0644 under umask 022)."""
    try:  # Linux: read it without changing it (os.umask is process-wide, not thread-safe)
        with open("/proc/self/status", encoding="utf-8") as fh:
            mask = next(int(ln.split()[1], 8) for ln in fh if ln.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write) -> None:
    """``write(tmp)``, fsync, mode 0666 minus the umask (``file_mode``), rename onto ``path``; the temp file is
    removed when anything fails (a full disk leaves the previous file as it was)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "r+b") as fh:  # a writable handle: Windows' fsync (FlushFileBuffers) refuses a read-only one
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
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    atomic_write(Path(path), write)


def save_npy_atomic(path: Path, x) -> None:
    """``np.save(path, x)`` atomically (``atomic_write``): an interruption leaves the previous file or none."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append .npy to the temp file's name
            np.save(fh, x)
    atomic_write(Path(path), write)
