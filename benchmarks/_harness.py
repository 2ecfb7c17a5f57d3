"""Measurement core shared by the benchmarks (``bench_sampler.py``, ``bench_scaling.py``, ``bench_cold_ops.py``,
``bench_fused_mala.py``, ``bench_op_census.py``).

Why this design (issue 19): on a shared machine wall-clock time measures the other jobs as much as
our code, and a ratio of two wall-clock medians taken minutes apart can come out below 1.0 for a
step that contains the thing it is divided by. So:

- every quantity is timed with the process's CPU time (``time.process_time``; ``--clock thread``
  uses ``time.thread_time``) *and* with wall time (``time.perf_counter``); the CPU clock does not
  advance while the process waits for a core, the wall clock does;
- repetitions are interleaved: the measurement is ``blocks`` blocks, and each block times every
  item once, in an order rotated by one position per block, so a burst of load hits all items of a
  block alike and no item always runs first or last;
- ratios are formed per block and summarised by their median and quartiles over the blocks; with
  an *anchor* (bench_sampler: the floor) the anchor is timed in a short stretch before the first
  item and after every item, each item is divided by the mean of the two anchor stretches around
  it, and a ratio of two items is the ratio of those anchored values, so each figure is compared
  with a measurement taken within a fraction of a second of it;
- each item is run untimed first (warm-up: allocator, autograd and oneDNN caches), and the
  warm-up also sets how many calls one block makes of it (``reps``) so that each timed stretch
  lasts about ``item_s`` seconds of CPU time;
- Python's garbage collector runs between blocks and is disabled within them (as ``timeit`` does),
  so a collection triggered by one item is not charged to another.
"""
from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

CLOCKS = {"process": time.process_time, "thread": time.thread_time}


@dataclass
class Item:
    """A timed callable. ``per`` divides the time of one call (e.g. K for a K-step chain, giving a
    time per step)."""
    name: str
    fn: Callable[[], object]
    per: float = 1.0
    reps: int = 0                # calls per timed stretch; 0: set from the (last) warm-up call
    warmup: int | None = None    # untimed calls before the blocks; None: run_interleaved's warmup_calls


def quartiles(values: list[float]) -> dict[str, float]:
    """{"median", "q1", "q3"} of ``values`` (inclusive method: q1/q3 lie within the data)."""
    if len(values) == 1:
        v = values[0]
        return {"median": v, "q1": v, "q3": v}
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": med, "q1": q1, "q3": q3}


def _timed(fn, reps: int, per: float, clock, sync) -> tuple[float, float]:
    """(cpu seconds, wall seconds) per unit (one call / ``per``) over ``reps`` calls."""
    sync()
    c0, w0 = clock(), time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    c1, w1 = clock(), time.perf_counter()
    n = reps * per
    return (c1 - c0) / n, (w1 - w0) / n


