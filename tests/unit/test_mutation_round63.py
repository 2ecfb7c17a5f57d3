"""Mutation round 63 (docs/testing.md "A twelfth mutation round"): the claim harness (experiments/claims.py), its
cells (experiments/cells.py) and the leaderboard's ranks (experiments/leaderboard_report.py). Every expected value here is worked out by hand from the
rules in README.md / the module docstrings, or by scipy directly, not pasted from the code's output."""
from __future__ import annotations

import json
import math

import pytest

from ebmlab.experiments import claims, leaderboard_report
from ebmlab.experiments.claims import Claim


def _rec(arm, s, v=None, *, step=100, failed=None, diverged=None):
    return {"arm": arm, "seed": s, "step": step, "failed": failed, "diverged": diverged,
            "metrics": {} if (failed or diverged or v is None) else {"m": v}}


def _table(values: dict[str, list], seeds=(0, 1, 2), **states):
    """values[arm][i]: a number (done), "div" (diverged at step 50), "fail" (raised), None (missing)."""
    recs = {}
    for arm, vals in values.items():
        for s, v in zip(seeds, vals):
            if v == "div":
                recs[(arm, s)] = _rec(arm, s, step=50, diverged="step 50: loss is nan")
            elif v == "fail":
                recs[(arm, s)] = _rec(arm, s, step=None, failed="RuntimeError: boom")
            elif v is not None:
                recs[(arm, s)] = _rec(arm, s, v)
    return claims.summary_table(recs, list(values), ["m"], seeds), recs


# ----- check_same_step ------------------------------------------------------------------------------------------
def test_a_failed_cell_has_no_step_and_does_not_trip_the_same_step_check():
    # a failed cell's record has step None (the method raised before reporting one); only evaluated cells count
    recs = {("a", 0): _rec("a", 0, 1.0), ("a", 1): _rec("a", 1, step=None, failed="ValueError: x"),
            ("b", 0): _rec("b", 0, 2.0), ("b", 1): _rec("b", 1, step=7, diverged="step 7: nan")}
    assert claims.check_same_step(recs) == 100


# ----- mean_std / per_seed ---------------------------------------------------------------------------------------
def test_mean_std_leaves_out_infinite_values():
    # "Mean and sample standard deviation (n - 1) of the finite values"
    m, sd = claims.mean_std([1.0, 3.0, math.inf, -math.inf, math.nan, None])
    assert m == pytest.approx(2.0) and sd == pytest.approx(math.sqrt(2.0))


# ----- decide: the README's rule, d_s > effective margin (strict) ------------------------------------------------
def test_a_difference_exactly_at_the_margin_decides_nothing_either_way():
    t, _ = _table({"a": [0.0, 0.0, 0.0], "b": [1.0, 1.0, 1.0]})  # every d_s is exactly 1 = the margin
    assert claims.decide(Claim("", "a", "b", "m", "lower", 1.0), t)["verdict"] == "not shown"
    assert claims.decide(Claim("", "b", "a", "m", "lower", 1.0), t)["verdict"] == "not shown"
    assert claims.decide(Claim("", "a", "b", "m", "lower", 0.5), t)["verdict"] == "holds"
    assert claims.decide(Claim("", "b", "a", "m", "lower", 0.5), t)["verdict"] == "reversed"


def test_the_spread_is_the_larger_of_the_two_arms_standard_deviations():
    # a is steady (std 0), b is noisy: b's std sd([1, 2, 3]) = 1 is the spread and the effective margin
    t, _ = _table({"a": [0.0, 0.0, 0.0], "b": [1.5, 2.5, 3.5]})
    v = claims.decide(Claim("", "a", "b", "m", "lower", 0.1), t)
    assert v["spread"] == pytest.approx(1.0) and v["effective_margin"] == pytest.approx(1.0)
    assert v["diffs"] == pytest.approx([1.5, 2.5, 3.5]) and v["verdict"] == "holds"
    # the same with the noisy arm first
    v = claims.decide(Claim("", "b", "a", "m", "higher", 0.1), t)
    assert v["spread"] == pytest.approx(1.0) and v["verdict"] == "holds"
    # b's spread (std 1.0) is the effective margin although the stated one is 0: d = 0.5, 1.5, 2.5, and 0.5 < 1
    t2, _ = _table({"a": [0.0, 0.0, 0.0], "b": [0.5, 1.5, 2.5]})
    assert claims.decide(Claim("", "a", "b", "m", "lower", 0.0), t2)["verdict"] == "not shown"


