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
  model-space rows, training and samples, mapped back by the same affine map; a float64 array (or int64 epoch
  seconds) translated by 1e5 or 1e7 standardises to the same rows, its samples mapped back in float64.
- float64 vs float32 (an objective moved with ``.double()``, the float32 draws of the same generator): a few
  updates, and the generation procedure, agree to float32 rounding for every method (``prior`` drew float32 before
  2026-12-07, so float64 sampling, and the noise and hybrid schemes' training, failed with torch's dtype error).
- Sampling: the same seed gives the same samples, another seed others; ``batch_size`` >= n is the one-chunk draw;
  a chunked draw's first chunk is the unchunked draw of that size, and its chunks are distinct draws.
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


def _model_rows(arr):
    """The training rows (model coordinates) ``ebmlab.train`` builds from the user's array ``arr``."""
    from ebmlab.api_config import raw_config, validated
    from ebmlab.api_data import dataset, in_memory
    from ebmlab.config import apply_overrides, user_data_overrides
    raw = raw_config(None, "hybrid", {}, None)
    raw["data"] = {"name": "array", "path": "unused.npy"}
    return dataset(validated(apply_overrides(raw, user_data_overrides(raw))), in_memory(arr)).train


@pytest.mark.parametrize("offset", [1e5, 1e7])
def test_float64_user_array_translation_keeps_its_model_rows(offset):
    """A float64 array translated by 1e5 or 1e7 (UTM metres, epoch seconds) standardises to the same float32 rows:
    the shift is subtracted in float64 (float32 rounded the rows by 0.004 at 1e5, 0.5 at 1e7: measured 0.008 and
    0.6 in z before float64 rows kept their precision; 1e-7 now)."""
    x = _user_rows().double().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and in silence
        torch.testing.assert_close(_model_rows(x + offset), _model_rows(x), atol=1e-6, rtol=0)


def test_int64_epoch_seconds_keep_their_model_rows():
    """int64 epoch seconds (1.7e9, a spread of ~1000 s, where float32's spacing is 128 s) standardise to the rows of
    the same times counted from their start."""
    seconds = np.round(1e3 * _user_rows().double().numpy())
    epoch = (1_700_000_000 + seconds).astype(np.int64)
    torch.testing.assert_close(_model_rows(epoch), _model_rows(seconds), atol=1e-6, rtol=0)


def test_rounding_of_wide_integers_is_said_and_past_a_tenth_of_the_spread_refused():
    """float64 and 32-bit integers are held exactly (read in float64): offsets 1e5 to 1e9 on a spread of ~1, int64
    epoch seconds, float32 input pass in silence. 64-bit integers beyond 2**53, which float64 rounds, are said
    where that rounding passes 0.1 % of the column's std and refused from 10 % (nanosecond times of a spread of
    ~100 ns: float64's spacing at 1.7e18 is 256 ns)."""
    from ebmlab.data.arrays import check_vectors
    from ebmlab.errors import DataError
    x = _user_rows().double().numpy()
    nanoseconds = 1_700_000_000_000_000_000 + np.round(x * [1e5, 1e2]).astype(np.int64)  # spreads 1e5, 1e2 ns
    with pytest.raises(DataError, match=r"column 1 holds values up to .*float64.*erases the data: subtract an offs"):
        check_vectors(nanoseconds, "the data")
    with pytest.warns(RuntimeWarning, match=r"column 0 holds values up to .*float64.*subtract an offset"):
        check_vectors(nanoseconds[:, :1], "the data")
    epoch = (1.7e9 + 1e6 * x[:, :1]).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for quiet in (x + 1e3, x + 1e5, x + np.array([0.0, 1e7]), x + 1e9, (x + 1e7).astype(np.float32), epoch,
                      epoch.astype(np.int32) - 1_000_000_000):
            assert check_vectors(quiet, "the data").dtype == (torch.float32 if quiet.dtype == np.float32 else
                                                              torch.float64)


