"""``ebmlab experiment NAME``: each paper's experiment in its own module, listed in EXPERIMENTS.

Every experiment writes ``DIR/results.md`` and ``DIR/results.json`` =
{"paper": ..., "rows": [{"name": ..., metric: value, ...}], "claim": "...", "claim_holds": bool}.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from ebmlab.errors import ConfigError

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
    ``quick``: a smoke-test version whose numbers mean nothing. ``options``: ``seeds`` and ``jobs`` for
    the experiments on the claim harness (``experiments/claims.py``); others refuse them."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available experiments are: {', '.join(sorted(EXPERIMENTS))}")
    module = importlib.import_module(EXPERIMENTS[name])
    accepted = inspect.signature(module.run).parameters
    refused = [k for k in options if k not in accepted]
    if refused:
        takes = [_flag(k) for k in accepted if k not in ("out", "quick")]
        raise ConfigError(f"experiment {name} does not take {', '.join(map(_flag, refused))}; it takes "
                          f"{', '.join(takes) or 'no option'} besides --out and --quick")
    out.mkdir(parents=True, exist_ok=True)
    return module.run(out, quick=quick, **options)


def _flag(option: str) -> str:
    """``data_seeds`` -> ``--data-seeds``: the command-line spelling of a ``run`` keyword."""
    return "--" + option.replace("_", "-")
