"""Exponential moving average of the weights (paper 001 App. B: 0.9999; paper 003 App. A: 0.9999;
paper 002 Table 7: 0.999). Evaluation, sampling and ``ebmlab.load`` use the EMA weights.

shadow <- decay * shadow + (1 - decay) * param, with the warm-up of decay_t = min(decay,
(1 + t) / (10 + t)) so that early averages are not dominated by the random initialisation.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """An exponential moving average of a module's trainable parameters (see the module docstring)."""
    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: p.detach().clone() for k, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """One EMA step towards ``module``'s current parameters (with the warm-up of the decay)."""
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for k, p in module.named_parameters():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(p.detach(), alpha=1 - d)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Copy the averaged weights into ``module``."""
        params = dict(module.named_parameters())
        for k, v in self.shadow.items():
            params[k].copy_(v)

    @contextmanager
    def applied(self, module: nn.Module):
        """Temporarily swap the EMA weights into ``module``."""
        backup = {k: p.detach().clone() for k, p in module.named_parameters() if k in self.shadow}
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                params = dict(module.named_parameters())
                for k, v in backup.items():
                    params[k].copy_(v)

    def state_dict(self) -> dict:
        """{parameter name: averaged tensor}."""
        return dict(self.shadow)

    def load_state_dict(self, state: dict, num_updates: int = 0) -> None:
        """Restore the averaged weights and the update count; KeyError when a parameter is missing."""
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks parameters: {sorted(missing)[:5]}")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])
        self.num_updates = num_updates
