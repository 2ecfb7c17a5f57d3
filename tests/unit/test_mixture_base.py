"""``model.base: gmm`` (energies/mixture_base.py): the fitted mixture's -log q(x) and its closed-form gradient
against ``torch.distributions``, a load into an empty module, the MLP's untrained tilt, the config's checks, and a
run whose base measure is the leaderboard's GMM baseline."""
import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

import ebmlab
from ebmlab.config import ConfigError, apply_overrides, user_data_overrides
from ebmlab.energies.mixture_base import GaussianMixtureBase
from ebmlab.energies.mlp import MLPEnergy
from ebmlab.metrics.baselines import fit_gmm
from ebmlab.training.config import load_config
from ebmlab.training.evaluate import final_evaluation

from ..runs import fit_in


def _rows(n=400, d=3, seed=0):
    """Rows from two separated, correlated Gaussian clusters."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n // 2, d)) @ np.triu(np.ones((d, d))) * 0.3 - 2.0
    b = rng.normal(size=(n - n // 2, d)) * [0.5, 1.0, 0.2][:d] + 2.0
    return torch.from_numpy(np.concatenate([a, b])).float()


def _fitted(cov: str, k: int = 2, d: int = 3):
    gmm = fit_gmm(_rows(d=d), 0, components=(k,), covariances=(cov,)).model
    return gmm, GaussianMixtureBase(d).fit_from_sklearn(gmm)


def _reference(base: GaussianMixtureBase):
    """The same mixture as a ``torch.distributions`` object (float64), from the module's buffers."""
    u = base.prec_chol.double()
    prec = u @ u.transpose(1, 2)
    return MixtureSameFamily(Categorical(logits=base.log_weights.double()),
                             MultivariateNormal(base.means.double(), precision_matrix=prec))


@pytest.mark.parametrize("cov", ["full", "diag", "spherical", "tied"])
def test_energy_and_gradient_are_the_mixtures_negative_log_density(cov):
    """In float64 the closed form is the mixture's -log density and gradient to 1e-9; in float32 (what training
    runs) to float32's accuracy: the one-matmul form x U - mu U cancels a few digits, 4e-5 relative at worst
    over 20 seeds on these fits, hence rtol 2e-4."""
    gmm, base = _fitted(cov)
    base64 = GaussianMixtureBase(3).double().fit_from_sklearn(gmm)  # the fit's float64 numbers, not float32's
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)) * 2
    ref = _reference(base64)
    xd = x.double().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(-ref.log_prob(xd).sum(), xd)
    e64, g64 = base64.energy_and_grad(x.double())
    assert torch.allclose(e64, -ref.log_prob(x.double()), rtol=1e-9, atol=1e-9)
    assert torch.allclose(e64, -torch.from_numpy(gmm.score_samples(x.double().numpy())), rtol=1e-9, atol=1e-9)
    assert torch.allclose(g64, g_ref, rtol=1e-9, atol=1e-9)
    e, g = base.energy_and_grad(x)
    assert torch.allclose(e.double(), e64, rtol=2e-4, atol=1e-4) and torch.allclose(g.double(), g_ref, rtol=2e-4, atol=1e-4)
    assert torch.equal(e, base(x))
    xg = x.clone().requires_grad_(True)  # autograd through forward takes the closed form
    (g_auto,) = torch.autograd.grad(base(xg).sum(), xg)
    assert torch.equal(g_auto, g)


def test_second_derivatives_through_the_base_are_the_mixtures():
    """A graph-building backward (``create_graph``) differentiates the closed form again: the Hessian-vector
    product equals the one of ``torch.distributions``' log-density."""
    _, base = _fitted("full")
    base = base.double()
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(6, 3, dtype=torch.float64, generator=gen) * 2).requires_grad_(True)
    v = torch.randn(6, 3, dtype=torch.float64, generator=gen)
    (g,) = torch.autograd.grad(base(x).sum(), x, create_graph=True)
    (hv,) = torch.autograd.grad((g * v).sum(), x)
    (g_ref,) = torch.autograd.grad(-_reference(base).log_prob(x).sum(), x, create_graph=True)
    (hv_ref,) = torch.autograd.grad((g_ref * v).sum(), x)
    assert torch.allclose(g, g_ref, atol=1e-8) and torch.allclose(hv, hv_ref, atol=1e-8)


def test_too_few_rows_give_the_standard_normal_with_a_warning():
    from ebmlab.objectives.contrastive import fit_mixture_base
    base = GaussianMixtureBase(3)
    with pytest.warns(RuntimeWarning, match="N\\(0, I\\)"):
        fit_mixture_base(base, torch.randn(2, 3), 0)
    x = torch.randn(5, 3)
    assert base.components == 1 and torch.allclose(base(x), 0.5 * x.pow(2).sum(1) + 1.5 * math.log(2 * math.pi))


def test_an_empty_module_takes_the_stored_mixture_and_an_unfitted_one_refuses():
    _, base = _fitted("full", k=3)
    empty = GaussianMixtureBase(3)
    with pytest.raises(RuntimeError, match="not been fitted"):
        empty(torch.zeros(2, 3))
    empty.load_state_dict(base.state_dict())
    x = torch.randn(7, 3)
    assert empty.components == 3 and torch.equal(empty(x), base(x))
    with pytest.raises(ValueError, match="columns"):
        GaussianMixtureBase(4).fit_from_sklearn(fit_gmm(_rows(), 0, components=(1,)).model)


