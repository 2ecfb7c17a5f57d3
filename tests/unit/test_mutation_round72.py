"""Mutation round 72 (docs/testing.md "An eighteenth mutation round", a helper's file beside round 69): the mutants that round 66 wrote for the paper
experiments (``experiments/paper00[0-4].py``), the leaderboard, ``data_defaults``, ``compare_checks``,
``host_speed``, ``plots`` and ``samplers/progress`` but never ran. Each test here kills one that the earlier tests let
through. Nothing trains; the expected values come from docs/paper00N.md, docs/leaderboard.md, the module docstrings
and answers worked out by hand (each with its source in a comment).
"""
from __future__ import annotations

import pytest

from ebmlab.experiments.runner import experiment_config


# ----- paper 002 -------------------------------------------------------------------------------------------------
def test_paper002_claim_text_names_table_4_for_the_T_row_and_table_5_for_the_K_row():
    # docs/paper002.md: "T20_K3 against the other cells of Table 4's row (T at K = 3) and Table 5's (K at T = 20)".
    # kills: p2-table-label (the two table numbers swapped)
    from ebmlab.experiments import paper002
    cl = paper002.sub_claims(paper002.grid(False, False), False)
    assert cl
    for c in cl:
        T, K = (int(v) for v in c.b[1:].split("_K"))
        if K == 3:
            assert f"(Table 4: T = {T})" in c.text, c.text
        else:
            assert T == 20 and f"(Table 5: K = {K})" in c.text, c.text


# ----- paper 003 -------------------------------------------------------------------------------------------------
def test_paper003_level1_density_claim_wants_the_lower_kl():
    # docs/paper003.md / Fig. 1 middle row: CDRL's level-1 marginal is closer to the truth than no_coop's; a KL is a
    # divergence, smaller is closer, so "beats" means lower density_kl_t1, by KL_MARGIN 0.05 (module constants).
    # kills: p3-kl-higher
    from ebmlab.experiments import paper003
    (c,) = [c for c in paper003.SUB_CLAIMS if c.metric == "density_kl_t1"]
    assert (c.a, c.b, c.better, c.margin) == ("cdrl", "no_coop", "lower", 0.05)


# ----- plots -----------------------------------------------------------------------------------------------------
def _caught_figure(monkeypatch):
    from ebmlab import plots
    seen = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: seen.setdefault("fig", fig))
    return plots, seen


def test_grid_density_divides_by_the_cell_area_of_the_grid():
    # grid_density: "density per unit area"; xs = 0, 0.5, 1 (spacing 0.5), ys = 0, 0.5, .., 2 (spacing 0.5): cell
    # area 0.25; a flat log-density puts 1/15 on each of the 15 points -> 1/15 / 0.25 = 4/15 (by hand).
    # kills: pl-cell (spacing range / n: 1/3 x 2/5 -> 0.5)
    import torch

    from ebmlab import plots
    d = plots.grid_density(torch.zeros(15), torch.linspace(0, 1, 3), torch.linspace(0, 2, 5))
    assert d.shape == (5, 3)
    assert d == pytest.approx(torch.full((5, 3), 4 / 15).numpy())


def test_density_maps_share_one_colour_scale_only_when_asked(monkeypatch, tmp_path):
    # density_maps: shared_scale -> "one colour scale"; otherwise "each panel has its own scale". Panel a flat (4/15
    # per unit area, as above), panel b all its mass on one point (1 / 0.25 = 4): shared vmax 4 on both; own: 4/15, 4.
    # kills: pl-shared (the two cases swapped)
    import torch
    plots, seen = _caught_figure(monkeypatch)
    xs, ys = torch.linspace(0, 1, 3), torch.linspace(0, 2, 5)
    peak = torch.full((15,), -1e4)
    peak[7] = 0.0
    for shared, want in ((True, (4.0, 4.0)), (False, (4 / 15, 4.0))):
        seen.clear()
        plots.density_maps({"a": torch.zeros(15), "b": peak}, xs, ys, tmp_path / "d.png", shared_scale=shared)
        vmax = [ax.images[0].norm.vmax for ax in seen["fig"].axes if ax.images]
        assert vmax == pytest.approx(list(want)), shared


