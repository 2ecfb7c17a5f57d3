"""``ebmlab experiment paper000``: plain CD vs CD+CE vs JointCD on the 2-D shifted spiral (paper 000,
Sec. 4.1, App. C.1, Fig. 5), at CPU scale.

Three models with the same trunk, data, seed, sampler and number of optimiser steps
(shipped configs ``paper000_spiral_cdce`` and ``paper000_spiral_jointcd``):

- ``cd``: vanilla CD on the data distribution alone (``method.name: cd_plain``: no series, scalar
  energy, K MALA steps from the data); generation = MALA from p_n for as many steps as annealing;
- ``cd_ce``: Alg. 1; ``joint_cd``: Alg. 2; generation = simulated annealing (Alg. 3).

Reference rows ``data_floor`` (data vs data), ``noise`` (the N(0, sigma_n^2 I) starts vs data) and
``uniform_density`` (density_kl of a uniform density on the grid). Columns: ``density_kl``
(KL(true || model) on a grid, both grid-normalised; the reference is the spiral's exact density,
``data/toy.py``), ``sample_energy_distance`` / ``sample_precision`` (Alg. 3 samples vs fresh data),
``sample_energy_distance_soft`` / ``sample_precision_soft`` (Alg. 4, soft annealing; ``cd`` has no
series, so its soft columns are a second draw of its MALA sampler); precision = fraction of samples
above the 1 % quantile of the data's exact log-density; ``accept_rate`` (training chains, mean of
the last 100 steps); ``accept_last10`` / ``accept_last10_soft`` (MALA acceptance over the last 10 %
of the annealing stages, where each stage's step is fitted to its own target; target 0.6).

Figures: ``annealing_cd_ce.png``, ``annealing_joint_cd.png`` (Fig. 5: samples through simulated
and soft annealing over the model's density at that stage, and the ground truth),
``stage_accept.png`` and ``stage_steps.png`` (acceptance and step size of each stage of Alg. 3).

Claim checked: the joint losses beat plain CD on the spiral's density (``density_kl`` of cd_ce or
joint_cd below cd's) and both annealing variants generate spiral samples from noise (energy distance
below a quarter of the noise row's, for cd_ce and joint_cd). One seed: small differences are noise.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ebmlab import plots
from ebmlab.experiments.runner import experiment_config, train_and_evaluate, write_results
from ebmlab.metrics.density import make_grid, sample_precision
from ebmlab.metrics.distances import energy_distance

TARGET_ACCEPT = 0.6  # App. C.1: the acceptance the per-stage step sizes are fitted to (the configs' method.target_accept)
RUNS = {"cd": ("paper000_spiral_cdce", ["method.name=cd_plain"]),
        "cd_ce": ("paper000_spiral_cdce", []),
        "joint_cd": ("paper000_spiral_jointcd", [])}
QUICK = ["train.steps=20", "data.n_train=2000", "eval.n_samples=200", "eval.grid_size=40", "method.T=16",
         "method.sample_levels=8", "method.soft_stages=8", "model.width=32", "model.depth=1", "train.batch_size=64"]
COLUMNS = ["density_kl", "sample_energy_distance", "sample_energy_distance_soft", "sample_precision",
           "sample_precision_soft", "accept_rate", "accept_last10", "accept_last10_soft", "train_seconds"]


def train_one(out: Path, name: str, quick: bool, per_stage: dict) -> tuple[dict, dict]:
    """Train one method, evaluate it with EMA weights; returns (row, evaluate()'s metrics). Writes the
    Fig. 5 panel and fills ``per_stage`` for the joint methods."""
    config, sets = RUNS[name]
    run_dir = out / "runs" / name
    arm = train_and_evaluate(run_dir, experiment_config(config, sets + (QUICK if quick else [])))
    trainer, m = arm.trainer, arm.metrics
    obj, cfg = trainer.objective, trainer.cfg  # EMA weights
    row = {"name": name, "train_seconds": arm.train_seconds}
    logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    row.update({k: m[k] for k in ("density_kl", "sample_energy_distance", "sample_precision") if k in m})
    row.update(_generation_metrics(obj, trainer.data, cfg, per_stage, name))
    if not obj.plain:
        annealing_figure(obj, trainer.data, out / f"annealing_{name}.png")
    row.update(_chain_metrics(logs, trainer.step))
    return row, m


def _generation_metrics(obj, data, cfg, per_stage: dict, name: str) -> dict:
    """Soft annealing (Alg. 4) energy distance and precision vs fresh data, and the acceptance of the
    last 10 % of stages of Alg. 3 and 4; fills ``per_stage[name]`` with Alg. 3's stage diagnostics."""
    g = torch.Generator().manual_seed(cfg.train.seed + 21)
    soft = obj.generate(cfg.eval.n_samples, algorithm="soft", generator=g)
    x = data.transform.to_data(soft.x.cpu())
    g_cpu = torch.Generator().manual_seed(cfg.train.seed + 11)  # the same reference draw as evaluate
    ref, ref2 = data.fresh(cfg.eval.n_samples, g_cpu), data.fresh(cfg.eval.n_samples, g_cpu)
    out = {"sample_energy_distance_soft": energy_distance(x, ref),
           "sample_precision_soft": sample_precision(data.dist.log_prob(x), data.dist.log_prob(ref2))}
    if not obj.plain:
        alg3 = obj.generate(cfg.eval.n_samples, algorithm="annealing", generator=g).info
        per_stage[name] = (alg3["level"], alg3["stage_accept_rate"], (2 * alg3["stage_step_size"]).sqrt())
        out.update(accept_last10=float(alg3["accept_rate_last10"]),
                   accept_last10_soft=float(soft.info["accept_rate_last10"]))
    return out


def _chain_metrics(logs: list[dict], last_step: int) -> dict:
    """Training-chain acceptance averaged over the last 100 steps."""
    last = [r for r in logs if r["step"] > last_step - 100] or logs[-1:]
    out = {"accept_rate": sum(r["accept_rate"] for r in last) / len(last)}
    return out


def run(out: Path, quick: bool = False) -> dict:
    """Paper 000's experiment into ``out``: CD vs CD+CE vs JointCD on the spiral, annealed generation
    (Alg. 3-4), Fig. 5; returns the results dict."""
    out.mkdir(parents=True, exist_ok=True)
    rows, per_stage = [], {}
    for name in RUNS:
        print(f"[paper000] training {name}")
        row, refs = train_one(out, name, quick, per_stage)
        rows.append(row)
    rows.append({"name": "data_floor", "sample_energy_distance": refs["sample_energy_distance_floor"],
                 "sample_precision": refs.get("sample_precision_floor")})
    rows.append({"name": "noise", "sample_energy_distance": refs["sample_energy_distance_noise"]})
    rows.append({"name": "uniform_density", "density_kl": refs.get("density_kl_uniform")})
    _stage_figures(out, per_stage)
    return _verdict(out, rows, quick)


def _verdict(out: Path, rows: list[dict], quick: bool) -> dict:
    by = {r["name"]: r for r in rows}
    noise_ed = by["noise"]["sample_energy_distance"]
    checks = {
        "CD+CE or JointCD reaches a lower density_kl than plain CD":
            min(by["cd_ce"]["density_kl"], by["joint_cd"]["density_kl"]) < by["cd"]["density_kl"],
        "simulated and soft annealing of CD+CE and JointCD reach an energy distance < 1/4 of noise's":
            all(by[n][k] < 0.25 * noise_ed for n in ("cd_ce", "joint_cd")
                for k in ("sample_energy_distance", "sample_energy_distance_soft")),
    }
    claim = ("the joint losses (CD+CE or JointCD) reach a lower density KL than plain CD on the spiral, and "
             "both simulated and soft annealing generate spiral samples from noise (energy distance < 1/4 of noise's)")
    notes = "Sub-claims:\n" + "".join(f"- {k}: {'yes' if v else 'no'}\n" for k, v in checks.items())
    notes += ("\nOne seed (train.seed of the configs); small differences are noise. " +
              ("QUICK smoke run: the numbers mean nothing.\n" if quick else "") +
              "Figures: annealing_cd_ce.png, annealing_joint_cd.png (Fig. 5), stage_accept.png, stage_steps.png.\n")
    return write_results(out, "000", rows, COLUMNS, claim, all(checks.values()), notes)


# ----- figures -----------------------------------------------------------------------------------
def _stage_figures(out: Path, per_stage: dict) -> None:
    """Acceptance and step size mu = sqrt(2 eps) of each stage of simulated annealing (Alg. 3),
    against the stage's level t."""
    acc = {k: (lv.tolist(), a.tolist()) for k, (lv, a, _) in per_stage.items()}
    mu = {k: (lv.tolist(), m.tolist()) for k, (lv, _, m) in per_stage.items()}
    plots.line_plot(acc, out / "stage_accept.png", "annealing level t", "MALA acceptance (fraction)",
                    "Alg. 3: acceptance per stage", hline=(TARGET_ACCEPT, f"target {TARGET_ACCEPT:g}"))
    plots.line_plot(mu, out / "stage_steps.png", "annealing level t", "step mu = sqrt(2 eps) (model units)",
                    "Alg. 3: fitted step per stage", logy=True)


def annealing_figure(obj, data, path: Path, n: int = 1000, columns: int = 5) -> None:
    """Fig. 5: rows = simulated annealing (Alg. 3) and soft annealing (Alg. 4); columns = stages;
    each panel shows the density the chain targets at that stage and the current samples."""
    levels = obj.annealing_levels()
    stages = sorted({int(round(i * (len(levels) - 1) / (columns - 1))) for i in range(columns)})
    g = torch.Generator().manual_seed(0)
    x0 = obj.prior(n, g)
    d_a = obj.generate(n, algorithm="annealing", generator=g, x0=x0, keep=stages).info
    d_s = obj.generate(n, algorithm="soft", generator=g, x0=x0, keep=stages).info
    ext = 0.9
    grid, xs, ys = make_grid(ext, 100)
    fig = plots.new_figure((2.3 * (len(stages) + 1), 5.0))
    axes = fig.subplots(2, len(stages) + 1, sharex=True, sharey=True)
    for row, (diag, kind) in enumerate([(d_a, "annealing"), (d_s, "soft")]):
        for col, s in enumerate(stages):
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
    plots._save(fig, path)


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
