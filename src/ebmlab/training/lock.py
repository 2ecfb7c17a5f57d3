"""The lock on a run directory: ``run.lock``, held with ``flock`` while a trainer runs or an evaluation
(``ebmlab eval``, ``Run.evaluate``) rewrites the run's metrics and plots, holding the owner's pid and host. A
second trainer or evaluation is refused with one sentence; the lock of a killed trainer (kill -9, power
loss) is released by the kernel, and a lock file naming a dead pid on this host is taken over. On file
systems without ``flock`` (some network mounts) the pid check alone is the lock. Split out of
``training/run.py`` (which re-exports ``RunLock`` and ``LOCK_NAME``).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path

from ebmlab.errors import RunError

LOCK_NAME = "run.lock"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError, ValueError):
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


def _describe(info: dict) -> str:
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}" if info else "another process"


class RunLock:
    """An exclusive lock on a run directory (``run.lock``); ``release()`` or garbage collection frees it."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        """Lock ``run_dir`` (``run.lock``); ``RunError`` with one sentence when another process holds it."""
        path = Path(run_dir) / LOCK_NAME
        for _ in range(10):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                lock = cls._try(path, fd, Path(run_dir))
            except BaseException:
                os.close(fd)
                raise
            if lock is not None:
                return lock
            os.close(fd)  # the file was replaced or removed while we locked it: try again
        raise RunError(f"could not lock run directory {str(run_dir)!r}: its {LOCK_NAME} keeps changing; "
                       "is another ebmlab process starting there?")

    @classmethod
    def _try(cls, path: Path, fd: int, run_dir: Path) -> RunLock | None:
        busy = (f"run directory {str(run_dir)!r} is in use by another ebmlab process (training it or evaluating "
                "it)")
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX: the pid check below is the lock
            pass
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunError(f"{busy} ({_describe(_holder(fd))}); wait for it to finish (or train into another "
                               "--out)") from None
            # ENOLCK/EOPNOTSUPP (some network file systems): fall back to the pid check below
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            return None
        info, host = _holder(fd), socket.gethostname()
        pid = info.get("pid")
        if (isinstance(pid, int) and info.get("host") == host and pid != os.getpid() and _alive(pid)):
            raise RunError(f"{busy} ({_describe(info)}); wait for it to finish, or delete "
                           f"{str(path)!r} if no ebmlab process is running there")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": host,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        return cls(path, fd)

    def release(self) -> None:
        """Remove the lock file and free the lock (idempotent)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.release()
