"""Mutation round 66 (docs/testing.md "A fifteenth mutation round"): known answers for the paper experiments'
arms, claims and settings (``experiments/paper00[0-4].py``), the leaderboard's arm and scoring rules,
``compare_checks`` and ``plots``. Each test kills a planted one-line bug that the earlier tests let through (the
mutants of data_defaults, host_speed and samplers/progress were all caught already). Nothing here trains; the expected
values come from the papers' pages in docs/, the module docstrings and answers worked out by hand (each with its
source in a comment).
"""
from __future__ import annotations

import pytest

from ebmlab.experiments import paper000
from ebmlab.experiments.runner import experiment_config


def _arm_cfg(module_arms, arm: str, overrides: list[str]):
    config, sets = module_arms[arm]
    return experiment_config(config, list(sets) + list(overrides), threads=1)


# ----- paper 000 -------------------------------------------------------------------------------------------------
def test_paper000_cd_plain_leaves_the_ce_weight_unset_so_its_run_is_not_refused():
    # docs/paper000.md: for cd_plain "the multi-level keys (ce_weight, ...) are refused for it (from the CD+CE
    # configs: --set method.ce_weight=null)"; the cdce config sets ce_weight 1.0, so the arm must unset it.
    # kills: p0-cdplain-drop-ce-null (ARMS["cd_plain"] without "method.ce_weight=null")
    for c in paper000.build_cells(False, (0,)):
        if c.arm.endswith("/cd_plain"):
            cfg = _arm_cfg(paper000.ARMS, "cd_plain", c.params["overrides"])
            assert cfg.method.name == "cd_plain"
            assert cfg.method.ce_weight is None, c.arm
            assert cfg.method.inert_keys() == [], c.arm  # what check_new_run refuses a new run on


def test_paper000_stage_figures_target_line_is_the_60_percent_the_configs_fit_to():
    # App. C.1 / docs/paper000.md: MALA step sizes fitted to 60 % acceptance; stage_accept.png's dashed line is
    # TARGET_ACCEPT, "the configs' method.target_accept" (module comment). kills: p0-target-accept (0.6 -> 0.574)
    assert paper000.TARGET_ACCEPT == 0.6
    for arm in ("per_t", "cd_ce", "joint_cd"):
        assert _arm_cfg(paper000.ARMS, arm, []).method.target_accept == 0.6, arm


# ----- paper 002 -------------------------------------------------------------------------------------------------
def test_paper002_quick_sigma_ablation_keeps_the_last_sigma():
    # paper002.sigmas: "The sigma ablation's values (quick: the last one)" of Table 6's SIGMAS (0.005, 0.05, 0.1, 0.5)
    # kills: p2-sigmas-quick (SIGMAS[-1:] -> SIGMAS[:1])
    from ebmlab.experiments import paper002
    assert paper002.sigmas(True) == (0.5,)
    assert paper002.sigmas(False) == (0.005, 0.05, 0.1, 0.5)


# ----- paper 003 -------------------------------------------------------------------------------------------------
def test_paper003_guidance_claim_compares_w3_with_unguided_w0():
    # docs/paper003.md / module docstring: "guidance: class accuracy +0.06" of w = 3 over w = 0 (no guidance, Sec. 3.5)
    # kills: p3-guide-w0 (baseline w0 -> w1)
    from ebmlab.experiments import paper003
    (c,) = [c for c in paper003.SUB_CLAIMS if c.metric == "class_accuracy"]
    assert (c.a, c.b, c.better, c.margin) == ("w3", "w0", "higher", 0.06)


def test_paper003_digits_k8_relative_fd_loss_is_fd8_over_fd15_minus_one(monkeypatch):
    # module docstring: "K' = 8's digits FD at most 25 % above K' = 15's": rel loss = FD(K'=8) / FD(K'=15) - 1;
    # FD 100 at K' = 15 and 120 at K' = 8 -> 0.2 (by hand). kills: p3-relloss (FD15 / FD8 - 1 = -0.1667)
    import torch

    from ebmlab.applications import guidance
    from ebmlab.experiments import paper003
    from ebmlab.metrics import digits
    fd = {15: 100.0, 8: 120.0, 5: 150.0, 3: 300.0}
    monkeypatch.setattr(guidance, "guided_sample", lambda obj, labels, w, generator=None, n_steps=None:
                        torch.full((len(labels), 1, 8, 8), float(n_steps) / 100))
    monkeypatch.setattr(digits, "digits_metrics", lambda x, generator=None: {"digits_fd": fd[round(float(x[0, 0, 0, 0]) * 100)]})
    out = paper003.digits_steps_metrics(object(), per_class=1)
    assert out["digits_fd_K8"] == 120.0 and out["digits_fd_K15"] == 100.0
    assert out["digits_fd_K8_rel_loss"] == pytest.approx(0.2)


