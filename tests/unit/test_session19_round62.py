"""Round 62: a read-only audit of rounds 60-61 (ac3e61d..f0e58b4): ``run_experiment``'s claim / lock / unclaim of
``--out``, the started-cells queue drained as cells finish, a vector run's ``samples.npy`` without plots, 0-d NumPy
indices of ``Pixels`` and the initializer's blocks fingerprint. Each ``# WAS A BUG:`` test fails at f0e58b4; the others pin
what was checked and held."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import ebmlab
import ebmlab.experiments as ex
from ebmlab.errors import ConfigError
from ebmlab.experiments import cells as cells_mod
from ebmlab.experiments import leaderboard as lb


# ----- a stand-in experiment (run_experiment's own logic, no training) -----------------------------------------

@pytest.fixture
def fake(monkeypatch):
    """Experiment ``fake`` (and ``fake2``, another name on the same module) whose ``run`` does what ``fake.do`` says."""
    mod = types.ModuleType("ebmlab_round62_fake")
    mod.do = "ok"

    def run(out, quick=False, seeds=(0,), jobs=1, methods=None):
        if mod.do == "refuse":
            raise ConfigError("unknown method 'bogus'")
        if mod.do == "interrupt":
            raise KeyboardInterrupt
        if mod.do == "interrupt_in_first_cell":  # a cell's run directory made, then Ctrl-C
            (out / "cells" / "a" / "seed0").mkdir(parents=True)
            raise KeyboardInterrupt
        if mod.do == "results_then_raise":
            (out / "results.json").write_text(json.dumps({"experiment": "fake"}), encoding="utf-8")
            raise RuntimeError("figure failed")
        (out / "results.json").write_text(json.dumps({"experiment": "fake", "quick": quick}), encoding="utf-8")
        return {"experiment": "fake"}

    mod.run = run
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(ex.EXPERIMENTS, "fake", mod.__name__)
    monkeypatch.setitem(ex.EXPERIMENTS, "fake2", mod.__name__)
    return mod


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ----- findings --------------------------------------------------------------------------------------------------

# WAS A BUG: --rescore of a leaderboard whose digits/cdrl cell was recorded before the blocks fingerprint says the cell "has not run" and to "give the options they ran with"; it ran, the library changed (cells.py:80)
def test_rescore_of_a_digits_cdrl_cell_of_the_earlier_fingerprint_says_it_is_stale(tmp_path):
    cell = next(c for cs in lb.build_cells(False, False, None, (0,), methods=("cdrl",), datasets=("digits",)).values()
                for c in cs if c.arm == "digits/cdrl")
    now = cell.fingerprint(cell.params, cell.seed)
    assert now.endswith("+scale-shift")
    d = cells_mod.cell_dir(tmp_path, cell)
    d.mkdir(parents=True)
    # the record ac3e61d wrote for this cell: same key, the config hash alone as its fingerprint
    (d / "cell.json").write_text(json.dumps({"arm": cell.arm, "seed": 0, "key": cell.key(), "params": cell.params,
                                             "fingerprint": now.split("+")[0], "step": 10, "diverged": None,
                                             "failed": None, "metrics": {"x": 1.0}}), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        cells_mod.run_cells(tmp_path, [cell], jobs=1, rescore=True)
    msg = str(err.value)
    assert "have not run" not in msg, f"a cell that ran (stale fingerprint) is said not to have run: {msg}"
    assert any(w in msg for w in ("stale", "earlier", "older", "changed", "retrain")), msg


# WAS A BUG: an experiment refused for its own options (--methods bogus) into an --out that did not exist leaves that directory (and the parents it made) behind, empty: "refused before anything is written" (experiments/__init__.py:52)
def test_a_refused_experiment_into_a_new_out_leaves_no_directory(tmp_path):
    out = tmp_path / "new" / "exp"
    with pytest.raises(ConfigError, match="bogus"):
        ebmlab.experiment("leaderboard", out=out, quick=True, methods=("bogus",))
    assert not out.exists(), f"the refused command left {sorted(p.name for p in out.iterdir())} at a new --out"
    assert not (tmp_path / "new").exists(), "the refused command left the parent directory it made"


# WAS A BUG: a directory holding only a stale run.lock (a killed process's) is not "fresh" (experiments/__init__.py:51 counts run.lock, which _claim_out and _unclaim ignore), so a refused command leaves its marker and the next experiment there is refused "holds the results of experiment 'leaderboard'" (it holds none)
def test_a_refused_experiment_into_a_directory_with_only_a_stale_lock_leaves_it_unclaimed(tmp_path):
    import socket
    out = tmp_path / "exp"
    out.mkdir()
    (out / "run.lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "doing": "training"}),
                                  encoding="utf-8")
    with pytest.raises(ConfigError, match="bogus"):
        ebmlab.experiment("leaderboard", out=out, quick=True, methods=("bogus",))
    assert not (out / ex.MARKER).exists(), "the refused command claimed a directory that held only a stale lock"
    ex._claim_out(out, "paper004", write=False)  # another experiment there is accepted


# WAS A BUG: Pixels[np.array(True)] / Pixels[torch.tensor(True), 0] raise "a mask of shape () does not index N images" where the dense split (tensor and NumPy) takes a 0-d bool as a new axis (pixels.py:106,114 test only Python's bool); pre-existing, next to round 61's 0-d integer fix
@pytest.mark.parametrize("idx", [np.array(True), torch.tensor(True), torch.tensor(False), (np.array(True), 0),
                                 (torch.tensor(True), 0)], ids=repr)
def test_pixels_a_zero_d_bool_index_reads_as_the_dense_split(idx):
    from ebmlab.data.pixels import Pixels
    p = Pixels(torch.randint(0, 256, (5, 1, 3, 3), dtype=torch.uint8))
    assert torch.equal(p[idx], p[:][idx])


# ----- held: run_experiment's claim, lock and unclaim -----------------------------------------------------------

def test_a_users_folder_is_refused_before_anything_is_written_and_without_a_lock(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds other files"):
        ebmlab.experiment("leaderboard", out=out, quick=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # no experiment.json, no run.lock


def test_a_folder_with_another_experiments_results_json_is_refused_without_a_lock(tmp_path, fake):
    out = tmp_path / "other"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"experiment": "leaderboard"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="holds other files"):
        ex.run_experiment("fake", out)
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_an_out_under_a_file_is_one_sentence_on_the_command_line(tmp_path, capsys):
    from ebmlab.cli import main
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    assert main(["experiment", "leaderboard", "--quick", "--out", str(tmp_path / "afile" / "sub")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "afile" in err
    assert main(["experiment", "leaderboard", "--quick", "--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_a_refused_command_unclaims_a_fresh_out_and_another_experiment_is_accepted(tmp_path, fake):
    fake.do = "refuse"
    with pytest.raises(ConfigError):
        ex.run_experiment("fake", tmp_path / "o")
    assert not (tmp_path / "o").exists()  # no marker, no run.lock, and the folder it made is gone (finding 2)
    fake.do = "ok"
    assert ex.run_experiment("fake2", tmp_path / "o") == {"experiment": "fake"}


def test_ctrl_c_before_anything_is_written_unclaims_and_in_the_first_cell_keeps_the_marker(tmp_path, fake):
    fake.do = "interrupt"
    with pytest.raises(KeyboardInterrupt):
        ex.run_experiment("fake", tmp_path / "a")
    assert not (tmp_path / "a").exists()
    fake.do = "interrupt_in_first_cell"
    with pytest.raises(KeyboardInterrupt):
        ex.run_experiment("fake", tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["cells", ex.MARKER]


def test_an_experiment_that_wrote_results_and_then_raised_keeps_its_marker(tmp_path, fake):
    fake.do = "results_then_raise"
    with pytest.raises(RuntimeError):
        ex.run_experiment("fake", tmp_path / "o")
    assert json.loads((tmp_path / "o" / ex.MARKER).read_text(encoding="utf-8"))["experiment"] == "fake"
    assert not (tmp_path / "o" / "run.lock").exists()


def test_a_marker_only_directory_of_an_earlier_refused_run_keeps_its_marker(tmp_path, fake):
    out = tmp_path / "o"
    out.mkdir()
    (out / ex.MARKER).write_text(json.dumps({"experiment": "fake"}), encoding="utf-8")  # an older version's leftover
    fake.do = "refuse"
    with pytest.raises(ConfigError):
        ex.run_experiment("fake", out, quick=True)
    assert (out / ex.MARKER).is_file()  # not fresh: not removed (it was there before this command)


def test_a_relative_out_is_claimed_in_the_working_directory(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake.do = "refuse"
    with pytest.raises(ConfigError):
        ebmlab.experiment("fake", out="rel")
    fake.do = "ok"
    ebmlab.experiment("fake", out="rel", quick=True)
    assert json.loads((tmp_path / "rel" / ex.MARKER).read_text(encoding="utf-8"))["settings"]["quick"] is True
    assert (tmp_path / "rel" / "results.json").is_file()


@pytest.mark.parametrize("quick", [False, True])
def test_a_data_defaults_directory_from_before_markers_takes_its_own_settings(tmp_path, monkeypatch, quick):
    from ebmlab.experiments import data_defaults as dd

    def run(out, quick=False, seeds=(0,), jobs=2, full=False, budget=None, methods=None, datasets=None,
            data_seeds=None, auroc_margin=None):
        return {"ran": True}
    monkeypatch.setattr(dd, "run", run)
    out = tmp_path / "dd"
    (out / "cells" / "wine" / "default" / "seed0").mkdir(parents=True)
    (out / "cells" / "wine" / "default" / "seed0" / "cell.json").write_text("{}", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"experiment": "data_defaults", "quick": quick,
                                                  "budget_seconds": lb.budget_for(quick, False, None)}))
    assert ex.run_experiment("data_defaults", out, quick=quick) == {"ran": True}  # the same cells: accepted
    with pytest.raises(ConfigError, match="would replace"):
        ex.run_experiment("data_defaults", out, quick=not quick)


# ----- held: the started-cells queue, the fingerprints -------------------------------------------------------------

def test_drain_moves_every_started_pair_and_takes_no_queue():
    import multiprocessing
    q = multiprocessing.get_context("spawn").SimpleQueue()
    for s in range(50):
        q.put(("arm", s))
    began = set()
    cells_mod._drain(q, began)
    assert began == {("arm", s) for s in range(50)} and q.empty()
    cells_mod._drain(None, began)  # serial: no queue


def test_data_defaults_and_non_cooperative_digits_cells_keep_their_config_hash_fingerprint():
    from ebmlab.experiments import data_defaults as dd
    grid = dd.build_cells(dd.DATASETS, ("default",), (0,), lb.budget_for(False, False, None), False)
    prints = [c.fingerprint(c.params, c.seed) for cs in grid.values() for c in cs if c.fingerprint]
    assert prints and not any("+" in f for f in prints)
    tagged = [c.arm for cs in lb.build_cells(False, False, None, (0,), datasets=("digits",)).values() for c in cs
              if c.fingerprint and "+" in c.fingerprint(c.params, c.seed)]
    assert tagged == ["digits/cdrl"]  # drl (no initializer), baselines and every other method: the hash alone


# ----- held: samples.npy and the closing summary --------------------------------------------------------------------

def test_report_names_plots_only_when_the_folder_exists(tmp_path, capsys):
    from ebmlab.cli_commands import _report
    _report(tmp_path, {"x": 1.0})
    assert "plots:" not in capsys.readouterr().out
    (tmp_path / "plots").mkdir()
    _report(tmp_path, {"x": 1.0})
    assert f"plots:   {tmp_path / 'plots'}" in capsys.readouterr().out


def test_ebmlab_eval_of_a_vector_run_without_plots_writes_its_samples(tmp_path, capsys):
    from ebmlab.cli import main
    out = tmp_path / "run"
    ebmlab.train("hybrid", "8gaussians", out=out, train={"steps": 2, "progress": False, "threads": 1},
                 eval={"plots": False, "n_samples": 50, "long_run_factor": 1, "grid_size": 20})
    (out / "samples" / "samples.npy").unlink()
    assert main(["eval", str(out)]) == 0
    assert np.load(out / "samples" / "samples.npy").shape == (50, 2)
    assert not (out / "plots").exists() and "plots:" not in capsys.readouterr().out


@pytest.mark.parametrize("idx", [np.array(3), np.array(-1), np.array(2, dtype=np.uint8), np.int64(1)], ids=repr)
def test_pixels_zero_d_numpy_integers_read_one_image(idx):
    from ebmlab.data.pixels import Pixels
    p = Pixels(torch.randint(0, 256, (5, 1, 3, 3), dtype=torch.uint8), mirrored=True)
    assert torch.equal(p[idx], torch.from_numpy(p[:].numpy()[idx]))  # as NumPy's own indexing takes it
    with pytest.raises(IndexError):
        p[np.array(10)]