def test_mean_diff_is_the_mean_of_the_finite_paired_differences():
    t, _ = _table({"a": [1.0, 2.0, 3.0], "b": [2.0, 4.0, "div"]})  # lower better: d = 1, 2, inf
    v = claims.decide(Claim("", "a", "b", "m", "lower", 0.0), t)
    assert v["diffs"][:2] == pytest.approx([1.0, 2.0]) and v["diffs"][2] == math.inf
    assert v["mean_diff"] == pytest.approx(1.5)


def test_p_value_is_scipys_one_sided_paired_t_test_without_the_diverged_seed():
    from scipy.stats import ttest_rel
    a, b = [0.10, 0.30, 0.20, 0.25], [0.40, 0.45, 0.50, 0.30]
    t, _ = _table({"a": a + [0.1], "b": b + ["div"]}, seeds=(0, 1, 2, 3, 4))
    v = claims.decide(Claim("", "a", "b", "m", "lower", 0.0), t)
    # a lower is better: H1 is mean(b - a) > 0, i.e. a < b paired
    want = ttest_rel(a, b, alternative="less").pvalue
    assert v["p_value"] == pytest.approx(want, rel=1e-9)
    assert 0.0 < v["p_value"] < 0.5  # the effect is in the claimed direction


def test_p_value_of_two_seeds_is_reported():
    from scipy.stats import ttest_rel
    t, _ = _table({"a": [1.0, 2.0], "b": [3.0, 3.5]}, seeds=(0, 1))
    v = claims.decide(Claim("", "a", "b", "m", "lower", 0.0), t)
    assert v["p_value"] == pytest.approx(ttest_rel([1.0, 2.0], [3.0, 3.5], alternative="less").pvalue)


def test_p_value_reported_against_a_fixed_bar_for_a_higher_is_better_metric():
    from scipy.stats import ttest_1samp
    t, _ = _table({"a": [0.91, 0.95, 0.97]})
    v = claims.decide(Claim("", "a", 0.9, "m", "higher", 0.0), t)
    assert v["diffs"] == pytest.approx([0.01, 0.05, 0.07])
    assert v["p_value"] == pytest.approx(ttest_1samp([0.01, 0.05, 0.07], 0.0, alternative="greater").pvalue)
    # std of a = sd(0.91, 0.95, 0.97) = 0.0306 > 0.01: seed 0 is not past the effective margin
    assert v["effective_margin"] == pytest.approx(math.sqrt(((0.91 - 0.9433333) ** 2 + (0.95 - 0.9433333) ** 2
                                                             + (0.97 - 0.9433333) ** 2) / 2), rel=1e-4)
    assert v["verdict"] == "not shown"


# ----- failed and missing cells decide nothing; a diverged one is the worst value ---------------------------------
def test_a_missing_cell_decides_nothing_even_against_the_other_arms_worst():
    # b's seed 2 is missing (its cell never ran): NaN difference, not shown, though a wins clearly on seeds 0, 1
    t, _ = _table({"a": [0.1, 0.1, 0.1], "b": [0.9, 0.9, None]})
    assert t["b"]["cells"] == ["done", "done", "missing"]
    v = claims.decide(Claim("", "a", "b", "m", "lower", 0.05), t)
    assert math.isnan(v["diffs"][2]) and v["verdict"] == "not shown"
    # and a missing cell of a against b's diverged one: still nothing (not a win for b, not for a)
    t, _ = _table({"a": [0.1, 0.1, None], "b": [0.9, 0.9, "div"]})
    v = claims.decide(Claim("", "a", "b", "m", "lower", 0.05), t)
    assert math.isnan(v["diffs"][2]) and v["verdict"] == "not shown"


