"""``ebmlab experiment data_defaults`` (experiments/data_defaults.py): the --quick smoke version end to end on one
table, the arms' overrides, and the adoption rule."""
from __future__ import annotations

import json

import pytest

from ebmlab.config import ConfigError
from ebmlab.experiments import data_defaults as dd
from ebmlab.training.config import load_config


def test_quick_run_writes_the_table_the_verdict_and_the_references(tmp_path):
    result = dd.run(tmp_path, quick=True, jobs=1, methods=["gaussian_refit"], datasets=["wine"], data_seeds=[1, 2])
    assert result["arms"] == ["default", "gaussian_refit"] and list(result["datasets"]) == ["wine@1", "wine@2"]
    saved = json.loads((tmp_path / "results.json").read_text())
    entry = saved["datasets"]["wine@2"]
    assert set(entry["table"]) == {"wine@2/default", "wine@2/gaussian_refit"}
    assert all(entry["table"][a]["heldout_ed7"]["per_seed"][0] is not None for a in entry["table"])
    assert [v["candidate"] for v in entry["verdicts"]] == ["gaussian_refit"]
    assert set(entry["references"]) == set(dd.REFERENCES)
    assert all(0 <= m["ood_auroc_other_class"] <= 1 and "heldout_ed_expected" in m for m in entry["references"].values())
    # the two splits hold out different rows: the same Gaussian start scores differently on them
    refs = [saved["datasets"][k]["references"]["gaussian_train"]["heldout_ed_expected"] for k in ("wine@1", "wine@2")]
    assert refs[0] != refs[1]
    pooled = saved["pooled"]["wine"]
    assert pooled["splits"] == ["wine@1", "wine@2"] and [b["baseline"] for b in pooled["baselines"]] == ["gmm", "kde"]
    assert pooled["means"]["gmm"]["heldout_ed7"] == pytest.approx(sum(
        saved["datasets"][k]["references"]["gmm"]["heldout_ed_expected"] for k in pooled["splits"]) / 2)
    md = (tmp_path / "results.md").read_text()
    assert "## wine@1" in md and "## wine over 2 splits" in md


def test_pooled_means_and_the_baselines_rule():
    def split(key, default, gmm):
        return {"table": {f"{key}/default": {"heldout_ed7": {"mean": default[0]}, dd.AUROC: {"mean": default[1]}}},
                "references": {r: {"heldout_ed_expected": gmm[0], dd.AUROC: gmm[1]} for r in dd.REFERENCES}}
    # the default wins on samples in both splits; on AUROC it loses one split by more than it wins the other
    p = dd.pooled({"t@1": split("t@1", (0.01, 0.95), (0.02, 0.94)),
                   "t@2": split("t@2", (0.01, 0.90), (0.03, 0.92))}, ["default"])
    assert p["means"]["default"] == pytest.approx({"heldout_ed7": 0.01, dd.AUROC: 0.925})
    gmm = p["baselines"][0]
    assert gmm["baseline"] == "gmm" and not gmm["at_least_as_good"]
    assert gmm["difference_mean_se"]["heldout_ed7"] == pytest.approx((-0.015, 0.005))
    p = dd.pooled({"t@1": split("t@1", (0.01, 0.95), (0.02, 0.94)),
                   "t@2": split("t@2", (0.01, 0.93), (0.03, 0.92))}, ["default"])
    assert all(b["at_least_as_good"] for b in p["baselines"])
    p = dd.pooled({"t@1": split("t@1", (None, 0.95), (0.02, 0.94)),  # a failed cell: no verdict can pass
                   "t@2": split("t@2", (0.01, 0.93), (0.03, 0.92))}, ["default"])
    assert not any(b["at_least_as_good"] for b in p["baselines"])
    # a candidate arm is held to the same rule against the baselines: level on samples, ahead on AUROC passes
    one, two = split("t@1", (0.01, 0.95), (0.02, 0.94)), split("t@2", (0.01, 0.90), (0.03, 0.92))
    one["table"]["t@1/c"] = {"heldout_ed7": {"mean": 0.02}, dd.AUROC: {"mean": 0.95}}
    two["table"]["t@2/c"] = {"heldout_ed7": {"mean": 0.03}, dd.AUROC: {"mean": 0.93}}
    p = dd.pooled({"t@1": one, "t@2": two}, ["default", "c"])
    assert p["baselines"] == p["arms_vs_baselines"]["default"] and not p["baselines"][0]["at_least_as_good"]
    gmm_c = p["arms_vs_baselines"]["c"][0]
    assert gmm_c["at_least_as_good"] and gmm_c["difference_mean_se"][dd.AUROC][0] == pytest.approx(0.01)
    assert "| c | gmm |" in dd._pooled_markdown("t", p)


