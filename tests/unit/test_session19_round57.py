"""Round 57 (session 19): an audit of the eighteenth session's last code (27bb1aa): the experiment runner's settings
recorded in ``experiment.json`` and refused on a rerun, cells recorded as they complete, a killed worker in one
sentence, failed cells in the verdicts, and the data checks (``walk_folder``, ``run_dir.holds``/``_written``/
``_file_link_into``, ``run_data.located_path``/``_check_classes``, ``compare_checks``).

Tests marked ``# WAS A BUG`` fail at 27bb1aa and pass since the fixes (docs/testing.md "Fifty-seventh round"); the
others pin what was tried and held. Nothing here trains a model but a
few 2-update image runs; the experiments use round 56's fake experiment on the real harness, or the leaderboard's
own option checks (which raise before any cell trains)."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

import ebmlab.experiments as ex
from ebmlab.errors import ConfigError, ExperimentError
from ebmlab.experiments import claims
from ebmlab.experiments.claims import Cell
from tests.unit import test_session18_round56 as r56
from tests.unit.test_session18_round56 import NAME, fake  # noqa: F401,F811  (the fake experiment's fixture)


def _marker(out: Path) -> dict:
    return json.loads((out / ex.MARKER).read_text(encoding="utf-8"))


# ----- settings recorded in experiment.json ----------------------------------------------------------------------

# WAS A BUG: a command refused before any cell ran (an unknown --methods name, raised inside the experiment's run) still
# records its settings (--budget 60) in experiment.json, so the corrected command without --budget is refused with
# "holds experiment leaderboard's cells run with --budget 60" although the folder holds no cell at all.
def test_a_refused_command_does_not_lock_in_its_settings(tmp_path):
    out = tmp_path / "lb"
    with pytest.raises(ConfigError, match="unknown leaderboard method"):
        ex.run_experiment("leaderboard", out, budget=60, methods="nosuchmethod")
    assert not (out / "cells").exists()  # nothing ran
    # the corrected command (here still with a wrong name, so that nothing trains if it is accepted): it must get as
    # far as the method check, not be refused for the settings of cells that do not exist
    with pytest.raises(ConfigError, match="unknown leaderboard method"):  # observed: "holds ... cells run with --budget 60"
        ex.run_experiment("leaderboard", out, methods="nosuchmethod2")


def _stub_leaderboard(monkeypatch, keys: list):
    """The leaderboard's ``run`` replaced by one that builds its real cells (no training) and records their keys."""
    from ebmlab.experiments import leaderboard as lb

    def run(out, quick=False, seeds=claims.SEEDS, jobs=2, full=False, budget=None, methods=None, datasets=None,
            rescore=False):
        grid = lb.build_cells(quick, full, budget, tuple(seeds), methods, datasets)
        keys.append(sorted((c.arm, c.seed, c.key()) for cells in grid.values() for c in cells))
        record = Path(out) / "cells" / "stub" / "seed0" / "cell.json"  # a finished cell: the settings now guard it
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text("{}", encoding="utf-8")
        return {}
    monkeypatch.setattr(lb, "run", run)


# WAS A BUG: the leaderboard's (and data_defaults') cells depend on the budget they train for, budget or the default (20 s;
# 120 s with --full): `--budget 20` after a default run, or `--budget 120` after `--full`, builds the very same cells
# (the same keys, nothing would be replaced), yet the rerun is refused ("cells run with the default options, which a
# run with --budget 20.0 would replace"). The same settings spelled differently must be accepted.
@pytest.mark.parametrize("first, again", [({}, {"budget": 20}), ({"full": True}, {"budget": 120.0}),
                                          ({"budget": 120}, {"full": True, "budget": 120})])
def test_the_same_leaderboard_budget_spelled_differently_is_accepted(tmp_path, monkeypatch, first, again):
    keys: list = []
    _stub_leaderboard(monkeypatch, keys)
    out = tmp_path / "lb"
    ex.run_experiment("leaderboard", out, methods="hybrid", datasets="rings", seeds=(0,), **first)
    ex.run_experiment("leaderboard", out, methods="hybrid", datasets="rings", seeds=(0,), **again)  # observed: refused
    assert keys[0] == keys[1]


