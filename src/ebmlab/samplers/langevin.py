"""Unadjusted Langevin dynamics (paper 004 Eq. 3 and App. A.4 Eq. 9; paper 001 Eq. 2).

x' = x - eps * dE/dx(x) + sigma * z,  z ~ N(0, I),  sigma = noise_scale or sqrt(2 eps T).
With sigma = sqrt(2 eps T) the continuous-time limit samples p ∝ exp(-E/T). One forward+backward
per step: the gradient at x is cached in the state and the new point's energy and gradient are
computed once and cached for the next step.
"""
from __future__ import annotations

import torch

from ebmlab.energies.base import energy_and_grad
from ebmlab.samplers.base import (ChainState, StepInfo, check_positive, flat_norm, init, noise_std,
                                  per_chain, randn_like)

__all__ = ["init", "step"]


def step(energy, state: ChainState, step_size, *, noise_scale=None, temperature: float = 1.0,
         generator: torch.Generator | None = None, create_graph: bool = False, **cond):
    """One unadjusted Langevin step. ``create_graph=True`` keeps the step differentiable with respect
    to the incoming x and the energy's parameters (paper 001's KL term)."""
    if not torch.is_tensor(step_size):  # tensors come from run_chain/controllers, checked there
        check_positive("step_size", step_size)
    x = state.x
    eps = per_chain(step_size, x)  # (B, 1, ...)
    sigma = noise_std(step_size, noise_scale, temperature, x)
    x_new = x - eps * state.grad + sigma * randn_like(x, generator)
    e_new, g_new = energy_and_grad(energy, x_new, create_graph=create_graph, **cond)
    if not create_graph:
        x_new = x_new.detach()
    info = StepInfo(torch.ones(x.shape[0], device=x.device), eps.flatten(), flat_norm(state.grad))
    return ChainState(x_new, e_new, g_new), info
