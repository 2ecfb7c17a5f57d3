"""ebmlab: energy-based models in PyTorch, the training methods of five papers on shared parts.

ebmlab trains, samples and evaluates energy-based models (EBMs): an energy network E(x) (lower = more
probable, p(x) ∝ exp(-E(x))) learned from data by the methods of five papers, which share the
same energies, samplers, replay buffers, data, metrics, training loop and command line.

Python, in a few lines (``ebmlab.api``):

```python
import torch, ebmlab

x = torch.randn(5000, 2) * torch.tensor([2.0, 0.5])     # your data (N, D)
run = ebmlab.train("hybrid", data=x, out="runs/mine", train={"steps": 500})
run = ebmlab.load("runs/mine")                           # in any process, later
samples = run.sample(1000)                               # data coordinates
energies = run(samples)                                  # = run.energy(samples)
```

``ebmlab.train(..., energy=MyEnergy(...))`` trains your own ``nn.Module`` energy. The command line
(``ebmlab train | sample | eval | compare | experiment | configs``) does the same from a shell. Importing
``ebmlab`` has no side effects: it imports neither torch nor matplotlib until a function is called.

Main modules: ``ebmlab.api`` (train, load, Run), ``ebmlab.objectives`` (the methods and their
contract, ``Objective``), ``ebmlab.samplers`` (Langevin, MALA, the papers' generation procedures,
``run_chain``), ``ebmlab.energies`` (networks), ``ebmlab.data``, ``ebmlab.metrics``,
``ebmlab.training`` (loop, runs, evaluation), ``ebmlab.config`` (the config schema), ``ebmlab.plots``.

References (the papers the methods implement; the code cites them as "paper 000" ... "paper 004"):

- **paper 000** — *Thinking Fourth Dimensionally: Treating Time as a Random Variable in EBMs.*
  Anonymous authors (under double-blind review). Methods ``joint_cd``, ``cd_ce``, ``per_t``, ``cd_plain``.
- **paper 001** — *Improved Contrastive Divergence Training of Energy-Based Models.* Yilun Du,
  Shuang Li, Joshua Tenenbaum, Igor Mordatch (ICML 2021). Method ``improved_cd``.
- **paper 002** — *Diffusion Process with Implicit Latents via Energy Models.* Anonymous authors
  (under double-blind review). Method ``implicit_diffusion``.
- **paper 003** — *Learning Energy-Based Models by Cooperative Diffusion Recovery Likelihood.*
  Yaxuan Zhu, Jianwen Xie, Ying Nian Wu, Ruiqi Gao (ICLR 2024). Methods ``cdrl``, ``drl``.
- **paper 004** — *Revisiting Contrastive Divergence for Density Estimation and Sample Generation.*
  Azwar Abdulsalam, Joseph G. Makin (reviewed on OpenReview, forum i5K4SZeqtq). Methods ``hybrid``, ``data``, ``noise``,
  ``persistent``, ``persistent_refresh``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names below are imported on first use
    from ebmlab.api import Run, compare, configs, datasets, experiment, experiment_names, load, methods, models, resume, train

_API = ("Run", "train", "resume", "load", "compare", "methods", "models", "datasets", "configs", "experiment_names", "experiment")
__all__ = ["Run", "__version__", "compare", "configs", "datasets", "experiment", "experiment_names", "load", "methods", "models",
           "resume", "train"]


def __getattr__(name: str) -> Any:
    """``ebmlab.train``, ``ebmlab.load``, ``ebmlab.Run``, ...: imported from ``ebmlab.api`` on first use."""
    if name in _API:
        from ebmlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'ebmlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
