"""``train.time_budget``: training stops at the first update past the budget, keeps its final checkpoint,
is evaluated like a finished run, and ``train.steps`` still caps it (issue 18). A fake clock advances
one second per update, so the tests neither sleep nor depend on the machine's speed."""
import pytest

from ebmlab.errors import ConfigError
from ebmlab.training import checkpoint as ckpt
from ebmlab.training import loop
from ebmlab.training.config import load_config
from ebmlab.training.evaluate import evaluate
from ebmlab.training.logging import read_metrics

from ..runs import fit_in

TINY = ["train.batch_size=32", "train.checkpoint_every=1000", "train.log_every=1000", "train.progress=false",
        "model.width=16", "model.depth=1", "method.n_steps=3", "method.n_steps_data=2", "data.n_train=500",
        "data.n_test=200", "train.threads=1", "eval.n_samples=100", "eval.grid_size=20", "eval.long_run_factor=1",
        "eval.plots=false"]


class FakeClock:
    """Starts at 0; every update advances it by one second (``Trainer._update`` is wrapped)."""
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(loop, "_clock", fake)
    update = loop.Trainer._update

    def timed_update(self):
        out = update(self)
        fake.now += 1.0
        return out

    monkeypatch.setattr(loop.Trainer, "_update", timed_update)
    return fake


def _fit(run_dir, overrides):
    return fit_in(run_dir, load_config(None, TINY + overrides))


def test_budget_stops_at_first_update_past_it(tmp_path, clock):
    t = _fit(tmp_path / "run", ["train.steps=1000", "train.time_budget=3.5"])
    assert t.step == 4  # after updates 1-3 the clock reads 1-3 s (< 3.5); update 4 ends at 4 s
    assert t.fit_stats["updates"] == 4 and t.fit_stats["stopped_by_budget"] is True
    assert t.fit_stats["wall_seconds"] == 4.0 and t.fit_stats["cpu_seconds"] >= 0
    last = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert last is not None and last.name == "step_00000004.safetensors"  # the final checkpoint is written at the stopping step
    assert [r["step"] for r in read_metrics(tmp_path / "run")][-1] == 4  # and the last update is logged


def test_budget_stopped_run_is_evaluated_like_a_finished_run(tmp_path, clock):
    t = _fit(tmp_path / "run", ["train.steps=1000", "train.time_budget=2"])
    metrics = evaluate(t.objective, t.data, t.cfg, tmp_path / "run")
    assert "density_kl" in metrics and "sample_energy_distance" in metrics
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_steps_still_cap_a_budgeted_run(tmp_path, clock):
    t = _fit(tmp_path / "run", ["train.steps=3", "train.time_budget=100"])
    assert t.step == 3 and t.fit_stats["stopped_by_budget"] is False


def test_no_budget_is_the_old_behaviour(tmp_path, clock):
    t = _fit(tmp_path / "run", ["train.steps=5"])
    assert t.step == 5 and t.fit_stats == {**t.fit_stats, "updates": 5, "stopped_by_budget": False}


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_non_positive_budget_is_refused(bad):
    with pytest.raises(ConfigError, match="train.time_budget must be positive"):
        load_config(None, [f"train.time_budget={bad}"])


def test_budget_is_left_out_of_old_hashes():
    """A run written before the key existed still matches its checkpoints (the key is new, default None)."""
    a, b = load_config(None, []), load_config(None, ["train.time_budget=60"])
    assert a.run_hash() == b.run_hash()  # mutable: a resumed run may change its budget


def test_cli_evaluates_a_run_stopped_by_its_budget(tmp_path, clock, capsys):
    """``ebmlab train`` with a time budget writes metrics.json like a run that reached train.steps (it used
    to return silently when the budget, not train.steps, ended the run)."""
    import json

    from ebmlab import cli
    run = tmp_path / "run"
    args = ["train", "--out", str(run)] + [a for kv in TINY + ["train.steps=1000", "train.time_budget=2"]
                                           for a in ("--set", kv)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "train.time_budget of 2 s spent: stopped after update 2" in out and "evaluating" in out
    assert "density_kl" in json.loads((run / "metrics.json").read_text())
