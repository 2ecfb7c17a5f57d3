"""The ``ebmlab`` command line: train | sample | eval | compare | experiment | configs.

    ebmlab train [--config FILE|NAME] [--set k=v ...] [--data PATH] [--out DIR] [--resume [auto]] [--overwrite]
    ebmlab sample RUN [--n N] [--steps L] [--init noise|data] [--seed S] [--label K [--guidance W]] [--batch-size B] [--out FILE [--overwrite]] [--checkpoint FILE] [--device DEV]
    ebmlab eval RUN [--ood DATASET ...] [--fid --inception-weights PATH] [--digits-fd] [--heldout-draws K [--draw-seed S]] [--checkpoint FILE] [--device DEV]
    ebmlab experiment NAME [--out DIR] [--quick] [--seeds S,S,...] [--full] [--jobs N] [...]  (``experiment --help``)
    ebmlab configs [NAME]     (list the shipped configs with their first comment line, or print one)
    ebmlab --version

Every command's ``--help`` lists its arguments with their defaults; ``train --help`` lists the methods,
models, datasets and shipped configs, ``experiment --help`` the experiments. Options are checked before
any expensive work (``eval --fid`` on a vector run is refused before sampling).

The commands themselves are in ``cli_commands``; this module builds the parser and runs it.
User errors (bad config, data, checkpoint) print one sentence and exit with status 2, without a
traceback; ``EBMLAB_DEBUG=1`` shows the traceback.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import re
import sys
import warnings
from pathlib import Path

from ebmlab.cli_commands import cmd_compare, cmd_configs, cmd_eval, cmd_experiment, cmd_sample, cmd_train


def _user_errors() -> tuple:
    from ebmlab.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        DistributedError,
        ExperimentError,
        RunError,
        TrainingDiverged,
    )
    # FloatingPointError: TrainingDiverged, and chains that went non-finite (a step size far too large)
    return (ConfigError, DataError, CheckpointError, RunError, TrainingDiverged, FloatingPointError, ValueError,
            KeyError, DistributedError, ExperimentError, OSError)


def _add_open_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="FILE", default=None, type=_path,
                   help="checkpoint file (step_NNNNNNNN.safetensors, a path or a name in RUN/checkpoints/, with or "
                        "without .safetensors, or a step number) to use; "
                        "default: the run's result "
                        "(checkpoints/best.safetensors when train.select_every chose one, else the latest)")
    p.add_argument("--device", default="cpu", help="device to run on: cpu | cuda | cuda:N | mps | auto")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with every argument's default (a help text that states its own default keeps it; a flag's
    is "off"), and epilogs printed as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if re.search(r"\bdefault\b", text) or "%(default)" in text or action.default is argparse.SUPPRESS:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is None and action.option_strings:  # not "None": the option is simply not given
            return f"{text} (default: not given)"
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
    from ebmlab.objectives import method_names

    return "\n".join([_wrap("methods (--set method.name=NAME)", method_names()),
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


def _path(text: str) -> str:
    """A path argument with ``~`` expanded: a shell leaves ``--out=~/runs/x`` as it is (``files.user_path``)."""
    return os.path.expanduser(text)


def build_parser() -> argparse.ArgumentParser:
    """The ``ebmlab`` argument parser (every argument with help and its default)."""
    p = _Parser(prog="ebmlab", description="Train, sample and evaluate energy-based models (the methods of five "
                "papers on shared parts). `ebmlab COMMAND --help` describes each command.")
    p.add_argument("--version", action="version", version=f"ebmlab {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    p.command_parsers = sub.choices  # {command: its parser}, filled by add_parser below
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
                        "whitening, row noise, a base measure (a Gaussian mixture for paper 004's methods on the MLP, "
                        "else a Gaussian) and the result chosen on a validation split, unless set: "
                        "config.USER_DATA_DEFAULTS, README); a folder of images (data.name=imagefolder); "
                        "or a dataset's name (digits, 8gaussians...: data.name)")
    t.add_argument("--out", metavar="DIR", default=None, type=_path, help="run directory; default: runs/<method>_<data>")
    t.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"],
                   help="continue the run in --out from its last checkpoint; --resume auto: continue it if it has a "
                        "checkpoint, else start it (one command line for a job a scheduler may requeue) (default: off)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing run in --out (only an ebmlab run, only after the config validated)")
    t.set_defaults(fn=cmd_train)
    s = sub.add_parser("sample", help="draw samples from a trained run",
                       description="Draw samples with the method's own generation procedure; writes a .npy "
                                   "(data coordinates) and a .png beside it.")
    s.add_argument("run", metavar="RUN", type=_path, help="the run directory")
    s.add_argument("--n", type=int, default=1000, help="number of samples")
    s.add_argument("--steps", type=int, default=None,
                   help="total sampler steps, spread over the levels of a multi-level method; default: the "
                        "method's own")
    s.add_argument("--init", choices=["noise", "data"], default="noise",
                   help="start the method's generation procedure from its prior (noise) or from held-out data")
    s.add_argument("--seed", type=int, default=0, help="random seed of the draw")
    s.add_argument("--label", metavar="K", default=None,
                   help="class-conditional runs (method.conditional=true): samples of class K only, an index or an "
                        "image folder's class name (default: the method's own choice of labels)")
    s.add_argument("--batch-size", type=int, metavar="B", default=None,
                   help="draw the chains B at a time (default: all --n at once; the same samples when --n <= B)")
    s.add_argument("--guidance", type=float, metavar="W", default=None,
                   help="with --label, conditional cdrl/drl runs: classifier-free guidance of weight W >= 0 "
                        "(paper 003 Eq. 11-12; 0 is the plain conditional model)")
    s.add_argument("--out", metavar="FILE", default=None, type=_path,
                   help="output .npy, or .csv for vectors (a .png of the same name beside it); an existing FILE "
                        "or .png is refused without --overwrite; default: "
                        "RUN/samples/samples_<init>_<steps>steps_seed<seed>.npy, with _label<K> (a class's name "
                        "where the run names them) and _w<W> before .npy where given; .npy added to a FILE without suffix")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out FILE and the .png of the same name beside it")
    _add_open_args(s)
    s.set_defaults(fn=cmd_sample)
    e = sub.add_parser("eval", help="evaluate a trained run; writes RUN/metrics.json",
                       description="Recompute a run's metrics and plots; options add FID, digits and OOD scores.")
    e.add_argument("run", metavar="RUN", type=_path, help="the run directory")
    e.add_argument("--ood", action="append", metavar="DATASET", default=None,
                   help="OOD set (repeatable; default: none), scored as ood_auroc_<name or file stem>: vector runs "
                        "'shifted', 'scaled' or a file of vectors; image runs a built-in set (noise, digits_negative, "
                        "digits_flipped, digits_shuffled, digits_interpolated, digits_occluded), a path or an image "
                        "dataset's name (its test split)")
    e.add_argument("--fid", action="store_true", help="Frechet Inception Distance and Inception Score (image runs)")
    e.add_argument("--inception-weights", metavar="FILE", default=None, type=_path,
                   help="path to pt_inception-2015-12-05-6726825d.pth (never downloaded); default: the torch hub cache")
    e.add_argument("--digits-fd", action="store_true", help="digits feature distance (digits runs)")
    e.add_argument("--heldout-draws", type=int, metavar="K", default=None,
                   help="vector runs: the held-out energy distance of K independent draws of eval.n_samples samples "
                        "and their mean (one draw is noisy when the sampler's draws are heavy-tailed)")
    e.add_argument("--draw-seed", type=int, metavar="S", default=None,
                   help="with --heldout-draws: the k-th draw uses generator seed S + k (default 0)")
    _add_open_args(e)
    e.set_defaults(fn=cmd_eval)
    k = sub.add_parser("compare", help="trained runs' metrics side by side, the best marked",
                       description="Compare two or more runs trained on the same data: the metrics every run's "
                                   "metrics.json holds, the best per metric in bold, the data-vs-data floor, and "
                                   "notes where evaluation settings, chain lengths or budgets differ. Reads the runs' "
                                   "files (no weights, no evaluation).")
    k.add_argument("runs", nargs="+", metavar="RUN", type=_path, help="run directories (two or more)")
    k.add_argument("--out", metavar="DIR", default=None, type=_path,
                   help="also write compare.md, compare.json and the runs' samples side by side: samples.png (vector "
                        "runs, with the held-out data, which it reads again) or samples_<k>.png per run (image runs)")
    k.add_argument("--pool-seeds", action="store_true",
                   help="one row per setting: runs that differ only in train.seed (and in keys that change nothing "
                        "they learn or measure: logging, checkpoints, threads, device, eval.plots, data.path) are "
                        "pooled as mean ± std over their seeds; bold: the best mean and the rows a Welch t-test "
                        "cannot tell from it")
    k.set_defaults(fn=cmd_compare)
    names = _experiment_names()
    x = sub.add_parser("experiment", help=f"run a paper's experiment: {', '.join(names)}",
                       description="Reproduce a paper's central claim at CPU scale; writes results.md, "
                                   "results.json and figures.",
                       epilog=_wrap("experiments", names))
    x.add_argument("name", metavar="NAME", help=f"the experiment: one of {', '.join(names)}")
    x.add_argument("--out", metavar="DIR", default=None, type=_path, help="output directory; default: runs/experiment_<NAME>")
    x.add_argument("--quick", action="store_true", help="a much shorter run, for smoke tests (numbers mean nothing)")
    x.add_argument("--seeds", metavar="S,S,...", default=None,
                   help="seeds of every arm (default: the fixed set 0,1,2; data_defaults: 0,...,5); leaderboard and "
                        "data_defaults with --quick run only the first seed, of these or of the default")
    x.add_argument("--full", action="store_true",
                   help="the larger grid where an experiment has one (paper002: T up to 40, K up to 30; paper003: the "
                        "checkerboard arms at the shipped config's 8,000 iterations)")
    x.add_argument("--jobs", type=int, metavar="N", default=None,
                   help="cells run at once, each one process with one thread (default 2; 1: serially in this process)")
    x.add_argument("--budget", type=float, metavar="SECONDS", default=None,
                   help="training wall-clock seconds per cell (leaderboard, data_defaults; default 20, with --full 120, "
                        "with --quick 1)")
    x.add_argument("--methods", metavar="M,M,...", default=None,
                   help="leaderboard: only these methods (rows; the GMM and KDE baselines always run); "
                        "data_defaults: only these arms (default, gaussian_start, gaussian_refit, paired, no_margin, refit, "
                        "refit_likelihood)")
    x.add_argument("--datasets", metavar="D,D,...", default=None,
                   help="leaderboard, data_defaults: only these datasets (default: all of the experiment's)")
    x.add_argument("--data-seeds", metavar="S,S,...", default=None,
                   help="data_defaults: every cell on each of these splits of the tables (data.seed), and the "
                        "results pooled over them (default: the leaderboard's one split)")
    x.add_argument("--auroc-margin", type=float, metavar="X", default=None,
                   help="data_defaults: the AUROC's non-inferiority margin in AUROC units (default: half the gap "
                        "between the GMM and KDE baselines)")
    x.add_argument("--rescore", action="store_true",
                   help="leaderboard: evaluate every finished cell again from its stored run, without training "
                        "(after a change to the evaluation code; each cell.json lists what changed; give the "
                        "options the cells ran with: a cell that never ran is refused)")
    x.set_defaults(fn=cmd_experiment)
    c = sub.add_parser("configs", help="list the shipped configs, or print one (NAME)",
                       description="List the configs shipped with ebmlab, or print one of them.")
    c.add_argument("name", nargs="?", metavar="NAME", default=None,
                   help="a shipped config's name, e.g. paper004_rings_hybrid; default: list them all")
    c.set_defaults(fn=cmd_configs)
    return p


@contextlib.contextmanager
def _plain_warnings():
    """ebmlab's warnings said as the command's other messages, ``ebmlab: warning: ...`` (Python's form names a
    source line inside ebmlab and repeats its ``warnings.warn`` call); other libraries' keep Python's form."""
    old = warnings.formatwarning

    def say(message, category, filename, lineno, line=None):
        ours = "ebmlab" in Path(filename).parts
        return f"ebmlab: warning: {message}\n" if ours else old(message, category, filename, lineno, line)
    warnings.formatwarning = say
    try:
        yield
    finally:
        warnings.formatwarning = old


def _escape_unencodable(exc: UnicodeEncodeError):
    """An encoding error handler: a command-line argument's undecodable bytes (surrogates) back as those bytes, as
    ``surrogateescape`` does; any other character it cannot encode as an escape (``\\u2016``)."""
    try:
        return codecs.lookup_error("surrogateescape")(exc)
    except UnicodeError:
        return codecs.backslashreplace_errors(exc)


def _tolerant_stdout() -> None:
    """Where standard output cannot encode every character (an ASCII locale, a Windows code page when output goes
    to a file), write the ones it cannot as escapes instead of raising ``UnicodeEncodeError``: an experiment's
    report (``±``, ``‖∇L‖``) is printed after hours of training. (Files ebmlab writes are UTF-8 everywhere.)"""
    out = sys.stdout
    if not (getattr(out, "encoding", None) and hasattr(out, "reconfigure")):
        return  # (replaced by a caller, e.g. a test's capture: its own business)
    try:
        "±‖∇σ≤—".encode(out.encoding)
    except (UnicodeEncodeError, LookupError):
        codecs.register_error("ebmlab_escape", _escape_unencodable)
        out.reconfigure(errors="ebmlab_escape")


def main(argv: list[str] | None = None) -> int:
    """Run the ``ebmlab`` command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit status
    (0, or 2 with one sentence on stderr for a user error)."""
    _tolerant_stdout()
    try:
        try:
            return _run(argv)
        finally:  # output into a pipe is buffered (unless PYTHONUNBUFFERED is set): flushed here, where a reader that
            # is gone is the BrokenPipeError below, not a failed flush at exit (status 120, "Exception ignored")
            sys.stdout.flush()
    except BrokenPipeError:  # stdout closed by the reader (`ebmlab configs | head`, `--help | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would fail too
        return 141  # 128 + SIGPIPE, a shell's status for a command its pipe closed


def _run(argv: list[str] | None) -> int:
    """``main`` without its handling of a closed standard output."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # (--help and --version print and exit here)
    if extra:  # said by the command's own parser (its usage, not the top level's), with the likely fix
        parser.command_parsers[args.command].error(f"unrecognized arguments: {' '.join(extra)}{_extra_hint(extra)}")
    from ebmlab.errors import TrainingStopped
    try:
        with _plain_warnings():
            return args.fn(args)
    except BrokenPipeError:  # (an OSError, but not the user's: ``main`` handles it)
        raise
    except TrainingStopped as exc:  # SIGTERM, checkpointed: said once (rank 0), with a shell's status for it
        if os.environ.get("RANK", "0") == "0":
            print(f"ebmlab: {exc}", file=sys.stderr)
        return 128 + 15
    except _user_errors() as exc:
        if os.environ.get("EBMLAB_DEBUG"):
            raise
        return _fail(_sentence(exc))
    except RecursionError:  # (a RuntimeError: before the handler below, which re-raises it)
        if os.environ.get("EBMLAB_DEBUG"):
            raise
        return _fail("input nested too deeply to read (a damaged or hostile file?)")
    except (MemoryError, RuntimeError) as exc:  # out of memory (CPU allocator or CUDA); others are bugs
        from ebmlab.errors import is_out_of_memory

        text = str(exc)
        if not is_out_of_memory(exc) or os.environ.get("EBMLAB_DEBUG"):
            raise
        fix = ("draw fewer (--n) or in batches (--batch-size B)" if args.fn is cmd_sample else
               "reduce model.width, model.depth, train.batch_size or eval.n_samples")
        return _fail(f"ran out of memory; {fix} ({' '.join(text.split())[:120]})")
    except KeyboardInterrupt:
        print(f"ebmlab: interrupted{_after_interrupt(args)}", file=sys.stderr)
        return 130


