"""Paper 002 (diffusion with implicit latents): the T -> 1 sweep (``ImplicitDiffusion.sample``,
samplers/implicit_sweep.py): from N(0, I) at t = T, K steps x <- x - eta/2 dE/dx(x, t) + sigma_s z at
each t, sigma_s linearly annealed from sigma to 0 over the T K steps.

Which exact energies its time axis defines. Paper 002 asks every level to be the data: "the
desirable distribution q(x_t) at each time step t is the same as the observed data distribution"
(Sec. 4.1 after Eq. 10), p_theta(x_t) ∝ exp(-f(x_t, t)) (Eq. 8), and objectives/implicit_diffusion.py
trains E(x+, t) with data x+ at every t. So the exact energy is E(x, t) = -c_t log p(x) for every t
(``test_sweep_on_the_target_at_every_level``). c_t = sigma_bar_t^2 / eta, sigma_bar_t^2 the mean of
sigma_s^2 over the K steps of level t, makes each step's temperature sigma_s^2 / eta (drift -eta/2 dE/dx,
noise sigma_s) equal to 1 on average: the sweep is then unadjusted Langevin on p with step
h_s = sigma_bar_t^2 / 2 that shrinks to 0 (the samples freeze at the end instead of being pushed by
a drift without noise). As a second reading, the Gaussian-smoothed path p_t = p * N(0, v_t I) with
v_T = 1 released to 0 over the first half of the sweep (``test_sweep_on_a_smoothed_path``): the
levels keep the mode weights (a convolution does not move mass between components) and lower the
barriers early; the second half is the target itself.

Settings (fixed before looking at results) and why the procedure is then near-exact. eta = 1 (it
cancels: the drift is -sigma_bar_t^2 / 2 grad(-log p_t) whatever eta is). sigma = 0.2, T = 100, K = 30:
- mixing: the sweep's total Langevin time is sum h_s = T K sigma^2 / 6 = 20, ~5 of the ~3.9 time units
  in which exact Langevin on this mixture forgets its mode (measured, test_oracle_001.py), so the
  start's mode-mass error decays ~e^-4; the mode masses freeze when the remaining time falls under
  one time constant, where h ~ 0.17 sigma^2 = 0.007, a weight bias under 0.01;
- discretisation: the first steps (h = 0.02) inflate the narrowest mode's variance by ~11 %, but
  the within-mode shape keeps relaxing until h ~ 1e-3 (0.5 % bias) before it freezes;
- temperature within a level: with T = 100 levels, sigma_s^2 varies around sigma_bar_t^2 by
  +-1 / (T u) (u the remaining fraction of the sweep), +-5 % where the shapes freeze (u ~ 0.2).
"""
import torch

from ebmlab.objectives.implicit_diffusion import ImplicitDiffusion, ImplicitDiffusionConfig
from tests.oracle.checks import N_SAMPLES, assert_recovers
from tests.oracle.exact import TimeSmoothedEnergy

T, K, ETA, SIGMA = 100, 30, 1.0, 0.2


def stage_scales(T: int, K: int, eta: float, sigma: float) -> torch.Tensor:
    """(T+1,) c_t = sigma_bar_t^2 / eta, indexed by t = 1..T (entry 0 unused). Step s = (T - t) K + k
    of the sweep has noise std sigma (1 - s / (T K - 1)) (the documented schedule)."""
    n = T * K
    sig = sigma * (1.0 - torch.arange(n, dtype=torch.float64) / (n - 1))  # (T K,)
    c = torch.zeros(T + 1, dtype=torch.float64)
    for t in range(1, T + 1):
        s0 = (T - t) * K
        c[t] = sig[s0:s0 + K].pow(2).mean() / eta
    return c


def _sweep(mixture, var: torch.Tensor, seed: int):
    energy = TimeSmoothedEnergy(mixture, var, stage_scales(T, K, ETA, SIGMA))
    obj = ImplicitDiffusion(energy, ImplicitDiffusionConfig(T=T, K=K, eta=ETA, sigma=SIGMA), shape=(2,))
    return obj.sample(N_SAMPLES, generator=torch.Generator().manual_seed(seed))


def test_sweep_on_the_target_at_every_level(mixture, ref):
    out = _sweep(mixture, torch.zeros(T + 1), seed=20)
    assert_recovers(out.x, ref, "002 sweep, p_t = p")


def test_sweep_on_a_smoothed_path(mixture, ref):
    u = (torch.arange(T + 1, dtype=torch.float64) - 1) / (T - 1)  # t = 1 -> 0, t = T -> 1
    var = (2 * u - 1).clamp_min(0) ** 2                           # v_T = 1, 0 from the middle on
    out = _sweep(mixture, var, seed=21)
    assert_recovers(out.x, ref, "002 sweep, p_t = p * N(0, v_t I)")
