"""``data.val_fraction`` and ``train.select_every`` (training/selection.py): a validation split no statistic has
seen, checks that leave training exactly as it was, the best check's weights as the run's result (evaluation,
``ebmlab.load``), and a resume that keeps or drops the best as the run's history says."""
import json
import math
import warnings

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.config import VECTOR_METHOD_DEFAULTS, ConfigError, apply_overrides, user_data_overrides
from ebmlab.data import build_dataset
from ebmlab.data.dataset import array_dataset, split_validation
from ebmlab.errors import CheckpointError, DataError
from ebmlab.experiments import leaderboard
from ebmlab.training import heldout, selection
from ebmlab.training.config import load_config
from ebmlab.training.evaluate import final_evaluation
from ebmlab.training.logging import read_metrics
from ebmlab.training.loop import Trainer

from ..runs import fit_in

TINY = ["data.name=mixture", "data.n_train=400", "data.n_test=100", "model.width=16", "model.depth=1",
        "method.n_steps=3", "method.n_steps_data=2", "train.batch_size=32", "train.log_every=1",
        "train.checkpoint_every=1000", "train.progress=false", "train.threads=1", "eval.n_samples=50",
        "eval.grid_size=20", "eval.long_run_factor=1", "eval.plots=false"]


def _rows(n=200, d=3, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)) * [1.0, 5.0, 0.1][:d] + 3.0).float()


def test_validation_rows_come_out_of_the_training_split_and_out_of_the_standardisers_fit():
    x = _rows()
    plain = array_dataset(x, load_config(None, ["data.name=array"]).data, "x")
    split = array_dataset(x, load_config(None, ["data.name=array", "data.val_fraction=0.1"]).data, "x")
    assert plain.val is None and split.val.shape == (18, 3) and split.train.shape == (162, 3)
    back = lambda ds, z: ds.transform.to_data(z)  # noqa: E731
    assert torch.allclose(back(split, split.test), back(plain, plain.test), atol=1e-4)  # the held-out split of before
    rows = torch.cat([back(split, split.val), back(split, split.train)])
    assert torch.allclose(rows, back(plain, plain.train), atol=1e-4)  # the same rows, in the same order
    # the standardiser saw the remaining training rows only
    assert torch.allclose(split.transform.shift, back(split, split.train).mean(0), atol=1e-4)
    assert not torch.allclose(split.transform.shift, plain.transform.shift, atol=1e-4)
    toy = build_dataset(load_config(None, TINY + ["data.val_fraction=0.25"]).data)
    assert toy.val.shape[0] == 100 and toy.train.shape[0] == 300


def test_the_options_are_checked_and_out_of_older_hashes():
    with pytest.raises(ConfigError, match="val_fraction"):
        load_config(None, ["data.val_fraction=0.5"])
    with pytest.raises(ConfigError, match="data.val_fraction"):
        load_config(None, ["train.select_every=10"])
    with pytest.raises(ConfigError, match="select_every"):
        load_config(None, ["train.select_every=0", "data.val_fraction=0.1"])
    with pytest.raises(DataError, match="too few"):
        split_validation(_rows(3), 0.4)
    with pytest.raises(DataError, match="4 rows .* 1 held-out row"):
        array_dataset(_rows(4), load_config(None, ["data.name=array", "data.val_fraction=0.4"]).data, "x")
    with pytest.raises(DataError, match="images"):
        build_dataset(load_config(None, ["data.name=digits", "data.val_fraction=0.1"]).data)
    with pytest.raises(ConfigError, match="odd"):
        load_config(None, ["train.select_window=2"])
    with pytest.raises(ConfigError, match="select_draws"):
        load_config(None, ["train.select_draws=0"])
    with pytest.raises(ConfigError, match="set one of them"):
        load_config(None, ["train.select_draws=3", "train.select_window=3"])
    start = ["train.select_start=true"]
    for bad in (["train.select_margin=1"], start + ["train.select_margin=-1"],
                start + ["train.select_margin=1", "train.select_window=3"]):
        with pytest.raises(ConfigError, match="select_margin"):
            load_config(None, bad)
    assert load_config(None, start + ["train.select_margin=0"]).train.select_margin == 0
    nulls = ["data.val_fraction=null", "train.select_every=null", "train.select_window=1", "train.select_draws=1",
             "train.select_start=false", "train.select_refit=false", "train.select_paired=false",
             "train.select_margin=null"]
    assert load_config("default", nulls).hash() == load_config("default").hash()


