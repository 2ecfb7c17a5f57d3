"""Known answers for the experiment drivers (a mutation check, docs/testing.md, ninth round): which arms each
paper's claim experiment has, the config each arm trains (resolved as the library resolves it), the seeds and
budgets its cells get, where a cell's files go, and which metric of which arm reaches a claim
(``experiments/paper00[0-4].py``, ``cells.py``, ``runner.py``, ``eta_search.py``, the arm parts of
``leaderboard.py`` and ``data_defaults.py``).

Nothing here trains: each cell's function is called with the training function replaced by a recorder (the
config, overrides and seed it would train with), and the recorded overrides are resolved by
``experiment_config`` as ``runner.train_cell`` resolves them. Expected values are the papers' and the docs'
(the module docstrings, docs/paper00*.md, docs/leaderboard.md), each with its source in a comment.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ebmlab.experiments import cells as cells_mod
from ebmlab.experiments import claims, eta_search, leaderboard, paper000, paper001, paper002, paper003, paper004
from ebmlab.experiments import data_defaults as dd
from ebmlab.experiments import runner
from ebmlab.experiments.runner import experiment_config
from ebmlab.training.config import load_config

SEEDS = (0, 1, 2)


def _trains(module, cell, monkeypatch, tmp_path, returns=None):
    """(config, overrides, seed) that ``cell`` hands to ``module.train_cell`` (a recorder, no training)."""
    seen = []

    def record(config, overrides, seed, run_dir, **kw):
        seen.append((config, list(overrides), seed))
        return dict(returns or {"step": 1, "diverged": "a stub: not trained"})  # (paper001 scores no diverged cell)
    monkeypatch.setattr(module, "train_cell", record)
    cell.fn(cell.params, cell.seed, tmp_path / "run")
    (got,) = seen
    return got


def _cfg(module, cell, monkeypatch, tmp_path):
    """The config ``cell`` would train with, resolved as ``runner.train_cell`` resolves it."""
    config, overrides, seed = _trains(module, cell, monkeypatch, tmp_path)
    assert seed == cell.seed  # every cell trains with its own seed
    return experiment_config(config, overrides + [f"train.seed={seed}"], threads=1)


def _without(d: dict, *keys: str) -> dict:
    """A config dict without the dotted ``keys``."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for key in keys:
        part, name = key.split(".")
        d[part].pop(name)
    return d


# ----- paper 000 -------------------------------------------------------------------------------------------------
def test_paper000_each_arm_trains_its_own_option_on_its_own_dataset(monkeypatch, tmp_path):
    # Sec. 3.1 / docs/paper000.md: Option 1 = per_t alone (no CE: the spiral config's ce_weight 1 must be set to 0);
    # Option 2 = cd_ce, Alg. 1 with CE weight 1; Option 3 = joint_cd, Alg. 2 alone (CE 0); cd_plain the reference
    want = {"per_t": ("per_t", 0.0), "cd_ce": ("cd_ce", 1.0), "joint_cd": ("joint_cd", 0.0),
            "cd_plain": ("cd_plain", None)}
    cells = paper000.build_cells(False, SEEDS)
    assert len(cells) == 2 * 4 * 3  # {spiral, mixture} x 4 arms x 3 seeds
    for c in cells:
        ds, arm = c.arm.split("/")
        cfg = _cfg(paper000, c, monkeypatch, tmp_path)
        assert cfg.method.name == want[arm][0], c.arm
        if want[arm][1] is not None:
            assert cfg.method.ce_weight == want[arm][1], c.arm
        assert cfg.data.name == ds and cfg.train.steps == paper000.STEPS == 3000  # the same budget for every arm
        assert cfg.train.ema is None  # the paper has no EMA


def test_paper000_claims_compare_each_joint_loss_with_option_1_on_the_same_dataset():
    # module docstring: cd_ce and joint_cd against per_t, precision margin 0.05, mode-mass-error margin 0.10
    got = [(c.a, c.b, c.metric, c.better, c.margin) for c in paper000.sub_claims()]
    want = []
    for j in ("cd_ce", "joint_cd"):
        want += [(f"spiral/{j}", "spiral/per_t", "sample_precision", "higher", 0.05),
                 (f"mixture/{j}", "mixture/per_t", "sample_mode_mass_error", "lower", 0.10),
                 (f"mixture/{j}", "mixture/per_t", "sample_precision", "higher", 0.05)]
    assert got == want


