"""``ebmlab experiment data_defaults``: the ``--data`` defaults against candidate changes, on two tables that ship
with scikit-learn (issue 18; docs/data_defaults.md, "Starting from the Gaussian" and "Refitting the start, pairing
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
- **Reference rows** (no training, ``REFERENCES``): exact draws of the training rows' Gaussian (the start of the
  ``gaussian_start`` arm, the default before the mixture base), of the Gaussian of training and validation rows (a
  refitted start) and of the leaderboard's GMM and KDE baselines (seed 0, as the leaderboard fits them: all training
  rows, standardised, not whitened; the default's start is the same ``fit_gmm`` on its training rows less the validation
  split, whitened, with the cell's seed), ``EXACT_DRAWS`` draws each: the expected held-out energy distance, which 7 draws only
  estimate (mean and standard error), and each density's other-class AUROC.
- **Splits** (``--data-seeds``; default: the leaderboard's one split, ``data.seed`` 1234): every cell and
  reference row again on each split of the table's rows (``data.seed``: the held-out rows, then the validation
  rows). One split of breast cancer holds out 35 benign rows, so its numbers are a noisy reading of the
  split; over several splits the result is ``pooled``: each arm's and reference's mean over the splits of its
  per-split mean, the candidates' verdicts on those means, and every arm's verdict against the baselines: an
  arm is *at least as good as* a baseline iff its pooled heldout_ed7 is at most the baseline's pooled expected
  held-out energy distance and its pooled AUROC at least the baseline's (with the per-split paired differences,
  mean and standard error over the splits).
- **Non-inferiority** (over several splits; issue 18's "at least as good" read as the standard test of a new
  treatment against an active control: ICH E9 Sec. 3.3.2, E10 Sec. 1.5; FDA 2016, "Non-Inferiority Clinical
  Trials to Establish Effectiveness"): the margin of a table's metric is ``NI_FRACTION`` of the better baseline's
  pooled advantage over the other (``ni_margins``: the arm must keep at least half of what the best classical
  estimator gains over the second), and an arm is *non-inferior* to a baseline on a metric iff the one-sided
  ``NI_LEVEL`` confidence bound of its per-split paired difference (Student's t, splits - 1 degrees of freedom)
  stays within it: mean + t se <= margin for the energy distance, mean - t se >= -margin for the AUROC.
  ``--auroc-margin X`` states the AUROC's margin in AUROC units instead (the half-gap is untestable where the two
  baselines nearly tie: docs/data_defaults.md, "How many splits the fixed test would need").

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
from ebmlab.files import write_text_atomic
from ebmlab.metrics.baselines import fit_gmm, fit_kde
from ebmlab.metrics.distances import energy_distance
from ebmlab.training.heldout import heldout_draws, zscorer

SEEDS = (0, 1, 2, 3, 4, 5)      # the seeds of every rule in docs/data_defaults.md
DATASETS = ("breast_cancer", "wine")
# the --data default before the mixture base (the whitened rows' Gaussian, the plain minimum over the checks)
GAUSSIAN_START = ["model.base=null", "model.base_std=1.0", "train.select_margin=null"]
# candidates measured against the default (docs/data_defaults.md); their names must differ from REFERENCES' (one
# namespace in the pooled tables: tests/unit/test_data_defaults.py)
CANDIDATES = {"gaussian_start": GAUSSIAN_START, "gaussian_refit": GAUSSIAN_START + ["train.select_refit=true"],
              "paired": ["train.select_paired=true"], "no_margin": ["train.select_margin=null"],
              "refit": ["train.select_refit=true"],
              "refit_likelihood": ["train.select_refit=true", "train.select_likelihood=true"]}
DRAWS, DRAW_SEED, SAMPLES = 7, 100, 1000
EXACT_DRAWS = 200
AUROC_SLACK = 0.01
NI_FRACTION, NI_LEVEL = 0.5, 0.95   # non-inferiority: the margin's share of the baselines' gap; one-sided level
REFERENCES = ("gaussian_train", "gaussian_train_val", "gmm", "kde")
BASELINES = ("gmm", "kde")      # the leaderboard's baselines among REFERENCES
AUROC = "ood_auroc_other_class"
METRICS = ["heldout_ed7", AUROC, "selected_step", "updates"]
QUICK_SETS = ["model.width=16", "model.depth=1", "method.n_steps=3", "method.n_steps_data=2", "eval.n_samples=50"]
settings = lb.settings  # what changes every cell (experiment.json): the leaderboard's budget rule


def overrides(dataset: str, arm: str, budget: float, quick: bool, data_seed: int | None = None) -> list[str]:
    """The ``--set`` list of one arm on one table: the user-data defaults, the arm's keys, the budget (and the
    split, ``data.seed``, unless None: the leaderboard's)."""
    base = _table(dataset, data_seed) + lb.EVAL["vector"]
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


