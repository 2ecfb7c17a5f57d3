"""The sampling progress bar (``samplers/progress.py``): for every method its total is the steps the method
declares (``Objective.steps_run``) times the batches, and the chain loops tick it exactly that often, so it ends
full; nothing ticks outside a bar; ``ebmlab sample`` draws none where stderr is not a terminal."""
import pytest
import torch

from ebmlab.data import build_dataset
from ebmlab.objectives import METHODS, build_objective
from ebmlab.samplers.progress import sampling_progress, step_counter
from ebmlab.training.config import load_config
from ebmlab.training.drawing import draw

from .test_objective_contract import _objective, tiny_overrides


class _Bar:
    """A stand-in for tqdm that records its total and updates."""
    made: list = []

    def __init__(self, total, disable=None, **kwargs):
        self.total, self.n, self.disable = total, 0, disable
        _Bar.made.append(self)

    def update(self, k=1):
        self.n += k

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def bars(monkeypatch):
    """tqdm replaced by ``_Bar``, stderr a terminal (where a bar asked for is tqdm's; in a log it is plain lines:
    tests/unit/test_display_and_ranks_known_answers.py)."""
    import tqdm.auto
    _Bar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    monkeypatch.setattr("ebmlab.progress_lines._on_terminal", lambda stream: True)
    return _Bar.made


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("steps, batch_size", [(None, None), (7, 3)])
def test_the_bar_counts_every_sampler_step_of_every_method(name, steps, batch_size, bars):
    obj, _ = _objective(name)
    draw(obj, 8, torch.Generator().manual_seed(0), steps=steps, batch_size=batch_size, progress=True)
    batches = 1 if batch_size is None else 3
    assert len(bars) == 1 and bars[0].total == obj.steps_run(steps) * batches > 0
    assert bars[0].n == bars[0].total  # every step ticked once, none beyond the declared ones


def test_guided_sampling_fills_its_bar(bars):
    cfg = load_config("paper003_digits", ["method.conditional=true", "data.n_train=64", "data.n_test=16",
                                          "method.n_steps=1", "method.T=2", "model.width=8"])
    obj = build_objective(cfg, build_dataset(cfg.data))
    draw(obj, 4, torch.Generator().manual_seed(0), label=3, guidance=0.5, progress=True)
    assert bars[0].n == bars[0].total == obj.steps_run(None)


def test_nothing_ticks_outside_a_bar_and_the_switch_is_honoured(bars):
    obj, _ = _objective("hybrid")
    assert step_counter() is None
    draw(obj, 4, torch.Generator().manual_seed(0))  # the default: no bar
    assert bars == []
    with sampling_progress(5, enabled=None):  # tqdm decides (a terminal or not)
        assert step_counter() is not None
    assert bars[0].disable is None and step_counter() is None


def test_the_bar_changes_no_sample():
    obj, _ = _objective("cdrl")
    a = draw(obj, 6, torch.Generator().manual_seed(4), progress=True).x
    b = draw(obj, 6, torch.Generator().manual_seed(4)).x
    assert torch.equal(a, b)


def _evaluated(name: str, extra: list[str], tmp_path) -> None:
    from ebmlab.training.evaluate import evaluate
    from ebmlab.training.config import load_config as load

    cfg = load(None, tiny_overrides(name) + ["eval.plots=false", "eval.long_run_factor=3", "eval.n_samples=40",
                                             "eval.grid_size=16"] + extra)
    torch.manual_seed(0)
    data = build_dataset(cfg.data)
    evaluate(build_objective(cfg, data), data, cfg, None)


@pytest.mark.parametrize("name", ["hybrid", "cdrl", "joint_cd"])
def test_a_vector_evaluation_fills_one_bar_with_its_chains(name, bars, tmp_path):
    """``evaluate`` on vectors: one bar whose total is the short chains plus the 3x longer ones, ticked full."""
    obj, _ = _objective(name)
    _evaluated(name, [], tmp_path)
    assert len(bars) == 1 and bars[0].disable is None  # shown where stderr is a terminal
    assert bars[0].n == bars[0].total == obj.steps_run(None) + obj.steps_run(3 * obj.n_steps_default)


def test_the_held_out_metrics_own_draw_is_in_the_bar(bars, tmp_path):
    """User data whose held-out split is smaller than 2 x eval.n_samples: the held-out metric draws its own chains
    (it cannot reuse the short ones), and the bar counts them too; ``train.progress=false`` draws no bar."""
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(120, 2)).astype("float32"))
    user = ["data.name=array", f"data.path={tmp_path / 'x.npy'}"]
    _evaluated("hybrid", user, tmp_path)
    obj, _ = _objective("hybrid")
    assert bars[0].n == bars[0].total == 2 * obj.steps_run(None) + obj.steps_run(3 * obj.n_steps_default)
    _evaluated("hybrid", user + ["train.progress=false"], tmp_path)
    assert len(bars) == 1


def test_eval_heldout_draws_fill_their_bar(bars, tmp_path):
    """``ebmlab eval --heldout-draws K``: one bar of K draws' chain steps, ticked full."""
    import types

    import numpy as np

    from ebmlab.training.heldout import draws_extension

    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(120, 2)).astype("float32"))
    cfg = load_config(None, tiny_overrides("hybrid") + ["data.name=array", f"data.path={tmp_path / 'x.npy'}",
                                                        "eval.n_samples=8"])
    data = build_dataset(cfg.data)
    obj = build_objective(cfg, data)
    out = draws_extension(types.SimpleNamespace(heldout_draws=3, draw_seed=None), cfg, obj, data)
    assert len(out["sample_energy_distance_heldout_draws"]) == 3
    assert len(bars) == 1 and bars[0].n == bars[0].total == 3 * obj.steps_run(None)
