"""Schedules: functions of their arguments that return numbers or tensors (no state, no I/O; the samplers
of levels and noises draw from the ``generator`` they are given, or torch's global one).

Sections are owned by the paper that needs them; each keeps its own heading.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

# =================================================================================================
# Paper 000 (Thinking Fourth Dimensionally): the interpolation series, its sampling, the soft
# annealing weights and the chain-length schedule.
#
# Series (Sec. 3.1, Eq. 1): v_t = alpha_t x + beta_t n, t = 0..T-1, n ~ p_n = N(0, sigma_n^2 I),
# (alpha_0, beta_0) = (0, 1) and (alpha_{T-1}, beta_{T-1}) = (1, 0). The paper uses "the linear
# interpolation in (1)" (Sec. 4.2): alpha_t = t / (T-1), beta_t = 1 - alpha_t.
# =================================================================================================


def interpolation_coefficients(T: int, kind: str = "linear") -> tuple[Tensor, Tensor]:
    """(alpha (T,), beta (T,)) of Eq. 1, float32. ``kind``: ``linear`` (paper 000 Sec. 4.2)."""
    if T < 2:
        raise ValueError(f"the series needs at least 2 levels (reference and data), got T={T}")
    if kind != "linear":
        raise ValueError(f"unknown interpolation schedule {kind!r}; expected 'linear'")
    alpha = torch.arange(T, dtype=torch.float64) / (T - 1)  # (T,) 0 -> 1
    return alpha.float(), (1.0 - alpha).float()


def sample_series(x: Tensor, t: Tensor, alpha: Tensor, beta: Tensor, sigma_n: float,
                  generator: torch.Generator | None = None) -> Tensor:
    """z = alpha_t x + beta_t n with n ~ N(0, sigma_n^2 I) (Eq. 1-2): a draw of p(z | t).

    x (B, ...) data, t (B,) long levels -> z (B, ...)."""
    shape = (-1, *([1] * (x.dim() - 1)))
    a, b = alpha.to(x)[t].view(shape), beta.to(x)[t].view(shape)  # (B, 1, ...)
    n = sigma_n * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return a * x + b * n


def sample_levels(n: int, T: int, generator: torch.Generator | None = None, device=None) -> Tensor:
    """(n,) long, t ~ p_t = Uniform{0, ..., T-1} (Sec. 3.1)."""
    return torch.randint(T, (n,), generator=generator, device=device)


def soft_annealing_log_weights(n: int, n_total: int, T: int) -> Tensor:
    """(T,) log [p^(n)(t) / p_t(t)] of Alg. 4 for soft simulated annealing (Sec. 3.5).

    p^(n) = Uniform{t(n), ..., T-1} with t(n) = round(n (T-1) / (n_total-1)) growing linearly from 0
    to T-1; p_t = Uniform{0..T-1}. Levels below t(n) get -inf (zero weight)."""
    if n_total < 1 or not 0 <= n < n_total:
        raise ValueError(f"annealing stage n must lie in [0, {n_total}), got {n}")
    t_n = annealing_level(n, n_total, T)
    w = torch.full((T,), -math.inf)
    w[t_n:] = math.log(T) - math.log(T - t_n)  # (T,)
    return w


def annealing_level(n: int, n_total: int, T: int) -> int:
    """t(n): the linear map of stage n in [0, n_total) onto level {0..T-1} (Sec. 3.5)."""
    return 0 if n_total == 1 else int(round(n * (T - 1) / (n_total - 1)))


def chain_length(step: int, start: int = 5, end: int = 100, hold: int = 40000, ramp: int = 40000) -> int:
    """Number of MCMC steps K at training ``step`` (App. C.2): ``start`` for the first ``hold``
    steps, then a linear ramp to ``end`` over ``ramp`` steps, then ``end``. ``ramp = 0`` jumps."""
    if step < hold:
        return start
    if ramp <= 0 or step >= hold + ramp:
        return end
    return int(round(start + (end - start) * (step - hold) / ramp))


# =================================================================================================
# Paper 003 (Cooperative Diffusion Recovery Likelihood): variance-preserving diffusion levels.
#
# Levels t = 0..T with x_t = abar_t x + sbar_t eps, sbar_t = sqrt(1 - abar_t^2) (Sec. 3.1), logSNR
# lambda_t = log(abar_t^2 / sbar_t^2) (App. A.3). One step t -> t+1: x_{t+1} = alpha_{t+1} x_t +
# sigma_{t+1} eps with alpha_{t+1} = abar_{t+1} / abar_t and sigma_{t+1}^2 = 1 - alpha_{t+1}^2.
# - cosine logSNR (App. A.3, Eq. 19-20): lambda_t = -2 log tan(a t/T + b), lambda_0 = lambda_max,
#   lambda_T = lambda_min;
# - DRL's original "T6" schedule (Gao et al. 2021, public code): a 1000-step linear beta schedule
#   from 1e-4 to 0.02 read at fine steps i * (1000 // (2 (T-1))), i < T, and 999. Its end points are
#   logSNR 9.2 and -10.1; App. A.3 of paper 003 quotes 9.8 and -5.1 as "matching" them, which we
#   could not reproduce from DRL's description, so both schedules are kept as written.
# =================================================================================================


def cosine_logsnr(T: int = 6, lam_max: float = 9.8, lam_min: float = -5.1) -> Tensor:
    """(T+1,) float64 lambda_t = -2 log tan(a t/T + b), Eq. 19-20: lambda_0 = lam_max, lambda_T = lam_min."""
    if T < 1 or not lam_max > lam_min:
        raise ValueError(f"cosine logSNR needs T >= 1 and lam_max > lam_min, got T={T}, {lam_max}, {lam_min}")
    b = math.atan(math.exp(-0.5 * lam_max))               # Eq. 19
    a = math.atan(math.exp(-0.5 * lam_min)) - b           # Eq. 20
    u = torch.arange(T + 1, dtype=torch.float64) / T      # (T+1,) in [0, 1]
    return -2.0 * torch.log(torch.tan(a * u + b))


def drl_max_T(n_fine: int = 1000) -> int:
    """The most levels ``drl_logsnr`` can read from ``n_fine`` fine steps (its stride n_fine // (2 (T-1)) >= 1)."""
    return n_fine // 2 + 1


def drl_logsnr(T: int = 6, beta_start: float = 1e-4, beta_end: float = 0.02, n_fine: int = 1000) -> Tensor:
    """(T+1,) float64 logSNR of DRL's original schedule (see the section comment). Needs
    2 <= T <= n_fine // 2 + 1 (501 for the default 1000 fine steps): beyond that the read stride
    n_fine // (2 (T-1)) is 0 and the levels would repeat (not strictly decreasing)."""
    if not 2 <= T <= drl_max_T(n_fine):
        raise ValueError(f"DRL's schedule needs 2 <= T <= {drl_max_T(n_fine)} ({n_fine} fine steps read at "
                         f"stride n_fine // (2 (T-1))), got T={T}")
    betas = torch.linspace(beta_start, beta_end, n_fine, dtype=torch.float64)      # (n_fine,)
    abar2 = torch.cumprod(1.0 - betas, 0)                                           # (n_fine,)
    idx = torch.cat([torch.arange(T) * (n_fine // (2 * (T - 1))), torch.tensor([n_fine - 1])])
    a2 = abar2[idx]                                                                  # (T+1,)
    return torch.log(a2) - torch.log1p(-a2)


def vp_levels(lam: Tensor) -> dict[str, Tensor]:
    """Variance-preserving quantities of the levels with logSNR ``lam`` (T+1,), all float64:

    ``abar``, ``sbar`` (T+1,) with abar^2 = sigmoid(lam); ``alpha``, ``sigma`` (T,) where entry t is
    alpha_{t+1}, sigma_{t+1} of the step t -> t+1."""
    lam = lam.double()
    if lam.dim() != 1 or lam.numel() < 2 or not bool((lam[1:] < lam[:-1]).all()):
        raise ValueError("a noise schedule needs at least 2 levels with strictly decreasing logSNR")
    abar = torch.sigmoid(lam).sqrt()
    sbar = torch.sigmoid(-lam).sqrt()
    alpha = abar[1:] / abar[:-1]
    return {"lam": lam, "abar": abar, "sbar": sbar, "alpha": alpha, "sigma": (1.0 - alpha ** 2).sqrt()}


def recovery_step_sizes(levels: dict[str, Tensor], coef: float = 0.054, rule: str = "eq16") -> Tensor:
    """(T,) Langevin step sizes s_t. ``eq16``: s_t^2 = coef * sbar_t * sigma_{t+1}^2 (App. A.2, Eq. 16;
    Gao et al.'s DRL code has the same form, b^2 sbar_t / sbar_0 sigma_{t+1}^2). ``const``: s_t^2 =
    coef * sigma_{t+1}^2 at every level (the authors' toy_example.py: 2 * 1e-3 / sbar_0 = 0.27 for
    lambda_max = 9.8)."""
    if rule == "eq16":
        return (coef * levels["sbar"][:-1] * levels["sigma"] ** 2).sqrt()
    if rule == "const":
        return (coef * levels["sigma"] ** 2).sqrt()
    raise ValueError(f"unknown recovery step rule {rule!r}; expected 'eq16' or 'const'")


def initializer_std(levels: dict[str, Tensor]) -> Tensor:
    """(T,) sigma~_t of the initializer q(y_t | x_{t+1}) (Sec. 3.2, after Ho et al. 2020).

    The posterior std of y_t = alpha_{t+1} x_t given x_{t+1} and a fixed x_0:
    alpha_{t+1} sbar_t sigma_{t+1} / sbar_{t+1}. The paper writes sqrt((1-abar_t^2)/(1-abar_{t+1}^2))
    sigma_t; we read its sigma_t as the step noise sigma_{t+1} and include alpha_{t+1} because the
    target is y_t, not x_t."""
    return levels["alpha"] * levels["sbar"][:-1] * levels["sigma"] / levels["sbar"][1:]


def shared_noise_pair(x0: Tensor, t: Tensor, levels: dict[str, Tensor], shared: bool = True,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(y_t, x_{t+1}) for data x0 (B, ...) at levels t (B,) long (Alg. 1 and Eq. 9).

    ``shared``: one noise e gives x_t = abar_t x0 + sbar_t e and x_{t+1} = abar_{t+1} x0 + sbar_{t+1} e
    (Alg. 1's form; Eq. 9 as printed writes abar_{t+1} x'_t, which would not have the marginal of
    x_{t+1}). Otherwise x_t ~ N(abar_t x0, sbar_t^2) and x_{t+1} = alpha_{t+1} x_t + sigma_{t+1} eps'.
    y_t = alpha_{t+1} x_t in both cases."""
    shape = (-1, *([1] * (x0.dim() - 1)))
    def at(name, idx):  # (B, 1, ...) in x0's dtype
        return levels[name].to(x0)[idx].view(shape)
    e = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = at("abar", t) * x0 + at("sbar", t) * e
    if shared:
        x_next = at("abar", t + 1) * x0 + at("sbar", t + 1) * e
    else:
        e2 = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_next = at("alpha", t) * x_t + at("sigma", t) * e2
    return at("alpha", t) * x_t, x_next
