"""Unadjusted Langevin dynamics (paper 004 Eq. 3 and App. A.4 Eq. 9; paper 001 Eq. 2; paper 002
Eq. 17; paper 003 Eq. 5).

x' = x - eps * dE/dx(x) + sigma * z,  z ~ N(0, I),  sigma = noise_scale or sqrt(2 eps T).
With sigma = sqrt(2 eps T) the continuous-time limit samples p ∝ exp(-E/T). One forward+backward
per step: the gradient at x is cached in the state and the new point's energy and gradient are
computed once and cached for the next step. ``propose`` is the move alone (``scales`` then ``move``);
MALA reuses those two.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ebmlab.energies.base import energy_and_grad
from ebmlab.samplers.base import ChainState, StepInfo, check_positive, init, noise_std, per_chain, randn_like
from ebmlab.samplers.progress import step_counter

__all__ = ["init", "step", "propose", "move", "scales", "fixed_step_chain"]


def propose(state: ChainState, step_size, *, noise_scale=None, temperature: float = 1.0,
            generator: torch.Generator | None = None, noise: Tensor | None = None):
    """The Langevin move from ``state``: returns (x' (B, ...), eps (B, 1, ...), sigma (B, 1, ...),
    z (B, ...) the standard-normal draw used). ``noise`` (B, ...) replaces that draw."""
    eps, sigma = scales(state.x, step_size, noise_scale, temperature)
    z = randn_like(state.x, generator) if noise is None else noise
    return move(state.x, state.grad, eps, sigma, z), eps, sigma, z


def scales(x: Tensor, step_size, noise_scale, temperature: float) -> tuple[Tensor, Tensor]:
    """(eps, sigma), each (B, 1, ...): as given when both already are (``run_chain`` builds them once
    per chain or per step; it checks a numeric step size, not the noise), else built from numbers or (B,)
    tensors."""
    if _per_chain(step_size, x) and _per_chain(noise_scale, x):
        return step_size, noise_scale
    if not torch.is_tensor(step_size):  # tensors come from run_chain/controllers, checked there
        check_positive("step_size", step_size)
    eps = per_chain(step_size, x)  # (B, 1, ...)
    return eps, noise_std(eps, noise_scale, temperature, x)


def move(x: Tensor, grad: Tensor, eps: Tensor, sigma: Tensor, z: Tensor) -> Tensor:
    """x' = x - eps * dE/dx + sigma * z (B, ...): the one place the Langevin arithmetic is written."""
    return (x - eps * grad) + sigma * z


def _per_chain(value, x: Tensor) -> bool:
    """Whether ``value`` is already a per-chain (B, 1, ...) tensor (``per_chain`` would return it as is)."""
    return torch.is_tensor(value) and value.dim() == x.dim() and value.shape[0] == x.shape[0]


def step(energy, state: ChainState, step_size, *, noise_scale=None, temperature: float = 1.0,
         generator: torch.Generator | None = None, noise: Tensor | None = None,
         create_graph: bool = False, evaluate: bool = True, **cond):
    """One unadjusted Langevin step. ``create_graph=True`` keeps the step differentiable with respect
    to the incoming x and the energy's parameters (paper 001's KL term). ``evaluate=False`` skips
    E and dE/dx at the new point (the state then carries None: a chain's final step)."""
    eps, sigma = scales(state.x, step_size, noise_scale, temperature)
    x_new = move(state.x, state.grad, eps, sigma, randn_like(state.x, generator) if noise is None else noise)
    info = StepInfo(None, eps)  # unadjusted: every move is taken
    if not evaluate:
        return ChainState(x_new if create_graph else x_new.detach(), None, None), info
    e_new, g_new = energy_and_grad(energy, x_new, create_graph=create_graph, **cond)
    if not create_graph:
        x_new = x_new.detach()
    return ChainState(x_new, e_new, g_new), info


def fixed_step_chain(energy, state: ChainState, n_steps: int, eps: Tensor, sigma: Tensor, recorder, *,
                     final_energy: bool = True, generator: torch.Generator | None = None, **cond) -> ChainState:
    """``n_steps`` of ``step`` with one (eps, sigma) pair, no gradient kept and nothing else per step: what
    ``run_chain`` runs for a fixed-step unadjusted chain with light diagnostics (the same numbers as its
    general loop, without the per-step bookkeeping that loop needs for controllers, projections, injected
    noises and differentiable steps). ``recorder.add_unadjusted(eps, E before the step)`` per step."""
    x, e, g = state
    record, tick = recorder.add_unadjusted, step_counter()
    for i in range(n_steps):
        record(eps, e)
        x = move(x, g, eps, sigma, randn_like(x, generator))
        if final_energy or i < n_steps - 1:
            e, g = energy_and_grad(energy, x, **cond)
        else:
            e = g = None
        if tick is not None:
            tick()
    return ChainState(x, e, g)
