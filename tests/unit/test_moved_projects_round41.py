"""Round 41: a moved project, for every kind of data (README "Runs you can trust": ``run.json``'s ``relocated``,
``--resume --data NEW_PATH``).

One tiny run per data kind ebmlab reads from a path (.npy, .csv with and without a header, a vector .npz with
labels, an image .npz with labels, an image folder, a CIFAR-10 directory) and one on data given in memory are
trained once in a module fixture inside ``home1/proj`` (data in ``proj/data``, runs in ``proj/runs``); the whole
project is then renamed away, so every stored data path is gone. Each test copies the project to a new home (a path
with spaces and non-ASCII letters, copied without keeping mtimes, as ``cp`` without ``-p`` does).
Tests marked ``# WAS A BUG`` failed on the code as audited (commit ``ff69294``; docs/testing.md "Forty-first round").
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import ebmlab
from tests.cli_helpers import cli, sets

VEC = ["model.width=16", "model.depth=1", "train.steps=4", "train.checkpoint_every=2", "eval.n_samples=32",
       "eval.plots=false", "train.progress=false", "train.threads=1", "train.select_every=null"]
IMG = ["train.steps=4", "train.checkpoint_every=2", "train.batch_size=4", "train.threads=1", "train.progress=false",
       "train.select_every=null", "method.n_steps=1", "method.n_steps_data=1", "model.channels=[4]",
       "eval.n_samples=8", "eval.plots=false"]
# kind: (data path inside proj/data, settings, --config)
KINDS = {
    "npy": ("v.npy", VEC, None),
    "csv_header": ("h.csv", VEC, None),
    "csv_plain": ("n.csv", VEC, None),
    "npz_vectors": ("v.npz", VEC, None),
    "npz_images": ("im.npz", IMG, "digits_hybrid"),
    "imagefolder": ("img", [*IMG, "data.image_size=8"], "digits_hybrid"),
    "cifar10": ("cifar", [*IMG, "data.image_size=8"], "digits_hybrid"),
}
FILE_KINDS = ["npy", "csv_header", "csv_plain", "npz_vectors", "npz_images"]
FOLDER_KINDS = ["imagefolder", "cifar10"]
HOME = "new home ü/プロジェクト"  # spaces, non-ASCII


def _write_data(d: Path) -> None:
    from PIL import Image

    from tests.image_files import write_cifar10

    g = np.random.default_rng(0)
    rows = g.normal(size=(200, 2)).astype(np.float32)
    np.save(d / "v.npy", rows)
    np.savetxt(d / "h.csv", rows, delimiter=",", header="a,b", comments="")
    np.savetxt(d / "n.csv", rows + 1, delimiter=",")
    np.savez(d / "v.npz", x=rows * 2, y=g.integers(0, 3, 200))
    np.savez(d / "im.npz", x=g.integers(0, 255, (16, 1, 8, 8), dtype=np.uint8), y=g.integers(0, 2, 16))
    for c in ("cat", "dog"):
        (d / "img" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(g.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / "img" / c / f"{i}.png")
    (d / "cifar").mkdir()
    write_cifar10(d / "cifar", n=4)


def _train_cmd(kind: str, run: Path, data: Path) -> list[str]:
    name, opts, config = KINDS[kind]
    return ["train", "--out", str(run), "--data", str(data), *(["--config", config] if config else []), *sets(opts)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """``pristine/proj``: the project trained in ``home1/proj``, which no longer exists (every stored path is gone)."""
    root = tmp_path_factory.mktemp("round41")
    proj = root / "home1" / "proj"
    (proj / "data").mkdir(parents=True)
    _write_data(proj / "data")
    with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")):
        warnings.simplefilter("ignore")
        from ebmlab.cli import main
        for kind, (name, _, _) in KINDS.items():
            assert main(_train_cmd(kind, proj / "runs" / kind, proj / "data" / name)) == 0, kind
        rows = np.random.default_rng(3).normal(size=(200, 2)).astype(np.float32)
        np.save(root / "mem_rows.npy", rows)
        ebmlab.train(data=rows, out=proj / "runs" / "mem", overrides=VEC)
    (root / "pristine").mkdir()
    os.rename(proj, root / "pristine" / "proj")
    (root / "home1").rmdir()
    return root / "pristine" / "proj"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _copy_project(pristine: Path, dest: Path) -> Path:
    """The project copied to ``dest`` as ``cp -r`` does (new mtimes)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(pristine, dest, copy_function=shutil.copy)
    return dest


