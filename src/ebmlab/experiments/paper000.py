"""``ebmlab experiment paper000``: plain CD vs CD+CE vs JointCD on the 2-D shifted spiral (paper 000,
Sec. 4.1, App. C.1, Fig. 5), at CPU scale.

Three models with the same trunk, data, seed, sampler and number of optimiser steps
(``configs/paper000_spiral_cdce.yaml`` and ``..._jointcd.yaml``):

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
the last 100 steps), ``accept_rate_t_min`` / ``_max`` (per-t acceptance averages at the end of
training) and ``mu_over_beta_sigma`` (median per-t mu_t / (beta_t sigma_n); App. C.1 reports ~0.4).

Figures: ``annealing_cd_ce.png``, ``annealing_joint_cd.png`` (Fig. 5: samples through simulated
and soft annealing over the model's density at that stage, and the ground truth),
``per_t_accept.png`` and ``per_t_steps.png`` (per-t acceptance and step size at the end of training).

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
from ebmlab.experiments.common import ema_applied, train_run, write_results
from ebmlab.metrics.density import make_grid, sample_precision
from ebmlab.metrics.distances import energy_distance
from ebmlab.training.evaluate import evaluate

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
RUNS = {"cd": ("paper000_spiral_cdce.yaml", ["method.name=cd_plain"]),
        "cd_ce": ("paper000_spiral_cdce.yaml", []),
        "joint_cd": ("paper000_spiral_jointcd.yaml", [])}
QUICK = ["train.steps=20", "data.n_train=2000", "eval.n_samples=200", "eval.grid_size=40", "method.T=16",
         "method.sample_levels=8", "method.soft_stages=8", "model.width=32", "model.depth=1", "train.batch_size=64"]
COLUMNS = ["density_kl", "sample_energy_distance", "sample_energy_distance_soft", "sample_precision",
           "sample_precision_soft", "accept_rate", "accept_rate_t_min", "accept_rate_t_max",
           "mu_over_beta_sigma", "train_seconds"]


def train_one(out: Path, name: str, quick: bool, per_t: dict) -> tuple[dict, dict]:
    """Train one method, evaluate it with EMA weights; returns (row, evaluate()'s metrics). Writes the
    Fig. 5 panel and fills ``per_t`` for the joint methods."""
    file, sets = RUNS[name]
    sets = sets + ["train.progress=false", "eval.plots=false", "train.checkpoint_every=100000"]
    run_dir = out / "runs" / name
    t0 = time.time()
    trainer = train_run(run_dir, sets + (QUICK if quick else []), str(CONFIGS / file))
    cfg = trainer.cfg
    row = {"name": name, "train_seconds": round(time.time() - t0, 1)}
    logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    with ema_applied(trainer) as obj:
        m = evaluate(obj, trainer.data, cfg, None)
        row.update({k: m[k] for k in ("density_kl", "sample_energy_distance", "sample_precision") if k in m})
        row["sample_energy_distance_soft"], row["sample_precision_soft"] = _soft_metrics(obj, trainer.data, cfg)
        if not obj.plain:
            annealing_figure(obj, trainer.data, out / f"annealing_{name}.png")
            per_t[name] = (obj.ctrl.accept_ema.cpu(), (2 * obj.ctrl.log_step.exp().cpu()).sqrt())
    row.update(_chain_metrics(logs, trainer.step))
    return row, m


def _soft_metrics(obj, data, cfg) -> tuple[float, float]:
    """Energy distance and precision of soft-annealing samples (Alg. 4) vs fresh data."""
    g = torch.Generator().manual_seed(cfg.train.seed + 21)
    x = data.transform.to_data(obj.sample(cfg.eval.n_samples, generator=g, method="soft").cpu())
    g_cpu = torch.Generator().manual_seed(cfg.train.seed + 11)  # the same reference draw as evaluate
    ref, ref2 = data.fresh(cfg.eval.n_samples, g_cpu), data.fresh(cfg.eval.n_samples, g_cpu)
    prec = sample_precision(data.dist.log_prob(x), data.dist.log_prob(ref2))
    return energy_distance(x, ref), prec


def _chain_metrics(logs: list[dict], last_step: int) -> dict:
    """Training-chain acceptance averaged over the last 100 steps, and the per-t summaries at the end."""
    last = [r for r in logs if r["step"] > last_step - 100] or logs[-1:]
    out = {"accept_rate": sum(r["accept_rate"] for r in last) / len(last)}
    out.update({k: logs[-1][k] for k in ("accept_rate_t_min", "accept_rate_t_max", "mu_over_beta_sigma")
                if k in logs[-1]})
    return out


def run(out: Path, quick: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    rows, per_t = [], {}
    for name in RUNS:
        print(f"[paper000] training {name}")
        row, refs = train_one(out, name, quick, per_t)
        rows.append(row)
    rows.append({"name": "data_floor", "sample_energy_distance": refs["sample_energy_distance_floor"],
                 "sample_precision": refs.get("sample_precision_floor")})
    rows.append({"name": "noise", "sample_energy_distance": refs["sample_energy_distance_noise"]})
    rows.append({"name": "uniform_density", "density_kl": refs.get("density_kl_uniform")})
    _per_t_figures(out, per_t)
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
              "Figures: annealing_cd_ce.png, annealing_joint_cd.png (Fig. 5), per_t_accept.png, per_t_steps.png.\n")
    return write_results(out, "000", rows, COLUMNS, claim, all(checks.values()), notes)


# ----- figures -----------------------------------------------------------------------------------
def _per_t_figures(out: Path, per_t: dict) -> None:
    """Per-t acceptance (EMA) and step size mu_t = sqrt(2 eps_t) at the end of training."""
    acc = {k: (list(range(len(a))), a.tolist()) for k, (a, _) in per_t.items()}
    mu = {k: (list(range(len(s))), s.tolist()) for k, (_, s) in per_t.items()}
    plots.line_plot(acc, out / "per_t_accept.png", "t", "acceptance (EMA)", "per-t acceptance, end of training")
    plots.line_plot(mu, out / "per_t_steps.png", "t", "mu_t = sqrt(2 eps_t)", "per-t step size", logy=True)


def annealing_figure(obj, data, path: Path, n: int = 1000, columns: int = 5) -> None:
    """Fig. 5: rows = simulated annealing (Alg. 3) and soft annealing (Alg. 4); columns = stages;
    each panel shows the density the chain targets at that stage and the current samples."""
    import matplotlib.pyplot as plt

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
            ax.set_xlim(-ext, ext), ax.set_ylim(-ext, ext)  # stray samples must not rescale the panel
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
