"""``ebmlab experiment paper002``: the T / K / sigma ablations of paper 002 (Tables 4-6) at CPU scale.

Toy with an exact density (shipped config ``paper002_8gaussians``, dataset ``TOY``): one model per
setting, same seed and budget (1,500 iterations each):

- the T x K grid, T in {3, 6, 10, 20} and K in {1, 3, 5} (Table 4 is the K = 3 row, Table 5 the
  T = 20 column), sigma = 0.3; rows ``T{T}_K{K}``;
- the sigma ablation of Table 6 at T = 20, K = 3, sigma in {0.005, 0.05, 0.1, 0.5} (0.3 is the grid's
  ``T20_K3``); rows ``sigma{s}``.

Each row has ``sample_energy_distance`` (samples generated from N(0, I) with the T x K-step process
vs fresh data, data coordinates), ``sample_precision`` (fraction of samples where the true density
is above its 1 % data quantile), ``density_kl`` of exp(-E(x, t = 1)) on a grid (the Boltzmann density
at the last time step, not the density of the samples) and the total steps T x K. Reference rows:
``data_floor`` (data vs data) and ``noise_ceiling`` (the N(0, I) start).

Digits (shipped config ``paper002_digits``, ``DIGITS_STEPS`` iterations instead of the config's 1,500
to fit the CPU budget): Table 4's row T in {3, 10, 20} at K = 3 adds ``digits_fd`` (with its floor
and noise ceiling in the notes) to the matching ``T{T}_K3`` rows. The rest of the grid is toy-only.

Figures: ``sampling_process.png`` (toy) and ``sampling_process_digits.png`` (Fig. 1: the chains after
each time step), ``interpolation.png`` / ``interpolation_digits.png`` (Sec. 5.1 / Fig. 3: slerp of
starts and Langevin noises), ``ablation_TK.png``.

The claim checked (Tables 4-5): sample quality has an interior optimum in the total number of sampling
steps T x K (paper: best at T x K = 60, worse with more steps). ``claim_holds`` on the toy: the best
grid setting's T x K lies strictly between the smallest and largest product tested AND the
largest-product setting (T20_K5) is worse than the best by more than 2 x ``data_floor`` (the energy
distance between two data samples of the same size, our noise scale). One seed per setting.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ebmlab import plots
from ebmlab.applications.interpolation import interpolate
from ebmlab.experiments.runner import experiment_config, train_and_evaluate, write_json, write_results

TOY = "8gaussians"
GRID_T, GRID_K, SIGMAS = (3, 6, 10, 20), (1, 3, 5), (0.005, 0.05, 0.1, 0.5)
DIGITS_T, DIGITS_STEPS = (3, 10, 20), 500
COLUMNS = ["T", "K", "sigma", "steps", "sample_energy_distance", "sample_precision", "density_kl", "digits_fd",
           "train_seconds"]
QUICK_TOY = ["train.steps=20", "data.n_train=2000", "eval.n_samples=300", "eval.grid_size=40",
             "method.buffer_size=512", "train.batch_size=64"]
QUICK_DIGITS = ["train.steps=3", "eval.n_samples=64", "train.batch_size=32", "method.buffer_size=64"]


def train_one(out: Path, name: str, config: str, sets: list[str]):
    """Train one setting and evaluate its EMA weights; returns (metrics, trainer, seconds)."""
    arm = train_and_evaluate(out / "runs" / name, experiment_config(config, sets, threads=1))
    return arm.metrics, arm.trainer, round(arm.train_seconds + arm.eval_seconds, 1)


def toy_row(out: Path, T: int, K: int, sigma: float, quick: bool, name: str | None = None):
    """Train and evaluate one (T, K) setting on the toy; returns its results row."""
    name = name or f"T{T}_K{K}"
    sets = [f"data.name={TOY}", f"method.T={T}", f"method.K={K}", f"method.sigma={sigma}"]
    m, trainer, secs = train_one(out, name, "paper002_8gaussians", sets + (QUICK_TOY if quick else []))
    row = {"name": name, "T": T, "K": K, "sigma": sigma, "steps": T * K, "train_seconds": secs,
           **{k: m.get(k) for k in ("sample_energy_distance", "sample_precision", "density_kl")}}
    print(f"[paper002] {name}: ED={row['sample_energy_distance']:.4g} precision={row['sample_precision']:.3g} "
          f"({secs} s)", flush=True)
    return row, trainer, m


def digits_run(out: Path, T: int, quick: bool):
    """Train paper 002 on digits with ``T`` time steps; returns its metrics and writes its figures."""
    sets = [f"method.T={T}", "method.K=3", f"train.steps={DIGITS_STEPS}"] + (QUICK_DIGITS if quick else [])
    m, trainer, secs = train_one(out, f"digits_T{T}_K3", "paper002_digits", sets)
    print(f"[paper002] digits T{T}_K3: digits_fd={m['digits_fd']:.4g} ({secs} s)", flush=True)
    return m, trainer, secs


def sampling_figures(out: Path, trainer, suffix: str = "") -> None:
    """Fig. 1 (the chains after each time step) and Sec. 5.1's interpolation for one trained model."""
    data, g, obj = trainer.data, torch.Generator().manual_seed(3), trainer.objective  # EMA weights
    T, K = obj.cfg.T, obj.cfg.K
    n = 8 if data.kind == "image" else 1500
    _, path, _ = obj.generate(obj.prior(n, g), generator=g, keep_path=True)  # (T+1, n, ...)
    strip = data.transform.to_data(interpolate(obj, n_points=10, n_pairs=6, generator=g))  # (P, 10, ...)
    path = data.transform.to_data(path.flatten(0, 1)).view_as(path)
    if data.kind == "image":  # one row per chain: the start at t = T, then after each t
        plots.image_grid(path.transpose(0, 1).flatten(0, 1), out / f"sampling_process{suffix}.png", nrow=T + 1,
                         title=f"paper 002 Fig. 1 on digits (T={T}, K={K}): x_T, then after t = T..1")
        plots.image_grid(strip.flatten(0, 1), out / f"interpolation{suffix}.png", nrow=strip.shape[1],
                         title="slerp of starts and Langevin noises (Sec. 5.1)")
        return
    picks = sorted({0, T // 4, T // 2, (3 * T) // 4, T})
    sets = {("start t=T (noise)" if i == 0 else f"after t={T - i + 1}"): path[i] for i in picks}
    ext = float(data.transform.to_data(data.test)[:, :2].abs().max()) * 1.3
    plots.sample_scatter(sets, out / f"sampling_process{suffix}.png", extent=ext,
                         title=f"paper 002 Fig. 1 on {TOY}: chains after each time step (T={T}, K={K})")
    toy_interpolation_plot(strip, data.transform.to_data(data.test[:2000]), ext, out / f"interpolation{suffix}.png")


def toy_interpolation_plot(strip, ref, ext: float, path: Path) -> None:
    """strip (P, n_points, 2): each slerp path as a line coloured from sample A to sample B."""
    fig = plots.new_figure((4.2, 4.2))
    ax = fig.subplots()
    ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.8", label="held-out data")
    for p in strip:
        ax.plot(p[:, 0], p[:, 1], "-", lw=0.8)
        ax.scatter(p[:, 0], p[:, 1], c=torch.linspace(0, 1, len(p)), cmap="viridis", s=12, zorder=3)
    ax.set_xlim(-ext, ext), ax.set_ylim(-ext, ext), ax.set_aspect("equal")
    ax.set_xlabel("x1 (data units)", fontsize=8), ax.set_ylabel("x2 (data units)", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("slerp of starts and Langevin noises (Sec. 5.1),\ncoloured from sample A to sample B", fontsize=9)
    plots._save(fig, path)


def grid_order(quick: bool) -> list[tuple[int, int]]:
    """Table 4's row (K = 3, all T), then Table 5's column (T = 20, all K), then the rest of the grid."""
    if quick:
        return [(2, 1), (2, 3), (3, 3)]
    first = [(T, 3) for T in GRID_T] + [(20, K) for K in GRID_K if K != 3]
    return first + [(T, K) for T in GRID_T for K in GRID_K if (T, K) not in first]


def run(out: Path, quick: bool = False) -> dict:
    """Paper 002's experiment into ``out`` (the T x K ablation of Tables 4-5, Fig. 1); returns the results dict."""
    out = Path(out)
    base = (2, 3) if quick else (20, 3)
    rows, keep, ref = [], None, {}
    for T, K in grid_order(quick):
        row, trainer, m = toy_row(out, T, K, 0.3, quick)
        rows.append(row)
        if (T, K) == base:
            keep, ref = trainer, m
        (out / "rows_partial.json").write_text(json.dumps(rows, indent=1))  # survives an interrupted run
    for s in (SIGMAS[-1:] if quick else SIGMAS):
        rows.append(toy_row(out, *base, s, quick, name=f"sigma{s}")[0])
        (out / "rows_partial.json").write_text(json.dumps(rows, indent=1))
    sampling_figures(out, keep)
    rows += [{"name": "data_floor", "sample_energy_distance": ref["sample_energy_distance_floor"],
              "sample_precision": ref.get("sample_precision_floor")},
             {"name": "noise_ceiling", "sample_energy_distance": ref["sample_energy_distance_noise"]}]
    digits = {}
    for T in (DIGITS_T[:1] if quick else DIGITS_T):
        m, trainer, secs = digits_run(out, T, quick)
        row = next(r for r in rows if r["name"] == f"T{T}_K3")
        row["digits_fd"], digits[T] = m["digits_fd"], m
        if T == 10 or quick:
            sampling_figures(out, trainer, "_digits")
        (out / "rows_partial.json").write_text(json.dumps(rows, indent=1))
    return summarise(out, rows, digits, quick)


def verdict(rows: list[dict]) -> tuple[bool, dict]:
    """The interior-optimum check of the module docstring on the toy T x K grid."""
    grid = [r for r in rows if r["name"].startswith("T")]
    best = min(grid, key=lambda r: r["sample_energy_distance"])
    products = sorted({r["steps"] for r in grid})
    largest = max(grid, key=lambda r: (r["steps"], -r["sample_energy_distance"]))
    floor = next(r for r in rows if r["name"] == "data_floor")["sample_energy_distance"]
    interior = products[0] < best["steps"] < products[-1]
    drop = largest["sample_energy_distance"] - best["sample_energy_distance"]
    return bool(interior and drop > 2 * floor), {"best": best["name"], "best_steps": best["steps"],
                                                  "largest": largest["name"], "drop_at_largest": drop,
                                                  "noise_scale": 2 * floor}


def summarise(out: Path, rows: list[dict], digits: dict, quick: bool) -> dict:
    """The verdict on the T x K ablation, its figure and ``results.md``/``results.json``."""
    holds, info = verdict(rows)
    grid = [r for r in rows if r["name"].startswith("T")]
    series = {f"K={K}": ([r["T"] for r in grid if r["K"] == K], [r["sample_energy_distance"] for r in grid if r["K"] == K])
              for K in sorted({r["K"] for r in grid})}
    plots.line_plot(series, out / "ablation_TK.png", "number of time steps T", "sample energy distance (data units)",
                    title=f"paper 002 on {TOY}: K Langevin steps per time step",
                    logy=True)
    claim = ("sample quality has an interior optimum in the total number of sampling steps T x K "
             "(paper 002 Tables 4-5: best at T x K = 60, worse with more steps)")
    notes = [f"{'Quick smoke run: numbers are meaningless. ' if quick else ''}Toy: {TOY}. Best toy setting "
             f"{info['best']} (T x K = {info['best_steps']}); largest product {info['largest']} is worse by "
             f"{info['drop_at_largest']:.4g} (noise scale 2 x data_floor = {info['noise_scale']:.4g}).",
             "One seed per setting; density_kl is for exp(-E(x, t=1)), not for the samples."]
    for T, m in digits.items():
        notes.append(f"digits T{T}_K3 ({DIGITS_STEPS if not quick else 3} iterations): digits_fd {m['digits_fd']:.4g} "
                     f"(floor {m['digits_fd_floor']:.4g}, noise {m['digits_fd_noise']:.4g}), "
                     f"class entropy {m['digits_class_entropy']:.3g}, confidence {m['digits_confidence']:.3g}.")
    notes.append("Figures: sampling_process*.png (Fig. 1), interpolation*.png (Sec. 5.1), ablation_TK.png.")
    result = write_results(out, "002", rows, COLUMNS, claim, holds, "\n\n".join(notes))
    result.update(info, toy=TOY, quick=quick)
    write_json(out, result)
    return result
