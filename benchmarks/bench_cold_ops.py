"""Where a MALA step's excess over its forward+backward goes: the same small ops cost several times more
right after a network pass than when run again at once (issue 19, item 2; docs/performance.md, "Cold ops").

    OMP_NUM_THREADS=1 python benchmarks/bench_cold_ops.py [--reps 300] [--compile] [--json FILE]

The default MLP (``build_energy(ModelConfig(), (10,))``: residual MLP, width 128, depth 3, SiLU), batch 256,
parameters frozen as a sampler has them. Each repetition times, with the CPU clock and the wall clock:

- ``pass``: one forward+backward to the input (``energy_and_grad``), the floor of every sampler step;
- ``mh_cold``: right after that pass, the arithmetic MALA does outside the network in one step (the Langevin
  move, the noise and uniform draws, the Metropolis-Hastings log-ratio and test, the three selects of
  ``samplers/mala.step``, called through the module's own functions on the pass's energy and gradient);
- ``mh_warm``: the same ops again at once (their code and data still in the caches);
- ``numpy_cold`` / ``numpy_warm``: that arithmetic written with NumPy on the same (zero-copy) arrays, noise
  and uniform draws still torch's: is it torch's dispatch that goes cold, or the machine's caches?
- ``mh_inference_cold``: ``mh_cold``'s ops under ``torch.inference_mode()`` instead of ``no_grad`` (right after a
  pass too): what dispatch without autograd's bookkeeping (version counters, the autograd and view keys) would
  save per step. The chains cannot simply run so: their points are fed back into ``energy_and_grad``, and an
  inference tensor cannot be made to require grad, so every step would need a copy out of inference mode;
- ``manual_grad`` and ``autograd``: the MLP's energy and input gradient written by hand (forward keeping the
  pre-activations, backward through the blocks, no autograd graph) against ``energy_and_grad``: how much of
  a pass is the autograd engine rather than arithmetic;
- with ``--compile``, ``compiled_cold`` / ``compiled_warm``: that arithmetic as one ``torch.compile``d function
  (inductor, the default backend: fused C++ kernels, built once; the two draws stay eager, as in ``mh_ops``),
  i.e. the fusion the two unmet targets would need, with what it costs per call.

Medians and quartiles over the repetitions (microseconds), the ratios cold / warm and manual / autograd per
repetition, and the whole result as one JSON line (``--json FILE`` too). Nothing here is a target: it
explains the two issue-19 targets that ``bench_sampler.py`` reports as not met.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import emit, machine_note, quartiles, source_note

from ebmlab.config import ModelConfig
from ebmlab.energies.base import energy_and_grad
from ebmlab.energies.build import build_energy
from ebmlab.samplers import mala
from ebmlab.samplers.base import frozen_parameters, randn_like
from ebmlab.samplers.langevin import move

EPS = 0.01  # the step size of the ops (any value: the arithmetic is the same)


def mh_ops(x, e, g, e_prop, g_prop, eps, sigma, generator):
    """MALA's arithmetic outside the network for one step (``samplers/mala.step`` without its pass; the
    proposal's energy and gradient are given): the noise, the move, the log-ratio, the test, the selects."""
    z = randn_like(x, generator)
    x_prop = move(x, g, eps, sigma, z)
    log_a = mala._log_ratio(x, e, x_prop, e_prop, g_prop, eps, sigma, z, 1.0)
    accept = torch.empty_like(log_a).uniform_(generator=generator).log_() < log_a
    keep = accept.view(-1, 1)
    return torch.where(keep, x_prop, x), torch.where(accept, e_prop, e), torch.where(keep, g_prop, g)


def _fusable(x, e, g, e_prop, g_prop, eps, sigma, z, log_u):
    """``mh_ops`` after its two draws: the move, the log-ratio, the test, the selects (what a compiler can fuse)."""
    x_prop = move(x, g, eps, sigma, z)
    accept = log_u < mala._log_ratio(x, e, x_prop, e_prop, g_prop, eps, sigma, z, 1.0)
    keep = accept.view(-1, 1)
    return torch.where(keep, x_prop, x), torch.where(accept, e_prop, e), torch.where(keep, g_prop, g)


def compiled_ops(fused):
    """``mh_ops`` with its arithmetic in ``fused`` (``torch.compile(_fusable)``); the draws as ``mh_ops`` makes them."""
    def ops(x, e, g, e_prop, g_prop, eps, sigma, generator):
        z = randn_like(x, generator)
        log_u = torch.empty_like(e).uniform_(generator=generator).log_()
        return fused(x, e, g, e_prop, g_prop, eps, sigma, z, log_u)
    return ops


def inference_mode_ops(*args):
    """``mh_ops`` under ``torch.inference_mode()`` (the same ops and numbers; no autograd bookkeeping)."""
    with torch.inference_mode():
        return mh_ops(*args)


def numpy_ops(x, e, g, e_prop, g_prop, eps, sigma, generator):
    """``mh_ops`` in NumPy on the same memory (the two draws stay torch's, for the same numbers)."""
    xn, en, gn, epn, gpn, eps, sigma = (t.numpy() for t in (x, e, g, e_prop, g_prop, eps, sigma))
    z = randn_like(x, generator).numpy()
    xp = (xn - eps * gn) + sigma * z
    ds = ((xn - xp) + eps * gpn) / sigma
    log_a = (en - epn) + 0.5 * ((z - ds) * (z + ds)).sum(1)
    u = torch.empty(x.shape[0]).uniform_(generator=generator).numpy()
    accept = np.log(u) < log_a
    keep = accept[:, None]
    return np.where(keep, xp, xn), np.where(accept, epn, en), np.where(keep, gpn, gn)


