"""Composition of M concepts with CDRL EBMs (paper 003, Sec. 3.6, Eq. 13-14).

For concepts c_1..c_M conditionally independent given x:
log p(x | c_1..c_M) = sum_i log p(x | c_i) - (M-1) log p(x) + const (Eq. 13); with guidance weight w
(Eq. 14): (w+1) sum_i f(x; c_i) - (M w + M - 1) f(x). In our energy convention
E = (w+1) sum_i E_net(y; c_i) - (M w + M - 1) E_net(y; null). The product of experts of Du et al.
(2020) is the same without the last term (``include_prior=False``, for comparison).

As in the paper (Sec. 4.5) the proposals come from the unconditional initializer. ``concepts`` is a
list of M label tensors (B,) (each concept a class of the conditional model; for attributes, one
class per attribute value as in Sec. 4.5).
"""
from __future__ import annotations

import torch
from torch import Tensor


def composed_energy(objective, concepts: list[Tensor], w: float = 0.0, include_prior: bool = True):
    """energy_fn(y, t) -> (B,) of Eq. 14 (Eq. 13 at w = 0)."""
    if not getattr(objective.cfg, "conditional", False):
        raise ValueError("composition needs a cdrl model trained with method.conditional=true")
    if not concepts:
        raise ValueError("composition needs at least one concept")
    M, net = len(concepts), objective.energy.net_energy
    prior = (M * w + M - 1) if include_prior else 0.0

    def energy_fn(y: Tensor, t: Tensor) -> Tensor:
        e = sum(net(y, t, c) for c in concepts) * (w + 1)
        return e - prior * net(y, t, None) if prior else e
    return energy_fn


def composed_sample(objective, concepts: list[Tensor], w: float = 0.0, *, include_prior: bool = True,
                    generator: torch.Generator | None = None, n_steps: int | None = None) -> Tensor:
    """(B, ...) samples from the composed model, unconditional initializer proposals."""
    fn = composed_energy(objective, concepts, w, include_prior)
    x_T = objective.prior(concepts[0].shape[0], generator)
    return objective.generate(x_T, generator=generator, n_steps=n_steps, energy_fn=fn,
                              init_fn=lambda x, t: objective.init_mean(x, t, None)).x