# ----- paper 001 -------------------------------------------------------------------------------------------------
def test_paper001_table2_arms_switch_exactly_the_papers_terms(monkeypatch, tmp_path):
    # paper 001 Table 2 (its five rows): (L_opt, L_ent, aug, multiscale); 400 iterations per cell; OOD on full only
    rows = {"none": (False, False, False, False), "aug": (False, False, True, False),
            "aug_multiscale": (False, False, True, True), "aug_multiscale_kl_opt": (True, False, True, True),
            "full": (True, True, True, True)}
    table2, _ = paper001.build_cells(False, SEEDS)
    assert [c.arm for c in table2] == [a for a in rows for _ in SEEDS]
    for c in table2:
        cfg = _cfg(paper001, c, monkeypatch, tmp_path)
        m = cfg.method
        assert (m.kl, m.entropy, m.augment, m.multiscale) == rows[c.arm], c.arm
        assert cfg.train.steps == 400 and c.params["ood"] == (c.arm == "full")


def test_paper001_stability_arms_differ_only_in_the_kl_terms_and_use_the_harsh_setup(monkeypatch, tmp_path):
    # Fig. 8: {no KL, KL (L_opt + L_ent)} x {plain, sn, attn, sn_attn}; step 2000, noise 0.002 (docs/paper001.md),
    # 600 iterations, augmentation and multi-scale on as in full
    archs = {"plain": (False, False), "sn": (True, False), "attn": (False, True), "sn_attn": (True, True)}
    _, stab = paper001.build_cells(False, SEEDS)
    assert len(stab) == 4 * 2 * 3
    for c in stab:
        arch, kl = c.arm.removeprefix("stab_").rsplit("_", 1)
        cfg = _cfg(paper001, c, monkeypatch, tmp_path)
        m, on = cfg.method, kl == "kl"
        assert (m.kl, m.entropy, m.augment, m.multiscale) == (on, on, True, True), c.arm
        assert (cfg.model.spectral_norm, cfg.model.attention) == archs[arch], c.arm
        assert (m.step_size, m.noise_scale, cfg.train.steps) == (2000.0, 0.002, 600), c.arm


@pytest.mark.parametrize("fd, unstable", [(50.0, 0.0), (100.0, 1.0), (150.0, 1.0)])
def test_paper001_a_run_is_unstable_when_its_samples_are_no_closer_than_noise(fd, unstable, monkeypatch, tmp_path):
    # module docstring: unstable = 1 iff digits_fd >= digits_fd_noise (the floor, train vs test, plays no part)
    cell = paper001.build_cells(False, (0,))[0][0]
    metrics = {"digits_fd": fd, "digits_fd_noise": 100.0, "digits_fd_floor": 10.0, "step": 400}
    monkeypatch.setattr(paper001, "train_cell", lambda *a, **k: dict(metrics))
    assert cell.fn(cell.params, 0, tmp_path)["unstable"] == unstable


def test_paper001_claims_are_each_kl_arm_against_aug_multiscale_and_kl_against_nokl():
    got = [(c.a, c.b, c.metric, c.better, c.margin) for c in paper001.sub_claims()]
    assert got == [("aug_multiscale_kl_opt", "aug_multiscale", "digits_fd", "lower", 25.0),
                   ("full", "aug_multiscale", "digits_fd", "lower", 25.0)] + [
        (f"stab_{a}_kl", f"stab_{a}_nokl", "unstable", "lower", 0.5) for a in ("plain", "sn", "attn", "sn_attn")]


# ----- paper 002 -------------------------------------------------------------------------------------------------
def test_paper002_each_grid_cell_trains_its_own_T_K_and_its_own_tuned_eta(monkeypatch, tmp_path):
    # module docstring: the grid T in (3, 10, 20, 30) x K in (1, 3, 10), sigma 0.3, eta tuned per (T, K)
    tk = paper002.grid(False, False)
    assert tk == [(T, K) for T in (3, 10, 20, 30) for K in (1, 3, 10)]
    etas = {(T, K): round(0.01 * T + 0.001 * K, 3) for T, K in tk}  # all distinct: a cell given another's shows
    tables = paper002.evaluation_cells(tk, etas, False, SEEDS, {s: 0.7 for s in paper002.SIGMAS},
                                       {T: 0.5 for T in paper002.DIGITS_T})
    for c in tables["T x K grid (toy)"]:
        cfg = _cfg(paper002, c, monkeypatch, tmp_path)
        T, K = (int(x) for x in c.arm[1:].split("_K"))
        assert (cfg.method.T, cfg.method.K, cfg.method.sigma, cfg.method.eta) == (T, K, 0.3, etas[(T, K)]), c.arm
        assert cfg.data.name == "8gaussians"


