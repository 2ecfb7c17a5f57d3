"""Known answers for what a run displays and how ranks and threads are counted (a mutation check, docs/testing.md,
fifteenth round): the image runs' novelty figure and the other outputs of ``training/image_eval.py``;
``density_maps(..., shared_scale=False)`` and ``scheme_columns``' scales and labels (``plots.py``); the training
bar and its postfix (``training/loop.py``) and the sampling bar (``samplers/progress.py``); the average of a logged
row over ranks (``training/distributed.py``); the thread governor (``training/threads.py``); and the experiments'
figure functions, called on small fabricated tables and stand-in objectives.

No training and no experiment: figure functions are replaced by recorders where what they are *given* is the
question, the loop's updates by scripted values, a world of two ranks by one process (``TwoRanks``), ``/proc`` by a
dictionary and the clock by a list.
"""
import json
import pathlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist

from ebmlab import plots
from ebmlab.data.base import Affine, Dataset
from ebmlab.metrics.density import make_grid
from ebmlab.training import cores, distributed
from ebmlab.training import threads as th
from ebmlab.training.config import load_config
from tests.builders import GaussianStandIn

CPU = torch.device("cpu")


def _axes(fig):
    """The axes of a figure that are not colorbars."""
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]


def _const(values, shape=(1, 2, 2)):
    """One constant image per value, (N, *shape)."""
    return torch.tensor(values, dtype=torch.float32).view(-1, *[1] * len(shape)).expand(-1, *shape).clone()


# ----- training/image_eval.py and metrics/novelty.py: the image run's outputs -----------------------------------
def test_the_novelty_figure_shows_each_sample_then_its_three_nearest_training_images_four_to_a_row(tmp_path,
                                                                                                   monkeypatch):
    """Training images are constant at t_j = -1 + j / 10 (j = 0..20), held-out ones at t_j + 0.04 and sample i at
    t_(2 + i) + 0.03: its nearest training images are t_(2+i) (0.03 away per pixel), t_(3+i) (0.07), t_(1+i) (0.13),
    in that order. The figure holds the first 10 samples, each followed by those three, 1 + 3 images to a row."""
    from ebmlab.training import image_eval
    grids = {}
    monkeypatch.setattr(plots, "image_grid", lambda x, path, nrow=None, title="": grids.update(
        {path.name: (x.clone(), nrow, title)}))
    monkeypatch.setattr(plots, "energy_histograms", lambda *a, **k: None)
    t = [-1 + j / 10 for j in range(21)]
    train, test = _const(t), _const([v + 0.04 for v in t])
    samples = _const([t[2 + i] + 0.03 for i in range(12)])
    data = Dataset("img", "image", train, test)
    cfg = load_config(None, ["eval.plots=true"])
    image_eval._write_outputs(GaussianStandIn((1, 2, 2)), data, cfg, tmp_path, samples, samples, train, test)
    x, nrow, title = grids["novelty.png"]
    assert nrow == 4 and title == "sample | 3 nearest training images (pixel L2)"
    assert x.shape == (40, 1, 2, 2)
    shown = x[:, 0, 0, 0].view(10, 4)
    expected = [[t[2 + i] + 0.03, t[2 + i], t[3 + i], t[1 + i]] for i in range(10)]
    assert np.allclose(shown.numpy(), expected, atol=1e-6)
    assert torch.equal(x, x[:, :1, :1, :1].expand_as(x))  # whole images, not pieces


def test_samples_npy_keeps_the_unclamped_samples_and_the_energy_histogram_scores_model_coordinates(tmp_path,
                                                                                                  monkeypatch):
    """``samples/samples.npy`` holds the samples before clamping (a pixel at 1.5 stays 1.5); ``energy_hist.png``
    scores held-out images and samples after ``to_model`` (z = (x - 0.5) / 2 here: the stand-in energy |z|^2 / 2 of a
    constant image x is 4 (x - 0.5)^2 / 8), on as many held-out images as samples (3 of 5)."""
    from ebmlab.training import image_eval
    seen = {}
    monkeypatch.setattr(plots, "energy_histograms", lambda sets, path, **kw: seen.update(sets))
    monkeypatch.setattr(plots, "image_grid", lambda *a, **k: None)
    tf = Affine(shift=torch.tensor(0.5), scale=torch.tensor(2.0))
    train, test = _const([0.1, 0.2, 0.3]), _const([1.5, 0.5, -0.5, 2.5, 3.5])
    data = Dataset("img", "image", train, test, transform=tf)
    raw = _const([1.5, -0.5, 0.5])
    samples = raw.clamp(-1, 1)
    cfg = load_config(None, ["eval.plots=true"])
    image_eval._write_outputs(GaussianStandIn((1, 2, 2)), data, cfg, tmp_path, raw, samples, train, test)
    assert np.load(tmp_path / "samples" / "samples.npy").tolist() == raw.tolist()
    assert seen["held-out data"].tolist() == pytest.approx([0.5, 0.0, 0.5])  # 4 (x - 0.5)^2 / 8 of 1.5, 0.5, -0.5
    assert seen["samples"].tolist() == pytest.approx([0.125, 0.5, 0.0])  # of the clamped 1, -0.5, 0.5