def test_other_budgets_and_quick_are_still_refused(tmp_path, monkeypatch):
    keys: list = []
    _stub_leaderboard(monkeypatch, keys)
    out = tmp_path / "lb"
    ex.run_experiment("leaderboard", out, methods="hybrid", datasets="rings", seeds=(0,))
    for other in ({"budget": 60}, {"full": True}, {"quick": True}):
        with pytest.raises(ConfigError, match="rerun with those options"):
            ex.run_experiment("leaderboard", out, methods="hybrid", datasets="rings", seeds=(0,), **other)
    assert _marker(out)["settings"] == {"quick": False, "budget": 20.0}  # the leaderboard's: the budget it trains


# WAS A BUG: a hand-edited or damaged experiment.json whose "settings" is not an object ("quick", a list) makes a rerun with
# other settings crash with AttributeError ('str' object has no attribute 'items', in experiments._said) instead of
# one sentence.
@pytest.mark.parametrize("damaged", ["quick", ["quick"], 3])
def test_a_damaged_settings_record_is_one_sentence(fake, tmp_path, damaged):  # noqa: F811
    out = tmp_path / "x"
    ex.run_experiment(fake, out, seeds=(0,))
    (out / ex.MARKER).write_text(json.dumps({"experiment": NAME, "settings": damaged}), encoding="utf-8")
    try:
        ex.run_experiment(fake, out, quick=True, seeds=(0,))
    except ConfigError:
        pass  # refused in one sentence: fine
    except Exception as err:  # observed: AttributeError
        pytest.fail(f"a traceback: {type(err).__name__}: {err}")


# WAS A BUG: an experiment directory finished by the version just before (experiment.json {"experiment": NAME}, no
# "settings") is taken over by a --quick rerun: the settings check is skipped when the marker has none, so every full
# cell (and its trained run) is replaced by a quick one, the very loss round 56 closed for new directories. The
# finished cells' records say what they ran with (their keys); a rerun whose cells would replace finished cells of
# other keys should be refused as a settings change is (or the settings taken from results.json where it has them).
def test_quick_into_a_finished_run_from_before_settings_keeps_its_cells(fake, tmp_path):  # noqa: F811
    out = tmp_path / "x"
    ex.run_experiment(fake, out, seeds=(0,))
    (out / ex.MARKER).write_text(json.dumps({"experiment": NAME}) + "\n", encoding="utf-8")  # as 27bb1aa~3 wrote it
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    results["quick"] = False  # as every shipped experiment's results.json records it (the fake's does not)
    (out / "results.json").write_text(json.dumps(results), encoding="utf-8")
    full = r56._record(out, "a", 0)
    try:
        ex.run_experiment(fake, out, quick=True, seeds=(0,))
    except ConfigError:
        pass  # refused: fine
    assert r56._record(out, "a", 0) == full  # observed: replaced by the quick cell (step 5)


