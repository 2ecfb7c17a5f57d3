"""The fourth mutation round on modules no earlier round had reached (docs/testing.md, "mutation"):
``experiments/compare_figure.py``, ``objectives/registry.py``, ``experiments/own_methods.py``, ``energies/base.py``,
``experiments/__init__.py``, ``devices.py`` and ``training/stop_signal.py``. Each test asserts what a docstring or a
formula promises (hand-computed values), not an output copied from the code; each fails under one or more of the
round's missed one-line mutations. In-process and fast: no training run, no subprocess."""
from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmlab.errors import ConfigError


# ----- experiments/compare_figure.py ----------------------------------------------------------------------------
def _run_with(tmp_path: Path, name: str, samples) -> str:
    run = tmp_path / name
    (run / "samples").mkdir(parents=True)
    if samples is not None:
        np.save(run / "samples" / "samples.npy", np.asarray(samples))
    return str(run)


@pytest.fixture
def scatter(monkeypatch):
    """The scatter's panels and frame, recorded instead of drawn; the held-out data set by the test."""
    from ebmlab import plots
    from ebmlab.experiments import compare_figure

    seen = {"ref": None}
    monkeypatch.setattr(plots, "sample_scatter",
                        lambda sets, path, extent=None, **kw: seen.update(sets=dict(sets), extent=extent))

    def heldout(run, notes):
        if seen["ref"] is None:
            notes.append("the held-out data cannot be read (test): the figure shows the samples only")
            return None
        return torch.as_tensor(seen["ref"], dtype=torch.float64)
    monkeypatch.setattr(compare_figure, "_heldout", heldout)
    return seen


def _square(k: int) -> np.ndarray:
    """k * k points of a grid filling [0, 1]^2, corners included."""
    g = np.linspace(0.0, 1.0, k)
    return np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)


def test_the_vector_figure_is_framed_30_percent_wider_than_the_held_out_data_which_come_first(tmp_path, scatter):
    from ebmlab.experiments.compare_figure import samples_figure

    scatter["ref"] = _square(10) * np.array([2.0, 1.0])  # x in [0, 2], y in [0, 1]
    a = _run_with(tmp_path, "a", np.full((100, 2), 0.5))
    files, notes = samples_figure([a], ["a"], "vector", (2,), tmp_path)
    assert files == ["samples.png"] and notes == []
    # the held-out box widened by 30 % of its range on each side (the docstring of _scatter)
    assert scatter["extent"] == pytest.approx((-0.6, 2.6, -0.3, 1.3))
    assert list(scatter["sets"]) == ["held-out data", "a"]  # "the held-out data first"


def test_far_points_are_counted_per_coordinate_inside_the_frame_edges_not(tmp_path, scatter):
    from ebmlab.experiments.compare_figure import samples_figure

    scatter["ref"] = _square(10)  # the frame: [-0.3, 1.3] on both axes
    pts = np.full((100, 2), 0.5)
    pts[0] = (1.3, 1.3)           # on the frame's corner: inside
    pts[1] = (-0.3, -0.3)         # the other corner: inside
    pts[2] = (0.5, 1.31)          # above it only in the second coordinate
    pts[3] = (0.5, -0.31)         # below it only in the second coordinate
    pts[4] = (1.31, 0.5)          # right of it only in the first
    a = _run_with(tmp_path, "a", pts)
    samples_figure([a], ["a"], "vector", (2,), tmp_path)
    names = list(scatter["sets"])
    assert names == ["held-out data", "a\n3 outside the frame"]  # no count in the held-out data's title


def test_far_points_are_counted_among_the_equal_counts_shown_only(tmp_path, scatter):
    from ebmlab.experiments.compare_figure import samples_figure

    scatter["ref"] = _square(10)                     # 100 held-out points
    a = np.full((150, 2), 0.5)
    a[100:] = 50.0                                   # past the 100 rows each panel shows
    b = np.full((80, 2), 0.5)
    b[:2] = -7.0                                     # two far points among b's 80
    ra, rb = _run_with(tmp_path, "a", a), _run_with(tmp_path, "b", b)
    samples_figure([ra, rb], ["a", "b"], "vector", (2,), tmp_path)
    # equal counts: n = the smallest set, 80 rows; a's far rows lie past them
    assert list(scatter["sets"]) == ["held-out data", "a", "b\n2 outside the frame"]


