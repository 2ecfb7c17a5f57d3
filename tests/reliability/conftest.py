"""Shared pieces of the reliability suite (issue 13): tiny runs, the one-sentence check, file snapshots.

Every case runs ``ebmlab.cli.main([...])`` in-process and asserts the exit status, ONE line of stderr
starting ``ebmlab: error:`` without a traceback, and that nothing was lost (a snapshot of the files
that were there before is unchanged) or executed (no marker file appeared).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ebmlab.cli import main

TINY = ["train.steps=2", "model.width=8", "model.depth=1", "data.n_train=256", "data.n_test=32",
        "eval.n_samples=32", "eval.grid_size=8", "eval.long_run_factor=1", "train.progress=false",
        "eval.plots=false", "train.batch_size=32", "method.n_steps=3", "method.n_steps_data=2",
        "train.log_every=1", "train.checkpoint_every=1", "train.threads=1"]


def sets(*overrides: str) -> list[str]:
    return [a for o in (*TINY, *overrides) for a in ("--set", o)]


# a tiny digits_hybrid image run: its network, chains and batch; steps, figures and plots are each test's
TINY_DIGITS = ["model.channels=[4]", "model.width=4", "method.n_steps=1", "method.n_steps_data=1", "eval.n_samples=16",
               "train.batch_size=8", "train.progress=false", "train.checkpoint_every=1", "train.threads=1"]


def digits_argv(out: Path, *overrides: str) -> list:
    """``ebmlab train`` argv of a tiny digits_hybrid run into ``out`` (``TINY_DIGITS`` then ``overrides``)."""
    sets_ = [a for o in (*TINY_DIGITS, *overrides) for a in ("--set", o)]
    return ["train", "--config", "digits_hybrid", "--out", out, *sets_]


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_sentence(code: int, err: str, needle: str | None = None, status: int = 2) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == status, (code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("ebmlab: error:"), err
    if needle is not None:
        assert needle.lower() in err.lower(), (needle, err)


def snapshot(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under ``root`` (nothing if it does not exist)."""
    root = Path(root)
    if not root.exists():
        return {}
    if root.is_file():
        return {".": root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_points(path: Path, n: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(-2, 0.4, (n // 2, 2)), rng.normal(2, 0.4, (n - n // 2, 2))])
    np.save(path, x)
    return path


def train(out: Path, data: Path | None = None, *extra: str) -> int:
    argv = ["train", "--out", str(out), *sets(*extra)]
    if data is not None:
        argv += ["--data", str(data)]
    return main(argv)


@pytest.fixture(scope="session")
def trained_root(tmp_path_factory):
    """A tiny trained run on a user array (data/points.npy) and one of another method, trained once."""
    root = tmp_path_factory.mktemp("reliability")
    data = write_points(root / "points.npy")
    assert train(root / "run", data) == 0
    assert train(root / "other", data, "method.name=data", "model.width=12") == 0
    return root


@pytest.fixture
def run_copy(trained_root, tmp_path, capsys):
    """A private copy of the trained run (same data file), output of the training swallowed."""
    capsys.readouterr()
    dst = tmp_path / "run"
    shutil.copytree(trained_root / "run", dst)
    return dst


def latest(run: Path) -> Path:
    return max((run / "checkpoints").glob("step_*.safetensors"))


def opened(run: Path) -> Path:
    """The checkpoint that ``ebmlab sample`` / ``eval`` and ``ebmlab.load`` open: the validation best of a
    ``--data`` run (``train.select_every``), else the latest."""
    from ebmlab.training.checkpoint import result_checkpoint
    return result_checkpoint(run / "checkpoints")
