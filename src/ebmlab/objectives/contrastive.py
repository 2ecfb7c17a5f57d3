"""Contrastive divergence with five chain initialisations and paper 004's hybrid loss.

Paper 004 (Revisiting Contrastive Divergence), Sec. 3 and Alg. 1. Schemes (``method.name``):

- ``data``: chains start at the data batch (Hinton's CD), loss <E(x)> - <E(x̂_data-init)>;
- ``noise``: chains start at N(0, I) (short-run MCMC; AIS by default, ``noise_chain``), loss <E(x)> - <E(x̂_noise-init)>;
- ``persistent``: chains start from a bank of 60,000 samples initialised with noise, a batch of
  distinct slots drawn without replacement ("we randomly select a batch from this sample bank");
  the chains are written back to their slots (Tieleman 2008; Nijkamp et al.);
- ``persistent_refresh``: as persistent, but in 5 % of iterations the whole batch restarts from noise
  and overwrites random slots (paper 004 Sec. 3: "we use this procedure only 95% of the time. In the remaining
  5% of iterations ... replacing a randomly selected batch in the bank", following Du et al. 2021). Sec. 4.1
  words it otherwise, "5% of chains randomly restarted at noise": the same share of the bank refreshed on
  average, but every batch would then mix ~5 % noise chains into its negatives; Sec. 3's procedure is the
  one spelt out, so it is the default, and ``refresh_mode: chain`` is Sec. 4.1's;
- ``hybrid``: Eq. 6, [<E(x)> - <E(x̂_noise-init)>] + lambda [<E(x)> - <E(x̂_data-init)>], lambda ``lam``
  (paper: 25; default 5, see the field).

Samples are stop-gradient (the "computational loss" of App. A.3). The metric ``energy_gap`` is
d = <E(x)> - <E(x̂)> of App. A.3 Eq. 7 (for hybrid, of the noise-initialised chains; the
data-initialised gap is ``energy_gap_data``).

Sampler: ``langevin`` (Eq. 3 with temperature, App. A.4 Eq. 9) or ``mala`` (Sec. 4.2.5). MALA's step
rule (``step_rule``):

- ``None`` / ``robbins_monro`` (default): the step adapts up and down towards ``target_accept``,
  default 0.574, the optimal MALA acceptance of Roberts & Rosenthal (1998) (not the paper's value);
  ``target_accept: null`` keeps eps fixed; every proposal counts as a step.
- ``paper004``: the paper's own rule (Sec. 4.2.5): "we replace the fixed step size eps with a dynamic
  step that decreases in proportion as the acceptance ratio falls below the optimal ratio of 0.67
  (Neal, 2011)", and "rejected samples do not count toward Langevin steps". The step only shrinks
  (the paper says nothing about increasing it): log eps += ``adapt_rate`` * min(0, a - 0.67) with a
  a running average of the acceptance (``StepSizeController(rule="paper004")``); ``target_accept``
  is not used. A chain of L steps is L accepted moves: every chain proposes until all chains have
  made at least L accepted moves, at most ``proposal_cap`` * L proposals (default 5, samplers/base.py
  ``PROPOSAL_CAP``); the metrics ``proposals`` (proposals used) and ``accepted_moves`` (mean accepted
  moves per chain), ``proposals_data`` / ``accepted_moves_data`` for the data chains, report it.
  The paper applies the rule to generation after training (its Fig. 8); here it applies to the
  training chains and to ``sample`` alike.

``adaptive_step: true`` is paper 004's eps = c / ||E(x)|| with
c = ``adaptive_c``; the paper does not say which norm over the batch, we take the root mean square
of the data energies of the batch so that eps does not depend on the batch size. Unlike every other step
rule, this one sees the energy's offset: E + c (the same model) takes another eps. With a MALA
controller (``target_accept`` set, or ``step_rule: paper004``) the controller's step is used and
this eps is not (it is only stored in ``last_step_size``). eps depends on the weights; so that
sampling with other weights (the EMA weights swapped in at evaluation, or loaded by ``ebmlab.load``)
uses the eps of *those* weights, the objective keeps the last data batch (up to ``REF_POINTS``
points, a buffer ``ref_data``, which is data, not a weight-dependent number) and ``sample`` recomputes
eps = c / rms(E(ref_data)) with the weights in place. Optional
``energy_l2`` adds alpha (E(x)^2 + E(x̂)^2) to each bracket (Du & Mordatch 2019; not in paper 004); in the hybrid
the data bracket's is multiplied by lambda too, so the data energies' term weighs alpha (1 + lambda) in all, each
bracket's alpha relative to its own CD term. Default 0.01: without it the hybrid's noise-initialised term runs
away on the standardised rings once the model sharpens (about update 2,000: the energy reached 1e15 and MALA
acceptance 0), see docs/paper004.md; the paper-004 configs set it to 0 to follow the paper, and so does the
experiment's raw table; its stable table, on which the claims are decided, keeps 0.01 (docs/paper004.md).
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from ebmlab.buffers import ReplayBuffer
from ebmlab.energies.build import build_energy
from ebmlab.energies.mixture_base import GaussianMixtureBase
from ebmlab.metrics.baselines import fit_gmm
from ebmlab.objectives.base import LossOutput, Objective, SampleOutput, batch_data, resampled
from ebmlab.objectives.contrastive_config import (AIS_RESAMPLE, SCHEMES, ContrastiveConfig,  # noqa: F401 (re-exported)
                                                 resolved_noise_chain)
from ebmlab.samplers import ChainInfo, ChainState, StepSizeController, get_sampler, run_chain
from ebmlab.samplers.ais import ais, linear_betas, normalized_weights
from ebmlab.samplers.base import PROPOSAL_CAP

BASE_FIT_ROWS = 5000  # model.base gmm: rows the mixture is fitted on (EM's cost grows with them; a subsample beyond)
REF_POINTS = 256   # adaptive_step: data points kept to recompute eps for the weights in place at sampling


class ContrastiveDivergence(Objective):
    """Paper 004's objective: one of the five chain initialisations, or the hybrid loss (Eq. 6)."""
    def __init__(self, energy: torch.nn.Module, cfg: ContrastiveConfig, shape: tuple[int, ...]):
        super().__init__()
        self.energy, self.cfg, self.shape = energy, cfg, tuple(shape)
        self.scheme = cfg.name
        self.temperature = cfg.temperature
        self.sampler = get_sampler(cfg.sampler)
        self.paper004 = cfg.step_rule == "paper004"
        adapt = cfg.sampler == "mala" and (cfg.target_accept is not None or self.paper004)
        rule = {"rule": "paper004"} if self.paper004 else {"target": cfg.target_accept or 0.5}
        # One controller per chain family: noise/bank chains and data chains see different landscapes.
        self.ctrl_noise = StepSizeController(1, cfg.step_size, rate=cfg.adapt_rate, **rule) if adapt else None
        self.ctrl_data = StepSizeController(1, cfg.step_size, rate=cfg.adapt_rate, **rule) if adapt else None
        self.register_buffer("last_step_size", torch.tensor(cfg.step_size))
        if cfg.adaptive_step:  # the last data batch (data, not weights): sample() recomputes eps from it
            self.register_buffer("ref_data", torch.zeros(0, *self.shape))
        if self.scheme in ("persistent", "persistent_refresh"):
            reset = cfg.refresh_prob if self.scheme == "persistent_refresh" else 0.0
            # a run opened without its rows has an unfitted mixture base: its stored bank is loaded next
            base = self.mixture_base()
            self.bank = ReplayBuffer(cfg.buffer_size, self.shape, self.prior, reset_prob=reset,
                                     reset_mode=cfg.refresh_mode or "batch", mode="bank",
                                     fill=base is None or base.components > 0)

    @property
    def n_steps_default(self) -> int:
        """L, the length of the noise/bank chains."""
        return self.cfg.n_steps

    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, ...) N(0, init_std^2 I), or exact draws of the energy's mixture base measure (``model.base: gmm``):
        where noise-initialised chains start."""
        base = self.mixture_base()
        if base is not None:
            return base.sample(n, generator).view(n, *self.shape)
        return self._gaussian(n, self.cfg.init_std, generator)

    def _gaussian(self, n: int, std: float, generator: torch.Generator | None) -> Tensor:
        """(n, ...) draws of N(0, std² I) on the objective's device, in its dtype (float64 after ``.double()``)."""
        ref = self.last_step_size
        return std * torch.randn((n, *self.shape), generator=generator, device=ref.device, dtype=ref.dtype)

    def mixture_base(self) -> GaussianMixtureBase | None:
        """The energy's fitted mixture base measure (``energies/mixture_base.py``), or None. Looked up on every call
        (not kept as an attribute: it would be a second submodule path in the state dict)."""
        base = getattr(self.energy, "base", None)
        return base if isinstance(base, GaussianMixtureBase) else None

    def log_density(self, x: Tensor) -> Tensor:
        """(B,) unnormalised log p(x) = -E(x)/T (App. A.4)."""
        return -self.energy(x) / self.temperature

    def _chain(self, x0: Tensor, n_steps: int, eps, ctrl, generator, start=None):
        if self.paper004:  # rejected proposals do not count: n_steps accepted moves, capped proposals
            cap = math.ceil((self.cfg.proposal_cap or PROPOSAL_CAP) * n_steps)
            return run_chain(self.sampler, self.energy, x0, n_steps, eps, noise_scale=self.cfg.noise_scale,
                             temperature=self.cfg.temperature, generator=generator, controller=ctrl, start=start,
                             count="accepted", max_proposals=cap)
        return run_chain(self.sampler, self.energy, x0, n_steps, eps, noise_scale=self.cfg.noise_scale,
                         temperature=self.cfg.temperature, generator=generator, controller=ctrl, start=start)

    def _proposal_stats(self, diag, suffix: str = "") -> dict[str, Tensor]:
        """paper004: proposals used (the chain's entries) and mean accepted moves per chain."""
        if not self.paper004:
            return {}
        return {f"proposals{suffix}": torch.tensor(float(diag.accept_rate.numel())),
                f"accepted_moves{suffix}": diag.accept_rate.sum()}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """``ref_data`` takes the stored batch's size; a checkpoint written before it existed loads
        (``sample`` then falls back to the stored ``last_step_size``)."""
        key = prefix + "ref_data"
        if "ref_data" in self._buffers and key in state_dict:
            self.ref_data = torch.zeros_like(state_dict[key], dtype=self.ref_data.dtype, device=self.ref_data.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if "ref_data" in self._buffers and key in missing_keys:
            missing_keys.remove(key)

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

    def _keep_reference(self, x: Tensor) -> None:
        """adaptive_step: keep (up to REF_POINTS of) the data batch for ``sample``'s eps."""
        ref = x.detach()[:REF_POINTS]
        if self.ref_data.shape == ref.shape:
            self.ref_data.copy_(ref)
        else:
            self.ref_data = ref.to(self.ref_data.dtype).clone()

    def sampling_step_size(self) -> float:
        """The eps ``sample`` uses: with ``adaptive_step``, c / rms(E(ref_data)) computed with the weights
        in place now (the EMA weights when they are swapped in), else the configured eps. Before any
        training batch (or from a checkpoint older than ``ref_data``) the stored ``last_step_size``."""
        if self.cfg.adaptive_step and self.ref_data.shape[0] > 0:
            with torch.no_grad():
                return self._step_size(self.energy(self.ref_data))
        return float(self.last_step_size)

    def forward(self, batch, *, generator: torch.Generator | None = None) -> LossOutput:
        """Alg. 1: the scheme's chains from the batch / noise / bank, then the computational loss."""
        x = batch_data(batch)  # (B, ...) model coordinates
        e_pos, start = self._positive(x)  # (B,)
        eps = self._step_size(e_pos)
        self.last_step_size.fill_(eps)
        if self.cfg.adaptive_step:
            self._keep_reference(x)
        metrics: dict[str, Tensor] = {"step_size": torch.tensor(eps)}
        loss = torch.zeros((), device=x.device)
        negs = []
        if self.scheme in ("data", "hybrid"):
            steps = self.cfg.n_steps_data or self.cfg.n_steps
            x_neg, diag = self._chain(x, steps, eps, self.ctrl_data, generator, start)
            gap, term = self._term(e_pos, x_neg)
            loss = loss + (self.cfg.lam if self.scheme == "hybrid" else 1.0) * term
            metrics.update(energy_gap_data=gap, accept_rate_data=diag.accept_rate.mean(),
                           step_size_data=diag.step_size[-1], **self._proposal_stats(diag, "_data"))
            negs.append(x_neg)
        if self.scheme != "data":
            x0, idx = self._start(x.shape[0], generator)
            weights = None
            if self.cfg.noise_chain == "ais":
                x_neg, weights, diag = self._ais(x0, self.ctrl_noise, generator)
                metrics["ais_ess"] = 1.0 / weights.pow(2).sum()  # Kish's effective sample size of the batch
            else:
                x_neg, diag = self._chain(x0, self.cfg.n_steps, eps, self.ctrl_noise, generator)
            if idx is not None:
                self.bank.update(x_neg, idx)
            gap, term = self._term(e_pos, x_neg, weights)
            loss = loss + term
            metrics.update(energy_gap=gap, accept_rate=diag.accept_rate.mean(), step_size=diag.step_size[-1],
                           **self._proposal_stats(diag))
            negs.insert(0, x_neg)
        else:
            metrics.update(energy_gap=metrics["energy_gap_data"], accept_rate=metrics["accept_rate_data"],
                           step_size=metrics["step_size_data"])
            if self.paper004:
                metrics.update(proposals=metrics["proposals_data"], accepted_moves=metrics["accepted_moves_data"])
        metrics["energy_pos"] = e_pos.detach().mean()
        return LossOutput(loss, metrics, negs[0])

    def _start(self, n: int, generator):
        if self.scheme in ("persistent", "persistent_refresh"):
            return self.bank.sample(n, generator)
        if self.cfg.train_init_std is None or self.mixture_base() is not None:
            return self.prior(n, generator), None
        # training chains only (docs/paper004.md, "The default demo's ring masses"): the same draw as
        # ``prior``, scaled to train_init_std
        return self._gaussian(n, self.cfg.train_init_std, generator), None

    def _term(self, e_pos: Tensor, x_neg: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Computational loss <E(x)> - <E(x̂)> on stop-gradient samples, plus optional L2. ``weights``
        (B,) summing to 1 (``noise_chain: ais``): <.> over the samples is the weighted mean."""
        e_neg = self.energy(x_neg.detach())
        neg_mean = e_neg.mean() if weights is None else (weights * e_neg).sum()
        term = e_pos.mean() - neg_mean
        if self.cfg.energy_l2 > 0:
            neg_sq = e_neg.pow(2).mean() if weights is None else (weights * e_neg.pow(2)).sum()
            term = term + self.cfg.energy_l2 * (e_pos.pow(2).mean() + neg_sq)
        return (e_pos.mean() - neg_mean).detach(), term

    def _ais(self, x0: Tensor, ctrl, generator) -> tuple[Tensor, Tensor, ChainInfo]:
        """``noise_chain: ais``: L stages of annealed importance sampling from N(0, std² I) (the std ``x0`` was
        drawn with) or the mixture base; returns the points, their normalised weights (B,) and the diagnostics."""
        std = self.cfg.train_init_std or self.cfg.init_std
        r = ais(self.energy, x0, linear_betas(self.cfg.n_steps, x0.device), ctrl, init_std=std,
                temperature=self.cfg.temperature, generator=generator, resample_below=self.cfg.ais_resample,
                base=self.mixture_base())
        return r.x, normalized_weights(r.log_weights), r.info

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, n_steps: int | None = None,
               x0: Tensor | None = None, cond: dict | None = None) -> SampleOutput:
        """From ``x0`` or ``prior`` (N(0, init_std² I), or the ``model.base: gmm`` mixture): ``noise_chain: ais``
        without ``x0``: ``n_steps`` (default L; > 0) AIS stages, then n points drawn in proportion to their weights
        (sampling-importance-resampling, by systematic resampling: equal weights return every chain once); else as
        many training-sampler steps. A private copy of the adapted MALA step; ``adaptive_step``:
        ``sampling_step_size``."""
        out, log_weights = self.sample_weighted(n, generator=generator, n_steps=n_steps, x0=x0, cond=cond)
        return out if log_weights is None else resampled(out, log_weights, generator)

    @torch.no_grad()
    def sample_weighted(self, n: int, *, generator: torch.Generator | None = None, n_steps: int | None = None,
                        x0: Tensor | None = None, cond: dict | None = None) -> tuple[SampleOutput, Tensor | None]:
        """``sample``'s chains before resampling and, for AIS chains, their (n,) log-weights (else None)."""
        given = x0 is not None
        x0 = self.start_points(n, x0, generator)
        steps = self.n_steps_default if n_steps is None else n_steps
        ctrl = self.ctrl_noise.copy() if self.ctrl_noise is not None else None  # sampling never trains
        if self.cfg.noise_chain == "ais" and not given and steps > 0:  # (0 steps: the start, as every method gives)
            r = ais(self.energy, x0, linear_betas(steps, x0.device), ctrl, init_std=self.cfg.init_std,
                    temperature=self.cfg.temperature, generator=generator, resample_below=self.cfg.ais_resample,
                    base=self.mixture_base())
            return SampleOutput(r.x, r.info.as_dict()), r.log_weights
        x, info = self._chain(x0, steps, self.sampling_step_size(), ctrl, generator)
        return SampleOutput(x, info.as_dict()), None


def build(cfg, data) -> ContrastiveDivergence:
    """Build the scheme named by ``cfg.method.name`` on ``data``."""
    energy = build_energy(cfg.model, data.shape)
    if getattr(cfg.model, "base", None) == "gmm" and not (getattr(data, "info", None) or {}).get("stub"):
        fit_mixture_base(energy.base, data.train, cfg.train.seed)  # opened without its rows: the stored buffers come next
    return ContrastiveDivergence(energy, cfg.method, data.shape)


def fit_mixture_base(base: GaussianMixtureBase, rows: Tensor, seed: int) -> None:
    """``model.base: gmm``: the leaderboard's GMM baseline (``metrics/baselines.fit_gmm``) fitted on the training
    rows (model coordinates; at most ``BASE_FIT_ROWS`` of them), or N(0, I) with a warning where no mixture can be
    fitted (too few rows)."""
    if len(rows) > BASE_FIT_ROWS:
        rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:BASE_FIT_ROWS]]
    try:
        base.fit_from_sklearn(fit_gmm(rows, seed).model)
    except ValueError as exc:
        warnings.warn(f"model.base gmm: {exc}; the base measure is N(0, I) in model coordinates instead",
                      RuntimeWarning, stacklevel=3)
        base.standard_normal()

