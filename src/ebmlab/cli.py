"""The ``ebmlab`` command line: train | sample | eval | experiment | configs.

    ebmlab train [--config FILE|NAME] [--set k=v ...] [--data PATH] [--out DIR] [--resume] [--overwrite]
    ebmlab sample RUN [--n N] [--steps L] [--init noise|data] [--seed S] [--out FILE] [--checkpoint FILE] [--device DEV]
    ebmlab eval RUN [--ood DATASET ...] [--fid --inception-weights PATH] [--digits-fd] [--checkpoint FILE] [--device DEV]
    ebmlab experiment NAME [--out DIR] [--quick]
    ebmlab configs [NAME]     (list the shipped configs with their first comment line, or print one)
    ebmlab --version

Every command's ``--help`` lists its arguments with their defaults; ``train --help`` lists the methods,
models, datasets and shipped configs, ``experiment --help`` the experiments. Options are checked before
any expensive work (``eval --fid`` on a vector run is refused before sampling).

User errors (bad config, data, checkpoint) print one sentence and exit with status 2, without a
traceback; ``EBMLAB_DEBUG=1`` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _user_errors() -> tuple:
    from ebmlab.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        DistributedError,
        RunError,
        TrainingDiverged,
    )
    # FloatingPointError: TrainingDiverged, and chains that went non-finite (a step size far too large)
    return (ConfigError, DataError, CheckpointError, RunError, TrainingDiverged, FloatingPointError, ValueError,
            KeyError, DistributedError, OSError)


def _train_overrides(args) -> list[str]:
    """--set overrides, with --data as data.path (absolute: the run must not depend on the cwd); --data
    without --config (or --resume) also gets the user-data defaults (``config.USER_DATA_DEFAULTS``)."""
    from ebmlab.config import apply_overrides, user_data_overrides

    overrides = list(args.set or [])
    if args.data:
        overrides += [f"data.path={Path(args.data).expanduser().absolute()}"]
        if not any(o.startswith("data.name=") for o in overrides):
            overrides += ["data.name=array"]
        if not args.config and not args.resume:
            overrides = user_data_overrides(apply_overrides({}, overrides)) + overrides
    return overrides


def _absolute_data_path(cfg) -> None:
    """A relative data.path (from a config file) is made absolute against the current directory."""
    if cfg.data.path and not Path(cfg.data.path).expanduser().is_absolute():
        cfg.data.path = str(Path(cfg.data.path).expanduser().absolute())


def cmd_train(args) -> int:
    """``ebmlab train``: validate the config and the data, prepare (and lock) the run directory, train, evaluate."""
    from ebmlab.training import distributed
    from ebmlab.training.config import load_config
    from ebmlab.training.loop import resolve_device
    from ebmlab.training.run import resume_config

    overrides = _train_overrides(args)
    if args.resume and args.overwrite:
        from ebmlab.errors import ConfigError
        raise ConfigError("--resume continues a run and --overwrite replaces it; pass only one of them")
    if args.out:
        run_dir = Path(args.out)
    else:
        named = load_config(args.config, overrides)
        run_dir = Path(f"runs/{named.method.name}_{Path(str(named.data.name)).stem}")
    # --resume: the run's own config.yaml (or --config) plus --set; check_resume_changes refuses fixed keys
    if args.resume:  # the run's stored data.path as it is; a --config file's relative one made absolute
        cfg = resume_config(run_dir, overrides, args.config)
        if args.config:
            _absolute_data_path(cfg)
    else:
        cfg = load_config(args.config, overrides)
        _absolute_data_path(cfg)
    # torchrun: one process per GPU/CPU worker; rank 0 prepares the directory, trains as everyone
    # and alone evaluates (training/distributed.py). A single process skips all of this.
    ctx = distributed.setup(resolve_device(cfg.train.device))
    try:
        return _train_and_evaluate(args, cfg, run_dir, ctx)
    finally:
        distributed.teardown()


def _train_and_evaluate(args, cfg, run_dir: Path, ctx) -> int:
    from ebmlab.training import distributed
    from ebmlab.training.loop import prepare_run_dir
    from ebmlab.training.run import check_resume_changes, run_dataset

    # Everything is validated before the directory is touched: config (above), data (here).
    if args.resume:
        check_resume_changes(run_dir, cfg)
        data = run_dataset(run_dir, cfg)  # a changed data file is refused by name
    else:
        from ebmlab.data import build_dataset
        data = build_dataset(cfg.data)
    held = []
    distributed.main_first(ctx, lambda: held.append(prepare_run_dir(run_dir, cfg, resume=args.resume,
                                                                    overwrite=args.overwrite, data=data)))
    try:
        return _fit_and_evaluate(args, cfg, run_dir, ctx, data)
    finally:
        for lock in held:
            lock.release()


def _fit_and_evaluate(args, cfg, run_dir: Path, ctx, data) -> int:
    from ebmlab.training.evaluate import final_evaluation
    from ebmlab.training.hooks import sample_hook
    from ebmlab.training.loop import Trainer

    trainer = Trainer(cfg, run_dir, data=data)
    if args.resume:
        trainer.resume()
        if ctx.is_main:
            print(f"resumed {run_dir} at step {trainer.step}", flush=True)  # stdout: stderr is for errors
    trainer.fit(on_sample=sample_hook)
    if not ctx.is_main:
        return 0
    if trainer.fit_stats["stopped_by_budget"]:  # a finished run like one at train.steps: evaluated
        print(f"train.time_budget of {cfg.train.time_budget:g} s spent: stopped after update {trainer.step} "
              f"({trainer.fit_stats['updates']} updates in this call)", flush=True)
    print("evaluating (EMA weights) ...", flush=True)
    _report(run_dir, final_evaluation(trainer))
    return 0


def _report(run_dir: Path, metrics: dict) -> None:
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}, indent=1))
    print(f"\nrun directory: {run_dir}\n  metrics: {run_dir / 'metrics.json'}\n  plots:   {run_dir / 'plots'}"
          f"\n  samples: {run_dir / 'samples'}\n  log:     {run_dir / 'metrics.jsonl'} (TensorBoard: {run_dir / 'tb'})")
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
    print(f"used {run.checkpoint} (step {run.step}, EMA weights) on {args.device}", file=sys.stderr)


def cmd_sample(args) -> int:
    """``ebmlab sample``: draw samples with the method's own procedure; write a .npy (data coordinates) and a .png."""
    import numpy as np
    import torch

    from ebmlab import plots

    if args.n <= 0 or (args.steps is not None and args.steps < 0):
        raise ValueError(f"--n must be positive and --steps non-negative, got {args.n} and {args.steps}")
    if args.out:
        _check_output_file(Path(args.out))
    run = _open(args, need_data=args.init == "data")
    objective, data = run.objective, run.data
    dev = next(objective.parameters()).device
    g = torch.Generator(dev).manual_seed(args.seed)
    x0 = None
    if args.init == "data":  # held-out points, model coordinates: the method's procedure starts there
        idx = torch.randint(data.test.shape[0], (args.n,), generator=torch.Generator().manual_seed(args.seed))
        x0 = data.test[idx].to(dev)
    out = objective.sample(args.n, generator=g, n_steps=args.steps, x0=x0)
    x = data.transform.to_data(out.x.detach().cpu())
    steps = objective.n_steps_default if args.steps is None else args.steps
    name = f"samples_{args.init}_{steps}steps_seed{args.seed}.npy"
    path = Path(args.out or Path(args.run) / "samples" / name)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, x.numpy())
    png = path.with_suffix(".png")
    if data.kind == "image":
        plots.image_grid(x[:100], png)
    else:
        plots.sample_scatter({f"{args.init} start, {steps} sampler steps": x}, png, extent=plots.data_box(x, 0.1),
                             title=f"samples of {Path(args.run).name}")
    print(f"wrote {path} and {png}")
    _used(args, run)
    return 0


