"""``ebmlab experiment paper002``: the T / K / sigma ablations of paper 002 (Tables 4-6) at CPU scale,
over seeds, with eta tuned per cell (App. A.1), through the claim harness (``experiments/claims.py``).

Toy with an exact density (shipped config ``paper002_8gaussians``, dataset ``TOY``), every cell the same
budget (the config's 1,500 iterations) and seeds ``claims.SEEDS`` (one-thread processes, two at a time):

- the T x K grid, T in ``GRID_T`` and K in ``GRID_K`` (``--full``: ``FULL_T`` x ``FULL_K``, toward the
  paper's Tables 4-5, which go to T 40 and K 30), sigma 0.3; arms ``T{T}_K{K}``;
- eta per grid cell by App. A.1's rule ("we initially tuned eta so that the energy of generated samples
  is slightly below the energy of real images at the final sampling step"):
  ``experiments/eta_search.tune_eta_by_training`` trains one short model (``TUNE_STEPS`` iterations,
  seed ``TUNE_SEED``, not one of the evaluation seeds) per candidate in ``ETA_CANDIDATES`` and picks the
  smallest eta whose t = 1 gap E(x+) - E(x_gen) reaches 0 (the largest candidate if none does);
- the sigma ablation of Table 6 at T = 20, K = 3, sigma in ``SIGMAS``, each sigma with its own eta tuned by the
  same rule (Sec. 5: eta is adjusted "according to the total number of steps and noise variance in each
  experiment"; tuning arms ``tune_T20_K3_sigma{s}``); arms ``sigma{s}``;
- digits (shipped config ``paper002_digits``, ``DIGITS_STEPS`` iterations): Table 4's row T in ``DIGITS_T`` at
  K = 3, arms ``digits_T{T}_K3``, column ``digits_fd``, each T with its eta tuned by the same rule among
  ``DIGITS_ETA_CANDIDATES`` (factor-2 steps around 0.5, the config's eta when they were fixed; tuning arms
  ``tune_digits_T{T}_K3``).

Columns: ``sample_energy_distance`` (samples from N(0, I) through the T x K-step process vs fresh data,
data coordinates), ``sample_precision`` (fraction above the 1 % quantile of the data's exact
log-density), ``density_kl`` of exp(-E(x, t = 1)) on a grid (the Boltzmann density at the last time
step, not the density of the samples), ``eta`` (the tuned step) and ``digits_fd``.

The claim (Tables 4-5): sample quality has an interior optimum in the total number of steps T x K (the
paper: best at T x K = 60, worse with more steps). Sub-claims, margins fixed before any run (energy
distance, data units; the data-vs-data floor is ~0.005): T20_K3 (60 steps) beats every other cell of Table 4's
row (T at K = 3) and of Table 5's (K at T = 20) that the grid holds by more than 0.005 on every seed. (Until
2026-12-06 the sub-claims compared T20_K3 with the grid's corners, T3_K1 and the largest T x K, which are not
rows of those tables.)
Figures: ``sampling_process.png`` / ``sampling_process_digits.png`` (Fig. 1), ``interpolation*.png``
(Sec. 5.1 / Fig. 3), ``ablation_TK.png``.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ebmlab import plots
from ebmlab.applications.interpolation import interpolate
from ebmlab.errors import ExperimentError
from ebmlab.experiments import claims
from ebmlab.experiments.claims import Cell, Claim
from ebmlab.experiments.runner import experiment_config, train_cell

TOY = "8gaussians"
GRID_T, GRID_K = (3, 10, 20, 30), (1, 3, 10)
FULL_T, FULL_K = (3, 6, 10, 20, 30, 40), (1, 3, 5, 10, 30)
SIGMAS = (0.005, 0.05, 0.1, 0.5)
DIGITS_T, DIGITS_STEPS = (3, 10, 20), 500
ETA_CANDIDATES, TUNE_STEPS, TUNE_SEED = (0.1, 0.2, 0.4, 0.8), 300, 100
DIGITS_ETA_CANDIDATES = (0.125, 0.25, 0.5, 1.0)
ED_MARGIN = 0.005
METRICS = ["sample_energy_distance", "sample_precision", "density_kl", "eta", "digits_fd"]
QUICK_TOY_STEPS, QUICK_DIGITS_STEPS = 20, 3
QUICK_TOY = [f"train.steps={QUICK_TOY_STEPS}", "data.n_train=2000", "eval.n_samples=300", "eval.grid_size=40",
             "method.buffer_size=512", "train.batch_size=64"]
QUICK_DIGITS = [f"train.steps={QUICK_DIGITS_STEPS}", "eval.n_samples=64", "train.batch_size=32", "method.buffer_size=64"]


def toy_sets(T: int, K: int, sigma: float, quick: bool) -> list[str]:
    """Overrides of one toy cell (before eta)."""
    return [f"data.name={TOY}", f"method.T={T}", f"method.K={K}", f"method.sigma={sigma}"] + (QUICK_TOY if quick else [])


def tune_fn(params: dict, seed: int, run_dir: Path) -> dict:
    """A tuning cell: App. A.1's eta for one (T, K) (seed ``TUNE_SEED``, short trainings)."""
    from ebmlab.experiments.eta_search import tune_eta_by_training
    cfg = experiment_config(params["config"], params["overrides"], threads=1)
    res = tune_eta_by_training(cfg, params["candidates"], params["steps"], seed=seed)
    return {"eta": res.eta, "reached": float(res.reached), **{f"gap_eta{k:g}": v for k, v in res.gaps.items()},
            "step": params["steps"]}


