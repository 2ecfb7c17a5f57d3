"""Round 49: a read-only audit of the sixteenth session's code (``git diff ba61304..48741cd -- src``; docs/testing.md
"Forty-ninth round"). Tests marked ``# WAS A BUG:`` failed on the audited code (48741cd); the others pin behaviour
that was checked and held.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmlab import files
from ebmlab.errors import ConfigError, RunError, RunNotFound
from ebmlab.training import run, run_dir as rd, selection
from ebmlab.training.heldout import VALIDATION_ROWS
from tests.builders import finished_run_files, run_with_best

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")

TINY = ["train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=2", "data.val_fraction=0.2",
        "train.select_every=2", "model.width=16", "model.depth=1", "eval.n_samples=32", "eval.plots=false",
        "eval.long_run_factor=1", "eval.grid_size=8", "train.progress=false", "method.n_steps=3",
        "method.n_steps_data=2", "train.threads=1", "train.log_every=1", "data.n_train=256", "data.n_test=32",
        "train.batch_size=32"]


# ---- 1. run_dir._remove_run_files: keep= and the run directory through a symbolic link ------------------------------

# WAS A BUG: `train --out LINK --data REAL/data.npy --overwrite` (LINK -> REAL) deletes the data file the new run trains on (keep= is compared lexically with LINK/data.npy); the run then cannot be evaluated or resumed; and the converse: `--out REAL --data LINK/data.npy --overwrite` deletes REAL/data.npy
@pytest.mark.parametrize("linked", ["out", "data"])
def test_overwrite_through_a_link_keeps_the_new_runs_data_file(tmp_path, linked):
    real = finished_run_files(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    out, data = (link, real) if linked == "out" else (real, link)
    rd._remove_run_files(out, keep=str(data / "data.npy"))
    assert (real / "data.npy").is_file()


# (the same end to end, through the CLI: tests/unit/test_session17_round50.py)


# WAS A BUG: `--out A/link/..` (link -> elsewhere/sub): the checks look at the real parent (elsewhere), but the clearing deletes ebmlab-named files of the lexical parent A (normpath), another folder
def test_clearing_deletes_in_the_directory_that_was_checked_not_its_lexical_normal_form(tmp_path):
    a = tmp_path / "A"
    a.mkdir()
    (a / "data.npy").write_bytes(b"the user's own data, not a run's")
    (a / "metrics.json").write_text("{}")
    other = finished_run_files(tmp_path / "elsewhere", data=False)
    (other / "sub").mkdir()
    (a / "link").symlink_to(other / "sub")
    out = a / "link" / ".."
    assert os.path.samefile(out, other)  # what the OS, and every check, sees as --out
    assert rd._new_run_needs_clearing(out, overwrite=True)  # a run: --overwrite may clear it
    rd._remove_run_files(out)
    assert (a / "data.npy").is_file() and (a / "metrics.json").is_file()


def test_overwrite_keeps_config_yaml_and_data_and_user_files_and_clears_the_rest(tmp_path):
    d = finished_run_files(tmp_path / "run")
    (d / "checkpoints" / "mine.txt").write_text("mine")
    (d / "checkpoints" / "best.safetensors").write_bytes(b"b")
    (d / "checkpoints" / "best.json").write_text(json.dumps({"step": 5}))
    with pytest.warns(UserWarning, match="mine.txt"):
        rd._remove_run_files(d, keep=str(d / "data.npy"))
    assert sorted(p.name for p in d.iterdir()) == ["checkpoints", "config.yaml", "data.npy"]
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["mine.txt"]
    # what is left is a start without a checkpoint or result: a plain start reuses it
    assert rd._new_run_needs_clearing(d, False)


def test_clearing_order_result_first_marks_of_a_run_last(tmp_path, monkeypatch):
    d = finished_run_files(tmp_path / "run")
    (d / "run.json").write_text("{}")
    (d / "tb").mkdir()
    gone = []
    real_unlink, real_rmtree = Path.unlink, rd.shutil.rmtree

    def unlink(self, *a, **k):
        gone.append(self.name)
        return real_unlink(self, *a, **k)

    def rmtree(p, *a, **k):
        gone.append(Path(p).name)
        return real_rmtree(p, *a, **k)
    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(rd.shutil, "rmtree", rmtree)
    rd._remove_run_files(d)
    assert gone[0] == "metrics.json" and gone[-1] == "metrics.jsonl"
    assert gone.index("step_00000010.safetensors") > gone.index("run.json")
    assert "config.yaml" not in gone


@pytest.mark.parametrize("trail", ["/", "/.", "/../run"])
def test_clearing_a_run_named_with_a_trailing_slash_or_dots(tmp_path, trail):
    d = finished_run_files(tmp_path / "run")
    rd._remove_run_files(Path(str(d) + trail), keep=str(d / "data.npy"))
    assert sorted(p.name for p in d.iterdir()) == ["config.yaml", "data.npy"]


# ---- 2. run_dir._check_data_not_written ---------------------------------------------------------------------------

# WAS A BUG: data given as a folder that holds the run (`--data imgs --out imgs/run`, an image folder read recursively and fingerprinted by its whole listing) is accepted; the run writes config.yaml, checkpoints, grids into the data, and `ebmlab eval`/`--resume` then refuse ("data folder ... has changed")
@pytest.mark.parametrize("where", ["parent", "itself"])
def test_data_folder_holding_the_run_is_refused(tmp_path, where):
    imgs = tmp_path / "imgs"
    run_dir = imgs / "run"
    run_dir.mkdir(parents=True)
    with pytest.raises(ConfigError):
        rd._check_data_not_written(run_dir, str(imgs if where == "parent" else run_dir))


# WAS A BUG: a symbolic link AT samples/samples.npy whose target lies outside the run passes (only the target is checked); the run's final samples then replace the link, data.path names the run's samples, and `ebmlab eval RUN` refuses ("has changed since run ... was trained")
def test_data_named_by_a_link_that_the_run_replaces_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "samples").mkdir(parents=True)
    np.save(tmp_path / "mine.npy", np.zeros((4, 2), np.float32))
    (run_dir / "samples" / "samples.npy").symlink_to(tmp_path / "mine.npy")
    with pytest.raises(ConfigError, match="copy it out of the run directory"):
        rd._check_data_not_written(run_dir, str(run_dir / "samples" / "samples.npy"))


@pytest.mark.parametrize("spell", ["trailing slash", "dotdot", "relative", "link to run", "link to samples"])
def test_data_in_samples_is_refused_however_the_paths_are_spelled(tmp_path, monkeypatch, spell):
    run_dir = tmp_path / "run"
    (run_dir / "samples").mkdir(parents=True)
    target = run_dir / "samples" / "samples.npy"
    target.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    out, data = run_dir, str(target)
    if spell == "trailing slash":
        out, data = Path(str(run_dir) + "/"), str(run_dir / "samples") + "/"
    elif spell == "dotdot":
        out, data = run_dir / "samples" / "..", str(run_dir / "plots" / ".." / "samples" / "samples.npy")
    elif spell == "relative":
        out, data = Path("run"), "run/samples/samples.npy"
    elif spell == "link to run":
        (tmp_path / "ln").symlink_to(run_dir)
        out = tmp_path / "ln"
    else:
        (tmp_path / "ls").symlink_to(run_dir / "samples")
        data = str(tmp_path / "ls" / "samples.npy")
    with pytest.raises(ConfigError, match="copy it out of the run directory"):
        rd._check_data_not_written(out, data)


def test_a_hard_link_to_samples_npy_is_not_changed_by_the_runs_atomic_rewrite(tmp_path):
    """Why a data file that is a hard link of ``samples/samples.npy`` needs no refusal: the run replaces the name."""
    (tmp_path / "run" / "samples").mkdir(parents=True)
    s = tmp_path / "run" / "samples" / "samples.npy"
    np.save(s, np.ones((3, 2), np.float32))
    os.link(s, tmp_path / "data.npy")
    rd._check_data_not_written(tmp_path / "run", str(tmp_path / "data.npy"))  # not refused
    files.save_npy_atomic(s, np.zeros((5, 2), np.float32))
    assert np.load(tmp_path / "data.npy").shape == (3, 2)


def test_users_own_file_in_samples_and_files_outside_are_accepted(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "samples" / "sub").mkdir(parents=True)
    for p in ["samples/my_pick.npy", "samples/sub", "data.npy", "tb_notes.npy", "../other.npy"]:
        rd._check_data_not_written(run_dir, str(run_dir / p))


# ---- 3. run_dir.has_result: a finished run stopped by train.time_budget ----------------------------------------------

# WAS A BUG: a run that finished normally by train.time_budget (evaluate=False: no metrics.json) logs its last update short of train.steps, so once its step checkpoints are deleted its early best counts as "a start killed early" and a plain `train --out` there deletes it without --overwrite (round 47's bug, for budget-stopped runs)
def test_a_run_finished_by_its_time_budget_keeps_its_best(tmp_path):
    import ebmlab
    out = tmp_path / "run"
    x = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    ebmlab.train(data=x, out=out, evaluate=False, overrides=[*TINY, "train.checkpoint_every=4",
                                                             "train.time_budget=0.000001"])
    assert (out / "checkpoints" / "best.safetensors").is_file()
    for p in (out / "checkpoints").glob("step_*"):
        p.unlink()  # the user keeps the result only
    assert rd.has_result(out)
    with pytest.raises(RunError, match="--overwrite"):
        rd._new_run_needs_clearing(out, False)


def test_killed_start_with_early_best_is_reused_and_finished_run_kept(tmp_path):
    d = tmp_path / "run"
    run_with_best(d, steps=8, checkpoint_every=4, best_step=4, logged=4)
    log = (d / "metrics.jsonl").read_text(encoding="utf-8")
    (d / "metrics.jsonl").write_text(log + '{"step": 8, "loss": 0.1')  # a truncated last line does not count
    assert not rd.has_result(d)
    (d / "metrics.jsonl").write_text(log + "not json\n" + json.dumps({"step": 8}) + "\n")
    assert rd.has_result(d)
    (d / "checkpoints" / "best.json").write_text(json.dumps({"step": 5}))  # after the first checkpoint's step
    (d / "metrics.jsonl").write_text(log)
    assert rd.has_result(d)


# ---- 4. run.only_leftovers, resume_config's advice, TOP_TEMPS --------------------------------------------------------

@pytest.mark.parametrize("names, ok", [
    ([".0123abcd.config.yaml.tmp"], True), (["config.yaml.tmp"], True),
    ([".0123abcd.config.yaml.tmp", ".deadbeef.run.json.tmp", ".00ff00ff.data.npy.tmp"], True),
    ([".0123abcd.notes.txt.tmp"], False), ([".0123ABCD.config.yaml.tmp"], False),
    ([".0123abc.config.yaml.tmp"], False), (["config.yaml"], False), ([".0123abcd.config.yaml"], False),
    (["configXyaml.tmp"], False), ([".0123abcd.config.yaml.tmp", "mine.txt"], False)])
def test_only_leftovers(tmp_path, names, ok):
    assert run.only_leftovers([tmp_path / n for n in names]) is ok


# WAS A BUG: only_leftovers (and so a plain `train --out DIR`, no --overwrite) takes a *directory* named like a temp file (`samples.tmp/`, `.0123abcd.config.yaml.tmp/`) for a killed write's leftover and deletes it whole with the user's files inside; atomic writes never leave a directory
@pytest.mark.parametrize("name", ["samples.tmp", ".0123abcd.config.yaml.tmp"])
def test_a_users_folder_named_like_a_leftover_is_not_deleted(tmp_path, name):
    d = tmp_path / "out"
    (d / name).mkdir(parents=True)
    (d / name / "mine.txt").write_text("precious")
    assert not run.only_leftovers(list(d.iterdir()))
    with pytest.raises(RunError, match="not an ebmlab run"):
        rd.check_run_dir(d, resume=False, overwrite=False)


def test_resume_advice_on_leftovers_works_when_followed(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "run.lock").write_text("")
    (d / ".0123abcd.config.yaml.tmp").write_text("half")
    with pytest.raises(RunNotFound, match="start it again without --resume"):
        run.resume_config(d, [], None)
    rd.check_run_dir(d, resume=False, overwrite=False)  # followed: a new start is not refused
    assert rd._new_run_needs_clearing(d, False)
    rd._remove_run_files(d)
    assert sorted(p.name for p in d.iterdir()) == ["run.lock"]
    (d / ".0123abcd.notes.txt.tmp").write_text("mine")  # a user's file: no such advice, and a start refuses
    with pytest.raises(RunNotFound) as info:
        run.resume_config(d, [], None)
    assert "without --resume" not in str(info.value)
    with pytest.raises(RunError, match="not an ebmlab run"):
        rd.check_run_dir(d, resume=False, overwrite=False)


def test_clear_temps_on_resume_keeps_users_and_links(tmp_path):
    d = tmp_path / "run"
    (d / "checkpoints").mkdir(parents=True)
    (d / ".0123abcd.config.yaml.tmp").write_text("x")
    (d / ".0123abcd.step_00000002.json.tmp").write_text("a top-level name that is not a run entry")
    (d / "checkpoints" / ".0123abcd.step_00000002.safetensors.tmp").write_text("x")
    (d / "checkpoints" / ".0123abcd.mine.txt.tmp").write_text("mine")
    (d / "elsewhere.txt").write_text("target")
    (d / "checkpoints" / ".0123abcd.best.json.tmp").symlink_to(d / "elsewhere.txt")
    rd._clear_temps(d)
    assert sorted(p.name for p in d.iterdir()) == [".0123abcd.step_00000002.json.tmp", "checkpoints", "elsewhere.txt"]
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == [".0123abcd.best.json.tmp",
                                                                   ".0123abcd.mine.txt.tmp"]


# ---- 5. files._place_new / _rename_noreplace / _renameat2 ---------------------------------------------------------

@linux
def test_renameat2_reads_errno_through_ctypes(tmp_path):
    call = files._renameat2()
    assert call is not None
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    ctypes.set_errno(0)
    assert call(files._AT_FDCWD, os.fsencode(tmp_path / "a"), files._AT_FDCWD, os.fsencode(tmp_path / "b"),
                files._RENAME_NOREPLACE) == -1
    assert ctypes.get_errno() == errno.EEXIST
    ctypes.set_errno(0)
    assert call(files._AT_FDCWD, os.fsencode(tmp_path / "nope"), files._AT_FDCWD, os.fsencode(tmp_path / "c"),
                files._RENAME_NOREPLACE) == -1
    assert ctypes.get_errno() == errno.ENOENT
    ctypes.set_errno(0)
    assert call(files._AT_FDCWD, os.fsencode(tmp_path / "a"), files._AT_FDCWD, os.fsencode(tmp_path / "c"),
                1 << 30) == -1  # an unknown flag: what a file system without RENAME_NOREPLACE answers
    assert ctypes.get_errno() == errno.EINVAL


@linux
def test_place_new_with_relative_paths_a_dangling_link_and_a_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path(".0123abcd.s.npy.tmp").write_text("new")
    files._place_new(Path(".0123abcd.s.npy.tmp"), Path("s.npy"))
    assert sorted(os.listdir(".")) == ["s.npy"]
    Path("dangling").symlink_to("nowhere")
    (tmp_path / "adir").mkdir()
    for target in ("dangling", "adir"):
        tmp = Path(f".0123abcd.{target}.tmp")
        tmp.write_text("other")
        with pytest.raises(FileExistsError) as info:
            files._place_new(tmp, Path(target))
        assert info.value.errno == errno.EEXIST and info.value.filename == target
        tmp.unlink()
    assert os.readlink("dangling") == "nowhere" and not os.listdir("adir")


def _renameat2_failing(monkeypatch, code: int) -> None:
    def call(*_):
        ctypes.set_errno(code)
        return -1
    monkeypatch.setattr(files, "_renameat2", lambda: call)


def test_enoent_from_renameat2_is_not_taken_for_a_missing_flag(tmp_path, monkeypatch):
    _renameat2_failing(monkeypatch, errno.ENOENT)
    with pytest.raises(FileNotFoundError):
        files._place_new(tmp_path / ".0123abcd.s.npy.tmp", tmp_path / "s.npy")
    assert not (tmp_path / "s.npy").exists()


def test_atomic_write_without_replace_leaves_no_temp_when_renameat2_fails_otherwise(tmp_path, monkeypatch):
    _renameat2_failing(monkeypatch, errno.EACCES)
    with pytest.raises(PermissionError):
        files.atomic_write(tmp_path / "s.txt", lambda p: p.write_text("x", encoding="utf-8"), replace=False)
    assert os.listdir(tmp_path) == []


# ---- 6. selection._read_start ---------------------------------------------------------------------------------------

def test_read_start_keeps_the_first_validation_rows_in_order(tmp_path):
    rows = list(range(VALIDATION_ROWS + 7))
    (tmp_path / selection.START_FILE).write_text(json.dumps({"score": 0.5, "rows": rows}))
    score, got = selection._read_start(tmp_path)
    assert score == 0.5 and got.dtype == torch.float64
    assert got.tolist() == [float(r) for r in rows[:VALIDATION_ROWS]]
    (tmp_path / selection.START_FILE).write_text(json.dumps({"score": 0.5, "rows": rows[:3]}))
    assert selection._read_start(tmp_path)[1].tolist() == [0.0, 1.0, 2.0]
    (tmp_path / selection.START_FILE).write_text('{"score": 0.5, "rows": [1, 2')  # truncated
    assert selection._read_start(tmp_path) == (None, None)


# WAS A BUG (the helper's seen-and-left, mended): "rows" a number (valid JSON, hand-made damage) raised IndexError out
# of the margin's start instead of reading as no start
@pytest.mark.parametrize("rows", [3.0, [[1.0, 2.0]], "abc"])
def test_read_start_of_a_damaged_rows_field_is_no_start(tmp_path, rows):
    (tmp_path / selection.START_FILE).write_text(json.dumps({"score": 1.0, "rows": rows}), encoding="utf-8")
    score, terms = selection._read_start(tmp_path)
    assert (score, terms) == (None, None)


def test_a_run_in_a_hidden_folder_below_the_data_folder_is_accepted(tmp_path):
    (tmp_path / "imgs" / ".runs").mkdir(parents=True)
    rd._check_data_not_written(tmp_path / "imgs" / ".runs" / "r", str(tmp_path / "imgs"))  # both skip hidden paths
    rd._check_data_not_written(tmp_path / "imgs" / "runs" / ".r", str(tmp_path / "imgs"))  # (the run itself hidden)
    with pytest.raises(ConfigError, match="holds run"):
        rd._check_data_not_written(tmp_path / "imgs" / "runs" / "r", str(tmp_path / "imgs"))


# WAS A BUG (older than round 49, the same rule): with a config.yaml beside it, --overwrite deleted a user's folder
# named *.tmp whole
def test_overwrite_keeps_a_users_folder_named_like_a_temp_file(tmp_path):
    d = finished_run_files(tmp_path / "r")
    (d / "notes.tmp").mkdir()
    (d / "notes.tmp" / "mine.txt").write_text("MINE", encoding="utf-8")
    (d / ".0123abcd.metrics.json.tmp").write_text("{}", encoding="utf-8")
    rd._remove_run_files(d)
    assert (d / "notes.tmp" / "mine.txt").read_text(encoding="utf-8") == "MINE"
    assert not (d / ".0123abcd.metrics.json.tmp").exists() and not (d / "metrics.json").exists()
