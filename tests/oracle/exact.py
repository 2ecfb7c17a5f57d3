"""Exact pieces for the oracle tests: a 2-D Gaussian mixture and the exact energies that each
paper's generation procedure needs for it (DESIGN.md, "Verified against known answers").

The target is p(x) = sum_k w_k N(x; m_k, s_k^2 I). Everything the procedures need is analytic:

- a noisy, scaled version a X + b N, N ~ N(0, I), is again a mixture, with means a m_k and variances
  a^2 s_k^2 + b^2 (``ExactMixture.log_prob_affine``, with a and b^2 per row);
- the posterior of Y = a X + b N given a Gaussian observation Y + sqrt(v) W is a mixture of
  Gaussians; its mean is ``posterior_mean`` (the exact initializer of paper 003), a draw of it
  ``posterior_sample``;
- E_X |X - p| and E |X - X'| are Rice means (``expected_distance_to``, ``expected_pair_distance``),
  which give the exact expected energy-distance floor of checks.py;
- the per-mode assignment is the component of highest responsibility (``assign``, ``mode_mass``).

Paper-specific exact energies (each documented where it is defined):

- ``MixtureEnergy``: E(x) = -log p(x) (papers 001, 004: the chains run on the mixture itself);
- ``SeriesEnergy``: paper 000's joint log p(z, t) of the linear series z = alpha_t x + beta_t n,
  n ~ N(0, sigma_n^2 I), with the interface of ``energies/time.JointTimeEnergy``;
- ``recovery_net_energy`` / ``recovery_init_mean`` / ``recovery_posterior_sampler``: paper 003's
  network energy s_t^2 (-log p(y_t)), the exact posterior mean E[y_t | x_{t+1}] and posterior draws;
- ``TimeSmoothedEnergy``: paper 002's time-conditioned energy E(x, t) = -c_t log (p * N(0, v_t I))(x).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LOG_2PI = math.log(2 * math.pi)


def _rows(v, x: Tensor) -> Tensor:
    """A number or a (B,) tensor -> (B, 1) in x's dtype and device."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v.expand(x.shape[0]).reshape(-1, 1) if v.dim() == 0 else v.to(x).reshape(-1, 1)


def rice_mean(nu: Tensor, sigma: Tensor) -> Tensor:
    """Mean of |Z| for Z ~ N(mu, sigma^2 I_2), |mu| = nu (the Rice distribution), float64:
    sigma sqrt(pi/2) L_{1/2}(-nu^2 / (2 sigma^2)), with L_{1/2}(-2u) = e^{-u} [(1 + 2u) I_0(u) + 2u I_1(u)]
    written with the exponentially scaled Bessel functions (stable for large u)."""
    from scipy.special import i0e, i1e

    u = (nu.double() ** 2 / (4 * sigma.double() ** 2)).numpy()
    lag = torch.from_numpy((1 + 2 * u) * i0e(u) + 2 * u * i1e(u))
    return sigma.double() * math.sqrt(math.pi / 2) * lag