def _table(dataset: str, data_seed: int | None) -> list[str]:
    """The ``--set`` list naming one table, standardised, on one split (``data.seed``; None: the default)."""
    return [f"data.name={dataset}", "data.standardize=true"] + ([f"data.seed={data_seed}"] if data_seed is not None else [])


class StandardNormal:
    """N(0, I) in a Dataset's model coordinates, as a fitted baseline (``metrics/baselines.FittedBaseline``'s
    ``log_density`` / ``sample``): the whitened rows' Gaussian, i.e. the ``gaussian_start`` arm's start."""
    name, chosen, search = "gaussian", {}, {}

    def __init__(self, dim: int):
        self.shape = (dim,)

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) normalised log-density."""
        return -0.5 * (x * x).sum(1) - 0.5 * self.shape[0] * math.log(2 * math.pi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, D) draws (torch.randn with ``generator``)."""
        return torch.randn(n, *self.shape, generator=generator)


def _reference(reference: str, data, cfg, seed: int):
    """(the fitted density in model coordinates, its Dataset) of a reference row."""
    if reference in BASELINES:
        return (fit_gmm if reference == "gmm" else fit_kde)(data.train, seed), data
    d = data if reference == "gaussian_train" else refit_transform(data, cfg.data)
    return StandardNormal(d.train.shape[1]), d


def reference_fn(params: dict, seed: int, run_dir: Path) -> dict:
    """Exact draws of one reference density, scored as a run's result is (its own Dataset's z-scoring), and its
    other-class AUROC."""
    sets = overrides(params["dataset"], "default", 1.0, params["quick"], params.get("data_seed"))
    if params["reference"] in BASELINES:  # the leaderboard's baseline rows: all training rows, no whitening
        sets = _table(params["dataset"], params.get("data_seed")) + lb.EVAL["vector"]
    cfg = experiment_config(None, sets + [f"train.seed={seed}"], threads=1)
    fitted, data = _reference(params["reference"], build_dataset(cfg.data), cfg, seed)
    z, test = zscorer(data), data.test
    values = []
    for k in range(params["draws"]):  # draw k from generator seed DRAW_SEED + k, as heldout_draws seeds them
        x = fitted.sample(SAMPLES, torch.Generator().manual_seed(DRAW_SEED + k))
        values.append(energy_distance(z(x), z(test), unbiased=True))
    mean, se = _mean_se(values)
    return {"heldout_ed_expected": mean, "heldout_ed_expected_se": se,
            "heldout_ed7": sum(values[:DRAWS]) / min(DRAWS, len(values)), "step": 0,
            **lb.ood_aurocs(lb.FittedDensity(fitted), data, ("other_class",), seed)}


def _mean_se(values) -> tuple[float, float]:
    """Mean and standard error of a list (s.e. NaN for one value; both NaN if a value is missing or not finite: a
    failed cell, so that no verdict passes on missing data)."""
    if any(v is None or not math.isfinite(v) for v in values):
        return math.nan, math.nan
    mean, sd = claims.mean_std(values)
    return mean, sd / math.sqrt(len(values))


def split_key(dataset: str, data_seed: int | None) -> str:
    """The name of one table's split in cell names and results: ``breast_cancer`` (the leaderboard's split) or
    ``breast_cancer@3`` (``data.seed`` 3)."""
    return dataset if data_seed is None else f"{dataset}@{data_seed}"