def test_out_of_range_is_the_fraction_of_pixel_values_outside_minus_one_to_one(monkeypatch):
    """Four 2x2 samples, one pixel at 1.5 and one at -2 (in two different images): 2 of 16 pixel values, 0.125 (not
    2 of 4 images)."""
    from ebmlab.training import image_eval
    raw = torch.zeros(4, 1, 2, 2)
    raw[0, 0, 0, 0], raw[1, 0, 1, 1] = 1.5, -2.0
    monkeypatch.setattr(image_eval, "draw_samples", lambda *a, **k: raw.clone())
    data = Dataset("img", "image", _const([0.1, 0.2, 0.3]), _const([0.4, 0.5]))
    cfg = load_config(None, ["eval.n_samples=4", "eval.plots=false"])
    m = image_eval.evaluate_images(GaussianStandIn((1, 2, 2)), data, cfg, None, torch.Generator())
    assert m["sample_out_of_range"] == 0.125


# ----- plots.py: densities on their own scales, paper 004's columns --------------------------------------------
def test_densities_on_their_own_scales_each_have_their_own_peak_colour_scale_and_colorbar(tmp_path, figures):
    """``shared_scale=False`` (paper 003's one panel per noise level): a uniform density (1 / 25 per unit area: 25
    cells of area 1) and a peak (1 in one cell) each reach the top of their own scale, in the order given, each with a
    colorbar of its own image; the colorbar label once, beside the last panel, and the y label on the first."""
    grid, xs, ys = make_grid(2.0, 5)
    peak = torch.full((25,), -1e9)
    peak[12] = 0.0
    plots.density_maps({"uniform": torch.zeros(25), "peak": peak}, xs, ys, tmp_path / "d.png", shared_scale=False)
    fig = figures[0]
    a0, a1 = _axes(fig)
    assert [a0.get_title(), a1.get_title()] == ["uniform", "peak"]
    assert np.allclose(np.asarray(a0.images[0].get_array()), 1 / 25)
    assert np.asarray(a1.images[0].get_array())[2, 2] == pytest.approx(1.0)
    assert a0.images[0].norm.vmax == pytest.approx(1 / 25) and a1.images[0].norm.vmax == pytest.approx(1.0)
    bars = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
    assert [cb._colorbar.mappable for cb in bars] == [a0.images[0], a1.images[0]]
    assert [cb.get_ylabel() for cb in bars] == ["", "density (normalised on the grid)"]
    assert a0.get_ylabel() == "x2 (data units)" and a1.get_ylabel() == ""


def test_scheme_columns_share_one_sample_scale_set_by_the_most_crowded_bin_and_label_their_rows(tmp_path, figures):
    """Column "spread" has 100 samples over many bins, column "piled" all 100 in one bin: the samples row's one
    scale reaches 100 (the crowded bin), the density row's the peak density; the rows are labelled samples on top,
    density below."""
    _, xs, ys = make_grid(2.0, 5)
    g = torch.Generator().manual_seed(0)
    spread = torch.rand(100, 2, generator=g) * 3.6 - 1.8
    piled = torch.full((100, 2), 0.5)
    plots.scheme_columns({"spread": (spread, torch.zeros(25)), "piled": (piled, torch.zeros(25))}, xs, ys,
                         tmp_path / "s.png")
    top0, top1, bottom0, bottom1 = _axes(figures[0])
    assert top0.images[0].norm.vmax == 100 and top1.images[0].norm.vmax == 100
    assert float(np.asarray(top0.images[0].get_array()).max()) < 100
    assert top0.get_ylabel().startswith("samples from noise") and bottom0.get_ylabel().startswith("model density")