def test_image_grid_maps_minus_one_to_black_one_to_white_and_fills_rows_left_to_right(monkeypatch, tmp_path):
    # image_grid: images in [-1, 1] -> [0, 1] (-1 black, 0 mid grey, 1 white); images fill a row of nrow = ceil(sqrt
    # 5) = 3 first: image 1 sits in row 0, column 1 (pixels rows 1-2, columns 4-5 with 1-pixel borders), image 3 in
    # row 1, column 0 (rows 4-5, columns 1-2). kills: pl-range (no / 2: 1 -> 2), pl-divmod (row and column swapped)
    import torch
    plots, seen = _caught_figure(monkeypatch)
    x = -torch.ones(5, 1, 2, 2)
    x[1] = 1.0
    x[3] = 0.0
    plots.image_grid(x, tmp_path / "g.png")
    img = seen["fig"].axes[0].images[0].get_array()
    assert float(img[1, 4]) == 1.0 and float(img[2, 5]) == 1.0      # image 1: white
    assert float(img[4, 1]) == 0.5 and float(img[5, 2]) == 0.5      # image 3: grey
    assert float(img[1, 1]) == 0.0 and float(img[4, 4]) == 0.0      # images 0 and 4: black


def test_line_plot_uses_a_log_axis_from_one_decade_on(monkeypatch, tmp_path):
    # line_plot: logy and "under a decade: linear reads better", so ys spanning exactly 1 to 10 (a decade) get the log
    # axis and 1 to 9.9 do not. kills: pl-logy (>= 10 -> > 10)
    plots, seen = _caught_figure(monkeypatch)
    for ys, scale in (((1.0, 10.0), "log"), ((1.0, 9.9), "linear")):
        seen.clear()
        plots.line_plot({"a": ((1, 2), ys)}, tmp_path / "l.png", "x", "y", logy=True)
        assert seen["fig"].axes[0].get_yscale() == scale, ys


def test_data_box_widens_by_15_percent_of_the_range_on_each_side():
    # data_box: "widened by margin of its range on every side", default margin 0.15: x1 in [0, 1], x2 in [0, 2]
    # -> (-0.15, 1.15, -0.3, 2.3) (by hand). kills: pl-margin (0.1)
    import torch

    from ebmlab import plots
    box = plots.data_box(torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.5, 1.0]]))
    assert box == pytest.approx((-0.15, 1.15, -0.3, 2.3))


def test_equal_counts_cuts_every_set_to_the_smallest():
    # equal_counts: "every set cut to the size of the smallest (its first rows)": sets of 3 and 5 rows -> 3 each.
    # kills: pl-equal-max (the largest: 5, and the 3-row set stays 3)
    import torch

    from ebmlab import plots
    arrays, n = plots.equal_counts({"a": torch.zeros(3, 2), "b": torch.arange(10.0).reshape(5, 2)})
    assert n == 3 and arrays["a"].shape == arrays["b"].shape == (3, 2)
    assert arrays["b"].tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]


# ----- leaderboard -----------------------------------------------------------------------------------------------
def _lb_cfg(method: str, dataset: str, quick: bool = False):
    from ebmlab.experiments import leaderboard as lb
    config, sets = lb.method_overrides(method, dataset, 20.0, quick)
    return experiment_config(config, sets, threads=1)


def test_leaderboard_per_t_row_is_paper000s_option_1_without_ce():
    # docs/leaderboard.md / module docstring: the per_t row is paper 000's per_t arm (option 1: one energy per level,
    # no cross-entropy term). kills: lb-per_t-arm (cd_plain's overrides)
    cfg = _lb_cfg("per_t", "mixture")
    assert cfg.method.name == "per_t" and cfg.method.ce_weight == 0


def test_leaderboard_toys_are_standardised_and_evaluated_on_1000_samples():
    # docs/leaderboard.md: data.standardize "true on every vector dataset"; eval.n_samples "1,000 (vectors)".
    # kills: lb-toy-nostd, lb-eval-n
    for ds in ("mixture", "checkerboard", "rings"):
        cfg = _lb_cfg("cdrl", ds)  # paper 003's config is written for raw coordinates (standardize: false)
        assert cfg.data.standardize is True, ds
        assert cfg.eval.n_samples == 1000, ds


