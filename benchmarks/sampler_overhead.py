"""Sampler overhead: per-step time of Langevin and MALA over one bare forward+backward.

For the residual MLP energy (the default model: width 128, depth 3, 10-D input) at batch 256 and
4096, measured in the same run and process: the bare cost is ``energy_and_grad`` (one forward, one
backward to the input); a sampler step is one ``step`` call (which performs exactly one
forward+backward plus its own arithmetic). Each figure is the median of several timed blocks after
warm-up. The last line printed is one JSON object {"256": {"langevin": r, "mala": r}, "4096": ...}.

    python benchmarks/sampler_overhead.py [--device cpu|cuda] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ebmlab.energies.base import energy_and_grad
from ebmlab.energies.mlp import MLPEnergy
from ebmlab.samplers import langevin, mala


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def block_time(fn, device, iters: int) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / iters


def measure(batch: int, device, iters: int, blocks: int) -> dict:
    """Blocks of bare / langevin / mala calls are interleaved, so that load from other processes
    hits all three alike; each ratio is the median over blocks of (step block) / (bare block)."""
    torch.manual_seed(0)
    energy = MLPEnergy(10, 128, 3, "silu").to(device)
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, 10, device=device, generator=gen)
    fns = {"bare": lambda: energy_and_grad(energy, x)}
    for name, sampler in (("langevin", langevin), ("mala", mala)):
        state = [sampler.init(energy, x)]

        def one_step(sampler=sampler, state=state):
            state[0], _ = sampler.step(energy, state[0], 1e-3, generator=gen)

        fns[name] = one_step
    for fn in fns.values():  # warm-up
        block_time(fn, device, max(3, iters // 4))
    ratios = {"langevin": [], "mala": []}
    bare_times = []
    for _ in range(blocks):
        t = {name: block_time(fn, device, iters) for name, fn in fns.items()}
        bare_times.append(t["bare"])
        for name in ratios:
            ratios[name].append(t[name] / t["bare"])
    return {"bare_s": statistics.median(bare_times), **{k: statistics.median(v) for k, v in ratios.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--blocks", type=int, default=7)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = {}
    for batch, iters in ((256, 200), (4096, 30)):
        r = measure(batch, device, iters, args.blocks)
        print(f"batch {batch:5d}: bare fwd+bwd {r['bare_s'] * 1e3:.3f} ms | langevin step / bare = "
              f"{r['langevin']:.3f} | mala step / bare = {r['mala']:.3f}")
        result[str(batch)] = {"langevin": round(r["langevin"], 4), "mala": round(r["mala"], 4)}
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
