"""Round 32: run directories on file systems that misbehave (a read-only mount, a full disk or quota, NFS without
flock, odd path names, a run directory behind a symlink or on another file system, a copy with rsync'ed mtimes).

Failures are simulated in-process (the tests run as root, so chmod would not restrict them): ``Faults`` makes the
writes under one directory raise ``OSError(errno)``; ``fcntl.flock`` is made to raise ENOLCK. One tiny run is
trained once (module fixture) and copied per test (a read-only helper's audit, docs/testing.md "Thirty-second
round"). Tests marked ``# WAS A BUG`` failed on the code as audited (commit ``7d53b0a``) and pass with its fixes; the
others document behaviour that held.
"""
from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import pathlib
import shutil
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.cli import main
from tests.cli_helpers import cli, sets
from ebmlab.errors import RunError
from ebmlab.training import checkpoint as ck
from ebmlab.training.lock import LOCK_NAME, RunLock

TINY = ["train.steps=6", "train.checkpoint_every=2", "model.width=16", "model.depth=1", "eval.n_samples=32",
        "eval.plots=false", "eval.long_run_factor=1", "eval.grid_size=8", "train.progress=false", "method.n_steps=3",
        "method.n_steps_data=2", "train.threads=1", "train.log_every=1"]
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _sets(*extra: str) -> list[str]:
    return sets(TINY, *extra)


_cli = cli


def _one_sentence(code: int, err: str, needle: str | None = None) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("ebmlab: warning")]
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("ebmlab: error:"), err
    if needle is not None:
        assert needle.lower() in err.lower(), (needle, err)
    return lines[0]


def _snapshot(d: Path) -> dict[str, str]:
    """Every file's digest (tb/ left out: TensorBoard's event files are named by time)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(Path(d).rglob("*")) if "tb" not in p.relative_to(d).parts}


def _steps(run: Path) -> list[int]:
    return [int(s) for s, _ in ck.list_checkpoints(run / "checkpoints")]


class Faults:
    """Writes under ``root`` (opening for writing, creating, renaming, deleting, chmod, safetensors' save) raise
    ``OSError(err)``, for the paths ``pred`` accepts (default: all). ``hits``: the paths refused."""

    def __init__(self, monkeypatch, root: Path, err: int = errno.EROFS, pred=None):
        self.root, self.err, self.pred, self.hits = os.path.realpath(root), err, pred or (lambda p: True), []
        orig_open, orig_io_open, orig_os_open = builtins.open, io.open, os.open

        def under(p) -> bool:
            if isinstance(p, int):
                return False
            try:
                p = os.fsdecode(os.fspath(p))
            except TypeError:
                return False
            rp = os.path.realpath(os.path.abspath(p))
            return (rp == self.root or rp.startswith(self.root + os.sep)) and self.pred(rp)

        def fail(p):
            self.hits.append(str(p))
            raise OSError(self.err, os.strerror(self.err), str(p))

        def wrap_open(orig):
            def opener(file, mode="r", *a, **k):
                if any(c in mode for c in "wax+") and under(file):
                    fail(file)
                return orig(file, mode, *a, **k)
            return opener

        def os_open(path, flags, *a, **k):
            if flags & _WRITE_FLAGS and under(path):
                fail(path)
            return orig_os_open(path, flags, *a, **k)

        monkeypatch.setattr(builtins, "open", wrap_open(orig_open))
        monkeypatch.setattr(io, "open", wrap_open(orig_io_open))
        monkeypatch.setattr(os, "open", os_open)
        for name in ("mkdir", "rmdir", "unlink", "remove", "chmod", "truncate"):
            def one(path, *a, _orig=getattr(os, name), **k):
                if under(path):
                    fail(path)
                return _orig(path, *a, **k)
            monkeypatch.setattr(os, name, one)
        for name in ("replace", "rename"):
            def two(src, dst, *a, _orig=getattr(os, name), **k):
                if under(src) or under(dst):
                    fail(dst)
                return _orig(src, dst, *a, **k)
            monkeypatch.setattr(os, name, two)
        save = ck.save_file

        def save_file(tensors, path, *a, **k):
            if under(path):
                fail(path)
            return save(tensors, path, *a, **k)
        monkeypatch.setattr(ck, "save_file", save_file)
        if hasattr(pathlib, "_NormalAccessor"):  # Python 3.10: Path methods call the accessor's os/io functions,
            for name in ("open", "mkdir", "rmdir", "unlink", "chmod", "replace", "rename"):  # bound at its import
                monkeypatch.setattr(pathlib._NormalAccessor, name, staticmethod(getattr(io if name == "open" else os, name)))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A finished tiny toy run (checkpoints at steps 2, 4, 6, metrics.json): each test copies it."""
    root = tmp_path_factory.mktemp("round32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--out", str(root / "base"), *_sets()]) == 0
    assert (root / "base" / "metrics.json").is_file() and _steps(root / "base") == [2, 4, 6]
    return root / "base"


