"""The Objective contract every method implements (DESIGN.md "Interfaces").

The training loop only knows ``out = objective(batch, generator=g); out.loss.backward()``.
Evaluation, the CLI, the experiments and the Python API call only what is declared here (no
``hasattr`` probes, no ``TypeError`` fallbacks):

- ``prior(n, generator=)`` -> (n, ...): where the method's generation starts (its noise);
- ``sample(n, *, generator, n_steps=None, x0=None, cond=None) -> SampleOutput(x, info)``: the paper's
  own generation procedure (a module under ``samplers/``). ``n_steps`` is the *total* number of
  sampler steps (energy gradients), split evenly over the levels of a multi-level procedure (rounded
  up); under paper 004's ``step_rule: paper004`` it counts accepted moves (up to ``proposal_cap`` x
  ``n_steps`` proposals, objectives/contrastive.py); ``x0`` replaces the draw from ``prior`` (e.g.
  data points: ``ebmlab sample --init data``); ``cond`` holds conditioning such as ``{"y": labels}``
  for class-conditional models;
- ``n_steps_default``: the ``n_steps`` that ``sample`` uses when given None;
- ``log_density(x)``: the unnormalised model log-density of x in model coordinates, where the method
  defines one (``has_log_density``; by default -E(x) of ``data_energy``); a method without one raises
  ``NoLogDensity`` and evaluation reports that instead of skipping silently;
- ``param_groups(lr)`` -> list of ``ParamGroup`` (typed optimizer groups; paper 003 has two);
- ``num_classes``: the classes a class-conditional model was trained on (0: unconditional), and
  ``class_cond(label, n)`` -> ``{"y": labels}``, the ``cond`` that samples one class;
- ``data_energy`` (the data's energy, ``ebmlab.load(RUN)(x)``) and ``energy_conditions``, the keywords it
  takes (``y`` of a class-conditional model, paper 000's level ``t``, paper 002's time ``t``) with their
  integer ranges; ``energy_cond(cond, n)`` checks a ``cond`` against them.

An objective owns its energy, its buffers and its sampler settings. Buffers registered as
modules/buffers go into ``state_dict()`` and therefore into checkpoints.
"""
from __future__ import annotations

from typing import NamedTuple, TypedDict

import torch
from torch import Tensor, nn

from ebmlab.errors import ConfigError
from ebmlab.samplers.ais import resample_points


class LossOutput(NamedTuple):
    """What a training step returns: the loss to backpropagate, detached metrics, the negatives."""
    loss: Tensor                  # scalar: the only thing backpropagated
    metrics: dict[str, Tensor]    # detached scalars for logging (energy gap, accept rate, ...)
    negatives: Tensor | None = None


class SampleOutput(NamedTuple):
    """What ``Objective.sample`` returns: samples in model coordinates and per-step diagnostics."""
    x: Tensor                     # (n, ...) samples in model coordinates
    info: dict[str, Tensor]       # per-step chain diagnostics (accept_rate, step_size, energy,
                                  # grad_norm: (S,) each), plus per-method extras (e.g. per level)


def resampled(out: SampleOutput, log_weights: Tensor, generator: torch.Generator | None = None) -> SampleOutput:
    """``out``'s chains (n, ...) resampled in proportion to their (n,) log-weights (``samplers/ais.resample_points``),
    with the weights' ESS added to the info as ``ais_ess``: the last step of a weighted draw, in one batch
    (``Objective.sample``) or gathered from several (``training/drawing.draw``)."""
    x, ess = resample_points(out.x, log_weights, generator)
    return SampleOutput(x, {**out.info, "ais_ess": ess})


class ParamGroup(TypedDict, total=False):
    """One optimizer parameter group. ``warmup``: linear lr warm-up iterations of this group
    (absent: ``train.warmup_steps``); ``delay``: iterations by which its schedule is shifted
    (negative: starts earlier, paper 003's initializer head start, Eq. 15; absent: 0)."""
    params: list
    lr: float
    name: str
    warmup: int
    delay: int


class NoLogDensity(NotImplementedError):
    """Raised by ``log_density`` of a method that defines no density of the data."""