def test_a_diverged_cell_is_the_worst_value_and_decides():
    # a diverged cell is a result (the worst value of its arm); the README: "a diverged cell is the worst value"
    t, _ = _table({"a": [0.1, 0.1, 0.1], "b": [0.9, "div", 0.9]})
    v = claims.decide(Claim("", "a", "b", "m", "lower", 0.05), t)
    assert v["diffs"][1] == math.inf and v["verdict"] == "holds"
    v = claims.decide(Claim("", "b", "a", "m", "lower", 0.05), t)
    assert v["diffs"][1] == -math.inf and v["verdict"] == "reversed"
    v = claims.decide(Claim("", "a", "b", "m", "higher", 0.05), t)  # higher is better: b's divergence is -inf
    assert v["diffs"][1] == math.inf and v["diffs"][0] == pytest.approx(-0.8)


# ----- the results files -----------------------------------------------------------------------------------------
def _verdict(word, text="c"):
    return {"text": text, "a": "a", "b": "b", "metric": "m", "better": "lower", "margin": 0.01, "diffs": [0.5],
            "mean_diff": 0.5, "spread": 0.2, "effective_margin": 0.2, "p_value": math.nan, "verdict": word}


def test_the_claim_holds_only_when_every_sub_claim_holds_and_there_is_one(tmp_path, capsys):
    t, _ = _table({"a": [0.1, 0.2, 0.3]})
    kw = dict(tables={"T": t}, seeds=(0, 1, 2), metrics={"T": ["m"]})
    assert claims.write_claim_results(tmp_path, "001", "x", verdicts=[], **kw)["claim_holds"] is False
    assert json.loads((tmp_path / "results.json").read_text())["claim_holds"] is False
    r = claims.write_claim_results(tmp_path, "001", "x", verdicts=[_verdict("holds"), _verdict("not shown")], **kw)
    assert r["claim_holds"] is False and "is NOT SHOWN" in (tmp_path / "results.md").read_text()
    assert "(1 of 2 sub-claims hold)" in (tmp_path / "results.md").read_text()
    r = claims.write_claim_results(tmp_path, "001", "x", verdicts=[_verdict("holds"), _verdict("holds")], **kw)
    assert r["claim_holds"] is True and "the claim HOLDS" in (tmp_path / "results.md").read_text()


def test_the_claims_line_shows_the_stated_then_the_effective_margin():
    md = claims.claims_markdown([_verdict("holds")])
    assert "| 0.01 / 0.2 |" in md and "**holds**" in md


def test_numbers_have_four_significant_digits_and_no_negative_zero():
    assert claims.fmt_number(0.123456) == "0.1235"
    assert claims.fmt_number(12345.0) == "1.234e+04"
    assert claims.fmt_number(-0.0) == "0"
    assert claims.fmt_number(None) == "-" and claims.fmt_number(math.nan) == "-"


def test_the_per_seed_table_says_missing_for_a_cell_that_never_ran():
    t, _ = _table({"a": [0.5, "fail", None]})
    assert t["a"]["cells"] == ["done", "failed", "missing"]
    md = claims.table_markdown(t, ["m"], (0, 1, 2))
    assert "| a | m | 0.5 | failed | missing |" in md


def test_quick_ignores_full():
    assert claims.quick_or_full(True, True) == {"quick": True, "full": False}
    assert claims.quick_or_full(False, True) == {"quick": False, "full": True}


def _cell_fn(params, seed, run_dir):
    return {"m": params["v"] + seed, "step": params["step"]}