def test_each_arm_is_the_user_data_default_plus_its_keys():
    default = dd.overrides("breast_cancer", "default", 20.0, False)
    cfg = load_config("default", default)
    assert (cfg.data.whiten, cfg.train.select_start, cfg.train.time_budget) == (True, True, 20.0)
    assert (cfg.model.base, cfg.model.base_std, cfg.train.select_margin) == ("gmm", None, 1.0)
    refit = load_config("default", dd.overrides("breast_cancer", "gaussian_refit", 20.0, False))
    assert refit.train.select_refit and not cfg.train.select_refit
    assert (refit.model.base, refit.model.base_std, refit.train.select_margin) == (None, 1.0, None)
    assert refit.to_dict()["data"] == cfg.to_dict()["data"]


def test_arm_names_differ_from_the_reference_rows():
    """Arms and reference rows share one namespace in the pooled tables: an arm named like a reference would
    overwrite it (a first version named an arm "gmm")."""
    assert not (set(dd.CANDIDATES) | {"default"}) & set(dd.REFERENCES)


def test_the_rule_and_unknown_names():
    def row(ed, auroc):
        return {"heldout_ed7": {"mean": ed}, "ood_auroc_other_class": {"mean": auroc}}
    table = {"t/default": row(0.02, 0.95), "t/a": row(0.02, 0.941), "t/b": row(0.021, 0.99), "t/c": row(0.0, 0.939)}
    got = {v["candidate"]: v["passes"] for v in dd.verdicts(table, "t", ["default", "a", "b", "c"])}
    assert got == {"a": True, "b": False, "c": False}
    with pytest.raises(ConfigError, match="unknown data_defaults arm"):
        dd.run(None, methods=["nope"])


def test_cli_passes_the_splits_and_refuses_a_bad_list(monkeypatch, tmp_path, capsys):
    from ebmlab import cli, experiments
    seen = {}
    monkeypatch.setattr(experiments, "run_experiment", lambda name, out, quick=False, **kw: seen.update(kw, name=name))
    assert cli.main(["experiment", "data_defaults", "--out", str(tmp_path), "--data-seeds", "1,2,3"]) == 0
    assert seen == {"name": "data_defaults", "data_seeds": (1, 2, 3)}
    assert cli.main(["experiment", "data_defaults", "--out", str(tmp_path), "--data-seeds", "1,x"]) == 2
    assert "--data-seeds must be comma-separated integers" in capsys.readouterr().err
    seen.clear()
    assert cli.main(["experiment", "data_defaults", "--out", str(tmp_path), "--auroc-margin", "0.01"]) == 0
    assert seen == {"name": "data_defaults", "auroc_margin": 0.01}


def test_an_auroc_margin_out_of_range_is_refused_before_any_cell(tmp_path):
    for bad in (0.0, 1.5, -0.01):
        with pytest.raises(ConfigError, match="--auroc-margin must lie between 0 and 1"):
            dd.run(tmp_path, auroc_margin=bad)
    assert not any(tmp_path.iterdir())


def test_the_cli_help_names_every_arm():
    from ebmlab import cli
    experiment = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "experiment")
    methods = next(a.help for a in experiment[1]._actions if "--methods" in a.option_strings)
    listed = methods.split("data_defaults: only these arms (")[1].rstrip(")").split(", ")
    assert listed == ["default", *dd.CANDIDATES]


