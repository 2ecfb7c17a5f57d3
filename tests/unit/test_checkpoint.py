"""Checkpoints: safetensors only, atomic, exact resume (also after kill -9)."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ebmlab
from ebmlab.training import checkpoint as ckpt
from ebmlab.training.config import load_config
from ebmlab.training.logging import read_metrics
from ebmlab.training.loop import Trainer, prepare_run_dir

TINY = ["train.steps=20", "train.batch_size=32", "train.checkpoint_every=5", "train.log_every=1",
        "train.progress=false", "model.width=16", "model.depth=1", "method.n_steps=5",
        "method.n_steps_data=2", "data.n_train=500", "data.n_test=200", "train.threads=1"]


def _train(run_dir: Path, overrides, resume=False, config=None):
    """Train (``resume``: on, from the latest checkpoint) the run of ``config`` (a shipped name, None: the default)
    with ``overrides`` in ``run_dir``; the trainer."""
    cfg = load_config(config, overrides)
    prepare_run_dir(run_dir, cfg, resume=resume, overwrite=False)
    t = Trainer(cfg, run_dir)
    if resume:
        t.resume()
    t.fit()
    return t


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir)]


@pytest.mark.parametrize("scheme", ["hybrid", "persistent_refresh"])
def test_resume_reproduces_uninterrupted_run(tmp_path, scheme):
    full = _train(tmp_path / "full", TINY + [f"method.name={scheme}"])
    _train(tmp_path / "part", TINY + [f"method.name={scheme}", "train.steps=10"])
    resumed = _train(tmp_path / "part", TINY + [f"method.name={scheme}"], resume=True)
    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")
    for (k, v) in full.objective.state_dict().items():
        assert (v == resumed.objective.state_dict()[k]).all(), k


def test_malicious_pickle_is_refused_without_running(tmp_path):
    _train(tmp_path / "run", TINY + ["train.steps=5"])
    path = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ckpt.CheckpointError, match="not a safetensors file"):
        ebmlab.load(tmp_path / "run")
    path.write_bytes(b"garbage bytes that are not safetensors at all")
    with pytest.raises(ckpt.CheckpointError):
        ebmlab.load(tmp_path / "run")
    assert not marker.exists()


def test_load_returns_data_space_energy(tmp_path):
    _train(tmp_path / "run", TINY + ["train.steps=5"])
    energy = ebmlab.load(tmp_path / "run")
    import torch
    out = energy(torch.randn(7, 10))
    assert out.shape == (7,) and torch.isfinite(out).all()


def test_atomic_write_leaves_no_partial_checkpoint(tmp_path):
    import torch
    ckpt.save_checkpoint(tmp_path, 3, {"a": torch.ones(2)}, {"x": 1})
    (tmp_path / "step_00000009.safetensors").write_bytes(b"partial")  # no sidecar: incomplete
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000003.safetensors"
    tensors, meta = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert meta["x"] == 1 and tensors["a"].sum() == 2


@pytest.mark.slow  # (default tier kept near 10 min on CI; `make test-slow` and .ci/run run it)
def test_kill_minus_nine_then_resume(tmp_path):
    """A hard kill mid-training loses nothing: resume reproduces the uninterrupted losses."""
    args = [f"--set={o}" for o in TINY + ["train.steps=150", "train.checkpoint_every=10", "eval.n_samples=200",
                                          "eval.plots=false", "eval.long_run_factor=1"]]
    cmd = [sys.executable, "-m", "ebmlab", "train", *args]
    subprocess.run(cmd + ["--out", str(tmp_path / "full")], check=True, capture_output=True)
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ck = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300  # a hang guard: the loop waits on the files
    while len(ckpt.list_checkpoints(ck)) < 2:
        assert proc.poll() is None and time.time() < deadline, "the trainer ended or wrote no checkpoint in 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: p.read_bytes() for _, p in ckpt.list_checkpoints(ck)}
    assert before, "no checkpoint was written before the kill"
    assert len(before) < 15, "the run finished before it could be killed"
    subprocess.run(cmd + ["--out", str(tmp_path / "killed"), "--resume"], check=True, capture_output=True)
    for name, blob in before.items():  # earlier checkpoints intact
        assert (ck / name).read_bytes() == blob
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "full")
    assert json.loads((tmp_path / "killed" / "metrics.json").read_text())["sample_precision"] >= 0


def test_a_generator_state_from_another_device_kind_reseeds_with_a_warning(capsys):
    """A train.device=auto run moved between a GPU and a CPU machine: the objective generator's saved
    state (16 bytes on CUDA) cannot be set on a CPU generator (5,056 bytes); the stream is reseeded
    from (seed, step) with a warning instead of failing the resume."""
    import torch

    from ebmlab.training.distributed import restore_generator
    g = torch.Generator()
    assert restore_generator(g, torch.Generator().manual_seed(3).get_state(), 0, 10)  # same kind: exact
    cuda_like = torch.zeros(16, dtype=torch.uint8)
    assert not restore_generator(g, cuda_like, 0, 10)
    assert "another device kind" in capsys.readouterr().err
    a = torch.rand(3, generator=g)
    restore_generator(g, cuda_like, 0, 10)
    assert torch.equal(a, torch.rand(3, generator=g))  # reproducible
