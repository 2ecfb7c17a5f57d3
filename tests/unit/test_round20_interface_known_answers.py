"""The twentieth mutation round: known answers for ``ebmlab compare`` (experiments/compare.py: the one-run refusal,
the floor as the median of the runs', the OOD columns' order, the step notes and steps, pooled seeds and bold),
its samples figure (experiments/compare_figure.py: the frame, the counts of far points, the run each pooled row
shows, unreadable held-out data), the method registry (objectives/registry.py: config types, two packages offering
one name, the warning on another registering module, a loss of one number), the experiments' own methods
(experiments/own_methods.py), the plain progress lines (progress_lines.py) and ``ebmlab sample --out FILE.csv``
(cli_commands.py). Each test failed on a one-line bug that the suite before it let pass."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
import yaml

import ebmlab
from ebmlab.errors import ConfigError, DataError
from ebmlab.objectives import BUILT_IN, METHODS, register

TINY = {"steps": 12, "progress": False, "batch_size": 64}
TINY_EVAL = {"n_samples": 64, "grid_size": 12, "long_run_factor": 2}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny evaluated run on the toy mixture; the tests compare edited copies of it."""
    root = tmp_path_factory.mktemp("round20")
    ebmlab.train("hybrid", data="mixture", out=root / "a", model={"width": 16, "depth": 1}, train=TINY,
                 eval=TINY_EVAL)
    return root / "a"


def _variant(src, dst, seed=0, config=None, metrics=None, samples=None, drop=()):
    """A copy of ``src`` recorded with ``seed`` and the ``config`` edits ({"section.key": value}), its metrics.json
    updated with ``metrics`` (the ``drop`` keys removed), its samples.npy replaced by ``samples``."""
    shutil.copytree(src, dst)
    raw = yaml.safe_load((dst / "config.yaml").read_text())
    for k, v in {"train.seed": seed, **(config or {})}.items():
        sec, key = k.split(".", 1)
        raw[sec][key] = v
    (dst / "config.yaml").write_text(yaml.safe_dump(raw))
    m = {**json.loads((dst / "metrics.json").read_text()), **(metrics or {})}
    for k in drop:
        m.pop(k)
    (dst / "metrics.json").write_text(json.dumps(m))
    if samples is not None:
        np.save(dst / "samples" / "samples.npy", np.asarray(samples, np.float32))
    return dst


# ----- experiments/compare.py ---------------------------------------------------------------------------------
def test_a_list_of_one_run_is_refused(run):
    with pytest.raises(ConfigError, match="compare needs two or more runs"):
        ebmlab.compare([run])


def test_the_floor_is_the_median_of_three_runs_floors_not_their_mean(run, tmp_path):
    runs = [_variant(run, tmp_path / f"r{i}", metrics={"sample_energy_distance_floor": f})
            for i, f in enumerate((0.1, 0.2, 0.9))]
    assert ebmlab.compare(runs).floors["sample_energy_distance"] == pytest.approx(0.2)


def test_a_floor_only_some_runs_recorded_gives_no_floor_row_entry(run, tmp_path):
    b = _variant(run, tmp_path / "b", drop=("sample_energy_distance_floor",))
    c = ebmlab.compare([run, b])
    assert "sample_energy_distance" in c.values and "sample_energy_distance" not in c.floors


def test_ood_auroc_columns_follow_in_name_order(run, tmp_path):
    names = [f"ood_auroc_{c}" for c in "hgfedcba"]
    runs = [_variant(run, tmp_path / f"r{i}", metrics={n: 0.5 + 0.01 * i for n in names}) for i in range(2)]
    shown = [m for m in ebmlab.compare(runs).values if m.startswith("ood_auroc_")]
    assert shown == sorted(names)


def test_runs_at_one_step_get_no_step_note_and_the_step_is_the_evaluated_checkpoints(run, tmp_path):
    b = _variant(run, tmp_path / "b", seed=1)
    assert not any("different steps" in n for n in ebmlab.compare([run, b]).notes)
    early = _variant(run, tmp_path / "early", seed=2, metrics={"checkpoint_step": 4})  # ebmlab eval --checkpoint
    c = ebmlab.compare([run, early])
    assert [f["step"] for f in c.facts] == [12, 4] and any("different steps" in n for n in c.notes)


