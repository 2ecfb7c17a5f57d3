"""A probe, not a library path: how fast a MALA + controller step would be with its element-wise arithmetic
fused into two compiled kernels (issue 19, item 2; docs/performance.md, "A fused MALA step: the probe").

    OMP_NUM_THREADS=1 python benchmarks/bench_fused_mala.py [--blocks 15] [--energies default_mlp small_mlp]
                                                           [--json FILE]

Why: the two issue-19 targets still not met (default-MLP MALA + controller <= 1.15 floors, the training update <=
1.10 x its minimal arithmetic) were traced to the ~30 small element-wise ops a MALA step runs around its
forward+backward (``bench_cold_ops.py``: together they cost 2.2x as much right after the network's pass as warm),
and to fusion as the only lever left; ``torch.compile`` of that arithmetic is slower at batch 256 and
TorchScript's fuser is missing from the CPU wheel. This probe writes the fusion by hand: ``KERNELS``, two C++
functions built with ``torch.utils.cpp_extension.load_inline`` (a C++ compiler and ninja are needed; the first
build takes about a minute, later runs reuse it from torch's extension cache; ``-ffp-contract=off``: no fused
multiply-add, so each product and sum rounds as torch's separate ops do):

- ``propose(x, g, z, eps, sigma)``: x' = x - eps g + sigma z in one pass over the points;
- ``mh(x, e, g, x', e', g', z, eps, sigma, u, T)``: per chain, the log Metropolis-Hastings ratio
  (E - E')/T + sum((z - d)(z + d))/2 with d = (x - x' + eps g')/sigma (``samplers/mala._log_ratio``'s
  algebra), the test log u < log ratio, and the accepted chains' new (x, E, dE/dx), written into fresh
  tensors; returns them with the (B,) acceptance.

The chain around them is ``samplers/mala.step``'s: the same noise and uniform draws from the same generator in the
same order, one forward+backward per step (``energy_and_grad``), parameters frozen, the one-group
``StepSizeController`` adapting the step from the acceptance (its ``update``). ``check`` runs one step of
``mala.step`` and of the fused step from the same state with the same draws and reports the largest differences
and whether every chain made the same decision (the proposal rounds as ``langevin.move`` does; the log ratio's sum
may round differently, which can flip a test only where log u and the ratio agree to float precision).

Timed items (``_harness.run_interleaved``: CPU and wall time, interleaved blocks, anchored on the floor):
``floor`` (one ``energy_and_grad``, parameters trainable, as bench_sampler.py's), ``ebmlab_mala``
(``run_chain(mala, ..., controller=StepSizeController(1, eps))`` / K, K + 1 passes, bench_sampler.py's row) and
``fused_mala`` (the fused chain / K, K + 1 passes), batch 256, K = 30, eps = 0.01. Ratios: each over the floor,
and fused / ebmlab per block. The kernels handle float32 CPU tensors with one step size for all chains (one
group), which is what is timed; the library's samplers are unchanged. The fused chain also skips ``run_chain``'s
end-of-chain diagnostics and finite check (a few ops and one host read per chain).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Item, emit, fmt_q, machine_note, ratio_stats, run_interleaved, source_note, time_stats

from ebmlab.config import ModelConfig
from ebmlab.energies.base import energy_and_grad
from ebmlab.energies.build import build_energy
from ebmlab.samplers import mala
from ebmlab.samplers.base import ChainState, StepSizeController, frozen_parameters, randn_like, run_chain

K, EPS, BATCH = 30, 0.01, 256
CHECK_STEP = 1.0  # check's step size: 103 (default MLP) and 85 (small MLP) of 256 proposals rejected
ENERGIES = {"default_mlp": (10, {}), "small_mlp": (2, {"width": 64, "depth": 2})}  # bench_sampler.py's

KERNELS = r"""
#include <torch/extension.h>
#include <cmath>
#include <vector>

