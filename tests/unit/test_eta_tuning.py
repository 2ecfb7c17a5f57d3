"""Paper 002 App. A.1's eta rule (objectives/eta_tuning.py): the t = 1 energy gap of generated
samples against real ones, and the choice of the smallest eta whose samples reach the real energy."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ebmlab.experiments.eta_search import tune_eta_by_training
from ebmlab.objectives.eta_tuning import EtaTuning, choose_eta, t1_energy_gap, tune_eta
from ebmlab.objectives.implicit_diffusion import ImplicitDiffusion, ImplicitDiffusionConfig
from ebmlab.training.config import load_config


class Quadratic(nn.Module):
    """E(x, t) = ||x - c||^2 / 2 (independent of t): chains from N(0, I) fall towards c faster with eta."""

    def __init__(self, centre):
        super().__init__()
        self.centre = nn.Parameter(torch.as_tensor(centre, dtype=torch.float32))

    def forward(self, x, t=None):
        return 0.5 * (x - self.centre).pow(2).sum(1)


def quadratic_setup(T=5, K=2, eta=0.5):
    cfg = ImplicitDiffusionConfig(T=T, K=K, eta=eta, sigma=0.0, buffer_size=16)
    obj = ImplicitDiffusion(Quadratic([2.0, 0.0]), cfg, (2,))
    g = torch.Generator().manual_seed(0)
    # real points: a Gaussian about c of std 0.3, mean energy 2 * 0.3^2 / 2 = 0.09
    data = SimpleNamespace(test=torch.tensor([2.0, 0.0]) + 0.3 * torch.randn(4000, 2, generator=g))
    return obj, data


def test_choose_eta_takes_the_smallest_eta_whose_samples_reach_the_real_energy():
    res = choose_eta({0.4: 0.02, 0.1: -0.3, 0.2: -0.01, 0.3: 0.001})
    assert res.eta == 0.3 and res.reached
    assert list(res.gaps) == [0.1, 0.2, 0.3, 0.4]  # sorted table
    assert choose_eta({0.1: -0.3, 0.2: -0.01, 0.3: 0.001}, target=0.01).eta == 0.3  # none reach: largest
    assert not choose_eta({0.1: -0.3, 0.2: -0.01}, target=0.01).reached
    assert choose_eta({0.5: 0.2}).as_dict() == {"eta": 0.5, "target": 0.0, "reached": True, "gaps": {"0.5": 0.2}}
    with pytest.raises(ValueError):
        choose_eta({})


def test_gap_grows_with_eta_and_the_rule_picks_the_crossing():
    """Noise-free sweep of T K = 10 steps on E = |x - c|^2 / 2 from N(0, I): the distance to c shrinks by
    (1 - eta/2) per step, so the sample energy is ~ (1 - eta/2)^20 (|c|^2 + 2) / 2. It falls below the
    real one (0.09) between eta = 0.3 (0.12) and eta = 0.4 (0.035)."""
    obj, data = quadratic_setup()
    cands = [0.1, 0.2, 0.3, 0.4, 0.6]
    res = tune_eta(obj, data, cands, n=2000, generator=torch.Generator().manual_seed(1))
    gaps = [res.gaps[c] for c in cands]
    assert all(a < b for a, b in zip(gaps[:3], gaps[1:4]))  # monotone up to the crossing
    assert gaps[2] < 0 < gaps[3]
    assert res.eta == 0.4 and res.reached
    assert obj.cfg.eta == 0.5  # the objective's eta is restored
    direct = t1_energy_gap(obj, data.test[:2000], 0.4, n=2000, generator=torch.Generator().manual_seed(2))
    assert abs(direct - res.gaps[0.4]) < 0.02


def test_tune_eta_input_checks():
    obj, data = quadratic_setup()
    with pytest.raises(ValueError):
        tune_eta(obj, data, [])
    with pytest.raises(ValueError):
        t1_energy_gap(obj, data.test, -1.0)


def test_short_training_search_runs_and_returns_a_table():
    """A smoke test of the short-training search (3 iterations per candidate on the toy config)."""
    cfg = load_config("paper002_8gaussians", ["train.threads=1", "train.progress=false", "data.n_train=2000",
                                              "data.n_test=500", "method.T=2", "method.K=1",
                                              "method.buffer_size=256", "train.batch_size=64"])
    eta0 = cfg.method.eta
    res = tune_eta_by_training(cfg, [0.1, 0.3], steps=3, n=200)
    assert isinstance(res, EtaTuning) and set(res.gaps) == {0.1, 0.3} and res.eta in (0.1, 0.3)
    assert all(torch.isfinite(torch.tensor(v)) for v in res.gaps.values())
    assert cfg.method.eta == eta0  # the caller's config is not modified