def test_paper002_sigma_arms_train_their_sigma_at_T20_K3_with_their_own_tuned_eta(monkeypatch, tmp_path):
    # Table 6: sigma in (0.005, 0.05, 0.1, 0.5) at the reference T = 20, K = 3, each with the eta tuned at its own
    # sigma (Sec. 5: eta adjusted to "the total number of steps and noise variance in each experiment")
    tk = paper002.grid(False, False)
    etas = {(T, K): 0.1 if (T, K) != (20, 3) else 0.4 for T, K in tk}
    sigma_etas = {0.005: 0.11, 0.05: 0.22, 0.1: 0.33, 0.5: 0.44}
    sig = paper002.evaluation_cells(tk, etas, False, SEEDS, sigma_etas, {T: 0.5 for T in paper002.DIGITS_T})[
        "sigma ablation (toy, T20_K3)"]
    assert [c.arm for c in sig] == [f"sigma{s}" for s in (0.005, 0.05, 0.1, 0.5) for _ in SEEDS]
    for c in sig:
        cfg = _cfg(paper002, c, monkeypatch, tmp_path)
        sigma = float(c.arm[5:])
        assert (cfg.method.T, cfg.method.K, cfg.method.sigma, cfg.method.eta) == (20, 3, sigma, sigma_etas[sigma])


def test_paper002_digits_arms_train_500_iterations_at_K3_with_their_own_tuned_eta(monkeypatch, tmp_path):
    # module docstring: Table 4's row T in (3, 10, 20) at K = 3, DIGITS_STEPS = 500 iterations, eta tuned per T
    digits_etas = {3: 0.125, 10: 0.25, 20: 1.0}
    dig = paper002.evaluation_cells([(20, 3)], {(20, 3): 0.1}, False, SEEDS, {s: 0.1 for s in paper002.SIGMAS},
                                    digits_etas)["digits (K = 3)"]
    assert [c.arm for c in dig] == [f"digits_T{T}_K3" for T in (3, 10, 20) for _ in SEEDS]
    for c in dig:
        config, overrides, _ = _trains(paper002, c, monkeypatch, tmp_path)
        cfg = experiment_config(config, overrides, threads=1)  # (cell_fn adds the tuned method.eta)
        assert config == "paper002_digits" and (cfg.method.K, cfg.train.steps) == (3, 500)
        assert c.arm == f"digits_T{cfg.method.T}_K3" and cfg.method.eta == digits_etas[cfg.method.T]


def test_paper002_eta_is_tuned_with_its_own_seed_on_each_cells_T_K(monkeypatch):
    # App. A.1 / module docstring: 300-iteration trainings per candidate (0.1, 0.2, 0.4, 0.8), seed 100, which is
    # not an evaluation seed (a tuning run on seed 0 would select on the data the claim is judged on)
    assert paper002.TUNE_SEED == 100 and paper002.TUNE_SEED not in claims.SEEDS
    seen = []

    def fake(cfg, candidates, steps, *, seed=None, **kw):
        seen.append((cfg.method.T, cfg.method.K, cfg.method.sigma, list(candidates), steps, seed))
        return SimpleNamespace(eta=0.2, reached=True, gaps={0.2: 0.0})
    monkeypatch.setattr(eta_search, "tune_eta_by_training", fake)
    cells = paper002.tuning_cells([(3, 1), (20, 3)], False) + paper002.tuning_cells([(20, 3)], False, 0.05)
    assert [c.arm for c in cells] == ["tune_T3_K1", "tune_T20_K3", "tune_T20_K3_sigma0.05"]
    for c in cells:
        assert c.seed == 100
        assert c.fn(c.params, c.seed, Path("unused"))["eta"] == 0.2
    assert seen == [(3, 1, 0.3, [0.1, 0.2, 0.4, 0.8], 300, 100), (20, 3, 0.3, [0.1, 0.2, 0.4, 0.8], 300, 100),
                    (20, 3, 0.05, [0.1, 0.2, 0.4, 0.8], 300, 100)]
    # the digits row: one tuning per T on the digits config, factor-2 candidates around 0.5
    seen.clear()
    cells = paper002.digits_tuning_cells(False)
    assert [c.arm for c in cells] == ["tune_digits_T3_K3", "tune_digits_T10_K3", "tune_digits_T20_K3"]
    sigma = load_config("paper002_digits").method.sigma
    for c in cells:
        assert c.seed == 100 and c.params["config"] == "paper002_digits"
        c.fn(c.params, c.seed, Path("unused"))
    assert seen == [(T, 3, sigma, [0.125, 0.25, 0.5, 1.0], 300, 100) for T in (3, 10, 20)]


