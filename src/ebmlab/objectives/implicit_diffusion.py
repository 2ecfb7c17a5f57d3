"""Diffusion process with implicit latents via energy models (paper 002), method ``implicit_diffusion``.

A time-conditioned energy f(x, t), t in 1..T (Sec. 4.1, Eq. 8), defines a backward process of
Langevin steps (Eq. 9 / Eq. 17) from N(0, I) at t = T down to t = 1, K steps per time, T x K steps in
all (Tables 4-5: best near T x K = 60). Training (Alg. 1, Sec. 4.3-4.5):

1. draw a batch of (x-, t) from the ``TimeCyclicBuffer`` (10,000 slots, x ~ N(0, I), t ~ U{1..T});
2. K Langevin steps at each element's own t: x <- x - eta/2 dE/dx(x, t) + sigma_s z (Alg. 1 line 333);
3. loss  E(x+, t) - E(x-, t) + lambda * WGAN-LP  (Eq. 16 + Eq. 19, lambda = 200), the penalty taken
   on x^ = a x- + (1 - a) x+, a ~ U(0, 1) per example, at the same t;
4. t := t - 1; elements reaching t = 0 are refreshed with N(0, I) at t = T (Sec. 4.4).

Sign convention (the border to ebmlab's "energy, lower = more probable"). The paper uses two
conventions for f: Sec. 3.2 and Alg. 1 line 337 treat f as *high on data* (the minimised loss is
f(x-) - f(x+)), while Eq. 5 / Eq. 8 put f into the Boltzmann density as exp(-f), Eq. 16's gradient
E_q[df] - E_p[df] is *descended* (f lowered on data) and Eq. 17 / Alg. 1 line 333 move samples
*down* f. Only the second reading makes the sampler move towards the data, so ebmlab's energy is
E(x, t) = f(x, t) of Eqs. 8, 16, 17 (= -f of Sec. 3.2 / Alg. 1 line 337): the loss is
E(x+, t) - E(x-, t) (Alg. 1's f(x-) - f(x+) with f = -E); the gradient penalty only sees ||dE/dx||,
which is the same under either sign.

Choices where the paper is ambiguous (tested in tests/unit/test_implicit_diffusion.py):

- Positive pairs. Eq. 10 assumes the desired q(x_t) equals the data distribution q(x_0) at every t
  ("pushed toward q(x_0) for any t", Sec. 4.1), and Alg. 1 draws x+ ~ q with no time index. So each
  buffer element at time t is paired with a fresh data point evaluated at the *same* t: E(x+, t).
- Noise. Alg. 1 adds N(0, sigma^2 I) (sigma is a standard deviation, "starting noise 0.3" in
  Table 7), not sqrt(eta) as in Eq. 17. Sec. 5: sigma "is always linearly annealed to 0 during
  sampling". We anneal per Langevin step over the whole T x K sweep: step s = (T - t) K + k
  (k = 0..K-1) uses sigma_s = sigma (1 - s / (T K - 1)), so the first step at t = T has sigma and the
  last step at t = 1 has exactly 0 (``noise_schedule``). Training uses the same sigma_s for an element
  at time t as generation does, so the buffer reproduces the generative process.
- Step size. Eq. 17's drift is -eta/2 dE/dx with eta kept constant over t (Sec. 5); eta = 1.7
  (32x32) or 2.89 (64x64) in Table 7 for images in [-1, 1]. App. A.1's tuning rule (sample energy
  slightly below the real one at t = 1) is ``objectives/eta_tuning.py``.
- Vector networks honour ``model.fourier`` (random Fourier input features, as the plain mlp does): the
  8 Gaussians toy needs them to learn the 8-fold angular structure on every seed (docs/paper002.md).
- Generation with ``n_steps`` (CLI ``--steps``, the total): K' = ceil(n_steps / T) steps per time,
  with the noise schedule stretched over T x K'.
- The sweep is ``samplers/implicit_sweep.py`` (``run_chain`` with a per-step noise schedule and
  injected noises for Sec. 5.1's interpolation): K forward+backward passes per stage.

``energy`` is f(., t = 1) as a plain (B, ...) -> (B,) module (``energy(x, t=t)`` for other times).
``log_density(x)`` = -E(x, t = 1): the unnormalised Boltzmann density of Eq. 8 at the last time
step. It is the density the model assigns at t = 1, not the density of generated samples: those come
from the finite T x K-step process, which need not reach that Boltzmann distribution.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor

from ebmlab.errors import ConfigError
from ebmlab.buffers_time import TimeCyclicBuffer
from ebmlab.energies.base import energy_and_grad
from ebmlab.energies.build import MODELS, build_energy
from ebmlab.energies.embedding import TimeMLPEnergy
from ebmlab.energies.mlp import MLPEnergy
from ebmlab.objectives.base import LossOutput, Objective, SampleOutput, batch_data, per_level_steps
from ebmlab.samplers.base import flat_norm
from ebmlab.samplers.implicit_sweep import implicit_sweep, noise_schedule, sweep_stage


@dataclass
class ImplicitDiffusionConfig:
    """``method`` keys of paper 002 (T, K, eta, sigma, WGAN-LP weight, buffer)."""
    name: str = "implicit_diffusion"
    T: int = 20                 # time steps (Table 7: 20 at 32x32, 10 at 64x64)
    K: int = 3                  # Langevin steps per time step (Table 7: 3, 6 at 64x64)
    eta: float = 1.7            # Eq. 17 step size: drift -eta/2 dE/dx (Table 7: 1.7; 2.89 at 64x64)
    sigma: float = 0.3          # starting noise std, linearly annealed to 0 (Table 6, Alg. 1)
    lam: float = 200.0          # WGAN-LP weight (Sec. 5)
    buffer_size: int = 10000    # (x, t) buffer (Sec. 4.4, Sec. 5)
    init_std: float = 1.0       # std of the N(0, I) start at t = T (model coordinates)

    def validate(self):
        """Raise ``ConfigError`` (one sentence) for an out-of-range key."""
        if self.T < 1 or self.K < 1:
            raise ConfigError(f"method.T and method.K must be at least 1, got T={self.T}, K={self.K}")
        if self.eta <= 0 or self.init_std <= 0:
            raise ConfigError(f"method.eta and method.init_std must be positive, got {self.eta}, {self.init_std}")
        if self.sigma < 0 or self.lam < 0:
            raise ConfigError(f"method.sigma and method.lam must be non-negative, got {self.sigma}, {self.lam}")
        if self.buffer_size < 1:
            raise ConfigError(f"method.buffer_size must be positive, got {self.buffer_size}")


# ----- pure pieces (tested directly) ---------------------------------------------------------------
def wgan_lp(grad_norm: Tensor) -> Tensor:
    """Eq. 19: mean of max(0, ||grad|| - 1)^2 over the batch (zero for norms <= 1)."""
    return torch.clamp(grad_norm - 1.0, min=0.0).pow(2).mean()


def time_energy(cfg, shape: tuple[int, ...]):
    """f(x, t): the sinusoidally embedded MLP for vectors; a registered time-conditioned model else."""
    m = cfg.model
    if m.name == "mlp":
        if len(shape) != 1:
            raise ConfigError(f"model.name 'mlp' needs vector data, got shape {shape}; use a time-conditioned image "
                              "model: model.name unet or resnet")
        net = TimeMLPEnergy(shape[0], m.width, m.depth, m.activation, embed_dim=m.time_embed_dim)
        if m.fourier:
            # model.fourier / fourier_scale as for the plain mlp (energies/build.py): random Fourier input
            # features, concatenated before the time embedding. TimeMLPEnergy has no such argument, so its
            # trunk is rebuilt with them (same MLPEnergy, same forward). The 8 Gaussians toy needs them: the
            # 8-fold angular structure is too high a frequency for an MLP on raw (x1, x2) to learn in a
            # CPU-length run (docs/paper002.md, "Choices where the paper is ambiguous").
            net.net = MLPEnergy(shape[0], m.width, m.depth, m.activation, cond_dim=m.time_embed_dim,
                                fourier=m.fourier, fourier_scale=m.fourier_scale)
        return net
    if m.name not in MODELS:
        raise ConfigError(f"unknown model name {m.name!r}; available models are: {', '.join(sorted(MODELS))}")
    net = build_energy(m, shape, time_cond=True, n_times=cfg.method.T)
    # a builder that swallows unknown keywords would silently return an energy blind to t
    if "t" not in inspect.signature(net.forward).parameters and not getattr(net, "time_cond", False):
        raise ConfigError(f"model {m.name!r} is not time-conditioned (its forward takes no t); paper 002 "
                          "needs f(x, t): use model.name mlp for vectors or a time-conditioned image model")
    return net


# ----- the objective -------------------------------------------------------------------------------
class ImplicitDiffusion(Objective):
    """Paper 002's objective: the (x, t) buffer, Alg. 1's loss and the T x K sweep."""
    def __init__(self, energy: torch.nn.Module, cfg: ImplicitDiffusionConfig, shape: tuple[int, ...]):
        super().__init__()
        self.energy, self.cfg, self.shape = energy, cfg, tuple(shape)
        self.register_buffer("sched", noise_schedule(cfg.sigma, cfg.T, cfg.K))  # (T*K,)
        self.buffer = TimeCyclicBuffer(cfg.buffer_size, self.shape, cfg.T, self.prior)

    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, ...) N(0, init_std^2 I): p(x_T) of Eq. 1 / Sec. 4.1."""
        dev = self.sched.device
        return self.cfg.init_std * torch.randn((n, *self.shape), generator=generator, device=dev, dtype=self.sched.dtype)

    @property
    def energy_conditions(self) -> dict[str, tuple[int, int]]:
        """``t``: the time step of f(., t), 1..T (1, the data's, by default)."""
        return {**super().energy_conditions, "t": (1, self.cfg.T)}

    def log_density(self, x: Tensor) -> Tensor:
        """(B,) unnormalised log p_theta(x_1) = -E(x, t=1) (Eq. 8 at t = 1; see the module docstring)."""
        return -self.energy(x)

    def _sigmas(self, t: Tensor) -> Tensor:
        """(K, B) noise std of the K steps taken at times t (B,)."""
        K = self.cfg.K
        s = (self.cfg.T - t).view(1, -1) * K + torch.arange(K, device=t.device).view(-1, 1)  # (K, B)
        return self.sched[s]

    def forward(self, batch, *, generator: torch.Generator | None = None) -> LossOutput:
        """Alg. 1: K steps per buffer element at its t, E(x+, t) - E(x-, t) + lambda WGAN-LP, t -= 1."""
        x_pos = batch_data(batch)  # (B, ...) data, model coordinates
        n = x_pos.shape[0]
        x, t, idx = self.buffer.sample(n, generator)  # (B, ...), (B,), (B,)
        x_neg, chain = sweep_stage(self.energy, x, t, self.cfg.eta, self._sigmas(t), generator=generator,
                                   diagnostics="full")
        e_pos = self.energy(x_pos, t=t)  # (B,) x+ ~ q paired with the chain's t (Eq. 10)
        e_neg = self.energy(x_neg, t=t)  # (B,)
        a = torch.rand((n,) + (1,) * (x_pos.dim() - 1), generator=generator, device=x_pos.device)
        x_hat = a * x_neg + (1 - a) * x_pos  # interpolates of Eq. 18
        _, g_hat = energy_and_grad(self.energy, x_hat, create_graph=True, t=t)
        g_norm = flat_norm(g_hat)  # (B,)
        lp = wgan_lp(g_norm)
        # Alg. 1 line 337 with f = -E (module docstring): minimise E(x+) - E(x-) + lambda * LP
        loss = e_pos.mean() - e_neg.mean() + self.cfg.lam * lp
        self.buffer.update(x_neg, idx, generator)
        metrics = {"energy_gap": (e_pos.mean() - e_neg.mean()).detach(), "energy_pos": e_pos.mean().detach(),
                   "energy_neg": e_neg.mean().detach(), "wgan_lp": lp.detach(),
                   "grad_norm_hat": g_norm.mean().detach(), "grad_norm_chain": chain.grad_norm.mean()}
        # chains that just took the final stage: App. A.1 tunes eta on this gap. Logged every step (0
        # when no chain of the batch is at t = 1, see frac_t1) so that all ranks log the same keys.
        last = (t == 1).to(e_pos.dtype)  # (B,)
        metrics["frac_t1"] = last.mean().detach()
        metrics["energy_gap_t1"] = (((e_pos - e_neg) * last).sum() / last.sum().clamp_min(1.0)).detach()
        return LossOutput(loss, metrics, x_neg)

    @torch.no_grad()
    def generate(self, x0: Tensor, *, K: int | None = None, noises: Tensor | None = None,
                 generator: torch.Generator | None = None, keep_path: bool = False):
        """From x0 at t = T down to t = 1, K steps each (Sec. 4.1 / Fig. 1; samplers/implicit_sweep.py).

        noises (T*K, n, ...) optional per-step z (interpolation, Sec. 5.1). Returns x (n, ...), the
        path [x_T input, after t=T, ..., after t=1] as (T+1, n, ...) (or None), and the ChainInfo."""
        T, K = self.cfg.T, self.cfg.K if K is None else K
        sched = self.sched if K == self.cfg.K else noise_schedule(self.cfg.sigma, T, K).to(self.sched)
        x, path, info = implicit_sweep(self.energy, x0.to(self.sched.device), T, K, self.cfg.eta, sched,
                                       noises=noises, generator=generator, keep_path=keep_path)
        return x, (torch.stack(path) if keep_path else None), info

    @property
    def n_steps_default(self) -> int:
        """T x K, the steps of one generation sweep."""
        return self.cfg.T * self.cfg.K

    @property
    def sample_levels(self) -> int:
        """T, the times of the sweep."""
        return self.cfg.T

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, n_steps: int | None = None,
               x0: Tensor | None = None, cond: dict | None = None) -> SampleOutput:
        """Generation from N(0, I) (or ``x0``) at t = T: T x K' steps, K' = ceil(``n_steps`` / T)
        (default K); the noise schedule is stretched over T x K'."""
        K = per_level_steps(n_steps, self.cfg.K, self.cfg.T)
        x, _, info = self.generate(self.start_points(n, x0, generator), K=K, generator=generator)
        out = info.as_dict()
        out["noise_scale"] = (self.sched if K == self.cfg.K else noise_schedule(self.cfg.sigma, self.cfg.T, K)).cpu()
        return SampleOutput(x, out)


def build(cfg, data) -> ImplicitDiffusion:
    """Build paper 002's objective with a time-conditioned energy for ``data``."""
    if cfg.train.batch_size > cfg.method.buffer_size:
        raise ConfigError(f"train.batch_size ({cfg.train.batch_size}) must not exceed method.buffer_size "
                          f"({cfg.method.buffer_size}): a batch draws distinct buffer slots")
    return ImplicitDiffusion(time_energy(cfg, data.shape), cfg.method, data.shape)

