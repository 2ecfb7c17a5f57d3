"""Smoke runs of the experiments on the claim harness (``--quick``: tiny models and budgets, numbers
mean nothing): every table, per-seed value, margin and verdict is written, and every evaluated cell of
a table is evaluated at the same step."""
from __future__ import annotations

import json

import pytest

from ebmlab.experiments import run_experiment


def _check(result: dict, out, seeds) -> None:
    saved = json.loads((out / "results.json").read_text())
    assert saved["seeds"] == list(seeds) and saved["claims"] and isinstance(saved["claim_holds"], bool)
    for table in saved["tables"].values():
        for arm, row in table.items():
            for metric, stats in row.items():
                if isinstance(stats, dict):
                    assert len(stats["per_seed"]) == len(seeds), (arm, metric)
    for v in saved["claims"]:
        assert v["verdict"] in ("holds", "reversed", "not shown")
        assert v["effective_margin"] >= v["margin"] >= 0 and len(v["diffs"]) == len(seeds)
    steps = {json.loads(p.read_text())["step"] for p in (out / "cells").rglob("cell.json")}
    assert len(steps) == 1  # nothing diverges at this size; every cell at the same step
    assert "## Claims" in (out / "results.md").read_text()


@pytest.mark.parametrize("name", ["paper004", "paper000", "paper003"])
def test_quick_experiment_on_the_harness(name, tmp_path):
    seeds = (0,)
    result = run_experiment(name, tmp_path, quick=True, seeds=seeds, jobs=1)
    _check(result, tmp_path, seeds)
    assert list(tmp_path.glob("*.png"))
    if name == "paper003":  # Table 2 on both data sets
        assert {"sampling steps K' (Table 2, cdrl models)", "sampling steps K' (Table 2, digits)"} <= set(result["tables"])


def test_experiment_refuses_unknown_options(tmp_path):
    from ebmlab.errors import ConfigError
    with pytest.raises(ConfigError, match="does not take --full"):  # only paper002 has --full
        run_experiment("paper004", tmp_path, quick=True, full=True)