def cell_fn(params: dict, seed: int, run_dir: Path) -> dict:
    """An evaluation cell: train with the tuned eta, evaluate; figures for the reference cell."""
    eta = params.get("eta")
    sets = params["overrides"] + ([f"method.eta={eta}"] if eta is not None else [])
    figures = params.get("figures")  # None, or the figure files' suffix ("" for the toy)
    out = train_cell(params["config"], sets, seed, run_dir,
                     measure=(lambda arm: _figures(arm, run_dir, figures)) if figures is not None else None)
    if eta is not None and not out.get("diverged"):
        out["eta"] = eta
    return out


def _figures(arm, run_dir: Path, suffix: str) -> dict:
    sampling_figures(Path(run_dir), arm.trainer, suffix)
    return {}


def grid(quick: bool, full: bool) -> list[tuple[int, int]]:
    """The (T, K) cells: quick (tiny), default or ``--full``."""
    if quick:
        return [(2, 1), (2, 3), (3, 3)]
    ts, ks = (FULL_T, FULL_K) if full else (GRID_T, GRID_K)
    return [(T, K) for T in ts for K in ks]


def reference(quick: bool) -> tuple[int, int]:
    """The paper's best setting, T x K = 60 (quick: the middle cell)."""
    return (2, 3) if quick else (20, 3)


def sigmas(quick: bool) -> tuple[float, ...]:
    """The sigma ablation's values (quick: the last one)."""
    return SIGMAS[-1:] if quick else SIGMAS


def _tune_cell(arm: str, config: str, overrides: list[str], candidates, steps: int) -> Cell:
    """A tuning cell (seed ``TUNE_SEED``): App. A.1's eta among ``candidates`` for ``config`` + ``overrides``."""
    return Cell(arm, TUNE_SEED, tune_fn, {"config": config, "overrides": overrides, "candidates": list(candidates),
                                          "steps": steps})


def tuning_cells(cells_tk, quick: bool, sigma: float = 0.3) -> list[Cell]:
    """One tuning cell per (T, K) at ``sigma`` (arm ``tune_T{T}_K{K}``, with ``_sigma{s}`` off the grid's 0.3)."""
    steps, tag = 5 if quick else TUNE_STEPS, "" if sigma == 0.3 else f"_sigma{sigma}"
    return [_tune_cell(f"tune_T{T}_K{K}{tag}", "paper002_8gaussians", toy_sets(T, K, sigma, quick), ETA_CANDIDATES,
                       steps) for T, K in cells_tk]


def digits_ts(quick: bool) -> tuple[int, ...]:
    """The digits row's T (quick: the first)."""
    return DIGITS_T[:1] if quick else DIGITS_T


def digits_sets(T: int, quick: bool) -> list[str]:
    """Overrides of one digits cell (before eta)."""
    return [f"method.T={T}", "method.K=3", f"train.steps={DIGITS_STEPS}"] + (QUICK_DIGITS if quick else [])


