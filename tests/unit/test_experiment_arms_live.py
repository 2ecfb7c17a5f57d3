"""Every arm of every experiment trains only keys its method reads: ``ebmlab train`` refuses a key its method does not
read (``config_checks.check_new_run``), and the experiments now refuse it too (``runner.train_and_evaluate``,
``eta_search.tune_eta_by_training``). Paper 000's ``cd_plain`` arm (and the leaderboard's row built from it) inherited
the spiral config's ``ce_weight: 1`` and recorded a CE weight that its scalar energy never used (docs/testing.md,
"Every experiment arm's settings are live").

Each cell's function runs up to the point where training would start (``Trainer`` replaced by a stop), so the whole
grid of every experiment, quick and full, is checked in seconds."""
from __future__ import annotations

import contextlib

from pathlib import Path

import pytest

import ebmlab.experiments.eta_search as eta_search
import ebmlab.experiments.runner as runner
from ebmlab.errors import ConfigError
from ebmlab.experiments import data_defaults, leaderboard, paper000, paper001, paper002, paper003, paper004


class _Stop(Exception):
    """Raised where training would start: the cell got past every check."""


def _stop(*args, **kwargs):
    raise _Stop


def _flat(cells) -> list:
    if isinstance(cells, dict):
        return [c for v in cells.values() for c in _flat(v)]
    if isinstance(cells, tuple):
        return [c for v in cells for c in _flat(v)]
    return list(cells)


def _paper002(quick: bool, full: bool) -> list:
    tk = paper002.grid(quick, full)
    eta = 0.1  # a placeholder: the tuned eta is a number the check does not look at
    evaluation = paper002.evaluation_cells(tk, dict.fromkeys(tk, eta), quick, [0],
                                           dict.fromkeys(paper002.sigmas(quick), eta),
                                           dict.fromkeys(paper002.digits_ts(quick), eta))
    return _flat(evaluation) + paper002.tuning_cells(tk, quick) + paper002.digits_tuning_cells(quick)


def _data_defaults(quick: bool) -> list:
    arms = ("default", *data_defaults.CANDIDATES)
    cells = _flat(data_defaults.build_cells(data_defaults.DATASETS, arms, [0], 1.0, quick))
    return [c for c in cells if c.fn is data_defaults.cell_fn]  # the exact references train nothing


GRIDS = {
    "paper000": lambda q, f: _flat(paper000.build_cells(q, [0])),
    "paper001": lambda q, f: _flat(paper001.build_cells(q, [0])),
    "paper002": _paper002,
    "paper003": lambda q, f: _flat(paper003.build_cells(q, [0], f)),
    "paper004": lambda q, f: _flat(paper004.build_cells(q, [0])),
    "leaderboard": lambda q, f: [c for c in _flat(leaderboard.build_cells(q, f, None, [0]))
                                 if c.fn is not leaderboard.baseline_fn],  # baselines fit no EBM config
    "data_defaults": lambda q, f: _data_defaults(q),
}


@pytest.mark.parametrize("quick,full", [(True, False), (False, False), (False, True)],
                         ids=["quick", "default", "full"])
@pytest.mark.parametrize("experiment", sorted(GRIDS))
def test_every_arm_reaches_training_with_only_live_keys(experiment, quick, full, monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "Trainer", _stop)
    monkeypatch.setattr(runner, "prepare_run_dir", lambda *a, **k: contextlib.nullcontext())  # no run directory written
    monkeypatch.setattr(eta_search, "Trainer", _stop)
    cells = GRIDS[experiment](quick, full)
    assert cells
    refused = {}
    for k, cell in enumerate(cells):
        try:
            cell.fn(cell.params, cell.seed, tmp_path / str(k))
        except _Stop:
            continue
        except ConfigError as err:
            refused.setdefault(str(err), []).append(cell.arm)
            continue
        pytest.fail(f"{experiment} cell {cell.arm} finished without reaching training: the probe missed it")
    assert not refused, refused


def test_the_cd_plain_arm_records_no_ce_weight():
    cfg = runner.experiment_config(*paper000.ARMS["cd_plain"])
    assert cfg.method.name == "cd_plain" and not cfg.method.ce_weight


def test_train_and_evaluate_refuses_an_inert_key_before_touching_the_directory(tmp_path):
    cfg = runner.experiment_config("paper000_spiral_cdce", ["method.name=cd_plain", "train.steps=1"])
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="method.ce_weight"):
        runner.train_and_evaluate(run_dir, cfg)
    assert not run_dir.exists()


def test_tune_eta_by_training_refuses_an_inert_key(tmp_path):
    cfg = runner.experiment_config("paper002_8gaussians", ["data.path=unread.npy"])
    with pytest.raises(ConfigError, match="data.path"):
        eta_search.tune_eta_by_training(cfg, [0.1], 1)


def test_a_refused_cell_is_reported_by_the_probe(monkeypatch, tmp_path):
    """The probe above can fail: the old ``cd_plain`` arm (without its ``ce_weight`` unset) is refused."""
    monkeypatch.setattr(runner, "Trainer", _stop)
    monkeypatch.setitem(paper000.ARMS, "cd_plain", ("paper000_spiral_cdce", ["method.name=cd_plain"]))
    cell = next(c for c in paper000.build_cells(True, [0]) if c.arm.endswith("cd_plain"))
    with pytest.raises(ConfigError, match="method.ce_weight"):
        cell.fn(cell.params, cell.seed, Path(tmp_path))