def _info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text(encoding="utf-8"))["data"]


def _yaml_data_path(run: Path) -> str:
    from ebmlab.config_files import yaml_load
    return yaml_load((run / "config.yaml").read_text(encoding="utf-8"), "config.yaml")["data"]["path"]


def _resume_cli(capsys, run: Path, data: Path | str | None = None, steps: int = 4):
    return cli(capsys, "train", "--out", run, "--resume", *(["--data", str(data)] if data is not None else []),
               "--set", f"train.steps={steps}")


def _every_reader_works(capsys, run: Path, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "eval", run)
    assert code == 0, err
    code, _, err = cli(capsys, "sample", run, "--init", "data", "--n", "4", "--steps", "2", "--out",
                       tmp_path / "s.npy", "--overwrite")
    assert code == 0, err
    assert np.load(tmp_path / "s.npy").shape[0] == 4
    r = ebmlab.load(run)
    m = r.evaluate()
    assert m is not None


# ----- the whole project moved: pointed once, through the CLI, for every kind ------------------------------------
@pytest.mark.parametrize("kind", list(KINDS))
def test_cli_a_moved_project_is_pointed_once_and_read_by_every_command(pristine, tmp_path, capsys, kind):
    proj = _copy_project(pristine, tmp_path / HOME / "proj")
    run, new = proj / "runs" / kind, proj / "data" / KINDS[kind][0]
    stored = _yaml_data_path(run)
    assert not Path(stored).exists()
    code, _, err = cli(capsys, "eval", run)  # before pointing: the advice names --resume --data
    assert code == 2 and "--resume --data" in err, err
    code, out, err = _resume_cli(capsys, run, new)
    assert code == 0, err
    assert "read at" in out and "recorded in run.json" in out, out
    assert _info(run)["relocated"] == str(new.resolve())
    assert _yaml_data_path(run) == stored  # config.yaml keeps the run's identity
    _every_reader_works(capsys, run, tmp_path)
    code, out, err = _resume_cli(capsys, run, steps=6)  # --resume again, without --data: reads run.json's place
    assert code == 0, err
    assert _info(run)["relocated"] == str(new.resolve())


@pytest.mark.parametrize("kind", list(KINDS))
def test_api_resume_with_a_data_path_override_relocates(pristine, tmp_path, kind):
    proj = _copy_project(pristine, tmp_path / HOME / "proj")
    run, new = proj / "runs" / kind, proj / "data" / KINDS[kind][0]
    ebmlab.resume(run, overrides=[f"data.path={new}"], evaluate=False)
    assert _info(run)["relocated"] == str(new.resolve())
    ebmlab.load(run).evaluate()


@pytest.mark.parametrize("kind", list(KINDS))
def test_api_train_with_the_new_data_and_resume_relocates(pristine, tmp_path, kind):
    proj = _copy_project(pristine, tmp_path / HOME / "proj")
    run, new = proj / "runs" / kind, proj / "data" / KINDS[kind][0]
    _, opts, config = KINDS[kind]
    ebmlab.train(data=new, out=run, resume=True, config=config, overrides=opts, evaluate=False)
    assert _info(run)["relocated"] == str(new.resolve())
    ebmlab.load(run).evaluate()