# ----- training/loop.py: the training bar ---------------------------------------------------------------------
class _Bar:
    def __init__(self):
        self.postfixes, self.updates, self.closed = [], 0, False

    def update(self, n):
        self.updates += n

    def set_postfix(self, d, refresh=True):
        self.postfixes.append(dict(d))

    def close(self):
        self.closed = True


TINY = ["train.batch_size=32", "train.checkpoint_every=1000", "model.width=16", "model.depth=1", "method.n_steps=3",
        "method.n_steps_data=2", "data.n_train=200", "data.n_test=100", "train.threads=1", "eval.plots=false"]


def _scripted_fit(tmp_path, monkeypatch, extra=(), is_main=True, average=None, record=True):
    """5 scripted updates (loss 10 k, energy_gap -k, accept_rate k / 10 at update k; log_every 2) with the bar
    replaced by a recorder (``record``; else the real display); returns (the bars' ``enabled`` flags and
    recorders, the logged rows)."""
    from ebmlab.training import loop
    from ebmlab.training.logging import read_metrics
    from ebmlab.training.run_dir import prepare_run_dir

    def scripted(self):
        self.step += 1
        k = float(self.step)
        return {"loss": torch.tensor(10 * k), "energy_gap": torch.tensor(-k), "accept_rate": torch.tensor(k / 10)}
    bars = []

    def progress(start, total, enabled):
        bars.append((start, total, enabled, _Bar()))
        return bars[-1][3] if enabled else None
    monkeypatch.setattr(loop.Trainer, "_update", scripted)
    monkeypatch.setattr(loop.Trainer, "save", lambda self, *a, **k: None)
    if record:
        monkeypatch.setattr(loop, "_progress", progress)
    if average is not None:
        monkeypatch.setattr(distributed, "average_metrics", average)
    cfg = load_config(None, TINY + ["train.steps=5", "train.log_every=2", "train.progress=true", *extra])
    lock = prepare_run_dir(tmp_path / "r", cfg, resume=False, overwrite=False)
    try:
        loop.Trainer(cfg, tmp_path / "r", is_main=is_main).fit()
    finally:
        lock.release()
    return bars, (read_metrics(tmp_path / "r") if is_main else None)


def test_the_bar_shows_loss_gap_and_acceptance_of_each_logged_update_to_three_digits(tmp_path, monkeypatch):
    """Rows at steps 2, 4, 5: the bar's postfix at each is that update's loss, energy gap and acceptance, in three
    significant digits, under "loss", "gap", "acc"; it counts every update and is closed at the end."""
    bars, _ = _scripted_fit(tmp_path, monkeypatch)
    [(start, total, enabled, bar)] = bars
    assert (start, total, enabled) == (0, 5, True)
    assert bar.postfixes == [{"loss": "20", "gap": "-2", "acc": "0.2"}, {"loss": "40", "gap": "-4", "acc": "0.4"},
                             {"loss": "50", "gap": "-5", "acc": "0.5"}]
    assert bar.updates == 5 and bar.closed
    from ebmlab.training.loop import _postfix
    assert _postfix({"loss": 1.23456, "energy_gap": -0.000123456, "accept_rate": 0.75, "lr": 1e-3}) == {
        "loss": "1.23", "gap": "-0.000123", "acc": "0.75"}


def test_the_bar_and_the_log_show_the_mean_over_ranks(tmp_path, monkeypatch):
    """The logged row is the mean over ranks (``average_metrics``, here a stand-in that adds 1000 to every value as
    another rank's average would change it); the bar shows the same numbers as the log, not rank 0's own
    (a real bug: the bar showed rank 0's loss while metrics.jsonl had the mean)."""
    bars, rows = _scripted_fit(tmp_path, monkeypatch, average=lambda values, ctx: {k: v + 1000 for k, v in
                                                                                     values.items()})
    assert [(r["step"], r["loss"], r["energy_gap"]) for r in rows] == [(2, 1020.0, 998.0), (4, 1040.0, 996.0),
                                                                      (5, 1050.0, 995.0)]
    assert [p["loss"] for p in bars[0][3].postfixes] == ["1.02e+03", "1.04e+03", "1.05e+03"]


def test_only_the_main_process_draws_a_training_bar(tmp_path, monkeypatch):
    bars, _ = _scripted_fit(tmp_path, monkeypatch, is_main=False)
    assert [b[2] for b in bars] == [False]


