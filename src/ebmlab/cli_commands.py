"""What each ``ebmlab`` command does (``cmd_train``, ``cmd_sample``, ``cmd_eval``, ``cmd_compare``,
``cmd_experiment``, ``cmd_configs``): each takes the parsed arguments (``cli.build_parser``) and returns the exit status. Errors a
user can fix are raised as ``ebmlab.errors`` exceptions; ``cli.main`` turns them into one sentence and
status 2. Heavy imports (torch, the methods) happen inside the commands, so ``ebmlab --help`` stays quick.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ebmlab.files import atomic_write, file_above, save_npy_atomic

__all__ = ["cmd_compare", "cmd_configs", "cmd_eval", "cmd_experiment", "cmd_sample", "cmd_train"]


def _train_overrides(args) -> list[str]:
    """--set overrides, with --data as data.path (absolute: the run must not depend on the cwd): a file is read as
    vectors (``array``), a folder as images (``imagefolder``); the user's vectors (``data.name=array``, from --data or
    --set) without --config (or --resume) also get the user-data defaults (``config.USER_DATA_DEFAULTS``), as
    ``ebmlab.train`` gives them."""
    from ebmlab.api_data import file_data_name, folder_data_name, is_image_folder, looks_like_a_name
    from ebmlab.api_energy import check_custom_model_settings
    from ebmlab.config import apply_overrides, user_data_overrides
    from ebmlab.errors import DataError

    overrides = list(args.set or [])
    check_custom_model_settings(overrides)  # --set model.name=custom with --set model.width=...: refused, not dropped
    named = [o.split("=", 1)[1] for o in overrides if o.startswith("data.name=")]
    if args.data and not Path(args.data).expanduser().exists() and looks_like_a_name(args.data):
        # a name (or a typo of one: the config check lists the datasets), as ebmlab.train(data="digits") takes it
        if any(n != args.data for n in named):  # (the later --set won silently; ebmlab.train took data=)
            raise DataError(f"--data {args.data} and --set data.name={named[-1]} name two datasets: give one")
        return [f"data.name={args.data}"] + overrides
    if args.data:
        path = Path(args.data).expanduser().absolute()
        overrides += [f"data.path={path}"]
        if not named:  # a folder holds images (or CIFAR's batch files), a file vectors or an array of images
            overrides += [f"data.name={folder_data_name(path) if is_image_folder(path) else file_data_name(path)}"]
    if not args.config and not args.resume and (args.data or named):
        raw = apply_overrides({}, overrides)
        if raw["data"]["name"] == "array":  # defaults for a table
            overrides = user_data_overrides(raw) + overrides
    return overrides


def cmd_train(args) -> int:
    """``ebmlab train``: validate the config and the data, prepare (and lock) the run directory, train, evaluate."""
    from ebmlab.api_config import absolute_data_path
    from ebmlab.config_checks import check_new_run
    from ebmlab.training import distributed
    from ebmlab.training.config import load_config
    from ebmlab.training.loop import resolve_device
    from ebmlab.training.run import relocation, resume_config

    if args.resume and args.overwrite:
        from ebmlab.errors import ConfigError
        raise ConfigError("--resume continues a run and --overwrite replaces it; pass only one of them")
    if args.resume == "auto":  # decided first: the overrides depend on it (a new run on --data gets its defaults)
        args.resume = _resume_or_start(Path(args.out) if args.out else _default_out(args, _train_overrides(args)))
    overrides = _train_overrides(args)
    run_dir = Path(args.out) if args.out else _default_out(args, overrides)
    args.run_dir = run_dir  # (what a Ctrl-C message names: cli._after_interrupt)
    # --resume: the run's own config.yaml (or --config) plus --set; check_resume_changes refuses fixed keys
    if args.resume:  # the run's stored data.path as it is; a --config file's relative one made absolute
        cfg = resume_config(run_dir, overrides, args.config)
        if args.config:
            absolute_data_path(cfg)
        cfg, args.relocate = relocation(run_dir, cfg)  # --data NEW: a moved data file with the same bytes
    else:
        cfg = load_config(args.config, overrides)
        check_new_run(cfg)
        absolute_data_path(cfg)
    # torchrun: one process per GPU/CPU worker; rank 0 prepares the directory, trains as everyone
    # and alone evaluates (training/distributed.py). A single process skips all of this.
    ctx = distributed.setup(resolve_device(cfg.train.device))
    try:
        return _train_and_evaluate(args, cfg, run_dir, ctx)
    finally:
        distributed.teardown()


def _default_out(args, overrides: list[str]) -> Path:
    """runs/<method>_<data>: where a run goes without --out."""
    from ebmlab.training.config import load_config

    named = load_config(args.config, overrides)
    return Path(f"runs/{named.method.name}_{Path(str(named.data.name)).stem}")


def _resume_or_start(run_dir: Path) -> bool:
    """``--resume auto``: continue ``run_dir`` if it holds a checkpoint, else start it (a scheduler's requeue runs the
    same command line again: the first time it starts, later it resumes). Said on stdout (rank 0)."""
    from ebmlab.api_data import resume_or_start

    resume = resume_or_start("auto", run_dir, overwrite=False, x_mem=None)  # (the one rule, ebmlab.train's too)
    if not resume and os.environ.get("RANK", "0") == "0":
        print(f"--resume auto: no checkpoint in {run_dir}, so a new run starts there", flush=True)
    return resume


def _train_and_evaluate(args, cfg, run_dir: Path, ctx) -> int:
    from ebmlab.training import distributed
    from ebmlab.training.loop import Trainer, prepare_run_dir
    from ebmlab.training.run import check_resume_changes
    from ebmlab.training.run_data import run_dataset
    from ebmlab.training.run_dir import check_run_dir

    # Everything is validated before the directory is touched: config (above), the directory's refusals, data and
    # the objective built on it (a method's demands on the data, the model's on its shape) (here).
    check_run_dir(run_dir, args.resume, args.overwrite)
    if args.resume:
        check_resume_changes(run_dir, cfg)
        data = run_dataset(run_dir, cfg, relocate=args.relocate)  # a changed data file is refused by name
    else:
        from ebmlab.data import build_dataset
        data = build_dataset(cfg.data)
    trainer = Trainer(cfg, run_dir, data=data)  # (writes nothing)
    _image_config_note(args, cfg, data, ctx)
    held = []
    distributed.main_first(ctx, lambda: held.append(prepare_run_dir(run_dir, cfg, resume=args.resume,
                                                                    overwrite=args.overwrite, data=data)))
    try:
        return _fit_and_evaluate(args, run_dir, ctx, trainer)
    finally:
        for lock in held:
            lock.release()


def _image_config_note(args, cfg, data, ctx) -> None:
    """A note on stderr when images train on the default vector MLP because nothing chose a model."""
    from ebmlab.api_data import image_config_note

    chosen = bool(args.config or args.resume) or any(o.startswith("model.name=") for o in args.set or [])
    note = image_config_note(data.kind, cfg.model.name, chosen)
    if note and ctx.is_main:
        print(f"note: {note}", file=sys.stderr, flush=True)


def _fit_and_evaluate(args, run_dir: Path, ctx, trainer) -> int:
    from ebmlab.training.evaluate import final_evaluation
    from ebmlab.training.hooks import sample_hook
    from ebmlab.training.run_data import relocation_note
    from ebmlab.training.stop_signal import checkpoint_on_sigterm, raise_on_sigterm

    cfg = trainer.cfg
    if args.resume:
        trainer.resume(args.relocate)
        if ctx.is_main:
            print(f"resumed {run_dir} at step {trainer.step}{relocation_note(args.relocate, cfg, run_dir)}", flush=True)
    with checkpoint_on_sigterm():  # a SIGTERM stops after an update, checkpointed (TrainingStopped: cli._run)
        trainer.fit(on_sample=sample_hook)
    if not ctx.is_main:
        return 0
    if trainer.fit_stats["stopped_by_budget"]:  # a finished run like one at train.steps: evaluated
        print(f"train.time_budget of {cfg.train.time_budget:g} s spent: stopped after update {trainer.step} "
              f"({trainer.fit_stats['updates']} updates in this call)", flush=True)
    print(f"evaluating ({_weights(cfg)}) ...", flush=True)
    with raise_on_sigterm(trainer.evaluation_stopped):  # nothing to checkpoint: stops at once, said
        metrics = final_evaluation(trainer)
    _report(run_dir, metrics)
    return 0


def _report(run_dir: Path, metrics: dict) -> None:
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}, indent=1))
    plots = f"\n  plots:   {run_dir / 'plots'}" if (run_dir / "plots").is_dir() else ""  # (not with eval.plots=false)
    print(f"\nrun directory: {run_dir}\n  metrics: {run_dir / 'metrics.json'}{plots}\n  samples: {run_dir / 'samples'}"
          f"\n  log:     {run_dir / 'metrics.jsonl'} (TensorBoard: {run_dir / 'tb'})")
    if "selected_step" in metrics:  # train.select_every: the run's result is its best validation check
        from ebmlab.training.checkpoint import best_path
        refit = ", its transform refitted on the training and validation rows" if metrics.get("selected_refit") else ""
        print(f"  result:  {best_path(run_dir / 'checkpoints')} (step {metrics['selected_step']}, the best "
              f"validation check{refit}; sample, eval and ebmlab.load use it)")


def _open(args, need_data: bool = True):
    """Open ``args.run`` at ``--checkpoint`` (default: the run's result, the validation best or the latest) on
    ``--device``, and say which."""
    from ebmlab.training.run import open_checkpoint

    return open_checkpoint(args.run, device=args.device, checkpoint=args.checkpoint, need_data=need_data)


def _used(args, run) -> None:
    """Say which checkpoint a successful sample/eval used (after the work: a failure stays one line)."""
    print(f"used {run.checkpoint} (step {run.step}, {_weights(run.cfg)}) on {args.device}", file=sys.stderr)


def _weights(cfg) -> str:
    """Which weights a run is used with: its EMA when it keeps one (train.ema), else the trained ones."""
    return "EMA weights" if cfg.train.ema is not None else "weights: train.ema is off"


def cmd_sample(args) -> int:
    """``ebmlab sample``: draw samples with the method's own procedure; write a .npy (data coordinates) and a .png."""
    import torch

    from ebmlab import plots
    from ebmlab.config_checks import check_integer
    from ebmlab.training.drawing import data_starts, draw, finite_samples, run_label

    check_integer(args.n, "--n", 1)
    check_integer(args.seed, "--seed", 0, 2**63 - 1)
    if args.steps is not None:
        check_integer(args.steps, "--steps", 0)
    out_file = _output_file(Path(args.out)) if args.out else None
    if out_file is not None:
        _not_the_runs_data(Path(args.run), [out_file, out_file.with_suffix(".png")])
        _not_replaced(out_file, args.overwrite)
    run = _open(args, need_data=args.init == "data")
    objective, data = run.objective, run.data
    if out_file is not None and out_file.suffix == ".csv" and data.kind == "image":
        raise ValueError(f"--out {args.out!r}: images are written as .npy (N, C, H, W), not .csv; give a .npy name")
    _check_writable(out_file.parent if out_file is not None else Path(args.run) / "samples")  # before a long draw
    dev = next(objective.parameters()).device
    # --init data: held-out points, model coordinates: the method's procedure starts there
    x0 = data_starts(data.test, args.n, args.seed, dev) if args.init == "data" else None
    label, name = (None, None) if args.label is None else run_label(args.label, args.run,
                                                                         getattr(objective, "num_classes", 0))
    xs = draw(objective, args.n, torch.Generator(dev).manual_seed(args.seed), steps=args.steps, x0=x0,
              label=label, guidance=args.guidance, batch_size=args.batch_size, progress=None).x  # a bar; lines in a log after 30 s
    x = finite_samples(data.transform.to_data(xs.detach().cpu()))  # nothing written where a sample is not finite
    steps = objective.steps_run(args.steps)  # what ran: --steps rounded up to whole levels (papers 000, 002, 003)
    rounded = "" if args.steps in (None, steps) else (f", --steps {args.steps} rounded up to whole levels "
                                                      f"({objective.sample_levels})")
    tag = "" if args.label is None else f"_label{name}"  # the class's name where the run names them
    tag += "" if args.guidance is None else f"_w{args.guidance:g}"
    name = f"samples_{args.init}_{steps}steps_seed{args.seed}{tag}.npy"
    path = out_file or Path(args.run) / "samples" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # --out without --overwrite: put in place only where no file is (another `sample --out` may have meanwhile)
        _write_samples(path, x.numpy(), replace=out_file is None or args.overwrite)
    except FileExistsError:
        _not_replaced(out_file, False)
        raise
    png = path.with_suffix(".png")
    if data.kind == "image":
        plots.image_grid(x[:100], png)
    else:
        plots.sample_scatter({f"{args.init} start, {steps} sampler steps": x}, png, extent=plots.data_box(x, 0.1),
                             title=f"samples of {Path(args.run).name}")
    print(f"wrote {path} and {png} ({steps} sampler steps{rounded})")
    _used(args, run)
    return 0


def _check_writable(folder: Path) -> None:
    """Fail before the draw, not after it, where its files cannot be written (a read-only run, a full quota): the
    folder made and a temp file created in it; an OSError names the folder."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        exc.filename = str(folder)
        raise


def _output_file(path: Path) -> Path:
    """``sample --out``'s file: a .npy or .csv name (no suffix: .npy is added, as numpy would), not a directory, and
    no part of its folder a file."""
    if path.is_dir():
        raise ValueError(f"--out {str(path)!r} is a directory; give a file name such as {str(path / 'samples.npy')!r}")
    if path.suffix == "":
        path = path.with_suffix(".npy")
    if path.suffix not in (".npy", ".csv"):
        raise ValueError(f"--out {str(path)!r}: samples are written as .npy or .csv; give a name ending in one of them")
    if (parent := file_above(path)) is not None:
        raise ValueError(f"--out {str(path)!r} lies under {str(parent)!r}, which is a file, not a directory; "
                         "choose another --out")
    return path


def _not_replaced(out_file: Path, overwrite: bool) -> None:
    """Refuse a ``sample --out`` that would replace the user's files (the named file or the .png of the same name
    beside it, which the user did not name) unless ``--overwrite`` says so."""
    existing = [str(f) for f in (out_file, out_file.with_suffix(".png")) if os.path.lexists(f)]  # (a dangling link too)
    if existing and not overwrite:
        raise ValueError(f"--out {str(out_file)!r}: {' and '.join(repr(f) for f in existing)} already "
                         f"exist{'s' if len(existing) == 1 else ''}; pass --overwrite to replace "
                         f"{'it' if len(existing) == 1 else 'them'}, or choose another --out")


def _write_samples(path: Path, x, replace: bool = True) -> None:
    """Samples (N, ...) as .npy, or .csv of one row per sample (readable by --data and
    ``numpy.loadtxt(..., delimiter=",")``), written atomically: a failed write keeps a file it replaces."""
    import numpy as np

    if path.suffix != ".csv":
        return save_npy_atomic(path, x, replace)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savetxt(fh, x, delimiter=",", fmt="%.17g" if x.dtype == np.float64 else "%.9g")  # (round trip)
    atomic_write(path, write, replace)


def _not_the_runs_data(run_dir: Path, files: list[Path]) -> None:
    """Refuse ``sample --out`` files that are the run's data file or lie in its data folder (also through a linked
    folder in it, which the image walk follows; a hidden folder in it is not read): writing there replaced the
    user's data with samples, and every later ``sample``/``eval`` of the run refused the changed data."""
    from ebmlab.training.run import read_run_config, read_run_info
    from ebmlab.training.run_data import located_config
    from ebmlab.training.run_dir import holds

    cfg = read_run_config(run_dir)
    path = located_config(run_dir, cfg, read_run_info(run_dir)).data.path
    if not path:
        return
    data = Path(path).resolve()
    for f in files:
        target = f.resolve()
        if target == data or (data.is_dir() and holds(data, target.parent)):
            raise ValueError(f"--out {str(f)!r} would write into the run's data ({str(data)!r}), which the run needs "
                             "unchanged; choose another --out")


