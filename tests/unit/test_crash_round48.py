"""Round 48: the round-45 harness (``tests/crash_child.py``) on what round 45 did not sweep: ``train --overwrite`` of a
finished run that keeps the user's own files (``checkpoints/mine.txt``, ``samples/my_pick.npy``) or reads its own
``data.npy``, and ``compare RUN RUN --out DIR``. Each test kills the child at one mutation (named by pattern, so
the tests survive a reordering), then does what a user does next in this process. Kill points were chosen so that
what is left does not depend on the file system's directory order. ``# WAS A BUG:`` marks tests that failed on the code
as audited (commit ``ba09035``; docs/testing.md "Forty-eighth round"); the others pin behaviour that held.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import cli, sets
from tests.crash_sweep import TINY, killed

NEW = sets(TINY, "train.steps=4")  # the replacing run: another config than the old one
USER = {"checkpoints/mine.txt": b"MINE " * 20, "samples/my_pick.npy": b"PICK " * 20}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A finished tiny run (read-only; tests copy it)."""
    from ebmlab.cli import main
    run = tmp_path_factory.mktemp("r48") / "ref"
    assert main(["train", "--out", str(run), *sets(TINY)]) == 0
    return run


def _with_user_files(reference: Path, run: Path) -> Path:
    shutil.copytree(reference, run)
    for name, data in USER.items():
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_bytes(data)
    return run


def _user_files_kept(run: Path) -> bool:
    return all((run / n).is_file() and (run / n).read_bytes() == b for n, b in USER.items())


def _temps(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob(".*.tmp"))


# ---- 1. train --out FINISHED_RUN --overwrite, killed ----------------------------------------------------------------

# WAS A BUG: --overwrite killed after the old config.yaml was deleted and before the new one was in place (run_dir._remove_run_files, then save_config) leaves the user's kept files and no config.yaml, which --overwrite ("not an ebmlab run ... choose another --out"), a plain start and --resume all refuse for ever.
@pytest.mark.slow  # a whole-process run: the slow tier (the default suite's ten minutes)
@pytest.mark.parametrize("again", [["--overwrite"], []], ids=["overwrite", "plain"])
def test_overwrite_killed_before_new_config_yaml_can_start_again(reference, tmp_path, capsys, again):
    run = _with_user_files(reference, tmp_path / "run")
    killed(run, "config.yaml.tmp#1", "before", "train", "--out", run, "--overwrite", *NEW)
    assert _user_files_kept(run)  # (and the old config.yaml, until the new one replaces it: the folder stays a run)
    assert (run / "config.yaml").read_bytes() == (reference / "config.yaml").read_bytes()
    code, _, err = cli(capsys, "train", "--out", run, *again, *NEW)
    assert code == 0, err
    assert _user_files_kept(run) and not _temps(run)


@pytest.mark.slow  # (15 kills, about 90 s)
@pytest.mark.parametrize("k", range(1, 31, 2))
def test_overwrite_killed_at_any_of_its_first_mutations_is_cleared_by_overwrite_again(reference, tmp_path, capsys, k):
    """The lock, the old run's files deleted one by one, the new config.yaml and run.json: wherever killed, the same
    ``--overwrite`` again succeeds and keeps the user's files; a plain start succeeds or says to pass --overwrite."""
    run = _with_user_files(reference, tmp_path / "run")
    killed(run, str(k), "before", "train", "--out", run, "--overwrite", *NEW)
    code, _, err = cli(capsys, "train", "--out", run, *NEW)
    assert code == 0 or "--overwrite" in err, err
    code, _, err = cli(capsys, "train", "--out", run, "--overwrite", *NEW)
    assert code == 0, err
    assert _user_files_kept(run) and not _temps(run)


# WAS A BUG: retraining a run on its own data.npy with --overwrite, killed before the new config.yaml is in place, leaves data.npy (rightly kept) beside the old run's remains, and the same command is then refused ("not an ebmlab run ... nothing was deleted; choose another --out"), so the run can no longer be retrained where its data lies.
@pytest.mark.slow  # a whole-process run: the slow tier (the default suite's ten minutes)
def test_overwrite_on_own_data_killed_before_new_config_yaml_can_overwrite_again(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    np.save(run / "data.npy", np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32))
    want = (run / "data.npy").read_bytes()
    argv = ["train", "--data", run / "data.npy", "--out", run, "--overwrite", *NEW]
    killed(run, "config.yaml.tmp#1", "before", *argv)
    assert (run / "data.npy").read_bytes() == want
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    assert (run / "data.npy").read_bytes() == want and not _temps(run)


