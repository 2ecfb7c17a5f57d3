"""A resumed run is the uninterrupted run, for every method (issue 13's "exact resume", which
``tests/unit/test_checkpoint.py`` checked for two of paper 004's schemes only).

Each method keeps its own state across updates: replay buffers (paper 001, paper 004's persistent
schemes, paper 002's latents), step-size controllers and their acceptance averages (paper 000), the
cooperative initializer and its optimizer (paper 003), augmentation draws (paper 001 on images), and the
run's own: the EMA, the learning-rate schedule and the checkpoint selection's history. A piece left
out of a checkpoint shows as a logged value that differs after the resume point, or as a different
final state. Every case trains N updates in one go, and again stopped (as by Ctrl-C) after N/2 and resumed, and
compares every logged value (wall times excepted) and the whole final state, bit for bit (NaN equal
to NaN: a controller's acceptance average is NaN until its first level is visited).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmlab.objectives import METHODS
from ebmlab.training import checkpoint as ckpt
from ebmlab.training.config import load_config
from ebmlab.training.logging import read_metrics
from ebmlab.training.loop import Trainer
from tests.contracts.test_objective_contract import SHRINK, tiny_overrides
from tests.unit.test_checkpoint import _train

STEPS = 8
RUN = [f"train.steps={STEPS}", "train.checkpoint_every=1", "train.log_every=1", "train.progress=false",
       "train.threads=1"]
IMAGE_CONFIGS = ["digits_hybrid", "paper000_digits_cdce", "paper001_digits", "paper002_digits", "paper003_digits",
                 "paper003_digits_cond"]
CLOCKS = {"time", "select_seconds"}  # wall times: the only values a resume may change


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _assert_resume_is_exact(config, overrides: list, tmp_path: Path, monkeypatch) -> None:
    full = _train(tmp_path / "full", overrides, config=config)
    _stop_after(STEPS // 2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "part", overrides, config=config)
    monkeypatch.undo()
    resumed = _train(tmp_path / "part", overrides, resume=True, config=config)
    rows_full, rows_part = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert [r["step"] for r in rows_part] == [r["step"] for r in rows_full] == list(range(1, STEPS + 1))
    for a, b in zip(rows_full, rows_part):
        assert a.keys() == b.keys(), a["step"]
        differing = {k: (a[k], b[k]) for k in a if k not in CLOCKS and not _same(a[k], b[k])}
        assert not differing, f"update {a['step']}: {differing}"
    for state_full, state_resumed in ((full.objective.state_dict(), resumed.objective.state_dict()),
                                      (full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"])):
        assert state_full.keys() == state_resumed.keys()
        for key, value in state_full.items():
            for v, w in _tensors(value, state_resumed[key]):
                assert torch.equal(v, w) or (v.is_floating_point() and torch.equal(v.isnan(), w.isnan())
                                             and torch.equal(v.nan_to_num(), w.nan_to_num())), key
    assert _selection(full) == _selection(resumed)
    assert _best(tmp_path / "full") == _best(tmp_path / "part")


def _stop_after(step: int, monkeypatch) -> None:
    """Interrupt training (as Ctrl-C does) when update ``step + 1`` begins: the run stops with its checkpoint of
    ``step`` (``checkpoint_every=1``), mid-run, where a finished run resumed to more steps would have closed its
    selection windows at its end (README, ``ebmlab.resume``)."""
    update = Trainer._update

    def stopping(self):
        if self.step == step:
            raise KeyboardInterrupt
        return update(self)
    monkeypatch.setattr(Trainer, "_update", stopping)


def _selection(trainer: Trainer):
    """What checkpoint selection decided and still weighs (None without it); repr keeps NaN and inf comparable."""
    s = trainer.selector
    return None if s is None else repr((s.state(), s.best_step, s.best_score, s.best_check, s.held_back))


def _best(run_dir: Path):
    """The step, score and weights of the run's ``checkpoints/best.safetensors`` (None when there is none)."""
    path = run_dir / "checkpoints" / "best.safetensors"
    if not path.is_file():
        return None
    tensors, meta = ckpt.load_checkpoint(path)
    return meta["step"], repr(meta.get("val_energy_distance")), {k: v.numpy().tobytes() for k, v in tensors.items()}


