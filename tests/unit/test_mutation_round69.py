"""Mutation round 69 (docs/testing.md "An eighteenth mutation round"): the fifteenth round's mutants that it wrote and
did not run (papers' claims, the leaderboard's grid, data_defaults' rule). Every expected value is read from the
docs (docs/leaderboard.md, docs/data_defaults.md, the papers' pages) or from a metric's meaning, not from the code's
output."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ebmlab.errors import ConfigError
from ebmlab.experiments import data_defaults, leaderboard, paper000, paper001, paper002, paper003, paper004

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _direction(metric: str) -> str:
    """A metric's better direction from its meaning: divergences, distances, errors, FDs, losses, instability are
    better low; precisions, shares, accuracies, AUROCs better high."""
    if re.search(r"kl|energy_distance|error|fd|loss|unstable|gap", metric):
        return "lower"
    assert re.search(r"precision|share|support|acc|auroc", metric), metric
    return "higher"


def _all_claims():
    return (paper000.sub_claims() + paper001.sub_claims()
            + paper002.sub_claims(paper002.grid(False, False), False) + paper003.SUB_CLAIMS + paper004.SUB_CLAIMS)


def test_every_papers_claim_runs_in_its_metrics_better_direction():
    # kills: paper003's level-1 density KL claim made "higher" (a KL that beats another is the lower one)
    claims = _all_claims()
    assert len(claims) > 20
    for c in claims:
        assert c.better == _direction(c.metric), c.text


def test_paper002_claims_name_table_4_for_the_t_row_and_table_5_for_the_k_row():
    # docs/paper002.md: "T20_K3 against the other cells of Table 4's row (T at K = 3) and Table 5's (K at T = 20)"
    said = {c.b: c.text for c in paper002.sub_claims(paper002.grid(False, False), False)}
    t_row = [b for b in said if b.endswith("_K3")]
    k_row = [b for b in said if b.startswith("T20_")]
    assert t_row and k_row and set(t_row) | set(k_row) == set(said)
    for b in t_row:
        assert f"(Table 4: T = {b[1:].split('_')[0]})" in said[b]
    for b in k_row:
        assert f"(Table 5: K = {b.split('_K')[1]})" in said[b]


def _docs_dataset_table() -> dict[str, tuple[str, ...]]:
    """docs/leaderboard.md's "Datasets and OOD sets" table: dataset -> the OOD sets of its last column."""
    text = (DOCS / "leaderboard.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.split("| dataset | rows | what is known |", 1)[1].splitlines()[2:]:
        if not line.strip().startswith("|"):
            break
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cols[0].strip("`")] = tuple(re.findall(r"(?:^|, )`([a-z_]+)`", cols[-1]))
    return rows


def test_the_leaderboards_datasets_and_ood_sets_are_docs_leaderboard_mds_table():
    # kills: the rings' "scaled" OOD set dropped
    docs = _docs_dataset_table()
    assert set(docs) == set(leaderboard.DATASETS)
    for ds, sets in docs.items():
        assert leaderboard.DATASETS[ds][1] == sets, ds


def test_every_vector_dataset_of_the_leaderboard_is_standardized():
    # docs/leaderboard.md: data.standardize "`true` on every vector dataset" (kills: the toys without it)
    for ds, (overrides, _) in leaderboard.DATASETS.items():
        if leaderboard.kind(ds) == "vector":
            assert "data.standardize=true" in overrides, ds


def test_the_leaderboards_sample_sizes_are_the_documented_ones():
    # docs/leaderboard.md: eval.n_samples "1,000 (vectors), 500 (digits)" (kills: 500 on vectors)
    assert "| `eval.n_samples` | 1,000 (vectors), 500 (digits) |" in (DOCS / "leaderboard.md").read_text(encoding="utf-8")
    assert "eval.n_samples=1000" in leaderboard.EVAL["vector"]
    assert "eval.n_samples=500" in leaderboard.EVAL["image"]


def test_quick_shrinks_the_vector_mlp_only_not_an_image_network():
    # QUICK's model.width=32 / depth=1 are the toy MLP's; on the digits they would change the convnet (kills: QUICK on
    # every kind)
    _, sets = leaderboard.method_overrides("hybrid", "digits", 1.0, quick=True)
    assert not set(leaderboard.QUICK) & set(sets)
    _, sets = leaderboard.method_overrides("hybrid", "mixture", 1.0, quick=True)
    assert set(leaderboard.QUICK) <= set(sets)