def test_a_resumed_runs_bar_starts_at_its_step_of_the_total():
    from ebmlab.training.loop import _progress
    bar = _progress(7, 20, True)
    try:
        assert (bar.n, bar.total) == (7, 20)
    finally:
        bar.close()
    assert _progress(7, 20, False) is None


# ----- progress_lines.py: the display off a terminal --------- ------------------------------------------------
def test_off_a_terminal_the_training_display_is_plain_lines_with_the_logged_numbers(tmp_path, monkeypatch, capsys):
    """stderr captured (a file, not a terminal, as in ``ebmlab train > log 2>&1``): a line at the start and one at
    the end, each ended by a newline, with no carriage return (tqdm's redraws in a log file were a real nuisance:
    the docs' own background runs all set train.progress=false); the last line has 5/5 and the last logged loss."""
    _scripted_fit(tmp_path, monkeypatch, record=False)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("train:")]
    assert len(lines) == 2 and " 0/5 " in lines[0]
    assert " 5/5 " in lines[1] and lines[1].startswith("train: 100%") and "loss=50, gap=-5, acc=0.5" in lines[1]


def test_lines_come_at_most_every_interval_and_once_at_the_end():
    """A fake clock: the start's line, none within the interval, one when it has passed (with the logged values), and
    one at ``close`` with the final count; a second ``close``, or a close right after a line, adds none."""
    import contextlib
    import io

    from ebmlab.progress_lines import LINE_EVERY, LineProgress
    now = [100.0]
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        bar = LineProgress(10, initial=2, clock=lambda: now[0])
        now[0] += LINE_EVERY / 2
        bar.update()
        bar.set_postfix({"loss": "1.5"})
        now[0] += LINE_EVERY / 2
        bar.update(2)  # 30 s after the start's line: a line
        now[0] += 1.0
        bar.update()
        bar.close()
        bar.close()
        quick = LineProgress(4, clock=lambda: now[0])
        quick.update(4)
        now[0] += LINE_EVERY
        quick.update(0)  # a line at 4/4
        quick.close()
    lines = buf.getvalue().splitlines()
    assert [ln.split(" [")[0] for ln in lines] == ["train:  20% 2/10", "train:  50% 5/10", "train:  60% 6/10",
                                                    "train:   0% 0/4", "train: 100% 4/4"]
    assert lines[1].endswith("<00:50, 10.00s/it, loss=1.5]")  # 3 updates in 30 s; 5 more take 50 s
    assert (bar.n, bar.total, bar.closed) == (6, 10, True)


def test_a_resumed_runs_first_line_has_no_rate_yet_and_a_closed_pipe_silences_the_lines():
    """A resume starts at its step: before an update the line says "?" (it said 104215978.72it/s: the step over ~0 s);
    a display whose stderr is a closed pipe (`2>&1 | head -1`) goes quiet instead of ending the training with a
    BrokenPipeError (it stopped a 3,000-update run at its first 30 s line, 660 updates past its last checkpoint)."""
    import contextlib
    import io

    from ebmlab.progress_lines import LINE_EVERY, LineProgress
    now, buf = [7.0], io.StringIO()
    with contextlib.redirect_stderr(buf):
        LineProgress(1000, initial=309, clock=lambda: now[0]).close()
    assert buf.getvalue() == "train:  31% 309/1000 [00:00<?, ?it/s]\n"

    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")
    with contextlib.redirect_stderr(Closed()):
        bar = LineProgress(10, clock=lambda: now[0])
        now[0] += LINE_EVERY
        bar.update(5)
        bar.close()
    assert (bar.n, bar.closed, bar.writable) == (5, True, False)


def test_a_terminal_gets_tqdms_bar_a_file_gets_lines(monkeypatch):
    import io

    import tqdm.std

    from ebmlab.progress_lines import LineProgress, progress_display

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    for stream, kind in ((Terminal(), tqdm.std.tqdm), (io.StringIO(), LineProgress)):
        monkeypatch.setattr("sys.stderr", stream)
        bar = progress_display(3, 9)
        try:
            assert isinstance(bar, kind) and (bar.n, bar.total) == (3, 9)
        finally:
            bar.close()


