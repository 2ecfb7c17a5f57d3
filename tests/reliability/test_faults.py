"""Operating-system faults, simulated with monkeypatch (the suite runs as root, where chmod does not
stop writes): a full disk, a read-only file system, permissions, a path through a file, a kill -9.
Each gives one sentence naming the path and what to do, and loses no earlier checkpoint."""
from __future__ import annotations

import builtins
import errno
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors import SafetensorError

import ebmlab
from ebmlab import errors
from ebmlab.training import checkpoint as ckpt
from ebmlab.training import logging as run_logging
from ebmlab.training.logging import read_metrics
from ebmlab.training.run import LOCK_NAME

from .conftest import assert_one_sentence, cli, latest, sets, snapshot


def _oserror(code: int, path="x"):
    return OSError(code, os.strerror(code), str(path))


def _bare(path) -> str:
    """A file's name without an atomic write's temp prefix (``files.temp_path``: ``.<8 hex>.NAME.tmp``)."""
    return re.sub(r"^\.[0-9a-f]{8}\.", "", pathlib.Path(path).name)


def _fail_on_call(n: int, exc, real, only: str | None = None):
    """``real`` that raises ``exc`` from its ``n``-th call on (counting only calls with a path argument whose
    name starts with ``only`` when given, an atomic write's temp prefix ``.<8 hex>.`` aside; the others pass through)."""
    calls = {"n": 0}

    def fake(*a, **k):
        if only is None or any(isinstance(x, (str, os.PathLike)) and _bare(x).startswith(only) for x in a):
            calls["n"] += 1
            if calls["n"] >= n:
                raise exc
        return real(*a, **k)
    return fake


@pytest.mark.parametrize("kind", ["safetensors io error", "os error", "rename fails"])
def test_full_disk_at_a_checkpoint_keeps_the_earlier_ones(kind, trained_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    if kind == "safetensors io error":
        exc = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')
        monkeypatch.setattr(ckpt, "save_file", _fail_on_call(3, exc, ckpt.save_file, only="step_"))
    elif kind == "os error":
        monkeypatch.setattr(ckpt, "save_file", _fail_on_call(3, _oserror(errno.ENOSPC), ckpt.save_file, only="step_"))
    else:  # two renames per checkpoint (tensors, sidecar): the 5th is the third checkpoint's tensor file
        monkeypatch.setattr(ckpt.os, "replace", _fail_on_call(5, _oserror(errno.ENOSPC), os.replace, only="step_"))
    code, _, err = cli(capsys, "train", "--out", out, "--data", trained_root / "points.npy", *sets("train.steps=5"))
    assert_one_sentence(code, err, "no space left")
    monkeypatch.undo()
    kept = ckpt.list_checkpoints(out / "checkpoints")
    assert [s for s, _ in kept] == [1, 2]
    assert not list((out / "checkpoints").glob("*.tmp"))
    ckpt.load_checkpoint(kept[-1][1])
    code, _, err = cli(capsys, "train", "--out", out, "--resume")  # space freed: the run continues
    assert code == 0, err
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4, 5]


def test_full_disk_in_metrics_log(trained_root, tmp_path, monkeypatch, capsys):
    real = builtins.open

    def fake(file, mode="r", *a, **k):
        if str(file).endswith("metrics.jsonl") and "a" in mode:
            raise _oserror(errno.ENOSPC, file)
        return real(file, mode, *a, **k)
    monkeypatch.setattr(run_logging, "open", fake, raising=False)
    code, _, err = cli(capsys, "train", "--out", tmp_path / "run", "--data", trained_root / "points.npy", *sets())
    assert_one_sentence(code, err, "metrics.jsonl")
    assert "No space left" in err


@pytest.mark.parametrize("code_,needle", [(errno.EROFS, "read-only"), (errno.EACCES, "permission"),
                                          (errno.ENOTDIR, "not a directory"), (errno.ENOSPC, "no space")])
def test_run_directory_cannot_be_created(code_, needle, trained_root, tmp_path, monkeypatch, capsys):
    real = pathlib.Path.mkdir

    def fake(self, *a, **k):
        if "blocked" in str(self):
            raise _oserror(code_, self)
        return real(self, *a, **k)
    monkeypatch.setattr(pathlib.Path, "mkdir", fake)
    out = tmp_path / "blocked" / "run"
    code, _, err = cli(capsys, "train", "--out", out, "--data", trained_root / "points.npy", *sets())
    assert_one_sentence(code, err, needle)
    assert "blocked" in err