def manual_energy_and_grad(net, x):
    """E(x) (B,) and dE/dx (B, D) of the residual SiLU MLP by hand: silu'(a) = s (1 + a (1 - s)), s = sigmoid(a)."""
    with torch.no_grad():
        saved = []  # per block: (a1, s1, a2, s2), each (B, W)
        h = F.linear(x, net.inp.weight, net.inp.bias)
        for block in net.blocks:
            lin1, lin2 = block.net[1], block.net[3]
            s1 = torch.sigmoid(h)
            a2 = F.linear(h * s1, lin1.weight, lin1.bias)
            s2 = torch.sigmoid(a2)
            saved.append((h, s1, a2, s2))
            h = h + F.linear(a2 * s2, lin2.weight, lin2.bias)
        s = torch.sigmoid(h)
        e = F.linear(h * s, net.out.weight, net.out.bias).squeeze(1)
        grad = net.out.weight * (s * (1 + h * (1 - s)))  # (B, W)
        for (a1, s1, a2, s2), block in zip(reversed(saved), reversed(list(net.blocks))):
            lin1, lin2 = block.net[1], block.net[3]
            ga2 = (grad @ lin2.weight) * (s2 * (1 + a2 * (1 - s2)))
            grad = grad + (ga2 @ lin1.weight) * (s1 * (1 + a1 * (1 - s1)))
        return e, grad @ net.inp.weight


def _clocked(fn, *args):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - c0, time.perf_counter() - w0


def measure(reps: int, compile: bool = False) -> dict:
    torch.manual_seed(0)
    net = build_energy(ModelConfig(), (10,))
    x = torch.randn(256, 10)
    gen = torch.Generator().manual_seed(0)
    eps = torch.full((256, 1), EPS)
    sigma = torch.sqrt(eps * 2.0)
    e_max = (manual_energy_and_grad(net, x)[1] - energy_and_grad(net, x)[1]).abs().max()
    names = ("pass", "mh_cold", "mh_warm", "numpy_cold", "numpy_warm", "mh_inference_cold", "manual_grad",
             "autograd")
    fused, compile_seconds = None, None
    if compile:
        names += ("compiled_cold", "compiled_warm")
        t0 = time.time()
        fused = compiled_ops(torch.compile(_fusable, dynamic=False))
        e, g = energy_and_grad(net, x)
        fused(x, e, g, e + 0.1, g * 1.01, eps, sigma, gen)  # the build, timed once
        compile_seconds = round(time.time() - t0, 1)
    cpu = {k: [] for k in names}
    wall = {k: [] for k in names}
    with frozen_parameters(net):
        for r in range(reps + 5):  # the first 5 warm up
            gc.disable()
            t = {}
            (e, g), *t["pass"] = _clocked(energy_and_grad, net, x)
            args = (x, e, g, e + 0.1, g * 1.01, eps, sigma, gen)
            _, *t["mh_cold"] = _clocked(mh_ops, *args)
            _, *t["mh_warm"] = _clocked(mh_ops, *args)
            energy_and_grad(net, x)
            _, *t["numpy_cold"] = _clocked(numpy_ops, *args)
            _, *t["numpy_warm"] = _clocked(numpy_ops, *args)
            energy_and_grad(net, x)
            _, *t["mh_inference_cold"] = _clocked(inference_mode_ops, *args)
            if fused is not None:
                energy_and_grad(net, x)
                _, *t["compiled_cold"] = _clocked(fused, *args)
                _, *t["compiled_warm"] = _clocked(fused, *args)
            first, second = ("manual_grad", "autograd") if r % 2 == 0 else ("autograd", "manual_grad")
            for k in (first, second):
                _, *t[k] = _clocked(manual_energy_and_grad if k == "manual_grad" else energy_and_grad, net, x)
            gc.enable()
            if r >= 5:
                for k, (c, w) in t.items():
                    cpu[k].append(c)
                    wall[k].append(w)
    us = {k: {q: round(v * 1e6, 1) for q, v in quartiles(cpu[k]).items()} for k in names}
    pairs = [("mh_cold", "mh_warm"), ("numpy_cold", "numpy_warm"), ("mh_cold", "pass"), ("mh_inference_cold", "mh_cold"),
             ("manual_grad", "autograd")]
    if fused is not None:
        pairs += [("compiled_cold", "mh_cold"), ("compiled_warm", "mh_warm")]
    ratio = {f"{a}/{b}": quartiles([p / q for p, q in zip(cpu[a], cpu[b])]) for a, b in pairs}
    return {"cpu_us": us, "wall_us_median": {k: round(quartiles(v)["median"] * 1e6, 1) for k, v in wall.items()},
            "ratios_cpu": {k: {q: round(v, 3) for q, v in d.items()} for k, d in ratio.items()},
            "manual_grad_max_abs_diff": float(e_max), "compile_seconds": compile_seconds}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=300, help="timed repetitions (default 300)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--compile", action="store_true",
                    help="also time the arithmetic torch.compile'd (inductor: needs a C++ compiler; ~30 s to build)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    result = {"machine": machine_note(), "source": source_note(), **measure(args.reps, args.compile)}
    for k, q in result["cpu_us"].items():
        print(f"{k:12s} {q['median']:9.1f} us CPU [{q['q1']:.1f}-{q['q3']:.1f}]")
    for k, q in result["ratios_cpu"].items():
        print(f"{k:22s} {q['median']:.3f} [{q['q1']:.3f}-{q['q3']:.3f}]")
    result.update(seconds=time.time() - t0, loadavg_end=machine_note()["loadavg"])
    return emit(result, args.json)


if __name__ == "__main__":
    main()
