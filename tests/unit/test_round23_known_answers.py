"""Known answers for the code changed on 2026-12-06 (mutation round 23): the lazy line display and its interval
(``progress_lines.py``), the shape comparison, constructor arguments and warning of ``api_energy.start_from``, and the three-decimal seconds
of the selection warning. Each test kills a mutant the existing tests let through; each is a direct call: no
training."""
from __future__ import annotations

import contextlib
import io
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ebmlab.errors import ConfigError


# ----- progress_lines.py: the interval ----------------------------------------------------------------------------
def test_an_explicit_interval_is_kept_and_the_default_is_line_every_read_when_the_display_is_built(monkeypatch):
    """``every=10`` writes its second line 10 s in (not at the module's 30 s); without ``every`` the interval is the
    module's ``LINE_EVERY`` as it stands when the display is built (tests and users set it after import)."""
    from ebmlab import progress_lines
    from ebmlab.progress_lines import LineProgress

    now, buf = [0.0], io.StringIO()
    with contextlib.redirect_stderr(buf):
        bar = LineProgress(10, clock=lambda: now[0], every=10.0)
        now[0] += 10.0
        bar.update(1)
    assert bar.every == 10.0 and [ln.split(" [")[0] for ln in buf.getvalue().splitlines()] == [
        "train:   0% 0/10", "train:  10% 1/10"]
    monkeypatch.setattr(progress_lines, "LINE_EVERY", 7.5)
    with contextlib.redirect_stderr(io.StringIO()):
        assert LineProgress(3, lazy=True).every == 7.5


# ----- api_energy.py: shapes, constructor arguments, the start_from warning -------------------------------------------
class _Buffered(nn.Module):
    """The same parameters whatever ``k``; a buffer whose shape depends on it."""

    def __init__(self, k: int = 1):
        super().__init__()
        self.k = k
        self.lin = nn.Linear(2, 1)
        self.register_buffer("table", torch.zeros(k))


class _Hidden(nn.Module):
    """A required argument held under another name: the constructor's arguments cannot be read back."""

    def __init__(self, size: int):
        super().__init__()
        self._size = size
        self.lin = nn.Linear(size, 1)


def test_buffers_count_in_the_shape_comparison():
    from ebmlab.api_energy import _same_shapes
    assert _same_shapes(_Buffered(3), _Buffered(3)) and not _same_shapes(_Buffered(3), _Buffered(4))


def test_the_warning_writes_arguments_as_python_would():
    """``_call``: strings quoted (``act='silu'``), as the user would type them."""
    from ebmlab.api_energy import _call
    assert _call({"act": "silu", "cond_dim": 32, "time_cond": True}) == "act='silu', cond_dim=32, time_cond=True"


def test_start_from_a_class_whose_arguments_cannot_be_read_warns_instead_of_refusing():
    """The method's build of the class differs in shape and its arguments are not attributes: ``start_from`` warns
    (``_init_kwargs(strict=False)``) that they are not readable, leaves the build's own weights, and raises nothing."""
    from ebmlab.api_energy import _init_kwargs, start_from

    built, mine = _Hidden(3), _Hidden(2)
    before = built.lin.weight.clone()
    trainer = SimpleNamespace(objective=nn.ModuleDict({"energy": built}), ema=None,
                              cfg=SimpleNamespace(method=SimpleNamespace(name="cdrl"), train=SimpleNamespace(ema=None)))
    with pytest.warns(UserWarning, match=r"cdrl builds _Hidden with arguments of its own \(not readable from its "
                                         r"attributes\).*build your instance with them$"):
        start_from(trainer, mine)
    assert torch.equal(built.lin.weight, before)
    assert _init_kwargs(built, strict=False) == {}
    with pytest.raises(ConfigError, match="cannot tell _Hidden's argument 'size'"):
        _init_kwargs(built)


# ----- training/selection.py: the warning's seconds ----------------------------------------------------------------
def test_the_selection_warning_gives_both_durations_to_three_decimals(tmp_path, monkeypatch):
    """A check of 20.4444 s after 50 updates of 9.6234 s: "took 20.444 s and the 50 updates before it 9.623 s" (the
    updates' time runs from the previous check's end to this check's start)."""
    from ebmlab.training import selection

    ends = iter([0.5, 30.5678])  # each check's end; its start is passed in
    monkeypatch.setattr(selection, "time", SimpleNamespace(monotonic=lambda: next(ends)))
    sel = selection.Selector(50, tmp_path, 0)
    trainer = SimpleNamespace(step=0, cfg=SimpleNamespace(method=SimpleNamespace(name="m")))
    sel._account(0.0, trainer)
    trainer.step = 50
    with pytest.warns(RuntimeWarning, match=r"check at update 50 took 20\.444 s and the 50 updates before it 9\.623 s,"):
        sel._account(10.1234, trainer)
