"""``ebmlab experiment leaderboard``: every method on the same data with the same wall-clock budget (issue 18).

Protocol (docs/leaderboard.md):

- **Cells.** Every method of ``objectives.METHODS`` x every dataset of ``DATASETS`` x seeds
  ``claims.SEEDS``, each cell a one-thread process on the claim harness (``claims.run_cells``: two at a
  time, cached, a rerun skips finished cells, a failing cell is shown as failed with its reason).
- **Same budget.** Every cell trains for ``--budget`` seconds of wall time on one thread
  (``train.time_budget``; ``train.steps`` is set out of reach), and records the updates it made, its
  training wall and CPU seconds. No per-method tuning: each method starts from its paper's shipped config
  (``METHODS``: its toy config on vectors, its digits config on digits; a paper's config written for
  that very dataset where it ships one, ``DATASET_CONFIGS``), with that paper experiment's own arm
  overrides (paper 003's DRL, paper 000's per_t / cd_plain). One more row, ``ebmlab_default``, is the
  library's own defaults (the default config; ``digits_hybrid`` on digits; on a table also the user-data
  defaults, ``config.USER_DATA_DEFAULTS``): what a user's ``--data`` run trains, compared with the
  baselines. What the leaderboard sets for every method alike: the data (``DATASETS``: the same rows,
  vectors standardised; on a table ``ebmlab_default``'s user-data defaults also whiten them, jitter its
  training draws and keep a tenth of its training rows as a validation split), the evaluation (``EVAL``), one thread.
- **Metrics**, all by ``training/evaluate.evaluate`` (the code every run is scored with): ``density_kl``
  (toys, on the (x1, x2) slice), ``sample_precision``, ``sample_in_support_share``,
  ``sample_mode_mass_error`` (the method's own generation procedure), ``sample_energy_distance``,
  ``digits_fd``; ``ood_auroc_<set>`` (-energy, held-out data vs each of the dataset's fixed OOD sets);
  and the cost: ``updates``, ``train_wall_seconds``, ``train_cpu_seconds``, ``eval_seconds`` and
  ``sampler_evals_per_sample`` (energy-network evaluations per generated sample, counted by forward
  hooks on the objective's ``energy`` or, for cdrl and drl whose levels call it through ``net_energy``,
  on ``energy.net``, while the figure's samples are drawn; gradient-based steps add one backward to
  each; cdrl's initializer network is not an energy evaluation and is not counted); ``host_floor_ms``, the
  CPU ms of one forward+backward of the default energy on the cell's host (``experiments/host_speed``,
  measured after training), since a wall-clock budget buys updates in inverse proportion to it.
- **Baselines** (``metrics/baselines.py``): a Gaussian mixture and a kernel density estimate fitted on
  the same training rows, scored by the same code through ``FittedDensity`` (the part of the
  ``Objective`` contract that evaluation uses).

Output: ``results.md`` (mean +- std and the rank per dataset and metric, failed cells with reasons),
``summary.md`` (the means and ranks only, as docs/leaderboard.md quotes them), ``results.json`` (per-seed values),
``samples_grid.png`` (methods x datasets, seed ``seeds[0]``); the ranks,
verdicts, tables and figure are ``experiments/leaderboard_report.py``.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ebmlab.config import apply_overrides, user_data_overrides
from ebmlab.data import build_dataset
from ebmlab.data.tabular import TABLES, outliers
from ebmlab.errors import ConfigError
from ebmlab.experiments import claims, paper000, paper003
from ebmlab.experiments.claims import Cell
from ebmlab.experiments.host_speed import floor_ms
from ebmlab.experiments.own_methods import known_in_worker, own_method_overrides, own_method_params, own_methods
from ebmlab.experiments.leaderboard_report import (  # noqa: F401
    better, dataset_markdown, figure, ranks, summary_markdown, verdicts)
from ebmlab.experiments.runner import device_generator, experiment_config, train_cell
from ebmlab.files import save_npy_atomic, write_text_atomic
from ebmlab.metrics.baselines import BASELINES
from ebmlab.metrics.ood import auroc
from ebmlab.objectives.base import SampleOutput
from ebmlab.training import image_eval
from ebmlab.training.evaluate import evaluate
from ebmlab.training.run import open_run, read_run_config

BUDGET, BUDGET_FULL, QUICK_BUDGET = 20.0, 120.0, 1.0   # seconds of training per cell (see docs/leaderboard.md)
NEVER = 10**9                                           # train.steps: out of reach, the budget decides
FIG_N = {"vector": 500, "image": 64}                    # samples per figure panel

# dataset -> (data overrides, OOD sets): toys shifted (+1 std per coordinate) / scaled (x1.5) held-out data
# (training/image_eval.ood_set), digits flipped / pixel-shuffled, the table's other class
TOY = ["data.standardize=true", "data.n_train=20000", "data.n_test=5000"]
DATASETS = {
    "mixture": (["data.name=mixture"] + TOY, ("shifted", "scaled")),
    "checkerboard": (["data.name=checkerboard"] + TOY, ("shifted", "scaled")),
    "rings": (["data.name=rings"] + TOY, ("shifted", "scaled")),
    "digits": (["data.name=digits"], ("digits_flipped", "digits_shuffled")),
    "breast_cancer": (["data.name=breast_cancer", "data.standardize=true"], ("other_class", "scaled")),
}
IMAGE_DATASETS = ("digits",)
# method -> (vector config, digits config, that paper's arm overrides): the papers' shipped configs
DEFAULT_ROW = "ebmlab_default"
_SCHEME = {s: (f"paper004_rings_{s}", "digits_hybrid", [f"method.name={s}"])
           for s in ("data", "noise", "persistent", "persistent_refresh", "hybrid")}
METHODS = {**_SCHEME,
           "improved_cd": ("paper001_toy", "paper001_digits", []),
           "implicit_diffusion": ("paper002_8gaussians", "paper002_digits", []),
           "cdrl": ("paper003_checkerboard", "paper003_digits", []),
           "drl": ("paper003_checkerboard", "paper003_digits", paper003.DRL),
           "cd_ce": ("paper000_spiral_cdce", "paper000_digits_cdce", []),
           "joint_cd": ("paper000_spiral_jointcd", "paper000_digits_cdce", ["method.name=joint_cd", "method.ce_weight=0"]),
           "per_t": ("paper000_spiral_cdce", "paper000_digits_cdce", paper000.ARMS["per_t"][1]),
           "cd_plain": ("paper000_spiral_cdce", "paper000_digits_cdce", paper000.ARMS["cd_plain"][1]),
           # not a paper's method: the library's defaults, what `ebmlab train --data FILE` trains (the
           # default config on vectors: hybrid, lambda 5, AIS noise chains), and the shipped digits config
           DEFAULT_ROW: ("default", "digits_hybrid", [])}
DATASET_CONFIGS = {("implicit_diffusion", "checkerboard"): "paper002_checkerboard"}
EVAL = {"vector": ["eval.n_samples=1000", "eval.grid_size=100", "eval.long_run_factor=1", "eval.plots=false"],
        "image": ["eval.n_samples=500", "eval.long_run_factor=1", "eval.plots=false", "eval.digits_fd=true"]}
QUICK_METHODS, QUICK_DATASETS = ("hybrid", "improved_cd"), ("mixture", "breast_cancer")
QUICK = ["model.width=32", "model.depth=1", "data.n_train=2000", "eval.n_samples=200", "eval.grid_size=30"]

# host_floor_ms: the CPU ms of one forward+backward of the default energy on the cell's host (experiments/host_speed):
# a wall-clock budget buys updates in inverse proportion to it
COST = ["updates", "train_wall_seconds", "train_cpu_seconds", "eval_seconds", "sampler_evals_per_sample",
        "host_floor_ms"]
QUALITY = {"toy": ["density_kl", "sample_precision", "sample_in_support_share", "sample_mode_mass_error",
                   "sample_energy_distance"],
           "image": ["digits_fd"], "table": ["sample_energy_distance_heldout", "sample_energy_distance"]}
# metrics added after cells of the published grids ran: a cached cell without them is rescored from its stored
# run (``rescore_fn``; a baseline is refitted), not retrained (``claims.Cell.requires``)
REQUIRES = {"table": ("sample_energy_distance_heldout",)}


def kind(dataset: str) -> str:
    """"image" for the image datasets (``IMAGE_DATASETS``), else "vector"."""
    return "image" if dataset in IMAGE_DATASETS else "vector"


def group(dataset: str) -> str:
    """"image", "table" (no exact density: a user's ``--data`` case) or "toy"."""
    return "image" if kind(dataset) == "image" else ("table" if dataset in TABLES else "toy")


def metrics_of(dataset: str) -> list[str]:
    """The ranked metrics of ``dataset`` (quality, then one OOD AUROC per OOD set)."""
    return QUALITY[group(dataset)] + [f"ood_auroc_{s}" for s in DATASETS[dataset][1]]


# ----- one cell ------------------------------------------------------------------------------------
def method_overrides(method: str, dataset: str, budget: float, quick: bool) -> tuple[str | None, list[str]]:
    """(base config, overrides) of one method on one dataset: the paper's config (a method of the user's own: the
    library's defaults, ``own_methods.own_method_overrides``), the leaderboard's data, evaluation and budget."""
    if method in METHODS:
        vec_cfg, img_cfg, arm = METHODS[method]
        config = DATASET_CONFIGS.get((method, dataset), img_cfg if kind(dataset) == "image" else vec_cfg)
    else:
        config, arm = None, own_method_overrides(method, image=kind(dataset) == "image",
                                                 image_config=METHODS[DEFAULT_ROW][1])
    sets = arm + DATASETS[dataset][0] + EVAL[kind(dataset)]
    if method == DEFAULT_ROW and group(dataset) == "table":  # what `ebmlab train --data FILE` adds for user vectors
        sets = user_data_overrides(apply_overrides({}, sets)) + sets
    sets += [f"train.steps={NEVER}", f"train.time_budget={budget}"] + (QUICK if quick and kind(dataset) == "vector" else [])
    return config, sets


def cell_fn(params: dict, seed: int, run_dir: Path) -> dict:
    """One method cell: train for the budget, evaluate, add OOD AUROCs, cost and the figure's samples."""
    known_in_worker(params)
    def measure(arm) -> dict:
        obj, data = arm.trainer.objective, arm.trainer.data
        stats = arm.trainer.fit_stats
        obj.eval()  # as evaluate measures (evaluate leaves it in train mode: spectral norm's power iterations)
        x, evals = figure_samples(obj, data, seed, count=True)
        save_npy_atomic(Path(run_dir) / "figure_samples.npy", x)
        return {"updates": stats["updates"], "train_wall_seconds": stats["wall_seconds"],
                "train_cpu_seconds": stats["cpu_seconds"], "sampler_evals_per_sample": evals,
                **ood_aurocs(obj, data, params["ood"], seed), "host_floor_ms": floor_ms()}
    return train_cell(params["config"], params["overrides"], seed, Path(run_dir), measure=measure)


def rescore_fn(params: dict, seed: int, run_dir: Path) -> dict:
    """A finished method cell's evaluation and OOD AUROCs again, from its stored run (its result, ``open_run``:
    ``best.safetensors`` when selection chose one, else the final checkpoint; EMA weights): the metrics
    ``cell_fn`` records after training, without training (``claims.Cell.rescore``)."""
    known_in_worker(params)
    cfg, objective, data = open_run(run_dir)
    m = {k: v for k, v in evaluate(objective, data, cfg, None).items() if isinstance(v, (int, float))}
    objective.eval()  # (evaluate leaves it in train mode), as ``cell_fn`` measures
    return {**m, **ood_aurocs(objective, data, params["ood"], seed)}


class FittedDensity(nn.Module):
    """A fitted baseline behind the part of the ``Objective`` contract that evaluation uses: ``prior``,
    ``sample`` (independent draws), ``steps_run`` (none), ``log_density`` (exact), ``score`` = -log-density."""
    has_log_density = True
    n_steps_default = 0

    def __init__(self, fitted):
        super().__init__()
        self.fitted = fitted
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # where evaluation finds the device

    def prior(self, n: int, generator=None) -> torch.Tensor:
        """(n, ...) N(0, I) draws (the contract's start points; a baseline's samples do not use them)."""
        return torch.randn(n, *self.fitted.shape, generator=generator)

    def sample(self, n: int, *, generator=None, n_steps=None, x0=None, cond=None) -> SampleOutput:
        """n independent draws of the fitted density (``n_steps``, ``x0``, ``cond`` do not apply)."""
        return SampleOutput(self.fitted.sample(n, generator), {})

    def steps_run(self, n_steps: int | None = None) -> int:
        """0: a draw runs no sampler steps (evaluation's progress bar counts none)."""
        return 0

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) the fitted (normalised) log-density."""
        return self.fitted.log_density(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) -log-density: the energy the OOD metrics rank by."""
        return -self.fitted.log_density(x)