# ----- paper 004 -------------------------------------------------------------------------------------------------
def test_paper004_sub_claims_are_the_nine_of_docs_paper004_each_with_its_arms_metric_direction_and_margin():
    # docs/paper004.md's sub-claim table (Sec. 4.1, Tables 1-2) and the module docstring's margins: density KL 0.05,
    # precision 0.05, AUROC 0.02, mode-mass error 0.10; the first-named arm is the one claimed better.
    # kills: p4-claim2-swap ("noise", "data" -> "data", "noise"), p4-persistent (persistent -> persistent_refresh)
    from ebmlab.experiments import paper004
    want = [("data", "noise", "density_kl", "lower", 0.05),
            ("noise", "data", "sample_precision", "higher", 0.05),   # data-CD generates WORSE than noise-init
            ("hybrid", "noise", "density_kl", "lower", 0.05),
            ("hybrid", "noise", "density_mode_mass_error", "lower", 0.10),
            ("hybrid", "data", "sample_precision", "higher", 0.05),
            ("hybrid", "noise", "long_run_precision", "higher", 0.05),
            ("hybrid", "noise", "mh_long_run_precision", "higher", 0.05),
            ("hybrid", "persistent", "sample_precision", "higher", 0.05),
            ("hybrid_lam100", "hybrid", "ood_auroc", "higher", 0.02)]
    assert [(c.a, c.b, c.metric, c.better, c.margin) for c in paper004.SUB_CLAIMS] == want


def test_paper004_ood_set_is_the_fresh_draws_scaled_by_1_25_in_x1_x2_only():
    # module docstring: ood_auroc = fresh exact draws vs other fresh draws "scaled by 1.25 in (x1, x2)", scored by -E.
    # In-rows (1, 1, 7); the energy is 0 exactly at (1.25, 1.25, 7) (the scaled row) and 1 elsewhere, so every OOD
    # point scores above every in-point: AUROC = 0 by hand (a 1.5 scale, or scaling x3 too, gives ties: 0.5).
    # kills: p4-ood-scale (1.25 -> 1.5)
    import torch
    from types import SimpleNamespace

    from ebmlab.experiments import paper004

    class Obj(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def score(self, x):
            hit = (x - torch.tensor([1.25, 1.25, 7.0])).abs().sum(1) < 1e-9
            return torch.where(hit, 0.0, 1.0)

    ident = SimpleNamespace(to_model=lambda x: x, to_data=lambda x: x)
    data = SimpleNamespace(fresh=lambda n, g: torch.tensor([[1.0, 1.0, 7.0]]).repeat(n, 1), transform=ident)
    assert paper004.ood_auroc(Obj(), data, 4, torch.Generator()) == 0.0


def test_paper004_metropolis_long_run_counts_accepted_moves_capped_at_five_times_the_steps(monkeypatch):
    # module docstring / metropolis_long_run: "steps *accepted* MALA moves ... rejected proposals do not count",
    # "proposals capped at 5 x steps", step rule paper 004's (Sec. 4.2.5). kills: p4-mh-count (accepted -> proposed)
    import torch
    from types import SimpleNamespace

    from ebmlab.experiments import paper004
    seen = {}

    def chain(kernel, energy, x0, steps, *a, **kw):
        seen.update(kw, steps=steps, kernel=kernel)
        return x0, {}
    monkeypatch.setattr(paper004, "run_chain", chain)
    cfg = SimpleNamespace(adapt_rate=0.05, noise_scale=1.0, temperature=1.0)
    obj = SimpleNamespace(ctrl_noise=None, sampling_step_size=lambda: 0.01, cfg=cfg, energy=None,
                          prior=lambda n, g: torch.zeros(n, 2))
    paper004.metropolis_long_run(obj, 3, 40, None)
    assert seen["count"] == "accepted" and seen["steps"] == 40 and seen["max_proposals"] == 200
    assert seen["kernel"] is paper004.mala and seen["controller"].rule == "paper004"


# ----- leaderboard -----------------------------------------------------------------------------------------------
def test_leaderboard_default_row_gets_the_user_data_defaults_on_a_table_only():
    # leaderboard docstring / docs/leaderboard.md: ebmlab_default is "the library's own defaults (...; on a table also
    # the user-data defaults, config.USER_DATA_DEFAULTS)": on breast_cancer whitened rows, jitter 0.3, a tenth held
    # out for validation, the GMM base; on a toy (mixture) none of them. kills: lb-userdata-toy ("table" -> "toy")
    from ebmlab.experiments import leaderboard as lb
    config, sets = lb.method_overrides("ebmlab_default", "breast_cancer", 20.0, False)
    cfg = experiment_config(config, sets, threads=1)
    assert (cfg.data.whiten, cfg.data.jitter, cfg.data.val_fraction, cfg.model.base) == (True, 0.3, 0.1, "gmm")
    config, sets = lb.method_overrides("ebmlab_default", "mixture", 20.0, False)
    assert not any(s.startswith(("data.whiten", "data.jitter", "data.val_fraction", "model.base=")) for s in sets)


def test_leaderboard_quick_budget_wins_over_full():
    # budget_for's order "--budget, else QUICK_BUDGET / BUDGET_FULL / BUDGET" and the experiments' rule that --quick
    # ignores --full (claims.quick_or_full): --quick --full is the 1 s smoke run, not 120 s per cell.
    # kills: lb-budget-order (BUDGET_FULL checked before QUICK_BUDGET)
    from ebmlab.experiments import leaderboard as lb
    assert lb.budget_for(True, True, None) == 1.0
    assert lb.budget_for(False, True, None) == 120.0 and lb.budget_for(False, False, None) == 20.0
    assert lb.budget_for(True, True, 7) == 7.0


def test_leaderboard_ood_auroc_scores_by_minus_energy(monkeypatch):
    # leaderboard.ood_aurocs: "AUROC of -energy, held-out data vs each OOD set (higher = better separated)": held-out
    # rows of energy 0 against OOD rows of energy 5 are perfectly separated, AUROC 1 (by hand).
    # kills: lb-auroc-sign (auroc(e_in, e_out) gives 0)
    import torch
    from types import SimpleNamespace

    from ebmlab.experiments import leaderboard as lb
    monkeypatch.setattr(lb.image_eval, "energies", lambda obj, x: x[:, 0].clone())
    monkeypatch.setattr(lb, "ood_inputs", lambda name, data, g: torch.full((4, 2), 5.0))
    data = SimpleNamespace(test=torch.zeros(6, 2))
    assert lb.ood_aurocs(None, data, ("shifted",), 0) == {"ood_auroc_shifted": 1.0}


# ----- compare_checks --------------------------------------------------------------------------------------------
def test_compare_refuses_a_single_run():
    # compare_checks.check_distinct: "Refuse fewer than two runs" (README "Compare runs": two or more runs).
    # kills: cc-two (len(runs) < 1)
    from ebmlab.errors import ConfigError
    from ebmlab.experiments.compare_checks import check_distinct
    with pytest.raises(ConfigError, match="two or more"):
        check_distinct(["runs/a"])
    check_distinct(["runs/a", "runs/b"])  # two different runs pass


# ----- plots -----------------------------------------------------------------------------------------------------
def test_plots_aspect_is_equal_up_to_and_including_2_to_1():
    # plots._aspect: "equal" "unless the box is more than 2:1": a 1 x 2 or 2 x 1 box is still equal, 1 x 2.01 is auto.
    # kills: pl-aspect (0.5 < r < 2.0)
    from ebmlab import plots
    assert plots._aspect(0.0, 1.0, 0.0, 2.0) == "equal"
    assert plots._aspect(0.0, 2.0, 0.0, 1.0) == "equal"
    assert plots._aspect(0.0, 1.0, 0.0, 2.01) == "auto"


def test_image_grid_puts_ceil_sqrt_n_images_per_row(monkeypatch, tmp_path):
    # plots.image_grid: nrow = ceil(sqrt(N)) images per row by default; 5 images of 2 x 2 pixels -> 3 per row, 2 rows,
    # with a 1-pixel border: canvas 2 x 3 + 1 = 7 rows by 3 x 3 + 1 = 10 columns (by hand); image 4 (0-based) sits in
    # row 1, column 1. kills: pl-nrow (floor(sqrt 5) = 2 per row: 10 x 7)
    import torch

    from ebmlab import plots
    seen = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: seen.setdefault("img", fig.axes[0].images[0].get_array()))
    x = -torch.ones(5, 1, 2, 2)
    x[4] = 1.0
    plots.image_grid(x, tmp_path / "g.png")
    img = seen["img"]
    assert img.shape[:2] == (7, 10)
    assert float(img[4, 4]) == 1.0 and float(img[1, 1]) == 0.0  # image 4 white (1 -> 1), image 0 black (-1 -> 0)


