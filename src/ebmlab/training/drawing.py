"""Drawing samples from a trained run: what ``ebmlab sample`` and ``Run.sample`` share.

The draw is the method's own generation procedure (``Objective.sample``, DESIGN.md "Interfaces"), from its
prior or from held-out rows (``--init data``), for one class of a class-conditional model
(``Objective.class_cond``), with paper 003's classifier-free guidance (``applications/guidance.py``, Eq. 11-12),
and in batches of chains when ``n`` is too large for one (``--batch-size``: a paper-scale image model's 50,000
samples for an external FID tool).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ebmlab.errors import ConfigError
from ebmlab.objectives.base import SampleOutput, checked_conditions, per_level_steps, resampled
from ebmlab.samplers.progress import sampling_progress

__all__ = ["class_index", "class_names", "data_starts", "detached", "draw", "finite_samples"]


def class_names(run_dir) -> list[str]:
    """The class names ``run.json`` stores for data that name them (an image folder's sub-folders), else []."""
    from ebmlab.training.run import read_run_info

    return list(((read_run_info(run_dir) or {}).get("data") or {}).get("classes") or [])


def class_index(label: int | str, classes: list[str]) -> int:
    """A class given as its index or, for data that name their classes (an image folder's sub-folders, stored in
    ``run.json``), its name; ConfigError (a ValueError) listing the names for an unknown one. A string that names
    a class is that class, before it is read as an index (folders named ``1`` and ``2``: ``--label 1`` is folder
    ``1``, index 0); an int is always the index."""
    if isinstance(label, str) and label in classes:
        return classes.index(label)
    if isinstance(label, (np.integer, Tensor)) and not isinstance(label, bool) and (
            not isinstance(label, Tensor) or (label.dim() == 0 and not label.is_floating_point())):
        label = int(label)  # a NumPy integer or a 0-d integer tensor (an element of a label tensor)
    if isinstance(label, int) or (isinstance(label, str) and label.lstrip("-").isdigit()):
        return int(label)
    if classes:
        raise ConfigError(f"unknown class {label!r}: the label is one of {', '.join(classes)} or its index")
    raise ConfigError(f"unknown class {label!r}: this run's data have no class names, so the label is a class "
                      "index (an integer)")


def run_label(label: int | str, run_dir, num_classes: int) -> tuple[int, str]:
    """``label`` (``class_index``) for run ``run_dir``'s model of ``num_classes`` classes, and the name that files
    of its samples carry: the class's name where the run names its classes (``--label dog`` and ``--label 1`` are one
    class, one file), else its index. ConfigError listing the names for an index out of range (the model's range:
    paper 003's composition runs have more classes than the folder names)."""
    classes = class_names(run_dir)
    index = class_index(label, classes)
    if classes and num_classes and not 0 <= index < num_classes:
        raise ConfigError(f"unknown class {label!r}: the label is one of {', '.join(classes)} or an index in "
                          f"0..{num_classes - 1}")
    return index, (classes[index] if 0 <= index < len(classes) else str(index))


def data_starts(test: Tensor, n: int, seed: int, device) -> Tensor:
    """``n`` held-out rows (model coordinates) as chain starts, in an order drawn by ``seed``: distinct rows when
    n <= the held-out count, else every row once per round of shuffled rounds (rows were drawn with replacement:
    repeats among 100 starts of 400 rows)."""
    g = torch.Generator().manual_seed(seed)
    rounds = -(-n // max(test.shape[0], 1))
    idx = torch.cat([torch.randperm(test.shape[0], generator=g) for _ in range(rounds)])[:n]  # (n,)
    return test[idx].to(device)


def draw(objective, n: int, generator: torch.Generator, *, steps: int | None = None, x0: Tensor | None = None,
         cond: dict | None = None, label: int | None = None, guidance: float | None = None,
         batch_size: int | None = None, progress: bool | None = False) -> SampleOutput:
    """``n`` samples (model coordinates) by the method's procedure: ``steps`` sampler steps in all (None: the
    method's), from ``x0`` (n, ...) or the prior, with ``cond`` or the class ``label``, and ``guidance`` w >= 0
    (one class from the prior). ``batch_size``: chains of at most that many at once, drawn in order with the one
    generator (None: one chain of n, as is any n <= batch_size), ``x0`` and ``cond``'s (n, ...) tensors split with
    them; the batches' samples are gathered on the CPU (the device holds one batch of chains at a time) and the
    diagnostics are the first batch's; weighted chains (paper 004's AIS generation) are resampled all together,
    as one chain of n is. ``progress``: a bar over the sampler steps (``samplers/progress.py``;
    None: in a log only from 30 s on)."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ConfigError(f"the batch size must be a positive integer, got {batch_size!r}")
    if label is not None:
        if cond:
            raise ConfigError("give a class label or cond, not both")
        cond = objective.class_cond(label, n)
    elif cond:
        cond = _checked_cond(objective, cond, n)
    if guidance is not None and not objective.num_classes:
        raise ConfigError("guidance needs a class-conditional run (method.conditional=true); this run is unconditional")
    if guidance is not None and (label is None or x0 is not None):
        raise ConfigError("guidance samples one class from the prior: give a class label (--label K; label= in "
                          "Python) and no start points (not --init data; init= in Python)")
    size = n if batch_size is None else int(batch_size)
    total = 0 if progress is False else objective.steps_run(steps) * -(-n // size)  # steps x batches
    with sampling_progress(total, enabled=progress):
        parts = [_draw_one(objective, min(size, n - i), generator, steps, None if x0 is None else x0[i:i + size],
                           None if cond is None else {k: v[i:i + size] for k, v in cond.items()}, guidance, size < n)
                 for i in range(0, n, size)]
    return parts[0][0] if len(parts) == 1 else _gathered(parts, generator)


def _gathered(parts: list[tuple[SampleOutput, Tensor | None]], generator) -> SampleOutput:
    """The batches' chains as one draw of n on the CPU; weighted chains (paper 004's AIS) resampled all together by
    their log-weights (n,), as one chain of n is: each batch resampled by its own weights would bias the draw (a
    batch of 1 keeps its chain whatever its weight)."""
    out = SampleOutput(torch.cat([part.x.detach().cpu() for part, _ in parts]), parts[0][0].info)  # x: (n, ...)
    return out if parts[0][1] is None else resampled(out, torch.cat([w for _, w in parts]), generator)


def finite_samples(x: Tensor) -> Tensor:
    """``x``, the samples in data coordinates; FloatingPointError where one is not finite (finite chains can still
    overflow on the way back to data coordinates), so nothing writes or returns them."""
    if not torch.isfinite(x).all():
        raise FloatingPointError("some samples are not finite (the chains diverged, or overflow in data coordinates)")
    return x


def _checked_cond(objective, cond, n: int) -> dict[str, Tensor]:
    """``cond`` as the objectives take it, {"y": (n,) long labels in 0..num_classes-1} on their device; ConfigError
    for anything else (an unconditional run ignored it silently; a wrong key or value failed deep inside)."""
    if not objective.num_classes:
        raise ConfigError(f"this run is unconditional (trained without method.conditional); it takes no cond, got "
                          f"{cond!r:.80}")
    if not isinstance(cond, dict) or set(cond) != {"y"}:
        raise ConfigError(f"cond must be {{'y': labels}} with {n} class labels, got {cond!r:.80}")
    ranges = {"y": (0, objective.num_classes - 1)}
    return checked_conditions(cond, ranges, n, next(objective.parameters()).device)


def _draw_one(objective, n: int, generator, steps, x0, cond, guidance,
              weighted: bool) -> tuple[SampleOutput, Tensor | None]:
    """One batch of chains and, ``weighted`` (a batch of several), their log-weights where the method weighs them
    (``Objective.sample_weighted``; an objective written without the base class has none: its ``sample``)."""
    if guidance is None:
        kw = dict(generator=generator, n_steps=steps, x0=x0, cond=cond)
        if weighted and _weighs_as_it_samples(objective):
            return objective.sample_weighted(n, **kw)
        return objective.sample(n, **kw), None
    from ebmlab.applications.guidance import guided_sample
    # ``steps`` is the total, as for ``sample``; guided_sample takes K' per level (Sec. 4.2's step rescaling reads it)
    per_level = None if steps is None else per_level_steps(steps, 0, objective.sample_levels)
    guided = guided_sample(objective, cond["y"], guidance, generator=generator, n_steps=per_level)
    return SampleOutput(guided, {}), None


def _weighs_as_it_samples(objective) -> bool:
    """Whether ``objective.sample_weighted`` is its ``sample`` before resampling: it is defined in the class that
    defines ``sample`` or below it. A subclass that overrides ``sample`` alone (a user's variant of paper 004's
    ``noise`` scheme) inherits a ``sample_weighted`` that would bypass its ``sample``: its own ``sample`` runs."""
    def owner(name: str):
        return next((c for c in type(objective).__mro__ if name in vars(c)), None)
    weighs, samples = owner("sample_weighted"), owner("sample")
    return weighs is not None and samples is not None and issubclass(weighs, samples)


def detached(info):
    """Chain diagnostics on the CPU without a graph: tensors, and the dicts and lists of them that some samplers
    return (paper 000's annealing keeps ``snapshots``, a dict of tensors); anything else as it is."""
    if isinstance(info, Tensor):
        return info.detach().cpu()
    if isinstance(info, dict):
        return {k: detached(v) for k, v in info.items()}
    if isinstance(info, (list, tuple)):
        return type(info)(detached(v) for v in info)
    return info