def test_float64_rows_given_to_the_networks_unstandardised_are_checked_for_float32_rounding():
    """``data.standardize: false`` hands the rows to the networks as they are, in float32: an offset of 1e5 on a
    spread of ~1 rounds them by 0.4 % of it (a warning), 1e7 by half of it (refused); standardised, neither is."""
    from ebmlab.data.dataset import _standardiser
    from ebmlab.errors import DataError
    x = _user_rows().double()
    with pytest.warns(RuntimeWarning, match=r"data.standardize false.*column 0 .*float32.*subtract an offset"):
        _standardiser(x + torch.tensor([1e5, 0.0], dtype=torch.float64), on=False)
    with pytest.raises(DataError, match=r"column 1 .*erases the data"):
        _standardiser(x + torch.tensor([0.0, 1e7], dtype=torch.float64), on=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _standardiser(x + 1e7, on=True)
        _standardiser((x + 1e7).float(), on=False)  # float32 rows: read as given, nothing to round


def test_a_run_on_float64_rows_at_1e7_samples_them_in_float64(tmp_path):
    """Trained on N(0, 1) + 1e7 in float64, a run is the run on N(0, 1) (the same weights) and ``Run.sample`` maps
    its samples back in float64: spread ~1 around 1e7, not float32's multiples of 1.0."""
    x = _user_rows().double()
    rx = _train_array("hybrid", x.numpy(), tmp_path / "x")
    ry = _train_array("hybrid", (x + 1e7).numpy(), tmp_path / "y")
    pa, pb = dict(rx.objective.named_parameters()), dict(ry.objective.named_parameters())
    for k in pa:
        torch.testing.assert_close(pb[k], pa[k], atol=1e-5, rtol=0)
    sx, sy = rx.sample(64, seed=3), ry.sample(64, seed=3)
    assert sx.dtype == sy.dtype == torch.float64
    torch.testing.assert_close(sy - 1e7, sx, atol=1e-4, rtol=0)
    assert 0.3 < float((sy - 1e7).std()) < 3 and float(((sy - 1e7) % 1.0 != 0).double().mean()) > 0.9
    torch.testing.assert_close(ry(sy), rx(sx), atol=1e-4, rtol=0)  # energies of float64 points, not rounded either
    from ebmlab import cli
    for out in (tmp_path / "s.npy", tmp_path / "t.csv"):  # ``ebmlab sample``'s files: the same float64 numbers
        assert cli.main(["sample", str(tmp_path / "y"), "--n", "64", "--seed", "3", "--out", str(out)]) == 0
    assert np.array_equal(np.load(tmp_path / "s.npy"), sy.numpy())
    assert np.array_equal(np.loadtxt(tmp_path / "t.csv", delimiter=",", ndmin=2), sy.numpy())


# ----- float64 vs float32 ---------------------------------------------------------------------------------
@contextmanager
def _float32_draws():
    """float64 draws replaced by the float32 draws of the same generator, cast (torch's float64 normal_/uniform_
    give other numbers than float32's for 16+ values)."""
    meths = {n: getattr(torch.Tensor, n) for n in ("normal_", "uniform_")}
    fns = {n: getattr(torch, n) for n in ("randn", "rand", "multinomial")}

    def inplace(f):
        def g(self, *a, **k):
            if self.dtype != torch.float64:
                return f(self, *a, **k)
            with torch.no_grad():
                return self.copy_(f(torch.empty(self.shape, device=self.device), *a, **k))
        return g

    def fn(f):
        if f is torch.multinomial:  # float64 weights: torch 2.3 draws its exponentials in float64 (other picks)
            return lambda w, *a, **k: f(w.float() if w.dtype == torch.float64 else w, *a, **k)

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


@pytest.mark.parametrize("name", sorted(METHODS))
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


@pytest.mark.parametrize("steps", [None, 4])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_float64_generation_agrees_with_float32(name, steps):
    """The paper's generation procedure of a ``.double()`` objective: float64 samples, the float32 ones to float32
    rounding carried through the chain (a flipped accept/reject or a float32 draw would move a row by a step)."""
    extra = ("method.step_size=0.01", "method.noise_scale=0.01") if name == "improved_cd" else ()
    a, _ = _objective(name, extra)
    b, _ = _objective(name, extra)
    a, b = a.eval(), b.double().eval()
    with torch.no_grad():
        sa = a.sample(32, generator=torch.Generator().manual_seed(3), n_steps=steps).x
        with _float32_draws():
            sb = b.sample(32, generator=torch.Generator().manual_seed(3), n_steps=steps).x
    assert sb.dtype == torch.float64
    assert float((sb - sa.double()).abs().max()) < 1e-4


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
