"""Metamorphic relations of every method: transformations of the input whose effect on the output is known.

- Energy shift E' = E + c (c a constant, not a parameter): every objective's parameter gradient, its training
  chains (the negatives) and its generation procedure (``sample``: Langevin, MALA with its step-size controller,
  AIS, paper 000's annealing, paper 002's sweep, paper 003's recovery chains and Tweedie step) are unchanged up to
  rounding; the loss value is unchanged except paper 001's L_opt = <E(x^-)> (Eq. 7), which is not a difference and
  moves by kl_weight * c (its gradient does not). Not shift-invariant by design, so left out here: ``energy_l2``
  (set to 0) and paper 004's ``adaptive_step`` (eps = c / ||E(x)||).
- Batch permutation: with every per-row random draw permuted the same way, permuting the data rows permutes the
  negatives and leaves loss and gradients equal up to summation order, for the methods without per-row state
  (not the persistent bank, paper 001's replay buffer or paper 002's (x, t) buffer).
- Positive per-coordinate scaling and translation of a user's array (``ebmlab.train`` whitens it): the same
  model-space rows, training and samples, mapped back by the same affine map.
- float64 vs float32 (an objective moved with ``.double()``, the float32 draws of the same generator): a few
  updates agree to float32 rounding (training only: ``prior`` draws float32, so float64 sampling, and the noise and
  hybrid schemes' training, are not supported).
- Sampling: the same seed gives the same samples, another seed others; ``batch_size`` >= n is the one-chunk draw;
  a chunked draw's first chunk is the unchunked draw of that size, and its chunks are distinct draws.
One strict xfail records a relation that fails today (see its docstring).
"""
import dataclasses
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from ebmlab.data import build_dataset
from ebmlab.energies.time import JointTimeEnergy
from ebmlab.objectives import METHODS, build_objective
from ebmlab.training.config import load_config
from ebmlab.training.drawing import draw
from tests.contracts.test_objective_contract import SHRINK, tiny_overrides

B = 16  # the batch size of every check (no other random draw of the tiny configs has a leading dimension of 16)
STATELESS = ["cd_ce", "cd_plain", "cdrl", "data", "drl", "hybrid", "joint_cd", "noise", "per_t"]


def _no_l2(name):
    fields = {f.name for f in dataclasses.fields(METHODS[name].config)}
    return ["method.energy_l2=0"] if "energy_l2" in fields else []


def _objective(name, extra=()):
    cfg = load_config(None, tiny_overrides(name) + _no_l2(name) + list(extra))
    torch.manual_seed(0)
    data = build_dataset(cfg.data)
    torch.manual_seed(0)
    return build_objective(cfg, data), data


def _shift(obj, c):
    """E -> E + c at the network's output (paper 000: log p(z, t) - c for every t; paper 003: E_net + c)."""
    e = obj.energy
    if isinstance(e, JointTimeEnergy):
        f = e.log_joint
        e.log_joint = lambda z: f(z) - c
    elif hasattr(e, "net_energy"):
        e.net.register_forward_hook(lambda m, i, o: o + c)
    else:
        e.register_forward_hook(lambda m, i, o: o + c)


def _grads(obj):
    return [p.grad.clone() for p in obj.parameters() if p.grad is not None]


def _sgd(obj, lr=1e-3):
    with torch.no_grad():
        for p in obj.parameters():
            if p.grad is not None:
                p -= lr * p.grad.to(p)
                p.grad = None


def _close_grads(ga, gb, rtol):
    scale = max(float(g.abs().max()) for g in ga)
    worst = max(float((a.to(b) - b).abs().max()) for a, b in zip(ga, gb))
    assert worst <= rtol * scale, f"gradients differ by {worst:.3g} (max |grad| {scale:.3g})"


# ----- energy shift --------------------------------------------------------------------------------------
SHIFT_CASES = [(n, ()) for n in sorted(METHODS)] + [
    ("hybrid", ("method.noise_chain=short_run",)),
    ("hybrid", ("method.step_rule=paper004", "method.noise_chain=short_run")),
    ("data", ("method.sampler=langevin", "method.target_accept=null")), ("noise", ("model.base=gmm",)),
    ("cd_ce", ("method.marginal_step=per_level", "method.sample_method=soft", "method.sample_adapt_steps=2")),
    ("cd_ce", ("method.per_t_weight=1.0",))]


SHIFT_IDS = [n + "".join("+" + e for e in extra) for n, extra in SHIFT_CASES]