def _copy(base: Path, where: Path) -> Path:
    where.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(base, where, ignore=shutil.ignore_patterns("tb"))
    return where


# ----- 1. a read-only run directory (a colleague's run, a read-only mount) ---------------------------------------
def test_a_read_only_run_samples_to_an_out_elsewhere_and_loads_without_writing(base, tmp_path, monkeypatch, capsys):
    run = _copy(base, tmp_path / "ro" / "run")
    before = _snapshot(run)
    faults = Faults(monkeypatch, run, errno.EROFS)
    code, out, err = _cli(capsys, "sample", run, "--n", 8, "--out", tmp_path / "mine" / "s.npy")
    assert code == 0, err
    assert np.load(tmp_path / "mine" / "s.npy").shape == (8, 10) and (tmp_path / "mine" / "s.png").is_file()
    opened = ebmlab.load(run)
    assert opened.sample(5).shape == (5, 10)
    assert torch.isfinite(opened.log_density(torch.randn(3, 10))).all()
    assert faults.hits == []  # nothing even tried to write in the run
    monkeypatch.undo()
    assert _snapshot(run) == before


def test_a_read_only_run_refuses_eval_sample_in_place_and_resume_in_one_sentence(base, tmp_path, monkeypatch, capsys):
    run = _copy(base, tmp_path / "ro" / "run")
    before = _snapshot(run)
    Faults(monkeypatch, run, errno.EROFS)
    for argv in (("eval", run), ("sample", run, "--n", 8), ("train", "--out", run, "--resume", *_sets("train.steps=8"))):
        code, _, err = _cli(capsys, *argv)
        _one_sentence(code, err, "read-only")
    with pytest.raises(OSError) as caught:  # Python: the OSError itself, naming the path
        ebmlab.load(run).evaluate()
    assert caught.value.errno == errno.EROFS
    monkeypatch.undo()
    assert _snapshot(run) == before and not list(run.rglob("*.tmp")) and not (run / LOCK_NAME).exists()


# WAS A BUG: `ebmlab eval` on a read-only run says "choose a writable --out", but eval has no --out option (it must write into the run: copy it somewhere writable).
def test_eval_on_a_read_only_run_does_not_advise_an_out_option_it_lacks(base, tmp_path, monkeypatch, capsys):
    run = _copy(base, tmp_path / "ro" / "run")
    Faults(monkeypatch, run, errno.EROFS)
    code, _, err = _cli(capsys, "eval", run)
    line = _one_sentence(code, err, "read-only")
    assert "--out" not in line, line


def test_compare_reads_read_only_runs_and_writes_only_its_out(base, tmp_path, monkeypatch, capsys):
    a, b = _copy(base, tmp_path / "ro" / "a"), _copy(base, tmp_path / "ro" / "b")
    before = _snapshot(tmp_path / "ro")
    Faults(monkeypatch, tmp_path / "ro", errno.EROFS)
    code, out, err = _cli(capsys, "compare", a, b, "--out", tmp_path / "my cmp ü")
    assert code == 0, err
    assert (tmp_path / "my cmp ü" / "compare.json").is_file()
    monkeypatch.undo()
    assert _snapshot(tmp_path / "ro") == before


