"""Run directories: --overwrite never deletes what is not a run (and only after validation), a failed
start does not block its rerun, --resume follows the run's own config, the lock, metrics.jsonl."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ebmlab.training.logging import read_metrics
from ebmlab.training.run import LOCK_NAME, RunLock

from .conftest import TINY, assert_one_sentence, cli, digits_argv, latest, sets, snapshot, write_points


def _victim(tmp_path):
    v = tmp_path / "victim"
    v.mkdir()
    (v / "thesis.tex").write_text("precious")
    (v / "sub").mkdir()
    (v / "sub" / "data.csv").write_text("1,2\n")
    return v


# ----- --overwrite --------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", ["missing", "good"])
def test_overwrite_never_deletes_a_non_run_directory(data, trained_root, tmp_path, capsys):
    v = _victim(tmp_path)
    before = snapshot(v)
    path = tmp_path / "nope.npy" if data == "missing" else trained_root / "points.npy"
    code, _, err = cli(capsys, "train", "--out", v, "--overwrite", "--data", path, *sets())
    assert_one_sentence(code, err, "not an ebmlab run")  # said first: the directory is checked before the data
    assert snapshot(v) == before


# the objective's own demands on the data, checked when it is built: a model for images on vectors, a method's
# image-only component, a method that needs a time-conditioned model given the MLP
REFUSED_BY_THE_OBJECTIVE = {"model for images": ["model.name=resnet"],
                            "image-only component": ["method.name=improved_cd", "method.augment=true"],
                            "mlp without a noise level": ["method.name=cdrl", "data.name=digits"]}


def _refused(bad: str) -> list[str]:
    """``--set`` arguments of a tiny run the objective refuses (TINY's method keys are the default method's)."""
    return [a for o in TINY if not o.startswith("method.") for a in ("--set", o)] + [
        a for o in REFUSED_BY_THE_OBJECTIVE[bad] for a in ("--set", o)]


@pytest.mark.parametrize("bad", ["nan data", "bad config", "missing data", *REFUSED_BY_THE_OBJECTIVE])
def test_overwrite_of_a_run_validates_first(bad, run_copy, tmp_path, capsys):
    before = snapshot(run_copy)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((40, 2), np.nan))
    args = {"nan data": [*sets(), "--data", nan], "bad config": [*sets(), "--set", "train.lr=-1"],
            "missing data": [*sets(), "--data", tmp_path / "none.npy"]}.get(bad) or _refused(bad)
    code, _, err = cli(capsys, "train", "--out", run_copy, "--overwrite", *args)
    assert_one_sentence(code, err)
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("bad", sorted(REFUSED_BY_THE_OBJECTIVE))
def test_a_start_the_objective_refuses_writes_nothing(bad, tmp_path, capsys):
    out = tmp_path / "new" / "run"
    code, _, err = cli(capsys, "train", "--out", out, *_refused(bad))
    assert_one_sentence(code, err, {"model for images": "needs image data", "image-only component": "need image data",
                                    "mlp without a noise level": "takes no time"}[bad])
    assert not out.exists()


def test_overwrite_replaces_a_run_but_keeps_foreign_files(run_copy, trained_root, capsys):
    (run_copy / "notes.txt").write_text("mine")
    code, _, _ = cli(capsys, "train", "--out", run_copy, "--overwrite", "--data", trained_root / "points.npy",
                     *sets("train.steps=1"))
    assert code == 0
    assert (run_copy / "notes.txt").read_text() == "mine"
    assert [r["step"] for r in read_metrics(run_copy)] == [1]
    assert not (run_copy / LOCK_NAME).exists()


@pytest.mark.parametrize("inside", ["data.npy", "samples/kept.npy"])
def test_overwrite_keeps_the_data_file_the_new_run_reads_from_the_old_one(inside, run_copy, trained_root, capsys):
    """Retraining a run on its own saved array (or on its samples) used to delete that file while clearing the run:
    the new run trained, then could not be evaluated or resumed."""
    data = run_copy / inside
    data.parent.mkdir(exist_ok=True)
    np.save(data, np.load(trained_root / "points.npy"))
    (run_copy / "samples").mkdir(exist_ok=True)
    (run_copy / "samples" / "other.npy").write_bytes(b"x")
    (run_copy / "samples" / "samples.npy").write_bytes(b"old")  # the old run's final samples: training replaces them
    code, _, _ = cli(capsys, "train", "--out", run_copy, "--overwrite", "--data", data, *sets("train.steps=1"))
    assert code == 0 and np.array_equal(np.load(data), np.load(trained_root / "points.npy"))
    assert (run_copy / "samples" / "other.npy").read_bytes() == b"x"  # not a file training writes: kept
    assert np.load(run_copy / "samples" / "samples.npy").ndim == 2  # the new run's (written with or without plots)
    assert cli(capsys, "eval", run_copy)[0] == 0  # the new run's data file is there, with its SHA-256
    assert cli(capsys, "train", "--out", run_copy, "--resume", *sets("train.steps=2"))[0] == 0


def test_existing_run_without_overwrite(run_copy, trained_root, capsys):
    before = snapshot(run_copy)
    code, _, err = cli(capsys, "train", "--out", run_copy, "--data", trained_root / "points.npy", *sets())
    assert_one_sentence(code, err, "already exists")
    assert "--resume" in err and snapshot(run_copy) == before


def test_non_empty_directory_without_overwrite(tmp_path, trained_root, capsys):
    v = _victim(tmp_path)
    before = snapshot(v)
    code, _, err = cli(capsys, "train", "--out", v, "--data", trained_root / "points.npy", *sets())
    assert_one_sentence(code, err, "already exists")
    assert snapshot(v) == before


@pytest.mark.parametrize("where", ["is a file", "under a file"])
def test_out_is_or_lies_under_a_file(where, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep")
    out = f if where == "is a file" else f / "run"
    code, _, err = cli(capsys, "train", "--out", out, *sets())
    assert_one_sentence(code, err, "file")
    assert f.read_text() == "keep"


# ----- a failed start does not block the corrected rerun -------------------------------------------
@pytest.mark.parametrize("left", ["config only", "config and log", "config, log, tb and temp file"])
def test_rerun_after_a_start_without_checkpoint(left, trained_root, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("train:\n  steps: 2\n")
    if "log" in left:
        (out / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
        (out / "checkpoints").mkdir()
    if "tb" in left:
        (out / "tb").mkdir()
        (out / "checkpoints" / "step_00000002.safetensors.tmp").write_bytes(b"partial")
    code, _, err = cli(capsys, "train", "--out", out, "--data", trained_root / "points.npy", *sets())
    assert code == 0, err
    assert [r["step"] for r in read_metrics(out)] == [1, 2]


def test_failed_start_then_corrected_rerun(trained_root, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--out", out, "--data", tmp_path / "typo.npy", *sets())
    assert_one_sentence(code, err, "does not exist")
    code, _, err = cli(capsys, "train", "--out", out, "--data", trained_root / "points.npy", *sets())
    assert code == 0, err


def test_resume_of_a_run_without_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("train:\n  steps: 2\n")
    code, _, err = cli(capsys, "train", "--out", out, "--resume")
    assert_one_sentence(code, err, "no checkpoint")
    assert "without --resume" in err


@pytest.mark.parametrize("argv,needle", [(["--resume", "--overwrite"], "only one"), (["--resume"], "no checkpoint")])
def test_resume_misuse(argv, needle, tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--out", tmp_path / "none", *argv)
    assert_one_sentence(code, err, needle)


# ----- --resume follows the run's own config ----------------------------------------------------------
@pytest.mark.parametrize("override,key", [("train.lr=0.5", "train.lr"), ("model.width=16", "model.width"),
                                          ("method.name=data", "method.name"), ("data.seed=3", "data.seed"),
                                          ("train.batch_size=16", "train.batch_size")])
def test_resume_refuses_fixed_keys(override, key, run_copy, capsys):
    before = snapshot(run_copy)
    code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", override)
    assert_one_sentence(code, err, key)
    assert snapshot(run_copy) == before


def test_resume_records_allowed_changes_from_any_directory(run_copy, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # neither the original --data nor the original --set are repeated
    code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=3",
                       "--set", "eval.n_samples=16")
    assert code == 0, err
    cfg = yaml.safe_load((run_copy / "config.yaml").read_text())
    assert cfg["train"]["steps"] == 3 and cfg["eval"]["n_samples"] == 16
    change = json.loads((run_copy / "config_changes.jsonl").read_text().splitlines()[-1])
    assert change["changes"]["train.steps"] == {"old": 2, "new": 3} and change["resumed_at_step"] == 2
    assert [r["step"] for r in read_metrics(run_copy)] == [1, 2, 3]


def test_resume_to_fewer_steps_than_ran_is_refused(run_copy, capsys):
    """Resuming a run at step 2 to train.steps=1 trained nothing and rewrote config.yaml to 1 step."""
    before = snapshot(run_copy)
    code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=1")
    assert_one_sentence(code, err, "the run is already at step 2")
    assert snapshot(run_copy) == before


def test_resume_to_other_steps_under_a_cosine_schedule_is_refused(trained_root, tmp_path, capsys):
    """The cosine decay is laid out over train.steps: resuming to more steps restarted it (the learning rate
    jumped back up) and no uninterrupted run gives those losses."""
    out = tmp_path / "cos"
    code, _, err = cli(capsys, "train", "--out", out, "--data", trained_root / "points.npy",
                       *sets("train.lr_schedule=cosine"))
    assert code == 0, err
    before = snapshot(out)
    code, _, err = cli(capsys, "train", "--out", out, "--resume", "--set", "train.steps=4")
    assert_one_sentence(code, err, "train.lr_schedule cosine")
    assert snapshot(out) == before


def test_resume_with_another_data_file_is_refused(run_copy, tmp_path, capsys):
    other = write_points(tmp_path / "other.npy", seed=5)
    code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--data", other)
    assert_one_sentence(code, err, "holds other data than run")  # (round 41: said as other bytes)


def test_resume_with_a_changed_data_file_is_refused(trained_root, tmp_path, capsys):
    data = write_points(tmp_path / "pts.npy")
    out = tmp_path / "run"
    assert cli(capsys, "train", "--out", out, "--data", data, *sets())[0] == 0
    write_points(data, seed=9)  # same name, other numbers
    code, _, err = cli(capsys, "train", "--out", out, "--resume", "--set", "train.steps=3")
    assert_one_sentence(code, err, "has changed")
    assert str(data) in err


# ----- the lock -------------------------------------------------------------------------------------------
def test_second_trainer_is_refused_while_the_lock_is_held(run_copy, capsys):
    before = snapshot(run_copy)
    with RunLock.acquire(run_copy):
        code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=3")
    assert_one_sentence(code, err, "in use")
    assert {k: v for k, v in snapshot(run_copy).items() if k != LOCK_NAME} == before


def test_lock_of_a_live_process_is_respected(run_copy, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_copy / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename}))
        code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=3")
        assert_one_sentence(code, err, f"pid {sleeper.pid}")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(run_copy, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_copy / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=3")
    assert code == 0, err
    assert not (run_copy / LOCK_NAME).exists()


@pytest.mark.slow  # a whole-process run: the slow tier (the default suite's ten minutes)
def test_two_new_trainings_into_one_directory(trained_root, tmp_path):
    """Started together: exactly one trains, the other gets one sentence; every step is logged once."""
    out = tmp_path / "race"
    cmd = [sys.executable, "-m", "ebmlab", "train", "--out", str(out), "--data", str(trained_root / "points.npy"),
           *sets("train.steps=20")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=120)]]  # (closes the pipes)
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    err = next(e for c, e in results if c == 2)
    assert "Traceback" not in err and ("in use" in err or "already exists" in err), err
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 21))


# ----- metrics.jsonl ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated last line", "garbage line"])
def test_damaged_metrics_log_does_not_block_resume(damage, run_copy, capsys):
    log = run_copy / "metrics.jsonl"
    if damage == "truncated last line":
        log.write_text(log.read_text() + '{"step": 3, "loss": 0.12')
    else:
        lines = log.read_text().splitlines()
        log.write_text("\n".join([lines[0], "\x00\x00garbage", *lines[1:]]) + "\n")
    code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=3")
    assert code == 0, err
    assert "metrics.jsonl" in err and "warning" in err and "Traceback" not in err
    assert [r["step"] for r in read_metrics(run_copy)] == [1, 2, 3]
    for line in log.read_text().splitlines():
        json.loads(line)


def test_checkpoint_from_latest_is_used_after_resume(run_copy, capsys):
    code, _, _ = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=4")
    assert code == 0 and latest(run_copy).name == "step_00000004.safetensors"


@pytest.mark.slow  # a whole-process run: the slow tier (the default suite's ten minutes)
def test_second_resume_while_the_first_trains(run_copy, capsys):
    """A second --resume of a run that a live trainer holds is refused; no step is logged twice."""
    cmd = [sys.executable, "-m", "ebmlab", "train", "--out", str(run_copy), "--resume", "--set", "train.steps=100000",
           "--set", "train.checkpoint_every=1000"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.time() + 300  # a hang guard: the loop waits on the log
        while len(read_metrics(run_copy)) < 5:
            assert first.poll() is None and time.time() < deadline, "the trainer ended or logged nothing in 300 s"
            time.sleep(0.05)
        assert (run_copy / LOCK_NAME).exists()
        code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=100000")
        assert_one_sentence(code, err, "in use")
        assert f"pid {first.pid}" in err
    finally:
        first.kill()
        first.wait()
    steps = [r["step"] for r in read_metrics(run_copy)]
    assert steps == list(range(1, len(steps) + 1))


def test_overwrite_keeps_the_users_files_inside_the_runs_folders(run_copy, trained_root, capsys):
    """An image walkthrough (2026-12-06) lost a pick of samples, a figure and a copied checkpoint the user had put in
    samples/, plots/ and checkpoints/, and ``ebmlab sample``'s draws: --overwrite deleted those folders whole, where
    the README promises to delete only what ``ebmlab train`` writes."""
    assert cli(capsys, "sample", run_copy, "--n", "4")[0] == 0
    drawn = sorted(p.name for p in (run_copy / "samples").glob("samples_noise_*"))
    (run_copy / "plots").mkdir(exist_ok=True)
    mine = {"samples/my_pick.npy": b"pick", "plots/my_fig.png": b"fig",
            "checkpoints/keep_me.safetensors": latest(run_copy).read_bytes()}
    for rel, content in mine.items():
        (run_copy / rel).write_bytes(content)
    old = sorted(p.name for p in (run_copy / "checkpoints").glob("step_*"))
    assert len(old) >= 4 and drawn  # steps 1 and 2, each a tensor file and a sidecar
    with pytest.warns(UserWarning, match="did not write"):
        code, _, _ = cli(capsys, "train", "--out", run_copy, "--overwrite", "--data", trained_root / "points.npy",
                         *sets("train.steps=1"))
    assert code == 0
    assert {rel: (run_copy / rel).read_bytes() for rel in mine} == mine
    assert sorted(p.name for p in (run_copy / "samples").glob("samples_noise_*")) == drawn
    assert sorted(p.name for p in (run_copy / "checkpoints").glob("step_*")) == [
        "step_00000001.json", "step_00000001.safetensors"]  # the old run's step 2 went, the new run wrote step 1
    assert [r["step"] for r in read_metrics(run_copy)] == [1]
    assert cli(capsys, "eval", run_copy)[0] == 0  # the kept checkpoint is not taken for one of the run's


def _train_files(run: Path) -> list[str]:
    """The files of a run's folders (relative paths) that ``run_dir.TRAIN_FILES`` does not name."""
    from ebmlab.training.run_dir import TRAIN_FILES
    return [str(p.relative_to(run)) for folder, names in TRAIN_FILES.items() if (run / folder).is_dir()
            for p in (run / folder).iterdir() if not names.fullmatch(p.name)]


