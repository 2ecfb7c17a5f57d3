"""torch's CPU thread count for training (issue 19 item 1): ``train.threads`` when given; otherwise ("auto",
``train.threads: null``) the idle cores, chosen when training starts and followed while it runs.

Why: on a machine other work shares, a process whose OpenMP threads outnumber the idle cores waits for them at
every parallel region; two threads per process were measured 7-15x slower than one under contention (docs/
performance.md, "Thread policy"), and an idle machine gains ~10 % from a second thread. A count chosen once at
start is right only while the load stays as it was: a test run started beside ``make demo`` took its two threads
from 13 to 1.2 updates per second. ``ThreadGovernor`` therefore re-counts the idle cores every ``every`` seconds
of the loop and sets the new count (a ``/proc`` scan of ~30 ms each time: ~0.3 % of a run at every 10 s). What
counts as a core and as busy, on each platform: ``training/cores.py``.

Numbers: a matrix product's or a convolution's reductions may be summed in another order on another thread
count (a digits ResNet's weights 1e-5 apart after three updates; the MLPs came out identical). An auto run's
results therefore follow the machine's load; set ``train.threads`` for bit-identical reruns. A checkpoint
records the count it ran with and ``--resume`` of an auto run starts from it (``resume_threads``).
"""
from __future__ import annotations

import time

import torch

from ebmlab.training.cores import busy_elsewhere, usable_cores

__all__ = ["ThreadGovernor", "busy_elsewhere", "choose_threads", "idle_threads", "resume_threads"]

GOVERNOR_SECONDS = 10.0  # how often an auto run re-counts the idle cores


def choose_threads(requested: int | None, data_kind: str, device: torch.device,
                   load: float | None = None, cores: int | None = None) -> int | None:
    """torch CPU threads for training: ``train.threads`` when given; otherwise (null, "auto") as many
    as there are idle cores when training starts (``idle_threads``), and torch's default on a GPU.
    ``data_kind`` is kept for policies that depend on the model; ``load`` and ``cores`` are for tests."""
    if requested is not None:
        return requested
    if device.type != "cpu":
        return None
    return idle_threads(torch.get_num_threads(), load, cores)


def idle_threads(most: int, load: float | None = None, cores: int | None = None) -> int:
    """The cores this process may use (``cores.usable_cores``: its affinity and cgroup quota) minus the processes
    running on them (``cores.busy_elsewhere``), at least 1 and at most ``most``."""
    cores = cores if cores is not None else usable_cores()
    load = load if load is not None else busy_elsewhere()
    return max(1, min(most, int(cores - load + 0.5)))


def resume_threads(requested: int | None, device: torch.device, stored: int | None) -> None:
    """A resumed CPU run with ``train.threads: null`` starts from the thread count its checkpoint ran with, not
    today's idle cores (module docstring: the reductions' order)."""
    if requested is None and device.type == "cpu" and stored:
        torch.set_num_threads(int(stored))


class ThreadGovernor:
    """Follows the idle cores during an auto CPU run: ``tick()`` once per update; every ``every`` seconds it
    re-counts them (``idle_threads``, at most ``most``, the process's count before training chose one) and sets
    torch's thread count when it changed. Inert for an explicit ``train.threads`` and off the CPU."""

    def __init__(self, requested: int | None, device: torch.device, most: int, every: float = GOVERNOR_SECONDS,
                 clock=time.monotonic):
        self.active = requested is None and device.type == "cpu" and every > 0
        self.most, self.every, self.clock = most, every, clock
        self.next = clock() + every
        self.changes = 0  # how often the count changed (tests, diagnostics)

    def tick(self) -> None:
        """Re-count the idle cores when ``every`` seconds have passed since the last count."""
        if not self.active or self.clock() < self.next:
            return
        want = idle_threads(self.most)
        if want != torch.get_num_threads():
            torch.set_num_threads(want)
            self.changes += 1
        self.next = self.clock() + self.every
