"""Round 50: a read-only audit of the seventeenth session's code (``git diff 48741cd..89d2819 -- src``; docs/testing.md
"Fiftieth round"). Tests marked ``# WAS A BUG:`` failed on 89d2819; the others pin behaviour that was checked and
held.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmlab.errors import ConfigError
from ebmlab.training import run_dir as rd
from ebmlab.training import selection
from ebmlab.training.lock import LOCK_NAME
from tests.cli_helpers import cli, sets
from tests.builders import finished_run_files, two_finished_runs
from tests.crash_sweep import TINY


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished tiny runs (read-only: tests copy what they change)."""
    return two_finished_runs(tmp_path_factory.mktemp("r50"))


# ---- 1. --overwrite with the data given through a link whose target is the run's data.npy -------------------------

# WAS A BUG: `--data LINK --overwrite` with LINK (outside the run) -> RUN/data.npy: _remove_run_files keeps only the link's own name (_unfollowed), so it deletes RUN/data.npy, the very file the new run trains on
def test_overwrite_keeps_the_data_file_a_link_outside_the_run_points_to(tmp_path):
    real = finished_run_files(tmp_path / "run")
    (tmp_path / "d.npy").symlink_to(real / "data.npy")
    rd._check_data_not_written(real, str(tmp_path / "d.npy"))  # accepted: data.npy is not a file the run writes
    rd._remove_run_files(real, keep=str(tmp_path / "d.npy"))
    assert (real / "data.npy").is_file()


# WAS A BUG: end to end: `train --out RUN --data LINK --overwrite` (LINK -> RUN/data.npy) deletes the user's data file, and `ebmlab eval RUN` then says the data file does not exist; and (round 49) `train --out LINK --data RUN/data.npy --overwrite` with LINK -> RUN
@pytest.mark.parametrize("linked", ["data", "out"])
def test_cli_overwrite_with_a_link_then_eval(tmp_path, capsys, linked):
    real = tmp_path / "real"
    assert cli(capsys, "train", "--out", real, *sets(TINY))[0] == 0
    np.save(real / "data.npy", np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32))
    if linked == "data":
        out, data = real, tmp_path / "d.npy"
        data.symlink_to(real / "data.npy")
    else:
        out, data = tmp_path / "link", real / "data.npy"
        out.symlink_to(real)
    code, _, err = cli(capsys, "train", "--out", out, "--data", data, "--overwrite", *sets(TINY, "train.steps=2"))
    assert code == 0, err
    assert (real / "data.npy").is_file()
    code, _, err = cli(capsys, "eval", out)
    assert code == 0, err


# ---- 2. _check_data_not_written: a data folder that holds the run ---------------------------------------------------

# WAS A BUG: a data folder holding the run through a linked folder inside it (`--data imgs --out imgs/runs/a`, imgs/runs -> elsewhere) is accepted, but the image walk follows linked folders (_image_files), so the run's grids join the data: eval and --resume then fail ("images ... have different sizes ... runs/a/samples/grid_step000001.png"), or with data.image_size read other data silently (the listing fingerprint, rglob, does not follow the link)
def test_a_data_folder_holding_the_run_through_a_linked_folder_inside_it_is_refused(tmp_path):
    imgs, elsewhere = tmp_path / "imgs", tmp_path / "elsewhere"
    imgs.mkdir()
    elsewhere.mkdir()
    (imgs / "runs").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="holds run"):
        rd._check_data_not_written(imgs / "runs" / "a", str(imgs))


