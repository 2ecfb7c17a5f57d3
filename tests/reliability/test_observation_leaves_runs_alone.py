"""Observing a run does not change the run: what only watches training (the log's frequency, TensorBoard, the
progress bar, sample figures, checkpoint frequency and pruning, the EMA's shadow, the validation checks of
``train.select_every``, the final evaluation, an ``ebmlab eval`` between two resumes) leaves the trained weights and
the logged values bit for bit as they are without it, for every method; so do the entry point (``ebmlab train --set``
or ``ebmlab.train``) and the process (a fresh one, or one that trained other runs before).

Each case trains a tiny run twice, observed and not, and compares the final checkpoint's tensors and every value
the two logs share (wall times excepted; a sparser log's rows must equal the denser log's rows of the same steps).
"""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmlab.objectives import METHODS
from ebmlab.training import checkpoint as ckpt
from ebmlab.training import logging as run_logging
from ebmlab.training.config import load_config
from ebmlab.training.evaluate import final_evaluation
from ebmlab.training.hooks import sample_hook
from ebmlab.training.logging import read_metrics
from ebmlab.training.loop import Trainer
from tests.contracts.test_objective_contract import SHRINK, tiny_overrides
from tests.runs import fit_in

# ~50 s of whole runs (every method, twice each): with the slow tests (make test-slow; .ci/run runs both), so the
# default suite stays near its ten minutes
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")]

STEPS = 6
QUIET = [f"train.steps={STEPS}", "train.log_every=1", "train.checkpoint_every=1000", "train.sample_every=0",
         "train.progress=false", "train.threads=1", "eval.n_samples=32", "eval.long_run_factor=1", "eval.grid_size=12"]
CLOCKS = {"time", "select_seconds"}
SELECTION_ROWS = {"val_energy_distance"}  # what a check adds to its step's row
IMAGE_CONFIGS = ["digits_hybrid", "paper000_digits_cdce", "paper001_digits", "paper002_digits", "paper003_digits",
                 "paper003_digits_cond"]
# everything that only watches, switched on at once (TensorBoard is on unless a test patches it off)
WATCHED = ["train.log_every=4", "train.checkpoint_every=1", "train.keep_checkpoints=2", "train.sample_every=3",
           "train.progress=true"]
# the final evaluation at test cost: no figures, no mixture base to fit, one draw per check (the user-data defaults
# of ebmlab.train on rows without a config would choose them)
CHEAP_EVAL = ["eval.plots=false", "model.base=null", "train.select_every=2", "train.select_draws=1"]
CHECKED = ["train.select_every=2", "train.select_start=true", "train.select_draws=2"]


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    """(160, 3) float32 rows of a user's table (a validation split for the checks)."""
    path = tmp_path_factory.mktemp("rows") / "rows.npy"
    np.save(path, np.random.default_rng(0).normal(size=(160, 3)).astype(np.float32))
    return path


def _fields(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(METHODS[name].config)}


def _tiny(name: str, rows: Path | None = None) -> list[str]:
    """Method ``name`` at test size (``ebm_warmup`` 0: paper 003's energy would otherwise not move in 6 updates),
    on the rows of ``rows`` with a validation split where given, else on the 2-D toy."""
    over = tiny_overrides(name) + ["model.width=8", "data.n_train=128", "data.n_test=32"] + QUIET
    over += ["method.ebm_warmup=0"] if "ebm_warmup" in _fields(name) else []
    if rows is not None:
        over += ["data.name=array", f"data.path={rows}", "data.whiten=true", "data.jitter=0.3",
                 "data.val_fraction=0.25"]
    return over


def _image(config: str) -> list[str]:
    """A shipped digits config on a tiny network (its augmentation, multi-scale energy, labels, buffers kept)."""
    method = load_config(config, []).method.name
    shrink = [f"method.{k}={v}" for k, v in SHRINK.items()
              if k in _fields(method) and k not in ("augment", "multiscale")]
    over = shrink + ["model.channels=[4]", "train.batch_size=8", "data.n_train=48", "data.n_test=16"] + QUIET
    over = [o for o in over if not o.startswith("train.steps=")] + ["train.steps=3", "eval.n_samples=8"]
    return over + (["method.ebm_warmup=0"] if "ebm_warmup" in _fields(method) else [])


def _train(run_dir: Path, overrides: list[str], config: str | None = None, evaluate: bool = False,
           resume: bool = False) -> Trainer:
    """``ebmlab train``'s path: the run directory, the trainer, the loop with the sample hooks, the final evaluation."""
    return fit_in(run_dir, load_config(config, overrides), resume=resume, on_sample=sample_hook,
                  after=final_evaluation if evaluate else None)


def _result(run_dir: Path, prefix: str = "") -> tuple[dict, dict]:
    """({name: tensor} of the latest checkpoint whose names start with ``prefix``, {step: logged values})."""
    tensors, _ = ckpt.load_checkpoint(ckpt.latest_checkpoint(Path(run_dir) / "checkpoints"))
    rows = {r["step"]: {k: v for k, v in r.items() if k not in CLOCKS} for r in read_metrics(run_dir)}
    return {k: v for k, v in tensors.items() if k.startswith(prefix)}, rows