def test_paper002_the_claim_puts_T_x_K_60_against_the_rows_of_tables_4_and_5():
    # Tables 4-5: best at T x K = 60 (T = 20, K = 3) against T at K = 3 (Table 4) and K at T = 20 (Table 5): every
    # such cell of the grid, never a corner that lies on neither row (T3_K1, T30_K10)
    assert paper002.reference(False) == (20, 3)
    for full, others in ((False, ["T3_K3", "T10_K3", "T20_K1", "T20_K10", "T30_K3"]),
                         (True, ["T3_K3", "T6_K3", "T10_K3", "T20_K1", "T20_K5", "T20_K10", "T20_K30", "T30_K3",
                                 "T40_K3"])):
        got = [(c.a, c.b, c.metric, c.better, c.margin) for c in paper002.sub_claims(paper002.grid(False, full), False)]
        assert got == [("T20_K3", b, "sample_energy_distance", "lower", 0.005) for b in others]


# ----- eta_search --------------------------------------------------------------------------------------------------
class _FakeTrainer:
    """Records the config it was built with; an objective with one parameter; no EMA."""
    built: list = []

    def __init__(self, cfg, run_dir, data=None):
        self.cfg, self.data = cfg, data if data is not None else f"data built for eta {cfg.method.eta}"
        self.ema, self.objective = None, torch.nn.Linear(1, 1)
        _FakeTrainer.built.append((cfg.method.eta, cfg.train.steps, cfg.train.seed, data))

    def fit(self):
        pass


def test_the_eta_search_trains_each_candidate_for_the_given_steps_and_seed(monkeypatch):
    # App. A.1: one short training per candidate with method.eta = that candidate, `steps` iterations, train.seed =
    # `seed`; the gap of each model at its own eta; the smallest eta whose gap reaches 0 (here eta - 0.3: 0.4)
    _FakeTrainer.built = []
    monkeypatch.setattr(eta_search, "Trainer", _FakeTrainer)
    monkeypatch.setattr(eta_search, "positives", lambda data, n, g, dev: torch.zeros(n, 2))
    monkeypatch.setattr(eta_search, "t1_energy_gap", lambda obj, x, eta, n, g: eta - 0.3)
    cfg = experiment_config("paper002_8gaussians", [], threads=1)
    before = cfg.to_dict()
    res = eta_search.tune_eta_by_training(cfg, [0.8, 0.1, 0.4], 7, seed=5, n=10)
    assert res.eta == 0.4 and res.gaps == pytest.approx({0.1: -0.2, 0.4: 0.1, 0.8: 0.5})
    # sorted candidates; the first trainer builds the data, the later ones reuse it
    assert _FakeTrainer.built == [(0.1, 7, 5, None), (0.4, 7, 5, "data built for eta 0.1"),
                                  (0.8, 7, 5, "data built for eta 0.1")]
    assert cfg.to_dict() == before  # each training gets a copy; the caller's config is left alone


# ----- paper 003 -------------------------------------------------------------------------------------------------
def test_paper003_no_coop_is_cdrl_without_the_initializer_and_nothing_else(monkeypatch, tmp_path):
    # Table 10 "No cooperative training": everything else the same; every arm 5,000 iterations (--full: 8,000)
    for full, steps in ((False, 5000), (True, 8000)):
        cb = paper003.build_cells(False, (0,), full)["checkerboard"]
        cfg = {c.arm: _cfg(paper003, c, monkeypatch, tmp_path) for c in cb}
        assert set(cfg) == {"cdrl", "no_coop", "drl"}
        assert cfg["cdrl"].method.cooperative and not cfg["no_coop"].method.cooperative
        assert _without(cfg["cdrl"].to_dict(), "method.cooperative") == _without(cfg["no_coop"].to_dict(),
                                                                                "method.cooperative")
        assert {a: c.train.steps for a, c in cfg.items()} == {"cdrl": steps, "no_coop": steps, "drl": steps}


