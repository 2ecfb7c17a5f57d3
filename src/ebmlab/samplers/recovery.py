"""Paper 003's generation procedure (cooperative diffusion recovery likelihood), Alg. 2 + Tweedie
(App. A.2, Eq. 17-18), for any network energy and initializer.

Levels t = T-1..0. At each level, with x_{t+1} the current sample:
1. proposal y^ = g(x_{t+1}; t) + sigma~_t z (Eq. 6; DRL without initializer: y^ = x_{t+1});
2. K Langevin steps (Eq. 5) on the conditional energy of p(y_t | x_{t+1}) (Eq. 3)
       E(y) = E_net(y; t) / s_t^2 + ||y - x_{t+1}||^2 / (2 sigma_{t+1}^2),
   step size s_t^2 / 2 and noise std s_t, i.e. ``langevin`` with the textbook noise; with K' != K
   steps the step is s_t sqrt(K / K') (Sec. 4.2) while the energy keeps the trained s_t;
3. x_t = y~ / alpha_{t+1}.
Then one Tweedie step x = (x_0 - c sbar_0^2 dE_0/dx) / abar_0 (Eq. 18), E_0(x) = E_net(alpha_1 x; 0) /
s_0^2, with c = ``tweedie``'s ``coef`` (the method's ``denoise_coef``; exact Tweedie: 1; the paper uses 2 for images).

``net_energy(y, t)`` -> (B,) is E_net = -f^ (the network output before the 1/s_t^2), ``init_mean(x, t)``
-> (B, ...) the initializer's mean. ``project(y, level)`` (inpainting) is applied to proposals and
after every Langevin step.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ebmlab.energies.base import energy_and_grad
from ebmlab.samplers import langevin
from ebmlab.samplers.base import ChainInfo, run_chain


class RecoveryLevels(NamedTuple):
    """The schedule quantities Alg. 2 needs, per level t = 0..T-1 (see the field comments)."""
    alpha: Tensor            # (T,) alpha_{t+1}: y_t = alpha_{t+1} x_t
    sigma_sq: Tensor         # (T,) sigma_{t+1}^2 of p(y_t | x_{t+1})
    step_sq: Tensor          # (T,) s_t^2, the trained Langevin step (Eq. 16)
    init_std: Tensor | None  # (T,) sigma~_t of the proposal (Eq. 6); None: y^ = the mean (DRL)
    abar0: Tensor            # () abar_0 (Tweedie)
    sbar0: Tensor            # () sbar_0
    n_steps: int             # K the step sizes were trained with


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    return v.view(-1, *([1] * (x.dim() - 1)))  # (B,) -> (B, 1, ...)


def conditional_energy(net_energy, x_next: Tensor, t: Tensor, step_sq: Tensor, sigma_sq: Tensor):
    """The energy of p(y_t | x_{t+1}) (Eq. 3): E_net(y)/s_t^2 + ||y - x_{t+1}||^2 / (2 sigma_{t+1}^2).

    ``net_energy(y, t)`` -> (B,); step_sq, sigma_sq (T,). Returns a function y (B, ...) -> (B,)."""
    s2, v = step_sq[t], sigma_sq[t]  # (B,)

    def energy(y: Tensor) -> Tensor:
        quad = (y - x_next).flatten(1).pow(2).sum(1) / (2 * v)
        return net_energy(y, t) / s2 + quad
    return energy


def propose(mean: Tensor, t: Tensor, init_std: Tensor | None, generator=None) -> Tensor:
    """y^ ~ N(mean, sigma~_t^2 I) (Eq. 6); the mean itself without an initializer (DRL)."""
    if init_std is None:
        return mean.detach()
    z = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean.detach() + _bcast(init_std[t], mean) * z


def step_sizes(lv: RecoveryLevels, t: Tensor, n_steps: int) -> Tensor:
    """(B,) Langevin step s_t, scaled by sqrt(K / K') when K' != K (Sec. 4.2)."""
    s = lv.step_sq[t].sqrt()
    return s * (lv.n_steps / n_steps) ** 0.5 if n_steps and n_steps != lv.n_steps else s


def refine(energy, y0: Tensor, n_steps: int, step: Tensor, generator=None, project=None, *, freeze=None,
           diagnostics: str = "light"):
    """K Langevin steps (Eq. 5) with per-chain step s (B,): step_size s^2/2, noise std s. The final
    point's energy is not evaluated (callers evaluate what they need). ``freeze``: the module behind
    the ``energy`` closure, whose parameters need no gradient here. Returns (y, ChainInfo)."""
    return run_chain(langevin, energy, y0, n_steps, step ** 2 / 2, project=project, final_energy=False,
                     freeze=freeze, diagnostics=diagnostics, generator=generator)


def reverse_process(net_energy: Callable, init_mean: Callable, x_T: Tensor, lv: RecoveryLevels, *,
                    n_steps: int | None = None, generator=None, project=None, keep_levels: bool = False,
                    freeze=None):
    """Alg. 2 from x_T (B, ...): returns (x_0 before denoising, [x_T, ..., x_0] if ``keep_levels``,
    ChainInfo of all steps). ``n_steps``: K' per level (default the trained K)."""
    K = lv.n_steps if n_steps is None else n_steps
    x, path, infos = x_T, [x_T], []
    for level in reversed(range(lv.alpha.shape[0])):
        t = torch.full((x.shape[0],), level, dtype=torch.long, device=x.device)
        proj = None if project is None else (lambda v, lvl=level: project(v, lvl))
        with torch.no_grad():
            y = propose(init_mean(x, t), t, lv.init_std, generator)
        if proj is not None:
            y = proj(y)
        cond_e = conditional_energy(net_energy, x, t, lv.step_sq, lv.sigma_sq)
        y, info = refine(cond_e, y, K, step_sizes(lv, t, K), generator, proj, freeze=freeze)
        x = y / lv.alpha[level]  # Alg. 2
        infos.append(info)
        if keep_levels:
            path.append(x)
    return x, (path if keep_levels else None), ChainInfo.cat(infos)


def tweedie(net_energy: Callable, x: Tensor, lv: RecoveryLevels, coef: float = 1.0) -> Tensor:
    """Eq. 18: (x + c sbar_0^2 grad log p_0(x)) / abar_0 with log p_0(x) = -E_0(x)."""
    t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    _, g = energy_and_grad(lambda v: net_energy(lv.alpha[0] * v, t) / lv.step_sq[0], x)
    out = (x - coef * lv.sbar0 ** 2 * g) / lv.abar0
    if not bool(torch.isfinite(out).all()):
        raise FloatingPointError("the Tweedie denoising step produced non-finite values")
    return out.detach()
