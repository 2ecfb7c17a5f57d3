"""Issue 20: checkpoints and ``--resume`` on CUDA.

- A checkpoint written on CUDA holds CPU tensors only; its RNG states are the run's (the objective's
  generator is a CUDA Philox generator: its state round-trips through the file and draws the same
  numbers); the weights load on the CPU (``open_run(device="cpu")``, sampling with a CPU generator)
  and back on the GPU; a resumed GPU trainer holds every weight, buffer, optimizer moment, EMA weight
  and RNG state of the checkpoint, on the GPU.
- A run resumed on CUDA from its middle checkpoint logs the losses of the uninterrupted run and ends
  on the same checkpoint (RNG states bit for bit, weights to float tolerance: cuDNN may pick
  non-deterministic kernels).
- A ``train.device=auto`` run moved between a GPU machine and a CPU machine resumes (the sampler's
  random stream is reseeded from (seed, step), with a warning: ``distributed.restore_generator``).
"""
from __future__ import annotations

import shutil

import pytest
import torch

from ebmlab.training import checkpoint as ckpt
from ebmlab.training.config import load_config
from ebmlab.training.logging import read_metrics
from ebmlab.training.loop import Trainer, prepare_run_dir
from ebmlab.training.run import open_run
from tests.cuda.common import CUDA_ONLY, cuda_overrides, image_overrides, train

pytestmark = CUDA_ONLY

# MALA with step-size controllers (buffers) | per-level controllers and a time-conditioned energy |
# two networks (EBM and initializer) with two optimizer groups.
CASES = ["hybrid", "cd_ce", "cdrl"]


def _resumed(run, overrides, config=None) -> Trainer:
    cfg = load_config(config, overrides)
    trainer = Trainer(cfg, run)
    trainer.resume()
    return trainer


@pytest.mark.parametrize("name", CASES)
def test_checkpoint_written_on_cuda_loads_on_cpu_and_back(name, tmp_path):
    run = tmp_path / "run"
    over = cuda_overrides(name, "train.steps=2", "train.checkpoint_every=2")
    trainer = train(run, over)
    tensors, meta = ckpt.load_checkpoint(ckpt.latest_checkpoint(run / "checkpoints"))
    assert meta["step"] == 2
    assert all(v.device.type == "cpu" for v in tensors.values())
    # RNG states as saved: the data generator (CPU), the objective's CUDA generator, torch's CPU RNG.
    assert torch.equal(tensors["rng.data"], trainer.g_data.get_state())
    assert torch.equal(tensors["rng.objective"], trainer.g_obj.get_state())
    assert torch.equal(tensors["rng.torch"], torch.get_rng_state())
    g = torch.Generator("cuda")
    g.set_state(tensors["rng.objective"])
    assert torch.equal(torch.randn(64, device="cuda", generator=g),
                       torch.randn(64, device="cuda", generator=trainer.g_obj))
    for key, v in trainer.objective.state_dict().items():
        assert torch.equal(tensors[f"model.{key}"], v.cpu()), key

    # Loaded on the CPU: the same weights; the method samples there with a CPU generator.
    _, on_cpu, _ = open_run(run, ema=False, device="cpu")
    gpu_params = dict(trainer.objective.named_parameters())
    for pname, p in on_cpu.named_parameters():
        assert p.device.type == "cpu" and torch.equal(p, gpu_params[pname].detach().cpu()), pname
    x = on_cpu.sample(4, generator=torch.Generator().manual_seed(0), n_steps=2).x
    assert x.device.type == "cpu" and torch.isfinite(x).all()

    # ... and back on the GPU.
    _, on_gpu, _ = open_run(run, ema=False, device="cuda")
    cpu_params = dict(on_cpu.named_parameters())
    for pname, p in on_gpu.named_parameters():
        assert p.device.type == "cuda" and torch.equal(p.cpu(), cpu_params[pname]), pname
    x = on_gpu.sample(4, generator=torch.Generator("cuda").manual_seed(0), n_steps=2).x
    assert x.device.type == "cuda" and torch.isfinite(x).all()

    # Resumed on the GPU: everything of the checkpoint, on the GPU.
    resumed = _resumed(run, over)
    assert resumed.step == 2
    assert torch.equal(resumed.g_obj.get_state(), tensors["rng.objective"])
    assert resumed.g_obj.device.type == "cuda"
    assert torch.equal(resumed.g_data.get_state(), tensors["rng.data"])
    assert torch.equal(torch.get_rng_state(), tensors["rng.torch"])
    for key, v in resumed.objective.state_dict().items():
        assert v.device.type == "cuda" and torch.equal(v.cpu(), tensors[f"model.{key}"]), key
    saved_opt, loaded_opt = trainer.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert saved_opt.keys() == loaded_opt.keys() and saved_opt
    for pid, st in saved_opt.items():
        for k, v in st.items():
            if torch.is_tensor(v) and v.dim() > 0:
                w = loaded_opt[pid][k]
                assert w.device.type == "cuda" and torch.equal(w, v), (pid, k)
    if trainer.ema is not None:
        for k, v in trainer.ema.shadow.items():
            assert resumed.ema.shadow[k].device.type == "cuda" and torch.equal(resumed.ema.shadow[k], v), k


