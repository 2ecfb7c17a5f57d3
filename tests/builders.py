"""Small energies and objectives that several test files build (one definition each)."""
import math

import torch
from torch import nn

from ebmlab.energies.mlp import MLPEnergy
from ebmlab.objectives.base import Objective, SampleOutput
from ebmlab.objectives.recovery import RecoveryConfig, RecoveryLikelihood


class LinearEnergy(nn.Module):
    """E(x, t) = c * sum(x): gradient norm c * sqrt(D) everywhere."""

    def __init__(self, c):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(float(c)))

    def forward(self, x, t=None):
        return self.c * x.sum(1)


def recovery_objective(dim: int = 2, num_classes: int = 0, **kw) -> RecoveryLikelihood:
    """Paper 003's objective on a small MLP (width 32, one block; seeded), class-conditional when ``num_classes``."""
    cfg = RecoveryConfig(conditional=num_classes > 0, **kw)
    cond_dim = cfg.embed_dim + (num_classes + 1 if num_classes else 0)
    torch.manual_seed(0)
    net = MLPEnergy(dim, 32, 1, cond_dim=cond_dim)
    return RecoveryLikelihood(net, cfg, (dim,), num_classes)


class Quadratic(nn.Module):
    """E(z) = |z|^2 / 2."""

    def forward(self, z, **_):
        return 0.5 * z.flatten(1).pow(2).sum(1)


class GaussianStandIn(Objective):
    """An exact N(0, I) in model coordinates (energy |z|^2 / 2, normalised log-density) whose "chains" move their
    start by ``10 y`` (a class label) and by ``n_steps`` x one uniform draw per chain from the generator: 0 steps
    return the start, and the generator's use is visible in the output. ``calls``: every ``sample`` call's
    arguments; its diagnostics: the batch size and a two-step chain's acceptance and step size."""

    def __init__(self, shape=(2,), num_classes=0):
        super().__init__()
        self.shape, self.num_classes = tuple(shape), num_classes
        self.energy = Quadratic()
        self.anchor = nn.Parameter(torch.zeros(()))  # a parameter: the device
        self.calls = []

    @property
    def n_steps_default(self):
        return 2

    def prior(self, n, generator=None):
        return torch.randn(n, *self.shape, generator=generator)

    def sample(self, n, *, generator=None, n_steps=None, x0=None, cond=None):
        self.calls.append({"n": n, "n_steps": n_steps, "x0": x0, "cond": cond})
        x = self.start_points(n, x0, generator).clone()
        steps = self.n_steps_default if n_steps is None else n_steps
        x = x + steps * torch.rand(n, *[1] * len(self.shape), generator=generator)
        if cond is not None:
            x = x + 10 * cond["y"].float().view(n, *[1] * len(self.shape))
        return SampleOutput(x, {"n": torch.tensor(n), "accept_rate": torch.tensor([0.5, 0.6]),
                                "step_size": torch.tensor([0.1, 0.1])})

    def log_density(self, z):
        return -0.5 * z.flatten(1).pow(2).sum(1) - 0.5 * z[0].numel() * math.log(2 * math.pi)


def run_with_best(d, steps: int, checkpoint_every: int, best_step: int, logged: int) -> None:
    """A run folder (no step checkpoints) with ``train.steps``/``checkpoint_every``, a selection best of step
    ``best_step`` and a ``metrics.jsonl`` of steps 1..``logged``: what ``run_dir.has_result`` reads."""
    import json

    from ebmlab.training.config import load_config, save_config
    (d / "checkpoints").mkdir(parents=True)
    save_config(load_config(None, [f"train.steps={steps}", f"train.checkpoint_every={checkpoint_every}",
                                   f"train.select_every={max(1, checkpoint_every // 2)}", "data.val_fraction=0.1"]),
                d / "config.yaml")
    (d / "checkpoints" / "best.safetensors").write_bytes(b"w")
    (d / "checkpoints" / "best.json").write_text(json.dumps({"step": best_step}), encoding="utf-8")
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": k}) + "\n" for k in range(1, logged + 1)),
                                     encoding="utf-8")


def finished_run_files(d, data: bool = True):
    """A folder that looks like a finished run (enough for ``run_dir``'s rules: config, a step checkpoint pair, a
    log reaching ``train.steps``, metrics.json), with the user's ``data.npy`` unless ``data=False``."""
    import json

    import numpy as np

    from ebmlab.training.config import load_config, save_config
    (d / "checkpoints").mkdir(parents=True)
    save_config(load_config(None, ["train.steps=10", "train.checkpoint_every=5"]), d / "config.yaml")
    (d / "checkpoints" / "step_00000010.safetensors").write_bytes(b"w")
    (d / "checkpoints" / "step_00000010.json").write_text(json.dumps({"step": 10}), encoding="utf-8")
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": k}) + "\n" for k in range(1, 11)), encoding="utf-8")
    (d / "metrics.json").write_text("{}", encoding="utf-8")
    if data:
        np.save(d / "data.npy", np.zeros((4, 2), np.float32))
    return d


def two_finished_runs(root):
    """Two finished tiny runs in ``root`` (``a`` trained, ``b`` its copy): what compare needs."""
    import shutil

    from ebmlab.cli import main
    from tests.cli_helpers import sets
    from tests.crash_sweep import TINY
    assert main(["train", "--out", str(root / "a"), *sets(TINY)]) == 0
    shutil.copytree(root / "a", root / "b")
    return root / "a", root / "b"
