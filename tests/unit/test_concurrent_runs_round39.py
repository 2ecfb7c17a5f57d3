"""Round 39: one run directory used by several processes at once.

A trainer (a subprocess) writes checkpoints while this process (another process) evaluates, samples, loads,
compares, resumes and overwrites the same run; two samplers write one ``--out`` at once; an experiment's cell is
trained while another process would train it. The interleavings a reader can meet only by chance (a checkpoint
pruned or the validation best replaced between two of the reader's file reads) are replayed exactly by running
the trainer's own write (``checkpoint.save_checkpoint`` / ``prune``) at that point of the reader. Tests marked
``# WAS A BUG`` failed on the code as audited (commit ``f8dcc43``; docs/testing.md "Thirty-ninth round").
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab import files
from tests.cli_helpers import cli, sets
from ebmlab.errors import CheckpointError, RunError
from ebmlab.training import checkpoint as ckpt
from ebmlab.training import run as runmod
from ebmlab.training.lock import RunLock

SRC = Path(__file__).resolve().parents[2] / "src"
TINY = ["model.width=8", "model.depth=1", "data.n_train=256", "data.n_test=32", "eval.n_samples=32",
        "eval.grid_size=8", "eval.long_run_factor=1", "train.progress=false", "eval.plots=false",
        "train.batch_size=32", "method.n_steps=3", "method.n_steps_data=2", "train.log_every=1", "train.threads=1"]
SELECT = ["data.val_fraction=0.2", "train.select_every=5", "train.checkpoint_every=5"]
HANG = 300  # seconds: waits on a live process end when it answers; this bound only catches a hang


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC))


def _ebmlab(*argv) -> list[str]:
    return [sys.executable, "-m", "ebmlab", *map(str, argv)]


def _sets(*overrides: str) -> list[str]:
    return sets(TINY, *overrides)


_cli = cli


def _one_sentence(code: int, err: str, status: int = 2) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == status, (code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("ebmlab: error:"), err
    return lines[0]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    """A finished tiny run with step checkpoints 5 and 10 and a validation best."""
    out = tmp_path_factory.mktemp("done") / "run"
    subprocess.run(_ebmlab("train", "--out", out, *_sets(*SELECT, "train.steps=10")), env=_env(), check=True,
                   capture_output=True, timeout=120)
    assert ckpt.best_path(out / "checkpoints").is_file()
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory, done_run):
    """A trainer in another process: a validation best every 5 updates until the last test stops it with SIGTERM (no
    wall-clock budget: on a loaded machine the checks must still overlap it). ``done_run`` is trained first, so that
    its training is not spent inside the trainer's life."""
    out = tmp_path_factory.mktemp("live") / "run"
    proc = subprocess.Popen(_ebmlab("train", "--out", out, *_sets(*SELECT, "train.steps=10000000")),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + HANG  # (a guard against a hang only: the loop waits on the files)
    while not (out / "checkpoints" / "best.json").is_file() or not (out / "run.lock").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"the trainer wrote no validation best in {HANG} s"
        time.sleep(0.2)
    yield proc, out
    if proc.poll() is None:
        proc.kill()  # (only when a test failed before the trainer finished)
        proc.wait()


def _alive(live) -> Path:
    proc, out = live
    assert proc.poll() is None, "the trainer ended before this check could overlap it"
    return out


# ----- against a live trainer ------------------------------------------------------------------------------
def test_eval_of_a_run_in_training_is_refused_by_the_lock_in_one_sentence_naming_the_trainer(live, capsys):
    out = _alive(live)
    line = _one_sentence(*_cli(capsys, "eval", out)[::2])
    assert "in use by another ebmlab process" in line and f"pid {live[0].pid}" in line
    assert str(live[0].pid) in (out / "run.lock").read_text()  # the refusal left the trainer's lock as it was


def test_resume_of_a_run_in_training_is_refused_by_the_lock_in_one_sentence(live, capsys):
    out = _alive(live)
    line = _one_sentence(*_cli(capsys, "train", "--out", out, "--resume", "--set", "train.threads=1")[::2])
    assert "in use by another ebmlab process" in line and "wait for it to finish" in line


def test_overwrite_of_a_run_in_training_is_refused_and_deletes_nothing(live, capsys):
    out = _alive(live)
    before = len(ckpt.list_checkpoints(out / "checkpoints"))
    line = _one_sentence(*_cli(capsys, "train", "--out", out, "--overwrite", *_sets())[::2])
    assert "in use by another ebmlab process" in line
    assert (out / "config.yaml").is_file() and len(ckpt.list_checkpoints(out / "checkpoints")) >= before


def test_python_train_into_a_run_in_training_is_refused_with_the_lock_sentence(live):
    out = _alive(live)
    with pytest.raises(RunError, match="in use by another ebmlab process"):
        ebmlab.train("hybrid", "rings", out=out, overwrite=True, overrides=TINY + ["train.steps=2"])


# WAS A BUG: a plain second `ebmlab train --out RUN` of a run in training is told to pass --resume or --overwrite, both refused by the lock
def test_a_second_train_into_a_run_in_training_says_it_is_in_use_not_to_resume_or_overwrite_it(live, capsys):
    out = _alive(live)
    line = _one_sentence(*_cli(capsys, "train", "--out", out, *_sets())[::2])
    assert "in use by another ebmlab process" in line, line


# WAS A BUG: `ebmlab compare` of a run still training tells the user to run `ebmlab eval RUN`, which the trainer's lock refuses
def test_compare_of_a_run_in_training_says_it_is_still_training(live, done_run, capsys):
    out = _alive(live)
    line = _one_sentence(*_cli(capsys, "compare", out, done_run)[::2])
    assert "ebmlab eval" not in line and ("training" in line or "in use" in line), line


def _half_best(exc: CheckpointError) -> bool:
    """The two sentences of a reader meeting the half-best window: while the trainer holds the run's lock it
    says the best is being replaced (round 43's lock probe), else that its sidecar is missing."""
    return "being replaced by the process training the run" in str(exc) or "best.json beside it is missing" in str(exc)


def test_loading_and_sampling_a_run_in_training_never_fails_and_never_mixes_weights(live, capsys, tmp_path):
    """ebmlab.load + Run.sample, and `ebmlab sample`, hammered while the trainer replaces its best every few
    updates: each opened best holds the weights of the step checkpoint its sidecar names."""
    proc, out = live
    _alive(live)
    t_end, hang, n, half = time.time() + 4, time.time() + HANG, 0, []
    while n < 3 or time.time() < t_end:  # at least 4 s and 3 whole rounds, however loaded the machine
        assert proc.poll() is None and time.time() < hang, ("the trainer ended or a round hung", n, half)
        try:
            best, meta = ckpt.load_checkpoint(ckpt.result_checkpoint(out / "checkpoints"))
        except CheckpointError as exc:  # the half-best window, pinned exactly by the BUG test below
            assert _half_best(exc), str(exc)
            half.append(str(exc))
            continue
        step_file = out / "checkpoints" / ckpt.step_name(meta["step"])
        if step_file.is_file():
            same, _ = ckpt.load_checkpoint(step_file)
            assert all(torch.equal(v, same[k]) for k, v in best.items() if k.startswith("model.")), meta["step"]
        try:
            run = ebmlab.load(out)
        except CheckpointError as exc:
            assert _half_best(exc), str(exc)
            half.append(str(exc))
            continue
        assert np.isfinite(np.asarray(run.sample(8))).all()
        n += 1
    if half:
        print(f"{len(half)} read(s) met the half-best window: {half[0]}")
    code, stdout, err = _cli(capsys, "sample", out, "--out", tmp_path / "s.npy", "--n", "16")
    assert code == 0 and "Traceback" not in err and (tmp_path / "s.npy").is_file()
    assert not list(out.glob("samples/samples_*"))  # --out: nothing written into the training run


@pytest.mark.slow  # a whole-process run: the slow tier (the default suite's ten minutes)
def test_the_trainer_stops_undisturbed_by_the_readers_frees_its_lock_and_finishes(live):
    """The last test: the trainer, stopped with SIGTERM, ends as an undisturbed run does (its sentence, its lock
    released, no temp file), and a resume to two updates later finishes the run with its evaluation."""
    proc, out = live
    _alive(live)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=HANG)
    last = stderr.strip().splitlines()[-1]
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr
    assert last.startswith("ebmlab: stopped by SIGTERM after update "), stderr
    assert not (out / "run.lock").exists()
    names = {p.name for p in (out / "checkpoints").iterdir()}
    assert not [n for n in names if n.endswith(".tmp")], names
    step = int(last.split("after update ")[1].split()[0])
    subprocess.run(_ebmlab("train", "--out", out, "--resume", "--set", f"train.steps={step + 2}"), env=_env(),
                   check=True, capture_output=True, timeout=HANG)
    assert (out / "metrics.json").is_file() and not (out / "run.lock").exists()
    ebmlab.load(out)  # the finished run opens


