"""Round 43: an audit of the last session's code (``git diff f8dcc43..5daec04 -- src``): the checkpoint ``pair``
token and the retrying reader, ``lock.holder``, ``files.temp_path`` / ``atomic_write(replace=False)``, the
relocation of a moved data file, ``config._QUOTED`` (now ``config._has_comment``).

Tests marked ``# WAS A BUG`` fail on the audited code (commit ``5daec04``); the others pin behaviour that one-line
mutations of the new code broke without any of the round 38-41 tests noticing.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.errors import CheckpointError, ConfigError, DataError
from ebmlab.training import checkpoint as ckpt
from ebmlab.training.lock import holder
from tests.cli_helpers import cli, sets
from tests.unit.test_session14_round40 import _fake_run

VEC = ["model.width=16", "model.depth=1", "train.steps=4", "train.checkpoint_every=2", "eval.n_samples=32",
       "eval.plots=false", "train.progress=false", "train.threads=1", "train.select_every=null"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``root/run``: a tiny run trained by ``ebmlab train`` on ``root/v.npy`` (copy it before changing it)."""
    from ebmlab.cli import main

    root = tmp_path_factory.mktemp("round43")
    np.save(root / "v.npy", np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32))
    with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")):
        warnings.simplefilter("ignore")
        assert main(["train", "--out", str(root / "run"), "--data", str(root / "v.npy"), *sets(VEC)]) == 0
    return root / "run"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _stale_lock_naming(run: Path, pid: int) -> None:
    """A run.lock left behind (nobody holds its file lock) that names ``pid`` on this host."""
    (run / "run.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}), encoding="utf-8")


# ----- config._QUOTED -------------------------------------------------------------------------------------------
# WAS A BUG: an apostrophe before and after a real ' #' comment (o'brien ... it's) is taken for a quoted span, so the comment silently cuts the value (f8dcc43 refused it)
@pytest.mark.parametrize("text", ["data.path=/home/o'brien/data #2/it's.npy", "data.name=a'b #c'd"])
def test_a_comment_between_two_apostrophes_of_a_plain_value_is_refused(text):
    from ebmlab.config import parse_override

    with pytest.raises(ConfigError, match="comment"):
        print(parse_override(text))


# ----- lock.holder ----------------------------------------------------------------------------------------------
# WAS A BUG: holder() calls a stale run.lock naming the calling process itself busy ("another ebmlab process"), though RunLock takes it over (pid == os.getpid()) and nobody holds its file lock
def test_holder_does_not_name_the_calling_process_of_a_stale_lock(tmp_path):
    run = _fake_run(tmp_path / "run")
    _stale_lock_naming(run, os.getpid())
    assert holder(run) is None


# WAS A BUG: compare says a run with a stale run.lock (a reused pid: the caller's own) "is still training ... compare it once it has finished" while `ebmlab eval` of it succeeds at once
def test_compare_does_not_call_a_run_with_a_stale_lock_still_training(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "metrics.json").unlink()
    _stale_lock_naming(run, os.getpid())
    code, _, err = cli(capsys, "compare", run, trained)
    assert code == 2
    assert "still training" not in err and "ebmlab eval" in err, err


# ----- sample --out without --overwrite (atomic_write(replace=False)) --------------------------------------------
# WAS A BUG: `sample --out LINK` where LINK is a dangling symlink fails with "operating-system error on '.<hex>.s.npy.tmp': File exists", naming a hidden temp file the user never made instead of --out
def test_sample_out_onto_a_dangling_symlink_names_the_out_path(trained, tmp_path, capsys):
    out = tmp_path / "s.npy"
    out.symlink_to(tmp_path / "nowhere.npy")
    code, _, err = cli(capsys, "sample", trained, "--n", "4", "--steps", "2", "--out", out)
    assert code == 2
    assert ".tmp" not in err and str(out) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]  # (no temp file left: fine today)


