"""Generation by annealing over a learned series: paper 000 Sec. 3.5 and App. B.

- ``simulated_annealing`` (Alg. 3): start from z ~ p_n = p(z | t=0) and, for t = 0, ..., T-1, run N
  MCMC steps on the conditional p(z | t) (the energy is called with ``t=`` (B,) long).
- ``soft_annealing`` (Alg. 4 with p^(n)(t) = Uniform[t(n), T-1], Sec. 3.5): for n = 0..N-1, run
  steps on p^(n)(z) ∝ sum_t p(z, t) p^(n)(t) / p_t(t) (the energy is called with ``log_weights=``
  (T,), see ``schedules.soft_annealing_log_weights``); t(n) grows linearly from 0 to T-1.

The transition operator is MALA (App. C.1) with one step size per level t (``StepSizeController``
with n_groups = T, ``groups`` = the current level), adapting to the controller's target while
sampling. Pass a private copy of the training controller: these functions update the one they get.
Alg. 4 writes one MCMC step per stage n; ``n_steps`` > 1 runs several steps per stage, and for a
stage we use the step size of level t(n), the lowest (coarsest, widest) level of its mixture
{t(n), ..., T-1} and the one that moves with n (our choice; the paper does not say); the controller
keeps adapting it to the target acceptance while sampling. Diagnostics per stage: ``accept_rate``,
``step_size``, ``level`` (each (L,)), and ``snapshots`` {stage: samples} for the stages listed in
``keep`` (Fig. 5).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ebmlab.samplers import mala
from ebmlab.samplers.base import StepSizeController, run_chain
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
        super().update(accept, groups)
        g = self.log_step.shape[0]
        total = torch.zeros(g, device=accept.device).index_add_(0, groups, accept.float())
        count = torch.zeros(g, device=accept.device).index_add_(0, groups, torch.ones_like(accept, dtype=torch.float))
        seen = count > 0
        mean = total[seen] / count[seen]  # (G_seen,)
        old = self.accept_ema[seen]
        self.accept_ema[seen] = torch.where(torch.isnan(old), mean, self.ema * old + (1 - self.ema) * mean)

    def copy(self) -> "PerLevelController":
        """A private copy (sampling must not change the training state)."""
        c = PerLevelController(self.log_step.shape[0], 1.0, self.target, self.rate, self.ema)
        c.load_state_dict(self.state_dict())
        return c.to(self.log_step.device)


def _new_diag(n_stages: int) -> dict:
    return {"accept_rate": torch.zeros(n_stages), "step_size": torch.zeros(n_stages),
            "level": torch.zeros(n_stages, dtype=torch.long), "snapshots": {}}


def _record(diag: dict, i: int, level: int, chain_diag: dict, x: Tensor, keep) -> None:
    diag["accept_rate"][i] = chain_diag["accept_rate"].mean()
    diag["step_size"][i] = chain_diag["step_size"].mean()
    diag["level"][i] = level
    if i in keep:
        diag["snapshots"][i] = x.detach().cpu().clone()


def simulated_annealing(energy, x0: Tensor, levels: Sequence[int], n_steps: int, controller, *,
                        step_size: float | None = None, generator: torch.Generator | None = None,
                        keep: Sequence[int] = (), sampler=mala) -> tuple[Tensor, dict]:
    """Alg. 3: x0 (B, ...) drawn from p_n; ``levels`` increasing t values (all of 0..T-1 for the
    paper's algorithm, or a sub-sequence to save time); ``n_steps`` MCMC steps per level."""
    diag = _new_diag(len(levels))
    x = x0
    for i, t in enumerate(levels):
        tt = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)  # (B,)
        x, d = run_chain(sampler, energy, x, n_steps, step_size, generator=generator,
                         controller=controller, groups=tt if controller is not None else None, t=tt)
        _record(diag, i, int(t), d, x, set(keep))
    return x, diag


def soft_annealing(energy, x0: Tensor, T: int, n_stages: int, n_steps: int, controller, *,
                   step_size: float | None = None, generator: torch.Generator | None = None,
                   keep: Sequence[int] = (), sampler=mala) -> tuple[Tensor, dict]:
    """Alg. 4 with p^(n) = Uniform[t(n), T-1]: ``n_stages`` stages of ``n_steps`` steps each."""
    diag = _new_diag(n_stages)
    x = x0
    for n in range(n_stages):
        level = annealing_level(n, n_stages, T)
        w = soft_annealing_log_weights(n, n_stages, T).to(x.device)  # (T,)
        groups = torch.full((x.shape[0],), level, dtype=torch.long, device=x.device)  # (B,)
        x, d = run_chain(sampler, energy, x, n_steps, step_size, generator=generator,
                         controller=controller, groups=groups if controller is not None else None,
                         log_weights=w)
        _record(diag, n, level, d, x, set(keep))
    return x, diag