def test_paper003_drl_is_gao_et_als_recipe_on_the_same_data_and_network(monkeypatch, tmp_path):
    # module docstring: DRL's schedule, K = 30, independent pairs, no initializer, no Tweedie; same data, net, lr
    cb = {c.arm: c for c in paper003.build_cells(False, (0,))["checkerboard"]}
    drl, cdrl = (_cfg(paper003, cb[a], monkeypatch, tmp_path) for a in ("drl", "cdrl"))
    m = drl.method
    assert (m.name, m.schedule, m.n_steps, m.cooperative, m.denoise) == ("drl", "drl", 30, False, False)
    assert drl.to_dict()["data"] == cdrl.to_dict()["data"] and drl.to_dict()["model"] == cdrl.to_dict()["model"]
    assert drl.train.lr == cdrl.train.lr and drl.train.batch_size == cdrl.train.batch_size


class _Stop(Exception):
    """Raised by ``_configs_resolved``'s recorder: the cell stops once its config is known."""


def _configs_resolved(module, cells, monkeypatch, tmp_path) -> list:
    """The config each of ``cells`` resolves through ``module.experiment_config`` (the cell stops right after)."""
    seen = []

    def record(config, overrides, **kw):
        seen.append(experiment_config(config, overrides, **kw))
        raise _Stop
    monkeypatch.setattr(module, "experiment_config", record)
    for c in cells:
        with pytest.raises(_Stop):
            c.fn(c.params, c.seed, tmp_path)
    return seen


def test_paper003_each_digits_cell_trains_its_own_seed(monkeypatch, tmp_path):
    cfgs = _configs_resolved(paper003, paper003.build_cells(False, SEEDS)["digits"], monkeypatch, tmp_path)
    assert [c.train.seed for c in cfgs] == [0, 1, 2]


def test_paper003_each_K_pseudo_arm_reads_its_own_K_metrics():
    # Table 2: the pseudo-arm K<k> is the cdrl model sampled with K' = k steps per level
    metrics = {f"in_support_K{K}": K / 100 for K in paper003.KS}
    rec = {"arm": "cdrl", "step": 5, "diverged": None, "failed": None, "metrics": metrics}
    records = {("cdrl", 0): rec, ("drl", 0): {**rec, "arm": "drl", "metrics": {}}}  # another arm: left out
    arms = paper003.pseudo_arms(records, "cdrl", {f"K{K}": {"in_support_share": f"in_support_K{K}"}
                                                  for K in paper003.KS})
    assert {k: r["metrics"]["in_support_share"] for k, r in arms.items()} == {
        ("K15", 0): 0.15, ("K8", 0): 0.08, ("K5", 0): 0.05, ("K3", 0): 0.03}


def test_paper003_run_builds_the_K_pseudo_arms_from_each_Ks_own_metrics(monkeypatch, tmp_path):
    # run(): the Table 2 table must show K' = 3's share in row K3 (a scripted share K / 100 per K')
    cb = {f"in_support_K{K}": K / 100 for K in paper003.KS} | {f"sample_seconds_K{K}": 1.0 for K in paper003.KS}

    def fake_run_cells(out, cells, jobs=2):
        return {(c.arm, c.seed): {"arm": c.arm, "seed": c.seed, "step": 5, "diverged": None, "failed": None,
                                  "metrics": dict(cb) if c.arm != "digits" else {}} for c in cells}
    monkeypatch.setattr(claims, "run_cells", fake_run_cells)
    res = paper003.run(tmp_path, quick=False, seeds=(0,), jobs=1)
    table = res["tables"]["sampling steps K' (Table 2, cdrl models)"]
    assert {a: table[a]["in_support_share"]["mean"] for a in table} == {"K15": 0.15, "K8": 0.08, "K5": 0.05, "K3": 0.03}
    k3 = next(v for v in res["claims"] if v["text"].startswith("Table 2: K'=3"))
    assert (k3["a"], k3["b"], k3["diffs"]) == ("K15", "K3", [pytest.approx(0.12)])