def test_leaderboard_rings_have_both_toy_ood_sets():
    # docs/leaderboard.md dataset table: rings, OOD `shifted`, `scaled` (like the other toys). kills: lb-rings-ood
    from ebmlab.experiments import leaderboard as lb
    assert lb.DATASETS["rings"][1] == ("shifted", "scaled")
    assert lb.metrics_of("rings")[-2:] == ["ood_auroc_shifted", "ood_auroc_scaled"]


def test_leaderboard_budget_is_a_float_so_budget_20_is_the_defaults_cells():
    # budget_for docstring: "a float (... budget=20 must build the default's cells, "20.0", not "20")".
    # kills: lb-budget-nofloat
    from ebmlab.experiments import leaderboard as lb
    b = lb.budget_for(False, False, 20)
    assert type(b) is float and str(b) == "20.0"
    one = dict(methods=["hybrid"], datasets=["mixture"])
    a, b = (lb.build_cells(False, False, x, (0,), **one)["mixture"][0] for x in (20, None))
    assert a.params["overrides"] == b.params["overrides"]
    assert "train.time_budget=20.0" in a.params["overrides"]


def test_leaderboard_project_keeps_the_first_two_coordinates_of_a_toy_with_an_exact_law():
    # project docstring: "vectors: the first two coordinates (toys: the rings' structured slice)", PCA only for
    # user or tabular data (no ``dist``). kills: lb-project-dist (10-D rings sent to the PCA branch)
    from types import SimpleNamespace

    import torch

    from ebmlab.experiments import leaderboard as lb
    x = torch.arange(40.0).reshape(4, 10)
    out = lb.project(x, SimpleNamespace(kind="vector", dist=object()))
    assert torch.equal(out, x[:, :2])


def test_leaderboard_quick_runs_one_seed_and_a_zero_budget_is_refused(monkeypatch, tmp_path):
    # docs/leaderboard.md: "--quick ... smoke test: 2 methods x 2 datasets, 1 seed"; run: "--budget must be positive
    # seconds" (0 s buys no update). kills: lb-quick-seeds, lb-budget-check
    from ebmlab.experiments import leaderboard as lb
    seen = {}

    def stop(quick, full, budget, seeds, methods=None, datasets=None):
        seen["seeds"] = seeds
        raise RuntimeError("stop")
    monkeypatch.setattr(lb, "build_cells", stop)
    with pytest.raises(RuntimeError, match="stop"):
        lb.run(tmp_path / "q", quick=True, seeds=(0, 1, 2))
    assert seen["seeds"] == (0,)
    with pytest.raises(ValueError, match="positive"):
        lb.run(tmp_path / "z", budget=0.0)


def test_leaderboard_an_empty_methods_list_is_refused_not_read_as_all():
    # docs/leaderboard.md: --methods / --datasets name a subset, "unknown names are refused with the list of known
    # ones"; _subset's message "(none given)" for an empty list. kills: lb-subset-empty (empty -> the whole grid)
    from ebmlab.errors import ConfigError
    from ebmlab.experiments import leaderboard as lb
    with pytest.raises(ConfigError, match="none given"):
        lb.build_cells(False, False, None, (0,), methods=[])
    with pytest.raises(ConfigError, match="none given"):
        lb.build_cells(False, False, None, (0,), datasets=[])


# ----- data_defaults ---------------------------------------------------------------------------------------------
def _row(ed: float, auroc: float) -> dict:
    from ebmlab.experiments import data_defaults as dd
    return {"heldout_ed7": {"mean": ed}, dd.AUROC: {"mean": auroc}}


def test_data_defaults_verdict_is_ed_at_most_the_defaults_and_auroc_within_0_01():
    # module docstring: passes "iff its mean heldout_ed7 is at most the default's and its mean AUROC at least the
    # default's - AUROC_SLACK"; docs/data_defaults.md: "at least the plain mean - 0.01". Default (1.0, 0.90): a tie
    # on ED with AUROC 0.895 passes, AUROC 0.885 (below 0.89) fails. kills: dd-ed-strict, dd-slack (0.02)
    from ebmlab.experiments import data_defaults as dd
    table = {"t/default": _row(1.0, 0.90), "t/tie": _row(1.0, 0.895), "t/low": _row(0.5, 0.885)}
    got = {v["candidate"]: v["passes"] for v in dd.verdicts(table, "t", ["default", "tie", "low"])}
    assert got == {"tie": True, "low": False}