def test_without_held_out_data_the_frame_is_the_central_95_percent_of_the_shown_samples(tmp_path, scatter):
    from ebmlab.experiments.compare_figure import samples_figure

    a = np.stack([np.arange(100.0), np.arange(100.0)], 1)      # 0 .. 99
    a[50:] = 1e6                                               # far rows past the 50 shown
    b = np.stack([np.arange(50.0), np.arange(50.0)], 1)        # 0 .. 49
    ra, rb = _run_with(tmp_path, "a", a), _run_with(tmp_path, "b", b)
    files, notes = samples_figure([ra, rb], ["a", "b"], "vector", (2,), tmp_path)
    assert any("the held-out data cannot be read" in n for n in notes)
    # pooled: 0,0,1,1,...,49,49 (100 values); linear quantiles at 0.025 * 99 = 2.475 -> 1 and 0.975 * 99 = 96.525
    # -> 48; plots.data_box's default 15 % margin of the range 47 on each side
    pad = 0.15 * 47
    assert scatter["extent"] == pytest.approx((1 - pad, 48 + pad, 1 - pad, 48 + pad))
    assert list(scatter["sets"]) == ["a", "b"]


def test_a_sample_with_one_non_finite_coordinate_is_dropped_and_counted(tmp_path, scatter):
    from ebmlab.experiments.compare_figure import samples_figure

    scatter["ref"] = _square(10)
    pts = np.full((40, 2), 0.5)
    pts[0, 1] = np.nan    # one coordinate only
    pts[1, 0] = np.inf
    a = _run_with(tmp_path, "a", pts)
    _, notes = samples_figure([a], ["a"], "vector", (2,), tmp_path)
    assert notes == [f"{a}: 2 of 40 samples are not finite; dropped from the figure"]
    assert len(scatter["sets"]["a"]) == 38 and torch.isfinite(scatter["sets"]["a"]).all()


def test_a_run_with_no_finite_sample_is_left_out_with_a_note(tmp_path, scatter):
    from ebmlab.experiments.compare_figure import samples_figure

    scatter["ref"] = _square(10)
    a = _run_with(tmp_path, "a", np.full((30, 2), np.nan))
    b = _run_with(tmp_path, "b", np.full((30, 2), 0.5))
    _, notes = samples_figure([a, b], ["a", "b"], "vector", (2,), tmp_path)
    assert f"{a}: no finite sample to show: left out of the figure" in notes
    assert list(scatter["sets"]) == ["held-out data", "b"]


def test_image_runs_show_their_first_64_and_files_are_numbered_by_the_runs_shown(tmp_path, monkeypatch):
    from ebmlab import plots
    from ebmlab.experiments.compare_figure import SHOWN_IMAGES, samples_figure

    drawn = []
    monkeypatch.setattr(plots, "image_grid", lambda x, path, **kw: drawn.append((Path(path).name, len(x))))
    missing = _run_with(tmp_path, "m", None)
    a = _run_with(tmp_path, "a", np.zeros((70, 1, 4, 4), np.float32))
    files, notes = samples_figure([missing, a], ["m", "a"], "image", (1, 4, 4), tmp_path)
    assert SHOWN_IMAGES == 64
    assert files == ["samples_0.png"] and drawn == [("samples_0.png", 64)]
    assert notes == [f"{missing} has no samples/samples.npy: left out of the figure"]


# ----- energies/base.py ---------------------------------------------------------------------------------------------
def test_energy_and_grad_gives_e_and_de_dx_detached_without_create_graph():
    from ebmlab.energies.base import energy_and_grad

    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    x = torch.tensor([[1.0, 1.0], [2.0, -1.0]])
    e, g = energy_and_grad(lambda x: 0.5 * (w * x ** 2).sum(1), x)
    assert torch.equal(e, torch.tensor([1.5, 3.0])) and torch.equal(g, torch.tensor([[1.0, 2.0], [2.0, -2.0]]))
    assert not e.requires_grad and not g.requires_grad and w.grad is None  # the parameters' .grad untouched


def test_energy_and_grad_with_create_graph_switches_a_plain_leaf_to_require_a_gradient():
    from ebmlab.energies.base import energy_and_grad

    x = torch.tensor([[1.0, 3.0]])
    e, g = energy_and_grad(lambda x: (x ** 2).sum(1), x, create_graph=True)
    assert x.requires_grad  # the docstring: "the caller's tensor then does"
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert torch.equal(gg, torch.tensor([[2.0, 2.0]]))  # d/dx of 2x: the result is differentiable


