"""Round 47 (read-only audit of rounds 42-46's changes, `git diff 5daec04..HEAD -- src`).

Tests marked `# BUG:` fail on the audited code; the others are checks that held."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch

from ebmlab.config import _has_comment, parse_override
from ebmlab.data import dataset as ds
from ebmlab.data.arrays import check_vectors
from ebmlab.data.base import Affine
from ebmlab.errors import ConfigError
from ebmlab.metrics import baselines
from ebmlab.metrics.distances import energy_distance, self_mean
from ebmlab.training import checkpoint as ckpt
from ebmlab.training import heldout, run, run_dir as rd
from ebmlab.training.config import load_config, save_config
from ebmlab.training.lock import _pid
from tests.builders import run_with_best


class _Ident:
    def to_data(self, x):
        return x


class _Obj:
    def __init__(self, d):
        self.d = d

    def sample(self, n, generator=None):
        return types.SimpleNamespace(x=torch.randn(n, self.d, generator=generator))

    def prior(self, n, generator=None):
        return torch.randn(n, self.d, generator=generator)


def _data(n_train=40, n_val=30, n_test=30, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0, 10.0, 100.0])[:d]
    return types.SimpleNamespace(train=torch.randn(n_train, d, generator=g) * scale,
                                 val=torch.randn(n_val, d, generator=g) * scale,
                                 test=torch.randn(n_test, d, generator=g) * scale, transform=_Ident())


# ----- run directory: a start killed before its config.yaml -------------------------------------------------------

# WAS A BUG: --resume's hint "start it again without --resume (the directory is reused)" is given for any hidden *.tmp file, but a new start reuses only ebmlab's own temp names and refuses this directory.
def test_resume_hint_is_only_given_where_a_new_start_reuses_the_directory(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / ".0123abcd.notes.txt.tmp").write_text("a user's or another tool's temp file")
    with pytest.raises(run.RunNotFound) as info:
        run.resume_config(d, None, None)
    if "start it again without --resume" in str(info.value):
        assert rd._new_run_needs_clearing(d, False) in (True, False)  # must not raise: the advice must work


# WAS A BUG: a folder that a new start does reuse (an older version's leftover `config.yaml.tmp`) gets no hint from --resume, only "not an ebmlab run".
def test_resume_gives_the_hint_wherever_a_new_start_reuses_the_directory(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.yaml.tmp").write_text("x")
    assert rd._new_run_needs_clearing(d, False) is True  # a new start reuses it
    with pytest.raises(run.RunNotFound, match="start it again without --resume"):
        run.resume_config(d, None, None)


def test_only_leftovers_reuses_a_killed_starts_folder(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / ".0123abcd.config.yaml.tmp").write_text("x")
    assert rd._new_run_needs_clearing(d, False) is True
    (d / "notes.txt").write_text("mine")
    with pytest.raises(run.RunError):
        rd._new_run_needs_clearing(d, False)


# WAS A BUG: a finished run with train.steps <= train.checkpoint_every (its only step checkpoint is the last step's) and no metrics.json (evaluate=False) whose step checkpoints were deleted counts as "no result", so a new start in that --out deletes its selected best without --overwrite.
def test_a_finished_runs_best_at_its_last_step_is_a_result(tmp_path):
    d = tmp_path / "run"
    (d / "checkpoints").mkdir(parents=True)
    cfg = load_config(None, ["train.steps=100", "train.checkpoint_every=1000", "train.select_every=50",
                       "data.val_fraction=0.1"])
    save_config(cfg, d / "config.yaml")
    (d / "checkpoints" / "best.safetensors").write_bytes(b"weights")
    (d / "checkpoints" / "best.json").write_text(json.dumps({"step": 100}))
    (d / "metrics.jsonl").write_text(json.dumps({"step": 100}) + "\n")
    assert rd.has_result(d)


# WAS A BUG (the same rule): a finished run whose best came early (at or before its first step checkpoint's step) lost
# it to a new start once its step checkpoints were deleted; a start killed early (its log short of train.steps) did not
def test_a_finished_runs_early_best_is_a_result_and_a_killed_starts_is_not(tmp_path):
    d = tmp_path / "run"
    run_with_best(d, steps=30, checkpoint_every=10, best_step=5, logged=9)
    log = (d / "metrics.jsonl").read_text(encoding="utf-8")
    assert not rd.has_result(d) and rd._new_run_needs_clearing(d, False)  # killed at update 9: start again
    (d / "metrics.jsonl").write_text(log + "".join(json.dumps({"step": k}) + "\n" for k in range(10, 31)))
    assert rd.has_result(d)  # all 30 updates ran: the best is the run's result
    with pytest.raises(run.RunError, match="--overwrite"):
        rd._new_run_needs_clearing(d, False)


def test_best_of_the_start_check_is_not_a_result(tmp_path):
    d = tmp_path / "run"
    (d / "checkpoints").mkdir(parents=True)
    save_config(load_config(None, ["train.steps=100", "train.checkpoint_every=10", "train.select_every=5",
                                   "data.val_fraction=0.1"]),
                d / "config.yaml")
    (d / "checkpoints" / "best.safetensors").write_bytes(b"w")
    (d / "checkpoints" / "best.json").write_text(json.dumps({"step": 0}))
    assert not rd.has_result(d)
    (d / "checkpoints" / "best.json").write_text(json.dumps({"step": 20}))
    assert rd.has_result(d)


# ----- checkpoints: lone halves and temp files ---------------------------------------------------------------------

def _pair(folder, step):
    (folder / f"step_{step:08d}.safetensors").write_bytes(b"t")
    (folder / f"step_{step:08d}.json").write_text("{}")


def test_prune_drops_lone_halves_before_the_oldest_kept_pair_only(tmp_path):
    c = tmp_path / "checkpoints"
    c.mkdir()
    for s in (2, 4, 6):
        _pair(c, s)
    (c / "step_00000001.safetensors").write_bytes(b"lone")
    (c / "step_00000003.json").write_text("{}")
    (c / "step_00000008.safetensors").write_bytes(b"newer lone half: kept")
    (c / "best.safetensors").write_bytes(b"b")
    (c / "step_00000002.rank0.safetensors").write_bytes(b"r")
    ckpt.prune(c, 2)
    assert sorted(p.name for p in c.iterdir()) == sorted([
        "step_00000004.safetensors", "step_00000004.json", "step_00000006.safetensors", "step_00000006.json",
        "step_00000008.safetensors", "best.safetensors", "step_00000002.rank0.safetensors"])


def test_clear_temps_keeps_samples_and_user_files(tmp_path):
    d = tmp_path / "run"
    for sub in ("checkpoints", "samples"):
        (d / sub).mkdir(parents=True)
    gone = [d / ".0123abcd.run.json.tmp", d / "checkpoints" / ".0123abcd.step_00000004.safetensors.tmp",
            d / "checkpoints" / "best.json.tmp"]
    kept = [d / ".0123abcd.mine.tmp", d / "samples" / ".0123abcd.samples.npy.tmp", d / "checkpoints" / "x.tmp"]
    for p in gone + kept:
        p.write_text("x")
    rd._clear_temps(d)
    assert [p.exists() for p in gone] == [False] * 3 and all(p.exists() for p in kept)


# ----- data statistics: blocks, thresholds, bit-for-bit on small data -----------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_standardiser_unchanged_bit_for_bit_on_small_data(dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(37, 4, generator=g, dtype=dtype) * torch.tensor([1, 1e3, 1e-3, 5.0], dtype=dtype) + 7
    x64 = x.double()
    mean, std = x64.mean(0), ds.column_scale(x64.std(0), ds.CONSTANT_SCALE)
    tf = ds._standardiser(x, True, whiten=True)
    assert torch.equal(tf.shift, mean.to(dtype)) and torch.equal(tf.scale, std.to(dtype))
    cov = torch.cov(((x64 - mean) / std).T)
    assert torch.equal(ds._covariance(x, mean, std), cov)
    w, w_inv = ds._zca(cov)
    assert torch.equal(tf.matrix, w) and torch.equal(tf.inverse, w_inv)


def test_column_stats_blocks_agree_and_the_boundary_is_one_piece(monkeypatch):
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(103, 3, generator=g) * 5 + 1e4).float()
    m0, s0 = ds.column_stats(x)
    c0 = ds._covariance(x, m0, s0)
    monkeypatch.setattr(ds, "STATS_BLOCK", 103 * 3)
    assert ds._row_blocks(x) is None  # exactly at the threshold: one piece
    monkeypatch.setattr(ds, "STATS_BLOCK", 103 * 3 - 1)
    assert len(ds._row_blocks(x)) == 2
    monkeypatch.setattr(ds, "STATS_BLOCK", 30)
    m1, s1 = ds.column_stats(x)
    assert torch.allclose(m0, m1, rtol=0, atol=1e-9) and torch.allclose(s0, s1, rtol=1e-12)
    assert torch.allclose(ds._covariance(x, m0, s0), c0, atol=1e-12)
    m2, s2 = ds.column_stats(x, lambda r: 2 * r)
    assert torch.allclose(m2, 2 * m0) and torch.allclose(s2, 2 * s0)


def test_check_vectors_range_uses_both_ends():
    big = np.array([[1.0, -3.5e38], [0.0, 1.0]] + [[0.0, 0.0]] * 20)
    with pytest.raises(Exception, match="float32 range"):
        check_vectors(big, "x")
    check_vectors(np.array([[1.0, -3.0e38], [0.0, 1.0]] + [[0.0, 0.0]] * 20), "x")


def test_affine_to_model_is_unchanged_and_keeps_gradients():
    tf = Affine(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 4.0]))
    x = torch.tensor([[3.0, 2.0]], requires_grad=True)
    z = tf.to_model(x)
    z.sum().backward()
    assert torch.equal(z.detach(), torch.tensor([[1.0, 1.0]])) and torch.equal(x.grad, torch.tensor([[0.5, 0.25]]))


# ----- distances and held-out / validation scores -------------------------------------------------------------------

def test_energy_distance_with_y_self_is_bit_identical():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(50, 3, generator=g), torch.randn(70, 3, generator=g)
    for unbiased in (False, True):
        assert energy_distance(x, y, unbiased) == energy_distance(x, y, unbiased, y_self=self_mean(y, unbiased))


def test_heldout_and_validation_scores_unchanged_bit_for_bit():
    data = _data()
    z = heldout.zscorer(data)
    obj = _Obj(3)
    x = obj.sample(100, torch.Generator().manual_seed(1)).x
    old = energy_distance(z(x), z(data.val), unbiased=True)
    assert heldout.validation_score(obj, data, 100, torch.Generator().manual_seed(1)) == old
    score, rows = heldout.validation_terms(obj, data, 100, torch.Generator().manual_seed(1))
    assert score == old
    assert torch.equal(rows, 2 * torch.cdist(z(x), z(data.val)).mean(0))
    h = heldout.heldout_energy_distance(obj, data, 100, torch.Generator().manual_seed(1), samples=x)
    assert h["sample_energy_distance_heldout"] == energy_distance(z(x), z(data.test), unbiased=True)


def test_validation_rows_are_capped_at_exactly_validation_rows(monkeypatch):
    monkeypatch.setattr(heldout, "VALIDATION_ROWS", 20)
    data = _data(n_val=21)
    ref = heldout.reference(data, data.val, heldout.VALIDATION_ROWS)
    assert ref.rows.shape[0] == 20
    ref_all = heldout.reference(data, data.val[:20])
    assert torch.equal(ref.rows, ref_all.rows) and torch.equal(ref.self_term, ref_all.self_term)


# ----- baselines ----------------------------------------------------------------------------------------------------

def test_subsample_at_and_past_the_cap():
    x = np.arange(10.0).reshape(5, 2)
    assert baselines._subsample(x, 5, 0) is x
    sub = baselines._subsample(x, 4, 0)
    assert sub.shape == (4, 2) and len({tuple(r) for r in sub}) == 4


# ----- config, lock -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, comment", [("a #b", True), ("'a #b'", False), ('"a #b"', False),
                                            ("o'brien #2", True), ("a#b", False), ("'it''s #1'", False),
                                            ("[a, '#b']", False), ("'a' #b", True)])
def test_has_comment(value, comment):
    assert _has_comment(value) is comment
    if comment:
        with pytest.raises(ConfigError):
            parse_override("data.path=" + value)


def test_lock_pid_refuses_bools_and_strings():
    assert _pid({"pid": True}) is None and _pid({"pid": "12"}) is None and _pid({"pid": 12}) == 12


# WAS A BUG: a margin run started before VALIDATION_ROWS (its select_start.json holds the start's terms on all m > 5000 validation rows) crashes at its first check after --resume: rows (5000,) - start_rows (m,) size mismatch.
def test_resume_of_a_margin_run_scored_on_more_than_validation_rows(tmp_path, monkeypatch):
    from ebmlab.training import selection

    monkeypatch.setattr(heldout, "VALIDATION_ROWS", 20)
    monkeypatch.setattr(selection, "VALIDATION_ROWS", 20)
    data = _data(n_val=25)
    z = heldout.zscorer(data)
    start = _Obj(3).sample(100, torch.Generator().manual_seed(5)).x
    old_rows = 2 * torch.cdist(z(start), z(data.val)).mean(0)  # what the start's check wrote before the cap: (25,)
    (tmp_path / selection.START_FILE).write_text(json.dumps({"score": 0.5, "rows": old_rows.tolist()}))
    sel = selection.Selector(10, tmp_path, 0, n=100, margin=1.0)
    sel.resume(10)  # reads select_start.json
    score, sel._rows = heldout.validation_terms(_Obj(3), data, 100, torch.Generator().manual_seed(6),
                                                heldout.reference(data, data.val, heldout.VALIDATION_ROWS))
    assert isinstance(sel._clears_start(score), bool)
