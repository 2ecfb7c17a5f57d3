"""One process of ``test_cuda_nccl.py``, launched as

    torchrun --standalone --nproc_per_node 1 tests/cuda/nccl_worker.py OUT_DIR

One process never initialises a process group in ebmlab (``distributed.setup`` is a no-op for
``WORLD_SIZE=1``, so that single-process runs stay bit-for-bit what they were); this worker checks
that, then initialises an NCCL group itself and trains through every collective of
``training/distributed.py`` and ``training/dist_checkpoint.py`` with a one-rank context whose
``enabled`` is True: parameter broadcast, spectral-norm buffer broadcast, the non-finite-loss
all-reduce (float64), the gradient all-reduce, rank-averaged metrics, ``verify_replicas`` (MAX/MIN),
rank files, barriers with ``device_ids``, ``main_first`` (``broadcast_object_list``) and, on resume,
``agree_on_checkpoint`` and the rank file with the CUDA RNG state. With one rank every average is a
division by 1, so the run must log the losses of a plain single-process run.

Prints one JSON line; exits non-zero (with the reason on stderr) when a check fails.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ebmlab.training import checkpoint as ckpt
from ebmlab.training import dist_checkpoint, distributed
from ebmlab.training.config import load_config
from ebmlab.training.logging import read_metrics
from ebmlab.training.loop import Trainer, prepare_run_dir

# Paper 003 on 8x8 digits, spectral-norm ResNet energy (network buffers to broadcast), two networks.
CDRL = ["data.name=digits", "model.name=resnet", "model.channels=[8]", "model.depth=1", "model.width=8",
        "model.time_embed_dim=8", "model.spectral_norm=true", "method.name=cdrl", "method.T=2",
        "method.n_steps=2", "method.init_channels=[4]", "method.embed_dim=8", "train.batch_size=8",
        "train.steps=4", "train.checkpoint_every=2", "train.log_every=1", "train.threads=1",
        "train.progress=false", "train.device=cuda"]


@dataclasses.dataclass(frozen=True)
class OneRankGroup(distributed.DistContext):
    """A one-process context that takes every collective path (``enabled`` is True)."""

    @property
    def enabled(self) -> bool:
        return True


def _fit(run: Path, ctx, resume: bool = False) -> Trainer:
    real_setup = distributed.setup
    if ctx is not None:
        distributed.setup = lambda device: ctx  # the Trainer asks distributed.setup for its context
    try:
        cfg = load_config(None, CDRL)
        lock = prepare_run_dir(run, cfg, resume=resume, overwrite=False)
        try:
            trainer = Trainer(cfg, run)
            if resume:
                trainer.resume()
            trainer.fit()
        finally:
            lock.release()
    finally:
        distributed.setup = real_setup
    return trainer


def check(cond: bool, what: str) -> None:
    if not cond:
        print(f"nccl_worker: FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main(out: Path) -> None:
    check(os.environ.get("WORLD_SIZE") == "1", f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}, expected '1'")
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    plain_ctx = distributed.setup(device)
    check(plain_ctx.backend is None and not plain_ctx.enabled and not dist.is_initialized(),
          "one process must not initialise a process group")

    torch.cuda.set_device(device)
    dist.init_process_group("nccl", init_method="env://", device_id=device)
    check(dist.get_backend() == "nccl" and dist.get_world_size() == 1, "NCCL group of one")
    ctx = OneRankGroup(rank=0, world_size=1, local_rank=device.index, device=device, backend="nccl")
    ctx.barrier()
    box: list = []
    distributed.main_first(ctx, lambda: box.append("ran"))
    check(box == ["ran"], "main_first ran the function on rank 0")
    try:
        distributed.main_first(ctx, lambda: (_ for _ in ()).throw(ValueError("rank 0 refused")))
        check(False, "main_first re-raises rank 0's exception")
    except ValueError as exc:
        check("rank 0 refused" in str(exc), "main_first re-raises rank 0's exception")

    nccl_run, plain_run = out / "nccl", out / "plain"
    nccl = _fit(nccl_run, ctx)
    plain = _fit(plain_run, None)
    check(plain.dist.backend is None and nccl.dist.backend == "nccl", "contexts as intended")
    a = torch.tensor([r["loss"] for r in read_metrics(nccl_run)])
    b = torch.tensor([r["loss"] for r in read_metrics(plain_run)])
    check(a.shape == b.shape == (4,), f"four logged steps each ({a.shape}, {b.shape})")
    check(torch.allclose(a, b, rtol=1e-4, atol=1e-6), f"NCCL-path losses {a.tolist()} != plain {b.tolist()}")
    rank_tensors, rank_meta = dist_checkpoint.read_rank_file(dist_checkpoint.rank_file(nccl_run / "checkpoints", 4, 0))
    check(rank_meta["params_sha256"] == dist_checkpoint.params_digest(nccl.objective), "rank file digest")
    check("rng.cuda" in rank_tensors, "the rank file holds the CUDA RNG state")
    check(any(k.endswith(("._u", "._v")) for k in rank_tensors), "spectral-norm vectors in the rank file")

    # Resume through the NCCL path from step 2 (a copy without the step-4 files): same end state.
    part = out / "part"
    shutil.copytree(nccl_run, part)
    for p in (part / "checkpoints").glob("step_00000004*"):
        p.unlink()
    resumed = _fit(part, ctx, resume=True)
    check(resumed.step == 4, f"resumed to step {resumed.step}")
    c = torch.tensor([r["loss"] for r in read_metrics(part)])
    check(torch.allclose(c, a, rtol=1e-4, atol=1e-6), f"resumed losses {c.tolist()} != {a.tolist()}")
    x, _ = ckpt.load_checkpoint(part / "checkpoints" / "step_00000004.safetensors")
    y, _ = ckpt.load_checkpoint(nccl_run / "checkpoints" / "step_00000004.safetensors")
    check(all(torch.equal(x[k], y[k]) for k in x if k.startswith("rng.")), "RNG states after resume")
    distributed.teardown()
    check(not dist.is_initialized(), "teardown destroyed the group")
    print(json.dumps({"ok": True, "losses": a.tolist(), "plain_losses": b.tolist(), "resumed": c.tolist()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
