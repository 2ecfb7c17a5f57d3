"""Known answers for file safety (a mutation check, docs/testing.md, round 4): a directory of the user's files that
merely holds a config.yaml is refused, the run lock is held while training, an interrupted atomic write keeps the
old file, an experiment refuses a directory of any other files, and ``sample --out`` never writes into a run's
data folder. Each failed under a planted one-line bug that the other tests let through or caught only by timing."""
from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import assert_one_sentence, cli, sets, snapshot


def test_new_run_refuses_a_directory_with_a_users_config_yaml_and_other_files(trained_root, tmp_path, capsys):
    """M02: a directory holding config.yaml next to the user's own files is not 'an earlier start without a
    checkpoint'; it is refused and nothing in it changes (not even config.yaml)."""
    v = tmp_path / "mine"
    v.mkdir()
    (v / "config.yaml").write_text("my: own config\n")
    (v / "thesis.tex").write_text("precious")
    before = snapshot(v)
    code, _, err = cli(capsys, "train", "--out", v, "--data", trained_root / "points.npy", *sets())
    assert_one_sentence(code, err, "already exists")
    assert snapshot(v) == before


def test_new_run_lock_is_held_until_released(tmp_path):
    """M03/M04: the lock that prepare_run_dir returns for a new run excludes a second locker until release()."""
    from ebmlab.config import Config
    from ebmlab.errors import RunError
    from ebmlab.training.run import LOCK_NAME, RunLock
    from ebmlab.training.run_dir import prepare_run_dir
    out = tmp_path / "run"
    lock = prepare_run_dir(out, Config(), resume=False, overwrite=False)
    try:
        assert (out / LOCK_NAME).is_file()
        with pytest.raises(RunError, match="in use"):
            RunLock.acquire(out)
    finally:
        lock.release()
    RunLock.acquire(out).release()  # free again after release()


def test_atomic_write_failure_keeps_the_previous_file(tmp_path):
    """M05: a write that fails half-way leaves the previous file as it was and no temp file."""
    from ebmlab.files import atomic_write
    target = tmp_path / "config.yaml"
    target.write_text("old complete content\n")

    def broken(p):
        Path(p).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old complete content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_claim_out_refuses_a_directory_of_any_other_files(tmp_path):
    """M10: _claim_out refuses a non-empty directory whatever its files are called, and writes no marker."""
    import ebmlab.experiments as ex
    from ebmlab.errors import ConfigError
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="holds other files"):
        ex._claim_out(mine, "paper004")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_sample_out_never_writes_into_the_runs_data_folder(tmp_path):
    """M11: with a data folder (imagefolder runs), an --out inside that folder is refused, not only the folder."""
    import dataclasses

    from ebmlab.cli_commands import _not_the_runs_data
    from ebmlab.config import Config, save_config
    folder = tmp_path / "images"
    (folder / "cats").mkdir(parents=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = Config()
    save_config(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(folder))), run_dir / "config.yaml")
    with pytest.raises(ValueError, match="would write into the run's data"):
        _not_the_runs_data(run_dir, [folder / "cats" / "samples.npy"])
    _not_the_runs_data(run_dir, [tmp_path / "elsewhere.npy"])  # outside the folder: fine


def test_cli_train_holds_the_lock_while_training(trained_root, tmp_path, monkeypatch, capsys):
    """M04: `ebmlab train` keeps the run lock from prepare_run_dir until training and evaluation are done."""
    import ebmlab.cli_commands as cc
    from ebmlab.errors import RunError
    from ebmlab.training.run import RunLock
    seen = []

    def fake_fit(args, run_dir, ctx, trainer):
        try:
            RunLock.acquire(run_dir).release()
            seen.append("free")
        except RunError:
            seen.append("held")
        return 0
    monkeypatch.setattr(cc, "_fit_and_evaluate", fake_fit)
    code, _, err = cli(capsys, "train", "--out", tmp_path / "run", "--data", trained_root / "points.npy", *sets())
    assert code == 0, err
    assert seen == ["held"]