def _tensors(a, b):
    """Pairs of tensors of two equal-shaped states (a tensor, or an optimizer's per-parameter dict)."""
    if isinstance(a, dict):
        return [(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a]
    return [(a, b)]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_resumes_to_the_uninterrupted_run(name, tmp_path, monkeypatch):
    overrides = tiny_overrides(name) + RUN + ["data.n_train=128", "data.n_test=32"]
    _assert_resume_is_exact(None, overrides, tmp_path, monkeypatch)


@pytest.mark.parametrize("config", IMAGE_CONFIGS)
def test_every_image_config_resumes_to_the_uninterrupted_run(config, tmp_path, monkeypatch):
    """The digits configs as shipped (augmentation, multi-scale energies, class labels, image buffers) on a
    smaller network and batch."""
    method = load_config(config, []).method.name
    fields = {f.name for f in dataclasses.fields(METHODS[method].config)}
    shrink = [f"method.{k}={v}" for k, v in SHRINK.items() if k in fields and k not in ("augment", "multiscale")]
    overrides = RUN + shrink + ["model.channels=[4]", "train.batch_size=8", "data.n_train=64", "data.n_test=32"]
    _assert_resume_is_exact(config, overrides, tmp_path, monkeypatch)


@pytest.mark.filterwarnings("ignore:train.select_every:RuntimeWarning")  # tiny updates: a check may cost more
@pytest.mark.parametrize("name", ["hybrid", "improved_cd", "cdrl", "joint_cd"])
def test_a_run_on_your_data_with_selection_and_a_schedule_resumes_exactly(name, tmp_path, monkeypatch):
    """The user-data path (whitening, jitter, a validation split, checkpoint selection over a window, a
    step schedule with warm-up, clipping, pruned checkpoints) for one method of each family."""
    path = tmp_path / "rows.npy"
    np.save(path, np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32))
    overrides = tiny_overrides(name) + RUN + [
        "data.name=array", f"data.path={path}", "data.whiten=true", "data.jitter=0.3", "data.val_fraction=0.2",
        "train.select_every=2", "train.select_window=3", "train.select_start=true", "train.lr_schedule=step",
        "train.lr_decay_steps=3", "train.warmup_steps=2", "train.grad_clip=1.0", "train.keep_checkpoints=2"]
    _assert_resume_is_exact(None, overrides, tmp_path, monkeypatch)


def _wide_rows(path: Path | None = None) -> np.ndarray:
    """(200, 3) float64 rows of spread ~1 at 1e7 (projected metres), which float32 rounds by 0.5; saved to ``path``."""
    x = np.random.default_rng(1).normal(size=(200, 3)) + 1e7
    if path is not None:
        np.save(path, x)
    return x


def test_a_run_on_float64_rows_resumes_exactly(tmp_path, monkeypatch):
    """A float64 file at 1e7 (read in float64, standardised with a float64 shift) with the user-data defaults."""
    path = tmp_path / "rows.npy"
    _wide_rows(path)
    overrides = tiny_overrides("hybrid") + RUN + ["data.name=array", f"data.path={path}", "data.whiten=true",
                                                  "data.val_fraction=0.2", "train.select_every=2"]
    _assert_resume_is_exact(None, overrides, tmp_path, monkeypatch)


