"""Leftovers of the seventeenth session, mended in the eighteenth (docs/testing.md "Leftovers of the seventeenth
session")."""
from __future__ import annotations

import pytest
import torch

from ebmlab.training import heldout
from tests.unit.test_memory_round44 import _Objective, _vector_data


def _counting_cdist(monkeypatch) -> list[int]:
    """torch.cdist spied: the number of distances of each call (rows of a x rows of b)."""
    sizes, real = [], torch.cdist
    monkeypatch.setattr(torch, "cdist", lambda a, b, *k, **kw: sizes.append(a.shape[0] * b.shape[0]) or real(a, b, *k, **kw))
    return sizes


# WAS A BUG: validation_terms took the n x m sample-to-row distances twice (once for the per-row terms, once inside
# energy_distance for the score), the dearer half of a validation check's distances.
def test_validation_terms_takes_the_sample_to_row_distances_once(monkeypatch):
    data = _vector_data(n_train=400, n_val=300)
    ref = heldout.reference(data, data.val)
    sizes = _counting_cdist(monkeypatch)
    heldout.validation_terms(_Objective(8), data, 50, torch.Generator().manual_seed(0), ref)
    assert sorted(sizes) == [50 * 50, 50 * 300]  # the samples' own distances and the cross term, each once


def test_validation_terms_score_is_the_energy_distance_of_the_same_draw():
    data = _vector_data(n_train=400, n_val=300)
    ref = heldout.reference(data, data.val)
    score, rows = heldout.validation_terms(_Objective(8), data, 50, torch.Generator().manual_seed(1), ref)
    x = _Objective(8).sample(50, generator=torch.Generator().manual_seed(1)).x
    assert score == ref.energy_distance(x)  # bit for bit (round 47 pinned it)
    assert float(rows.mean()) == pytest.approx(2 * float(torch.cdist(ref.z(x), ref.rows).mean()), rel=1e-12)


# WAS A BUG: a folder named metrics.jsonl (made by hand) made run_dir.has_result raise IsADirectoryError; a log that is
# not a file has no rows.
def test_a_folder_named_metrics_jsonl_is_no_log(tmp_path):
    from ebmlab.training.logging import read_metrics
    from ebmlab.training.run_dir import has_result
    from tests.builders import run_with_best

    run_with_best(tmp_path, steps=20, checkpoint_every=10, best_step=5, logged=5)
    assert not has_result(tmp_path)  # a start killed early: its log never reached the last update
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "metrics.jsonl").mkdir()
    assert read_metrics(tmp_path) == []
    assert not has_result(tmp_path)


# WAS A BUG: a process refused because another held the folder was told "(training it or evaluating it)" whatever that
# process did (a compare writing there, an experiment); the lock file now says what its holder is doing.
@pytest.mark.parametrize("doing", ["writing a comparison", "running an experiment", "evaluating"])
def test_a_refusal_names_what_the_holder_is_doing(tmp_path, doing):
    from ebmlab.errors import RunError
    from ebmlab.training.lock import RunLock, holder

    with RunLock.acquire(tmp_path, doing=doing):
        assert holder(tmp_path).endswith(f", {doing}")
        with pytest.raises(RunError) as caught:
            RunLock.acquire(tmp_path)
    assert f", {doing}); wait for it to finish (or train into another --out)" in str(caught.value)
    assert "training it or evaluating it" not in str(caught.value)


def test_eval_and_compare_write_what_they_are_doing_into_the_lock(tmp_path, monkeypatch):
    import ebmlab
    from ebmlab.experiments import compare
    from ebmlab.training import evaluate
    from ebmlab.training.lock import holder
    from tests.builders import two_finished_runs

    a, b = two_finished_runs(tmp_path)
    seen = []
    monkeypatch.setattr(evaluate, "_evaluate_locked", lambda run_dir, *rest: seen.append(holder(run_dir)) or {})
    ebmlab.load(a).evaluate()
    real = compare._write_locked
    monkeypatch.setattr(compare, "_write_locked", lambda r, k, s, out: seen.append(holder(out)) or real(r, k, s, out))
    ebmlab.compare([str(a), str(b)], out=tmp_path / "cmp")
    assert [s.rsplit(", ", 1)[1] for s in seen] == ["evaluating", "writing a comparison"]


def test_the_data_check_of_a_farm_of_file_links_resolves_no_path_per_link(tmp_path, monkeypatch):
    """A data folder built of links to a shared store (common on clusters) is checked with a stat per link, not a
    path resolution in Python per link (62 us each: a minute for a million links; measured at a33f019)."""
    import os

    from ebmlab.training import run_dir as rd

    store, farm, run = tmp_path / "store", tmp_path / "farm" / "cat", tmp_path / "run"
    store.mkdir()
    farm.mkdir(parents=True)
    (run / "samples").mkdir(parents=True)
    (run / "samples" / "grid_final.png").write_bytes(b"g")
    for i in range(50):
        (store / f"{i}.png").write_bytes(b"x")
        os.symlink(store / f"{i}.png", farm / f"{i}.png")
    calls, real = [], os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p, *a, **k: calls.append(p) or real(p, *a, **k))
    rd._check_data_not_written(run, str(farm.parent))
    assert len(calls) < 10, len(calls)  # the run, the data's spellings: not one per link
    os.symlink(run / "samples" / "grid_final.png", farm / "g.png")  # the run's own grid, by device and inode
    from ebmlab.errors import ConfigError
    with pytest.raises(ConfigError, match="which the run writes"):
        rd._check_data_not_written(run, str(farm.parent))