@pytest.mark.parametrize("name,extra", SHIFT_CASES, ids=SHIFT_IDS)
def test_energy_shift_changes_no_gradient_chain_or_sample(name, extra):
    """c = 3: the chains see c only through rounding (MH differences E(x) - E(x'), AIS weights' softmax, paper 000's
    logsumexp), ~1e-7 here (atol 1e-5); gradients to rounding of the c-shifted energies (rtol 1e-4 of max |grad|)."""
    c = 3.0
    a, data = _objective(name, extra)
    b, _ = _objective(name, extra)
    _shift(b, c)
    offset = c * b.cfg.kl_weight if name == "improved_cd" and b.cfg.kl else 0.0  # L_opt = <E(x^-)>, Eq. 7
    x = data.train[:B]
    for it in range(2):
        oa = a(x, generator=torch.Generator().manual_seed(10 + it))
        ob = b(x, generator=torch.Generator().manual_seed(10 + it))
        oa.loss.backward()
        ob.loss.backward()
        assert abs(float((ob.loss - oa.loss).detach()) - offset) < 1e-4
        torch.testing.assert_close(ob.negatives, oa.negatives, atol=1e-5, rtol=0)
        _close_grads(_grads(a), _grads(b), 1e-4)
        _sgd(a)
        _sgd(b)
    with torch.no_grad():
        xa = a.sample(8, generator=torch.Generator().manual_seed(5)).x
        xb = b.sample(8, generator=torch.Generator().manual_seed(5)).x
    torch.testing.assert_close(xb, xa, atol=1e-4, rtol=0)


# ----- batch permutation ---------------------------------------------------------------------------------
@contextmanager
def _row_aligned_draws(perm):
    """Every random draw whose leading dimension is the batch comes out permuted by ``perm``; row-wise
    multinomial draws see their rows in the unpermuted order, and index draws (AIS resampling) are mapped."""
    inv = torch.argsort(perm)
    saved_fns = {n: getattr(torch, n) for n in ("randn", "rand", "randint", "multinomial")}
    saved_meths = {n: getattr(torch.Tensor, n) for n in ("normal_", "uniform_")}

    def wrap(f):
        def g(*a, **k):
            out = f(*a, **k)
            return out[perm] if out.dim() > 0 and out.shape[0] == B else out
        return g

    def multinomial(inp, num, replacement=False, *, generator=None):
        f = saved_fns["multinomial"]
        if inp.dim() == 2 and inp.shape[0] == B:
            return f(inp[inv], num, replacement, generator=generator)[perm]
        if inp.dim() == 1 and inp.shape[0] == B and num == B:
            return inv[f(inp[inv], num, replacement, generator=generator)[perm]]
        return f(inp, num, replacement, generator=generator)

    def wrap_inplace(f):
        def g(self, *a, **k):
            f(self, *a, **k)
            if self.dim() > 0 and self.shape[0] == B:
                with torch.no_grad():
                    self.copy_(self[perm].clone())
            return self
        return g

    for n in ("randn", "rand", "randint"):
        setattr(torch, n, wrap(saved_fns[n]))
    torch.multinomial = multinomial
    for n, f in saved_meths.items():
        setattr(torch.Tensor, n, wrap_inplace(f))
    try:
        yield
    finally:
        for n, f in saved_fns.items():
            setattr(torch, n, f)
        for n, f in saved_meths.items():
            setattr(torch.Tensor, n, f)


@pytest.mark.parametrize("name", STATELESS)
def test_batch_permutation_permutes_negatives_and_keeps_the_loss(name):
    """Negatives: bit-for-bit rows (every op is row-wise; observed 0); loss to 1e-5 and gradients to 5e-4 x
    max |grad|: only the order of the batch sums changes, amplified by the cancellation in a difference of means
    (cd_plain's reached 4e-5 in three updates)."""
    a, data = _objective(name)
    b, _ = _objective(name)
    x = data.train[:B]
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(1))
    for it in range(3):
        oa = a(x, generator=torch.Generator().manual_seed(10 + it))
        with _row_aligned_draws(perm):
            ob = b(x[perm], generator=torch.Generator().manual_seed(10 + it))
        oa.loss.backward()
        ob.loss.backward()
        assert abs(float((ob.loss - oa.loss).detach())) < 1e-5
        torch.testing.assert_close(ob.negatives, oa.negatives[perm], atol=1e-6, rtol=0)
        _close_grads(_grads(a), _grads(b), 5e-4)
        _sgd(a)
        _sgd(b)


