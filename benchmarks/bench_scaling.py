"""Time per training update of the default hybrid objective vs batch size and data dimension (issue 19,
item 4), CPU time and wall time, interleaved repetitions, medians with quartiles.

    OMP_NUM_THREADS=1 python benchmarks/bench_scaling.py [--threads 1] [--blocks 15] [--json FILE]

Grid: batch 256, 1024, 4096 x dimension 2, 10, 100. Each point is the default config (hybrid CD:
10 MALA steps from the data batch and an AIS noise chain of 30 stages, one MALA move each, resampled
when its ESS < B/2, the step adapted towards 57.4 % acceptance; the default residual MLP width 128
depth 3, Adam) with only the batch size and the data changed: D=2 ``data.name=8gaussians``, D=10 the
default 10-D rings, D=100 a standard-normal array of 8,000 x 100 written to a temporary .npy
(``data.name=array``; the cost of an update does not depend on the values). The update is
``out = objective(batch, generator=g); out.loss.backward(); opt.step(); opt.zero_grad()``; each
point also times one bare forward+backward of its network at its batch (``energy_and_grad``), so
the table gives the update in floors (the default update makes 44 forwards and 42 backwards to
the input: the data batch's loss forward with its backward to x, 10 + 31 chain passes, 2 loss
forwards at the chains' end points; then one weight backward and an Adam step; see bench_sampler.py).
All 18 items (9 updates, 9 floors) are one interleaved measurement (``_harness.py``), anchored on a
short bare forward+backward of the default network at batch 256 timed between every two items; the
floors/update column is the ratio of the anchored values of the point's update and floor. The last
line printed is the JSON result.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (Item, fmt_q, machine_note, ratio_stats, run_interleaved, source_note, time_stats,
                      training_update, emit)

from ebmlab.config import ModelConfig
from ebmlab.energies.base import energy_and_grad
from ebmlab.energies.build import build_energy


def data_overrides(dim: int, tmp: Path) -> list[str]:
    if dim == 10:
        return []  # the default data: 10-D rings
    if dim == 2:
        return ["data.name=8gaussians"]
    path = tmp / f"normal_{dim}.npy"
    if not path.exists():
        np.save(path, np.random.default_rng(0).standard_normal((8000, dim)).astype(np.float32))
    return ["data.name=array", f"data.path={path}"]


def point_items(batch: int, dim: int, device: torch.device, threads: int, tmp: Path) -> list[Item]:
    cfg, data, objective, update, xb = training_update(
        data_overrides(dim, tmp) + [f"train.batch_size={batch}", f"train.threads={threads}",
                                    f"train.device={device}", "train.progress=false"])
    if data.train.shape[1:] != (dim,):
        raise RuntimeError(f"expected {dim}-D data, got shape {tuple(data.train.shape)}")

    x = torch.randn(batch, dim, generator=torch.Generator(device).manual_seed(3), device=device)
    return [Item(f"update/{batch}/{dim}", update),
            Item(f"floor/{batch}/{dim}", lambda: energy_and_grad(objective.energy, x))]


def anchor_item(device: torch.device) -> Item:
    """A short fixed reference timed between every two items (the default network's bare
    forward+backward at batch 256): each figure is divided by the anchor stretches around it, so
    that ratios between points are not skewed by load that changed between them."""
    energy = build_energy(ModelConfig(), (10,)).to(device)
    x = torch.randn(256, 10, generator=torch.Generator(device).manual_seed(4), device=device)
    return Item("anchor", lambda: energy_and_grad(energy, x))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--blocks", type=int, default=15)
    p.add_argument("--item-ms", type=float, default=60.0,
                   help="CPU milliseconds each item runs per block, at least one call (default 60)")
    p.add_argument("--anchor-ms", type=float, default=20.0,
                   help="CPU milliseconds of each anchor stretch between two items (default 20)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="default 256 1024 4096 (--quick: 256 1024)")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 10, 100])
    p.add_argument("--clock", choices=("process", "thread"), default="process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 blocks, 20 ms items, batches 256 1024 unless --batches")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.blocks, args.item_ms = 3, 20.0
    if args.batches is None:
        args.batches = [256, 1024] if args.quick else [256, 1024, 4096]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    start = machine_note()
    print(f"bench_scaling: torch {start['torch']}, threads {args.threads}, clock {args.clock}, {args.blocks} blocks, "
          f"device {args.device}; load average {start['loadavg']} on {start['cpu_count']} cores")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        items = [it for b in args.batches for d in args.dims
                 for it in point_items(b, d, device, args.threads, Path(tmp))]
        items.append(anchor_item(device))
        torch.set_num_threads(args.threads)
        show = lambda s: print(f"  {s}", end="\r", file=sys.stderr, flush=True)  # noqa: E731
        times = run_interleaved(items, blocks=args.blocks, item_s=args.item_ms / 1000, clock=args.clock,
                                anchor="anchor", anchor_s=args.anchor_ms / 1000, device=device, progress=show)
    print(" " * 40, end="\r", file=sys.stderr)
    points = {}
    for b in args.batches:
        for d in args.dims:
            u, f = f"update/{b}/{d}", f"floor/{b}/{d}"
            st = time_stats(times, u)
            points[f"{b}/{d}"] = {
                "batch": b, "dim": d,
                "ms_per_update": {k: {q: v * 1e3 for q, v in st[k].items()} for k in st},
                "us_per_sample": {k: st[k]["median"] * 1e6 / b for k in st},
                "floor_ms": {k: {q: v * 1e3 for q, v in s.items()} for k, s in time_stats(times, f).items()},
                "floors_per_update": ratio_stats(times, u, f),
            }
    print(f"\n{'batch':>6s} {'dim':>4s}  {'CPU ms/update [q1-q3]':28s} {'wall ms/update':>14s} "
          f"{'CPU us/sample':>13s} {'floors/update':>13s} {'CPU ms/floor':>12s}")
    for pt in points.values():
        print(f"{pt['batch']:6d} {pt['dim']:4d}  {fmt_q(pt['ms_per_update']['cpu'], 1):28s} "
              f"{pt['ms_per_update']['wall']['median']:14.1f} {pt['us_per_sample']['cpu']:13.1f} "
              f"{pt['floors_per_update']['cpu']['median']:13.2f} {pt['floor_ms']['cpu']['median']:12.3f}")
    result = {"benchmark": "bench_scaling",
              "command": " ".join(["python", sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
              "source": source_note(), "torch": start["torch"], "threads": args.threads, "clock": args.clock,
              "device": args.device,
              "blocks": args.blocks, "machine": start, "loadavg_end": machine_note()["loadavg"],
              "seconds": round(time.perf_counter() - t0, 1), "points": points}
    result = json.loads(json.dumps(result), parse_float=lambda s: round(float(s), 4))
    return emit(result, args.json)


if __name__ == "__main__":
    main()