class ExactMixture:
    """p(x) = sum_k w_k N(x; m_k, s_k^2 I) in D dimensions (float64 parameters)."""

    def __init__(self, weights, means, stds):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)   # (K,)
        self.means = torch.as_tensor(means, dtype=torch.float64)       # (K, D)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)         # (K,)
        k, self.dim = self.means.shape
        if self.weights.shape != (k,) or self.stds.shape != (k,):
            raise ValueError("weights (K,), means (K, D) and stds (K,) must agree on K")
        if (abs(float(self.weights.sum()) - 1.0) > 1e-9 or bool((self.weights <= 0).any())
                or bool((self.stds <= 0).any())):
            raise ValueError("weights must be positive and sum to 1; stds must be positive")

    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    # ----- sampling ------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, D) float32 draws: a component by its weight, then its Gaussian."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn((n, self.dim), generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k, None] * z).float()

    # ----- densities -----------------------------------------------------------------------------
    def component_log_prob_affine(self, x: Tensor, a=1.0, b2=0.0) -> Tensor:
        """(B, K) log w_k N(x; a m_k, (a^2 s_k^2 + b2) I): the components of the law of a X + sqrt(b2) N.
        ``a`` and ``b2`` are numbers or (B,) tensors (one per row, e.g. per level t)."""
        x2 = x.flatten(1)
        a, b2 = _rows(a, x2), _rows(b2, x2)                                    # (B, 1)
        mu = a[:, :, None] * self.means.to(x2)[None]                           # (B, K, D)
        var = a ** 2 * self.stds.to(x2)[None] ** 2 + b2                        # (B, K)
        sq = (x2[:, None, :] - mu).pow(2).sum(-1)                              # (B, K)
        return self.weights.log().to(x2)[None] - 0.5 * sq / var - 0.5 * self.dim * (LOG_2PI + var.log())

    def log_prob_affine(self, x: Tensor, a=1.0, b2=0.0) -> Tensor:
        """(B,) log density of a X + sqrt(b2) N at x (X ~ this mixture, N ~ N(0, I) independent)."""
        return torch.logsumexp(self.component_log_prob_affine(x, a, b2), 1)

    def log_prob(self, x: Tensor) -> Tensor:
        """(B,) exact log p(x)."""
        return self.log_prob_affine(x)

    def affine(self, a: float, b2: float = 0.0) -> ExactMixture:
        """The law of a X + sqrt(b2) N as an ExactMixture (a scalar a, b2)."""
        return ExactMixture(self.weights, a * self.means, (a ** 2 * self.stds ** 2 + b2).sqrt())

    def posterior_mean(self, x: Tensor, a=1.0, b2=0.0, v=1.0) -> Tensor:
        """(B, D) E[Y | Y + sqrt(v) W = x] for Y = a X + sqrt(b2) N (a, b2, v numbers or (B,)).

        Component k of Y is N(mu_k, V_k I), mu_k = a m_k, V_k = a^2 s_k^2 + b2; given the observation,
        it is Gaussian with mean mu_k + V_k / (V_k + v) (x - mu_k), and its posterior weight is
        r_k(x) ∝ w_k N(x; mu_k, (V_k + v) I)."""
        x2 = x.flatten(1)
        a_, b2_, v_ = _rows(a, x2), _rows(b2, x2), _rows(v, x2)               # (B, 1)
        log_r = torch.log_softmax(self.component_log_prob_affine(x2, a, b2_.squeeze(1) + v_.squeeze(1)), 1)
        mu = a_[:, :, None] * self.means.to(x2)[None]                          # (B, K, D)
        var = a_ ** 2 * self.stds.to(x2)[None] ** 2 + b2_                      # (B, K)
        gain = (var / (var + v_))[:, :, None]                                  # (B, K, 1)
        comp_mean = mu + gain * (x2[:, None, :] - mu)                          # (B, K, D)
        return (log_r.exp()[:, :, None] * comp_mean).sum(1).reshape(x.shape)

    def posterior_sample(self, x: Tensor, a=1.0, b2=0.0, v=1.0,
                         generator: torch.Generator | None = None) -> Tensor:
        """(B, D) a draw of Y | Y + sqrt(v) W = x (see ``posterior_mean``): a component by its posterior
        weight, then its Gaussian N(mu_k + V_k / (V_k + v) (x - mu_k), V_k v / (V_k + v) I)."""
        x2 = x.flatten(1).double()
        a_, b2_, v_ = _rows(a, x2), _rows(b2, x2), _rows(v, x2)               # (B, 1)
        probs = torch.softmax(self.component_log_prob_affine(x2, a_.squeeze(1), (b2_ + v_).squeeze(1)), 1)
        k = torch.multinomial(probs, 1, generator=generator).squeeze(1)       # (B,)
        mu = a_ * self.means[k]                                                # (B, D)
        var = a_ ** 2 * self.stds[k, None] ** 2 + b2_                          # (B, 1)
        mean = mu + var / (var + v_) * (x2 - mu)
        z = torch.randn(x2.shape, generator=generator, dtype=torch.float64)
        return (mean + (var * v_ / (var + v_)).sqrt() * z).to(x).reshape(x.shape)

    # ----- expected distances (the energy-distance floor, checks.py) -------------------------------
    def expected_distance_to(self, points: Tensor) -> Tensor:
        """(B,) float64 E_X |X - p| for each point p (2-D only). |X - p| for component k is Rice
        distributed (nu = |m_k - p|, sigma = s_k), with mean sigma sqrt(pi/2) L_{1/2}(-nu^2 / (2 sigma^2))."""
        p = points.double().flatten(1)
        nu = torch.cdist(p, self.means)                                        # (B, K)
        return (rice_mean(nu, self.stds[None].expand_as(nu)) * self.weights[None]).sum(1)

    def expected_pair_distance(self) -> float:
        """E |X - X'| for independent X, X' (2-D only): X - X' given components (k, l) is
        N(m_k - m_l, (s_k^2 + s_l^2) I), whose norm is Rice distributed."""
        nu = torch.cdist(self.means, self.means)                               # (K, K)
        sig = (self.stds[:, None] ** 2 + self.stds[None] ** 2).sqrt()
        return float((rice_mean(nu, sig) * self.weights[:, None] * self.weights[None]).sum())

    # ----- structure -----------------------------------------------------------------------------
    def responsibilities(self, x: Tensor) -> Tensor:
        """(B, K) p(k | x)."""
        return torch.softmax(self.component_log_prob_affine(x.double()), 1)

    def assign(self, x: Tensor) -> Tensor:
        """(B,) long: the component of highest responsibility."""
        return self.component_log_prob_affine(x.double()).argmax(1)

    def mode_mass(self, x: Tensor) -> Tensor:
        """(K,) float64 fraction of the points assigned to each component."""
        return torch.bincount(self.assign(x), minlength=self.n_components).double() / x.shape[0]

    def energy(self) -> MixtureEnergy:
        return MixtureEnergy(self)


