"""Paper 000 (Thinking Fourth Dimensionally: treating time as a random variable in EBMs).

Methods (``method.name``):

- ``cd_ce`` (Sec. 3.3, Alg. 1): t ~ Uniform{0..T-1}, z = alpha_t x + beta_t n (Eq. 1); K MALA
  steps on the marginal p(z) from z give z~; loss
      L_CD + w_CE L_CE = E[log p(z~) - log p(z)] - w_CE E[log p(t | z)]          (Eq. 6, 8)
  with log p(z) = logsumexp f(z) (Eq. 4) and log p(t | z) = log_softmax f(z)_t (Eq. 5).
- ``joint_cd`` (Sec. 3.4, Alg. 2): the same chain on p(z), then t~ ~ p(t | z~) drawn once (Eq. 9,
  App. A); loss E[log p(z~, t~) - log p(z, t)] = E[f_t~(z~) - f_t(z)] (Eq. 3).
- ``per_t`` (Sec. 3.1, Option 1): the standard loss on each conditional p(z | t) alone, with the same
  T-vector head: E[log p(z^c | t) - log p(z | t)], z^c from K MALA steps on p(. | t) started at z
  (per-t step sizes); no marginal chain, no CE term unless ``ce_weight`` is set. The paper's claim
  (Sec. 3.1) is that Options 2/3 (CD+CE, JointCD) beat this one with the same model and sampler.
- ``cd_plain``: the baseline of the experiment: vanilla CD (Hinton 2002) on the data distribution
  alone (no series), a scalar energy on the same trunk, K MALA steps from the data with one
  adaptive step size; it samples with MALA from p_n for as many steps as annealing takes.

Either joint method can add the CE term (``ce_weight``; default 1 for cd_ce, 0 for joint_cd) and the
standard per-t loss of Option 1 (``per_t_weight``): a CD loss on each conditional,
E[log p(z^c | t) - log p(z | t)] with z^c from K MALA steps on p(. | t) started at z.

Sign convention: the paper's model outputs log-densities; ebmlab losses are minimised and energies
are -log p, so log p(z~) - log p(z) = E(z) - E(z~) (Eq. 6), computed on stop-gradient samples.

Sampler (Sec. 3.3, App. C.1): MALA (ebmlab's step: drift -eps dE/dz, noise sqrt(2 eps), i.e. the
paper's mu = sqrt(2 eps) in Eq. 7) adapted to ``target_accept`` = 0.6. The training chain runs on the
marginal p(z), which has no t. App. A (Eq. 11-15) proves JointCD's transition keeps p(z, t)
invariant only if the z-kernel does not depend on t, so by default (``marginal_step: shared``) the
chain has ONE step size, whatever level its data sample came from. The paper also keeps "an
individual step size for each value of t" (App. C.1, converging to about 0.4 beta_t sigma_n), which
only makes sense indexed by the chain's starting level; ``marginal_step: per_level`` does that, and
breaks the invariance (tests/statistical/test_joint_cd_balance.py measures it). Initial step sizes:
mu = 0.4 sigma_n max(beta_t, ``init_beta_floor``) (per level; shared: at t = T/2), unless ``init_step``.
Chain length: K, or App. C.2's ramp (``n_steps_final``, ``ramp_hold``,
``ramp_steps``: K for ``ramp_hold`` steps then linearly to ``n_steps_final``).
Generation (Sec. 3.5, App. B): ``sample_method`` annealing (Alg. 3) or soft (Alg. 4), each stage's
step size fitted to its own target (``samplers/annealed.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ebmlab.errors import ConfigError
from ebmlab.energies.build import build_energy, build_joint_energy
from ebmlab.energies.time import AtLevel, JointTimeEnergy
from ebmlab.objectives.base import LossOutput, Objective, SampleOutput, batch_data, per_level_steps
from ebmlab.samplers import mala, run_chain
from ebmlab.samplers.annealed import PerLevelController, simulated_annealing, soft_annealing
from ebmlab.schedules import chain_length, interpolation_coefficients, sample_levels, sample_series

METHOD_NAMES = ("cd_ce", "joint_cd", "per_t", "cd_plain")


@dataclass
class JointTimeConfig:
    """``method`` keys of paper 000 (series, chains, step sizes, generation; see the field comments)."""
    name: str = "cd_ce"               # cd_ce (Alg. 1) | joint_cd (Alg. 2) | per_t (Option 1) | cd_plain
    T: int = 256                      # number of levels of the series (App. C.1: 256; C.2: 1024)
    sigma_n: float = 0.3              # std of the reference N(0, sigma_n^2 I) (C.1: 0.3; C.2: 0.5)
    schedule: str = "linear"          # alpha_t = t / (T-1), beta_t = 1 - alpha_t (Eq. 1)
    n_steps: int = 3                  # K MCMC steps per iteration (App. C.1: 3; C.2: 5 at first)
    n_steps_final: int | None = None  # App. C.2 ramp: final K (100); None keeps K constant
    ramp_hold: int = 40000            # App. C.2: steps at K before the ramp
    ramp_steps: int = 40000           # App. C.2: length of the linear ramp
    ce_weight: float | None = None    # weight of L_CE (None: 1 for cd_ce, 0 for joint_cd and per_t)
    per_t_weight: float = 0.0         # Option 1: weight of the per-t CD loss on p(z | t) (0: off)
    target_accept: float = 0.6        # App. C.1: average MH acceptance 60 %
    marginal_step: str = "shared"     # step of the chain on p(z): shared (t-independent, App. A) | per_level
    adapt_rate: float = 0.05          # Robbins-Monro rate on log eps
    init_step: float | None = None    # initial eps for every t (None: from mu_t = 0.4 beta_t sigma_n)
    init_beta_floor: float = 0.05     # floor on beta_t in that initialisation (beta_{T-1} = 0)
    accept_ema: float = 0.98          # decay of the per-t acceptance average that is reported
    sample_method: str = "annealing"  # annealing (Alg. 3) | soft (Alg. 4)
    sample_levels: int | None = None  # Alg. 3: number of levels visited, evenly spaced (None: all T)
    sample_steps: int = 2             # N: MCMC steps per level (Alg. 3) / per stage (Alg. 4)
    soft_stages: int | None = None    # Alg. 4: number of stages (None: as many as annealing levels)
    sample_adapt_steps: int = 0       # generation: extra step-fitting MALA steps per level before sampling
    sample_adapt_rate: float = 0.5    # generation: Robbins-Monro rate of those fits (log eps)
    increments_init: str | None = None  # the head's increments layer: zero (None: every level starts at p_n) |
                                        # torch (nn.Linear's default, which Sec. 3.2's initialisation effect implies)

    def validate(self):
        """Raise ``ConfigError`` (one sentence) for an out-of-range key."""
        if self.name not in METHOD_NAMES:
            raise ConfigError(f"method.name must be one of {METHOD_NAMES}, got {self.name!r}")
        if self.T < 2:
            raise ConfigError(f"method.T must be at least 2 (reference and data), got {self.T}")
        for key in ("sigma_n", "init_beta_floor", "adapt_rate"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"method.{key} must be positive, got {getattr(self, key)}")
        if self.init_step is not None and self.init_step <= 0:
            raise ConfigError(f"method.init_step must be positive, got {self.init_step}")
        if self.n_steps < 1 or self.sample_steps < 1 or (self.n_steps_final is not None and self.n_steps_final < 1):
            raise ConfigError("method.n_steps, method.n_steps_final and method.sample_steps must be at least 1")
        if not 0 < self.target_accept < 1 or not 0 <= self.accept_ema < 1:
            raise ConfigError("method.target_accept must lie in (0, 1) and method.accept_ema in [0, 1)")
        if self.increments_init not in (None, "zero", "torch"):
            raise ConfigError(f"method.increments_init must be zero or torch, got {self.increments_init!r}")
        if self.sample_method not in ("annealing", "soft"):
            raise ConfigError(f"method.sample_method must be annealing or soft, got {self.sample_method!r}")
        if self.marginal_step not in ("shared", "per_level"):
            raise ConfigError(f"method.marginal_step must be shared or per_level, got {self.marginal_step!r}")
        if self.sample_adapt_steps < 0 or self.sample_adapt_rate <= 0:
            raise ConfigError("method.sample_adapt_steps must be >= 0 and method.sample_adapt_rate positive")
        if self.schedule != "linear":
            raise ConfigError(f"method.schedule must be 'linear' (Eq. 1, Sec. 4.2), got {self.schedule!r}")
        for key in ("sample_levels", "soft_stages"):
            v = getattr(self, key)
            if v is not None and not 2 <= v:
                raise ConfigError(f"method.{key} must be at least 2 (or null), got {v}")
        if (self.ce_weight or 0) < 0 or self.per_t_weight < 0:
            raise ConfigError("method.ce_weight and method.per_t_weight must be non-negative")

    def inert_keys(self) -> list[str]:
        """Sentences for keys set where the variant chosen reads nothing of them (``config_checks.check_new_run``
        refuses a new run on the first; a stored run still opens and resumes as it ran): ``cd_plain`` has one scalar
        energy, no CE, no levels to step per t and a sampler without per-level fits; ``per_t`` is Option 1 alone."""
        said, plain, per_t = [], self.name == "cd_plain", self.name == "per_t"
        if plain and self.ce_weight:
            said.append("method.ce_weight weights the CE loss of the joint model of (z, t); cd_plain trains one scalar "
                        "energy with no CE: leave it unset")
        if (plain or per_t) and self.per_t_weight > 0:
            said.append(f"method.per_t_weight adds Option 1's per-t loss to cd_ce or joint_cd; {self.name} "
                        + ("is Option 1 alone" if per_t else "has no levels") + ": leave it at 0")
        if (plain or per_t) and self.marginal_step != "shared":
            said.append(f"method.marginal_step sets the step of the chain on the marginal p(z) of cd_ce and joint_cd; "
                        f"{self.name} " + ("steps per level already (its chains are on p(z | t))" if per_t
                                           else "has one energy and one step") + ": leave it at shared")
        if plain and self.increments_init is not None:
            said.append("method.increments_init initialises the joint head's increments layer; cd_plain's energy is a "
                        "scalar network without one: leave it unset")
        if plain and (self.sample_adapt_steps or self.sample_adapt_rate != type(self).sample_adapt_rate):
            said.append("method.sample_adapt_steps and method.sample_adapt_rate fit each annealing level's step; "
                        "cd_plain samples its one energy with its trained step: leave them unset")
        return said


def joint_transition(energy: JointTimeEnergy, z: Tensor, n_steps: int, *, controller=None,
                     groups: Tensor | None = None, step_size=None,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, dict]:
    """The JointCD chain (Eq. 9, App. A): K MALA steps on the marginal p(z) from z (B, ...), then
    t~ ~ p(t | z~) drawn once. Returns (z~ (B, ...), t~ (B,) long, chain diagnostics)."""
    z_neg, diag = run_chain(mala, energy, z, n_steps, step_size, generator=generator,
                            controller=controller, groups=groups)
    with torch.no_grad():
        probs = energy.log_t_given_z(z_neg).exp()  # (B, T)
        t_neg = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
    return z_neg, t_neg, diag


def initial_steps(cfg: JointTimeConfig, beta: Tensor) -> Tensor:
    """(T,) initial eps_t: given, or eps = mu^2 / 2 with mu_t = 0.4 sigma_n max(beta_t, floor) (C.1)."""
    if cfg.init_step is not None:
        return torch.full_like(beta, cfg.init_step)
    mu = 0.4 * cfg.sigma_n * beta.clamp_min(cfg.init_beta_floor)
    return 0.5 * mu ** 2


class JointTime(Objective):
    """CD+CE / JointCD / plain CD on the joint model of (z, t) (see the module docstring)."""

    def __init__(self, energy: nn.Module, cfg: JointTimeConfig, shape: tuple[int, ...]):
        super().__init__()
        self.energy, self.cfg, self.shape = energy, cfg, tuple(shape)
        self.plain = cfg.name == "cd_plain"
        alpha, beta = interpolation_coefficients(cfg.T, cfg.schedule)
        self.register_buffer("alpha", alpha)
        self.register_buffer("beta", beta)
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))
        # App. A: the z-kernel of the marginal chain must not depend on t (one shared step size);
        # ``per_level`` reproduces the paper's "step size per t" read as the chain's starting level.
        self.per_level = cfg.marginal_step == "per_level" and not self.plain
        mid = cfg.T // 2
        init = initial_steps(cfg, beta if self.per_level else beta[-1:] if self.plain else beta[mid:mid + 1])
        self.ctrl = PerLevelController(init.numel(), init, cfg.target_accept, cfg.adapt_rate, cfg.accept_ema)
        self.per_t_only = cfg.name == "per_t"
        if (cfg.per_t_weight > 0 or self.per_t_only) and not self.plain:  # chains on p(z | t): a step per t is legitimate
            self.ctrl_cond = PerLevelController(cfg.T, initial_steps(cfg, beta), cfg.target_accept,
                                                cfg.adapt_rate, cfg.accept_ema)
        default_ce = 1.0 if cfg.name == "cd_ce" else 0.0
        self.ce_weight = default_ce if cfg.ce_weight is None else cfg.ce_weight

    # ----- training ------------------------------------------------------------------------------
    def n_chain_steps(self) -> int:
        """K at the current training step (App. C.2's ramp when ``n_steps_final`` is set)."""
        if self.cfg.n_steps_final is None:
            return self.cfg.n_steps
        return chain_length(int(self.train_step), self.cfg.n_steps, self.cfg.n_steps_final,
                            self.cfg.ramp_hold, self.cfg.ramp_steps)

    def after_step(self, step: int) -> None:
        """Record the optimizer step (drives the chain-length ramp)."""
        self.train_step.fill_(step)

    def transition(self, z: Tensor, t: Tensor, k: int, generator=None):
        """The training chain (Alg. 1-2): K MALA steps on p(z) from z (B, ...) with the training
        controller (one step for all chains unless ``marginal_step: per_level``, which indexes it by
        the starting level t (B,)), then t~ ~ p(t | z~). Returns (z~, t~, ChainInfo)."""
        return joint_transition(self.energy, z, k, controller=self.ctrl, groups=t if self.per_level else None,
                                generator=generator)

    def forward(self, batch, *, generator: torch.Generator | None = None) -> LossOutput:
        """Alg. 1 (cd_ce) / Alg. 2 (joint_cd) / plain CD on one batch."""
        x = batch_data(batch)  # (B, ...) model coordinates
        if self.plain:
            return self._plain_cd(x, generator)
        t = sample_levels(x.shape[0], self.cfg.T, generator, x.device)  # (B,) t ~ p_t
        z = sample_series(x, t, self.alpha, self.beta, self.cfg.sigma_n, generator)  # (B, ...) Eq. 1
        k = self.n_chain_steps()
        if self.per_t_only:
            return self._option1(z, t, k, generator)
        z_neg, t_neg, diag = self.transition(z, t, k, generator)
        f_pos = self.energy.log_joint(z)  # (B, T) Eq. 3
        f_neg = self.energy.log_joint(z_neg.detach())  # (B, T)
        lp_pos, lp_neg = torch.logsumexp(f_pos, 1), torch.logsumexp(f_neg, 1)  # (B,) Eq. 4
        if self.cfg.name == "joint_cd":  # Alg. 2: log p(z~, t~) - log p(z, t)
            term = f_neg.gather(1, t_neg[:, None]).mean() - f_pos.gather(1, t[:, None]).mean()
        else:  # Alg. 1 / Eq. 6: log p(z~) - log p(z) = E(z) - E(z~)
            term = lp_neg.mean() - lp_pos.mean()
        ce = -(f_pos.gather(1, t[:, None]).squeeze(1) - lp_pos).mean()  # Eq. 8: -log p(t | z)
        loss = term + self.ce_weight * ce
        metrics = {"loss_cd": term.detach(), "ce": ce.detach(), "energy_gap": (lp_neg - lp_pos).mean().detach(),
                   "accept_rate": diag.accept_rate.mean(), "chain_steps": torch.tensor(float(k))}
        if self.cfg.per_t_weight > 0:
            per_t, acc, _ = self._per_t_loss(z, t, k, generator)
            loss = loss + self.cfg.per_t_weight * per_t
            metrics.update(loss_per_t=per_t.detach(), accept_rate_per_t_chain=acc)
        metrics.update(self.step_metrics())
        return LossOutput(loss, metrics, z_neg)

    def _option1(self, z: Tensor, t: Tensor, k: int, generator) -> LossOutput:
        """Option 1 alone (``per_t``): the per-t CD loss (+ ``ce_weight`` x CE when set)."""
        per_t, acc, z_c = self._per_t_loss(z, t, k, generator)
        f_pos = self.energy.log_joint(z)  # (B, T)
        ce = -(f_pos.gather(1, t[:, None]).squeeze(1) - torch.logsumexp(f_pos, 1)).mean()  # Eq. 8, for the log
        loss = per_t + self.ce_weight * ce if self.ce_weight > 0 else per_t
        metrics = {"loss_cd": per_t.detach(), "ce": ce.detach(), "energy_gap": per_t.detach(), "accept_rate": acc,
                   "chain_steps": torch.tensor(float(k)), "step_size_t_median": self.ctrl_cond.log_step.exp().median()}
        return LossOutput(loss, metrics, z_c)

    def _per_t_loss(self, z: Tensor, t: Tensor, k: int, generator) -> tuple[Tensor, Tensor, Tensor]:
        """Option 1: E[log p(z^c | t) - log p(z | t)], z^c from K MALA steps on p(. | t); returns (loss,
        mean acceptance, z^c)."""
        z_c, diag = run_chain(mala, self.energy, z, k, None, generator=generator,
                              controller=self.ctrl_cond, groups=t, t=t)
        loss = self.energy(z, t=t).mean() - self.energy(z_c.detach(), t=t).mean()  # E = -log p(z|t)
        return loss, diag.accept_rate.mean(), z_c

    def _plain_cd(self, x: Tensor, generator) -> LossOutput:
        """Vanilla CD on p_x: K MALA steps from the data, loss E(x) - E(x~) (Hinton 2002)."""
        k = self.n_chain_steps()
        x_neg, diag = run_chain(mala, self.energy, x, k, None, generator=generator, controller=self.ctrl)
        e_pos, e_neg = self.energy(x), self.energy(x_neg.detach())  # (B,)
        loss = e_pos.mean() - e_neg.mean()
        metrics = {"loss_cd": loss.detach(), "energy_gap": loss.detach(),
                   "accept_rate": diag.accept_rate.mean(), "chain_steps": torch.tensor(float(k)),
                   "step_size": self.ctrl.log_step.exp()[0]}
        return LossOutput(loss, metrics, x_neg)

    @torch.no_grad()
    def step_metrics(self) -> dict[str, Tensor]:
        """Step-size summary. Per level: mu_t / (beta_t sigma_n) (App. C.1 reports ~0.4) and the range
        of the per-t acceptance averages; shared: the one step size and its acceptance average."""
        eps = self.ctrl.log_step.exp()  # (T,) or (1,)
        if not self.per_level:
            return {"step_size": eps[0], "accept_rate_ema": self.ctrl.accept_ema[0]}
        mu = (2 * eps).sqrt()
        inner = slice(1, self.cfg.T - 1)  # beta_{T-1} = 0: the ratio is undefined at the last level
        ratio = mu[inner] / (self.beta[inner] * self.cfg.sigma_n)
        acc = self.ctrl.accept_ema[~torch.isnan(self.ctrl.accept_ema)]
        out = {"mu_over_beta_sigma": ratio.median() if ratio.numel() else torch.tensor(float("nan")),
               "step_size_t0": eps[0], "step_size_last": eps[-1]}
        if acc.numel():
            out.update(accept_rate_t_min=acc.min(), accept_rate_t_max=acc.max(), accept_rate_t_mean=acc.mean())
        return out

    # ----- densities -----------------------------------------------------------------------------
    @property
    def data_energy(self) -> nn.Module:
        """-log p(z | t = T-1), the data's energy (``log_density``'s); plain CD: its one energy."""
        return self.energy if self.plain else AtLevel(self.energy, self.cfg.T - 1)

    @property
    def energy_conditions(self) -> dict[str, tuple[int, int]]:
        """``t``: the level read (0..T-1; the data's, T-1, by default); plain CD has one energy and none."""
        return {} if self.plain else {"t": (0, self.cfg.T - 1)}

    def log_density(self, x: Tensor) -> Tensor:
        """(B,) the model's log-density of the *data*: log p(z | t = T-1), since p_{v_{T-1}} = p_x
        (Sec. 3.1). The marginal log p(z) of Eq. 4 (``energy.log_marginal``) is the density of the
        mixture of all T levels, not of the data, so density KL against p_x must not use it.
        Plain CD: -E(x) (unnormalised; density KL normalises on its grid)."""
        if self.plain:
            return -self.energy(x)
        last = torch.full((x.shape[0],), self.cfg.T - 1, dtype=torch.long, device=x.device)  # (B,)
        return -self.energy(x, t=last)

    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, ...) draws of the reference p_n = N(0, sigma_n^2 I) = p(z | t=0): every chain's start."""
        return self.cfg.sigma_n * torch.randn((n, *self.shape), generator=generator, device=self.alpha.device,
                                             dtype=self.alpha.dtype)

    # ----- generation ----------------------------------------------------------------------------
    def annealing_levels(self) -> list[int]:
        """The increasing levels t visited by Alg. 3 (all T, or ``sample_levels`` evenly spaced)."""
        T, L = self.cfg.T, self.cfg.sample_levels
        if L is None or L >= T:
            return list(range(T))
        return sorted({int(round(i * (T - 1) / (L - 1))) for i in range(L)})

    def n_stages(self, algorithm: str | None = None) -> int:
        """Stages of Alg. 3 (levels visited) or Alg. 4 (``soft_stages``)."""
        if (algorithm or self.cfg.sample_method) == "soft":
            return self.cfg.soft_stages or len(self.annealing_levels())
        return len(self.annealing_levels())

    @property
    def n_steps_default(self) -> int:
        """Stages x ``sample_steps``, the sampling steps of one annealing."""
        return self.n_stages() * self.cfg.sample_steps

    @property
    def sample_levels(self) -> int:
        """The annealing's stages (``sample`` runs ``n_steps`` / stages steps on each)."""
        return self.n_stages()

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, n_steps: int | None = None,
               x0: Tensor | None = None, cond: dict | None = None) -> SampleOutput:
        """Sec. 3.5 with ``method.sample_method``: see ``generate``."""
        return self.generate(n, generator=generator, n_steps=n_steps, x0=x0)

    @torch.no_grad()
    def generate(self, n: int, *, algorithm: str | None = None, generator: torch.Generator | None = None,
                 n_steps: int | None = None, x0: Tensor | None = None, keep=(),
                 init_step: float | None = None) -> SampleOutput:
        """z ~ p_n (or ``x0``), then simulated annealing (Alg. 3, ``algorithm="annealing"``) or soft
        annealing (Alg. 4, ``"soft"``), ``n_steps`` MALA steps in all (spread over the stages, rounded up to a
        whole number per stage: 385 over 128 stages run 4 each), each stage's step size fitted to its own target
        (samplers/annealed.py); ``keep``: stages whose samples ``info["snapshots"]`` holds; ``init_step``: the
        first stage's step (default: ``method.init_step`` when set, else the App. C.1 step for p_n, mu = 0.4
        sigma_n). ``cd_plain`` runs MALA on its single energy for as many steps, with a private copy of its
        trained step size."""
        algorithm = algorithm or self.cfg.sample_method
        if algorithm not in ("annealing", "soft"):
            raise ValueError(f"sample algorithm must be annealing or soft, got {algorithm!r}")
        x = self.start_points(n, x0, generator)
        stages = self.n_stages(algorithm)
        steps = per_level_steps(n_steps, self.cfg.sample_steps, stages)
        if self.plain:
            x, chain = run_chain(mala, self.energy, x, stages * steps, None, generator=generator,
                                 controller=self.ctrl.copy())
            return SampleOutput(x, chain.as_dict())
        if init_step is None:
            init_step = float(initial_steps(self.cfg, self.beta[:1])[0])
        kw = dict(init_step=init_step, target=self.cfg.target_accept,
                  adapt_steps=self.cfg.sample_adapt_steps, adapt_rate=self.cfg.sample_adapt_rate,
                  generator=generator, keep=keep)
        if algorithm == "annealing":
            x, info = simulated_annealing(self.energy, x, self.annealing_levels(), steps, **kw)
        else:
            x, info = soft_annealing(self.energy, x, self.cfg.T, stages, steps, **kw)
        return SampleOutput(x, info)


def build(cfg, data) -> JointTime:
    """Build paper 000's objective: the joint T-vector head, or a scalar energy for cd_plain."""
    m = cfg.method
    if m.name == "cd_plain":
        energy = build_energy(cfg.model, data.shape)  # scalar energy on the same trunk
    else:
        energy = build_joint_energy(cfg.model, data.shape, m.T, m.sigma_n,
                                    zero_increments=m.increments_init in (None, "zero"))
    return JointTime(energy, m, data.shape)


__all__ = ["JointTimeConfig", "JointTime", "joint_transition", "initial_steps", "METHOD_NAMES"]
