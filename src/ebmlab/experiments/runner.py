"""Train and evaluate one arm of an ``ebmlab experiment``, the same way for every paper. (The results files are
written by ``claims.write_claim_results`` for the papers and by the leaderboard and data_defaults themselves.)

``experiment_config(config, overrides)`` loads a config (a shipped config's name, a path, or None for
the defaults) with ``QUIET`` first, so an experiment's own overrides win. ``train_and_evaluate(run_dir,
cfg)`` trains a fresh run in ``run_dir`` and then, in this one place, swaps the EMA weights into the
objective for good (``trainer.objective`` is the EMA model afterwards: samples, figures and metrics all
use it) and runs ``training/evaluate.evaluate`` on them. A run that stops on a non-finite value is
handled by ``on_diverge``: ``"raise"`` (default), ``"last_good"`` (reload the last checkpoint and
evaluate it; no experiment uses it now) or ``"record"`` (return without EMA or metrics, the reason in
``Arm.diverged``: every claim-harness cell, through ``train_cell`` or, for paper 003's digits, directly).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ebmlab.config_checks import check_new_run
from ebmlab.errors import TrainingDiverged
from ebmlab.training.config import Config, load_config
from ebmlab.training.evaluate import evaluate
from ebmlab.training.lock import RunLock
from ebmlab.training.loop import Trainer, prepare_run_dir

# Overrides every experiment run gets first: no progress bar, no per-run plots (experiments draw their
# own figures), no intermediate checkpoints (one at the end). An experiment's own overrides come after.
QUIET = ["train.progress=false", "eval.plots=false", "train.checkpoint_every=100000"]


def experiment_config(config: str | Path | None, overrides: list[str], *, threads: int | None = None) -> Config:
    """``QUIET`` + (``train.threads``) + ``overrides`` applied to ``config`` (shipped name, path or None)."""
    sets = QUIET + ([f"train.threads={threads}"] if threads else []) + list(overrides)
    return load_config(config, sets)


@dataclass
class Arm:
    """One trained (and evaluated) run of an experiment."""
    trainer: Trainer                        # its objective holds the EMA weights unless training diverged
    metrics: dict = field(default_factory=dict)   # evaluate()'s metrics; {} when not evaluated
    train_seconds: float = 0.0              # building the objective + training
    eval_seconds: float = 0.0
    diverged: str | None = None             # None, or why training stopped (see ``on_diverge``)


def train_and_evaluate(run_dir: Path, cfg: Config, *, data=None, evaluate_run: bool = True,
                       on_diverge: str = "raise", save_config: bool = True) -> Arm:
    """Train ``cfg`` afresh in ``run_dir``, apply the EMA weights (of the best validation check with
    ``train.select_every``), evaluate. ``run_dir`` is cleared first: with ``save_config``, by
    ``prepare_run_dir(overwrite=True)``, which deletes only an earlier run's own files (and refuses a directory
    that is not an ebmlab run); without, the whole directory is removed. The cell's lock is held until it is
    evaluated (``ebmlab eval`` or ``--resume`` on the cell meanwhile are refused, as for any run in training).

    ``data``: a prepared ``Dataset`` instead of ``cfg.data`` (then pass ``save_config=False``: the
    run's ``config.yaml`` could not rebuild it). ``evaluate_run=False`` skips ``evaluate`` for
    experiments that measure their own way. A ``cfg`` with a key its method does not read is refused
    (``ConfigError``, ``config_checks.check_new_run``) before anything is touched, as for ``ebmlab train``."""
    if on_diverge not in ("raise", "last_good", "record"):
        raise ValueError(f"on_diverge must be raise, last_good or record, got {on_diverge!r}")
    check_new_run(cfg)  # an arm with a key its method does not read would record a setting it never had
    run_dir = Path(run_dir)
    if save_config:
        lock = prepare_run_dir(run_dir, cfg, resume=False, overwrite=True)  # config.yaml: `ebmlab eval` can open it
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        lock = RunLock.acquire(run_dir)
    with lock:
        return _fit_cell(run_dir, cfg, data, evaluate_run, on_diverge)


def _fit_cell(run_dir: Path, cfg: Config, data, evaluate_run: bool, on_diverge: str) -> Arm:
    """``train_and_evaluate``'s training and evaluation, in the prepared (and locked) ``run_dir``."""
    t0 = time.time()
    trainer = Trainer(cfg, run_dir, data=data)
    diverged = None
    try:
        trainer.fit()
    except FloatingPointError as err:  # TrainingDiverged (loss, gradient) or a non-finite chain
        if on_diverge == "record":
            return Arm(trainer, train_seconds=round(time.time() - t0, 1), diverged=str(err))
        if on_diverge == "raise" or not isinstance(err, TrainingDiverged):
            raise
        trainer, diverged = _last_good(cfg, run_dir, data, err)
    arm = Arm(trainer, train_seconds=round(time.time() - t0, 1), diverged=diverged)
    # train.select_every: the best validation check's weights are the run's result (training/selection.py)
    selected = trainer.selector.load_best(trainer) if trainer.selector is not None else {}
    if trainer.ema is not None:
        trainer.ema.copy_to(trainer.objective)  # the one place the EMA weights are applied
    if evaluate_run:
        t1 = time.time()  # not under no_grad: a metric may train its model on first use (digits classifier)
        arm.metrics = evaluate(trainer.objective, trainer.data, cfg, None, extra=selected)
        arm.eval_seconds = round(time.time() - t1, 1)
    return arm


def _last_good(cfg: Config, run_dir: Path, data, err: Exception) -> tuple[Trainer, str]:
    """A fresh trainer restored to the run's last checkpoint, and the ``diverged`` message."""
    trainer = Trainer(cfg, run_dir, data=data)
    trainer.resume()  # CheckpointError if it diverged before its first checkpoint
    print(f"[experiment] {run_dir.name}: {err}; evaluating its last good checkpoint (step {trainer.step})")
    return trainer, f"diverged ({err}); evaluated at step {trainer.step}"


def device_generator(module: torch.nn.Module, seed: int) -> torch.Generator:
    """A generator on the module's device, seeded."""
    dev = next(module.parameters()).device
    return torch.Generator(dev).manual_seed(seed)


def train_cell(config: str | Path | None, overrides: list[str], seed: int, run_dir: Path, *,
               measure=None, evaluate_run: bool = True) -> dict:
    """One cell of the claim harness (``experiments/claims.py``): train ``config`` + ``overrides`` with
    ``train.seed=seed`` on one thread in ``run_dir``, apply the EMA weights, evaluate, and return the
    metrics with ``step``. A run that diverges returns ``{"diverged": "step S: reason", "step": S}``
    and is not evaluated (the harness reports it as diverged at that step). ``measure(arm) -> dict``
    adds an experiment's own metrics (called with the trained ``Arm``; its objective holds the EMA
    weights)."""
    cfg = experiment_config(config, list(overrides) + [f"train.seed={seed}"], threads=1)
    arm = train_and_evaluate(Path(run_dir), cfg, evaluate_run=evaluate_run, on_diverge="record")
    step = arm.trainer.step
    if arm.diverged:
        return {"diverged": f"step {step}: {arm.diverged}", "step": step}
    metrics = {k: v for k, v in arm.metrics.items() if isinstance(v, (int, float))}
    if measure is not None:
        metrics.update(measure(arm))
    metrics.update(step=step, train_seconds=arm.train_seconds, eval_seconds=arm.eval_seconds)
    return metrics