# ----- data given in memory: travel with the run ----------------------------------------------------------------
def test_in_memory_data_travel_with_a_moved_project_cli(pristine, tmp_path, capsys):
    proj = _copy_project(pristine, tmp_path / HOME / "proj")
    run = proj / "runs" / "mem"
    assert _info(run)["path_in_run"] == "data.npy"
    _every_reader_works(capsys, run, tmp_path)
    code, _, err = _resume_cli(capsys, run, steps=6)
    assert code == 0, err
    assert "relocated" not in _info(run)


def test_in_memory_data_travel_with_a_moved_project_api_resume(pristine, tmp_path):
    proj = _copy_project(pristine, tmp_path / HOME / "proj")
    run = proj / "runs" / "mem"
    ebmlab.resume(run, train={"steps": 6}, evaluate=False)
    assert ebmlab.load(run).checkpoint_step == 6


# WAS A BUG: ebmlab.train(data=<the same array>, out=<moved run>, resume=True) is refused: data.path "changed" to the new data.npy
def test_in_memory_data_resumed_with_the_same_array_in_a_moved_run(pristine, tmp_path):
    proj = _copy_project(pristine, tmp_path / HOME / "proj")
    run = proj / "runs" / "mem"
    rows = np.load(pristine.parent.parent / "mem_rows.npy")
    ebmlab.train(data=rows, out=run, resume=True, overrides=[*VEC, "train.steps=6"], evaluate=False)
    assert ebmlab.load(run).checkpoint_step == 6


# ----- a run moved without its data, and data moved again --------------------------------------------------------
@pytest.mark.parametrize("kind", ["npy", "imagefolder"])
def test_a_relocated_run_moved_alone_still_reads_its_data(pristine, tmp_path, capsys, kind):
    proj = _copy_project(pristine, tmp_path / "a" / "proj")
    run, new = proj / "runs" / kind, proj / "data" / KINDS[kind][0]
    assert _resume_cli(capsys, run, new)[0] == 0
    elsewhere = tmp_path / "elsewhere" / "run"
    elsewhere.parent.mkdir()
    shutil.move(str(run), str(elsewhere))
    _every_reader_works(capsys, elsewhere, tmp_path)


@pytest.mark.parametrize("kind", ["npy", "csv_header", "imagefolder", "cifar10"])
def test_a_second_move_is_pointed_again(pristine, tmp_path, capsys, kind):
    proj = _copy_project(pristine, tmp_path / "a" / "proj")
    run, first = proj / "runs" / kind, proj / "data" / KINDS[kind][0]
    assert _resume_cli(capsys, run, first)[0] == 0
    second = tmp_path / "b c" / "dätä" / KINDS[kind][0]
    second.parent.mkdir(parents=True)
    shutil.move(str(first), str(second))
    code, _, err = cli(capsys, "eval", run)
    assert code == 2 and "--resume --data" in err, err
    code, out, err = _resume_cli(capsys, run, second)
    assert code == 0, err
    assert _info(run)["relocated"] == str(second.resolve())
    _every_reader_works(capsys, run, tmp_path)


@pytest.mark.parametrize("kind", ["npy", "csv_plain", "imagefolder", "cifar10"])
def test_data_reached_through_a_symlink(pristine, tmp_path, capsys, kind):
    proj = _copy_project(pristine, tmp_path / "a" / "proj")
    run, new = proj / "runs" / kind, proj / "data" / KINDS[kind][0]
    link = tmp_path / f"link {kind}{new.suffix}"
    link.symlink_to(new, target_is_directory=new.is_dir())
    code, _, err = _resume_cli(capsys, run, link)
    assert code == 0, err
    assert Path(_info(run)["relocated"]).resolve() == new.resolve()
    _every_reader_works(capsys, run, tmp_path)


@pytest.mark.parametrize("kind", ["npy", "imagefolder"])
def test_a_tilde_path_is_expanded_when_recorded(pristine, tmp_path, capsys, monkeypatch, kind):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    proj = _copy_project(pristine, tmp_path / "home" / "proj")
    run = proj / "runs" / kind
    code, _, err = _resume_cli(capsys, run, f"~/proj/data/{KINDS[kind][0]}")
    assert code == 0, err
    assert _info(run)["relocated"] == str((proj / "data" / KINDS[kind][0]).resolve())
    _every_reader_works(capsys, run, tmp_path)


