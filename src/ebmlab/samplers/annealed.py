"""Generation by annealing over a learned series: paper 000 Sec. 3.5 and App. B.

- ``simulated_annealing`` (Alg. 3): start from z ~ p_n = p(z | t=0) and, for the levels t = 0, ...,
  T-1 (or an increasing sub-sequence), run MCMC steps on the conditional p(z | t) (the energy is
  called with ``t=`` (B,) long).
- ``soft_annealing`` (Alg. 4 with p^(n)(t) = Uniform[t(n), T-1], Sec. 3.5): for n = 0..N-1, run steps
  on p^(n)(z) ∝ sum_t p(z, t) p^(n)(t) / p_t(t) (the energy is called with ``log_weights=`` (T,), see
  ``schedules.soft_annealing_log_weights``); t(n) grows linearly from 0 to T-1.

The transition operator is MALA (App. C.1, 60 % acceptance). **Step sizes are fitted to each
annealing target** (DESIGN.md, "Paper 000's samplers"): p(z | t) sharpens by orders of magnitude
from t = 0 (the reference N(0, sigma_n² I)) to t = T-1 (the data), so a step size adapted elsewhere
(e.g. on the training chain, which runs on the marginal p(z)) is far too large near t = T-1 and the
chains freeze (measured: acceptance 0.02-0.03 over the last 10 % of stages). Here one step size is
carried from stage to stage (neighbouring targets are close) and adapted with a fast Robbins-Monro
rate (``adapt_rate``) on every step of every stage, so it follows the sharpening targets;
optionally ``adapt_steps`` extra MALA steps per stage fit it before the ``n_steps`` sampling steps
(valid MALA moves on the stage's target, reported apart as ``n_adapt_steps``; measured on the spiral
they did not improve samples, docs/paper000.md, so callers default to 0). The first stage starts
from ``init_step`` (callers pass the step suited to p_n). Alg. 4 writes one step per stage;
``n_steps`` > 1 runs several.

Diagnostics (a dict, ``StageRecorder.info``): per stage ``stage_accept_rate`` (of the sampling steps),
``stage_step_size``, ``level``; ``accept_rate_last10`` (mean over the last 10 % of stages, the ones
that decide sample quality); the per-step ``ChainInfo`` of all steps; ``snapshots`` {stage: samples}
for the stages listed in ``keep`` (Fig. 5).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ebmlab.samplers import mala
from ebmlab.samplers.base import ChainInfo, StepSizeController, run_chain
from ebmlab.schedules import annealing_level, soft_annealing_log_weights


class PerLevelController(StepSizeController):
    """``StepSizeController`` with one group per level t (App. C.1) that also keeps, per group, an
    exponential moving average of the measured acceptance (``accept_ema`` (T,), decay ``ema``), so
    per-t acceptance can be reported at the end of training. Both are buffers (checkpointed)."""

    def __init__(self, n_groups: int, init_step, target: float = 0.6, rate: float = 0.05,
                 ema: float = 0.98):
        super().__init__(n_groups, 1.0, target, rate)
        init = torch.as_tensor(init_step, dtype=torch.float32).expand(n_groups)  # (T,)
        if not bool((init > 0).all()):
            raise ValueError("initial step sizes must be positive")
        self.log_step.copy_(init.log())
        self.ema = ema
        self.register_buffer("accept_ema", torch.full((n_groups,), float("nan")))

    @torch.no_grad()
    def update(self, accept: Tensor, groups: Tensor) -> None:
        """Adapt each visited level's step and update its acceptance average."""
        super().update(accept, groups)
        mean, seen = self.group_means(accept, groups)  # (T,), (T,)
        old = self.accept_ema
        new = torch.where(torch.isnan(old), mean, self.ema * old + (1 - self.ema) * mean)
        self.accept_ema.copy_(torch.where(seen, new, old))


