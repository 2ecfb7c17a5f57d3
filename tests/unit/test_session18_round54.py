"""Round 54: a read-only audit of f04d4cf and f9486ce (``run_data._check_classes``, ``listing_version`` /
``folder_matches(legacy)``, ``run_dir._check_data_not_written`` with ``linked_folders(files=True)``,
``cli_commands._not_the_runs_data`` through ``run_dir.holds``, compare's ``data_place``, the lock's ``doing``).
Tests marked ``# WAS A BUG`` fail on f9486ce and pass since the fixes (docs/testing.md "Fifty-fourth round"); the
others pin behaviour that was checked and held.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from ebmlab.data.arrays import folder_fingerprint, linked_folders
from ebmlab.errors import CheckpointError, ConfigError, DataError
from ebmlab.training import run_data
from ebmlab.training import run_dir as rd
from ebmlab.training.lock import RunLock
from tests.cli_helpers import cli, sets
from tests.unit.test_session18_round52 import IMG, _image_folder, _old_fingerprint, _png


def _quiet_cli(capsys, *argv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cli(capsys, *argv)


def _train(capsys, out: Path, data: Path) -> Path:
    code, _, err = _quiet_cli(capsys, "train", "--out", out, "--data", data, "--config", "digits_hybrid", *sets(IMG))
    assert code == 0, err
    return out


def _info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text(encoding="utf-8"))


def _as_trained_before_listing_version(run: Path, imgs: Path) -> None:
    """Make ``run`` look as trained before 2026-12-07: the old (rglob) listing, no listing_version, and the
    checkpoints' sidecars recording that listing (``run.check_checkpoint_data``)."""
    info = _info(run)
    old = _old_fingerprint(imgs)
    info["data"]["listing_sha256"] = old
    info["data"].pop("listing_version")
    (run / "run.json").write_text(json.dumps(info), encoding="utf-8")
    for side in (run / "checkpoints").glob("*.json"):
        meta = json.loads(side.read_text(encoding="utf-8"))
        if "data_sha256" in meta:
            meta["data_sha256"] = old
            side.write_text(json.dumps(meta), encoding="utf-8")


# ---- 1. the lock's words in the refusals of commands that are not training ----------------------------------------

# WAS A BUG: `ebmlab eval RUN` while RUN trains is refused with "run directory ... is in use by another ebmlab process
# (pid N on host H, training); wait for it to finish (or train into another --out)". An evaluation has no --out to
# train into: the alternative offered is of no use to the user who typed `eval` (evaluate.evaluate_checkpoint takes
# RunLock.acquire's default `instead`). Expected: advice an evaluator can follow, e.g. "wait for it to finish and
# evaluate it then" (or no alternative at all). Fix: training/evaluate.py:evaluate_checkpoint passes its own
# `instead=` (and `busy=`) to RunLock.acquire.
def test_eval_refused_by_a_trainer_is_not_told_to_train_into_another_out(tmp_path, capsys):
    a = _train(capsys, tmp_path / "a", _image_folder(tmp_path / "imgs"))
    lock = RunLock.acquire(a, doing="training")  # (this process holds it: the CLI's flock on a new fd is refused)
    try:
        code, _, err = _quiet_cli(capsys, "eval", a)
    finally:
        lock.release()
    assert code != 0 and "training" in err
    assert "train into another --out" not in err


# WAS A BUG: checkpoint.result_checkpoint meets half a `best` pair while another process holds the run's lock and says
# "'.../best.safetensors', the run's selected result, is being replaced by the process training the run (pid N on
# host H, evaluating); open the run again in a moment". The holder is not training (an evaluation, or `compare
# --out RUN` "writing a comparison"), neither of which ever writes best.*: the half pair is damage, and waiting
# does not mend it. Round 53 mended the same contradiction in compare ("it is still training (..., evaluating)")
# but not here. Expected: "being replaced by the process training the run" only when the holder trains; otherwise
# the damaged-pair advice (restore the missing sidecar or delete best.safetensors), or at least words that do not
# contradict the holder's `doing`. Fix: training/checkpoint.py:result_checkpoint reads the holder's `doing`
# (lock.holder returning the record, or a helper `holder_doing`) and says "training" only for "training".
def test_half_a_best_with_an_evaluator_holding_the_lock_is_not_blamed_on_a_trainer(tmp_path):
    from ebmlab.training.checkpoint import result_checkpoint

    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "best.safetensors").write_bytes(b"x")  # its best.json missing
    lock = RunLock.acquire(tmp_path / "run", doing="evaluating")
    try:
        with pytest.raises(CheckpointError) as e:
            result_checkpoint(ck)
    finally:
        lock.release()
    assert "best.json beside it is missing; restore it, or delete best.safetensors" in str(e.value)  # the damage
    assert "training the run" not in str(e.value)


