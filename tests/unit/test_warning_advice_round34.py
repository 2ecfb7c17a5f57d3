"""Does the advice in ebmlab's warnings (and the run-lock messages) work? Each test triggers a warning the way a
user would, then does exactly what its text says and checks that the warning goes away (or the error is passed).
A read-only helper's audit of commit ``7d53b0a`` (docs/testing.md "Thirty-fourth round"). The test marked ``# WAS A
BUG`` failed then: following its advice did not work; it passes with the fix."""
import os
import socket
import json
import warnings

import numpy as np
import pytest
from torch import nn

import ebmlab
from tests.cli_helpers import copy_into_cwd

T = {"steps": 1, "threads": 1, "progress": False}


def caught(fn):
    """(result or exception, [warning texts]) of ``fn()``."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001
            out = exc
    return out, [str(m.message) for m in w]


def having(texts, needle):
    return [t for t in texts if needle in t]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny rings run (no evaluation) and a user-data file of 300 rows."""
    root = tmp_path_factory.mktemp("built")
    ebmlab.train(out=root / "base", evaluate=False, train=T)
    np.save(root / "d.npy", np.random.RandomState(0).randn(300, 2))
    return root


@pytest.fixture
def base(built, tmp_path, monkeypatch):
    return copy_into_cwd(built / "base", tmp_path, monkeypatch)


# ---- train.select_every: a slow validation check (training/selection.py:187) ------------------------------------

SLOW = "so selection more than doubles this run's time"


def _select(built, tmp_path, **train):
    return caught(lambda: ebmlab.train(data=built / "d.npy", out=tmp_path / "sel", overwrite=True, evaluate=False,
                                       train={**T, "steps": 2, "select_every": 1, **train}))


def test_slow_selection_set_select_every_null(built, tmp_path):
    _, said = _select(built, tmp_path, select_draws=1)
    assert having(said, "or set train.select_every=null"), said
    out, said = _select(built, tmp_path, select_every=None)
    assert not isinstance(out, Exception), out
    assert not having(said, SLOW), said


# WAS A BUG: at train.select_draws=1 the warning still said "lower train.select_draws", and select_draws=0 is refused.
def test_slow_selection_names_select_draws_only_where_it_can_be_lowered(built, tmp_path):
    _, said = _select(built, tmp_path, select_draws=1)
    slow = having(said, SLOW)
    assert slow and "select_draws" not in slow[0], said
    _, said = _select(built, tmp_path, select_draws=3)
    slow = having(said, SLOW)
    assert slow and "lower train.select_draws" in slow[0], said
    out, _ = _select(built, tmp_path, select_draws=1)  # lowered as advised: accepted
    assert not isinstance(out, Exception), out


def test_slow_selection_is_warned_once_per_run(built, tmp_path):
    _, said = _select(built, tmp_path, select_draws=1, )
    assert len(having(said, SLOW)) == 1, said


# ---- --overwrite kept files ebmlab train did not write (training/run_dir.py:177) ---------------------------------

def test_overwrite_kept_files_named_relative_and_deleting_them_silences(base):
    (base / "samples").mkdir(exist_ok=True)
    np.save(base / "samples" / "mine.npy", np.zeros((3, 2)))
    out, said = caught(lambda: ebmlab.train(out=base, overwrite=True, evaluate=False, train=T))
    kept = having(said, "--overwrite kept 1 file(s)")
    assert not isinstance(out, Exception) and kept and "samples/mine.npy" in kept[0], (out, said)
    assert (base / "samples" / "mine.npy").is_file()  # the named file is the user's, kept
    (base / "samples" / "mine.npy").unlink()
    out, said = caught(lambda: ebmlab.train(out=base, overwrite=True, evaluate=False, train=T))
    assert not isinstance(out, Exception) and not having(said, "--overwrite kept"), (out, said)


def test_overwrite_of_a_plain_run_does_not_warn(base):  # no false alarm on ebmlab's own files
    out, said = caught(lambda: ebmlab.train(out=base, overwrite=True, evaluate=False, train=T))
    assert not isinstance(out, Exception) and not having(said, "--overwrite kept"), (out, said)


# ---- data files (data/arrays.py:121) ---------------------------------------------------------------------------

HEADER = "is read as a row of data"


