"""The leaderboard (experiments/leaderboard.py): the --quick smoke version end to end (2 methods x 2 datasets,
1 seed, tiny budgets), the grid covering every method and dataset, and every cell's config loading."""
import json

import pytest
import torch

from ebmlab.errors import ConfigError
from ebmlab.experiments import leaderboard
from ebmlab.experiments.runner import experiment_config
from ebmlab.objectives import METHODS


@pytest.mark.slow  # (default tier kept near 10 min on CI; `make test-slow` and .ci/run run it)
def test_quick_leaderboard_writes_tables_json_and_figure(tmp_path):
    result = leaderboard.run(tmp_path, quick=True, jobs=1, budget=0.5)
    assert set(result["datasets"]) == set(leaderboard.QUICK_DATASETS)
    saved = json.loads((tmp_path / "results.json").read_text())
    mix = saved["datasets"]["mixture"]["table"]
    assert set(mix) == {f"mixture/{m}" for m in leaderboard.QUICK_METHODS} | {"mixture/baseline_gmm", "mixture/baseline_kde"}
    for arm, row in mix.items():
        assert not row["failed"], (arm, row["failed"])
        assert len(row["density_kl"]["per_seed"]) == 1
    hybrid = mix["mixture/hybrid"]
    assert hybrid["updates"]["per_seed"][0] >= 1 and hybrid["sampler_evals_per_sample"]["per_seed"][0] > 0
    assert hybrid["train_wall_seconds"]["per_seed"][0] >= 0.5  # stopped by the budget, not by train.steps
    assert 0 < hybrid["host_floor_ms"]["per_seed"][0] < 1e3  # the host's speed, recorded beside the cost
    assert all(v != v for v in mix["mixture/baseline_gmm"]["host_floor_ms"]["per_seed"])  # NaN: a baseline does not train
    assert "ood_auroc_other_class" in saved["datasets"]["breast_cancer"]["metrics"]
    md = (tmp_path / "results.md").read_text()
    assert "## mixture" in md and "baseline_gmm" in md and "(1)" in md
    assert (tmp_path / "samples_grid.png").stat().st_size > 0
    summary = (tmp_path / "summary.md").read_text()  # the means and ranks, one table per dataset
    assert summary.count("| method | ") == len(leaderboard.QUICK_DATASETS) and "**mixture**" in summary
    assert f"| {hybrid['updates']['mean']:.0f} |" in summary and "| baseline_gmm |" in summary
    assert "sample_energy_distance_heldout" in saved["datasets"]["breast_cancer"]["table"]["breast_cancer/hybrid"]
    # --rescore: every cell evaluated again from its stored run (baselines refitted) reproduces every stored value
    leaderboard.run(tmp_path, quick=True, jobs=1, budget=0.5, rescore=True)
    cells = sorted(tmp_path.glob("cells/*/*/seed0/cell.json"))
    assert len(cells) == 8
    for path in cells:
        record = json.loads(path.read_text())
        assert record["rescored"]["changed"] == {} and record["rescored"]["added"] == [], (path, record["rescored"])


def test_the_default_grid_is_every_method_on_every_dataset():
    grid = leaderboard.build_cells(quick=False, full=False, budget=None, seeds=(0, 1, 2))
    assert set(grid) == {"mixture", "checkerboard", "rings", "digits", "breast_cancer"}
    for ds, cells in grid.items():
        arms = {c.arm.split("/", 1)[1] for c in cells}
        assert arms == set(METHODS) | {leaderboard.DEFAULT_ROW, "baseline_gmm", "baseline_kde"}, ds
        assert len(cells) == 3 * len(arms)
        assert all(f"train.time_budget={leaderboard.BUDGET}" in c.params["overrides"] for c in cells
                   if c.fn is leaderboard.cell_fn)


@pytest.mark.parametrize("dataset", list(leaderboard.DATASETS))
def test_every_method_config_loads_on_every_dataset(dataset):
    for method in [*METHODS, leaderboard.DEFAULT_ROW]:
        config, sets = leaderboard.method_overrides(method, dataset, 10.0, quick=False)
        cfg = experiment_config(config, sets, threads=1)
        assert cfg.method.name == (method if method in METHODS else "hybrid")
        assert cfg.data.name == dataset and cfg.train.time_budget == 10.0