def test_paper003_in_support_claim_bar_is_0_85():
    # paper003 docstring: "The fixed bars (share 0.85, -0.05, +25 %)": CDRL's samples lie in the squares, share
    # above 0.85, decided with margin 0. kills: p3-support-bar (0.85 -> 0.8)
    from ebmlab.experiments import paper003
    bars = [(c.a, c.b, c.metric, c.better, c.margin) for c in paper003.SUB_CLAIMS if not isinstance(c.b, str)]
    assert bars == [("cdrl", 0.85, "sample_in_support_share", "higher", 0.0),
                    ("cdrl", -0.05, "in_support_K8_minus_K15", "higher", 0.0),
                    ("digits_K8", 0.25, "digits_fd_K8_rel_loss", "lower", 0.0)]


def test_leaderboard_groups_and_ranked_metrics_per_dataset():
    # leaderboard.group: "image", "table" (no exact density: breast_cancer) or "toy"; docs/leaderboard.md: a table is
    # ranked on the held-out energy distance (no density KL), a toy on density_kl first, digits on digits_fd.
    # kills: lb-group-swap (toy and table swapped)
    from ebmlab.experiments import leaderboard as lb
    assert [lb.group(d) for d in ("mixture", "checkerboard", "rings", "digits", "breast_cancer")] == \
        ["toy", "toy", "toy", "image", "table"]
    assert lb.metrics_of("breast_cancer") == ["sample_energy_distance_heldout", "sample_energy_distance",
                                              "ood_auroc_other_class", "ood_auroc_scaled"]
    assert lb.metrics_of("mixture")[0] == "density_kl" and lb.metrics_of("digits")[0] == "digits_fd"