def test_run_tables_checks_the_same_step_per_table_not_across_tables(tmp_path):
    # table T1's arms evaluated at step 10, T2's at step 20: each table is consistent on its own
    cells = {"T1": [claims.Cell(arm, s, _cell_fn, {"v": v, "step": 10}) for arm, v in (("a", 0.0), ("b", 5.0))
                    for s in (0, 1)],
             "T2": [claims.Cell("c", s, _cell_fn, {"v": 1.0, "step": 20}) for s in (0, 1)]}
    records, tables = claims.run_tables(tmp_path, cells, ["m"], (0, 1), jobs=1)
    assert set(tables) == {"T1", "T2"} and list(tables["T1"]) == ["a", "b"] and list(tables["T2"]) == ["c"]
    assert tables["T1"]["b"]["m"]["per_seed"] == [5.0, 6.0]


# ----- leaderboard ranks and verdicts ----------------------------------------------------------------------------
def _lb_row(mean, std=0.0, **extra):
    return {"fid": {"mean": mean, "std": std}, "x": {"mean": mean, "std": std}, "diverged": [], "failed": [], **extra}


def test_lower_is_better_for_fid_and_the_out_of_range_share():
    assert leaderboard_report.better("fid") == "lower"
    assert leaderboard_report.better("sample_out_of_range") == "lower"
    assert leaderboard_report.better("digits_precision") == "higher"


def test_ties_share_the_smaller_rank_and_the_next_rank_skips():
    t = {"d/a": _lb_row(1.0), "d/b": _lb_row(1.0), "d/c": _lb_row(2.0), "d/e": _lb_row(math.nan)}
    assert leaderboard_report.ranks(t, ["fid"])["fid"] == {"d/a": 1, "d/b": 1, "d/c": 3}
    # higher is better for "x": c first
    assert leaderboard_report.ranks(t, ["x"])["x"] == {"d/c": 1, "d/a": 2, "d/b": 2}


def test_an_infinite_mean_is_not_ranked():
    t = {"d/a": _lb_row(1.0), "d/b": _lb_row(math.inf)}
    assert leaderboard_report.ranks(t, ["fid"])["fid"] == {"d/a": 1}


def test_defaults_tied_with_the_best_baseline_are_at_least_as_good():
    t = {"d/ebmlab_default": _lb_row(1.0), "d/baseline_gmm": _lb_row(1.0), "d/baseline_kde": _lb_row(3.0)}
    lines = leaderboard_report.verdicts(t, ["fid"])
    assert lines == ["fid: best are ebmlab_default, baseline_gmm, tied (a baseline and an EBM); ebmlab's defaults "
                     "rank 1, at least as good as the best baseline"]


def test_defaults_behind_the_best_baseline_but_ahead_of_another_are_behind():
    t = {"d/m": _lb_row(0.5), "d/baseline_gmm": _lb_row(1.0), "d/ebmlab_default": _lb_row(2.0),
         "d/baseline_kde": _lb_row(3.0)}
    line = leaderboard_report.verdicts(t, ["fid"])[0]
    assert line == "fid: best is m (an EBM); ebmlab's defaults rank 3, behind the best baseline"


def test_summary_bolds_only_rank_one_and_the_dataset_table_shows_cost_means():
    t = {"d/a": _lb_row(1.0, 0.5), "d/b": _lb_row(2.0, 0.5), "d/c": _lb_row(3.0, 0.5)}
    rank = leaderboard_report.ranks(t, ["fid"])
    s = leaderboard_report.summary_markdown("d", t, rank, ["fid"])
    assert "| a | **1 (1)** |" in s and "| b | 2 (2) |" in s and "**2" not in s
    md = leaderboard_report.dataset_markdown("d", t, rank, ["fid"], ["x"], "ebmlab_default")
    assert "| a | 1 ± 0.5 (1) | 1 | - |" in md


# ----- cells: keys, caching, fingerprints, rescoring -------------------------------------------------------------
from ebmlab.experiments.cells import Cell, cell_dir, run_cells  # noqa: E402

CALLS = []


