"""The run's result chosen on a validation split (``train.select_every``; not from the papers: issue 18).

On a small table an energy network memorises its training rows: on scikit-learn's breast-cancer set the
samples of the ``--data`` defaults are best after a few hundred updates and then drift away from the data
while the held-out rows' energy climbs above the training rows' (docs/leaderboard.md, "Choosing the
result on a validation split"). So every ``train.select_every`` updates, and after the last one, the
weights that evaluation uses (the EMA's, the network in eval mode) are scored:

    score = energy distance (U-statistic) between ``SELECT_SAMPLES`` samples of the method's own
            generation procedure (``Objective.sample``) and the validation rows (``data.val_fraction``),
            both in z-scored data coordinates (the training rows' column means and stds)

that is, ``training/evaluate.py``'s ``sample_energy_distance_heldout`` on rows that no weight and no
statistic has seen. The check draws from a generator of its own and leaves the network's state as it found it, so
training runs exactly as without it (tested). The best check's weights (model and EMA) are written to
``checkpoints/best.safetensors`` with ``best.json`` (its step and ``val_energy_distance``) and are the
run's result: the final evaluation, ``ebmlab.load``, ``ebmlab sample`` and ``ebmlab eval`` open it
(``checkpoint.result_checkpoint``). Training itself runs to its end, and ``--resume`` continues from the
newest step checkpoint; a best file written after that checkpoint belongs to the abandoned part of the
run and is dropped (selection then restarts from the resumed step).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor

from ebmlab.metrics.distances import energy_distance
from ebmlab.training import checkpoint as ckpt

SELECT_SAMPLES = 1000  # samples per check: ~1/20 of 50 updates' time for the default MLP on a table
_SEED_OFFSET = 7919    # the checks' generator: train.seed + this, advanced by the step (training's own streams untouched)


def zscorer(data) -> Callable[[Tensor], Tensor]:
    """model coordinates (B, D) -> z-scored data coordinates (B, D) float64: each column centred and scaled
    by the training rows' mean and std, whatever the model's own transform (whitening, none)."""
    train = data.transform.to_data(data.train).double()  # (N, D)
    mean, std = train.mean(0), train.std(0).clamp_min(1e-12)
    return lambda x: (data.transform.to_data(x.detach().cpu().float()).double() - mean) / std


def validation_score(objective, data, n: int, generator: torch.Generator) -> float:
    """The energy distance between ``n`` samples of ``objective`` and ``data.val`` (z-scored data coordinates)."""
    z = zscorer(data)
    return energy_distance(z(objective.sample(n, generator=generator).x), z(data.val), unbiased=True)


class Selector:
    """Tracks the best validation check of one run and keeps its weights in ``checkpoints/best.*``."""

    def __init__(self, every: int, ckpt_dir: Path, seed: int, n: int = SELECT_SAMPLES):
        self.every, self.dir, self.seed, self.n = every, Path(ckpt_dir), seed, n
        self.best_step: int | None = None
        self.best_score = math.inf

    def due(self, step: int, last: bool) -> bool:
        """Whether ``step`` is checked: every ``every`` updates and the last one."""
        return last or step % self.every == 0

    def check(self, trainer) -> float:
        """Score the trainer's evaluation weights now; write them as the best when they beat every earlier
        check (main process). Returns the score (NaN when the samples are not finite: never the best)."""
        obj, mode = trainer.objective, trainer.objective.training
        g = torch.Generator(trainer.device).manual_seed(self.seed + _SEED_OFFSET + trainer.step)
        ema = trainer.ema.applied(obj) if trainer.ema is not None else nullcontext()
        try:
            obj.eval()  # spectral norm's power iteration must not move with a check
            with ema, torch.no_grad():
                try:
                    score = validation_score(obj, trainer.data, self.n, g)
                except FloatingPointError:
                    score = math.nan
        finally:
            obj.train(mode)
        if score < self.best_score:  # NaN compares False
            self.best_step, self.best_score = trainer.step, score
            if trainer.is_main:
                self._save(trainer)
        return score

    def _save(self, trainer) -> None:
        tensors, meta = trainer.weights()  # the trained weights and their EMA, as a checkpoint holds them
        ckpt.save_checkpoint(self.dir, trainer.step, tensors, {**meta, "val_energy_distance": self.best_score},
                             name=ckpt.BEST)

    def resume(self, step: int) -> None:
        """Pick the tracker up from ``best.json`` when the run resumes at ``step``. A best written after that
        step belongs to the abandoned part of the run and is deleted; an unreadable one is left for the next
        check to replace; either way selection restarts here, with a warning."""
        best = ckpt.best_path(self.dir)
        if not best.with_suffix(".json").is_file():
            return
        try:
            _, meta = ckpt.load_checkpoint(best)
        except ckpt.CheckpointError as exc:
            warnings.warn(f"{exc}; selection restarts at step {step} and replaces it at its next check",
                          RuntimeWarning, stacklevel=2)
            return
        if meta["step"] <= step:
            self.best_step, self.best_score = meta["step"], float(meta.get("val_energy_distance", math.inf))
            return
        for p in (best, best.with_suffix(".json")):
            p.unlink(missing_ok=True)
        warnings.warn(f"the validation best in {str(self.dir)!r} was written after step {step}, which the run "
                      f"resumes from; it was dropped and selection restarts here", RuntimeWarning, stacklevel=2)

    def load_best(self, trainer) -> dict:
        """Put the best check's weights into the trainer (model and EMA) for the final evaluation; returns
        ``selected_step`` and ``val_energy_distance`` for ``metrics.json`` ({} before any check)."""
        if self.best_step is None:
            return {}
        tensors, _ = ckpt.load_checkpoint(ckpt.best_path(self.dir))
        trainer.load_weights(tensors, trainer.ema.num_updates if trainer.ema is not None else 0)
        return {"selected_step": self.best_step, "val_energy_distance": self.best_score}