@pytest.mark.parametrize("kind", ["npy", "imagefolder"])
def test_a_moved_copy_with_other_bytes_is_refused(pristine, tmp_path, capsys, kind):
    proj = _copy_project(pristine, tmp_path / "a" / "proj")
    run, new = proj / "runs" / kind, proj / "data" / KINDS[kind][0]
    if new.is_dir():
        (new / "cat" / "extra.png").write_bytes((new / "cat" / "0.png").read_bytes())
    else:
        np.save(new, np.zeros((200, 2), np.float32))
    code, _, err = _resume_cli(capsys, run, new)
    assert code == 2, err
    assert "relocated" not in _info(run)


# ----- compare: a relocated run and one that was not, on the same data -------------------------------------------
@pytest.mark.parametrize("kind", ["npy", "imagefolder"])
def test_compare_a_relocated_run_with_unrelocated_ones_on_the_same_data(pristine, tmp_path, capsys, kind):
    proj = _copy_project(pristine, tmp_path / HOME / "proj")
    run, new = proj / "runs" / kind, proj / "data" / KINDS[kind][0]
    untouched = tmp_path / "untouched"
    shutil.copytree(run, untouched)  # the same run, never relocated (its stored path is gone)
    assert _resume_cli(capsys, run, new)[0] == 0
    fresh = proj / "runs" / f"{kind}_fresh"  # trained directly on the moved data
    code, _, err = cli(capsys, *_train_cmd(kind, fresh, new))
    assert code == 0, err
    for pair in ((run, untouched), (run, fresh), (untouched, fresh)):
        code, out, err = cli(capsys, "compare", *pair)
        assert code == 0, err
        ebmlab.compare(list(pair))
    code, out, err = cli(capsys, "compare", run, fresh, "--out", tmp_path / "cmp")  # the figure reads the held-out data
    assert code == 0, err
    assert "cannot be read" not in out + err


# ----- data inside the run: a copy reads its own copy ------------------------------------------------------------
# WAS A BUG: a run pointed with --resume --data to its own data.npy records that absolute path; a copy then reads the original's file, not its own
def test_a_copy_of_a_run_relocated_to_its_own_data_npy_reads_its_own_copy(pristine, tmp_path, capsys):
    proj = _copy_project(pristine, tmp_path / HOME / "proj")
    run = proj / "runs" / "mem"
    code, _, err = _resume_cli(capsys, run, run / "data.npy")  # what a user may do after a move
    assert code == 0, err
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    np.save(run / "data.npy", np.zeros((5, 2), np.float32))  # the original's data replaced: not the copy's business
    code, _, err = cli(capsys, "eval", copy)
    assert code == 0, err


# WAS A BUG: --resume --data MOVED with other bytes is refused as "--resume cannot change data.path ... only train.steps ... may change", not as data whose SHA-256 differs from the run's
def test_a_moved_copy_with_other_bytes_is_refused_naming_the_bytes(pristine, tmp_path, capsys):
    proj = _copy_project(pristine, tmp_path / "a" / "proj")
    run, new = proj / "runs" / "npy", proj / "data" / "v.npy"
    np.save(new, np.zeros((200, 2), np.float32))
    code, _, err = _resume_cli(capsys, run, new)  # the advice of the missing-file error, followed
    assert code == 2, err
    assert "SHA-256" in err or "fingerprint" in err or "other bytes" in err or "other data" in err, err


