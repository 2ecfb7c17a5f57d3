"""Known answers for the statistics that decide the experiments' verdicts and the OOD scores (mutation check,
round five; docs/testing.md).

Each test compares the code with values computed by hand, in closed form, or by an independent route (scipy,
Python's ``statistics``, a brute-force Mann-Whitney count), on small constructed tables: no training.

- ``experiments/claims.py``: mean and sample standard deviation over seeds (n - 1; a NaN metric of a seed
  that ran is left out, not spread over the others); the paired verdict (every seed must clear the effective
  margin, whichever seed loses; a tie is not a win; the spread is the *larger* of the two arms' stds); the
  one-sided paired t-test p-value; a failed cell counts as the worst value; ``claim_holds`` needs every
  sub-claim; the per-seed table says whether a cell without a value failed, diverged or is missing.
- ``experiments/data_defaults.py``: mean and standard error; the one-sided Student-t bound with splits - 1
  degrees of freedom against scipy; the boundaries of the adoption rule and of non-inferiority ("at most",
  "at least"); each baseline compared on its own AUROC.
- ``experiments/leaderboard_report.py``: which direction each ranked metric ranks first; a default tied with
  the best baseline is "at least as good as" it.
- ``metrics/ood.auroc`` against the Mann-Whitney count with ties 1/2 (sets of unequal sizes); ``ebmlab eval
  --ood`` and the leaderboard's OOD AUROC score the *held-out* rows as in-distribution.
- ``training/selection.Selector``: a later check that only ties the best does not replace it; a window's mean
  has all its checks; a likelihood gain of exactly 0 keeps a check eligible.
"""
from __future__ import annotations

import math
import statistics
import warnings
from types import SimpleNamespace

import pytest
import torch
from scipy import stats
from torch import nn

from ebmlab.experiments import claims
from ebmlab.experiments import data_defaults as dd
from ebmlab.experiments import leaderboard, leaderboard_report
from ebmlab.experiments.claims import Claim
from ebmlab.metrics.ood import auroc
from ebmlab.training import image_eval, selection


# ----- claims: tables and verdicts -----------------------------------------------------------------------
def _record(arm, seed, value=None, failed=None, diverged=None):
    return {"arm": arm, "seed": seed, "step": 10, "failed": failed, "diverged": diverged,
            "metrics": {} if value is None else {"m": value}}


def _table(values: dict[str, list], seeds=(0, 1, 2)) -> dict:
    recs = {(arm, s): _record(arm, s, v) for arm, vals in values.items() for s, v in zip(seeds, vals)}
    return claims.summary_table(recs, list(values), ["m"], seeds)


def test_the_per_seed_table_says_what_became_of_each_cell_without_a_value():
    """A failed cell (the method raised) read "diverged" in the per-seed table, as did a missing one."""
    recs = {("a", 0): _record("a", 0, 1.5), ("a", 1): _record("a", 1, failed="ValueError: x"),
            ("a", 2): _record("a", 2, diverged="step 7: loss nan")}
    md = claims.table_markdown(claims.summary_table(recs, ["a"], ["m"], (0, 1, 2, 3)), ["m"], (0, 1, 2, 3))
    assert md.splitlines()[-1] == "| a | m | 1.5 | failed | diverged | missing |"
    old = claims.summary_table(recs, ["a"], ["m"], (0, 1, 2, 3))
    del old["a"]["cells"]  # a table re-read from an older results.json
    assert claims.table_markdown(old, ["m"], (0, 1, 2, 3)).splitlines()[-1].endswith("| diverged / failed |")


def test_mean_std_is_the_sample_standard_deviation_of_the_finite_values():
    assert claims.mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, statistics.stdev([1, 2, 3, 4])))
    assert claims.mean_std([1.0, 2.0, 3.0, 4.0])[1] == pytest.approx(math.sqrt(5 / 3))
    # a diverged seed (None) and a seed that ran without the metric (NaN) are left out of both
    assert claims.mean_std([1.0, None, math.nan, 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))
    m, sd = claims.mean_std([5.0])
    assert m == 5.0 and math.isnan(sd)