# ----- interleavings replayed exactly ----------------------------------------------------------------------
def _pair(d: Path, step: int, value: float) -> None:
    ckpt.save_checkpoint(d, step, {"model.w": torch.full((4, 4), value)}, {"config_hash": "x"}, name=ckpt.BEST)


# WAS A BUG: a reader of best.* can pair the sidecar of one validation best with the weights of the next (same size, accepted)
def test_a_best_replaced_between_the_readers_sidecar_and_tensor_reads_is_never_returned_mixed(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    _pair(d, 5, 5.0)
    real = Path.read_text
    fired = []

    def read_text(self, *a, **k):  # the trainer writes its next best right after the reader read the sidecar
        text = real(self, *a, **k)
        if self.name == "best.json" and not fired:
            fired.append(1)
            _pair(d, 10, 10.0)
        return text

    monkeypatch.setattr(Path, "read_text", read_text)
    try:
        tensors, meta = ckpt.load_checkpoint(ckpt.best_path(d))
    except CheckpointError:
        return  # refusing (or better: re-reading) is fine; a mixed pair is not
    assert float(tensors["model.w"][0, 0]) == meta["step"], (meta["step"], float(tensors["model.w"][0, 0]))


# WAS A BUG: a reader that comes while the trainer replaces best.* is told to delete the run's result (best.safetensors)
def test_a_reader_during_the_replacement_of_the_best_is_not_told_to_delete_the_runs_result(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    _pair(d, 5, 5.0)
    real, seen = os.replace, []

    def replace(src, dst):  # the reader comes between the trainer's unlink of best.json and its renames
        if Path(dst).name == "best.safetensors" and not seen:
            try:
                seen.append(ckpt.result_checkpoint(d))
            except CheckpointError as exc:
                seen.append(exc)
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    with RunLock.acquire(tmp_path):  # the trainer holds its run's lock while it writes the best
        _pair(d, 10, 10.0)
    got = seen[0]
    assert not isinstance(got, CheckpointError) or "delete" not in str(got), str(got)


def _trainers_next_checkpoint(run_dir: Path, keep: int = 1) -> None:
    """What the trainer does at its next checkpoint with train.keep_checkpoints=keep: write, then prune."""
    d = run_dir / "checkpoints"
    step, last = ckpt.list_checkpoints(d)[-1]
    tensors, meta = ckpt.load_checkpoint(last)
    ckpt.save_checkpoint(d, step + 5, tensors, meta)
    ckpt.prune(d, keep)


@pytest.fixture()
def pruned_run(done_run, tmp_path) -> Path:
    """A copy of the finished run without its best, as a run with train.keep_checkpoints=1 and no selection."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(done_run, out)
    for p in (out / "checkpoints").glob("best.*"):
        p.unlink()
    ckpt.prune(out / "checkpoints", 1)
    return out


# WAS A BUG: ebmlab.load of a run training with train.keep_checkpoints fails when the checkpoint it picked is pruned before it is read
def test_load_while_the_newest_checkpoint_is_written_and_the_one_picked_pruned_opens_the_newest(pruned_run, monkeypatch):
    real = ckpt.result_checkpoint

    def result_checkpoint(d):
        path = real(d)
        _trainers_next_checkpoint(pruned_run)  # between the reader's listing and its reading
        monkeypatch.setattr(runmod.ckpt, "result_checkpoint", real)
        return path

    monkeypatch.setattr(runmod.ckpt, "result_checkpoint", result_checkpoint)
    run = ebmlab.load(pruned_run)  # the run has a complete checkpoint all along: step 15
    assert run.checkpoint_step == 15


# WAS A BUG: ebmlab.load says "no checkpoint ...; train the run first" of a run that had a checkpoint at every instant (listing raced a prune)
def test_a_listing_that_races_the_trainers_prune_never_reports_no_checkpoint(pruned_run, monkeypatch):
    real, fired = Path.iterdir, []

    def iterdir(self):  # a directory read as scandir reads it while entries change: the new pair not yet seen
        entries = list(real(self))
        if self.name != "checkpoints" or fired:
            yield from entries
            return
        fired.append(1)
        _trainers_next_checkpoint(pruned_run)
        yield from entries  # the snapshot before: step 10 (now pruned), not step 15

    monkeypatch.setattr(Path, "iterdir", iterdir)
    try:
        run = runmod.open_checkpoint(pruned_run, need_data=False)
    except CheckpointError as exc:
        pytest.fail(f"a run with a checkpoint at every instant was refused: {exc}")
    assert run.step == 15


# WAS A BUG: two atomic writes of one file at once share one temp name (NAME.tmp): the file left is a mix of both
def test_two_atomic_writes_of_one_file_at_once_never_leave_a_mixed_file(tmp_path):
    target = tmp_path / "same.npy"
    a, b = np.zeros(4096), np.ones(4096)
    buf = __import__("io").BytesIO()
    np.save(buf, a)
    raw_a = buf.getvalue()

    def write_a(tmp: Path) -> None:  # the other `ebmlab sample --out same.npy` writes all of its file meanwhile
        with open(tmp, "wb") as fh:
            fh.write(raw_a[:len(raw_a) // 2])
            fh.flush()
            files.save_npy_atomic(target, b)
            fh.write(raw_a[len(raw_a) // 2:])

    try:
        files.atomic_write(target, write_a)
    except OSError:
        pass  # one of them may fail; the file left must be one whole write
    got = np.load(target)
    assert np.array_equal(got, a) or np.array_equal(got, b), "a mix of the two writes"


# WAS A BUG: two `ebmlab sample RUN --out SAME` at once both succeed: the second silently replaces the first without --overwrite
@pytest.mark.slow  # a whole-process run: the slow tier (the default suite's ten minutes)
def test_two_samplers_writing_one_out_at_once_replace_nothing_without_overwrite(done_run, tmp_path):
    out = tmp_path / "same.npy"
    argv = _ebmlab("sample", done_run, "--out", out, "--steps", "1500", "--n", "200")
    procs = [subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    for code, _, err in results:
        assert "Traceback" not in err, err
    assert sorted(code for code, _, _ in results) == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert "pass --overwrite" in refused, refused


# WAS A BUG: an experiment's cell is trained without its run lock (dropped at once): a second experiment or --resume on it is not refused
def test_an_experiment_cell_is_locked_while_it_trains(tmp_path, monkeypatch):
    from ebmlab.experiments import runner
    from ebmlab.training.config import load_config

    cell = tmp_path / "cells" / "a"
    probe = ("import sys\nfrom ebmlab.training.lock import RunLock\nfrom ebmlab.errors import RunError\n"
             "try:\n    RunLock.acquire(sys.argv[1]).release()\nexcept RunError:\n    sys.exit(3)\n")
    codes = []
    real_fit = runner.Trainer.fit

    def fit(self, *a, **k):  # another process (a second `ebmlab experiment --out` the same DIR) comes to the cell
        codes.append(subprocess.run([sys.executable, "-c", probe, str(cell)], env=_env(), timeout=60).returncode)
        return real_fit(self, *a, **k)

    monkeypatch.setattr(runner.Trainer, "fit", fit)
    cfg = load_config(None, TINY + ["train.steps=2", "train.checkpoint_every=1"])
    runner.train_and_evaluate(cell, cfg)
    assert codes == [3], "the cell's lock was free while it trained"


# WAS A BUG: two `ebmlab experiment NAME --out DIR` at once both ran: every cell trained twice, each process's
# prepare_run_dir(overwrite=True) deleting the other's files mid-training
def test_a_second_experiment_into_one_out_is_refused_while_the_first_runs(tmp_path, monkeypatch):
    import functools
    import importlib

    from ebmlab import experiments

    module = importlib.import_module(experiments.EXPERIMENTS["paper001"])
    real, calls = module.run, []

    @functools.wraps(real)
    def run(out, *a, **k):
        calls.append(out)
        if len(calls) == 1:  # the first experiment runs: a second one comes to the same --out
            with pytest.raises(RunError, match="in use by another ebmlab process"):
                experiments.run_experiment("paper001", out, quick=True)
        return {}

    monkeypatch.setattr(module, "run", run)
    experiments.run_experiment("paper001", tmp_path / "ex", quick=True)
    assert len(calls) == 1 and not (tmp_path / "ex" / "run.lock").exists()
    experiments.run_experiment("paper001", tmp_path / "ex", quick=True)  # a rerun once it has finished: allowed
    assert len(calls) == 2