# ----- 2. a full disk or quota ---------------------------------------------------------------------------------
def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one_and_resume_finishes(tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError
    run = tmp_path / "run"
    save = ck.save_file

    def full(tensors, path, *a, **k):  # safetensors' own error text, after part of the file was written
        if "step_00000004" in str(path):
            Path(path).write_bytes(b"\0" * 100)
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                                  '"No space left on device" })')
        return save(tensors, path, *a, **k)
    monkeypatch.setattr(ck, "save_file", full)
    code, _, err = _cli(capsys, "train", "--out", run, *_sets())
    _one_sentence(code, err, "No space left on device")
    assert "--resume" in err
    assert _steps(run) == [2] and not list(run.rglob("*.tmp")) and not (run / LOCK_NAME).exists()
    ck.load_checkpoint(run / "checkpoints" / "step_00000002.safetensors")  # intact
    monkeypatch.undo()
    code, _, err = _cli(capsys, "train", "--out", run, "--resume", *_sets())
    assert code == 0, err
    assert _steps(run) == [2, 4, 6] and (run / "metrics.json").is_file()


def test_a_full_disk_mid_log_row_is_said_and_resume_drops_the_torn_line(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_open, calls = builtins.open, [0]

    class Torn:  # half the row reaches the file, then the disk is full
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, text):
            self.fh.write(text[: len(text) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run / "metrics.jsonl"))

    def opener(file, mode="r", *a, **k):
        if str(file).endswith("metrics.jsonl") and mode == "a":
            calls[0] += 1
            if calls[0] == 4:
                return Torn(real_open(file, mode, *a, **k))
        return real_open(file, mode, *a, **k)
    monkeypatch.setattr(builtins, "open", opener)
    code, _, err = _cli(capsys, "train", "--out", run, *_sets())
    _one_sentence(code, err, "No space left on device")
    monkeypatch.undo()
    code, _, err = _cli(capsys, "train", "--out", run, "--resume", *_sets())
    assert code == 0, err
    assert "dropped its last line" in err
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_a_full_quota_in_the_final_evaluation_keeps_the_checkpoints_and_resume_evaluates(tmp_path, monkeypatch,
                                                                                         capsys):
    run = tmp_path / "run"
    Faults(monkeypatch, run, errno.EDQUOT, pred=lambda p: p.endswith(("metrics.json.tmp", ".png.tmp")))
    code, _, err = _cli(capsys, "train", "--out", run, *_sets("eval.plots=true"))
    _one_sentence(code, err, "quota")
    monkeypatch.undo()
    assert _steps(run) == [2, 4, 6] and not (run / "metrics.json").exists() and not list(run.rglob("*.tmp"))
    code, _, err = _cli(capsys, "train", "--out", run, "--resume", *_sets("eval.plots=true"))
    assert code == 0, err
    assert (run / "metrics.json").is_file() and (run / "plots" / "density.png").is_file()


def test_a_full_disk_during_eval_keeps_the_previous_metrics(base, tmp_path, monkeypatch, capsys):
    run = _copy(base, tmp_path / "run")
    before = (run / "metrics.json").read_bytes()
    Faults(monkeypatch, run, errno.ENOSPC, pred=lambda p: p.endswith("metrics.json.tmp"))
    code, _, err = _cli(capsys, "eval", run)
    _one_sentence(code, err, "No space left on device")
    monkeypatch.undo()
    assert (run / "metrics.json").read_bytes() == before and not list(run.rglob("*.tmp"))
    assert not (run / LOCK_NAME).exists()


# WAS A BUG: an error sentence from an atomic write names the temp file ('.../metrics.json.tmp', already deleted) instead of the file being written (metrics.json).
def test_a_full_disk_sentence_names_the_file_not_its_temp_file(base, tmp_path, monkeypatch, capsys):
    run = _copy(base, tmp_path / "run")
    Faults(monkeypatch, run, errno.ENOSPC, pred=lambda p: p.endswith("metrics.json.tmp"))
    code, _, err = _cli(capsys, "eval", run)
    line = _one_sentence(code, err, "metrics.json")
    assert ".tmp" not in line, line


def test_a_full_disk_never_replaces_a_users_sample_file(base, tmp_path, monkeypatch, capsys):
    run = _copy(base, tmp_path / "run")
    mine = tmp_path / "mine"
    mine.mkdir()
    np.save(mine / "s.npy", np.arange(3.0))
    (mine / "s.png").write_bytes(b"my figure")
    Faults(monkeypatch, mine, errno.ENOSPC, pred=lambda p: p.endswith(".tmp"))
    code, _, err = _cli(capsys, "sample", run, "--n", 5, "--out", mine / "s.npy", "--overwrite")
    _one_sentence(code, err, "No space left on device")
    monkeypatch.undo()
    assert np.load(mine / "s.npy").tolist() == [0.0, 1.0, 2.0] and (mine / "s.png").read_bytes() == b"my figure"
    assert sorted(p.name for p in mine.iterdir()) == ["s.npy", "s.png"]


