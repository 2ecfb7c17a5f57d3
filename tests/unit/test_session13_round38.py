"""Round 38: an audit of the thirteenth session's code (``git diff 01b4123^ f8dcc43 -- src``): atomic sets of files,
short temp names, ``~`` expansion, checkpoints' data fingerprints, relocated data files, the caller's RNG, the
errors' base and pickling, a comment after a quoted ``#`` (``config._QUOTED``).

One tiny run on a user .npy is trained once (module fixture); every test works on its own copy. Tests marked
``# WAS A BUG`` failed on the code as audited (commit ``f8dcc43``) and pass with the fourteenth session's fixes
(docs/testing.md "Thirty-eighth round").
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import pwd
import shutil
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab import errors
from ebmlab.cli import _path, main
from ebmlab.files import atomic_write, atomic_write_all, temp_path, user_path
from tests.cli_helpers import cli, sets

TINY = ["train.steps=6", "train.checkpoint_every=2", "model.width=16", "model.depth=1", "eval.n_samples=32",
        "eval.plots=false", "eval.long_run_factor=1", "eval.grid_size=8", "train.progress=false", "method.n_steps=3",
        "method.n_steps_data=2", "train.threads=1", "train.select_every=null"]


def _sets(*extra: str) -> list[str]:
    return sets(TINY, *extra)


def _rows(seed: int, shift: float = 0.0) -> np.ndarray:
    return (shift + np.random.default_rng(seed).normal(size=(300, 2))).astype(np.float32)


def _info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["data"]


def _yaml_data_path(run: Path) -> str:
    from ebmlab.config_files import yaml_load
    return yaml_load((run / "config.yaml").read_text(encoding="utf-8"), "config.yaml")["data"]["path"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """base/run: a 6-update run trained by ``ebmlab train --data base/a.npy`` (no validation checks)."""
    root = tmp_path_factory.mktemp("round38")
    np.save(root / "a.npy", _rows(0))
    with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")):
        warnings.simplefilter("ignore")
        assert main(["train", "--out", str(root / "run"), "--data", str(root / "a.npy"), *_sets()]) == 0
    return root


@pytest.fixture
def run(base, tmp_path):
    shutil.copytree(base / "run", tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ----- relocated data files ------------------------------------------------------------------------------------
# WAS A BUG: once relocated, --resume --data <the stored path> cannot point the run back: the stale 'relocated' wins
def test_a_relocated_run_can_be_pointed_back_to_its_original_path(base, run, tmp_path, capsys):
    copy = tmp_path / "elsewhere" / "a.npy"
    copy.parent.mkdir()
    shutil.copy(base / "a.npy", copy)
    code, out, err = cli(capsys, "train", "--out", run, "--resume", "--data", copy, *_sets())
    assert code == 0 and "moved from" in out, err
    assert _info(run)["relocated"] == str(copy.resolve())
    np.save(copy, _rows(9, shift=4.0))  # the copy is reused for something else; the original never changed
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--data", base / "a.npy", *_sets())
    assert code == 0, err  # the user names the stored path, whose bytes are the run's: it is read again
    assert _info(run).get("relocated") in (None, str((base / "a.npy").resolve()))


def test_a_second_relocation_replaces_the_first_and_config_yaml_keeps_the_stored_path(base, run, tmp_path, capsys):
    stored = _yaml_data_path(run)
    for k in (1, 2):
        moved = tmp_path / f"m{k}" / "a.npy"
        moved.parent.mkdir()
        shutil.copy(base / "a.npy", moved)
        code, out, err = cli(capsys, "train", "--out", run, "--resume", "--data", moved, *_sets())
        assert code == 0 and f"moved from {stored}" in out, err
        assert _info(run)["relocated"] == str(moved.resolve())
        assert _yaml_data_path(run) == stored
    shutil.rmtree(tmp_path / "m1")
    assert "sample_energy_distance" in ebmlab.load(run).evaluate()  # read at m2


def test_resume_with_data_equal_to_the_stored_path_records_nothing(base, run, capsys):
    before = (run / "run.json").read_bytes()
    code, out, err = cli(capsys, "train", "--out", run, "--resume", "--data", base / "a.npy", *_sets())
    assert code == 0, err
    assert "moved from" not in out
    assert (run / "run.json").read_bytes() == before


# WAS A BUG: ebmlab.resume writes run.json's 'relocated' before check_resume_changes refuses another key
def test_a_refused_python_resume_with_a_moved_file_writes_nothing(base, run, tmp_path):
    moved = tmp_path / "b.npy"
    shutil.copy(base / "a.npy", moved)
    before = (run / "run.json").read_bytes()
    with pytest.raises(errors.ConfigError, match="model.width"):
        ebmlab.resume(run, overrides=[f"data.path={moved}", "model.width=32"], evaluate=False)
    assert (run / "run.json").read_bytes() == before  # "raise one-sentence errors ... before anything is written"


# WAS A BUG: `train --resume --data NEW` rewrites run.json (and says "recorded") even when the run is locked by a live trainer
def test_a_relocation_into_a_run_in_use_changes_nothing(base, run, tmp_path, capsys):
    moved = tmp_path / "b.npy"
    shutil.copy(base / "a.npy", moved)
    before = (run / "run.json").read_bytes()
    fd = os.open(run / "run.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another trainer holds the run
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        code, out, err = cli(capsys, "train", "--out", run, "--resume", "--data", moved, *_sets("train.steps=8"))
    finally:
        os.close(fd)
    assert code == 2 and "in use" in err, err
    assert "recorded in run.json" not in out
    assert (run / "run.json").read_bytes() == before


# WAS A BUG: ebmlab.train(data=NEW, out=RUN, resume=True) refuses the moved file that `ebmlab train --resume --data NEW` accepts
def test_python_train_resume_accepts_a_moved_data_file_as_the_command_line_does(base, run, tmp_path):
    moved = tmp_path / "b.npy"
    shutil.copy(base / "a.npy", moved)
    ebmlab.train("hybrid", data=str(moved), out=run, resume=True, overrides=TINY + ["train.steps=8"], evaluate=False)
    assert (run / "checkpoints" / "step_00000008.safetensors").is_file()
    assert _info(run)["relocated"] == str(moved.resolve())


# WAS A BUG: a '~' data.path given to ebmlab.resume (or --set) is compared unexpanded: a relocation to ~/x is refused
def test_a_relocation_given_with_a_tilde_is_expanded(base, run, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(base / "a.npy", tmp_path / "b.npy")
    ebmlab.resume(run, overrides=["data.path=~/b.npy"], evaluate=False)
    assert _info(run)["relocated"] == str((tmp_path / "b.npy").resolve())


def test_relocation_of_a_data_folder_by_its_listing(run, tmp_path):
    from ebmlab.data.arrays import folder_fingerprint
    from ebmlab.training.run import read_run_config
    from ebmlab.training.run_data import located_config, read_run_info, record_relocation, relocation

    old, new = tmp_path / "old", tmp_path / "new"
    (old / "c").mkdir(parents=True)
    (old / "c" / "x.png").write_bytes(b"12345")
    shutil.copytree(old, new)
    info = json.loads((run / "run.json").read_text())
    info["data"].update(sha256=None, listing_sha256=folder_fingerprint(old))
    (run / "run.json").write_text(json.dumps(info))
    cfg = read_run_config(run)
    import dataclasses
    asked = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(new)))
    got, place = relocation(run, asked, str(old))
    assert got.data.path == str(old) and place == str(new.resolve())  # the identity keeps the stored folder
    assert "relocated" not in read_run_info(run)["data"]  # written only once the resume has started
    record_relocation(run, place)
    assert read_run_info(run)["data"]["relocated"] == str(new.resolve())
    assert located_config(run, got, read_run_info(run)).data.path == str(new.resolve())
    (new / "c" / "y.png").write_bytes(b"1")  # another listing: not recorded
    other = tmp_path / "other"
    shutil.copytree(new, other)
    asked = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(other)))
    with pytest.raises(errors.DataError, match="listing of names and sizes differs"):  # (round 41: said as such)
        relocation(run, asked, str(old))


def test_checkpoints_before_and_after_a_relocation_share_the_fingerprint(base, run, tmp_path, capsys):
    moved = tmp_path / "b.npy"
    shutil.copy(base / "a.npy", moved)
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--data", moved, *_sets("train.steps=8"))
    assert code == 0, err
    shas = {json.loads(p.read_text()).get("data_sha256") for p in (run / "checkpoints").glob("step_*.json")}
    assert shas == {_info(run)["sha256"]}
    for ck in (4, 8):
        assert ebmlab.load(run, checkpoint=ck).checkpoint_step == ck


# ----- '~' in paths --------------------------------------------------------------------------------------------
# WAS A BUG: --set data.path=~/x.npy trains, but config.yaml keeps '~/x.npy' and run.json '<cwd>/~/x.npy' without a SHA-256:
# `ebmlab eval` then says the file does not exist
def test_a_data_path_override_with_a_tilde_gives_a_run_that_evaluates(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    np.save(tmp_path / "home" / "x.npy", _rows(0))
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "train", "--out", tmp_path / "r", *_sets("data.name=array", "data.path=~/x.npy"))
    assert code == 0, err
    assert _info(tmp_path / "r")["path"] == str((tmp_path / "home" / "x.npy").resolve())
    assert _info(tmp_path / "r")["sha256"] is not None
    code, _, err = cli(capsys, "eval", tmp_path / "r")
    assert code == 0, err


# WAS A BUG: ebmlab.train(overrides=["data.path=~/x.npy"]) stored the '~' unexpanded (the same as the CLI's --set)
def test_the_python_api_stores_a_tilde_data_path_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    np.save(tmp_path / "home" / "x.npy", _rows(0))
    run = ebmlab.train("hybrid", out=tmp_path / "r", evaluate=False,
                       overrides=TINY + ["data.name=array", "data.path=~/x.npy"])
    assert _yaml_data_path(run.path) == str(tmp_path / "home" / "x.npy")
    assert _info(run.path)["sha256"] is not None


# WAS A BUG: run.json's readers took a stored '~/x.npy' literally: the file "did not exist"
def test_a_run_written_with_a_tilde_data_path_still_evaluates(tmp_path, monkeypatch, capsys):
    """Runs written before the fix store '~/x.npy' in config.yaml and '<cwd>/~/x.npy' without a SHA-256 in run.json:
    every reader expands the '~' (the hash keeps the stored text, so the config is not rewritten)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    np.save(tmp_path / "home" / "x.npy", _rows(0))
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "train", "--out", tmp_path / "r", *_sets("data.name=array", "data.path=~/x.npy"))[0] == 0
    cfg_file, info_file = tmp_path / "r" / "config.yaml", tmp_path / "r" / "run.json"
    cfg_file.write_text(cfg_file.read_text().replace(str(tmp_path / "home" / "x.npy"), "~/x.npy"))
    info = json.loads(info_file.read_text())
    info["data"].update(path=str(tmp_path / "~" / "x.npy"), sha256=None)
    info_file.write_text(json.dumps(info))
    from ebmlab.training.run import read_run_config
    old_hash = read_run_config(tmp_path / "r").run_hash()  # the hash of the stored '~' text, as the old code wrote it
    info["config_hash"] = old_hash
    info_file.write_text(json.dumps(info))
    for ck in (tmp_path / "r" / "checkpoints").glob("step_*.json"):
        meta = json.loads(ck.read_text())
        meta.update(config_hash=old_hash, config=yaml_safe(cfg_file))
        meta.pop("data_sha256", None)
        ck.write_text(json.dumps(meta))
    code, _, err = cli(capsys, "eval", tmp_path / "r")
    assert code == 0, err
    assert cli(capsys, "sample", tmp_path / "r", "--init", "data", "--n", "8", "--out", tmp_path / "s.npy")[0] == 0


