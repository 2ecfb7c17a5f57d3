"""The sixteenth session's leftovers closed in the seventeenth (docs/testing.md "Leftovers of the sixteenth
session"): ``compare --out DIR`` locks DIR (``run.lock``) while it writes, so a rerun removes the temp files a killed
compare left there (round 48's seen-and-left kill, now ``tests/unit/test_crash_round48.py``) and a second compare
into DIR at the same time is refused in one sentence instead of racing.
"""
from __future__ import annotations

import os

import pytest

from ebmlab.training.lock import LOCK_NAME, RunLock
from tests.cli_helpers import cli
from tests.builders import two_finished_runs

STALE = (".0123abcd.compare.md.tmp", ".89abcdef.compare.json.tmp", ".00ff00ff.samples.png.tmp",
         ".deadbeef.samples_1.png.tmp")
MINE = (".0123abcd.notes.md.tmp", "compare.md.tmp", ".0123abcd.samples.png.bak", "my.samples.png.tmp")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished tiny runs (read-only: tests copy what they change)."""
    return two_finished_runs(tmp_path_factory.mktemp("s17"))


# WAS A BUG (round 48's seen-and-left: compare took no lock)
def test_compare_removes_only_its_own_stale_temp_files_and_leaves_no_lock_file(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    for name in STALE + MINE:
        (out / name).write_text("x", encoding="utf-8")
    code, _, err = cli(capsys, "compare", *runs, "--out", out)
    assert code == 0, err
    left = {p.name for p in out.iterdir()}
    assert set(MINE) <= left and {"compare.md", "compare.json"} <= left, left
    assert not left & set(STALE) and LOCK_NAME not in left, left


def test_a_stale_temp_name_that_is_a_link_or_a_folder_is_not_touched(runs, tmp_path, capsys):
    out, target = tmp_path / "cmp", tmp_path / "kept.txt"
    out.mkdir()
    target.write_text("KEEP", encoding="utf-8")
    (out / STALE[0]).symlink_to(target)
    (out / STALE[1]).mkdir()
    code, _, err = cli(capsys, "compare", *runs, "--out", out)
    assert code == 0, err
    assert (out / STALE[0]).is_symlink() and target.read_text(encoding="utf-8") == "KEEP"
    assert (out / STALE[1]).is_dir()


# WAS A BUG (round 48's seen-and-left: compare took no lock)
def test_a_second_compare_into_a_folder_in_use_is_refused_in_one_sentence(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / STALE[0]).write_text("x", encoding="utf-8")  # another compare's temp file in flight: not removed
    with RunLock.acquire(out, doing="writing a comparison"):  # (flock: a second open file description conflicts)
        code, _, err = cli(capsys, "compare", *runs, "--out", out)
    assert code != 0 and "Traceback" not in err
    assert f"--out {str(out)!r} is in use by another ebmlab process (pid {os.getpid()} on host" in err
    assert ", writing a comparison); wait for it to finish" in err
    assert "write the comparison to another --out" in err and "train into another" not in err
    assert sorted(p.name for p in out.iterdir()) == [STALE[0]]  # nothing written, the temp file kept


# WAS A BUG (round 48's seen-and-left: compare took no lock)
def test_the_python_api_takes_the_same_lock(runs, tmp_path):
    import ebmlab
    from ebmlab.errors import RunError
    out = tmp_path / "cmp"
    out.mkdir()
    with RunLock.acquire(out), pytest.raises(RunError, match=r"--out .* in use .*, training\); wait"):
        ebmlab.compare([str(r) for r in runs], out=out)
    result = ebmlab.compare([str(r) for r in runs], out=out)
    assert result.files[:2] == ["compare.md", "compare.json"] and not (out / LOCK_NAME).exists()


def test_a_run_directory_keeps_its_default_lock_sentence(tmp_path):
    from ebmlab.errors import RunError
    with RunLock.acquire(tmp_path), pytest.raises(RunError) as caught:
        RunLock.acquire(tmp_path)
    assert "run directory" in str(caught.value) and ", training); wait for it to finish" in str(caught.value)
    assert "or train into another --out" in str(caught.value)