def test_a_seed_shared_by_two_settings_is_not_a_repeat(run, tmp_path):
    x = [_variant(run, tmp_path / f"x{s}", seed=s) for s in (0, 1)]
    y = _variant(run, tmp_path / "y0", seed=0, config={"train.lr": 2e-3})
    c = ebmlab.compare([*x, y], pool_seeds=True)
    assert c.groups == [[str(p) for p in x], [str(y)]]
    assert not any("repeats seed" in n for n in c.notes)


def test_a_best_row_of_one_run_cannot_be_told_from_a_pooled_row(run, tmp_path):
    one = _variant(run, tmp_path / "one", seed=0, metrics={"density_kl": 1.0})
    three = [_variant(run, tmp_path / f"t{s}", seed=s, config={"train.lr": 2e-3}, metrics={"density_kl": v})
             for s, v in enumerate((1.5, 1.6, 1.4))]
    c = ebmlab.compare([one, *three], pool_seeds=True)
    assert c.values["density_kl"] == pytest.approx([1.0, 1.5]) and c.best["density_kl"] == [0, 1]


# ----- experiments/compare_figure.py --------------------------------------------------------------------------
def _scatter_sets(monkeypatch):
    from ebmlab import plots

    seen = {}
    monkeypatch.setattr(plots, "sample_scatter",
                        lambda sets, path, extent=None, **kw: seen.update(sets=dict(sets), extent=extent))
    return seen


def _heldout(run):
    from ebmlab.experiments.compare_figure import _heldout

    return _heldout(run, []).numpy()


def test_the_frame_leaves_30_percent_of_the_held_out_range_on_each_side(run, tmp_path, monkeypatch):
    ref = _heldout(run)
    lo, hi = ref[:, :2].min(0), ref[:, :2].max(0)
    span = hi - lo
    pts = ref[:64].copy()
    pts[0] = hi + 0.2 * span   # inside the frame (30 % wider per side)
    pts[1] = lo - 0.2 * span
    pts[2] = hi + 0.4 * span   # outside it
    seen = _scatter_sets(monkeypatch)
    ebmlab.compare([run, _variant(run, tmp_path / "b", seed=1, samples=pts)], out=tmp_path / "cmp")
    x0, x1, y0, y1 = seen["extent"]
    assert (x0, x1, y0, y1) == pytest.approx((lo[0] - 0.3 * span[0], hi[0] + 0.3 * span[0],
                                               lo[1] - 0.3 * span[1], hi[1] + 0.3 * span[1]))
    assert list(seen["sets"])[2].endswith("\n1 outside the frame")


def test_a_point_far_only_in_the_second_coordinate_is_counted_outside(run, tmp_path, monkeypatch):
    ref = _heldout(run)
    lo, hi = ref[:, :2].min(0), ref[:, :2].max(0)
    pts = ref[:64].copy()
    pts[:3, 0] = hi[0]                          # the first coordinate inside the frame
    pts[:3, 1] = lo[1] - 10 * (hi[1] - lo[1])   # the second far below it
    seen = _scatter_sets(monkeypatch)
    ebmlab.compare([run, _variant(run, tmp_path / "b", seed=1, samples=pts)], out=tmp_path / "cmp")
    assert list(seen["sets"])[2].endswith("\n3 outside the frame")


def test_far_points_are_counted_only_among_the_points_shown(run, tmp_path, monkeypatch):
    ref = _heldout(run)
    shown = np.load(run / "samples" / "samples.npy")
    n = min(len(ref), len(shown))
    far = np.full((10, ref.shape[1]), 1e3, np.float32)  # past the n rows every panel shows
    seen = _scatter_sets(monkeypatch)
    ebmlab.compare([run, _variant(run, tmp_path / "b", seed=1, samples=np.concatenate([ref[:n], far]))],
                   out=tmp_path / "cmp")
    assert "outside the frame" not in list(seen["sets"])[2]


def test_unreadable_held_out_data_leaves_the_samples_alone_in_the_figure(run, tmp_path, monkeypatch):
    from ebmlab.experiments import compare_figure

    def moved(*a, **k):
        raise DataError("data file 'x.npy' is missing")
    monkeypatch.setattr(compare_figure, "run_dataset", moved)
    seen = _scatter_sets(monkeypatch)
    c = ebmlab.compare([run, _variant(run, tmp_path / "b", seed=1)], out=tmp_path / "cmp")
    assert any("the held-out data cannot be read" in n for n in c.notes) and len(seen["sets"]) == 2


