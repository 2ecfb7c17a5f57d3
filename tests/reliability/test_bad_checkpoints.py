"""Damaged or foreign checkpoints and run files: ``sample``/``eval``/``--resume`` give one sentence and
exit 2, and the Python API (``ebmlab.load``, ``open_checkpoint``) raises ebmlab's own errors."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import ebmlab
from ebmlab import errors
from ebmlab.training.run import open_checkpoint

from .conftest import assert_one_sentence, cli, latest, opened, snapshot


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _edit_tensors(path, fn):
    t = load_file(str(path))
    save_file(fn(t), str(path))
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["tensor_bytes"] = path.stat().st_size
    side.write_text(json.dumps(meta))


def _edit_sidecar(path, fn):
    side = path.with_suffix(".json")
    side.write_text(fn(json.loads(side.read_text())))


def _nan_weights(t):
    k = next(k for k in t if k.startswith("model.") and t[k].is_floating_point() and t[k].dim() == 2)
    t[k] = t[k].clone()
    t[k][0, 0] = float("nan")
    return t


def _break(case: str, run, trained_root, marker, resume: bool = False):
    """Damage ``run`` as ``case`` says (its checkpoint: the one ``--resume`` continues from, or the one
    ``sample`` / ``eval`` / ``ebmlab.load`` open, the validation best of a ``--data`` run); the needle its
    error must contain."""
    ck = latest(run) if resume else opened(run)
    if case == "list sidecar":
        _edit_sidecar(ck, lambda m: json.dumps([m]))
        return "sidecar"
    if case == "malformed sidecar":
        ck.with_suffix(".json").write_text('{"step": 2, "optim')
        return "not valid JSON"
    if case == "sidecar step is text":
        _edit_sidecar(ck, lambda m: json.dumps({**m, "step": "two"}))
        return "step"
    if case == "sidecar without config hash":
        _edit_sidecar(ck, lambda m: json.dumps({k: v for k, v in m.items() if k != "config_hash"}))
        return "config_hash"
    if case == "sidecar config hash tampered":
        _edit_sidecar(ck, lambda m: json.dumps({**m, "config_hash": "0123456789abcdef"}))
        return "another config"
    if case == "wrong tensor names":
        _edit_tensors(ck, lambda t: {k.replace("model.", "model.x", 1): v for k, v in t.items()})
        return "does not fit"
    if case == "nan weights":
        _edit_tensors(ck, _nan_weights)
        return "NaN"
    if case == "inf ema weights":
        def inf(t):
            k = next(k for k in t if k.startswith("ema."))
            t[k] = torch.full_like(t[k], float("inf"))
            return t
        _edit_tensors(ck, inf)
        return "NaN or inf"
    if case == "checkpoint of another method":
        other = latest(trained_root / "other")
        shutil.copy(other, ck)
        shutil.copy(other.with_suffix(".json"), ck.with_suffix(".json"))
        return "another config"
    if case == "config.yaml edited (width)":
        p = run / "config.yaml"
        p.write_text(p.read_text().replace("width: 8", "width: 16"))
        return "another config"
    if case == "config.yaml is a list":
        (run / "config.yaml").write_text("- data\n- model\n")
        return "mapping"
    if case == "config.yaml malformed":
        (run / "config.yaml").write_text("train: {steps: [\n")
        return "not valid YAML"
    if case == "config.yaml section is a list":
        (run / "config.yaml").write_text("train: [1, 2]\n")
        return "mapping"
    if case == "config.yaml alias":
        (run / "config.yaml").write_text("a: &x {steps: 2}\ntrain: *x\n")
        return "alias"
    if case == "config.yaml python tag":
        (run / "config.yaml").write_text(f"train: !!python/object/apply:os.system ['touch {marker}']\n")
        return "YAML"
    if case == "pickle planted":
        ck.write_bytes(pickle.dumps(_Evil(marker)))
        return "not a safetensors file"
    if case == "truncated tensors":
        ck.write_bytes(ck.read_bytes()[:200])
        return "checkpoint"
    if case == "run.json damaged":
        (run / "run.json").write_text("[1, 2")
        return "run.json"
    if case == "no config.yaml":
        (run / "config.yaml").unlink()
        return "not an ebmlab run"
    if case == "no checkpoints":
        shutil.rmtree(run / "checkpoints")
        return "no checkpoint"
    raise AssertionError(case)


CASES = ["list sidecar", "malformed sidecar", "sidecar step is text", "sidecar without config hash",
         "sidecar config hash tampered",
         "wrong tensor names", "nan weights", "inf ema weights", "checkpoint of another method",
         "config.yaml edited (width)", "config.yaml is a list", "config.yaml malformed",
         "config.yaml section is a list", "config.yaml alias", "config.yaml python tag", "pickle planted",
         "truncated tensors", "run.json damaged", "no config.yaml", "no checkpoints"]


@pytest.mark.parametrize("command", ["sample", "eval", "resume"])
@pytest.mark.parametrize("case", CASES)
def test_damaged_run_is_one_sentence(case, command, run_copy, trained_root, tmp_path, capsys):
    marker = tmp_path / "executed"
    needle = _break(case, run_copy, trained_root, marker, resume=command == "resume")
    before = snapshot(run_copy)
    argv = {"sample": ["sample", run_copy, "--n", "4", "--steps", "1", "--out", tmp_path / "s.npy"],
            "eval": ["eval", run_copy],
            "resume": ["train", "--out", run_copy, "--resume", "--set", "train.steps=3"]}[command]
    code, _, err = cli(capsys, *argv)
    if command == "resume" and case in ("no config.yaml", "no checkpoints"):
        needle = "no checkpoint"
    assert_one_sentence(code, err, needle)
    assert not marker.exists()
    assert snapshot(run_copy) == before  # nothing written, nothing lost


API_CASES = ["list sidecar", "wrong tensor names", "nan weights", "checkpoint of another method",
             "config.yaml edited (width)", "config.yaml is a list", "config.yaml malformed", "pickle planted",
             "no config.yaml"]


@pytest.mark.parametrize("case", API_CASES)
def test_python_api_raises_library_errors(case, run_copy, trained_root, tmp_path):
    needle = _break(case, run_copy, trained_root, tmp_path / "executed")
    lib = (errors.ConfigError, errors.DataError, errors.CheckpointError, errors.RunError)
    with pytest.raises(lib, match="(?i)" + needle.replace("(", r"\(").replace(")", r"\)")):
        ebmlab.load(run_copy)
    with pytest.raises(lib):
        open_checkpoint(run_copy)


@pytest.mark.parametrize("device", ["banana", "cuda:99"])
def test_bad_device(device, run_copy, tmp_path, capsys):
    code, _, err = cli(capsys, "sample", run_copy, "--device", device, "--out", tmp_path / "s.npy")
    assert_one_sentence(code, err, "device")
    with pytest.raises(errors.ConfigError, match="device"):
        ebmlab.load(run_copy, device=device)


def test_missing_checkpoint_file(run_copy, capsys):
    code, _, err = cli(capsys, "eval", run_copy, "--checkpoint", run_copy / "nope.safetensors")
    assert_one_sentence(code, err, "does not exist")


def test_sample_out_under_a_file(run_copy, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("keep")
    code, _, err = cli(capsys, "sample", run_copy, "--out", f / "s.npy")
    assert_one_sentence(code, err, "is a file")
    assert f.read_text() == "keep"


def test_sample_out_names_the_file_it_writes(run_copy, tmp_path, capsys):
    """numpy appends .npy to any other name: --out s.csv used to write s.csv.npy and report s.csv."""
    import numpy as np
    for name, read in (("s.csv", lambda p: np.loadtxt(p, delimiter=",", ndmin=2)), ("t", None), ("u.npy", np.load)):
        code, out, _ = cli(capsys, "sample", run_copy, "--n", "3", "--steps", "1", "--out", tmp_path / name)
        path = tmp_path / (name if read else name + ".npy")
        assert code == 0 and f"wrote {path} and {path.with_suffix('.png')}" in out
        assert (read or np.load)(path).shape == (3, 2) and path.with_suffix(".png").is_file()
    assert not list(tmp_path.glob("*.csv.npy"))
    code, _, err = cli(capsys, "sample", run_copy, "--out", tmp_path / "s.txt")
    assert_one_sentence(code, err, "written as .npy or .csv")
    assert not (tmp_path / "s.txt").exists()


def test_sample_out_never_writes_over_the_runs_data(run_copy, trained_root, capsys):
    """``--out`` naming the run's own data file replaced the user's data with samples (and every later sample or eval
    of the run then refused the changed file)."""
    from ebmlab.training.run import read_run_config
    data = Path(read_run_config(run_copy).data.path)
    before = data.read_bytes()
    code, _, err = cli(capsys, "sample", run_copy, "--n", "3", "--steps", "1", "--out", data)
    assert_one_sentence(code, err, "would write into the run's data")
    assert data.read_bytes() == before and not data.with_suffix(".png").exists()
    assert cli(capsys, "sample", run_copy, "--n", "3", "--steps", "1", "--init", "data")[0] == 0  # still its data


def test_sample_out_never_replaces_a_users_files_without_overwrite(run_copy, tmp_path, capsys):
    """``--out FILE`` replaced an existing FILE, and the .png of the same name beside it, without a word."""
    import numpy as np
    mine = tmp_path / "s.npy"
    mine.write_bytes(b"mine")
    code, _, err = cli(capsys, "sample", run_copy, "--n", "3", "--steps", "1", "--out", mine)
    assert_one_sentence(code, err, "pass --overwrite")
    assert mine.read_bytes() == b"mine" and not (tmp_path / "s.png").exists()
    figure = tmp_path / "t.png"  # the .png beside FILE is the part the user did not name
    figure.write_bytes(b"figure")
    code, _, err = cli(capsys, "sample", run_copy, "--n", "3", "--steps", "1", "--out", tmp_path / "t.csv")
    assert_one_sentence(code, err, "t.png' already exists")
    assert figure.read_bytes() == b"figure" and not (tmp_path / "t.csv").exists()
    for out in (mine, tmp_path / "t.csv"):
        assert cli(capsys, "sample", run_copy, "--n", "3", "--steps", "1", "--out", out, "--overwrite")[0] == 0
    assert np.load(mine).shape == (3, 2) and np.loadtxt(tmp_path / "t.csv", delimiter=",").shape == (3, 2)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "s.png").is_file()
    for _ in range(2):  # the default file under RUN/samples is the run's own: a second draw rewrites it
        assert cli(capsys, "sample", run_copy, "--n", "3", "--steps", "1")[0] == 0


def test_sample_out_keeps_the_file_it_would_replace_when_the_write_fails(run_copy, tmp_path, capsys, monkeypatch):
    import numpy as np

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    mine = tmp_path / "out" / "s.npy"
    mine.parent.mkdir()
    np.save(mine, np.zeros(4))
    monkeypatch.setattr(np, "save", full_disk)
    code, _, err = cli(capsys, "sample", run_copy, "--n", "3", "--steps", "1", "--out", mine, "--overwrite")
    assert code != 0 and "No space left" in err
    monkeypatch.undo()
    assert np.array_equal(np.load(mine), np.zeros(4)) and [p.name for p in mine.parent.iterdir()] == ["s.npy"]


def test_sidecar_without_optimizer_blocks_only_resume(run_copy, tmp_path, capsys):
    _edit_sidecar(latest(run_copy), lambda m: json.dumps({k: v for k, v in m.items() if k != "optimizer"}))
    code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=3")
    assert_one_sentence(code, err, "lacks 'optimizer'")
    assert cli(capsys, "sample", run_copy, "--n", "3", "--steps", "1", "--out", tmp_path / "s.npy")[0] == 0


# ----- self-contained runs ----------------------------------------------------------------------------------
def test_run_works_from_any_directory_and_without_its_data(trained_root, tmp_path, monkeypatch, capsys):
    data = tmp_path / "pts.npy"
    shutil.copy(trained_root / "points.npy", data)
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "train", "--out", "run", "--data", "pts.npy",
               *[a for o in ["train.steps=2", "model.width=8", "data.n_train=256", "eval.n_samples=32",
                             "eval.grid_size=8", "eval.long_run_factor=1", "train.progress=false",
                             "eval.plots=false"] for a in ("--set", o)])[0] == 0
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["path"] == str(data.absolute()) and len(info["data"]["sha256"]) == 64
    assert len(info["transform"]["shift"]) == 2 and info["method"] == "hybrid"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    x = torch.from_numpy(np.load(data)[:5]).float()
    e1 = ebmlab.load(run)(x)
    assert cli(capsys, "sample", run, "--n", "5", "--steps", "2", "--out", "s.npy")[0] == 0
    assert cli(capsys, "eval", run)[0] == 0
    data.rename(tmp_path / "moved.npy")  # the data are gone: load and noise-start sampling still work
    torch.testing.assert_close(ebmlab.load(run)(x), e1)
    assert cli(capsys, "sample", run, "--n", "5", "--steps", "2", "--out", "s2.npy")[0] == 0
    code, _, err = cli(capsys, "eval", run)
    assert_one_sentence(code, err, "does not exist")
    assert str(data) in err


def test_changed_data_file_is_detected_and_named(trained_root, tmp_path, capsys):
    data = tmp_path / "pts.npy"
    shutil.copy(trained_root / "points.npy", data)
    run = tmp_path / "run"
    assert cli(capsys, "train", "--out", run, "--data", data, "--set", "train.steps=1", "--set", "model.width=8",
               "--set", "eval.n_samples=16", "--set", "eval.grid_size=8", "--set", "eval.long_run_factor=1",
               "--set", "train.progress=false", "--set", "eval.plots=false")[0] == 0
    x = np.load(data)
    x[0, 0] += 1.0
    np.save(data, x)
    for argv in (["sample", run, "--init", "data", "--out", tmp_path / "s.npy"], ["eval", run]):
        code, _, err = cli(capsys, *argv)
        assert_one_sentence(code, err, "has changed")
        assert str(data) in err
    # what does not read the data works, and says the file changed (the weights and transform do not depend on it)
    with pytest.warns(UserWarning, match="has changed since run .*; loaded without it"):
        assert cli(capsys, "sample", run, "--n", "3", "--steps", "1", "--out", tmp_path / "s.npy")[0] == 0
    with pytest.warns(UserWarning, match="has changed"):
        run_ = ebmlab.load(run)
    with pytest.raises(errors.DataError, match="has changed"):
        run_.sample(3, steps=1, init="data")


def test_sidecar_of_an_older_version_still_resumes(run_copy, capsys):
    """Sidecars written before issue 13 stored the hash of the full config; they still load and resume."""
    from ebmlab.config import Config  # noqa: F401
    from ebmlab.training.run import _full_hash
    _edit_sidecar(latest(run_copy), lambda m: json.dumps({**m, "config_hash": _full_hash(m["config"])}))
    code, _, err = cli(capsys, "train", "--out", run_copy, "--resume", "--set", "train.steps=3")
    assert code == 0, err