def _train(params, seed, run_dir):
    CALLS.append(("train", seed))
    run_dir.mkdir(parents=True, exist_ok=True)
    out = {"m": 1.0 + seed, "train_seconds": 3.0, "step": 10}
    if params.get("diverge"):
        return {"diverged": "step 5: nan", "step": 5}
    return out


def _rescore_fn(params, seed, run_dir):
    CALLS.append(("rescore", seed))
    return dict(params.get("rescored", {"m": 1.0 + seed, "extra": 7.0}))


def test_the_key_depends_on_the_seed_and_not_on_the_order_of_the_params():
    assert Cell("a", 0, _train, {"x": 1}).key() != Cell("a", 1, _train, {"x": 1}).key()
    assert Cell("a", 0, _train, {"x": 1, "y": 2}).key() == Cell("a", 0, _train, {"y": 2, "x": 1}).key()
    assert Cell("a", 0, _train, {"x": 1}).key() != Cell("a", 0, _train, {"x": 2}).key()


def test_a_cell_lives_in_cells_arm_seed_k(tmp_path):
    assert cell_dir(tmp_path, Cell("arm", 3, _train)) == tmp_path / "cells" / "arm" / "seed3"


def test_a_finished_cell_is_reused_and_new_params_run_it_again(tmp_path):
    CALLS.clear()
    c = Cell("a", 0, _train, {"x": 1})
    r = run_cells(tmp_path, [c], jobs=1)[("a", 0)]
    assert r["step"] == 10 and "step" not in r["metrics"] and r["metrics"]["m"] == 1.0
    run_cells(tmp_path, [c], jobs=1)
    assert CALLS == [("train", 0)]
    run_cells(tmp_path, [Cell("a", 0, _train, {"x": 2})], jobs=1)
    assert CALLS == [("train", 0), ("train", 0)]


def test_a_changed_fingerprint_runs_the_cell_again_and_an_old_record_needs_a_matching_run(tmp_path):
    CALLS.clear()
    run_cells(tmp_path, [Cell("a", 0, _train, {}, fingerprint=lambda p, s: "v1")], jobs=1)
    run_cells(tmp_path, [Cell("a", 0, _train, {}, fingerprint=lambda p, s: "v1")], jobs=1)
    assert len(CALLS) == 1
    run_cells(tmp_path, [Cell("a", 0, _train, {}, fingerprint=lambda p, s: "v2")], jobs=1)
    assert len(CALLS) == 2
    # a record from before fingerprints (none stored): current only if its run's fingerprint is today's
    path = cell_dir(tmp_path, Cell("a", 0, _train)) / "cell.json"
    rec = json.loads(path.read_text()) | {"fingerprint": None}
    path.write_text(json.dumps(rec))
    run_cells(tmp_path, [Cell("a", 0, _train, {}, fingerprint=lambda p, s: "v2", run_fingerprint=lambda d: "v1")],
              jobs=1)
    assert len(CALLS) == 3  # stale: ran again
    rec = json.loads(path.read_text()) | {"fingerprint": None}
    path.write_text(json.dumps(rec))
    run_cells(tmp_path, [Cell("a", 0, _train, {}, fingerprint=lambda p, s: "v2", run_fingerprint=lambda d: "v2")],
              jobs=1)
    assert len(CALLS) == 3 and json.loads(path.read_text())["fingerprint"] == "v2"  # current, fingerprint written
    # no run_fingerprint: a record without a fingerprint is stale
    path.write_text(json.dumps(json.loads(path.read_text()) | {"fingerprint": None}))
    run_cells(tmp_path, [Cell("a", 0, _train, {}, fingerprint=lambda p, s: "v2")], jobs=1)
    assert len(CALLS) == 4


