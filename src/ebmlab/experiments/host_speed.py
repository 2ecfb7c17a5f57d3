"""How fast the host is, in the unit of the performance benchmarks (docs/performance.md, "floor"): the CPU
time of one forward+backward (``energies.base.energy_and_grad``) of the default energy (residual MLP, width
128, depth 3, 10-D input) at batch 256, on the thread count in force. A wall-clock budget buys updates in
inverse proportion to it: the leaderboard's cells on two hosts whose floors differ 2.4x made 2.4x fewer
updates in the same 20 s (docs/leaderboard.md, "The machine matters for a wall-clock budget"), so every
leaderboard cell records the floor of the host it trained on (``host_floor_ms``) beside its cost.
"""
from __future__ import annotations

import statistics
import time

import torch

from ebmlab.config import ModelConfig
from ebmlab.energies.base import energy_and_grad
from ebmlab.energies.build import build_energy

__all__ = ["floor_ms"]

DIM, BATCH = 10, 256  # the default energy's input and the default training batch


def floor_ms(blocks: int = 5, calls: int = 10) -> float:
    """Median over ``blocks`` of the CPU milliseconds per call of ``calls`` back-to-back forward+backward
    passes (after 3 untimed ones: allocator and oneDNN caches). The network and its input come from a private
    generator inside ``torch.random.fork_rng``, so the caller's random stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        energy = build_energy(ModelConfig(), (DIM,))
        x = torch.randn(BATCH, DIM)
        for _ in range(3):
            energy_and_grad(energy, x)
        per_call = []
        for _ in range(blocks):
            t0 = time.process_time()
            for _ in range(calls):
                energy_and_grad(energy, x)
            per_call.append((time.process_time() - t0) / calls * 1e3)
    return round(statistics.median(per_call), 3)
