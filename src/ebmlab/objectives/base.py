"""The Objective interface every method implements (DESIGN.md "Interfaces").

The training loop only knows ``out = objective(batch, generator=g); out.loss.backward()``.
An objective owns its energy, its buffers and its sampler settings; ``sample`` is the method's own
generation procedure. Buffers registered as modules/buffers go into ``state_dict()`` and therefore
into checkpoints.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class LossOutput(NamedTuple):
    loss: Tensor                  # scalar: the only thing backpropagated
    metrics: dict[str, Tensor]    # detached scalars for logging (energy gap, accept rate, ...)
    negatives: Tensor | None = None


class Objective(nn.Module):
    """Base class. Subclasses set ``self.energy`` (the module ``ebmlab.load`` returns) and implement
    ``forward`` and ``sample``."""

    energy: nn.Module

    def forward(self, batch, *, generator: torch.Generator | None = None) -> LossOutput:
        raise NotImplementedError

    def sample(self, n: int, *, generator: torch.Generator | None = None, **kw) -> Tensor:
        raise NotImplementedError

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups; methods with two networks (paper 003) override this."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr, "name": "energy"}]

    def after_step(self, step: int) -> None:
        """Hook called after each optimizer step (e.g. adaptive schedules); default does nothing."""

    def score(self, x: Tensor) -> Tensor:
        """(B,) energy used for density evaluation and OOD scoring (lower = more in-distribution)."""
        return self.energy(x)


def batch_data(batch) -> Tensor:
    """The data tensor of a batch that may be x or (x, y)."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def batch_labels(batch) -> Tensor | None:
    return batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
