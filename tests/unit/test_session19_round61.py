"""Round 61: a read-only audit of the nineteenth session's code (27bb1aa..ac3e61d): the experiment settings guard,
the started-cells queue, every seed's figures, Pixels' tuple indexing, the OOD partners and the scale-shift
initializer. Each ``# WAS A BUG:`` test fails at ac3e61d; the others pin what was checked and held."""
from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
import torch

import ebmlab.experiments as ex
from ebmlab.errors import ConfigError, ExperimentError
from ebmlab.experiments import cells as cells_mod
from ebmlab.experiments import claims, leaderboard as lb


def _cell_record(out, arm="a", seed=0):
    d = out / "cells" / arm / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "cell.json").write_text("{}", encoding="utf-8")


# ----- the started-cells queue ---------------------------------------------------------------------------------

# WAS A BUG: the SimpleQueue of started cells was read only when the pool broke; every cell a worker begins writes to
# its pipe, so after about 64 KiB of (arm, seed) messages (~1,500 cells of usual names: the leaderboard with --seeds
# 0..19, data_defaults with ~30 --data-seeds, or a --rescore of such a grid) the next worker blocked in put() before
# its cell and the experiment hung for ever. Now the parent drains it as each cell finishes. (The audit's first test
# called ``_do`` 3,000 times with no reader at all, which no run does; this one runs the cells end to end, in a
# process of its own so that a hang is a timeout, not a stuck suite.)
def test_many_cells_with_two_jobs_finish(tmp_path):
    import os
    import subprocess
    import sys
    script = ("import sys; from pathlib import Path; from ebmlab.experiments.cells import Cell, run_cells; "
              "from tests.unit.test_session19_leftovers import cell_fn; "
              "arm = 'a_dataset_name/a_method_name_of_a_usual_length_' + 'x' * 40; "
              "r = run_cells(Path(sys.argv[1]), [Cell(arm, s, cell_fn, {}) for s in range(900)], jobs=2); "
              "print(sum(v['failed'] is None for v in r.values()))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x")], capture_output=True, text=True,
                              env=env, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("900 cells with --jobs 2 did not finish in 180 s: a worker blocked on the started-cells queue?")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "900"


def test_a_broken_pool_names_the_begun_cells_and_counts_the_queued(tmp_path):
    q = multiprocessing.get_context("spawn").SimpleQueue()
    c1, c2, c3 = (cells_mod.Cell("arm", s, lambda p, s, d: {}) for s in (0, 1, 2))
    q.put(("arm", 1))
    futures = {}
    for c in (c1, c2, c3):
        f = Future()
        f.set_exception(BrokenProcessPool("killed"))
        futures[f] = c
    with pytest.raises(ExperimentError) as err:
        cells_mod._finish_as_completed(tmp_path, futures, q)
    assert "while arm seed 1 ran (2 queued cells did not start)" in str(err.value)


# ----- the settings guard ---------------------------------------------------------------------------------------

# WAS A BUG: a directory from before markers (results.json of this experiment, cells, no experiment.json) is taken without
# any settings check, so `--quick` into a full run's directory retrains its cells over the full ones (__init__.py:143,
# the `elif` branch skips _settings_before, which would read results.json's quick/full/budget_seconds).
def test_a_directory_from_before_markers_is_guarded_by_its_results_json(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"experiment": "leaderboard", "quick": False, "full": False,
                                                  "budget_seconds": 20.0}), encoding="utf-8")
    _cell_record(out)
    with pytest.raises(ConfigError, match="would replace"):
        ex._claim_out(out, "leaderboard", lb.settings(True), lb.settings)


def test_a_marker_written_by_the_older_version_reads_through_the_experiments_rule(tmp_path):
    out = tmp_path / "lb"
    out.mkdir()
    # 27bb1aa's marker: the raw options of `--full`
    (out / ex.MARKER).write_text(json.dumps({"experiment": "leaderboard", "settings": {
        "quick": False, "full": True, "budget": None}}), encoding="utf-8")
    _cell_record(out)
    ex._claim_out(out, "leaderboard", lb.settings(False, True, None), lb.settings)  # the same command: reused
    ex._claim_out(out, "leaderboard", lb.settings(False, False, 120), lb.settings)  # --budget 120: the same cells
    with pytest.raises(ConfigError, match="would replace"):
        ex._claim_out(out, "leaderboard", lb.settings(False, False, None), lb.settings)  # the default 20 s
    p2 = tmp_path / "p2"
    p2.mkdir()
    (p2 / ex.MARKER).write_text(json.dumps({"experiment": "paper002", "settings": {
        "quick": True, "full": True, "budget": None}}), encoding="utf-8")
    _cell_record(p2)
    ex._claim_out(p2, "paper002", claims.quick_or_full(True, False, None), claims.quick_or_full)
    held = json.loads((p2 / ex.MARKER).read_text(encoding="utf-8"))
    assert held == {"experiment": "paper002", "settings": {"quick": True, "full": False}}


