"""Small energies and objectives that several test files build (one definition each)."""
import torch
from torch import nn

from ebmlab.energies.mlp import MLPEnergy
from ebmlab.objectives.recovery import RecoveryConfig, RecoveryLikelihood


class LinearEnergy(nn.Module):
    """E(x, t) = c * sum(x): gradient norm c * sqrt(D) everywhere."""

    def __init__(self, c):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(float(c)))

    def forward(self, x, t=None):
        return self.c * x.sum(1)


def recovery_objective(dim: int = 2, num_classes: int = 0, **kw) -> RecoveryLikelihood:
    """Paper 003's objective on a small MLP (width 32, one block; seeded), class-conditional when ``num_classes``."""
    cfg = RecoveryConfig(conditional=num_classes > 0, **kw)
    cond_dim = cfg.embed_dim + (num_classes + 1 if num_classes else 0)
    torch.manual_seed(0)
    net = MLPEnergy(dim, 32, 1, cond_dim=cond_dim)
    return RecoveryLikelihood(net, cfg, (dim,), num_classes)
