"""Bad input gets one clear sentence and exit status 2, never a traceback."""
import os
import subprocess
import sys

import numpy as np
import pytest

from ebmlab.cli import main

FAST = ["--set", "train.steps=2", "--set", "train.progress=false", "--set", "eval.plots=false"]


def _run(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def _one_sentence(err: str) -> bool:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return len(lines) == 1 and lines[0].startswith("ebmlab: error:") and "Traceback" not in err


def _cases(tmp_path):
    nan = tmp_path / "nan.npy"
    np.save(nan, np.r_[[[0.0, 1.0], [np.nan, 2.0]], np.ones((20, 2))])
    rank3 = tmp_path / "rank3.npy"
    np.save(rank3, np.zeros((4, 2, 2)))
    text = tmp_path / "bad.npy"
    text.write_text("not numpy")
    return {
        "missing data": (["train", "--data", str(tmp_path / "none.npy")], "does not exist"),
        "unreadable data": (["train", "--data", str(text)], "could not read"),
        "nan data": (["train", "--data", str(nan)], "NaN or inf"),
        "wrong rank": (["train", "--data", str(rank3)], "2-D array"),
        "unknown key": (["train", "--set", "train.nope=1"], "valid keys"),
        "wrong type": (["train", "--set", "train.steps=many"], "expects int"),
        "zero step": (["train", "--set", "method.step_size=0"], "must be positive"),
        "negative step": (["train", "--set", "method.step_size=-1"], "must be positive"),
        "unknown method": (["train", "--set", "method.name=magic"], "available methods"),
        "resume without checkpoint": (["train", "--resume"], "no checkpoint"),
        "eval of nothing": (["eval", str(tmp_path / "nothing")], "not an ebmlab run directory"),
    }


CASES = ["missing data", "unreadable data", "nan data", "wrong rank", "unknown key", "wrong type", "zero step",
         "negative step", "unknown method", "resume without checkpoint", "eval of nothing"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_sentence(case, tmp_path, capsys):
    argv, needle = _cases(tmp_path)[case]
    if argv[0] == "train":  # the case's own --set comes last so that it wins
        argv = ["train", *FAST, "--out", str(tmp_path / "run"), *argv[1:]]
    code, err = _run(capsys, argv)
    assert code == 2
    assert _one_sentence(err), err
    assert needle in err


def test_no_traceback_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ebmlab", "train", "--set", "train.steps=oops"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "expects int" in proc.stderr


def test_user_array_data_trains_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 0.3, (300, 2)), rng.normal(2, 0.3, (300, 2))])
    np.savetxt(tmp_path / "mix.csv", x, delimiter=",")
    code = main(["train", "--data", str(tmp_path / "mix.csv"), "--out", str(tmp_path / "r"), *FAST,
                 "--set", "eval.n_samples=100", "--set", "method.n_steps=3"])
    assert code == 0
    assert (tmp_path / "r" / "metrics.json").exists()


def test_unrecognized_arguments_are_said_by_the_command_with_the_likely_fix(capsys):
    """`train --steps 10` and `--set a=1 b=2` printed the top-level usage and no hint."""
    with pytest.raises(SystemExit) as exc:
        main(["train", "--steps", "10"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "usage: ebmlab train" in err and "--set SECTION.KEY=VALUE" in err
    with pytest.raises(SystemExit):
        main(["train", "--set", "train.steps=30", "eval.n_samples=200"])
    assert "give --set once per key" in capsys.readouterr().err


def test_yaml_error_names_the_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: [1, 2\nmodel: {}\n")
    code, err = _run(capsys, ["train", "--config", str(bad)])
    assert code == 2 and _one_sentence(err)
    assert "at line 3, column 6: expected ',' or ']'" in err and "starts at line 2, column 10" in err
    assert "<unicode string>" not in err


@pytest.mark.parametrize("unbuffered", [False, True])
@pytest.mark.parametrize("command", [["configs"], ["train", "--help"], ["--version"]])
def test_a_closed_pipe_stops_quietly(unbuffered, command):
    """`ebmlab configs | head -1` printed an operating-system error about a broken pipe. With output buffered (a
    user's shell: no PYTHONUNBUFFERED) it was Python's flush at exit that failed: exit status 120 and "Exception
    ignored ... BrokenPipeError" (the test passed only where the environment set PYTHONUNBUFFERED=1); so did
    `--help` and `--version`, which print and exit inside argparse."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the child starts: no race with its first write
    with subprocess.Popen([sys.executable, "-m", "ebmlab", *command], stdout=write_end,
                          stderr=subprocess.PIPE, text=True, env=env) as proc:  # (the with closes the pipes)
        os.close(write_end)
        err = proc.stderr.read()
        # (argparse writes --help and --version itself and ignores a write error: unbuffered, that exits 0)
        quiet = (0, 141) if unbuffered and command != ["configs"] else (141,)
        assert proc.wait(timeout=120) in quiet and err == ""