def test_default_budgets_keep_the_keys_of_finished_cells():
    # 27bb1aa's keys held the module constants (floats) as text: today's default must build the same text
    assert lb.budget_for(False, False, None) == 20.0 and str(lb.budget_for(False, False, None)) == str(lb.BUDGET)
    assert str(lb.budget_for(False, True, None)) == "120.0" and str(lb.budget_for(True, False, None)) == "1.0"


@pytest.mark.parametrize("text", ["", "[]", "{}", '{"experiment": 3}', "null"])
def test_a_damaged_marker_is_one_sentence(tmp_path, text):
    out = tmp_path / "d"
    out.mkdir()
    (out / ex.MARKER).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="damaged experiment.json"):
        ex._claim_out(out, "paper000", ex.raw_settings(False))


def test_a_refused_command_does_not_bind_a_directory_without_cells(tmp_path):
    out = tmp_path / "r"
    ex._claim_out(out, "leaderboard", lb.settings(False, False, 60), lb.settings)
    ex._claim_out(out, "leaderboard", lb.settings(True), lb.settings)  # no cell.json yet: accepted
    assert json.loads((out / ex.MARKER).read_text(encoding="utf-8"))["settings"] == {"quick": True, "budget": 1.0}


# ----- paper 003's initializer and its cached cells ------------------------------------------------------------

# WAS A BUG: paper 003's digits cell (an image run, UNet initializer) has the same key as before the scale-shift change and
# no fingerprint, so a rerun of `ebmlab experiment paper003` into a directory of yesterday reuses the cell trained with
# the initializer that ignored its condition and reports its numbers (paper003.py:251; the README says such runs must
# be retrained, but the experiment cache never notices). Expected: the old record is not taken as current.
def test_a_paper003_digits_cell_of_the_old_initializer_is_not_reused(tmp_path):
    from ebmlab.experiments import paper003
    cell = next(c for cs in paper003.build_cells(True, (0,)).values() for c in cs if c.arm == "digits")
    d = cells_mod.cell_dir(tmp_path, cell)
    d.mkdir(parents=True)
    # the record 27bb1aa wrote for this cell (its key did not change with the network)
    (d / "cell.json").write_text(json.dumps({"key": cell.key(), "arm": cell.arm, "seed": 0, "metrics": {},
                                             "failed": None, "diverged": None, "wall_seconds": 1.0}), encoding="utf-8")
    assert cells_mod._cached(tmp_path, cell) is None


def test_the_scale_shift_block_uses_its_condition_with_one_channel_per_group():
    from ebmlab.energies.initializer import UNetInitializer, build_initializer
    torch.manual_seed(0)
    net = UNetInitializer(1, 3, (8, 8))
    for p in net.out.parameters():  # the output conv starts at zero; give it weights to see the blocks
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 1, 8, 8)
    a, b = net(x, torch.zeros(2, 3)), net(x, torch.ones(2, 3))
    assert not torch.allclose(a, b)
    assert net.down[0][0].cond.out_features == 16
    names = [n for n, _ in net.named_parameters()]
    assert all(n.count(".cond.") <= 1 for n in names)
    mlp = build_initializer((2,), 3, width=16, depth=2)  # paper 003's vector path: unchanged
    assert mlp(torch.randn(4, 2), torch.randn(4, 3)).shape == (4, 2)


# ----- the OOD partners and Pixels ------------------------------------------------------------------------------

@pytest.mark.parametrize("m", [0, 1, 2, 3, 5, 17])
def test_partners_without_labels_are_a_derangement_and_a_permutation(m):
    from ebmlab.data.image_ood import _partners

    class Like:
        test = torch.zeros(m, 1, 2, 2)
        test_labels = None
    for seed in range(5):
        p = _partners(Like, torch.Generator().manual_seed(seed))
        assert sorted(p.tolist()) == list(range(m))
        if m >= 2:
            assert all(int(p[i]) != i for i in range(m))


def test_partners_with_labels_are_of_another_class():
    from ebmlab.data.image_ood import _partners

    class Like:
        test = torch.zeros(6, 1, 2, 2)
        test_labels = torch.tensor([0, 0, 1, 1, 2, 0])
    p = _partners(Like, torch.Generator().manual_seed(1))
    assert all(int(Like.test_labels[p[i]]) != int(Like.test_labels[i]) for i in range(6))