@pytest.mark.parametrize("kind", ["vector", "image"])
def test_every_file_training_writes_in_its_folders_is_named(kind, tmp_path, capsys):
    """--overwrite deletes the files TRAIN_FILES names and keeps the rest: a file training writes under another name
    would outlive an overwrite. Plots, periodic sample figures and checkpoint selection on."""
    if kind == "vector":
        argv = ["train", "--out", tmp_path / "run", "--data", write_points(tmp_path / "points.npy"),
                *sets("eval.plots=true", "train.sample_every=1", "train.select_every=1")]
    else:
        argv = digits_argv(tmp_path / "run", "train.steps=2", "train.sample_every=1", "eval.digits_fd=false")
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    folders = [f for f in ("checkpoints", "samples", "plots") if any((tmp_path / "run" / f).glob("*"))]
    assert folders == ["checkpoints", "samples", "plots"]
    assert _train_files(tmp_path / "run") == []


def test_a_resume_whose_config_write_failed_records_its_changes_once_on_the_rerun(run_copy, monkeypatch, capsys):
    """The row was appended before config.yaml was rewritten: a full disk at that write, then a rerun of the same
    command, left the same change in config_changes.jsonl twice (docs/testing.md "Leftovers of the thirteenth session")."""
    import errno as _errno

    import ebmlab.config as config_module

    real, calls = config_module.save_config, []

    def full_once(cfg, path, *a, **k):
        calls.append(Path(path).name)
        if len(calls) == 1:
            raise OSError(_errno.ENOSPC, "No space left on device", str(path))
        return real(cfg, path, *a, **k)

    monkeypatch.setattr(config_module, "save_config", full_once)
    code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=3")
    assert code == 2 and "free some disk space" in err, err
    code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=3")
    assert code == 0, err
    rows = [json.loads(line) for line in (run_copy / "config_changes.jsonl").read_text().splitlines()]
    assert [r["changes"] for r in rows] == [{"train.steps": {"old": 2, "new": 3}}]
    assert yaml.safe_load((run_copy / "config.yaml").read_text())["train"]["steps"] == 3