def default_mixture() -> ExactMixture:
    """The oracle target: four isotropic Gaussians with unequal weights 0.4 / 0.3 / 0.2 / 0.1 on the
    corners of the square [-1, 1]^2, stds 0.40 / 0.35 / 0.45 / 0.30.

    Neighbouring modes are 2 apart, 4.4-6 stds of either: distinct modes (the density between two
    neighbours drops by ~2-4 nats, so an exact MCMC chain still crosses in a few hundred steps), and
    the highest-responsibility assignment of exact samples reproduces the weights to < 0.01
    (test_exact.py). The overall std is ~1 per coordinate, the scale ebmlab's standardised toys have.
    A chain that does not mix lands in the basins of its starting noise (~0.25 each): a mode-mass
    error of ~0.15, three times the tolerance."""
    return ExactMixture([0.4, 0.3, 0.2, 0.1], [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]],
                        [0.40, 0.35, 0.45, 0.30])


class MixtureEnergy(nn.Module):
    """E(x) = -log p(x) (B,) of an ``ExactMixture`` (no parameters; float32 in, float32 out)."""

    def __init__(self, mix: ExactMixture):
        super().__init__()
        self.mix = mix

    def forward(self, x: Tensor) -> Tensor:
        return -self.mix.log_prob(x)


# ===== paper 000: the linear series =================================================================
class _LogSumExpQuadratic(torch.autograd.Function):
    """lse(z) = logsumexp_j (phi(z) @ coef)_j with phi(z) = [1, z M^T, |z|^2] (B, K+2), and its
    gradient in z computed in the same pass (the (B, J) softmax is the costly part; autograd's
    logsumexp would evaluate it twice). Not twice differentiable (samplers need one gradient)."""

    @staticmethod
    def forward(ctx, z: Tensor, means: Tensor, coef: Tensor) -> Tensor:
        feats = torch.cat([torch.ones_like(z[:, :1]), z @ means.T, z.pow(2).sum(1, keepdim=True)], 1)
        logits = feats @ coef                                                  # (B, J)
        top = logits.amax(1, keepdim=True)                                     # (B, 1)
        e = logits.sub_(top).exp_()                                            # (B, J), in place
        total = e.sum(1, keepdim=True)                                         # (B, 1)
        dfeat = (e @ coef.T) / total                                           # (B, K+2) d lse / d phi
        ctx.save_for_backward(dfeat[:, 1:-1] @ means + 2 * dfeat[:, -1:] * z)  # (B, D) d lse / d z
        return (top + total.log()).squeeze(1)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (dz,) = ctx.saved_tensors
        return grad_out[:, None] * dz, None, None