def test_a_trainer_refused_by_an_evaluator_is_told_what_it_does(tmp_path, capsys):
    from ebmlab.errors import RunError

    (tmp_path / "run").mkdir()
    lock = RunLock.acquire(tmp_path / "run", doing="evaluating")
    try:
        with pytest.raises(RunError, match="evaluating"):
            RunLock.acquire(tmp_path / "run")
    finally:
        lock.release()


# ---- 2. links in the data folder to files the run writes ----------------------------------------------------------

# WAS A BUG: run_dir._written (round 53: "a linked file in a data folder leading to a file the run writes" refused) knows
# only samples/, plots/, checkpoints/ and tb/. A data folder holding a link to one of the run's top-level files
# (metrics.json, metrics.jsonl, run.json, config_changes.jsonl), all rewritten or grown by training, is accepted by
# `train --overwrite`; the link's size changes while the run trains, and the run's own `eval` then says "data folder
# ... has changed since run ... was trained" (checked: with `imgs/cat/m.json -> RUN/metrics.json` and
# `-> RUN/run.json`). Expected: the same refusal as for a link to RUN/samples/grid_final.png. Fix:
# training/run_dir.py:_written treats a one-part path naming one of run.RUN_ENTRIES that training writes
# (metrics.json, metrics.jsonl, run.json, config_changes.jsonl; not data.npy, which training never rewrites) as written.
# (and the seen-and-left: a link to a file under RUN/tb/, which --overwrite deletes and training rewrites)
@pytest.mark.parametrize("name", ["metrics.json", "metrics.jsonl", "run.json", "config_changes.jsonl",
                                  "tb/events.out.tfevents.1.h"])
def test_a_linked_file_to_a_top_level_file_the_run_writes_is_refused(tmp_path, name):
    run = tmp_path / "run"
    (run / name).parent.mkdir(parents=True, exist_ok=True)
    (run / name).write_text("{}", encoding="utf-8")
    imgs = _image_folder(tmp_path / "imgs", n=2)
    os.symlink(run / name, imgs / "cat" / f"linked_{Path(name).name}")
    with pytest.raises(ConfigError, match="which the run writes"):
        rd._check_data_not_written(run, str(imgs))


def test_links_to_files_in_the_run_that_training_does_not_write_are_accepted(tmp_path):
    run = tmp_path / "run"
    (run / "notes").mkdir(parents=True)
    _png(run / "notes" / "x.png", 1)
    _png(run / "samples" / "mine.png", 2)  # the user's own file in samples/ (kept by --overwrite)
    imgs = _image_folder(tmp_path / "imgs", n=2)
    os.symlink(run / "notes" / "x.png", imgs / "cat" / "n.png")
    os.symlink(run / "samples" / "mine.png", imgs / "dog" / "m.png")
    rd._check_data_not_written(run, str(imgs))  # no error


def test_a_symlink_farm_with_dangling_and_looping_links_is_walked_and_checked(tmp_path):
    """A data folder built of links to a shared store (common on clusters), with a dangling link and a loop."""
    from ebmlab.data import images

    store = _image_folder(tmp_path / "store", n=3)
    farm = tmp_path / "farm"
    for p in sorted(store.rglob("*.png")):
        q = farm / p.relative_to(store)
        q.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(p, q)
    os.symlink(tmp_path / "nowhere", farm / "cat" / "broken.txt")
    os.symlink(farm / "cat" / "l1", farm / "cat" / "l2")
    os.symlink(farm / "cat" / "l2", farm / "cat" / "l1")
    links = list(linked_folders(farm, files=True))
    assert len(links) == 9
    assert folder_fingerprint(farm) == folder_fingerprint(store)  # the same names and sizes
    rd._check_data_not_written(tmp_path / "run", str(farm))
    files, labels, classes = images._list_images(farm)
    assert classes == ["cat", "dog"] and len(files) == 6
    # --data a folder that is itself a link
    os.symlink(farm, tmp_path / "ln")
    rd._check_data_not_written(tmp_path / "run", str(tmp_path / "ln"))


