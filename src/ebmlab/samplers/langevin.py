"""Unadjusted Langevin dynamics (paper 004 Eq. 3 and App. A.4 Eq. 9; paper 001 Eq. 2; paper 002
Eq. 17; paper 003 Eq. 5).

x' = x - eps * dE/dx(x) + sigma * z,  z ~ N(0, I),  sigma = noise_scale or sqrt(2 eps T).
With sigma = sqrt(2 eps T) the continuous-time limit samples p ∝ exp(-E/T). One forward+backward
per step: the gradient at x is cached in the state and the new point's energy and gradient are
computed once and cached for the next step. ``propose`` is the move alone; MALA reuses it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ebmlab.energies.base import energy_and_grad
from ebmlab.samplers.base import ChainState, StepInfo, check_positive, init, noise_std, per_chain, randn_like

__all__ = ["init", "step", "propose"]


def propose(state: ChainState, step_size, *, noise_scale=None, temperature: float = 1.0,
            generator: torch.Generator | None = None, noise: Tensor | None = None):
    """The Langevin move from ``state``: returns (x' (B, ...), eps (B, 1, ...), sigma (B, 1, ...),
    z (B, ...) the standard-normal draw used). ``noise`` (B, ...) replaces that draw."""
    if not torch.is_tensor(step_size):  # tensors come from run_chain/controllers, checked there
        check_positive("step_size", step_size)
    x = state.x
    eps = per_chain(step_size, x)  # (B, 1, ...)
    sigma = noise_std(eps, noise_scale, temperature, x)
    z = randn_like(x, generator) if noise is None else noise
    return (x - eps * state.grad) + sigma * z, eps, sigma, z


def step(energy, state: ChainState, step_size, *, noise_scale=None, temperature: float = 1.0,
         generator: torch.Generator | None = None, noise: Tensor | None = None,
         create_graph: bool = False, evaluate: bool = True, **cond):
    """One unadjusted Langevin step. ``create_graph=True`` keeps the step differentiable with respect
    to the incoming x and the energy's parameters (paper 001's KL term). ``evaluate=False`` skips
    E and dE/dx at the new point (the state then carries None: a chain's final step)."""
    x_new, eps, _, _ = propose(state, step_size, noise_scale=noise_scale, temperature=temperature,
                               generator=generator, noise=noise)
    info = StepInfo(None, eps)  # unadjusted: every move is taken
    if not evaluate:
        return ChainState(x_new if create_graph else x_new.detach(), None, None), info
    e_new, g_new = energy_and_grad(energy, x_new, create_graph=create_graph, **cond)
    if not create_graph:
        x_new = x_new.detach()
    return ChainState(x_new, e_new, g_new), info
