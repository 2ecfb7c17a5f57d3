"""``ebmlab experiment NAME``: each paper's experiment in its own module, registered in EXPERIMENTS.

Every experiment writes ``DIR/results.md`` and ``DIR/results.json`` =
{"paper": ..., "rows": [{"name": ..., metric: value, ...}], "claim": "...", "claim_holds": bool}.
"""
from __future__ import annotations

import importlib
from pathlib import Path

EXPERIMENTS = {"paper004": "ebmlab.experiments.paper004"}
EXPERIMENTS["paper002"] = "ebmlab.experiments.paper002"
EXPERIMENTS["paper000"] = "ebmlab.experiments.paper000"
EXPERIMENTS["paper001"] = "ebmlab.experiments.paper001"


def run_experiment(name: str, out: Path, quick: bool = False) -> dict:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available experiments are: {', '.join(sorted(EXPERIMENTS))}")
    module = importlib.import_module(EXPERIMENTS[name])
    out.mkdir(parents=True, exist_ok=True)
    return module.run(out, quick=quick)
EXPERIMENTS["paper003"] = "ebmlab.experiments.paper003"
