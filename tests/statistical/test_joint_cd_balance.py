"""Statistical tests of paper 000's samplers on joint distributions known in closed form.

- The JointCD transition (Eq. 9, App. A: MALA on the marginal p(z), then t~ ~ p(t | z~)) keeps a
  known mixed joint p(z, t) invariant: start from exact draws of (z, t), take one transition, and the
  pairs must still follow p(z, t) (chi-square on t~, Kolmogorov-Smirnov on z~ given t~). A control
  that keeps the old t after moving z breaks the joint and must fail the same test (test power).
- Simulated annealing (Alg. 3) and soft annealing (Alg. 4) over an exact Gaussian series end on the
  data distribution.
Seeds are fixed (0..) and were not selected; thresholds are p-values, not tuned margins.
"""
import math

import torch
from scipy import stats

from ebmlab.objectives.joint_time import JointTime, JointTimeConfig, joint_transition
from ebmlab.samplers.annealed import simulated_annealing, soft_annealing
from ebmlab.schedules import interpolation_coefficients

LOG_2PI = math.log(2 * math.pi)


class AnalyticJoint(torch.nn.Module):
    """p(z, t) = p_t(t) N(z; mu_t, s_t^2 I) in D dimensions with the JointTimeEnergy interface."""

    def __init__(self, mu, s):
        super().__init__()
        self.mu, self.s = torch.as_tensor(mu, dtype=torch.float32), torch.as_tensor(s, dtype=torch.float32)
        self.T = len(self.mu)

    def log_conditional(self, z):  # (B, D) -> (B, T)
        d = z.shape[1]
        sq = (z[:, None, :] - self.mu[None, :, None]).pow(2).sum(2)  # (B, T)
        return -sq / (2 * self.s ** 2) - d * torch.log(self.s) - 0.5 * d * LOG_2PI

    def log_joint(self, z):
        return self.log_conditional(z) - math.log(self.T)

    def log_t_given_z(self, z):
        return torch.log_softmax(self.log_joint(z), 1)

    def forward(self, z, t=None, log_weights=None):
        if t is not None:
            return -self.log_conditional(z).gather(1, t[:, None]).squeeze(1)
        f = self.log_joint(z)
        return -torch.logsumexp(f if log_weights is None else f + log_weights, 1)


def _joint_draws(model, n, g):
    t = torch.randint(model.T, (n,), generator=g)
    return model.mu[t, None] + model.s[t, None] * torch.randn(n, 1, generator=g), t


def _joint_pvalues(model, z, t):
    """Chi-square p-value of t's counts vs uniform, and the smallest KS p-value of z | t."""
    counts = torch.bincount(t, minlength=model.T).numpy()
    p_t = stats.chisquare(counts).pvalue
    p_z = min(stats.kstest(z[t == k, 0].numpy(), "norm", args=(float(model.mu[k]), float(model.s[k]))).pvalue
              for k in range(model.T))
    return p_t, p_z


def test_joint_cd_transition_keeps_joint_invariant():
    g = torch.Generator().manual_seed(0)
    model = AnalyticJoint([-1.0, 0.5, 2.0], [0.6, 0.8, 0.5])
    z, t = _joint_draws(model, 20000, g)
    z_new, t_new, diag = joint_transition(model, z, 5, step_size=0.15, generator=g)
    moved = (z_new - z).abs().mean().item()
    assert moved > 0.3, f"the chain barely moved ({moved}); the test would have no power"
    assert (t_new != t).float().mean() > 0.3  # t~ is a fresh draw, not the old label
    p_t, p_z = _joint_pvalues(model, z_new, t_new)
    assert p_t > 1e-3 and p_z > 1e-3, (p_t, p_z)
    # Control: the same moved z with the *old* t is not distributed as p(z, t).
    _, p_bad = _joint_pvalues(model, z_new, t)
    assert p_bad < 1e-6, p_bad


def test_joint_cd_transition_is_stationary_over_many_steps():
    g = torch.Generator().manual_seed(1)
    model = AnalyticJoint([-1.0, 0.5, 2.0], [0.6, 0.8, 0.5])
    z, t = _joint_draws(model, 20000, g)
    for _ in range(4):
        z, t, _ = joint_transition(model, z, 3, step_size=0.15, generator=g)
    p_t, p_z = _joint_pvalues(model, z, t)
    assert p_t > 1e-3 and p_z > 1e-3, (p_t, p_z)