def run_interleaved(items: list[Item], *, blocks: int, item_s: float, anchor: str | None = None,
                    anchor_s: float = 0.02, clock: str = "process", device: torch.device | None = None,
                    warmup_calls: int = 2, progress: Callable[[str], None] | None = None) -> dict:
    """Warm up every item, then time ``blocks`` blocks; block b times the items in the order rotated
    by b. With ``anchor`` (the name of one of the items, e.g. the floor) the anchor is also timed in
    a short stretch (about ``anchor_s`` CPU seconds) before the first item and after every item, and
    each item's time is divided by the mean of the two anchor stretches on either side of it: a
    ratio of two items is then formed from measurements taken within a fraction of a second of an
    anchor, whatever the load did in between. Returns
    {"times": {name: {"cpu": [s per unit, per block], "wall": [...]}},
     "rel": {name: {"cpu": [item / adjacent anchor, per block], "wall": [...]}} (only with an anchor),
     "reps": {name: calls per stretch}}."""
    clk = CLOCKS[clock]
    sync = (lambda: torch.cuda.synchronize(device)) if device is not None and device.type == "cuda" else (lambda: None)
    for it in items:  # warm-up, and calibration of reps from the last warm-up call
        last = 0.0
        for _ in range(warmup_calls if it.warmup is None else it.warmup):
            c0 = clk()
            it.fn()
            sync()
            last = clk() - c0
        if it.reps <= 0:
            target = anchor_s if it.name == anchor else item_s
            it.reps = max(1, math.ceil(target / last)) if last > 0 else 1
    by_name = {it.name: it for it in items}
    timed = [it for it in items if it.name != anchor]
    times = {it.name: {"cpu": [], "wall": []} for it in items}
    rel = {it.name: {"cpu": [], "wall": []} for it in items} if anchor else None
    for b in range(blocks):
        k = b % len(timed)
        gc.collect()
        gc.disable()  # as timeit does: no collection triggered by one item is charged to another
        try:
            slices = []
            if anchor:
                a = by_name[anchor]
                slices.append(_timed(a.fn, a.reps, a.per, clk, sync))
            for it in timed[k:] + timed[:k]:
                t = _timed(it.fn, it.reps, it.per, clk, sync)
                for j, key in enumerate(("cpu", "wall")):
                    times[it.name][key].append(t[j])
                if anchor:
                    slices.append(_timed(a.fn, a.reps, a.per, clk, sync))
                    for j, key in enumerate(("cpu", "wall")):
                        rel[it.name][key].append(t[j] / ((slices[-2][j] + slices[-1][j]) / 2))
        finally:
            gc.enable()
        if anchor:
            for j, key in enumerate(("cpu", "wall")):
                times[anchor][key].append(statistics.fmean(sl[j] for sl in slices))
                rel[anchor][key].append(1.0)
        if progress is not None:
            progress(f"block {b + 1}/{blocks}")
    return {"times": times, "rel": rel, "reps": {it.name: it.reps for it in items}}


def ratio_stats(meas: dict, num: str, den: str, den_scale: float = 1.0) -> dict[str, dict[str, float]]:
    """Per-block ratios num / (den_scale * den), summarised for cpu and wall. With an anchor the
    per-block ratio is (num / its adjacent anchor) / (den / its adjacent anchor)."""
    src = meas["rel"] if meas["rel"] is not None else meas["times"]
    return {k: quartiles([a / (den_scale * b) for a, b in zip(src[num][k], src[den][k])]) for k in ("cpu", "wall")}


def time_stats(meas: dict, name: str) -> dict[str, dict[str, float]]:
    return {k: quartiles(meas["times"][name][k]) for k in ("cpu", "wall")}


def machine_note() -> dict:
    """What the numbers were measured on: load averages, cores, torch and its thread count."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not available on this platform
        load = None
    return {"loadavg": load, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or None}


def source_note() -> dict:
    """The ebmlab source measured: git commit and whether src/ has uncommitted changes."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, check=False,
                                text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=root, capture_output=True, check=False,
                               text=True, timeout=10).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "src_modified": None}
    return {"commit": commit, "src_modified": dirty}


def fmt_q(q: dict[str, float], digits: int = 3) -> str:
    return f"{q['median']:.{digits}f} [{q['q1']:.{digits}f}-{q['q3']:.{digits}f}]"


def training_update(overrides: list[str]):
    """(cfg, data, objective, update, xb): one default training update (forward, backward, Adam) on a
    fixed batch of ``train.batch_size`` rows, built from config overrides; ``update()`` runs it."""
    from ebmlab.data import build_dataset
    from ebmlab.objectives import build_objective
    from ebmlab.training.config import load_config
    from ebmlab.training.loop import make_optimizer

    cfg = load_config(None, overrides)
    data = build_dataset(cfg.data)
    device, batch = torch.device(cfg.train.device), cfg.train.batch_size
    torch.manual_seed(0)
    objective = build_objective(cfg, data).to(device)
    opt = make_optimizer(objective, cfg.train)
    g = torch.Generator(device).manual_seed(1)
    idx = torch.randint(data.train.shape[0], (batch,), generator=torch.Generator().manual_seed(2))
    xb = data.train[idx].to(device)

    def update():
        out = objective(xb, generator=g)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return cfg, data, objective, update, xb


def emit(result: dict, json_path: Path | None) -> dict:
    """Print the closing load line and the result as one JSON line (also written, indented, to ``json_path``)."""
    import json
    print(f"load average at the end {result['loadavg_end']}; {result['seconds']:.0f} s in all")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, separators=(",", ":")))
    return result