@pytest.mark.parametrize("code_", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_config_cannot_be_written(code_, trained_root, tmp_path, monkeypatch, capsys):
    import ebmlab.files as files_module  # config.yaml is written by files.write_text_atomic
    real = builtins.open

    def fake(file, mode="r", *a, **k):
        if "w" in mode:
            raise _oserror(code_, file)
        return real(file, mode, *a, **k)
    monkeypatch.setattr(files_module, "open", fake, raising=False)
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--out", out, "--data", trained_root / "points.npy", *sets())
    assert_one_sentence(code, err, os.strerror(code_))
    monkeypatch.undo()
    assert cli(capsys, "train", "--out", out, "--data", trained_root / "points.npy", *sets())[0] == 0  # rerun


def test_lock_file_cannot_be_created(run_copy, monkeypatch, capsys):
    real = os.open

    def fake(path, *a, **k):
        if str(path).endswith(LOCK_NAME):
            raise _oserror(errno.EROFS, path)
        return real(path, *a, **k)
    monkeypatch.setattr(os, "open", fake)
    before = snapshot(run_copy)
    code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=3")
    assert_one_sentence(code, err, "read-only")
    assert snapshot(run_copy) == before


def test_unreadable_checkpoint(run_copy, monkeypatch, capsys, tmp_path):
    def fake(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(latest(run_copy)))
    monkeypatch.setattr(ckpt, "load", fake)
    code, _, err = cli(capsys, "sample", run_copy, "--out", tmp_path / "s.npy")
    assert_one_sentence(code, err, "permission denied")
    with pytest.raises(errors.CheckpointError, match="Permission denied"):
        ebmlab.load(run_copy)


def test_sample_output_on_a_full_disk(run_copy, monkeypatch, capsys, tmp_path):
    def fake(path, *a, **k):
        raise _oserror(errno.ENOSPC, path)
    monkeypatch.setattr(np, "save", fake)
    code, _, err = cli(capsys, "sample", run_copy, "--n", "3", "--steps", "1", "--out", tmp_path / "s.npy")
    assert_one_sentence(code, err, "no space left")


def test_eval_metrics_on_a_full_disk(run_copy, monkeypatch, capsys):
    real = open

    import ebmlab.files

    def fake(path, mode="r", *a, **k):  # metrics.json is written atomically: metrics.json.tmp, then a rename
        if _bare(path).startswith("metrics.json") and "w" in mode:
            raise _oserror(errno.ENOSPC, path)
        return real(path, mode, *a, **k)
    monkeypatch.setattr(ebmlab.files, "open", fake, raising=False)
    before = (run_copy / "metrics.json").read_bytes() if (run_copy / "metrics.json").exists() else None
    code, _, err = cli(capsys, "eval", run_copy)
    assert_one_sentence(code, err, "metrics.json")
    after = (run_copy / "metrics.json").read_bytes() if (run_copy / "metrics.json").exists() else None
    assert after == before and not list(run_copy.glob("*.tmp")) and not list(run_copy.glob(".*.tmp"))  # no temp left


def test_tensorboard_failure_is_a_warning(trained_root, tmp_path, monkeypatch, capsys):
    from torch.utils.tensorboard import SummaryWriter

    def fake(self, *a, **k):
        raise _oserror(errno.ENOSPC, "tb/events")
    monkeypatch.setattr(SummaryWriter, "add_scalar", fake)
    code, _, err = cli(capsys, "train", "--out", tmp_path / "run", "--data", trained_root / "points.npy", *sets())
    assert code == 0 and "Traceback" not in err
    assert "TensorBoard logging stopped" in err and [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2]


@pytest.mark.slow  # a whole-process run: the slow tier (the default suite's ten minutes)
def test_kill_minus_nine_leaves_a_lock_that_resume_takes_over(trained_root, tmp_path, capsys):
    """A killed trainer leaves run.lock behind (with its dead pid); --resume takes it over and finishes."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ebmlab", "train", "--out", str(out), "--data", str(trained_root / "points.npy"),
           *sets("train.steps=400", "train.checkpoint_every=5")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 300  # a hang guard: the loop waits on the files
    while len(ckpt.list_checkpoints(out / "checkpoints")) < 2:
        assert proc.poll() is None and time.time() < deadline, "the trainer ended or wrote no checkpoint in 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = {p.name: p.read_bytes() for _, p in ckpt.list_checkpoints(out / "checkpoints")}
    assert kept and (out / LOCK_NAME).exists()
    step = max(int(n[5:13]) for n in kept)
    assert step < 400, "the run finished before it could be killed"
    code, _, err = cli(capsys, "train", "--out", out, "--resume", "--set", f"train.steps={step + 2}")
    assert code == 0, err
    assert not (out / LOCK_NAME).exists()
    for name, blob in kept.items():
        assert (out / "checkpoints" / name).read_bytes() == blob
    steps = [r["step"] for r in read_metrics(out)]
    assert steps == list(range(1, step + 3))


def test_ctrl_c_says_what_was_kept_and_how_to_go_on(run_copy, trained_root, tmp_path, monkeypatch, capsys):
    """Every Ctrl-C said "the last checkpoint is kept (continue with --resume)": false before the first checkpoint
    (``--resume`` then refuses) and meaningless for ``sample`` and ``eval``."""
    from ebmlab.training.loop import Trainer

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, "fit", interrupt)
    new = tmp_path / "new"
    code, _, err = cli(capsys, "train", "--out", new, "--data", trained_root / "points.npy", *sets())
    assert code == 130 and "no checkpoint was written yet, so start it again without --resume" in err
    code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=9")
    assert code == 130 and f"the last checkpoint, {latest(run_copy).name}, is kept" in err
    assert f"ebmlab train --out {run_copy} --resume" in err
    from ebmlab.training import drawing
    monkeypatch.setattr(drawing, "draw", interrupt)
    code, _, err = cli(capsys, "sample", run_copy, "--n", "3")
    assert code == 130 and err.strip() == "ebmlab: interrupted"