def build_cells(datasets, arms, seeds, budget: float, quick: bool, data_seeds=(None,)) -> dict[str, list[Cell]]:
    """{split key: cells}: on every split of every table, every arm x seed, then the reference rows (seed 0)."""
    grid = {}
    for ds in datasets:
        for split in data_seeds:
            key = split_key(ds, split)
            params = {arm: {"config": "default", "overrides": overrides(ds, arm, budget, quick, split), "quick": quick,
                            "draws": 2 if quick else DRAWS} for arm in arms}
            cells = [Cell(f"{key}/{arm}", s, cell_fn, params[arm],
                          fingerprint=lb.config_fingerprint, run_fingerprint=lb.run_config_fingerprint)
                     for arm in arms for s in seeds]
            cells += [Cell(f"{key}/exact_{r}", 0, reference_fn,
                           {"dataset": ds, "data_seed": split, "reference": r, "quick": quick,
                            "draws": 5 if quick else EXACT_DRAWS}) for r in REFERENCES]
            grid[key] = cells
    return grid


def verdicts(table: dict, ds: str, arms) -> list[dict]:
    """The adoption rule of each candidate against ``default`` on dataset ``ds``."""
    base = table[f"{ds}/default"]
    out = []
    for arm in arms:
        if arm == "default":
            continue
        row = table[f"{ds}/{arm}"]
        ed, auroc = row["heldout_ed7"]["mean"], row[AUROC]["mean"]
        ok = ed <= base["heldout_ed7"]["mean"] and auroc >= base[AUROC]["mean"] - AUROC_SLACK
        out.append({"dataset": ds, "candidate": arm, "heldout_ed7": ed, "auroc": auroc, "passes": bool(ok),
                    "default_heldout_ed7": base["heldout_ed7"]["mean"],
                    "default_auroc": base[AUROC]["mean"]})
    return out


def _verdict_rows(entry: dict) -> str:
    f = claims.fmt_number
    return "\n| candidate | heldout_ed7 (default) | AUROC (default) | verdict |\n|---|---|---|---|\n" + "".join(
        f"| {v['candidate']} | {f(v['heldout_ed7'])} ({f(v['default_heldout_ed7'])}) | {f(v['auroc'])} "
        f"({f(v['default_auroc'])}) | **{'passes' if v['passes'] else 'fails'}** |\n" for v in entry["verdicts"])


def _reference_rows(entry: dict) -> str:
    f = claims.fmt_number
    return ("\n| exact draws of | expected held-out energy distance ± s.e. | mean of the first 7 | AUROC |\n"
            "|---|---|---|---|\n"
            + "".join(f"| {r} | {f(m.get('heldout_ed_expected'))} ± {f(m.get('heldout_ed_expected_se'))} | "
                      f"{f(m.get('heldout_ed7'))} | {f(m.get('ood_auroc_other_class'))} |\n"
                      for r, m in entry["references"].items()))


def pooled(splits: dict, arms, auroc_margin: float | None = None) -> dict:
    """Over the splits of one table (``splits``: {split key: its entry in ``results.json``}): each arm's and
    reference's mean of its per-split means, the candidates' verdicts on those means (``verdicts``' rule) and the
    baselines' verdict (module docstring), with the per-split paired differences default - baseline.
    ``auroc_margin``: the AUROC's non-inferiority margin in AUROC units (None: ``ni_margins``' half-gap)."""
    keys = list(splits)
    arm_means = {a: {m: [splits[k]["table"][f"{k}/{a}"][m]["mean"] for k in keys] for m in ("heldout_ed7", AUROC)}
                 for a in arms}
    ref_means = {r: {"heldout_ed7": [splits[k]["references"][r].get("heldout_ed_expected") for k in keys],
                     AUROC: [splits[k]["references"][r].get(AUROC) for k in keys]} for r in REFERENCES}
    means = {name: {m: _mean_se(v)[0] for m, v in d.items()} for name, d in {**arm_means, **ref_means}.items()}
    table = {f"pooled/{a}": {m: {"mean": means[a][m]} for m in ("heldout_ed7", AUROC)} for a in arms}
    margins = ni_margins(means, auroc_margin)
    against = {a: _against_baselines(arm_means[a], means[a], ref_means, means, margins) for a in arms}
    return {"splits": keys, "per_split": {**arm_means, **ref_means}, "means": means, "ni_margins": margins,
            "ni_auroc_margin": "half-gap" if auroc_margin is None else "given",
            "verdicts": verdicts(table, "pooled", arms), "baselines": against["default"], "arms_vs_baselines": against}


