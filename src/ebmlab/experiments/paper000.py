"""``ebmlab experiment paper000``: Option 1 vs CD+CE vs JointCD with the same model and annealed sampler
(paper 000, Sec. 3.1, 3.3-3.5, App. C.1, Fig. 5), over seeds, at CPU scale.

The claim (Sec. 3.1): "substantially improved results are obtained when using the losses of Option 2
and/or 3 in conjunction with or instead of the standard loss on p(z|t) (Option 1)". Arms, each with
the same T-vector head, trunk, data, budget (``STEPS`` updates), MALA chains (K = 3, 60 % acceptance)
and generation by simulated annealing (Alg. 3, each stage's step fitted to its own target), no EMA
(the paper has none), through the claim harness (``experiments/claims.py``: seeds ``claims.SEEDS``,
one-thread cells two at a time, the same evaluation step, paired verdicts with margins):

- ``per_t``: Option 1, the per-t CD loss on p(z | t) alone (``method.name: per_t``);
- ``cd_ce``: Option 2, Alg. 1 (CD on the marginal + CE); ``joint_cd``: Option 3, Alg. 2;
- ``cd_plain``: reference row, vanilla CD with a scalar energy on the same trunk (not part of the claim).

Datasets: the shifted spiral of App. C.1 (shipped configs ``paper000_spiral_*``), and ``mixture``, a
2-D mixture of well-separated Gaussians with unequal weights (``data/toy.py``), where stitching the
levels together decides whether the modes get their weights: its metric is ``sample_mode_mass_error``.

Columns: ``sample_precision`` / ``sample_energy_distance`` (Alg. 3 samples vs fresh data; precision =
fraction above the 1 % quantile of the data's exact log-density), ``sample_precision_soft`` (Alg. 4),
``sample_mode_mass_error`` (largest relative error of the samples' mode masses; ``density_mode_mass_error``
the same for the model density on the grid) and ``sample_in_support_share`` where the toy defines them, ``density_kl`` (the model's
log p(x) = log p(z, t = T-1) on a grid vs the exact density), ``accept_last10`` (MALA acceptance over
the last 10 % of Alg. 3's stages; target 0.6).

Sub-claims, margins fixed before any run: precision margin 0.05, mode-mass-error margin 0.10.
Figures (seed ``seeds[0]``): ``annealing_<dataset>_<arm>.png`` (Fig. 5), ``stage_accept.png``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ebmlab import plots
from ebmlab.experiments import claims
from ebmlab.experiments.claims import Cell, Claim
from ebmlab.experiments.runner import train_cell
from ebmlab.metrics.density import make_grid, sample_precision
from ebmlab.metrics.distances import energy_distance

TARGET_ACCEPT = 0.6  # App. C.1: the acceptance the per-stage step sizes are fitted to (the configs' method.target_accept)
STEPS = 3000
ARMS = {"per_t": ("paper000_spiral_cdce", ["method.name=per_t", "method.ce_weight=0"]),
        "cd_ce": ("paper000_spiral_cdce", []),
        "joint_cd": ("paper000_spiral_jointcd", []),
        "cd_plain": ("paper000_spiral_cdce", ["method.name=cd_plain", "method.ce_weight=null"])}  # no CE: unset
DATASETS = {"spiral": [], "mixture": ["data.name=mixture"]}  # both in App. C.1's coordinates (standardize false)
COMMON = [f"train.steps={STEPS}", "train.ema=null", "train.checkpoint_every=100000"]
QUICK_STEPS = 20
QUICK = [f"train.steps={QUICK_STEPS}", "data.n_train=2000", "eval.n_samples=200", "eval.grid_size=40", "method.T=16",
         "method.sample_levels=8", "method.soft_stages=8", "model.width=32", "model.depth=1", "train.batch_size=64"]
METRICS = ["sample_precision", "sample_precision_soft", "sample_mode_mass_error", "density_mode_mass_error",
           "sample_in_support_share", "sample_energy_distance", "density_kl", "accept_last10"]
PRECISION_MARGIN, MODE_MARGIN = 0.05, 0.10


def cell_fn(params: dict, seed: int, run_dir: Path) -> dict:
    """One (dataset, arm, seed): train, evaluate (Alg. 3 samples), add Alg. 4 and the stage diagnostics."""
    config, sets = ARMS[params["arm"]]
    return train_cell(config, sets + params["overrides"], seed, run_dir, measure=_generation_metrics)


def _generation_metrics(arm) -> dict:
    """Soft annealing (Alg. 4) precision and energy distance vs fresh data, the acceptance of the last
    10 % of stages of Alg. 3 and 4; the Fig. 5 panel and the stage arrays (every seed draws its own, so which seed
    comes first in ``--seeds`` is not part of a cell's key: ``run`` shows the first seed's)."""
    obj, data, cfg, run_dir = arm.trainer.objective, arm.trainer.data, arm.trainer.cfg, arm.trainer.run_dir
    with torch.no_grad():
        g = torch.Generator().manual_seed(cfg.train.seed + 21)
        soft = obj.generate(cfg.eval.n_samples, algorithm="soft", generator=g)
        x = data.transform.to_data(soft.x.cpu())
        g_cpu = torch.Generator().manual_seed(cfg.train.seed + 11)  # the same reference draw as evaluate
        ref, ref2 = data.fresh(cfg.eval.n_samples, g_cpu), data.fresh(cfg.eval.n_samples, g_cpu)
        out = {"sample_energy_distance_soft": energy_distance(x, ref),
               "sample_precision_soft": sample_precision(data.dist.log_prob(x), data.dist.log_prob(ref2))}
        if obj.plain:
            return out
        alg3 = obj.generate(cfg.eval.n_samples, algorithm="annealing", generator=g).info
        out.update(accept_last10=float(alg3["accept_rate_last10"]),
                   accept_last10_soft=float(soft.info["accept_rate_last10"]))
        np.savez(Path(run_dir) / "stages.npz", level=alg3["level"].numpy(),
                 accept=alg3["stage_accept_rate"].numpy(), mu=(2 * alg3["stage_step_size"]).sqrt().numpy())
    annealing_figure(obj, data, Path(run_dir) / "annealing.png")
    return out


def build_cells(quick: bool, seeds) -> list[Cell]:
    """Every (dataset, arm, seed); arms are named ``<dataset>/<arm>``."""
    return [Cell(f"{ds}/{arm}", seed, cell_fn, {"arm": arm, "overrides": COMMON + sets + (QUICK if quick else [])})
            for ds, sets in DATASETS.items() for arm in ARMS for seed in seeds]


def sub_claims() -> list[Claim]:
    """Option 2 (cd_ce) and Option 3 (joint_cd) each against Option 1 (per_t), per dataset."""
    out = []
    for joint in ("cd_ce", "joint_cd"):
        out.append(Claim(f"spiral: {joint} generates better than Option 1", f"spiral/{joint}", "spiral/per_t",
                         "sample_precision", "higher", PRECISION_MARGIN))
        out.append(Claim(f"mixture: {joint} gets the mode weights better than Option 1", f"mixture/{joint}",
                         "mixture/per_t", "sample_mode_mass_error", "lower", MODE_MARGIN))
        out.append(Claim(f"mixture: {joint} generates better than Option 1", f"mixture/{joint}", "mixture/per_t",
                         "sample_precision", "higher", PRECISION_MARGIN))
    return out


def run(out: Path, quick: bool = False, seeds=claims.SEEDS, jobs: int = 2) -> dict:
    """Paper 000's experiment into ``out``; returns the results dict (``claims.write_claim_results``)."""
    t0 = time.time()
    cells = build_cells(quick, seeds)
    records = claims.run_cells(out, cells, jobs=jobs)
    claims.check_same_step(records)
    tables = {ds: claims.summary_table(records, [f"{ds}/{a}" for a in ARMS], METRICS, seeds) for ds in DATASETS}
    verdicts = [claims.decide(c, {**tables["spiral"], **tables["mixture"]}) for c in sub_claims()]
    _figures(out, records, seeds[0])
    claim = ("the joint losses (Option 2: CD+CE, Option 3: JointCD) give substantially better results than the "
             "standard per-t loss on p(z | t) (Option 1) with the same model and annealed sampler (paper 000 Sec. 3.1)")
    notes = (f"{claims.quick_note(quick, f'{QUICK_STEPS} updates per arm, tiny model')}Budget: {STEPS} updates per arm, "
             "width-128 residual MLP (paper: 256), T = 256, K = 3, batch 256, no EMA; the paper trains ~78k steps on a "
             "GPU. cd_plain is a reference row (scalar energy, MALA from the prior for as many steps as annealing). "
             "Figures: annealing_<dataset>_<arm>.png (Fig. 5), stage_accept.png.\n")
    return claims.write_claim_results(out, "000", claim, tables, verdicts, seeds, {t: METRICS for t in tables}, notes,
                                      extra={"wall_seconds": round(time.time() - t0, 1), "quick": quick})