def baseline_fn(params: dict, seed: int, run_dir: Path) -> dict:
    """One baseline cell: fit on the training rows (model coordinates), evaluate with the same code."""
    cfg = experiment_config(None, params["overrides"] + [f"train.seed={seed}"], threads=1)
    data = build_dataset(cfg.data)
    t0 = time.time()
    fitted = BASELINES[params["baseline"]](data.train, seed)
    fit_seconds = time.time() - t0
    model = FittedDensity(fitted)
    t1 = time.time()
    m = {k: v for k, v in evaluate(model, data, cfg, None).items() if isinstance(v, (int, float))}
    m.update(ood_aurocs(model, data, params["ood"], seed), eval_seconds=round(time.time() - t1, 1))
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    save_npy_atomic(Path(run_dir) / "figure_samples.npy", figure_samples(model, data, seed)[0])
    write_text_atomic(Path(run_dir) / "search.json", json.dumps({"chosen": fitted.chosen, "search": fitted.search},
                                                                indent=1))
    chosen = {f"chosen_{k}": v for k, v in fitted.chosen.items()}
    return {**m, **chosen, "train_wall_seconds": round(fit_seconds, 1), "step": 0}


def figure_samples(objective, data, seed: int, count: bool = False) -> tuple[np.ndarray, float | None]:
    """(samples for the figure in data coordinates, projected to 2-D for vectors; energy-network
    evaluations per sample while drawing them when ``count``: ``evaluation_counter``)."""
    n = FIG_N[data.kind]
    counter = evaluation_counter(objective.energy) if count else None
    with counter or contextlib.nullcontext():
        x = objective.sample(n, generator=device_generator(objective, seed + 23)).x.detach().cpu()
    return project(data.transform.to_data(x), data).numpy(), (counter() / n if counter and counter() else None)