def yaml_safe(path: Path) -> dict:
    import yaml
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_the_resumed_line_says_where_the_data_are_read(base, run, tmp_path, capsys):
    moved = tmp_path / "b.npy"
    shutil.copy(base / "a.npy", moved)
    code, out, err = cli(capsys, "train", "--out", run, "--resume", "--data", moved, *_sets())
    assert code == 0, err
    assert f"its data file read at {moved.resolve()} (moved from {_yaml_data_path(run)}" in out
    code, out, err = cli(capsys, "train", "--out", run, "--resume", "--data", base / "a.npy", *_sets())
    assert code == 0 and "again (the moved copy forgotten)" in out, err
    assert "relocated" not in _info(run)


def test_user_path_forms():
    root_home = pwd.getpwnam("root").pw_dir
    assert user_path("~root/x") == Path(root_home) / "x"
    assert user_path("a/~/b") == Path("a/~/b")  # only a leading ~ is the home
    assert user_path("x~") == Path("x~")
    assert user_path(Path("~/r")) == Path(os.path.expanduser("~/r"))
    assert "~" not in str(user_path("~"))
    assert _path("~root/y") == os.path.join(root_home, "y") and _path("a/~") == "a/~"


def test_load_and_compare_expand_a_tilde(base, run, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(run.parent))
    assert ebmlab.load("~/run").path == run
    with pytest.raises(errors.RunNotFound):
        ebmlab.load("~/nothing")


