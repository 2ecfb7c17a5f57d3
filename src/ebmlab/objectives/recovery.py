"""Diffusion recovery likelihood (DRL, Gao et al. 2021) and its cooperative version (CDRL).

Paper 003 (Zhu, Xie, Wu, Gao: "Learning energy-based models by cooperative diffusion recovery
likelihood"), Sec. 3, Alg. 1 (training) and Alg. 2 (sampling), App. A.2-A.3. Methods ``cdrl`` and
``drl`` (``drl`` = no initializer, chains start at x_{t+1}, DRL's schedule, K = 30).

Levels t = 0..T (``schedules.vp_levels``): x_t = abar_t x + sbar_t eps, y_t = alpha_{t+1} x_t. One EBM
per level t < T, conditioned on the logSNR lambda_t (App. A.3), models the marginal of y_t.

Sign convention at the border: the paper's negative energy is f_theta(y; t) = f^_theta(y; t) / s_t^2
(App. A.2, reparameterisation) with f^ the network output. Our network returns an energy
``E_net = -f^``; so ``E_t(y) = E_net(y; lambda_t) / s_t^2`` is the level-t marginal energy and
p(y_t | x_{t+1}) ∝ exp(-E_t(y) - ||y - x_{t+1}||^2 / (2 sigma_{t+1}^2)) (Eq. 3). Langevin on it with
step s_t (Eq. 5) is our ``langevin.step`` with step_size = s_t^2 / 2, noise std s_t.

Training (Alg. 1): per example a level t ~ U{0..T-1} (the paper draws one t per iteration; per
example is our choice, it only mixes levels inside a batch); the pair (y_t, x_{t+1}) with the
shared noise of Eq. 9 (``variance_reduction``; see ``schedules.shared_noise_pair`` for the typo in
Eq. 9); proposal y^ = g_phi(x_{t+1}) + sigma~_t z (Eq. 6) or y^ = x_{t+1} without the initializer;
K Langevin steps give y~. Loss = [<E_net(y_t)> - <E_net(y~)>] (Eq. 7 with each level's term
multiplied by s_t^2: a positive per-level reweighting, our choice, so that the low-noise levels
whose 1/s_t^2 is ~1000x larger do not swamp the others) + <||target - g_phi(x_{t+1})||^2 / D>
(Eq. 8 with the "simple loss" reweighting; target = y~, or y_t with ``init_target: data``, App. G.2).
Two parameter groups: the EBM at ``train.lr`` with ``ebm_warmup``, the initializer at ``init_lr``
with ``init_warmup`` starting ``init_head_start`` iterations earlier (Eq. 15).

Sampling (Alg. 2): x_T ~ N(0, I); for t = T-1..0: proposal, K steps, x_t = y~ / alpha_{t+1}; then
one Tweedie step (Eq. 17-18) x = (x_0 - c sbar_0^2 dE_0/dx) / abar_0 with ``denoise_coef`` c (exact
Tweedie: 1; the paper uses 2 for images). With K' = ``n_steps`` != K the step is s_t sqrt(K/K')
(Sec. 4.2) while the energy's s_t stays the trained one.

``energy`` (for ``ebmlab.load``, ``score`` and OOD) is the lowest-noise marginal energy
E_0(x) = E_net(alpha_1 x; lambda_0) / s_0^2 = -f_theta(y_0 = alpha_1 x; 0); ``log_density(x)`` is
-E_0(x): the level-0 EBM read as a density of x (it models x_0 = abar_0 x + sbar_0 eps, with
abar_0 = 0.99997 and sbar_0 = 0.0074 for the default schedule; that small smoothing is ignored).

Classifier-free guidance (Sec. 3.5): with ``conditional: true`` both networks also get a class
one-hot, replaced by a "null" token with probability ``label_dropout``, so one network is both the
conditional and the unconditional model; ``applications/guidance.py`` combines them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ebmlab.errors import ConfigError
from ebmlab.energies.build import build_energy
from ebmlab.energies.embedding import sinusoidal_embedding
from ebmlab.energies.initializer import build_initializer
from ebmlab.objectives.base import (LossOutput, Objective, ParamGroup, SampleOutput, batch_data, batch_labels,
                                    per_level_steps)
from ebmlab.samplers.recovery import (RecoveryLevels, conditional_energy, propose, refine, reverse_process,
                                      step_sizes, tweedie)
from ebmlab import schedules


@dataclass
class RecoveryConfig:
    """``method`` keys of paper 003 (levels, Langevin steps, initializer, guidance; see the field comments)."""
    name: str = "cdrl"
    T: int = 6                        # number of EBMs / noise levels below pure noise (App. A.2)
    schedule: str = "cosine"          # cosine (App. A.3) | drl (Gao et al. 2021)
    lam_max: float = 9.8              # cosine: logSNR at t = 0 (App. A.3)
    lam_min: float = -5.1             # cosine: logSNR at t = T
    n_steps: int = 15                 # K Langevin steps per level (App. A.2)
    step_coef: float = 0.054          # s_t^2 = step_coef * sbar_t * sigma_{t+1}^2 (Eq. 16)
    cooperative: bool = True          # False: no initializer, chains start at x_{t+1} (plain DRL)
    variance_reduction: bool = True   # Eq. 9 shared noise
    init_target: str = "refined"      # refined (Eq. 8) | data (App. G.2 ablation)
    init_lr: float = 1e-5             # eta_phi (App. A.2); the EBM uses train.lr (paper: 1e-4)
    ebm_warmup: int = 10000           # linear warm-up iterations of the EBM lr (Eq. 15)
    init_warmup: int = 10000          # linear warm-up of the initializer lr (Eq. 15)
    init_head_start: int = 500        # the initializer's warm-up starts this many iterations earlier
    embed_dim: int = 32               # sinusoidal embedding of lambda_t
    init_width: int = 128             # MLP initializer (vectors)
    init_depth: int = 3
    init_channels: list = field(default_factory=lambda: [32, 64, 64])  # UNet initializer (images)
    denoise: bool = True              # final Tweedie step (App. A.2, Eq. 18)
    denoise_coef: float = 1.0         # c multiplying the gradient in the Tweedie step (paper: 2.0)
    conditional: bool = False         # class-conditional networks with label dropout (Sec. 3.5)
    label_dropout: float = 0.1        # probability of the null label during training

    def validate(self):
        """Raise ``ConfigError`` (one sentence) for an out-of-range key."""
        if self.schedule not in ("cosine", "drl"):
            raise ConfigError(f"method.schedule must be cosine or drl, got {self.schedule!r}")
        if self.init_target not in ("refined", "data"):
            raise ConfigError(f"method.init_target must be refined or data, got {self.init_target!r}")
        if self.T < 2 or self.n_steps < 0:
            raise ConfigError(f"method.T must be >= 2 and method.n_steps >= 0, got {self.T}, {self.n_steps}")
        if self.step_coef <= 0 or self.init_lr <= 0:
            raise ConfigError("method.step_coef and method.init_lr must be positive")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ConfigError(f"method.label_dropout must lie in [0, 1), got {self.label_dropout}")
        if self.schedule == "cosine" and not self.lam_max > self.lam_min:
            raise ConfigError(f"method.lam_max must exceed method.lam_min, got {self.lam_max}, {self.lam_min}")


@dataclass
class DRLConfig(RecoveryConfig):
    """Plain DRL (Gao et al. 2021): no initializer, its own schedule, 30 steps per level."""
    name: str = "drl"
    schedule: str = "drl"
    n_steps: int = 30
    cooperative: bool = False


def make_levels(cfg: RecoveryConfig) -> dict[str, Tensor]:
    """The noise levels of ``cfg``'s schedule (``schedules.vp_levels``)."""
    lam = (schedules.cosine_logsnr(cfg.T, cfg.lam_max, cfg.lam_min) if cfg.schedule == "cosine"
           else schedules.drl_logsnr(cfg.T))
    return schedules.vp_levels(lam)