class evaluation_counter:
    """Context manager counting the rows ``energy`` evaluates: forward hooks on ``energy`` and, for an
    energy whose procedures call its network through other methods (cdrl and drl's ``net_energy`` on
    every noise level), on ``energy.net``. The call returns the count: the energy's own rows when it was
    called, else its network's (never both: an energy whose forward calls ``net`` counts each row once)."""

    def __init__(self, energy: nn.Module):
        self.modules = [energy] + ([energy.net] if isinstance(getattr(energy, "net", None), nn.Module) else [])
        self.rows = [0] * len(self.modules)

    def _hook(self, i: int):
        def add(module, args, out):
            self.rows[i] += out.shape[0]
        return add

    def __enter__(self):
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return False

    def __call__(self) -> int:
        return next((r for r in self.rows if r), 0)


def project(x: torch.Tensor, data) -> torch.Tensor:
    """Images unchanged; vectors: the first two coordinates (toys: the rings' structured slice), user
    or tabular data: the top two principal axes of the training rows (in data coordinates)."""
    if data.kind == "image" or x.shape[1] <= 2 or data.dist is not None:
        return x if data.kind == "image" else x[:, :2]
    train = data.transform.to_data(data.train)
    mean = train.mean(0)
    _, _, v = torch.linalg.svd(train - mean, full_matrices=False)
    return (x - mean) @ v[:2].T