# ----- atomic sets of files and temp names -----------------------------------------------------------------------
def test_atomic_write_all_with_one_file(tmp_path):
    atomic_write_all([(tmp_path / "one", lambda p: p.write_bytes(b"1"))])
    assert (tmp_path / "one").read_bytes() == b"1" and os.listdir(tmp_path) == ["one"]


# WAS A BUG: the same path twice writes the file and then raises FileNotFoundError on the temp's second rename
def test_atomic_write_all_with_the_same_path_twice_is_refused_before_writing_or_writes_the_last(tmp_path):
    (tmp_path / "a").write_bytes(b"old")
    try:
        atomic_write_all([(tmp_path / "a", lambda p: p.write_bytes(b"1")), (tmp_path / "a", lambda p: p.write_bytes(b"2"))])
    except ValueError:
        assert (tmp_path / "a").read_bytes() == b"old"
    else:
        assert (tmp_path / "a").read_bytes() == b"2"
    assert os.listdir(tmp_path) == ["a"]


def test_atomic_write_all_a_failed_second_write_keeps_the_old_pair_and_names_the_file(tmp_path):
    (tmp_path / "x").write_bytes(b"old1")
    (tmp_path / "y").write_bytes(b"old2")

    def full(p):
        p.write_bytes(b"partial")
        raise OSError(28, "No space left on device", str(p))
    with pytest.raises(OSError) as exc:
        atomic_write_all([(tmp_path / "x", lambda p: p.write_bytes(b"new1")), (tmp_path / "y", full)])
    assert exc.value.filename == str(tmp_path / "y")
    assert (tmp_path / "x").read_bytes() == b"old1" and (tmp_path / "y").read_bytes() == b"old2"
    assert sorted(os.listdir(tmp_path)) == ["x", "y"]


