"""The run's result chosen on a validation split (``train.select_every``; not from the papers: issue 18).

On a small table an energy network memorises its training rows: on scikit-learn's breast-cancer set the
samples of the ``--data`` defaults are best after a few hundred updates and then drift away from the data
while the held-out rows' energy climbs above the training rows' (docs/data_defaults.md, "Choosing the
result on a validation split"). So every ``train.select_every`` updates, and after the last one, the
weights that evaluation uses (the EMA's, the network in eval mode) are scored:

    score = energy distance (U-statistic) between ``SELECT_SAMPLES`` samples of the method's own
            generation procedure (``Objective.sample``) and the validation rows (``data.val_fraction``;
            at most ``heldout.VALIDATION_ROWS`` of them, in random order: their own m x m distances are
            computed once per run), both in z-scored data coordinates (the training rows' column means and stds)

that is, ``sample_energy_distance_heldout`` (``training/heldout.py``) on rows that no weight and no statistic has
seen. One check's score is noisy (a few dozen validation rows, one draw of a sampler whose draws are heavy-tailed),
and the minimum over many noisy checks favours a lucky one. Two remedies, one at a time: ``train.select_window
= w`` (odd) chooses by the mean score of the w checks centred on each (fewer at the ends of the run), so a check wins
only with its neighbours (its weights are then kept in memory, on the CPU, until its later neighbours are scored);
``train.select_draws = k`` scores a check by the *worst* of k independent draws, drawn one after another only while
that worst still beats the best check so far (a check that loses on its first draw costs one draw), so a model
whose draws are good only some of the time does not win on a lucky one. ``train.select_start`` also checks the
starting weights before the first update: with a base measure whose tilt starts at zero (``model.base_std``,
``energies/mlp.py``; ``model.base: gmm``, ``energies/mixture_base.py``) that is the base itself, and the run's
result stays the base unless a check beats it; ``train.select_refit`` then refits what a chosen start has fitted on
the training and validation rows together (``Selector._refit``: the data transform, or with the mixture base the
mixture, in the run's coordinates). ``train.select_margin = m`` makes the start the simpler
model of a one-standard-error rule (Breiman, Friedman, Olshen & Stone 1984, "Classification and Regression
Trees", Sec. 3.4.3; Hastie, Tibshirani & Friedman 2009, "The Elements of Statistical Learning", Sec. 7.10): a trained check replaces the
start only when its score is lower than the start's by more than m standard errors of their difference. The two
scores share the validation rows, and the only part of their difference that depends on which rows were held out is
2 (E|X_check - y_j| - E|X_start - y_j|) averaged over the rows y_j (the rows' own term cancels, the samples' own
terms do not depend on the rows), so the standard error is that per-row difference's standard deviation over
sqrt(rows) (``validation_terms``). On a few dozen rows the minimum over many checks mostly finds the checks that fit
those rows by chance; the margin keeps the start unless the rows give evidence against it. ``train.select_likelihood``
(with the mixture base) adds a second condition for a trained check to replace the start: the validation rows' mean
log-likelihood under the check's density may not be lower than under the base measure q, the start
(``likelihood_gain``). The check's density is exp(-E/T) / Z with E = -log q + f, and Z = E_q[exp(-E/T - log q)]
is estimated from ``LIKELIHOOD_DRAWS`` = n exact draws of q (importance sampling with weights w = exp(-E/T) / q:
unbiased for Z, so log Z is biased low by about Var(w) / (2 n E[w]^2), a small favour to the check). The energy
distance sees where samples fall, not how the energy ranks rows (which is what out-of-distribution detection uses);
the condition keeps a check that moves its samples towards the validation rows while lowering their density from
replacing the start. Each check draws from
a generator of its own, seeded by its step, or with
``train.select_paired`` by the same seed for every check (common random numbers: two checks then differ by their
weights, not by their draws' luck). A check leaves the network's state as it found it, so training runs exactly
as without it (tested). The best check's weights (model and EMA) are written to ``checkpoints/best.safetensors`` with
``best.json`` (its step and ``val_energy_distance``) and are the run's result: the final evaluation,
``ebmlab.load``, ``ebmlab sample`` and ``ebmlab eval`` open it (``checkpoint.result_checkpoint``). Training itself
runs to its end, and ``--resume`` continues from the newest step checkpoint; a best file written after that
checkpoint belongs to the abandoned part of the run and is dropped. The checkpoint holds the selection's scores and
open windows (``Selector.state``), which ``restore`` brings back; only an open check older than the checkpoint,
whose weights were kept in memory, is lost (with a warning)."""
from __future__ import annotations

