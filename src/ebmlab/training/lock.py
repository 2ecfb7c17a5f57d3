"""The lock on a run directory: ``run.lock``, held with ``flock`` (``msvcrt.locking`` on Windows) while a trainer
runs or an evaluation (``ebmlab eval``, ``Run.evaluate``) rewrites the run's metrics and plots, holding the owner's
pid and host. A second trainer or evaluation is refused with one sentence; the lock of a killed trainer (kill -9,
power loss) is released by the system, and a lock file naming a dead pid on this host is taken over. On file
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
_QUERY_LIMITED_INFORMATION, _ACCESS_DENIED, _STILL_ACTIVE = 0x1000, 5, 259  # Windows' constants (_alive_windows)
_WINDOWS_REGION = 1 << 20  # the byte msvcrt.locking locks (_lock)
# the errnos of a lock another process holds: flock's EWOULDBLOCK / EAGAIN, msvcrt's EACCES / EDEADLOCK
_HELD = {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)}


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    if os.name == "nt":  # there os.kill(pid, 0) would not ask: it ends the process (TerminateProcess)
        return _alive_windows(pid)
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


def _alive_windows(pid: int, kernel32=None, last_error=None) -> bool:
    """Whether process ``pid`` is still running, asked of Windows (OpenProcess, GetExitCodeProcess); True when it
    cannot tell, so that a lock is never taken from a live process (the refusal says how to free it).
    ``kernel32`` and ``last_error`` stand in for the system's in tests."""
    try:
        import ctypes
        if kernel32 is None:
            kernel32, last_error = _kernel32(ctypes), ctypes.get_last_error
        handle = kernel32.OpenProcess(_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            return last_error() == _ACCESS_DENIED  # it exists, run by someone else
        try:
            code = ctypes.c_ulong()
            return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == _STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    except (ImportError, OSError, AttributeError):
        return True


def _kernel32(ctypes):
    """Windows' kernel32 with the three calls' C types (a HANDLE is pointer-sized, not ctypes' default int)."""
    k = ctypes.WinDLL("kernel32", use_last_error=True)
    k.OpenProcess.restype, k.OpenProcess.argtypes = ctypes.c_void_p, (ctypes.c_ulong, ctypes.c_int, ctypes.c_ulong)
    k.GetExitCodeProcess.argtypes = (ctypes.c_void_p, ctypes.POINTER(ctypes.c_ulong))
    k.CloseHandle.argtypes = (ctypes.c_void_p,)
    return k


def _lock(fd: int) -> None:
    """An exclusive lock on ``fd`` that the system frees when the process ends: ``flock``, or on Windows a one-byte
    ``msvcrt.locking`` region far past the lock file's text (so that ``_holder`` can still read it); OSError with
    an errno in ``_HELD`` when another process holds it; nothing where neither exists (the pid check is the lock)."""
    try:
        import fcntl
    except ImportError:
        try:
            import msvcrt
        except ImportError:
            return
        os.lseek(fd, _WINDOWS_REGION, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    for wait in (0.01, 0.02, 0.04, 0.08, None):  # (a reader's momentary probe, ``_free``, is not a holder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in _HELD or wait is None:
                raise
            time.sleep(wait)


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


def _pid(info: dict) -> int | None:
    """The pid ``info`` names, or None (JSON's ``true`` is a Python int, not a pid)."""
    pid = info.get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


def _describe(info: dict) -> str:
    """The holder as "pid N on host H", with ", <doing>" where its lock file says (older versions' files do not)."""
    if not info:
        return "another process"
    doing = f", {info['doing']}" if isinstance(info.get("doing"), str) else ""
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}{doing}"


def holder(run_dir: Path, training: bool = False) -> str | None:
    """Who holds ``run_dir``'s lock ("pid N on host H, <doing>"; with ``training``: only a holder training it, or one
    whose lock file is too old to say), or None: read from ``run.lock``, whose lock is only probed
    (``_free``: a shared lock dropped at once, which a starting trainer's ``_lock`` waits out). A file naming a pid on this host that
    has ended is none, and so is a file whose lock nobody holds (a killed trainer's, whose pid may live on reused:
    even this process's own); where the lock cannot be probed (no ``flock``), a live pid or another host counts."""
    try:
        info = json.loads((Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    pid = _pid(info) if isinstance(info, dict) else None
    if pid is None or (info.get("host") == socket.gethostname() and not _alive(pid)):
        return None
    if training and info.get("doing", "training") != "training":
        return None
    if _free(Path(run_dir) / LOCK_NAME):
        return None  # its process ended (killed, a rebooted node): its file lock went with it
    return _describe(info)


def _free(path: Path) -> bool:
    """Whether nobody holds ``path``'s file lock: a shared lock taken and dropped at once (``RunLock._try`` tries
    again for a moment, so a trainer starting just then is not refused); False without ``flock`` (cannot tell)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True  # removed meanwhile: released
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # (closing drops the shared lock)


class RunLock:
    """An exclusive lock on a run directory (``run.lock``); ``release()`` or garbage collection frees it."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, run_dir: Path, busy: str | None = None, instead: str | None = "train into another --out",
                doing: str = "training") -> RunLock:
        """Lock ``run_dir`` (``run.lock``); ``RunError`` with one sentence when another process holds it: ``busy``
        says what is in use (a run directory, by default), ``instead`` what else the user can do (None: nothing but
        wait), and the holder's lock file what it is doing (``doing``, written here for the next process's message:
        "training", "evaluating", ...)."""
        path = Path(run_dir) / LOCK_NAME
        busy = busy or f"run directory {str(run_dir)!r} is in use by another ebmlab process"
        for _ in range(10):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                lock = cls._try(path, fd, busy, instead, doing)
            except BaseException:
                os.close(fd)
                raise
            if lock is not None:
                return lock
            os.close(fd)  # the file was replaced or removed while we locked it: try again
        raise RunError(f"could not lock run directory {str(run_dir)!r}: its {LOCK_NAME} keeps changing; "
                       "is another ebmlab process starting there?")

    @classmethod
    def _try(cls, path: Path, fd: int, busy: str, instead: str | None, doing: str) -> RunLock | None:
        flocked = True
        try:
            _lock(fd)
        except OSError as exc:
            if exc.errno in _HELD:
                raise RunError(f"{busy} ({_describe(_holder(fd))}); wait for it to finish"
                               + (f" (or {instead})" if instead else "")) from None
            flocked = False  # ENOLCK/EOPNOTSUPP (some network file systems): fall back to the pid check below
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            return None
        info, host = _holder(fd), socket.gethostname()
        pid = _pid(info)
        if (pid is not None and info.get("host") == host and pid != os.getpid() and _alive(pid)):
            raise RunError(f"{busy} ({_describe(info)}); wait for it to finish, or delete "
                           f"{str(path)!r} if no ebmlab process is running there")
        if not flocked and pid is not None and info.get("host") != host:  # no lock to prove it ended
            raise RunError(f"{busy} ({_describe(info)}, whose liveness this file system cannot show: it has no "
                           f"file locks); wait for it to finish, or delete {str(path)!r} if no ebmlab process is "
                           "running there")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": host, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                 "doing": doing}).encode())
        return cls(path, fd)

    def release(self) -> None:
        """Remove the lock file and free the lock (idempotent)."""
        if self.fd is None:
            return
        ours = False
        with contextlib.suppress(OSError):
            ours = os.path.samestat(os.fstat(self.fd), os.stat(self.path))
        if os.name == "nt":  # Windows deletes no open file: close first (a newcomer may then lock the file we delete)
            self._close()
        if ours:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self._close()

    def _close(self) -> None:
        if self.fd is not None:
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
