"""``ebmlab experiment data_defaults`` (experiments/data_defaults.py): the --quick smoke version end to end on one
table, the arms' overrides, and the adoption rule."""
from __future__ import annotations

import json

import pytest

from ebmlab.config import ConfigError
from ebmlab.experiments import data_defaults as dd
from ebmlab.training.config import load_config


def test_quick_run_writes_the_table_the_verdict_and_the_references(tmp_path):
    result = dd.run(tmp_path, quick=True, jobs=1, methods=["refit"], datasets=["wine"])
    assert result["arms"] == ["default", "refit"] and list(result["datasets"]) == ["wine"]
    entry = json.loads((tmp_path / "results.json").read_text())["datasets"]["wine"]
    assert set(entry["table"]) == {"wine/default", "wine/refit"}
    assert all(entry["table"][a]["heldout_ed7"]["per_seed"][0] is not None for a in entry["table"])
    assert [v["candidate"] for v in entry["verdicts"]] == ["refit"]
    assert set(entry["references"]) == set(dd.REFERENCES)
    assert all("heldout_ed_expected" in m for m in entry["references"].values())
    assert "## wine" in (tmp_path / "results.md").read_text()


def test_each_arm_is_the_user_data_default_plus_its_keys():
    default = dd.overrides("breast_cancer", "default", 20.0, False)
    cfg = load_config("default", default)
    assert (cfg.data.whiten, cfg.train.select_start, cfg.train.time_budget) == (True, True, 20.0)
    refit = load_config("default", dd.overrides("breast_cancer", "refit", 20.0, False))
    assert refit.train.select_refit and not cfg.train.select_refit
    assert refit.to_dict()["data"] == cfg.to_dict()["data"]


def test_the_rule_and_unknown_names():
    def row(ed, auroc):
        return {"heldout_ed7": {"mean": ed}, "ood_auroc_other_class": {"mean": auroc}}
    table = {"t/default": row(0.02, 0.95), "t/a": row(0.02, 0.941), "t/b": row(0.021, 0.99), "t/c": row(0.0, 0.939)}
    got = {v["candidate"]: v["passes"] for v in dd.verdicts(table, "t", ["default", "a", "b", "c"])}
    assert got == {"a": True, "b": False, "c": False}
    with pytest.raises(ConfigError, match="unknown data_defaults arm"):
        dd.run(None, methods=["nope"])