def _resume_matches(run, tmp_path, overrides, config=None, last=4, rtol=1e-5, atol=1e-6) -> None:
    """Delete the run's last checkpoint (in a copy), resume there on CUDA and compare: RNG states bit
    for bit, losses and weights to ``rtol``/``atol`` (a wrongly restored RNG state changes every chain
    and the losses at the 1e-2 level; cuDNN's non-deterministic kernels at the 1e-7 level)."""
    part = tmp_path / "part"
    shutil.copytree(run, part)
    for p in (part / "checkpoints").glob(f"step_{last:08d}*"):
        p.unlink()
    cfg = load_config(config, overrides)
    lock = prepare_run_dir(part, cfg, resume=True, overwrite=False)
    try:
        trainer = Trainer(cfg, part)
        trainer.resume()
        assert trainer.step == last // 2
        trainer.fit()
    finally:
        lock.release()
    full_log, part_log = read_metrics(run), read_metrics(part)
    assert [r["step"] for r in part_log] == [r["step"] for r in full_log] == list(range(1, last + 1))
    torch.testing.assert_close(torch.tensor([r["loss"] for r in part_log]),
                               torch.tensor([r["loss"] for r in full_log]), rtol=rtol, atol=atol)
    a, _ = ckpt.load_checkpoint(part / "checkpoints" / f"step_{last:08d}.safetensors")
    b, _ = ckpt.load_checkpoint(run / "checkpoints" / f"step_{last:08d}.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith("rng."):
            assert torch.equal(a[key], b[key]), key  # the same number of draws from the same states
        elif a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=max(rtol, 1e-4), atol=max(atol, 1e-5), msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", ["hybrid", "cdrl"])
def test_resume_reproduces_the_losses_on_cuda(name, tmp_path):
    over = cuda_overrides(name, "train.steps=4", "train.checkpoint_every=2")
    train(tmp_path / "full", over)
    _resume_matches(tmp_path / "full", tmp_path, over)


def test_resume_reproduces_the_losses_of_an_image_run_on_cuda(tmp_path):
    over = image_overrides("digits_hybrid", "train.steps=4", "train.checkpoint_every=2")
    train(tmp_path / "full", over, config="digits_hybrid")
    _resume_matches(tmp_path / "full", tmp_path, over, config="digits_hybrid", rtol=1e-4, atol=1e-5)


# Known (issue 20, found by reading training/loop.py ``load_state``): the objective's generator is built
# on the run's device, and its saved state is applied with ``set_state`` as is. A CUDA (Philox) state is
# 16 bytes and a CPU (mt19937) state 5056, so a ``train.device=auto`` run moved between a GPU machine
# and a CPU machine cannot resume: "checkpoint ... does not fit the run's model (Expected a
# CPUGeneratorImplState of size 5056 ...)". Strict: once fixed, this test passes and the mark must go.
@pytest.mark.parametrize("written_on", ["cuda", "cpu"])
def test_auto_device_run_resumes_after_moving_between_gpu_and_cpu(written_on, tmp_path, monkeypatch):
    over = cuda_overrides("hybrid", "train.steps=2", "train.checkpoint_every=2")
    over = [o for o in over if not o.startswith("train.device=")] + ["train.device=auto"]
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        if written_on == "cpu":
            m.setattr(torch.cuda, "is_available", lambda: False)  # `auto` resolves to the CPU
        first = train(run, over)
    assert first.device.type == written_on
    with monkeypatch.context() as m:
        if written_on == "cuda":
            m.setattr(torch.cuda, "is_available", lambda: False)
        cfg = load_config(None, [o for o in over if o != "train.steps=2"] + ["train.steps=3"])
        lock = prepare_run_dir(run, cfg, resume=True, overwrite=False)
        try:
            trainer = Trainer(cfg, run)
            assert trainer.device.type != written_on
            trainer.resume()
            trainer.fit()
        finally:
            lock.release()
    assert trainer.step == 3