class SeriesEnergy(nn.Module):
    """Exact joint model of (z, t) for paper 000's linear series (Sec. 3.1, Eq. 1):

        z = alpha_t x + beta_t n,  x ~ p,  n ~ N(0, sigma_n^2 I),  alpha_t = t / (T-1),  beta_t = 1 - alpha_t,
        t ~ p_t = Uniform{0..T-1},

    so p(z | t) is the mixture with means alpha_t m_k and variances alpha_t^2 s_k^2 + beta_t^2 sigma_n^2
    (t = 0: the reference N(0, sigma_n^2 I); t = T-1: p). Interface of ``energies/time.JointTimeEnergy``:
    ``log_joint`` (B, T) = log p(z, t), ``log_conditional``, ``log_marginal``, ``log_t_given_z``,
    ``reference_log_density``; ``forward(z)`` = -log p(z), ``forward(z, t=t)`` = -log p(z | t) (t (B,)
    long), ``forward(z, log_weights=w)`` = -log sum_t p(z, t) exp(w_t) (Alg. 4; w (T,) or (B, T), -inf
    entries drop levels).

    Speed: the T x K Gaussians of all levels are evaluated at once as a linear function of the
    features [1, z.m_1, ..., z.m_K, |z|^2] (one matrix product): log w_k N(z; a m_k, v I) =
    log w_k - (D/2) log(2 pi v) - a^2 |m_k|^2 / (2v) + (a / v) z.m_k - |z|^2 / (2v)."""

    def __init__(self, mix: ExactMixture, T: int, sigma_n: float):
        super().__init__()
        self.mix, self.T, self.sigma_n = mix, int(T), float(sigma_n)
        alpha = torch.arange(T, dtype=torch.float64) / (T - 1)                 # (T,) Eq. 1, linear
        beta = 1.0 - alpha
        self.register_buffer("alpha", alpha, persistent=False)
        self.register_buffer("beta", beta, persistent=False)
        self.log_prior = -math.log(T)
        K, D = mix.n_components, mix.dim
        a = alpha[:, None]                                                     # (T, 1)
        var = a ** 2 * mix.stds[None] ** 2 + (beta[:, None] * sigma_n) ** 2    # (T, K)
        coef = torch.zeros(K + 2, T, K, dtype=torch.float64)                   # features -> (T, K) log terms
        coef[0] = (mix.weights.log()[None] - 0.5 * D * (LOG_2PI + var.log())
                   - a ** 2 * mix.means.pow(2).sum(1)[None] / (2 * var) + self.log_prior)
        for k in range(K):
            coef[1 + k, :, k] = alpha / var[:, k]
        coef[K + 1] = -0.5 / var
        self.register_buffer("coef", coef.reshape(K + 2, T * K).float(), persistent=False)
        self.register_buffer("means", mix.means.float(), persistent=False)

    def reference_log_density(self, z: Tensor) -> Tensor:
        d = z[0].numel()
        var = self.sigma_n ** 2
        return -z.flatten(1).pow(2).sum(1) / (2 * var) - 0.5 * d * math.log(2 * math.pi * var)

    def log_conditional_at(self, z: Tensor, t: Tensor) -> Tensor:
        """(B,) log p(z | t) for t (B,) long: only the B levels asked for are evaluated."""
        a = self.alpha.to(z.device)[t].to(z.dtype)                             # (B,)
        b2 = (self.beta.to(z.device)[t] * self.sigma_n).pow(2).to(z.dtype)     # (B,)
        return self.mix.log_prob_affine(z, a, b2)

    def _terms(self, z: Tensor, cols: Tensor | None = None) -> Tensor:
        """(B, T', K) log p(z, t, k) for all levels (or the level indices ``cols``)."""
        z2 = z.flatten(1)
        feats = torch.cat([torch.ones_like(z2[:, :1]), z2 @ self.means.to(z2).T,
                           z2.pow(2).sum(1, keepdim=True)], 1)                 # (B, K+2)
        coef = self.coef.to(z2).view(-1, self.T, self.mix.n_components)       # (K+2, T, K)
        if cols is not None:
            coef = coef[:, cols]
        return (feats @ coef.flatten(1)).view(z2.shape[0], coef.shape[1], coef.shape[2])

    def log_joint(self, z: Tensor) -> Tensor:
        return torch.logsumexp(self._terms(z), 2)                              # (B, T) log p(z, t)

    def log_conditional(self, z: Tensor) -> Tensor:
        return self.log_joint(z) - self.log_prior                              # (B, T) log p(z | t)

    def log_marginal(self, z: Tensor) -> Tensor:
        return torch.logsumexp(self.log_joint(z), 1)                           # (B,)

    def log_t_given_z(self, z: Tensor) -> Tensor:
        return torch.log_softmax(self.log_joint(z), 1)                         # (B, T)

    def forward(self, z: Tensor, t: Tensor | None = None, log_weights: Tensor | None = None) -> Tensor:
        if t is not None and log_weights is not None:
            raise ValueError("pass either t or log_weights, not both")
        if t is not None:
            return -self.log_conditional_at(z, t)
        if log_weights is None:
            return -torch.logsumexp(self._terms(z).flatten(1), 1)
        w = log_weights.to(z.device, z.dtype)
        if w.dim() == 2:  # (B, T)
            return -torch.logsumexp((self._terms(z) + w[:, :, None]).flatten(1), 1)
        # (T,): only the levels with non-zero weight, the weights folded into the constant row
        cols = torch.isfinite(w).nonzero().squeeze(1)
        coef = self.coef.to(z).view(-1, self.T, self.mix.n_components)[:, cols].clone()  # (K+2, T', K)
        coef[0] += w[cols][:, None]
        return -_LogSumExpQuadratic.apply(z.flatten(1), self.means.to(z), coef.flatten(1))


