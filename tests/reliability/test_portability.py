"""Runs on Windows, macOS and in containers or cluster allocations: each platform's documented rule, simulated here
on Linux (no other machine is at hand), against the code that must honour it.

- Windows' ``os.fsync`` (``_commit``, ``FlushFileBuffers``) refuses a read-only handle with EBADF: every atomic
  write of a run (``files.atomic_write``) must sync through a writable one.
- Windows' ``os.kill(pid, 0)`` does not ask whether ``pid`` lives: it ends it (TerminateProcess). The run lock
  must never call it there.
- Windows has no ``/proc`` and no ``os.getloadavg``: the thread policy must still choose a count.
- A Slurm or ``taskset`` allocation is a CPU affinity, a container's ``--cpus`` a cgroup quota: the thread policy
  counts those cores and only the processes running on them (``training/cores.py``).
"""
from __future__ import annotations

import errno
import fcntl
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

import ebmlab
from ebmlab import files
from ebmlab.training import cores, lock, threads


# ----- Windows' fsync ------------------------------------------------------------------------------------
def _windows_fsync(calls):
    """os.fsync as Windows has it: EBADF on a handle opened read-only."""
    def fsync(fd):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")
        calls.append(fd)
    return fsync


def test_an_atomic_write_syncs_through_a_handle_windows_accepts(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(files.os, "fsync", _windows_fsync(calls))
    files.write_text_atomic(tmp_path / "a.txt", "one")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "one" and len(calls) == 1
    assert not (tmp_path / "a.txt.tmp").exists()


def test_a_run_writes_all_its_files_under_windows_fsync_rule(tmp_path, monkeypatch):
    """Checkpoints, their sidecars, config.yaml, run.json and metrics.json all go through atomic writes."""
    calls = []
    monkeypatch.setattr(files.os, "fsync", _windows_fsync(calls))
    run = ebmlab.train("hybrid", "8gaussians", out=tmp_path / "run",
                       train={"steps": 2, "threads": 1, "progress": False}, eval={"plots": False})
    assert run.metrics and calls
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.suffix == ".safetensors")


# ----- Windows' os.kill -------------------------------------------------------------------------------------
class _OsOnWindows:
    """``os`` as the lock module sees it on Windows: ``name`` is "nt", and ``kill`` would end the process."""
    name = "nt"

    def __getattr__(self, key):
        return getattr(os, key)

    @staticmethod
    def kill(pid, sig):
        raise AssertionError(f"os.kill({pid}, {sig}) on Windows ends process {pid}")


def test_the_lock_never_calls_os_kill_on_windows_and_refuses_a_live_holder(tmp_path, monkeypatch):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / lock.LOCK_NAME).write_text(
            f'{{"pid": {holder.pid}, "host": "{lock.socket.gethostname()}"}}', encoding="utf-8")
        monkeypatch.setattr(lock, "os", _OsOnWindows())
        asked = []
        monkeypatch.setattr(lock, "_alive_windows", lambda pid: asked.append(pid) or True)
        with pytest.raises(ebmlab.errors.RunError, match="in use by another ebmlab process"):
            lock.RunLock.acquire(tmp_path)
        assert asked == [holder.pid] and holder.poll() is None  # asked Windows, and the holder still runs
    finally:
        holder.kill()
        holder.wait()


class _Kernel32:
    """OpenProcess / GetExitCodeProcess / CloseHandle with the answers Windows gives."""

    def __init__(self, handle, exit_code=259, ok=True):
        self.handle, self.exit_code, self.ok, self.closed = handle, exit_code, ok, []

    def OpenProcess(self, access, inherit, pid):  # noqa: N802 (Windows' name)
        return self.handle

    def GetExitCodeProcess(self, handle, ref):  # noqa: N802
        ref._obj.value = self.exit_code
        return self.ok

    def CloseHandle(self, handle):  # noqa: N802
        self.closed.append(handle)


@pytest.mark.parametrize("handle, exit_code, error, alive", [
    (7, 259, 0, True),     # STILL_ACTIVE
    (7, 0, 0, False),      # ended, with status 0
    (0, 0, 87, False),     # ERROR_INVALID_PARAMETER: no such process
    (0, 0, 5, True),       # ERROR_ACCESS_DENIED: it exists, someone else's
])
def test_windows_liveness_reads_the_exit_code(handle, exit_code, error, alive):
    k = _Kernel32(handle, exit_code)
    assert lock._alive_windows(1234, kernel32=k, last_error=lambda: error) is alive
    assert k.closed == ([handle] if handle else [])


