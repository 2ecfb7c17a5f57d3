"""Metropolis-adjusted Langevin (MALA): paper 000 Sec. 3.3 / App. C.1, paper 004 Sec. 4.4.

Proposal  x' = x - eps * dE/dx(x) + sigma * z  (sigma = noise_scale or sqrt(2 eps T)),
i.e. q(x' | x) = N(x - eps * dE/dx(x), sigma^2 I); target p ∝ exp(-E/T); accept with probability
min(1, exp(-(E(x') - E(x))/T + log q(x | x') - log q(x' | x))).
The state caches E and dE/dx at the current point, so a step is one forward+backward (at x') -
the same cost as unadjusted Langevin. The MH correction is exact for any (eps, sigma) pair.
``StepInfo.accept_rate`` holds each chain's 0/1 acceptance.
"""
from __future__ import annotations

import torch

from ebmlab.energies.base import energy_and_grad
from ebmlab.samplers.base import (ChainState, StepInfo, check_positive, flat_norm, init, noise_std,
                                  per_chain, randn_like)

__all__ = ["init", "step", "log_accept_ratio"]


def _log_q(x_to, x_from, grad_from, eps, sigma):
    """log q(x_to | x_from) up to a constant shared by both directions: (B,)."""
    mean = x_from - eps * grad_from
    return -((x_to - mean) ** 2 / (2 * sigma ** 2)).flatten(1).sum(1)


def log_accept_ratio(state: ChainState, prop: ChainState, eps, sigma, temperature: float):
    """(B,) log MH ratio for moving from ``state`` to ``prop``."""
    log_target = -(prop.energy - state.energy) / temperature
    return (log_target + _log_q(state.x, prop.x, prop.grad, eps, sigma)
            - _log_q(prop.x, state.x, state.grad, eps, sigma))


def step(energy, state: ChainState, step_size, *, noise_scale=None, temperature: float = 1.0,
         generator: torch.Generator | None = None, **cond):
    if not torch.is_tensor(step_size):  # tensors come from run_chain/controllers, checked there
        check_positive("step_size", step_size)
    x = state.x
    eps = per_chain(step_size, x)  # (B, 1, ...)
    sigma = noise_std(step_size, noise_scale, temperature, x)
    x_prop = (x - eps * state.grad + sigma * randn_like(x, generator)).detach()
    e_prop, g_prop = energy_and_grad(energy, x_prop, **cond)
    prop = ChainState(x_prop, e_prop, g_prop)
    log_a = log_accept_ratio(state, prop, eps, sigma, temperature)  # (B,)
    u = torch.rand(log_a.shape, generator=generator, device=x.device, dtype=log_a.dtype)
    # A NaN ratio compares False and is rejected; run_chain then checks the final state.
    accept = torch.log(u) < log_a  # (B,) bool
    keep = accept.view(-1, *([1] * (x.dim() - 1)))
    new = ChainState(torch.where(keep, x_prop, x), torch.where(accept, e_prop, state.energy),
                     torch.where(keep, g_prop, state.grad))
    return new, StepInfo(accept.to(x.dtype), eps.flatten(), flat_norm(state.grad))
