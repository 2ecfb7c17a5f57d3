"""``ebmlab experiment data_defaults``: the ``--data`` defaults against candidate changes, on two tables that ship
with scikit-learn (issue 18; docs/leaderboard.md, "Starting from the Gaussian" and "Refitting the start, pairing
the checks"). Not from the papers: the protocol every change of ``config.USER_DATA_DEFAULTS`` was judged by.

- **Arms.** ``default``: what ``ebmlab train --data FILE`` trains (the default config with
  ``config.user_data_overrides``, as the leaderboard's ``ebmlab_default`` row on a table); each candidate of
  ``CANDIDATES``: the default plus its keys (``--methods`` picks arms).
- **Data.** ``breast_cancer`` (trained on the benign rows) and ``wine`` (cultivar 1), with the leaderboard's
  held-out split; the out-of-distribution set is the other class(es) (``--datasets`` picks).
- **Cells.** Every arm x dataset x seed (``--seeds``, default ``SEEDS`` = 0-5) trains for ``--budget`` seconds
  (default 20; ``--full``: 120) on one thread, two cells at a time (``claims.run_cells``; cached).
- **Metrics.** ``heldout_ed7``: the mean over ``DRAWS`` draws (generator seeds ``DRAW_SEED`` + k) of the held-out
  energy distance of 1,000 samples of the run's result (``training/heldout.heldout_draws``: one draw is a noisy
  reading); ``ood_auroc_other_class``; ``selected_step`` (0: the start won); ``updates``.
- **Verdict** per candidate and dataset, the rule each adoption used: *passes* iff its mean ``heldout_ed7`` is at
  most the default's and its mean AUROC at least the default's - ``AUROC_SLACK``.
- **Reference rows** (no training, ``REFERENCES``): exact draws of the training rows' Gaussian (what the default's
  start is), of the Gaussian of training and validation rows (a refitted start) and of the leaderboard's GMM
  baseline (seed 0), ``EXACT_DRAWS`` draws each: the expected held-out energy distance, which 7 draws only
  estimate (mean and standard error).

Output: ``results.md``, ``results.json`` (per-seed values, verdicts).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from ebmlab.config import apply_overrides, user_data_overrides
from ebmlab.data import build_dataset
from ebmlab.data.dataset import refit_transform
from ebmlab.errors import ConfigError
from ebmlab.experiments import claims
from ebmlab.experiments import leaderboard as lb
from ebmlab.experiments.claims import Cell
from ebmlab.experiments.runner import experiment_config, train_cell
from ebmlab.metrics.baselines import fit_gmm
from ebmlab.metrics.distances import energy_distance
from ebmlab.training.heldout import heldout_draws, zscorer

SEEDS = (0, 1, 2, 3, 4, 5)      # the seeds of every rule in docs/leaderboard.md
DATASETS = ("breast_cancer", "wine")
CANDIDATES = {"refit": ["train.select_refit=true"], "paired": ["train.select_paired=true"]}
DRAWS, DRAW_SEED, SAMPLES = 7, 100, 1000
EXACT_DRAWS = 200
AUROC_SLACK = 0.01
REFERENCES = ("gaussian_train", "gaussian_train_val", "gmm")
METRICS = ["heldout_ed7", "ood_auroc_other_class", "selected_step", "updates"]
QUICK_SETS = ["model.width=16", "model.depth=1", "method.n_steps=3", "method.n_steps_data=2", "eval.n_samples=50"]


def overrides(dataset: str, arm: str, budget: float, quick: bool) -> list[str]:
    """The ``--set`` list of one arm on one table: the user-data defaults, the arm's keys, the budget."""
    base = [f"data.name={dataset}", "data.standardize=true"] + lb.EVAL["vector"]
    sets = user_data_overrides(apply_overrides({}, base)) + base + CANDIDATES.get(arm, [])
    return sets + [f"train.steps={lb.NEVER}", f"train.time_budget={budget}"] + (QUICK_SETS if quick else [])