// x' = x - eps * g + sigma * z; eps, sigma: one value for every chain (0-d or (B, 1) tensors, first element)
torch::Tensor propose(torch::Tensor x, torch::Tensor g, torch::Tensor z, torch::Tensor eps, torch::Tensor sigma) {
  auto out = torch::empty_like(x);
  const float e = eps.data_ptr<float>()[0], s = sigma.data_ptr<float>()[0];
  const float *X = x.data_ptr<float>(), *G = g.data_ptr<float>(), *Z = z.data_ptr<float>();
  float *O = out.data_ptr<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) O[i] = X[i] - e * G[i] + s * Z[i];
  return out;
}

// the MH test of every chain and the accepted state: returns {x_new, e_new, g_new, accept (bool)}
std::vector<torch::Tensor> mh(torch::Tensor x, torch::Tensor e, torch::Tensor g, torch::Tensor xq, torch::Tensor eq,
                              torch::Tensor gq, torch::Tensor z, torch::Tensor eps, torch::Tensor sigma,
                              torch::Tensor u, double temperature) {
  const int64_t B = x.size(0), D = x.numel() / B;
  const float ep = eps.data_ptr<float>()[0], s = sigma.data_ptr<float>()[0];
  auto xn = torch::empty_like(x), en = torch::empty_like(e), gn = torch::empty_like(g);
  auto acc = torch::empty({B}, e.options().dtype(torch::kBool));
  const float *X = x.data_ptr<float>(), *E = e.data_ptr<float>(), *G = g.data_ptr<float>();
  const float *XQ = xq.data_ptr<float>(), *EQ = eq.data_ptr<float>(), *GQ = gq.data_ptr<float>();
  const float *Z = z.data_ptr<float>(), *U = u.data_ptr<float>();
  float *XN = xn.data_ptr<float>(), *EN = en.data_ptr<float>(), *GN = gn.data_ptr<float>();
  bool *A = acc.data_ptr<bool>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = b * D;
    float sum = 0.f;
    for (int64_t i = 0; i < D; ++i) {
      const float d = (X[o + i] - XQ[o + i] + ep * GQ[o + i]) / s;
      sum += (Z[o + i] - d) * (Z[o + i] + d);
    }
    const float log_ratio = (E[b] - EQ[b]) / (float)temperature + 0.5f * sum;
    const bool take = std::log(U[b]) < log_ratio;  // a NaN ratio compares false: rejected, as mala.step
    A[b] = take;
    EN[b] = take ? EQ[b] : E[b];
    const float *xs = take ? XQ : X, *gs = take ? GQ : G;
    for (int64_t i = 0; i < D; ++i) { XN[o + i] = xs[o + i]; GN[o + i] = gs[o + i]; }
  }
  return {xn, en, gn, acc};
}
"""


def build(verbose: bool = False):
    """The two kernels as a Python module (``torch.utils.cpp_extension.load_inline``; cached by torch)."""
    from torch.utils.cpp_extension import load_inline

    return load_inline("ebmlab_bench_fused_mala", cpp_sources=KERNELS, functions=["propose", "mh"],
                       extra_cflags=["-O3", "-ffp-contract=off"], verbose=verbose)


def fused_step(ext, energy, state: ChainState, eps: torch.Tensor, sigma: torch.Tensor,
               generator: torch.Generator | None, temperature: float = 1.0):
    """One MALA step as ``mala.step`` with the arithmetic in the kernels: (new state, (B,) bool acceptance)."""
    x, e, g = state
    z = randn_like(x, generator)
    x_prop = ext.propose(x, g, z, eps, sigma)
    e_prop, g_prop = energy_and_grad(energy, x_prop)
    u = torch.empty_like(e).uniform_(generator=generator)  # mala.step's draw, in the same order
    x_new, e_new, g_new, accept = ext.mh(x, e, g, x_prop, e_prop, g_prop, z, eps, sigma, u, temperature)
    return ChainState(x_new, e_new, g_new), accept


def fused_chain(ext, energy, x0: torch.Tensor, n_steps: int, init_step: float, generator) -> ChainState:
    """``run_chain(mala, ..., controller=StepSizeController(1, init_step))`` with the fused step (one group)."""
    controller = StepSizeController(1, init_step)
    shape = (x0.shape[0],) + (1,) * (x0.dim() - 1)
    with frozen_parameters(energy):
        state = ChainState(x0, *energy_and_grad(energy, x0))
        for _ in range(n_steps):
            eps = controller.per_chain_step(None, shape)
            state, accept = fused_step(ext, energy, state, eps, torch.sqrt(eps * 2.0), generator)
            controller.update(accept, None)
    return state


def check(ext, energy, x: torch.Tensor, seed: int = 0, step: float = CHECK_STEP) -> dict:
    """One step of ``mala.step`` and of ``fused_step`` from the same state with the same draws, on a copy of
    ``energy`` whose output layer is drawn from N(0, 1) (the untrained head is small, |w| < 0.13: a nearly flat
    energy accepts nearly everything) and with a step size at which many proposals are rejected: the largest differences of the new
    state and how many chains decided differently (rounding can flip a test only where log u and the log ratio
    agree to float precision)."""
    energy = copy.deepcopy(energy)
    torch.nn.init.normal_(energy.out.weight, generator=torch.Generator().manual_seed(seed))
    state = ChainState(x, *energy_and_grad(energy, x))
    eps = torch.full((x.shape[0], 1), step)
    sigma = torch.sqrt(eps * 2.0)
    with frozen_parameters(energy):
        ref, info = mala.step(energy, state, eps, generator=torch.Generator().manual_seed(seed))
        new, accept = fused_step(ext, energy, state, eps, sigma, torch.Generator().manual_seed(seed))
    same = accept == info.accept_rate
    return {"decisions_differ": int((~same).sum()), "accepted": int(accept.sum()), "chains": len(accept),
            "max_abs_diff_x": float((new.x - ref.x)[same].abs().max()) if same.any() else 0.0,
            "max_abs_diff_energy": float((new.energy - ref.energy)[same].abs().max()) if same.any() else 0.0,
            "max_abs_diff_grad": float((new.grad - ref.grad)[same].abs().max()) if same.any() else 0.0}


def measure(ext, name: str, blocks: int, progress=None) -> dict:
    dim, model = ENERGIES[name]
    torch.manual_seed(0)
    energy = build_energy(ModelConfig(**model), (dim,))
    x = torch.randn(BATCH, dim)
    gen = torch.Generator().manual_seed(0)
    items = [Item("floor", lambda: energy_and_grad(energy, x)),
             Item("ebmlab_mala", lambda: run_chain(mala, energy, x, K, EPS, controller=StepSizeController(1, EPS),
                                                    generator=gen), per=K),
             Item("fused_mala", lambda: fused_chain(ext, energy, x, K, EPS, gen), per=K)]
    meas = run_interleaved(items, blocks=blocks, item_s=0.15, anchor="floor", progress=progress)
    return {"check": check(ext, energy, x), "floor_ms": {k: v * 1e3 for k, v in
                                                          time_stats(meas, "floor")["cpu"].items()},
            "over_floor": {n: ratio_stats(meas, n, "floor") for n in ("ebmlab_mala", "fused_mala")},
            "fused_over_ebmlab": ratio_stats(meas, "fused_mala", "ebmlab_mala")}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=15, help="interleaved blocks (default 15)")
    ap.add_argument("--energies", nargs="+", choices=sorted(ENERGIES), default=list(ENERGIES))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    print("building the kernels (about a minute the first time; torch caches the build) ...", flush=True)
    ext = build()
    result = {"benchmark": "bench_fused_mala", "machine": machine_note(), "source": source_note(), "K": K,
              "step_size": EPS, "batch": BATCH, "build_seconds": round(time.time() - t0, 1), "cases": {}}
    for name in args.energies:
        r = result["cases"][name] = measure(ext, name, args.blocks)
        print(f"== {name}/{BATCH}: floor {fmt_q(r['floor_ms'])} ms CPU; one step of both from the same draws: "
              f"{r['check']['decisions_differ']} of {r['check']['chains']} decisions differ, largest |x| "
              f"difference {r['check']['max_abs_diff_x']:.2g}")
        for n, q in r["over_floor"].items():
            print(f"   {n:12s} per step over the floor, CPU {fmt_q(q['cpu'])}")
        print(f"   fused / ebmlab per block, CPU {fmt_q(r['fused_over_ebmlab']['cpu'])}")
    result.update(seconds=time.time() - t0, loadavg_end=machine_note()["loadavg"])
    return emit(result, args.json)


if __name__ == "__main__":
    main()