def test_float64_rows_given_in_memory_are_kept_in_float64_and_resume_exactly(tmp_path, monkeypatch):
    """``ebmlab.train`` on float64 rows in memory: ``data.npy`` holds them in float64, the run (and ``run.data()``,
    which ``eval`` reads) has the rows it trained on, and stopped and resumed it is the uninterrupted run."""
    import ebmlab

    x = _wide_rows()
    over = {"model.width": 16, "model.depth": 1, "train.batch_size": 16, "train.select_every": None,
            "train.checkpoint_every": 1, "train.log_every": 1}

    def train(out, **kw):
        return ebmlab.train("hybrid", x, out=out, evaluate=False, overrides=over,
                            train={"steps": STEPS, "threads": 1, "progress": False}, **kw)
    full = train(tmp_path / "full")
    _stop_after(STEPS // 2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "part")
    monkeypatch.undo()
    part = train(tmp_path / "part", resume=True)
    assert np.load(tmp_path / "part" / "data.npy").dtype == np.float64
    assert np.array_equal(np.load(tmp_path / "part" / "data.npy"), x)
    assert full.transform.dtype == torch.float64 and full.transform.same_as(part.transform)
    assert torch.equal(full.data().train, part.data().train)
    assert torch.equal(full.data().transform.to_data(full.data().train), part.data().transform.to_data(
        part.data().train))
    drop = lambda rows: [{k: v for k, v in r.items() if k not in CLOCKS} for r in rows]  # noqa: E731
    assert drop(read_metrics(tmp_path / "full")) == drop(read_metrics(tmp_path / "part"))
    for k, v in full.objective.state_dict().items():
        assert torch.equal(v, part.objective.state_dict()[k]), k


def test_a_run_from_before_float64_rows_still_opens_and_resumes_on_its_float32_rows(tmp_path, monkeypatch):
    """A run trained on a float64 file before float64 rows kept their precision (the file read in float32: its
    run.json transform float32, without ``dtype``) reopens on the float32 rows it trained on, and stopped and
    resumed now (``ebmlab.resume``) it is the uninterrupted run of then."""
    import ebmlab
    from ebmlab.data import arrays
    from ebmlab.training.run_data import read_run_info, run_dataset, write_run_info

    path = tmp_path / "rows.npy"
    _wide_rows(path)
    old = arrays.check_vectors
    overrides = tiny_overrides("hybrid") + RUN + ["data.name=array", f"data.path={path}"]
    with monkeypatch.context() as m:
        m.setattr(arrays, "check_vectors", lambda *a, **k: old(*a, **k).float())  # as ebmlab read them before
        full = _train(tmp_path / "full", overrides)
        _stop_after(STEPS // 2, m)
        with pytest.raises(KeyboardInterrupt):
            _train(tmp_path / "part", overrides)
    for run in ("full", "part"):
        write_run_info(tmp_path / run, full.cfg, full.data)
    assert "dtype" not in read_run_info(tmp_path / "part")["transform"]
    now = run_dataset(tmp_path / "part", full.cfg)
    assert now.transform.dtype == torch.float32 and now.transform.same_as(full.data.transform)
    assert torch.equal(now.train, full.data.train) and torch.equal(now.test, full.data.test)
    ebmlab.resume(tmp_path / "part", evaluate=False)
    rows_full, rows_part = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    drop = lambda rows: [{k: v for k, v in r.items() if k not in CLOCKS} for r in rows]  # noqa: E731
    assert drop(rows_full) == drop(rows_part)
    assert ebmlab.load(tmp_path / "part").sample(8).dtype == torch.float32


def test_a_run_on_float32_data_npy_resumed_with_the_float64_rows_trains_on_its_own(tmp_path, monkeypatch):
    """A run whose ``data.npy`` is float32 (every run on data in memory before float64 rows kept their precision),
    resumed by ``ebmlab.train(x, resume=True)`` with the float64 rows it was given then, trains on on its float32
    rows: the uninterrupted run's updates."""
    import ebmlab

    x = _wide_rows() - 1e7 + 1e3  # float32 rounds it by 3e-5: the float64 rows are not the float32 ones
    over = {"model.width": 16, "model.depth": 1, "train.batch_size": 16, "train.select_every": None,
            "train.checkpoint_every": 1, "train.log_every": 1}

    def train(out, rows, **kw):
        return ebmlab.train("hybrid", rows, out=out, evaluate=False, overrides=over,
                            train={"steps": STEPS, "threads": 1, "progress": False}, **kw)
    train(tmp_path / "full", x.astype(np.float32))
    _stop_after(STEPS // 2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "part", x.astype(np.float32))
    monkeypatch.undo()
    train(tmp_path / "part", x, resume=True)
    drop = lambda rows: [{k: v for k, v in r.items() if k not in CLOCKS} for r in rows]  # noqa: E731
    assert drop(read_metrics(tmp_path / "full")) == drop(read_metrics(tmp_path / "part"))
