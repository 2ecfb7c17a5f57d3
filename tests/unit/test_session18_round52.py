"""Round 52: a read-only audit of the seventeenth session's last code (``git diff 89d2819..b956fe8 -- src``: the
data folder's listing fingerprint that follows linked folders, ``folder_matches`` taking the new or the old one,
``run_dir._spellings``/``_holds``; and ``git diff 48741cd..89d2819 -- src``: compare's lock). Tests marked
``# WAS A BUG`` fail on b956fe8 and pass since the eighteenth session's fixes (docs/testing.md "Fifty-second
round"); the others pin behaviour that was checked and held.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from ebmlab.data import images
from ebmlab.data.arrays import folder_fingerprint, folder_matches
from ebmlab.errors import ConfigError
from ebmlab.files import is_temp_file
from ebmlab.training import run_data
from ebmlab.training import run_dir as rd
from ebmlab.training.lock import LOCK_NAME, RunLock
from tests.cli_helpers import cli, sets

IMG = ["train.steps=2", "train.checkpoint_every=2", "train.batch_size=4", "train.threads=1", "train.progress=false",
       "train.select_every=null", "method.n_steps=1", "method.n_steps_data=1", "model.channels=[4]",
       "eval.n_samples=8", "eval.plots=false", "data.image_size=8"]


def _old_fingerprint(root: Path) -> str:
    """The fingerprint as computed before 6af2196 (rglob: linked folders not entered)."""
    rows = sorted(f"{f.relative_to(root).as_posix()}\t{f.stat().st_size}" for f in root.rglob("*")
                  if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _png(path: Path, seed: int = 0, size: int = 8) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    Image.fromarray(g.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def _image_folder(root: Path, classes=("cat", "dog"), n: int = 6) -> Path:
    for k, c in enumerate(classes):
        for i in range(n):
            _png(root / c / f"{i}.png", seed=10 * k + i)
    return root


@pytest.fixture()
def image_run(tmp_path, capsys):
    """``imgs`` (cat/, dog/: real folders, no links) and run ``a`` trained on it (about 2.5 s)."""
    imgs = _image_folder(tmp_path / "imgs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = cli(capsys, "train", "--out", tmp_path / "a", "--data", imgs, "--config", "digits_hybrid",
                           *sets(IMG))
    assert code == 0, err
    return imgs, tmp_path / "a"


def _quiet_cli(capsys, *argv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cli(capsys, *argv)


# ---- 1. folder_matches' old-fingerprint fallback hides a linked class folder added after training ------------------

# WAS A BUG: folder_matches accepts the old (rglob) fingerprint for every run, also those trained after 6af2196. For a folder
# without links at training time the new and the old fingerprints are the same, so after a linked folder is ADDED to
# it (`imgs/bird -> /elsewhere/bird`) the old listing of the changed folder still equals run.json's: eval and --resume
# accept the folder silently although the image walk now reads another class and more images. A user expects
# "data folder ... has changed" (what a real folder added gives). Fix: accept the old listing only for runs written
# before the change (a marker in run.json's data, e.g. "listing": 2, written by write_run_info; folder_matches(path,
# stored, old=...) taking the rglob listing only when the marker is absent).
def test_a_linked_class_folder_added_after_training_changes_the_fingerprint_match(tmp_path):
    imgs = tmp_path / "imgs"
    _png(imgs / "cat" / "1.png")
    stored = folder_fingerprint(imgs)  # what a run trained now stores (the same as the old one: no links yet)
    _png(tmp_path / "elsewhere" / "bird" / "2.png", seed=1)
    (imgs / "bird").symlink_to(tmp_path / "elsewhere" / "bird")
    assert folder_fingerprint(imgs) != stored  # the new listing sees it ...
    assert not folder_matches(imgs, stored)  # ... but the old one, also tried, does not: accepted


# WAS A BUG: end to end: `ebmlab eval RUN` after a linked class folder was added to the run's image folder evaluates on the
# changed data (3 classes, more images) with exit status 0; a real folder added instead is refused. Expected: the same
# refusal ("data folder ... has changed since run ... was trained").
def test_eval_refuses_a_data_folder_with_a_linked_class_added(image_run, tmp_path, capsys):
    imgs, run = image_run
    _image_folder(tmp_path / "elsewhere", classes=("bird",), n=3)
    (imgs / "bird").symlink_to(tmp_path / "elsewhere" / "bird")
    code, _, err = _quiet_cli(capsys, "eval", run)
    assert code != 0 and "has changed" in err


def test_a_real_class_folder_added_is_refused_by_eval(image_run, capsys):
    imgs, run = image_run
    _image_folder(imgs, classes=("bird",), n=3)
    code, _, err = _quiet_cli(capsys, "eval", run)
    assert code == 2 and "has changed" in err


# ---- 2. a data folder with a linked folder INTO the run's written folders ------------------------------------------

# WAS A BUG: _check_data_not_written refuses a data folder whose linked folder leads to a folder HOLDING the run (round 50),
# but not one whose linked folder leads INTO the run, to a folder the run writes (`imgs/grids -> RUN/samples`, or
# `-> RUN/plots`). The image walk follows the link, so the run's grids join the data it trains on: with --overwrite
# the clearing and the new grids change the data under the run (eval then refuses: "has changed"), on a new run the
# grids written during training join the folder (and, with the fallback of finding 1, are read silently).
# Expected: the same refusal as `--data RUN/samples` ("... which the run writes ..."). Fix: in run_dir._holds (or
# _check_data_not_written), also test each linked folder's target with the `written` rule (target inside `base`,
# first part in TRAIN_FILES / "tb").
@pytest.mark.parametrize("into", ["samples", "plots", "checkpoints"])
def test_a_data_folder_linking_into_a_folder_the_run_writes_is_refused(tmp_path, into):
    imgs, run = tmp_path / "imgs", tmp_path / "run"
    _png(imgs / "cat" / "1.png")
    (run / into).mkdir(parents=True)
    (imgs / "grids").symlink_to(run / into)
    with pytest.raises(ConfigError):
        rd._check_data_not_written(run, str(imgs))


def test_data_given_as_the_run_samples_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    with pytest.raises(ConfigError, match="which the run writes"):
        rd._check_data_not_written(run, str(run / "samples"))


# ---- 3. compare --out into the compared runs' data folder -----------------------------------------------------------

# WAS A BUG: `compare A B --out IMGS`, IMGS the image folder A and B were trained on, is accepted: compare.md, compare.json
# and samples_<k>.png join the data folder (the PNGs as loose images, which also drop the class labels), and every run
# on that folder is broken: `ebmlab eval A` then says "data folder ... has changed since run ... was trained".
# Expected: a refusal like train's ("--out ... is (or lies in) the data folder of run A; write the comparison
# elsewhere"), before anything is written. Fix: compare._write (or compare() before it) checks `out` against each
# run's data path with run_dir._holds (the data folder, or a linked folder in it, holding out).
def test_compare_out_into_the_runs_data_folder_is_refused_and_the_runs_stay_usable(image_run, tmp_path, capsys):
    imgs, a = image_run
    b = tmp_path / "b"
    shutil.copytree(a, b)
    before = sorted(os.listdir(imgs))
    code, _, err = _quiet_cli(capsys, "compare", a, b, "--out", imgs)
    assert code != 0, "compare wrote into the runs' data folder"
    assert sorted(os.listdir(imgs)) == before
    assert _quiet_cli(capsys, "eval", a)[0] == 0


# ---- 4. the image walk's order against the fingerprint's -----------------------------------------------------------

class _Entries:
    """os.scandir's result with its entries in a chosen order (a context manager and an iterator, as os.walk uses)."""

    def __init__(self, path, reverse):
        with os.scandir.__wrapped__(path) as it:
            self._e = sorted(it, key=lambda e: e.name, reverse=reverse)
        self._it = iter(self._e)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def close(self):
        pass


