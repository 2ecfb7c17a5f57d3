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


@pytest.mark.parametrize("name", ["paper004",  # the two longest (about a minute each alone) run with the slow tests
                                  pytest.param("paper000", marks=pytest.mark.slow),
                                  pytest.param("paper003", marks=pytest.mark.slow)])
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
    for jobs in (0, -1, 1.5, True):  # 0 and -1 ran serially, "-1 at a time"
        with pytest.raises(ConfigError, match="--jobs must be a positive integer"):
            run_experiment("paper004", tmp_path / "j", quick=True, jobs=jobs)
    with pytest.raises(ConfigError, match="--budget must be a positive number"):
        run_experiment("leaderboard", tmp_path / "j", quick=True, budget=0.0)
    assert not (tmp_path / "j").exists()


def test_an_experiment_never_writes_into_a_directory_of_other_files(tmp_path):
    import ebmlab.experiments as ex
    from ebmlab.errors import ConfigError
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.md").write_text("my notes")
    with pytest.raises(ConfigError, match="holds other files and is not an experiment's directory"):
        run_experiment("paper004", mine, quick=True)
    assert [p.name for p in mine.iterdir()] == ["results.md"] and (mine / "results.md").read_text() == "my notes"
    with pytest.raises(ConfigError, match="is a file"):
        run_experiment("paper004", mine / "results.md", quick=True)
    # a new directory is claimed; the same experiment reuses it, another is refused
    ex._claim_out(tmp_path / "a", "paper004")
    (tmp_path / "a" / "results.md").write_text("table")
    ex._claim_out(tmp_path / "a", "paper004")
    with pytest.raises(ConfigError, match="holds the results of experiment 'paper004'"):
        ex._claim_out(tmp_path / "a", "paper003")
    # a directory of an experiment from before the marker (results.json or cells/) is reused and claimed
    (tmp_path / "old" / "cells").mkdir(parents=True)
    ex._claim_out(tmp_path / "old", "leaderboard")
    assert json.loads((tmp_path / "old" / ex.MARKER).read_text()) == {"experiment": "leaderboard"}


def test_the_python_api_runs_an_experiment_as_the_command_does(tmp_path, monkeypatch):
    """``ebmlab.experiment`` (the Python API had no way to run one) passes the command's options, checks seeds as
    ``--seeds`` is checked (a repeated or non-integer seed was taken silently from Python), and lists what there is."""
    import importlib

    import numpy as np

    import ebmlab
    from ebmlab.errors import ConfigError
    calls = []

    def fake_run(out, quick=False, seeds=(0, 1, 2), jobs=2):
        calls.append((out, quick, seeds, jobs))
        return {"ok": True}
    monkeypatch.setattr(importlib.import_module("ebmlab.experiments.paper004"), "run", fake_run)
    assert ebmlab.experiment("paper004", tmp_path / "e", quick=True, seeds=np.arange(2), jobs=1) == {"ok": True}
    assert calls == [(tmp_path / "e", True, (0, 1), 1)] and type(calls[0][2][0]) is int
    for bad in ((0, 0), (0, 1.5), "012", ()):
        with pytest.raises(ConfigError, match="--seeds must be distinct integers"):
            ebmlab.experiment("paper004", tmp_path / "b", seeds=bad)
    with pytest.raises(ConfigError, match="does not take --full"):
        ebmlab.experiment("paper004", tmp_path / "b", full=True)
    with pytest.raises(ValueError, match="unknown experiment 'paper9'"):
        ebmlab.experiment("paper9")
    assert not (tmp_path / "b").exists() and len(calls) == 1
    assert "paper004" in ebmlab.experiment_names() and "digits_hybrid" in ebmlab.configs()
    assert ebmlab.methods() and ebmlab.models() and ebmlab.datasets()


def test_experiment_names_in_the_commands_comma_form_are_names_not_letters():
    """``ebmlab.experiment(..., methods="default,no_margin")`` was read letter by letter ("unknown arm 'd', 'e',
    ..."); a string is the command's comma-separated list, and a seed string is refused saying what Python takes."""
    from ebmlab.errors import ConfigError
    from ebmlab.experiments import _check_counts

    options = {"methods": "default, no_margin", "datasets": "wine"}
    _check_counts(options)
    assert options == {"methods": ("default", "no_margin"), "datasets": ("wine",)}
    with pytest.raises(ConfigError, match="needs comma-separated names"):
        _check_counts({"methods": " , "})
    with pytest.raises(ConfigError, match=r"in Python a sequence: seeds=\(0, 1, 2\)"):
        _check_counts({"seeds": "0,1"})


@pytest.mark.parametrize("flag", ["--seeds", "--data-seeds"])
def test_an_empty_seed_list_is_refused_not_replaced_by_the_default(flag, tmp_path, capsys, monkeypatch):
    """``--seeds ""`` (an unset shell variable) ran the default seeds without a word."""
    import ebmlab.experiments
    from ebmlab.cli import main

    def ran(*args, **kwargs):
        raise AssertionError(f"the experiment ran with {kwargs}")
    monkeypatch.setattr(ebmlab.experiments, "run_experiment", ran)
    assert main(["experiment", "data_defaults", "--out", str(tmp_path / "x"), flag, ""]) == 2
    assert "comma-separated integers" in capsys.readouterr().err and not (tmp_path / "x").exists()
