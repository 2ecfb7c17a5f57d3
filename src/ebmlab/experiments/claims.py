"""The claim harness every ``ebmlab experiment`` shares: arms x seeds as one-thread processes, one table
of mean +- std with the per-seed values, and each sub-claim decided by a paired comparison with a margin.

Protocol (issue 15, item 1), the same for every paper:

- **Arms and seeds.** Every arm gets the same budget and the same seed set, fixed in advance
  (``SEEDS``; an experiment may state a larger set before it runs). A *cell* is one (arm, seed): it
  runs in its own process with one torch thread (``run_cells``, experiments/cells.py, ``jobs`` at once, two on two cores;
  two threads per process were measured 7-15x slower than one under contention, docs/performance.md). With
  ``jobs=1`` the cells run in this process: a training cell gets one thread from ``train.threads=1``, and a
  cell that builds no ``Trainer`` keeps the process's thread count.
  A cell writes ``cells/<arm>/seed<k>/cell.json``; a rerun with the same parameters skips it, so an
  experiment can be finished over several sittings (unless the cell has a ``fingerprint`` and the
  library now gives another one: then it is stale and runs again).
- **The same step.** A cell reports the step it was evaluated at; every evaluated cell of one table
  must share it (``check_same_step``). A cell whose training diverges is *reported as diverged at that
  step* (``diverged`` = the step and reason) and is not evaluated elsewhere (no last-good checkpoint).
- **Paired verdicts.** A ``Claim`` says: arm ``a`` is better than arm ``b`` (or than a fixed value) on
  ``metric`` by more than ``margin``, stated in advance in the metric's units. The seed-to-seed spread
  is measured (the larger per-arm standard deviation over seeds); the *effective margin* is the larger
  of the two, so a margin below the noise cannot decide anything. The per-seed paired differences
  d_s (positive = ``a`` better) decide: **holds** when every d_s > effective margin, **reversed** when
  every d_s < -effective margin, otherwise **not shown**. With 3 seeds and no true effect, all three
  differences share a sign with probability 1/4 (1/8 for a given sign) before the margin is applied,
  and the margin makes it rarer; the one-sided paired t-test p-value is reported beside it for reading,
  not for deciding. A diverged cell counts as the worst possible value of its arm on that seed (its
  difference is infinite, NaN when both arms' cells diverged; ``mean_diff`` and ``p_value`` leave such
  seeds out). A failed cell (the method raised) or a missing one decides nothing: its seed's difference is NaN,
  so the sub-claim is not shown.

``results.json`` carries the per-seed values, the margins, the differences and the verdicts.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ebmlab.errors import ExperimentError
from ebmlab.experiments.cells import Cell, cell_dir, run_cells  # noqa: F401 (re-exported: the experiments use them)
from ebmlab.files import write_text_atomic

SEEDS = (0, 1, 2)  # fixed before any experiment was run; every arm of every experiment uses them


def quick_or_full(quick: bool, full: bool = False, budget: float | None = None) -> dict:
    """An experiment's ``settings`` (``experiment.json``) where ``--quick`` ignores ``--full`` (papers 002, 003)."""
    return {"quick": bool(quick), "full": bool(full) and not quick}


def check_same_step(records: dict) -> int | None:
    """The one step every evaluated (not diverged, not failed) cell was evaluated at; ``ExperimentError`` (naming
    one cell per step) if they differ: the table would compare unequal training budgets."""
    at = {}  # step -> the first (arm, seed) evaluated there
    for key, r in records.items():
        if not (r["diverged"] or r["failed"]):
            at.setdefault(r["step"], key)
    if len(at) > 1:
        cells = ", ".join(f"{arm} seed {seed} at {step}" for step, (arm, seed) in sorted(at.items()))
        raise ExperimentError(f"cells of one table were evaluated at different steps {sorted(at)} ({cells}), so the "
                              "table would compare unequal training budgets; delete the odd cells' folders "
                              "(cells/<arm>/seed<k>) and run the same command again")
    return next(iter(at), None)


def run_tables(out: Path, tables_cells: dict[str, list[Cell]], metrics: Sequence[str], seeds: Sequence[int],
               jobs: int = 2) -> tuple[dict, dict]:
    """Run every table's cells (``run_cells``) and summarise each table (the same-step check per table).
    Returns (records, {title: summary_table}); arms keep their order of first appearance."""
    records = run_cells(out, [c for cells in tables_cells.values() for c in cells], jobs=jobs)
    tables = {}
    for title, cells in tables_cells.items():
        arms = list(dict.fromkeys(c.arm for c in cells))
        recs = {k: v for k, v in records.items() if k[0] in arms}
        check_same_step(recs)
        tables[title] = summary_table(recs, arms, metrics, seeds)
    return records, tables