# WAS A BUG: the validation best is rewritten in place tensor file first, so a full disk at best.json leaves the new weights beside the old sidecar (same size: accepted) and load/eval/resume use weights of another step than the one recorded.
def test_a_failed_best_sidecar_write_never_pairs_new_weights_with_the_old_sidecar(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    ck.save_checkpoint(d, 2, {"w": torch.zeros(4)}, {"config_hash": "x"}, name=ck.BEST)
    Faults(monkeypatch, d, errno.ENOSPC, pred=lambda p: p.endswith("best.json.tmp"))
    with pytest.raises(OSError):
        ck.save_checkpoint(d, 8, {"w": torch.ones(4)}, {"config_hash": "x"}, name=ck.BEST)
    monkeypatch.undo()
    try:
        tensors, meta = ck.load_checkpoint(ck.best_path(d))
    except ck.CheckpointError:
        return  # refusing the torn pair is right too
    assert (meta["step"], tensors["w"].tolist()) in ((2, [0.0] * 4), (8, [1.0] * 4)), (meta["step"], tensors["w"])


def test_a_full_disk_at_a_new_runs_run_json_leaves_a_directory_the_rerun_reuses(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    Faults(monkeypatch, run, errno.ENOSPC, pred=lambda p: p.endswith("run.json.tmp"))
    code, _, err = _cli(capsys, "train", "--out", run, *_sets("train.steps=2"))
    _one_sentence(code, err, "No space left on device")
    monkeypatch.undo()
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
    code, _, err = _cli(capsys, "train", "--out", run, *_sets("train.steps=2"))
    assert code == 0, err


# ----- 3. no flock (some NFS mounts) ----------------------------------------------------------------------------
@pytest.mark.parametrize("err", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_without_flock_training_resume_and_eval_run_on_the_pid_check(tmp_path, monkeypatch, capsys, err):
    import fcntl

    def no_flock(fd, op):
        raise OSError(err, os.strerror(err))
    monkeypatch.setattr(fcntl, "flock", no_flock)
    run = tmp_path / "run"
    code, _, e = _cli(capsys, "train", "--out", run, *_sets("train.steps=2", "train.log_every=10"))
    assert code == 0, e
    code, _, e = _cli(capsys, "train", "--out", run, "--resume", *_sets("train.steps=4", "train.log_every=10"))
    assert code == 0, e
    assert _steps(run) == [2, 4] and not (run / LOCK_NAME).exists()
    (run / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))  # a live trainer
    with pytest.raises(RunError, match="in use"):
        RunLock.acquire(run)


# WAS A BUG: without flock (NFS) a run.lock naming another host's trainer is taken over at once, so two jobs on two cluster nodes train into one run directory; where liveness cannot be checked the lock should be refused (the sentence says to delete run.lock), as Windows' _alive does.
def test_without_flock_a_lock_held_on_another_host_is_not_taken_over(tmp_path, monkeypatch):
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, "flock", no_flock)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": socket.gethostname() + "-node17",
                                                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    with pytest.raises(RunError, match=LOCK_NAME):
        RunLock.acquire(tmp_path).release()


# ----- 4. path names ----------------------------------------------------------------------------------------------
def test_spaces_unicode_and_a_255_byte_component_train_resume_sample_eval(tmp_path, capsys):
    run = tmp_path / "my runs ü 日本" / ("é" * 127 + "x")  # 255 bytes in UTF-8
    assert len(run.name.encode()) == 255
    code, _, err = _cli(capsys, "train", "--out", run, *_sets("train.steps=2", "train.log_every=10"))
    assert code == 0, err
    code, _, err = _cli(capsys, "train", "--out", run, "--resume", *_sets("train.steps=4", "train.log_every=10"))
    assert code == 0, err
    assert _cli(capsys, "sample", run, "--n", 5)[0] == 0
    assert _cli(capsys, "eval", run)[0] == 0
    assert json.loads((run / "metrics.json").read_text())["checkpoint_step"] == 4


def test_a_relative_out_reloads_from_another_working_directory(base, tmp_path, monkeypatch, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    np.save(tmp_path / "a" / "rows.npy", np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32))
    code, _, err = _cli(capsys, "train", "--out", "runs/r", "--data", "rows.npy",
                        *_sets("train.steps=2", "train.select_every=null", "train.log_every=10"))
    assert code == 0, err
    assert Path(json.loads((tmp_path / "a/runs/r/run.json").read_text())["data"]["path"]).is_absolute()
    monkeypatch.chdir(tmp_path / "b")
    assert _cli(capsys, "eval", "../a/runs/r")[0] == 0
    assert ebmlab.load(tmp_path / "a/runs/r").sample(3).shape == (3, 2)


def test_a_symlinked_out_on_another_file_system_trains_resumes_and_overwrites(tmp_path, capsys):
    shm = Path("/dev/shm")
    target = Path(shm / f"ebmlab_round32_{os.getpid()}") if shm.is_dir() and os.access(shm, os.W_OK) else \
        tmp_path / "target"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    try:
        link = tmp_path / "link"
        link.symlink_to(target)
        sets = _sets("train.steps=2", "train.log_every=10")
        assert _cli(capsys, "train", "--out", link, *sets)[0] == 0
        assert _cli(capsys, "train", "--out", link, "--resume", *_sets("train.steps=4", "train.log_every=10"))[0] == 0
        assert _cli(capsys, "train", "--out", link, "--overwrite", *sets)[0] == 0
        assert link.is_symlink() and _steps(target) == [2] and not list(target.rglob("*.tmp"))
    finally:
        shutil.rmtree(target, ignore_errors=True)


# WAS A BUG: `ebmlab train --out=~/runs/x` (the shell leaves ~ after "=") and ebmlab.train(out="~/...") create a directory literally named "~" in the working directory, while --data, --config and --ood expand ~.
def test_a_tilde_out_is_the_home_directory_not_a_folder_named_tilde(tmp_path, monkeypatch, capsys):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    code, _, err = _cli(capsys, "train", "--out=~/r", *_sets("train.steps=2", "train.log_every=10"))
    assert code == 0, err
    assert not (cwd / "~").exists() and (home / "r" / "config.yaml").is_file()


# WAS A BUG: ebmlab.load("~/runs/x") does not expand ~ (RunNotFound), unlike every data and config path.
def test_load_expands_a_tilde(base, tmp_path, monkeypatch):
    home = tmp_path / "home"
    _copy(base, home / "r")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert ebmlab.load("~/r").sample(2).shape == (2, 10)


# WAS A BUG: atomic_write's temp name is the file's name plus ".tmp", so a legal 252-255-byte `sample --out` name fails with ENAMETOOLONG after the whole draw.
def test_sample_out_accepts_a_255_byte_file_name(base, tmp_path, capsys):
    run = _copy(base, tmp_path / "run")
    out = tmp_path / ("s" * 251 + ".npy")
    code, _, err = _cli(capsys, "sample", run, "--n", 5, "--out", out)
    assert code == 0, err
    assert np.load(out).shape == (5, 10)


# WAS A BUG: a dangling symlink given as --out is refused as "a file, not a directory", which it is not (it is a link to a missing directory).
def test_a_dangling_symlink_out_is_named_as_such(tmp_path, capsys):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    code, _, err = _cli(capsys, "train", "--out", tmp_path / "dangling", *_sets("train.steps=2"))
    line = _one_sentence(code, err)
    assert "is a file" not in line, line
    assert not (tmp_path / "nowhere").exists()


# ----- 5. copies: rsync'ed mtimes, no run.lock ----------------------------------------------------------------------
def test_a_copy_with_reset_mtimes_and_a_foreign_lock_resumes_and_evaluates(base, tmp_path, capsys):
    run = _copy(base, tmp_path / "copy")
    (run / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "node-elsewhere", "since": "2020-01-01"}))
    for p in run.rglob("*"):
        os.utime(p, (0, 0))  # rsync without -t / a copy tool that reset times
    code, _, err = _cli(capsys, "train", "--out", run, "--resume", *_sets("train.steps=8", "train.log_every=10"))
    assert code == 0, err
    assert _steps(run) == [2, 4, 6, 8] and not (run / LOCK_NAME).exists()
    assert _cli(capsys, "eval", run)[0] == 0