def cell_fn(params: dict, seed: int, run_dir: Path) -> dict:
    """Train one arm on one table for the budget; score the run's result."""
    def measure(arm) -> dict:
        obj, data = arm.trainer.objective, arm.trainer.data
        obj.eval()
        with torch.no_grad():
            h = heldout_draws(obj, data, SAMPLES if not params["quick"] else 200, params["draws"], DRAW_SEED)
        return {"heldout_ed7": h["sample_energy_distance_heldout_mean"], "updates": arm.trainer.fit_stats["updates"],
                "heldout_draws": h["sample_energy_distance_heldout_draws"],
                **lb.ood_aurocs(obj, data, ("other_class",), seed)}
    m = train_cell(params["config"], params["overrides"], seed, Path(run_dir), measure=measure)
    return {**m, "selected_step": m.get("selected_step", m.get("step"))}


def _sampler(reference: str, data, cfg, seed: int):
    """(draw(n, generator) -> data-coordinate rows, its Dataset) of a reference row."""
    if reference == "gmm":
        fitted = fit_gmm(data.train, seed)
        return (lambda n, g: data.transform.to_data(fitted.sample(n, g))), data
    d = data if reference == "gaussian_train" else refit_transform(data, cfg.data)
    return (lambda n, g: d.transform.to_data(torch.randn(n, d.train.shape[1], generator=g))), d


def reference_fn(params: dict, seed: int, run_dir: Path) -> dict:
    """Exact draws of one reference density, scored as a run's result is (its own Dataset's z-scoring)."""
    sets = overrides(params["dataset"], "default", 1.0, params["quick"])
    if params["reference"] == "gmm":  # the leaderboard's baseline rows: all training rows, no whitening
        sets = [f"data.name={params['dataset']}", "data.standardize=true"] + lb.EVAL["vector"]
    cfg = experiment_config(None, sets + [f"train.seed={seed}"], threads=1)
    draw, data = _sampler(params["reference"], build_dataset(cfg.data), cfg, seed)
    z, test = zscorer(data), data.test
    values = []
    for k in range(params["draws"]):  # draw k from generator seed DRAW_SEED + k, as heldout_draws seeds them
        x = data.transform.to_model(draw(SAMPLES, torch.Generator().manual_seed(DRAW_SEED + k)))
        values.append(energy_distance(z(x), z(test), unbiased=True))
    n = len(values)
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else math.nan
    return {"heldout_ed_expected": mean, "heldout_ed_expected_se": se,
            "heldout_ed7": sum(values[:DRAWS]) / min(DRAWS, n), "step": 0}


def build_cells(datasets, arms, seeds, budget: float, quick: bool) -> dict[str, list[Cell]]:
    """{dataset: cells}: every arm x seed, then the reference rows (seed 0)."""
    grid = {}
    for ds in datasets:
        params = {arm: {"config": "default", "overrides": overrides(ds, arm, budget, quick), "quick": quick,
                        "draws": 2 if quick else DRAWS} for arm in arms}
        cells = [Cell(f"{ds}/{arm}", s, cell_fn, params[arm],
                      fingerprint=lb.config_fingerprint, run_fingerprint=lb.run_config_fingerprint)
                 for arm in arms for s in seeds]
        cells += [Cell(f"{ds}/exact_{r}", 0, reference_fn, {"dataset": ds, "reference": r, "quick": quick,
                                                           "draws": 5 if quick else EXACT_DRAWS}) for r in REFERENCES]
        grid[ds] = cells
    return grid


def verdicts(table: dict, ds: str, arms) -> list[dict]:
    """The adoption rule of each candidate against ``default`` on dataset ``ds``."""
    base = table[f"{ds}/default"]
    out = []
    for arm in arms:
        if arm == "default":
            continue
        row = table[f"{ds}/{arm}"]
        ed, auroc = row["heldout_ed7"]["mean"], row["ood_auroc_other_class"]["mean"]
        ok = ed <= base["heldout_ed7"]["mean"] and auroc >= base["ood_auroc_other_class"]["mean"] - AUROC_SLACK
        out.append({"dataset": ds, "candidate": arm, "heldout_ed7": ed, "auroc": auroc, "passes": bool(ok),
                    "default_heldout_ed7": base["heldout_ed7"]["mean"],
                    "default_auroc": base["ood_auroc_other_class"]["mean"]})
    return out


