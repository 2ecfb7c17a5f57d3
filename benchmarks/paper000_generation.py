"""Paper 000's generation (Alg. 3 and Alg. 4) on a trained run: sample quality and the acceptance of
the last 10 % of stages under three step policies: the step carried from stage to stage and fitted
to each stage's target while sampling (the default since issue 12), the same with 2 extra
step-fitting MALA steps per stage, and the step adapted on the training chain reused while annealing
(the behaviour before issue 12: Robbins-Monro rate 0.05 from the training chain's step).

    python benchmarks/paper000_generation.py RUN [--n 1000] [--seed 0]

Prints one row per (algorithm, step policy): sample precision (exact spiral density), energy
distance to fresh data (and its data-vs-data floor), accept_rate_last10, total steps taken.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from ebmlab.metrics.density import sample_precision
from ebmlab.metrics.distances import energy_distance
from ebmlab.training.run import open_checkpoint


POLICIES = ("fitted while sampling (default)", "fitted + 2 extra steps per stage", "training-chain step")


def measure(run, algorithm: str, policy: str, n: int, seed: int) -> dict:
    obj, data = run.objective, run.data
    cfg = obj.cfg
    init_step = None
    if policy == "fitted while sampling (default)":
        obj.cfg = dataclasses.replace(cfg, sample_adapt_steps=0, sample_adapt_rate=0.5)
    elif policy == "fitted + 2 extra steps per stage":  # step-fitting MALA steps before each stage's N
        obj.cfg = dataclasses.replace(cfg, sample_adapt_steps=2, sample_adapt_rate=0.5)
    elif policy == "training-chain step":  # the pre-fix policy: the training chain's step, slow adaptation
        obj.cfg = dataclasses.replace(cfg, sample_adapt_steps=0, sample_adapt_rate=cfg.adapt_rate)
        init_step = float(obj.ctrl.log_step.exp().median())
    g = torch.Generator().manual_seed(seed)
    out = obj.generate(n, algorithm=algorithm, generator=g, init_step=init_step)
    obj.cfg = cfg
    x = data.transform.to_data(out.x)
    g_ref = torch.Generator().manual_seed(seed + 1)
    ref, ref2 = data.fresh(n, g_ref), data.fresh(n, g_ref)
    return {"precision": sample_precision(data.dist.log_prob(x), data.dist.log_prob(ref2)),
            "energy_distance": energy_distance(x, ref), "floor": energy_distance(ref2, ref),
            "accept_last10": float(out.info["accept_rate_last10"]),
            "steps": int(out.info["accept_rate"].numel())}


def main() -> None:
    p = argparse.ArgumentParser(description=(
        "Paper 000's generation (Alg. 3 and Alg. 4) on a trained run: sample quality and the acceptance "
        "of the last 10 % of stages under three step policies (fitted while sampling, the default; the "
        "same with 2 extra step-fitting steps per stage; the training chain's step, as before issue 12)."))
    p.add_argument("run")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    run = open_checkpoint(args.run)
    print(f"run {args.run} step {run.step} method {run.cfg.method.name}")
    print("| algorithm | step policy | precision | energy distance (floor) | accept last 10 % | steps |")
    print("|---|---|---|---|---|---|")
    for algorithm in ("annealing", "soft"):
        for policy in POLICIES:
            m = measure(run, algorithm, policy, args.n, args.seed)
            print(f"| {algorithm} | {policy} | {m['precision']:.3f} | {m['energy_distance']:.4f} ({m['floor']:.4f}) "
                  f"| {m['accept_last10']:.3f} | {m['steps']} |", flush=True)


if __name__ == "__main__":
    main()
