"""``ebmlab experiment paper004``: the five training schemes of paper 004 on the 10-D rings.

Paper 004 Sec. 3-4.1, Fig. 2 and Table 2, at CPU scale. Set-up follows the paper, not the demo:
the rings in their own coordinates (``data.standardize: false``), chains from N(0, I), unadjusted
Langevin with temperature T = 0.005 (App. A.4); constant step eps = 0.05 for the noise, persistent
and persistent+refresh schemes and the adaptive step eps = 0.0005 / ||E(x)|| for data and hybrid
(Sec. 3); hybrid lambda = 25; persistent bank of 60,000 (refresh: 5 % of iterations). The same
budget for every scheme: ``STEPS`` parameter updates with ``L`` Langevin steps per chain (the paper
trains 10,000 iterations on a GPU with a four-layer ConvNet; we train a residual MLP for fewer
iterations on 2 CPU cores, and say so in the output).

Metrics per scheme (EMA weights): ``density_kl`` (rings slice, grid-normalised, KL(true || model),
model density exp(-E/T)), ``sample_energy_distance`` and ``sample_precision`` of samples from
N(0, I) after L steps, and ``ood_auroc`` of held-out rings vs a copy whose (x1, x2) are scaled by
1.25 (rings at radii 1.25, 2.5, 3.75, between the true ones), scored by -E.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ebmlab import plots
from ebmlab.experiments.runner import device_generator, experiment_config, train_and_evaluate, write_results
from ebmlab.metrics.density import make_grid
from ebmlab.metrics.ood import auroc
from ebmlab.objectives.contrastive import SCHEMES
from ebmlab.training.evaluate import evaluate_vectors, model_log_density_grid

STEPS, L = 1500, 50
TEMPERATURE = 0.005
CONSTANT_STEP = 0.05      # persistent / refresh / noise (Sec. 3)
ADAPTIVE_C = 0.0005       # data / hybrid: eps = c / ||E(x)|| (Sec. 3)


def scheme_overrides(scheme: str, steps: int, n_steps: int) -> list[str]:
    """The config overrides of one training scheme of paper 004 at ``steps`` updates and ``n_steps`` sampler steps."""
    adaptive = scheme in ("data", "hybrid")
    return [
        "data.name=rings", "data.standardize=false", f"method.name={scheme}", "method.sampler=langevin",
        "method.target_accept=null", f"method.temperature={TEMPERATURE}", f"method.step_size={CONSTANT_STEP}",
        f"method.adaptive_step={str(adaptive).lower()}", f"method.adaptive_c={ADAPTIVE_C}",
        f"method.n_steps={n_steps}", f"method.n_steps_data={n_steps}", "method.lam=25", "method.energy_l2=0",
        f"train.steps={steps}", "train.batch_size=256", "train.lr=0.001",
        f"train.checkpoint_every={max(steps // 10, 1)}", "train.log_every=10", "eval.long_run_factor=1",
        "train.seed=0",
    ]  # applied after runner.QUIET: this checkpoint_every wins, so a diverging scheme keeps a last good one


@torch.no_grad()
def ood_auroc(objective, data, n: int, generator) -> float:
    """AUROC of -energy separating ``n`` held-out points from shifted ones (paper 004 Table 2)."""
    x_in = data.fresh(n, generator)
    x_out = data.fresh(n, generator)
    x_out[:, :2] *= 1.25
    dev = next(objective.parameters()).device
    s_in = -objective.score(data.transform.to_model(x_in).to(dev)).cpu()
    s_out = -objective.score(data.transform.to_model(x_out).to(dev)).cpu()
    return auroc(s_in, s_out)


def run(out: Path, quick: bool = False) -> dict:
    """Paper 004's experiment into ``out``: the five schemes on the rings, Fig. 2; returns the results dict."""
    steps, n_steps = (20, 5) if quick else (STEPS, L)
    rows, columns = [], {}
    grid, xs, ys = make_grid(3.8, 120)
    for scheme in SCHEMES:
        print(f"[paper004] training scheme {scheme!r}: {steps} updates, L={n_steps}")
        # a scheme that diverges is a result: it is evaluated at its last good checkpoint
        arm = train_and_evaluate(out / scheme, experiment_config(None, scheme_overrides(scheme, steps, n_steps)),
                                 evaluate_run=False, on_diverge="last_good")
        trainer, diverged = arm.trainer, arm.diverged
        cfg, data, objective = trainer.cfg, trainer.data, trainer.objective  # EMA weights
        if quick:
            cfg.eval.n_samples = 300
        with torch.no_grad():
            gen = device_generator(objective, 11)
            m = evaluate_vectors(objective, data, cfg, None, gen)
            row = {"name": scheme, "density_kl": m["density_kl"],
                   "sample_energy_distance": m["sample_energy_distance"],
                   "sample_precision": m["sample_precision"],
                   "ood_auroc": ood_auroc(objective, data, 2000, torch.Generator().manual_seed(5)),
                   "density_kl_uniform": m["density_kl_uniform"],
                   "sample_energy_distance_floor": m["sample_energy_distance_floor"],
                   "sample_precision_floor": m["sample_precision_floor"], "diverged": diverged or "no"}
            samples = data.transform.to_data(objective.sample(2000, generator=gen).x.cpu())
            columns[scheme] = (samples[:, :2], model_log_density_grid(objective, data, grid))
        rows.append(row)
    plots.scheme_columns(columns, xs, ys, out / "fig2_schemes.png",
                         title="paper 004 Fig. 2 at CPU scale: samples from noise (top), model density (bottom)")
    return _verdict(out, rows, steps, n_steps)


def _verdict(out: Path, rows: list[dict], steps: int, n_steps: int) -> dict:
    r = {row["name"]: row for row in rows}
    checks = {
        "data-CD learns the density better than noise-init": r["data"]["density_kl"] < r["noise"]["density_kl"],
        "data-CD generates from noise worse than noise-init":
            r["data"]["sample_precision"] < r["noise"]["sample_precision"],
        "hybrid learns the density better than noise-init": r["hybrid"]["density_kl"] < r["noise"]["density_kl"],
        "hybrid generates from noise better than data-CD":
            r["hybrid"]["sample_precision"] > r["data"]["sample_precision"],
    }
    claim = ("data-initialised CD learns the density but fails to generate from noise; noise-initialised "
             "training generates but mis-learns the density; the hybrid loss does both (paper 004 Sec. 4.1)")
    notes = "Sub-claims:\n" + "".join(f"- {k}: {'yes' if v else 'no'}\n" for k, v in checks.items())
    notes += "".join(f"\nScheme {row['name']!r} {row['diverged']}.\n" for row in rows if row["diverged"] != "no")
    notes += (f"\nBudget: {steps} updates per scheme, L = {n_steps} Langevin steps, batch 256, residual MLP, "
              f"2 CPU cores (the paper: 10,000 updates, ConvNet, V100). Floors: uniform density KL "
              f"{rows[0]['density_kl_uniform']:.3f}; data-vs-data energy distance "
              f"{rows[0]['sample_energy_distance_floor']:.4f}; true-sample precision "
              f"{rows[0]['sample_precision_floor']:.3f}. Figure: fig2_schemes.png.\n")
    return write_results(out, "004", rows, ["density_kl", "sample_energy_distance", "sample_precision", "ood_auroc"],
                         claim, all(checks.values()), notes)