def ni_margins(means: dict, auroc_margin: float | None = None) -> dict:
    """{metric: the non-inferiority margin}: ``NI_FRACTION`` x |pooled GMM - pooled KDE| (module docstring); the
    AUROC's is ``auroc_margin`` instead where one is given."""
    margins = {m: NI_FRACTION * abs(means["gmm"][m] - means["kde"][m]) for m in ("heldout_ed7", AUROC)}
    return margins if auroc_margin is None else {**margins, AUROC: float(auroc_margin)}


def non_inferior(mean: float, se: float, n: int, margin: float, lower_is_better: bool) -> tuple[bool, float]:
    """(verdict, bound): the one-sided ``NI_LEVEL`` confidence bound of a paired difference arm - baseline over
    ``n`` splits (mean and standard error), and whether it stays within ``margin`` on the arm's worse side. NaN
    (a failed cell, one split) never passes."""
    from scipy.stats import t

    q = float(t.ppf(NI_LEVEL, n - 1)) if n > 1 else math.nan
    bound = mean + q * se if lower_is_better else mean - q * se
    return bool(bound <= margin if lower_is_better else bound >= -margin), bound


def _against_baselines(per_split: dict, d: dict, ref_means: dict, means: dict, margins: dict) -> list[dict]:
    """One arm against each baseline (module docstring): at least as good iff its pooled heldout_ed7 is at most the
    baseline's and its pooled AUROC at least the baseline's; with the per-split paired differences arm - baseline
    and, per metric, the non-inferiority verdict and its confidence bound (``non_inferior``)."""
    out = []
    for b in BASELINES:
        diff = {m: _mean_se([None if x is None or y is None else x - y for x, y in zip(per_split[m], ref_means[b][m])])
                for m in ("heldout_ed7", AUROC)}
        ok = d["heldout_ed7"] <= means[b]["heldout_ed7"] and d[AUROC] >= means[b][AUROC]
        ni = {m: non_inferior(*diff[m], len(per_split[m]), margins[m], m == "heldout_ed7") for m in diff}
        out.append({"baseline": b, "at_least_as_good": bool(ok), "arm_means": d, "baseline_means": means[b],
                    "difference_mean_se": diff, "non_inferior": {m: v[0] for m, v in ni.items()},
                    "ni_bound": {m: v[1] for m, v in ni.items()}})
    return out


def _pooled_markdown(ds: str, p: dict) -> str:
    f = claims.fmt_number
    md = [f"## {ds} over {len(p['splits'])} splits ({', '.join(p['splits'])})\n",
          "Mean over the splits of each per-split mean (references: the expected held-out energy distance).\n",
          "| row | heldout_ed7 | AUROC | per split: heldout_ed7 / AUROC |\n|---|---|---|---|"]
    md += [f"| {name} | {f(m['heldout_ed7'])} | {f(m[AUROC])} | "
           + ", ".join(f"{f(e)} / {f(a)}" for e, a in zip(p["per_split"][name]["heldout_ed7"], p["per_split"][name][AUROC]))
           + " |" for name, m in p["means"].items()]
    md.append(_verdict_rows(p).replace("\n| candidate", "\n(candidates against the default)\n\n| candidate", 1))
    md.append("| arm | against | heldout_ed7 difference, mean ± s.e. over splits | AUROC difference | "
              "at least as good (pooled means) | non-inferior: heldout_ed7 (bound) | AUROC (bound) |\n"
              "|---|---|---|---|---|---|---|")
    md += [f"| {arm} | {b['baseline']} | {f(b['difference_mean_se']['heldout_ed7'][0])} ± "
           f"{f(b['difference_mean_se']['heldout_ed7'][1])} | {f(b['difference_mean_se'][AUROC][0])} ± "
           f"{f(b['difference_mean_se'][AUROC][1])} | **{'yes' if b['at_least_as_good'] else 'no'}** | "
           + " | ".join(f"**{'yes' if b['non_inferior'][m] else 'no'}** ({f(b['ni_bound'][m])})"
                        for m in ("heldout_ed7", AUROC)) + " |"
           for arm, rows in p.get("arms_vs_baselines", {"default": p["baselines"]}).items() for b in rows]
    given = p.get("ni_auroc_margin") == "given"
    md.append(f"\nNon-inferiority margins: heldout_ed7 {f(p['ni_margins']['heldout_ed7'])} ({NI_FRACTION:g} x |GMM - KDE|), "
              f"AUROC {f(p['ni_margins'][AUROC])} ({'given: --auroc-margin' if given else f'{NI_FRACTION:g} x |GMM - KDE|'}); one-sided {NI_LEVEL:.0%} bound (Student's t, "
              f"{len(p['splits']) - 1} degrees of freedom).\n")
    return "\n".join(md) + "\n"