def _check_output_file(path: Path) -> None:
    """An output file's path: not a directory, and no part of its folder is a file."""
    if path.is_dir():
        raise ValueError(f"--out {str(path)!r} is a directory; give a file name such as {str(path / 'samples.npy')!r}")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {str(path)!r} lies under {str(parent)!r}, which is a file, not a "
                                 "directory; choose another --out")
            break


def cmd_eval(args) -> int:
    """``ebmlab eval``: check the options, recompute the run's metrics and plots, run the options' extensions."""
    import torch

    from ebmlab.training.evaluate import evaluate
    from ebmlab.training.hooks import eval_extensions
    from ebmlab.training.image_eval import check_eval_options
    from ebmlab.training.run import read_run_config, read_run_info

    info = read_run_info(Path(args.run)) or {}  # the options are checked before any work
    if info:
        check_eval_options(args, info["data"]["kind"], str(read_run_config(args.run).data.name))
    run = _open(args)
    check_eval_options(args, run.data.kind, str(run.data.name if run.data.kind == "image" else run.cfg.data.name))
    run_dir = Path(args.run)
    with torch.no_grad():
        metrics = evaluate(run.objective, run.data, run.cfg, run_dir)
    for fn in eval_extensions():
        metrics.update(fn(args, run.cfg, run.objective, run.data) or {})
    metrics["checkpoint_step"] = run.step
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    _report(run_dir, metrics)
    _used(args, run)
    return 0


