"""Mutation round 71 (docs/testing.md "A sixteenth mutation round", the second helper's file): the command line (``cli``, ``cli_commands``),
the run directory (``training/run.py``) and the error sentences (``errors``). Each test states a known answer from
the documented rule (README's CLI sections, the modules' docstrings), checked without training."""
from __future__ import annotations

import errno
import json
from argparse import Namespace
from pathlib import Path

import pytest

from ebmlab import cli
from ebmlab.errors import (ConfigError, RunError, RunNotFound, TrainingStopped, is_out_of_memory,
                           os_error_sentence)


# ----- errors.os_error_sentence: "could not DOING 'PATH': WHAT; HINT" -----------------------------------------
@pytest.mark.parametrize("code, hint", [
    (errno.ENOSPC, "free some disk space, then rerun (a training run continues with --resume)"),
    (errno.EDQUOT, "free some space within your quota, then rerun"),
    (errno.EROFS, "the file system is read-only: write elsewhere (a run to train or evaluate: copy it to a "
                  "writable place first)"),
    (errno.EACCES, "check the permissions or choose another path"),
    (errno.EPERM, "check the permissions or choose another path"),
    (errno.ENOTDIR, "a component of the path is a file, not a directory: choose another path"),
    (errno.EISDIR, "the path is a directory, expected a file"),
    (errno.ENOENT, "check the path"),
    (errno.EEXIST, "choose another path"),
    (errno.ENAMETOOLONG, "choose a shorter path"),
    (errno.EIO, "check the path and rerun"),
])
def test_each_errno_gets_its_own_hint_and_names_the_path(code, hint):
    exc = OSError(code, "Some failure.", "/data/run/x")
    assert os_error_sentence(exc, "write checkpoint") == f"could not write checkpoint '/data/run/x': Some failure; {hint}"
    assert os_error_sentence(exc) == f"operating-system error on '/data/run/x': Some failure; {hint}"


def test_an_errno_less_error_with_a_path_is_still_formatted():
    """Only an error with neither errno nor path is ebmlab's own sentence, said as it is."""
    own = FileExistsError("the run exists; pass --overwrite")
    assert os_error_sentence(own) == "the run exists; pass --overwrite"
    exc = FileExistsError("it exists")
    exc.filename = "/p/q"
    said = os_error_sentence(exc)
    assert said.startswith("operating-system error on '/p/q': ") and said.endswith("; check the path and rerun")


def test_out_of_memory_is_recognised_and_other_runtime_errors_are_not():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:83] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(OSError(errno.ENOMEM, "Cannot allocate memory"))


def test_run_not_found_is_a_file_not_found_and_a_run_error():
    # (TrainingStopped pickled whole: test_session13_round38.py)
    assert issubclass(RunNotFound, FileNotFoundError) and issubclass(RunNotFound, RunError)


# ----- cli: statuses and sentences ------------------------------------------------------------------------
def _main_raising(monkeypatch, capsys, exc, command=("configs",)):
    """``ebmlab COMMAND`` whose command raises ``exc``: (status, stderr)."""
    def boom(args):
        raise exc
    name = {"configs": "cmd_configs", "sample": "cmd_sample", "train": "cmd_train"}[command[0]]
    monkeypatch.setattr(cli, name, boom)
    capsys.readouterr()
    code = cli.main(list(command))
    return code, capsys.readouterr().err


@pytest.fixture
def plain_env(monkeypatch):
    for key in ("EBMLAB_DEBUG", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)


def test_statuses_of_stop_interrupt_and_user_error(monkeypatch, capsys, plain_env):
    assert _main_raising(monkeypatch, capsys, TrainingStopped("stopped after update 4", 4, "r")) == \
        (143, "ebmlab: stopped after update 4\n")
    assert _main_raising(monkeypatch, capsys, KeyboardInterrupt()) == (130, "ebmlab: interrupted\n")
    code, err = _main_raising(monkeypatch, capsys, OSError(errno.ENOSPC, "No space left on device", "/x/y"))
    assert (code, err) == (2, "ebmlab: error: operating-system error on '/x/y': No space left on device; free some "
                              "disk space, then rerun (a training run continues with --resume)\n")
    assert _main_raising(monkeypatch, capsys, KeyError("train.stepz")) == (2, "ebmlab: error: missing key 'train.stepz'\n")
    assert _main_raising(monkeypatch, capsys, KeyError("no such dataset here")) == \
        (2, "ebmlab: error: no such dataset here\n")
    assert _main_raising(monkeypatch, capsys, ValueError("two\n   lines")) == (2, "ebmlab: error: two lines\n")