# ---- 3. the class-name check and runs of older versions ------------------------------------------------------------

def _data(classes):
    return SimpleNamespace(info={"classes": classes} if classes is not None else {})


@pytest.mark.parametrize("stored", [None, [], "absent"])
def test_runs_without_stored_class_names_are_not_checked(tmp_path, stored):
    d = {} if stored == "absent" else {"classes": stored}
    cfg = SimpleNamespace(data=SimpleNamespace(path=str(tmp_path)))
    run_data._check_classes(tmp_path, cfg, {"data": d}, _data(["cat", "dog"]))
    run_data._check_classes(tmp_path, cfg, None, _data(["cat", "dog"]))


def test_class_names_check_takes_names_that_are_not_utf8_through_run_json(tmp_path):
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    stored = json.loads(json.dumps({"data": {"classes": [name, "dog"]}}))
    cfg = SimpleNamespace(data=SimpleNamespace(path=str(tmp_path)))
    run_data._check_classes(tmp_path, cfg, stored, _data([name, "dog"]))
    with pytest.raises(DataError, match="other classes"):
        run_data._check_classes(tmp_path, cfg, stored, _data(["dog", name]))


def test_cifar_class_names_are_read_the_same_way_each_time(tmp_path):
    """A CIFAR folder stores its meta file's names; reading it again gives the same list (the check passes)."""
    import numpy as np

    from ebmlab.data import images

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"c{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    got = images._cifar_class_names("cifar10", folder, 10)
    assert got == [n.decode() for n in names] == json.loads(json.dumps(got))
    assert np.asarray(got).dtype.kind == "U"


def test_an_old_run_on_a_folder_with_a_linked_class_evaluates_and_resumes_at_a_moved_copy(tmp_path, capsys):
    store = _image_folder(tmp_path / "store", classes=("bird",), n=4)
    imgs = _image_folder(tmp_path / "imgs", n=4)
    os.symlink(store / "bird", imgs / "bird")
    a = _train(capsys, tmp_path / "a", imgs)
    assert _info(a)["data"]["classes"] == ["bird", "cat", "dog"]
    _as_trained_before_listing_version(a, imgs)
    code, _, err = _quiet_cli(capsys, "eval", a)
    assert code == 0, err
    moved = tmp_path / "moved"
    shutil.copytree(imgs, moved, symlinks=True)
    code, out, err = _quiet_cli(capsys, "train", "--out", a, "--resume", "--data", moved, "--set", "train.steps=4")
    assert code == 0, err
    assert "data folder read at" in out
    assert "listing_version" not in _info(a)["data"] and _info(a)["data"]["relocated"]
    code, _, err = _quiet_cli(capsys, "sample", a, "--init", "data", "--n", "2", "--out", tmp_path / "s.npy")
    assert code == 0, err


# ---- 4. sample --out and the run's data ----------------------------------------------------------------------------

def test_sample_out_places_around_an_image_folder(tmp_path, capsys, monkeypatch):
    imgs = _image_folder(tmp_path / "imgs", n=4)
    a = _train(capsys, tmp_path / "a", imgs)
    code, _, err = _quiet_cli(capsys, "sample", a, "--n", "2", "--out", imgs / ".drafts" / "x.npy")
    assert code == 0, err  # a hidden folder of the data is never read
    code, _, err = _quiet_cli(capsys, "sample", a, "--n", "2", "--out", tmp_path / "x.npy")
    assert code == 0, err  # the data folder's parent
    os.symlink(imgs / "dog", tmp_path / "dl")
    code, _, err = _quiet_cli(capsys, "sample", a, "--n", "2", "--out", tmp_path / "dl" / "z.npy")
    assert code != 0 and "would write into the run's data" in err  # through a link
    monkeypatch.chdir(imgs)
    code, _, err = _quiet_cli(capsys, "sample", a, "--n", "2", "--out", "cat/../y.npy")
    assert code != 0 and "would write into the run's data" in err  # relative
    code, _, err = _quiet_cli(capsys, "eval", a)
    assert code == 0, err  # the folder is unchanged