def test_data_defaults_an_arm_level_with_a_baseline_is_at_least_as_good():
    # module docstring: "at least as good as a baseline iff its pooled heldout_ed7 is at most the baseline's ... and
    # its pooled AUROC at least the baseline's": equal means on both (GMM) -> True; KDE better on AUROC -> False.
    # kills: dd-ab-auroc-strict
    from ebmlab.experiments import data_defaults as dd
    A = dd.AUROC
    per_split = {"heldout_ed7": [1.0, 2.0], A: [0.9, 0.9]}
    d = {"heldout_ed7": 1.5, A: 0.9}
    ref = {"gmm": {"heldout_ed7": [1.0, 2.0], A: [0.9, 0.9]}, "kde": {"heldout_ed7": [1.0, 2.0], A: [0.95, 0.95]}}
    means = {"gmm": {"heldout_ed7": 1.5, A: 0.9}, "kde": {"heldout_ed7": 1.5, A: 0.95}}
    out = dd._against_baselines(per_split, d, ref, means, {"heldout_ed7": 0.1, A: 0.01})
    assert {r["baseline"]: r["at_least_as_good"] for r in out} == {"gmm": True, "kde": False}


def test_data_defaults_standard_normal_is_normalised_in_d_dimensions():
    # StandardNormal: the normalised N(0, I) log-density, -|x|^2 / 2 - (D / 2) log(2 pi); D = 3 at 0:
    # -1.5 log(2 pi) = -2.75682 (by hand). kills: dd-gauss-logdet (one dimension's constant only)
    import torch

    from ebmlab.experiments import data_defaults as dd
    lp = dd.StandardNormal(3).log_density(torch.zeros(2, 3))
    assert lp.tolist() == pytest.approx([-2.756815599614018] * 2)


def test_data_defaults_seven_draws_seeds_0_to_5_and_refit_likelihood_is_refit_plus_the_likelihood_check():
    # module docstring: heldout_ed7 is the mean over DRAWS draws ("which 7 draws only estimate"), --seeds default
    # "SEEDS = 0-5"; docs/data_defaults.md: refit_likelihood is "the same [as refit: train.select_refit=true] plus
    # train.select_likelihood=true". kills: dd-draws, dd-seeds, dd-refit-lik
    from ebmlab.experiments import data_defaults as dd
    assert dd.SEEDS == (0, 1, 2, 3, 4, 5)
    cells = dd.build_cells(["breast_cancer"], ["default"], (0,), 20.0, False)["breast_cancer"]
    assert cells[0].params["draws"] == 7
    assert set(dd.CANDIDATES["refit_likelihood"]) == set(dd.CANDIDATES["refit"]) | {"train.select_likelihood=true"}


# ----- host_speed ------------------------------------------------------------------------------------------------
def _fake_host(monkeypatch, steps):
    from ebmlab.experiments import host_speed
    clock, seen, it = [0.0], [], iter(steps)

    def one_pass(energy, x):
        seen.append(tuple(x.shape))
        clock[0] += next(it)
    monkeypatch.setattr(host_speed, "energy_and_grad", one_pass)
    monkeypatch.setattr(host_speed.time, "process_time", lambda: clock[0])
    return host_speed, seen


def test_host_floor_is_the_median_block_in_cpu_milliseconds_of_a_10d_batch_of_256(monkeypatch):
    # host_speed docstring: "Median over blocks of the CPU milliseconds per call", the default energy's "10-D input"
    # at batch 256, after 3 untimed passes. Blocks of one call taking 1, 2, 6 ms of CPU: median 2.0 (mean 3.0).
    # kills: hs-mean, hs-units (microseconds), hs-dim (2-D input), hs-wall (wall clock for the start)
    host_speed, seen = _fake_host(monkeypatch, [0.5, 0.5, 0.5, 0.001, 0.002, 0.006])
    assert host_speed.floor_ms(blocks=3, calls=1) == pytest.approx(2.0)
    assert seen == [(256, 10)] * 6


def test_host_floor_leaves_the_callers_random_stream_as_it_was(monkeypatch):
    # floor_ms docstring: "inside torch.random.fork_rng, so the caller's random stream is left as it was".
    # kills: hs-forkrng (fork_rng disabled: the floor's manual_seed(0) resets the caller's stream)
    import torch
    host_speed, _ = _fake_host(monkeypatch, [0.001] * 4)
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    host_speed.floor_ms(blocks=1, calls=1)
    assert torch.equal(torch.rand(3), want)