def _fit(run_dir, extra, resume=False):
    metrics = {}
    trainer = fit_in(run_dir, load_config(None, TINY + extra), resume,
                     after=lambda t: metrics.update(final_evaluation(t)))
    # every entry the selection gives metrics.json is one that `ebmlab eval` keeps
    assert {k for k in metrics if k.startswith(("select", "val_"))} <= set(selection.Selector.RESULT_KEYS)
    return trainer, metrics


def _losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir) if "loss" in r]


# the run is a few updates, so a check costs more than its updates: the library's warning, expected here
@pytest.mark.filterwarnings("ignore:train.select_every. the validation check:RuntimeWarning")
@pytest.mark.parametrize("method", ["ebmlab_default", "improved_cd", "cdrl", "joint_cd"])
def test_checks_leave_training_exactly_as_it_was(tmp_path, method):
    """The checks sample from their own generator with the network in eval mode: the losses and the final
    weights of a run with checks equal those of the same run without."""
    config, sets = leaderboard.method_overrides(method, "mixture", 20.0, quick=True)
    sets = [s for s in sets if not s.startswith(("train.time_budget", "train.steps"))]
    base = sets + ["train.steps=6", "train.log_every=1", "train.progress=false", "train.threads=1",
                   "data.val_fraction=0.1", "eval.n_samples=20"]
    runs = {}
    for arm, extra in (("plain", []), ("checked", ["train.select_every=2"])):
        trainer = fit_in(tmp_path / arm, load_config(config, base + extra))
        runs[arm] = (_losses(tmp_path / arm), {k: v.clone() for k, v in trainer.objective.state_dict().items()})
    assert runs["plain"][0] == runs["checked"][0] and len(runs["plain"][0]) == 6
    assert all(torch.equal(v, runs["checked"][1][k]) for k, v in runs["plain"][1].items())
    logged = [r for r in read_metrics(tmp_path / "checked") if "val_energy_distance" in r]
    assert [r["step"] for r in logged] == [2, 4, 6]


def _scripted(monkeypatch, scores):
    """validation_score returns ``scores`` in turn (the checks' order), recording the steps scored."""
    it = iter(scores)
    monkeypatch.setattr(selection, "validation_score", lambda *a, **k: next(it))


class _Clock:
    """selection's ``time.monotonic``: a check's scoring advances it by ``check`` s, anything else by 1 s per
    reading (the loop's own clock is untouched)."""
    def __init__(self, check: float):
        self.now, self.check, self.inside = 0.0, check, False

    def monotonic(self) -> float:
        self.now += self.check if self.inside else 1.0
        self.inside = not self.inside  # readings alternate: a check's start, its end
        return self.now


