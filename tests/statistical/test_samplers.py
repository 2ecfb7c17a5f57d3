"""Statistical tests of the samplers against distributions with known answers.

Chains are many independent parallel chains; after burn-in the pooled samples are compared with the
exact mean and covariance with tolerances derived from the Monte-Carlo standard error.
"""
import math

import pytest
import torch

from ebmlab.samplers import StepSizeController, langevin, mala, run_chain

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]])
PREC = torch.linalg.inv(COV)


def gaussian_energy(x):  # (B, 2) -> (B,), exact N(MEAN, COV)
    d = x - MEAN
    return 0.5 * ((d @ PREC) * d).sum(1)


def mixture_energy(x):  # 1-D two-component mixture 0.3 N(-1, 0.5²) + 0.7 N(1.5, 0.7²), as (B, 1)
    comps = torch.stack([math.log(0.3) - 0.5 * ((x[:, 0] + 1) / 0.5) ** 2 - math.log(0.5),
                         math.log(0.7) - 0.5 * ((x[:, 0] - 1.5) / 0.7) ** 2 - math.log(0.7)], 1)
    return -torch.logsumexp(comps, 1)


MIX_MEAN = 0.3 * -1 + 0.7 * 1.5
MIX_VAR = 0.3 * (0.25 + 1) + 0.7 * (0.49 + 2.25) - MIX_MEAN ** 2


def _collect(sampler, energy, x0, step, n_burn, n_keep, thin, gen):
    x, _ = run_chain(sampler, energy, x0, n_burn, step, generator=gen)
    out = []
    for _ in range(n_keep):
        x, _ = run_chain(sampler, energy, x, thin, step, generator=gen)
        out.append(x)
    return torch.cat(out)


@pytest.mark.parametrize("sampler,step", [(mala, 0.1), (langevin, 0.005)])
def test_gaussian_mean_and_covariance(sampler, step):
    gen = torch.Generator().manual_seed(1)
    n_chains = 4000
    x0 = torch.randn(n_chains, 2, generator=gen) * 2
    s = _collect(sampler, gaussian_energy, x0, step, 600 if sampler is mala else 3000, 4, 50, gen)
    # Draws of one chain are correlated, so count only the independent chains: 4 standard errors.
    se_mean = (COV.diag() / n_chains).sqrt()
    assert ((s.mean(0) - MEAN).abs() < 4 * se_mean).all(), s.mean(0)
    se_cov = ((COV ** 2 + COV.diag()[:, None] * COV.diag()[None, :]) / n_chains).sqrt()
    assert ((torch.cov(s.T) - COV).abs() < 4 * se_cov).all(), torch.cov(s.T)


@pytest.mark.parametrize("sampler,step", [(mala, 0.5), (langevin, 0.01)])
def test_mixture_mean_and_variance(sampler, step):
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(3000, 1, generator=gen) * 2
    s = _collect(sampler, mixture_energy, x0, step, 1500, 3, 100, gen)
    se_mean, se_var = math.sqrt(MIX_VAR / 3000), MIX_VAR * math.sqrt(3 / 3000)  # generous kurtosis factor
    assert abs(float(s.mean()) - MIX_MEAN) < 4 * se_mean
    assert abs(float(s.var()) - MIX_VAR) < 4 * se_var


def test_mala_acceptance_falls_as_step_grows():
    gen = torch.Generator().manual_seed(3)
    x0 = MEAN + torch.randn(4000, 2, generator=gen) @ torch.linalg.cholesky(COV).T
    rates = []
    for step in (0.01, 0.1, 0.5, 1.5, 4.0):
        _, diag = run_chain(mala, gaussian_energy, x0, 20, step, generator=gen)
        rates.append(float(diag.accept_rate.mean()))
    assert all(a > b for a, b in zip(rates, rates[1:])), rates
    assert rates[0] > 0.95 and rates[-1] < 0.2


def test_adaptive_step_reaches_target_acceptance():
    gen = torch.Generator().manual_seed(4)
    ctrl = StepSizeController(1, init_step=1e-3, target=0.6, rate=0.1)
    x0 = torch.randn(2000, 2, generator=gen)
    _, diag = run_chain(mala, gaussian_energy, x0, 300, None, generator=gen, controller=ctrl)
    assert abs(float(diag.accept_rate[-100:].mean()) - 0.6) < 0.03


def test_per_group_step_sizes_differ_by_scale():
    """Two groups on Gaussians of very different widths get very different step sizes."""
    gen = torch.Generator().manual_seed(5)
    groups = torch.arange(2000) % 2
    scale = torch.where(groups == 0, 1.0, 0.1).unsqueeze(1)

    def energy(x):
        return 0.5 * ((x / scale) ** 2).sum(1)

    ctrl = StepSizeController(2, init_step=1e-2, target=0.574, rate=0.1)
    run_chain(mala, energy, torch.randn(2000, 2, generator=gen) * scale, 300, None, generator=gen,
              controller=ctrl, groups=groups)
    ratio = float(ctrl.log_step.exp()[0] / ctrl.log_step.exp()[1])
    assert 40 < ratio < 250  # optimal MALA step scales like width², i.e. 100 here


def test_one_energy_evaluation_per_step():
    calls = {"n": 0}

    def energy(x):
        calls["n"] += 1
        return gaussian_energy(x)

    for sampler in (langevin, mala):
        calls["n"] = 0
        run_chain(sampler, energy, torch.zeros(8, 2), 25, 0.1, generator=torch.Generator().manual_seed(0))
        assert calls["n"] == 26  # init + one per step


def test_temperature_scales_the_stationary_variance():
    """p ∝ exp(-E/T): a unit Gaussian energy at T = 4 has variance 4 (paper 004 App. A.4)."""
    gen = torch.Generator().manual_seed(6)
    x, _ = run_chain(mala, lambda x: 0.5 * (x ** 2).sum(1), torch.randn(4000, 1, generator=gen), 400, 0.5,
                     temperature=4.0, generator=gen)
    assert abs(float(x.var()) - 4.0) < 0.3


def test_separate_noise_scale_is_corrected_by_mala():
    """MALA with an arbitrary noise scale (paper 001's parameterisation) still targets exp(-E)."""
    gen = torch.Generator().manual_seed(7)
    x, _ = run_chain(mala, gaussian_energy, torch.randn(3000, 2, generator=gen), 800, 0.05, noise_scale=0.5,
                     generator=gen)
    assert torch.allclose(x.mean(0), MEAN, atol=0.08)
    assert torch.allclose(torch.cov(x.T), COV, atol=0.1)


def test_nonpositive_step_size_is_rejected():
    with pytest.raises(ValueError, match="positive"):
        run_chain(langevin, gaussian_energy, torch.zeros(4, 2), 3, 0.0)
