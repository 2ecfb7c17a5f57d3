"""Thread policy under contention (issue 19, item 1): wall time of a short default training run
(``ebmlab train``, the demo's config, ``--steps`` updates, a reduced final evaluation; the wall clock of the whole
process, start-up included) with ``train.threads`` = 1,
2 and the default (null: auto, the idle cores, counted when training starts and again every 10 s:
``training/threads.py``), each as its own process, interleaved over ``--reps`` rounds, on an idle
machine, with ``--busy`` competing processes (pure-Python busy loops, default 2) running, and
("late") with them starting ``--late-after`` seconds after each run started (work that begins
beside a running job: a thread count chosen at start no longer fits). Prints medians and the ratios
to ``threads=1``, and a final JSON line.

    python benchmarks/bench_threads.py [--steps 200] [--reps 3] [--busy 2] [--phases idle busy late] [--late-after S]
    (default phases: idle busy)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time

POLICIES = {"threads=1": "1", "threads=2": "2", "default (auto)": None}


def _busy(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10000))


def run_once(threads: str | None, steps: int, tmp: str, late: tuple[int, float] | None = None) -> float:
    out = tempfile.mkdtemp(dir=tmp)
    cmd = [sys.executable, "-m", "ebmlab", "train", "--out", out, "--overwrite", "--set", f"train.steps={steps}",
           "--set", "train.progress=false", "--set", f"train.checkpoint_every={steps}", "--set", "eval.n_samples=10",
           "--set", "eval.long_run_factor=1", "--set", "eval.plots=false", "--set", "eval.grid_size=8"]
    if threads is not None:
        cmd += ["--set", f"train.threads={threads}"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = None
    if late is not None:  # (busy processes, seconds after the start)
        try:
            proc.wait(timeout=late[1])
        except subprocess.TimeoutExpired:
            stop = _start_busy(late[0])
    try:
        if proc.wait() != 0:
            raise subprocess.CalledProcessError(proc.returncode, cmd)
    finally:
        if stop is not None:
            stop()
    return time.perf_counter() - t0


def _start_busy(n: int):
    """Start ``n`` busy processes; returns the function that stops them."""
    event = mp.Event()
    workers = [mp.Process(target=_busy, args=(event,), daemon=True) for _ in range(n)]
    for w in workers:
        w.start()

    def stop() -> None:
        event.set()
        for w in workers:
            w.join()
    return stop


def measure(steps: int, reps: int, busy: int, late: tuple[int, float] | None = None) -> dict[str, list[float]]:
    stop = _start_busy(busy)
    times: dict[str, list[float]] = {k: [] for k in POLICIES}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(reps):
                order = list(POLICIES)[r % len(POLICIES):] + list(POLICIES)[:r % len(POLICIES)]  # rotate
                for name in order:
                    times[name].append(run_once(POLICIES[name], steps, tmp, late))
    finally:
        stop()
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--busy", type=int, default=2, help="competing busy processes in the contended case")
    p.add_argument("--late-after", type=float, default=8.0,
                   help="seconds after each run's start at which the late phase's busy processes start")
    p.add_argument("--phases", nargs="+", choices=["idle", "busy", "late"], default=["idle", "busy"])
    args = p.parse_args()
    result = {"steps": args.steps, "reps": args.reps, "loadavg_start": os.getloadavg()}
    phases = {"idle": ("idle", 0, None), "busy": (f"{args.busy} busy processes", args.busy, None),
              "late": (f"{args.busy} busy processes from {args.late_after:g} s", 0, (args.busy, args.late_after))}
    for label, busy, late in (phases[ph] for ph in args.phases):
        times = measure(args.steps, args.reps, busy, late)
        med = {k: statistics.median(v) for k, v in times.items()}
        result[label] = {"median_s": med, "ratio_to_threads1": {k: med[k] / med["threads=1"] for k in med},
                         "all_s": times}
        print(f"{label}: " + ", ".join(f"{k} {med[k]:.1f} s ({med[k] / med['threads=1']:.2f}x)" for k in med),
              flush=True)
    result["loadavg_end"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
