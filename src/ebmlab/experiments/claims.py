"""The claim harness every ``ebmlab experiment`` shares: arms x seeds as one-thread processes, one table
of mean +- std with the per-seed values, and each sub-claim decided by a paired comparison with a margin.

Protocol (issue 15, item 1), the same for every paper:

- **Arms and seeds.** Every arm gets the same budget and the same seed set, fixed in advance
  (``SEEDS``; an experiment may state a larger set before it runs). A *cell* is one (arm, seed): it
  runs in its own process with one torch thread (``run_cells``, ``jobs`` at once, two on two cores;
  two threads per process were measured 7-15x slower than one under contention, docs/performance.md).
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
  not for deciding. A diverged cell counts as the worst possible value of its arm on that seed.

``results.json`` carries the per-seed values, the margins, the differences and the verdicts.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

SEEDS = (0, 1, 2)  # fixed before any experiment was run; every arm of every experiment uses them


# ----- cells: one (arm, seed) per process -----------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One (arm, seed) of an experiment: ``fn(params, seed, run_dir)`` trains and evaluates it and
    returns a dict of metrics (floats), with ``step`` (the step it was evaluated at) and ``diverged``
    (None, or the reason). ``params`` must be JSON-serialisable: it keys the cache."""
    arm: str
    seed: int
    fn: Callable[[dict, int, Path], dict]
    params: dict = field(default_factory=dict)
    # optional ``fingerprint(params, seed) -> str``: what the library would now build from ``params`` (e.g.
    # the hash of the resolved config). Stored with the result; a cached cell whose stored fingerprint
    # differs (a changed default, a new key) is run again. Not part of ``key``.
    fingerprint: Callable[[dict, int], str] | None = field(default=None, compare=False)
    # optional: metrics a finished cached cell must hold (a metric added since it ran); one that lacks
    # any is completed by ``rescore(params, seed, run_dir) -> metrics`` from its stored run (no training)
    # when given, else run again. Neither is part of ``key``.
    requires: tuple[str, ...] = field(default=(), compare=False)
    rescore: Callable[[dict, int, Path], dict] | None = field(default=None, compare=False)
    # optional ``run_fingerprint(run_dir) -> str | None``: the fingerprint of what a cell's *stored run* was
    # built from (the leaderboard: the hash of its config.yaml), for records cached before fingerprints were
    # stored: one that matches today's fingerprint is current (and gets it written in), else it is stale.
    run_fingerprint: Callable[[Path], str | None] | None = field(default=None, compare=False)

    def key(self) -> str:
        """A hash of what determines the cell's result (function, parameters, seed)."""
        blob = json.dumps([self.fn.__module__, self.fn.__qualname__, self.params, self.seed], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cell_dir(out: Path, cell: Cell) -> Path:
    """Where a cell's run and ``cell.json`` live."""
    return Path(out) / "cells" / cell.arm / f"seed{cell.seed}"


def run_cells(out: Path, cells: Sequence[Cell], jobs: int = 2, rescore: bool = False) -> dict[tuple[str, int], dict]:
    """Run every cell not already finished (same key) ``jobs`` at a time, each in its own process with
    one thread (``jobs=1``: in this process, serially). A finished cell lacking one of its ``requires``
    metrics is rescored from its stored run (``Cell.rescore``); ``rescore=True`` rescores every finished
    cell that can be (after a change to the evaluation code). Returns {(arm, seed): cell record}."""
    work = []  # (cell, cached record to rescore, or None: run it)
    for c in cells:
        record = _cached(out, c)
        if record is None or (_lacks(record, c.requires) and c.rescore is None):
            work.append((c, None))
        elif c.rescore is not None and (_lacks(record, c.requires) or (rescore and _finished(record))):
            work.append((c, record))
    if work:
        n_rescore = sum(r is not None for _, r in work)
        print(f"[experiment] {len(work) - n_rescore} of {len(cells)} cells to run"
              f"{f', {n_rescore} to rescore from their stored runs' if n_rescore else ''}, {jobs} at a time", flush=True)
    if jobs <= 1:
        for c, record in work:
            _finish(out, c, _do(c, cell_dir(out, c), record))
    else:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_one_thread) as pool, \
                _workers_stop_with(pool):
            futures = [(c, pool.submit(_do, c, cell_dir(out, c), record)) for c, record in work]
            for c, fut in futures:
                _finish(out, c, fut.result())
    return {(c.arm, c.seed): _cached(out, c) for c in cells}


@contextlib.contextmanager
def _workers_stop_with(pool: ProcessPoolExecutor):
    """Stop ``pool``'s workers when this process is stopped (Ctrl-C, or SIGTERM, which it turns into
    SystemExit here): a worker left running would go on training its queued cells into their directories
    after the experiment is gone (seen: a killed leaderboard's two workers retrained 48 cells over the
    directories a user had restored)."""
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
    try:
        yield
    except BaseException:
        if hasattr(pool, "terminate_workers"):  # Python >= 3.14
            pool.terminate_workers()
        else:  # (no public way before 3.14; shutdown forgets the processes, so they are taken first)
            procs = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.terminate()
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, old)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _finished(record: dict) -> bool:
    """Whether a record was evaluated (not failed, not diverged)."""
    return not (record.get("failed") or record.get("diverged"))


def _lacks(record: dict, requires: Sequence[str]) -> bool:
    """Whether a finished record lacks one of the ``requires`` metrics."""
    return _finished(record) and any(m not in record.get("metrics", {}) for m in requires)


def _do(cell: Cell, run_dir: Path, record: dict | None) -> dict:
    """Run ``cell``, or complete its cached ``record`` with ``_rescore_cell``."""
    return _run_cell(cell, run_dir) if record is None else _rescore_cell(cell, run_dir, record)