# ----- added with the fixes: every path a user types or passes expands ~ ------------------------------------------
def test_the_python_api_and_every_command_expand_a_tilde(base, tmp_path, monkeypatch, capsys):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    _copy(base, home / "a")
    _copy(base, home / "b")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ebmlab.train("hybrid", np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32), out="~/c",
                     overrides=[*TINY, "train.steps=2", "train.select_every=null"], evaluate=False)
        ebmlab.resume("~/c", train={"steps": 4}, evaluate=False)
    assert (home / "c" / "checkpoints" / "step_00000004.safetensors").is_file()
    assert ebmlab.compare(["~/a", "~/b"], out="~/cmp").values
    assert (home / "cmp" / "compare.json").is_file()
    for argv in (["sample", "~/a", "--n", 3, "--out=~/s.npy"], ["eval", "~/a", "--checkpoint=~/a/checkpoints/"
                                                                  "step_00000004.safetensors"],
                 ["compare", "~/a", "~/b", "--out=~/cmp2"]):
        code, _, err = _cli(capsys, *argv)
        assert code == 0, (argv, err)
    assert (home / "s.npy").is_file() and (home / "cmp2" / "compare.json").is_file()
    assert not (cwd / "~").exists()


def test_a_set_of_files_written_together_is_all_old_or_all_new(tmp_path):
    from ebmlab.files import atomic_write_all, temp_path
    a, b = tmp_path / "a.bin", tmp_path / "b.json"
    a.write_bytes(b"old a")
    b.write_bytes(b"old b")

    def full(p):
        p.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(p))
    with pytest.raises(OSError) as caught:
        atomic_write_all([(a, lambda p: p.write_bytes(b"new a")), (b, full)])
    assert caught.value.filename == str(b)  # the file being written, not its temp file
    assert a.read_bytes() == b"old a" and b.read_bytes() == b"old b" and sorted(tmp_path.iterdir()) == [a, b]
    long = tmp_path / ("x" * 255)
    assert len(temp_path(long).name.encode()) <= 255 and temp_path(long).name.endswith(".tmp")
    name = temp_path(tmp_path / "metrics.json").name  # what a run's clean-up recognises: .<8 hex>.metrics.json.tmp
    assert name.startswith(".") and name.endswith(".metrics.json.tmp") and len(name) == len("metrics.json.tmp") + 10