def digits_tuning_cells(quick: bool) -> list[Cell]:
    """One tuning cell per T of the digits row (arm ``tune_digits_T{T}_K3``)."""
    steps = QUICK_DIGITS_STEPS if quick else TUNE_STEPS
    return [_tune_cell(f"tune_digits_T{T}_K3", "paper002_digits", digits_sets(T, quick), DIGITS_ETA_CANDIDATES, steps)
            for T in digits_ts(quick)]


def evaluation_cells(cells_tk, etas: dict, quick: bool, seeds, sigma_etas: dict,
                     digits_etas: dict) -> dict[str, list[Cell]]:
    """{table: cells}: the T x K grid (``etas`` per (T, K)), the sigma ablation (``sigma_etas`` per sigma), the
    digits row (``digits_etas`` per T)."""
    ref = reference(quick)
    toy = [Cell(f"T{T}_K{K}", s, cell_fn, {"config": "paper002_8gaussians", "overrides": toy_sets(T, K, 0.3, quick),
                                           "eta": etas[(T, K)], "figures": "" if (T, K) == ref else None})
           for T, K in cells_tk for s in seeds]
    sig = [Cell(f"sigma{sg}", s, cell_fn, {"config": "paper002_8gaussians", "overrides": toy_sets(*ref, sg, quick),
                                           "eta": sigma_etas[sg]}) for sg in sigmas(quick) for s in seeds]
    dig = [Cell(f"digits_T{T}_K3", s, cell_fn, {"config": "paper002_digits", "figures": "_digits" if T == 10 else None,
                                                "overrides": digits_sets(T, quick), "eta": digits_etas[T]})
           for T in digits_ts(quick) for s in seeds]
    return {"T x K grid (toy)": toy, "sigma ablation (toy, T20_K3)": sig, "digits (K = 3)": dig}


def sub_claims(cells_tk, quick: bool) -> list[Claim]:
    """The reference (T x K = 60) against every other cell of Table 4's row (T at the reference's K) and of Table
    5's (K at the reference's T) in the grid."""
    ref_t, ref_k = reference(quick)
    ref = f"T{ref_t}_K{ref_k}"
    rows = [(T, K) for T, K in cells_tk if (K == ref_k) != (T == ref_t)]  # on exactly one of the two rows
    return [Claim(f"{ref} generates better than T{T}_K{K} (Table {4 if K == ref_k else 5}: "
                  f"{'T' if K == ref_k else 'K'} = {T if K == ref_k else K})", ref, f"T{T}_K{K}",
                  "sample_energy_distance", "lower", ED_MARGIN) for T, K in rows]


settings = claims.quick_or_full  # what changes every cell (experiment.json): --quick ignores --full


def run(out: Path, quick: bool = False, seeds=claims.SEEDS, jobs: int = 2, full: bool = False) -> dict:
    """Paper 002's experiment into ``out``; returns the results dict (``claims.write_claim_results``)."""
    out, t0 = Path(out), time.time()
    cells_tk = grid(quick, full)
    tune = tuning_cells(cells_tk, quick)  # one per (T, K), in the grid's order, then one per sigma at the reference
    tune_sigma = [c for sg in sigmas(quick) for c in tuning_cells([reference(quick)], quick, sg)]
    tune_digits = digits_tuning_cells(quick)
    tuned = claims.run_cells(out, tune + tune_sigma + tune_digits, jobs=jobs)
    etas = {tk: _tuned_eta(out, tuned, cell) for tk, cell in zip(cells_tk, tune)}
    sigma_etas = {sg: _tuned_eta(out, tuned, cell) for sg, cell in zip(sigmas(quick), tune_sigma)}
    digits_etas = {T: _tuned_eta(out, tuned, cell) for T, cell in zip(digits_ts(quick), tune_digits)}
    tables_cells = evaluation_cells(cells_tk, etas, quick, seeds, sigma_etas, digits_etas)
    records, tables = claims.run_tables(out, tables_cells, METRICS, seeds, jobs)
    verdicts = [claims.decide(c, tables["T x K grid (toy)"]) for c in sub_claims(cells_tk, quick)]
    _collect_figures(out, tables_cells, seeds[0])
    _ablation_figure(out, tables["T x K grid (toy)"], cells_tk)
    claim = ("sample quality has an interior optimum in the total number of sampling steps T x K "
             "(paper 002 Tables 4-5: best at T x K = 60, worse with more steps)")
    tuning = {c.arm[5:]: tuned[(c.arm, TUNE_SEED)]["metrics"] for c in tune + tune_sigma + tune_digits}
    notes = _notes(quick, full, tuning, records, seeds)
    return claims.write_claim_results(out, "002", claim, tables, verdicts, seeds, {t: METRICS for t in tables}, notes,
                                      extra={"eta_tuning": tuning, "wall_seconds": round(time.time() - t0, 1),
                                             "quick": quick, "full": full, "toy": TOY})


