"""Paper 004's five schemes (``objectives/contrastive.py``) start their chains where Sec. 3 says (the data scheme
from the data batch, the persistent schemes from their bank, ``persistent_refresh`` restarting the whole batch from
noise with probability ``refresh_prob`` per iteration) and their loss is the computational loss of the reported
energy gaps. Found by mutation audits (docs/testing.md): a misspelt scheme name that turned the refresh off, a data
chain started from noise, and the loss's sign, lambda, L2 term and AIS weights left every other test green, or
were seen only by recorded loss values."""
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


def test_refresh_mode_chain_restarts_each_chain_at_the_refresh_rate_and_mixes_batches():
    """Sec. 4.1's reading ("5% of chains randomly restarted at noise"): every iteration, each chain restarts from noise
    with probability refresh_prob, so batches mix bank and noise chains (Sec. 3's default restarts whole batches)."""
    obj, _, _ = _objective("persistent_refresh", "method.refresh_mode=chain", "method.refresh_prob=0.2")
    assert obj.bank.reset_mode == "chain"
    obj.bank.data.fill_(100.0)  # far from every noise draw
    g, n, calls = torch.Generator().manual_seed(1), 8, 1000
    counts = torch.stack([(obj._start(n, g)[0] != 100.0).all(1).sum() for _ in range(calls)]).float()  # (calls,)
    rate, p = float(counts.mean()) / n, 0.2
    assert abs(rate - p) <= 4 * (p * (1 - p) / (n * calls)) ** 0.5, rate
    assert int(((counts > 0) & (counts < n)).sum()) > calls // 2  # most batches mix the two
    with pytest.raises(Exception, match="refresh_mode"):
        _objective("persistent_refresh", "method.refresh_mode=slot")


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


class _Linear(torch.nn.Module):
    """E(x) = w . x: the chains stay finite and every energy is read back exactly."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.7, -1.3]))

    def forward(self, x):
        return x @ self.w


@pytest.mark.parametrize("name, lam, l2", [("noise", 1.0, 0.0), ("hybrid", 25.0, 0.0), ("noise", 1.0, 0.3)])
def test_the_loss_is_the_reported_energy_gaps(name, lam, l2):
    """Sec. 3's computational loss: <E(x)> - <E(x^-)> per chain family, the data chain's weighted by lambda in the
    hybrid, plus energy_l2 (<E(x)^2> + <E(x^-)^2>). A mutation audit flipped the sign, moved lambda to the noise
    chain and dropped the L2 term: only recorded loss values saw it."""
    from ebmlab.objectives.contrastive import ContrastiveConfig, ContrastiveDivergence
    cfg = ContrastiveConfig(name=name, lam=lam, sampler="langevin", n_steps=3, n_steps_data=2, step_size=0.01,
                            energy_l2=l2, noise_chain="short_run", target_accept=None)
    obj = ContrastiveDivergence(_Linear(), cfg, (2,))
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    out = obj(x, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        e_pos, e_neg = obj.energy(x), obj.energy(out.negatives)  # the noise chain's negatives
        want = e_pos.mean() - e_neg.mean() + (lam * out.metrics["energy_gap_data"] if name == "hybrid" else 0.0)
        assert torch.allclose(out.metrics["energy_gap"], e_pos.mean() - e_neg.mean())
        want = want + l2 * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
    assert float(out.loss.detach()) == pytest.approx(float(want), rel=1e-6, abs=1e-7)


def test_ais_negatives_enter_the_loss_with_their_weights(monkeypatch):
    """``noise_chain: ais``: <E(x^-)> is the importance-weighted mean. One-hot weights on point 3 make the loss
    <E(x)> - E(point 3) exactly (the unweighted mean was used in a mutation and only a recorded value saw it)."""
    from types import SimpleNamespace

    from ebmlab.objectives.contrastive import ContrastiveConfig, ContrastiveDivergence
    obj = ContrastiveDivergence(_Linear(), ContrastiveConfig(name="noise", energy_l2=0.0, noise_chain="ais"), (2,))
    pts = torch.randn(8, 2, generator=torch.Generator().manual_seed(2))
    weights = torch.zeros(8).index_fill_(0, torch.tensor([3]), 1.0)
    info = SimpleNamespace(accept_rate=torch.ones(1), step_size=torch.ones(1))
    monkeypatch.setattr(obj, "_ais", lambda x0, ctrl, g: (pts, weights, info))
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    out = obj(x, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = obj.energy(x).mean() - obj.energy(pts[3:4]).mean()
    assert float(out.loss.detach()) == pytest.approx(float(want), rel=1e-6)