# ----- tables ------------------------------------------------------------------------------------------
def per_seed(records: dict, arm: str, metric: str, seeds: Sequence[int]) -> list[float | None]:
    """The metric of ``arm`` on each seed: None where the cell diverged or failed (the worst value for a
    claim), NaN where it ran but does not report this metric."""
    out = []
    for s in seeds:
        r = records.get((arm, s))
        if r is None or r["diverged"] or r["failed"]:
            out.append(None)
        else:
            v = r["metrics"].get(metric)
            out.append(float(v) if isinstance(v, (int, float)) else math.nan)
    return out


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of the finite values; NaN where too few."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan
    return m, sd


def summary_table(records: dict, arms: Sequence[str], metrics: Sequence[str], seeds: Sequence[int]) -> dict:
    """{arm: {metric: {"mean", "std", "per_seed"}, "diverged": [...], "failed": [...], "cells": [each seed's state]}}."""
    table = {}
    for arm in arms:
        row = {m: dict(zip(("mean", "std"), mean_std(vals := per_seed(records, arm, m, seeds))), per_seed=vals)
               for m in metrics}
        row["diverged"] = [f"seed {s}: {records[(arm, s)]['diverged']}" for s in seeds
                           if records.get((arm, s)) and records[(arm, s)]["diverged"]]
        row["failed"] = [f"seed {s}: {records[(arm, s)]['failed']}" for s in seeds
                         if records.get((arm, s)) and records[(arm, s)]["failed"]]
        row["cells"] = ["missing" if (r := records.get((arm, s))) is None else "failed" if r["failed"]  # each seed's
                        else "diverged" if r["diverged"] else "done" for s in seeds]
        table[arm] = row
    return table