def _verdict_rows(entry: dict) -> str:
    f = claims.fmt_number
    return "\n| candidate | heldout_ed7 (default) | AUROC (default) | verdict |\n|---|---|---|---|\n" + "".join(
        f"| {v['candidate']} | {f(v['heldout_ed7'])} ({f(v['default_heldout_ed7'])}) | {f(v['auroc'])} "
        f"({f(v['default_auroc'])}) | **{'passes' if v['passes'] else 'fails'}** |\n" for v in entry["verdicts"])


def _reference_rows(entry: dict) -> str:
    f = claims.fmt_number
    return ("\n| exact draws of | expected held-out energy distance ± s.e. | mean of the first 7 |\n|---|---|---|\n"
            + "".join(f"| {r} | {f(m.get('heldout_ed_expected'))} ± {f(m.get('heldout_ed_expected_se'))} | "
                      f"{f(m.get('heldout_ed7'))} |\n" for r, m in entry["references"].items()))


def _markdown(result: dict) -> str:
    md = [(f"# The `--data` defaults against candidates: {result['budget_seconds']:g} s per cell, "
           f"seeds {result['seeds']}\n"),
          ("Mean ± std over seeds (per seed below); verdict: the candidate's mean heldout_ed7 <= the default's and "
           f"its mean AUROC >= the default's - {AUROC_SLACK}. Protocol: src/ebmlab/experiments/data_defaults.py.\n")]
    for ds, entry in result["datasets"].items():
        md.append(f"## {ds}\n\n" + claims.table_markdown(entry["table"], METRICS, result["seeds"]))
        md += [_verdict_rows(entry), _reference_rows(entry)]
    md.append(f"{'QUICK smoke run: the numbers mean nothing. ' if result['quick'] else ''}"
              f"Wall time of this command: {result['wall_seconds']} s (finished cells are reused on a rerun).\n")
    return "\n".join(md)


def _names(what: str, names, known: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` (None: all of ``known``) checked against ``known``; ConfigError naming the unknown ones."""
    if names is None:
        return known
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(f"unknown data_defaults {what} {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"they are: {', '.join(known)}")
    return tuple(dict.fromkeys(names))


def run(out: Path, quick: bool = False, seeds=SEEDS, jobs: int = 2, full: bool = False, budget: float | None = None,
        methods=None, datasets=None) -> dict:
    """The comparison into ``out`` (module docstring); returns the ``results.json`` content. ``methods``: the arms
    (``default`` and names of ``CANDIDATES``; default all); ``datasets``: a subset of ``DATASETS``."""
    if budget is not None and not budget > 0:
        raise ValueError(f"--budget must be positive seconds, got {budget}")
    arms = _names("arm (--methods)", methods, ("default", *CANDIDATES))
    arms = arms if "default" in arms else ("default", *arms)  # every verdict is against the default
    datasets = _names("dataset", datasets, DATASETS)
    seeds = tuple(seeds[:1]) if quick else tuple(seeds)
    budget = budget or (lb.QUICK_BUDGET if quick else lb.BUDGET_FULL if full else lb.BUDGET)
    t0 = time.time()
    grid = build_cells(datasets, arms, seeds, budget, quick)
    records = claims.run_cells(out, [c for cells in grid.values() for c in cells], jobs=jobs)
    result = {"experiment": "data_defaults", "quick": quick, "budget_seconds": budget, "seeds": list(seeds),
              "arms": list(arms), "candidates": {a: CANDIDATES[a] for a in arms if a in CANDIDATES}, "datasets": {}}
    for ds in datasets:
        table = claims.summary_table(records, [f"{ds}/{a}" for a in arms], METRICS, seeds)
        refs = {r: (records.get((f"{ds}/exact_{r}", 0)) or {}).get("metrics", {}) for r in REFERENCES}
        result["datasets"][ds] = {"table": table, "verdicts": verdicts(table, ds, arms), "references": refs}
    result["wall_seconds"] = round(time.time() - t0, 1)
    md = _markdown(result)
    (Path(out) / "results.json").write_text(json.dumps(result, indent=1, default=float))
    (Path(out) / "results.md").write_text(md)
    print(md)
    return result