def test_energy_and_grad_refuses_energies_of_the_wrong_length_or_dtype_and_integer_points():
    from ebmlab.energies.base import energy_and_grad

    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"must return shape \(3,\), got \(2,\)"):
        energy_and_grad(lambda x: x.sum(1)[:2], x)
    with pytest.raises(ValueError, match="floating-point values"):
        energy_and_grad(lambda x: torch.view_as_complex(torch.stack([x.sum(1), x.sum(1)], -1)), x)
    with pytest.raises(ValueError, match="must be floating point"):
        energy_and_grad(lambda x: x.sum(1), torch.zeros(3, 2, dtype=torch.int64))


# ----- devices.py -------------------------------------------------------------------------------------------------
def test_float64_work_stays_on_its_device_except_where_it_has_no_float64():
    from ebmlab.devices import float64_device, to_float64

    assert float64_device(torch.device("cuda", 1)) == torch.device("cuda", 1)  # unchanged, index kept
    assert float64_device(torch.device("cpu")) == torch.device("cpu")
    assert float64_device(torch.device("mps")) == torch.device("cpu")
    t = to_float64(torch.tensor([1, 16777217]))  # 2**24 + 1: no float32 holds it
    assert t.dtype == torch.float64 and t.device.type == "cpu" and t.tolist() == [1.0, 16777217.0]


# ----- training/stop_signal.py --------------------------------------------------------------------------------------
def _mine(signum, frame):
    pass


def test_checkpoint_on_sigterm_asks_for_a_stop_and_restores_the_handler_and_state():
    import os

    from ebmlab.training import stop_signal

    old = signal.signal(signal.SIGTERM, _mine)
    try:
        with stop_signal.checkpoint_on_sigterm():
            assert stop_signal.handling() and not stop_signal.stop_requested()
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop_signal.stop_requested()  # the first SIGTERM only asks
        assert signal.getsignal(signal.SIGTERM) is _mine  # the previous handler back
        assert not stop_signal.handling() and not stop_signal.stop_requested()  # "only ever True inside"
    finally:
        signal.signal(signal.SIGTERM, old)


def test_raise_on_sigterm_raises_at_once_leaves_the_default_for_a_second_and_restores_the_handler():
    import os

    from ebmlab.training import stop_signal

    during = []

    def error():
        during.append(signal.getsignal(signal.SIGTERM))
        return RuntimeError("stopped")
    old = signal.signal(signal.SIGTERM, _mine)
    try:
        with pytest.raises(RuntimeError, match="stopped"):
            with stop_signal.raise_on_sigterm(error):
                os.kill(os.getpid(), signal.SIGTERM)
        assert during == [signal.SIG_DFL]  # a second SIGTERM takes the default action
        assert signal.getsignal(signal.SIGTERM) is _mine
    finally:
        signal.signal(signal.SIGTERM, old)


# ----- experiments/__init__.py ------------------------------------------------------------------------------------
def test_experiment_options_are_checked_as_the_docstring_says():
    from ebmlab.experiments import _check_counts, _flag, name_list

    assert name_list("methods", " a,, b ,") == ("a", "b")
    assert _flag("data_seeds") == "--data-seeds"
    for bad in ({"seeds": (0, 0)}, {"seeds": (True, 2)}, {"data_seeds": (1, 1)}, {"data_seeds": "01"},
                {"jobs": 0}, {"budget": 0}, {"budget": float("inf")}):
        with pytest.raises(ConfigError):
            _check_counts(dict(bad))
    opts = {"methods": "a,b", "datasets": "x, y", "seeds": (np.int64(2), 3), "data_seeds": [np.int64(4)],
            "jobs": 1, "budget": 0.5}
    _check_counts(opts)
    assert opts == {"methods": ("a", "b"), "datasets": ("x", "y"), "seeds": (2, 3), "data_seeds": (4,),
                    "jobs": 1, "budget": 0.5}
    assert all(type(s) is int for s in opts["seeds"] + opts["data_seeds"])


# WAS A BUG (the helper's note): budget=True was taken as one second, and NumPy integers were refused for jobs and
# budget while the seeds took them
def test_jobs_and_budget_are_checked_as_the_seeds_are():
    from ebmlab.experiments import _check_counts

    for bad in ({"budget": True}, {"jobs": True}, {"jobs": 1.5}, {"budget": "3"}):
        with pytest.raises(ConfigError):
            _check_counts(dict(bad))
    opts = {"jobs": np.int64(2), "budget": np.float32(1.5)}
    _check_counts(opts)
    assert opts == {"jobs": 2, "budget": 1.5} and type(opts["jobs"]) is int and type(opts["budget"]) is float


