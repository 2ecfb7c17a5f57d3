"""Round 42: training through torchrun (2 gloo ranks on the CPU) with the features added since test_distributed.py:
the run lock, the checkpoint pair token and byte-identical checkpoints, --resume (world size, rank files, a moved
data file, --set changes), a second launch and --overwrite into a run a first launch holds.

Every launch is real (``torchrun --standalone --nproc_per_node 2 -m ebmlab train``, test_distributed's helpers).
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import ebmlab
from ebmlab.training import checkpoint as ckpt
from ebmlab.training.logging import read_metrics
from tests.cli_helpers import cli, sets
from tests.unit.test_distributed import TINY, _torchrun, _torchrun_command, _worker_of_rank

pytestmark = pytest.mark.slow
SHORT = TINY + ["method.name=hybrid", "method.n_steps_data=2", "train.steps=6", "train.checkpoint_every=3"]


def _launch(out: Path, overrides: list[str], *extra: str, resume: bool = False) -> subprocess.CompletedProcess:
    """A torchrun launch that may fail: (returncode, stdout, stderr)."""
    cmd, env = _torchrun_command(out, overrides, resume)
    return subprocess.run(cmd + list(extra), check=False, capture_output=True, text=True, timeout=120, env=env)


def _snapshot(run: Path) -> dict[str, str]:
    """Every file under ``run`` with the SHA-256 of its bytes."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory):
    """The same 2-rank run twice (same config, same seed)."""
    root = tmp_path_factory.mktemp("twins")
    _torchrun(root / "a", SHORT)
    _torchrun(root / "b", SHORT)
    return root / "a", root / "b"


def test_identical_two_rank_runs_write_identical_shared_checkpoints_and_pair_tokens(twin_runs):
    a, b = twin_runs
    for step in (3, 6):
        for suffix in (".safetensors", ".json"):
            name = f"step_{step:08d}{suffix}"
            assert (a / "checkpoints" / name).read_bytes() == (b / "checkpoints" / name).read_bytes(), name
        side = json.loads((a / "checkpoints" / f"step_{step:08d}.json").read_text())
        data = (a / "checkpoints" / f"step_{step:08d}.safetensors").read_bytes()
        assert side["pair"] == ckpt._pair_token(data[8:8 + int.from_bytes(data[:8], "little")]) is not None
        assert side["world_size"] == 2


# WAS A BUG: two identical 2-rank runs write rank files with the same tensors but different bytes, because the rank file's
# four metadata keys are serialised in a random order (safetensors' hash map), so identical runs are not byte-identical.
def test_identical_two_rank_runs_write_byte_identical_rank_files(twin_runs):
    a, b = twin_runs
    for p in sorted((a / "checkpoints").glob("*.rank*.safetensors")):
        assert p.read_bytes() == (b / "checkpoints" / p.name).read_bytes(), p.name


def test_a_two_rank_run_evaluates_samples_and_loads_in_one_process(twin_runs, tmp_path, capsys):
    a, _ = twin_runs
    run = tmp_path / "run"
    shutil.copytree(a, run)
    code, out, err = cli(capsys, "eval", run)
    assert code == 0, err
    code, out, err = cli(capsys, "sample", run, "--n", "4", "--out", tmp_path / "s.npy")
    assert code == 0 and np.load(tmp_path / "s.npy").shape[0] == 4, err
    assert ebmlab.load(run).checkpoint_step == 6


