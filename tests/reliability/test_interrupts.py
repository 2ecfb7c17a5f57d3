"""Ctrl-C at any moment leaves every file whole (an audit of Ctrl-C across the commands, 2026-12-06, docs/testing.md
"Ctrl-C"): the interruption is planted at the rename that publishes a file, the last moment of a write. And the
results say which weights they describe, so results an interruption left behind newer weights can be told apart."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ebmlab
from ebmlab import files
from ebmlab.experiments import cells
from ebmlab.training.logging import RunLogger, read_metrics


def _interrupt_at_rename(monkeypatch):
    def replace(src, dst):
        raise KeyboardInterrupt
    monkeypatch.setattr(files.os, "replace", replace)


def _cell_fn(params, seed, run_dir):
    return {"step": 1, "diverged": None, "score": float(seed)}


def test_an_empty_cell_record_runs_the_cell_again_with_a_warning(tmp_path):
    cell = cells.Cell("a", 0, _cell_fn)
    cells.run_cells(tmp_path, [cell], jobs=1)
    record = cells.cell_dir(tmp_path, cell) / "cell.json"
    record.write_text("", encoding="utf-8")  # what a Ctrl-C during a plain write left
    with pytest.warns(RuntimeWarning, match="not a cell record"):
        out = cells.run_cells(tmp_path, [cell], jobs=1)
    assert out[("a", 0)]["metrics"]["score"] == 0.0 and json.loads(record.read_text(encoding="utf-8"))["key"]


def test_a_cell_record_interrupted_while_written_is_absent_not_empty(tmp_path, monkeypatch):
    cell = cells.Cell("a", 0, _cell_fn)
    _interrupt_at_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        cells.run_cells(tmp_path, [cell], jobs=1)
    assert not list(cells.cell_dir(tmp_path, cell).glob("cell.json*"))


def test_resume_interrupted_while_rewriting_the_log_keeps_it_and_leaves_no_temp_file(tmp_path, monkeypatch):
    text = "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 31))
    (tmp_path / "metrics.jsonl").write_text(text, encoding="utf-8")
    _interrupt_at_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        RunLogger(tmp_path, tensorboard=False).truncate_after(20)
    assert (tmp_path / "metrics.jsonl").read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
    monkeypatch.undo()
    RunLogger(tmp_path, tensorboard=False).truncate_after(20)
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, 21))


def test_samples_interrupted_while_written_keep_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "samples.npy"
    files.save_npy_atomic(path, np.zeros(3))
    _interrupt_at_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        files.save_npy_atomic(path, np.ones(3))
    monkeypatch.undo()
    assert np.array_equal(np.load(path), np.zeros(3)) and sorted(p.name for p in tmp_path.iterdir()) == ["samples.npy"]


def test_metrics_json_names_the_checkpoint_it_describes(tmp_path):
    """A resume that trains on and is stopped before its evaluation (here: evaluate=False) leaves the earlier
    metrics.json beside newer weights; its checkpoint_step says so (the compare command reads it)."""
    train = {"steps": 6, "threads": 1, "progress": False}
    small = {"n_samples": 64, "grid_size": 8, "long_run_factor": 1, "plots": False}
    run = ebmlab.train("hybrid", "8gaussians", out=tmp_path / "r", train=train, eval=small)
    assert run.metrics["checkpoint_step"] == 6
    later = ebmlab.resume(tmp_path / "r", train={"steps": 8}, evaluate=False)
    stored = json.loads((tmp_path / "r" / "metrics.json").read_text(encoding="utf-8"))
    assert later.checkpoint_step == 8 and stored["checkpoint_step"] == 6