def ood_inputs(name: str, data, generator) -> torch.Tensor:
    """The OOD set ``name`` in model coordinates: ``other_class`` = the table's other class, else
    ``training/image_eval.ood_set`` (shifted / scaled vectors, the digits' built-in sets)."""
    if name == "other_class":
        return data.transform.to_model(outliers(data.name))
    return image_eval.ood_set(name, data, generator)


def ood_aurocs(objective, data, names, seed: int) -> dict:
    """AUROC of -energy, held-out data vs each OOD set (higher = better separated)."""
    e_in = image_eval.energies(objective, data.test)
    g = torch.Generator().manual_seed(seed + 19)
    return {f"ood_auroc_{n}": auroc(-e_in, -image_eval.energies(objective, ood_inputs(n, data, g))) for n in names}


# ----- the grid --------------------------------------------------------------------------------------
def budget_for(quick: bool, full: bool, budget: float | None) -> float:
    """The training seconds per cell: ``--budget``, else ``QUICK_BUDGET`` / ``BUDGET_FULL`` / ``BUDGET``; a float (a
    cell's key holds it as text: ``budget=20`` must build the default's cells, "20.0", not "20")."""
    return float(budget or (QUICK_BUDGET if quick else BUDGET_FULL if full else BUDGET))


def settings(quick: bool, full: bool = False, budget: float | None = None) -> dict:
    """What changes every cell (``experiment.json``; ``run_experiment`` refuses other settings into a finished
    ``--out``): ``--full`` only picks the budget, so ``--full`` and ``--budget 120`` are the same cells."""
    return {"quick": bool(quick), "budget": budget_for(quick, full, budget)}