def _tuned_eta(out: Path, tuned: dict, cell: Cell) -> float:
    """The eta of a tuning cell; ExperimentError if that cell failed or diverged (its evaluation cells would have
    no eta to train with: the protocol's eta is the tuned one, not a default)."""
    record = tuned[(cell.arm, cell.seed)]
    if "eta" not in record["metrics"]:
        reason = record["failed"] or f"diverged: {record['diverged']}"
        where = claims.cell_dir(out, cell)  # (a failed cell is a result: kept, and reused by a rerun)
        raise ExperimentError(f"the eta tuning cell {cell.arm} did not finish ({reason}), so its (T, K) has no eta to "
                              f"train with; its traceback is in {where / 'failure.txt'}; to try it again, remove "
                              f"{where} and rerun the same command (the finished cells are reused)")
    return record["metrics"]["eta"]


def _notes(quick: bool, full: bool, tuning: dict, records: dict, seeds) -> str:
    floor = [r["metrics"].get("sample_energy_distance_floor") for k, r in records.items()
             if k[0].startswith("T") and r["metrics"]]
    noise = [r["metrics"].get("sample_energy_distance_noise") for k, r in records.items()
             if k[0].startswith("T") and r["metrics"]]
    trained = f"{QUICK_TOY_STEPS} updates per toy cell, {QUICK_DIGITS_STEPS} per digits cell"
    lines = [f"{claims.quick_note(quick, trained)}Toy: {TOY}; grid "
             f"{'--full' if full else 'default'}; 1,500 iterations per toy cell, {DIGITS_STEPS} per digits cell.",
             f"Energy distance floor (data vs data) {claims.fmt_number(floor[0] if floor else None)}, noise start "
             f"{claims.fmt_number(noise[0] if noise else None)}.", "",
             f"## eta per cell (App. A.1; short trainings of {TUNE_STEPS} iterations, seed {TUNE_SEED})", "",
             "| cell | eta | reached gap >= 0 | gap per candidate |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['eta']:g} | {'yes' if v['reached'] else 'no'} | "
              + ", ".join(f"{g[7:]}: {claims.fmt_number(x)}" for g, x in v.items() if g.startswith("gap_eta")) + " |"
              for k, v in tuning.items()]
    lines += ["", "density_kl is for exp(-E(x, t=1)), not for the samples. Figures: sampling_process*.png (Fig. 1), "
              "interpolation*.png (Sec. 5.1), ablation_TK.png."]
    return "\n".join(lines) + "\n"


def _collect_figures(out: Path, tables_cells: dict, seed: int) -> None:
    """Copy the figures the reference cells drew into ``out``."""
    import shutil
    for cells in tables_cells.values():
        for c in cells:
            if c.seed == seed and c.params.get("figures") is not None:
                for png in claims.cell_dir(out, c).glob("*.png"):
                    shutil.copy(png, Path(out) / png.name)


def _ablation_figure(out: Path, table: dict, cells_tk) -> None:
    """Mean energy distance over seeds against T, one line per K (per-seed values are in results.md)."""
    series = {}
    for K in sorted({k for _, k in cells_tk}):
        ts = [T for T, k in cells_tk if k == K]
        series[f"K={K}"] = (ts, [table[f"T{T}_K{K}"]["sample_energy_distance"]["mean"] for T in ts])
    plots.line_plot(series, Path(out) / "ablation_TK.png", "number of time steps T",
                    "sample energy distance (data units, mean over seeds)",
                    title=f"paper 002 on {TOY}: K Langevin steps per time step", logy=True)


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
    plots.save_figure(fig, path)