def test_a_seed_that_does_not_report_the_metric_is_left_out_of_the_table_row():
    recs = {("a", 0): _record("a", 0, 1.0), ("a", 1): _record("a", 1, 3.0),
            ("a", 2): {**_record("a", 2, 0.0), "metrics": {"other": 1.0}}}  # ran, but no "m"
    row = claims.summary_table(recs, ["a"], ["m"], (0, 1, 2))["a"]["m"]
    assert row["per_seed"][:2] == [1.0, 3.0] and math.isnan(row["per_seed"][2])
    assert (row["mean"], row["std"]) == pytest.approx((2.0, math.sqrt(2.0)))


def test_the_spread_is_the_larger_of_the_two_arms_standard_deviations():
    # std(a) = 1.0, std(b) = 1.1: diffs 1.05, 1.15, 1.25 clear a's spread but not b's
    t = _table({"a": [1.0, 2.0, 3.0], "b": [2.05, 3.15, 4.25]})
    v = claims.decide(Claim("", "a", "b", "m", "lower", 0.2), t)
    assert v["diffs"] == pytest.approx([1.05, 1.15, 1.25])
    assert v["spread"] == pytest.approx(1.1) and v["effective_margin"] == pytest.approx(1.1)
    assert v["mean_diff"] == pytest.approx(1.15)
    assert v["verdict"] == "not shown"
    # the same arms the other way round (b's std is still the larger): b is worse on every seed, not by enough
    assert claims.decide(Claim("", "b", "a", "m", "lower", 0.2), t)["verdict"] == "not shown"
    # a stated margin above the spread is the effective one
    assert claims.decide(Claim("", "a", "b", "m", "lower", 1.2), t)["effective_margin"] == 1.2


@pytest.mark.parametrize("loser", [0, 1, 2])
def test_one_losing_seed_whichever_it_is_means_not_shown(loser):
    # a fixed bar 10 (lower is better): two seeds at 0 clear it by 10 > std(a) = 6.35; the third misses it
    vals = [0.0, 0.0, 0.0]
    vals[loser] = 11.0
    v = claims.decide(Claim("", "a", 10.0, "m", "lower", 0.0), _table({"a": vals}))
    assert v["effective_margin"] == pytest.approx(statistics.stdev(vals))
    assert v["verdict"] == "not shown"
    vals[loser] = 0.5  # every seed clears the bar by more than the spread now
    assert claims.decide(Claim("", "a", 10.0, "m", "lower", 0.0), _table({"a": vals}))["verdict"] == "holds"


def test_a_tie_on_every_seed_is_not_a_win():
    t = _table({"a": [1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0]})  # stds 0, margin 0: every diff equals the margin
    for better in ("lower", "higher"):
        v = claims.decide(Claim("", "a", "b", "m", better, 0.0), t)
        assert v["diffs"] == [0.0, 0.0, 0.0] and v["verdict"] == "not shown"
    assert claims.decide(Claim("", "a", 1.0, "m", "higher", 0.0), t)["verdict"] == "not shown"


def test_the_p_value_is_scipys_one_sided_paired_t_test():
    t = _table({"a": [1.0, 1.0, 1.0], "b": [2.0, 3.0, 4.0]})  # diffs 1, 2, 3: t = 2 / (1 / sqrt 3), 2 df
    v = claims.decide(Claim("", "a", "b", "m", "lower", 0.0), t)
    assert v["diffs"] == [1.0, 2.0, 3.0]
    assert v["p_value"] == pytest.approx(stats.t.sf(2 * math.sqrt(3), 2))  # 0.0371
    assert v["p_value"] == pytest.approx(0.037090, abs=1e-5)
    # a reversed effect: p near 1
    assert claims.decide(Claim("", "b", "a", "m", "lower", 0.0), t)["p_value"] == pytest.approx(1 - 0.037090, abs=1e-5)


