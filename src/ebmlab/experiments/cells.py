"""Running an experiment's cells (the claim harness, ``experiments/claims.py``): one (arm, seed) per process
with one torch thread, ``jobs`` at once (two threads per process lose badly to one under contention:
docs/performance.md); each cell's record cached in ``cells/<arm>/seed<k>/cell.json``, so an
experiment can be finished over several sittings, rerun when the library now builds something else (its
``fingerprint``), or rescored from its stored runs without training (``--rescore``)."""
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
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from ebmlab.errors import ConfigError, ExperimentError
from ebmlab.files import write_text_atomic

__all__ = ["Cell", "cell_dir", "run_cells"]


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
    cell that can be (after a change to the evaluation code) and trains none: a cell that would have to run is
    refused (``ConfigError``) before any work. Returns {(arm, seed): cell record}."""
    work = []  # (cell, cached record to rescore, or None: run it)
    for c in cells:
        record = _cached(out, c)
        if record is None or (_lacks(record, c.requires) and c.rescore is None):
            work.append((c, None))
        elif c.rescore is not None and (_lacks(record, c.requires) or (rescore and _finished(record))):
            work.append((c, record))
    untrained = [c for c, record in work if record is None]
    if rescore and untrained:  # --rescore trained the missing cells (a forgotten --quick: hours of training)
        stale = [c for c in untrained if _stale(out, c)]
        if stale:  # they ran, but the library now builds something else: rescoring their runs would mislead
            raise ConfigError(f"--rescore evaluates finished cells again without training, but {len(stale)} of the "
                              f"{len(cells)} cells asked for ran with what the library built before (first: "
                              f"{stale[0].arm} seed {stale[0].seed}: a default or a network has changed since), so "
                              "they must be trained again; run without --rescore to train them")
        raise ConfigError(f"--rescore evaluates finished cells again without training, but {len(untrained)} of the "
                          f"{len(cells)} cells asked for have not run in {str(out)!r} (first: {untrained[0].arm} seed "
                          f"{untrained[0].seed}); give the options they ran with (--quick, --budget, --full, --seeds), "
                          "or run without --rescore to train them")
    if work:
        n_rescore, at_once = sum(r is not None for _, r in work), max(1, min(jobs, len(work)))
        print(f"[experiment] {len(work) - n_rescore} of {len(cells)} cells to run"
              f"{f', {n_rescore} to rescore from their stored runs' if n_rescore else ''}, {at_once} at a time", flush=True)
    if jobs <= 1:
        for c, record in work:
            _finish(out, c, _do(c, cell_dir(out, c), record))
    else:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        started = ctx.SimpleQueue()  # (arm, seed) of every cell a worker begins (a killed worker's sentence)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_one_thread,
                                 initargs=(started,)) as pool, _workers_stop_with(pool):
            futures = {pool.submit(_do, c, cell_dir(out, c), record): c for c, record in work}
            _finish_as_completed(out, futures, started)
    return {(c.arm, c.seed): _cached(out, c) for c in cells}


def _finish_as_completed(out: Path, futures: dict, started=None) -> None:
    """Record each cell as it finishes (a cell done while another still trains is kept if the experiment is then
    stopped); a worker killed (kill -9, out of memory) breaks the pool, and every cell not finished with it: one
    sentence once the others are recorded, naming the cells that had begun (``started``: their workers said so) apart
    from those still queued."""
    lost, began = [], set()
    for fut in as_completed(futures):
        _drain(started, began)  # as cells finish: a pipe left unread would block the workers once full (~64 KiB)
        try:
            record = fut.result()
        except BrokenProcessPool:
            lost.append(futures[fut])
            continue
        _finish(out, futures[fut], record)
    if lost:
        _drain(started, began)
        ran = [c for c in lost if (c.arm, c.seed) in began] or lost
        names = ", ".join(f"{c.arm} seed {c.seed}" for c in ran)
        queued = len(lost) - len(ran)
        raise ExperimentError(f"a cell's process was killed (kill -9, or out of memory?) while {names} ran"
                              f"{f' ({queued} queued cells did not start)' if queued else ''}; the finished cells are "
                              "kept: the same command again runs the rest")


def _drain(started, began: set) -> None:
    """Move the (arm, seed) pairs the workers put on ``started`` (None: serial) into ``began``."""
    while started is not None and not started.empty():
        began.add(tuple(started.get()))


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
    if _STARTED is not None:  # (a worker's: says which cell it began, should the worker then be killed)
        _STARTED.put((cell.arm, cell.seed))
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
        (Path(run_dir) / "rescore_failure.txt").write_text(traceback.format_exc(), encoding="utf-8")
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


HARNESS_FILES = ("cell.json", "failure.txt", "rescore_failure.txt")  # what the harness writes beside a cell's run


_STARTED = None  # in a worker: the queue its cells report their start on (``run_cells``' ``started``)


def _one_thread(started=None) -> None:
    """Worker initialiser: one intra-op thread (arms run side by side, one per core); keeps ``started``."""
    global _STARTED
    _STARTED = started
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)


def _run_cell(cell: Cell, run_dir: Path) -> dict:
    """Train and evaluate one cell; a cell that raises is recorded as failed with the reason. The records of an
    earlier attempt (a stale or failed cell run again) go first: a run directory holding only them is no ebmlab
    run, and ``prepare_run_dir`` refused to reuse it."""
    for name in HARNESS_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)
    t0, process_t0 = time.time(), time.process_time()
    try:
        metrics, failed = dict(cell.fn(cell.params, cell.seed, run_dir)), None
    except Exception as err:  # a failing method is a result (shown as failed); the traceback is kept
        metrics, failed = {}, f"{type(err).__name__}: {err}"
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "failure.txt").write_text(traceback.format_exc(), encoding="utf-8")
    return {"arm": cell.arm, "seed": cell.seed, "key": cell.key(), "params": cell.params,
            "fingerprint": cell.fingerprint(cell.params, cell.seed) if cell.fingerprint else None,
            "step": metrics.pop("step", None), "diverged": metrics.pop("diverged", None), "failed": failed,
            "metrics": metrics, "wall_seconds": round(time.time() - t0, 1),
            "cpu_seconds": round(time.process_time() - process_t0, 1)}


def _finish(out: Path, cell: Cell, record: dict) -> None:
    path = cell_dir(out, cell) / "cell.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_record(path, record)
    state = record["failed"] or (f"diverged: {record['diverged']}" if record["diverged"] else "done")
    state = _rescore_state(record["rescored"]) if "rescored" in record else f"{state} ({record['wall_seconds']} s)"
    print(f"[experiment] {cell.arm} seed {cell.seed}: {state}", flush=True)


def _write_record(path: Path, record: dict) -> None:
    """``cell.json``, atomically: a Ctrl-C during the write left an empty file, and every rerun then failed."""
    write_text_atomic(path, json.dumps(record, indent=1, default=float))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rescore_state(r: dict) -> str:
    if "failed" in r:
        return f"rescore failed: {r['failed']}"
    differ = f"; {len(r['changed'])} stored metrics changed: {', '.join(r['changed'])}" if r["changed"] else ""
    return f"rescored from its run (+{len(r['added'])} metrics{differ}, {r['wall_seconds']} s)"


def _stale(out: Path, cell: Cell) -> bool:
    """Whether ``cell`` has a record of its own key that ``_cached`` does not take: its fingerprint has changed."""
    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
        record = json.loads((cell_dir(out, cell) / "cell.json").read_text(encoding="utf-8"))
        return isinstance(record, dict) and record.get("key") == cell.key() and _cached(out, cell) is None
    return False


def _cached(out: Path, cell: Cell) -> dict | None:
    path = cell_dir(out, cell) / "cell.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict):  # not whole: written by a version before atomic records, or edited by hand
        warnings.warn(f"{str(path)!r} is not a cell record (empty or damaged); the cell runs again", RuntimeWarning,
                      stacklevel=2)
        return None
    if record.get("key") != cell.key():
        return None
    if cell.fingerprint is None:
        return record
    now = cell.fingerprint(cell.params, cell.seed)
    if record.get("fingerprint") is None and cell.run_fingerprint is not None and (
            cell.run_fingerprint(path.parent) == now):  # a record from before fingerprints, its run current
        record["fingerprint"] = now
        _write_record(path, record)
    return record if record.get("fingerprint") == now else None  # else the library now builds something else
