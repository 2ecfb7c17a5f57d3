"""Improved contrastive divergence (paper 001: Du, Li, Tenenbaum, Mordatch), method ``improved_cd``.

Training is Alg. 1; generation is Alg. 2; App. B.2 gives the paper-scale settings.

Training iteration (Alg. 1, Sec. 2.1-2.5):

1. chain starts x̃⁰ come from the replay buffer with probability 1 - r, else from uniform noise
   (``reset_prob`` = r). **Discrepancy in the paper:** Sec. 3.1 says "a resampling rate of 0.1 %",
   Alg. 1 says "99 % probability" (r = 1 %); the default here follows Alg. 1 (0.01), set
   ``reset_prob: 0.001`` for the text's value. A set X of ``n_entropy`` (100, Sec. 2.2) past samples
   is drawn from the buffer for the entropy term;
2. a data-augmentation transition x̃⁰ = D(x̃⁰) (Sec. 2.3, ``samplers/augment.py``), applied to every
   chain start as written in Alg. 1 (also the noise restarts);
3. K Langevin steps x̃ᵏ = x̃ᵏ⁻¹ - λ ∇ₓE(x̃ᵏ⁻¹) + ω, ω ~ N(0, σ²) (Eq. 7 / Alg. 1). λ = ``step_size``
   and σ = ``noise_scale`` are separate knobs (App. B.2: λ = 500 / 1000, σ = 0.001), *not* the
   textbook σ = sqrt(2λ);
4. L_CD = mean E_θ(x⁺) - mean E_θ(Ω(x̂⁻)) (Eq. 5) on stop-gradient samples;
5. L_KL = L_opt + L_ent (Eq. 6-8): L_opt = mean E_{Ω(θ)}(x̂⁻) where x̂⁻ is the last Langevin step
   kept differentiable with respect to θ (Eq. 7; ``backprop_all`` differentiates through all K
   steps instead, App. D.2) and E_{Ω(θ)} evaluates the energy with *detached* parameters
   (``torch.func.functional_call``), so θ receives the L_opt gradient only through the sample.
   L_ent = mean -log NN(x̂⁻, X) (Eq. 8), the L2 distance to the nearest of the past samples X;
6. the buffer receives Ω(x̂⁻) (FIFO, ``buffer_size`` = 10,000 at paper scale).

Table 2's components are switches: ``kl`` (L_opt), ``entropy`` (L_ent), ``augment``,
``multiscale`` (the energy becomes ``energies/multiscale.py``'s sum over full, half and quarter
resolution, Sec. 2.4). Alg. 1 writes L_KL as one term; Table 2 ablates L_opt without L_ent, so the
two are separate flags (``entropy`` without ``kl`` is allowed too: the entropy gradient also reaches
θ only through the differentiable last step).

Generation (Alg. 2, ``sample``, ``samplers/augmented.py``): x̃⁰ ~ U, then N = ``sample_rounds`` rounds of (augmentation,
``sample_steps`` Langevin steps); "a random augmentation after every 20 steps" at test time (Sec.
2.3). ``sample(n, n_steps=L)`` runs ceil(L / sample_steps) rounds (long-run evaluation).

Choices where the paper is silent (each tested or measured):

- Uniform noise: U[-1, 1]ᴰ for images (the data range). For vectors, uniform over the box
  [min - 10 %, max + 10 %] of the training data per coordinate, in model coordinates.
- Image chains are clipped to [-1, 1] when they *end* (buffer writes and returned samples) and after
  each augmentation, not after every Langevin step: a clip between steps would invalidate the
  cached gradient of the shared Langevin sampler, and the loss terms use the unclipped x̂⁻.
- The entropy set X is drawn without replacement from the buffer as it was *before* this
  iteration's push; while the buffer is empty (first iteration) L_ent is 0 and reported as such.
  The NN distance gets a floor of 1e-8 inside the log (a collapsed set gives -log 1e-8 ≈ 18.4,
  finite), which is the behaviour the paper wants: a large loss when samples collapse.
- Class-conditional training (``conditional: true``, used for composition, Sec. 3.4): the chain of
  row i runs under the label of positive example i; the buffer stores images only, so chains may
  start from a sample of another class (the augmentation-and-buffer mixing of Sec. 2.3 across
  classes). ``sample`` draws uniform labels unless ``y`` is given.
- ``log_density`` is -E, the paper's p ∝ exp(-E). Its sampler (σ ≠ sqrt(2λ)) targets exp(-E / T_eff),
  T_eff = σ² / (2λ), but the chains are short and persistent, not at equilibrium: on the 2-D toy
  (the shipped config paper001_toy) the grid KL of exp(-E) to the true density was 2.99 (uniform: 3.12)
  while long Alg. 2 chains reach precision 0.89 (docs/paper001.md): the energy is a good sampler
  target, not a calibrated density.
- ``energy_l2`` adds α (E(x⁺)² + E(x⁻)²) (Du & Mordatch 2019's regulariser; paper 001 does not
  mention it; 0 by default).
- ``grad_ratio_every`` > 0 measures ‖∇θ L_KL‖ / ‖∇θ L_CD‖ on iterations whose 1-based number is a
  multiple of it (Fig. 9), at the cost of two extra backward passes; the metrics are ``grad_norm_kl``,
  ``grad_norm_cd`` and ``grad_ratio_kl_cd``. The trainer logs every ``train.log_every``-th step's
  metrics only, so make it a multiple of ``log_every``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ebmlab.errors import ConfigError
from ebmlab.buffers import ReplayBuffer
from ebmlab.energies.build import build_energy
from ebmlab.objectives.base import LossOutput, Objective, SampleOutput, batch_data, batch_labels
from ebmlab.samplers import langevin, run_chain
from ebmlab.samplers.augmented import augmented_langevin

NN_FLOOR = 1e-8  # floor of the nearest-neighbour distance inside the log (Eq. 8)


@dataclass
class ImprovedCDConfig:
    """``method`` keys of paper 001 (App. B.2 and Table 2's switches; see the field comments)."""
    name: str = "improved_cd"
    n_steps: int = 40                 # K Langevin steps per training iteration (App. B.2: 40)
    step_size: float = 500.0          # λ: drift -λ ∇E (B.2's CIFAR-10 number, for [0, 1] pixels: 2000 on ours)
    noise_scale: float = 0.001        # σ: std of the Langevin noise (B.2's, for [0, 1] pixels: 0.002 on ours)
    buffer_size: int = 10000          # replay buffer capacity (Sec. 3.1)
    reset_prob: float = 0.01          # r: Alg. 1 says 1 %, Sec. 3.1 says 0.1 % (see docstring)
    kl: bool = True                   # L_opt (Eq. 7) on/off (Table 2)
    entropy: bool = True              # L_ent (Eq. 8) on/off (Table 2)
    kl_weight: float = 1.0            # weight of L_opt (the paper: 1)
    entropy_weight: float = 1.0       # weight of L_ent (the paper: 1)
    n_entropy: int = 100              # |X|: past samples for the NN entropy (Sec. 2.2)
    backprop_all: bool = False        # differentiate L_KL through all K steps (App. D.2)
    augment: bool = True              # augmentation transition D (Sec. 2.3, Table 2)
    augment_strength: float = 1.0     # colour-jitter strength of D (App. B.2: 1.0)
    augment_scale: list = dataclasses.field(default_factory=lambda: [0.02, 1.0])  # crop area (B.2)
    augment_flip: bool = True         # horizontal flip in D (B.2; off for digits: mirrored digits)
    augment_blur: bool = True         # Gaussian blur in D (Sec. 2.3 lists it; B.2 does not: paper configs off)
    multiscale: bool = False          # multi-scale energy (Sec. 2.4, Table 2)
    sample_rounds: int = 5            # Alg. 2: N rounds of (augmentation, sample_steps steps)
    sample_steps: int = 20            # Alg. 2: K steps per round ("every 20 steps", Sec. 2.3)
    conditional: bool = False         # class-conditional E(x | y) (Sec. 3.4 composition)
    energy_l2: float = 0.0            # α of α(E⁺² + E⁻²) (not in paper 001; off by default)
    grad_ratio_every: int = 0         # measure ‖∇L_KL‖ / ‖∇L_CD‖ every N iterations (Fig. 9); 0: off

    def validate(self):
        """Raise ``ConfigError`` (one sentence) for an out-of-range key."""
        for key in ("step_size", "noise_scale", "kl_weight", "entropy_weight"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"method.{key} must be positive, got {getattr(self, key)}")
        for key in ("n_steps", "buffer_size", "n_entropy", "sample_rounds", "sample_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"method.{key} must be at least 1, got {getattr(self, key)}")
        if not 0.0 <= self.reset_prob <= 1.0:
            raise ConfigError(f"method.reset_prob must lie in [0, 1], got {self.reset_prob}")
        if len(self.augment_scale) != 2 or not 0 < self.augment_scale[0] <= self.augment_scale[1] <= 1:
            raise ConfigError(f"method.augment_scale must be [low, high] with 0 < low <= high <= 1, "
                              f"got {self.augment_scale}")
        if self.energy_l2 < 0 or self.grad_ratio_every < 0 or self.augment_strength < 0:
            raise ConfigError("method.energy_l2, method.grad_ratio_every and method.augment_strength "
                              "must be non-negative")


def nn_entropy_loss(x: Tensor, past: Tensor) -> Tensor:
    """L_ent of Eq. 8: mean over x of -log NN(x, past), NN = L2 distance to the nearest past sample.

    x (B, ...) may carry a graph; past (M, ...) is treated as constant.
    """
    # exact differences (not the matmul expansion, which leaves ~1e-4 rounding at zero distance)
    d = torch.cdist(x.flatten(1), past.detach().flatten(1), compute_mode="donot_use_mm_for_euclid_dist")  # (B, M)
    nn_dist = d.min(dim=1).values                              # (B,)
    return -torch.log(nn_dist.clamp_min(NN_FLOOR)).mean()


def frozen_energy(energy: nn.Module, x: Tensor, **cond) -> Tensor:
    """E_{stop_grad(θ)}(x) of Eq. 6-7: the energy with detached parameters, differentiable in x only."""
    params = {k: v.detach() for k, v in energy.named_parameters()}
    params.update(dict(energy.named_buffers()))
    return functional_call(energy, params, (x,), cond)


class ImprovedCD(Objective):
    """Paper 001's objective: owns the energy, the replay buffer (in ``state_dict``) and Alg. 2."""

    def __init__(self, energy: nn.Module, cfg: ImprovedCDConfig, shape: tuple[int, ...], *, kind: str,
                 low: Tensor, high: Tensor, num_classes: int = 0):
        super().__init__()
        self.energy, self.cfg, self.shape, self.kind = energy, cfg, tuple(shape), kind
        self.num_classes = num_classes
        self.register_buffer("init_low", low.expand(self.shape).clone())    # (*shape) uniform box
        self.register_buffer("init_high", high.expand(self.shape).clone())  # (*shape)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self.buffer = ReplayBuffer(cfg.buffer_size, self.shape, self.prior, reset_prob=cfg.reset_prob,
                                   reset_mode="chain", mode="fifo")
        self._augment = _load_augment() if cfg.augment else None

    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, *shape) uniform noise over the init box (Alg. 1-2's U)."""
        u = torch.rand((n, *self.shape), generator=generator, device=self.init_low.device, dtype=self.init_low.dtype)
        return self.init_low + (self.init_high - self.init_low) * u

    def log_density(self, x: Tensor) -> Tensor:
        """(B,) unnormalised log p(x) = -E(x), the paper's p ∝ exp(-E) (Sec. 2); see the docstring."""
        return -self.energy(x)

    def augment(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """The augmentation transition D (Sec. 2.3), or the identity when ``augment`` is off."""
        if self._augment is None:
            return x
        c = self.cfg
        return self._clip(self._augment(x, generator, strength=c.augment_strength, scale=tuple(c.augment_scale),
                                        flip=c.augment_flip, blur=c.augment_blur))

    def _clip(self, x: Tensor) -> Tensor:
        return x.clamp(-1.0, 1.0) if self.kind == "image" else x

    def start(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Chain starts (n, *shape) of Alg. 1 (buffer w.p. 1 - r, else noise) and a (n,) bool 'fresh' mask."""
        x, idx = self.buffer.sample(n, generator)
        return x, idx < 0

    def past_samples(self, generator: torch.Generator | None = None) -> Tensor | None:
        """X of Alg. 1: up to ``n_entropy`` buffer samples without replacement; None if the buffer is empty."""
        count = len(self.buffer)
        if count == 0:
            return None
        idx = torch.randperm(count, generator=generator, device=self.buffer.data.device)[:self.cfg.n_entropy]
        return self.buffer.data[idx]

    def _cond(self, y: Tensor | None) -> dict:
        return {"y": y} if self.cfg.conditional else {}

    def forward(self, batch, *, generator: torch.Generator | None = None) -> LossOutput:
        """Alg. 1: buffer starts, augmentation, K Langevin steps, L_CD + L_KL (Eq. 5-8)."""
        cfg = self.cfg
        x_pos = batch_data(batch)  # (B, ...) model coordinates
        y = batch_labels(batch)
        if cfg.conditional and y is None:
            raise ValueError("method.conditional needs a labelled dataset (batches of (x, y))")
        cond = self._cond(y)
        past = self.past_samples(generator)
        x0, fresh = self.start(x_pos.shape[0], generator)
        x0 = self.augment(x0, generator)
        use_kl = cfg.kl or cfg.entropy
        mode = ("all" if cfg.backprop_all else "last") if use_kl else "none"
        # Ω in Alg. 1: steps 1..K-1 detached, the last step differentiable w.r.t. θ (Eq. 7)
        x_hat, diag = run_chain(langevin, self.energy, x0, cfg.n_steps, cfg.step_size, noise_scale=cfg.noise_scale,
                                grad=mode, final_energy=False, diagnostics="full", generator=generator, **cond)
        x_neg = x_hat.detach()  # Ω(x̂⁻): the stop-gradient sample of Eq. 5
        e_pos, e_neg = self.energy(x_pos, **cond), self.energy(x_neg, **cond)  # (B,), (B,)
        loss_cd = e_pos.mean() - e_neg.mean()  # Eq. 5
        if cfg.energy_l2 > 0:
            loss_cd = loss_cd + cfg.energy_l2 * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        loss_opt, loss_ent = self._kl_terms(x_hat, past, cond)
        loss_kl = loss_opt + loss_ent
        metrics = {"energy_gap": (e_pos.mean() - e_neg.mean()).detach(), "energy_pos": e_pos.mean().detach(),
                   "energy_neg": e_neg.mean().detach(), "loss_cd": loss_cd.detach(),
                   "loss_opt": loss_opt.detach(), "loss_ent": loss_ent.detach(),
                   "fresh_frac": fresh.float().mean(), "chain_grad_norm": diag.grad_norm.mean()}
        # 1-based iteration number: with grad_ratio_every a multiple of train.log_every, every
        # measurement falls on a logged step (the trainer logs the metrics of every log_every-th step)
        if cfg.grad_ratio_every and use_kl and (int(self.iteration) + 1) % cfg.grad_ratio_every == 0:
            metrics.update(self._grad_ratio(loss_cd, loss_kl))
        self.iteration += 1
        self.buffer.push(self._clip(x_neg))  # B ← B ∪ x̃ᴷ (Alg. 1)
        return LossOutput(loss_cd + loss_kl, metrics, x_neg)

    def _kl_terms(self, x_hat: Tensor, past: Tensor | None, cond: dict) -> tuple[Tensor, Tensor]:
        """(L_opt, L_ent), weighted; zeros for the terms switched off."""
        zero = torch.zeros((), device=x_hat.device)
        loss_opt = zero
        if self.cfg.kl:  # Eq. 7: θ frozen in E, gradient reaches θ only through x̂ (the last step)
            loss_opt = self.cfg.kl_weight * frozen_energy(self.energy, x_hat, **cond).mean()
        loss_ent = zero
        if self.cfg.entropy and past is not None:  # Eq. 8 against past samples X
            loss_ent = self.cfg.entropy_weight * nn_entropy_loss(x_hat, past)
        return loss_opt, loss_ent

    def _grad_ratio(self, loss_cd: Tensor, loss_kl: Tensor) -> dict[str, Tensor]:
        """Fig. 9: ‖∇θ L_KL‖ and ‖∇θ L_CD‖ (two extra backward passes, graphs retained)."""
        params = [p for p in self.energy.parameters() if p.requires_grad]
        norms = {}
        for key, loss in (("cd", loss_cd), ("kl", loss_kl)):
            if not loss.requires_grad:
                norms[key] = torch.zeros(())
                continue
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            norms[key] = torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)).detach()
        ratio = norms["kl"] / norms["cd"].clamp_min(1e-30)
        return {"grad_norm_cd": norms["cd"], "grad_norm_kl": norms["kl"], "grad_ratio_kl_cd": ratio}

    @property
    def n_steps_default(self) -> int:
        """sample_rounds x sample_steps, the steps of Alg. 2."""
        return self.cfg.sample_rounds * self.cfg.sample_steps

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, n_steps: int | None = None,
               x0: Tensor | None = None, cond: dict | None = None) -> SampleOutput:
        """Alg. 2 (samplers/augmented.py) from uniform noise (or ``x0``): rounds of (augmentation,
        ``sample_steps`` Langevin steps), ``n_steps`` steps in all. A conditional model draws uniform
        labels unless ``cond={"y": labels}``."""
        cond = dict(cond or {})
        if self.cfg.conditional and "y" not in cond:
            cond["y"] = torch.randint(self.num_classes, (n,), generator=generator, device=self.init_low.device)
        elif not self.cfg.conditional and cond:
            raise ValueError(f"this model is unconditional; it takes no cond, got {sorted(cond)}")
        x, info = self.generate(self.energy, self.start_points(n, x0, generator), n_steps=n_steps,
                                generator=generator, **cond)
        return SampleOutput(x, info.as_dict())

    def generate(self, energy, x0: Tensor, *, n_steps: int | None = None,
                 generator: torch.Generator | None = None, **cond):
        """Alg. 2 with this model's settings on any ``energy`` (also a composed one, Sec. 3.4)."""
        c = self.cfg
        return augmented_langevin(energy, x0, self.n_steps_default if n_steps is None else int(n_steps),
                                  c.sample_steps, c.step_size, c.noise_scale, augment=self.augment,
                                  clip=self._clip, generator=generator, **cond)


def _load_augment():
    try:
        from ebmlab.samplers.augment import augment
    except ImportError as exc:  # pragma: no cover - depends on the image stack being installed
        raise ConfigError("method.augment needs ebmlab.samplers.augment (the image stack); "
                          "set method.augment=false") from exc
    return augment


def _init_box(data) -> tuple[Tensor, Tensor]:
    """Uniform-noise box in model coordinates: [-1, 1] for images; data range ± 10 % for vectors."""
    if data.kind == "image":
        return torch.tensor(-1.0), torch.tensor(1.0)
    lo, hi = data.train.min(0).values, data.train.max(0).values  # (D,), (D,)
    pad = 0.1 * (hi - lo)
    return lo - pad, hi + pad


def build(cfg, data) -> ImprovedCD:
    """Build paper 001's objective (multi-scale energy and class conditioning as configured)."""
    m = cfg.method
    if data.kind != "image" and (m.augment or m.multiscale):
        raise ConfigError("method.augment and method.multiscale need image data; set them to false for "
                          f"vector data ({data.name!r}), or start from --config paper001_toy")
    if m.conditional and not data.num_classes:
        raise ConfigError(f"method.conditional needs a labelled dataset; {data.name!r} has no labels")
    model_cfg = dataclasses.replace(cfg.model, name="multiscale") if m.multiscale else cfg.model
    extra = {"num_classes": data.num_classes} if m.conditional else {}
    energy = build_energy(model_cfg, data.shape, **extra)
    low, high = _init_box(data)
    return ImprovedCD(energy, m, data.shape, kind=data.kind, low=low, high=high,
                      num_classes=data.num_classes if m.conditional else 0)

