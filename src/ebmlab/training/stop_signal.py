"""Stopping a training run on SIGTERM at the end of an update, with a checkpoint of that update.

SIGTERM is how work is stopped by everything but a person at a keyboard: a cluster scheduler at a job's time limit
or on preemption (Slurm sends it, then SIGKILL after its ``KillWait``, 30 s by default), ``kill PID``, ``timeout``,
a container's stop. By default it ends the process at once, losing every update since the last checkpoint
(``train.checkpoint_every``, 1,000 updates by default). Within ``checkpoint_on_sigterm()`` it only asks the
training loop to stop: the update under way finishes, is logged and checked as usual if it falls on their grids,
its checkpoint is written, and ``Trainer.fit`` raises ``TrainingStopped``. ``--resume`` then continues exactly as an
uninterrupted run would have (the checkpoint holds every random state). A second SIGTERM ends the process at once.

``ebmlab train`` and ``ebmlab.train`` / ``ebmlab.resume`` train inside the block; an experiment's worker processes
do not (a worker that outlived its experiment would go on to train its next queued cell: ``experiments/cells.py``).
The final evaluation that follows training runs inside ``raise_on_sigterm``: it has nothing to checkpoint (training's
checkpoint is written), so a SIGTERM there stops it at once with a ``TrainingStopped`` that says so and how to redo
it, instead of a bare exit. Ctrl-C (SIGINT) is left as it is: it stops at once, keeping the last checkpoint. Several processes (torchrun) agree
on the stop in the loop, so that every rank stops after the same update (after the last update each rank reads its
own flag: nothing collective follows training).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

__all__ = ["checkpoint_on_sigterm", "raise_on_sigterm", "stop_requested", "handling"]

_STATE = {"handling": False, "requested": False}


def stop_requested() -> bool:
    """Whether a SIGTERM has asked the training loop to stop (only ever True inside ``checkpoint_on_sigterm``)."""
    return _STATE["requested"]


def handling() -> bool:
    """Whether this process is inside ``checkpoint_on_sigterm`` (then every rank of a run is, as each runs the same
    entry point, and the loop asks them all every update)."""
    return _STATE["handling"]


def _on_sigterm(signum, frame) -> None:
    if _STATE["requested"]:  # the second: the default action, now
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _STATE["requested"] = True


@contextlib.contextmanager
def checkpoint_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM asks training to stop after its current update (module docstring); the previous
    handler is restored after it. Signals reach only the main thread, so elsewhere this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    _STATE.update(handling=True, requested=False)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)  # (None: set outside Python)
        _STATE.update(handling=False, requested=False)


@contextlib.contextmanager
def raise_on_sigterm(error: Callable[[], BaseException]) -> Iterator[None]:
    """Within the block a SIGTERM raises ``error()`` in the main thread at once, and a second one takes the default
    action: for work that has nothing to checkpoint and can be redone (the final evaluation). The previous handler is
    restored after the block; off the main thread this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise _Signalled  # not an Exception: no ``except Exception`` on the way (TensorBoard's writes) may keep it
    old = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except _Signalled:
        raise error() from None
    finally:
        signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)


class _Signalled(BaseException):
    """A SIGTERM inside ``raise_on_sigterm``, on its way out of the block (then raised as the block's error)."""