# ----- affine maps of a user's array ---------------------------------------------------------------------
SCALE, SHIFT = torch.tensor([3.0, 0.25]), torch.tensor([-7.0, 10.0])


def _user_rows():
    g = torch.Generator().manual_seed(0)
    return torch.randn(300, 2, generator=g) @ torch.tensor([[1.0, 0.6], [0.0, 0.8]]) + torch.tensor([0.5, -1.0])


def _train_array(name, x, out):
    import ebmlab
    fields = {f.name for f in dataclasses.fields(METHODS[name].config)}
    over = {f"method.{k}": {"false": False, "true": True}.get(v, v) for k, v in SHRINK.items() if k in fields}
    over.update({"model.width": 16, "model.depth": 1, "train.batch_size": B, "train.select_every": None})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ebmlab.train(name, x, out=out, evaluate=False, overrides=over,
                            train={"steps": 3, "threads": 1, "progress": False})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_user_array_affine_map_trains_the_same_model(name, tmp_path):
    """Training on x and on a x + b (a > 0 per coordinate; whitening, jitter, validation split, base measure: the
    user-data defaults) gives the same model rows, weights and samples mapped by the same map. Tolerance 1e-4:
    a x + b is rounded to float32 (ulp(10) / 0.25 = 4e-6 in z) and the standardiser's float32 shift and scale."""
    x = _user_rows()
    rx = _train_array(name, x, tmp_path / "x")
    ry = _train_array(name, x * SCALE + SHIFT, tmp_path / "y")
    assert rx.checkpoint_step == ry.checkpoint_step == 3
    torch.testing.assert_close(ry.data().train, rx.data().train, atol=1e-4, rtol=0)
    pa, pb = dict(rx.objective.named_parameters()), dict(ry.objective.named_parameters())
    for k in pa:
        torch.testing.assert_close(pb[k], pa[k], atol=1e-4, rtol=0)
    sx, sy = rx.sample(16, seed=3), ry.sample(16, seed=3)
    torch.testing.assert_close((sy - SHIFT) / SCALE, sx, atol=1e-3, rtol=0)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="user arrays are cast to float32 before standardising (api_data.in_memory, "
                          "data/arrays.check_vectors): a float64 offset of 1e5 rounds the rows by up to 0.004 "
                          "(with a warning; from 1e7 the data are refused)")
@pytest.mark.filterwarnings("ignore:.*float32, the precision training reads:RuntimeWarning")
def test_float64_user_array_translation_keeps_its_model_rows():
    """A float64 array translated by 1e5 (UTM metres, epoch seconds / 1e4) should standardise to the same rows."""
    from ebmlab.api_config import raw_config, validated
    from ebmlab.api_data import dataset, in_memory
    from ebmlab.config import apply_overrides, user_data_overrides
    x = _user_rows().double().numpy()

    def rows(arr):
        raw = raw_config(None, "hybrid", {}, None)
        raw["data"] = {"name": "array", "path": "unused.npy"}
        return dataset(validated(apply_overrides(raw, user_data_overrides(raw))), in_memory(arr)).train
    torch.testing.assert_close(rows(x + 1e5), rows(x), atol=1e-4, rtol=0)


def test_float32_rounding_of_a_wide_array_is_said_and_past_a_tenth_of_the_spread_refused():
    """What the xfail above leaves: the rounding is not silent. Offsets 1e5 and 1e6 on a spread of ~1 (rounding
    0.4 % and 3 % of it) warn naming the column; 1e7 (50 %) is refused; 1e3, float32 input and int64 epoch seconds
    with a spread of 1e6 (rounding 64 s, 6e-5 of it) pass in silence."""
    from ebmlab.data.arrays import check_vectors
    from ebmlab.errors import DataError
    x = _user_rows().double().numpy()
    for offset in (1e5, 1e6):
        with pytest.warns(RuntimeWarning, match=r"column 0 holds values up to .*float32.*subtract an offset"):
            check_vectors(x + np.array([offset, 0.0]), "the data")
    with pytest.raises(DataError, match=r"column 1 .*erases the data: subtract an offset"):
        check_vectors(x + np.array([0.0, 1e7]), "the data")
    epoch = (1.7e9 + 1e6 * x[:, :1]).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for quiet in (x + 1e3, (x + 1e7).astype(np.float32), epoch):
            check_vectors(quiet, "the data")


