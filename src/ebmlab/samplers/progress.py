"""A progress bar over the sampler steps of a generation procedure (``ebmlab sample``, ``run.sample(...,
progress=True)``): long draws at paper scale (paper 004's 1,000-pass chains, 50,000 CIFAR-10 samples) showed
nothing for minutes.

The chain loops (``run_chain``'s, ``langevin.fixed_step_chain``, ``ais``'s stages) call ``tick()`` once per
sampler step while a ``sampling_progress`` block is open; outside one, ``tick`` is a no-op (training's chains
pay one context-variable read per chain, not per step). A method's steps are those ``Objective.steps_run``
declares, so the bar's total is exact (tests/contracts/test_sampling_progress.py). A bar asked for where stderr is
a file or a pipe is written as plain lines (``ebmlab.progress_lines``), as training's is; the command line's draws
and the evaluations write them from ``LINE_EVERY`` (30 s) on, so a shorter draw leaves nothing in a log.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ebmlab.progress_lines import progress_display

__all__ = ["sampling_progress", "step_counter"]

_TICK: ContextVar[Callable[[], None] | None] = ContextVar("ebmlab_sampling_tick", default=None)


def step_counter() -> Callable[[], None] | None:
    """The open bar's per-step tick, or None: read once per chain, called once per step."""
    return _TICK.get()


@contextmanager
def sampling_progress(total: int, desc: str = "sample", enabled: bool | None = True) -> Iterator[None]:
    """A bar of ``total`` sampler steps, ticked by the chain loops within the block. ``enabled``: True shows it
    (tqdm's bar on a terminal or in a notebook, plain lines in a log: ``progress_display``), None the same but in a
    log from ``LINE_EVERY`` (30 s) on only (``ebmlab sample``, evaluations: a shorter draw writes nothing there),
    False not at all."""
    if enabled is False:
        yield
        return
    display = progress_display(0, total, desc=desc, unit="step", lazy=enabled is None)
    with display as bar:
        token = _TICK.set(lambda: bar.update(1))
        try:
            yield
        finally:
            _TICK.reset(token)