def test_a_failed_cell_decides_nothing():
    """(Round 56 changed this rule: a failed cell counted as the worst value of its arm, like a diverged one, so a
    claim held when the baseline crashed; a crash is no evidence about the method, a divergence is.)"""
    recs = {(arm, s): _record(arm, s, v) for arm, vals in {"a": [0.1, 0.1, 0.1], "b": [0.5, 0.5, 0.5]}.items()
            for s, v in enumerate(vals)}
    recs[("b", 1)] = _record("b", 1, failed="ValueError: boom")
    t = claims.summary_table(recs, ["a", "b"], ["m"], (0, 1, 2))
    assert t["b"]["m"]["per_seed"] == [0.5, None, 0.5] and t["b"]["failed"] == ["seed 1: ValueError: boom"]
    v = claims.decide(Claim("", "a", "b", "m", "lower", 0.05), t)
    assert math.isnan(v["diffs"][1]) and v["diffs"][0] == v["diffs"][2] == pytest.approx(0.4)
    assert v["verdict"] == "not shown"
    recs[("a", 2)] = _record("a", 2, failed="ValueError: boom")  # now a fails a seed: it cannot hold
    t = claims.summary_table(recs, ["a", "b"], ["m"], (0, 1, 2))
    assert claims.decide(Claim("", "a", "b", "m", "lower", 0.05), t)["verdict"] == "not shown"


def test_the_claim_holds_only_when_every_sub_claim_holds(tmp_path):
    t = _table({"a": [0.10, 0.12, 0.11], "b": [0.50, 0.55, 0.52]})
    win = claims.decide(Claim("win", "a", "b", "m", "lower", 0.05), t)
    lose = claims.decide(Claim("lose", "a", "b", "m", "higher", 0.05), t)
    assert (win["verdict"], lose["verdict"]) == ("holds", "reversed")
    res = claims.write_claim_results(tmp_path, "999", "c", {"main": t}, [win, lose], (0, 1, 2), {"main": ["m"]})
    assert res["claim_holds"] is False and "1 of 2 sub-claims hold" in (tmp_path / "results.md").read_text()
    assert claims.write_claim_results(tmp_path, "999", "c", {"main": t}, [win], (0, 1, 2),
                                      {"main": ["m"]})["claim_holds"] is True
    assert claims.write_claim_results(tmp_path, "999", "c", {"main": t}, [], (0, 1, 2),
                                      {"main": ["m"]})["claim_holds"] is False


# ----- data_defaults: standard errors, bounds, rules ---------------------------------------------------
def test_mean_se_is_the_standard_error_of_the_mean():
    assert dd._mean_se([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, stats.sem([1.0, 2.0, 3.0, 4.0])))
    assert dd._mean_se([1.0, 2.0, 3.0, 4.0])[1] == pytest.approx(math.sqrt(5 / 3) / 2)
    assert all(math.isnan(x) for x in dd._mean_se([1.0, None]))


def test_the_non_inferiority_bound_is_the_one_sided_t_bound_with_n_minus_1_degrees_of_freedom():
    ok, bound = dd.non_inferior(2.0, 0.5, 3, 10.0, lower_is_better=True)  # t_{0.95, 2} = 2.919986
    assert ok and bound == pytest.approx(2.0 + stats.t.ppf(0.95, 2) * 0.5) and bound == pytest.approx(3.459993)
    ok, bound = dd.non_inferior(-0.01, 0.004, 5, 0.05, lower_is_better=False)  # t_{0.95, 4} = 2.131847
    assert ok and bound == pytest.approx(-0.01 - 2.131847 * 0.004, abs=1e-7)
    # the bound equal to the margin is within it (mean + t se <= margin; mean - t se >= -margin)
    assert dd.non_inferior(0.02, 0.0, 5, 0.02, lower_is_better=True) == (True, 0.02)
    assert dd.non_inferior(-0.02, 0.0, 5, 0.02, lower_is_better=False) == (True, -0.02)
    assert not dd.non_inferior(0.0201, 0.0, 5, 0.02, lower_is_better=True)[0]


