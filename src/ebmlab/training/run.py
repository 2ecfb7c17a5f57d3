"""Open a finished or running run directory: config, dataset, objective with EMA weights.

``ebmlab.load(RUN)`` returns the trained energy as a module that maps data-coordinate inputs
(B, ...) to energies (B,): it standardises inputs exactly as training did.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import yaml
from torch import nn

from ebmlab.training import checkpoint as ckpt
from ebmlab.training.config import from_dict


class DataSpaceEnergy(nn.Module):
    """E(x) for x in the data's own coordinates: wraps the model-coordinate energy."""

    def __init__(self, energy: nn.Module, transform):
        super().__init__()
        self.energy, self.transform = energy, transform

    def forward(self, x: torch.Tensor, **cond) -> torch.Tensor:
        return self.energy(self.transform.to_model(x), **cond)


def read_run_config(run_dir: Path):
    p = Path(run_dir) / "config.yaml"
    if not p.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not an ebmlab run directory (no config.yaml)")
    return from_dict(yaml.safe_load(p.read_text()))


class OpenedRun(NamedTuple):
    cfg: object              # the run's resolved Config
    objective: nn.Module     # the method's Objective, weights loaded, in eval mode
    data: object             # the run's Dataset
    step: int                # training step of the checkpoint used
    checkpoint: Path         # the checkpoint file used


def open_checkpoint(run_dir: str | Path, *, ema: bool = True, device: str = "cpu",
                    checkpoint: str | Path | None = None) -> OpenedRun:
    """Open a run at its latest (or the given) checkpoint, EMA weights swapped in (``ema``)."""
    from ebmlab.data import build_dataset
    from ebmlab.objectives import build_objective

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    path = Path(checkpoint) if checkpoint else ckpt.latest_checkpoint(run_dir / "checkpoints")
    if path is None:
        raise ckpt.CheckpointError(f"no checkpoint in {str(run_dir / 'checkpoints')!r}; train the run first")
    if not path.is_file():
        raise ckpt.CheckpointError(f"checkpoint {str(path)!r} does not exist")
    tensors, meta = ckpt.load_checkpoint(path)
    data = build_dataset(cfg.data)
    objective = build_objective(cfg, data)
    objective.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema:
        params = dict(objective.named_parameters())
        with torch.no_grad():
            for k, v in tensors.items():
                if k.startswith("ema."):
                    params[k[4:]].copy_(v)
    objective.to(torch.device(device)).eval()
    return OpenedRun(cfg, objective, data, int(meta.get("step", -1)), path)


def open_run(run_dir: str | Path, *, ema: bool = True, device: str = "cpu", checkpoint: str | None = None):
    """(cfg, objective, data) with the latest (or given) checkpoint loaded, EMA weights swapped in."""
    run = open_checkpoint(run_dir, ema=ema, device=device, checkpoint=checkpoint)
    return run.cfg, run.objective, run.data


def load(run_dir: str | Path, device: str = "cpu") -> nn.Module:
    """The trained energy (EMA weights) of a run, mapping data-coordinate (B, D) to (B,)."""
    _, objective, data = open_run(run_dir, device=device)
    return DataSpaceEnergy(objective.energy, data.transform).eval()
