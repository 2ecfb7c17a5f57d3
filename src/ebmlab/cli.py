"""The ``ebmlab`` command line: train | sample | eval | experiment | configs.

    ebmlab train [--config FILE|NAME] [--set k=v ...] [--data PATH] [--out DIR] [--resume] [--overwrite]
    ebmlab sample RUN --n N --steps L --init noise|data [--out FILE] [--checkpoint FILE] [--device DEV]
    ebmlab eval RUN [--ood DATASET ...] [--fid --inception-weights PATH] [--digits-fd] [--checkpoint FILE] [--device DEV]
    ebmlab experiment NAME [--out DIR] [--quick]
    ebmlab configs [NAME]     (list the shipped configs with their first comment line, or print one)

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
    """--set overrides, with --data as data.path (absolute: the run must not depend on the cwd)."""
    overrides = list(args.set or [])
    if args.data:
        overrides += [f"data.path={Path(args.data).expanduser().absolute()}"]
        if not any(o.startswith("data.name=") for o in overrides):
            overrides += ["data.name=array"]
    return overrides


def _absolute_data_path(cfg) -> None:
    """A relative data.path (from a config file) is made absolute against the current directory."""
    if cfg.data.path and not Path(cfg.data.path).expanduser().is_absolute():
        cfg.data.path = str(Path(cfg.data.path).expanduser().absolute())


def cmd_train(args) -> int:
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
    import torch

    from ebmlab.training.evaluate import evaluate
    from ebmlab.training.hooks import sample_hook
    from ebmlab.training.loop import Trainer

    trainer = Trainer(cfg, run_dir, data=data)
    if args.resume:
        trainer.resume()
        if ctx.is_main:
            print(f"resumed {run_dir} at step {trainer.step}", flush=True)  # stdout: stderr is for errors
    trainer.fit(on_sample=sample_hook)
    if trainer.step < cfg.train.steps or not ctx.is_main:
        return 0
    print("evaluating (EMA weights) ...", flush=True)
    objective = trainer.objective
    ctx = trainer.ema.applied(objective) if trainer.ema is not None else _null()
    with ctx, torch.no_grad():
        sample_hook(trainer, final=True)
        metrics = evaluate(objective, trainer.data, cfg, run_dir)
    _report(run_dir, metrics)
    return 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _report(run_dir: Path, metrics: dict) -> None:
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}, indent=1))
    print(f"\nrun directory: {run_dir}\n  metrics: {run_dir / 'metrics.json'}\n  plots:   {run_dir / 'plots'}"
          f"\n  samples: {run_dir / 'samples'}\n  log:     {run_dir / 'metrics.jsonl'} (TensorBoard: {run_dir / 'tb'})")


def _open(args, need_data: bool = True):
    """Open ``args.run`` at ``--checkpoint`` (default: the latest) on ``--device``, and say which."""
    from ebmlab.training.run import open_checkpoint

    return open_checkpoint(args.run, device=args.device, checkpoint=args.checkpoint, need_data=need_data)


def _used(args, run) -> None:
    """Say which checkpoint a successful sample/eval used (after the work: a failure stays one line)."""
    print(f"used {run.checkpoint} (step {run.step}, EMA weights) on {args.device}", file=sys.stderr)


def cmd_sample(args) -> int:
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
    path = Path(args.out or Path(args.run) / "samples" / f"sample_{args.init}_{steps}.npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, x.numpy())
    png = path.with_suffix(".png")
    if data.kind == "image":
        plots.image_grid(x[:100], png)
    else:
        plots.sample_scatter({f"samples ({args.init} start, {steps} steps)": x}, png)
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
    import torch

    from ebmlab.training.evaluate import evaluate
    from ebmlab.training.hooks import eval_extensions

    run = _open(args)
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
    from ebmlab.experiments import run_experiment
    run_experiment(args.name, Path(args.out or f"runs/experiment_{args.name}"), quick=args.quick)
    return 0


def cmd_configs(args) -> int:
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
    p.add_argument("--checkpoint", help="checkpoint file to use (default: the run's latest)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ebmlab", description="Train, sample and evaluate energy-based models.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model (default: hybrid CD on the 10-D rings)")
    t.add_argument("--config", help="YAML config file, or the name of a shipped config (see `ebmlab configs`)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.steps=100")
    t.add_argument("--data", help="your own vectors: .npy/.npz/.csv of shape (N, D)")
    t.add_argument("--out", help="run directory (default runs/<method>_<data>)")
    t.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="delete an existing run directory first")
    t.set_defaults(fn=cmd_train)
    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run")
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--steps", type=int, default=None,
                   help="total sampler steps, spread over the levels of a multi-level method (default: the method's own)")
    s.add_argument("--init", choices=["noise", "data"], default="noise",
                   help="start the method's generation procedure from its prior (noise) or from held-out data")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="output .npy (a .png beside it)")
    _add_open_args(s)
    s.set_defaults(fn=cmd_sample)
    e = sub.add_parser("eval", help="evaluate a trained run; writes RUN/metrics.json")
    e.add_argument("run")
    e.add_argument("--ood", action="append", metavar="DATASET", help="OOD set name or path (repeatable)")
    e.add_argument("--fid", action="store_true", help="Frechet Inception Distance (needs --inception-weights)")
    e.add_argument("--inception-weights", help="path to pt_inception-2015-12-05-6726825d.pth")
    e.add_argument("--digits-fd", action="store_true", help="digits feature distance (digits runs)")
    _add_open_args(e)
    e.set_defaults(fn=cmd_eval)
    x = sub.add_parser("experiment", help="run a paper's experiment: paper000 ... paper004")
    x.add_argument("name")
    x.add_argument("--out", help="output directory (results.md, results.json, figures)")
    x.add_argument("--quick", action="store_true", help="a much shorter run, for smoke tests")
    x.set_defaults(fn=cmd_experiment)
    c = sub.add_parser("configs", help="list the shipped configs, or print one (NAME)")
    c.add_argument("name", nargs="?", help="a shipped config's name, e.g. paper004_rings_hybrid")
    c.set_defaults(fn=cmd_configs)
    return p


def main(argv: list[str] | None = None) -> int:
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