def test_atomic_write_all_a_kill_between_the_renames_leaves_half_a_new_pair(tmp_path, monkeypatch):
    (tmp_path / "x").write_bytes(b"old1")
    (tmp_path / "y").write_bytes(b"old2")
    real, calls = os.replace, []

    def replace(a, b):
        calls.append(b)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(a, b)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_all([(tmp_path / "x", lambda p: p.write_bytes(b"new1")),
                          (tmp_path / "y", lambda p: p.write_bytes(b"new2"))])
    assert (tmp_path / "x").read_bytes() == b"new1" and not (tmp_path / "y").exists()  # never new1 beside old2
    assert os.listdir(tmp_path) == ["x"]


# WAS A BUG: a 252-byte name of 4-byte characters gets a 271-byte temp name (64 characters kept, not 64 bytes): ENAMETOOLONG
def test_a_long_name_of_four_byte_characters_gets_a_temp_name_that_fits(tmp_path):
    name = "\U0001F600" * 62 + ".npy"  # 252 bytes: its own name fits, NAME.tmp does not
    assert len(os.fsencode(temp_path(tmp_path / name).name)) <= 255
    atomic_write(tmp_path / name, lambda p: p.write_bytes(b"x"))
    assert (tmp_path / name).read_bytes() == b"x"


