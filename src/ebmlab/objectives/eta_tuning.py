"""Paper 002's step-size rule (App. A.1): tune eta on the energy gap at the final sampling step.

App. A.1: "We initially tuned eta so that the energy of generated samples is slightly below the energy
of real images at the final sampling step. [...] Smaller values typically lead to noisy results, as the
Langevin process hasn't fully converged, while higher values yield sampling artifacts and high
contrast." Fig. 4 shows one trained model sampled with three step sizes (2.39, 2.89, 3.39), and Sec. 5
adjusts eta "according to the total number of steps and noise variance in each experiment", i.e. per
T x K (and sigma) setting.

What is measured. For a candidate eta, chains run the full generation sweep (N(0, I) at t = T down to
t = 1, T x K steps of Eq. 17 with that eta and the usual noise schedule), and the quantity logged is the
t = 1 energy gap in ebmlab's sign convention (energy = f of Eqs. 8/17, lower = more probable):

    gap(eta) = mean E(x+, t=1) - mean E(x_gen, t=1)

(the same sign as the ``energy_gap_t1`` training metric). "Sample energy slightly below the real one"
is gap >= 0 and small: gap < 0 means the chains stopped short of the data's energy (eta too small,
unconverged, noisy samples), a large gap > 0 means they overshoot into the wells (eta too large,
"high contrast"). The gap increases with eta for a fixed model, so the rule picks the *smallest*
candidate whose gap reaches ``target`` (default 0): the first eta at which the sample energy falls
below the real one.

Two searches, both reading App. A.1 literally:

- ``tune_eta(objective, data, candidates)``: sampling-time search on a *trained* model (Fig. 4's
  reading: one model, several sampling step sizes). Cheap: one T x K sweep of ``n`` chains per
  candidate (8 Gaussians, T x K = 60, n = 1,000: ~1.6 s per candidate on one loaded core). A model
  trained with eta0 is close to contrastive equilibrium with chains of step eta0, so on a trained
  model the crossing lies near eta0 (toy, eta0 = 0.2, seeds 0 and 3: between 0.2 and 0.3, gaps
  -0.011 / -0.027 at 0.2 and +0.013 / +0.002 at 0.3).
- ``tune_eta_by_training(cfg, candidates, steps)`` (``experiments/eta_search.py``: it trains, so it
  lives above the training loop): "initially tuned" before the real training: a
  short training per candidate with that eta, then the gap of that model at its own eta (the training
  metric ``energy_gap_t1`` is not used: it is the gap of buffer chains built by older models). Cost:
  len(candidates) short trainings of ``steps`` iterations plus one sweep each (8 Gaussians at
  T x K = 60: ~28 ms per iteration on a lightly loaded core, ~95 ms on a machine loaded 4-8 deep;
  about proportional to K; 5 candidates x 600 steps ~ 1.5 min light, ~5 min loaded).

Both return an ``EtaTuning`` with the chosen eta and the per-candidate gaps (a table the experiment
can log).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["EtaTuning", "t1_energy_gap", "choose_eta", "tune_eta"]  # tune_eta_by_training: experiments/eta_search.py


@dataclass
class EtaTuning:
    """Result of an eta search: ``eta`` the chosen step size, ``gaps`` {eta: t = 1 gap E(x+) - E(x_gen)},
    ``reached`` False when no candidate reached ``target`` (then ``eta`` is the largest candidate)."""
    eta: float
    gaps: dict = field(default_factory=dict)
    target: float = 0.0
    reached: bool = True

    def as_dict(self) -> dict:
        """JSON-friendly form: {"eta", "target", "reached", "gaps": {str(eta): gap}}."""
        return {"eta": self.eta, "target": self.target, "reached": self.reached,
                "gaps": {f"{k:g}": v for k, v in self.gaps.items()}}


def choose_eta(gaps: dict, target: float = 0.0) -> EtaTuning:
    """App. A.1's rule on measured gaps {eta: E(x+, 1) - E(x_gen, 1)}: the smallest eta whose gap is
    >= ``target`` (sample energy at or slightly below the real one); none: the largest eta, reached=False."""
    if not gaps:
        raise ValueError("choose_eta needs at least one candidate")
    for eta in sorted(gaps):
        if gaps[eta] >= target:
            return EtaTuning(float(eta), dict(sorted(gaps.items())), target, True)
    return EtaTuning(float(max(gaps)), dict(sorted(gaps.items())), target, False)


def positives(data, n: int, generator: torch.Generator | None, device) -> Tensor:
    """(n, ...) real points in model coordinates: held-out rows (fresh draws are not needed)."""
    test = data.test
    idx = torch.randperm(test.shape[0], generator=generator)[:n]
    return test[idx].to(device)


@torch.no_grad()
def t1_energy_gap(objective, x_pos: Tensor, eta: float, n: int = 1000,
                  generator: torch.Generator | None = None) -> float:
    """mean E(x_pos, t=1) - mean E(x_gen, t=1) for ``n`` chains of the full T x K sweep from N(0, I)
    run with step size ``eta`` (``objective.cfg.eta`` is restored afterwards)."""
    if not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a positive number, got {eta}")
    old = objective.cfg.eta
    objective.cfg.eta = float(eta)
    try:
        x_gen = objective.sample(n, generator=generator).x
    finally:
        objective.cfg.eta = old
    e_pos = objective.energy(x_pos.to(x_gen.device), t=1).mean()
    e_gen = objective.energy(x_gen, t=1).mean()
    return float(e_pos - e_gen)


def tune_eta(objective, data, candidates, *, n: int = 1000, target: float = 0.0,
             generator: torch.Generator | None = None) -> EtaTuning:
    """Sampling-time search (App. A.1 / Fig. 4) on a trained ``ImplicitDiffusion`` objective.

    objective: a trained paper-002 objective (use the EMA weights, as evaluation does); data: its
    ``Dataset`` (real points are held-out rows, model coordinates); candidates: step sizes to try;
    n: chains (and real points) per candidate; target: the gap the chosen eta must reach (0: sample
    energy at or below the real one; a small positive value asks for "slightly below" with margin).
    Every candidate uses the same chain noise (the generator is re-seeded from one draw), so the gaps
    differ only through eta. Returns an ``EtaTuning``. Cost: len(candidates) x T x K forward+backward
    passes on ``n`` points."""
    cands = sorted({float(c) for c in candidates})
    if not cands:
        raise ValueError("tune_eta needs at least one candidate eta")
    dev = next(objective.parameters()).device
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x_pos = positives(data, n, g, dev)
    seed = int(torch.randint(2 ** 62, (1,), generator=g))
    gaps = {}
    for eta in cands:
        gc = torch.Generator(device=dev).manual_seed(seed)  # common random numbers across candidates
        gaps[eta] = t1_energy_gap(objective, x_pos, eta, n, gc)
    return choose_eta(gaps, target)