class Conditioning(nn.Module):
    """(t (B,) long, labels (B,) long or None) -> (B, C) conditioning vector: [embed(lambda_t), one-hot].

    Label ``num_classes`` (and ``labels=None``) is the null token of classifier-free guidance."""

    def __init__(self, lam: Tensor, embed_dim: int, num_classes: int = 0):
        super().__init__()
        self.register_buffer("lam", lam.float(), persistent=False)
        self.embed_dim, self.num_classes = embed_dim, num_classes
        self.dim = embed_dim + (num_classes + 1 if num_classes else 0)

    def forward(self, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, C) conditioning vector of levels t and (optional) labels."""
        c = sinusoidal_embedding(self.lam[t], self.embed_dim)  # (B, E)
        if not self.num_classes:
            return c
        if labels is None:
            labels = torch.full_like(t, self.num_classes)
        return torch.cat([c, nn.functional.one_hot(labels, self.num_classes + 1).to(c)], 1)


class RecoveryEnergy(nn.Module):
    """The sequence of EBMs. ``forward(x)`` is the lowest-noise marginal energy E_0(x) (B,)."""

    def __init__(self, net: nn.Module, cond: Conditioning, step_sq: Tensor, alpha: Tensor):
        super().__init__()
        self.net, self.cond = net, cond
        self.register_buffer("step_sq", step_sq.float(), persistent=False)  # (T,) s_t^2
        self.register_buffer("alpha", alpha.float(), persistent=False)      # (T,) alpha_{t+1}

    def net_energy(self, y: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B,) E_net(y; lambda_t, c) = -f^_theta (the network output, before the 1/s_t^2).

        Vector nets (``MLPEnergy``) take the conditioning vector; image nets (``ResNetEnergy`` of
        ``energies/convnet.py``) take t = lambda_t and y = label (-1: the null label) themselves."""
        if y.dim() == 2:
            return self.net(y, self.cond(t, labels))
        if labels is not None and self.cond.num_classes:
            labels = torch.where(labels == self.cond.num_classes, torch.full_like(labels, -1), labels)
        return self.net(y, t=self.cond.lam[t], y=labels if self.cond.num_classes else None)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B,) the lowest-noise marginal energy E_0(x)."""
        t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.net_energy(self.alpha[0] * x, t, labels) / self.step_sq[0]


class RecoveryLikelihood(Objective):
    """CDRL (``cooperative=True``) or DRL on data of shape ``shape``."""

    def __init__(self, net: nn.Module, cfg: RecoveryConfig, shape: tuple[int, ...], num_classes: int = 0,
                 ebm_lr_warmup: int | None = None):
        super().__init__()
        self.cfg, self.shape = cfg, tuple(shape)
        lv = make_levels(cfg)
        cond = Conditioning(lv["lam"][:-1], cfg.embed_dim, num_classes if cfg.conditional else 0)
        self.energy = RecoveryEnergy(net, cond, schedules.recovery_step_sizes(lv, cfg.step_coef) ** 2, lv["alpha"])
        self.initializer = (build_initializer(self.shape, cond.dim, cfg.init_width, cfg.init_depth,
                                              channels=tuple(cfg.init_channels)) if cfg.cooperative else None)
        for k in ("abar", "sbar", "alpha", "sigma"):
            self.register_buffer(k, lv[k].float(), persistent=False)
        self.register_buffer("init_std", schedules.initializer_std(lv).float(), persistent=False)
        self.levels = {k: v for k, v in lv.items()}  # float64 copies for the pair construction

    # ----- pieces ------------------------------------------------------------------------------
    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, ...) N(0, I): x_T, where Alg. 2 starts."""
        dev = self.abar.device
        return torch.randn((n, *self.shape), generator=generator, device=dev)

    def log_density(self, x: Tensor) -> Tensor:
        """(B,) -E_0(x): the level-0 marginal EBM as an unnormalised log-density of x."""
        return -self.energy(x)

    def init_mean(self, x_next: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """g_phi(x_{t+1}; lambda_t [, c]) (Eq. 6); x_{t+1} itself without an initializer (DRL)."""
        if self.initializer is None:
            return x_next
        return self.initializer(x_next, self.energy.cond(t, labels))

    def levels_for_sampling(self) -> RecoveryLevels:
        """The schedule quantities Alg. 2 needs (samplers/recovery.py)."""
        return RecoveryLevels(self.alpha, self.sigma ** 2, self.energy.step_sq,
                              self.init_std if self.initializer is not None else None,
                              self.abar[0], self.sbar[0], self.cfg.n_steps)

    def param_groups(self, lr: float) -> list[ParamGroup]:
        """Two typed groups: the EBM at ``train.lr``, the initializer at ``init_lr`` with its head start (Eq. 15)."""
        groups = [ParamGroup(params=list(self.energy.parameters()), lr=lr, warmup=self.cfg.ebm_warmup,
                             delay=0, name="energy")]
        if self.initializer is not None:
            groups.append(ParamGroup(params=list(self.initializer.parameters()), lr=self.cfg.init_lr,
                                     warmup=self.cfg.init_warmup, delay=-self.cfg.init_head_start,
                                     name="initializer"))
        return groups

    def _labels(self, batch, generator) -> Tensor | None:
        """Training labels with classifier-free-guidance dropout to the null token (Sec. 3.5)."""
        if not self.cfg.conditional:
            return None
        labels = batch_labels(batch)
        if labels is None:
            raise ValueError("method.conditional=true needs a labelled dataset (batches of (x, y))")
        drop = torch.rand(labels.shape, generator=generator, device=labels.device) < self.cfg.label_dropout
        return torch.where(drop, torch.full_like(labels, self.energy.cond.num_classes), labels)

    # ----- training (Alg. 1) -------------------------------------------------------------------
    def forward(self, batch, *, generator: torch.Generator | None = None) -> LossOutput:
        """Alg. 1: a level per example, the pair (y_t, x_{t+1}), proposal, K steps, Eq. 7 + Eq. 8."""
        x0 = batch_data(batch)
        labels = self._labels(batch, generator)
        t = torch.randint(self.cfg.T, (x0.shape[0],), generator=generator, device=x0.device)   # (B,)
        y, x_next = schedules.shared_noise_pair(x0, t, self.levels, self.cfg.variance_reduction, generator)
        mean = self.init_mean(x_next, t, labels)                                                 # (B, ...)
        lv = self.levels_for_sampling()
        y_hat = propose(mean, t, lv.init_std, generator)
        net_e = lambda v, tt: self.energy.net_energy(v, tt, labels)  # noqa: E731
        cond_e = conditional_energy(net_e, x_next, t, self.energy.step_sq, self.sigma ** 2)
        y_tilde, diag = refine(cond_e, y_hat, self.cfg.n_steps, step_sizes(lv, t, self.cfg.n_steps), generator,
                               freeze=self.energy, diagnostics="full")
        e_pos, e_neg = net_e(y, t), net_e(y_tilde, t)                                           # (B,)
        gap = e_pos.mean() - e_neg.mean()                                                        # Eq. 7
        loss, metrics = gap, {"energy_gap": gap.detach(), "refine_shift": (y_tilde - y_hat).flatten(1).norm(dim=1).mean()}
        if self.initializer is not None:
            target = y_tilde if self.cfg.init_target == "refined" else y
            init_loss = (target.detach() - mean).flatten(1).pow(2).mean(1).mean()              # Eq. 8, simple
            loss = loss + init_loss
            metrics["init_mse"] = init_loss.detach()
        metrics["grad_norm_chain"] = diag.grad_norm.mean() if diag.grad_norm.numel() else torch.tensor(0.0)
        return LossOutput(loss, metrics, y_tilde.detach())

    # ----- sampling (Alg. 2, samplers/recovery.py) ---------------------------------------------
    def _net(self, energy_fn):
        return energy_fn or (lambda v, tt: self.energy.net_energy(v, tt))

    def reverse_process(self, x_T: Tensor, *, n_steps: int | None = None, generator=None, energy_fn=None,
                        init_fn=None, project=None, keep_levels: bool = False):
        """Alg. 2 from x_T (B, ...) with K' = ``n_steps`` steps per level. ``energy_fn(y, t)`` -> (B,)
        network energy (default: the unconditional EBM), ``init_fn(x_next, t)`` -> proposal mean
        (default: the initializer), ``project(x, level)`` -> x (inpainting). Returns (x_0 before
        denoising, [x_T, ..., x_0] if ``keep_levels``, ChainInfo)."""
        init_fn = init_fn or (lambda v, tt: self.init_mean(v, tt))
        return reverse_process(self._net(energy_fn), init_fn, x_T, self.levels_for_sampling(), n_steps=n_steps,
                               generator=generator, project=project, keep_levels=keep_levels, freeze=self.energy)

    def denoise(self, x: Tensor, energy_fn=None) -> Tensor:
        """Tweedie step (Eq. 18) with ``method.denoise_coef``."""
        return tweedie(self._net(energy_fn), x, self.levels_for_sampling(), self.cfg.denoise_coef)

    @property
    def n_steps_default(self) -> int:
        """T x K, the Langevin steps of one Alg. 2 run."""
        return self.cfg.T * self.cfg.n_steps

    def sample(self, n: int, *, generator: torch.Generator | None = None, n_steps: int | None = None,
               x0: Tensor | None = None, cond: dict | None = None) -> SampleOutput:
        """Alg. 2 from x_T ~ N(0, I) (``x0`` replaces x_T), ``n_steps`` Langevin steps in all
        (K' = ceil(n_steps / T) per level, 0: the initializer alone), then the Tweedie step when
        ``method.denoise``. ``cond={"y": labels}`` samples a class of a conditional model."""
        labels = self._cond_labels(cond)
        energy_fn = None if labels is None else (lambda v, tt: self.energy.net_energy(v, tt, labels))
        init_fn = None if labels is None else (lambda v, tt: self.init_mean(v, tt, labels))
        return self.generate(self.start_points(n, x0, generator), n_steps=per_level_steps(n_steps, self.cfg.n_steps, self.cfg.T),
                             generator=generator, energy_fn=energy_fn, init_fn=init_fn)

    def _cond_labels(self, cond: dict | None) -> Tensor | None:
        if not cond:
            return None
        if not self.cfg.conditional or set(cond) != {"y"}:
            raise ValueError(f"cond must be {{'y': labels}} for a model trained with method.conditional=true, "
                             f"got {sorted(cond)}")
        return cond["y"]

    def generate(self, x_T: Tensor, *, n_steps: int | None = None, generator=None, energy_fn=None,
                 init_fn=None) -> SampleOutput:
        """Alg. 2 + Tweedie from x_T with any network energy / initializer (guidance, composition)."""
        x, _, info = self.reverse_process(x_T, n_steps=n_steps, generator=generator, energy_fn=energy_fn,
                                          init_fn=init_fn)
        if self.cfg.denoise:
            with torch.enable_grad():
                x = self.denoise(x, energy_fn)
        return SampleOutput(x, info.as_dict())


def build(cfg, data) -> RecoveryLikelihood:
    """Build CDRL or DRL for ``data`` (MLP or ResNet network, conditioned on the level and class)."""
    m = cfg.method
    num_classes = int(data.num_classes or 0) if m.conditional else 0
    if m.conditional and num_classes < 2:
        raise ConfigError(f"method.conditional=true needs a labelled dataset with classes; {data.name!r} has none")
    if len(data.shape) == 1:  # MLP on [y, embed(lambda), one-hot]
        net = build_energy(cfg.model, data.shape, cond_dim=m.embed_dim + (num_classes + 1 if num_classes else 0))
    else:                     # noise- (and class-) conditioned ResNet of energies/convnet.py
        net = build_energy(cfg.model, data.shape, time_cond=True, num_classes=num_classes)
    return RecoveryLikelihood(net, m, data.shape, num_classes)