def test_sample_finds_a_read_only_run_before_it_draws(base, tmp_path, monkeypatch, capsys):
    # was "seen and left" in the audit: the whole draw ran before the write failed
    import ebmlab.training.drawing as drawing
    run = _copy(base, tmp_path / "ro" / "run")
    drawn = []
    real = drawing.draw
    monkeypatch.setattr(drawing, "draw", lambda *a, **k: drawn.append(1) or real(*a, **k))
    Faults(monkeypatch, run, errno.EROFS)
    code, _, err = _cli(capsys, "sample", run, "--n", 8)
    line = _one_sentence(code, err, "read-only")
    assert drawn == [] and str(run / "samples") in line and ".tmp" not in line, line


def test_a_kill_between_a_checkpoints_two_renames_leaves_half_a_pair_never_a_mixed_one(tmp_path, monkeypatch):
    # the new best's tensor file renamed, then the process killed before its sidecar's rename: the old sidecar is
    # already gone, so the run refuses half a best (round 30) instead of pairing new weights with the old step
    d = tmp_path / "checkpoints"
    ck.save_checkpoint(d, 2, {"w": torch.zeros(4)}, {"config_hash": "x"}, name=ck.BEST)
    real, calls = os.replace, []

    def killed(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # (the kill)
        real(src, dst)
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(d, 6, {"w": torch.ones(4)}, {"config_hash": "x"}, name=ck.BEST)
    monkeypatch.undo()
    assert (d / "best.safetensors").is_file() and not (d / "best.json").exists()
    with pytest.raises(ck.CheckpointError, match="best.json beside it is missing"):
        ck.result_checkpoint(d)
