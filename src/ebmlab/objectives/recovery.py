"""Diffusion recovery likelihood (DRL, Gao et al. 2021) and its cooperative version (CDRL).

Paper 003 (Zhu, Xie, Wu, Gao: "Learning energy-based models by cooperative diffusion recovery
likelihood"), Sec. 3, Alg. 1 (training) and Alg. 2 (sampling), App. A.2-A.3. Methods ``cdrl`` and
``drl`` (Gao et al.'s recipe from their public code: ``DRLConfig``'s docstring lists the differences).

Options beyond the paper's text (defaults = the paper): the authors' toy_example.py set-up
(``step_rule: const`` s_t^2 = step_coef sigma_{t+1}^2, 0.27 there; ``top_marginal``: level T-1 is the
marginal EBM of x_{T-1}, no quadratic term, y = x_{T-1}; ``loss_weight: sigma``: level t's EBM term x
sigma_1 / sigma_{t+1}; ``data_scale``: the diffusion runs on data_scale * x, 4 for their squares of side 4)
and Table 10's initializer variants (``init_predicts: x0 | eps``, see ``init_mean``).

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
one Tweedie step (Eq. 17-18) x = (x_0 - c sbar_0^2 dE_0/dx) / abar_0 with ``denoise_coef`` c (exact Tweedie:
1; the paper uses 2 for images). With K' = ``n_steps`` != K the step is s_t sqrt(K/K') (Sec. 4.2) while the
energy's s_t stays the trained one.

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

from ebmlab.config_checks import check_ranges, positive_ints
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
    cooperative: bool = True          # False: no initializer, chains start at x_{t+1} (drl: this and more, see DRLConfig)
    variance_reduction: bool = True   # Eq. 9 shared noise
    init_target: str = "refined"      # refined (Eq. 8) | data (App. G.2 ablation)
    init_lr: float = 1e-5             # eta_phi (App. A.2); the EBM uses train.lr (paper: 1e-4)
    ebm_warmup: int = 10000           # linear warm-up iterations of the EBM lr (Eq. 15)
    init_warmup: int = 10000          # linear warm-up of the initializer lr (Eq. 15)
    init_head_start: int = 500        # the initializer's warm-up starts this many iterations earlier
    embed_dim: int = 32               # lambda_t's sinusoidal embedding (images: initializer only; EBM: model.time_embed_dim)
    init_width: int = 128             # MLP initializer (vectors)
    init_depth: int = 3
    init_channels: list = field(default_factory=lambda: [32, 64, 64])  # UNet initializer (images)
    denoise: bool = True              # final Tweedie step (App. A.2, Eq. 18)
    denoise_coef: float = 1.0         # c multiplying the gradient in the Tweedie step (paper: 2.0)
    conditional: bool = False         # class-conditional networks with label dropout (Sec. 3.5)
    label_dropout: float = 0.1        # probability of the null label during training
    init_conditional: bool | None = None  # false: the initializer never sees a label (Sec. 4.5); None: as the EBM
    # --- the authors' toy set-up (AlvinZhuyx/CDRL toy_example.py) and Gao et al.'s DRL code ---------
    top_marginal: bool = False        # level T-1 is the marginal EBM of x_{T-1}: no quadratic term, y = x_{T-1}
    loss_weight: str = "none"         # none | sigma: level t's EBM term x sigma_1 / sigma_{t+1}
    step_rule: str = "eq16"           # eq16: s_t^2 = step_coef sbar_t sigma_{t+1}^2 | const: step_coef sigma_{t+1}^2
    # --- Table 10: what the initializer network outputs (converted to the mean of y_t) -----------------
    init_predicts: str = "y"          # y (CDRL) | x0 (x^_0, Xiao et al. 2022) | eps (e^, Ho et al. 2020)
    data_scale: float = 1.0           # the diffusion runs on data_scale * x (model coordinates); samples come back / data_scale

    def validate(self):
        """Raise ``ConfigError`` (one sentence) for an out-of-range key."""
        for key, allowed in (("schedule", ("cosine", "drl")), ("loss_weight", ("none", "sigma")), ("step_rule", ("eq16", "const")),
                             ("init_predicts", ("y", "x0", "eps")), ("init_target", ("refined", "data"))):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"method.{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        t_max = schedules.drl_max_T() if self.schedule == "drl" else self.T  # DRL's schedule: a fixed fine grid
        if not 2 <= self.T <= t_max or self.n_steps < 0:
            raise ConfigError(f"method.T must be >= 2 (<= {schedules.drl_max_T()} with method.schedule drl) and "
                              f"method.n_steps >= 0, got {self.T}, {self.n_steps}")
        check_ranges("method", self, nonnegative=("denoise_coef", "ebm_warmup", "init_warmup", "init_head_start"),
                     positive=("data_scale", "step_coef", "init_lr", "embed_dim", "init_width", "init_depth"))
        if not positive_ints(self.init_channels):
            raise ConfigError(f"method.init_channels must list positive integers, got {self.init_channels!r}")
        if self.embed_dim % 2:
            raise ConfigError(f"method.embed_dim (sines and cosines) must be even, got {self.embed_dim}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ConfigError(f"method.label_dropout must lie in [0, 1), got {self.label_dropout}")
        if self.schedule == "cosine" and not self.lam_max > self.lam_min:
            raise ConfigError(f"method.lam_max must exceed method.lam_min, got {self.lam_max}, {self.lam_min}")


@dataclass
class DRLConfig(RecoveryConfig):
    """DRL as Gao et al. (2021) train it (their public code ``ruiqigao/recovery_likelihood``, ``model.py``,
    ``config.py``), the baseline of paper 003's Table 10 row 1. Differences from CDRL:

    - DRL's own "T6" schedule (``schedules.drl_logsnr``: 1000-step linear beta 1e-4..0.02 read at 6
      levels), conditioned here on lambda_t like every recovery model of ebmlab (Gao et al. feed t);
    - K = 30 Langevin steps per level with s_t^2 = b^2 (sbar_t / sbar_0) sigma_{t+1}^2, b^2 = 2e-4
      (``mcmc_step_size_b_square``); with sbar_0 = 0.01 that is Eq. 16's form with step_coef 0.02;
    - no initializer: every chain starts at x_{t+1} (``cooperative: false``);
    - no noise variance reduction: x_{t+1} = alpha_{t+1} x_t + sigma_{t+1} e' (``q_sample_pairs``);
    - the top level is the marginal EBM of x_{T-1} (``is_recovery[-1] = 0``, ``a_s_prev[-1] = 1``);
    - each level's loss weighted by sigma_1 / sigma_{t+1} (``training_losses``' ``loss_scale``);
    - no final Tweedie step (samples are x_0 = y~ / alpha_1).

    The 1/s_t^2 reparameterisation of the energy is *kept*: Gao et al.'s ``log_prob`` divides the network by
    the squared step size (``b0``), and paper 003 App. A.2 says it follows them there. Their EBM is trained at
    lr 1e-4 with 1,000 warm-up iterations, batch 64 (``config.py``): not set here (``ebm_warmup`` stays 10,000)."""
    name: str = "drl"
    schedule: str = "drl"
    n_steps: int = 30
    step_coef: float = 0.02
    cooperative: bool = False
    variance_reduction: bool = False
    top_marginal: bool = True
    loss_weight: str = "sigma"
    denoise: bool = False


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

    def __init__(self, net: nn.Module, cond: Conditioning, step_sq: Tensor, alpha: Tensor, scale: float = 1.0):
        super().__init__()
        self.net, self.cond, self.scale = net, cond, float(scale)
        self.register_buffer("step_sq", step_sq.float(), persistent=False)  # (T,) s_t^2
        self.register_buffer("alpha", alpha.float(), persistent=False)      # (T,) alpha_{t+1}

    def compile(self, *args, **kwargs) -> None:
        """``train.compile``: the network in place (training and the samplers call ``net_energy`` -> ``self.net``,
        so a compiled wrapper ran nothing compiled, issue 20); ``forward`` reaches it too."""
        self.net.compile(*args, **kwargs)

    def net_energy(self, y: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B,) E_net(y; lambda_t, c) = -f^_theta (the network output, before the 1/s_t^2).

        Vector nets (``MLPEnergy``) take the conditioning vector; image nets (``ResNetEnergy`` of
        ``energies/convnet.py``) take t = lambda_t and y = label (-1: the null label) themselves."""
        if y.dim() == 2:
            return self.net(y, self.cond(t, labels))
        if labels is not None and self.cond.num_classes:
            labels = torch.where(labels == self.cond.num_classes, torch.full_like(labels, -1), labels)
        return self.net(y, t=self.cond.lam[t], y=labels if self.cond.num_classes else None)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B,) the lowest-noise marginal energy E_0(x) (of data_scale * x: the diffusion's coordinates), of class
        ``y`` (B,) for a class-conditional model (None: the null label, the unconditional energy)."""
        t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.net_energy(self.alpha[0] * self.scale * x, t, y) / self.step_sq[0]


class RecoveryLikelihood(Objective):
    """CDRL (``cooperative=True``) or DRL on data of shape ``shape``."""

    def __init__(self, net: nn.Module, cfg: RecoveryConfig, shape: tuple[int, ...], num_classes: int = 0,
                 ebm_lr_warmup: int | None = None):
        super().__init__()
        self.cfg, self.shape = cfg, tuple(shape)
        self.num_classes = num_classes if cfg.conditional else 0
        lv = make_levels(cfg)
        cond = Conditioning(lv["lam"][:-1], cfg.embed_dim, self.num_classes)
        step_sq = schedules.recovery_step_sizes(lv, cfg.step_coef, cfg.step_rule) ** 2
        # y_t = y_scale_t x_t and the quadratic term's variance: alpha_{t+1}, sigma_{t+1}^2, except the
        # top level of ``top_marginal`` (y = x_{T-1}, variance inf: no quadratic term)
        y_scale, quad_var = lv["alpha"].clone(), lv["sigma"].pow(2)
        init_std = schedules.initializer_std(lv)
        if cfg.top_marginal:
            init_std[-1] = init_std[-1] / y_scale[-1]
            y_scale[-1], quad_var[-1] = 1.0, float("inf")
        self.energy = RecoveryEnergy(net, cond, step_sq, y_scale, cfg.data_scale)
        self.initializer = (build_initializer(self.shape, cond.dim, cfg.init_width, cfg.init_depth,
                                              channels=tuple(cfg.init_channels)) if cfg.cooperative else None)
        for k in ("abar", "sbar", "alpha", "sigma"):
            self.register_buffer(k, lv[k].float(), persistent=False)
        self.register_buffer("y_scale", y_scale.float(), persistent=False)    # (T,) y_t = y_scale_t x_t
        self.register_buffer("quad_var", quad_var.float(), persistent=False)  # (T,) inf: marginal level
        self.register_buffer("init_std", init_std.float(), persistent=False)
        sb2 = lv["sbar"] ** 2  # posterior mean of x_t given (x_0, x_{t+1}): c0 x_0 + c1 x_{t+1} (Table 10 variants)
        self.register_buffer("post_c0", (lv["abar"][:-1] * lv["sigma"] ** 2 / sb2[1:]).float(), persistent=False)
        self.register_buffer("post_c1", (lv["alpha"] * sb2[:-1] / sb2[1:]).float(), persistent=False)
        self.register_buffer("loss_w", (lv["sigma"][0] / lv["sigma"] if cfg.loss_weight == "sigma"
                                        else torch.ones_like(lv["sigma"])).float(), persistent=False)
        self.levels = {k: v for k, v in lv.items()}  # float64 copies for the pair construction

    # ----- pieces ------------------------------------------------------------------------------
    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, ...) N(0, I): x_T, where Alg. 2 starts."""
        return torch.randn((n, *self.shape), generator=generator, device=self.abar.device, dtype=self.abar.dtype)

    def log_density(self, x: Tensor) -> Tensor:
        """(B,) -E_0(x): the level-0 marginal EBM as an unnormalised log-density of x."""
        return -self.energy(x)

    def init_mean(self, x_next: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """g_phi(x_{t+1}; lambda_t [, c]) (Eq. 6); x_{t+1} itself without an initializer (DRL).

        ``init_predicts`` (Table 10): ``y`` the network output is the mean of y_t; ``x0`` it is x^_0,
        ``eps`` it is e^ with x^_0 = (x_{t+1} - sbar_{t+1} e^) / abar_{t+1}; both are turned into
        y_scale_t E[x_t | x^_0, x_{t+1}] = y_scale_t (c0_t x^_0 + c1_t x_{t+1}), the Gaussian posterior
        mean (c0 = abar_t sigma_{t+1}^2 / sbar_{t+1}^2, c1 = alpha_{t+1} sbar_t^2 / sbar_{t+1}^2)."""
        if self.initializer is None:
            return x_next
        h = self.initializer(x_next, self.energy.cond(t, None if self.cfg.init_conditional is False else labels))
        if self.cfg.init_predicts == "y":
            return h
        bc = lambda v: v[t].view(-1, *([1] * (x_next.dim() - 1)))  # noqa: E731  (B,) -> (B, 1, ...)
        x0 = h if self.cfg.init_predicts == "x0" else (x_next - bc(self.sbar[1:]) * h) / bc(self.abar[1:])
        return bc(self.y_scale) * (bc(self.post_c0) * x0 + bc(self.post_c1) * x_next)

    def levels_for_sampling(self) -> RecoveryLevels:
        """The schedule quantities Alg. 2 needs (samplers/recovery.py)."""
        return RecoveryLevels(self.y_scale, self.quad_var, self.energy.step_sq,
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
        if self.cfg.data_scale != 1.0:  # the diffusion's coordinates (the authors' toy: squares of side 4)
            x0 = x0 * self.cfg.data_scale
        labels = self._labels(batch, generator)
        t = torch.randint(self.cfg.T, (x0.shape[0],), generator=generator, device=x0.device)   # (B,)
        y, x_next = schedules.shared_noise_pair(x0, t, self.levels, self.cfg.variance_reduction, generator)
        if self.cfg.top_marginal:  # the top level's y is x_{T-1} itself (y_scale / alpha = 1 / alpha there)
            y = y * (self.y_scale / self.alpha)[t].view(-1, *([1] * (y.dim() - 1)))
        mean = self.init_mean(x_next, t, labels)                                                 # (B, ...)
        lv = self.levels_for_sampling()
        y_hat = propose(mean, t, lv.init_std, generator)
        net_e = lambda v, tt: self.energy.net_energy(v, tt, labels)  # noqa: E731
        cond_e = conditional_energy(net_e, x_next, t, self.energy.step_sq, self.quad_var)
        y_tilde, diag = refine(cond_e, y_hat, self.cfg.n_steps, step_sizes(lv, t, self.cfg.n_steps), generator,
                               freeze=self.energy, diagnostics="full")
        e_pos, e_neg = net_e(y, t), net_e(y_tilde, t)                                           # (B,)
        if self.cfg.loss_weight == "none":
            gap = e_pos.mean() - e_neg.mean()                                                    # Eq. 7
        else:  # sigma_1 / sigma_{t+1} per level (the authors' toy_example.py, Gao et al.'s loss_scale)
            gap = (self.loss_w[t] * (e_pos - e_neg)).mean()
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
        denoising, [x_T, ..., x_0] if ``keep_levels``, ChainInfo), in the diffusion's coordinates
        (model coordinates x ``method.data_scale``; ``generate`` and ``inpaint`` divide by it)."""
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

    sample_levels = property(lambda self: self.cfg.T, doc="T, the noise levels of Alg. 2.")

    def sample(self, n: int, *, generator: torch.Generator | None = None, n_steps: int | None = None,
               x0: Tensor | None = None, cond: dict | None = None) -> SampleOutput:
        """Alg. 2 from x_T ~ N(0, I) (``x0`` replaces x_T), ``n_steps`` Langevin steps in all (K' = ceil(n_steps / T)
        per level; 0: the proposals alone, the initializer's or, without one (DRL), x_{t+1}), then the Tweedie step
        when ``method.denoise``. ``cond={"y": labels}`` samples a class of a conditional model."""
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
        if self.cfg.data_scale != 1.0:
            x = x / self.cfg.data_scale
        return SampleOutput(x, info.as_dict())


def build(cfg, data) -> RecoveryLikelihood:
    """Build CDRL or DRL for ``data`` (MLP or ResNet network, conditioned on the level and class)."""
    m = cfg.method
    num_classes = int(data.num_classes or 0) if m.conditional else 0
    if m.conditional and num_classes < 2:
        raise ConfigError(f"method.conditional=true needs a labelled dataset with classes; {data.name!r} has none")
    if len(data.shape) == 1:  # MLP on [y, embed(lambda), one-hot]
        net = build_energy(cfg.model, data.shape, cond_dim=m.embed_dim + (num_classes + 1 if num_classes else 0))
        if getattr(cfg.model, "spectral_norm", False):  # the authors' toy EBM: spectral norm on every Linear
            for mod in list(net.modules()):
                if isinstance(mod, nn.Linear):
                    nn.utils.parametrizations.spectral_norm(mod)
    else:                     # noise- (and class-) conditioned ResNet of energies/convnet.py
        net = build_energy(cfg.model, data.shape, time_cond=True, num_classes=num_classes)
    return RecoveryLikelihood(net, m, data.shape, num_classes)