class StageRecorder:
    """Collects the per-stage diagnostics of an annealing run (see the module docstring)."""

    def __init__(self, n_stages: int, keep: Sequence[int]):
        self.accept, self.step = torch.zeros(n_stages), torch.zeros(n_stages)
        self.level = torch.zeros(n_stages, dtype=torch.long)
        self.keep, self.snapshots, self.chains, self.n_adapt = set(keep), {}, [], 0

    def record(self, i: int, level: int, adapt: ChainInfo, chain: ChainInfo, x: Tensor) -> None:
        """Record stage ``i`` (its level, fitting and sampling chains, optional snapshot)."""
        self.chains += [adapt, chain]
        self.n_adapt += adapt.accept_rate.numel()
        sampled = chain if chain.accept_rate.numel() else adapt
        self.accept[i] = sampled.accept_rate.mean() if sampled.accept_rate.numel() else float("nan")
        self.step[i] = sampled.step_size[-1] if sampled.step_size.numel() else float("nan")
        self.level[i] = level
        if i in self.keep:
            self.snapshots[i] = x.detach().cpu().clone()

    def info(self) -> dict:
        """The per-step ChainInfo of all stages plus the per-stage summaries (a dict)."""
        last = max(1, math.ceil(0.1 * len(self.accept)))
        out = ChainInfo.cat(self.chains).as_dict()
        out.update(stage_accept_rate=self.accept, stage_step_size=self.step, level=self.level,
                   accept_rate_last10=self.accept[-last:].nanmean(), n_adapt_steps=torch.tensor(self.n_adapt),
                   snapshots=self.snapshots)
        return out


def _stage(energy, x: Tensor, n_steps: int, adapt_steps: int, ctrl, generator, sampler, **cond):
    """One annealing stage: adapt the step on this target, then sample (both adapt the controller)."""
    x, adapt = run_chain(sampler, energy, x, adapt_steps, None, controller=ctrl, generator=generator, **cond)
    x, chain = run_chain(sampler, energy, x, n_steps, None, controller=ctrl, generator=generator, **cond)
    return x, adapt, chain


def _controller(init_step: float, target: float, rate: float) -> StepSizeController:
    return StepSizeController(1, init_step, target, rate)


def simulated_annealing(energy, x0: Tensor, levels: Sequence[int], n_steps: int, *, init_step: float,
                        target: float = 0.6, adapt_steps: int = 0, adapt_rate: float = 0.5,
                        generator: torch.Generator | None = None, keep: Sequence[int] = (),
                        sampler=mala) -> tuple[Tensor, dict]:
    """Alg. 3: x0 (B, ...) drawn from p_n; ``levels`` increasing t values (all of 0..T-1 for the
    paper's algorithm, or a sub-sequence to save time); ``n_steps`` MCMC steps per level after
    ``adapt_steps`` step-fitting steps. Returns the samples and the ``StageRecorder`` info."""
    ctrl = _controller(init_step, target, adapt_rate).to(x0.device)
    rec, x = StageRecorder(len(levels), keep), x0
    for i, t in enumerate(levels):
        tt = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)  # (B,)
        x, adapt, chain = _stage(energy, x, n_steps, adapt_steps, ctrl, generator, sampler, t=tt)
        rec.record(i, int(t), adapt, chain, x)
    return x, rec.info()


def soft_annealing(energy, x0: Tensor, T: int, n_stages: int, n_steps: int, *, init_step: float,
                   target: float = 0.6, adapt_steps: int = 0, adapt_rate: float = 0.5,
                   generator: torch.Generator | None = None, keep: Sequence[int] = (),
                   sampler=mala) -> tuple[Tensor, dict]:
    """Alg. 4 with p^(n) = Uniform[t(n), T-1]: ``n_stages`` stages of ``n_steps`` steps each (after
    ``adapt_steps`` step-fitting steps)."""
    ctrl = _controller(init_step, target, adapt_rate).to(x0.device)
    rec, x = StageRecorder(n_stages, keep), x0
    for n in range(n_stages):
        w = soft_annealing_log_weights(n, n_stages, T).to(x.device)  # (T,)
        x, adapt, chain = _stage(energy, x, n_steps, adapt_steps, ctrl, generator, sampler, log_weights=w)
        rec.record(n, annealing_level(n, n_stages, T), adapt, chain, x)
    return x, rec.info()
