"""Atomic file writes: a crash, a full disk or a kill never leaves a half-written file where a complete
one stood (DESIGN.md, "runs never lose a user's files"). Used for ``config.yaml``, checkpoints and their
sidecars, ``run.json`` and the selection's files: write a temp file beside the target, fsync, give it
the mode ``open()`` would (0666 minus the umask), rename it onto the target.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import secrets
import sys
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_all", "file_above", "file_mode", "save_npy_atomic", "temp_path", "user_path",
           "write_text_atomic"]


def user_path(path) -> Path:
    """``path`` with a leading ``~`` expanded, as a shell would (``--out=~/runs/x`` reaches ebmlab unexpanded; the
    Python API takes such strings too): never a folder literally named ``~``."""
    return Path(os.path.expanduser(os.fspath(path)))


def file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` if it is not a directory (a file there stops ``path`` from ever
    being made: the operating system would say only "Not a directory"), else None."""
    for parent in Path(path).absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def file_mode() -> int:
    """0o666 minus the process umask: the mode ``open()`` gives a new file (0644 under umask 022)."""
    try:  # Linux: read it without changing it (os.umask is process-wide, not thread-safe)
        with open("/proc/self/status", encoding="utf-8") as fh:
            mask = next(int(ln.split()[1], 8) for ln in fh if ln.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def temp_path(path: Path) -> Path:
    """Where an atomic write of ``path`` goes first: beside it, a hidden name of its own (``.<8 hex>.NAME.tmp``), so
    two processes writing one file at once (two ``ebmlab sample --out SAME``) never write into one temp file and the
    file left is one whole write; shortened where it would pass the file system's 255 bytes. A run directory's
    clean-up knows these names (``run_dir.TRAIN_FILES``); folder fingerprints skip hidden files."""
    name, token = path.name, secrets.token_hex(4)
    if len(os.fsencode(f".{token}.{name}.tmp")) > 255:
        head = os.fsencode(name)[:64].decode("utf-8", "ignore")  # 64 bytes (a cut character dropped)
        name = f"{head}.{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}"
    return path.with_name(f".{token}.{name}.tmp")


def with_temps(names: str) -> re.Pattern:
    """``names`` (a regex of file names) and their atomic writes' leftovers (``temp_path``: ``.<8 hex>.NAME.tmp``;
    ``NAME.tmp`` before)."""
    return re.compile(rf"(\.[0-9a-f]{{8}}\.({names})\.tmp|({names})(\.tmp)?)")


def is_temp_file(p: Path) -> bool:
    """Whether ``p`` may be an atomic write's leftover: named ``*.tmp`` and not a folder (a write leaves a file or,
    killed, its name; a folder so named is the user's, never deleted)."""
    return p.name.endswith(".tmp") and (p.is_symlink() or not p.is_dir())


def atomic_write(path: Path, write, replace: bool = True) -> None:
    """``write(tmp)``, fsync, mode 0666 minus the umask (``file_mode``), rename onto ``path``; the temp file is
    removed when anything fails (a full disk leaves the previous file as it was). ``replace=False``: put in place only
    where no file is, FileExistsError where another process put one meanwhile (two ``sample --out SAME`` at once)."""
    atomic_write_all([(path, write)], replace)


def atomic_write_all(items, replace: bool = True) -> None:
    """``atomic_write`` of several files that belong together (a checkpoint's tensor file and its sidecar): every
    temp file is written and synced before the first rename, so a full disk leaves the previous set whole, never
    new files beside old ones; the old set's later files are removed before the first rename, so a kill between the
    renames leaves a set without its last file (refused by its reader), never a mixed one. An error names the file
    being written, not its temp file."""
    temps = [(Path(path), temp_path(Path(path)), write) for path, write in items]
    if len({os.path.abspath(path) for path, _, _ in temps}) < len(temps):
        raise ValueError(f"atomic_write_all: a file given twice among {[str(p) for p, _, _ in temps]}")
    try:
        for path, tmp, write in temps:
            _written(write, path, tmp)
        for path, _, _ in temps[1:] if replace else []:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for path, tmp, _ in temps:
            (os.replace if replace else _place_new)(tmp, path)
    except BaseException:
        for _, tmp, _ in temps:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise


def _place_new(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` onto ``path`` only where no file is, FileExistsError where another process put one meanwhile: one
    ``renameat2(RENAME_NOREPLACE)`` on Linux (a kill at any point leaves one name); else a hard link, then ``tmp``
    unlinked (a kill between the two leaves ``tmp`` too); without hard links (FAT, some network file systems) a check,
    then a rename."""
    if _rename_noreplace(tmp, path):
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _rename_noreplace(tmp: Path, path: Path) -> bool:
    """``renameat2(tmp, path, RENAME_NOREPLACE)``: True when done, FileExistsError where ``path`` exists, False where the
    system has no such call or the file system refuses the flag (not Linux, glibc < 2.28, some network file systems)."""
    call = _renameat2()
    if call is None:
        return False
    if call(_AT_FDCWD, os.fsencode(tmp), _AT_FDCWD, os.fsencode(path), _RENAME_NOREPLACE) == 0:
        return True
    import ctypes  # (loaded by _renameat2)

    err = ctypes.get_errno()
    if err == errno.EEXIST:
        raise FileExistsError(err, os.strerror(err), str(path))
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(path))


_AT_FDCWD, _RENAME_NOREPLACE = -100, 1  # <fcntl.h>, <linux/fs.h>


@functools.cache
def _renameat2():
    """glibc's ``renameat2`` (int dirfd, path, dirfd, path, unsigned flags), or None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # (only where a file is put in place without replacing: ``sample --out``)

    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


def _written(write, path: Path, tmp: Path) -> None:
    """``write(tmp)``, synced, with ``open()``'s mode; an OSError on ``tmp`` is said of ``path``."""
    try:
        write(tmp)
        with open(tmp, "r+b") as fh:  # a writable handle: Windows' fsync (FlushFileBuffers) refuses a read-only one
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
    except OSError as exc:
        if exc.filename == str(tmp):
            exc.filename = str(path)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_write``)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    atomic_write(Path(path), write)


def save_npy_atomic(path: Path, x, replace: bool = True) -> None:
    """``np.save(path, x)`` atomically (``atomic_write``): an interruption leaves the previous file or none."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append .npy to the temp file's name
            np.save(fh, x)
    atomic_write(Path(path), write, replace)