def _dd_table(ds, rows: dict[str, tuple[float, float]]) -> dict:
    return {f"{ds}/{arm}": {"heldout_ed7": {"mean": ed}, dd.AUROC: {"mean": au}} for arm, (ed, au) in rows.items()}


def test_the_adoption_rule_at_its_boundaries():
    t = _dd_table("t", {"default": (0.10, 0.90), "tie": (0.10, 0.90), "slack": (0.09, 0.895),
                        "worse_ed": (0.1001, 0.99), "auroc_out": (0.01, 0.889)})
    got = {v["candidate"]: v["passes"] for v in dd.verdicts(t, "t", ["default", "tie", "slack", "worse_ed", "auroc_out"])}
    # a tie on both passes ("at most", "at least"); an AUROC 0.005 behind is within the 0.01 slack; 0.011 is not
    assert got == {"tie": True, "slack": True, "worse_ed": False, "auroc_out": False}


def test_each_baseline_is_compared_on_its_own_auroc():
    def split(key, default, gmm, kde):
        refs = {r: {"heldout_ed_expected": gmm[0], dd.AUROC: gmm[1]} for r in dd.REFERENCES}
        refs["kde"] = {"heldout_ed_expected": kde[0], dd.AUROC: kde[1]}
        return {"table": _dd_table(key, {"default": default}), "references": refs}
    # the default is ahead of both on samples, ahead of GMM's AUROC (0.90) and behind KDE's (0.96)
    p = dd.pooled({k: split(k, (0.01, 0.93), (0.05, 0.90), (0.05, 0.96)) for k in ("t@1", "t@2")}, ["default"])
    gmm, kde = p["baselines"]
    assert (gmm["baseline"], kde["baseline"]) == ("gmm", "kde")
    assert gmm["at_least_as_good"] is True and kde["at_least_as_good"] is False
    assert kde["difference_mean_se"][dd.AUROC][0] == pytest.approx(0.93 - 0.96)  # arm - baseline
    assert gmm["difference_mean_se"]["heldout_ed7"][0] == pytest.approx(0.01 - 0.05)


# ----- leaderboard: directions and verdict lines -------------------------------------------------------
def _lower_first(metric: str) -> bool:
    """Distances, divergences and errors rank lower first; precision, shares and AUROCs higher first."""
    return any(k in metric for k in ("distance", "kl", "error", "_fd"))


def test_every_ranked_metric_ranks_in_its_direction():
    metrics = sorted({m for ds in leaderboard.DATASETS for m in leaderboard.metrics_of(ds)})
    assert "sample_energy_distance_heldout" in metrics and "digits_fd" in metrics
    for m in metrics:
        assert leaderboard_report.better(m) == ("lower" if _lower_first(m) else "higher"), m
        table = {"x/small": {m: {"mean": 0.1}}, "x/big": {m: {"mean": 0.2}}}
        want = {"x/small": 1, "x/big": 2} if _lower_first(m) else {"x/small": 2, "x/big": 1}
        assert leaderboard_report.ranks(table, [m]) == {m: want}, m


def test_the_summary_table_rounds_to_three_digits_bolds_rank_one_and_leaves_the_baselines_updates_blank():
    table = {"d/hybrid": {"density_kl": {"mean": 1234.5}, "updates": {"mean": 47.6}},
             "d/baseline_gmm": {"density_kl": {"mean": 0.00017382}, "updates": {"mean": float("nan")}},
             "d/baseline_kde": {"density_kl": {"mean": -0.0}, "updates": {"mean": float("nan")}}}
    rank = leaderboard_report.ranks(table, ["density_kl"])
    lines = leaderboard_report.summary_markdown("d", table, rank, ["density_kl"]).splitlines()
    assert lines[:4] == ["**d**", "", "| method | density_kl | updates |", "|---|---|---|"]
    assert lines[4:] == ["| hybrid | 1.23e+03 (3) | 48 |", "| baseline_gmm | 0.000174 (2) | - |",
                         "| baseline_kde | **0 (1)** | - |"]


