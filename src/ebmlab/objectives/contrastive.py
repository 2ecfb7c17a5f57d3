"""Contrastive divergence with five chain initialisations and paper 004's hybrid loss.

Paper 004 (Revisiting Contrastive Divergence), Sec. 3 and Alg. 1. Schemes (``method.name``):

- ``data``: chains start at the data batch (Hinton's CD), loss <E(x)> - <E(x̂_data-init)>;
- ``noise``: chains start at N(0, I) (short-run MCMC), loss <E(x)> - <E(x̂_noise-init)>;
- ``persistent``: chains start from a bank of 60,000 samples initialised with noise; the chains are
  written back to their slots (Tieleman 2008; Nijkamp et al.);
- ``persistent_refresh``: as persistent, but in 5 % of iterations the whole batch restarts from noise
  and overwrites random slots (paper 004 Sec. 3, following Du et al. 2021);
- ``hybrid``: Eq. 6, [<E(x)> - <E(x̂_noise-init)>] + lambda [<E(x)> - <E(x̂_data-init)>], lambda 25.

Samples are stop-gradient (the "computational loss" of App. A.3). The metric ``energy_gap`` is
d = <E(x)> - <E(x̂)> of App. A.3 Eq. 7 (for hybrid, of the noise-initialised chains; the
data-initialised gap is ``energy_gap_data``).

Sampler: ``langevin`` (Eq. 3 with temperature, App. A.4 Eq. 9) or ``mala`` (Sec. 4.4, adaptive step to
``target_accept`` = 0.67 when set). ``adaptive_step: true`` is paper 004's eps = c / ||E(x)|| with
c = ``adaptive_c``; the paper does not say which norm over the batch, we take the root mean square
of the data energies of the batch so that eps does not depend on the batch size. Optional
``energy_l2`` adds alpha (E(x)^2 + E(x̂)^2) (Du & Mordatch 2019; not in paper 004). Default 0.01:
without it the hybrid's noise-initialised term runs away on the standardised rings once the model
sharpens (about update 2,000: the energy reached 1e15 and MALA acceptance 0), see docs/paper004.md;
the paper-004 experiment and configs set it to 0 to follow the paper.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ebmlab.errors import ConfigError
from ebmlab.buffers import ReplayBuffer
from ebmlab.energies.build import build_energy
from ebmlab.objectives.base import LossOutput, Objective, SampleOutput, batch_data
from ebmlab.samplers import ChainState, StepSizeController, get_sampler, run_chain

SCHEMES = ("data", "noise", "persistent", "persistent_refresh", "hybrid")


@dataclass
class ContrastiveConfig:
    """``method`` keys of paper 004's five CD schemes (see the field comments)."""
    name: str = "hybrid"
    lam: float = 25.0                 # hybrid: weight of the data-initialised term (Eq. 6)
    sampler: str = "mala"             # langevin | mala
    n_steps: int = 30                 # Langevin steps from noise / bank (L)
    n_steps_data: int | None = 10     # steps of data-initialised chains (None: n_steps)
    step_size: float = 0.01           # eps
    temperature: float = 1.0          # T (App. A.4); noise std sqrt(2 eps T) unless noise_scale
    noise_scale: float | None = None
    target_accept: float | None = 0.574  # mala: adapt eps towards this acceptance (None: fixed eps)
    adapt_rate: float = 0.05
    adaptive_step: bool = False       # paper 004: eps = adaptive_c / ||E(x)||
    adaptive_c: float = 0.0005
    init_std: float = 1.0             # std of the N(0, sigma² I) chain initialisation
    buffer_size: int = 60000          # persistent bank size (paper 004: 60,000)
    refresh_prob: float = 0.05        # persistent_refresh: fraction of iterations that restart
    energy_l2: float = 0.01

    def validate(self):
        """Raise ``ConfigError`` (one sentence) for an out-of-range key."""
        if self.sampler not in ("langevin", "mala"):
            raise ConfigError(f"method.sampler must be langevin or mala, got {self.sampler!r}")
        for key in ("step_size", "temperature", "init_std"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"method.{key} must be positive, got {getattr(self, key)}")
        if self.noise_scale is not None and self.noise_scale <= 0:
            raise ConfigError(f"method.noise_scale must be positive, got {self.noise_scale}")
        if self.n_steps < 1 or (self.n_steps_data is not None and self.n_steps_data < 1):
            raise ConfigError("method.n_steps and method.n_steps_data must be at least 1")
        if self.target_accept is not None and not 0 < self.target_accept < 1:
            raise ConfigError(f"method.target_accept must lie in (0, 1), got {self.target_accept}")