def test_a_pooled_rows_figure_shows_its_first_run(run, tmp_path, monkeypatch):
    from ebmlab.experiments import compare_figure

    x = [_variant(run, tmp_path / f"x{s}", seed=s) for s in (0, 1)]
    y = [_variant(run, tmp_path / f"y{s}", seed=s, config={"train.lr": 2e-3}) for s in (3, 4)]
    seen = {}
    monkeypatch.setattr(compare_figure, "samples_figure",
                        lambda runs, labels, *a, **k: (seen.update(runs=runs, labels=labels), ([], []))[1])
    ebmlab.compare([*x, *y], out=tmp_path / "cmp", pool_seeds=True)
    assert seen["runs"] == [str(x[0]), str(y[0])]
    assert seen["labels"][1].endswith(", seed 3")


# ----- objectives/registry.py and experiments/own_methods.py --------------------------------------------------
@dataclasses.dataclass
class _Cfg:
    name: str = "r20_method"


@pytest.fixture
def own():
    """A method of one's own registered for the test, removed after it."""
    register("r20_method", _Cfg, lambda cfg, data: None)
    yield "r20_method"
    METHODS.pop("r20_method", None)


def test_a_config_field_of_an_optional_tuple_is_refused():
    @dataclasses.dataclass
    class Pair:
        name: str = "r20_pair"
        pair: tuple[int, int] | None = None

    with pytest.raises(ConfigError, match="config field 'pair' has type"):
        register("r20_pair", Pair, lambda cfg, data: None)
    assert "r20_pair" not in METHODS


def test_two_installed_packages_offering_one_name_are_refused(monkeypatch):
    from ebmlab.objectives import load_installed, registry

    monkeypatch.setattr(registry, "installed", lambda: {"r20_twice": ["pkg_b.m", "pkg_a.m"]})
    with pytest.raises(ConfigError, match="offered by several installed packages .*pkg_a.m, pkg_b.m"):
        load_installed("r20_twice")


def test_a_run_opened_where_its_own_module_registers_it_gives_no_warning(own):
    from ebmlab.objectives import open_method

    METHODS[own] = METHODS[own]._replace(module="r20_home")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_method(own, "r20_home")
    with pytest.warns(UserWarning, match="registered by module 'r20_elsewhere'"):
        open_method(own, "r20_elsewhere")


def test_a_loss_of_shape_one_is_not_one_number():
    from ebmlab.objectives import LossOutput
    from ebmlab.objectives.registry import check_loss_output

    assert check_loss_output(LossOutput(torch.tensor(1.0), {}), object()).loss.dim() == 0
    with pytest.raises(ConfigError, match=r"got a loss of shape \(1,\)"):
        check_loss_output(LossOutput(torch.ones(1), {}), object())


def test_an_experiments_own_methods_are_the_registered_ones_and_never_a_built_in(own):
    from ebmlab.experiments.own_methods import own_methods

    found = own_methods(("hybrid",))
    assert own in found and not set(found) & BUILT_IN and own not in own_methods(("hybrid", own))


# ----- progress_lines.py and cli_commands.py ------------------------------------------------------------------
def test_after_a_line_the_next_waits_a_whole_interval_again():
    from ebmlab.progress_lines import LineProgress

    now, buf = [0.0], io.StringIO()
    with contextlib.redirect_stderr(buf):
        bar = LineProgress(100, clock=lambda: now[0], every=10.0)
        for _ in range(30):  # one update a second: a line at 10, 20 and 30 s, none between
            now[0] += 1.0
            bar.update()
    assert [ln.split(" [")[0] for ln in buf.getvalue().splitlines()] == [
        "train:   0% 0/100", "train:  10% 10/100", "train:  20% 20/100", "train:  30% 30/100"]


def test_samples_written_as_csv_read_back_as_the_same_float32_numbers(tmp_path):
    from ebmlab.cli_commands import _write_samples

    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)).mul(1e3).add(1 / 3).numpy()
    _write_samples(tmp_path / "s.csv", x)
    assert np.array_equal(np.loadtxt(tmp_path / "s.csv", delimiter=",", dtype=np.float32), x)