# ----- samplers/progress.py: the sampling bar -----------------------------------------------------------------
def test_the_sampling_switch_true_and_none_show_tqdms_bar_on_a_terminal_false_draws_no_bar(monkeypatch):
    """On a terminal ``enabled=True`` and ``None`` both show tqdm's bar (they differ only in a log: the next
    tests); ``False``: none. Inside a bar each tick counts one step; after it, nothing ticks."""
    import io

    import tqdm.auto

    from ebmlab.samplers.progress import sampling_progress, step_counter
    made = []

    class Recorder:
        def __init__(self, **kw):
            self.kw, self.n = kw, 0
            made.append(self)

        def update(self, n):
            self.n += n

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    monkeypatch.setattr("sys.stderr", Terminal())
    for enabled in (True, None, False):
        with sampling_progress(6, enabled=enabled):
            tick = step_counter()
            if tick is not None:
                tick(), tick()
        assert step_counter() is None
    assert [(r.kw["total"], r.kw.get("disable", False), r.n) for r in made] == [(6, False, 2), (6, False, 2)]
    assert made[0].kw["unit"] == made[1].kw["unit"] == "step"


def test_a_lazy_display_writes_its_first_line_after_the_interval_and_nothing_for_shorter_work():
    """``lazy`` (the command line's draws, the evaluations): no start line; work done within the interval writes
    nothing, even at ``close``; past it, a line, and the final line at ``close``."""
    import contextlib
    import io

    from ebmlab.progress_lines import LINE_EVERY, LineProgress
    now, buf = [5.0], io.StringIO()
    with contextlib.redirect_stderr(buf):
        short = LineProgress(8, clock=lambda: now[0], unit="step", desc="sample", lazy=True)
        now[0] += LINE_EVERY / 2
        short.update(8)
        short.close()
        assert buf.getvalue() == ""
        long = LineProgress(8, clock=lambda: now[0], unit="step", desc="sample", lazy=True)
        long.update(1)
        now[0] += LINE_EVERY
        long.update(1)  # 30 s in: its first line
        long.update(6)
        long.close()
    assert [ln.split(" [")[0] for ln in buf.getvalue().splitlines()] == ["sample:  25% 2/8", "sample: 100% 8/8"]


