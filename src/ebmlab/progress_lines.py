"""Progress displays (a training run's updates, a draw's sampler steps): tqdm's bar on a terminal (or in a notebook),
plain lines everywhere else.

tqdm redraws its bar in place with a carriage return several times a second. Where stderr is a file or a pipe
(``nohup ebmlab train ... > log 2>&1``, a cluster's job log, CI) every redraw stays in the file as one more
``\\r``-separated fragment, so a long run's log fills with them and reads as one enormous line. Off a terminal
``LineProgress`` writes the same facts as tqdm's bar (percentage, step of total, elapsed and remaining time,
rate, and for training the last logged loss / gap / acceptance) as one newline-ended line when the work starts,
then at most every ``LINE_EVERY`` seconds, and once at the end. The draws of ``ebmlab sample`` and of the
evaluations are ``lazy``: their first line comes after ``LINE_EVERY`` seconds, so short draws leave nothing in a
log and a long one (a paper-scale final evaluation) a line every ``LINE_EVERY`` seconds. The text is tqdm's own
``format_meter``, without the bar. A leaf module (it imports no other ebmlab module): ``training/loop.py`` and ``samplers/progress.py`` use it.
"""
from __future__ import annotations

import sys
import time

LINE_EVERY = 30.0  # seconds between two lines off a terminal: ~120 lines an hour
_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class LineProgress:
    """tqdm's interface as ebmlab uses it (``n``, ``total``, ``update``, ``set_postfix``, ``close``, a ``with``
    block), written as plain lines to stderr: at the start, then at most every ``every`` seconds, and at ``close``.
    ``unit``: what is counted (tqdm's ``it`` or ``step``); ``clock``: seconds on a monotonic clock (tests replace it);
    ``lazy``: no line at the start, and none at ``close`` unless one was written before (work shorter than ``every``
    seconds writes nothing)."""

    def __init__(self, total: int, initial: int = 0, desc: str = "train", every: float | None = None,
                 clock=time.monotonic, unit: str = "it", lazy: bool = False):
        every = LINE_EVERY if every is None else every  # (read here: tests set the module's LINE_EVERY)
        self.n, self.total, self.initial, self.desc, self.every = initial, total, initial, desc, every
        self.clock, self.postfix, self.closed, self.writable, self.unit = clock, "", False, True, unit
        self.t0 = self.last = clock()
        self._written = None  # the count the last line showed (None: no line yet)
        if not lazy:
            self._write()

    def update(self, k: int = 1) -> None:
        """Count ``k`` more updates; a line if ``every`` seconds have passed since the last one."""
        self.n += k
        if self.clock() - self.last >= self.every:
            self._write()

    def set_postfix(self, values: dict, refresh: bool = False) -> None:
        """Shown from the next line on (``refresh`` is tqdm's argument; a line is never forced)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        """The final line (once), unless the last line already said where the run ended."""
        if not self.closed:
            self.closed = True
            if self._written is not None and self.n != self._written:
                self._write()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self) -> None:
        from tqdm.std import tqdm
        now = self.clock()
        elapsed = now - self.t0
        done = self.n - self.initial  # this process's updates (a resumed run starts at its step)
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        # no update yet: elapsed 0, so that tqdm says "?" rather than dividing the resumed step by ~0 s
        line = tqdm.format_meter(self.n, self.total, elapsed if done > 0 else 0.0, prefix=self.desc, rate=rate,
                                 bar_format=_FORMAT, postfix=self.postfix or None, unit=self.unit)
        self.last, self._written = now, self.n
        if self.writable:
            try:
                print(line, file=sys.stderr, flush=True)
            except (OSError, ValueError):  # a closed pipe (`2>&1 | head -1`) or stream: the display must not end
                self.writable = False     # the training it reports on, so it goes quiet


def progress_display(start: int, total: int, desc: str = "train", unit: str = "it", lazy: bool = False):
    """tqdm's bar where it can redraw in place (stderr a terminal, or a notebook, where ``tqdm.auto`` picks its
    widget), else a ``LineProgress`` (``lazy``: its first line after ``LINE_EVERY`` seconds). Both start at ``start``
    of ``total`` (a resumed run's step) and count ``unit``s."""
    from tqdm.auto import tqdm
    from tqdm.autonotebook import tqdm as chosen  # tqdm.std's class unless a notebook's kernel runs this
    from tqdm.std import tqdm as plain_tqdm
    if chosen is not plain_tqdm or _on_terminal(sys.stderr):
        return tqdm(total=total, initial=start, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5)
    return LineProgress(total, initial=start, desc=desc, unit=unit, lazy=lazy)


def _on_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False