def cmd_experiment(args) -> int:
    """``ebmlab experiment NAME``: run one paper's experiment (``ebmlab.experiments``)."""
    from ebmlab.experiments import run_experiment
    options = {"seeds": _seed_list(args.seeds)} if args.seeds else {}
    if args.jobs is not None:
        options["jobs"] = args.jobs
    if args.full:
        options["full"] = True
    if args.budget is not None:
        options["budget"] = args.budget
    if args.rescore:
        options["rescore"] = True
    for key in ("methods", "datasets"):
        if getattr(args, key) is not None:
            options[key] = _name_list(key, getattr(args, key))
    if args.data_seeds:
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


def _name_list(option: str, text: str) -> tuple[str, ...]:
    """``--methods a,b`` -> ("a", "b"); one sentence on an empty list."""
    from ebmlab.errors import ConfigError
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ConfigError(f"--{option} needs comma-separated names, got {text!r}")
    return names


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
    print("\nshow one: ebmlab configs NAME; train one: ebmlab train --config NAME", file=sys.stderr)
    return 0


def _add_open_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="FILE", default=None,
                   help="checkpoint file (step_NNNNNNNN.safetensors) to use; default: the run's result "
                        "(checkpoints/best.safetensors when train.select_every chose one, else the latest)")
    p.add_argument("--device", default="cpu", help="device to run on: cpu | cuda | cuda:N | mps | auto")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with every argument's default (a help text that states its own default keeps it; a flag's
    is "off"), and epilogs printed as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or "%(default)" in text or action.default is argparse.SUPPRESS:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose epilog may be a function, called only when help is printed (the
    lists of methods and models import torch, which other commands should not pay for)."""

    def __init__(self, *args, epilog_fn=None, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)
        self.epilog_fn = epilog_fn

    def format_help(self) -> str:
        if self.epilog_fn is not None:
            self.epilog = self.epilog_fn()
        return super().format_help()


def _wrap(title: str, names) -> str:
    import textwrap

    return textwrap.fill(", ".join(names), width=100, initial_indent="  ", subsequent_indent="  ").join(
        [f"{title}:\n", "\n"])


def _train_epilog() -> str:
    from ebmlab.config import shipped_configs
    from ebmlab.data import DATASETS
    from ebmlab.energies.build import MODELS
    from ebmlab.objectives import METHODS

    return "\n".join([_wrap("methods (--set method.name=NAME)", sorted(METHODS)),
                      _wrap("models (--set model.name=NAME)", sorted(MODELS)),
                      _wrap("datasets (--set data.name=NAME; or --data FILE for your own vectors)", sorted(DATASETS)),
                      _wrap("shipped configs (--config NAME; `ebmlab configs` describes them)", shipped_configs()),
                      "example: ebmlab train --config paper004_rings_hybrid --set train.steps=500 --out runs/rings"])


def _experiment_names() -> list[str]:
    from ebmlab.experiments import EXPERIMENTS

    return sorted(EXPERIMENTS)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ebmlab")
    except PackageNotFoundError:  # a source tree that is not installed
        from ebmlab import __version__
        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``ebmlab`` argument parser (every argument with help and its default)."""
    p = _Parser(prog="ebmlab", description="Train, sample and evaluate energy-based models (five published "
                "methods on shared parts). `ebmlab COMMAND --help` describes each command.")
    p.add_argument("--version", action="version", version=f"ebmlab {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    t = sub.add_parser("train", help="train a model (default: hybrid CD on the 10-D rings)",
                       description="Train a method on a dataset and evaluate it; writes a run directory.",
                       epilog_fn=_train_epilog)
    t.add_argument("--config", metavar="FILE|NAME", default=None,
                   help="YAML config file, or the name of a shipped config (see `ebmlab configs`); default: "
                        "the built-in defaults (hybrid on the rings)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", default=None,
                   help="override a config key (repeatable), e.g. train.steps=100 or method.name=noise")
    t.add_argument("--data", metavar="FILE", default=None,
                   help="your own vectors: .npy/.npz/.csv of shape (N, D) (sets data.name=array; without --config also "
                        "whitening, a Gaussian base measure, row noise and the result chosen on a validation split, "
                        "unless set: config.USER_DATA_DEFAULTS, README)")
    t.add_argument("--out", metavar="DIR", default=None, help="run directory; default: runs/<method>_<data>")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing run in --out (only an ebmlab run, only after the config validated)")
    t.set_defaults(fn=cmd_train)
    s = sub.add_parser("sample", help="draw samples from a trained run",
                       description="Draw samples with the method's own generation procedure; writes a .npy "
                                   "(data coordinates) and a .png beside it.")
    s.add_argument("run", metavar="RUN", help="the run directory")
    s.add_argument("--n", type=int, default=1000, help="number of samples")
    s.add_argument("--steps", type=int, default=None,
                   help="total sampler steps, spread over the levels of a multi-level method; default: the "
                        "method's own")
    s.add_argument("--init", choices=["noise", "data"], default="noise",
                   help="start the method's generation procedure from its prior (noise) or from held-out data")
    s.add_argument("--seed", type=int, default=0, help="random seed of the draw")
    s.add_argument("--out", metavar="FILE", default=None,
                   help="output .npy (a .png beside it); default: RUN/samples/samples_<init>_<steps>steps_seed<seed>.npy")
    _add_open_args(s)
    s.set_defaults(fn=cmd_sample)
    e = sub.add_parser("eval", help="evaluate a trained run; writes RUN/metrics.json",
                       description="Recompute a run's metrics and plots; options add FID, digits and OOD scores.")
    e.add_argument("run", metavar="RUN", help="the run directory")
    e.add_argument("--ood", action="append", metavar="DATASET", default=None,
                   help="OOD set (repeatable; default: none): vector runs 'shifted', 'scaled' or a file of vectors; image runs a "
                        "built-in set (noise, digits_negative, digits_flipped, digits_shuffled, digits_interpolated, digits_occluded) or a path")
    e.add_argument("--fid", action="store_true", help="Frechet Inception Distance and Inception Score (image runs)")
    e.add_argument("--inception-weights", metavar="FILE", default=None,
                   help="path to pt_inception-2015-12-05-6726825d.pth (never downloaded); default: the torch hub cache")
    e.add_argument("--digits-fd", action="store_true", help="digits feature distance (digits runs)")
    e.add_argument("--heldout-draws", type=int, metavar="K", default=None,
                   help="vector runs: the held-out energy distance of K independent draws of eval.n_samples samples "
                        "and their mean (one draw is noisy when the sampler's draws are heavy-tailed)")
    e.add_argument("--draw-seed", type=int, metavar="S", default=0,
                   help="the k-th of --heldout-draws uses generator seed S + k (default 0)")
    _add_open_args(e)
    e.set_defaults(fn=cmd_eval)
    names = _experiment_names()
    x = sub.add_parser("experiment", help=f"run a paper's experiment: {', '.join(names)}",
                       description="Reproduce a paper's central claim at CPU scale; writes results.md, "
                                   "results.json and figures.",
                       epilog=_wrap("experiments", names))
    x.add_argument("name", metavar="NAME", help=f"the experiment: one of {', '.join(names)}")
    x.add_argument("--out", metavar="DIR", default=None, help="output directory; default: runs/experiment_<NAME>")
    x.add_argument("--quick", action="store_true", help="a much shorter run, for smoke tests (numbers mean nothing)")
    x.add_argument("--seeds", metavar="S,S,...", default=None,
                   help="seeds of every arm (default: the fixed set 0,1,2; experiments on the claim harness)")
    x.add_argument("--full", action="store_true",
                   help="the larger grid where an experiment has one (paper002: T up to 40, K up to 30)")
    x.add_argument("--jobs", type=int, metavar="N", default=None,
                   help="cells run at once, each one process with one thread (default 2; 1: serially in this process)")
    x.add_argument("--budget", type=float, metavar="SECONDS", default=None,
                   help="training wall-clock seconds per cell (leaderboard, data_defaults; default 20, with --full 120)")
    x.add_argument("--methods", metavar="M,M,...", default=None,
                   help="leaderboard: only these methods (rows; the GMM and KDE baselines always run); "
                        "data_defaults: only these arms (default, gaussian_start, gaussian_refit, paired, no_margin)")
    x.add_argument("--datasets", metavar="D,D,...", default=None, help="leaderboard, data_defaults: only these datasets")
    x.add_argument("--data-seeds", metavar="S,S,...", default=None,
                   help="data_defaults: every cell on each of these splits of the tables (data.seed), and the "
                        "results pooled over them (default: the leaderboard's one split)")
    x.add_argument("--rescore", action="store_true",
                   help="leaderboard: evaluate every finished cell again from its stored run, without training "
                        "(after a change to the evaluation code; each cell.json lists what changed)")
    x.set_defaults(fn=cmd_experiment)
    c = sub.add_parser("configs", help="list the shipped configs, or print one (NAME)",
                       description="List the configs shipped with ebmlab, or print one of them.")
    c.add_argument("name", nargs="?", metavar="NAME", default=None,
                   help="a shipped config's name, e.g. paper004_rings_hybrid; default: list them all")
    c.set_defaults(fn=cmd_configs)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the ``ebmlab`` command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit status
    (0, or 2 with one sentence on stderr for a user error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except _user_errors() as exc:
        if os.environ.get("EBMLAB_DEBUG"):
            raise
        return _fail(_sentence(exc))
    except (MemoryError, RuntimeError) as exc:  # out of memory (CPU allocator or CUDA); others are bugs
        text = str(exc)
        if not (isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text) \
                or os.environ.get("EBMLAB_DEBUG"):
            raise
        return _fail("ran out of memory; reduce model.width, model.depth, train.batch_size or eval.n_samples "
                     f"({' '.join(text.split())[:120]})")
    except RecursionError:
        if os.environ.get("EBMLAB_DEBUG"):
            raise
        return _fail("input nested too deeply to read (a damaged or hostile file?)")
    except KeyboardInterrupt:
        print("ebmlab: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
        return 130


def _sentence(exc: BaseException) -> str:
    """The one-line message of a user error (OS errors: what failed, where, what to do)."""
    from ebmlab.errors import os_error_sentence

    if isinstance(exc, OSError) and (exc.errno is not None or exc.filename):
        msg = os_error_sentence(exc)
    elif isinstance(exc, KeyError) and exc.args:
        msg = f"missing key {exc.args[0]!r}" if not isinstance(exc.args[0], str) or " " not in exc.args[0] \
            else exc.args[0]
    else:
        msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())  # one line, whatever the message held


def _fail(msg: str) -> int:
    where = f" (rank {os.environ.get('RANK', '?')})" if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else ""
    print(f"ebmlab: error{where}: {msg}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