def test_a_cell_lacking_any_required_metric_is_rescored_not_retrained(tmp_path):
    CALLS.clear()
    run_cells(tmp_path, [Cell("a", 0, _train)], jobs=1)
    c = Cell("a", 0, _train, requires=("m", "extra"), rescore=_rescore_fn)  # has m, lacks extra
    r = run_cells(tmp_path, [c], jobs=1)[("a", 0)]
    assert CALLS == [("train", 0), ("rescore", 0)]
    assert r["metrics"]["extra"] == 7.0 and r["rescored"]["added"] == ["extra"] and r["rescored"]["changed"] == {}
    # a required metric missing and no rescore: trained again
    run_cells(tmp_path, [Cell("a", 0, _train, requires=("other",))], jobs=1)
    assert CALLS[-1] == ("train", 0)
    # nothing lacking, no rescore: kept
    n = len(CALLS)
    run_cells(tmp_path, [Cell("a", 0, _train, requires=("m",))], jobs=1)
    assert len(CALLS) == n


def test_rescore_replaces_changed_values_keeps_the_training_timings_and_ignores_step(tmp_path):
    CALLS.clear()
    run_cells(tmp_path, [Cell("a", 0, _train)], jobs=1)
    new = {"m": 1.0 + 1e-6, "train_seconds": 99.0, "step": 123, "diverged": "x", "extra": 2.0}
    c = Cell("a", 0, _train, {}, rescore=lambda p, s, d: dict(new))
    r = run_cells(tmp_path, [c], jobs=1, rescore=True)[("a", 0)]
    assert r["metrics"]["m"] == pytest.approx(1.0 + 1e-6, rel=1e-12)  # today's value replaces the stored one
    assert r["rescored"]["changed"] == {"m": [1.0, 1.0 + 1e-6]}  # a relative change of 1e-6 is a change
    assert r["metrics"]["train_seconds"] == 3.0  # the training's timing, not the rescore's
    assert r["rescored"]["added"] == ["extra"]
    assert r["step"] == 10 and r["diverged"] is None and "step" not in r["metrics"]
    assert "diverged" not in r["metrics"]


def test_rescore_everything_leaves_diverged_and_failed_cells_alone_and_refuses_untrained(tmp_path):
    CALLS.clear()
    run_cells(tmp_path, [Cell("a", 0, _train, {"diverge": True})], jobs=1)
    c = Cell("a", 0, _train, {"diverge": True}, requires=("m",), rescore=_rescore_fn)
    r = run_cells(tmp_path, [c], jobs=1, rescore=True)[("a", 0)]
    assert CALLS == [("train", 0)] and "rescored" not in r and r["diverged"] == "step 5: nan"
    from ebmlab.errors import ConfigError
    with pytest.raises(ConfigError):
        run_cells(tmp_path, [Cell("b", 0, _train, rescore=_rescore_fn)], jobs=1, rescore=True)
    assert not cell_dir(tmp_path, Cell("b", 0, _train)).exists()
    # nothing untrained: no refusal
    run_cells(tmp_path, [c], jobs=1, rescore=True)


def test_a_rerun_clears_an_earlier_attempts_failure_file(tmp_path):
    d = cell_dir(tmp_path, Cell("a", 0, _train))
    d.mkdir(parents=True)
    (d / "failure.txt").write_text("old traceback")
    run_cells(tmp_path, [Cell("a", 0, _train)], jobs=1)
    assert not (d / "failure.txt").exists()


def _raise(params, seed, run_dir):
    CALLS.append(("fail", seed))
    raise RuntimeError("boom")


def test_a_failed_cell_is_not_rescored(tmp_path):
    CALLS.clear()
    r = run_cells(tmp_path, [Cell("a", 0, _raise)], jobs=1)[("a", 0)]
    assert r["failed"] == "RuntimeError: boom" and r["step"] is None
    c = Cell("a", 0, _raise, requires=("m",), rescore=_rescore_fn)
    r = run_cells(tmp_path, [c], jobs=1, rescore=True)[("a", 0)]
    assert ("rescore", 0) not in CALLS and "rescored" not in r