def _walk_in_order(monkeypatch, root: Path, reverse: bool):
    real = os.scandir

    def scandir(path="."):
        return _Entries(path, reverse)
    scandir.__wrapped__ = real
    monkeypatch.setattr(os, "scandir", scandir)
    os.scandir.__wrapped__ = real
    try:
        return sorted(p.relative_to(root).as_posix() for p in images._image_files(root))
    finally:
        monkeypatch.setattr(os, "scandir", real)


# WAS A BUG: the image walk (data.images._image_files) does not sort the sub-folders it enters, so of two names of one folder
# (a real class folder `cat/` and a link `kitty -> cat`) the one whose images are read, and so the class they are
# labelled with, is the directory listing's (file-system) order: on ext4 here `cat` comes first, on another machine or
# after a copy `kitty` may; the class list, the labels and the splits then differ, and the listing fingerprint, which
# sorts (`_walked_files`), does not describe what the walk read (its docstring says it lists "what the walk
# reaches"). Expected: the walk reads the same files under the same names whatever the listing order: sort `subs`
# in _image_files as _walked_files does (better, one walker shared by both).
def test_the_image_walk_does_not_depend_on_the_directory_listing_order(tmp_path, monkeypatch):
    imgs = tmp_path / "imgs"
    _png(imgs / "cat" / "1.png")
    (imgs / "kitty").symlink_to(imgs / "cat")
    forward = _walk_in_order(monkeypatch, imgs, reverse=False)
    backward = _walk_in_order(monkeypatch, imgs, reverse=True)
    assert forward == backward


