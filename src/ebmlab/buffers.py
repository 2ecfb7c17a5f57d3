"""Sample banks for persistent chains.

``ReplayBuffer``: paper 001 Alg. 1 (replay buffer, reset to noise with probability r per chain)
and paper 004 Sec. 3 (a persistent bank initialised with noise; the "refresh" variant restarts a
whole batch from noise in 5 % of iterations), as its two modes (``fifo``, ``bank``). It is an ``nn.Module``
whose storage is a registered buffer, so ``state_dict()`` carries it into checkpoints.

Paper 002's ``TimeCyclicBuffer`` is in ``buffers_time.py``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

InitFn = Callable[[int, torch.Generator | None], Tensor]  # (n, generator) -> (n, *shape)


class ReplayBuffer(nn.Module):
    """A bank of ``capacity`` samples of shape ``shape``.

    mode="fifo" (paper 001): starts empty; ``push`` appends newest samples, overwriting the oldest.
    mode="bank" (paper 004 persistent): filled with ``init_fn`` noise at construction (``fill=False``: at
    the first ``sample``, for a bank whose stored state is loaded next, or whose ``init_fn`` cannot draw
    yet: a mixture base measure not yet fitted or loaded); ``update`` writes chains back into the slots
    they were drawn from.
    ``replacement``: whether a batch's slots are drawn with replacement. Default: without in bank
    mode (paper 004 Sec. 3: "we randomly select a batch from this sample bank, run a Markov chain
    starting from that batch, and replace the selected batch": n distinct slots, a prefix of a
    random permutation, so no chain is run twice from one slot and no write-back is lost), with
    replacement in FIFO mode (paper 001's replay buffer, unchanged). A batch larger than the filled
    bank uses every slot before any repeats (concatenated permutations).
    ``reset_prob``: per-chain probability of starting from fresh noise instead of the bank
    (``reset_mode="chain"``, paper 001), or per-iteration probability that the whole batch is
    fresh noise written into random slots (``reset_mode="batch"``, paper 004's refresh variant).
    """

    def __init__(self, capacity: int, shape: tuple[int, ...], init_fn: InitFn, *, reset_prob: float = 0.0,
                 reset_mode: str = "chain", mode: str = "fifo", generator: torch.Generator | None = None,
                 replacement: bool | None = None, fill: bool = True):
        super().__init__()
        if capacity <= 0:
            raise ValueError(f"buffer capacity must be positive, got {capacity}")
        if not 0.0 <= reset_prob <= 1.0:
            raise ValueError(f"reset_prob must lie in [0, 1], got {reset_prob}")
        if reset_mode not in ("chain", "batch") or mode not in ("fifo", "bank"):
            raise ValueError(f"reset_mode must be chain|batch and mode fifo|bank, got {reset_mode}, {mode}")
        self.capacity, self.shape, self.init_fn = capacity, tuple(shape), init_fn
        self.reset_prob, self.reset_mode, self.mode = reset_prob, reset_mode, mode
        self.replacement = (mode == "fifo") if replacement is None else bool(replacement)
        self.register_buffer("data", torch.zeros(capacity, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))   # filled slots
        self.register_buffer("cursor", torch.zeros((), dtype=torch.long))  # next FIFO write
        if mode == "bank" and fill:
            self._fill(generator)

    def _fill(self, generator: torch.Generator | None) -> None:
        """Bank mode: every slot from ``init_fn``."""
        self.data.copy_(self.init_fn(self.capacity, generator))
        self.count.fill_(self.capacity)

    def __len__(self) -> int:
        return int(self.count)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(n, *shape) starting points and (n,) slot indices (fifo mode: -1 where the chain starts from noise;
        bank mode: a chain reset to noise keeps its slot, which its result replaces)."""
        dev, count = self.data.device, int(self.count)  # (one host read)
        if self.mode == "bank" and count == 0:  # built with fill=False and never loaded
            self._fill(generator)
            count = self.capacity
        fresh = self.init_fn(n, generator).to(dev)
        if count == 0:
            return fresh, torch.full((n,), -1, dtype=torch.long, device=dev)
        idx = self._slots(count, n, generator)
        if self.reset_mode == "chain":
            reset = torch.rand(n, generator=generator, device=dev) < self.reset_prob
        else:
            reset = (torch.rand((), generator=generator, device=dev) < self.reset_prob).expand(n)
        x = torch.where(reset.view(-1, *([1] * len(self.shape))), fresh, self.data[idx])
        if self.mode == "fifo":
            idx = torch.where(reset, torch.full_like(idx, -1), idx)
        return x, idx  # in bank mode reset chains still own a slot: they overwrite it (refresh)

    def _slots(self, count: int, n: int, generator: torch.Generator | None) -> Tensor:
        """(n,) slot indices in [0, count): i.i.d. with replacement, else distinct (a random permutation's
        prefix; permutations concatenated when n > count)."""
        dev = self.data.device
        if self.replacement:
            return torch.randint(count, (n,), generator=generator, device=dev)
        reps = -(-n // count)
        perms = [torch.randperm(count, generator=generator, device=dev) for _ in range(reps)]
        return (perms[0] if reps == 1 else torch.cat(perms))[:n]

    @torch.no_grad()
    def update(self, x: Tensor, idx: Tensor) -> None:
        """Bank mode: write chains back to their slots. FIFO mode: append them."""
        x = x.detach().to(self.data.device)
        if self.mode == "bank":
            self.data[idx] = x
        else:
            self.push(x)

    @torch.no_grad()
    def push(self, x: Tensor) -> None:
        """Write the chains ``x`` (n, ...) into the next slots, cyclically from the cursor (the last
        ``capacity`` of them when n is larger)."""
        x = x.detach().to(self.data.device)[-self.capacity:]
        n = x.shape[0]
        slots = (self.cursor + torch.arange(n, device=self.data.device)) % self.capacity
        self.data[slots] = x
        self.cursor.copy_((self.cursor + n) % self.capacity)
        self.count.copy_(torch.clamp(self.count + n, max=self.capacity))
