"""Paper 001's generation procedure (Du, Li, Tenenbaum, Mordatch: improved CD), Alg. 2 and Sec. 2.3:
x̃⁰ ~ U, then rounds of (augmentation transition x = D(x), K Langevin steps
x ← x - λ ∇ₓE(x) + ω, ω ~ N(0, σ²)), "a random augmentation after every 20 steps" at test time.

λ (``step_size``) and σ (``noise_scale``) are separate knobs (App. B.2: λ = 500-1000, σ = 0.001);
with σ² = 2λ it is a textbook Langevin chain on exp(-E) (tests/oracle/). Works for any energy,
also a composed one (Sec. 3.4, applications/composition.py). Steps run through ``run_chain``; the
energy at the end of a round is not evaluated (the next round starts at an augmented point), so a
round of K steps costs K forward+backward passes.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ebmlab.samplers import langevin
from ebmlab.samplers.base import ChainInfo, run_chain


def augmented_langevin(energy, x0: Tensor, n_steps: int, steps_per_round: int, step_size: float,
                       noise_scale: float, *, augment: Callable | None = None, clip: Callable | None = None,
                       generator: torch.Generator | None = None, **cond) -> tuple[Tensor, ChainInfo]:
    """Alg. 2 from x0 (n, ...): ``n_steps`` Langevin steps in all, in rounds of ``steps_per_round``
    (the last may be shorter), each round after ``augment(x, generator)`` (None: identity).
    Returns ``clip`` of the final samples (None: identity) and the per-step ``ChainInfo``."""
    x, infos = x0, []
    for r in range(math.ceil(n_steps / steps_per_round)):
        k = min(steps_per_round, n_steps - r * steps_per_round)
        if augment is not None:
            x = augment(x, generator)
        with torch.enable_grad():
            x, info = run_chain(langevin, energy, x, k, step_size, noise_scale=noise_scale,
                                final_energy=False, generator=generator, **cond)
        infos.append(info)
    x = x.detach()
    return (clip(x) if clip is not None else x), ChainInfo.cat(infos)