def test_the_fingerprint_does_not_depend_on_the_directory_listing_order(tmp_path, monkeypatch):
    imgs = tmp_path / "imgs"
    _png(imgs / "cat" / "1.png")
    (imgs / "kitty").symlink_to(imgs / "cat")
    real = os.scandir
    got = []
    for reverse in (False, True):
        def scandir(path=".", reverse=reverse):
            return _Entries(path, reverse)
        monkeypatch.setattr(os, "scandir", scandir)
        os.scandir.__wrapped__ = real
        try:
            got.append(folder_fingerprint(imgs))
        finally:
            monkeypatch.setattr(os, "scandir", real)
    assert got[0] == got[1]


# ---- 5. a file name that is not UTF-8 -------------------------------------------------------------------------------

# WAS A BUG: a data folder holding a file whose name is not valid UTF-8 (a Latin-1 `café.png` copied from an old disk or a
# zip; Linux keeps the bytes) makes folder_fingerprint raise UnicodeEncodeError ("surrogates not allowed") from
# `"\n".join(rows).encode()`, while the image walk reads the file without trouble: `ebmlab train --data FOLDER` stops
# (exit 2, after the run folder and its config.yaml were made) with only "ebmlab: error: 'utf-8' codec can't encode
# character '\udce9' in position 77: surrogates not allowed", naming neither the file nor what to do; eval/--resume
# of a run whose folder gains such a file say the same. Expected: the fingerprint of such a folder (e.g.
# `.encode("utf-8", "surrogateescape")` in arrays._listing_hash, unchanged for every valid name) and a normal run.
def test_the_fingerprint_of_a_folder_with_a_non_utf8_file_name(tmp_path):
    imgs = tmp_path / "imgs"
    _png(imgs / "cat" / "1.png")
    with open(os.fsencode(imgs / "cat") + b"/caf\xe9.png", "wb") as f:
        f.write(b"x")
    assert len(list(images._image_files(imgs))) == 2  # the walk reads it
    assert len(folder_fingerprint(imgs)) == 64


# ---- 6. two runs on one folder with a linked class folder, one with the old fingerprint ----------------------------

# WAS A BUG (documented as left in "Fiftieth round", but worse than it says): two runs on the SAME, unchanged folder with a
# linked class folder, one trained before 6af2196 (run.json: the old listing) and one after, are not just shown with
# different listing_sha256: compare REFUSES them, "were trained on different data (listing_sha256: ... vs ...);
# compare runs of the same data and split", though both pass eval's data check on that folder. Expected: compare
# accepts them (for the same data_path, compare listing_sha256 with folder_matches on the folder when the two stored
# values differ, or skip listing_sha256 when both runs' stored values match the folder as it is now).
def test_compare_accepts_an_old_and_a_new_run_on_the_same_folder_with_a_linked_class(image_run, tmp_path, capsys):
    imgs, a = image_run
    far = tmp_path / "far"
    shutil.move(imgs / "dog", far)
    (imgs / "dog").symlink_to(far)  # the same images, the dog class now through a link
    info = json.loads((a / "run.json").read_text(encoding="utf-8"))
    info["data"]["listing_sha256"] = folder_fingerprint(imgs)  # a run trained now on the folder
    (a / "run.json").write_text(json.dumps(info), encoding="utf-8")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    info["data"]["listing_sha256"] = _old_fingerprint(imgs)  # ... and one trained before 6af2196
    info["data"].pop("listing_version", None)  # (which had no listing_version)
    (b / "run.json").write_text(json.dumps(info), encoding="utf-8")
    for r in (a, b):  # both pass the data check
        assert run_data.verify_data(r, _cfg(r), json.loads((r / "run.json").read_text(encoding="utf-8"))) is True
    code, _, err = _quiet_cli(capsys, "compare", a, b)
    assert code == 0, err


def _cfg(run: Path):
    from ebmlab.training.run import read_run_config
    return read_run_config(run)


# ---- checked and held -----------------------------------------------------------------------------------------------

def test_hidden_files_and_hidden_linked_folders_do_not_change_the_fingerprint(tmp_path):
    imgs = tmp_path / "imgs"
    _png(imgs / "cat" / "1.png")
    before = folder_fingerprint(imgs)
    (imgs / ".DS_Store").write_bytes(b"x")
    (imgs / "cat" / "._1.png").write_bytes(b"x")
    _png(tmp_path / "far" / "2.png")
    (imgs / ".cache").symlink_to(tmp_path / "far")
    assert folder_fingerprint(imgs) == before and folder_matches(imgs, before)