def test_ranks_put_the_best_mean_first_and_share_ties():
    table = {"a": {"density_kl": {"mean": 0.5}}, "b": {"density_kl": {"mean": 0.1}},
             "c": {"density_kl": {"mean": 0.1}}, "d": {"density_kl": {"mean": float("nan")}}}
    assert leaderboard.ranks(table, ["density_kl"]) == {"density_kl": {"a": 3, "b": 1, "c": 1}}


def test_verdicts_say_whether_the_defaults_match_the_best_baseline():
    row = lambda v: {"density_kl": {"mean": v}}  # noqa: E731
    table = {"mixture/hybrid": row(0.3), "mixture/ebmlab_default": row(0.2), "mixture/baseline_gmm": row(0.1),
             "mixture/baseline_kde": row(0.4)}
    (line,) = leaderboard.verdicts(table, ["density_kl"])
    assert "best is baseline_gmm (a baseline)" in line and "defaults rank 2, behind the best baseline" in line
    table["mixture/ebmlab_default"] = row(0.05)
    (line,) = leaderboard.verdicts(table, ["density_kl"])
    assert "best is ebmlab_default (an EBM)" in line and "rank 1, at least as good as the best baseline" in line


def test_a_subset_of_methods_and_datasets_keeps_the_baselines_and_refuses_unknown_names():
    grid = leaderboard.build_cells(quick=False, full=False, budget=None, seeds=(0,), methods=["ebmlab_default"],
                                   datasets=["breast_cancer", "rings"])
    assert list(grid) == ["breast_cancer", "rings"]
    for ds, cells in grid.items():
        assert {c.arm for c in cells} == {f"{ds}/ebmlab_default", f"{ds}/baseline_gmm", f"{ds}/baseline_kde"}
    # the same cells (keys) as in the full grid: a subset run reuses, and is reused by, the full grid's cache
    full = {c.key() for cs in leaderboard.build_cells(False, False, None, (0,)).values() for c in cs}
    assert {c.key() for cs in grid.values() for c in cs} <= full
    with pytest.raises(ConfigError, match="unknown leaderboard method 'nope'.*ebmlab_default"):
        leaderboard.build_cells(False, False, None, (0,), methods=["hybrid", "nope"])
    with pytest.raises(ConfigError, match="unknown leaderboard dataset"):
        leaderboard.build_cells(False, False, None, (0,), datasets=["cifar10"])


def test_cli_passes_methods_and_datasets(monkeypatch, tmp_path):
    from ebmlab import cli, experiments
    seen = {}
    monkeypatch.setattr(experiments, "run_experiment", lambda name, out, quick=False, **kw: seen.update(kw, name=name))
    assert cli.main(["experiment", "leaderboard", "--out", str(tmp_path), "--methods", "hybrid, ebmlab_default",
                     "--datasets", "rings"]) == 0
    assert seen == {"name": "leaderboard", "methods": ("hybrid", "ebmlab_default"), "datasets": ("rings",)}


def test_other_experiments_refuse_methods(tmp_path):
    from ebmlab.experiments import run_experiment
    with pytest.raises(ConfigError, match="does not take --methods"):
        run_experiment("paper004", tmp_path, methods=("hybrid",))
    with pytest.raises(ConfigError, match="leaderboard does not take --data-seeds; it takes --seeds, --jobs, --full"):
        run_experiment("leaderboard", tmp_path, data_seeds=(1, 2))


def test_evaluation_counter_counts_the_energy_or_its_network_once():
    from torch import nn

    class Wrapped(nn.Module):  # forward calls net (counted once), net_energy bypasses forward (cdrl, drl)
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(2, 1)

        def forward(self, x):
            return self.net(x).squeeze(1)

        def net_energy(self, x):
            return self.net(x).squeeze(1)

    e = Wrapped()
    with leaderboard.evaluation_counter(e) as c:
        e(torch.zeros(5, 2))
        e(torch.zeros(3, 2))
    assert c() == 8
    with leaderboard.evaluation_counter(e) as c:
        e.net_energy(torch.zeros(4, 2))
    assert c() == 4
    plain = nn.Linear(2, 1)
    with leaderboard.evaluation_counter(plain) as c:
        plain(torch.zeros(6, 2))
    assert c() == 6
    assert not e._forward_hooks and not e.net._forward_hooks  # removed on exit


def test_host_floor_is_a_positive_time_and_leaves_the_random_stream_alone():
    from ebmlab.experiments.host_speed import floor_ms

    torch.manual_seed(123)
    state = torch.get_rng_state()
    ms = floor_ms(blocks=2, calls=2)
    assert 0 < ms < 1e3
    assert torch.equal(torch.get_rng_state(), state)