class Objective(nn.Module):
    """Base class. Subclasses set ``self.energy`` (the module ``ebmlab.load`` returns) and ``self.shape``, and
    implement ``forward``, ``prior``, ``sample`` and ``n_steps_default``; the rest has defaults (``log_density``:
    -E(x))."""

    energy: nn.Module
    shape: tuple[int, ...]          # the shape of one data point (model coordinates)
    has_log_density: bool = True
    num_classes: int = 0            # > 0: a class-conditional model (papers 001 and 003, method.conditional)

    def forward(self, batch, *, generator: torch.Generator | None = None) -> LossOutput:
        """One training step's loss on ``batch`` (x or (x, y), model coordinates)."""
        raise NotImplementedError

    @property
    def n_steps_default(self) -> int:
        """The total number of sampler steps ``sample`` takes when ``n_steps`` is None: a subclass's property, or a
        number set in its ``__init__`` (``self.n_steps_default = 20``)."""
        if "_n_steps_default" in self.__dict__:
            return self.__dict__["_n_steps_default"]
        raise NotImplementedError(f"{type(self).__name__} defines no n_steps_default")

    @n_steps_default.setter
    def n_steps_default(self, value: int) -> None:
        """``self.n_steps_default = K`` in a subclass's ``__init__`` (a user's method: README "Your own method"): an
        integer K >= 0."""
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{type(self).__name__}.n_steps_default must be an integer >= 0 (sampler steps), got "
                              f"{value!r}")
        self.__dict__["_n_steps_default"] = value

    @property
    def sample_levels(self) -> int:
        """Levels a multi-level procedure spreads ``n_steps`` over (paper 000's stages, the T times of 002/003):
        ``sample`` rounds ``n_steps`` up to a multiple of it. 1 for a single chain."""
        return 1

    def steps_run(self, n_steps: int | None) -> int:
        """The total sampler steps ``sample(n_steps=...)`` takes: ``n_steps`` (None: ``n_steps_default``)
        rounded up to whole levels."""
        if n_steps is None:
            return self.n_steps_default
        return per_level_steps(n_steps, 0, self.sample_levels) * self.sample_levels

    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, ...) draws of the distribution the method's generation starts from."""
        raise NotImplementedError

    def sample(self, n: int, *, generator: torch.Generator | None = None, n_steps: int | None = None,
               x0: Tensor | None = None, cond: dict | None = None) -> SampleOutput:
        """n samples by the paper's own generation procedure (see the module docstring)."""
        raise NotImplementedError

    def sample_weighted(self, n: int, *, generator: torch.Generator | None = None, n_steps: int | None = None,
                        x0: Tensor | None = None, cond: dict | None = None) -> tuple[SampleOutput, Tensor | None]:
        """``sample``'s chains before they are resampled by importance weights, and their (n,) log-weights; None
        where the procedure weighs nothing (every method but paper 004's AIS generation, where this is ``sample``).
        A draw in batches (``training/drawing.draw``) resamples all its batches' chains together, as one chain of
        n would be: resampling each batch by its own weights biases the draw, the more the smaller the batch."""
        return self.sample(n, generator=generator, n_steps=n_steps, x0=x0, cond=cond), None

    @property
    def data_energy(self) -> nn.Module:
        """The energy of the data distribution, (B, ...) -> (B,), model coordinates: what ``ebmlab.load(RUN)(x)``
        gives. ``energy`` itself for every method but paper 000, whose ``energy`` is the mixture over its levels."""
        return self.energy

    @property
    def energy_conditions(self) -> dict[str, tuple[int, int]]:
        """The keywords ``data_energy`` takes, each an integer range (lo, hi), both included: a class-conditional
        model's labels ``y``; paper 000 (level ``t``) and paper 002 (time ``t``) override this. {}: none."""
        return {"y": (0, self.num_classes - 1)} if self.num_classes else {}

    def energy_cond(self, cond: dict, n: int) -> dict[str, Tensor]:
        """``cond`` for ``data_energy`` of ``n`` points, each value one integer or n integers in its range of
        ``energy_conditions``, as (n,) long tensors on the model's device; ConfigError (a ValueError) otherwise."""
        return checked_conditions(cond, self.energy_conditions, n, next(self.parameters()).device)

    def log_density(self, x: Tensor) -> Tensor:
        """(B,) unnormalised model log-density of x: -``data_energy``(x), p ∝ exp(-E), unless a method overrides it (a
        temperature, paper 000's level); one that defines none sets ``has_log_density = False`` and raises
        ``NoLogDensity`` here."""
        if not self.has_log_density:
            raise NoLogDensity(f"{type(self).__name__} defines no log-density of the data")
        return -self.data_energy(x)

    def param_groups(self, lr: float) -> list[ParamGroup]:
        """Optimizer parameter groups; methods with two networks (paper 003) override this."""
        return [ParamGroup(params=[p for p in self.parameters() if p.requires_grad], lr=lr, name="energy")]

    def after_step(self, step: int) -> None:
        """Hook called after each optimizer step (e.g. adaptive schedules); default does nothing."""

    def score(self, x: Tensor) -> Tensor:
        """(B,) energy used for density evaluation and OOD scoring (lower = more in-distribution): the data's
        (``data_energy``; paper 000's scored its mixture over all levels, whose density is not the data's)."""
        return self.data_energy(x)

    def mixture_base(self):
        """The fitted Gaussian-mixture base measure the energy carries (``model.base: gmm``,
        ``energies/mixture_base.py``), or None; paper 004's objective, which fits it, overrides this."""
        return None

    def class_cond(self, label: int, n: int) -> dict[str, Tensor]:
        """``cond`` of ``sample`` for ``n`` samples of class ``label``: {"y": (n,) labels}; ConfigError (a ValueError) for an
        unconditional model or a label outside 0 .. num_classes - 1."""
        if not self.num_classes:
            raise ConfigError("this model is unconditional (trained without method.conditional); it has no classes "
                             "to sample")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < self.num_classes:
            raise ConfigError(f"the class label must be an integer in 0..{self.num_classes - 1}, got {label!r}")
        device = next(self.parameters()).device
        return {"y": torch.full((n,), label, dtype=torch.long, device=device)}

    def start_points(self, n: int, x0: Tensor | None, generator) -> Tensor:
        """The chains' start: ``x0`` (checked) or ``prior(n)``."""
        if x0 is None:
            return self.prior(n, generator)
        if tuple(x0.shape) != (n, *self.shape):
            raise ValueError(f"x0 must have shape {(n, *self.shape)}, got {tuple(x0.shape)}")
        return x0