def test_long_names_sharing_a_prefix_get_different_temp_names(tmp_path):
    a, b = tmp_path / ("p" * 252 + ".a"), tmp_path / ("p" * 252 + ".b")
    ta, tb = temp_path(a), temp_path(b)
    assert ta != tb and ta.name.endswith(".tmp") and len(os.fsencode(ta.name)) <= 255
    assert temp_path(tmp_path / "m.json").name.endswith(".m.json.tmp")  # (a hidden name of its own: round 39)
    cjk = tmp_path / ("\u6f22" * 83 + ".np")  # 251 bytes
    assert len(os.fsencode(temp_path(cjk).name)) <= 255


# ----- the caller's RNG ------------------------------------------------------------------------------------------
def test_an_error_inside_training_gives_the_callers_rng_back(tmp_path, monkeypatch):
    import ebmlab.api as api

    def fit(*a, **k):
        torch.rand(5)
        raise RuntimeError("stopped in the test")
    monkeypatch.setattr(api, "_fit_in", fit)
    torch.manual_seed(123)
    want = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="stopped in the test"):
        ebmlab.train("hybrid", out=tmp_path / "r", overrides=TINY, evaluate=False)
    assert not torch.cuda.is_initialized()
    assert torch.equal(torch.get_rng_state(), want)


def test_load_of_a_missing_checkpoint_gives_the_callers_rng_back(run):
    torch.manual_seed(7)
    want = torch.get_rng_state()
    with pytest.raises(errors.CheckpointError):
        ebmlab.load(run, checkpoint=999)
    run_ = ebmlab.load(run)
    assert torch.equal(torch.get_rng_state(), want) and run_.checkpoint_step == 6


# ----- errors ----------------------------------------------------------------------------------------------------
def test_every_ebmlab_error_subclass_survives_pickle_with_its_bases():
    from ebmlab.data.images import MissingDataPath
    from ebmlab.metrics.inception import InceptionWeightsMissing

    for cls in (errors.ConfigError, errors.DataError, errors.CheckpointError, errors.DistributedError,
                errors.TrainingDiverged, errors.RunError, errors.ExperimentError, errors.RunNotFound,
                InceptionWeightsMissing, MissingDataPath):
        e = pickle.loads(pickle.dumps(cls("one sentence")))
        assert type(e) is cls and str(e) == "one sentence" and isinstance(e, errors.EbmlabError)
    e = pickle.loads(pickle.dumps(errors.TrainingStopped("stopped", step=4, run_dir=Path("r"))))
    assert (str(e), e.step, e.run_dir) == ("stopped", 4, Path("r"))
    assert isinstance(pickle.loads(pickle.dumps(errors.RunNotFound("x"))), FileNotFoundError)


# ----- '#' in --set values ---------------------------------------------------------------------------------------
def test_a_hash_quoted_in_a_string_or_a_list_is_the_values():
    from ebmlab.config import parse_override
    assert parse_override('data.name="a #b"')[1] == "a #b"
    assert parse_override('eval.ood=["a #b", c]')[1] == ["a #b", "c"]
    with pytest.raises(errors.ConfigError, match="comment"):
        parse_override("model.hidden=[1, 2] # two layers")


# WAS A BUG: a quoted '#' makes _holds_hash true, so a real comment after the quotes is dropped silently
def test_a_comment_after_a_quoted_hash_is_still_refused():
    from ebmlab.config import parse_override
    with pytest.raises(errors.ConfigError, match="comment"):
        parse_override('data.name="x #1" # the first one')


# ----- checkpoint advice -----------------------------------------------------------------------------------------
def test_resume_advice_replaces_the_checkpoint_option():
    from ebmlab.training.checkpoint import OTHER_CHECKPOINT, RESUME_ADVICE, for_resume
    e = for_resume(errors.CheckpointError(f"checkpoint 'x' holds NaN; {OTHER_CHECKPOINT}"))
    assert isinstance(e, errors.CheckpointError) and RESUME_ADVICE in str(e) and "--checkpoint" not in str(e)
