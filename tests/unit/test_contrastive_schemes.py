"""Paper 004's five schemes (``objectives/contrastive.py``) start their chains where Sec. 3 says: the data scheme
from the data batch, the persistent schemes from their bank, ``persistent_refresh`` restarting the whole batch from
noise with probability ``refresh_prob`` per iteration. Found by a mutation audit: a misspelt scheme name that
turned the refresh off, and a data chain started from noise, left every other test green (the second was caught
only by a recorded loss value)."""
import pytest
import torch

from ebmlab.data import build_dataset
from ebmlab.objectives import build_objective
from ebmlab.training.config import load_config

from tests.contracts.test_objective_contract import tiny_overrides


def _objective(name: str, *extra: str):
    cfg = load_config(None, tiny_overrides(name) + list(extra))
    torch.manual_seed(0)
    data = build_dataset(cfg.data)
    return build_objective(cfg, data), data, cfg


@pytest.mark.parametrize("name, refresh", [("persistent", 0.0), ("persistent_refresh", 0.05),
                                           ("persistent_refresh", 0.3)])
def test_the_bank_restarts_the_whole_batch_from_noise_at_the_refresh_rate(name, refresh):
    obj, _, cfg = _objective(name, f"method.refresh_prob={refresh}")
    assert obj.bank.reset_mode == "batch" and obj.bank.reset_prob == (refresh if name == "persistent_refresh" else 0)
    obj.bank.data.fill_(100.0)  # far from every noise draw
    g, n, calls = torch.Generator().manual_seed(1), 8, 4000
    fresh = []
    for _ in range(calls):
        x, idx = obj._start(n, g)
        from_noise = (x != 100.0).all(1)  # (n,)
        assert from_noise.all() or not from_noise.any()  # the whole batch or none of it
        fresh.append(bool(from_noise[0]))
    rate = sum(fresh) / calls
    p = obj.bank.reset_prob
    assert abs(rate - p) <= 4 * (p * (1 - p) / calls) ** 0.5, (rate, p)


def test_the_data_chain_starts_at_the_data_batch():
    """The data scheme (the hybrid's data chain runs the same code; its ``negatives`` are the noise chain's). One
    unadjusted step of size eps = 1e-4 from the batch: x_neg - x is the step's N(0, 2 eps) noise (the drift,
    eps dE/dx, is ~1e-4 against a noise std of 0.014), so |x_neg - x|^2 / (2 eps D) averages 1 over the batch
    (a chi-square of 2B degrees of freedom: 4 standard errors are 0.25 at B = 256). From noise it is ~1e4."""
    obj, data, _ = _objective("data", "method.sampler=langevin", "method.target_accept=null", "method.step_size=1e-4",
                              "method.n_steps_data=1", "method.n_steps=1", "method.noise_chain=null",
                              "method.adaptive_step=false")
    x = data.train[:256]
    out = obj(x, generator=torch.Generator().manual_seed(2))
    ratio = ((out.negatives - x).pow(2).sum(1).mean() / (2 * 1e-4 * x.shape[1])).item()
    assert abs(ratio - 1) < 0.25, ratio