def _csv(path, head):
    a = np.random.RandomState(0).randn(200, 2)
    path.write_text(head + "\n" + "\n".join(f"{u},{v}" for u, v in a) + "\n")
    return path


def _train_csv(path, tmp_path):
    return caught(lambda: ebmlab.train(data=path, config="default", out=tmp_path / "csv", overwrite=True,
                                       evaluate=False, train=T))


def test_pandas_header_name_the_columns(tmp_path):
    _, said = _train_csv(_csv(tmp_path / "p.csv", "0,1"), tmp_path)
    assert having(said, HEADER) and having(said, "name the columns"), said
    out, said = _train_csv(_csv(tmp_path / "n.csv", "a,b"), tmp_path)
    assert not isinstance(out, Exception) and not having(said, HEADER), (out, said)
    assert "name: array" in (tmp_path / "csv" / "config.yaml").read_text()


def test_pandas_header_delete_that_row(tmp_path):
    p = _csv(tmp_path / "p.csv", "0,1")
    _, said = _train_csv(p, tmp_path)
    assert having(said, "delete that row"), said
    p.write_text("".join(p.read_text().splitlines(keepends=True)[1:]))
    out, said = _train_csv(p, tmp_path)
    assert not isinstance(out, Exception) and not having(said, HEADER), (out, said)


# ---- BatchNorm in the user's energy (api_energy.py:67) ---------------------------------------------------------

class BNEnergy(nn.Module):
    def __init__(self, dim=10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 16), nn.BatchNorm1d(16), nn.SiLU(), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


class GNEnergy(nn.Module):
    def __init__(self, dim=10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 16), nn.GroupNorm(4, 16), nn.SiLU(), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


class LNEnergy(nn.Module):
    def __init__(self, dim=10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 16), nn.LayerNorm(16), nn.SiLU(), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


BN = "your energy holds BatchNorm"


def _own(energy, tmp_path):
    return caught(lambda: ebmlab.train(energy=energy, out=tmp_path / "own", overwrite=True, evaluate=False, train=T))


def test_batchnorm_prefer_groupnorm(tmp_path):
    _, said = _own(BNEnergy(), tmp_path)
    assert having(said, "prefer GroupNorm"), said
    out, said = _own(GNEnergy(), tmp_path)
    assert not isinstance(out, Exception) and not having(said, BN), (out, said)


def test_batchnorm_prefer_layernorm(tmp_path):
    _, said = _own(BNEnergy(), tmp_path)
    assert having(said, "LayerNorm"), said
    out, said = _own(LNEnergy(), tmp_path)
    assert not isinstance(out, Exception) and not having(said, BN), (out, said)


# ---- the run-directory lock (training/lock.py:136, :148) -------------------------------------------------------

def test_stale_lock_of_a_live_pid_delete_the_named_file(base):
    lock = base / "run.lock"
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": "x"}))
    out, _ = caught(lambda: ebmlab.train(out=base, overwrite=True, evaluate=False, train=T))
    assert isinstance(out, Exception) and "if no ebmlab process is running there" in str(out), out
    named = str(out).split("or delete ")[1].split(" if no")[0].strip("'")
    assert os.path.samefile(named, lock)
    os.remove(named)
    out, _ = caught(lambda: ebmlab.train(out=base, overwrite=True, evaluate=False, train=T))
    assert not isinstance(out, Exception), out


def test_held_lock_train_into_another_out(base):
    from ebmlab.training.lock import RunLock

    held = RunLock.acquire(base)
    try:
        out, _ = caught(lambda: ebmlab.train(out=base, overwrite=True, evaluate=False, train=T))
        if not isinstance(out, Exception):
            pytest.skip("this system's lock is per process: a lock held here does not block this process")
        assert "or train into another --out" in str(out), out
        out, _ = caught(lambda: ebmlab.train(out=base.parent / "another", evaluate=False, train=T))
        assert not isinstance(out, Exception), out
    finally:
        held.release()


# ---- train.compile (training/distributed.py:384) ----------------------------------------------------------------

def test_compile_double_backward_set_compile_false(tmp_path):
    # the advice's key and value are accepted and train the method the error was about (paper 001's KL term)
    out, _ = caught(lambda: ebmlab.train(config="paper001_toy", out=tmp_path / "c", evaluate=False,
                                         train={**T, "compile": False}))
    assert not isinstance(out, Exception), out
