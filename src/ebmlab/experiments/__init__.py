"""``ebmlab experiment NAME``: each paper's experiment in its own module, listed in EXPERIMENTS.

Every experiment writes ``DIR/results.md`` and ``DIR/results.json``: the paper experiments
{"paper", "claim", "claim_holds", "seeds", "tables", "claims", ...} (``claims.write_claim_results``), the
leaderboard and data_defaults {"experiment": NAME, ...} with their own tables.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import numbers
from pathlib import Path

from ebmlab.errors import ConfigError
from ebmlab.files import file_above, write_text_atomic

# name -> module with ``run(out: Path, quick: bool) -> dict``; imported only when that experiment runs
EXPERIMENTS = {
    "paper000": "ebmlab.experiments.paper000",
    "paper001": "ebmlab.experiments.paper001",
    "paper002": "ebmlab.experiments.paper002",
    "paper003": "ebmlab.experiments.paper003",
    "paper004": "ebmlab.experiments.paper004",
    "leaderboard": "ebmlab.experiments.leaderboard",
    "data_defaults": "ebmlab.experiments.data_defaults",  # the --data defaults against candidates (issue 18)
}


def run_experiment(name: str, out: Path, quick: bool = False, **options) -> dict:
    """Run experiment ``name`` (``EXPERIMENTS``) into ``out``; returns its ``results.json`` content.
    ``quick``: a smoke-test version whose numbers mean nothing. ``options``: keywords of the experiment's
    ``run``: ``seeds`` and ``jobs`` for every experiment, and, where its ``run`` takes them, ``full``,
    ``budget``, ``methods``, ``datasets``, ``rescore``, ``data_seeds``, ``auroc_margin``; any other is
    refused (ConfigError)."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; available experiments are: {', '.join(sorted(EXPERIMENTS))}")
    module = importlib.import_module(EXPERIMENTS[name])
    accepted = inspect.signature(module.run).parameters
    refused = [k for k in options if k not in accepted]
    if refused:
        takes = [_flag(k) for k in accepted if k not in ("out", "quick")]
        raise ConfigError(f"experiment {name} does not take {', '.join(map(_flag, refused))}; it takes "
                          f"{', '.join(takes) or 'no option'} besides --out and --quick")
    _check_counts(options)
    _check_one_process()
    from ebmlab.training.lock import LOCK_NAME, RunLock

    rule, out = getattr(module, "settings", raw_settings), Path(out)
    settings = rule(bool(quick), bool(options.get("full")), options.get("budget"))
    _claim_out(out, name, settings, rule, write=False)  # a wrong place refused before anything is written
    fresh = not out.exists() or all(p.name == LOCK_NAME for p in out.iterdir())  # (a stale lock: still fresh)
    made = [d for d in (out, *out.parents) if not d.exists()]  # the folders mkdir makes, deepest first
    out.mkdir(parents=True, exist_ok=True)
    try:
        with RunLock.acquire(out, doing="running an experiment"):  # a second experiment into this --out would retrain and delete its cells
            _claim_out(out, name, settings, rule)  # again under the lock (whose holder's marker a refusal must not touch)
            try:
                return module.run(out, quick=quick, **options)
            except BaseException:
                if fresh:  # refused before it wrote anything (its own options: --methods, --datasets, --rescore)
                    _unclaim(out)
                raise
    except BaseException:
        for d in made:  # the folders this command made, if nothing is in them now (the lock file is gone)
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def name_list(option: str, text: str) -> tuple[str, ...]:
    """``--methods a,b`` (or ``methods="a,b"``) -> ("a", "b"); one sentence on an empty list."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ConfigError(f"--{option} needs comma-separated names, got {text!r}")
    return names


def _check_counts(options: dict) -> None:
    """``seeds`` and ``data_seeds`` must be distinct integers (a sequence, not a string), ``methods`` and
    ``datasets`` names (a sequence, or the command's "a,b"), ``jobs`` a positive integer and ``budget`` positive seconds
    (``--jobs 0`` / ``-1`` ran serially and said "-1 at a time")."""
    for key in ("methods", "datasets"):  # the command's form, "a,b", is taken too (it was read letter by letter)
        if isinstance(options.get(key), str):
            options[key] = name_list(key, options[key])
    for key in ("seeds", "data_seeds"):  # ebmlab.experiment(seeds=...) is checked as --seeds is
        seeds = options.get(key)
        if seeds is None:
            continue
        if isinstance(seeds, (str, bytes)):  # "012" is not read as anything: say what Python takes
            raise ConfigError(f"--{key.replace('_', '-')} must be distinct integers such as 0,1,2, got the string "
                              f"{seeds!r} (in Python a sequence: {key}=(0, 1, 2))")
        if not hasattr(seeds, "__len__") or len(seeds) == 0 or any(
                isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in seeds) or len(set(seeds)) != len(seeds):
            raise ConfigError(f"--{key.replace('_', '-')} must be distinct integers such as 0,1,2, got {seeds!r}")
        options[key] = tuple(int(s) for s in seeds)  # NumPy integers as ints (results.json)
    jobs, budget = options.get("jobs"), options.get("budget")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, numbers.Integral) or jobs < 1):
        raise ConfigError(f"--jobs must be a positive integer (cells run at once), got {jobs!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, numbers.Real)
                               or not 0 < budget < float("inf")):
        raise ConfigError(f"--budget must be a positive number of seconds, got {budget!r}")
    if jobs is not None:  # NumPy numbers as Python ones, as the seeds (results.json)
        options["jobs"] = int(jobs)
    if budget is not None and not isinstance(budget, int):
        options["budget"] = float(budget)


MARKER = "experiment.json"  # {"experiment": NAME, "settings": {...}}: the directory is that experiment's


def _check_one_process() -> None:
    """Refuse an experiment under torchrun: every rank would run the whole experiment, and the second would be
    refused by the first one's lock mid-start (experiments run in one process, their cells ``--jobs`` at a time)."""
    import os
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError("ebmlab experiment runs in one process (its cells --jobs at a time, each a process of its "
                          "own), not under torchrun; run it without torchrun")


def raw_settings(quick: bool, full: bool = False, budget: float | None = None) -> dict:
    """What changes every cell of an experiment, as ``experiment.json`` records it (``_claim_out``): the options as
    given. An experiment whose options can spell the same cells in two ways defines its own ``settings`` (same
    signature, e.g. the leaderboard's effective budget), so that only a real change is refused."""
    return {"quick": bool(quick), "full": bool(full), "budget": budget}


def _claim_out(out: Path, name: str, settings: dict | None = None, rule=raw_settings, write: bool = True) -> None:
    """Make ``out`` experiment ``name``'s directory (``MARKER``, with the ``settings`` that change every cell:
    ``--quick``, ``--full``, ``--budget``, as the experiment's ``rule`` reads them), or refuse one that holds other
    files: an experiment writes ``results.md``, ``results.json``, figures and cells there and must not replace a
    user's files of those names. A directory with this experiment's marker is reused, as a rerun skips its finished
    cells, unless it holds cells run with other settings (theirs would be replaced: ``_settings_before``); so is one
    without a marker whose ``results.json`` is this experiment's, or that holds only ``cells/`` (from before
    markers), which then gets this experiment's marker (checked against its ``results.json`` too). ``write=False``:
    only the checks."""
    import json

    from ebmlab.training.lock import LOCK_NAME

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a directory for the experiment's results")
    if (parent := file_above(out)) is not None:
        raise ConfigError(f"--out {str(out)!r} lies under {str(parent)!r}, which is a file; give a directory for "
                          "the experiment's results")
    marker, held = out / MARKER, {}
    if marker.is_file():
        try:
            held = json.loads(marker.read_text(encoding="utf-8"))
            owner = held.get("experiment")
        except (OSError, ValueError, AttributeError):
            held, owner = None, None
        if not isinstance(owner, str):  # (empty after a crash of an older version, or edited by hand)
            raise ConfigError(f"--out {str(out)!r} holds a damaged {MARKER} (no experiment's name in it); if the "
                              f"directory is experiment {name}'s, delete {MARKER} and run again, else give another "
                              "--out")
        if owner != name:
            raise ConfigError(f"--out {str(out)!r} holds the results of experiment {owner!r}; give experiment "
                              f"{name} a directory of its own")
    elif out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()) and not _earlier(out, name):
        raise ConfigError(f"--out {str(out)!r} holds other files and is not an experiment's directory; give a new or "
                          "empty directory (the experiment writes results.md, results.json, figures and cells there)")
    before = _settings_before(out, held, rule) if out.is_dir() else None
    if before is not None and settings is not None and before != settings:
        raise ConfigError(f"--out {str(out)!r} holds experiment {name}'s cells run with {_said(before)}, which a "
                          f"run with {_said(settings)} would replace; rerun with those options, or give another --out")
    if not write:
        return
    out.mkdir(parents=True, exist_ok=True)
    if not marker.is_file() or settings is not None:
        held = {"experiment": name, **({"settings": settings} if settings is not None else {})}
        write_text_atomic(marker, json.dumps(held) + "\n")