def build_cells(quick: bool, full: bool, budget: float | None, seeds, methods=None, datasets=None) -> dict[str, list[Cell]]:
    """{dataset: cells}: every method (then each baseline) on it, every seed. ``methods`` / ``datasets``:
    a subset of ``METHODS`` / ``DATASETS`` (default: all, or the quick grid); the baselines always run."""
    budget = budget_for(quick, full, budget)
    methods = _subset("method", methods, (*METHODS, *own_methods(METHODS))) or (QUICK_METHODS if quick
                                                                                   else tuple(METHODS))
    datasets = _subset("dataset", datasets, DATASETS) or (QUICK_DATASETS if quick else tuple(DATASETS))
    grid = {}
    for ds in datasets:
        ood, needs = list(DATASETS[ds][1]), REQUIRES.get(group(ds), ())
        cells = []
        for m in methods:
            config, sets = method_overrides(m, ds, budget, quick)
            own = {} if m in METHODS else own_method_params(m)
            cells += [Cell(f"{ds}/{m}", s, cell_fn, {"config": config, "overrides": sets, "ood": ood, **own},
                           fingerprint=config_fingerprint, run_fingerprint=run_config_fingerprint,
                           requires=needs, rescore=rescore_fn) for s in seeds]
        base = DATASETS[ds][0] + EVAL[kind(ds)] + (QUICK if quick and kind(ds) == "vector" else [])
        cells += [Cell(f"{ds}/baseline_{b}", s, baseline_fn, {"baseline": b, "overrides": base, "ood": ood},
                       fingerprint=config_fingerprint, requires=needs, rescore=baseline_fn)
                  for b in BASELINES for s in seeds]
        grid[ds] = cells
    return grid


def config_fingerprint(params: dict, seed: int) -> str:
    """The hash of the config a cell trains (or fits its baseline's data from), resolved by the library as
    it is now: a changed default or a new key makes a cached cell stale (``claims.Cell.fingerprint``); with the design
    of paper 003's UNet initializer where the config builds one (``paper003.blocks_fingerprint``)."""
    sets = list(params["overrides"]) + [f"train.seed={seed}"]
    cfg = experiment_config(params.get("config"), sets, threads=1)
    unet_init = kind(cfg.data.name) == "image" and getattr(cfg.method, "cooperative", False)  # paper 003's initializer
    return cfg.hash() + (f"+{paper003.blocks_fingerprint(params, seed)}" if unet_init else "")