def test_a_stop_is_said_by_rank_zero_only(monkeypatch, capsys, plain_env):
    monkeypatch.setenv("RANK", "1")
    assert _main_raising(monkeypatch, capsys, TrainingStopped("stopped", 4, "r")) == (143, "")


def test_a_user_error_names_the_rank_only_with_several_processes(monkeypatch, capsys, plain_env):
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _main_raising(monkeypatch, capsys, ValueError("bad")) == (2, "ebmlab: error: bad\n")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert _main_raising(monkeypatch, capsys, ValueError("bad")) == (2, "ebmlab: error (rank 1): bad\n")


def test_debug_shows_the_traceback(monkeypatch, capsys, plain_env):
    monkeypatch.setenv("EBMLAB_DEBUG", "1")
    with pytest.raises(ValueError):
        _main_raising(monkeypatch, capsys, ValueError("bad"))


def test_out_of_memory_advice_depends_on_the_command(monkeypatch, capsys, plain_env):
    text = "CUDA out of memory. " + "a" * 300
    code, err = _main_raising(monkeypatch, capsys, RuntimeError(text), ("sample", "run"))
    assert code == 2
    assert err == f"ebmlab: error: ran out of memory; draw fewer (--n) or in batches (--batch-size B) ({text[:120]})\n"
    code, err = _main_raising(monkeypatch, capsys, RuntimeError("CUDA out of memory."), ("configs",))
    assert err == ("ebmlab: error: ran out of memory; reduce model.width, model.depth, train.batch_size or "
                   "eval.n_samples (CUDA out of memory.)\n")
    with pytest.raises(RuntimeError):  # other RuntimeErrors are bugs: a traceback
        _main_raising(monkeypatch, capsys, RuntimeError("shapes cannot be multiplied"))


def test_unrecognised_arguments_get_the_likely_fix():
    assert cli._extra_hint(["eval.n_samples=200"]) == \
        "; give --set once per key (--set train.steps=30 --set eval.n_samples=200)"
    assert cli._extra_hint(["--train.steps", "3"]) == \
        "; config keys are set with --set SECTION.KEY=VALUE (e.g. --set train.steps=10), see --help"
    assert cli._extra_hint(["stray"]) == ""


