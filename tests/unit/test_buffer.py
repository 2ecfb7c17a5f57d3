import torch

from ebmlab.buffers import ReplayBuffer


def _noise(n, g=None):
    return torch.randn(n, 3, generator=g)


def test_fifo_push_wraps_and_counts():
    b = ReplayBuffer(5, (3,), _noise)
    b.push(torch.ones(3, 3))
    assert len(b) == 3
    b.push(2 * torch.ones(4, 3))
    assert len(b) == 5 and int(b.cursor) == 2
    assert (b.data[:2] == 2).all() and (b.data[2] == 1).all()


def test_empty_fifo_returns_noise():
    b = ReplayBuffer(5, (3,), _noise)
    x, idx = b.sample(4, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3) and (idx == -1).all()


def test_chain_reset_rate_is_honoured():
    b = ReplayBuffer(100, (3,), lambda n, g=None: torch.full((n, 3), 7.0), reset_prob=0.2)
    b.push(torch.zeros(100, 3))
    x, idx = b.sample(20000, torch.Generator().manual_seed(1))
    frac = float((x[:, 0] == 7.0).float().mean())
    assert abs(frac - 0.2) < 4 * (0.2 * 0.8 / 20000) ** 0.5
    assert ((idx == -1) == (x[:, 0] == 7.0)).all()


def test_batch_reset_rate_is_per_iteration():
    b = ReplayBuffer(50, (3,), lambda n, g=None: torch.full((n, 3), 7.0), reset_prob=0.05,
                     reset_mode="batch", mode="bank")
    b.data.zero_()
    g = torch.Generator().manual_seed(2)
    fresh = [bool((b.sample(8, g)[0][:, 0] == 7.0).all()) for _ in range(4000)]
    assert abs(sum(fresh) / 4000 - 0.05) < 4 * (0.05 * 0.95 / 4000) ** 0.5


def test_bank_update_writes_back_and_state_dict_round_trips():
    b = ReplayBuffer(10, (3,), _noise, mode="bank", generator=torch.Generator().manual_seed(0))
    x, idx = b.sample(4, torch.Generator().manual_seed(3))
    b.update(torch.full((4, 3), 9.0), idx)
    assert (b.data[idx] == 9.0).all()
    c = ReplayBuffer(10, (3,), _noise, mode="bank")
    c.load_state_dict(b.state_dict())
    assert torch.equal(c.data, b.data)