class ContrastiveDivergence(Objective):
    """Paper 004's objective: one of the five chain initialisations, or the hybrid loss (Eq. 6)."""
    def __init__(self, energy: torch.nn.Module, cfg: ContrastiveConfig, shape: tuple[int, ...]):
        super().__init__()
        self.energy, self.cfg, self.shape = energy, cfg, tuple(shape)
        self.scheme = cfg.name
        self.temperature = cfg.temperature
        self.sampler = get_sampler(cfg.sampler)
        adapt = cfg.sampler == "mala" and cfg.target_accept is not None
        # One controller per chain family: noise/bank chains and data chains see different landscapes.
        self.ctrl_noise = StepSizeController(1, cfg.step_size, cfg.target_accept or 0.5, cfg.adapt_rate) if adapt else None
        self.ctrl_data = StepSizeController(1, cfg.step_size, cfg.target_accept or 0.5, cfg.adapt_rate) if adapt else None
        self.register_buffer("last_step_size", torch.tensor(cfg.step_size))
        if self.scheme in ("persistent", "persistent_refresh"):
            reset = cfg.refresh_prob if self.scheme == "persistent_refresh" else 0.0
            self.bank = ReplayBuffer(cfg.buffer_size, self.shape, self.prior, reset_prob=reset,
                                     reset_mode="batch", mode="bank")

    @property
    def n_steps_default(self) -> int:
        """L, the length of the noise/bank chains."""
        return self.cfg.n_steps

    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, ...) N(0, init_std^2 I): where noise-initialised chains start."""
        dev = self.last_step_size.device
        return self.cfg.init_std * torch.randn((n, *self.shape), generator=generator, device=dev)

    def log_density(self, x: Tensor) -> Tensor:
        """(B,) unnormalised log p(x) = -E(x)/T (App. A.4)."""
        return -self.energy(x) / self.temperature

    def _chain(self, x0: Tensor, n_steps: int, eps, ctrl, generator, start=None):
        return run_chain(self.sampler, self.energy, x0, n_steps, eps, noise_scale=self.cfg.noise_scale,
                         temperature=self.cfg.temperature, generator=generator, controller=ctrl, start=start)

    def _positive(self, x: Tensor) -> tuple[Tensor, ChainState | None]:
        """E(x) (B,) with its graph to the parameters; for data-initialised chains also dE/dx from the
        same forward (the chain's start state), so the data batch is evaluated once, not twice."""
        if self.scheme not in ("data", "hybrid"):
            return self.energy(x), None
        x_in = x.detach().requires_grad_(True)
        e_pos = self.energy(x_in)  # (B,)
        (g,) = torch.autograd.grad(e_pos.sum(), x_in, retain_graph=True)
        return e_pos, ChainState(x.detach(), e_pos.detach(), g.detach())

    def _step_size(self, e_data: Tensor):
        if not self.cfg.adaptive_step:
            return self.cfg.step_size
        rms = e_data.detach().pow(2).mean().sqrt().clamp_min(1e-8)
        return float(self.cfg.adaptive_c / rms)

    def forward(self, batch, *, generator: torch.Generator | None = None) -> LossOutput:
        """Alg. 1: the scheme's chains from the batch / noise / bank, then the computational loss."""
        x = batch_data(batch)  # (B, ...) model coordinates
        e_pos, start = self._positive(x)  # (B,)
        eps = self._step_size(e_pos)
        self.last_step_size.fill_(eps)
        metrics: dict[str, Tensor] = {"step_size": torch.tensor(eps)}
        loss = torch.zeros((), device=x.device)
        negs = []
        if self.scheme in ("data", "hybrid"):
            steps = self.cfg.n_steps_data or self.cfg.n_steps
            x_neg, diag = self._chain(x, steps, eps, self.ctrl_data, generator, start)
            gap, term = self._term(e_pos, x_neg)
            loss = loss + (self.cfg.lam if self.scheme == "hybrid" else 1.0) * term
            metrics.update(energy_gap_data=gap, accept_rate_data=diag.accept_rate.mean(),
                           step_size_data=diag.step_size[-1])  # the adapted eps, if MALA adapts
            negs.append(x_neg)
        if self.scheme != "data":
            x0, idx = self._start(x.shape[0], generator)
            x_neg, diag = self._chain(x0, self.cfg.n_steps, eps, self.ctrl_noise, generator)
            if idx is not None:
                self.bank.update(x_neg, idx)
            gap, term = self._term(e_pos, x_neg)
            loss = loss + term
            metrics.update(energy_gap=gap, accept_rate=diag.accept_rate.mean(), step_size=diag.step_size[-1])
            negs.insert(0, x_neg)
        else:
            metrics.update(energy_gap=metrics["energy_gap_data"], accept_rate=metrics["accept_rate_data"],
                           step_size=metrics["step_size_data"])
        metrics["energy_pos"] = e_pos.detach().mean()
        return LossOutput(loss, metrics, negs[0])

    def _start(self, n: int, generator):
        if self.scheme in ("persistent", "persistent_refresh"):
            return self.bank.sample(n, generator)
        return self.prior(n, generator), None

    def _term(self, e_pos: Tensor, x_neg: Tensor) -> tuple[Tensor, Tensor]:
        """Computational loss <E(x)> - <E(x̂)> on stop-gradient samples, plus optional L2."""
        e_neg = self.energy(x_neg.detach())
        term = e_pos.mean() - e_neg.mean()
        if self.cfg.energy_l2 > 0:
            term = term + self.cfg.energy_l2 * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        return (e_pos.mean() - e_neg.mean()).detach(), term

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, n_steps: int | None = None,
               x0: Tensor | None = None, cond: dict | None = None) -> SampleOutput:
        """Short-run generation: ``n_steps`` (default L) steps of the training sampler from
        N(0, init_std² I) (or ``x0``), with a private copy of the adapted MALA step size."""
        x0 = self.start_points(n, x0, generator)
        steps = self.n_steps_default if n_steps is None else n_steps
        ctrl = self.ctrl_noise.copy() if self.ctrl_noise is not None else None  # sampling never trains
        x, info = self._chain(x0, steps, float(self.last_step_size), ctrl, generator)
        return SampleOutput(x, info.as_dict())


def build(cfg, data) -> ContrastiveDivergence:
    """Build the scheme named by ``cfg.method.name`` on ``data``."""
    energy = build_energy(cfg.model, data.shape)
    return ContrastiveDivergence(energy, cfg.method, data.shape)