import json
import math
import time
import warnings
from collections import deque
from contextlib import nullcontext
from pathlib import Path

import torch

from ebmlab.devices import to_float64
from ebmlab.files import atomic_write
from ebmlab.training import checkpoint as ckpt
from ebmlab.training.heldout import VALIDATION_ROWS, reference, validation_score, validation_terms

LIKELIHOOD_DRAWS = 10_000  # exact base draws of select_likelihood's normaliser: forward passes only
SELECT_SAMPLES = 1000  # samples per check: ~1/20 of 50 updates' time for the default MLP on a table
_SEED_OFFSET = 7919    # the checks' generator: train.seed + this, advanced by the step unless paired (training's own
                       # streams untouched)


def likelihood_gain(objective, data, n: int, generator: torch.Generator) -> float:
    """The validation rows' mean log-likelihood (nats per row) under ``objective``'s density exp(-E/T) / Z minus
    under its mixture base measure q, with log Z from ``n`` exact draws of q (module docstring)."""
    base = objective.mixture_base()
    if base is None or base.components == 0:
        raise ValueError("train.select_likelihood compares with the energy's fitted mixture base (model.base gmm), "
                         "and this objective has none")
    x = base.sample(n, generator)                                   # (n, D) exact draws of q
    log_w = objective.log_density(x) + base(x)                      # (n,) log of exp(-E/T) / q
    log_z = torch.logsumexp(to_float64(log_w), 0) - math.log(n)
    y = data.val.to(x.device)
    return float(to_float64(objective.log_density(y) + base(y)).mean() - log_z)


def _rank0s(trainer, values: tuple) -> tuple:
    """Rank 0's ``values`` on every rank, which decide on what rank 0 writes (samplers adapt rank-local step sizes)."""
    if not getattr(getattr(trainer, "dist", None), "enabled", False):
        return values
    box = [values]
    torch.distributed.broadcast_object_list(box, src=0)  # our own processes only; never user data
    return box[0]


def clears_margin(score: float, rows: torch.Tensor, start_score: float, start_rows: torch.Tensor,
                  margin: float) -> bool:
    """Whether ``score`` beats ``start_score`` by more than ``margin`` standard errors of their paired difference
    over the validation rows (``rows`` - ``start_rows``, (m,); module docstring). Fewer than two rows give no
    standard error: the start is kept."""
    diff = rows - start_rows
    if diff.numel() < 2:
        return False
    se = float(diff.std()) / math.sqrt(diff.numel())
    return score - start_score < -margin * se