def test_an_experiment_directory_of_another_experiment_or_of_other_files_is_refused(tmp_path):
    from ebmlab.experiments import MARKER, _claim_out

    _claim_out(tmp_path / "a", "paper000")
    _claim_out(tmp_path / "a", "paper000")  # a rerun reuses it
    with pytest.raises(ConfigError, match="holds the results of experiment 'paper000'"):
        _claim_out(tmp_path / "a", "paper001")
    old = tmp_path / "old"
    (old / "cells").mkdir(parents=True)    # from before markers: cells/ alone is enough
    (old / "notes.txt").write_text("x")
    _claim_out(old, "leaderboard")
    assert (old / MARKER).is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.md").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        _claim_out(other, "paper000")


# ----- objectives/registry.py and experiments/own_methods.py ---------------------------------------------------------
@dataclasses.dataclass
class _Cfg40:
    name: str = "r40_method"
    table: dict[str, int] = dataclasses.field(default_factory=dict)  # a YAML mapping, by a default factory


@pytest.fixture
def forget():
    """Names registered by a test, removed after it."""
    from ebmlab.objectives import METHODS

    names = []
    yield names
    for n in names:
        METHODS.pop(n, None)


def test_registering_again_replaces_and_a_dict_field_with_a_factory_is_a_yaml_type(forget):
    from ebmlab.objectives import METHODS, register

    forget.append("r40_method")
    first, second = (lambda cfg, data: 1), (lambda cfg, data: 2)
    register("r40_method", _Cfg40, first)
    register("r40_method", _Cfg40, second)  # "registering a name again replaces it (a re-run notebook cell)"
    assert METHODS["r40_method"].build is second and METHODS["r40_method"].config is _Cfg40


def test_a_helper_elsewhere_that_registers_at_a_modules_top_level_records_that_module(tmp_path, monkeypatch, forget):
    import importlib

    from ebmlab.objectives import METHODS

    forget.append("r40_helped")
    (tmp_path / "r40_helper.py").write_text(
        "from ebmlab.objectives import register\n"
        "def add(name, cfg):\n"
        "    register(name, cfg, lambda c, d: None)\n")
    (tmp_path / "r40_user.py").write_text(
        "import dataclasses\nimport r40_helper\n"
        "@dataclasses.dataclass\nclass C:\n    name: str = 'r40_helped'\n"
        "r40_helper.add('r40_helped', C)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for m in ("r40_helper", "r40_user"):
        monkeypatch.delitem(__import__("sys").modules, m, raising=False)
    importlib.import_module("r40_user")
    assert METHODS["r40_helped"].module == "r40_user"  # the module whose top-level code called the helper


def test_a_name_differing_from_a_users_method_only_in_case_is_refused(forget):
    from ebmlab.objectives import register

    forget += ["R40Case", "r40case"]
    register("R40Case", _Cfg40, lambda cfg, data: None)
    with pytest.raises(ConfigError, match="differs from 'R40Case' only in case"):
        register("r40case", _Cfg40, lambda cfg, data: None)


def test_a_script_rerun_by_a_spawned_worker_registers_from_main(forget):
    from ebmlab.objectives import METHODS, register

    forget.append("r40_spawned")
    # a spawned worker runs the script as __mp_main__; its method is still the script's (__main__)
    exec("register('r40_spawned', C, lambda c, d: None)", {"__name__": "__mp_main__", "register": register, "C": _Cfg40})
    assert METHODS["r40_spawned"].module == "__main__"


def test_the_installed_entry_points_name_their_modules(monkeypatch):
    import importlib.metadata
    from types import SimpleNamespace

    from ebmlab.objectives import registry

    eps = [SimpleNamespace(name="r40_a", value="pkg_one.methods:register_all"),
           SimpleNamespace(name="r40_a", value="pkg_two.m"), SimpleNamespace(name="r40_b", value="pkg_one.b")]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps if group == "ebmlab.methods" else [])
    assert registry.installed() == {"r40_a": ["pkg_one.methods", "pkg_two.m"], "r40_b": ["pkg_one.b"]}


def test_one_module_offered_twice_is_one_package_not_two(monkeypatch):
    from ebmlab.objectives import load_installed, registry

    imported = []
    monkeypatch.setattr(registry, "installed", lambda: {"r40_dup": ["pkg.m", "pkg.m"]})  # two dist-info copies
    monkeypatch.setattr(registry, "_import", lambda name, module, source: imported.append((name, module)))
    load_installed("r40_dup")
    assert imported == [("r40_dup", "pkg.m")]