def checked_conditions(cond: dict, ranges: dict[str, tuple[int, int]], n: int, device) -> dict[str, Tensor]:
    """``cond`` ({key: an integer or n integers}) checked against ``ranges`` ({key: (lo, hi)}, both included) and
    returned as (n,) long tensors on ``device``; ConfigError naming what is accepted for an unknown key or a value
    of another type, shape or range (the energies raised their own TypeError, or read past an embedding)."""
    takes = ", ".join(f"{k} (integers {lo}..{hi})" for k, (lo, hi) in ranges.items()) or "no conditions"
    unknown = sorted(set(cond) - set(ranges))
    if unknown:
        raise ConfigError(f"this run's energy takes {takes}; got {', '.join(map(repr, unknown))}")
    out = {}
    for key, value in cond.items():
        lo, hi = ranges[key]
        try:
            v = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            v = None
        ok = v is not None and not (v.is_floating_point() or v.is_complex() or v.dtype == torch.bool) and (
            v.shape in ((), (n,)))
        if not ok or (v.numel() and not lo <= int(v.min()) <= int(v.max()) <= hi):
            raise ConfigError(f"{key} must be one integer or {n} integers in {lo}..{hi}, got {value!r:.80}")
        out[key] = v.to(device, torch.long).expand(n).contiguous()  # (n,): a scalar broadcast, writable
    return out


def per_level_steps(n_steps: int | None, default_per_level: int, n_levels: int) -> int:
    """Steps per level of a multi-level procedure for a *total* of ``n_steps`` (rounded up)."""
    if n_steps is None:
        return default_per_level
    if n_steps < 0:
        raise ValueError(f"n_steps must be non-negative, got {n_steps}")
    return -(-n_steps // n_levels)


def batch_data(batch) -> Tensor:
    """The data tensor of a batch that may be x or (x, y)."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def batch_labels(batch) -> Tensor | None:
    """The labels of a batch that may be x or (x, y); None without labels."""
    return batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
