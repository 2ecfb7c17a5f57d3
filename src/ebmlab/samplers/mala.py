"""Metropolis-adjusted Langevin (MALA): paper 000 Sec. 3.3 / App. C.1, paper 004 Sec. 4.2.5.

Proposal  x' = x - eps * dE/dx(x) + sigma * z  (``langevin.move``; sigma = noise_scale or
sqrt(2 eps T)), i.e. q(x' | x) = N(x - eps * dE/dx(x), sigma^2 I); target p ∝ exp(-E/T); accept with
probability min(1, exp(-(E(x') - E(x))/T + log q(x | x') - log q(x' | x))).
The state caches E and dE/dx at the current point, so a step is one forward+backward (at x') -
the same cost as unadjusted Langevin. The MH correction is exact for any (eps, sigma) pair.
``StepInfo.accept_rate`` holds each chain's 0/1 acceptance.

Step-size adaptation is ``run_chain``'s (``StepSizeController``: Robbins-Monro to a target, 0.574 by
default, or paper 004's shrink-only rule below 0.67); paper 004's "rejected samples do not count
toward Langevin steps" is ``run_chain(..., count="accepted")``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ebmlab.energies.base import energy_and_grad
from ebmlab.samplers.base import ChainState, StepInfo, init, randn_like, rows
from ebmlab.samplers.langevin import move, scales

__all__ = ["init", "step", "log_accept_ratio"]


def _log_q(x_to, x_from, grad_from, eps, sigma):
    """log q(x_to | x_from) up to a constant shared by both directions: (B,)."""
    d = torch.addcmul(x_to - x_from, eps, grad_from)  # x_to - (x_from - eps * grad_from)
    return rows(d * d).sum(1) * (-0.5 / (sigma.flatten() ** 2))


def log_accept_ratio(state: ChainState, prop: ChainState, eps, sigma, temperature: float, z=None):
    """(B,) log MH ratio for moving from ``state`` to ``prop``. ``z``: the standard-normal draw of
    the proposal (x' = x - eps dE/dx + sigma z). Then log q(x | x') - log q(x' | x) =
    (|z|^2 - |d / sigma|^2) / 2 with d = x - x' + eps dE/dx(x'), computed as one product
    (z - d/sigma)(z + d/sigma): no proposal density is recomputed."""
    if z is None:
        log_target = state.energy - prop.energy
        if temperature != 1.0:
            log_target = log_target / temperature
        return log_target + _log_q(state.x, prop.x, prop.grad, eps, sigma) - _log_q(prop.x, state.x, state.grad, eps, sigma)
    return _log_ratio(state.x, state.energy, prop.x, prop.energy, prop.grad, eps, sigma, z, temperature)


def _log_ratio(x, e, x_prop, e_prop, g_prop, eps, sigma, z, temperature: float) -> Tensor:
    """``log_accept_ratio`` with the proposal's draw z, on plain tensors: (B,)."""
    log_target = e - e_prop
    if temperature != 1.0:
        log_target = log_target / temperature
    ds = torch.addcmul(x - x_prop, eps, g_prop).div_(sigma)  # (B, ...) d / sigma
    prod = (z - ds).mul_(z + ds)  # (B, ...)
    # log_target + 0.5 * sum: alpha=0.5 scales exactly (a power of two), so the fused add rounds once,
    # as the separate product and sum did
    return log_target.add_(prod.sum(1) if prod.dim() == 2 else rows(prod).sum(1), alpha=0.5)


def step(energy, state: ChainState, step_size, *, noise_scale=None, temperature: float = 1.0,
         generator: torch.Generator | None = None, noise: Tensor | None = None,
         create_graph: bool = False, evaluate: bool = True, **cond):
    """One MALA step: the Langevin proposal (``langevin.move``), E and dE/dx there (one forward+backward),
    the MH test, and the accepted chains' new state. The proposal's energy is always needed
    (``evaluate`` is ignored); the accept step is not differentiable, so ``create_graph`` must stay False."""
    if create_graph:
        raise ValueError("MALA's accept/reject step is not differentiable; use the langevin sampler "
                         "for a chain with a gradient")
    x, e, grad = state
    eps, sigma = scales(x, step_size, noise_scale, temperature)
    z = randn_like(x, generator) if noise is None else noise
    x_prop = move(x, grad, eps, sigma, z)
    if x_prop.requires_grad:  # (only if the incoming state carried a graph)
        x_prop = x_prop.detach()
    e_prop, g_prop = energy_and_grad(energy, x_prop, **cond)
    log_a = _log_ratio(x, e, x_prop, e_prop, g_prop, eps, sigma, z, temperature)  # (B,)
    u = torch.empty_like(log_a).uniform_(generator=generator)  # (B,) U(0, 1): torch.rand's numbers, cheaper
    # A NaN ratio compares False and is rejected; run_chain then checks the final state.
    accept = u.log_() < log_a  # (B,) bool
    keep = accept.view(_column(x))
    new = ChainState(torch.where(keep, x_prop, x), torch.where(accept, e_prop, e),
                     torch.where(keep, g_prop, grad))
    return new, StepInfo(accept, eps)


def _column(x: Tensor) -> tuple[int, ...]:
    """(-1, 1, ..., 1): a (B,) mask viewed to broadcast over x (B, ...)."""
    return (-1, 1) if x.dim() == 2 else (-1,) + (1,) * (x.dim() - 1)