def test_jobs_seeds_and_spelling_of_out_do_not_count_as_settings(fake, tmp_path, monkeypatch, capsys):  # noqa: F811
    out = tmp_path / "x"
    ex.run_experiment(fake, out, seeds=(0, 1), jobs=1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(out)
    capsys.readouterr()
    ex.run_experiment(fake, Path("link"), seeds=[1, 0], jobs=2)  # another spelling, order and --jobs: reused
    assert "cells to run" not in capsys.readouterr().out


# ----- a killed worker --------------------------------------------------------------------------------------------

# WAS A BUG: when one cell's worker is killed under --jobs 2, every cell still queued fails with BrokenProcessPool too, and
# the one sentence names them all as running: "a cell's process was killed ... while die seed 0, ok seed 0, ok seed 1,
# ok seed 2, ok seed 3 ran" -- at most 2 cells ran at once; the others never started. The sentence should name the
# cells in flight (or the one killed) and count the rest as not started (cells._finish_as_completed).
def slow_cell(params: dict, seed: int, run_dir: Path) -> dict:
    """A cell that takes a moment (so that it is still running, or queued, when the other worker dies)."""
    import time
    time.sleep(params["sleep"])
    return {"m": 1.0, "step": 1}


def test_a_killed_worker_names_only_the_cells_that_were_running(tmp_path):
    die = Cell("die", 0, r56.cell_fn, {"steps": 5, "value": 1.0, "die": True})
    rest = [Cell("ok", s, slow_cell, {"sleep": 1.5}) for s in range(4)]
    with pytest.raises(ExperimentError) as err:
        claims.run_cells(tmp_path / "x", [die, *rest], jobs=2)
    named = re.findall(r"\b(?:die|ok) seed \d", str(err.value))
    assert "die seed 0" in named
    assert len(named) <= 2, str(err.value)  # observed: all five named as running


# ----- failed cells in the verdicts (held) ------------------------------------------------------------------------

def _table(a_cells, b_cells, a_vals, b_vals):
    row = lambda vals, cells: {"m": {"per_seed": vals, "mean": 0.0, "std": 0.01}, "cells": cells}  # noqa: E731
    return {"a": row(a_vals, a_cells), "b": row(b_vals, b_cells)}


def test_failed_and_missing_cells_decide_nothing_but_divergence_does():
    c = claims.Claim("a beats b", "a", "b", "m", "lower", 0.1)
    t = _table(["done", "failed"], ["done", "done"], [1.0, None], [2.0, 2.0])
    v = claims.decide(c, t)
    assert v["verdict"] == "not shown" and v["mean_diff"] == pytest.approx(1.0)
    t = _table(["done", "done"], ["diverged", "diverged"], [1.0, 1.0], [None, None])
    assert claims.decide(c, t)["verdict"] == "holds"  # a diverged baseline is the worst value
    t = _table(["done", "done"], ["done", "missing"], [1.0, 1.0], [2.0, None])
    assert claims.decide(c, t)["verdict"] == "not shown"
    fixed = claims.Claim("a under 1.5", "a", 1.5, "m", "lower", 0.1)
    assert claims.decide(fixed, _table(["failed", "done"], ["done", "done"], [None, 1.0], [0, 0]))["verdict"] == "not shown"


# WAS A BUG: the same false refusal for paper 002 and 003, whose --quick ignores --full (paper002.grid, paper003.build_cells):
# `--quick --full` after `--quick` builds the same cells but is refused ("cells run with --quick, which a run with
# --quick --full would replace").
def test_paper003_quick_with_full_is_the_same_cells_as_quick(tmp_path, monkeypatch):
    from ebmlab.experiments import paper003
    keys: list = []

    def run(out, quick=False, seeds=claims.SEEDS, jobs=2, full=False):
        keys.append(sorted((c.arm, c.seed, c.key()) for cs in paper003.build_cells(quick, tuple(seeds), full).values()
                           for c in cs))
        record = Path(out) / "cells" / "stub" / "seed0" / "cell.json"  # a finished cell: the settings now guard it
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text("{}", encoding="utf-8")
        return {}
    monkeypatch.setattr(paper003, "run", run)
    out = tmp_path / "p3"
    ex.run_experiment("paper003", out, quick=True, seeds=(0,))
    ex.run_experiment("paper003", out, quick=True, full=True, seeds=(0,))  # observed: refused
    assert keys[0] == keys[1]


# ----- data folders reached through links, relative and absolute (held) -------------------------------------------

def _cli(capsys, *argv):
    from tests.cli_helpers import cli
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cli(capsys, *argv)


def test_a_data_folder_reached_through_a_link_and_relative_paths(tmp_path, capsys, monkeypatch):
    from tests.cli_helpers import sets
    from tests.unit.test_session18_round52 import IMG, _image_folder

    store = _image_folder(tmp_path / "store" / "imgs")
    (tmp_path / "imglink").symlink_to(store)
    (tmp_path / "storelink").symlink_to(tmp_path / "store")
    monkeypatch.chdir(tmp_path)
    for out, data in (("a", "imglink"), ("b", "storelink/imgs")):
        code, _, err = _cli(capsys, "train", "--out", out, "--data", data, "--config", "digits_hybrid", *sets(IMG))
        assert code == 0, err
    assert json.loads(Path("a/run.json").read_text())["data"]["path"] == str(store.resolve())
    assert _cli(capsys, "eval", "a")[0] == 0
    code, _, err = _cli(capsys, "compare", "a", str(tmp_path / "b"), "--out", "cmp")
    assert code == 0, err
    for bad in ("imglink/cmp", "storelink/imgs/cat/cmp", "imglink/../imgs/x"):
        code, _, err = _cli(capsys, "compare", "a", "b", "--out", bad)
        assert code == 2 and "lies in data folder" in err, (bad, err)
    code, _, err = _cli(capsys, "sample", "a", "--out", "imglink/dog/s.npy", "--n", "4")
    assert code == 2 and "would write into the run's data" in err
    code, _, err = _cli(capsys, "train", "--out", "a", "--resume", "--data", str(store), "--config", "digits_hybrid",
                        *sets(IMG, "train.steps=4"))
    assert code == 0, err
    assert sorted(p.name for p in store.iterdir()) == ["cat", "dog"]
