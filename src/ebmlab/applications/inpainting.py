"""Inpainting with CDRL (paper 003, App. C).

The observed image is noised to the top level and denoised by Alg. 2, but only the masked (unknown)
region evolves: after every initializer proposal and every Langevin step the known region is reset
to the current noisy version of the observation. The noisy versions share one noise e per image
across levels, x_t^obs = abar_t x + sbar_t e (the interpolation of Eq. 9; the paper does not say
which noise, this choice keeps the known region consistent from level to level); at level t the
chain variable is y_t = alpha_{t+1} x_t (x_{T-1} itself at the top level of ``method.top_marginal``: the
objective's ``y_scale``), so the reset writes y_scale_t x_t^obs. After the final
Tweedie step the known region is set to the observation itself, so the output agrees with it
exactly there. With ``method.data_scale`` s the diffusion runs on s x_obs and the filled region
comes back divided by s, as ``generate``'s samples do.
"""
from __future__ import annotations

import torch
from torch import Tensor


def inpaint(objective, x_obs: Tensor, mask: Tensor, *, generator: torch.Generator | None = None,
            n_steps: int | None = None, keep_levels: bool = False):
    """Fill the region where ``mask`` == 0 of ``x_obs`` (B, ...) (model coordinates).

    ``mask`` (B, ...) or broadcastable, 1 = known, 0 = to fill. Returns (B, ...) (and the list of
    x_t per level when ``keep_levels``, in the diffusion's coordinates: data_scale * x)."""
    from ebmlab.objectives.recovery import RecoveryLikelihood

    if not isinstance(objective, RecoveryLikelihood):  # (its noise levels and reverse process are what it uses)
        raise ValueError(f"inpainting needs a cdrl or drl model (paper 003); this model is {type(objective).__name__}")
    if mask.shape != x_obs.shape:
        mask = mask.expand_as(x_obs)
    known = (mask > 0.5).to(x_obs)
    T = objective.cfg.T
    e = torch.randn(x_obs.shape, generator=generator, device=x_obs.device, dtype=x_obs.dtype)
    scale = objective.cfg.data_scale  # the diffusion runs on data_scale * x
    noisy = lambda t: objective.abar[t] * scale * x_obs * known + objective.sbar[t] * e  # noqa: E731  x_t^obs

    def project(y: Tensor, level: int) -> Tensor:
        y_obs = objective.y_scale[level] * noisy(level)  # the chain variable y_t = y_scale_t x_t
        return known * y_obs + (1 - known) * y

    x_T = noisy(T)
    x0, path, _ = objective.reverse_process(x_T, n_steps=n_steps, generator=generator, project=project,
                                            keep_levels=keep_levels)
    if objective.cfg.denoise:
        x0 = objective.denoise(x0)
    out = known * x_obs + (1 - known) * (x0 / scale)
    return (out, path) if keep_levels else out