@pytest.mark.parametrize("check_seconds", [0.5, 30.0])
def test_checks_are_timed_and_a_check_dearer_than_its_updates_is_said_once(tmp_path, monkeypatch, check_seconds):
    _scripted(monkeypatch, [3.0, 2.0, 1.0, 0.5])  # checks at 0, 5, 10, 15
    monkeypatch.setattr(selection, "time", _Clock(check_seconds))
    sets = ["train.steps=15", "train.select_every=5", "data.val_fraction=0.1", "train.select_start=true"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer, metrics = _fit(tmp_path / "r", sets)
    said = [str(w.message) for w in seen if "more than doubles" in str(w.message)]
    assert metrics["select_seconds"] == pytest.approx(4 * check_seconds)
    assert [r["select_seconds"] for r in read_metrics(tmp_path / "r") if "select_seconds" in r] == [check_seconds] * 3
    if check_seconds < 1.0:  # 1 s between two checks: selection is the cheaper part
        assert said == []
    else:  # said at the first trained check, with its numbers, and only once
        assert len(said) == 1 and "check at update 5 took 30.0 s and the 5 updates before it 1.0 s" in said[0]


def test_a_last_check_soon_after_the_one_before_it_is_not_judged(tmp_path, monkeypatch):
    """Only a full interval of ``every`` updates is compared with a check: a run of 51 updates checks at 50 and 51."""
    from types import SimpleNamespace
    ends = iter([1.0, 102.0, 105.0, 306.0])  # each check's end; its start is passed in
    monkeypatch.setattr(selection, "time", SimpleNamespace(monotonic=lambda: next(ends)))
    sel = selection.Selector(50, tmp_path, 0)
    trainer = SimpleNamespace(step=0, cfg=SimpleNamespace(method=SimpleNamespace(name="m")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step, t0 in ((0, 0.0), (50, 101.0), (51, 103.0)):  # checks of 1 s, 1 s and 2 s; updates 100 s, 1 s
            trainer.step = step
            sel._account(t0, trainer)
    trainer.step = 101
    with pytest.warns(RuntimeWarning, match="took 201.0 s and the 50 updates before it 0.0 s"):
        sel._account(105.0, trainer)
    assert sel.seconds == pytest.approx(1 + 1 + 2 + 201)


def test_the_best_check_is_the_runs_result(tmp_path, monkeypatch):
    _scripted(monkeypatch, [3.0, 1.0, math.nan, 2.0])  # checks at 5, 10, 15, 20: the best is step 10
    trainer, metrics = _fit(tmp_path / "r", ["train.steps=20", "train.select_every=5", "data.val_fraction=0.1"])
    assert trainer.selector.best_step == 10 and metrics["selected_step"] == 10
    assert metrics["val_energy_distance"] == 1.0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["selected_step"] == 10
    side = json.loads((tmp_path / "r" / "checkpoints" / "best.json").read_text())
    assert side["step"] == 10 and side["val_energy_distance"] == 1.0
    run = ebmlab.load(tmp_path / "r")
    assert run.checkpoint_step == 10 and run.checkpoint.name == "best.safetensors"
    assert ebmlab.load(tmp_path / "r", checkpoint=tmp_path / "r" / "checkpoints" / "step_00000020.safetensors"
                       ).checkpoint_step == 20
    # the run's energy is the step-10 EMA's, not the last one's
    x = torch.randn(5, 2)
    assert not torch.allclose(run(x), ebmlab.load(tmp_path / "r", checkpoint=tmp_path / "r" / "checkpoints" /
                                                  "step_00000020.safetensors")(x))


def test_ebmlab_eval_keeps_how_training_chose_the_result(tmp_path, monkeypatch, capsys):
    """``ebmlab eval`` rewrites metrics.json; the selection's entries (its checks ran in training) used to go."""
    from ebmlab import cli
    _scripted(monkeypatch, [3.0, 1.0, 2.0, 2.5])
    _fit(tmp_path / "r", ["train.steps=20", "train.select_every=5", "data.val_fraction=0.1"])
    before = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert cli.main(["eval", str(tmp_path / "r")]) == 0
    after = json.loads((tmp_path / "r" / "metrics.json").read_text())
    kept = {k: before[k] for k in selection.Selector.RESULT_KEYS if k in before}
    assert kept.keys() >= {"selected_step", "val_energy_distance", "select_seconds"} and kept["selected_step"] == 10
    assert {k: after[k] for k in kept} == kept and after["checkpoint_step"] == 10
    assert "(step 10, the best validation check" in capsys.readouterr().out
    # another checkpoint is not the chosen result: its metrics.json looked like the result's (selected_step 10)
    other = tmp_path / "r" / "checkpoints" / "step_00000020.safetensors"
    monkeypatch.chdir(tmp_path)  # a bare name is looked up in RUN/checkpoints/ (it was taken from the cwd only)
    assert cli.main(["eval", str(tmp_path / "r"), "--checkpoint", other.name]) == 0
    after = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert after["checkpoint_step"] == 20 and after["checkpoint_is_selected"] is False
    assert {k: after[k] for k in kept} == kept  # and the facts stay: only training's checks could recompute them
    assert cli.main(["eval", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["checkpoint_is_selected"] is True


def test_a_window_chooses_the_check_whose_neighbours_agree_and_keeps_its_own_weights(tmp_path, monkeypatch):
    """``train.select_window=3``: each check is judged by the mean of its score and its neighbours' (two at
    the ends), so a lone lucky check loses; the chosen check's weights were kept while its neighbour trained."""
    _scripted(monkeypatch, [0.5, 3.0, 1.0, 1.2, 0.9, 4.0])  # checks at 5 .. 30
    # window means: 1.75, 1.5, 1.733, 1.033 (step 20), 2.03, 2.45
    _, metrics = _fit(tmp_path / "r", ["train.steps=30", "train.select_every=5", "data.val_fraction=0.1",
                                   "train.select_window=3", "train.checkpoint_every=10"])
    assert metrics["selected_step"] == 20 and metrics["val_energy_distance"] == 1.2
    assert metrics["val_window_score"] == pytest.approx((1.0 + 1.2 + 0.9) / 3)
    side = json.loads((tmp_path / "r" / "checkpoints" / "best.json").read_text())
    assert side["step"] == 20 and side["val_window_score"] == pytest.approx(metrics["val_window_score"])
    best = ebmlab.load(tmp_path / "r")
    at20 = ebmlab.load(tmp_path / "r", checkpoint=tmp_path / "r" / "checkpoints" / "step_00000020.safetensors")
    assert best.checkpoint_step == 20
    assert all(torch.equal(v, at20.objective.state_dict()[k]) for k, v in best.objective.state_dict().items())


def test_draws_score_a_check_by_its_worst_and_stop_once_it_cannot_win(tmp_path, monkeypatch):
    """``train.select_draws=3`` with ``train.select_start``: checks at 0, 5, 10, 15, each drawing only while its
    worst draw still beats the best check (the script has exactly the draws that rule makes: one more would
    raise StopIteration)."""
    _scripted(monkeypatch, [1.0, 1.2, 1.1,   # step 0: the first check draws all three, worst 1.2
                            0.5, 2.0,        # step 5: a lucky first draw, then one that cannot win: stops
                            1.5,             # step 10: loses on its first draw
                            0.9, 1.0, 1.1])  # step 15: every draw beats 1.2: the best, scored 1.1
    _, metrics = _fit(tmp_path / "r", ["train.steps=15", "train.select_every=5", "data.val_fraction=0.1",
                                       "train.select_draws=3", "train.select_start=true"])
    assert metrics["selected_step"] == 15 and metrics["val_energy_distance"] == 1.1
    assert metrics["val_energy_distance_start"] == 1.2  # the start's check is in metrics.json, not in the log
    logged = {r["step"]: r["val_energy_distance"] for r in read_metrics(tmp_path / "r") if "val_energy_distance" in r}
    assert logged == {5: 2.0, 10: 1.5, 15: 1.1}


def test_the_starting_point_can_be_the_result_and_is_then_the_base_measure(tmp_path, monkeypatch):
    """``train.select_start``: the starting weights are a candidate; with ``model.base_std`` the tilt starts at
    zero, so a run whose first check wins returns the Gaussian base itself, E(x) = |x|^2 / 2."""
    _scripted(monkeypatch, [0.1, 1.0, 2.0])  # checks at 0, 5, 10
    _, metrics = _fit(tmp_path / "r", ["train.steps=10", "train.select_every=5", "data.val_fraction=0.1",
                                       "train.select_start=true", "model.base_std=1"])
    assert metrics["selected_step"] == 0 and metrics["val_energy_distance"] == 0.1
    run = ebmlab.load(tmp_path / "r")
    x = torch.randn(7, 2)
    assert run.checkpoint_step == 0 and torch.allclose(run.objective.energy(x), x.pow(2).sum(1) / 2)
    last = ebmlab.load(tmp_path / "r", checkpoint=tmp_path / "r" / "checkpoints" / "step_00000010.safetensors")
    assert not torch.allclose(last.objective.energy(x), x.pow(2).sum(1) / 2)  # training moved the tilt
    _scripted(monkeypatch, [0.5])  # resumed at 10: the start is not checked again, and still wins
    _, metrics = _fit(tmp_path / "r", ["train.steps=15", "train.select_every=5", "data.val_fraction=0.1",
                                       "train.select_start=true", "model.base_std=1"], resume=True)
    assert metrics["selected_step"] == 0 and metrics["val_energy_distance_start"] == 0.1


def test_a_resumed_run_reports_the_starts_score_as_the_uninterrupted_run_without_a_margin(tmp_path, monkeypatch):
    """``train.select_start`` without ``train.select_margin``: the start's score (no ``select_start.json``) is kept
    in the checkpoint, so a run resumed past the start writes the ``val_energy_distance_start`` of the
    uninterrupted run when a trained check won (it was missing from the resumed run's metrics.json)."""
    extra = ["train.select_every=5", "data.val_fraction=0.1", "train.select_start=true", "train.checkpoint_every=5"]
    _scripted(monkeypatch, [1.0, 0.5, 2.0, 3.0])  # checks at 0, 5, 10, 15
    _, whole = _fit(tmp_path / "whole", extra + ["train.steps=15"])
    _scripted(monkeypatch, [1.0, 0.5, 2.0])
    _fit(tmp_path / "cut", extra + ["train.steps=10"])
    _scripted(monkeypatch, [3.0])  # resumed at 10: the check of step 15
    _, resumed = _fit(tmp_path / "cut", extra + ["train.steps=15"], resume=True)
    assert whole["selected_step"] == resumed["selected_step"] == 5
    assert whole["val_energy_distance_start"] == resumed["val_energy_distance_start"] == 1.0


def _gaussian_energy(rows):
    """E(x) = (x - m)^T S^-1 (x - m) / 2 of the Gaussian with the mean m and covariance S (N - 1) of ``rows``."""
    mean, prec = rows.double().mean(0), torch.linalg.inv(torch.cov(rows.double().T))
    return lambda x: 0.5 * torch.einsum("bi,ij,bj->b", x.double() - mean, prec, x.double() - mean)


def test_a_chosen_start_is_refitted_on_the_training_and_validation_rows(tmp_path, monkeypatch):
    """``train.select_refit``: when the start wins, the result is the base measure of a transform fitted on the
    training and validation rows together, i.e. the Gaussian of all those rows; its sidecar carries the transform;
    the step checkpoints and a trained winner keep the transform of the training rows."""
    sets = ["train.steps=10", "train.select_every=5", "data.val_fraction=0.1", "train.select_start=true",
            "model.base_std=1", "data.whiten=true", "train.select_refit=true"]
    _scripted(monkeypatch, [0.1, 1.0, 2.0])  # checks at 0, 5, 10: the start wins
    trainer, metrics = _fit(tmp_path / "r", sets)
    assert metrics["selected_step"] == 0 and metrics["selected_refit"] == 1
    split = build_dataset(load_config(None, TINY + sets).data)
    train = split.transform.to_data(split.train)
    every = torch.cat([split.transform.to_data(split.val), train])  # (400, 2): training + validation rows
    x = torch.randn(9, 2) * 2
    run = ebmlab.load(tmp_path / "r")
    assert run.checkpoint_step == 0
    assert torch.allclose(run(x).double(), _gaussian_energy(every)(x), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(run(x).double(), _gaussian_energy(train)(x), rtol=1e-3, atol=1e-3)
    assert torch.allclose(trainer.data.transform.shift, every.mean(0), atol=1e-5)  # what the final evaluation used
    data = run.data()  # the same rows, in the result's coordinates
    assert torch.allclose(data.transform.shift, every.mean(0), atol=1e-5)
    assert torch.allclose(data.transform.to_data(data.train), train, atol=1e-4)
    assert "transform" in json.loads((tmp_path / "r" / "checkpoints" / "best.json").read_text())
    step = ebmlab.load(tmp_path / "r", checkpoint=tmp_path / "r" / "checkpoints" / "step_00000010.safetensors")
    assert torch.allclose(step.transform.shift, train.mean(0), atol=1e-5)
    _scripted(monkeypatch, [1.0, 0.5, 2.0])  # a trained check wins: kept as it is
    _, metrics = _fit(tmp_path / "t", sets)
    assert metrics["selected_step"] == 5 and "selected_refit" not in metrics
    assert "transform" not in json.loads((tmp_path / "t" / "checkpoints" / "best.json").read_text())
    assert torch.allclose(ebmlab.load(tmp_path / "t").transform.shift, train.mean(0), atol=1e-5)
    side = tmp_path / "r" / "checkpoints" / "best.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "transform": {"shift": "x"}}))
    with pytest.raises(CheckpointError, match="damaged 'transform'"):
        ebmlab.load(tmp_path / "r")


@pytest.mark.parametrize("paired", [False, True])
def test_paired_checks_draw_the_same_noise(tmp_path, monkeypatch, paired):
    """``train.select_paired``: every check's generator starts from train.seed + 7919; otherwise from that plus
    its step."""
    seeds = []

    def score(objective, data, n, generator, ref=None):
        seeds.append(generator.initial_seed())
        return 1.0
    monkeypatch.setattr(selection, "validation_score", score)
    _fit(tmp_path / "r", ["train.steps=10", "train.select_every=5", "data.val_fraction=0.1", "train.seed=3",
                          "train.select_start=true", f"train.select_paired={str(paired).lower()}"])
    assert seeds == ([3 + 7919] * 3 if paired else [3 + 7919, 3 + 7924, 3 + 7929])


def test_a_real_check_scores_samples_against_the_validation_rows(tmp_path):
    trainer, metrics = _fit(tmp_path / "r", ["train.steps=4", "train.select_every=2", "data.val_fraction=0.1"])
    scores = [r["val_energy_distance"] for r in read_metrics(tmp_path / "r")
              if "val_energy_distance" in r]
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    assert metrics["val_energy_distance"] == min(scores)
    # the prior against the validation rows: a score the same function gives by hand
    z = heldout.zscorer(trainer.data)
    from ebmlab.metrics.distances import energy_distance
    prior = trainer.objective.prior(200, torch.Generator().manual_seed(0))
    assert energy_distance(z(prior), z(trainer.data.val), unbiased=True) > 0.1  # far from the mixture's rows


def test_resume_keeps_a_best_from_before_and_drops_one_from_after_the_checkpoint(tmp_path, monkeypatch):
    extra = ["train.select_every=5", "data.val_fraction=0.1", "train.checkpoint_every=10"]
    _scripted(monkeypatch, [3.0, 1.0, 2.0, 4.0])  # best at step 10
    _fit(tmp_path / "r", extra + ["train.steps=20"])
    _scripted(monkeypatch, [5.0, 0.5])  # resumed at 20: checks at 25 (worse) and 30 (better)
    trainer, metrics = _fit(tmp_path / "r", extra + ["train.steps=30"], resume=True)
    assert trainer.selector.best_step == 30 and metrics["selected_step"] == 30
    # a best written after the checkpoint the run resumes from belongs to the abandoned part: dropped
    for p in (tmp_path / "r" / "checkpoints").glob("step_0000003*"):
        p.unlink()
    _scripted(monkeypatch, [7.0, 6.0])  # resumed at 20 again: checks at 25 and 30
    with pytest.warns(RuntimeWarning, match="dropped"):
        trainer, metrics = _fit(tmp_path / "r", extra + ["train.steps=30"], resume=True)
    assert metrics["selected_step"] == 30 and metrics["val_energy_distance"] == 6.0


def _scripted_until(monkeypatch, scores):
    """validation_score returns ``scores`` in turn; the next check is a Ctrl-C (the run stops before saving)."""
    it = iter(scores)

    def score(*a, **k):
        try:
            return next(it)
        except StopIteration:
            raise KeyboardInterrupt from None
    monkeypatch.setattr(selection, "validation_score", score)


def test_a_run_stopped_and_resumed_chooses_as_the_uninterrupted_run(tmp_path, monkeypatch):
    """A window of 3 checks, scores 1, 1, 0.5, 0.2, 1, 1 at steps 10-60: the uninterrupted run chooses step 30
    (its window's mean 0.567). Stopped at the check of step 40 and resumed from the checkpoint of step 30, the
    tracker forgot its scores and the still-open check of step 30, and chose step 40 (window [0.2, 1]); the
    checkpoint now keeps them (``Selector.state``), and the held-back count too."""
    extra = ["train.select_every=10", "train.select_window=3", "train.select_start=false", "data.val_fraction=0.1",
             "train.checkpoint_every=10", "train.steps=60"]
    _scripted(monkeypatch, [1.0, 1.0, 0.5, 0.2, 1.0, 1.0])
    _, whole = _fit(tmp_path / "whole", extra)
    assert whole["selected_step"] == 30
    _scripted_until(monkeypatch, [1.0, 1.0, 0.5])
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "cut", extra)
    assert max((tmp_path / "cut" / "checkpoints").glob("step_*.json")).name == "step_00000030.json"
    _scripted(monkeypatch, [0.2, 1.0, 1.0])  # the checks of steps 40, 50, 60 after the resume
    trainer, resumed = _fit(tmp_path / "cut", extra, resume=True)
    assert resumed["selected_step"] == 30 and resumed["val_window_score"] == pytest.approx(whole["val_window_score"])
    assert trainer.selector._scores == [1.0, 1.0, 0.5, 0.2, 1.0, 1.0]


def test_the_users_vectors_get_selection_by_default_and_an_explicit_null_turns_it_off():
    sets = user_data_overrides(apply_overrides({}, ["data.name=array"]))
    assert "data.val_fraction=0.1" in sets and "train.select_every=50" in sets
    off = user_data_overrides(apply_overrides({}, ["data.name=array", "train.select_every=null"]))
    assert not any(s.startswith("train.select_every") for s in off)
    cfg = load_config(None, off + ["data.name=array", "train.select_every=null", "data.path=x.npy"])
    assert cfg.train.select_every is None and cfg.data.val_fraction == 0.1


def test_the_users_vectors_start_from_the_mixture_or_the_gaussian_where_the_model_and_method_allow():
    """The ``--data`` defaults add the mixture base to the MLP of paper 004's objectives, the Gaussian base to any
    other MLP (select_refit refits either), no base to other models; the energy penalty is turned off
    only for the default method (named or not) with a base measure, the margin only where a start is checked
    alone, and the worst-of-draws score only where the user set no window."""
    def added(*sets):
        return {s.split("=")[0] for s in user_data_overrides(apply_overrides({}, ["data.name=array", *sets]))}
    new = {"model.base", "method.energy_l2", "train.select_draws", "train.select_start", "train.select_margin"}
    assert new <= added() and "model.base_std" not in added()
    gaussian = added() - {"model.base"} | {"model.base_std"}
    vector = set(VECTOR_METHOD_DEFAULTS["improved_cd"])  # paper 001's image components off, its vector step
    assert added("method.name=improved_cd") == gaussian - {"method.energy_l2"} | vector  # its own penalty setting
    toy = load_config("paper001_toy").method  # the vector settings are the shipped toy config's
    assert {k: getattr(toy, k.split(".")[1]) for k in vector} == VECTOR_METHOD_DEFAULTS["improved_cd"]
    assert added("method.name=improved_cd", "method.augment=true") == added("method.name=improved_cd") - {
        "method.augment"}  # the user's choice is kept (and refused on vectors by the method's build)
    assert added("method.name=noise") == added() - {"method.energy_l2"}         # paper 004's: the mixture
    assert added("train.select_refit=true") == added()
    assert added("model.base_std=null") == added() - {"model.base", "method.energy_l2"}
    assert added("model.base_std=2") == added() - {"model.base"}  # the user's base, still without the penalty
    assert added("model.base=gmm") == added() - {"model.base"}
    assert added("model.base=null") == gaussian - {"model.base_std"} | {"model.base_std"}
    assert added("model.name=custom") == added() - {"model.base", "method.energy_l2"}
    assert added("train.select_start=false") == added() - {"train.select_margin", "train.select_start"}
    assert added("train.select_window=3") == added() - {"train.select_margin", "train.select_draws"}
    assert added("method.name=hybrid") == added()  # the default method named is the default method
    for sets in (["train.select_window=3"], ["method.name=hybrid"]):  # and what they add is a config that loads
        user = ["data.name=array", *sets]
        load_config(None, user_data_overrides(apply_overrides({}, user)) + user + ["data.path=x.npy"])
    sets = user_data_overrides(apply_overrides({}, ["data.name=array"]))
    cfg = load_config(None, sets + ["data.name=array", "data.path=x.npy"])
    assert (cfg.model.base, cfg.model.base_std, cfg.method.energy_l2, cfg.train.select_draws, cfg.train.select_start,
            cfg.train.select_margin) == ("gmm", None, 0.0, 5, True, 1.0)
    sets = user_data_overrides(apply_overrides({}, ["data.name=array", "method.name=improved_cd"]))
    cfg = load_config(None, sets + ["data.name=array", "data.path=x.npy", "method.name=improved_cd"])
    assert (cfg.model.base, cfg.model.base_std, cfg.method.augment, cfg.method.multiscale) == (None, 1.0, False, False)


def test_the_experiment_harness_evaluates_the_best_check_too(tmp_path, monkeypatch):
    """``experiments/runner.train_cell`` (the leaderboard's and the claims' cells) scores the selected weights."""
    from ebmlab.experiments.runner import train_cell
    _scripted(monkeypatch, [2.0, 1.0, 3.0])  # checks at 4, 8, 12: the best is step 8
    seen = {}

    def measure(arm):
        seen["weights"] = {k: v.clone() for k, v in arm.trainer.objective.state_dict().items()}
        return {}
    m = train_cell(None, TINY + ["train.steps=12", "train.select_every=4", "data.val_fraction=0.1"], 0,
                   tmp_path / "cell", measure=measure)
    assert m["selected_step"] == 8 and m["val_energy_distance"] == 1.0 and m["step"] == 12
    best = ebmlab.load(tmp_path / "cell")  # EMA weights of step 8
    assert best.checkpoint_step == 8
    assert all(torch.equal(v, seen["weights"][k]) for k, v in best.objective.state_dict().items())


def test_a_prepared_dataset_without_a_validation_split_is_refused(tmp_path):
    cfg = load_config(None, TINY + ["train.select_every=5", "data.val_fraction=0.1"])
    plain = build_dataset(load_config(None, TINY).data)
    with pytest.raises(ConfigError, match="validation split"):
        Trainer(cfg, tmp_path / "r", data=plain)


def test_the_margin_over_the_start_is_the_paired_standard_error_over_the_validation_rows():
    """``clears_margin``: the difference of two scores against m standard errors of the per-row difference."""
    start = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    shifted = start - 0.5  # the same 0.5 lower on every row: a standard error of 0, any margin is cleared
    assert selection.clears_margin(0.5, shifted, 1.0, start, margin=10.0)
    noisy = start + torch.tensor([-2.0, 1.5, -1.0, 1.3], dtype=torch.float64)  # se = std / 2 = 0.87
    se = float((noisy - start).std()) / 2
    assert selection.clears_margin(1.0 - 1.01 * se, noisy, 1.0, start, margin=1.0)
    assert not selection.clears_margin(1.0 - 0.99 * se, noisy, 1.0, start, margin=1.0)
    assert selection.clears_margin(0.999, noisy, 1.0, start, margin=0.0)  # margin 0: the plain minimum
    assert not selection.clears_margin(1.0, noisy, 1.0, start, margin=0.0)  # a tie keeps the start
    one = torch.tensor([1.0], dtype=torch.float64)
    assert not selection.clears_margin(-5.0, one - 3, 1.0, one, margin=1.0)  # one row: no standard error


def _scripted_terms(monkeypatch, draws):
    """validation_terms returns ``draws`` (score, per-row terms) in turn."""
    it = iter(draws)
    monkeypatch.setattr(selection, "validation_terms", lambda *a, **k: next(it))
    monkeypatch.setattr(selection, "validation_score", lambda *a, **k: pytest.fail("the margin needs the rows"))


def test_with_a_margin_a_check_replaces_the_start_only_with_evidence(tmp_path, monkeypatch):
    """``train.select_margin=1``: a check whose lower score rests on rows that disagree is held back, one lower on
    every row wins; a later check then only needs to beat it and the start's margin. The start's terms are kept
    for a resumed run."""
    r0 = torch.arange(6, dtype=torch.float64)
    wild = r0 + torch.tensor([3.0, -3.0, 2.0, -2.0, 1.0, -1.5], dtype=torch.float64)
    draws = [(1.0, r0), (0.8, wild), (0.7, r0 - 0.3), (0.75, r0 - 0.25), (0.6, wild)]  # checks at 0, 5, .., 20
    _scripted_terms(monkeypatch, draws)
    sets = ["train.steps=20", "train.select_every=5", "data.val_fraction=0.1", "train.select_start=true",
            "train.select_margin=1", "train.checkpoint_every=10"]
    trainer, metrics = _fit(tmp_path / "r", sets)
    assert metrics["selected_step"] == 10 and metrics["val_energy_distance"] == 0.7
    assert metrics["select_held_back"] == 2 and metrics["val_energy_distance_start"] == 1.0
    saved = json.loads((tmp_path / "r" / "checkpoints" / selection.START_FILE).read_text())
    assert saved == {"score": 1.0, "rows": r0.tolist()}
    _scripted_terms(monkeypatch, [(0.65, wild), (0.65, r0 - 0.35)])  # resumed at 20: checks at 25 and 30
    _, metrics = _fit(tmp_path / "r", sets[1:] + ["train.steps=30"], resume=True)
    # held back: the 2 before the checkpoint (kept in it) and the check at 25, as the uninterrupted run counts
    assert metrics["selected_step"] == 30 and metrics["select_held_back"] == 3


def test_validation_terms_are_the_scores_cross_term_per_row(tmp_path):
    """A real check's per-row terms: 2 E|X - y_j| of the same draw that gives the score."""
    trainer, _ = _fit(tmp_path / "r", ["train.steps=2", "train.select_every=2", "data.val_fraction=0.1"])
    obj, data = trainer.objective, trainer.data
    score, rows = selection.validation_terms(obj, data, 300, torch.Generator().manual_seed(5))
    assert score == pytest.approx(selection.validation_score(obj, data, 300, torch.Generator().manual_seed(5)))
    z = heldout.zscorer(data)
    x = z(obj.sample(300, generator=torch.Generator().manual_seed(5)).x).double()
    y = z(data.val).double()
    assert rows.shape == (len(data.val),)
    assert torch.allclose(rows, 2 * (x[:, None, :] - y[None]).norm(dim=2).mean(0))
    within = lambda a: torch.pdist(a).mean()  # noqa: E731  (distinct pairs: the U-statistic)
    assert score == pytest.approx(float(rows.mean() - within(x) - within(y)), rel=1e-4)