# ----- samplers/progress -----------------------------------------------------------------------------------------
def test_sampling_progress_none_is_the_lazy_display_and_true_the_eager_one(monkeypatch):
    # sampling_progress docstring: None "the same but in a log from LINE_EVERY (30 s) on only" (the lazy display),
    # True shows it at once. kills: pr-lazy (lazy=False always)
    import contextlib

    from ebmlab.samplers import progress
    seen = []

    @contextlib.contextmanager
    def display(n, total, desc, unit, lazy):
        seen.append(lazy)
        yield type("Bar", (), {"update": lambda self, k: None})()
    monkeypatch.setattr(progress, "progress_display", display)
    for enabled in (None, True):
        with progress.sampling_progress(3, enabled=enabled):
            pass
    assert seen == [True, False]


def test_sampling_progress_stops_ticking_when_its_block_ends():
    # module docstring: "outside one [block], tick is a no-op": step_counter() is None again after the block, and an
    # inner block's end restores the outer block's tick. kills: pr-noreset
    from ebmlab.samplers.progress import sampling_progress, step_counter
    assert step_counter() is None
    with sampling_progress(2, enabled=False):
        assert step_counter() is None
    with sampling_progress(2, enabled=None):
        outer = step_counter()
        with sampling_progress(2, enabled=None):
            assert step_counter() is not outer
        assert step_counter() is outer
    assert step_counter() is None


# ----- compare_checks --------------------------------------------------------------------------------------------
def test_compare_refuses_one_run_named_twice_however_spelled(monkeypatch, tmp_path):
    # check_distinct docstring: "one run named twice (however spelled)": runs/b/../a, runs/a and its absolute path
    # are one run. kills: cc-resolve (Path(r) without resolving)
    from ebmlab.errors import ConfigError
    from ebmlab.experiments import compare_checks as cc
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "b").mkdir()
    monkeypatch.chdir(tmp_path)
    for other in ("runs/b/../a", str(tmp_path / "runs" / "a")):
        with pytest.raises(ConfigError, match="same run"):
            cc.check_distinct(["runs/a", other])
    cc.check_distinct(["runs/a", "runs/b"])


def _read(path: str, listing: str, place: str | None = None) -> dict:
    data = {"name": "folder", "sha256": None, "listing_sha256": listing, "val_fraction": 0.1}
    return {"data": data, "data_path": path, "data_place": place, "listing_legacy": listing == "old"}


def test_compare_accepts_two_listings_of_one_folder_that_both_match_it(monkeypatch, tmp_path):
    # check_same_data / _both_match: runs on one data folder whose stored listings differ (one stored before linked
    # folders were listed) but both match the folder as it is now are the same data. kills: cc-listing-excl
    from ebmlab.errors import ConfigError
    from ebmlab.experiments import compare_checks as cc
    folder = tmp_path / "imgs"
    folder.mkdir()
    monkeypatch.setattr(cc, "folder_matches", lambda path, sha, legacy: sha in ("old", "new"))
    cc.check_same_data(["r1", "r2"], [_read(str(folder), "old"), _read(str(folder), "new")])
    with pytest.raises(ConfigError, match="different data"):  # one that does not match the folder: refused
        cc.check_same_data(["r1", "r2"], [_read(str(folder), "old"), _read(str(folder), "stale")])


def test_compare_out_reached_through_a_link_into_the_data_folder_is_refused(tmp_path):
    # check_out_outside_data docstring: refuse an out "in a run's data folder"; out = link/cmp where link points at
    # the data folder is that folder's cmp (os.path.realpath). kills: cc-realpath (Path.absolute keeps the link)
    from ebmlab.errors import ConfigError
    from ebmlab.experiments import compare_checks as cc
    data = tmp_path / "imgs"
    data.mkdir()
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    read = [_read(str(data), "x", str(data))]
    with pytest.raises(ConfigError, match="lies in data folder"):
        cc.check_out_outside_data(["r1"], read, tmp_path / "link" / "cmp")
    cc.check_out_outside_data(["r1"], read, tmp_path / "elsewhere")