# ----- paper 004 -------------------------------------------------------------------------------------------------
def test_paper004_stable_arms_share_one_setup_and_differ_only_in_the_scheme(monkeypatch, tmp_path):
    # module docstring: MALA at 0.574, L = 20 noise/persistent steps, 10 data steps, energy L2 0.01, lambda 25,
    # batch 256, 2,500 updates, no EMA; hybrid_lam100 is hybrid with lambda 100 and nothing else changed
    tables = paper004.build_cells(False, (0,))
    cfg = {c.arm: _cfg(paper004, c, monkeypatch, tmp_path) for c in tables["stable"] + tables["lambda sweep"]}
    assert list(cfg) == ["data", "noise", "persistent", "persistent_refresh", "hybrid", "hybrid_lam100"]
    for arm, c in cfg.items():
        m = c.method
        assert (m.sampler, m.target_accept, m.n_steps, m.n_steps_data, m.energy_l2) == ("mala", 0.574, 20, 10, 0.01)
        assert (c.train.steps, c.train.batch_size, c.train.ema, c.data.name) == (2500, 256, None, "rings")
    assert {a: c.method.name for a, c in cfg.items()} == {**{a: a for a in cfg}, "hybrid_lam100": "hybrid"}
    assert (cfg["hybrid"].method.lam, cfg["hybrid_lam100"].method.lam) == (25.0, 100.0)
    refresh = cfg["persistent_refresh"].method  # bank 60,000, 5 % refresh (module docstring)
    assert (refresh.buffer_size, refresh.refresh_prob) == (60000, 0.05)
    assert _without(cfg["hybrid"].to_dict(), "method.lam") == _without(cfg["hybrid_lam100"].to_dict(), "method.lam")


def test_paper004_raw_arms_are_the_papers_own_setup(monkeypatch, tmp_path):
    # Sec. 3 / App. A.4: unadjusted Langevin at T = 0.005; eps = 0.0005 / ||E|| (adaptive) for data and hybrid,
    # constant 0.05 for noise / persistent / refresh; L = 30 for both chains; no energy L2; 800 updates
    raw = paper004.build_cells(False, (0,))["raw"]
    for c in raw:
        cfg = _cfg(paper004, c, monkeypatch, tmp_path)
        m, scheme = cfg.method, c.arm[4:]
        assert m.name == scheme and m.sampler == "langevin" and m.temperature == 0.005
        assert (m.adaptive_step, m.adaptive_c, m.step_size) == (scheme in ("data", "hybrid"), 0.0005, 0.05), c.arm
        assert (m.n_steps, m.n_steps_data, m.energy_l2, cfg.train.steps) == (30, 30, 0.0, 800), c.arm


# ----- cells.py and runner.py --------------------------------------------------------------------------------------
def test_arms_that_share_a_name_under_two_datasets_get_their_own_directories(tmp_path):
    # "spiral/per_t" and "mixture/per_t" (paper 000): cells/<arm>/seed<k>, the arm's full name
    a, b = (claims.Cell(f"{ds}/per_t", 0, _scripted, {}) for ds in ("spiral", "mixture"))
    assert cells_mod.cell_dir(tmp_path, a) == tmp_path / "cells" / "spiral" / "per_t" / "seed0"
    assert cells_mod.cell_dir(tmp_path, a) != cells_mod.cell_dir(tmp_path, b)
    every = paper000.build_cells(False, SEEDS)
    assert len({cells_mod.cell_dir(tmp_path, c) for c in every}) == len(every) == 24


def _scripted(params: dict, seed: int, run_dir: Path) -> dict:
    """A cell function (never called here: only the cells' directories are asked for)."""
    return {"step": 1}


def test_train_cell_trains_the_cells_seed_and_keeps_the_measured_metrics(monkeypatch, tmp_path):
    # the harness's seed wins over any train.seed in the overrides; measure()'s metrics join evaluate()'s numbers
    seen = {}

    def fake(run_dir, cfg, **kw):
        seen["seed"] = cfg.train.seed
        return runner.Arm(SimpleNamespace(step=12), metrics={"density_kl": 0.5, "note": "text"}, train_seconds=3.0)
    monkeypatch.setattr(runner, "train_and_evaluate", fake)
    out = runner.train_cell(None, ["train.seed=9"], 4, tmp_path, measure=lambda arm: {"extra": 1.5})
    assert seen["seed"] == 4
    assert out == {"density_kl": 0.5, "extra": 1.5, "step": 12, "train_seconds": 3.0, "eval_seconds": 0.0}