def _training_objective(model, marginal_step: str, init_step):
    """A JointTime objective at its training settings (target 0.6, adapt rate 0.05) on ``model``."""
    cfg = JointTimeConfig(name="joint_cd", T=model.T, marginal_step=marginal_step)
    obj = JointTime(torch.nn.Identity(), cfg, (1,))
    obj.energy = model
    obj.ctrl.log_step.copy_(torch.as_tensor(init_step).log().expand_as(obj.ctrl.log_step))
    return obj


def test_training_transition_keeps_joint_invariant_at_training_settings():
    """App. A at the settings training uses (``marginal_step: shared``, adapting controller, K = 3):
    the z-kernel does not depend on t, so p(z, t) stays invariant over repeated transitions."""
    g = torch.Generator().manual_seed(4)
    model = AnalyticJoint([-1.0, 0.5, 2.0], [0.6, 0.8, 0.5])
    obj = _training_objective(model, "shared", 0.15)
    z, t = _joint_draws(model, 20000, g)
    z0 = z.clone()
    for _ in range(4):
        z, t, _ = obj.transition(z, t, 3, g)
    assert (z - z0).abs().mean() > 0.3  # the chains moved: the test has power
    p_t, p_z = _joint_pvalues(model, z, t)
    assert p_t > 1e-3 and p_z > 1e-3, (p_t, p_z)


def test_per_level_marginal_step_breaks_invariance():
    """The paper's "step size per t" on the marginal chain (``marginal_step: per_level``), steps
    (0.6, 0.15, 0.002) by starting level: the kernel depends on t and p(z, t) is NOT kept (App. A).
    This is why ``shared`` is the default."""
    g = torch.Generator().manual_seed(5)
    model = AnalyticJoint([-1.0, 0.5, 2.0], [0.6, 0.8, 0.5])
    obj = _training_objective(model, "per_level", torch.tensor([0.6, 0.15, 0.002]))
    obj.ctrl.rate = 0.0  # hold the three steps fixed
    z, t = _joint_draws(model, 20000, g)
    for _ in range(4):
        z, t, _ = obj.transition(z, t, 3, g)
    _, p_z = _joint_pvalues(model, z, t)
    assert p_z < 1e-6, p_z


def _gaussian_series(T, m, s, sigma_n):
    """Exact series of Eq. 1 for x ~ N(m, s^2): v_t ~ N(alpha_t m, alpha_t^2 s^2 + beta_t^2 sigma_n^2)."""
    alpha, beta = interpolation_coefficients(T)
    return AnalyticJoint(alpha * m, (alpha ** 2 * s ** 2 + beta ** 2 * sigma_n ** 2).sqrt())


def _check_gaussian(x, m, s):
    n = x.shape[0]
    assert abs(x.mean().item() - m) < 4 * s / math.sqrt(n), x.mean()
    assert abs(x.std().item() / s - 1) < 4 / math.sqrt(2 * n), x.std()


def test_simulated_annealing_ends_on_data_distribution():
    g = torch.Generator().manual_seed(2)
    T, m, s, sig = 32, 1.5, 0.1, 0.3
    model = _gaussian_series(T, m, s, sig)
    x0 = sig * torch.randn(4000, 1, generator=g)
    x, diag = simulated_annealing(model, x0, list(range(T)), 5, init_step=0.01, generator=g, keep=(0, T - 1))
    _check_gaussian(x, m, s)
    assert set(diag["snapshots"]) == {0, T - 1} and diag["stage_accept_rate"].shape == (T,)
    assert bool((diag["stage_accept_rate"] > 0.2).all())  # the chains moved at every level
    assert abs(float(diag["accept_rate_last10"]) - 0.6) < 0.1  # each level's step fitted to its target


def test_soft_annealing_ends_on_data_distribution():
    g = torch.Generator().manual_seed(3)
    T, m, s, sig = 32, 1.5, 0.1, 0.3
    model = _gaussian_series(T, m, s, sig)
    x0 = sig * torch.randn(4000, 1, generator=g)
    x, diag = soft_annealing(model, x0, T, 40, 5, init_step=0.01, generator=g)
    _check_gaussian(x, m, s)
    assert diag["level"][0] == 0 and diag["level"][-1] == T - 1