def test_a_method_offered_only_by_an_installed_package_is_a_method_name(monkeypatch):
    from ebmlab.objectives import method_names, registry

    monkeypatch.setattr(registry, "installed", lambda: {"r40_offered": ["pkg.mod"]})
    assert "r40_offered" in method_names() and method_names() == sorted(method_names())


class _Probed(torch.nn.Module):
    """An objective as ``_probe_energy`` calls it: a parameter, ``data_energy`` and ``energy_cond``."""

    def __init__(self, detach=False, draw=False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.detach, self.draw, self.modes = detach, draw, []

    def energy_cond(self, batch, n):
        return {}

    def data_energy(self, x):
        self.modes.append(self.training)
        if self.draw:
            x = x + torch.randn_like(x)  # a random draw inside the user's forward
        e = (self.w * x).flatten(1).sum(1)
        return e.detach() if self.detach else e


def test_the_custom_energy_probe_keeps_the_mode_and_the_random_streams_and_needs_a_gradient():
    from ebmlab.objectives.registry import _probe_energy

    obj = _Probed(draw=True).eval()
    torch.manual_seed(40)
    before = torch.random.get_rng_state()
    _probe_energy("m", obj, (3,))
    assert torch.equal(torch.random.get_rng_state(), before)  # "without touching the random streams"
    assert obj.modes == [False] and obj.training is False      # evaluated in eval mode, left as it was
    obj.train()
    _probe_energy("m", obj, (3,))
    assert obj.modes == [False, False] and obj.training is True
    with pytest.raises(ConfigError, match="no gradient with respect to x"):
        _probe_energy("m", _Probed(detach=True), (3,))


def test_a_users_objective_missing_a_required_member_is_named(forget):
    from ebmlab.objectives import Objective
    from ebmlab.objectives.registry import _check_built

    class Half(Objective):
        n_steps_default = 1

        def __init__(self):
            super().__init__()
            self.energy, self.shape = torch.nn.Linear(2, 1), (2,)

        def forward(self, batch):
            return None

        def sample(self, n, **kw):
            return None
    with pytest.raises(ConfigError, match=r"does not define prior \(the contract"):
        _check_built("r40", Half())


def test_a_built_in_methods_build_is_not_checked_as_a_users_but_a_users_is(forget):
    from types import SimpleNamespace

    from ebmlab.objectives import METHODS, register
    from ebmlab.objectives.registry import build_objective

    forget.append("r40_bad_build")

    @dataclasses.dataclass
    class C:
        name: str = "r40_bad_build"
    register("r40_bad_build", C, lambda cfg, data: "not an objective")
    cfg = SimpleNamespace(method=SimpleNamespace(name="r40_bad_build"), model=SimpleNamespace(name="mlp"))
    with pytest.raises(ConfigError, match="must return an ebmlab.objectives.Objective, got a str"):
        build_objective(cfg, None)
    METHODS["r40_bad_build"] = METHODS["r40_bad_build"]._replace(module=None)  # as a built-in: not checked
    assert build_objective(cfg, None) == "not an objective"


def test_a_method_registered_in_main_warns_at_training_and_one_in_a_module_does_not(forget):
    import warnings

    from ebmlab.objectives import METHODS, register
    from ebmlab.objectives.registry import warn_if_unloadable

    forget.append("r40_where")
    register("r40_where", _Cfg40, lambda cfg, data: None)
    METHODS["r40_where"] = METHODS["r40_where"]._replace(module="__main__")
    with pytest.warns(UserWarning, match="registered in __main__"):
        warn_if_unloadable("r40_where")
    METHODS["r40_where"] = METHODS["r40_where"]._replace(module="some.module")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_unloadable("r40_where")


def test_own_method_overrides_carry_the_image_configs_data_model_train_and_eval_as_json(tmp_path):
    from ebmlab.experiments.own_methods import own_method_overrides

    cfg = tmp_path / "img.yaml"
    cfg.write_text("data: {name: digits, classes: [0, 1]}\nmodel: {width: 32}\nmethod: {name: cdrl, steps: 3}\n"
                   "train: {lr: 0.001}\neval: {fid: true}\n")
    assert own_method_overrides("mine", False, str(cfg)) == ["method.name=mine"]
    assert own_method_overrides("mine", True, str(cfg)) == [
        'data.name="digits"', "data.classes=[0, 1]", "model.width=32", "train.lr=0.001", "eval.fid=true",
        "method.name=mine"]