def test_the_budget_is_a_float_whatever_number_is_given():
    # a cell's key holds "train.time_budget=20.0": budget=20 must build the same cells (kills: float() dropped)
    got = leaderboard.budget_for(False, False, 20)
    assert type(got) is float and got == 20.0
    _, sets = leaderboard.method_overrides("hybrid", "mixture", got, quick=False)
    assert "train.time_budget=20.0" in sets
    assert type(leaderboard.settings(False, False, 20)["budget"]) is float


def test_a_toy_is_drawn_in_its_first_two_coordinates_user_data_on_its_principal_axes():
    # docstring of ``project``: toys (an exact density: the rings' structured slice) keep x1, x2 (kills: the rings
    # projected on principal axes)
    x = torch.randn(50, 10, generator=torch.Generator().manual_seed(0))
    toy = SimpleNamespace(kind="vector", dist=object())
    assert torch.equal(leaderboard.project(x, toy), x[:, :2])


def test_quick_runs_one_seed_and_a_budget_of_zero_or_an_empty_subset_is_refused(tmp_path, monkeypatch):
    # docs/leaderboard.md: "--quick: 2 methods x 2 datasets, 1 seed, 1 s" (kills: every seed in a quick run)
    seen, real_build = {}, leaderboard.build_cells

    class Stop(Exception):
        pass

    def build(quick, full, budget, seeds, methods, datasets):
        seen["seeds"] = seeds
        raise Stop

    monkeypatch.setattr(leaderboard, "build_cells", build)
    with pytest.raises(Stop):
        leaderboard.run(tmp_path / "q", quick=True, seeds=(0, 1, 2))
    assert seen["seeds"] == (0,)
    # kills: `budget < 0` (zero seconds accepted: the grid would be built, and Stop raised)
    with pytest.raises(ValueError, match="--budget must be positive"):
        leaderboard.run(tmp_path / "z", budget=0)
    assert not (tmp_path / "z").exists()
    # kills: an empty --methods accepted (it would run the baselines alone)
    with pytest.raises(ConfigError, match=r"\(none given\)"):
        real_build(False, False, None, (0,), methods=[])


def test_data_defaults_rule_uses_the_documented_draws_and_seeds_and_arms():
    # docs/data_defaults.md: "mean of 7 draws, seeds 0-5" (kills: 6 draws; seeds 0-4)
    text = (DOCS / "data_defaults.md").read_text(encoding="utf-8")
    assert "mean of 7 draws, seeds 0-5" in text
    assert data_defaults.DRAWS == 7 and data_defaults.SEEDS == tuple(range(6))
    # `refit_likelihood` is `refit` with the likelihood selection (kills: refit dropped from it)
    c = data_defaults.CANDIDATES
    assert c["refit_likelihood"] == c["refit"] + ["train.select_likelihood=true"]


def test_the_standard_normal_reference_is_normalised():
    # log N(x; 0, I_D) = -|x|^2/2 - D/2 log(2 pi): at x = 0 in 5-D, -2.5 log(2 pi) (kills: the D dropped)
    import math
    lp = data_defaults.StandardNormal(5).log_density(torch.zeros(3, 5))
    assert torch.allclose(lp, torch.full((3,), -2.5 * math.log(2 * math.pi)))


def test_an_arm_tied_with_a_baseline_on_auroc_is_at_least_as_good():
    # "at least as good iff its pooled heldout_ed7 is at most the baseline's and its pooled AUROC at least the
    # baseline's" (kills: a strict AUROC comparison)
    auroc = data_defaults.AUROC
    per_split = {"heldout_ed7": [0.1, 0.1], auroc: [0.9, 0.9]}
    means = {b: {"heldout_ed7": 0.2, auroc: 0.9} for b in data_defaults.BASELINES}
    ref = {b: {"heldout_ed7": [0.2, 0.2], auroc: [0.9, 0.9]} for b in data_defaults.BASELINES}
    d = {"heldout_ed7": 0.1, auroc: 0.9}
    out = data_defaults._against_baselines(per_split, d, ref, means, {"heldout_ed7": 0.05, auroc: 0.01})
    assert [r["at_least_as_good"] for r in out] == [True] * len(data_defaults.BASELINES)


def test_compare_refuses_one_run_spelled_two_ways(tmp_path, monkeypatch):
    # "one run named twice (however spelled)": runs/a and ./runs/../runs/a (kills: the paths compared as written)
    from ebmlab.experiments.compare_checks import check_distinct
    (tmp_path / "runs" / "a").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="are the same run"):
        check_distinct(["runs/a", str(tmp_path / "runs" / "a")])