def test_a_default_tied_with_the_best_baseline_is_at_least_as_good_as_it():
    row = lambda v: {"sample_precision": {"mean": v}}  # noqa: E731
    table = {"d/hybrid": row(0.5), "d/ebmlab_default": row(0.9), "d/baseline_gmm": row(0.9),
             "d/baseline_kde": row(0.3)}
    assert leaderboard_report.ranks(table, ["sample_precision"])["sample_precision"] == {
        "d/hybrid": 3, "d/ebmlab_default": 1, "d/baseline_gmm": 1, "d/baseline_kde": 4}
    (line,) = leaderboard_report.verdicts(table, ["sample_precision"])
    assert "defaults rank 1, at least as good as the best baseline" in line
    # both rank 1: the line named whichever came first ("best is ebmlab_default (an EBM)")
    assert line.startswith("sample_precision: best are ebmlab_default, baseline_gmm, tied (a baseline and an EBM)")
    table["d/baseline_gmm"] = row(0.8)
    assert leaderboard_report.verdicts(table, ["sample_precision"])[0].startswith(
        "sample_precision: best is ebmlab_default (an EBM)")


# ----- OOD AUROC ---------------------------------------------------------------------------------------
def _mann_whitney(s_in, s_out) -> float:
    """P(in > out) + P(in = out) / 2 over every pair: the AUROC by its definition."""
    wins = sum((a > b) + 0.5 * (a == b) for a in s_in for b in s_out)
    return wins / (len(s_in) * len(s_out))


@pytest.mark.parametrize("s_in, s_out, want", [
    ([3.0], [1.0, 2.0, 4.0], 2 / 3),
    ([1.0, 2.0], [2.0, 3.0, 0.0], 2.5 / 6),            # one tie counts 1/2
    ([5.0, 5.0, 1.0, 0.0], [5.0], (0.5 + 0.5) / 4),
    ([0.2, 0.9, 0.4, 0.7, 0.7], [0.1, 0.7, 0.3], 11 / 15),
])
def test_auroc_is_the_mann_whitney_probability_with_ties_as_half(s_in, s_out, want):
    assert _mann_whitney(s_in, s_out) == pytest.approx(want)
    assert auroc(torch.tensor(s_in), torch.tensor(s_out)) == pytest.approx(want)
    assert auroc(torch.tensor(s_out), torch.tensor(s_in)) == pytest.approx(1 - want)


class _FirstCoordinate(nn.Module):
    """An objective whose energy is the first coordinate: E(x) = x[:, 0]."""
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def score(self, x):
        return x[:, 0] + 0 * self.w


def _ood_data():
    ident = SimpleNamespace(to_model=lambda x: torch.as_tensor(x, dtype=torch.float32))
    test = torch.tensor([[0.0, 0.0], [10.0, 0.0], [2.0, 0.0]])
    train = torch.tensor([[100.0, 0.0], [200.0, 0.0]])  # far above every OOD energy: AUROC 0 if taken as in-dist
    return SimpleNamespace(kind="vector", test=test, train=train, val=None, transform=ident)


def _shifted_auroc(test0) -> float:
    """-E of the held-out rows vs -E of the shifted set (each held-out row + 1)."""
    return _mann_whitney([-t for t in test0], [-(t + 1) for t in test0])