def cmd_eval(args) -> int:
    """``ebmlab eval``: check the options, recompute the run's metrics and plots, run the options' extensions."""
    from ebmlab.training.evaluate import evaluate_checkpoint
    from ebmlab.training.image_eval import check_eval_options
    from ebmlab.training.run import read_run_config, read_run_info

    info = read_run_info(Path(args.run)) or {}  # the options are checked before any work (loading the data)
    if info:
        check_eval_options(args, info["data"]["kind"], str(read_run_config(args.run).data.name))
    run = _open(args)
    run_dir = Path(args.run)
    metrics = evaluate_checkpoint(run_dir, run.objective, run.data, run.cfg, run.step, args)
    _report(run_dir, metrics)
    _used(args, run)
    return 0


def cmd_compare(args) -> int:
    """``ebmlab compare RUN RUN ...``: the runs' recorded metrics side by side (``experiments/compare.py``)."""
    from ebmlab.experiments.compare import compare

    result = compare(args.runs, out=args.out, pool_seeds=args.pool_seeds)
    print(result.markdown(), end="")
    if args.out:
        print(f"\nwritten to {args.out}: {', '.join(result.files)}")
    return 0


def cmd_experiment(args) -> int:
    """``ebmlab experiment NAME``: run one paper's experiment (``ebmlab.experiments``)."""
    from ebmlab.experiments import name_list, run_experiment
    options = {"seeds": _seed_list(args.seeds)} if args.seeds is not None else {}  # --seeds "": refused, not the default
    if args.jobs is not None:
        options["jobs"] = args.jobs
    if args.full:
        options["full"] = True
    if args.budget is not None:
        options["budget"] = args.budget
    if args.rescore:
        options["rescore"] = True
    if args.auroc_margin is not None:
        options["auroc_margin"] = args.auroc_margin
    for key in ("methods", "datasets"):
        if getattr(args, key) is not None:
            options[key] = name_list(key, getattr(args, key))
    if args.data_seeds is not None:
        options["data_seeds"] = _seed_list(args.data_seeds, "--data-seeds")
    run_experiment(args.name, Path(args.out or f"runs/experiment_{args.name}"), quick=args.quick, **options)
    return 0


def _seed_list(text: str, option: str = "--seeds") -> tuple[int, ...]:
    """``--seeds 0,1,2`` -> (0, 1, 2); one sentence on a bad list."""
    from ebmlab.errors import ConfigError
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated integers such as 0,1,2, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{option} must not repeat a seed, got {text!r}")
    return seeds


def cmd_configs(args) -> int:
    """``ebmlab configs [NAME]``: list the shipped configs with their first comment line, or print one."""
    from ebmlab.config import config_description, shipped_config_text, shipped_configs

    if args.name:
        print(shipped_config_text(args.name), end="")
        return 0
    names = shipped_configs()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {config_description(shipped_config_text(name))}")
    sys.stdout.flush()  # the list before the hint; into a closed pipe, the error before the hint is said
    print("\nshow one: ebmlab configs NAME; train one: ebmlab train --config NAME", file=sys.stderr)
    return 0
