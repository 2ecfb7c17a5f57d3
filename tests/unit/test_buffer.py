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


def test_an_unfilled_bank_takes_a_loaded_state_or_fills_at_its_first_draw():
    """``fill=False``: nothing is drawn at construction (a bank whose stored state is loaded next)."""
    def refuse(n, g=None):
        raise AssertionError("drawn before the load")
    stored = ReplayBuffer(10, (3,), _noise, mode="bank", generator=torch.Generator().manual_seed(0))
    loaded = ReplayBuffer(10, (3,), refuse, mode="bank", fill=False)
    assert len(loaded) == 0
    loaded.load_state_dict(stored.state_dict())
    assert len(loaded) == 10 and torch.equal(loaded.data, stored.data)
    lazy = ReplayBuffer(10, (3,), _noise, mode="bank", fill=False)
    x, idx = lazy.sample(4, torch.Generator().manual_seed(1))
    assert len(lazy) == 10 and (idx >= 0).all() and torch.equal(x, lazy.data[idx])


# ----- paper 004's persistent bank: a batch of distinct slots (issue 15, item 2c.2) -------------------

def _bank(capacity=100, **kw):
    return ReplayBuffer(capacity, (3,), _noise, mode="bank", generator=torch.Generator().manual_seed(0), **kw)


def test_bank_draws_distinct_slots_within_a_batch():
    b = _bank()
    g = torch.Generator().manual_seed(4)
    for _ in range(50):
        x, idx = b.sample(64, g)
        assert idx.unique().numel() == 64 and int(idx.min()) >= 0 and int(idx.max()) < 100
        assert torch.equal(x, b.data[idx])
    assert torch.equal(b.sample(100, g)[1].sort().values, torch.arange(100))  # the whole bank: a permutation


def test_bank_refresh_batches_overwrite_distinct_slots():
    b = ReplayBuffer(30, (3,), lambda n, g=None: torch.full((n, 3), 7.0), reset_prob=1.0, reset_mode="batch",
                     mode="bank")
    x, idx = b.sample(30, torch.Generator().manual_seed(5))
    assert (x == 7.0).all() and torch.equal(idx.sort().values, torch.arange(30))


def test_bank_draw_honours_the_generator_and_is_uniform():
    b = _bank(20)
    i1 = b.sample(5, torch.Generator().manual_seed(6))[1]
    assert torch.equal(i1, b.sample(5, torch.Generator().manual_seed(6))[1])
    assert not torch.equal(i1, b.sample(5, torch.Generator().manual_seed(7))[1])
    g = torch.Generator().manual_seed(8)
    counts = torch.bincount(torch.cat([b.sample(5, g)[1] for _ in range(4000)]), minlength=20).float()
    # each slot: Binomial(4000, 1/4) -> mean 1000, sd ~27
    assert (counts - 1000).abs().max() < 5 * (4000 * 0.25 * 0.75) ** 0.5, counts


def test_bank_batch_larger_than_the_bank_uses_every_slot_before_repeating():
    b = _bank(10)
    idx = b.sample(25, torch.Generator().manual_seed(9))[1]
    counts = torch.bincount(idx, minlength=10)
    assert int(counts.min()) >= 2 and int(counts.max()) <= 3
    assert idx[:10].unique().numel() == 10 and idx[10:20].unique().numel() == 10


def test_fifo_replay_buffer_still_draws_with_replacement():
    """Paper 001's replay buffer is unchanged (i.i.d. slots); a bank can opt back in."""
    b = ReplayBuffer(10, (3,), _noise)
    b.push(torch.randn(10, 3))
    assert b.replacement and not _bank().replacement and _bank(replacement=True).replacement
    g = torch.Generator().manual_seed(10)
    assert any(b.sample(10, g)[1].unique().numel() < 10 for _ in range(5))


def test_train_init_std_moves_only_the_training_chains():
    """``method.train_init_std``: the noise-initialised training chains start at N(0, s^2 I), generation
    (``prior``) keeps ``init_std`` (docs/paper004.md, the demo's ring masses)."""
    from ebmlab.objectives.contrastive import ContrastiveConfig, ContrastiveDivergence
    from ebmlab.energies.mlp import MLPEnergy
    obj = ContrastiveDivergence(MLPEnergy(2, 8, 1), ContrastiveConfig(name="noise", train_init_std=2.0), (2,))
    x_train, _ = obj._start(20000, torch.Generator().manual_seed(0))
    x_gen = obj.prior(20000, torch.Generator().manual_seed(0))
    assert abs(float(x_train.std()) - 2.0) < 0.05 and abs(float(x_gen.std()) - 1.0) < 0.03
    assert torch.allclose(x_train, 2.0 * x_gen)  # the same draw, scaled