@pytest.mark.parametrize("data, out", [
    ("dd/x.npy", "dd/run"),          # a data file whose folder holds the run
    ("dd/x.npy", "dd"),              # ... or is the run
    (".", ".runs/x"),                # --data . with a hidden --out
    ("imgs", "imgs/.runs/x"),        # a hidden folder between
    ("imgs", "imgs_run"),            # a sibling whose name starts with the folder's
    ("imglink", "runs/x"),           # a data folder given through a link, the run beside it
    ("imglink", "imgs_run"),         # ... beside its target
    ("dd/../imgs", "dd/run"),        # a '..' in the data's name
])
def test_legitimate_layouts_are_accepted(tmp_path, monkeypatch, data, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dd").mkdir()
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imglink").symlink_to(tmp_path / "imgs")
    rd._check_data_not_written(Path(out), data)


@pytest.mark.parametrize("data, out", [
    (".", "runs/x"), ("imgs", "imgs/run"), ("imglink", "imgs/run"), ("imgs", "imglink/run"), ("dd/..", "dd/run"),
    ("run/samples/x/..", "run"),
])
def test_a_data_folder_holding_the_run_is_refused_however_spelled(tmp_path, monkeypatch, data, out):
    monkeypatch.chdir(tmp_path)
    for d in ("dd", "imgs", "run/samples/x"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "imglink").symlink_to(tmp_path / "imgs")
    with pytest.raises(ConfigError):
        rd._check_data_not_written(Path(out), data)


# ---- 3. compare --out: the lock ------------------------------------------------------------------------------------

def test_compare_out_one_of_the_compared_runs_works_and_the_run_stays_usable(runs, tmp_path, capsys):
    a = tmp_path / "a"
    shutil.copytree(runs[0], a)
    code, _, err = cli(capsys, "compare", a, runs[1], "--out", a)
    assert code == 0, err
    assert {"compare.md", "compare.json"} <= {p.name for p in a.iterdir()} and not (a / LOCK_NAME).exists()
    assert cli(capsys, "compare", a, runs[1], "--out", a)[0] == 0  # again, into the same run
    assert not rd.holder(a)


def test_compare_out_dot_and_through_a_link(runs, tmp_path, monkeypatch, capsys):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    code, _, err = cli(capsys, "compare", *runs, "--out", ".")
    assert code == 0, err
    written = ["compare.json", "compare.md", "samples.png"]  # (the figure: since the nineteenth session vector runs
    assert sorted(os.listdir(".")) == written                # keep samples.npy with eval.plots=false, as these do)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    code, _, err = cli(capsys, "compare", *runs, "--out", tmp_path / "link")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "real")) == written
    assert (tmp_path / "link").is_symlink()


def test_the_python_api_twice_in_one_process(runs, tmp_path):
    import ebmlab
    out = tmp_path / "cmp"
    first = ebmlab.compare([str(r) for r in runs], out=out)
    second = ebmlab.compare([str(r) for r in runs], out=out)
    assert first.files == second.files and not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_an_error_while_writing_leaves_no_lock_file_and_the_next_compare_works(runs, tmp_path, monkeypatch, exc):
    import ebmlab
    from ebmlab.experiments import compare as cmp
    out = tmp_path / "cmp"

    def fail(*_a, **_k):
        raise exc
    with monkeypatch.context() as m:
        m.setattr(cmp, "write_text_atomic", fail)
        with pytest.raises(type(exc)):
            ebmlab.compare([str(r) for r in runs], out=out)
    assert not (out / LOCK_NAME).exists()
    assert ebmlab.compare([str(r) for r in runs], out=out).files[:2] == ["compare.md", "compare.json"]


def test_a_bad_run_is_refused_before_anything_is_locked_or_written(runs, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(runs[1], bad)
    (bad / "metrics.json").unlink()
    out = tmp_path / "cmp"
    code, _, err = cli(capsys, "compare", runs[0], bad, "--out", out)
    assert code != 0 and "has no metrics.json" in err
    assert not out.exists() or not any(out.iterdir())


def test_compare_on_a_file_system_without_flock(runs, tmp_path, monkeypatch, capsys):
    """ENOLCK from flock: the pid check alone is the lock; a dead pid's lock file is taken over, then removed."""
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_flock)
    out = tmp_path / "cmp"
    out.mkdir()
    import socket
    (out / LOCK_NAME).write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": socket.gethostname()}))
    for _ in range(2):
        code, _, err = cli(capsys, "compare", *runs, "--out", out)
        assert code == 0, err
        assert not (out / LOCK_NAME).exists()


# ---- 4. is_temp_file ---------------------------------------------------------------------------------------------

def test_overwrite_removes_a_link_named_tmp_not_its_target_and_keeps_a_folder_named_tmp(tmp_path):
    d = finished_run_files(tmp_path / "run")
    target = tmp_path / "mine"
    target.mkdir()
    (target / "keep.txt").write_text("KEEP")
    (d / "link.tmp").symlink_to(target)
    (d / "notes.tmp").mkdir()
    (d / ".0123abcd.metrics.json.tmp").write_text("half")
    rd._remove_run_files(d, keep=str(d / "data.npy"))
    names = {p.name for p in d.iterdir()}
    assert "link.tmp" not in names and (target / "keep.txt").read_text() == "KEEP"  # as before round 49
    assert "notes.tmp" in names and ".0123abcd.metrics.json.tmp" not in names


# ---- 5. stopped_by_budget in metrics.jsonl ----------------------------------------------------------------------

def test_a_budget_stop_marks_its_row_and_the_log_still_reads_everywhere(runs, tmp_path, capsys):
    import ebmlab
    from ebmlab.experiments.compare import _last_logged_step
    b = tmp_path / "b"
    code, out, err = cli(capsys, "train", "--out", b, *sets(TINY, "train.time_budget=0.000001"))
    assert code == 0, err
    rows = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1 and rows[-1]["stopped_by_budget"] == 1 and _last_logged_step(b) == 1
    assert rd.has_result(b)
    code, _, err = cli(capsys, "train", "--out", b, "--resume", *sets(TINY, "train.time_budget=null"))
    assert code == 0, err
    rows = ebmlab.load(b).history  # (Run.history: read_metrics)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert [r.get("stopped_by_budget") for r in rows] == [1, None, None, None, None, None]
    assert ebmlab.compare([str(runs[0]), str(b)]).facts[1]["step"] == 6


# ---- 6. selection._read_start ----------------------------------------------------------------------------------

@pytest.mark.parametrize("rows", [7, True, [[1.0, 2.0]], [None], "abc", [1.0, "a"], [[1.0], [2.0, 3.0]], {"a": 1}])
def test_read_start_of_damaged_rows_is_no_start(tmp_path, rows):
    (tmp_path / selection.START_FILE).write_text(json.dumps({"score": 0.5, "rows": rows}))
    assert selection._read_start(tmp_path) == (None, None)


def test_read_start_of_a_written_start(tmp_path):
    selection._write_start(tmp_path, 0.25, torch.arange(5, dtype=torch.float64))
    score, rows = selection._read_start(tmp_path)
    assert score == 0.25 and rows.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
