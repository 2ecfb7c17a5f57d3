"""Paper 002's sample buffer of (x, t) pairs (Sec. 4.4 and Alg. 1).

At construction every slot holds x ~ init_fn (N(0, I)) and t ~ U{1, ..., T}. Each training
iteration draws a batch of distinct slots (``sample``); the objective runs K Langevin steps on each
element at its own t and writes the result back with ``update``, which decreases t by one; an
element reaching t = 0 is refreshed with fresh noise at t = T (the cyclic constraint of Sec. 4.3).
So a slot at time t always holds the input that generation would feed to stage t: noise at T, the
output of stage t+1 below it.

The storage (``data``, ``t``) is made of registered buffers, so ``state_dict()`` carries it into
checkpoints and ``--resume`` continues the same chains.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

InitFn = Callable[[int, torch.Generator | None], Tensor]  # (n, generator) -> (n, *shape)


class TimeCyclicBuffer(nn.Module):
    """Paper 002's buffer of (x, t) pairs (Sec. 4.3-4.4, Alg. 1): ``capacity`` chains spread over the
    ``n_times`` time steps; each iteration moves the chains it drew one time step down and refreshes t = 0 with
    ``init_fn`` noise at t = T. Registered buffers, so it is saved in checkpoints."""
    def __init__(self, capacity: int, shape: tuple[int, ...], n_times: int, init_fn: InitFn,
                 generator: torch.Generator | None = None):
        super().__init__()
        if capacity <= 0 or n_times <= 0:
            raise ValueError(f"buffer capacity and T must be positive, got {capacity} and {n_times}")
        self.capacity, self.shape, self.n_times, self.init_fn = capacity, tuple(shape), n_times, init_fn
        self.register_buffer("data", init_fn(capacity, generator).reshape(capacity, *self.shape).clone())
        dev = self.data.device
        # t ~ U{1..T} (Sec. 4.4); long so that t - 1 is exact
        self.register_buffer("t", torch.randint(1, n_times + 1, (capacity,), generator=generator, device=dev))

    def __len__(self) -> int:
        return self.capacity

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(n, *shape) chains, (n,) their times and (n,) distinct slot indices."""
        if n > self.capacity:
            raise ValueError(f"cannot draw {n} chains from a buffer of {self.capacity}; raise method.buffer_size")
        idx = torch.randperm(self.capacity, generator=generator, device=self.data.device)[:n]  # (n,)
        return self.data[idx].clone(), self.t[idx].clone(), idx

    @torch.no_grad()
    def update(self, x: Tensor, idx: Tensor, generator: torch.Generator | None = None) -> None:
        """Write the advanced chains back, t := t - 1; t = 0 -> fresh noise at t = T."""
        x = x.detach().to(self.data.device)
        new_t = self.t[idx] - 1  # (n,)
        done = new_t == 0
        if bool(done.any()):
            fresh = self.init_fn(int(done.sum()), generator).to(x)
            x = x.clone()
            x[done] = fresh
            new_t[done] = self.n_times
        self.data[idx] = x
        self.t[idx] = new_t
