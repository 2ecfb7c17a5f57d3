"""Paper 000 (Thinking Fourth Dimensionally), Sec. 3.2, Eq. 3-5, Fig. 3: the joint T-vector head.

A trunk maps z (B, ...) to features h (B, F); the head maps h to the vector of Eq. 3,

    f(z) = [log p(z, t=0), log p(z, t=1), ..., log p(z, t=T-1)]        (B, T)

through a cumulative-summation layer g(u)_i = sum_{j<=i} u_j placed before the output (Sec. 3.2,
after Rhodes et al. 2020: each increment u_t = log p(z, t) - log p(z, t-1) is a small log-ratio):

    u = [log p_n(z) + log p_t(0),  W h + b]    (B, 1) ++ (B, T-1)
    f = cumsum(u)                              (B, T)

so the t = 0 entry is fixed to the reference density, p(z | t=0) = p_n(z) (Sec. 3.2, after Eq. 3).

Choice (the paper writes "fix the first element ... to be log p_n(z)"): we fix it to
log p_n(z) + log p_t(0) = log p_n(z) - log T, the *joint* log-density at t = 0 for the uniform
p_t of Sec. 3.1, so that every entry of f is a joint log-density and Eq. 4 / Eq. 5 are exact. The
conditionals are then log p(z | t) = f_t + log T (``log_conditional``), whose t = 0 entry equals
log p_n(z) exactly. With the increments initialised at zero every conditional starts as p_n.

The reference is p_n = N(0, sigma_n^2 I): log p_n(z) = -|z|^2 / (2 sigma_n^2) - (D/2) log(2 pi sigma_n^2).

ebmlab energies are -log p (DESIGN.md): ``forward(z)`` returns the marginal energy
-log p(z) = -logsumexp_t f_t(z) (Eq. 4); ``forward(z, t=t)`` the conditional energy -log p(z | t);
``forward(z, log_weights=w)`` the energy of the re-weighted marginal of Alg. 4,
-log sum_t p(z, t) exp(w_t). ``log_t_given_z`` is Eq. 5 (log_softmax).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FeatureTrunk(nn.Module):
    """Adapter: the ``features`` method of an energy network (``MLPEnergy``, a ResNet) as a trunk."""

    def __init__(self, net: nn.Module):
        super().__init__()
        if not hasattr(net, "features"):
            raise TypeError(f"{type(net).__name__} has no .features(x) method to use as a trunk")
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        """(B, feat_dim) features of ``x``."""
        return self.net.features(x)  # (B, F)


def gaussian_log_density(z: Tensor, sigma: float) -> Tensor:
    """(B,) log N(z; 0, sigma^2 I) over all non-batch dimensions."""
    d = z[0].numel()
    sq = z.flatten(1).pow(2).sum(1)  # (B,)
    return -sq / (2 * sigma ** 2) - 0.5 * d * math.log(2 * math.pi * sigma ** 2)


class JointTimeEnergy(nn.Module):
    """Joint model of (z, t): trunk (B, ...) -> (B, F), head (B, F) -> (B, T) log p(z, t)."""

    def __init__(self, trunk: nn.Module, feat_dim: int, T: int, sigma_n: float, zero_increments: bool = True):
        super().__init__()
        if T < 2 or sigma_n <= 0:
            raise ValueError(f"JointTimeEnergy needs T >= 2 and sigma_n > 0, got T={T}, sigma_n={sigma_n}")
        self.trunk, self.T, self.sigma_n = trunk, T, float(sigma_n)
        self.increments = nn.Linear(feat_dim, T - 1)  # u_1..u_{T-1}: log-ratios between levels
        if zero_increments:  # start at f_t = log p_n + log p_t for every t (else nn.Linear's own initialisation)
            nn.init.zeros_(self.increments.weight)
            nn.init.zeros_(self.increments.bias)
        self.log_prior = -math.log(T)  # log p_t(t), uniform (Sec. 3.1)

    def reference_log_density(self, z: Tensor) -> Tensor:
        """(B,) log p_n(z): the Gaussian reference density N(0, sigma_n^2 I) that level 0 is fixed to."""
        return gaussian_log_density(z, self.sigma_n)  # (B,)

    def log_joint(self, z: Tensor) -> Tensor:
        """(B, T) f(z) of Eq. 3 with the cumulative-sum layer."""
        u0 = (self.reference_log_density(z) + self.log_prior).unsqueeze(1)  # (B, 1)
        u = torch.cat([u0, self.increments(self.trunk(z))], 1)  # (B, T)
        return torch.cumsum(u, dim=1)  # (B, T)

    def log_conditional(self, z: Tensor) -> Tensor:
        """(B, T) log p(z | t) = f_t - log p_t(t); column 0 is log p_n(z)."""
        return self.log_joint(z) - self.log_prior

    def log_marginal(self, z: Tensor) -> Tensor:
        """(B,) log p(z) = logsumexp_t f_t(z) (paper 000 Eq. 4)."""
        return torch.logsumexp(self.log_joint(z), 1)  # (B,) Eq. 4

    def log_t_given_z(self, z: Tensor) -> Tensor:
        """(B, T) log p(t | z) = log_softmax_t f_t(z) (paper 000 Eq. 5)."""
        return torch.log_softmax(self.log_joint(z), 1)  # (B, T) Eq. 5

    def forward(self, z: Tensor, t: Tensor | None = None, log_weights: Tensor | None = None) -> Tensor:
        """(B,) energy: marginal -log p(z); with ``t`` (B,) long, -log p(z | t); with
        ``log_weights`` (T,) or (B, T), -log sum_t p(z, t) exp(w_t) (Alg. 4)."""
        if t is not None and log_weights is not None:
            raise ValueError("pass either t or log_weights, not both")
        if t is not None:
            return -self.log_conditional(z).gather(1, t.view(-1, 1)).squeeze(1)
        f = self.log_joint(z)  # (B, T)
        if log_weights is not None:
            f = f + log_weights.to(f)
        return -torch.logsumexp(f, 1)


class AtLevel(nn.Module):
    """A ``JointTimeEnergy`` read at one level: (B,) -log p(z | t) for a fixed t (the data's, T-1, for
    ``ebmlab.load``'s ``run(x)``: the joint's default, the marginal over all levels, is not the data's energy).
    ``t`` or ``log_weights`` given to the call still reach the joint energy."""

    def __init__(self, joint: JointTimeEnergy, t: int):
        super().__init__()
        self.joint, self.t = joint, int(t)

    def forward(self, z: Tensor, t: Tensor | None = None, log_weights: Tensor | None = None) -> Tensor:
        """(B,) -log p(z | t) at the fixed level, unless ``t`` or ``log_weights`` is given."""
        if t is None and log_weights is None:
            t = torch.full((z.shape[0],), self.t, dtype=torch.long, device=z.device)  # (B,)
        return self.joint(z, t=t, log_weights=log_weights)


def joint_energy_on(net: nn.Module, shape: tuple[int, ...], T: int, sigma_n: float,
                    zero_increments: bool = True) -> JointTimeEnergy:
    """The T-vector head on ``net``'s ``features`` (``mlp``; the image ``resnet``) as the trunk.
    ``energies/build.build_joint_energy`` builds ``net`` from a ``ModelConfig`` and calls this."""
    trunk = FeatureTrunk(net)
    with torch.no_grad():
        feat_dim = trunk(torch.zeros(1, *shape)).shape[1]
    if hasattr(net, "out"):  # the scalar output layer is not used by the head; drop its parameters
        net.out = nn.Identity()
    return JointTimeEnergy(trunk, feat_dim, T, sigma_n, zero_increments)
