"""Every sampler and every paper's generation procedure through the same checks: it returns finite
points of the input's shape and one ``ChainInfo`` with an entry per step, the same seed gives the same
points, and zero steps return the start. Plus the features of the one chain loop (``run_chain``):
per-step noise schedules, injected noises, projection, gradient modes, callback, lazy final step."""
import pytest
import torch

from ebmlab.samplers import ChainInfo, langevin, mala, run_chain
from ebmlab.samplers.annealed import simulated_annealing, soft_annealing
from ebmlab.samplers.augmented import augmented_langevin
from ebmlab.samplers.implicit_sweep import implicit_sweep, noise_schedule
from ebmlab.samplers.recovery import RecoveryLevels, reverse_process, tweedie


def quad(x, **cond):  # (B, D) -> (B,): E = ||x||² / 2, a standard normal
    return 0.5 * x.flatten(1).pow(2).sum(1)


class LevelQuad(torch.nn.Module):
    """A toy series with the JointTimeEnergy calling convention: level t is N(0, (1 + t)^-1 I)."""

    def forward(self, x, t=None, log_weights=None):
        if t is None:
            return 0.5 * x.pow(2).sum(1) * (1.0 if log_weights is None else 2.0)
        return 0.5 * (1.0 + t.to(x)) * x.pow(2).sum(1)


def _levels(T=3):
    return RecoveryLevels(alpha=torch.full((T,), 0.99), sigma_sq=torch.full((T,), 0.1), step_sq=torch.full((T,), 0.01),
                          init_std=torch.full((T,), 0.05), abar0=torch.tensor(0.999), sbar0=torch.tensor(0.01),
                          n_steps=4)


def _procedures():
    """name -> fn(x0, n_steps, generator) -> (x, ChainInfo or info dict), each paper's procedure."""
    return {
        "langevin": lambda x, k, g: run_chain(langevin, quad, x, k, 0.01, generator=g),
        "mala": lambda x, k, g: run_chain(mala, quad, x, k, 0.1, generator=g),
        "annealed_000_alg3": lambda x, k, g: simulated_annealing(LevelQuad(), x, [0, 1, 2], k, init_step=0.1, generator=g),
        "annealed_000_alg4": lambda x, k, g: soft_annealing(LevelQuad(), x, 3, 3, k, init_step=0.1, generator=g),
        "augmented_001": lambda x, k, g: augmented_langevin(quad, x, 3 * k, 2, 0.01, 0.1, generator=g),
        "implicit_002": lambda x, k, g: implicit_sweep(lambda v, t: quad(v), x, 3, k, 0.2, noise_schedule(0.3, 3, k),
                                                        generator=g)[::2],
        "recovery_003": lambda x, k, g: reverse_process(lambda y, t: quad(y), lambda v, t: v, x, _levels(),
                                                         n_steps=k, generator=g)[::2],
    }


def _as_info(info) -> dict:
    return info.as_dict() if isinstance(info, ChainInfo) else info


@pytest.mark.parametrize("name", sorted(_procedures()))
def test_procedure_contract(name):
    fn = _procedures()[name]
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    x, info = fn(x0.clone(), 2, torch.Generator().manual_seed(1))
    info = _as_info(info)
    assert x.shape == x0.shape and torch.isfinite(x).all() and not x.requires_grad
    for key in ("accept_rate", "step_size", "energy"):
        assert info[key].dim() == 1 and info[key].numel() > 0 and torch.isfinite(info[key]).all(), key
    assert torch.isnan(info["grad_norm"]).all()  # light diagnostics by default: not measured
    assert len({info[k].numel() for k in ("accept_rate", "step_size", "energy", "grad_norm")}) == 1
    x2, _ = fn(x0.clone(), 2, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2)  # same seed, same points


@pytest.mark.parametrize("sampler", [langevin, mala])
def test_zero_steps_return_the_start(sampler):
    x0 = torch.randn(5, 3)
    x, info = run_chain(sampler, quad, x0, 0, 0.1)
    assert torch.equal(x, x0) and info.accept_rate.numel() == 0


def test_per_step_noise_schedule_and_injected_noises():
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(2))
    # zero noise at every step: plain gradient descent x <- (1 - eps) x
    x, _ = run_chain(langevin, quad, x0, 3, 0.1, noise_scale=torch.zeros(3))
    assert torch.allclose(x, x0 * 0.9 ** 3)
    # per-step and per-chain noise (K, B) with given draws: x <- 0.9 x + s_k z_k
    z = torch.randn(3, 6, 2, generator=torch.Generator().manual_seed(3))
    s = torch.rand(3, 6, generator=torch.Generator().manual_seed(4))
    x, _ = run_chain(langevin, quad, x0, 3, 0.1, noise_scale=s, noises=z)
    ref = x0
    for k in range(3):
        ref = 0.9 * ref + s[k, :, None] * z[k]
    assert torch.allclose(x, ref, atol=1e-6)
    with pytest.raises(ValueError, match="noises"):
        run_chain(langevin, quad, x0, 3, 0.1, noises=z[:2])