# WAS A BUG: a 2-rank --resume whose rank-1 file is missing still records the --set change (config.yaml rewritten,
# config_changes.jsonl written) on rank 0 and ends in a gloo "Connection closed by peer" traceback.
def test_a_failed_two_rank_resume_changes_no_file(twin_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(twin_runs[0], run)
    (run / "checkpoints" / "step_00000006.rank1.safetensors").unlink()
    before = _snapshot(run)
    res = _launch(run, ["train.steps=9"], resume=True)
    assert res.returncode != 0
    assert "step_00000006.rank1.safetensors' is missing" in res.stderr
    assert _snapshot(run) == before  # config.yaml still says train.steps 6; no config_changes.jsonl
    assert "Connection closed by peer" not in res.stderr


# WAS A BUG: a rank file whose params_sha256 does not match the shared checkpoint's parameters (here: another run's) is
# loaded silently on --resume; rank 1 continues with another run's sampler buffers and random streams.
def test_resume_refuses_a_rank_file_of_other_parameters(twin_runs, tmp_path):
    other = tmp_path / "other"
    _torchrun(other, SHORT + ["train.seed=1"])
    run = tmp_path / "run"
    shutil.copytree(twin_runs[0], run)
    shutil.copy(other / "checkpoints" / "step_00000006.rank1.safetensors", run / "checkpoints")
    res = _launch(run, ["train.steps=8"], resume=True)
    assert res.returncode != 0, "resumed with another run's rank file"
    assert "rank" in res.stderr and "error" in res.stderr


def test_resume_on_another_world_size_is_refused_in_both_directions_and_changes_nothing(twin_runs, tmp_path, capsys):
    two = tmp_path / "two"
    shutil.copytree(twin_runs[0], two)
    before = _snapshot(two)
    code, _, err = cli(capsys, "train", "--out", two, "--resume", *sets(["train.steps=8"]))
    assert code != 0 and "written by 2 process(es) but this run has 1" in err
    assert _snapshot(two) == before
    one = tmp_path / "one"
    code, _, err = cli(capsys, "train", "--out", one, *sets(SHORT))
    assert code == 0, err
    before = _snapshot(one)
    res = _launch(one, ["train.steps=8"], resume=True)
    assert res.returncode != 0 and "written by 1 process(es) but this run has 2" in res.stderr
    assert _snapshot(one) == before


def test_resume_with_a_moved_data_file_under_torchrun(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    np.save(data / "x.npy", np.random.default_rng(0).normal(size=(300, 2)).astype("float32"))
    run = tmp_path / "run"
    opts = [o for o in SHORT if not o.startswith("data.n_")] + ["train.steps=4", "train.checkpoint_every=2"]
    res = _launch(run, opts, "--data", str(data / "x.npy"))
    assert res.returncode == 0, res.stderr[-2000:]
    (data / "x.npy").rename(data / "y.npy")
    res = _launch(run, ["train.steps=6"], "--data", str(data / "y.npy"), resume=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "moved from" in res.stdout
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["relocated"] == str(data / "y.npy")
    assert [r["step"] for r in read_metrics(run)][-1] == 6
    assert not list(run.rglob(".*.tmp"))


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_live_two_rank_trainer_holds_the_lock_on_rank_0_and_refuses_others(tmp_path, capsys):
    run, log = tmp_path / "live", tmp_path / "err.txt"
    cmd, env = _torchrun_command(run, TINY + ["train.steps=100000", "train.checkpoint_every=50",
                                              "train.keep_checkpoints=2"])
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh, env=env)
        try:
            deadline = time.monotonic() + 300  # a hang guard: the loop waits on the file
            while not (run / "checkpoints").is_dir() or not ckpt.list_checkpoints(run / "checkpoints"):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            rank0, rank1 = _worker_of_rank(proc.pid, 0), _worker_of_rank(proc.pid, 1)
            assert json.loads((run / "run.lock").read_text())["pid"] == rank0 != rank1
            code, _, err = cli(capsys, "eval", run)
            assert code != 0 and f"is in use by another ebmlab process (pid {rank0} on host" in err and ", training)" in err
            for extra in ([], ["--overwrite"]):
                res = _launch(run, TINY + ["train.steps=10"], *extra)
                assert res.returncode != 0 and "in use by another ebmlab process" in res.stderr, res.stderr[-2000:]
            assert ebmlab.load(run).checkpoint_step > 0  # reading a live run's latest checkpoint works
            os.kill(rank1, signal.SIGTERM)
            assert proc.wait(timeout=60) != 0
        finally:
            proc.kill()
    assert not (run / "run.lock").exists()
    assert not [p.name for p in run.rglob("*") if p.name.endswith(".tmp")]
    step = ckpt.list_checkpoints(run / "checkpoints")[-1][0]
    assert (run / "checkpoints" / f"step_{step:08d}.rank1.safetensors").is_file()
    code, _, err = cli(capsys, "eval", run)
    assert code == 0, err


def test_overwrite_under_torchrun_leaves_no_rank_file_of_the_old_run(twin_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(twin_runs[0], run)
    res = _launch(run, TINY + ["train.steps=4", "train.checkpoint_every=2"], "--overwrite")
    assert res.returncode == 0, res.stderr[-2000:]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == [f"step_{s:08d}{x}" for s in (2, 4)
                     for x in (".json", ".rank0.safetensors", ".rank1.safetensors", ".safetensors")]
    assert not (run / "run.lock").exists()