def _figures(out: Path, records: dict, seed: int) -> None:
    """Copy each arm's Fig. 5 panel to ``out`` and draw the stage acceptance of Alg. 3 per arm."""
    import shutil
    acc = {}
    for (arm, s), r in records.items():
        d = Path(out) / "cells" / arm / f"seed{s}"
        if s != seed or r["diverged"] or r["failed"]:
            continue
        if (d / "annealing.png").exists():
            shutil.copy(d / "annealing.png", Path(out) / f"annealing_{arm.replace('/', '_')}.png")
        if (d / "stages.npz").exists():
            with np.load(d / "stages.npz", allow_pickle=False) as z:
                acc[arm] = (z["level"].tolist(), z["accept"].tolist())
    if acc:
        plots.line_plot(acc, Path(out) / "stage_accept.png", "annealing level t", "MALA acceptance (fraction)",
                        "Alg. 3: acceptance per stage", hline=(TARGET_ACCEPT, f"target {TARGET_ACCEPT:g}"))


# ----- figures -----------------------------------------------------------------------------------
def annealing_figure(obj, data, path: Path, n: int = 1000, columns: int = 5) -> None:
    """Fig. 5: rows = simulated annealing (Alg. 3) and soft annealing (Alg. 4); columns = stages;
    each panel shows the density the chain targets at that stage and the current samples."""
    def spread(count: int) -> list[int]:  # ``columns`` stages from the first to the last of ``count``
        return sorted({int(round(i * (count - 1) / (columns - 1))) for i in range(columns)})
    # Alg. 4 may run another number of stages (``soft_stages``) than Alg. 3 visits levels
    kept = {"annealing": spread(len(obj.annealing_levels())), "soft": spread(obj.n_stages("soft"))}
    stages = max(kept.values(), key=len)
    g = torch.Generator().manual_seed(0)
    x0 = obj.prior(n, g)
    d_a = obj.generate(n, algorithm="annealing", generator=g, x0=x0, keep=kept["annealing"]).info
    d_s = obj.generate(n, algorithm="soft", generator=g, x0=x0, keep=kept["soft"]).info
    ext = float(data.transform.to_data(data.test)[:, :2].abs().max()) * 1.15  # spiral: ~0.9 (App. C.1 units)
    grid, xs, ys = make_grid(ext, 100)
    fig = plots.new_figure((2.3 * (len(stages) + 1), 5.0))
    axes = fig.subplots(2, len(stages) + 1, sharex=True, sharey=True)
    for row, (diag, kind) in enumerate([(d_a, "annealing"), (d_s, "soft")]):
        for col, s in enumerate(kept[kind]):
            lp = _stage_log_density(obj, data.transform.to_model(grid), kind, diag, s)
            ax = axes[row, col]
            ax.imshow(lp.view(100, 100).exp().numpy(), origin="lower", extent=(-ext, ext, -ext, ext), cmap="viridis")
            pts = data.transform.to_data(diag["snapshots"][s])
            ax.scatter(pts[:, 0], pts[:, 1], s=0.5, c="w", alpha=0.5)
            ax.set_xlim(-ext, ext), ax.set_ylim(-ext, ext)  # stray samples must not rescale the panel
            ax.set_title(f"{kind} t={int(diag['level'][s])}", fontsize=8), ax.tick_params(labelsize=6)
        true = data.dist.log_prob(grid)
        axes[row, -1].imshow(torch.softmax(true, 0).view(100, 100).numpy(), origin="lower",
                             extent=(-ext, ext, -ext, ext), cmap="viridis")
        axes[row, -1].set_title("ground truth", fontsize=8), axes[row, -1].tick_params(labelsize=6)
        axes[row, 0].set_ylabel(f"{kind}: x2 (data units)", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("x1 (data units)", fontsize=7)
    fig.suptitle("targeted density per stage (colour, each panel on its own scale) and the chains (white)",
                 fontsize=9)
    plots.save_figure(fig, path)


@torch.no_grad()
def _stage_log_density(obj, grid: torch.Tensor, kind: str, diag: dict, stage: int) -> torch.Tensor:
    """(G,) grid-normalised log-density targeted at one stage; ``grid`` in model coordinates (the
    spiral configs keep standardize false, so the density is also the data-coordinate one)."""
    from ebmlab.schedules import soft_annealing_log_weights
    z = grid.to(obj.alpha.device)
    level = int(diag["level"][stage])
    if obj.plain:
        lp = -obj.energy(z)
    elif kind == "annealing":
        lp = -obj.energy(z, t=torch.full((len(z),), level, dtype=torch.long, device=z.device))
    else:
        w = soft_annealing_log_weights(stage, len(diag["level"]), obj.cfg.T).to(z.device)
        lp = -obj.energy(z, log_weights=w)
    return torch.log_softmax(lp.cpu().double(), 0).float()