def test_the_untrained_mlp_with_a_mixture_base_is_the_mixture():
    _, base = _fitted("diag")
    energy = MLPEnergy(3, 16, 1, base_mixture=True)
    energy.base.load_state_dict(base.state_dict())
    x = torch.randn(9, 3)
    assert torch.allclose(energy(x), base(x))
    assert sorted(k for k in energy.state_dict() if k.startswith("base.")) == [
        "base.cov_factor", "base.log_norm", "base.log_weights", "base.means", "base.prec_chol"]
    with pytest.raises(ValueError, match="no base_std"):
        MLPEnergy(3, base_std=1.0, base_mixture=True)


def test_the_config_checks_the_base():
    for bad, match in ((["model.base=flow"], "gmm"), (["model.base=gmm", "model.base_std=1"], "base_std"),
                       (["model.base=gmm", "model.name=resnet", "data.name=digits"], "mlp"),
                       (["model.base=gmm", "method.name=improved_cd"], "improved_cd"),
                       (["model.base=gmm", "train.select_likelihood=true", "train.select_every=5",
                         "data.val_fraction=0.1"], "select_likelihood"),
                       (["train.select_likelihood=true", "train.select_start=true", "train.select_every=5",
                         "data.val_fraction=0.1"], "select_likelihood")):
        with pytest.raises(ConfigError, match=match):
            load_config("default" if "method.name=improved_cd" not in bad else None, bad)
    assert load_config("default", ["model.base=null"]).hash() == load_config("default").hash()
    # the --data defaults: a user's model.base keeps the Gaussian base out and still turns the energy penalty off
    sets = user_data_overrides(apply_overrides({}, ["model.base=gmm"]))
    assert "method.energy_l2=0.0" in sets and not any(s.startswith("model.base_std") for s in sets)


def test_a_run_starts_from_the_leaderboards_gmm_and_reloads_it(tmp_path):
    """A hybrid run on a table with ``model.base=gmm``: its untrained energy is the GMM baseline fitted on the
    training rows (same seed), its AIS generation starts from the mixture, and the run reloads its fitted base
    from the checkpoint (also without the rows)."""
    rows = _rows(300)
    path = tmp_path / "rows.npy"
    np.save(path, rows.numpy())
    sets = [f"data.path={path}", "data.name=array", "model.base=gmm", "model.width=16", "model.depth=1",
            "method.n_steps=3", "method.n_steps_data=2", "train.batch_size=32", "train.steps=4",
            "train.progress=false", "train.threads=1", "train.seed=2", "eval.n_samples=50", "eval.plots=false"]
    cfg = load_config(None, sets)
    metrics = {}
    trainer = fit_in(tmp_path / "r", cfg, after=lambda t: metrics.update(final_evaluation(t)))
    gmm = fit_gmm(trainer.data.train, 2)
    assert metrics["base_components"] == gmm.chosen["n_components"]
    x = trainer.data.test[:20]
    base = trainer.objective.energy.base
    assert torch.allclose(base(x), -gmm.log_density(x), atol=1e-4)
    run = ebmlab.load(tmp_path / "r")
    assert all(torch.equal(v, run.objective.energy.base.state_dict()[k]) for k, v in base.state_dict().items())
    out = run.objective.sample(64, generator=torch.Generator().manual_seed(0))
    assert out.x.shape == (64, 3) and torch.isfinite(out.x).all() and "ais_ess" in out.info
    start = trainer.objective.prior(5, torch.Generator().manual_seed(1))
    assert start.shape == (5, 3)


@pytest.mark.parametrize("method", ["persistent", "persistent_refresh"])
def test_a_persistent_run_with_a_mixture_base_reopens_without_its_rows(tmp_path, method):
    """Paper 004's persistent bank starts from draws of the base measure; a run opened without its rows
    (``ebmlab.load``, ``ebmlab sample --init noise``) builds the objective before the fitted base is loaded, so its
    bank is filled from the checkpoint, not drawn from an unfitted mixture (which crashed ``load``)."""
    path = tmp_path / "rows.npy"
    np.save(path, _rows(200).numpy())
    sets = [f"data.path={path}", "data.name=array", "model.base=gmm", "model.width=16", "model.depth=1",
            f"method.name={method}", "method.n_steps=3", "method.buffer_size=64", "train.batch_size=32",
            "train.steps=3", "train.progress=false", "train.threads=1"]
    trainer = fit_in(tmp_path / "r", load_config(None, sets))
    run = ebmlab.load(tmp_path / "r")
    assert torch.equal(run.objective.bank.data, trainer.objective.bank.data) and len(run.objective.bank) == 64
    assert run.sample(8, steps=2).shape == (8, 3)
    with pytest.raises(ValueError, match="no components yet"):
        GaussianMixtureBase(3).sample(4)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_draws_have_the_mixtures_exact_mean_and_covariance(cov):
    """20,000 draws against the mixture's exact first two moments: sum pi_k mu_k and sum pi_k (Sigma_k +
    mu_k mu_k^T) - m m^T, within 5 standard errors of the Monte-Carlo estimates."""
    _, base = _fitted(cov)
    base = base.double()
    x = base.sample(20000, torch.Generator().manual_seed(3))
    w = base.log_weights.exp()
    sigma = torch.linalg.inv(base.prec_chol @ base.prec_chol.transpose(1, 2))
    mean = (w[:, None] * base.means).sum(0)
    second = (w[:, None, None] * (sigma + base.means[:, :, None] * base.means[:, None, :])).sum(0)
    covariance = second - torch.outer(mean, mean)
    sd = covariance.diagonal().sqrt()
    assert torch.allclose(x.mean(0), mean, atol=float(5 * sd.max() / math.sqrt(20000)))
    emp = torch.cov(x.T)
    tol = 5 * float(torch.outer(sd, sd).max()) * math.sqrt(2 / 20000) * 3  # the 4th moments of a mixture: x3 slack
    assert torch.allclose(emp, covariance, atol=tol), (emp, covariance)