def test_cifar_pointed_to_its_inner_batches_folder_is_refused_by_the_listing_rule(pristine, tmp_path, capsys):
    """Trained on ``cifar`` (the parent of ``cifar-10-batches-py``): the inner folder holds the same batches, but its
    listing (relative paths) differs, so by README's rule (a folder: the same listing fingerprint) it is refused."""
    proj = _copy_project(pristine, tmp_path / "a" / "proj")
    run, new = proj / "runs" / "cifar10", proj / "data" / "cifar" / "cifar-10-batches-py"
    code, _, err = _resume_cli(capsys, run, new)
    assert code == 2, err
    assert "relocated" not in _info(run)
    assert _resume_cli(capsys, run, new.parent)[0] == 0  # the folder itself is taken


@pytest.mark.parametrize("kind", ["npy", "imagefolder"])
@pytest.mark.parametrize("how", ["train", "resume"])
def test_api_a_tilde_data_path_is_expanded_when_recorded(pristine, tmp_path, monkeypatch, kind, how):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    proj = _copy_project(pristine, tmp_path / "home" / "proj")
    run, name = proj / "runs" / kind, KINDS[kind][0]
    _, opts, config = KINDS[kind]
    if how == "train":
        ebmlab.train(data=f"~/proj/data/{name}", out=run, resume=True, config=config, overrides=opts, evaluate=False)
    else:
        ebmlab.resume(run, overrides=[f"data.path=~/proj/data/{name}"], evaluate=False)
    assert _info(run)["relocated"] == str((proj / "data" / name).resolve())
    ebmlab.load(run).evaluate()


@pytest.mark.parametrize("kind", ["npy", "npz_images", "cifar10"])
def test_resume_auto_with_the_new_data_relocates(pristine, tmp_path, capsys, kind):
    proj = _copy_project(pristine, tmp_path / HOME / "proj")
    run, new = proj / "runs" / kind, proj / "data" / KINDS[kind][0]
    code, out, err = cli(capsys, "train", "--out", run, "--resume", "auto", "--data", new, "--set", "train.steps=4")
    assert code == 0, err
    assert _info(run)["relocated"] == str(new.resolve())
    _, opts, config = KINDS[kind]
    ebmlab.train(data=new, out=run, resume="auto", config=config, overrides=[*opts, "train.steps=6"], evaluate=False)
    assert ebmlab.load(run).checkpoint_step == 6


@pytest.mark.parametrize("kind", ["csv_header", "imagefolder", "cifar10"])
def test_naming_the_stored_path_again_points_the_run_back(pristine, tmp_path, capsys, kind):
    proj = _copy_project(pristine, tmp_path / HOME / "proj")
    run, new = proj / "runs" / kind, proj / "data" / KINDS[kind][0]
    assert _resume_cli(capsys, run, new)[0] == 0
    stored = Path(_yaml_data_path(run))
    home1 = stored.parents[2]  # <module tmp>/home1: recreated for this test only
    try:
        stored.parent.mkdir(parents=True)
        (shutil.copytree if new.is_dir() else shutil.copy)(new, stored)
        code, out, err = _resume_cli(capsys, run, stored)
        assert code == 0, err
        assert "relocated" not in _info(run) and "again" in out, out
        _every_reader_works(capsys, run, tmp_path)
    finally:
        shutil.rmtree(home1, ignore_errors=True)


# WAS A BUG: (same cause, no move at all) ebmlab.train(data=<the run's own rows>, out="../a/runs/m", resume=True) from another cwd is refused: data.path compared unnormalised
def test_in_memory_data_resumed_through_another_spelling_of_the_run_path(tmp_path, monkeypatch):
    rows = np.random.default_rng(4).normal(size=(120, 2)).astype(np.float32)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    ebmlab.train(data=rows, out="runs/m", overrides=VEC, evaluate=False)
    ebmlab.train(data=rows, out="runs/m", resume=True, overrides=[*VEC, "train.steps=6"], evaluate=False)  # accepted
    monkeypatch.chdir(tmp_path / "b")
    ebmlab.train(data=rows, out="../a/runs/m", resume=True, overrides=[*VEC, "train.steps=8"], evaluate=False)
    assert ebmlab.load(tmp_path / "a" / "runs" / "m").checkpoint_step == 8
