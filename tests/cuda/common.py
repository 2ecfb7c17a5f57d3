"""Helpers of the CUDA suite: the skip marks, tiny configs on ``train.device=cuda``, a Trainer that
trains. Importable without a GPU (the tests skip; nothing here touches CUDA at import)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.contracts.test_objective_contract import SHRINK, tiny_overrides

HAS_CUDA = torch.cuda.is_available()
SKIP_REASON = "needs a CUDA GPU (torch.cuda.is_available() is False)"
CUDA_ONLY = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason=SKIP_REASON)]

# Methods whose loss differentiates through dE/dx (double backward): torch.compile refuses them
# (training/distributed.py, compile_errors); every other registered method supports train.compile.
DOUBLE_BACKWARD = ("improved_cd", "implicit_diffusion")

# Run keys for a quick run: no progress bar, log every step, one CPU thread for the host side.
QUICK = ["train.progress=false", "train.log_every=1", "train.threads=1"]


def cuda_overrides(name: str, *extra: str) -> list[str]:
    """A tiny run of method ``name`` (the objective contract's 2-D toy) on the GPU."""
    return tiny_overrides(name) + QUICK + ["train.device=cuda", *extra]


def image_overrides(config: str, *extra: str) -> list[str]:
    """A shipped digits config shrunk to two steps (chains shortened; augmentation, the multi-scale
    energy and the buffers kept: they are CUDA paths too)."""
    from ebmlab.objectives import METHODS
    from ebmlab.training.config import load_config

    name = load_config(config).method.name
    fields = {f.name for f in dataclasses.fields(METHODS[name].config)}
    keep = ("augment", "multiscale", "buffer_size")  # buffers stay >= the config's batch size
    shrink = [f"method.{k}={v}" for k, v in SHRINK.items() if k in fields and k not in keep]
    return shrink + QUICK + ["train.device=cuda", "train.steps=2", "train.checkpoint_every=2", *extra]


def train(run_dir: Path, overrides: list[str], config: str | None = None, data=None):
    """Prepare ``run_dir``, build a Trainer from ``config`` + ``overrides`` and ``fit`` it."""
    from ebmlab.training.config import load_config
    from ebmlab.training.loop import Trainer, prepare_run_dir

    cfg = load_config(config, overrides)
    lock = prepare_run_dir(run_dir, cfg, resume=False, overwrite=False)
    try:
        trainer = Trainer(cfg, run_dir, data=data)
        trainer.fit()
    finally:
        lock.release()
    return trainer