def test_windows_liveness_says_alive_when_it_cannot_ask():
    assert lock._alive_windows(1234) is True  # here ctypes has no WinDLL: never take a lock it cannot check


# ----- the thread policy without /proc or the load average (Windows) ----------------------------------------
class _OsWithoutLoadavg:
    name = "nt"

    def __getattr__(self, key):
        if key == "getloadavg":
            raise AttributeError(key)
        return getattr(os, key)


def test_the_policy_chooses_a_count_without_proc_or_load_average(tmp_path, monkeypatch):
    monkeypatch.setattr(cores, "os", _OsWithoutLoadavg())
    monkeypatch.setattr(cores, "_ROOT", str(tmp_path))  # no /proc here, and no kernel32 to ask
    assert cores.busy_elsewhere() == 0.0
    assert threads.choose_threads(None, "vector", torch.device("cpu")) >= 1


class _SystemTimes:
    """GetSystemTimes giving (idle, kernel, user) ticks; kernel includes idle, as Windows counts it."""

    def __init__(self, *samples):
        self.samples = list(samples)

    def GetSystemTimes(self, *refs):  # noqa: N802
        for ref, v in zip(refs, self.samples.pop(0)):
            ref._obj.value = v
        return True


def test_windows_busy_cores_from_system_times(monkeypatch):
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 4)
    k = _SystemTimes((1000, 2000, 1000), (1500, 3000, 2000))  # 500 idle of 2000: 3 of 4 cores busy
    clock, own = iter([0.0, 0.1]), iter([0.0, 0.05])           # this process: half a core of it
    busy = cores.busy_windows(kernel32=k, seconds=0, clock=lambda: next(clock), own=lambda: next(own))
    assert busy == pytest.approx(2.5)


# ----- the cores this process may use: affinity and cgroup quotas --------------------------------------------
def _tree(root, files_):
    for rel, text in files_.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def test_a_cgroup_v2_quota_caps_the_cores_smallest_along_the_path(tmp_path, monkeypatch):
    _tree(tmp_path, {"proc/self/cgroup": "0::/job/step\n",
                     "sys/fs/cgroup/job/step/cpu.max": "max 100000\n",
                     "sys/fs/cgroup/job/cpu.max": "250000 100000\n",
                     "sys/fs/cgroup/cpu.max": "max 100000\n"})
    monkeypatch.setattr(cores, "_affinity", lambda: set(range(8)))
    assert cores.cgroup_cpu_limit(str(tmp_path)) == pytest.approx(2.5)
    assert cores.usable_cores(str(tmp_path)) == 3


@pytest.mark.parametrize("quota, expected", [("200000", 2.0), ("-1", None)])
def test_a_cgroup_v1_quota(tmp_path, quota, expected):
    _tree(tmp_path, {"proc/self/cgroup": "5:cpuacct,cpu:/docker/abc\n3:memory:/docker/abc\n",
                     "sys/fs/cgroup/cpuacct,cpu/docker/abc/cpu.cfs_quota_us": quota + "\n",
                     "sys/fs/cgroup/cpuacct,cpu/docker/abc/cpu.cfs_period_us": "100000\n"})
    assert cores.cgroup_cpu_limit(str(tmp_path)) == expected


def test_no_cgroup_no_quota(tmp_path):
    assert cores.cgroup_cpu_limit(str(tmp_path)) is None


def _stat(pid, name, state, cpu):
    return f"{pid} ({name}) {state} " + " ".join(["0"] * 35) + f" {cpu} 0 0\n"


