"""Paper 002's generation procedure (diffusion with implicit latents via energy models), Sec. 4.1,
Eq. 9 / Eq. 17, Alg. 1 line 333: from x_T ~ N(0, I) at t = T down to t = 1, K Langevin steps at
each time on the time-conditioned energy E(x, t):

    x <- x - eta/2 dE/dx(x, t) + sigma_s z,   s = (T - t) K + k  (k = 0..K-1)

with the noise std sigma_s linearly annealed from sigma (first step) to 0 (last step) over all
T x K steps (Sec. 5: "always linearly annealed to 0 during sampling"; ``noise_schedule``). Given
standard-normal draws ``noises`` (T K, n, ...) replace the random ones (Sec. 5.1 interpolation).
Each stage is one ``run_chain`` whose final energy is not evaluated (the next stage changes t), so the
sweep costs T x K forward+backward passes. Training (objectives/implicit_diffusion.py) runs one
stage per buffer element at its own t (``sweep_stage`` with per-chain t and noise stds).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ebmlab.samplers import langevin
from ebmlab.samplers.base import ChainInfo, run_chain


def noise_schedule(sigma: float, T: int, K: int) -> Tensor:
    """(T*K,) noise std per Langevin step s = (T - t) K + k: sigma linearly down to 0 at the last step."""
    n = T * K
    if n == 1:
        return torch.zeros(1)  # the only step is the last one
    return sigma * (1.0 - torch.arange(n, dtype=torch.float32) / (n - 1))


def sweep_stage(energy, x: Tensor, t: Tensor, eta: float, sigmas: Tensor, *, noises: Tensor | None = None,
                generator: torch.Generator | None = None, diagnostics: str = "light") -> tuple[Tensor, ChainInfo]:
    """K steps of Eq. 17 at times t (B,) long: sigmas (K,) or (K, B) noise stds; noises (K, B, ...)."""
    if sigmas.shape[0] == 0:
        return x, ChainInfo.empty(x.device)
    x, info = run_chain(langevin, energy, x, sigmas.shape[0], 0.5 * eta, noise_scale=sigmas, noises=noises,
                        final_energy=False, diagnostics=diagnostics, generator=generator, t=t)
    return x, info


def implicit_sweep(energy, x0: Tensor, T: int, K: int, eta: float, sched: Tensor, *,
                   noises: Tensor | None = None, generator: torch.Generator | None = None,
                   keep_path: bool = False) -> tuple[Tensor, list[Tensor] | None, ChainInfo]:
    """The T x K sweep from x0 (n, ...) at t = T; ``sched`` (T K,) noise stds. Returns x (n, ...), the
    path [x_T input, after t = T, ..., after t = 1] (T + 1 CPU tensors, if ``keep_path``) and the
    per-step ``ChainInfo``."""
    x, n = x0, x0.shape[0]
    path, infos = ([x.cpu()] if keep_path else None), []
    for t in range(T, 0, -1):
        s0 = (T - t) * K
        tt = torch.full((n,), t, dtype=torch.long, device=x.device)
        z = noises[s0:s0 + K] if noises is not None else None
        x, info = sweep_stage(energy, x, tt, eta, sched[s0:s0 + K], noises=z, generator=generator)
        infos.append(info)
        if keep_path:
            path.append(x.cpu())
    return x, path, ChainInfo.cat(infos)
