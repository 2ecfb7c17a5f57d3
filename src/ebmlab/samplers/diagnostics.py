"""What a chain reports: ``ChainInfo`` (one entry per step: acceptance, step size, energy, gradient norm)
and the ``Recorder`` that ``run_chain`` (``samplers/base.py``) fills during a chain and reduces once after
it, so that no step pays for a reduction or a host sync (issue 19, docs/performance.md)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class ChainInfo(NamedTuple):
    """Diagnostics of a chain, one entry per step (each (K,), float32, on the chain's device: reading them
    is the caller's one host sync; AIS's come on the CPU, its step sizes and energies in the chain's dtype). Every sampler and generation procedure reports this type;
    ``as_dict`` gives the form ``SampleOutput.info`` uses."""
    accept_rate: Tensor  # mean acceptance of the step over chains
    step_size: Tensor    # mean step size
    energy: Tensor       # mean E at the chains' points *before* the step
    grad_norm: Tensor    # mean ||dE/dx|| before the step (NaN unless diagnostics="full")

    @staticmethod
    def empty(device: torch.device | str | None = None) -> "ChainInfo":
        """The ChainInfo of a chain of zero steps."""
        return ChainInfo(*(torch.zeros(0, device=device) for _ in range(4)))

    @staticmethod
    def cat(infos: list["ChainInfo"]) -> "ChainInfo":
        """Concatenate the per-step entries of consecutive chains (e.g. the levels of an annealing), on
        the device of the first chain that took a step (a chain of zero steps may have been made
        elsewhere: on CUDA, paper 000's annealing mixed CPU and GPU entries, issue 20)."""
        if not infos:
            return ChainInfo.empty()
        device = next((i.accept_rate.device for i in infos if i.accept_rate.numel()), infos[0].accept_rate.device)
        return ChainInfo(*(torch.cat([p.to(device) for p in parts]) for parts in zip(*infos)))

    def as_dict(self) -> dict[str, Tensor]:
        """The four per-step tensors as a dict (the form ``SampleOutput.info`` uses)."""
        return dict(self._asdict())


def flat_norm(t: Tensor) -> Tensor:
    """(B,) Euclidean norm of each example of t (B, ...)."""
    return t.flatten(1).norm(dim=1)


class Recorder:
    """Per-step diagnostics kept as references to (B,) tensors and reduced once at the end of the
    chain (no per-step reductions, no host sync). Gradient norms cost an extra reduction per step and
    are recorded only with ``full`` (else NaN)."""

    def __init__(self, full: bool):
        self.full, self.accept, self.eps, self.energy, self.gnorm = full, [], [], [], []

    def add_unadjusted(self, eps: Tensor, e_before: Tensor) -> None:
        """``add`` for an unadjusted step with a detached energy and light diagnostics."""
        self.accept.append(None)
        self.eps.append(eps)
        self.energy.append(e_before)

    def add(self, info, e_before: Tensor, grad_before: Tensor | None) -> None:
        """Keep one step's ``StepInfo`` (``samplers/base.py``) and the energy (and gradient) before it."""
        self.accept.append(info.accept_rate)
        self.eps.append(info.step_size)
        self.energy.append(e_before.detach() if e_before.requires_grad else e_before)  # (cached: detached)
        if self.full:
            self.gnorm.append(flat_norm(grad_before.detach()))

    def info(self, x: Tensor) -> ChainInfo:
        """The chain's ``ChainInfo``: every recorded column reduced to one mean per step (``x``: the chain's
        points, for the device)."""
        if not self.energy:
            return ChainInfo.empty(x.device)
        ones = torch.ones((), device=x.device)
        if x.device.type == "cpu" and self.energy[0].numel() < _STACKED_MEAN_MAX:  # one reduction per column
            acc = (_row_means(self.accept) if all(a is not None for a in self.accept)
                   else torch.stack([a.float().mean() if a is not None else ones for a in self.accept]))
            eps, energy = _step_means(self.eps), _row_means(self.energy)
        else:
            acc = torch.stack([a.float().mean() if a is not None else ones for a in self.accept])
            eps, energy = (torch.stack([t.float().mean() for t in col]) for col in (self.eps, self.energy))
        gnorm = (torch.stack([t.float().mean() for t in self.gnorm]) if self.full
                 else torch.full_like(energy, float("nan")))
        return ChainInfo(acc, eps, energy, gnorm)


# Below this many elements a mean over one (B,) tensor is a single sequential reduction on the CPU
# (torch splits a reduction over threads from at::internal::GRAIN_SIZE = 32768 elements on), the same
# as the reduction of one row of a stacked (K, B) tensor: the per-step means of a chain's diagnostics
# are then taken in one op per column, with bit-identical results (checked from 1 to 10,000 elements
# with one and two threads; at 40,000 with two threads they differ, hence the bound). Not on CUDA,
# whose reduction kernels are laid out by shape: one mean per step there.
_STACKED_MEAN_MAX = 32768


def _row_means(col: list[Tensor]) -> Tensor:
    """(K,) the mean of each of K same-shape tensors, as ``torch.stack([t.float().mean() for t in col])``."""
    return torch.stack(col).flatten(1).float().mean(1)


def _step_means(col: list[Tensor]) -> Tensor:
    """(K,) mean step size of each step. A step that is one value broadcast to every chain (a fixed eps
    or a one-group controller: a stride-0 view) is reduced as the same broadcast, which is what
    ``t.mean()`` of that view computes, bit for bit; the same tensor at every step is reduced once."""
    first, k = col[0], len(col)
    if all(t is first for t in col):
        return first.float().mean().expand(k).clone()
    shape, n = first.shape, first.numel()
    if first.dim() and first.stride(0) == 0 and n == shape[0] and all(
            t.shape == shape and t.stride(0) == 0 for t in col):  # (B, 1, ...) views of one value each
        return torch.stack(col).flatten(1)[:, :1].float().expand(k, n).mean(1)
    if all(t.shape == shape for t in col):
        return _row_means(col)
    return torch.stack([t.float().mean() for t in col])
