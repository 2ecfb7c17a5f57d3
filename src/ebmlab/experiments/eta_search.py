"""Paper 002 App. A.1's "initially tuned" eta: a short training per candidate step size, then the t = 1
energy gap of each model at its own eta (``objectives/eta_tuning.py`` has the rule, ``choose_eta``, and
the sampling-time search ``tune_eta``; this search trains, so it lives with the experiments, above the
training loop).
"""
from __future__ import annotations

import copy
import tempfile

import torch

from ebmlab.config_checks import check_new_run
from ebmlab.objectives.eta_tuning import EtaTuning, choose_eta, positives, t1_energy_gap
from ebmlab.training.loop import Trainer


def tune_eta_by_training(cfg, candidates, steps: int, *, data=None, n: int = 1000, target: float = 0.0,
                         seed: int | None = None) -> EtaTuning:
    """Short-training search ("we initially tuned eta", App. A.1): for each candidate, train ``cfg``
    (a paper-002 ``Config``) for ``steps`` iterations with ``method.eta`` = that candidate, then measure
    the t = 1 gap of the EMA model sampled with the same eta (``t1_energy_gap``). Returns an ``EtaTuning``
    choosing the smallest eta whose gap reaches ``target``. Trainings run in temporary directories (no
    checkpoints kept). ``data``: a built ``Dataset`` to reuse (else built from ``cfg.data``); ``seed``:
    train.seed of the trainings (default ``cfg.train.seed``). Cost: one training of ``steps`` iterations per
    distinct candidate, each followed by one t = 1 gap measurement of ``n`` points."""
    cands = sorted({float(c) for c in candidates})
    if not cands:
        raise ValueError("tune_eta_by_training needs at least one candidate eta")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    check_new_run(cfg)  # a key the method does not read: refused here as for a run
    gaps = {}
    for eta in cands:
        c = copy.deepcopy(cfg)
        c.method.eta = eta
        c.train.steps = int(steps)
        c.train.checkpoint_every = 10 ** 9  # only the final save (a temporary directory)
        c.train.progress = False
        if seed is not None:
            c.train.seed = int(seed)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(c, tmp, data=data)
            trainer.fit()
            if trainer.ema is not None:
                trainer.ema.copy_to(trainer.objective)
            obj = trainer.objective
            dev = next(obj.parameters()).device
            g = torch.Generator().manual_seed(c.train.seed + 17)
            x_pos = positives(trainer.data, n, g, dev)
            gc = torch.Generator(device=dev).manual_seed(c.train.seed + 19)
            gaps[eta] = t1_energy_gap(obj, x_pos, eta, n, gc)
            data = trainer.data
    return choose_eta(gaps, target)