def _settings_before(out: Path, held: dict, rule) -> dict | None:
    """The settings ``out``'s finished cells ran with, as ``rule`` reads them: the marker's, or, in a marker from before
    settings were recorded (or a damaged one), ``results.json``'s ``quick``/``full``/``budget_seconds`` where it has
    them; None (nothing to guard, or not known) when ``out`` holds no cell record: a command refused before its first
    cell finished must not bind the next one to its options."""
    import json

    if not any((out / "cells").rglob("cell.json")):
        return None
    said = held.get("settings")
    if not isinstance(said, dict):
        try:
            said = json.loads((out / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(said, dict) or "quick" not in said:
            return None
        said = {**said, "budget": said.get("budget_seconds")}
    budget = said.get("budget")
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):  # (None, or a hand-edited value)
        budget = None
    return rule(bool(said.get("quick")), bool(said.get("full")), budget)


def _unclaim(out: Path) -> None:
    """Remove the marker ``_claim_out`` wrote into a fresh ``out`` (under the lock) if nothing else was written there,
    so that a command refused for its own options leaves the directory to the next command, whatever experiment."""
    from ebmlab.training.lock import LOCK_NAME

    if {p.name for p in out.iterdir()} <= {MARKER, LOCK_NAME}:
        (out / MARKER).unlink(missing_ok=True)


def _earlier(out: Path, name: str) -> bool:
    """Whether ``out``, without a marker, is experiment ``name``'s from before markers: its ``results.json`` names it
    ({"experiment": NAME}, or {"paper": "004"} for paper004), or it holds ``cells/`` and no ``results.json``."""
    import json
    path = out / "results.json"
    if not path.is_file():
        return (out / "cells").is_dir()
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and name in (saved.get("experiment"), f"paper{saved.get('paper')}",
                                                saved.get("paper"))


def _said(settings: dict) -> str:
    """The options of ``settings`` as a command spells them ("--quick --budget 60", or "the defaults")."""
    words = [f"--{k}" if v is True else f"--{k} {v}" for k, v in settings.items() if v not in (None, False)]
    return " ".join(words) or "the default options"


def _flag(option: str) -> str:
    """``data_seeds`` -> ``--data-seeds``: the command-line spelling of a ``run`` keyword."""
    return "--" + option.replace("_", "-")