def _same_value(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():  # NaN equal to NaN: a controller's acceptance average before its first visit
        return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
    return torch.equal(a, b)


def _differences(plain: Path, watched: Path, prefix: str = "") -> dict:
    """{what: how much} where the watched run's final tensors or logged values differ from the plain run's (the
    watched log may be sparser and may carry the checks' scores)."""
    (ta, ra), (tb, rb) = _result(plain, prefix), _result(watched, prefix)
    out = {}
    for k in sorted(set(ta) | set(tb)):
        if k not in ta or k not in tb:
            out[k] = "missing"
        elif not _same_tensor(ta[k], tb[k]):
            out[k] = (float((ta[k].double() - tb[k].double()).abs().nan_to_num(0).max())
                      if ta[k].is_floating_point() and ta[k].shape == tb[k].shape else "differs")
    assert set(rb) <= set(ra), "the watched run logged a step the plain run did not"
    for step, row in rb.items():
        for key, value in row.items():
            if key in SELECTION_ROWS and key not in ra[step]:
                continue
            if key not in ra[step] or not _same_value(ra[step][key], value):
                out[f"log step {step} {key}"] = (ra[step].get(key), value)
    return out


def _tensorboard_off(monkeypatch) -> None:
    """No TensorBoard writer at all (what a missing tensorboard package gives)."""
    init = run_logging.RunLogger.__init__

    def without(self, run_dir, enabled=True, tensorboard=True, resumed_at=0):
        init(self, run_dir, enabled, False, resumed_at)
    monkeypatch.setattr(run_logging.RunLogger, "__init__", without)
    monkeypatch.setattr(run_logging, "_summary_writer", lambda log_dir: None)


# ----- every method: every observer at once --------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(METHODS))
def test_watching_a_run_leaves_its_weights_and_log_alone(name, rows_file, tmp_path, monkeypatch):
    """Plain: a row per update, no TensorBoard, no EMA, no figures, one checkpoint, no checks. Watched: a row every
    4th update, TensorBoard, the EMA, a scatter every 3rd, a pruned checkpoint every update, a progress bar, and the
    validation checks (the start's too, two draws each). The network, its buffers (replay buffers, controllers) and
    the shared log values are the same bits."""
    over = _tiny(name, rows_file)
    with monkeypatch.context() as m:
        _tensorboard_off(m)
        _train(tmp_path / "plain", over + ["train.ema=null"])
    _train(tmp_path / "watched", over + WATCHED + CHECKED + ["train.ema=0.9"])
    assert not _differences(tmp_path / "plain", tmp_path / "watched", prefix="model.")
    assert len(ckpt.list_checkpoints(tmp_path / "watched" / "checkpoints")) == 2
    assert len(list((tmp_path / "watched" / "samples").glob("scatter_step*.png"))) == STEPS // 3
    assert any("val_energy_distance" in r for r in read_metrics(tmp_path / "watched"))


# ----- one method, one observer at a time (which one, when the test above fails) -------------------------
OBSERVERS = {
    "log_every": ["train.log_every=4"],
    "sample_every": ["train.sample_every=1"],
    "checkpoint_every_and_pruning": ["train.checkpoint_every=1", "train.keep_checkpoints=1"],
    "progress": ["train.progress=true"],
    "select_every": ["train.select_every=1", "train.select_start=true"],
    "select_window_paired_margin": ["train.select_every=1", "train.select_window=3", "train.select_paired=true"],
    "select_margin": ["train.select_every=2", "train.select_start=true", "train.select_margin=1.0"],
}


@pytest.mark.parametrize("observer", sorted(OBSERVERS))
def test_each_observer_alone_leaves_the_run_alone(observer, rows_file, tmp_path):
    over = _tiny("persistent", rows_file)
    _train(tmp_path / "plain", over)
    _train(tmp_path / "watched", over + OBSERVERS[observer])
    assert not _differences(tmp_path / "plain", tmp_path / "watched")


def test_tensorboard_on_or_off_leaves_the_run_alone(rows_file, tmp_path, monkeypatch):
    over = _tiny("hybrid", rows_file) + ["train.sample_every=2"]
    _train(tmp_path / "on", over)
    with monkeypatch.context() as m:
        _tensorboard_off(m)
        _train(tmp_path / "off", over)
    assert list((tmp_path / "on" / "tb").glob("events.*")) and not (tmp_path / "off" / "tb").exists()
    assert not _differences(tmp_path / "off", tmp_path / "on")


@pytest.mark.parametrize("name", ["hybrid", "noise"])
def test_the_likelihood_check_on_a_mixture_base_leaves_the_run_alone(name, rows_file, tmp_path):
    over = _tiny(name, rows_file) + ["model.base=gmm"]
    _train(tmp_path / "plain", over)
    _train(tmp_path / "watched", over + ["train.select_every=1", "train.select_start=true",
                                         "train.select_likelihood=true", "train.select_margin=0.5"])
    assert not _differences(tmp_path / "plain", tmp_path / "watched")


@pytest.mark.parametrize("name", ["cdrl", "drl"])
def test_checks_and_figures_leave_spectral_norm_vectors_alone(name, rows_file, tmp_path):
    """Paper 003's toy EBM with spectral norm: a check or a figure in train mode would run a power iteration and
    move the ``_u``/``_v`` buffers; they are the same bits as without them."""
    over = _tiny(name, rows_file) + ["model.spectral_norm=true"]
    _train(tmp_path / "plain", over)
    _train(tmp_path / "watched", over + ["train.select_every=2", "train.select_start=true", "train.sample_every=1"])
    keys = _result(tmp_path / "plain")[0]
    assert any(k.endswith("_u") for k in keys)
    assert not _differences(tmp_path / "plain", tmp_path / "watched")


# ----- image runs: sample grids ---------------------------------------------------------------------------
@pytest.mark.parametrize("config", IMAGE_CONFIGS)
def test_image_grids_leave_an_image_run_alone(config, tmp_path):
    over = _image(config)
    _train(tmp_path / "plain", over, config=config)
    _train(tmp_path / "watched", over + ["train.sample_every=1", "train.checkpoint_every=1", "train.keep_checkpoints=1",
                                         "train.log_every=2"], config=config)
    assert len(list((tmp_path / "watched" / "samples").glob("grid_step*.png"))) == 3
    assert not _differences(tmp_path / "plain", tmp_path / "watched")


def test_image_grids_leave_spectral_norm_and_group_norm_alone(tmp_path):
    over = _image("paper003_digits") + ["model.spectral_norm=true"]
    _train(tmp_path / "plain", over, config="paper003_digits")
    _train(tmp_path / "watched", over + ["train.sample_every=1"], config="paper003_digits")
    assert not _differences(tmp_path / "plain", tmp_path / "watched")


# ----- the final evaluation and an ebmlab eval between two resumes --------------------------------------
@pytest.mark.parametrize("name", ["hybrid", "persistent_refresh", "implicit_diffusion"])
def test_evaluating_between_resumes_leaves_the_resumed_run_alone(name, rows_file, tmp_path):
    """Trained to 3 updates without an evaluation, resumed to 6; and trained to 3 with the final evaluation, then
    ``Run.evaluate(heldout_draws=2)`` (``ebmlab eval RUN --heldout-draws 2``), resumed to 6 and evaluated: the same
    checkpoints and log."""
    import ebmlab

    over = [o for o in _tiny(name, rows_file) if not o.startswith("train.steps=")] + CHEAP_EVAL
    ebmlab.train(overrides=over + ["train.steps=3"], out=tmp_path / "plain", evaluate=False)
    run = ebmlab.train(overrides=over + ["train.steps=3"], out=tmp_path / "seen", evaluate=True)
    assert not _differences(tmp_path / "plain", tmp_path / "seen")
    run.evaluate(heldout_draws=2)
    ebmlab.resume(tmp_path / "plain", overrides=["train.steps=6"], evaluate=False)
    plots = ["eval.plots=true"] if name == "hybrid" else []  # the figures of the final evaluation, once (slow)
    ebmlab.resume(tmp_path / "seen", overrides=["train.steps=6", *plots], evaluate=True)
    assert (tmp_path / "seen" / "plots" / "density.png").is_file() == bool(plots)
    assert not _differences(tmp_path / "plain", tmp_path / "seen")


# ----- entry points and processes ----------------------------------------------------------------------------
def test_the_cli_in_a_fresh_process_trains_what_python_trains_in_a_used_one(rows_file, tmp_path):
    """``ebmlab train --set ...`` in a new interpreter and ``ebmlab.train(overrides=...)`` here, after this process
    trained other runs (global RNG, thread count, module caches): the same weights and log."""
    import ebmlab

    over = _tiny("joint_cd", rows_file) + CHEAP_EVAL
    _train(tmp_path / "before", _tiny("persistent_refresh") + ["train.seed=9"])  # the process is used
    torch.rand(7)  # and its global generator moved
    ebmlab.train(overrides=over, out=tmp_path / "python")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parents[2] / "src"),
                                                                     os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ebmlab", "train", "--out", str(tmp_path / "cli")]
    cmd += [arg for o in over for arg in ("--set", o)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not _differences(tmp_path / "python", tmp_path / "cli")


@pytest.mark.parametrize("name", ["cd_ce", "improved_cd", "per_t"])
def test_a_second_run_in_the_same_process_is_the_first(name, tmp_path):
    over = _tiny(name)
    _train(tmp_path / "first", over)
    _train(tmp_path / "other", _tiny("cdrl") + ["train.seed=3", "train.sample_every=3", "eval.plots=false"],
           evaluate=True)  # another method in between
    torch.rand(5)
    _train(tmp_path / "second", over)
    assert not _differences(tmp_path / "first", tmp_path / "second")