# ----- claims ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """``a`` beats ``b`` on ``metric`` by more than ``margin`` (metric units, stated in advance).
    ``b`` is another arm, or a number (a fixed bar: ``decide`` wants every seed of ``a`` past it by more than
    max(margin, ``a``'s standard deviation over seeds))."""
    text: str
    a: str
    b: str | float
    metric: str
    better: str = "lower"  # "lower" or "higher" is better
    margin: float = 0.0


def decide(claim: Claim, table: dict) -> dict:
    """The paired verdict of ``claim`` on a ``summary_table`` (see the module docstring)."""
    if claim.better not in ("lower", "higher"):
        raise ValueError(f"Claim.better must be 'lower' or 'higher', got {claim.better!r}")
    sign = 1.0 if claim.better == "lower" else -1.0
    worst = math.inf * sign  # a diverged/failed cell's value: the worst possible
    a = [worst if v is None else v for v in table[claim.a][claim.metric]["per_seed"]]
    fixed = not isinstance(claim.b, str)
    b = [float(claim.b)] * len(a) if fixed else [worst if v is None else v
                                                  for v in table[claim.b][claim.metric]["per_seed"]]
    unmeasured = _unmeasured(table[claim.a]) | (set() if fixed else _unmeasured(table[claim.b]))
    diffs = [sign * (y - x) if not (math.isinf(x) and math.isinf(y)) and i not in unmeasured else math.nan
             for i, (x, y) in enumerate(zip(a, b))]
    spreads = [table[claim.a][claim.metric]["std"]] + ([] if fixed else [table[claim.b][claim.metric]["std"]])
    spread = max((s for s in spreads if math.isfinite(s)), default=0.0)
    eff = max(claim.margin, spread)
    if diffs and all(d > eff for d in diffs):
        verdict = "holds"
    elif diffs and all(d < -eff for d in diffs):
        verdict = "reversed"
    else:
        verdict = "not shown"
    return {**asdict(claim), "diffs": diffs, "mean_diff": mean_std(diffs)[0], "spread": spread,
            "effective_margin": eff, "p_value": _paired_p(diffs), "verdict": verdict}


def _unmeasured(row: dict) -> set[int]:
    """The seeds (indices) of a table row whose cell failed or is missing: no evidence either way (a crash is not a
    result of the method, as a divergence is)."""
    return {i for i, state in enumerate(row.get("cells", ())) if state in ("failed", "missing")}


def _paired_p(diffs: Sequence[float]) -> float:
    """One-sided paired t-test p-value that the mean difference is > 0 (NaN unless >= 2 finite values)."""
    d = [x for x in diffs if math.isfinite(x)]
    if len(d) < 2 or len(set(d)) == 1:
        return math.nan
    import warnings

    from scipy.stats import ttest_1samp
    with warnings.catch_warnings():  # nearly equal differences: scipy warns about precision, p is still usable
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_1samp(d, 0.0, alternative="greater").pvalue)


# ----- results -----------------------------------------------------------------------------------------
def quick_note(quick: bool, trained: str) -> str:
    """The first words of an experiment's notes: empty for a real run; for ``--quick``, what it trained (the
    budgets the notes go on to state are the full run's, which a quick run does not train)."""
    return (f"QUICK smoke run ({trained}; the budgets below are the full run's): the numbers mean nothing. "
            if quick else "")


def fmt_number(v: float | None, digits: int = 4) -> str:
    """A value for the tables: ``digits`` significant digits, ``-`` for None/NaN (not measured), no ``-0``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v + 0.0:.{digits}g}"  # + 0.0: no "-0"


def table_markdown(table: dict, metrics: Sequence[str], seeds: Sequence[int]) -> str:
    """Mean +- std per arm and metric, then the per-seed values; diverged/failed cells are marked."""
    head = "| arm | " + " | ".join(metrics) + " | diverged / failed |\n|---|" + "---|" * (len(metrics) + 1) + "\n"
    rows = "".join(f"| {arm} | " + " | ".join(f"{fmt_number(row[m]['mean'])} ± {fmt_number(row[m]['std'])}" for m in metrics)
                   + f" | {'; '.join(row['diverged'] + row['failed']) or '-'} |\n" for arm, row in table.items())
    seeds_head = "\n| arm | metric | " + " | ".join(f"seed {s}" for s in seeds) + " |\n|---|---|" + "---|" * len(seeds) + "\n"
    # what became of a cell without a value; tables of older results.json files do not say
    cells = {arm: row.get("cells") or ["diverged / failed"] * len(seeds) for arm, row in table.items()}
    seed_rows = "".join(f"| {arm} | {m} | " + " | ".join(c if v is None else fmt_number(v)
                                                         for v, c in zip(row[m]["per_seed"], cells[arm]))
                        + " |\n" for arm, row in table.items() for m in metrics)
    return head + rows + seeds_head + seed_rows


def claims_markdown(verdicts: Sequence[dict]) -> str:
    """One line per sub-claim: the paired differences, the margins and the verdict."""
    head = ("| sub-claim | metric | margin (stated / effective) | paired differences (a better > 0) | p (t-test) "
            "| verdict |\n|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {v['text']} | {v['metric']} ({v['better']} is better) | {fmt_number(v['margin'])} / {fmt_number(v['effective_margin'])} "
        f"| {', '.join(fmt_number(d) for d in v['diffs'])} | {fmt_number(v['p_value'])} | **{v['verdict']}** |\n" for v in verdicts)


def write_claim_results(out: Path, paper: str, claim: str, tables: dict[str, dict], verdicts: list[dict],
                        seeds: Sequence[int], metrics: dict[str, Sequence[str]], notes: str = "",
                        extra: dict | None = None) -> dict:
    """``results.json`` = {paper, claim, claim_holds, seeds, tables, claims, ...extra} and ``results.md``.
    ``tables``/``metrics``: {table title: summary_table / its metric columns}. The claim holds when every
    sub-claim's verdict is ``holds``."""
    holds = bool(verdicts) and all(v["verdict"] == "holds" for v in verdicts)
    result = {"paper": paper, "claim": claim, "claim_holds": holds, "seeds": list(seeds), "tables": tables,
              "claims": verdicts, **(extra or {})}
    write_text_atomic(Path(out) / "results.json", json.dumps(result, indent=1, default=float))
    md = [f"# Experiment: paper {paper}\n", f"Seeds {list(seeds)} (fixed in advance), one thread per training cell.\n"]
    md += [f"## {title}\n\n{table_markdown(t, metrics[title], seeds)}" for title, t in tables.items()]
    md += [f"## Claims\n\n**Claim:** {claim}\n\n{claims_markdown(verdicts)}\n"
           f"**Verdict at this scale:** the claim {'HOLDS' if holds else 'is NOT SHOWN'} "
           f"({sum(v['verdict'] == 'holds' for v in verdicts)} of {len(verdicts)} sub-claims hold).\n", notes]
    write_text_atomic(Path(out) / "results.md", "\n".join(md))
    print("\n".join(md))
    return result
