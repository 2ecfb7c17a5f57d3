"""ebmlab's Python API: train a method on your own data (and, if you like, your own energy network),
load the run later, in any process, and sample from it in your data's own coordinates.

```python
import torch, ebmlab
from my_energies import MyEnergy          # your nn.Module: (B, D) -> (B,) energies, in a module

x = torch.randn(5000, 2) * torch.tensor([2.0, 0.5])   # your data, (N, D)
run = ebmlab.train("hybrid", data=x, energy=MyEnergy(dim=2, width=64), out="runs/mine",
                   train={"steps": 500})
run = ebmlab.resume("runs/mine", train={"steps": 1000})   # train on from the latest checkpoint
run = ebmlab.load("runs/mine")            # later, in a fresh process
samples = run.sample(1000)                # (1000, 2), data coordinates, the method's own sampler
run.log_density(samples)                  # unnormalised log-density (methods that define one)
run.metrics, run.checkpoint_step, run.config
```

- ``train`` writes a normal run directory (the same as ``ebmlab train``): ``config.yaml``,
  ``run.json``, checkpoints, ``metrics.jsonl``, TensorBoard events, plots and ``metrics.json``.
  Data given in memory (a tensor, an array, a ``Dataset``) are saved into the run as ``data.npy``,
  so the run is self-contained: ``ebmlab sample``, ``ebmlab eval`` and ``ebmlab.load`` work on it.
- Your energy's class is recorded in the config (``model.name: custom``, ``model.target:
  "module:Class"``, ``model.kwargs``; ``api_energy.py``), so the run reloads wherever that module is importable; a
  class that cannot be imported there gives one sentence (``ConfigError``) saying so. The model sees
  *model coordinates*: each data coordinate standardised with the training split's mean and std
  (``data.standardize``), and your vectors trained without a config also whitened (``data.whiten``, one of the
  user-data defaults: ``train``); ``Run.energy`` and ``Run.sample`` convert, so you work in data coordinates.
- The returned ``Run`` lives on the training device (``train.device``, CUDA when there is one); ``load``,
  ``ebmlab sample`` and ``ebmlab eval`` use the CPU unless told otherwise, and the same samples and numbers
  hold on the same device.
- The methods (``method.name``): paper 004's schemes ``hybrid`` (the default), ``data``, ``noise``,
  ``persistent``, ``persistent_refresh``; paper 000's ``joint_cd``, ``cd_ce``, ``per_t``, ``cd_plain``; paper
  001's ``improved_cd``; paper 002's ``implicit_diffusion``; paper 003's ``cdrl``, ``drl``
  (``ebmlab.methods()`` lists them). Their papers are cited in the package documentation.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ebmlab.api_catalog import compare, configs, datasets, experiment, experiment_names, methods, models
from ebmlab.api_config import raw_config, validated
from ebmlab.api_data import (DATA_FILE, as_points, data_source, dataset, image_config_note, in_memory, ood_inputs,
                             resume_or_start, save_array, warn_not_finite)
from ebmlab.api_energy import check_no_model_settings, check_rebuilds, energy_record, start_from
from ebmlab.config import Config, apply_overrides, user_data_overrides
from ebmlab.config_checks import check_integer, check_new_run
from ebmlab.devices import callers_rng
from ebmlab.errors import ConfigError, DataError, RunError, is_out_of_memory
from ebmlab.files import user_path
from ebmlab.objectives import warn_if_unloadable

__all__ = ["Run", "compare", "configs", "datasets", "experiment", "experiment_names", "load", "methods", "models", "resume",
           "train"]

SECTION_KWARGS = ("model", "train", "eval")


# ----- a trained run ---------------------------------------------------------------------------------------
class Run:
    """A trained run opened at a checkpoint (EMA weights), with everything in data coordinates.

    Attributes: ``path`` (the run directory), ``config`` (its ``Config``), ``objective`` (the method,
    an ``ebmlab.objectives.Objective`` in model coordinates), ``energy`` (an ``nn.Module`` mapping
    data-coordinate inputs (B, ...) to the data distribution's energies (B,): ``Objective.data_energy``),
    ``transform`` (model = (data - shift) / scale, then the whitening matrix where the run whitened),
    ``checkpoint`` and ``checkpoint_step``. ``run(x)`` is ``run.energy(x)``."""

    def __init__(self, path: str | Path, *, device: str = "cpu", checkpoint: str | Path | int | None = None):
        from ebmlab.training.run import DataSpaceEnergy, open_checkpoint

        path = user_path(path)
        with callers_rng():  # (building the network draws its first weights from the global generator)
            opened = open_checkpoint(path, device=device, checkpoint=checkpoint, need_data=False)
        self.path = path
        self.config: Config = opened.cfg
        self.objective = opened.objective
        self.checkpoint: Path = opened.checkpoint
        self.checkpoint_step: int = opened.step
        self.transform = opened.data.transform
        self.kind: str = opened.data.kind
        self.shape: tuple[int, ...] = tuple(opened.data.shape)
        self.energy: nn.Module = DataSpaceEnergy(self.objective.data_energy, self.transform).eval()
        self._data = None

    @property
    def device(self) -> torch.device:
        """The device the run's networks live on."""
        return next(self.objective.parameters()).device

    @property
    def method(self) -> str:
        """The run's ``method.name``."""
        return str(self.config.method.name)

    @property
    def has_log_density(self) -> bool:
        """Whether the method defines a log-density (``log_density`` works)."""
        return bool(self.objective.has_log_density)

    @property
    def metrics(self) -> dict[str, Any]:
        """The final metrics (``metrics.json``; empty when the run was not evaluated)."""
        p = self.path / "metrics.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}

    @property
    def history(self) -> list[dict[str, Any]]:
        """The training log: one dict per logged step (``metrics.jsonl``)."""
        from ebmlab.training.logging import read_metrics

        return read_metrics(self.path)

    def __call__(self, x: Tensor | np.ndarray, **cond: Any) -> Tensor:
        """Energies (B,) of data-coordinate inputs ``x`` (B, ...), a tensor or an array; ``cond``: the keywords of
        ``objective.energy_conditions`` (``y=`` labels, paper 000's level ``t=``, paper 002's time ``t=``)."""
        x = self._points(x).to(self.device)
        return warn_not_finite(self.energy(x, **self.objective.energy_cond(cond, x.shape[0])), "energies")

    def data(self) -> Any:
        """The run's ``Dataset`` (model coordinates; read from its data file, checked by SHA-256). The training split of
        images read from 8-bit files is a ``data.pixels.Pixels``: index it for float32 rows (docs/images.md)."""
        if self._data is None:
            from ebmlab.training.run_data import run_dataset

            # a refitted result's own transform (training/selection.py): the rows in its coordinates
            self._data = run_dataset(self.path, self.config, need_data=True).with_transform(self.transform)
        return self._data

    def sample(self, n: int, steps: int | None = None, init: str | Tensor | np.ndarray = "noise", seed: int = 0,
               cond: dict | None = None, return_info: bool = False, label: int | str | None = None,
               guidance: float | None = None, batch_size: int | None = None,
               progress: bool = False) -> Tensor | tuple[Tensor, dict]:
        """``n`` samples in data coordinates from the method's own generation procedure (its
        ``Objective.sample``, with the step sizes the run adapted), on CPU; ``ebmlab sample`` with the same
        arguments draws the same samples, in float64 for a run on float64 vectors (``transform.dtype``).

        ``steps``: the total number of sampler steps (None: the method's default); ``init``:
        ``"noise"`` (the method's prior), ``"data"`` (held-out data points of the run, which needs
        its data file) or start points (n, ...) in data coordinates (a tensor or an array); ``seed`` fixes the
        draw; ``cond``: conditioning such as ``{"y": labels}``; ``label``: samples of that class only (its index,
        or an image folder's class name), for a class-conditional run (``method.conditional``; ``ebmlab sample --label``), with ``guidance`` w >= 0 for
        paper 003's classifier-free guidance (``applications/guidance.py``; from the prior, no diagnostics);
        ``batch_size``: chains of at most that many at once (for n too large for one); ``progress``: a tqdm bar over
        the sampler steps (``ebmlab sample`` shows one; plain lines where stderr is a file). ``return_info=True`` also
        returns the chain diagnostics (acceptance, step sizes, energies per step; the first batch's)."""
        from ebmlab.training.drawing import data_starts, detached, draw, finite_samples, run_label

        n, seed = check_integer(n, "n", 1), check_integer(seed, "seed", 0, 2**63 - 1)
        steps = None if steps is None else check_integer(steps, "steps", 0)
        dev = self.device
        x0 = None
        if not isinstance(init, str):  # start points (n, ...), a tensor or an array
            x0 = self._points(init, "init").detach().cpu()
            finite = bool(torch.isfinite(x0).all())
            if x0.shape[0] != n or not finite:
                raise DataError(f"init must hold n = {n} finite start points, got {x0.shape[0]} rows"
                                f"{'' if finite else ' with NaN or inf values'}")
            x0 = self.transform.to_model(x0).to(dev)
        elif init == "data":
            x0 = data_starts(self.data().test, n, seed, dev)
        elif init != "noise":
            raise ConfigError(f"init must be 'noise', 'data' or a tensor of start points, got {init!r}")
        if label is not None:  # an index, or a name run.json stores
            label = run_label(label, self.path, getattr(self.objective, "num_classes", 0))[0]
        try:
            out = draw(self.objective, n, torch.Generator(dev).manual_seed(seed), steps=steps, x0=x0, cond=cond,
                       label=label, guidance=guidance, batch_size=batch_size, progress=bool(progress))
        except (MemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            raise RunError(f"sampling {n} points ran out of memory; draw fewer, or in batches (batch_size=)") from None
        x = finite_samples(self.transform.to_data(out.x.detach().cpu()))
        return (x, detached(out.info)) if return_info else x

    def evaluate(self, *, ood: str | Path | Sequence[str | Path] | Mapping[str, Any] = (),
                 heldout_draws: int | None = None, draw_seed: int | None = None, digits_fd: bool = False, fid: bool = False,
                 inception_weights: str | Path | None = None) -> dict[str, Any]:
        """Recompute the run's metrics and plots at this checkpoint, as ``ebmlab eval RUN`` does with the same
        options (the same numbers), rewrite ``metrics.json`` (keeping how training chose the result) and return
        the metrics. ``ood``: out-of-distribution sets (vector runs ``"shifted"``, ``"scaled"`` or a file of
        vectors; image runs a built-in set or a path), or a mapping {name: array (N, *run.shape) in data
        coordinates; images also as uint8} of sets held in memory (``ood_auroc_<name>``); ``heldout_draws``: K more held-out energy distances
        (vector runs; the k-th from seed ``draw_seed`` + k, default 0); ``digits_fd``, ``fid`` (with ``inception_weights``,
        never downloaded): image scores. An option that cannot apply to the run raises before any work."""
        from types import SimpleNamespace

        from ebmlab.training.evaluate import evaluate_checkpoint

        names, arrays = ood_inputs(ood, self.shape, self.kind, self.transform.dtype)
        options = SimpleNamespace(run=str(self.path), ood=names, ood_arrays=arrays, heldout_draws=heldout_draws,
                                  draw_seed=draw_seed, digits_fd=digits_fd, fid=fid, inception_weights=inception_weights)
        was_training = self.objective.training
        try:
            return evaluate_checkpoint(self.path, self.objective, self.data(), self.config, self.checkpoint_step,
                                       options)
        finally:
            self.objective.train(was_training)

    def log_density(self, x: Tensor | np.ndarray) -> Tensor:
        """(B,) unnormalised log-density of data-coordinate ``x`` (B, ...), a tensor or an array: the model's
        log p(z) at z = ``transform.to_model(x)`` ((x - shift) / scale, whitened where the run whitened) plus
        log |dz/dx|. ``NoLogDensity`` for a method without one."""
        z = self.transform.to_model(self._points(x).cpu()).to(self.device)
        with torch.no_grad():
            return warn_not_finite(self.objective.log_density(z).cpu() + self.transform.log_det, "log-densities")

    def _points(self, x, what: str = "x") -> Tensor:
        """``api_data.as_points(x)``, refused in one sentence unless it is a batch (B, *self.shape) of the run's points. Images
        given as uint8 (0..255) are read as the image loaders read them, v / 127.5 - 1 (they were taken as is)."""
        t = as_points(x, self.transform.dtype)
        if self.kind == "image" and getattr(x, "dtype", None) in (torch.uint8, np.uint8):
            t = t / 127.5 - 1
        if t.dim() != len(self.shape) + 1 or tuple(t.shape[1:]) != self.shape:
            dims = ", ".join(map(str, self.shape))
            raise DataError(f"{what} must be a batch of the run's points, shape (B, {dims}) in its data coordinates; "
                             f"got {tuple(t.shape)}")
        return t

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, method={self.method!r}, model={self.config.model.name!r}, "
                f"step={self.checkpoint_step}, data={self.kind} {self.shape})")


def load(path: str | Path, device: str = "cpu", checkpoint: str | Path | int | None = None) -> Run:
    """Open the run in ``path`` at its result (the validation best when ``train.select_every`` chose one, as for user
    data by default; else the latest checkpoint), or at ``checkpoint`` (a file, a name in its ``checkpoints/`` with or
    without ``.safetensors``, or a step number), with the EMA weights.

    Needs only the run directory (the data transform is stored in it); ``run.sample(n)`` draws samples, ``run(x)`` gives
    energies. Errors are ebmlab's one-sentence ``ConfigError``, ``DataError``, ``CheckpointError``, ``RunError``."""
    return Run(path, device=device, checkpoint=checkpoint)


# ----- training ---------------------------------------------------------------------------------------------
def train(method: str | None = None, data: Any = None, *, energy: nn.Module | None = None,
          energy_kwargs: Mapping[str, Any] | None = None, config: Config | Mapping | str | Path | None = None,
          overrides: Sequence[str] | Mapping[str, Any] | None = None, out: str | Path | None = None,
          overwrite: bool = False, evaluate: bool = True, resume: bool | str = False,
          **sections: Mapping[str, Any]) -> Run:
    """Train ``method`` on ``data`` and return the trained ``Run`` (EMA weights, at the run's result: see ``load``).

    - ``method``: a method name (``ebmlab.methods()``; default: the config's, else ``hybrid``); a config whose
      method is another, with settings of its own, loses those settings (a warning names them);
    - ``data``: a tensor or array (N, D) of your vectors (or anything ``numpy.asarray`` reads: nested lists, a
      pandas DataFrame of numeric columns), a ``torch.utils.data.Dataset`` of vectors
      (or of (vector, label) pairs, whose labels are not used), an ``ebmlab.data.Dataset``, the path of a .npy/.npz/.csv file, a
      folder of images (``imagefolder``: .png, .jpg, .bmp, .gif, .tif, .webp; one sub-folder per class gives labels) or a dataset name
      (``ebmlab.datasets()``); None: the config's data. Data in memory are saved into
      the run as ``data.npy``;
    - ``energy``: your own ``nn.Module`` mapping (B, D) to (B,) energies, defined in an importable
      module; its class and constructor arguments are recorded (``model.name: custom``). The
      arguments are read from the instance's attributes of the same names (as scikit-learn does), or
      given as ``energy_kwargs``. Its current weights are the starting point (``train.seed`` does not draw them: seed
      torch before building it). ``model=`` settings and ``model.*``
      overrides are refused with it (they configure ebmlab's own networks);
    - ``config``: a ``Config``, a mapping of sections, a YAML file or a shipped config's name
      (``ebmlab configs``); None: the defaults;
    - ``overrides``: ``["train.steps=500", ...]`` or ``{"train.steps": 500, ...}``;
      ``model=``, ``train=``, ``eval=``: mappings merged into those sections, e.g.
      ``train={"steps": 500, "lr": 1e-3}``;
    - ``out``: the run directory (default ``runs/<method>_<data.name>``, as the CLI; data given in memory:
      ``runs/<method>_data``); ``overwrite`` replaces an
      existing run there; ``evaluate``: compute the final metrics and plots (``metrics.json``);
    - ``resume``: True continues the run in ``out`` from its latest checkpoint (the same arguments: what a resume may
      change, as ``ebmlab.resume``; data in memory must be its own rows); "auto" continues it if it holds a
      checkpoint and starts it otherwise, one call for a job a scheduler may requeue (``--resume auto``).

    Your vectors (``data.name: array``) without ``config`` get the user-data defaults, as ``ebmlab train --data FILE``
    does, for every key you do not set (``config.USER_DATA_DEFAULTS``, README "Using it"): whitening, noise on the
    rows, a 10 % validation split, a base measure (a Gaussian mixture fitted to the rows for paper 004's methods on
    the MLP), and the result chosen on the validation split among the starting weights and every 50th update's,
    so the returned ``Run`` can be the untrained start (``Run.checkpoint_step`` 0) when no check beats it.

    Raises ebmlab's one-sentence errors (``ConfigError``, ``DataError``, ``RunError``) before any file is written
    when the config or the data are wrong, ``TrainingDiverged`` when training diverges (the run directory
    then holds the last good checkpoint), and ``TrainingStopped`` when a SIGTERM stops it (after an update, whose
    checkpoint it writes: ``ebmlab.resume`` goes on from there)."""
    bad = sorted(set(sections) - set(SECTION_KWARGS))
    if bad:
        raise ConfigError(f"unknown keyword argument(s) {bad}; sections are given as model=, train=, eval= "
                          "mappings, everything else as overrides={'section.key': value}")
    raw = raw_config(config, method, sections, overrides)
    x_mem = in_memory(data)
    run_dir = user_path(out) if out is not None else None
    if x_mem is None and data is not None:
        given = [overrides] if isinstance(overrides, str) else (overrides or ())  # one override as a string too
        named = any(str(k).startswith("data.name") for k in given)  # keys of a mapping, items of a list
        data_source(raw, data, named)
    if energy is not None:
        check_no_model_settings(sections, overrides)
        raw["model"] = {"name": "custom", **energy_record(energy, energy_kwargs)}
    elif energy_kwargs is not None:
        raise ConfigError("energy_kwargs are the arguments of your own energy; give the energy too (energy=...)")
    if run_dir is None:
        name = raw.get("method", {}).get("name", "hybrid")
        stem = "data" if x_mem is not None else Path(str(raw.get("data", {}).get("name", "rings"))).stem
        run_dir = Path("runs") / f"{name}_{stem}"
    if x_mem is not None:
        raw["data"] = {**raw.get("data", {}), "name": "array", "path": str((run_dir / DATA_FILE).absolute())}
    if config is None and (raw.get("data") or {}).get("name") == "array":  # the user's vectors, no config
        raw = apply_overrides(raw, user_data_overrides(raw))
    cfg = validated(raw)
    warn_if_unloadable(cfg.method.name)  # a method registered in __main__
    data_set = dataset(cfg, x_mem)
    note = image_config_note(data_set.kind, cfg.model.name, config is not None or "name" in (raw.get("model") or {}))
    if note:
        warnings.warn(note, stacklevel=2)
    with callers_rng():
        check_rebuilds(cfg, energy)  # (energy None: nothing to check)
    if resume_or_start(resume, run_dir, overwrite, x_mem):  # (x_mem: the run's own rows, not saved again)
        from ebmlab.training.run import check_resume_changes, relocation
        from ebmlab.training.run_data import run_dataset  # a changed data file is refused; rows given in memory:
        cfg, place = relocation(run_dir, cfg)  # data= a moved copy of the run's file, or its own rows (data.npy)
        check_resume_changes(run_dir, cfg)  # before the data are read: another data.path is refused as such
        data_set = run_dataset(run_dir, cfg, relocate=place) if x_mem is None or run_dir.is_dir() else data_set
        return _train_in(run_dir, cfg, data_set, evaluate=evaluate, resume=True, relocate=place)
    check_new_run(cfg)
    return _train_in(run_dir, cfg, data_set, x_mem=x_mem, energy=energy, overwrite=overwrite, evaluate=evaluate)


def resume(path: str | Path, *, overrides: Sequence[str] | Mapping[str, Any] | None = None, evaluate: bool = True,
           **sections: Mapping[str, Any]) -> Run:
    """Continue the run in ``path`` from its latest checkpoint, as ``ebmlab train --out PATH --resume`` does, and
    return it, e.g. ``ebmlab.resume("runs/mine", train={"steps": 2000})`` trains on to update 2000.

    The run's own ``config.yaml`` is used (its data, from ``data.npy`` for data given in memory); ``overrides``,
    ``train=`` and ``eval=`` may change only what a resumed run may (``train.steps``, ``train.time_budget``, the
    logging, checkpoint and sample intervals, ``train.progress``, ``eval.*``: ``ebmlab.config_hash.MUTABLE_KEYS``), recorded in
    ``config_changes.jsonl``; any other change, a run without a checkpoint or a data file changed since training
    raise one-sentence errors (``ConfigError``, ``CheckpointError``, ``DataError``, ``RunError``) before anything
    is written. A run on your own energy needs its module importable, as for ``load``."""
    from ebmlab.training.config import from_dict
    from ebmlab.training.run import check_resume_changes, relocation, resume_config
    from ebmlab.training.run_data import run_dataset

    bad = sorted(set(sections) - {"train", "eval"})
    if bad:
        raise ConfigError(f"ebmlab.resume takes train= and eval= mappings and overrides=, not {bad}: the rest of a "
                          "run's config is fixed by its checkpoints")
    run_dir = user_path(path)
    cfg, place = relocation(run_dir, from_dict(raw_config(resume_config(run_dir, None), None, sections, overrides)))
    check_resume_changes(run_dir, cfg)  # before the data are read: another data.path is refused as such
    return _train_in(run_dir, cfg, run_dataset(run_dir, cfg, relocate=place), evaluate=evaluate, resume=True,
                     relocate=place)


def _train_in(run_dir: Path, cfg: Config, data, *, x_mem=None, energy=None, overwrite: bool = False,
              evaluate: bool = True, resume: bool = False, relocate: str | None = None) -> Run:
    """Train (``resume``: on, from the latest checkpoint) in ``run_dir``; everything that can refuse is checked
    before the directory is touched, as ``ebmlab train`` does (``cli_commands._train_and_evaluate``); a resume's
    config changes were checked by the caller, before it read the data (``relocate``: ``run.relocation``'s place)."""
    from ebmlab.training.loop import Trainer
    from ebmlab.training.run_dir import check_run_dir

    check_run_dir(run_dir, resume=resume, overwrite=overwrite)  # a refused directory is said at once
    threads = torch.get_num_threads()  # train.threads is the run's, not the caller's process's: restored below
    with callers_rng():  # training seeds torch's global generators: the caller's come back
        try:
            trainer = Trainer(cfg, run_dir, data=data)  # writes nothing; a method's or model's demands on the data raise
            _fit_in(trainer, run_dir, cfg, data, x_mem, energy, overwrite, evaluate, resume, relocate)
        finally:
            torch.set_num_threads(threads)
    return load(run_dir, device=str(trainer.device))


def _fit_in(trainer, run_dir: Path, cfg: Config, data, x_mem, energy, overwrite: bool, evaluate: bool,
            resume: bool, relocate: str | None = None) -> None:
    """``_train_in``'s work under the run's lock: the in-memory data saved, the user's energy copied in, training
    (resumed), the final evaluation."""
    from ebmlab.training.evaluate import final_evaluation
    from ebmlab.training.hooks import sample_hook
    from ebmlab.training.loop import prepare_run_dir
    from ebmlab.training.run_data import write_run_info
    from ebmlab.training.stop_signal import checkpoint_on_sigterm, raise_on_sigterm

    lock = prepare_run_dir(run_dir, cfg, resume=resume, overwrite=overwrite, data=None if x_mem is not None else data)
    try:
        if x_mem is not None:
            save_array(run_dir / DATA_FILE, x_mem)
            write_run_info(run_dir, cfg, data)
        if energy is not None:
            start_from(trainer, energy)
        if resume:
            trainer.resume(relocate)
        with checkpoint_on_sigterm():  # a SIGTERM stops after an update, checkpointed, raising TrainingStopped
            trainer.fit(on_sample=sample_hook)
        if evaluate:
            with raise_on_sigterm(trainer.evaluation_stopped):  # nothing to checkpoint: stops at once, said
                final_evaluation(trainer)
    finally:
        lock.release()
