"""Metropolis-adjusted Langevin (MALA): paper 000 Sec. 3.3 / App. C.1, paper 004 Sec. 4.2.5.

Proposal  x' = x - eps * dE/dx(x) + sigma * z  (``langevin.propose``; sigma = noise_scale or
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
from ebmlab.samplers.base import ChainState, StepInfo, init
from ebmlab.samplers.langevin import propose

__all__ = ["init", "step", "log_accept_ratio"]


def _log_q(x_to, x_from, grad_from, eps, sigma):
    """log q(x_to | x_from) up to a constant shared by both directions: (B,)."""
    d = torch.addcmul(x_to - x_from, eps, grad_from)  # x_to - (x_from - eps * grad_from)
    return (d * d).flatten(1).sum(1) * (-0.5 / (sigma.flatten() ** 2))


def log_accept_ratio(state: ChainState, prop: ChainState, eps, sigma, temperature: float, z=None):
    """(B,) log MH ratio for moving from ``state`` to ``prop``. ``z``: the standard-normal draw of
    the proposal (x' = x - eps dE/dx + sigma z). Then log q(x | x') - log q(x' | x) =
    (|z|^2 - |d / sigma|^2) / 2 with d = x - x' + eps dE/dx(x'), computed as one product
    (z - d/sigma)(z + d/sigma): no proposal density is recomputed."""
    log_target = state.energy - prop.energy
    if temperature != 1.0:
        log_target = log_target / temperature
    if z is None:
        return log_target + _log_q(state.x, prop.x, prop.grad, eps, sigma) - _log_q(prop.x, state.x, state.grad, eps, sigma)
    ds = torch.addcmul(state.x - prop.x, eps, prop.grad).div_(sigma)  # (B, ...) d / sigma
    return log_target + 0.5 * ((z - ds) * (z + ds)).flatten(1).sum(1)


def step(energy, state: ChainState, step_size, *, noise_scale=None, temperature: float = 1.0,
         generator: torch.Generator | None = None, noise: Tensor | None = None,
         create_graph: bool = False, evaluate: bool = True, **cond):
    """One MALA step. The proposal's energy is always needed (``evaluate`` is ignored); the accept
    step is not differentiable, so ``create_graph`` must stay False."""
    if create_graph:
        raise ValueError("MALA's accept/reject step is not differentiable; use the langevin sampler "
                         "for a chain with a gradient")
    x = state.x
    x_prop, eps, sigma, z = propose(state, step_size, noise_scale=noise_scale, temperature=temperature,
                                    generator=generator, noise=noise)
    x_prop = x_prop.detach()
    e_prop, g_prop = energy_and_grad(energy, x_prop, **cond)
    prop = ChainState(x_prop, e_prop, g_prop)
    log_a = log_accept_ratio(state, prop, eps, sigma, temperature, z)  # (B,)
    u = torch.rand(log_a.shape, generator=generator, device=x.device, dtype=log_a.dtype)
    # A NaN ratio compares False and is rejected; run_chain then checks the final state.
    accept = u.log_() < log_a  # (B,) bool
    keep = accept.view(-1, *([1] * (x.dim() - 1)))
    new = ChainState(torch.where(keep, x_prop, x), torch.where(accept, e_prop, state.energy),
                     torch.where(keep, g_prop, state.grad))
    return new, StepInfo(accept, eps)