# ----- float64 vs float32 ---------------------------------------------------------------------------------
@contextmanager
def _float32_draws():
    """float64 draws replaced by the float32 draws of the same generator, cast (torch's float64 normal_/uniform_
    give other numbers than float32's for 16+ values)."""
    meths = {n: getattr(torch.Tensor, n) for n in ("normal_", "uniform_")}
    fns = {n: getattr(torch, n) for n in ("randn", "rand")}

    def inplace(f):
        def g(self, *a, **k):
            if self.dtype != torch.float64:
                return f(self, *a, **k)
            with torch.no_grad():
                return self.copy_(f(torch.empty(self.shape, device=self.device), *a, **k))
        return g

    def fn(f):
        def g(*a, dtype=None, **k):
            return f(*a, dtype=torch.float32, **k).double() if dtype == torch.float64 else f(*a, dtype=dtype, **k)
        return g
    for n, f in meths.items():
        setattr(torch.Tensor, n, inplace(f))
    for n, f in fns.items():
        setattr(torch, n, fn(f))
    try:
        yield
    finally:
        for n, f in meths.items():
            setattr(torch.Tensor, n, f)
        for n, f in fns.items():
            setattr(torch, n, f)


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"noise", "hybrid"}))
def test_float64_training_agrees_with_float32(name):
    """Two updates; loss to 1e-5 and gradients to 5e-4 x max |grad| (float32 rounding, amplified by the
    cancellation in a difference of means: cd_plain's reached 5e-5)."""
    extra = ("method.step_size=0.01", "method.noise_scale=0.01") if name == "improved_cd" else ()  # vector step
    a, data = _objective(name, extra)
    b, _ = _objective(name, extra)
    b = b.double()
    x = data.train[:B]
    for it in range(2):
        oa = a(x, generator=torch.Generator().manual_seed(10 + it))
        with _float32_draws():
            ob = b(x.double(), generator=torch.Generator().manual_seed(10 + it))
        assert ob.loss.dtype == torch.float64
        oa.loss.backward()
        ob.loss.backward()
        assert abs(float(ob.loss.detach()) - float(oa.loss.detach())) < 1e-5
        _close_grads(_grads(a), _grads(b), 5e-4)
        _sgd(a)
        _sgd(b)


# ----- sampling: seeds and chunks --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(METHODS))
def test_seed_and_chunks(name):
    """Bit-for-bit: the same generator seed, the same draws in the same order."""
    obj, _ = _objective(name)

    def s(n, seed, bs=None):
        with torch.no_grad():
            return draw(obj, n, torch.Generator().manual_seed(seed), batch_size=bs).x
    a = s(12, 3)
    assert torch.equal(a, s(12, 3)) and not torch.equal(a, s(12, 4))
    assert torch.equal(a, s(12, 3, bs=12)) and torch.equal(a, s(12, 3, bs=100))
    chunked = s(12, 3, bs=5)
    assert chunked.shape == a.shape and not torch.equal(chunked[:5], chunked[5:10])  # one generator continues
    with torch.no_grad():
        weighted = obj.sample_weighted(2, generator=torch.Generator().manual_seed(0))[1] is not None
    if not weighted:  # AIS chains are resampled after the last batch, all together (the next test)
        assert torch.equal(chunked[:5], s(5, 3))


class _TwoWells(torch.nn.Module):
    """-log [0.8 N((-2, 0), 0.25 I) + 0.2 N((2, 0), 0.25 I)]."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        m = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
        d = ((x[:, None, :] - m) ** 2).sum(-1) / 0.5
        return -torch.logsumexp(torch.log(torch.tensor([0.8, 0.2])) - d, 1) + self.p


@pytest.mark.parametrize("batch_size", [1, 8, 100])
def test_ais_sample_distribution_does_not_depend_on_batch_size(batch_size):
    """hybrid's AIS sampler (4 stages) on a two-well energy: the left well's share (truth 0.8; 512 chains in one
    batch 0.79). Each batch once resampled by its own weights: 0.51 one at a time, 0.645 by 8 (a batch of one keeps
    its chain whatever its weight); now the batches' chains are resampled together. The bound 0.1 is about 5
    standard errors of a share of 512 draws."""
    obj, _ = _objective("hybrid", ("method.n_steps=4",))
    obj.energy = _TwoWells()
    with torch.no_grad():
        whole = draw(obj, 512, torch.Generator().manual_seed(0)).x
        parts = draw(obj, 512, torch.Generator().manual_seed(0), batch_size=batch_size).x
    assert abs(float((parts[:, 0] < 0).float().mean()) - float((whole[:, 0] < 0).float().mean())) < 0.1
