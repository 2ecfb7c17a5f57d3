"""Round 53: a read-only audit of the eighteenth session's fixes (9565c7e: the lock's ``doing``, ``walk_folder`` /
``linked_folders`` / ``LISTING_VERSION`` / ``folder_matches(legacy)``, ``run_dir._written``/``holds``,
``experiments/compare_checks.py``, ``heldout.validation_terms``, ``logging.read_metrics``). Tests marked
``# WAS A BUG`` fail on 9565c7e and pass since the fixes (docs/testing.md "Fifty-third round"); the others pin
behaviour that was checked and held.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from ebmlab.data.arrays import LISTING_VERSION, folder_fingerprint, folder_matches
from ebmlab.errors import ConfigError
from ebmlab.training import run_data
from ebmlab.training import run_dir as rd
from ebmlab.training.lock import LOCK_NAME, RunLock, _describe
from tests.cli_helpers import cli, sets
from tests.unit.test_session18_round52 import IMG, _image_folder, _old_fingerprint, _png


def _train(capsys, out: Path, data: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = cli(capsys, "train", "--out", out, "--data", data, "--config", "digits_hybrid", *sets(IMG))
    assert code == 0, err
    return out


def _quiet_cli(capsys, *argv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cli(capsys, *argv)


def _info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text(encoding="utf-8"))


def _put_info(run: Path, info: dict) -> None:
    (run / "run.json").write_text(json.dumps(info), encoding="utf-8")


def _cfg(run: Path):
    from ebmlab.training.run import read_run_config
    return read_run_config(run)


@pytest.fixture()
def image_run(tmp_path, capsys):
    """``imgs`` (cat/, dog/: real folders) and run ``a`` trained on it (about 2.5 s)."""
    imgs = _image_folder(tmp_path / "imgs")
    return imgs, _train(capsys, tmp_path / "a", imgs)


# ---- 1. compare --out into the folder a relocated run reads its data from ------------------------------------------

# WAS A BUG: compare_checks.check_out_outside_data checks --out against run.json's stored data.path only. A run whose image
# folder moved and was pointed to its new place by `ebmlab train --resume --data NEW` (run.json "relocated": NEW)
# reads its data at NEW, yet `ebmlab compare A B --out NEW` is accepted: compare.md, compare.json and samples_<k>.png
# join the folder and `ebmlab eval A` then says "data folder ... has changed since run ... was trained". (The stored
# path no longer exists, so no check is made at all.) Expected: the same refusal as for the stored folder. Fix:
# compare._read keeps the place the run reads its data from (run_data.located_config(run, cfg, info).data.path, as
# cli_commands._not_the_runs_data does) and check_out_outside_data / _both_match use it.
def test_compare_out_into_a_relocated_runs_data_folder_is_refused(image_run, tmp_path, capsys):
    from ebmlab.experiments.compare import compare

    imgs, a = image_run
    moved = tmp_path / "moved"
    shutil.move(imgs, moved)
    run_data.record_relocation(a, str(moved))  # what `ebmlab train --out a --resume --data moved` records
    assert run_data.verify_data(a, run_data.located_config(a, _cfg(a), _info(a)), _info(a)) is True
    b = tmp_path / "b"
    shutil.copytree(a, b)
    before = sorted(os.listdir(moved))
    with pytest.raises(ConfigError):
        compare([a, b], out=moved)
    assert sorted(os.listdir(moved)) == before


# ---- 2. sample --out into a linked class folder of the run's data folder ------------------------------------------

# WAS A BUG: `ebmlab sample RUN --out FAR/dog/s.npy`, where the run's image folder holds `dog -> FAR/dog` (a class linked
# in, which the image walk and the listing fingerprint follow), is accepted: cli_commands._not_the_runs_data only
# compares resolved paths with the data folder, never its linked folders. The samples file (and its .png, an image
# the walk reads as a `dog` example) join the data and every later eval/--resume of the run is refused ("has
# changed"). compare --out and train --data refuse the same place (run_dir.holds). Expected: "--out ... would write
# into the run's data". Fix: in _not_the_runs_data, for a data folder also refuse a target under one of
# arrays.linked_folders(data) (e.g. run_dir.holds(data, target.parent)).
def test_sample_out_into_a_linked_class_folder_of_the_data_is_refused(tmp_path, capsys):
    from ebmlab.cli_commands import _not_the_runs_data

    imgs = _image_folder(tmp_path / "imgs", classes=("cat",))
    _image_folder(tmp_path / "far", classes=("dog",))
    (imgs / "dog").symlink_to(tmp_path / "far" / "dog")
    run = _train(capsys, tmp_path / "a", imgs)
    with pytest.raises(ValueError, match="data"):
        _not_the_runs_data(run, [tmp_path / "imgs" / "cat" / "s.npy"])  # (the plain case: refused)
    target = tmp_path / "far" / "dog" / "s.npy"
    with pytest.raises(ValueError, match="data"):
        _not_the_runs_data(run, [target, target.with_suffix(".png")])


# ---- 3. the resume's relocation note for a data folder --------------------------------------------------------------

# WAS A BUG: `ebmlab train --out RUN --resume --data MOVED_FOLDER` prints "resumed RUN at step 2, its data file read at
# MOVED_FOLDER (moved from OLD, the same SHA-256; recorded in run.json)": a folder is not a file and was matched by
# its listing of names and sizes, not a SHA-256 (relocation's own refusal words it right: "listing of names and
# sizes"). Expected for a folder: "its data folder read at ... (the same listing of names and sizes ...)". Fix:
# run_data.relocation_note: word it by (Path(run_dir) / place).is_dir().
def test_the_relocation_note_of_a_moved_data_folder_does_not_call_it_a_file_with_a_sha256(image_run, tmp_path):
    imgs, a = image_run
    moved = tmp_path / "moved"
    shutil.move(imgs, moved)
    note = run_data.relocation_note(str(moved), _cfg(a), a)
    assert "SHA-256" not in note and "data file" not in note, note


# ---- 4. the image walk's order change and runs trained before it ----------------------------------------------------

# WAS A BUG: the image walk now enters sub-folders in sorted order (walk_folder); before 9565c7e it took the file system's
# order. On a folder with one class folder reachable under two names (`cat/` and the link `kitty -> cat`) a run
# trained before may have read the images as `kitty` (run.json: "classes": ["dog", "kitty"], labels dog=0, kitty=1);
# the walk now reads them as `cat` (classes ["cat", "dog"], cat=0, dog=1: the labels swapped). The listing
# fingerprint has always been sorted, so it still matches, and nothing compares run.json's "classes" with the
# folder's: eval, --resume and sample --init data of such a run use swapped labels silently (a hybrid/JEM run's
# accuracy and class-conditional figures then mean another class). Expected: a DataError naming both class lists
# (or at least a warning) where the folder's classes differ from run.json's. Fix: run_data.run_dataset (or
# verify_data) compares data.info["classes"] (and num_classes, n_train) with run.json's data for an image folder.
def test_a_run_whose_stored_classes_differ_from_the_folders_is_not_evaluated_silently(image_run, tmp_path):
    from ebmlab.errors import DataError

    imgs, a = image_run
    (imgs / "kitty").symlink_to(imgs / "cat")  # read once, as cat (sorted): the listing is unchanged
    info = _info(a)
    assert folder_matches(imgs, info["data"]["listing_sha256"])
    info["data"]["classes"] = ["dog", "kitty"]  # what the old, unsorted walk gave on a file system listing kitty first
    info["data"].pop("listing_version")
    _put_info(a, info)
    try:
        data = run_data.run_dataset(a, _cfg(a))
    except DataError:
        return
    assert list(data.info["classes"]) == info["data"]["classes"]


# ---- 5. compare's "still training" for a run being evaluated ----------------------------------------------------------

# WAS A BUG: the holder's description now says what it is doing, but compare._read words a run without metrics.json whose
# lock is held as "it is still training (pid N on host H, evaluating); compare it once it has finished": a
# contradiction when `ebmlab eval RUN` (the very step that writes metrics.json) is running. Expected: "it is in use
# (pid N on host H, evaluating)" or the holder's own words without "still training". Fix: compare._read: "it is in
# use by another ebmlab process ({busy}); compare it once that has finished".
def test_compare_of_a_run_being_evaluated_does_not_say_it_is_still_training(tmp_path):
    from ebmlab.errors import RunError
    from ebmlab.experiments.compare import _read
    from tests.builders import finished_run_files

    run = finished_run_files(tmp_path / "run")
    (run / "metrics.json").unlink(missing_ok=True)
    if not (run / "run.json").is_file():
        _put_info(run, {"data": {"name": "x", "kind": "vector", "shape": [2]},
                        "transform": {"shift": [0.0, 0.0], "scale": [1.0, 1.0]}})
    held = RunLock.acquire(run, doing="evaluating")
    try:
        from ebmlab.training.lock import holder
        if holder(run) is None:
            pytest.skip("the lock cannot be seen as held from this process here")
        with pytest.raises(RunError) as err:
            _read(run)
    finally:
        held.release()
    assert "evaluating" in str(err.value) and "still training" not in str(err.value), str(err.value)


# ---- 6. a file linked into the run's written files from the data folder ---------------------------------------------

# WAS A BUG: round 52's fix refuses a data folder whose linked FOLDER leads into a folder the run writes, but a linked FILE
# is not looked at: `imgs/cat/g.png -> RUN/samples/grid_final.png` (the walk reads file links as images) is accepted
# by `train --out RUN --overwrite --data imgs`; the clearing deletes grid_final.png under the data, the run's final
# grid re-creates it, and the run's own `ebmlab eval` then refuses "data folder ... has changed". Expected: the same
# refusal as for a linked folder ("... reaches, through a link in it, samples/grid_final.png in run ..., which the run
# writes"). Fix: run_dir._check_data_not_written also tests the realpath of each file link the walk meets
# (walk_folder's names that are links) with _written.
def test_a_data_folder_with_a_file_linked_to_a_file_the_run_writes_is_refused(tmp_path):
    imgs, run = tmp_path / "imgs", tmp_path / "run"
    _png(imgs / "cat" / "1.png")
    _png(run / "samples" / "grid_final.png", seed=3)
    (imgs / "cat" / "g.png").symlink_to(run / "samples" / "grid_final.png")
    with pytest.raises(ConfigError):
        rd._check_data_not_written(run, str(imgs))


# ---- checked and held -------------------------------------------------------------------------------------------------

def test_the_lock_describes_its_holder_robustly():
    assert _describe({}) == "another process"
    assert _describe({"pid": 3, "host": "h"}) == "pid 3 on host h"  # an older version's file: no doing
    assert _describe({"pid": 3, "host": "h", "doing": 7}) == "pid 3 on host h"  # a damaged doing: left out
    assert _describe({"pid": 3, "host": "h", "doing": None}) == "pid 3 on host h"
    assert _describe({"pid": 3, "host": "h", "doing": "evaluating"}) == "pid 3 on host h, evaluating"


def test_the_lock_file_says_what_its_holder_does(tmp_path):
    for doing, kw in (("training", {}), ("evaluating", {"doing": "evaluating"})):
        held = RunLock.acquire(tmp_path, **kw)
        try:
            assert json.loads((tmp_path / LOCK_NAME).read_text(encoding="utf-8"))["doing"] == doing
        finally:
            held.release()


def test_listing_legacy_only_without_a_listing_version():
    assert run_data.listing_legacy(None) and run_data.listing_legacy({"data": {}})
    assert run_data.listing_legacy({"data": {"listing_version": None}})
    assert not run_data.listing_legacy({"data": {"listing_version": LISTING_VERSION}})
    assert not run_data.listing_legacy({"data": {"listing_version": "garbage"}})  # damaged: the strict check


def test_a_damaged_listing_version_or_listing_gives_a_clear_refusal_not_a_traceback(image_run, capsys):
    imgs, a = image_run
    info = _info(a)
    info["data"]["listing_version"] = {"x": 1}
    _put_info(a, info)
    assert _quiet_cli(capsys, "eval", a)[0] == 0  # the listing is the new one: still matches
    info["data"]["listing_sha256"] = 12345
    _put_info(a, info)
    code, _, err = _quiet_cli(capsys, "eval", a)
    assert code == 2 and err.startswith("ebmlab: error:") and "Traceback" not in err  # (one sentence)


def test_compare_out_refusals_relative_through_a_link_and_equal_to_the_folder(image_run, tmp_path, monkeypatch):
    from ebmlab.experiments.compare_checks import check_out_outside_data

    imgs, a = image_run
    read = [{"data_path": _info(a)["data"]["path"], "data_place": None}]
    (tmp_path / "imglink").symlink_to(imgs)
    monkeypatch.chdir(tmp_path)
    for out in (imgs, Path("imgs"), Path("imgs/cat/sub"), Path("imglink"), Path("imglink/new")):
        with pytest.raises(ConfigError, match="lies in data folder"):
            check_out_outside_data([str(a)], read, out)
    for out in (tmp_path / "cmp", Path("imgs/.hidden"), tmp_path):  # outside, hidden (not read), the parent: accepted
        check_out_outside_data([str(a)], read, out)


def test_compare_out_beside_a_data_file_is_accepted(tmp_path):
    from ebmlab.experiments.compare_checks import check_out_outside_data

    f = tmp_path / "d.npy"
    f.write_bytes(b"x")
    check_out_outside_data(["a"], [{"data_path": str(f), "data_place": None}], tmp_path)  # the file is not changed by other files beside it
    check_out_outside_data(["a"], [{"data_path": str(tmp_path / "gone"), "data_place": None}], tmp_path)  # a missing path: no check


def test_an_old_run_resumed_keeps_its_legacy_listing_after_a_relocation_record(image_run, tmp_path):
    imgs, a = image_run
    info = _info(a)
    info["data"]["listing_sha256"] = _old_fingerprint(imgs)
    info["data"].pop("listing_version")
    _put_info(a, info)
    moved = tmp_path / "moved"
    shutil.move(imgs, moved)
    cfg = _cfg(a)
    back, place = run_data.relocation(a, cfg.__class__(**{**cfg.__dict__, "data": cfg.data.__class__(
        **{**cfg.data.__dict__, "path": str(moved)})}), cfg.data.path)
    assert place == str(moved.resolve())
    run_data.record_relocation(a, place)
    assert "listing_version" not in _info(a)["data"] and _info(a)["data"]["relocated"] == place


def test_validation_terms_scores_as_validation_score_bit_for_bit():
    from ebmlab.metrics.distances import energy_distance, self_mean
    from ebmlab.training import heldout

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x, y = torch.randn(40, 3, generator=g, dtype=torch.float64), torch.randn(23, 3, generator=g, dtype=torch.float64)
        ys = self_mean(y, True)
        a = energy_distance(x, y, unbiased=True, y_self=ys)
        per_row, cross = heldout._cross_terms(x, y)  # (after round 53: the score from the same sums as energy_distance)
        assert float(2 * cross - self_mean(x, unbiased=True) - ys) == a
        assert torch.allclose(per_row.mean(), cross, rtol=1e-12)


def test_read_metrics_of_a_folder_named_metrics_jsonl(tmp_path):
    from ebmlab.training.logging import read_metrics

    (tmp_path / "metrics.jsonl").mkdir()
    assert read_metrics(tmp_path) == []


def test_the_walk_reads_a_class_linked_twice_under_its_first_sorted_name(tmp_path):
    from ebmlab.data import images

    imgs = tmp_path / "imgs"
    _png(imgs / "zebra" / "1.png")
    (imgs / "alias").symlink_to(imgs / "zebra")
    files, labels, classes = images._list_images(imgs)
    assert classes == ["alias"] and [f.parent.name for f in files] == ["alias"]
    assert folder_fingerprint(imgs) != _old_fingerprint(imgs)  # (a new run on it: the new listing, stored v2)