def run_config_fingerprint(run_dir: Path) -> str | None:
    """The hash of the config a method cell's stored run was trained with (``training/run.read_run_config``:
    its ``config.yaml`` with the values older runs ran with for keys whose default changed since, e.g. plain
    AIS), for cells cached before fingerprints were stored; None without one (a baseline cell, a failed start)."""
    return read_run_config(run_dir).hash() if (Path(run_dir) / "config.yaml").is_file() else None


def _subset(what: str, names, known) -> tuple[str, ...] | None:
    """``names`` (a sequence, or None for all) checked against ``known``; one sentence on an unknown name."""
    if names is None:
        return None
    names = tuple(dict.fromkeys(names))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        own = " (and a method of your own, registered or installed: README 'Your own method')" if what == "method" else ""
        raise ConfigError(f"unknown leaderboard {what} {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"the {what}s are: {', '.join(known)}{own}")
    return names


# ----- the experiment --------------------------------------------------------------------------------
def run(out: Path, quick: bool = False, seeds=claims.SEEDS, jobs: int = 2, full: bool = False,
        budget: float | None = None, methods=None, datasets=None, rescore: bool = False) -> dict:
    """The leaderboard into ``out`` (module docstring); returns the ``results.json`` content. ``methods``,
    ``datasets``: run (and rank) only these rows and columns; the baselines always run. ``rescore``:
    evaluate every finished cell again from its stored run (baselines: refitted), for a change to the
    evaluation code; a metric a cell lacks is always computed that way."""
    if budget is not None and not budget > 0:
        raise ValueError(f"--budget must be positive seconds, got {budget}")
    t0 = time.time()
    seeds = tuple(seeds[:1]) if quick else tuple(seeds)
    grid = build_cells(quick, full, budget, seeds, methods, datasets)
    records = claims.run_cells(out, [c for cells in grid.values() for c in cells], jobs=jobs, rescore=rescore)
    spent = budget_for(quick, full, budget)
    result = {"experiment": "leaderboard", "quick": quick, "full": full, "budget_seconds": spent,
              "seeds": list(seeds), "methods": list(dict.fromkeys(c.arm.split("/", 1)[1] for cs in grid.values()
                                                                   for c in cs)), "datasets": {}}
    md = [f"# Leaderboard: every method, the same {spent:g} s of training on one thread per cell\n",
          (f"Seeds {list(seeds)}; mean ± std over seeds, (rank) among methods and baselines on that dataset "
           "and metric (1 = best). Cost columns are means. Protocol: docs/leaderboard.md.\n")]
    summary = [f"{md[0]}\nMean over seeds {list(seeds)}, (rank) among methods and baselines (1 = best, in bold); "
               "updates: mean per cell. Standard deviations and costs: results.md; per-seed values: results.json.\n"]
    for ds, cells in grid.items():
        arms = list(dict.fromkeys(c.arm for c in cells))
        metrics = metrics_of(ds)
        table = claims.summary_table(records, arms, metrics + COST, seeds)
        rank = ranks({a: r for a, r in table.items()}, metrics)
        result["datasets"][ds] = {"metrics": metrics, "better": {m: better(m) for m in metrics}, "table": table,
                                  "ranks": rank, "ood_sets": list(DATASETS[ds][1])}
        md.append(dataset_markdown(ds, table, rank, metrics, COST, DEFAULT_ROW))
        summary.append(summary_markdown(ds, table, rank, metrics))
    figure(out, records, grid, seeds[0])
    result["wall_seconds"] = round(time.time() - t0, 1)
    md.append(f"{'QUICK smoke run: the numbers mean nothing. ' if quick else ''}"
              f"Wall time of this command: {result['wall_seconds']} s (finished cells are reused on a rerun).\n")
    write_text_atomic(Path(out) / "results.json", json.dumps(result, indent=1, default=float))
    write_text_atomic(Path(out) / "results.md", "\n".join(md))
    write_text_atomic(Path(out) / "summary.md", "\n".join(summary))
    print("\n".join(md))
    return result
