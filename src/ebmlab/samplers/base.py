"""Shared sampler pieces: the cached chain state, per-step diagnostics, ``run_chain`` and the
adaptive step-size controller.

Every sampler module (``langevin``, ``mala``) exposes ``init(energy, x, **cond) -> ChainState`` and
``step(energy, state, step_size, *, noise_scale=None, temperature=1.0, generator=None, **cond)``.
The state caches E(x) and dE/dx, so one step costs exactly one forward and one backward of the
energy, for unadjusted Langevin and for MALA alike.

Knobs (DESIGN.md, paper 004 App. A.4): the drift is ``-step_size * dE/dx``; the noise has standard
deviation ``noise_scale``, which defaults to ``sqrt(2 * step_size * temperature)`` (the textbook
discretisation of Langevin dynamics for p ∝ exp(-E/T)). Paper 001 sets noise_scale directly
(step 10-1000, noise 0.001-0.005). ``step_size`` may be a float or a tensor of shape (B,) (one per
chain, e.g. gathered from per-group step sizes).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ebmlab.energies.base import energy_and_grad


class ChainState(NamedTuple):
    x: Tensor       # (B, ...) current points
    energy: Tensor  # (B,) E(x), cached
    grad: Tensor    # (B, ...) dE/dx, cached


class StepInfo(NamedTuple):
    accept_rate: Tensor  # (B,) acceptance indicator/probability of this step (1 for unadjusted)
    step_size: Tensor    # (B,) step size used
    grad_norm: Tensor    # (B,) ||dE/dx|| at the start of the step


def init(energy, x: Tensor, **cond) -> ChainState:
    """Evaluate and cache E and dE/dx at the chain's starting points."""
    e, g = energy_and_grad(energy, x, **cond)
    return ChainState(x.detach(), e, g)


def per_chain(value, x: Tensor) -> Tensor:
    """A float or (B,) tensor -> (B, 1, ..., 1), broadcastable against x (B, ...)."""
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if v.dim() == 0:
        v = v.expand(x.shape[0])
    if v.shape != (x.shape[0],):
        raise ValueError(f"step size/noise must be a scalar or shape ({x.shape[0]},), got {tuple(v.shape)}")
    return v.view(-1, *([1] * (x.dim() - 1)))


def check_positive(name: str, value) -> None:
    """Raise unless ``value`` (a number or a tensor) is positive everywhere. Numbers are checked in
    Python (no tensor op per sampler step); tensors cost one reduction."""
    if isinstance(value, (int, float)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
        return
    v = torch.as_tensor(value)
    if not bool(torch.all(v > 0)):
        raise ValueError(f"{name} must be positive, got {v.min().item() if v.numel() > 1 else v.item()}")


def noise_std(step_size, noise_scale, temperature: float, x: Tensor) -> Tensor:
    """(B, 1, ...) noise standard deviation: noise_scale if given, else sqrt(2 * eps * T)."""
    if noise_scale is not None:
        return per_chain(noise_scale, x)
    return torch.sqrt(2.0 * per_chain(step_size, x) * temperature)


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def flat_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def run_chain(sampler, energy, x: Tensor, n_steps: int, step_size, *, noise_scale=None,
              temperature: float = 1.0, generator=None, controller=None, groups: Tensor | None = None,
              **cond) -> tuple[Tensor, dict[str, Tensor]]:
    """Run ``n_steps`` of ``sampler`` (the langevin or mala module) from x.

    With a ``controller`` (StepSizeController), step sizes come from it per group (``groups``: (B,)
    long, default all 0) and it is updated after every step. Returns the final points (detached) and
    diagnostics, each a (n_steps,) tensor: ``accept_rate``, ``step_size`` (mean over chains),
    ``energy`` (mean E after the step), ``grad_norm``. Nothing is logged here.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if groups is None and controller is not None:
        groups = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    if controller is None:
        check_positive("step_size", step_size)
    state = sampler.init(energy, x, **cond)
    rows = []  # per step: (4,) tensor of means, stacked once at the end (no per-step device sync)
    for _ in range(n_steps):
        eps = controller.step_size(groups) if controller is not None else step_size
        state, info = sampler.step(energy, state, eps, noise_scale=noise_scale, temperature=temperature,
                                   generator=generator, **cond)
        if controller is not None:
            controller.update(info.accept_rate, groups)
        rows.append(torch.stack([info.accept_rate.mean(), info.step_size.mean(), state.energy.mean(),
                                 info.grad_norm.mean()]).detach())
    check_finite_chain(state)
    table = torch.stack(rows).float().cpu() if rows else torch.zeros(0, 4)
    diag = {k: table[:, i] for i, k in enumerate(("accept_rate", "step_size", "energy", "grad_norm"))}
    return state.x.detach(), diag


def check_finite_chain(state: ChainState) -> None:
    """Raise if the chain ended on a non-finite point or energy (checked once, after the chain)."""
    if not bool(torch.isfinite(state.energy).all()) or not bool(torch.isfinite(state.x).all()):
        raise FloatingPointError(
            "the sampler produced a non-finite energy or sample; lower the step size or the noise "
            "scale, or check the energy for overflow")


class StepSizeController(nn.Module):
    """Adaptive MALA step size, one per group, driven to a target acceptance rate.

    Robbins-Monro on the log step size: log eps_g += rate * (mean acceptance of group g - target).
    Paper 000 keeps one step size per t at 60 % acceptance (Sec. 3.3, App. C.1); paper 004 shrinks
    the step when acceptance drops under 0.67 (Sec. 4.4); 0.574 is the optimal MALA rate of
    Roberts & Rosenthal (1998). Kept as a buffer so checkpoints carry it.
    """

    def __init__(self, n_groups: int = 1, init_step: float = 1e-2, target: float = 0.574,
                 rate: float = 0.05, min_step: float = 1e-8, max_step: float = 1e3):
        super().__init__()
        check_positive("init_step", init_step)
        if not 0.0 < target < 1.0:
            raise ValueError(f"target acceptance must lie in (0, 1), got {target}")
        self.target, self.rate = target, rate
        self.log_min, self.log_max = math.log(min_step), math.log(max_step)
        self.register_buffer("log_step", torch.full((n_groups,), math.log(init_step)))

    def step_size(self, groups: Tensor) -> Tensor:
        """(B,) step size for each chain's group."""
        return self.log_step.exp()[groups]

    @torch.no_grad()
    def update(self, accept: Tensor, groups: Tensor) -> None:
        """accept (B,), groups (B,) long: nudge each visited group towards the target rate."""
        g = self.log_step.shape[0]
        total = torch.zeros(g, device=accept.device).index_add_(0, groups, accept.float())
        count = torch.zeros(g, device=accept.device).index_add_(0, groups, torch.ones_like(accept, dtype=torch.float))
        seen = count > 0
        mean = total[seen] / count[seen]
        self.log_step[seen] = (self.log_step[seen] + self.rate * (mean - self.target)).clamp(self.log_min, self.log_max)