def _markdown(result: dict) -> str:
    md = [(f"# The `--data` defaults against candidates: {result['budget_seconds']:g} s per cell, "
           f"seeds {result['seeds']}\n"),
          ("Mean ± std over seeds (per seed below); verdict: the candidate's mean heldout_ed7 <= the default's and "
           f"its mean AUROC >= the default's - {AUROC_SLACK}. Protocol: src/ebmlab/experiments/data_defaults.py.\n")]
    for ds, entry in result["datasets"].items():
        md.append(f"## {ds}\n\n" + claims.table_markdown(entry["table"], METRICS, result["seeds"]))
        md += [_verdict_rows(entry), _reference_rows(entry)]
    md += [_pooled_markdown(ds, p) for ds, p in result.get("pooled", {}).items()]
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
        methods=None, datasets=None, data_seeds=None, auroc_margin: float | None = None) -> dict:
    """The comparison into ``out`` (module docstring); returns the ``results.json`` content. ``methods``: the arms
    (``default`` and names of ``CANDIDATES``; default all); ``datasets``: a subset of ``DATASETS``; ``data_seeds``:
    the splits (``data.seed`` values; default the leaderboard's split); ``auroc_margin``: the AUROC's
    non-inferiority margin in AUROC units (default: half the baselines' gap, ``ni_margins``)."""
    if budget is not None and not budget > 0:
        raise ValueError(f"--budget must be positive seconds, got {budget}")
    if auroc_margin is not None and not 0 < auroc_margin < 1:
        raise ConfigError(f"--auroc-margin must lie between 0 and 1 (AUROC units), got {auroc_margin}")
    arms = _names("arm (--methods)", methods, ("default", *CANDIDATES))
    arms = arms if "default" in arms else ("default", *arms)  # every verdict is against the default
    datasets = _names("dataset", datasets, DATASETS)
    seeds = tuple(seeds[:1]) if quick else tuple(seeds)
    budget = lb.budget_for(quick, full, budget)
    splits = (None,) if data_seeds is None else tuple(dict.fromkeys(data_seeds))
    t0 = time.time()
    grid = build_cells(datasets, arms, seeds, budget, quick, splits)
    records = claims.run_cells(out, [c for cells in grid.values() for c in cells], jobs=jobs)
    result = {"experiment": "data_defaults", "quick": quick, "budget_seconds": budget, "seeds": list(seeds),
              "auroc_margin": auroc_margin,
              "data_seeds": list(splits), "arms": list(arms),
              "candidates": {a: CANDIDATES[a] for a in arms if a in CANDIDATES}, "datasets": {}}
    for key in grid:
        table = claims.summary_table(records, [f"{key}/{a}" for a in arms], METRICS, seeds)
        refs = {r: (records.get((f"{key}/exact_{r}", 0)) or {}).get("metrics", {}) for r in REFERENCES}
        result["datasets"][key] = {"table": table, "verdicts": verdicts(table, key, arms), "references": refs}
    if len(splits) > 1:
        result["pooled"] = {ds: pooled({split_key(ds, s): result["datasets"][split_key(ds, s)] for s in splits}, arms,
                                       auroc_margin) for ds in datasets}
    result["wall_seconds"] = round(time.time() - t0, 1)
    md = _markdown(result)
    write_text_atomic(Path(out) / "results.json", json.dumps(result, indent=1, default=float))
    write_text_atomic(Path(out) / "results.md", md)
    print(md)
    return result
