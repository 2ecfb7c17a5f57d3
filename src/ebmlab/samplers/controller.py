"""The adaptive step-size controller of the chains (``run_chain(..., controller=...)``): one step size
per group of chains, driven by the acceptance rate, in tensor arithmetic (no host syncs), kept as
buffers so checkpoints carry it.

Step-size rules of ``StepSizeController``: ``robbins_monro`` (default) drives the acceptance to a
target from both sides (0.574 is the optimal MALA acceptance of Roberts & Rosenthal 1998, the
library default; paper 000 uses 0.6); ``paper004`` is paper 004 Sec. 4.2.5's rule, "a dynamic step
that decreases in proportion as the acceptance ratio falls below the optimal ratio of 0.67": the
step only shrinks (the paper says nothing about ever increasing it).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

PAPER004_ACCEPT = 0.67     # paper 004 Sec. 4.2.5: "the optimal ratio of 0.67 (Neal, 2011)"


class StepSizeController(nn.Module):
    """Adaptive MALA step size, one per group, driven by the acceptance rate. Kept as buffers so
    checkpoints carry it.

    ``rule="robbins_monro"`` (default): Robbins-Monro on the log step size, log eps_g += rate * (mean
    acceptance of group g at this step - target), up or down. The default target 0.574 is the optimal
    MALA acceptance of Roberts & Rosenthal (1998); paper 000 keeps one step size per t at 60 %
    (Sec. 3.3, App. C.1).

    ``rule="paper004"``: paper 004 Sec. 4.2.5, "a dynamic step that decreases in proportion as the
    acceptance ratio falls below the optimal ratio of 0.67 (Neal, 2011)". The acceptance ratio is a
    running average a_g <- s a_g + (1 - s) (acceptance at this step) (``smoothing`` s, 0.9: about the
    last ten proposals; the first step sets it), and log eps_g += rate * min(0, a_g - target) with
    target 0.67 by default: the step shrinks in proportion to the shortfall and is never increased
    (the paper says nothing about increasing it, so it is not). Our choices, not the paper's: the
    running average, the log-scale update and its ``rate``.
    """

    RULES = ("robbins_monro", "paper004")

    def __init__(self, n_groups: int = 1, init_step: float = 1e-2, target: float | None = None,
                 rate: float = 0.05, min_step: float = 1e-8, max_step: float = 1e3, *,
                 rule: str = "robbins_monro", smoothing: float = 0.9):
        super().__init__()
        positive = (init_step > 0 if isinstance(init_step, (int, float))  # (a number: no tensor op)
                    else bool(torch.all(torch.as_tensor(init_step) > 0)))
        if not positive:
            raise ValueError(f"init_step must be positive, got {init_step}")
        if rule not in self.RULES:
            raise ValueError(f"rule must be one of {', '.join(self.RULES)}, got {rule!r}")
        if target is None:
            target = PAPER004_ACCEPT if rule == "paper004" else 0.574
        if not 0.0 < target < 1.0:
            raise ValueError(f"target acceptance must lie in (0, 1), got {target}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
        self.target, self.rate, self.rule, self.smoothing = target, rate, rule, smoothing
        self.log_min, self.log_max = math.log(min_step), math.log(max_step)
        self.register_buffer("log_step", torch.full((n_groups,), math.log(init_step)))
        self.one_group = n_groups == 1  # (the buffer's shape is fixed: load_state_dict copies into it)
        if rule == "paper004":  # NaN: no acceptance seen yet
            self.register_buffer("accept_avg", torch.full((n_groups,), float("nan")))

    def step_size(self, groups: Tensor) -> Tensor:
        """(B,) step size for each chain's group."""
        if self.log_step.shape[0] == 1:
            return self.log_step.exp().expand(groups.shape[0])
        return self.log_step.exp()[groups]

    def per_chain_step(self, groups: Tensor, shape: tuple[int, ...]) -> Tensor:
        """``step_size(groups)`` already broadcast to ``shape`` = (B, 1, ..., 1) (what ``run_chain``
        uses every step: the same values, one op fewer)."""
        log_step = self._buffers["log_step"]  # (the buffer itself, without nn.Module.__getattr__: every step)
        if self.one_group:
            return log_step.exp().expand(shape)
        return log_step.exp()[groups].view(shape)

    def group_means(self, accept: Tensor | None, groups: Tensor) -> tuple[Tensor, Tensor]:
        """(G,) mean acceptance per group and (G,) bool "visited", in tensor arithmetic (no host sync).
        ``accept`` None: an unadjusted step, every proposal taken."""
        if accept is None:
            accept = torch.ones(groups.shape, device=groups.device)
        if self.log_step.shape[0] == 1:
            return accept.float().mean().view(1), torch.ones(1, dtype=torch.bool, device=accept.device)
        g = self.log_step.shape[0]
        total = torch.zeros(g, device=accept.device).index_add_(0, groups, accept.float())
        count = torch.zeros(g, device=accept.device).index_add_(0, groups, torch.ones_like(accept, dtype=torch.float))
        return total / count.clamp_min(1.0), count > 0

    def update(self, accept: Tensor | None, groups: Tensor) -> None:
        """accept (B,), groups (B,) long: adapt each visited group's step (see the class docstring).
        No ``torch.no_grad`` is needed (nor paid for, every step): the acceptance is boolean and the
        buffers do not require grad, so no graph is recorded."""
        if self.rule == "paper004":
            self._update_paper004(accept, groups)
            return
        if accept is not None and self.one_group:  # one group: no scatter, no mask
            mean = torch.mean(accept, dtype=torch.float32)  # = accept.float().mean(), one op
            step = mean.sub_(self.target).mul_(self.rate)
            self._buffers["log_step"].add_(step).clamp_(self.log_min, self.log_max)
            return
        mean, seen = self.group_means(accept, groups)
        delta = torch.where(seen, self.rate * (mean - self.target), torch.zeros_like(mean))
        self.log_step.add_(delta).clamp_(self.log_min, self.log_max)

    def _update_paper004(self, accept: Tensor | None, groups: Tensor) -> None:
        """Paper 004's rule: shrink only, in proportion to the running acceptance's shortfall below target."""
        mean, seen = self.group_means(accept, groups)
        old = self.accept_avg
        avg = torch.where(torch.isnan(old), mean, old * self.smoothing + mean * (1.0 - self.smoothing))
        avg = torch.where(seen, avg, old)
        self.accept_avg.copy_(avg)
        delta = (avg - self.target).clamp(max=0.0).mul_(self.rate)
        self.log_step.add_(torch.where(seen, delta, torch.zeros_like(delta))).clamp_(self.log_min, self.log_max)

    def copy(self) -> "StepSizeController":
        """A private copy of the steps (sampling must not change the training state): a ``StepSizeController``
        (a ``PerLevelController``'s acceptance EMA, a report, is not copied)."""
        c = StepSizeController(self.log_step.shape[0], 1.0, self.target, self.rate, rule=self.rule,
                               smoothing=self.smoothing)
        c.log_min, c.log_max = self.log_min, self.log_max
        c.log_step.copy_(self.log_step)
        if self.rule == "paper004":
            c.accept_avg.copy_(self.accept_avg)
        return c.to(self.log_step.device)