# ===== paper 003: recovery likelihood ===============================================================
def recovery_net_energy(mix: ExactMixture, obj):
    """The exact network energy of ``objectives/recovery.RecoveryLikelihood`` ``obj``:

        E_net(y, t) = s_t^2 (-log p_{y_t}(y)),   y_t = alpha_{t+1} x_t,  x_t = abar_t x + sbar_t eps,

    so that E_net / s_t^2 is the exact level-t marginal energy (the module docstring of recovery.py:
    E_t(y) = E_net(y; lambda_t) / s_t^2). y_t = abar_{t+1} x + alpha_{t+1} sbar_t eps: the mixture
    with scale a = abar_{t+1} and extra variance b^2 = alpha_{t+1}^2 sbar_t^2. Schedules are read from
    ``obj``'s buffers (``abar``, ``sbar``, ``alpha``; ``obj.energy.step_sq`` for s_t^2)."""
    abar, sbar, alpha = obj.abar, obj.sbar, obj.alpha                          # (T+1,), (T+1,), (T,)
    step_sq = obj.energy.step_sq                                               # (T,)

    def net_energy(y: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        a, b2 = abar[t + 1], (alpha[t] * sbar[t]) ** 2                         # (B,), (B,)
        return step_sq[t].to(y) * -mix.log_prob_affine(y, a, b2)
    return net_energy


def recovery_init_mean(mix: ExactMixture, obj):
    """The exact initializer mean E[y_t | x_{t+1}] for ``obj``: x_{t+1} = y_t + sigma_{t+1} eps'
    (x_{t+1} = alpha_{t+1} x_t + sigma_{t+1} eps'), y_t as in ``recovery_net_energy``."""
    abar, sbar, alpha, sigma = obj.abar, obj.sbar, obj.alpha, obj.sigma

    def init_mean(x_next: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        return mix.posterior_mean(x_next, abar[t + 1], (alpha[t] * sbar[t]) ** 2, sigma[t] ** 2).to(x_next)
    return init_mean


def recovery_posterior_sampler(mix: ExactMixture, obj, generator: torch.Generator):
    """An initializer that returns a draw of the exact p(y_t | x_{t+1}) instead of its mean (use with
    ``obj.init_std`` zeroed, so that the proposal is the draw itself)."""
    abar, sbar, alpha, sigma = obj.abar, obj.sbar, obj.alpha, obj.sigma

    def init_sample(x_next: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        return mix.posterior_sample(x_next, abar[t + 1], (alpha[t] * sbar[t]) ** 2, sigma[t] ** 2, generator)
    return init_sample


# ===== paper 002: time-conditioned energies =========================================================
class TimeSmoothedEnergy(nn.Module):
    """E(x, t) = -c_t log p_t(x), p_t = p * N(0, v_t I), for t in 1..T (``t=None``: t = 1).

    ``var`` and ``scale`` are (T+1,) tensors indexed by t (entry 0 unused). With v_t = 0 every level
    is the target itself (paper 002's q(x_t) = q(x_0) for every t, Sec. 4.1 after Eq. 10)."""

    def __init__(self, mix: ExactMixture, var: Tensor, scale: Tensor):
        super().__init__()
        self.mix = mix
        self.register_buffer("var", torch.as_tensor(var, dtype=torch.float64), persistent=False)
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float64), persistent=False)

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        if t is None:
            t = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        v, c = self.var.to(x.device)[t].to(x.dtype), self.scale.to(x.device)[t].to(x.dtype)  # (B,)
        return -c * self.mix.log_prob_affine(x, 1.0, v)