def test_no_seeds_decide_nothing():
    t, _ = _table({"a": [], "b": []}, seeds=())
    assert claims.decide(Claim("", "a", "b", "m", "lower", 0.0), t)["verdict"] == "not shown"
    assert claims.decide(Claim("", "a", 1.0, "m", "lower", 0.0), t)["verdict"] == "not shown"


# ----- runner: the experiments' quiet overrides and train_cell ---------------------------------------------------
from types import SimpleNamespace  # noqa: E402

from ebmlab.experiments import runner  # noqa: E402


def test_experiment_runs_draw_no_per_run_plots_unless_the_experiment_says_so():
    # QUIET: "no per-run plots (experiments draw their own figures)"; "an experiment's own overrides come after"
    assert runner.experiment_config(None, []).eval.plots is False
    assert runner.experiment_config(None, ["eval.plots=true"]).eval.plots is True
    assert runner.experiment_config(None, ["train.progress=true"]).train.progress is True


def test_train_cell_trains_on_one_thread_and_a_diverged_run_reports_its_step(monkeypatch, tmp_path):
    seen = {}

    def fake(run_dir, cfg, **kw):
        seen["threads"], seen["on_diverge"] = cfg.train.threads, kw.get("on_diverge")
        return runner.Arm(SimpleNamespace(step=37), diverged="loss is nan")
    monkeypatch.setattr(runner, "train_and_evaluate", fake)
    out = runner.train_cell(None, [], 0, tmp_path)
    assert seen == {"threads": 1, "on_diverge": "record"}
    assert out == {"diverged": "step 37: loss is nan", "step": 37}


# ----- eta_search: the target reaches choose_eta; zero steps refused; the EMA weights are measured ---------------
from ebmlab.experiments import eta_search  # noqa: E402


class _Ema:
    def copy_to(self, obj):
        obj.ema_applied = True


class _Trainer:
    def __init__(self, cfg, run_dir, data=None):
        self.cfg, self.data, self.ema, self.objective = cfg, data or "data", _Ema(), torch.nn.Linear(1, 1)
        self.objective.ema_applied = False

    def fit(self):
        pass


import torch  # noqa: E402


def test_the_eta_search_chooses_by_the_given_target_on_the_ema_model(monkeypatch):
    seen = []
    monkeypatch.setattr(eta_search, "Trainer", _Trainer)
    monkeypatch.setattr(eta_search, "positives", lambda data, n, g, dev: torch.zeros(n, 2))

    def gap(obj, x, eta, n, g):
        seen.append(obj.ema_applied)
        return eta - 0.3  # gaps: 0.1 -> -0.2, 0.4 -> 0.1, 0.8 -> 0.5
    monkeypatch.setattr(eta_search, "t1_energy_gap", gap)
    cfg = runner.experiment_config("paper002_8gaussians", [], threads=1)
    # the smallest eta whose gap is >= target: target 0.3 -> 0.8 (0.4's gap 0.1 falls short)
    res = eta_search.tune_eta_by_training(cfg, [0.8, 0.1, 0.4], 3, n=10, target=0.3)
    assert res.eta == 0.8 and res.reached
    assert seen == [True, True, True]  # each gap measured with the EMA weights swapped in
    with pytest.raises(ValueError):
        eta_search.tune_eta_by_training(cfg, [0.1], 0, n=10)


def test_the_one_place_the_ema_weights_are_applied_is_before_evaluation(monkeypatch, tmp_path):
    class T(_Trainer):
        selector, step = None, 5
    monkeypatch.setattr(runner, "Trainer", T)
    seen = {}
    monkeypatch.setattr(runner, "evaluate", lambda obj, data, cfg, g, extra=None: seen.setdefault("ema", obj.ema_applied)
                        and {"x": 1.0})
    arm = runner._fit_cell(tmp_path, runner.experiment_config(None, []), None, True, "raise")
    assert arm.trainer.objective.ema_applied is True and seen == {"ema": True} and arm.metrics == {"x": 1.0}
