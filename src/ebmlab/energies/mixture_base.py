"""A Gaussian-mixture base measure for the MLP energy (``model.base: gmm``; not from the papers: issue 18).

``MLPEnergy`` with a base B becomes E(x) = B(x) + net(x), an exponential tilt p(x) ∝ q(x) exp(-net(x)) of
the base density q = exp(-B). ``model.base_std`` makes q the Gaussian N(0, s² I) (``energies/mlp.py``); this
module makes q a fitted mixture of K Gaussians,

    B(x) = -log sum_k pi_k N(x; mu_k, Sigma_k),     Sigma_k^-1 = U_k U_k^T  (U_k: precision Cholesky factor),

so that the untrained model (the network's output layer starts at zero) *is* the mixture: on a small table
the result can start from the classical density estimator a user would otherwise fit (the leaderboard's GMM
baseline, ``metrics/baselines.fit_gmm``: EM, Dempster, Laird & Rubin 1977; components and covariance type by
validation log-likelihood) and a trained tilt must beat it on the validation rows to replace it
(``training/selection.py``). The mixture's parameters are buffers (in the checkpoint, never trained); their
number of components is known only after the fit, so a module built empty (K = 0, for loading) takes the
sizes of the state dict it loads.

``energy_and_grad`` is closed form: with responsibilities r_k(x) = softmax_k(log pi_k + log N_k(x)),
dB/dx = sum_k r_k Sigma_k^-1 (x - mu_k). ``sample`` draws exactly: a component by its weight, then
mu_k + A_k z with A_k = U_k^-T (A_k A_k^T = Sigma_k). Annealed importance sampling starts from these draws
and anneals from q to the model (``samplers/ais.py``, ``base=``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class _ClosedForm(torch.autograd.Function):
    """B(x) with its gradient from ``energy_and_grad`` (the buffers are constants: no weight gradient). A backward
    that builds a graph (``create_graph``) recomputes the closed form with differentiable ops, so second
    derivatives stay right."""

    @staticmethod
    def forward(ctx, x: Tensor, base: GaussianMixtureBase) -> Tensor:
        e, g = base.energy_and_grad(x.detach())
        ctx.save_for_backward(x, g)
        ctx.base = base
        return e

    @staticmethod
    def backward(ctx, grad_e: Tensor):
        x, g = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the gradient as a differentiable function of x
            g = ctx.base.energy_and_grad(x)[1]
        return grad_e.view(-1, *([1] * (g.dim() - 1))) * g, None


class GaussianMixtureBase(nn.Module):
    """-log q(x) of a Gaussian mixture over flattened (B, D) points; ``fit_from_sklearn`` sets it from a fitted
    ``sklearn.mixture.GaussianMixture`` (any covariance type)."""

    def __init__(self, dim: int, components: int = 0):
        super().__init__()
        self.dim = dim
        self.register_buffer("log_weights", torch.zeros(components))            # (K,) log pi_k
        self.register_buffer("means", torch.zeros(components, dim))              # (K, D)
        self.register_buffer("prec_chol", torch.zeros(components, dim, dim))     # (K, D, D) U_k, Sigma^-1 = U U^T
        self.register_buffer("cov_factor", torch.zeros(components, dim, dim))    # (K, D, D) A_k = U_k^-T
        self.register_buffer("log_norm", torch.zeros(components))                # (K,) log|U_k| - D/2 log 2 pi
        # derived from the above (not stored; ``_refresh`` after every change): the per-call work is a few ops
        self.register_buffer("u_cat", torch.zeros(dim, components * dim), persistent=False)  # (D, K D) [U_1..U_K]
        self.register_buffer("mu_u", torch.zeros(components, dim), persistent=False)         # (K, D) mu_k U_k
        self.register_buffer("const", torch.zeros(components), persistent=False)             # (K,) log pi_k + log_norm

    @property
    def components(self) -> int:
        """K, the number of mixture components (0 before a fit or a load)."""
        return self.log_weights.shape[0]

    @torch.no_grad()
    def fit_from_sklearn(self, gmm) -> GaussianMixtureBase:
        """Copy a fitted ``GaussianMixture``'s weights, means and precision Cholesky factors (float64 -> the
        buffers' dtype); returns self."""
        k, d = gmm.means_.shape
        if d != self.dim:
            raise ValueError(f"the mixture was fitted on {d} columns, the energy takes {self.dim}")
        u = torch.as_tensor(gmm.precisions_cholesky_, dtype=torch.float64)
        if gmm.covariance_type == "diag":
            u = torch.diag_embed(u)                                   # (K, D) -> (K, D, D)
        elif gmm.covariance_type == "spherical":
            u = u.view(k, 1, 1) * torch.eye(d, dtype=torch.float64)
        elif gmm.covariance_type == "tied":
            u = u.expand(k, d, d)
        a = torch.linalg.inv(u).transpose(1, 2)                       # (K, D, D) U^-T
        log_norm = torch.linalg.diagonal(u).abs().log().sum(1) - 0.5 * d * math.log(2 * math.pi)
        values = {"log_weights": torch.as_tensor(gmm.weights_, dtype=torch.float64).log(),
                  "means": torch.as_tensor(gmm.means_, dtype=torch.float64), "prec_chol": u, "cov_factor": a,
                  "log_norm": log_norm}
        for name, value in values.items():
            setattr(self, name, value.to(device=self.means.device, dtype=self.means.dtype).contiguous().clone())
        return self._refresh()

    @torch.no_grad()
    def _refresh(self) -> GaussianMixtureBase:
        """Recompute the derived buffers from the stored ones; returns self."""
        k, d = self.means.shape
        self.u_cat = self.prec_chol.permute(1, 0, 2).reshape(d, k * d).contiguous()
        self.mu_u = torch.einsum("kd,kde->ke", self.means, self.prec_chol)
        self.const = self.log_weights + self.log_norm
        return self

    @torch.no_grad()
    def standard_normal(self) -> GaussianMixtureBase:
        """Set the mixture to N(0, I), one component (the whitened rows' Gaussian); returns self."""
        d, like = self.dim, self.means
        eye = torch.eye(d, dtype=like.dtype, device=like.device)[None]
        self.log_weights, self.means = like.new_zeros(1), like.new_zeros(1, d)
        self.prec_chol, self.cov_factor = eye.clone(), eye.clone()
        self.log_norm = like.new_full((1,), -0.5 * d * math.log(2 * math.pi))
        return self._refresh()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Take the stored mixture's size (K) before loading: a module built empty for a load has K = 0."""
        stored = state_dict.get(prefix + "log_weights")
        if stored is not None and stored.shape[0] != self.components:
            k = stored.shape[0]
            for name, shape in (("log_weights", (k,)), ("means", (k, self.dim)), ("prec_chol", (k, self.dim, self.dim)),
                                ("cov_factor", (k, self.dim, self.dim)), ("log_norm", (k,))):
                setattr(self, name, self.means.new_zeros(shape))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._refresh()

    def _log_joint(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, K) log pi_k + log N_k(x) and (B, K, D) y = (x - mu_k) U_k, for flattened ``x`` (B, D)."""
        if self.components == 0:
            raise RuntimeError("the mixture base measure has not been fitted (model.base gmm is fitted on the "
                               "training rows when the objective is built)")
        k, d = self.means.shape
        y = (x @ self.u_cat).view(-1, k, d) - self.mu_u                                # (B, K, D), one matmul
        return torch.add(self.const, y.pow(2).sum(2), alpha=-0.5), y

    def forward(self, x: Tensor) -> Tensor:
        """(B,) B(x) = -log q(x), normalised, of points ``x`` (B, ...) (flattened). With a gradient to ``x`` the
        closed-form dB/dx is what autograd gets (``_ClosedForm``: one pass instead of a graph of small ops)."""
        if torch.is_grad_enabled() and x.requires_grad:
            return _ClosedForm.apply(x, self)
        return -torch.logsumexp(self._log_joint(x.flatten(1))[0], 1)

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B,) B(x) and (B, ...) dB/dx = sum_k r_k U_k U_k^T (x - mu_k), in closed form (no autograd)."""
        log_joint, y = self._log_joint(x.flatten(1))
        r = torch.softmax(log_joint, 1)                                                  # (B, K) responsibilities
        grad = (r.unsqueeze(2) * y).flatten(1) @ self.u_cat.T                          # (B, D): sum_k r_k U_k y_k
        return -torch.logsumexp(log_joint, 1), grad.view_as(x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, D) exact draws: components by weight (multinomial), then mu_k + A_k z, z ~ N(0, I)."""
        if self.components == 0:
            raise ValueError("the Gaussian-mixture base measure has no components yet: fit it on the training rows "
                             "(fit_from_sklearn) or load a checkpoint that holds it")
        comp = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, self.dim, generator=generator, device=self.means.device, dtype=self.means.dtype)
        return self.means[comp] + torch.einsum("nde,ne->nd", self.cov_factor[comp], z)