def _rescore_cell(cell: Cell, run_dir: Path, record: dict) -> dict:
    """``record`` with its metrics computed again by ``cell.rescore`` on the stored run (today's evaluation
    code): new metrics are added (``rescored.added``), and a stored one that now comes out different is
    replaced and listed in ``rescored.changed`` as [old, new] (a deterministic evaluation whose code did not
    change reproduces every stored value; timings are not compared)."""
    t0 = time.time()
    try:
        new = dict(cell.rescore(cell.params, cell.seed, run_dir))
    except Exception as err:
        (Path(run_dir) / "rescore_failure.txt").write_text(traceback.format_exc())
        return {**record, "rescored": {"failed": f"{type(err).__name__}: {err}"}}
    old = record["metrics"]
    for k in ("step", "diverged"):
        new.pop(k, None)
    added = sorted(k for k in new if k not in old)
    changed = {k: [old[k], v] for k, v in new.items() if k in old and not k.endswith("_seconds")  # (timings vary)
               and _number(v) and _number(old[k]) and not math.isclose(old[k], v, rel_tol=1e-9, abs_tol=1e-12)}
    timings = {k: old[k] for k in old if k.endswith("_seconds")}  # the training run's, not the rescore's
    return {**record, "metrics": {**old, **new, **timings}, "rescored": {
        "added": added, "changed": changed, "wall_seconds": round(time.time() - t0, 1)}}


def _one_thread() -> None:
    """Worker initialiser: one intra-op thread (arms run side by side, one per core)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)


def _run_cell(cell: Cell, run_dir: Path) -> dict:
    """Train and evaluate one cell; a cell that raises is recorded as failed with the reason."""
    t0, process_t0 = time.time(), time.process_time()
    try:
        metrics, failed = dict(cell.fn(cell.params, cell.seed, run_dir)), None
    except Exception as err:  # a failing method is a result (shown as failed); the traceback is kept
        metrics, failed = {}, f"{type(err).__name__}: {err}"
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "failure.txt").write_text(traceback.format_exc())
    return {"arm": cell.arm, "seed": cell.seed, "key": cell.key(), "params": cell.params,
            "fingerprint": cell.fingerprint(cell.params, cell.seed) if cell.fingerprint else None,
            "step": metrics.pop("step", None), "diverged": metrics.pop("diverged", None), "failed": failed,
            "metrics": metrics, "wall_seconds": round(time.time() - t0, 1),
            "cpu_seconds": round(time.process_time() - process_t0, 1)}


def _finish(out: Path, cell: Cell, record: dict) -> None:
    path = cell_dir(out, cell) / "cell.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=float))
    state = record["failed"] or (f"diverged: {record['diverged']}" if record["diverged"] else "done")
    state = _rescore_state(record["rescored"]) if "rescored" in record else f"{state} ({record['wall_seconds']} s)"
    print(f"[experiment] {cell.arm} seed {cell.seed}: {state}", flush=True)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rescore_state(r: dict) -> str:
    if "failed" in r:
        return f"rescore failed: {r['failed']}"
    differ = f"; {len(r['changed'])} stored metrics changed: {', '.join(r['changed'])}" if r["changed"] else ""
    return f"rescored from its run (+{len(r['added'])} metrics{differ}, {r['wall_seconds']} s)"


def _cached(out: Path, cell: Cell) -> dict | None:
    path = cell_dir(out, cell) / "cell.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record.get("key") != cell.key():
        return None
    if cell.fingerprint is None:
        return record
    now = cell.fingerprint(cell.params, cell.seed)
    if record.get("fingerprint") is None and cell.run_fingerprint is not None and (
            cell.run_fingerprint(path.parent) == now):  # a record from before fingerprints, its run current
        record["fingerprint"] = now
        path.write_text(json.dumps(record, indent=1, default=float))
    return record if record.get("fingerprint") == now else None  # else the library now builds something else


def check_same_step(records: dict) -> int | None:
    """The one step every evaluated (not diverged, not failed) cell was evaluated at; raises if they differ."""
    steps = {r["step"] for r in records.values() if not (r["diverged"] or r["failed"])}
    if len(steps) > 1:
        raise RuntimeError(f"cells of one table were evaluated at different steps {sorted(steps)}")
    return next(iter(steps), None)


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
    ``b`` is another arm, or a number (a fixed bar every seed of ``a`` must clear)."""
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
    diffs = [sign * (y - x) if not (math.isinf(x) and math.isinf(y)) else math.nan for x, y in zip(a, b)]
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
def fmt_number(v: float | None) -> str:
    """A value for the tables: 4 significant digits, ``-`` for None/NaN (not measured), no ``-0``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v + 0.0:.4g}"  # + 0.0: no "-0"


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
    (Path(out) / "results.json").write_text(json.dumps(result, indent=1, default=float))
    md = [f"# Experiment: paper {paper}\n", f"Seeds {list(seeds)} (fixed in advance), one thread per cell.\n"]
    md += [f"## {title}\n\n{table_markdown(t, metrics[title], seeds)}" for title, t in tables.items()]
    md += [f"## Claims\n\n**Claim:** {claim}\n\n{claims_markdown(verdicts)}\n"
           f"**Verdict at this scale:** the claim {'HOLDS' if holds else 'is NOT SHOWN'} "
           f"({sum(v['verdict'] == 'holds' for v in verdicts)} of {len(verdicts)} sub-claims hold).\n", notes]
    (Path(out) / "results.md").write_text("\n".join(md))
    print("\n".join(md))
    return result