def test_only_processes_running_on_this_process_cores_count_as_busy(tmp_path, monkeypatch):
    """A job given cores 0-3 of a full node: the other jobs run on other cores and take none of its threads."""
    me = os.getpid()
    procs = {11: ("a", "R", 0), 12: ("b) c", "R", 2), 13: ("d", "S", 1), 14: ("e", "R", 5), 15: ("f", "R", 63),
             me: ("me", "R", 1)}
    _tree(tmp_path, {f"proc/{pid}/stat": _stat(pid, *v) for pid, v in procs.items()})
    monkeypatch.setattr(cores, "_affinity", lambda: {0, 1, 2, 3})
    assert cores.busy_elsewhere(root=str(tmp_path)) == 2.0  # 11 and 12; 13 sleeps, 14 and 15 run elsewhere
    monkeypatch.setattr(cores, "_affinity", set)  # a platform that cannot say: every running process counts
    assert cores.busy_elsewhere(root=str(tmp_path)) == 4.0


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_a_process_pinned_to_one_core_takes_one_thread():
    code = textwrap.dedent("""
        import os
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        from ebmlab.training import cores, threads
        print(cores.usable_cores(), threads.idle_threads(8, load=0.0))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
    assert out == ["1", "1"]


class _Msvcrt:
    """msvcrt.locking as Windows has it: a byte region of a file locked by one handle; EACCES for the next."""
    LK_NBLCK = 2
    held: dict = {}

    @classmethod
    def locking(cls, fd, mode, n):
        key = (os.fstat(fd).st_ino, os.lseek(fd, 0, os.SEEK_CUR))
        if cls.held.get(key, fd) != fd:
            raise OSError(errno.EACCES, "Permission denied")
        cls.held[key] = fd


def test_on_windows_the_lock_is_msvcrt_locking_and_release_closes_before_deleting(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl raises ImportError, as on Windows
    monkeypatch.setitem(sys.modules, "msvcrt", _Msvcrt)
    monkeypatch.setattr(_Msvcrt, "held", {})
    closed = []

    class _OsClosing(_OsOnWindows):
        @staticmethod
        def close(fd):
            closed.append(fd)
            os.close(fd)

        @staticmethod
        def unlink(path):  # Windows deletes no file a handle still has open
            if held.fd is not None and held.fd not in closed:
                raise PermissionError(errno.EACCES, "The process cannot access the file")
            os.unlink(path)

    monkeypatch.setattr(lock, "os", _OsClosing())
    held = lock.RunLock.acquire(tmp_path)
    assert _Msvcrt.held and (tmp_path / lock.LOCK_NAME).read_text(encoding="utf-8").startswith("{")
    with pytest.raises(ebmlab.errors.RunError, match="in use by another ebmlab process"):
        lock.RunLock.acquire(tmp_path)  # same pid in the file: only the region lock can refuse it
    held.release()
    assert not (tmp_path / lock.LOCK_NAME).exists()


# ----- files a loaded checkpoint keeps open (Windows cannot replace or delete a mapped file) ------------------
@pytest.mark.skipif(not os.path.isfile("/proc/self/maps"), reason="reads /proc/self/maps")
def test_a_loaded_checkpoint_holds_no_mapping_of_its_file(tmp_path):
    from ebmlab.training import checkpoint as ckpt
    from ebmlab.training.dist_checkpoint import read_rank_file
    path = ckpt.save_checkpoint(tmp_path, 3, {"w": torch.randn(256)}, {"step": 3})
    tensors, meta = ckpt.load_checkpoint(path)
    rank, info = read_rank_file(path)
    with open("/proc/self/maps", encoding="utf-8") as fh:
        maps = fh.read()
    assert os.path.realpath(path) not in maps and meta["step"] == 3 and torch.equal(tensors["w"], rank["w"])
    path.unlink()  # what pruning and the validation best's replacement do, while the tensors are still in use
    assert tensors["w"].sum().isfinite()


# ----- Windows' path order, Apple's MPS, case-insensitive disks ---------------------------------------------------
class _PathIgnoringCase(type(pathlib.Path())):
    """A path that compares as Windows' do, ignoring case."""

    def __lt__(self, other):
        return str(self).casefold() < str(other).casefold()


def test_an_image_folder_lists_its_files_in_one_order_on_every_platform(tmp_path):
    from ebmlab.data import images
    for name in ("B.png", "C.png", "a.png"):
        (tmp_path / name).write_bytes(b"")
    files, _, _ = images._list_images(_PathIgnoringCase(tmp_path))
    assert [f.name for f in files] == ["B.png", "C.png", "a.png"]  # the order Linux and macOS sort them in


def test_float64_work_leaves_a_device_without_float64():
    from ebmlab import devices
    assert devices.float64_device(torch.device("mps")) == torch.device("cpu")
    assert devices.float64_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    x = torch.randn(5)
    assert devices.to_float64(x).dtype == torch.float64 and torch.equal(devices.to_float64(x), x.double())


def test_mps_with_several_processes_is_refused_in_a_sentence():
    from ebmlab.training.distributed import rank_device
    with pytest.raises(ebmlab.errors.ConfigError, match="mps runs in one process"):
        rank_device(torch.device("mps"), 2, 0)


def test_a_method_name_differing_only_in_case_is_refused():
    from dataclasses import dataclass

    from ebmlab.objectives import registry

    @dataclass
    class Cfg:
        name: str = "x"
    with pytest.raises(ebmlab.errors.ConfigError, match="only in case"):
        registry.register("Hybrid", Cfg, lambda cfg, data: None)
