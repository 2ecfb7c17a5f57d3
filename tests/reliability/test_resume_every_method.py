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
