"""The chain state and ``run_chain`` (THE one chain loop); the adaptive step-size controller is
``samplers/controller.py`` and the per-step diagnostics (``ChainInfo``, their recorder) are
``samplers/diagnostics.py`` (both re-exported here).

Every sampler module (``langevin``, ``mala``) exposes ``init(energy, x, **cond) -> ChainState`` and
``step(energy, state, step_size, *, noise_scale=None, temperature=1.0, generator=None, noise=None,
create_graph=False, evaluate=True, **cond) -> (ChainState, StepInfo)``. The state caches E(x) and
dE/dx, so one step costs exactly one forward and one backward of the energy, for unadjusted
Langevin and for MALA alike (MALA = the Langevin move of ``langevin.move`` + a Metropolis-Hastings
accept); a ``run_chain`` projection adds one per step, ``grad="last"`` one per chain.

Knobs (DESIGN.md, paper 004 App. A.4): the drift is ``-step_size * dE/dx``; the noise has standard
deviation ``noise_scale``, which defaults to ``sqrt(2 * step_size * temperature)`` (the textbook
discretisation of Langevin dynamics for p ∝ exp(-E/T)). Paper 001 sets noise_scale directly
(step 10-1000, noise 0.001-0.005); paper 002 anneals it per step. ``step_size`` may be a float or a
tensor of shape (B,) (one per chain, e.g. gathered from per-group step sizes).

A fixed-step unadjusted chain with nothing per step (no controller, projection, injected noise, callback,
gradient or full diagnostics) runs in the sampler's ``fixed_step_chain`` (``langevin``), the same numbers
without the general loop's per-step bookkeeping (3 % of a small network's step).

Every generation procedure of the papers is built on ``run_chain``: per-step noise schedules and
injected noises (002), a projection after every step (003's inpainting), a gradient kept through
none / the last / all steps (001's KL term), per-group adaptive step sizes (000, 004), and paper
004's Metropolis-adjusted chains whose length counts accepted moves only (``count="accepted"``).
"""
from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from ebmlab.energies.base import energy_and_grad
from ebmlab.samplers.controller import PAPER004_ACCEPT, StepSizeController  # noqa: F401 (re-exported)
from ebmlab.samplers.diagnostics import ChainInfo, Recorder, flat_norm  # noqa: F401 (re-exported)
from ebmlab.samplers.progress import step_counter


class ChainState(NamedTuple):
    """A chain's points with their cached energy and gradient (one fwd+bwd per step)."""
    x: Tensor              # (B, ...) current points
    energy: Tensor | None  # (B,) E(x), cached (None only after a final step with evaluate=False)
    grad: Tensor | None    # (B, ...) dE/dx, cached


class StepInfo(NamedTuple):
    """What one sampler step reports: acceptance (None: unadjusted) and the step size used."""
    accept_rate: Tensor | None  # (B,) bool acceptance of this step (None: unadjusted, every move taken)
    step_size: Tensor           # (B, 1, ...) or (B,) step size used


class frozen_parameters:
    """Context manager: the parameters of ``module`` that require grad stop requiring it, and are
    restored on exit. A chain that needs no gradient to the parameters then records no weight-side
    autograd state (5-13 % of a forward+backward on CPU, docs/performance.md). Nested use is safe."""

    def __init__(self, module):
        self.params = [p for p in module.parameters() if p.requires_grad] if isinstance(module, nn.Module) else []

    def __enter__(self):
        for p in self.params:
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def release(self) -> None:
        """Restore the parameters now (e.g. before a chain's last, differentiable step); idempotent."""
        for p in self.params:
            p.requires_grad_(True)
        self.params = []


def init(energy, x: Tensor, *, create_graph: bool = False, **cond) -> ChainState:
    """Evaluate and cache E and dE/dx at the chain's starting points."""
    e, g = energy_and_grad(energy, x, create_graph=create_graph, **cond)
    return ChainState(x if create_graph else x.detach(), e, g)


def per_chain(value, x: Tensor) -> Tensor:
    """A float, a (B,) tensor or an already broadcast (B, 1, ..., 1) tensor -> (B, 1, ..., 1)."""
    if torch.is_tensor(value) and value.dim() == x.dim() and value.shape[0] == x.shape[0]:
        return value  # already per chain (run_chain precomputes it once per step)
    if isinstance(value, (int, float)):  # a device fill, not a blocking host-to-device copy
        return torch.full((x.shape[0],) + (1,) * (x.dim() - 1), float(value), dtype=x.dtype, device=x.device)
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if v.dim() == 0:
        v = v.expand(x.shape[0])
    if v.shape != (x.shape[0],):
        raise ValueError(f"step size/noise must be a scalar or shape ({x.shape[0]},), got {tuple(v.shape)}")
    return v.view(-1, *([1] * (x.dim() - 1)))


