"""The Energy protocol and the one helper every sampler uses.

Convention (DESIGN.md): an energy maps a batch (B, ...) to (B,), lower is more probable,
p(x) ∝ exp(-E(x) / T). Papers that output log-densities (000) or negative energies (003) convert at
the border of their objective.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class Energy(Protocol):
    """The energy protocol: a callable mapping a batch (B, ...) (and optional conditioning) to energies (B,),
    lower = more probable."""
    def __call__(self, x: Tensor, **cond) -> Tensor: ...  # (B, ...) -> (B,)


def _evaluated(energy, x: Tensor, cond: dict):
    """``energy(x, **cond)``; an energy that writes into its input (x.mul_(...)) said in one sentence."""
    try:
        return energy(x, **cond)
    except RuntimeError as exc:
        if "in-place operation" not in str(exc):
            raise
        raise ValueError("the energy changes its input in place (an x.add_ / x.mul_ / x[...] = ...); compute on a "
                         "copy (x = x.clone()) or out of place") from None


def energy_and_grad(energy, x: Tensor, *, create_graph: bool = False, **cond) -> tuple[Tensor, Tensor]:
    """E(x) (B,) and dE/dx (B, ...) in one forward and one backward.

    Only the gradient with respect to x is formed (``torch.autograd.grad`` with ``inputs=x``), so the
    parameters' ``.grad`` fields are left untouched. With ``create_graph=False`` the input is
    detached first, so a chain never keeps the graph of earlier steps alive. With
    ``create_graph=True`` (paper 001's KL term) the result stays differentiable with respect to x's
    history and the parameters; a leaf ``x`` that does not require a gradient is switched to require one in
    place (``x.requires_grad_``), so the caller's tensor then does.
    """
    if not x.is_floating_point():
        raise ValueError(f"the points must be floating point, got {x.dtype} (x.float())")
    if not create_graph:
        x = x.detach().requires_grad_(True)
    elif not x.requires_grad:
        x = x.requires_grad_(True)
    with torch.enable_grad():
        e = _evaluated(energy, x, cond)  # (B,)
        if not isinstance(e, Tensor) or e.dim() != 1 or e.shape[0] != x.shape[0]:
            got = tuple(e.shape) if isinstance(e, Tensor) else f"a {type(e).__name__}"
            raise ValueError(f"an energy must return shape ({x.shape[0]},), got {got}")
        if not e.is_floating_point():
            raise ValueError(f"an energy must return floating-point values, got {e.dtype}")
        if not e.requires_grad:  # (a Python attribute: no op, no sync)
            raise ValueError("the energy has no gradient with respect to x: its value is detached from x (.detach(), "
                             ".item(), torch.no_grad inside, or an integer dtype); the samplers need dE/dx")
        # seeding the backward with ones gives the gradient of e.sum() bit for bit, without the sum
        # and its backward node (one op fewer per pass: the chains make ~40 passes per update)
        (g,) = torch.autograd.grad(e, x, torch.ones_like(e), create_graph=create_graph)
    if not create_graph:
        e = e.detach()
    return e, g