def test_sample_out_without_hard_links_writes_and_then_refuses(trained, tmp_path, capsys, monkeypatch):
    def no_link(*a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    out = tmp_path / "s.csv"
    assert cli(capsys, "sample", trained, "--n", "4", "--steps", "2", "--out", out)[0] == 0
    code, _, err = cli(capsys, "sample", trained, "--n", "4", "--steps", "2", "--out", out)
    assert code == 2 and "already exist" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.png"]


# ----- the checkpoint reader --------------------------------------------------------------------------------------
# WAS A BUG: a pair whose tokens differ (same size: another save's sidecar) is refused as "it may be truncated", a wrong diagnosis without advice
def test_a_pair_of_two_saves_is_not_called_truncated(tmp_path, monkeypatch):
    d = tmp_path / "c"
    ckpt.save_checkpoint(d, 5, {"w": torch.ones(4)}, {}, name=ckpt.BEST)
    side = (d / "best.json").read_text()
    ckpt.save_checkpoint(d, 6, {"w": torch.full((4,), 2.0)}, {}, name=ckpt.BEST)
    (d / "best.json").write_text(side)
    monkeypatch.setattr(ckpt.time, "sleep", lambda s: None)
    with pytest.raises(CheckpointError, match="written by another save") as info:
        ckpt.load_checkpoint(d / "best.safetensors")
    assert "truncated" not in str(info.value), info.value


def test_a_pair_mixed_for_one_read_is_read_again(tmp_path, monkeypatch):
    """(Catches ``_READS = 1``.) best.* replaced between the sidecar's read and the weights': the next read matches."""
    d = tmp_path / "c"
    ckpt.save_checkpoint(d, 5, {"w": torch.ones(4)}, {}, name=ckpt.BEST)
    old = json.loads((d / "best.json").read_text())
    ckpt.save_checkpoint(d, 6, {"w": torch.full((4,), 2.0)}, {}, name=ckpt.BEST)
    real, calls = ckpt._sidecar, []
    monkeypatch.setattr(ckpt, "_sidecar", lambda side: calls.append(1) or (old if len(calls) == 1 else real(side)))
    monkeypatch.setattr(ckpt.time, "sleep", lambda s: None)
    tensors, meta = ckpt.load_checkpoint(d / "best.safetensors")
    assert meta["step"] == 6 and torch.equal(tensors["w"], torch.full((4,), 2.0)) and len(calls) == 2


def test_read_result_chooses_again_when_the_folder_changed(tmp_path, monkeypatch):
    """(Catches ``_read_result`` raising at the first failure.) A pruned pair: the newer one is read."""
    from ebmlab.training import run as runmod

    run = _fake_run(tmp_path / "run")
    real, calls = ckpt.load_checkpoint, []

    def pruned_meanwhile(p):
        calls.append(p)
        if len(calls) == 1:
            ckpt.save_checkpoint(run / "checkpoints", 20, {"w": torch.ones(3)}, {})
            raise CheckpointError("pruned while read")
        return real(p)

    monkeypatch.setattr(ckpt, "load_checkpoint", pruned_meanwhile)
    monkeypatch.setattr(runmod.time, "sleep", lambda s: None)
    path, _, meta = runmod._read_result(run)
    assert meta["step"] == 20 and path.name == "step_00000020.safetensors"


def test_atomic_write_all_refuses_one_file_given_twice_under_two_spellings(tmp_path, monkeypatch):
    """(Catches the removal of the duplicate check: the second temp file would replace the first's rename.)"""
    from ebmlab.files import atomic_write_all

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="given twice"):
        atomic_write_all([(tmp_path / "a.txt", lambda p: p.write_text("1")), (Path("a.txt"), lambda p: p.write_text("2"))])
    assert list(tmp_path.iterdir()) == []


