"""What the thread policy (``training/threads.py``) counts: the cores this process may use, and how many other
processes are running on them now, on Linux, macOS and Windows.

The cores are the process's CPU affinity (a Slurm allocation's or ``taskset``'s cpuset; ``os.cpu_count()`` where
the platform has no affinity call), capped by a cgroup CPU quota (a Docker container's CPU limit, a Kubernetes CPU
limit), rounded up. Without those, a job given 4 cores of a 64-core cluster node counted the node's 64 cores and
every other job's processes, and took one thread when the node was full; and a container limited to 2 CPUs let
torch start one thread per host core, which the quota then throttles.

The busy count on Linux is the processes in state R in ``/proc`` whose current CPU (``stat`` field 39) is one of
ours, this process excluded (idle OpenMP workers of this process may spin); elsewhere the 1-minute load average
(macOS), or Windows' busy fraction of all cores over 50 ms (``GetSystemTimes``) less this process's own share.
Where none can be read, nothing is counted as busy (torch's own default then stands).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

__all__ = ["busy_elsewhere", "cgroup_cpu_limit", "usable_cores"]

_ROOT = "/"  # where /proc and /sys are (tests point it at a made-up tree)
_STAT_STATE, _STAT_CPU = 0, 36  # indices into /proc/PID/stat after the ")" closing the command name (fields 3, 39)


def usable_cores(root: str | None = None) -> int:
    """How many cores this process may run on: its affinity, capped by its cgroup's CPU quota (rounded up), at
    least 1. ``root`` prefixes ``/proc`` and ``/sys`` (tests)."""
    cores = len(_affinity()) or os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    return max(1, min(cores, math.ceil(limit))) if limit is not None else cores


def _affinity() -> set[int]:
    """The CPUs this process may run on; empty where the platform cannot say (macOS, Windows)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set()


def cgroup_cpu_limit(root: str | None = None) -> float | None:
    """CPUs' worth of time this process's cgroup may use (quota / period; the smallest along its path, cgroup v2
    ``cpu.max`` or v1 ``cpu.cfs_quota_us``), or None when there is no limit or no cgroup."""
    limits = [q for d in _cgroup_dirs(Path(root or _ROOT)) if (q := _quota(d)) is not None]
    return min(limits) if limits else None


def _cgroup_dirs(root: Path) -> list[Path]:
    """The cgroup directories whose CPU quota applies to this process: its own and each one above it, for v2
    (``0::PATH``) and v1's cpu controller (``N:cpu,cpuacct:PATH``)."""
    try:
        lines = (root / "proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    dirs = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2; under a hybrid layout (v1 controllers beside it) mounted at .../unified
            unified = root / "sys/fs/cgroup/unified"
            base = unified if unified.is_dir() else root / "sys/fs/cgroup"
        elif "cpu" in controllers.split(","):
            base = next((b for b in (root / "sys/fs/cgroup" / controllers, root / "sys/fs/cgroup/cpu")
                         if b.is_dir()), None)
            if base is None:
                continue
        else:
            continue
        parts = [p for p in path.strip().split("/") if p and p != ".."]
        dirs += [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]  # own first, then each parent
    return dirs


def _quota(d: Path) -> float | None:
    """``d``'s CPU quota in CPUs, or None when it has none (or the files are not there)."""
    try:
        if (d / "cpu.max").is_file():  # v2: "QUOTA PERIOD" or "max PERIOD"
            quota, period = (d / "cpu.max").read_text(encoding="utf-8").split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = int((d / "cpu.cfs_quota_us").read_text(encoding="utf-8"))  # v1: -1 means none
        period = int((d / "cpu.cfs_period_us").read_text(encoding="utf-8"))
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def busy_elsewhere(root: str | None = None) -> float:
    """How many other processes are running now on the cores this process may use (module docstring): on Linux
    the median of three reads of ``/proc`` 10 ms apart (unlike the load average it does not lag by a minute)."""
    proc = Path(root or _ROOT) / "proc"
    if not proc.is_dir():
        return _busy_without_proc()
    mine = _affinity()
    counts = []
    for _ in range(3):
        counts.append(_running_processes(proc, os.getpid(), mine))
        time.sleep(0.01)
    return float(sorted(counts)[1])


def _running_processes(proc: Path, me: int, cpus: set[int]) -> int:
    """Processes in state R on one of ``cpus`` (any CPU when empty), ``me`` excluded."""
    n = 0
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(proc / entry / "stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the process ended meanwhile
            continue
        if fields[_STAT_STATE] == "R" and (not cpus or len(fields) <= _STAT_CPU or int(fields[_STAT_CPU]) in cpus):
            n += 1
    return n


def _busy_without_proc() -> float:
    if hasattr(os, "getloadavg"):  # macOS, the BSDs
        return os.getloadavg()[0]
    if os.name == "nt":
        return busy_windows()
    return 0.0


def busy_windows(kernel32=None, seconds: float = 0.05, clock=time.perf_counter, own=time.process_time) -> float:
    """Cores' worth of other work on Windows: the busy fraction of all cores over ``seconds`` (``GetSystemTimes``:
    its kernel time includes the idle time) times the core count, less this process's CPU time in the interval;
    0.0 when it cannot be read. ``kernel32``, ``clock`` and ``own`` stand in for the system's in tests."""
    try:
        import ctypes
        kernel32 = kernel32 if kernel32 is not None else ctypes.WinDLL("kernel32")
        first, t0, c0 = _system_times(kernel32, ctypes), clock(), own()
        time.sleep(seconds)
        second, t1, c1 = _system_times(kernel32, ctypes), clock(), own()
    except (ImportError, OSError, AttributeError):
        return 0.0
    idle, kernel, user = (b - a for a, b in zip(first, second))
    if kernel + user <= 0 or t1 <= t0:
        return 0.0
    busy = (os.cpu_count() or 1) * (1 - idle / (kernel + user)) - (c1 - c0) / (t1 - t0)
    return max(0.0, busy)


def _system_times(kernel32, ctypes) -> tuple[int, int, int]:
    """(idle, kernel, user) in 100 ns ticks since boot, summed over all cores; OSError when the call fails."""
    times = [ctypes.c_ulonglong() for _ in range(3)]  # each a FILETIME: two little-endian DWORDs
    if not kernel32.GetSystemTimes(*(ctypes.byref(t) for t in times)):
        raise OSError("GetSystemTimes failed")
    return times[0].value, times[1].value, times[2].value
