"""``ebmlab experiment paper000``: plain CD vs CD+CE vs JointCD on the 2-D shifted spiral (paper 000,
Sec. 4.1, App. C.1, Fig. 5), at CPU scale.

Three models with the same trunk, data, seed, sampler and number of optimiser steps
(``configs/paper000_spiral_cdce.yaml`` and ``..._jointcd.yaml``):

- ``cd``: vanilla CD on the data distribution alone (``method.name: cd_plain``: no series, scalar
  energy, K MALA steps from the data); generation = MALA from p_n for as many steps as annealing;
- ``cd_ce``: Alg. 1; ``joint_cd``: Alg. 2; generation = simulated annealing (Alg. 3).

Reference rows ``data_floor`` (data vs data), ``noise`` (the N(0, sigma_n^2 I) starts vs data) and
``uniform_density`` (density_kl of a uniform density on the grid). Rows: ``density_kl`` (KL(true || model) on a grid, both grid-normalised; the reference is the
spiral's exact density, ``data/toy.py``), ``sample_energy_distance`` (Alg. 3 samples vs fresh data),
``sample_energy_distance_soft`` (Alg. 4, soft annealing; ``cd`` has no series, so its column is a
second draw of its MALA sampler), ``sample_precision`` (fraction of samples above the 1 % quantile of
the data's exact log-density), ``accept_rate`` (training chains, mean of the last 100 steps),
``accept_rate_t_min`` / ``_max`` (per-t averages at the end of training) and
``mu_over_beta_sigma`` (median per-t mu_t / (beta_t sigma_n); App. C.1 reports ~0.4).

Figures: ``annealing_cd_ce.png``, ``annealing_joint_cd.png`` (Fig. 5: samples through simulated and soft annealing over the model's
density at that stage, and the ground truth), ``per_t_accept.png`` and ``per_t_steps.png`` (per-t
acceptance and step size at the end of training).

Claim checked: the joint losses beat plain CD on the spiral's density (``density_kl`` of cd_ce or
joint_cd below cd's) and both annealing variants generate spiral samples from noise (energy distance
below a quarter of the noise row's, for cd_ce and joint_cd). One seed: small differences are noise.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ebmlab import plots
from ebmlab.metrics.density import make_grid, sample_precision
from ebmlab.metrics.distances import energy_distance
from ebmlab.training.config import load_config
from ebmlab.training.evaluate import evaluate
from ebmlab.training.loop import Trainer

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
RUNS = {"cd": ("paper000_spiral_cdce.yaml", ["method.name=cd_plain"]),
        "cd_ce": ("paper000_spiral_cdce.yaml", []),
        "joint_cd": ("paper000_spiral_jointcd.yaml", [])}
QUICK = ["train.steps=20", "data.n_train=2000", "eval.n_samples=200", "eval.grid_size=40", "method.T=16",
         "method.sample_levels=8", "method.soft_stages=8", "model.width=32", "model.depth=1", "train.batch_size=64"]
COLUMNS = ("density_kl", "sample_energy_distance", "sample_energy_distance_soft", "sample_precision",
           "accept_rate", "accept_rate_t_min", "accept_rate_t_max", "mu_over_beta_sigma", "train_seconds")


def _config(name: str, quick: bool):
    file, sets = RUNS[name]
    sets = sets + ["train.progress=false", "eval.plots=false", "train.checkpoint_every=100000"]
    return load_config(CONFIGS / file, sets + (QUICK if quick else []))


def train_one(out: Path, name: str, quick: bool) -> tuple[dict, Trainer]:
    cfg = _config(name, quick)
    t0 = time.time()
    trainer = Trainer(cfg, out / "runs" / name)
    trainer.fit()
    seconds = time.time() - t0
    if trainer.ema is not None:
        trainer.ema.copy_to(trainer.objective)
    m = evaluate(trainer.objective, trainer.data, cfg, None)
    row = {"name": name, "train_seconds": round(seconds, 1)}
    row.update({k: m[k] for k in ("density_kl", "sample_energy_distance", "sample_precision") if k in m})
    row["sample_energy_distance_soft"], row["sample_precision_soft"] = _soft_metrics(trainer, cfg)
    row.update(_chain_metrics(out / "runs" / name, trainer))
    return {**row, "_refs": m}, trainer


def _soft_metrics(trainer, cfg) -> tuple[float, float]:
    obj, data = trainer.objective, trainer.data
    g = torch.Generator().manual_seed(cfg.train.seed + 21)
    x = data.transform.to_data(obj.sample(cfg.eval.n_samples, generator=g, method="soft").cpu())
    g_cpu = torch.Generator().manual_seed(cfg.train.seed + 11)  # the same reference draw as evaluate
    ref, ref2 = data.fresh(cfg.eval.n_samples, g_cpu), data.fresh(cfg.eval.n_samples, g_cpu)
    prec = sample_precision(data.dist.log_prob(x), data.dist.log_prob(ref2))
    return energy_distance(x, ref), prec


def _chain_metrics(run_dir: Path, trainer) -> dict:
    logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in logs if r["step"] > trainer.step - 100] or logs[-1:]
    out = {"accept_rate": sum(r["accept_rate"] for r in last) / len(last)}
    for k in ("accept_rate_t_min", "accept_rate_t_max", "mu_over_beta_sigma"):
        if k in logs[-1]:
            out[k] = logs[-1][k]
    return out


def run(out: Path, quick: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    rows, trainers = [], {}
    for name in RUNS:
        row, trainers[name] = train_one(out, name, quick)
        refs = row.pop("_refs")
        rows.append(row)
    rows.append({"name": "data_floor", "sample_energy_distance": refs["sample_energy_distance_floor"],
                 "sample_precision": refs.get("sample_precision_floor")})
    rows.append({"name": "noise", "sample_energy_distance": refs["sample_energy_distance_noise"]})
    rows.append({"name": "uniform_density", "density_kl": refs.get("density_kl_uniform")})
    by = {r["name"]: r for r in rows}
    noise_ed = by["noise"]["sample_energy_distance"]
    beats = min(by["cd_ce"]["density_kl"], by["joint_cd"]["density_kl"]) < by["cd"]["density_kl"]
    generates = all(by[n][k] < 0.25 * noise_ed for n in ("cd_ce", "joint_cd")
                    for k in ("sample_energy_distance", "sample_energy_distance_soft"))
    claim = ("the joint losses (CD+CE or JointCD) reach a lower density KL than plain CD on the spiral, and "
             "both simulated and soft annealing generate spiral samples from noise (energy distance < 1/4 of noise's)")
    result = {"paper": "000", "rows": rows, "claim": claim, "claim_holds": bool(beats and generates),
              "joint_beats_cd": bool(beats), "annealing_generates": bool(generates), "quick": quick}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(_markdown(result))
    _figures(out, trainers)
    return result


def _markdown(result: dict) -> str:
    cols = [c for c in COLUMNS if any(c in r for r in result["rows"])]
    lines = ["# Paper 000: plain CD vs CD+CE vs JointCD on the shifted spiral", "",
             "| name | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in result["rows"]:
        cells = [f"{r[c]:.4g}" if isinstance(r.get(c), (int, float)) else "" for c in cols]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += ["", f"Claim: {result['claim']}.", f"Holds: {result['claim_holds']} (joint beats CD on KL: "
              f"{result['joint_beats_cd']}; annealing generates: {result['annealing_generates']}).", ""]
    return "\n".join(lines)


# ----- figures -----------------------------------------------------------------------------------
def _figures(out: Path, trainers: dict) -> None:
    series_a, series_s = {}, {}
    for name in ("cd_ce", "joint_cd"):
        obj = trainers[name].objective
        acc = obj.ctrl.accept_ema.cpu()
        ts = torch.arange(len(acc))
        series_a[name] = (ts.tolist(), acc.tolist())
        series_s[name] = (ts.tolist(), (2 * obj.ctrl.log_step.exp().cpu()).sqrt().tolist())
    plots.line_plot(series_a, out / "per_t_accept.png", "t", "acceptance (EMA)", "per-t acceptance, end of training")
    plots.line_plot(series_s, out / "per_t_steps.png", "t", "mu_t = sqrt(2 eps_t)", "per-t step size", logy=True)
    for name in ("cd_ce", "joint_cd"):
        annealing_figure(trainers[name], out / f"annealing_{name}.png")


def annealing_figure(trainer, path: Path, n: int = 1000, columns: int = 5) -> None:
    """Fig. 5: rows = simulated annealing (Alg. 3) and soft annealing (Alg. 4); columns = stages;
    each panel shows the density the chain targets at that stage and the current samples."""
    import matplotlib.pyplot as plt

    obj, data = trainer.objective, trainer.data
    levels = obj.annealing_levels()
    stages = sorted({int(round(i * (len(levels) - 1) / (columns - 1))) for i in range(columns)})
    g = torch.Generator().manual_seed(0)
    x0 = obj.noise(n, g)
    _, d_a = obj.sample(n, generator=g, method="annealing", x0=x0, keep=stages, return_diagnostics=True)
    _, d_s = obj.sample(n, generator=g, method="soft", x0=x0, keep=stages, return_diagnostics=True)
    ext = 0.9
    grid, xs, ys = make_grid(ext, 100)
    fig, axes = plt.subplots(2, len(stages) + 1, figsize=(2.4 * (len(stages) + 1), 5))
    for row, (diag, kind) in enumerate([(d_a, "annealing"), (d_s, "soft")]):
        for col, s in enumerate(stages):
            lp = _stage_log_density(obj, data.transform.to_model(grid), kind, diag, s)
            ax = axes[row, col]
            ax.imshow(lp.view(100, 100).exp().numpy(), origin="lower", extent=(-ext, ext, -ext, ext), cmap="viridis")
            pts = data.transform.to_data(diag["snapshots"][s])
            ax.scatter(pts[:, 0], pts[:, 1], s=0.5, c="w", alpha=0.5)
            ax.set_title(f"{kind} t={int(diag['level'][s])}", fontsize=8), ax.set_xticks([]), ax.set_yticks([])
        true = data.dist.log_prob(grid)
        axes[row, -1].imshow(torch.softmax(true, 0).view(100, 100).numpy(), origin="lower",
                             extent=(-ext, ext, -ext, ext), cmap="viridis")
        axes[row, -1].set_title("ground truth", fontsize=8), axes[row, -1].axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