# ----- relocation ----------------------------------------------------------------------------------------------
# WAS A BUG: ebmlab.resume(run, overrides=["data.path=MISSING"]) says "--resume --data 'MISSING': ...", a CLI flag the Python caller never used
def test_api_resume_onto_a_missing_data_path_speaks_python(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    with pytest.raises(DataError) as info:
        ebmlab.resume(run, overrides=[f"data.path={tmp_path / 'missing.npy'}"], evaluate=False)
    assert "--resume --data" not in str(info.value), info.value


# WAS A BUG: a run pointed with --resume --data to a data file moved INTO the run records its absolute path, so a copy of the run reads the original's file and fails once that is gone (only data.npy travels)
def test_a_copy_of_a_run_relocated_to_a_file_inside_it_reads_its_own_copy(trained, tmp_path, capsys):
    proj = tmp_path / "proj"
    shutil.copytree(trained.parent, proj)  # run/ and v.npy: the stored data.path (trained.parent/v.npy) stays
    run = proj / "run"
    stored = json.loads((run / "run.json").read_text(encoding="utf-8"))["data"]["path"]
    moved = run / "v.npy"
    shutil.copy(proj / "v.npy", moved)
    held = Path(stored).with_name("v.npy.held")
    os.rename(stored, held)  # the stored file gone for this test only
    try:
        code, _, err = cli(capsys, "train", "--out", run, "--resume", "--data", moved, "--set", "train.steps=4")
        assert code == 0, err
        copy = tmp_path / "copy"
        shutil.copytree(run, copy)
        moved.unlink()  # the original's file: not the copy's business
        code, _, err = cli(capsys, "eval", copy)
        assert code == 0, err
    finally:
        os.rename(held, stored)


def _relocated(run: Path):
    return json.loads((run / "run.json").read_text(encoding="utf-8"))["data"].get("relocated")


def test_resume_data_naming_the_stored_file_through_a_symlink_is_no_relocation(trained, tmp_path, capsys):
    """(Catches ``_same_file`` comparing names only.) ``--data LINK`` to the stored file itself: nothing recorded."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    link = tmp_path / "link to v.npy"
    link.symlink_to(trained.parent / "v.npy")
    code, out, err = cli(capsys, "train", "--out", run, "--resume", "--data", link, "--set", "train.steps=6")
    assert code == 0, err
    assert _relocated(run) is None and "recorded in run.json" not in out, out


# WAS A BUG (the report's item 7): a run on rows given in memory, resumed with a file of the same bytes elsewhere,
# recorded that file in run.json though the run reads its own data.npy (an untrue record, used once data.npy is gone)
def test_pointing_an_in_memory_run_at_its_own_data_npy_drops_a_recorded_place(tmp_path, capsys):
    """(Catches ``relocation`` keeping the record for the run's own data.npy.) A run on rows given in memory, resumed
    with a file of the same bytes elsewhere: nothing recorded while its data.npy is there, recorded once it is gone;
    then pointed at its own data.npy again: the record goes."""
    rows = np.random.default_rng(5).normal(size=(120, 2)).astype(np.float32)
    run = tmp_path / "m"
    ebmlab.train(data=rows, out=run, overrides=VEC, evaluate=False)
    np.save(tmp_path / "same.npy", rows)
    ebmlab.train(data=tmp_path / "same.npy", out=run, resume=True, overrides=[*VEC, "train.steps=5"], evaluate=False)
    assert _relocated(run) is None
    (run / "data.npy").rename(tmp_path / "held.npy")
    ebmlab.train(data=tmp_path / "same.npy", out=run, resume=True, overrides=[*VEC, "train.steps=6"], evaluate=False)
    assert _relocated(run) == str((tmp_path / "same.npy").resolve())
    (tmp_path / "held.npy").rename(run / "data.npy")
    code, out, err = cli(capsys, "train", "--out", run, "--resume", "--data", run / "data.npy", "--set", "train.steps=8")
    assert code == 0, err
    assert _relocated(run) is None, _relocated(run)