@pytest.mark.slow  # a whole-process run: the slow tier (the default suite's ten minutes)
def test_overwrite_killed_after_new_config_yaml_overwrites_again(reference, tmp_path, capsys):
    run = _with_user_files(reference, tmp_path / "run")
    killed(run, "run.json.tmp#1", "before", "train", "--out", run, "--overwrite", *NEW)  # old files gone, new config
    assert _user_files_kept(run)
    code, _, err = cli(capsys, "train", "--out", run, "--overwrite", *NEW)
    assert code == 0, err
    assert _user_files_kept(run) and not _temps(run)
    code, _, err = cli(capsys, "sample", run, "--n", 4, "--out", tmp_path / "s.npy")
    assert code == 0, err


# ---- 2. compare RUN RUN --out DIR, killed -----------------------------------------------------------------------------

@pytest.fixture()
def two_runs(reference, tmp_path):
    other = tmp_path / "ref2"
    shutil.copytree(reference, other)
    return reference, other


def _out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "cmp"
    d.mkdir()
    (d / "notes.md").write_text("MY NOTES")
    return d


# WAS A BUG (seen and left in round 48, fixed in the seventeenth session): compare --out killed after its atomic write's
# temp file was created left a hidden .<hex>.compare.md.tmp in DIR that a successful rerun never removed; compare now
# locks DIR (run.lock), so the rerun knows no other compare is writing there and removes its own names' temp files
def test_compare_killed_then_rerun_leaves_no_temp_file(two_runs, tmp_path, capsys):
    d = _out_dir(tmp_path)
    killed(d, "compare.md.tmp#1", "after", "compare", *two_runs, "--out", d)
    code, _, err = cli(capsys, "compare", *two_runs, "--out", d)
    assert code == 0, err
    assert (d / "notes.md").read_text() == "MY NOTES"
    assert not _temps(d)


@pytest.mark.slow  # a whole-process run: the slow tier (the default suite's ten minutes)
def test_compare_killed_keeps_user_files_and_reruns(two_runs, tmp_path, capsys):
    d = _out_dir(tmp_path)
    killed(d, "compare.json.tmp#1", "before", "compare", *two_runs, "--out", d)
    assert (d / "notes.md").read_text() == "MY NOTES" and (d / "compare.md").read_text().startswith("| run")
    code, _, err = cli(capsys, "compare", *two_runs, "--out", d)
    assert code == 0, err
    # (samples.png: the runs' final samples, kept with eval.plots=false since the nineteenth session, are drawn)
    assert sorted(p.name for p in d.iterdir()) == ["compare.json", "compare.md", "notes.md", "samples.png"]


# ---- 3. the helper's lead: data that lie where the run writes -----------------------------------------------------

def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


# WAS A BUG: `train --data RUN/samples/samples.npy --out RUN --overwrite` (retraining a run on its own samples) kept the
# file while clearing, then the new run's final evaluation wrote its samples over it: the data it trained on were gone
# and `ebmlab eval RUN` refused ("has changed since run ... was trained")
@pytest.mark.parametrize("via", ["path", "link"])
def test_data_where_the_run_writes_is_refused_before_anything_is_deleted(reference, tmp_path, capsys, via):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    target = run / "samples" / "samples.npy"
    target.parent.mkdir(exist_ok=True)
    np.save(target, np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32))
    data = target if via == "path" else tmp_path / "link.npy"
    if via == "link":
        data.symlink_to(target)
    before = _snapshot(run)
    code, _, err = cli(capsys, "train", "--data", data, "--out", run, "--overwrite", *NEW)
    assert code == 2 and "samples/samples.npy" in err and "copy it out of the run directory" in err, err
    assert _snapshot(run) == before  # nothing deleted, nothing written
    copy = tmp_path / "copy.npy"  # the advice works
    shutil.copyfile(target, copy)
    code, _, err = cli(capsys, "train", "--data", copy, "--out", run, "--overwrite", *NEW)
    assert code == 0, err
    assert cli(capsys, "eval", run)[0] == 0


@pytest.mark.parametrize("rel, refused", [("samples/samples.npy", True), ("samples", True), ("plots", True),
                                          ("checkpoints", True), ("tb", True), ("samples/mine.npy", False),
                                          ("samples/sub", False), ("data.npy", False), ("../elsewhere.npy", False)])
def test_which_data_paths_lie_where_the_run_writes(tmp_path, rel, refused):
    from ebmlab.errors import ConfigError
    from ebmlab.training.run_dir import _check_data_not_written

    run = tmp_path / "run"
    run.mkdir()
    if refused:
        with pytest.raises(ConfigError, match="which the run writes"):
            _check_data_not_written(run, str(run / rel))
    else:
        _check_data_not_written(run, str(run / rel))
    _check_data_not_written(run, None)