def test_non_inferiority_bound_and_margins():
    # t_{0.95, 9} = 1.8331: the one-sided 95 % bound of a difference over 10 splits
    ok, bound = dd.non_inferior(0.01, 0.01, 10, 0.03, lower_is_better=True)
    assert ok and bound == pytest.approx(0.01 + 1.8331 * 0.01, abs=1e-4)
    assert not dd.non_inferior(0.01, 0.01, 10, 0.028, lower_is_better=True)[0]
    ok, bound = dd.non_inferior(-0.002, 0.002, 10, 0.006, lower_is_better=False)  # an AUROC a little behind
    assert ok and bound == pytest.approx(-0.002 - 1.8331 * 0.002, abs=1e-5)
    assert not dd.non_inferior(-0.002, 0.002, 10, 0.005, lower_is_better=False)[0]
    assert not dd.non_inferior(float("nan"), float("nan"), 10, 1.0, lower_is_better=True)[0]  # a failed cell
    assert not dd.non_inferior(0.0, float("nan"), 1, 1.0, lower_is_better=True)[0]  # one split: no bound
    means = {"gmm": {"heldout_ed7": 0.01, dd.AUROC: 0.97}, "kde": {"heldout_ed7": 0.05, dd.AUROC: 0.95}}
    assert dd.ni_margins(means) == pytest.approx({"heldout_ed7": 0.02, dd.AUROC: 0.01})
    # a margin given in AUROC units replaces the AUROC's half-gap only
    assert dd.ni_margins(means, 0.003) == pytest.approx({"heldout_ed7": 0.02, dd.AUROC: 0.003})


def test_pooled_non_inferiority_against_each_baseline():
    def split(key, default, gmm, kde):
        refs = {r: {"heldout_ed_expected": gmm[0], dd.AUROC: gmm[1]} for r in dd.REFERENCES}
        refs["kde"] = {"heldout_ed_expected": kde[0], dd.AUROC: kde[1]}
        return {"table": {f"{key}/default": {"heldout_ed7": {"mean": default[0]}, dd.AUROC: {"mean": default[1]}}},
                "references": refs}
    # level with GMM up to a small loss on both metrics; far ahead of KDE: margins 0.5 x (0.10, 0.04)
    p = dd.pooled({"t@1": split("t@1", (0.022, 0.955), (0.02, 0.96), (0.12, 0.92)),
                   "t@2": split("t@2", (0.031, 0.957), (0.03, 0.96), (0.13, 0.92)),
                   "t@3": split("t@3", (0.041, 0.953), (0.04, 0.96), (0.14, 0.92))}, ["default"])
    assert p["ni_margins"] == pytest.approx({"heldout_ed7": 0.05, dd.AUROC: 0.02})
    gmm, kde = p["baselines"]
    assert not gmm["at_least_as_good"] and gmm["non_inferior"] == {"heldout_ed7": True, dd.AUROC: True}
    assert kde["at_least_as_good"] and kde["non_inferior"] == {"heldout_ed7": True, dd.AUROC: True}
    # the bound lies beyond the mean difference on the arm's worse side
    assert gmm["ni_bound"]["heldout_ed7"] > gmm["difference_mean_se"]["heldout_ed7"][0] > 0
    assert gmm["ni_bound"][dd.AUROC] < gmm["difference_mean_se"][dd.AUROC][0] < 0
    assert "non-inferior" in dd._pooled_markdown("t", p)
    # behind GMM's AUROC by more than the margin: not non-inferior
    p = dd.pooled({k: split(k, (0.03, 0.93), (0.03, 0.96), (0.13, 0.92)) for k in ("t@1", "t@2")}, ["default"])
    assert p["baselines"][0]["non_inferior"][dd.AUROC] is False
    # the same splits with an AUROC margin wider than the 0.03 loss: non-inferior, and the table says which margin
    p = dd.pooled({k: split(k, (0.03, 0.93), (0.03, 0.96), (0.13, 0.92)) for k in ("t@1", "t@2")}, ["default"], 0.031)
    assert p["ni_margins"][dd.AUROC] == 0.031 and p["baselines"][0]["non_inferior"][dd.AUROC] is True
    assert "given: --auroc-margin" in dd._pooled_markdown("t", p)
