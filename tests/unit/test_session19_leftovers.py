"""The eighteenth session's "seen and left" items that the nineteenth fixed (docs/testing.md "Leftovers of the
eighteenth session"). Tests marked ``# WAS A BUG`` fail at 27bb1aa. The figure flag in papers 000-002's cell keys
(the fourth) is pinned in ``test_session18_round56.py::test_a_cells_key_does_not_depend_on_which_seed_comes_first``,
a strict xfail until this session."""
from __future__ import annotations

from pathlib import Path

import pytest

from ebmlab.errors import CheckpointError, ConfigError, EbmlabError
from ebmlab.experiments import claims
from ebmlab.experiments.claims import Cell
from ebmlab.training import run as run_mod


def _record(step, diverged=None, failed=None):
    return {"step": step, "diverged": diverged, "failed": failed}


# WAS A BUG: cells of one table evaluated at different steps raised a bare RuntimeError (a traceback from the CLI, which
# prints ebmlab's own errors as one sentence) that named the steps but not the cells.
def test_cells_at_different_steps_are_one_sentence_naming_a_cell_per_step():
    recs = {("a", 0): _record(100), ("a", 1): _record(100), ("b", 0): _record(60), ("b", 1): _record(7, diverged="x")}
    with pytest.raises(EbmlabError, match=r"different steps \[60, 100\] \(b seed 0 at 60, a seed 0 at 100\)") as e:
        claims.check_same_step(recs)
    assert isinstance(e.value, RuntimeError)  # the old type is still its base: `except RuntimeError` keeps working
    assert "cells/<arm>/seed<k>" in str(e.value)
    assert claims.check_same_step({k: r for k, r in recs.items() if k[0] == "a"}) == 100  # one step: no error
    assert claims.check_same_step({("b", 1): recs[("b", 1)]}) is None  # nothing evaluated


# WAS A BUG: a checkpoint of another run's data was refused as "the data's SHA-256 differs" also for a run on an image
# folder, whose fingerprint is its listing's hash (names and sizes), not a SHA-256 of the data.
def test_a_checkpoint_of_other_data_names_what_the_fingerprint_is(tmp_path, monkeypatch):
    monkeypatch.setattr(run_mod, "read_run_info", lambda d: {"data": {"listing_sha256": "f" * 64}})
    with pytest.raises(CheckpointError, match="a file's SHA-256 or a folder's listing") as e:
        run_mod.check_checkpoint_data({"data_sha256": "0" * 64}, tmp_path, tmp_path / "ckpt.safetensors")
    assert "trained on other data" in str(e.value)
    run_mod.check_checkpoint_data({"data_sha256": "f" * 64}, tmp_path, tmp_path / "ckpt.safetensors")  # the same: ok


def cell_fn(params: dict, seed: int, run_dir: Path) -> dict:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return {"m": 1.0, "step": 5}


# WAS A BUG: one cell left to run with --jobs 2 was announced as "1 of 2 cells to run, 2 at a time".
def test_one_cell_to_run_is_announced_one_at_a_time(tmp_path, capsys):
    cells = [Cell("a", 0, cell_fn, {"v": 1}), Cell("b", 0, cell_fn, {"v": 2})]
    claims.run_cells(tmp_path, cells, jobs=1)
    assert "2 of 2 cells to run, 1 at a time" in capsys.readouterr().out
    (claims.cell_dir(tmp_path, cells[1]) / "cell.json").unlink()
    records = claims.run_cells(tmp_path, cells, jobs=2)
    assert "1 of 2 cells to run, 1 at a time" in capsys.readouterr().out
    assert records[("b", 0)]["metrics"] == {"m": 1.0} and records[("b", 0)]["failed"] is None


# WAS A BUG (round 57's "seen and left"): a damaged experiment.json (empty after a kill mid-write, which older versions
# could leave, or edited by hand) was refused as "holds the results of experiment None".
@pytest.mark.parametrize("text", ["", "[1]", '{"settings": {}}', '{"experiment": 3}'])
def test_a_damaged_marker_is_named_as_such(tmp_path, text):
    import ebmlab.experiments as ex
    out = tmp_path / "x"
    out.mkdir()
    (out / ex.MARKER).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"holds a damaged experiment\.json .*delete experiment\.json and run again"):
        ex.run_experiment("paper004", out, quick=True, seeds=(0,))
    assert (out / ex.MARKER).read_text(encoding="utf-8") == text  # nothing written