# ----- leaderboard and data_defaults ------------------------------------------------------------------------------
def test_leaderboard_configs_are_the_papers_configs_for_that_dataset():
    # docs/leaderboard.md: a paper's config written for that very dataset where it ships one (paper 002's
    # checkerboard), else its toy config on vectors and its digits config on digits
    got = {ds: leaderboard.method_overrides("implicit_diffusion", ds, 20.0, False)[0] for ds in leaderboard.DATASETS}
    assert got == {"mixture": "paper002_8gaussians", "checkerboard": "paper002_checkerboard",
                   "rings": "paper002_8gaussians", "digits": "paper002_digits", "breast_cancer": "paper002_8gaussians"}


def test_leaderboard_option_1_and_drl_are_the_paper_experiments_arms():
    # per_t = Option 1 alone (CE weight 0, as paper 000's arm); drl = Gao et al.'s K = 30 (paper 003's arm)
    for ds in ("mixture", "digits"):
        cfg = experiment_config(*leaderboard.method_overrides("per_t", ds, 20.0, False), threads=1)
        assert (cfg.method.name, cfg.method.ce_weight) == ("per_t", 0.0), ds
    cfg = experiment_config(*leaderboard.method_overrides("drl", "checkerboard", 20.0, False), threads=1)
    assert (cfg.method.name, cfg.method.n_steps, cfg.method.schedule) == ("drl", 30, "drl")


@pytest.mark.parametrize("quick, full, budget", [(False, False, 20.0), (False, True, 120.0), (True, False, 1.0)])
def test_leaderboard_budget_per_cell_is_20_120_or_1_second(quick, full, budget):
    # BUDGET, BUDGET_FULL, QUICK_BUDGET (docs/leaderboard.md): every method cell the same train.time_budget
    grid = leaderboard.build_cells(quick=quick, full=full, budget=None, seeds=(0,))
    method_cells = [c for cs in grid.values() for c in cs if c.fn is leaderboard.cell_fn]
    assert method_cells and all(f"train.time_budget={budget}" in c.params["overrides"] for c in method_cells)


def test_leaderboard_baselines_are_scored_on_every_ood_set_of_their_dataset():
    grid = leaderboard.build_cells(quick=False, full=False, budget=None, seeds=(0,))
    for ds, cells in grid.items():
        assert all(c.params["ood"] == list(leaderboard.DATASETS[ds][1]) for c in cells), ds


def test_data_defaults_reference_rows_use_their_own_split(monkeypatch):
    # --data-seeds: every reference row again on each split (data.seed) of the table's rows
    grid = dd.build_cells(["wine"], ["default"], (0,), 20.0, False, data_seeds=(3, 4))
    refs = [c for cells in grid.values() for c in cells if c.fn is dd.reference_fn]
    cfgs = _configs_resolved(dd, refs, monkeypatch, Path("unused"))
    assert [c.data.seed for c in cfgs] == [3] * 4 + [4] * 4


def test_data_defaults_heldout_ed7_is_the_mean_over_the_draws(monkeypatch, tmp_path):
    # module docstring: heldout_ed7 = the mean over DRAWS draws (one draw is a noisy reading)
    draws = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    monkeypatch.setattr(dd, "heldout_draws", lambda obj, data, n, k, seed: {
        "sample_energy_distance_heldout_mean": sum(draws) / 7, "sample_energy_distance_heldout_draws": draws})
    monkeypatch.setattr(leaderboard, "ood_aurocs", lambda obj, data, names, seed: {"ood_auroc_other_class": 0.9})
    arm = SimpleNamespace(trainer=SimpleNamespace(objective=torch.nn.Linear(1, 1), data=None,
                                                  fit_stats={"updates": 9}))
    monkeypatch.setattr(dd, "train_cell", lambda config, sets, seed, run_dir, measure: {**measure(arm), "step": 5})
    (cell,) = dd.build_cells(["wine"], ["default"], (0,), 20.0, False)["wine"][:1]
    out = cell.fn(cell.params, 0, tmp_path)
    assert out["heldout_ed7"] == pytest.approx(0.4) and out["updates"] == 9 and out["selected_step"] == 5