class Selector:
    """Tracks the best validation check of one run and keeps its weights in ``checkpoints/best.*``.
    ``window`` (odd): a check is chosen by the mean score of the ``window`` checks centred on it; ``draws``: a
    check is scored by its worst of up to that many draws (one of the two above 1)."""

    def __init__(self, every: int, ckpt_dir: Path, seed: int, n: int = SELECT_SAMPLES, window: int = 1,
                 draws: int = 1, refit: bool = False, paired: bool = False, margin: float | None = None,
                 likelihood: bool = False):
        if draws > 1 and window > 1:
            raise ValueError("a check is scored by its worst draw (draws > 1) or with its neighbours (window > 1)")
        if (margin is not None or likelihood) and window > 1:
            raise ValueError("the margin and the likelihood over the start compare one check with it: they need "
                             "window 1")
        self.likelihood = likelihood  # a trained check must not lower the validation log-likelihood below the base's
        self._gain = math.nan  # with likelihood: the last check's likelihood_gain
        self.margin = margin  # standard errors a trained check must beat the start by (None: plain minimum)
        self.every, self.dir, self.seed, self.n, self.draws = every, Path(ckpt_dir), seed, n, draws
        self.refit = refit  # a chosen start's fitted part (transform or mixture) is refitted on training + validation rows
        self.paired = paired  # every check draws the same noise (common random numbers), not noise of its step
        self.half = window // 2
        self.best_step: int | None = None
        self.best_score = math.inf       # the choosing score: the window's mean (one check's own when window 1)
        self.best_check = math.nan       # the chosen check's own score
        self._scores: list[float] = []   # every check's score since the (re)start, in order
        self._pending: deque = deque()   # (index, step, weights or None) of checks still missing later neighbours
        self.start_score: float | None = None  # the score of a check of the starting weights (step 0), if made
        self.start_rows: torch.Tensor | None = None  # with a margin: the start's per-row terms (validation_terms)
        self._rows: torch.Tensor | None = None  # with a margin: the last check's per-row terms
        self.held_back = 0  # checks that beat the best score but not the start's conditions (margin, likelihood)
        self.seconds, self.last_seconds = 0.0, 0.0  # wall time spent in checks: in all, and in the last one
        self._since: tuple[float, int] | None = None  # (clock, step) when the last check ended: the updates since
        self._warned = False
        self.best_gain = math.nan  # with likelihood: the chosen check's likelihood_gain
        self._ref = (None, None)  # (data, its validation rows' reference): made at the first check

    def due(self, step: int, last: bool) -> bool:
        """Whether ``step`` is checked: every ``every`` updates and the last one."""
        return last or step % self.every == 0

    def check(self, trainer, last: bool = False) -> float:
        """Score the trainer's evaluation weights now; decide every earlier check whose window is complete (all
        of them when ``last``), writing one as the best when its window beats every earlier one (main process).
        Returns this check's score (NaN when the samples are not finite: such a window never wins)."""
        t0 = time.monotonic()
        score = self._score(trainer)
        score, self._rows, self._gain = _rank0s(trainer, (score, self._rows, self._gain))
        self._account(t0, trainer)
        self._scores.append(score)
        if trainer.step == 0:
            self.start_score, self.start_rows = score, self._rows
            if self.margin is not None and trainer.is_main and self._rows is not None:
                _write_start(self.dir, score, self._rows)
        weights = None
        if trainer.is_main:  # the weights wait (on the CPU) for their later neighbours unless window 1
            weights = trainer.weights() if self.half == 0 else _to_cpu(trainer.weights())
        self._pending.append((len(self._scores) - 1, trainer.step, weights))
        while self._pending and (last or self._pending[0][0] + self.half < len(self._scores)):
            self._decide(*self._pending.popleft())
        return score

    def _account(self, t0: float, trainer) -> None:
        """Time this check (``seconds``, ``last_seconds``) and say once, in a warning with the numbers, when a check
        costs more than the ``every`` updates since the previous one: selection then more than doubles the run's time (a
        method whose generation procedure is long, e.g. an annealed chain over many levels, ``SELECT_SAMPLES`` times
        and up to ``draws`` times per check)."""
        end = time.monotonic()
        self.last_seconds = end - t0
        self.seconds += self.last_seconds
        since, self._since = self._since, (end, trainer.step)
        if since is None or self._warned or trainer.step - since[1] < self.every or self.last_seconds <= t0 - since[0]:
            return  # (judged on full intervals: a last check soon after the one before it says nothing)
        self._warned = True
        warnings.warn(f"train.select_every: the validation check at update {trainer.step} took {round(self.last_seconds, 3)} "
                      f"s and the {trainer.step - since[1]} updates before it {round(t0 - since[0], 3)} s, so selection "
                      f"more than doubles this run's time ({trainer.cfg.method.name}'s generation draws {self.n} "
                      f"samples per check{f', up to {self.draws} times' if self.draws > 1 else ''}); raise "
                      f"train.select_every, {'lower train.select_draws, ' if self.draws > 1 else ''}or set "
                      "train.select_every=null", RuntimeWarning, stacklevel=3)

    def _score(self, trainer) -> float:
        """The validation score of the trainer's EMA weights in eval mode, from the checks' own generator: the
        worst of up to ``draws`` draws, which stops drawing once it cannot beat the best check (NaN when a
        draw's samples are not finite)."""
        obj, mode = trainer.objective, trainer.objective.training
        offset = _SEED_OFFSET if self.paired else _SEED_OFFSET + trainer.step  # paired: every check the same noise
        g = torch.Generator(trainer.device).manual_seed(self.seed + offset)
        ema = trainer.ema.applied(obj) if trainer.ema is not None else nullcontext()
        worst, self._gain = -math.inf, math.nan
        try:
            obj.eval()  # spectral norm's power iteration must not move with a check
            with ema, torch.no_grad():
                self._rows = None
                for _ in range(self.draws):  # the draws follow each other on the one generator
                    try:
                        if self.margin is None:
                            score = validation_score(obj, trainer.data, self.n, g, self._reference(trainer.data))
                        else:
                            score, rows = validation_terms(obj, trainer.data, self.n, g, self._reference(trainer.data))
                    except FloatingPointError:
                        return math.nan
                    if math.isnan(score):
                        return score
                    if self.margin is not None and score > worst:  # the rows of the draw that scores the check
                        self._rows = rows
                    worst = max(worst, score)
                    if not worst < self.best_score:  # this check cannot win any more
                        break
                if self.likelihood and trainer.step > 0 and worst < self.best_score:
                    self._gain = likelihood_gain(obj, trainer.data, LIKELIHOOD_DRAWS, g)
                return worst
        finally:
            obj.train(mode)

    def _reference(self, data):
        """The validation rows' ``heldout.reference``, made once per ``data`` (a refit's data: again)."""
        if self._ref[0] is not data:
            self._ref = (data, reference(data, data.val, VALIDATION_ROWS))
        return self._ref[1]

    def _decide(self, index: int, step: int, weights) -> None:
        """Check ``index`` (at ``step``) becomes the best when its window's mean beats every earlier one's."""
        window = self._scores[max(0, index - self.half):index + self.half + 1]
        mean = sum(window) / len(window)
        if mean < self.best_score and step > 0 and not (self._clears_start(mean) and self._likely()):
            self.held_back += 1
            return
        if mean < self.best_score:  # NaN compares False
            self.best_step, self.best_score, self.best_check = step, mean, self._scores[index]
            self.best_gain = self._gain if self.likelihood and step > 0 else math.nan
            if weights is not None:
                tensors, meta = weights
                gain = {} if math.isnan(self.best_gain) else {"val_loglik_gain": self.best_gain}
                ckpt.save_checkpoint(self.dir, step, tensors, {**meta, "val_energy_distance": self.best_check,
                                                               "val_window_score": mean, **gain}, name=ckpt.BEST)

    def _likely(self) -> bool:
        """Whether the last check (window 1) keeps the validation log-likelihood at least the base's (always
        without ``likelihood``); a NaN gain (non-finite energies) does not."""
        return not self.likelihood or self._gain >= 0.0

    def _clears_start(self, score: float) -> bool:
        """Whether a trained check scoring ``score`` (its rows: the last ones scored, window 1) may replace the
        start: always without a margin or a scored start, else ``clears_margin``."""
        if self.margin is None or self.start_rows is None or self._rows is None:
            return True
        return clears_margin(score, self._rows, self.start_score, self.start_rows, self.margin)

    def state(self) -> dict:
        """What a checkpoint keeps of the tracker so that a resumed run decides as the uninterrupted one: every
        check's score (NaN as None: JSON), the checks held back, the (index, step) of the checks whose
        windows were still open, and the start's score (``metrics.json``'s ``val_energy_distance_start``)."""
        start = None if self.start_score is None or math.isnan(self.start_score) else self.start_score
        return {"scores": [None if math.isnan(v) else v for v in self._scores], "held_back": self.held_back,
                "pending": [[i, st] for i, st, _ in self._pending], "start_score": start}

    def restore(self, state: dict | None, trainer) -> None:
        """Undo ``state`` into a tracker resumed at ``trainer.step`` (whose weights are the checkpoint's). A check
        still open at that step is the checkpoint's own (checks come before saves): its weights are the trainer's.
        An older open check (windows of 5 and more) kept its weights only in memory: it is dropped, with a warning."""
        if not state:  # a checkpoint written before this was kept: windows restart here
            return
        self._scores = [math.nan if v is None else float(v) for v in state["scores"]]
        self.held_back = int(state["held_back"])
        if self.start_score is None and state.get("start_score") is not None:  # the start's check, for metrics.json
            self.start_score = float(state["start_score"])  # (with a margin it comes from select_start.json)
        for index, step in state["pending"]:
            if step == trainer.step:
                weights = None
                if trainer.is_main:
                    weights = trainer.weights() if self.half == 0 else _to_cpu(trainer.weights())
                self._pending.append((index, step, weights))
            else:
                warnings.warn(f"train.select_window: the check at step {step} was still waiting for later checks "
                              f"when the run stopped and its weights were not kept; it can no longer be chosen",
                              RuntimeWarning, stacklevel=2)

    def resume(self, step: int) -> None:
        """Take the best so far from ``best.json`` when the run resumes at ``step``. A best written after that
        step belongs to the abandoned part of the run and is deleted; an unreadable one is left for the next
        check to replace; either way with a warning and no best so far. (Scores and windows: ``restore``.)"""
        if self.margin is not None:
            self.start_score, self.start_rows = _read_start(self.dir)
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
            self.best_step, self.best_check = meta["step"], float(meta.get("val_energy_distance", math.inf))
            self.best_gain = float(meta.get("val_loglik_gain", math.nan))
            if meta["step"] == 0:  # the start's check won before the resume: its score is known
                self.start_score = self.best_check
            self.best_score = float(meta.get("val_window_score", self.best_check))  # older bests: one check's
            return
        for p in (best, best.with_suffix(".json")):
            p.unlink(missing_ok=True)
        warnings.warn(f"the validation best in {str(self.dir)!r} was written after step {step}, which the run "
                      f"resumes from; it was dropped and selection restarts here", RuntimeWarning, stacklevel=2)

    # the entries load_best gives metrics.json: facts of the training run that a later ``ebmlab eval`` keeps
    RESULT_KEYS = ("selected_step", "val_energy_distance", "select_seconds", "selected_refit",
                   "val_energy_distance_start", "select_held_back", "val_loglik_gain", "val_window_score")

    def load_best(self, trainer) -> dict:
        """Put the best check's weights into the trainer (model and EMA) for the final evaluation, and with
        ``refit`` a chosen start's refitted data (``_refit``); returns ``selected_step`` and
        ``val_energy_distance`` (the chosen check's score; ``val_window_score``, its window's mean, when the
        window is wider than one; ``val_energy_distance_start``, the starting weights' score, when they were
        checked; ``selected_refit``, 1 when the transform was refitted; ``select_seconds``, the checks' time in this
        process: a resumed run counts from its resume) for ``metrics.json`` ({} before any check)."""
        if self.best_step is None:
            return {}
        tensors, meta = ckpt.load_checkpoint(ckpt.best_path(self.dir))
        trainer.load_weights(tensors, trainer.ema.num_updates if trainer.ema is not None else 0)
        out = {"selected_step": self.best_step, "val_energy_distance": self.best_check,
               "select_seconds": round(self.seconds, 2)}
        if self.refit and self.best_step == 0:
            self._refit(trainer, tensors, meta)
            out["selected_refit"] = 1
        if self.start_score is not None:
            out["val_energy_distance_start"] = self.start_score
        if self.margin is not None or self.likelihood:
            out["select_held_back"] = self.held_back
        if not math.isnan(self.best_gain):
            out["val_loglik_gain"] = self.best_gain
        return out if self.half == 0 else {**out, "val_window_score": self.best_score}

    def _refit(self, trainer, tensors: dict, meta: dict) -> None:
        """The untrained model won, so what it has fitted is fitted again on the training and validation rows
        together, as a model search refits its choice on all its rows: with the mixture base the mixture
        (``_refit_base``), otherwise the data transform (with a Gaussian base measure: the Gaussian of every row).
        ``trainer.data`` then moves to the new coordinates and the best checkpoint's sidecar carries the transform
        (``transform``), which opening the result applies (``training/run.open_checkpoint``); the step checkpoints
        keep the run's own. A trained check is kept as it is: a retrained one would be another stochastic run whose
        weights no check has scored."""
        from ebmlab.data.dataset import refit_transform
        from ebmlab.training.run import transform_info

        base = trainer.objective.mixture_base()
        if base is not None:
            self._refit_base(trainer, base, meta)
            return
        trainer.data = refit_transform(trainer.data, trainer.cfg.data)
        if trainer.is_main:
            tf = transform_info(trainer.data.transform, "vector")  # (save_checkpoint rewrites step and sizes)
            ckpt.save_checkpoint(self.dir, 0, tensors, {**meta, "transform": tf}, name=ckpt.BEST)

    def _refit_base(self, trainer, base, meta: dict) -> None:
        """``_refit`` with the mixture base (``model.base: gmm``): the untrained model is the mixture, so the mixture
        is fitted again (``objectives/contrastive.fit_mixture_base``, the run's seed) on the training and validation
        rows, in the run's coordinates (the transform stays, so nothing else in the run moves; the extra rows go into
        the mixture), and the best checkpoint is rewritten with it."""
        from ebmlab.objectives.contrastive import fit_mixture_base

        data = trainer.data
        rows = data.train if data.val is None else torch.cat([data.val, data.train])
        fit_mixture_base(base, rows, trainer.cfg.train.seed)
        if trainer.is_main:
            tensors, _ = trainer.weights()  # the start's weights, now with the refitted mixture's buffers
            ckpt.save_checkpoint(self.dir, 0, tensors, {**meta, "base_refit_rows": len(rows)}, name=ckpt.BEST)


def _to_cpu(weights: tuple[dict, dict]) -> tuple[dict, dict]:
    """A copy of ``Trainer.weights()``'s tensors on the CPU (they change with the next update)."""
    tensors, meta = weights
    return {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}, meta


START_FILE = "select_start.json"  # with a margin: the start's score and per-row terms, for a resumed run


def _write_start(ckpt_dir: Path, score: float, rows: torch.Tensor) -> None:
    Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
    text = json.dumps({"score": score, "rows": rows.tolist()})
    # a crash leaves no half-written file
    atomic_write(Path(ckpt_dir) / START_FILE, lambda p: p.write_text(text, encoding="utf-8"))


def _read_start(ckpt_dir: Path) -> tuple[float | None, torch.Tensor | None]:
    """The step-0 start's score and first ``VALIDATION_ROWS`` rows (the checks'); (None, None) without a readable one."""
    try:
        saved = json.loads((Path(ckpt_dir) / START_FILE).read_text(encoding="utf-8"))
        score, rows = float(saved["score"]), torch.tensor(saved["rows"], dtype=torch.float64)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None, None
    return (score, rows[:VALIDATION_ROWS]) if rows.ndim == 1 else (None, None)  # (a damaged "rows": not a list)
