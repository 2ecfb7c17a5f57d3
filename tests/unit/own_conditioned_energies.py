"""User energies written to the README's requirements for the conditioning methods (an importable module, as a
run records its energy's class by name): paper 002's ``time_cond=True, n_times=T`` and ``forward(x, t)``, paper
003's ``cond_dim=K`` and ``forward(x, cond)``."""
import torch
from torch import nn


class TimeEnergy(nn.Module):
    def __init__(self, dim: int, width: int = 16, time_cond: bool = False, n_times: int = 1):
        super().__init__()
        self.dim, self.width, self.time_cond, self.n_times = dim, width, time_cond, n_times
        self.emb = nn.Embedding(n_times + 1, width)
        self.inp = nn.Linear(dim, width)
        self.out = nn.Linear(width, 1)

    def forward(self, x, t=None):
        h = self.inp(x) + (self.emb(t) if t is not None else 0)
        return self.out(torch.nn.functional.silu(h)).squeeze(-1)


class CondEnergy(nn.Module):
    def __init__(self, dim: int, width: int = 16, cond_dim: int = 0, wrong_shape: bool = False):
        super().__init__()
        self.dim, self.width, self.cond_dim, self.wrong_shape = dim, width, cond_dim, wrong_shape
        self.inp = nn.Linear(dim + cond_dim, width)
        self.out = nn.Linear(width, 1)

    def forward(self, x, cond=None):
        h = torch.cat([x, cond], 1) if cond is not None else x
        e = self.out(torch.nn.functional.silu(self.inp(h)))
        return e if self.wrong_shape else e.squeeze(-1)


class LevelImageEnergy(nn.Module):
    """Paper 003's image energies are called ``forward(x, t=logSNR (B,) float, y=labels or None)``."""
    def __init__(self, channels: int = 1, time_cond: bool = False, num_classes: int = 0, takes_y: bool = True):
        super().__init__()
        self.channels, self.time_cond, self.num_classes, self.takes_y = channels, time_cond, num_classes, takes_y
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.t_scale = nn.Linear(1, 4)

    def forward(self, x, t=None, **kw):
        if kw and not self.takes_y:
            raise TypeError(f"forward() got an unexpected keyword argument {next(iter(kw))!r}")
        h = self.conv(x).mean((2, 3))
        if t is not None:
            h = h * self.t_scale(t.float()[:, None])
        return h.sum(1)