def test_eval_ood_scores_the_held_out_rows_against_the_ood_set():
    data, obj = _ood_data(), _FirstCoordinate()
    want = _shifted_auroc([0.0, 10.0, 2.0])  # 6 of 9 pairs: 2/3
    assert want == pytest.approx(2 / 3)
    args = SimpleNamespace(ood=["shifted"], ood_arrays={"far": [[-5.0, 0.0], [50.0, 0.0]]})
    out = image_eval.ood_extension(args, SimpleNamespace(train=SimpleNamespace(seed=0)), obj, data)
    assert out["ood_auroc_shifted"] == pytest.approx(want)
    assert out["ood_auroc_far"] == pytest.approx(_mann_whitney([0.0, -10.0, -2.0], [5.0, -50.0]))  # 1/2


def test_the_leaderboards_ood_auroc_scores_the_held_out_rows():
    data, obj = _ood_data(), _FirstCoordinate()
    got = leaderboard.ood_aurocs(obj, data, ("shifted", "scaled"), seed=0)
    assert got["ood_auroc_shifted"] == pytest.approx(_shifted_auroc([0.0, 10.0, 2.0]))
    assert got["ood_auroc_scaled"] == pytest.approx(_mann_whitney([0.0, -10.0, -2.0], [0.0, -15.0, -3.0]))


# ----- checkpoint selection ----------------------------------------------------------------------------
def _selector(scores, tmp_path, **kw):
    """A Selector fed ``scores`` at steps 5, 10, ... (no weights written: not the main process)."""
    sel = selection.Selector(5, tmp_path, seed=0, **kw)
    it = iter(scores)
    sel._score = lambda trainer: next(it)
    cfg = SimpleNamespace(method=SimpleNamespace(name="fake"))
    with warnings.catch_warnings():  # (the timing warning may fire: the checks take no time)
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, _ in enumerate(scores):
            sel.check(SimpleNamespace(step=5 * (i + 1), is_main=False, cfg=cfg), last=i == len(scores) - 1)
    return sel


def test_a_later_check_that_only_ties_the_best_does_not_replace_it(tmp_path):
    sel = _selector([2.0, 1.0, 1.0, 3.0], tmp_path)
    assert (sel.best_step, sel.best_score, sel.best_check) == (10, 1.0, 1.0)


def test_a_windows_mean_is_over_all_its_checks(tmp_path):
    # window 3 means: (4+1)/2, (4+1+1)/3, (1+1+4)/3, (1+4+0)/3, (4+0)/2 = 2.5, 2, 2, 1.667, 2: step 20 wins
    sel = _selector([4.0, 1.0, 1.0, 4.0, 0.0], tmp_path, window=3)
    assert sel.best_step == 20 and sel.best_score == pytest.approx(5 / 3) and sel.best_check == 4.0


def test_a_likelihood_gain_of_exactly_zero_keeps_the_check_eligible(tmp_path):
    sel = selection.Selector(5, tmp_path, seed=0, likelihood=True)
    for gain, ok in ((0.0, True), (1e-9, True), (-1e-9, False), (math.nan, False)):
        sel._gain = gain
        assert sel._likely() is ok, gain


def test_resuming_at_the_best_checks_own_step_keeps_it(tmp_path):
    # the best check was at step 20 and the run resumes from the step-20 checkpoint (checks come before saves):
    # the best belongs to the kept part of the run; resumed from step 15 it does not
    selection.ckpt.save_checkpoint(tmp_path, 20, {"w": torch.zeros(2)},
                                   {"val_energy_distance": 0.7, "val_window_score": 0.65}, name=selection.ckpt.BEST)
    sel = selection.Selector(5, tmp_path, seed=0)
    sel.resume(20)
    assert (sel.best_step, sel.best_check, sel.best_score) == (20, 0.7, 0.65)
    assert selection.ckpt.best_path(tmp_path).is_file()
    with pytest.warns(RuntimeWarning, match="dropped"):
        selection.Selector(5, tmp_path, seed=0).resume(15)
    assert not selection.ckpt.best_path(tmp_path).exists()