def rows(t: Tensor) -> Tensor:
    """``t`` (B, ...) as (B, F): ``flatten(1)``, which hands a 2-D tensor back without dispatching an op (the chains'
    hot path), and (B,) points (a user's 1-D chains) as (B, 1)."""
    return t.flatten(1) if t.dim() > 1 else t.unsqueeze(1)


def check_positive(name: str, value) -> None:
    """Raise unless ``value`` (a number or a tensor) is positive everywhere. Numbers are checked in
    Python (no tensor op per sampler step); tensors cost one reduction."""
    if isinstance(value, (int, float)):
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be positive and finite, got {value}")
        return
    v = torch.as_tensor(value)
    if not bool(torch.all((v > 0) & torch.isfinite(v))):
        raise ValueError(f"{name} must be positive, got {v.min().item() if v.numel() > 1 else v.item()}")


def noise_std(step_size, noise_scale, temperature: float, x: Tensor) -> Tensor:
    """(B, 1, ...) noise standard deviation: noise_scale if given, else sqrt(2 * eps * T)."""
    if noise_scale is not None:
        return per_chain(noise_scale, x)
    return torch.sqrt(per_chain(step_size, x) * (2.0 * temperature))


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard-normal noise of x's shape, dtype and device from ``generator`` (contiguous): the same
    numbers as ``torch.randn(x.shape, ...)``, which runs these two ops under a wrapper op (13 -> 11 us
    at (256, 10) on the CPU); ``empty_like`` allocates in 0.75 us where ``torch.empty(x.shape, dtype=...,
    device=...)`` parses its arguments in 2 us."""
    return torch.empty_like(x, memory_format=torch.contiguous_format).normal_(generator=generator)


def _noise_at(noise_scale, i: int):
    """The noise std of step i: None, a number, or row i of a (K,) / (K, B) per-step schedule."""
    if noise_scale is None or isinstance(noise_scale, (int, float)):
        return noise_scale
    ns = torch.as_tensor(noise_scale)
    return ns if ns.dim() == 0 else ns[i]


PROPOSAL_CAP = 5.0         # count="accepted": default cap on the proposals, as a multiple of n_steps


def _check_chain_args(n_steps: int, step_size, controller, noise_scale, noises, grad: str, x: Tensor,
                      project=None, temperature: float = 1.0) -> None:
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if grad not in ("none", "last", "all"):
        raise ValueError(f"grad must be none, last or all, got {grad!r}")
    if project is not None and grad != "none":  # the chain came back detached: no gradient, and no error
        raise ValueError(f"project detaches the points after every step, so grad={grad!r} would return no gradient: "
                         "use project=None or grad='none'")
    if controller is None and (not torch.is_tensor(step_size) or step_size.device.type == "cpu"):
        check_positive("step_size", step_size)  # (a device's tensor step is its producer's: a host sync per chain)
    check_positive("temperature", temperature)
    if torch.is_tensor(noise_scale) and noise_scale.dim() > 0 and noise_scale.shape[0] != n_steps:
        # (a per-chain (B,) noise was read as a schedule of its first K entries: (K, B) is per step and chain)
        raise ValueError(f"a per-step noise_scale needs {n_steps} rows (K, or (K, B) per chain), got "
                         f"{tuple(noise_scale.shape)}")
    if noises is not None and (noises.shape[0] < n_steps or noises.shape[1:] != x.shape):
        raise ValueError(f"noises must have shape ({n_steps}, {', '.join(map(str, x.shape))}), "
                         f"got {tuple(noises.shape)}")


def _check_controller(sampler, controller) -> None:
    """A Robbins-Monro controller drives MALA's acceptance to its target: on unadjusted Langevin, which takes every
    move, it would only ever grow the step until the chains diverge (paper 004's shrink-only rule leaves it fixed)."""
    if controller is not None and getattr(controller, "rule", None) == "robbins_monro" and \
            getattr(sampler, "__name__", "") == "ebmlab.samplers.langevin":
        raise ValueError("a StepSizeController adapts the step to MALA's acceptance rate; unadjusted Langevin accepts "
                         "every move, so it would only grow the step until the chains diverge: use the mala sampler, "
                         "or langevin with a fixed step_size")


class _Scales:
    """Per-step (eps, sigma), each (B, 1, ...), computed once per chain when they cannot change
    (a fixed step and a constant noise) and otherwise once per step: the samplers then do no
    float-to-tensor conversion of their own."""

    def __init__(self, step_size, noise_scale, temperature: float, controller, groups, x: Tensor):
        self.noise_scale, self.temperature, self.controller, self.groups, self.x = (
            noise_scale, temperature, controller, groups, x)
        self.fixed_eps = None if controller is not None else per_chain(step_size, x)
        per_step_noise = torch.is_tensor(noise_scale) and noise_scale.dim() > 0
        self.fixed = None
        if self.fixed_eps is not None and not per_step_noise:
            self.fixed = (self.fixed_eps, noise_std(self.fixed_eps, noise_scale, temperature, x))
        # a controller's step per step: (B, 1, ...) straight from the controller when it can give it
        self.shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        self.per_chain_step = getattr(controller, "per_chain_step", None)
        self.sigma_scale = 2.0 * temperature  # noise_std's sqrt(eps * 2T), with no per-step checks
        self.plain_noise = noise_scale is None
        # ``at`` is chosen once per chain: it runs every step
        if self.fixed is not None:
            self.at = self._fixed
        elif self.fixed_eps is None and self.per_chain_step is not None and self.plain_noise:
            self.at = self._controlled
        else:
            self.at = self._general

    def _fixed(self, i: int) -> tuple[Tensor, Tensor]:
        return self.fixed

    def _controlled(self, i: int) -> tuple[Tensor, Tensor]:
        eps = self.per_chain_step(self.groups, self.shape)
        return eps, torch.sqrt(eps * self.sigma_scale)  # noise_std's sqrt(eps * 2T)

    def _general(self, i: int) -> tuple[Tensor, Tensor]:
        if self.fixed_eps is not None:
            eps = self.fixed_eps
        elif self.per_chain_step is not None:
            eps = self.per_chain_step(self.groups, self.shape)
        else:
            eps = per_chain(self.controller.step_size(self.groups), self.x)
        return eps, noise_std(eps, _noise_at(self.noise_scale, i), self.temperature, self.x)


def run_chain(sampler, energy, x: Tensor, n_steps: int, step_size, *, noise_scale=None,
              temperature: float = 1.0, noises: Tensor | None = None,
              project: Callable[[Tensor], Tensor] | None = None, grad: str = "none",
              controller=None, groups: Tensor | None = None, final_energy: bool = True,
              check_finite: bool = True, callback: Callable | None = None, start: ChainState | None = None,
              diagnostics: str = "light", freeze=None, generator: torch.Generator | None = None,
              count: str = "steps", max_proposals: int | None = None, check_every: int | None = None,
              **cond) -> tuple[Tensor, ChainInfo]:
    """Run ``n_steps`` of ``sampler`` (the langevin or mala module) from x (B, ...).

    - ``step_size``: a float or (B,); with a ``controller`` (StepSizeController) it comes from the
      controller per group (``groups`` (B,) long, default all 0), updated after every step.
    - ``noise_scale``: None (sqrt(2 eps T)), a number, (K,) per step, or (K, B) per step and chain; a tensor's
      first axis is always the step (K rows), so a per-chain noise is (K, B), not (B,).
    - ``noises``: (K, B, ...) given standard-normal draws z_k (paper 002's interpolation).
    - ``project(x) -> x``: applied to the start (unless ``start`` is given) and after every step; the cached
      energy is recomputed there (one more forward+backward per step for MALA). Needs ``grad="none"``.
    - ``grad``: "none" (every step detached), "last" (only the last step differentiable w.r.t. the
      energy's parameters and x_{K-1}: paper 001 Eq. 7), "all" (every step: App. D.2). Langevin only.
    - ``final_energy=False`` skips the evaluation at the final point (unadjusted Langevin only): a
      K-step chain then costs K forward+backward passes, for callers whose next chain changes the
      energy (the levels of an annealing) or that discard it.
    - ``check_finite=False`` skips the final non-finite check, the chain's only host synchronisation
      (for callers that check their loss anyway, or for asynchronous GPU code).
    - ``callback(i, state, info)`` after each step.
    - ``start``: the ChainState at x when the caller already has E(x) and dE/dx (saves one
      forward+backward; paper 004's data chains start at the batch whose energy the loss needs).
    - ``diagnostics``: "light" (acceptance, step size, energy per step) or "full" (also the
      gradient norm per step, one more reduction per step; NaN in light mode).
    - ``freeze``: the module whose parameters are frozen while no step needs a gradient to them
      (default: ``energy`` itself when it is an ``nn.Module``; pass it for a closure over one).
    - ``count``: "steps" (default: ``n_steps`` proposals) or "accepted" (paper 004 Sec. 4.2.5:
      "rejected samples do not count toward Langevin steps"): proposals continue until every chain
      has made at least ``n_steps`` accepted moves, or ``max_proposals`` proposals (default
      ``PROPOSAL_CAP * n_steps``; at least ``n_steps``) have been made (a warning then says how many chains fell
      short). The final point's energy is always evaluated (``final_energy`` does not apply).
      All chains keep moving until the last one is done, which costs no more than freezing the
      finished ones (the batch is evaluated as a whole) and avoids a bias: a chain stopped right
      after its n-th acceptance is a draw of the embedded jump chain, whose stationary law is
      p(x) a(x) (a = the acceptance probability from x), not p. The ``ChainInfo`` then has one entry
      per proposal: its length is the number of proposals used, ``accept_rate.sum()`` the mean
      number of accepted moves per chain. Whether all chains are done is checked (a host sync) after
      ``n_steps`` proposals and then every ``check_every`` (default max(1, n_steps // 10)) proposals.
      Needs ``grad="none"``, no ``noises``, no per-step ``noise_scale`` and no ``project``. With an
      unadjusted sampler every proposal is accepted: exactly ``n_steps`` steps.
    Returns the final points (detached unless ``grad`` != "none") and a ``ChainInfo`` (tensors on the
    chain's device). Nothing is logged, nothing inside the loop waits for the device (except the
    checks of ``count="accepted"``).
    """
    _check_chain_args(n_steps, step_size, controller, noise_scale, noises, grad, x, project, temperature)
    _check_controller(sampler, controller)
    if count != "steps":
        return _run_accepted(sampler, energy, x, n_steps, step_size, noise_scale=noise_scale,
                             temperature=temperature, noises=noises, project=project, grad=grad,
                             controller=controller, groups=groups, check_finite=check_finite, callback=callback,
                             start=start, diagnostics=diagnostics, freeze=freeze, generator=generator,
                             count=count, max_proposals=max_proposals, check_every=check_every, **cond)
    if groups is None and controller is not None:
        groups = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    scales, rec = _Scales(step_size, noise_scale, temperature, controller, groups, x), Recorder(diagnostics == "full")
    with frozen_parameters(energy if freeze is None else freeze) if grad != "all" else nullcontext() as fz:
        if start is not None:
            state = start
        else:
            x0 = project(x) if project is not None else x
            state = sampler.init(energy, x0, create_graph=grad == "all", **cond)
        state = _steps(sampler, energy, state, n_steps, scales, rec, grad=grad, final_energy=final_energy,
                       project=project, controller=controller, groups=groups, noises=noises, x=x,
                       temperature=temperature, generator=generator, callback=callback, frozen=fz, **cond)
    if check_finite:
        check_finite_chain(state)
    x_out = state.x if grad != "none" else state.x.detach()
    return x_out, rec.info(x)


def _run_accepted(sampler, energy, x: Tensor, n_steps: int, step_size, *, noise_scale, temperature, noises, project,
                  grad, controller, groups, check_finite, callback, start, diagnostics, freeze, generator, count,
                  max_proposals, check_every, **cond) -> tuple[Tensor, ChainInfo]:
    """``run_chain`` with ``count="accepted"``: blocks of the same chain loop (``_steps``) until every chain
    has ``n_steps`` accepted moves or ``max_proposals`` proposals are used (see ``run_chain``)."""
    if count != "accepted":
        raise ValueError(f"count must be steps or accepted, got {count!r}")
    if grad != "none" or noises is not None or project is not None or (
            torch.is_tensor(noise_scale) and noise_scale.dim() > 0):
        raise ValueError('count="accepted" needs grad="none", no noises, no per-step noise_scale and no project')
    if max_proposals is not None and max_proposals < n_steps:  # (it was raised to n_steps without a word)
        raise ValueError(f"max_proposals must be at least n_steps = {n_steps}, got {max_proposals}")
    cap = math.ceil(PROPOSAL_CAP * n_steps) if max_proposals is None else int(max_proposals)
    every = max(1, n_steps // 10) if check_every is None else int(check_every)
    if every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    if groups is None and controller is not None:
        groups = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    scales, rec = _Scales(step_size, noise_scale, temperature, controller, groups, x), Recorder(diagnostics == "full")
    kw = dict(grad="none", final_energy=True, project=None, controller=controller, groups=groups, noises=None, x=x,
              temperature=temperature, generator=generator, callback=callback, **cond)
    with frozen_parameters(energy if freeze is None else freeze) as fz:
        state = start if start is not None else sampler.init(energy, x, **cond)
        state = _steps(sampler, energy, state, n_steps, scales, rec, frozen=fz, **kw)
        used, accepted = n_steps, _count_accepted(rec.accept, 0, n_steps)
        while accepted is not None and used < cap and not bool((accepted >= n_steps).all()):  # host sync
            k = min(every, cap - used)
            state = _steps(sampler, energy, state, k, scales, rec, frozen=fz, offset=used, **kw)
            accepted, used = accepted + _count_accepted(rec.accept, used, used + k), used + k
    if accepted is not None and used >= cap:
        short = int((accepted < n_steps).sum())
        if short:
            warnings.warn(f"{short} of {x.shape[0]} chains made fewer than {n_steps} accepted moves within the cap "
                          f"of {cap} proposals; raise the cap (method.proposal_cap, a multiple of the {n_steps} moves; "
                          "max_proposals= called directly) or lower the step size (method.step_size)", RuntimeWarning,
                          stacklevel=3)
    if check_finite:
        check_finite_chain(state)
    return state.x.detach(), rec.info(x)


def _count_accepted(accept: list, a: int, b: int) -> Tensor | None:
    """(B,) number of accepted moves of each chain in steps [a, b); None for an unadjusted sampler."""
    if not accept or accept[0] is None:
        return None
    return torch.stack(accept[a:b]).sum(0, dtype=torch.long)


def _steps(sampler, energy, state: ChainState, n_steps: int, scales: _Scales, rec: Recorder, *, grad, final_energy,
           project, controller, groups, noises, x, temperature, generator, callback, frozen, offset: int = 0,
           **cond) -> ChainState:
    """The body of ``run_chain``: ``n_steps`` steps from ``state`` (``offset``: the index of the first
    step in the whole chain, for ``count="accepted"``'s blocks)."""
    if (getattr(sampler, "fixed_step_chain", None) is not None and scales.fixed is not None and grad == "none"
            and project is None and noises is None and callback is None and controller is None and not rec.full):
        return sampler.fixed_step_chain(energy, state, n_steps, *scales.fixed, rec, final_energy=final_energy,
                                        generator=generator, **cond)
    end = offset + n_steps - 1
    step, at, record = sampler.step, scales.at, rec.add  # bound once: the loop below runs every step
    update = controller.update if controller is not None else None
    graph_all, evaluate = grad == "all", project is None
    tick = step_counter()
    for i in range(offset, end + 1):
        last = i == end
        if last and grad == "last":  # recompute dE/dx at x_{K-1} with a graph to the parameters
            if frozen is not None:
                frozen.release()
            state = sampler.init(energy, state.x.detach(), create_graph=True, **cond)
        eps, sigma = at(i)
        e_before, g_before = state.energy, state.grad
        state, info = step(energy, state, eps, noise_scale=sigma, temperature=temperature,
                           generator=generator, noise=None if noises is None else noises[i].to(x),
                           create_graph=graph_all or (last and grad == "last"),
                           evaluate=evaluate and (final_energy or not last), **cond)
        if project is not None:
            state = _projected(sampler, energy, state, project, evaluate=not last or final_energy, **cond)
        if update is not None:
            update(info.accept_rate, groups)
        record(info, e_before, g_before)
        if callback is not None:
            callback(i, state, info)
        if tick is not None:
            tick()
    return state


def _projected(sampler, energy, state: ChainState, project, *, evaluate: bool, **cond) -> ChainState:
    x = project(state.x.detach())
    return sampler.init(energy, x, **cond) if evaluate else ChainState(x, None, None)


def check_finite_chain(state: ChainState) -> None:
    """Raise if the chain ended on a non-finite point or energy (checked once, after the chain)."""
    bad_e = state.energy is not None and not bool(torch.isfinite(state.energy).all())
    if bad_e or not bool(torch.isfinite(state.x).all()):
        raise FloatingPointError(
            "the sampler produced a non-finite energy or sample; lower the step size or the noise "
            "scale, or check the energy for overflow")
