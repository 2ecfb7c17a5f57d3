"""``ebmlab experiment paper002``: the T / K / sigma ablations of paper 002 (Tables 4-6) at CPU scale.

On a 2-D toy with an exact density (``configs/paper002_8gaussians.yaml``, dataset ``TOY``)
we train one model per setting with the same seed and budget:

- the T x K grid, T in {3, 6, 10, 20} and K in {1, 3, 5} (Tables 4-5 take rows and columns of it),
  sigma = 0.3; rows ``T{T}_K{K}``;
- the sigma ablation of Table 6 at T = 20, K = 3, sigma in {0.005, 0.05, 0.1, 0.5} (0.3 is the grid's
  ``T20_K3``); rows ``sigma{s}``.

Each row has ``sample_energy_distance`` (generated from N(0, I) with the paper's own T x K-step
process vs fresh data, data coordinates), ``sample_precision`` (fraction of samples where the true
density is above its 1 % data quantile), ``density_kl`` of exp(-E(x, t=1)) on a grid, and the
steps. Reference rows ``data_floor`` (data vs data) and ``noise_ceiling`` (the N(0, I) start).
Figures: ``sampling_process.png`` (Fig. 1: the chains after each t), ``interpolation.png``
(Sec. 5.1 / Fig. 3: slerp paths of starts and Langevin noises), ``ablation_TK.png``.

The paper's claim checked here: sample quality has an interior optimum in the total number of
sampling steps T x K (Tables 4-5, best at T x K = 60 with performance dropping when T or K grows).
``claim_holds`` is true when the best grid setting's T x K is neither the smallest nor the largest
product tested. One seed per setting: differences of the order of ``data_floor`` are noise.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ebmlab import plots
from ebmlab.applications.interpolation import interpolate
from ebmlab.metrics.distances import energy_distance
from ebmlab.training.config import load_config
from ebmlab.training.evaluate import evaluate
from ebmlab.training.loop import Trainer

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "paper002_8gaussians.yaml"
TOY = "8gaussians"
GRID_T, GRID_K, SIGMAS = (3, 6, 10, 20), (1, 3, 5), (0.005, 0.05, 0.1, 0.5)
METRICS = ("sample_energy_distance", "sample_precision", "density_kl")


def _config(T: int, K: int, sigma: float, quick: bool):
    sets = [f"data.name={TOY}", f"method.T={T}", f"method.K={K}", f"method.sigma={sigma}",
            "train.progress=false", "eval.plots=false", "train.checkpoint_every=100000", "train.threads=1"]
    if quick:
        sets += ["train.steps=20", "data.n_train=2000", "eval.n_samples=300", "eval.grid_size=40",
                 "method.buffer_size=512", "train.batch_size=64"]
    return load_config(CONFIG, sets)


def train_one(out: Path, name: str, T: int, K: int, sigma: float, quick: bool):
    """Train one setting; returns (row, trainer) with the EMA weights swapped in for evaluation."""
    cfg = _config(T, K, sigma, quick)
    t0 = time.time()
    trainer = Trainer(cfg, out / "runs" / name)
    trainer.fit()
    trainer.ema.copy_to(trainer.objective)
    m = evaluate(trainer.objective, trainer.data, cfg, None)
    row = {"name": name, "T": T, "K": K, "sigma": sigma, "steps": T * K,
           **{k: m.get(k) for k in METRICS}, "train_seconds": round(time.time() - t0, 1)}
    print(f"[paper002] {name}: " + ", ".join(f"{k}={row[k]}" for k in METRICS), flush=True)
    return row, trainer, m


def figures(out: Path, trainer) -> None:
    """Fig. 1 (sampling process through t) and Sec. 5.1 interpolation, for one trained model."""
    obj, data = trainer.objective, trainer.data
    g = torch.Generator().manual_seed(3)
    _, path, _ = obj.generate(obj.noise(1500, g), generator=g, keep_path=True)  # (T+1, n, 2)
    T = obj.cfg.T
    picks = sorted({0, T // 4, T // 2, (3 * T) // 4, T})
    sets = {("start t=T (noise)" if i == 0 else f"after t={T - i + 1}"): data.transform.to_data(path[i])
            for i in picks}
    ext = float(data.transform.to_data(data.test)[:, :2].abs().max()) * 1.3
    plots.sample_scatter(sets, out / "sampling_process.png", extent=ext,
                         title=f"paper 002 Fig. 1 on {TOY}: chains after each time step (T={T}, K={obj.cfg.K})")
    strip = data.transform.to_data(interpolate(obj, n_points=12, n_pairs=6, generator=g))  # (P, 12, 2)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4, 4))
    ref = data.transform.to_data(data.test[:2000])
    ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.8")
    for p in strip:
        ax.plot(p[:, 0], p[:, 1], "-", lw=0.8)
        ax.scatter(p[:, 0], p[:, 1], c=torch.linspace(0, 1, len(p)), cmap="viridis", s=12, zorder=3)
    ax.set_xlim(-ext, ext), ax.set_ylim(-ext, ext), ax.set_aspect("equal")
    ax.set_title("slerp of starts and Langevin noises (Sec. 5.1)", fontsize=9)
    plots._save(fig, out / "interpolation.png")


def reference_rows(trainer, n: int) -> list[dict]:
    data, g = trainer.data, torch.Generator().manual_seed(11)
    ref, ref2 = data.fresh(n, g), data.fresh(n, g)
    noise = data.transform.to_data(trainer.objective.noise(n, g))
    return [{"name": "data_floor", "sample_energy_distance": energy_distance(ref2, ref)},
            {"name": "noise_ceiling", "sample_energy_distance": energy_distance(noise, ref)}]


def grid_order(quick: bool) -> list[tuple[int, int]]:
    """Table 4's row (K = 3, all T), then Table 5's column (T = 20, all K), then the rest of the grid."""
    if quick:
        return [(2, 1), (2, 3)]
    first = [(T, 3) for T in GRID_T] + [(20, K) for K in GRID_K if K != 3]
    return first + [(T, K) for T in GRID_T for K in GRID_K if (T, K) not in first]


def run(out: Path, quick: bool = False) -> dict:
    out = Path(out)
    base = (2, 3) if quick else (20, 3)
    rows, keep = [], None
    for T, K in grid_order(quick):
        row, trainer, _ = train_one(out, f"T{T}_K{K}", T, K, 0.3, quick)
        rows.append(row)
        if (T, K) == base:
            keep = trainer
        (out / "rows_partial.json").write_text(json.dumps(rows, indent=1))  # survives an interrupted run
    for s in (SIGMAS[-1:] if quick else SIGMAS):
        rows.append(train_one(out, f"sigma{s}", *base, s, quick)[0])
        (out / "rows_partial.json").write_text(json.dumps(rows, indent=1))
    figures(out, keep)
    rows += reference_rows(keep, keep.cfg.eval.n_samples)
    return summarise(out, rows, quick)


def summarise(out: Path, rows: list[dict], quick: bool) -> dict:
    grid = [r for r in rows if r["name"].startswith("T")]
    best = min(grid, key=lambda r: r["sample_energy_distance"])
    products = sorted({r["steps"] for r in grid})
    interior = products[0] < best["steps"] < products[-1]
    claim = ("sample quality has an interior optimum in the total sampling steps T x K "
             "(paper 002 Tables 4-5: best at T x K = 60)")
    result = {"paper": "002", "rows": rows, "claim": claim, "claim_holds": bool(interior),
              "best": best["name"], "toy": TOY, "quick": quick}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    series = {f"K={K}": ([r["T"] for r in grid if r["K"] == K], [r["sample_energy_distance"] for r in grid if r["K"] == K])
              for K in sorted({r["K"] for r in grid})}
    plots.line_plot(series, out / "ablation_TK.png", "T", "sample energy distance", title=f"paper 002 on {TOY}",
                    logy=True)
    (out / "results.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [f"# Paper 002 ablations on {result['toy']}{' (quick smoke run)' if result['quick'] else ''}", "",
             "| setting | T | K | sigma | T x K | energy distance | precision | density KL (t=1) | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    for r in result["rows"]:
        lines.append("| " + " | ".join(fmt(r.get(k)) for k in ("name", "T", "K", "sigma", "steps",
                                                                 "sample_energy_distance", "sample_precision",
                                                                 "density_kl", "train_seconds")) + " |")
    lines += ["", f"Best grid setting: {result['best']}.", "",
              f"Claim: {result['claim']}. Holds here: **{result['claim_holds']}** (one seed per setting; "
              "differences of the order of data_floor are within noise).",
              "", "Figures: sampling_process.png (Fig. 1), interpolation.png (Sec. 5.1), ablation_TK.png."]
    return "\n".join(lines) + "\n"