def _extra_hint(extra: list[str]) -> str:
    """Why arguments were not recognised, for the two usual slips: a config key given as an option, and
    several KEY=VALUE after one --set."""
    if any("=" in a and not a.startswith("-") for a in extra):
        return "; give --set once per key (--set train.steps=30 --set eval.n_samples=200)"
    if any(a.startswith("--") for a in extra):
        return "; config keys are set with --set SECTION.KEY=VALUE (e.g. --set train.steps=10), see --help"
    return ""


def _after_interrupt(args) -> str:
    """What a Ctrl-C left and how to go on: a training run's last checkpoint (``cmd_train`` sets ``args.run_dir``)
    or that it has none yet, an experiment's finished cells; nothing for commands that only read a run."""
    if args.fn is cmd_experiment:
        return "; its finished cells are kept (the same command again skips them)"
    run_dir = getattr(args, "run_dir", None)
    if args.fn is not cmd_train or run_dir is None:
        return ""
    from ebmlab.training.checkpoint import latest_checkpoint

    last = latest_checkpoint(Path(run_dir) / "checkpoints")
    if last is None:
        return "; no checkpoint was written yet, so start it again without --resume (the directory is reused)"
    return f"; the last checkpoint, {last.name}, is kept: continue with ebmlab train --out {run_dir} --resume"


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