def test_the_documented_defaults_of_sample_and_train(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    p = cli.build_parser()
    s = p.parse_args(["sample", "~/run"])
    assert (s.run, s.n, s.steps, s.init, s.seed, s.device, s.checkpoint, s.out, s.overwrite) == \
        ("/home/someone/run", 1000, None, "noise", 0, "cpu", None, None, False)
    assert p.parse_args(["train"]).resume is False
    assert p.parse_args(["train", "--resume"]).resume is True
    assert p.parse_args(["train", "--resume", "auto", "--out=~/x"]).resume == "auto"
    assert p.parse_args(["train", "--out=~/x"]).out == "/home/someone/x"
    assert "(default: off)" in " ".join(p.command_parsers["sample"].format_help().split())


def test_an_interrupted_train_says_what_it_left(tmp_path):
    args = Namespace(fn=cli.cmd_train, run_dir=tmp_path)
    assert cli._after_interrupt(args) == ("; no checkpoint was written yet, so start it again without --resume (the "
                                          "directory is reused)")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step_00000004.safetensors").write_bytes(b"w")
    (tmp_path / "checkpoints" / "step_00000004.json").write_text("{}", encoding="utf-8")
    assert cli._after_interrupt(args) == (f"; the last checkpoint, step_00000004.safetensors, is kept: continue with "
                                          f"ebmlab train --out {tmp_path} --resume")
    assert cli._after_interrupt(Namespace(fn=cli.cmd_experiment)) == \
        "; its finished cells are kept (the same command again skips them)"


# ----- cli_commands ---------------------------------------------------------------------------------------
def test_seed_lists():
    from ebmlab.cli_commands import _seed_list
    assert _seed_list("0,1,2") == (0, 1, 2)
    assert _seed_list("7") == (7,)
    with pytest.raises(ConfigError, match="must not repeat a seed"):
        _seed_list("0,1,0")
    with pytest.raises(ConfigError, match="--data-seeds must be comma-separated integers"):
        _seed_list("0;1", "--data-seeds")


def test_sample_out_names(tmp_path):
    from ebmlab.cli_commands import _not_replaced, _output_file
    assert _output_file(tmp_path / "s") == tmp_path / "s.npy"
    assert _output_file(tmp_path / "s.csv") == tmp_path / "s.csv"
    with pytest.raises(ValueError, match="written as .npy or .csv"):
        _output_file(tmp_path / "s.png")
    with pytest.raises(ValueError, match="is a directory"):
        _output_file(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="which is a file, not a directory"):
        _output_file(tmp_path / "f" / "s.npy")
    out = tmp_path / "s.npy"
    _not_replaced(out, False)  # nothing there
    (tmp_path / "s.png").write_bytes(b"p")  # only the picture beside it: still the user's file
    with pytest.raises(ValueError, match=r"s.png' already exists; pass --overwrite to replace it"):
        _not_replaced(out, False)
    out.write_bytes(b"n")
    with pytest.raises(ValueError, match="already exist; pass --overwrite to replace them"):
        _not_replaced(out, False)
    _not_replaced(out, True)


def test_weights_wording():
    from ebmlab.cli_commands import _weights
    assert _weights(Namespace(train=Namespace(ema=0.999))) == "EMA weights"
    assert _weights(Namespace(train=Namespace(ema=None))) == "weights: train.ema is off"


def test_default_run_directory_is_method_then_data():
    from ebmlab.cli_commands import _default_out
    args = Namespace(config=None)
    assert _default_out(args, ["method.name=noise", "data.name=8gaussians"]) == Path("runs/noise_8gaussians")


def test_train_refuses_resume_with_overwrite(tmp_path, capsys, plain_env):
    code = cli.main(["train", "--resume", "--overwrite", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "pass only one of them" in err
    assert not (tmp_path / "r").exists()


def test_data_file_overrides(tmp_path, monkeypatch):
    """--data FILE: data.path absolute and data.name=array; the user-data defaults only without --config."""
    import numpy as np

    from ebmlab.cli_commands import _train_overrides
    from ebmlab.config import USER_DATA_DEFAULTS
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "v.npy", np.zeros((8, 2), np.float32))
    with_config = _train_overrides(Namespace(set=None, data="v.npy", config="my.yaml", resume=False))
    assert with_config == [f"data.path={tmp_path / 'v.npy'}", "data.name=array"]
    plain = _train_overrides(Namespace(set=None, data="v.npy", config=None, resume=False))
    assert plain[-2:] == with_config
    assert "data.whiten=true" in [o.lower() for o in plain[:-2]]
    assert len(plain[:-2]) >= 1 and all(o.split("=")[0] in USER_DATA_DEFAULTS for o in plain[:-2])


def test_experiment_options_reach_the_experiment(monkeypatch):
    import ebmlab.experiments as experiments
    seen = {}
    monkeypatch.setattr(experiments, "run_experiment", lambda name, out, quick, **kw: seen.update(
        name=name, out=out, quick=quick, **kw))
    args = cli.build_parser().parse_args(["experiment", "paper002", "--seeds", "3,4", "--full", "--jobs", "1",
                                          "--data-seeds", "5"])
    assert args.fn(args) == 0
    assert seen == {"name": "paper002", "out": Path("runs/experiment_paper002"), "quick": False, "seeds": (3, 4),
                    "full": True, "jobs": 1, "data_seeds": (5,)}


def test_configs_list_on_stdout_and_the_hint_on_stderr(capsys, plain_env):
    assert cli.main(["configs"]) == 0
    out, err = capsys.readouterr()
    assert "show one: ebmlab configs NAME" not in out
    assert err == "\nshow one: ebmlab configs NAME; train one: ebmlab train --config NAME\n"


# ----- training/run.py ------------------------------------------------------------------------------------
def test_device_names():
    from ebmlab.training.run import resolve_device
    assert str(resolve_device("cpu")) == "cpu"
    for bad in ("cpu0", "cuda:x", "gpu", "cpu:0"):
        with pytest.raises(ConfigError, match="is not one of auto, cpu, cuda, cuda:N or mps"):
            resolve_device(bad)


def test_a_folder_without_config_yaml_is_not_a_run(tmp_path):
    # (a missing run and a file: test_mutation_round67.py)
    from ebmlab.training.run import read_run_raw
    with pytest.raises(RunNotFound, match=r"\(no config.yaml\)"):
        read_run_raw(tmp_path)
    (tmp_path / "config.yaml").write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold a mapping of sections, got a list"):
        read_run_raw(tmp_path)


def _saved_run(d: Path, *sets: str) -> Path:
    from ebmlab.training.config import load_config, save_config
    d.mkdir(parents=True, exist_ok=True)
    save_config(load_config(None, ["train.steps=10", *sets]), d / "config.yaml")
    return d


def test_resume_changes_fixed_and_mutable_keys(tmp_path):
    from ebmlab.training.config import load_config
    from ebmlab.training.run import check_resume_changes
    run = _saved_run(tmp_path / "r")
    assert check_resume_changes(run, load_config(None, ["train.steps=20"])) == {"train.steps": (10, 20)}
    assert check_resume_changes(run, load_config(None, ["train.steps=10"])) == {}
    with pytest.raises(ConfigError, match="--resume cannot change model.width"):
        check_resume_changes(run, load_config(None, ["train.steps=10", "model.width=17"]))
    cos = _saved_run(tmp_path / "c", "train.lr_schedule=cosine")
    with pytest.raises(ConfigError, match="train.lr_schedule cosine"):
        check_resume_changes(cos, load_config(None, ["train.steps=20", "train.lr_schedule=cosine"]))
    assert check_resume_changes(cos, load_config(None, ["train.steps=10", "train.lr_schedule=cosine",
                                                        "train.log_every=3"])) != {}


def test_recorded_changes_are_one_row_per_resume_unless_just_recorded(tmp_path):
    from ebmlab.training.config import load_config
    from ebmlab.training.run import CHANGES_NAME, record_changes
    run = _saved_run(tmp_path / "r")
    a, b = load_config(None, ["train.steps=20"]), load_config(None, ["train.steps=30"])
    record_changes(run, a, {}, 10)
    assert not (run / CHANGES_NAME).exists()  # nothing changed: nothing recorded
    record_changes(run, a, {"train.steps": (10, 20)}, 10)
    record_changes(run, a, {"train.steps": (10, 20)}, 10)  # a rerun of a resume that failed after its row
    record_changes(run, b, {"train.steps": (20, 30)}, 20)
    record_changes(run, a, {"train.steps": (10, 20)}, 30)  # the first change again, but not the last row: a new row
    rows = [json.loads(line) for line in (run / CHANGES_NAME).read_text(encoding="utf-8").splitlines()]
    assert [(r["resumed_at_step"], r["changes"]["train.steps"]["new"]) for r in rows] == [(10, 20), (20, 30), (30, 20)]


def test_only_leftovers():
    from ebmlab.training.run import only_leftovers
    assert only_leftovers([])
    assert not only_leftovers([Path("r/config.yaml")])
    assert not only_leftovers([Path("r/notes.txt")])


def test_load_needs_no_data_and_maps_data_coordinates(monkeypatch):
    """``load``: only the run directory (need_data=False); its module standardises inputs as training did
    (energy of transform.to_model(x))."""
    import torch

    from ebmlab.training import run as run_module
    seen = {}

    class Affine:
        def to_model(self, x):
            return 2 * x + 1

        def to_data(self, x):
            return (x - 1) / 2

    class Energy(torch.nn.Module):
        def forward(self, x):
            return x.sum(dim=1)

    def fake_open(run_dir, **kw):
        seen.update(kw)
        return Namespace(objective=Namespace(data_energy=Energy()), data=Namespace(transform=Affine()))
    monkeypatch.setattr(run_module, "open_checkpoint", fake_open)
    energy = run_module.load("somewhere")
    assert seen == {"device": "cpu", "need_data": False}
    assert energy(torch.tensor([[1.0, 2.0]])).tolist() == [(2 * 1 + 1) + (2 * 2 + 1)]  # 3 + 5


# ----- shipped behaviour contradicting its own documented intent -----------------------------------------------
# WAS A BUG: cli._run's `except RecursionError` is unreachable (RecursionError is a RuntimeError, caught first and re-raised as not out of memory): a traceback, not the sentence and status 2
def test_a_recursion_error_is_one_sentence_and_status_two(monkeypatch, capsys, plain_env):
    assert issubclass(RecursionError, RuntimeError)
    assert _main_raising(monkeypatch, capsys, RecursionError("maximum recursion depth exceeded")) == \
        (2, "ebmlab: error: input nested too deeply to read (a damaged or hostile file?)\n")