def test_in_a_log_the_command_lines_draws_and_the_final_evaluation_write_lines_once_they_last(tmp_path, capsys,
                                                                                             monkeypatch):
    """A log (stderr captured here) got nothing from ``ebmlab sample`` or a run's final evaluation, however long
    they took (a paper-scale evaluation: an hour after its "evaluating" line); now they write lines once they have
    lasted ``LINE_EVERY`` seconds (0 here), as training does, and nothing before (the default 30 s: these draws are
    shorter). With ``train.progress`` off the evaluation writes none."""
    from ebmlab import progress_lines
    from ebmlab.cli import main
    out = tmp_path / "run"
    sets = [a for o in ("train.steps=2", "model.width=8", "model.depth=1", "data.n_train=128", "data.n_test=32",
                        "eval.n_samples=32", "eval.grid_size=8", "eval.long_run_factor=2", "eval.plots=false",
                        "train.batch_size=16", "train.threads=1") for a in ("--set", o)]
    assert main(["train", "--out", str(out), *sets]) == 0
    assert main(["sample", str(out), "--n", "4"]) == 0
    quiet = capsys.readouterr().err
    assert "evaluate:" not in quiet and "sample:" not in quiet  # short: nothing at the default interval
    monkeypatch.setattr(progress_lines, "LINE_EVERY", 0.0)
    assert main(["sample", str(out), "--n", "4"]) == 0
    assert main(["eval", str(out)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("sample:")][-1].startswith("sample: 100%")
    assert [ln for ln in err.splitlines() if ln.startswith("evaluate:")][-1].startswith("evaluate: 100%")
    assert main(["train", "--out", str(tmp_path / "off"), *sets, "--set", "train.progress=false"]) == 0
    assert "evaluate:" not in capsys.readouterr().err


def test_a_sampling_bar_asked_for_in_a_log_is_plain_lines_and_the_samples_are_the_same(tmp_path, capsys):
    """``run.sample(n, progress=True)`` with stderr a file (a notebook's job log, ``python draw.py > log 2>&1``): the
    bar's text as newline-ended lines, no carriage return (it was tqdm's redraws, as training's bar had been), with
    the step count the method runs; the samples are those drawn without it."""
    import re

    import ebmlab
    rng = np.random.default_rng(0)
    run = ebmlab.train("hybrid", rng.normal(size=(64, 2)).astype("float32"), out=tmp_path / "run", evaluate=False,
                       train={"steps": 2, "progress": False, "batch_size": 16}, overrides={"model.width": 8})
    capsys.readouterr()
    quiet = run.sample(8, steps=6, seed=3)
    shown = run.sample(8, steps=6, seed=3, progress=True)
    err = capsys.readouterr().err
    assert torch.equal(quiet, shown)
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 2, err
    first, last = (re.match(r"sample: +(\d+)% (\d+)/(\d+) \[.*step/s\]$", ln) for ln in lines)
    assert first and last, err
    assert first.groups()[:2] == ("0", "0") and last.groups()[0] == "100"
    assert last.group(2) == last.group(3) == first.group(3) and int(first.group(3)) >= 6


# ----- training/distributed.py: a logged row over two ranks ---------------------------------------------------
class TwoRanks:
    """torch.distributed for two ranks in one process (as in test_interface_known_answers.py): rank 1's call records
    each tensor it all-reduces; rank 0's then combines its own with rank 1's by the operation asked for."""

    def __init__(self, monkeypatch):
        self.recorded, self.rank = [], None
        monkeypatch.setattr(dist, "all_reduce", self.all_reduce)

    def run(self, rank, fn):
        self.rank = rank
        return fn(distributed.DistContext(rank=rank, world_size=2, backend="gloo"))

    def all_reduce(self, t, op=dist.ReduceOp.SUM):
        if self.rank == 1:
            self.recorded.append(t.clone())
            return
        combine = {dist.ReduceOp.SUM: torch.add, dist.ReduceOp.MAX: torch.maximum, dist.ReduceOp.MIN: torch.minimum}
        t.copy_(combine[op](t, self.recorded.pop(0)))


def test_a_row_logged_in_another_key_order_is_averaged_name_by_name(monkeypatch):
    world = TwoRanks(monkeypatch)
    world.run(1, lambda ctx: distributed.average_metrics({"time": 4.0, "loss": 3.0, "acc": 0.5}, ctx))
    assert world.run(0, lambda ctx: distributed.average_metrics({"loss": 1.0, "acc": 0.25, "time": 2.0}, ctx)) == {
        "acc": 0.375, "loss": 2.0, "time": 3.0}


@pytest.mark.parametrize("names1", [("loss", "acc"), ("loss",), ("loss", "gap", "acc")])
def test_ranks_that_log_other_names_are_refused(monkeypatch, names1):
    world = TwoRanks(monkeypatch)
    world.run(1, lambda ctx: distributed.average_metrics(dict.fromkeys(names1, 1.0), ctx))
    with pytest.raises(distributed.DistributedError, match="different metric names"):
        world.run(0, lambda ctx: distributed.average_metrics({"loss": 1.0, "gap": 2.0}, ctx))


# ----- training/threads.py: the governor and the count of busy cores -------------------------------------------
@pytest.fixture
def _threads_back():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _governor_counts(monkeypatch, gov_args, times, idle=1):
    """The clock times at which the governor re-counted the idle cores, ticking at each of ``times``."""
    now, counted = [0.0], []
    monkeypatch.setattr(th, "idle_threads", lambda most, *a: counted.append(now[0]) or min(most, idle))
    gov = th.ThreadGovernor(*gov_args, clock=lambda: now[0])
    for t in times:
        now[0] = t
        gov.tick()
    return counted, gov


def test_the_governor_recounts_every_ten_seconds_whether_or_not_the_count_changed(monkeypatch, _threads_back):
    """Default interval 10 s (module docstring): counts at 10, 20, 30 of ticks every 2.5 s, the count unchanged
    (1 thread idle, 1 set) — the next count is due 10 s after the last one, not after the last change."""
    torch.set_num_threads(1)
    counted, gov = _governor_counts(monkeypatch, (None, CPU, 4), [2.5 * i for i in range(1, 13)])
    assert th.GOVERNOR_SECONDS == 10.0 and counted == [10.0, 20.0, 30.0] and gov.changes == 0


def test_an_explicit_thread_count_is_never_recounted(monkeypatch, _threads_back):
    torch.set_num_threads(3)
    counted, gov = _governor_counts(monkeypatch, (3, CPU, 4), [10.0, 100.0, 1000.0])
    assert counted == [] and torch.get_num_threads() == 3 and not gov.active


def test_the_idle_count_is_bounded_by_one_and_by_the_threads_the_process_had():
    assert th.idle_threads(2, load=0.0, cores=8) == 2  # 8 idle cores, at most the 2 the process had
    assert th.idle_threads(16, load=5.4, cores=8) == 3  # 2.6 idle rounds to 3
    assert th.idle_threads(16, load=9.0, cores=8) == 1  # more busy than cores: still 1


def test_busy_elsewhere_is_the_median_of_three_counts(monkeypatch):
    counts = iter([5, 1, 3])
    monkeypatch.setattr(cores, "_running_processes", lambda proc, me, cpus: next(counts))
    monkeypatch.setattr(cores.time, "sleep", lambda s: None)
    assert cores.busy_elsewhere() == 3.0


def test_running_processes_counts_others_in_state_r_after_the_last_parenthesis(monkeypatch):
    """A fake /proc: this process (R, left out), a running worker (R), a process whose name holds ") R" but which
    sleeps (S: the state follows the *last* parenthesis), a sleeper, one that ended while being read, and a
    non-process entry. (These stat lines stop before field 39, the CPU: counted on any CPU.)"""
    stats = {"100": "100 (python) R 1 2", "200": "200 (worker) R 1 2", "300": "300 (x) R) S 1 2",
             "400": "400 (sleeper) S 1 2"}
    monkeypatch.setattr(cores.os, "listdir", lambda path: ["self", "100", "200", "300", "400", "500"])

    def fake_open(path, **kw):
        pid = str(path).split("/")[2]
        if pid not in stats:
            raise FileNotFoundError(path)
        from io import StringIO
        return StringIO(stats[pid])
    monkeypatch.setattr(cores, "open", fake_open, raising=False)
    assert cores._running_processes(pathlib.Path("/proc"), 100, {0, 1}) == 1


# ----- the experiments' figure functions -----------------------------------------------------------------------
def _line_plots(monkeypatch):
    seen = []
    monkeypatch.setattr(plots, "line_plot", lambda series, path, xlabel, ylabel, title="", logy=False, hline=None:
                        seen.append(SimpleNamespace(series=series, path=path, logy=logy, hline=hline)))
    return seen


def test_paper001_fig9_draws_each_norm_under_its_own_name_on_a_log_scale(tmp_path, monkeypatch):
    from ebmlab.experiments import paper001
    seen = _line_plots(monkeypatch)
    rows = [{"step": 10 * k, "grad_ratio_kl_cd": 100.0 * k, "grad_norm_kl": 100.0 * k, "grad_norm_cd": 1.0}
            for k in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paper001.grad_ratio_figure(tmp_path, tmp_path)
    [fig] = seen
    assert fig.series == {"|grad L_KL|": ([10, 20, 30], [100.0, 200.0, 300.0]),
                          "|grad L_CD|": ([10, 20, 30], [1.0, 1.0, 1.0])}
    assert fig.logy and fig.path.name == "grad_ratio.png"


def test_paper002_ablation_draws_one_line_per_k_against_t_on_a_log_scale(tmp_path, monkeypatch):
    from ebmlab.experiments import paper002
    seen = _line_plots(monkeypatch)
    cells = [(1, 5), (2, 5), (4, 5), (1, 10), (4, 10)]
    table = {f"T{T}_K{K}": {"sample_energy_distance": {"mean": T + K / 100}} for T, K in cells}
    paper002._ablation_figure(tmp_path, table, cells)
    [fig] = seen
    assert fig.series == {"K=5": ([1, 2, 4], [1.05, 2.05, 4.05]), "K=10": ([1, 4], [1.1, 4.1])}
    assert fig.logy and fig.path.name == "ablation_TK.png"


def test_paper000_stage_acceptance_draws_the_finished_arms_of_the_figure_seed(tmp_path, monkeypatch):
    """Arms "a" (finished), "b" (diverged) and "c" (failed) of seed 1 and "a" of seed 0 each saved stages.npz and
    annealing.png: only seed 1's "a" is drawn and copied."""
    from ebmlab.experiments import paper000
    seen = _line_plots(monkeypatch)
    records = {}
    for arm, s, state in (("a", 1, "ok"), ("b", 1, "diverged"), ("c", 1, "failed"), ("a", 0, "ok")):
        d = tmp_path / "cells" / arm / f"seed{s}"
        d.mkdir(parents=True)
        np.savez(d / "stages.npz", level=np.arange(3), accept=np.full(3, 0.1 * (s + 1)))
        (d / "annealing.png").write_bytes(f"{arm}{s}".encode())
        records[(arm, s)] = {"diverged": state == "diverged", "failed": state == "failed"}
    paper000._figures(tmp_path, records, seed=1)
    [fig] = seen
    assert fig.series == {"a": ([0, 1, 2], [0.2, 0.2, 0.2])}
    assert fig.hline[0] == paper000.TARGET_ACCEPT
    assert sorted(p.name for p in tmp_path.glob("annealing_*.png")) == ["annealing_a.png"]
    assert (tmp_path / "annealing_a.png").read_bytes() == b"a1"


def test_paper004_fig2_shows_the_figure_seeds_column_of_each_finished_arm(tmp_path, monkeypatch):
    from ebmlab.experiments import paper004
    seen = {}
    monkeypatch.setattr(plots, "scheme_columns", lambda columns, xs, ys, path, title="": seen.update(columns))
    records = {}
    for arm in ("a", "b"):
        for s in (0, 1):
            d = tmp_path / "cells" / arm / f"seed{s}"
            d.mkdir(parents=True)
            np.savez(d / "fig2.npz", samples=np.full((3, 2), 10.0 * s), logp=np.full(4, float(s)))
            records[(arm, s)] = {"diverged": arm == "b", "failed": False}
    paper004.figure(tmp_path, records, ["a", "b"], 1, "fig2.png", "t")
    assert list(seen) == ["a"]
    assert seen["a"][0].tolist() == [[10.0, 10.0]] * 3 and seen["a"][1].tolist() == [1.0] * 4


def test_the_leaderboards_image_panel_is_a_mosaic_of_the_images_in_reading_order():
    """Four 1x2x3 images, image i constant at -1 + i / 2: a 2 x 2 mosaic (4 x 6 pixels) with image 0 top left, 1
    top right, 2 and 3 below, each mapped from [-1, 1] to [0, 1]."""
    from ebmlab.experiments.leaderboard_report import _panel
    fig = plots.new_figure((2, 2))
    ax = fig.subplots()
    x = np.stack([np.full((1, 2, 3), -1 + i / 2) for i in range(4)])
    _panel(ax, x, {"failed": False, "diverged": False})
    a = np.asarray(ax.images[0].get_array())
    v = [i / 4 for i in range(4)]
    assert a.tolist() == [[v[0]] * 3 + [v[1]] * 3] * 2 + [[v[2]] * 3 + [v[3]] * 3] * 2


def test_paper003_fig1_draws_each_level_under_its_own_t_and_the_densities_on_their_own_scales(tmp_path, monkeypatch):
    """A stand-in with T = 2 whose reverse process returns [x_2, x_1, x_0] (as ``reverse_process(keep_levels=True)``
    does): the samples panel of level t shows the path's x_t; the fitted densities (one per level) are drawn with
    ``shared_scale=False``."""
    from ebmlab.experiments import paper003
    calls = []
    monkeypatch.setattr(plots, "sample_scatter", lambda sets, path, **kw: calls.append((path.name, sets, kw)))
    monkeypatch.setattr(plots, "density_maps", lambda panels, xs, ys, path, **kw: calls.append((path.name, panels,
                                                                                                  kw)))
    levels = [torch.full((5, 2), 2.0), torch.full((5, 2), 1.0), torch.zeros(5, 2)]  # x_2, x_1, x_0
    energy = SimpleNamespace(net_energy=lambda y, t: t.float() * y.sum(1), step_sq=torch.ones(2))
    obj = SimpleNamespace(cfg=SimpleNamespace(T=2, data_scale=1.0), abar=torch.ones(3), sbar=torch.zeros(3),
                          y_scale=torch.ones(2), energy=energy, prior=lambda n, g: torch.zeros(n, 2),
                          reverse_process=lambda x, generator=None, keep_levels=False: (levels[-1], levels, None))
    trainer = SimpleNamespace(objective=obj, data=SimpleNamespace(train=torch.ones(5, 2)))
    paper003.figure1(tmp_path, trainer)
    by_name = {name: (sets, kw) for name, sets, kw in calls}
    samples, _ = by_name["fig1_samples.png"]
    assert {k: float(v[0, 0]) for k, v in samples.items()} == {"samples t=2": 2.0, "samples t=1": 1.0,
                                                                "samples t=0": 0.0}
    dens, kw = by_name["fig1_density.png"]
    assert list(dens) == ["exp(-E_0) of x_0", "exp(-E_1) of x_1"] and kw["shared_scale"] is False
