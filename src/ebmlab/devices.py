"""What a torch device can hold: Apple's MPS has no float64, so the few float64 computations of ebmlab (systematic
resampling's CDF, the selection's validation terms, the Inception features' accumulators) run there on the CPU,
and on their own device everywhere else (CPU, CUDA: unchanged numbers, no host transfer). And the caller's global
generators on every device, kept across the Python API's calls (``callers_rng``).
"""
from __future__ import annotations

import torch

__all__ = ["NO_FLOAT64", "float64_device", "callers_rng", "to_float64"]

NO_FLOAT64 = {"mps"}  # device types without float64 (torch raises TypeError on a conversion)


def float64_device(device: torch.device) -> torch.device:
    """Where float64 work for tensors on ``device`` runs: ``device`` itself, or the CPU where it has no float64."""
    return torch.device("cpu") if device.type in NO_FLOAT64 else device


def to_float64(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float64, on ``float64_device(t.device)``."""
    return t.to(float64_device(t.device)).double()


def callers_rng():
    """``torch.random.fork_rng`` over the CPU and every initialised CUDA device: inside it, training seeds torch's
    global generators and building a network draws its first weights from them; the caller's come back as they were.
    A ``with`` block, not a decorator: it adds no frame, so the warnings' ``stacklevel`` still names the user's line."""
    return torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else [])
