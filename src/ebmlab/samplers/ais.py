"""Annealed importance sampling (AIS) from N(0, s² I) (or a base measure) to p ∝ exp(-E/T), one MALA move per stage.

Neal (2001), "Annealed importance sampling" (Statistics and Computing 11), Sec. 2: intermediate
targets f_k(x) = exp(-beta_k E(x)/T - (1 - beta_k) |x|²/(2 s²)), 0 = beta_0 < beta_1 < ... < beta_K = 1;
x_0 ~ N(0, s² I); for k = 1..K the log weight gains log f_k(x_{k-1}) - log f_{k-1}(x_{k-1}) =
-(beta_k - beta_{k-1}) (E(x_{k-1})/T - |x_{k-1}|²/(2 s²)), then x_k is one MALA move that leaves
f_k invariant (``mala.log_accept_ratio`` on the stage's energy). Self-normalised weights
w_i / sum_j w_j make sum_i w_i h(x_i) a consistent estimate of E_p[h] however far the chains are from
mixing: chains that end in a mode too often carry proportionally less weight.

Why ebmlab has it (docs/paper004.md, "The default demo's ring masses"): short-run chains from noise end
in the mode whose basin they start in, so a contrastive loss on their samples cannot learn how mass is
split between separated modes (the 10-D rings' outer ring gets too much). With AIS weights on the
negative samples the noise-initialised term is an estimate of the maximum-likelihood gradient
(``method.noise_chain: ais`` in ``objectives/contrastive.py``). This is not part of paper 004.

``resample_below`` (None or 0: off) makes it a resample-move SMC sampler (Del Moral, Doucet & Jasra
2006, "Sequential Monte Carlo samplers", JRSS B 68, Sec. 3.3): after a stage's reweighting, if Kish's
ESS falls below ``resample_below`` x B the chains are resampled in proportion to their weights
(multinomial) and the weights reset to their mean, so that the MALA moves that follow spread the
surviving chains again instead of carrying weights that one chain dominates (high dimensions).

``base`` replaces the Gaussian reference by a base measure q = exp(-B) that the energy carries (a module
with ``energy_and_grad``: ``energies/mixture_base.py``): f_k(x) = exp(-beta_k E(x)/T - (1 - beta_k) B(x)),
x_0 ~ q drawn by the caller. For an energy E = B + net (a tilt of q) at T = 1 the stages are B + beta_k net:
an untrained tilt (net = 0) gives equal weights and exact draws of q.

One forward+backward per stage (E and dE/dx at the proposal; the stage energy and gradient are
formed from them in closed form), as for the plain chains. The step size is one number carried from
stage to stage and adapted by a ``StepSizeController`` (neighbouring targets are close, as in
``samplers/annealed.py``).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ebmlab.devices import to_float64
from ebmlab.energies.base import energy_and_grad
from ebmlab.samplers import mala
from ebmlab.samplers.base import (ChainInfo, ChainState, StepSizeController, check_finite_chain, check_positive,
                                  frozen_parameters, randn_like, rows)
from ebmlab.samplers.langevin import move
from ebmlab.samplers.progress import step_counter


class AISResult(NamedTuple):
    """Final points (B, ...), their log importance weights (B,) and the per-stage diagnostics."""
    x: Tensor
    log_weights: Tensor
    info: ChainInfo


def linear_betas(n_stages: int, device=None) -> Tensor:
    """(K,) beta_1..beta_K = k / K: the inverse temperatures of ``n_stages`` stages ending at 1."""
    if n_stages < 1:
        raise ValueError(f"AIS needs at least one stage, got {n_stages}")
    return torch.arange(1, n_stages + 1, device=device, dtype=torch.float32) / n_stages


def normalized_weights(log_weights: Tensor) -> Tensor:
    """(B,) self-normalised importance weights, summing to 1."""
    return torch.softmax(log_weights, 0)


def systematic_resample(weights: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """(n,) indices of n draws from the chains in proportion to ``weights`` (B,), normalised: systematic
    resampling (Kitagawa 1996; Douc, Cappé & Moulines 2005, "Comparison of resampling schemes for particle
    filtering", Sec. 2): one uniform U, positions (U + j)/n, j = 0..n-1, read off the weights' CDF. Chain i
    is drawn n w_i times in expectation, as with multinomial draws, but always floor or ceil of n w_i times:
    with equal weights and n = B every chain exactly once, where draws with replacement would keep only
    ~63 % of them (1 - 1/e) and repeat the rest, which biases any sample statistic built on distinct points
    (an energy distance's within-sample term sees the copies as zero distances)."""
    u0 = torch.rand(1, generator=generator, device=weights.device)  # drawn where the generator lives
    cdf = torch.cumsum(to_float64(weights), 0)  # float64: the positions of n = B equal weights fall on chain j
    cdf = cdf / cdf[-1]                         # (on the CPU for a device without float64: devices.py)
    u = (to_float64(u0) + torch.arange(n, device=cdf.device, dtype=torch.float64)) / n  # (n,) in [0, 1)
    return torch.searchsorted(cdf, u, right=True).clamp_(max=weights.shape[0] - 1).to(weights.device)


def resample_points(x: Tensor, log_weights: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Sampling-importance-resampling of AIS end points: as many points as chains, drawn from ``x`` (B, ...) in
    proportion to the weights of ``log_weights`` (B,) by ``systematic_resample`` (equal weights return every
    chain once), and the weights' ESS 1 / sum w² (1,). ``x`` may live on another device than the weights (a draw
    in batches gathers its chains on the CPU: ``training/drawing.py``)."""
    w = normalized_weights(log_weights)
    idx = systematic_resample(w, w.shape[0], generator)  # (B,) on the weights' device
    return x[idx.to(x.device)], (1.0 / w.pow(2).sum()).reshape(1)


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """Kish's ESS of the weights, 1 / sum w_i² (between 1 and B)."""
    w = normalized_weights(log_weights)
    return 1.0 / w.pow(2).sum()


def _below(log_weights: Tensor, ess_min: float) -> bool:
    """Whether Kish's ESS 1 / sum w_i² of the weights is below ``ess_min``, tested as sum w_i² > 1 / ess_min: two ops
    and one host read per stage (the softmax and a dot product), where ``effective_sample_size`` takes four
    (docs/performance.md). The sum is a dot product, so its last bit may differ from ``pow(2).sum()``'s: the test can
    come out otherwise only within a rounding of the bound."""
    w = normalized_weights(log_weights)
    return float(torch.dot(w, w)) > 1.0 / ess_min


def _quad(x: Tensor, inv_var: float) -> Tensor:
    """(B,) |x|² / (2 s²), the reference's energy."""
    return 0.5 * inv_var * rows(x).pow(2).sum(1)


class _Schedule(NamedTuple):
    """Per-stage scalars as Python numbers, each the float32 value of the 0-d tensor arithmetic it stands
    for (so every (B, ...) op computes the same bits as with the tensors, with no per-stage scalar op)."""
    beta: list[float]       # beta_k
    rest: list[float]       # 1 - beta_k
    rest_iv: list[float]    # (1 - beta_k) * inv_var
    dbeta: list[float]      # beta_k - beta_{k-1}


def _schedule(betas: Tensor, inv_var: float) -> _Schedule:
    b = betas.detach().float().cpu()
    prev = torch.cat([b.new_zeros(1), b[:-1]])
    return _Schedule(b.tolist(), (1 - b).tolist(), ((1 - b) * inv_var).tolist(), (b - prev).tolist())


def _reference(x: Tensor, inv_var: float, base) -> tuple[Tensor, Tensor]:
    """The reference's energy (B,) at ``x`` and the tensor its gradient is ``inv_var`` times: |x|²/(2 s²) and
    ``x`` itself for the Gaussian (the 1/s² sits in the schedule), or B(x) and dB/dx of a ``base`` (inv_var 1)."""
    if base is None:
        return _quad(x, inv_var), x
    return base.energy_and_grad(x)


def _stage(e: Tensor, g: Tensor, qg: Tensor, quad: Tensor, beta: float, rest: float, rest_iv: float,
           temperature: float) -> tuple[Tensor, Tensor]:
    """The stage energy -log f_beta(x) = beta E/T + (1 - beta) |x|²/(2 s²) (or + (1 - beta) B(x) from a base)
    (B,) and its gradient (B, ...)
    from E(x), dE/dx, the reference's energy ``quad`` and gradient direction ``qg`` (``_reference``);
    ``rest`` = 1 - beta, ``rest_iv`` = (1 - beta) / s², each one number (``_schedule``). Dividing by T = 1 is
    skipped (exact)."""
    if temperature != 1.0:
        e, g = beta * e / temperature, beta * g / temperature
    else:
        e, g = beta * e, beta * g
    return e + rest * quad, g + rest_iv * qg


def _check_ais_args(betas: Tensor, controller, init_std: float, temperature: float) -> None:
    """One sentence for what would anneal to another target, or fail inside the loop (the betas' values are read
    where they live on the CPU: a device's would cost a host sync per chain, which the training chains never make)."""
    b = torch.as_tensor(betas)
    bad = b.dim() != 1 or b.numel() == 0
    if not bad and b.device.type == "cpu":
        b = b.detach().double()
        bad = not bool((b > 0).all() and (b[1:] >= b[:-1]).all()) or float(b[-1]) != 1.0
    if bad:
        raise ValueError("betas must be a non-empty increasing (K,) tensor in (0, 1] ending at 1 (linear_betas(K)), "
                         f"got {b.tolist()[:6]}{' ...' if b.numel() > 6 else ''}")
    if controller is None:
        raise ValueError("ais needs a step-size controller (samplers.controller.StepSizeController): it sets each "
                         "stage's MALA step")
    check_positive("init_std", init_std)
    check_positive("temperature", temperature)


@torch.no_grad()
def ais(energy, x0: Tensor, betas: Tensor, controller: StepSizeController, *, init_std: float = 1.0,
        temperature: float = 1.0, generator: torch.Generator | None = None, check_finite: bool = True,
        resample_below: float | None = None, base=None) -> AISResult:
    """Anneal ``x0`` (B, ...) ~ N(0, init_std² I) (or ~ ``base``, whose -log density then replaces the
    Gaussian's: module docstring) to exp(-E/T) along ``betas`` (K,) (increasing, ending at 1;
    ``linear_betas``) with one MALA move per stage, the step size from ``controller`` (adapted in place after
    every stage). ``resample_below``: resample when the ESS falls below this fraction of the chains (module
    docstring; one host read of the ESS per stage; None or 0: never). Returns the points, log weights and a
    ``ChainInfo`` with one entry per stage."""
    if resample_below is not None and not 0.0 <= resample_below <= 1.0:
        raise ValueError(f"resample_below must lie in [0, 1] (0: never), got {resample_below}")
    _check_ais_args(betas, controller, init_std, temperature)
    resample = bool(resample_below)  # None and 0: plain AIS (no ESS is computed)
    inv_var = 1.0 / init_std ** 2 if base is None else 1.0
    sched = _schedule(betas, inv_var)
    groups = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
    shape = (x0.shape[0],) + (1,) * (x0.dim() - 1)
    accepts, steps, energies = [], [], []
    with frozen_parameters(energy):
        x = x0.detach()
        e, g = energy_and_grad(energy, x)          # raw E and dE/dx at the current points
        quad, qg = _reference(x, inv_var, base)    # the reference's energy and gradient direction
        log_w, tick = torch.zeros_like(e), step_counter()
        for k in range(len(sched.beta)):
            log_w = log_w - sched.dbeta[k] * ((e / temperature if temperature != 1.0 else e) - quad)  # f_k / f_{k-1}
            if resample and _below(log_w, resample_below * x.shape[0]):
                if base is None:  # the Gaussian's gradient direction is x itself
                    x, e, g, quad, log_w = _resample(log_w, generator, x, e, g, quad)
                    qg = x
                else:
                    x, e, g, quad, qg, log_w = _resample(log_w, generator, x, e, g, quad, qg)
            energies.append(e)                                                # E before the move
            # the stage target exp(-stage energy) has its temperature inside: noise sqrt(2 eps)
            eps = controller.per_chain_step(groups, shape).to(x.dtype)        # (B, 1, ...)
            x, e, g, quad, qg, accept = _mala_move(energy, (x, e, g, quad, qg), sched, k, eps,
                                                   torch.sqrt(eps * 2.0), temperature, inv_var, base, generator)
            controller.update(accept, groups)
            accepts.append(accept)
            steps.append(eps)
            if tick is not None:
                tick()
    if check_finite:
        check_finite_chain(ChainState(x, e, g))
    return AISResult(x, log_w, _info(accepts, steps, energies))


def _info(accepts: list[Tensor], steps: list[Tensor], energies: list[Tensor]) -> ChainInfo:
    """The per-stage diagnostics, reduced once after the chain, each as one stacked reduction (a few ops per chain,
    where a reduction per stage cost ~120 per default update): mean acceptance, step size and energy (K,)."""
    if not accepts:
        return ChainInfo.empty()
    acc = torch.stack(accepts).mean(1, dtype=torch.float32).cpu()  # (K, B) bool -> (K,)
    eps = torch.stack(steps).flatten(1)[:, 0].cpu()  # (K, B, 1, ...): one step for every chain -> (K,)
    energy = torch.stack(energies).mean(1).cpu()  # (K, B) -> (K,)
    return ChainInfo(acc, eps, energy, torch.full((len(accepts),), float("nan")))


def _resample(log_w: Tensor, generator, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Multinomial resampling of the chains' (B, ...) ``tensors`` in proportion to exp(``log_w``) (B,);
    returns them and the new log weights, all equal to the old mean weight (the estimate of the
    normalising constant is kept)."""
    b = log_w.shape[0]
    idx = torch.multinomial(normalized_weights(log_w), b, replacement=True, generator=generator)
    mean = torch.logsumexp(log_w, 0) - math.log(b)
    return (*(t[idx] for t in tensors), mean.expand(b).clone())


def _mala_move(energy, state, sched: _Schedule, k: int, eps, sigma, temperature, inv_var, base, generator):
    """One MALA move on stage k's target f_beta from ``state`` = (x, E, dE/dx, quad, qg) (the last two:
    ``_reference(x)``), with step ``eps`` and noise ``sigma`` (B, 1, ...); returns the new state and the (B,)
    bool acceptance."""
    x, e, g, quad, qg = state
    beta, rest, rest_iv = sched.beta[k], sched.rest[k], sched.rest_iv[k]
    e_s, g_s = _stage(e, g, qg, quad, beta, rest, rest_iv, temperature)
    z = randn_like(x, generator)
    x_prop = move(x, g_s, eps, sigma, z)
    e_p, g_p = energy_and_grad(energy, x_prop)
    quad_p, qg_p = _reference(x_prop, inv_var, base)
    e_ps, g_ps = _stage(e_p, g_p, qg_p, quad_p, beta, rest, rest_iv, temperature)
    log_a = mala.log_accept_ratio(ChainState(x, e_s, g_s), ChainState(x_prop, e_ps, g_ps), eps, sigma, 1.0, z)
    u = torch.empty_like(log_a).uniform_(generator=generator)  # (B,) torch.rand's numbers
    accept = u.log_() < log_a                           # (B,) bool; NaN ratios are rejected
    keep = accept.view(-1, *([1] * (x.dim() - 1)))
    x_new = torch.where(keep, x_prop, x)
    qg_new = x_new if base is None else torch.where(keep, qg_p, qg)
    return (x_new, torch.where(accept, e_p, e), torch.where(keep, g_p, g), torch.where(accept, quad_p, quad),
            qg_new, accept)
