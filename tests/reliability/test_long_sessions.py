"""Long runs and long Python sessions stay bounded, and a resumed run's records agree (an audit of long runs, 2026-12-06,
docs/testing.md "Long runs and long sessions"):

- a run with ``train.sample_every`` that ends without its final evaluation (``evaluate=False``, an error, Ctrl-C)
  closes its TensorBoard image writer: each such call in a notebook left one writer thread running;
- resuming rewrites ``metrics.jsonl`` line by line: it held the whole log in memory, about 7.5 times its size;
- TensorBoard hides what the interrupted run logged after the checkpoint a run resumes from, as ``metrics.jsonl``
  drops those rows: it showed those steps twice.
"""
from __future__ import annotations

import json
import threading
import tracemalloc

import pytest

import ebmlab
from ebmlab.training import loop
from ebmlab.training.logging import RunLogger, read_metrics

TOY = {"steps": 10, "sample_every": 5, "threads": 1, "progress": False}


@pytest.mark.slow  # a whole-process run: the slow tier (the default suite's ten minutes)
def test_a_run_ended_without_its_evaluation_leaves_no_writer_thread(tmp_path):
    before = threading.active_count()
    for i in range(2):
        ebmlab.train("hybrid", "8gaussians", out=tmp_path / f"r{i}", train=TOY, evaluate=False)
    assert threading.active_count() <= before


def test_a_run_stopped_by_an_error_leaves_no_writer_thread(tmp_path, monkeypatch):
    update = loop.Trainer._update

    def failing(self):
        if self.step == 7:  # after the figure of step 5 opened the image writer
            raise RuntimeError("planted")
        return update(self)
    monkeypatch.setattr(loop.Trainer, "_update", failing)
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="planted"):
        ebmlab.train("hybrid", "8gaussians", out=tmp_path / "r", train=TOY)
    assert (tmp_path / "r" / "samples").is_dir() and threading.active_count() <= before


def test_resuming_a_long_log_holds_one_line_at_a_time(tmp_path):
    row = {f"metric_{k}": 0.123456789 for k in range(20)}
    with open(tmp_path / "metrics.jsonl", "w", encoding="utf-8") as fh:
        for step in range(1, 20_001):
            fh.write(json.dumps({"step": step, **row}) + "\n")
        fh.write('{"step": 20001, "metr')  # a kill mid-write
    size = (tmp_path / "metrics.jsonl").stat().st_size  # ~10 MB
    logger = RunLogger(tmp_path, tensorboard=False)
    tracemalloc.start()
    try:
        logger.truncate_after(10_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 10_001))
    assert peak < size / 20  # a few lines' worth; the whole log parsed held ~7.5 times its size


@pytest.mark.slow  # a whole-process run: the slow tier (the default suite's ten minutes)
def test_tensorboard_hides_what_the_interrupted_run_logged_after_the_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "r"
    cfg = {"steps": 30, "checkpoint_every": 10, "log_every": 1, "threads": 1, "progress": False}
    ebmlab.train("hybrid", "8gaussians", out=run, train=cfg, evaluate=False)
    for f in (run / "checkpoints").glob("step_00000030.*"):  # as if killed at update 30 before its checkpoint
        f.unlink()
    ebmlab.resume(run, train={"steps": 40}, evaluate=False)  # from update 20
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("loss")]
    assert steps == [r["step"] for r in read_metrics(run)] == list(range(1, 41))