@pytest.mark.parametrize("mirrored", [False, True])
def test_pixels_tuple_indices_read_as_the_dense_split(mirrored):
    from ebmlab.data.pixels import Pixels
    codes = torch.randint(0, 256, (5, 2, 3, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    p = Pixels(codes, mirrored)
    dense = p[:]
    n = len(p)
    firsts = [-1, np.int64(2), torch.tensor(3), [-1, 0], [[0, 1], [2, -1]], np.array([1, 3]), np.array([[1], [3]]),
              [], torch.zeros(2, 0, dtype=torch.long), torch.arange(n) % 2 == 0, [i % 2 == 0 for i in range(n)],
              np.arange(n) % 3 == 0, slice(1, None, 2), slice(-3, None), torch.tensor([1, 2], dtype=torch.int32)]
    rests = [(0,), (slice(None),), (Ellipsis, -1), (None,), (-1, slice(None), 2), (torch.tensor([0, 1]),),
             (slice(None), torch.tensor([0, 2]), torch.tensor([1, 3])), ([1, 0],)]
    for f in firsts:
        for rest in rests:
            try:
                want = dense[(f, *rest)]
            except IndexError:  # the dense split refuses it: so does Pixels
                with pytest.raises((IndexError, RuntimeError)):
                    p[(f, *rest)]
                continue
            got = p[(f, *rest)]
            assert got.shape == want.shape and torch.equal(got, want), (f, rest)


def test_check_same_step_is_one_sentence_naming_a_cell_per_step():
    rec = lambda step: {"step": step, "diverged": None, "failed": None}  # noqa: E731
    assert claims.check_same_step({("a", 0): rec(5), ("b", 0): rec(5)}) == 5
    assert claims.check_same_step({("a", 0): {"step": 3, "diverged": "nan", "failed": None}}) is None
    with pytest.raises(ExperimentError, match=r"a seed 0 at 5, b seed 1 at 7"):
        claims.check_same_step({("a", 0): rec(5), ("b", 1): rec(7)})


# WAS A BUG: _claim_out writes experiment.json before run_experiment takes the directory's lock, and since today the
# recorded settings guard only a directory holding a cell.json; so while a first experiment runs (lock held, no cell
# finished yet), a second command with other options, refused by the lock, still overwrites the marker with ITS
# settings. Afterwards the first command's own rerun is refused ("cells run with quick ...") and the second's options
# are accepted and retrain every cell (__init__.py:48-50 with 150-152). At 27bb1aa the settings check refused the
# second command before it wrote. Expected: a command refused by the lock leaves the marker as it was.
def test_a_command_refused_by_the_lock_does_not_rewrite_the_running_experiments_marker(tmp_path):
    from ebmlab.training.lock import RunLock
    out = tmp_path / "lb"
    ex._claim_out(out, "leaderboard", lb.settings(False, False, None), lb.settings)  # the first command (20 s)
    before = (out / ex.MARKER).read_text(encoding="utf-8")
    lock = RunLock.acquire(out, doing="running an experiment")  # ... now training its first cells
    try:
        with pytest.raises(Exception):  # (RunError at ac3e61d, ConfigError at 27bb1aa)
            ex.run_experiment("leaderboard", out, quick=True)
    finally:
        lock.release()
    assert (out / ex.MARKER).read_text(encoding="utf-8") == before


def _toy_cell_fn(params, seed, run_dir):
    return {"step": 1, "diverged": None, "loss": float(seed)}


def test_jobs_one_runs_in_process_without_a_queue_and_says_one_at_a_time(tmp_path, capsys):
    cs = [cells_mod.Cell("toy", s, _toy_cell_fn, {"x": 1}) for s in (0, 1)]
    records = cells_mod.run_cells(tmp_path, cs, jobs=1)
    assert "2 of 2 cells to run, 1 at a time" in capsys.readouterr().out
    assert cells_mod._STARTED is None and records[("toy", 1)]["metrics"]["loss"] == 1.0


# WAS A BUG: a 0-d NumPy integer array first in a tuple (np.array(2), np.asarray(i), a 0-d slice of an index array) is not
# `_scalar`, so the new code takes lead = () and `rows.flatten(0, -1)` flattens the one (C, H, W) image to a vector:
# p[np.array(2), ..., 0] gave the dense split's (C, H) at 27bb1aa and is an IndexError now; p[np.array(2), 0] was
# already wrong (C, W) and is an IndexError too (pixels.py:108-113; fix: `_scalar` accepts a 0-d integer ndarray, or
# treat lead == () as one image).
@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("rest", [(Ellipsis, 0), (0,), (slice(None), 1)])
def test_pixels_a_zero_d_numpy_index_reads_one_image(mirrored, rest):
    from ebmlab.data.pixels import Pixels
    codes = torch.randint(0, 256, (5, 2, 3, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    p = Pixels(codes, mirrored)
    for i in (np.array(2), np.array(-1)):
        want = p[:][(i, *rest)]
        got = p[(i, *rest)]
        assert got.shape == want.shape and torch.equal(got, want)


# The same for the leaderboard (fixed with the above): its cells' fingerprint is the resolved config's hash, which no
# network design enters, so its cdrl cells on digits (a UNet initializer) trained before the scale-shift blocks were
# reused. Now their fingerprint carries the blocks' design; every other cell's is the config hash as before (their
# finished records stay current).
def test_the_leaderboard_tags_only_its_unet_initializer_cells_with_the_blocks_design():
    from ebmlab.energies.initializer import BLOCKS
    from ebmlab.experiments.runner import experiment_config
    grid = lb.build_cells(True, False, None, (0,), ("cdrl", "drl", "hybrid"), ("digits", "rings"))
    for cell in (c for cells in grid.values() for c in cells):
        plain = experiment_config(cell.params.get("config"), [*cell.params["overrides"], "train.seed=0"],
                                  threads=1).hash()
        tagged = cell.arm == "digits/cdrl"
        assert cell.fingerprint(cell.params, 0) == plain + (f"+{BLOCKS}" if tagged else ""), cell.arm
