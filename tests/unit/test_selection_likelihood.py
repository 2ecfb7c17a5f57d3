"""``train.select_likelihood`` and ``train.select_refit`` with the mixture base (training/selection.py): the validation
log-likelihood gain over the base measure against an exact tilt, a check held back for lowering it, and a chosen
start whose mixture is refitted on the training and validation rows."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

import ebmlab
from ebmlab.data import build_dataset
from ebmlab.energies.mixture_base import GaussianMixtureBase
from ebmlab.objectives import build_objective
from ebmlab.objectives.contrastive import fit_mixture_base
from ebmlab.training import selection
from ebmlab.training.config import load_config

from .test_selection import TINY, _fit, _scripted

MIXTURE = ["model.base=gmm", "train.select_every=5", "data.val_fraction=0.1", "train.select_start=true"]


class _Tilted:
    """exp(-E) = q(x) exp(c . x) with q = N(0, I): the density N(c, I) exactly, normaliser exp(|c|^2 / 2)."""

    def __init__(self, c):
        self.base, self.c = GaussianMixtureBase(len(c)).standard_normal(), c

    def mixture_base(self):
        return self.base

    def log_density(self, x):
        return -(self.base(x) - x @ self.c)


def test_the_likelihood_gain_of_an_exact_tilt_is_its_log_density_ratio():
    c = torch.tensor([0.5, -0.3])
    y = torch.randn(500, 2, generator=torch.Generator().manual_seed(1)) + c
    gain = selection.likelihood_gain(_Tilted(c), SimpleNamespace(val=y), 10_000, torch.Generator().manual_seed(0))
    exact = float((y @ c).mean() - c.dot(c) / 2)  # mean of log N(y; c, I) - log N(y; 0, I)
    se = math.sqrt(math.expm1(float(c.dot(c))) / 10_000)  # s.e. of log Z-hat: sqrt(Var(w) / n), E w = 1
    assert abs(gain - exact) < 4 * se
    flat = selection.likelihood_gain(_Tilted(torch.zeros(2)), SimpleNamespace(val=y), 100, torch.Generator())
    assert flat == 0.0  # no tilt: every weight is exactly 1
    with pytest.raises(ValueError, match="mixture base"):
        selection.likelihood_gain(SimpleNamespace(mixture_base=lambda: None), SimpleNamespace(val=y), 10, None)


def test_the_untrained_model_gains_nothing_over_its_base():
    cfg = load_config(None, TINY + MIXTURE)
    data = build_dataset(cfg.data)
    obj = build_objective(cfg, data).eval()
    with torch.no_grad():
        assert selection.likelihood_gain(obj, data, 1000, torch.Generator().manual_seed(0)) == 0.0


def test_a_check_that_lowers_the_validation_likelihood_does_not_replace_the_start(tmp_path, monkeypatch):
    """Step 5 beats the start's score but lowers the likelihood: held back; step 10 beats it and raises it: chosen;
    step 15 does not beat step 10, so its likelihood is not estimated. A resumed run keeps the best's gain."""
    _scripted(monkeypatch, [1.0, 0.5, 0.6, 0.7])  # checks at 0, 5, 10, 15
    gains = iter([-0.1, 0.05])
    monkeypatch.setattr(selection, "likelihood_gain", lambda *a, **k: next(gains))
    _, metrics = _fit(tmp_path / "r", MIXTURE + ["train.steps=15", "train.select_likelihood=true"])
    assert (metrics["selected_step"], metrics["select_held_back"], metrics["val_loglik_gain"]) == (10, 1, 0.05)
    best = json.loads((tmp_path / "r" / "checkpoints" / "best.json").read_text())
    assert best["val_loglik_gain"] == 0.05 and best["step"] == 10
    _scripted(monkeypatch, [0.9])  # resumed at 15: the check at 20 does not win; the best keeps its gain
    _, metrics = _fit(tmp_path / "r", MIXTURE + ["train.steps=20", "train.select_likelihood=true"], resume=True)
    assert (metrics["selected_step"], metrics["val_loglik_gain"]) == (10, 0.05)
    _scripted(monkeypatch, [1.0, 0.5, 0.6])
    gains = iter([-0.1, -0.01])
    _, metrics = _fit(tmp_path / "s", MIXTURE + ["train.steps=10", "train.select_likelihood=true"])
    assert metrics["selected_step"] == 0 and metrics["select_held_back"] == 2 and "val_loglik_gain" not in metrics


def test_a_chosen_start_refits_its_mixture_on_the_training_and_validation_rows(tmp_path, monkeypatch):
    """``train.select_refit`` with the mixture base: the start wins, so the result is the mixture fitted (same seed)
    on the validation and training rows, in the run's coordinates; ``ebmlab.load`` opens it."""
    sets = MIXTURE + ["train.steps=10", "train.select_refit=true", "train.seed=3"]
    _scripted(monkeypatch, [0.1, 1.0, 2.0])  # checks at 0, 5, 10: the start wins
    trainer, metrics = _fit(tmp_path / "r", sets)
    assert metrics["selected_step"] == 0 and metrics["selected_refit"] == 1
    split = build_dataset(load_config(None, TINY + sets).data)
    every, train_only = GaussianMixtureBase(2), GaussianMixtureBase(2)
    fit_mixture_base(every, torch.cat([split.val, split.train]), 3)
    fit_mixture_base(train_only, split.train, 3)
    x = torch.randn(9, 2, generator=torch.Generator().manual_seed(0)) * 0.5  # model coordinates
    run = ebmlab.load(tmp_path / "r")  # takes data coordinates
    with torch.no_grad():
        assert torch.allclose(run(split.transform.to_data(x)), every(x), rtol=1e-5, atol=1e-4)
        assert not torch.allclose(run(split.transform.to_data(x)), train_only(x), rtol=1e-3, atol=1e-3)
        assert torch.allclose(trainer.objective.mixture_base()(x), every(x), rtol=1e-5, atol=1e-5)
    best = json.loads((tmp_path / "r" / "checkpoints" / "best.json").read_text())
    assert best["base_refit_rows"] == len(split.val) + len(split.train) and metrics["base_components"] == every.components
    _scripted(monkeypatch, [1.0, 0.5, 2.0])  # a trained check wins: its mixture is the training rows' fit
    trainer, metrics = _fit(tmp_path / "t", sets)
    assert metrics["selected_step"] == 5 and "selected_refit" not in metrics
    with torch.no_grad():
        assert torch.allclose(trainer.objective.mixture_base()(x), train_only(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [["train.select_window=3"], ["train.select_start=false"], ["model.base=null"]])
def test_the_likelihood_condition_needs_the_mixture_start_and_one_check_at_a_time(bad):
    from ebmlab.errors import ConfigError

    with pytest.raises(ConfigError, match="select_likelihood"):
        load_config(None, TINY + MIXTURE + ["train.select_likelihood=true"] + bad)
