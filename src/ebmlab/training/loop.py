"""The training loop shared by every method: it only knows ``Objective``.

    out = objective(batch, generator=g); out.loss.backward(); optimizer.step(); ema.update()

Per run directory (DESIGN.md "Runs on disk"): ``config.yaml``, ``checkpoints/``, ``metrics.jsonl``,
``tb/``, ``samples/``, ``plots/``, ``metrics.json`` (the directory is made ready and locked by
``training/run_dir.prepare_run_dir``, re-exported here). Randomness comes from three sources, all saved
in checkpoints so that ``--resume`` reproduces an uninterrupted run exactly on the same machine with a
fixed ``train.threads`` (with the default null the thread count follows the load, and the numbers with it:
``training/threads.py``): the data generator (batch indices), the objective's generator (chain noise,
buffer draws) and torch's global RNG. A non-finite loss or gradient raises ``TrainingDiverged`` naming the step and
the quantity; nothing is written after it, so the last good checkpoint is kept. With
``train.select_every`` the weights are scored on a validation split every N updates (and before the first
with ``train.select_start``) and the best check is kept as the run's result (``training/selection.py``);
training itself is unchanged by the checks.

Several processes (``torchrun``): see ``training/distributed.py`` for the rules (explicit gradient
all-reduce after ``backward``, per-rank batch shards, per-rank seeds and buffers, rank files in
checkpoints, rank-averaged metrics, rank 0 writes everything).
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import torch

from ebmlab.config import Config
from ebmlab.data import build_dataset
from ebmlab.errors import ConfigError, TrainingDiverged, TrainingStopped  # (also importable from here)
from ebmlab.objectives import build_objective, check_loss_output
from ebmlab.progress_lines import progress_display
from ebmlab.training import checkpoint as ckpt
from ebmlab.training import dist_checkpoint, distributed, run, stop_signal
from ebmlab.training.ema import EMA
from ebmlab.training.logging import RunLogger, scalars
from ebmlab.training.run_dir import is_run_dir, prepare_run_dir  # noqa: F401 (re-exported)
from ebmlab.training.selection import Selector
from ebmlab.training.threads import (ThreadGovernor, busy_elsewhere,  # noqa: F401 (busy_elsewhere re-exported)
                                     choose_threads, resume_threads)


def resolve_device(name: str) -> torch.device:
    """A validated torch device for ``auto | cpu | cuda | cuda:N | mps`` (``training/run.py``)."""
    return run.resolve_device(name)


def make_optimizer(objective, tc) -> torch.optim.Optimizer:
    """Adam or AdamW over the objective's parameter groups, with ``train``'s lr, betas and weight decay; warns
    where the warm-up settings do not do what they say (``warmup_warnings``)."""
    groups = objective.param_groups(tc.lr)
    for text in warmup_warnings(groups, tc):
        warnings.warn(text, RuntimeWarning, stacklevel=3)
    cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)


def warmup_warnings(groups, tc) -> list[str]:
    """What a run's warm-up settings leave undone: ``train.warmup_steps`` where every parameter group warms up on
    its own (paper 003's ``method.ebm_warmup`` / ``init_warmup``: it would be ignored), and a group whose warm-up
    outlasts ``train.steps`` (its lr never reaches its value, and ``train.lr_schedule`` never starts)."""
    said = []
    if tc.warmup_steps and groups and all("warmup" in g for g in groups):
        own = ", ".join(f"{g.get('name', i)} {g['warmup']}" for i, g in enumerate(groups))
        said.append(f"train.warmup_steps={tc.warmup_steps} does not apply to this method: each of its parameter "
                    f"groups warms up on its own ({own} updates: the method's settings, e.g. paper 003's "
                    "method.ebm_warmup and method.init_warmup); set those instead")
    for i, g in enumerate(groups):
        warmup = g.get("warmup", tc.warmup_steps)
        end = warmup + g.get("delay", 0)  # the update at which this group's warm-up ends
        if warmup > 0 and end > tc.steps:
            reached = lr_factor(tc, tc.steps - 1, warmup, g.get("delay", 0))
            said.append(f"the lr of parameter group {g.get('name', i)!r} warms up over {warmup} updates, ending at "
                        f"update {end}, but the run has train.steps={tc.steps}: it reaches {reached:.0%} of its "
                        f"value{'' if tc.lr_schedule == 'constant' else ' and train.lr_schedule never starts'}")
    return said


def lr_factor(tc, step: int, warmup: int | None = None, delay: int = 0) -> float:
    """Multiplier of a parameter group's base lr at update ``step``. Its warm-up (``warmup`` updates, None:
    ``train.warmup_steps``; linear) runs on its own clock, ``delay`` updates late (negative: early, paper 003's
    initializer head start, Eq. 15; 0 before it starts); the decay runs on the run's clock: cosine from the end of
    the group's warm-up to ``train.steps``, cosine with warm restarts from the end of its warm-up, step decay by
    ``lr_decay_factor`` every ``lr_decay_steps`` updates from update 0 (torch's StepLR, warm-up included)."""
    warmup = tc.warmup_steps if warmup is None else warmup
    own = step - delay  # the group's clock
    if own < 0:
        return 0.0
    if warmup > 0 and own < warmup:
        return (own + 1) / warmup
    start = warmup + delay  # the run's update at which this group's warm-up ended
    if tc.lr_schedule == "cosine":
        frac = (step - start) / max(1, tc.steps - start)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
    if tc.lr_schedule == "cosine_restarts":  # SGDR (Loshchilov & Hutter 2016), restart every lr_restart_steps
        frac = ((step - start) % tc.lr_restart_steps) / tc.lr_restart_steps
        return 0.5 * (1 + math.cos(math.pi * frac))
    if tc.lr_schedule == "step" and tc.lr_decay_steps > 0:
        return tc.lr_decay_factor ** (step // tc.lr_decay_steps)
    return 1.0


def set_lr(optimizer, tc, step: int) -> None:
    """Set every parameter group's lr for ``step`` (``lr_factor`` of its base lr, its own warm-up and delay)."""
    for group in optimizer.param_groups:
        base = group.setdefault("base_lr", group["lr"])
        group["lr"] = base * lr_factor(tc, step, group.get("warmup"), group.get("delay", 0))


class Trainer:
    """Trains one objective on one dataset in a run directory: batches, optimizer, EMA, checkpoints,
    resume; ``fit`` runs the loop (see the module docstring)."""
    def __init__(self, cfg: Config, run_dir: Path, data=None, is_main: bool = True):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        tc = cfg.train
        self.dist = distributed.setup(resolve_device(tc.device))  # no-op context on one process
        self.device, self.is_main = self.dist.device, is_main and self.dist.is_main
        distributed.check_device_options(tc, self.device)
        torch.manual_seed(distributed.derive_seed(tc.seed, self.dist.rank))  # init; rank-local buffers
        self.data = data if data is not None else build_dataset(cfg.data)
        most = torch.get_num_threads()  # the process's count: the most an auto run takes
        threads = choose_threads(tc.threads, self.data.kind, self.device)
        if threads is not None:
            torch.set_num_threads(threads)
        self.governor = ThreadGovernor(tc.threads, self.device, most)  # auto: follows the idle cores (threads.py)
        self.objective = build_objective(cfg, self.data).to(self.device)
        distributed.broadcast_parameters(self.objective, self.dist)  # identical networks on all ranks
        if tc.compile:
            distributed.compile_energy(self.objective)
        self.optimizer = make_optimizer(self.objective, tc)
        self.ema = EMA(self.objective, tc.ema) if tc.ema is not None else None
        self.g_data = torch.Generator().manual_seed(tc.seed + 1)  # shared: global batch indices
        self.g_obj = torch.Generator(self.device).manual_seed(distributed.derive_seed(tc.seed, self.dist.rank, 2))
        self.step = 0
        self.selector = (Selector(tc.select_every, self.run_dir / "checkpoints", tc.seed, window=tc.select_window,
                                  draws=tc.select_draws, refit=tc.select_refit, paired=tc.select_paired,
                                  margin=tc.select_margin, likelihood=tc.select_likelihood)
                         if tc.select_every is not None else None)  # training/selection.py
        if self.selector is not None and self.data.val is None:  # a prepared Dataset built without the split
            raise ConfigError("train.select_every scores on the validation split, and this dataset has none "
                              "(build it with data.val_fraction set)")

    # ----- state -----------------------------------------------------------------------------
    def weights(self) -> tuple[dict, dict]:
        """(tensors, meta) of the weights alone: ``model.*`` (parameters and buffers), ``ema.*``, and the
        config with its hash (what ``open_checkpoint`` needs; the validation best stores just this)."""
        tensors = {f"model.{k}": v for k, v in self.objective.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        meta = {"ema_updates": self.ema.num_updates if self.ema else 0,
                "config": self.cfg.to_dict(), "config_hash": self.cfg.run_hash()}
        meta.update(run.data_sha_meta(self.run_dir))  # which bytes the weights were trained on
        return tensors, meta

    def load_weights(self, tensors: dict, ema_updates: int) -> None:
        """Put ``weights()``'s ``model.*`` and ``ema.*`` tensors back into the objective and the EMA."""
        self.objective.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if self.ema is not None:
            self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, ema_updates)

    def state(self) -> tuple[dict, dict]:
        """(tensors, meta) of a checkpoint: weights, EMA, optimizer, RNG states, config."""
        tensors, meta = self.weights()
        opt_t, opt_rest = ckpt.flatten_optimizer(self.optimizer.state_dict())
        tensors.update(opt_t)
        tensors["rng.data"] = self.g_data.get_state()
        tensors["rng.objective"] = self.g_obj.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        if self.selector is not None:  # the validation checks' history: a resumed run chooses as an uninterrupted one
            meta["selection"] = self.selector.state()
        if self.device.type == "cpu":  # what train.threads: null chose (resume_threads)
            meta["threads"] = torch.get_num_threads()
        return tensors, {"optimizer": opt_rest, **meta}

    def load_state(self, tensors: dict, meta: dict) -> None:
        """Restore a checkpoint's (tensors, meta) into the trainer."""
        self.load_weights(tensors, meta.get("ema_updates", 0))
        self.optimizer.load_state_dict(ckpt.unflatten_optimizer(tensors, meta["optimizer"]))
        self.g_data.set_state(tensors["rng.data"])
        distributed.restore_generator(self.g_obj, tensors["rng.objective"], self.cfg.train.seed, int(meta["step"]))
        torch.set_rng_state(tensors["rng.torch"])
        self.step = int(meta["step"])

    def save(self) -> None:
        """Write a checkpoint of the current step (and prune old ones)."""
        dist_checkpoint.save_rank_state(self)  # every rank's buffers and RNGs (several processes only)
        if self.is_main:
            tensors, meta = self.state()
            meta["world_size"] = self.dist.world_size
            ckpt.save_checkpoint(self.run_dir / "checkpoints", self.step, tensors, meta)
            ckpt.prune(self.run_dir / "checkpoints", self.cfg.train.keep_checkpoints)
            dist_checkpoint.prune_rank_files(self.run_dir / "checkpoints")
        self.dist.barrier()

    def resume(self, relocate: str | None = None) -> None:
        """Continue from the run's latest checkpoint (config hash and weights checked; allowed changes recorded, and
        ``relocate``, where a moved data file is read now: ``run.relocation``)."""
        path = ckpt.latest_checkpoint(self.run_dir / "checkpoints")
        dist_checkpoint.agree_on_checkpoint(path, self.dist)
        if path is None:
            raise ckpt.CheckpointError(f"--resume: no checkpoint found in {str(self.run_dir / 'checkpoints')!r}")
        try:
            tensors, meta = ckpt.load_checkpoint(path)
            ckpt.check_finite(tensors, path, ckpt.finite_names(self.objective))
        except ckpt.CheckpointError as exc:
            raise ckpt.for_resume(exc) from None
        run.check_config_hash(meta, self.cfg, path)  # a checkpoint of another config is refused
        run.check_checkpoint_data(meta, self.run_dir, path)  # ... or of other data at the same path
        side = path.with_suffix(".json")
        for key in ("optimizer", "step"):
            if key not in meta:
                raise ckpt.CheckpointError(f"checkpoint sidecar {str(side)!r} lacks {key!r}, which resuming needs; "
                                           f"it is damaged: {ckpt.RESUME_ADVICE}")
        try:
            self.load_state(tensors, meta)
        except ckpt.CheckpointError:
            raise
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise run._fit_error(path, self.cfg, exc) from None
        if self.cfg.train.steps < self.step:  # nothing to train, and config.yaml would say fewer steps than ran
            raise ConfigError(f"--resume to train.steps {self.cfg.train.steps}: the run is already at step "
                              f"{self.step} ({path.name}); give train.steps >= {self.step}")
        # world size check; this rank's buffers and RNGs (a rank file missing on one rank stops every rank)
        distributed.every_rank(self.dist, lambda: dist_checkpoint.restore_rank_state(self, meta))
        resume_threads(self.cfg.train.threads, self.device, meta.get("threads"))
        if self.selector is not None:  # rank 0 first: it drops a best written after the checkpoint, and says so
            distributed.main_first(self.dist, lambda: self.selector.resume(self.step))
            if not self.is_main:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # (rank 0 said it)
                    self.selector.resume(self.step)
            self.selector.restore(meta.get("selection"), self)
        if self.is_main and (self.run_dir / "config.yaml").is_file():  # --set train.steps=... and the like
            run.record_changes(self.run_dir, self.cfg, run.check_resume_changes(self.run_dir, self.cfg), self.step)
            run.record_relocation(self.run_dir, relocate)

    # ----- one step ----------------------------------------------------------------------------
    def next_batch(self):
        """The next training batch (x, or (x, y) with labels) on the device, drawn with the data generator."""
        n, b = self.data.train.shape[0], self.cfg.train.batch_size
        global_idx = torch.randint(n, (b * self.dist.world_size,), generator=self.g_data)
        idx = distributed.shard(global_idx, self.dist)  # (B,) this rank's disjoint slice
        x = self.data.train[idx]
        if self.cfg.data.jitter:  # fresh Gaussian noise on every drawn example (model coordinates), drawn for
            # the global batch from the shared generator and sliced like it: ranks stay in step, noises differ
            noise = torch.randn((global_idx.shape[0], *x.shape[1:]), generator=self.g_data, dtype=x.dtype)
            x = x + self.cfg.data.jitter * distributed.shard(noise, self.dist)
        x = x.to(self.device)
        if self.data.train_labels is not None:
            return x, self.data.train_labels[idx].to(self.device)
        return x

    def _update(self) -> dict:
        """One optimizer update; returns the loss, gradient norm and metrics as detached tensors."""
        tc = self.cfg.train
        set_lr(self.optimizer, tc, self.step)
        distributed.sync_network_buffers(self.objective, self.dist)  # rank 0's spectral-norm vectors
        with distributed.autocast(self.device, tc.amp):
            out = check_loss_output(self.objective(self.next_batch(), generator=self.g_obj), self.objective)
        bad = distributed.nonfinite_loss(out.loss, self.dist)  # collective: every rank stops together
        if bad is not None:
            raise TrainingDiverged(f"non-finite loss ({bad}) at step {self.step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        distributed.average_gradients([p for g in self.optimizer.param_groups for p in g["params"]], self.dist)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        gnorm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip else float("inf"))
        if not torch.isfinite(gnorm):
            raise TrainingDiverged(f"non-finite parameter gradient at step {self.step + 1}")
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.objective)
        self.step += 1
        self.objective.after_step(self.step)
        # tensors, converted to floats only when logged (a float() per metric per update is a host
        # sync per metric on a GPU, and the log is written every train.log_every updates)
        return {"loss": out.loss.detach(), "grad_norm": gnorm.detach(), **out.metrics,
                "lr": self.optimizer.param_groups[0]["lr"]}

    def train_step(self) -> dict[str, float]:
        """One update; returns its logged values as floats."""
        return scalars(self._update())

    def _budget_spent(self, clock0: float) -> bool:
        """Whether ``train.time_budget`` has run out since ``clock0`` (on any rank: every rank stops together)."""
        budget = self.cfg.train.time_budget
        return budget is not None and self._on_any_rank(_clock() - clock0 >= budget)

    def _signalled(self) -> bool:
        """Whether a SIGTERM asked to stop (``training/stop_signal.py``), on any rank (every rank is inside the block
        or none is: they run one entry point)."""
        return stop_signal.handling() and self._on_any_rank(stop_signal.stop_requested())

    def _on_any_rank(self, flag: bool) -> bool:
        """``flag`` or'ed over the ranks: a collective, so that no rank waits for an update the others skip."""
        if not self.dist.enabled:
            return flag
        both = torch.tensor(float(flag), device=self.device)
        torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.MAX)
        return bool(both)

    def _stopped(self, saved: bool) -> TrainingStopped:
        """The update a SIGTERM stopped at, checkpointed (unless ``saved`` already) and said."""
        if not saved:
            self.save()  # (ends with a barrier)
        else:  # the ranks' last collective before they exit is a barrier, not _signalled's all-reduce: with gloo,
            self.dist.barrier()  # a rank that exited right after an all-reduce aborted at exit (4 runs in 42)
        steps, name = self.cfg.train.steps, ckpt.step_name(self.step)
        then = (f"continue with ebmlab train --out {self.run_dir} --resume (in Python ebmlab.resume)"
                if self.step < steps else
                f"training is complete; evaluate it with ebmlab eval {self.run_dir} (in Python Run.evaluate)")
        return TrainingStopped(f"stopped by SIGTERM after update {self.step} of {steps}; its checkpoint {name} is "
                               f"written: {then}", self.step, self.run_dir)

    def evaluation_stopped(self) -> TrainingStopped:
        """What a SIGTERM during the final evaluation raises (``stop_signal.raise_on_sigterm``): training's checkpoint
        is written, the evaluation can be redone."""
        return TrainingStopped(f"stopped by SIGTERM during the final evaluation; training ended at update {self.step} "
                               f"of {self.cfg.train.steps} and its checkpoint {ckpt.step_name(self.step)} is written: "
                               f"evaluate it with ebmlab eval {self.run_dir} (in Python Run.evaluate)",
                               self.step, self.run_dir)

    # ----- the loop ----------------------------------------------------------------------------
    def fit(self, on_sample=None) -> None:
        """Train to ``train.steps`` (from the current step), logging, checkpointing and sampling as configured.
        ``train.time_budget`` (seconds) also ends it, after the first update that finishes past the budget;
        that update is logged and checkpointed like the last of ``train.steps``. Inside
        ``stop_signal.checkpoint_on_sigterm`` a SIGTERM ends it after the update under way, checkpointed, by raising
        ``TrainingStopped`` (``training/stop_signal.py``). ``self.fit_stats`` then
        holds this call's ``updates``, ``wall_seconds``, ``cpu_seconds`` and ``stopped_by_budget``."""
        tc = self.cfg.train
        logger = RunLogger(self.run_dir, enabled=self.is_main, resumed_at=self.step)
        bar = _progress(self.step, tc.steps, enabled=self.is_main and tc.progress)
        t0, start, clock0, cpu0 = time.time(), self.step, _clock(), time.process_time()
        out_of_time = False
        try:
            logger.truncate_after(self.step)
            if self.selector is not None and tc.select_start and self.step == 0:  # the starting point is a candidate
                self.selector.check(self, tc.steps == 0)  # (no log row: every row is an update's; metrics.json has it)
            while self.step < tc.steps and not out_of_time:
                self.governor.tick()
                with distributed.compile_errors(tc.compile):
                    values = self._update()
                out_of_time = self._budget_spent(clock0)
                last = self.step == tc.steps or out_of_time
                checked = self.selector is not None and self.selector.due(self.step, last)
                if checked:  # this check's score and wall time join this step's row of the log; in metrics.json
                    # the same keys are the chosen check's score and all checks' time (Selector.load_best)
                    values["val_energy_distance"] = self.selector.check(self, last)
                    values["select_seconds"] = self.selector.last_seconds
                logged = self.step % tc.log_every == 0 or last or checked
                if logged:
                    values = scalars(values)
                    values["time"] = time.time() - t0
                    score = values.get("val_energy_distance")  # rank 0's, every rank's (Selector.check): not averaged
                    values = distributed.average_metrics(values, self.dist)  # the bar shows what the log holds
                    if checked:
                        values["val_energy_distance"] = score
                    if out_of_time:  # a finished run's last row (run_dir.has_result tells it from a killed start's)
                        values["stopped_by_budget"] = 1
                    logger.log(self.step, values)
                if bar is not None:
                    bar.update(1)
                    if logged:
                        bar.set_postfix(_postfix(values), refresh=False)
                saved = self.step % tc.checkpoint_every == 0 or last
                if saved:
                    self.save()
                if on_sample is not None and self.is_main and tc.sample_every and self.step % tc.sample_every == 0:
                    on_sample(self)
                if not last and self._signalled():  # read last: a SIGTERM during this update's check or samples
                    raise self._stopped(saved)  # stops here too (its row, check and samples as uninterrupted; saved)
            if stop_signal.stop_requested():  # after the last update: this rank's own flag (no collective follows
                raise self._stopped(saved=True)  # training), so no evaluation; the last update is always saved
        finally:
            if bar is not None:
                bar.close()
            logger.close()
            if getattr(self, "tb_media", None) is not None:  # the sample figures' writer (image_eval), whatever
                self.tb_media.close()                          # ended training; the final figures reopen it
            self.fit_stats = {"updates": self.step - start, "wall_seconds": round(_clock() - clock0, 3),
                              "cpu_seconds": round(time.process_time() - cpu0, 3), "stopped_by_budget": out_of_time}


def _clock() -> float:
    """Seconds on a monotonic clock: what ``train.time_budget`` is measured with (tests replace it)."""
    return time.monotonic()


def _postfix(values: dict) -> dict:
    keys = {"loss": "loss", "energy_gap": "gap", "accept_rate": "acc"}
    return {short: f"{values[k]:.3g}" for k, short in keys.items() if k in values}


def _progress(start: int, total: int, enabled: bool):
    """The main process's progress display (``ebmlab/progress_lines.py``: a bar on a terminal, lines in a log)."""
    return progress_display(start, total) if enabled else None