def test_symlink_loops_and_dangling_links_neither_loop_nor_crash(tmp_path):
    imgs = tmp_path / "imgs"
    _png(imgs / "cat" / "1.png")
    (imgs / "self").symlink_to(imgs / "self")  # ELOOP
    (imgs / "x").symlink_to(imgs / "y")
    (imgs / "y").symlink_to(imgs / "x")
    (imgs / "gone").symlink_to(tmp_path / "nowhere")
    (imgs / "cat" / "up").symlink_to(imgs)
    (tmp_path / "side").mkdir()
    (imgs / "cat" / "side").symlink_to(tmp_path / "side")  # its files join (as in the walk)
    (tmp_path / "side" / "back").symlink_to(imgs)  # ... and it links back
    (tmp_path / "side" / "note.txt").write_text("n", encoding="utf-8")
    fp = folder_fingerprint(imgs)
    assert len(fp) == 64
    assert [p.name for p in images._image_files(imgs)] == ["1.png"]
    rd._check_data_not_written(tmp_path / "elsewhere" / "run", str(imgs))  # no loop, accepted
    with pytest.raises(ConfigError, match="holds run"):  # the walk reaches side/ through cat/side
        rd._check_data_not_written(tmp_path / "side" / "run", str(imgs))


def test_a_folder_without_linked_folders_keeps_its_old_fingerprint_with_file_links_and_empty_folders(tmp_path):
    imgs = tmp_path / "imgs"
    _png(imgs / "cat" / "1.png")
    (imgs / "empty" / "deeper").mkdir(parents=True)
    (imgs / "cat" / "same.png").symlink_to(imgs / "cat" / "1.png")
    (imgs / ".hidden").mkdir()
    (imgs / ".hidden" / "h.png").write_bytes(b"h")
    assert folder_fingerprint(imgs) == _old_fingerprint(imgs)
    assert folder_fingerprint(tmp_path / "none") == hashlib.sha256(b"").hexdigest()  # (no folder: the empty listing)


def test_a_run_in_a_hidden_folder_reached_by_a_visible_link_is_refused_as_the_walk_reads_it(tmp_path):
    imgs = tmp_path / "imgs"
    (imgs / ".runs" / "a").mkdir(parents=True)
    rd._check_data_not_written(imgs / ".runs" / "a", str(imgs))  # hidden: skipped by the walk
    (imgs / "visible").symlink_to(imgs / ".runs")
    with pytest.raises(ConfigError, match="holds run"):
        rd._check_data_not_written(imgs / ".runs" / "a", str(imgs))


def test_overwrite_keeps_a_data_folder_inside_the_run_given_relative_or_through_a_link(tmp_path, monkeypatch):
    from tests.builders import finished_run_files

    run = finished_run_files(tmp_path / "run")
    _png(run / "imgs" / "cat" / "1.png")
    (tmp_path / "imglink").symlink_to(run / "imgs")
    monkeypatch.chdir(tmp_path)
    for keep in ("run/imgs", "imglink", str(run / "imgs") + "/"):
        rd._check_data_not_written(Path("run"), keep)
        rd._remove_run_files(Path("run"), keep=keep)
        assert (run / "imgs" / "cat" / "1.png").is_file(), keep


def test_relocation_of_a_folder_with_a_relative_linked_class_moved_together(tmp_path):
    proj = tmp_path / "proj"
    _png(proj / "imgs" / "cat" / "1.png")
    _png(proj / "far" / "dog" / "2.png", seed=1)
    (proj / "imgs" / "dog").symlink_to(Path("..") / "far" / "dog")
    want = folder_fingerprint(proj / "imgs")
    shutil.move(proj, tmp_path / "moved")  # the relative link moves along
    assert run_data._holds_data(tmp_path / "moved" / "imgs", want)
    (tmp_path / "moved" / "far" / "dog" / "3.png").write_bytes(b"x")
    assert not run_data._holds_data(tmp_path / "moved" / "imgs", want)


def test_is_temp_file_and_the_lock_sentence_names_what_to_do_instead(tmp_path):
    (tmp_path / "a.tmp").symlink_to(tmp_path / "nowhere")
    (tmp_path / "b.tmp").mkdir()
    assert is_temp_file(tmp_path / "a.tmp") and not is_temp_file(tmp_path / "b.tmp")
    held = RunLock.acquire(tmp_path, "--out X is in use", instead="write elsewhere")
    try:
        pytest.importorskip("fcntl")
        import subprocess
        import sys
        code = ("import sys; from pathlib import Path; from ebmlab.training.lock import RunLock\n"
                "try:\n RunLock.acquire(Path(sys.argv[1]), '--out X is in use', instead='write elsewhere')\n"
                "except Exception as e: print(e)\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                                            os.environ.get("PYTHONPATH", "")])}
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                             encoding="utf-8", env=env, timeout=60).stdout
        assert out.startswith("--out X is in use (") and "wait for it to finish (or write elsewhere)" in out
    finally:
        held.release()
    assert not (tmp_path / LOCK_NAME).exists()