def test_projection_callback_and_lazy_final_step():
    calls, evals = [], []

    def counted(x):
        evals.append(1)
        return quad(x)

    project = lambda v: v.clamp(-0.1, 0.1)  # noqa: E731
    x, info = run_chain(langevin, counted, torch.randn(8, 2) * 3, 4, 0.01, project=project,
                        callback=lambda i, state, step: calls.append(i))
    assert x.abs().max() <= 0.1 and calls == [0, 1, 2, 3] and info.energy.shape == (4,)
    evals.clear()
    run_chain(langevin, counted, torch.randn(8, 2), 4, 0.01, final_energy=False)
    assert len(evals) == 4  # K steps cost K evaluations when the final point's energy is not needed
    evals.clear()
    run_chain(langevin, counted, torch.randn(8, 2), 4, 0.01)
    assert len(evals) == 5


def test_gradient_modes():
    w = torch.tensor(1.5, requires_grad=True)
    energy = lambda x: 0.5 * w * x.pow(2).sum(1)  # noqa: E731
    x0 = torch.randn(4, 2)
    x_none, _ = run_chain(langevin, energy, x0, 3, 0.1)
    x_last, _ = run_chain(langevin, energy, x0, 3, 0.1, grad="last", generator=torch.Generator().manual_seed(0))
    x_all, _ = run_chain(langevin, energy, x0, 3, 0.1, grad="all", generator=torch.Generator().manual_seed(0))
    assert not x_none.requires_grad and x_last.requires_grad and x_all.requires_grad
    (g_last,) = torch.autograd.grad(x_last.sum(), w)
    (g_all,) = torch.autograd.grad(x_all.sum(), w)
    assert not torch.allclose(g_last, g_all)  # all steps contribute more than the last alone
    with pytest.raises(ValueError, match="not differentiable"):
        run_chain(mala, energy, x0, 2, 0.1, grad="last")


def test_tweedie_on_a_gaussian_is_the_posterior_mean():
    """x ~ N(0, I) observed as x_0 = abar x + sbar e: Tweedie with the exact level-0 energy returns
    E[x | x_0] = abar x_0 / (abar² + sbar²) (up to the 1/abar of Eq. 18)."""
    lv = _levels()
    abar, sbar = lv.abar0, lv.sbar0
    var0 = abar ** 2 + sbar ** 2  # x_0 ~ N(0, var0 I); y_0 = alpha_1 x_0; E_net = s_0² (-log p_{y_0})
    net = lambda y, t: lv.step_sq[0] * 0.5 * y.pow(2).sum(1) / (lv.alpha[0] ** 2 * var0)  # noqa: E731
    x0 = torch.randn(10, 2, generator=torch.Generator().manual_seed(5))
    out = tweedie(net, x0, lv, 1.0)
    expected = (x0 - sbar ** 2 * x0 / var0) / abar  # (x + sbar² ∇log p(x)) / abar
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("sampler", [langevin, mala])
def test_full_diagnostics_record_gradient_norms(sampler):
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(6))
    _, info = run_chain(sampler, quad, x0, 3, 0.1, diagnostics="full")
    # E = |x|^2 / 2: the gradient is x, so the first step's mean norm is that of the start points
    assert torch.isfinite(info.grad_norm).all() and info.grad_norm.shape == (3,)
    assert torch.allclose(info.grad_norm[0], x0.norm(dim=1).mean())


def test_parameters_frozen_during_a_chain_and_restored():
    net = torch.nn.Linear(2, 1)
    seen = []

    def energy(x):
        seen.append(net.weight.requires_grad)
        return net(x).squeeze(1) + quad(x)

    run_chain(langevin, energy, torch.randn(4, 2), 3, 0.01, freeze=net)
    assert seen and not any(seen) and net.weight.requires_grad  # frozen inside, restored after
    seen.clear()
    run_chain(langevin, energy, torch.randn(4, 2), 3, 0.01, freeze=net, grad="last")
    # trainable weights only from the last step's recomputation at x_{K-1} on (and its new point)
    assert seen[-2:] == [True, True] and not any(seen[:-2])
