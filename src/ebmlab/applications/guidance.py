"""Classifier-free guidance for CDRL (paper 003, Sec. 3.5, Eq. 11-12; Ho & Salimans 2022).

A ``cdrl`` objective trained with ``method.conditional: true`` holds one network that is both the
conditional EBM f(y; c, t) and the unconditional one f(y; t) (label dropout to a null token), and
likewise one initializer g(x; c, t) / g(x; t). With guidance weight w:

- EBM (Eq. 11): log p~(y | c) = (w+1) f(y; c, t) - w f(y; t); in our energy convention
  E_w = (w+1) E_net(y; c) - w E_net(y; null) (the same coefficients, the sign flips on both);
- initializer (Eq. 12): mean (w+1) g(x; c, t) - w g(x; t), same sigma~_t.

w = 0 is the plain conditional model. ``guided_sample`` runs Alg. 2 with both replacements (the
final Tweedie step uses the guided level-0 energy too).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ebmlab.errors import ConfigError


def _check(objective) -> None:
    from ebmlab.objectives.recovery import RecoveryLikelihood

    if not isinstance(objective, RecoveryLikelihood) or not objective.cfg.conditional:
        raise ConfigError("classifier-free guidance needs a cdrl or drl model trained with method.conditional=true")


def guided_energy(objective, labels: Tensor, w: float):
    """energy_fn(y, t) -> (B,) = (w+1) E_net(y; c) - w E_net(y; null) (Eq. 11)."""
    _check(objective)
    net = objective.energy.net_energy

    def energy_fn(y: Tensor, t: Tensor) -> Tensor:
        e_c = net(y, t, labels)
        return e_c if w == 0 else (w + 1) * e_c - w * net(y, t, None)
    return energy_fn


def guided_init(objective, labels: Tensor, w: float):
    """init_fn(x, t) -> (B, ...) = (w+1) g(x; c) - w g(x; null) (Eq. 12)."""
    _check(objective)

    def init_fn(x: Tensor, t: Tensor) -> Tensor:
        g_c = objective.init_mean(x, t, labels)
        return g_c if w == 0 else (w + 1) * g_c - w * objective.init_mean(x, t, None)
    return init_fn


def guided_sample(objective, labels: Tensor, w: float, *, generator: torch.Generator | None = None,
                  n_steps: int | None = None) -> Tensor:
    """(B, ...) samples of class ``labels`` (B,) long with guidance weight ``w`` >= 0; ``n_steps`` is K', the
    Langevin steps *per level* (None: the trained K), as ``objective.generate`` takes it (``Run.sample`` and
    ``ebmlab sample --steps`` take a total and divide it by the levels first)."""
    _check(objective)  # (before objective.generate is looked up: only cdrl / drl have the one it calls)
    if not math.isfinite(w) or w < 0:  # (a NaN weight passed "w < 0" and ran the whole chain into NaN)
        raise ConfigError(f"the guidance weight w must be a finite number >= 0, got {w}")
    x_T = objective.prior(labels.shape[0], generator)
    return objective.generate(x_T, generator=generator, n_steps=n_steps, energy_fn=guided_energy(objective, labels, w),
                              init_fn=guided_init(objective, labels, w)).x
