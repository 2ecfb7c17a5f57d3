"""Property-based tests (hypothesis) of the library's pure pieces: invariants that must hold for *every*
input, where a fixed example could miss the case that breaks them.

Every test runs under one settings profile (``PROPS``): derandomized (the same examples on every run and
machine: CI cannot flake), no deadline (a slow shared CI core is not a failure), no example database (nothing
is written into the repository), few examples (the whole file runs in a few seconds on one thread).

Tolerances are derived from the arithmetic of the code under test and stated beside each check:
float32 unit roundoff u32 = 2**-24 (machine epsilon 2**-23), float64 u64 = 2**-53. They are never loosened to
make a test pass.
"""
from __future__ import annotations

import math
import re
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ebmlab import schedules
from ebmlab.buffers import ReplayBuffer
from ebmlab.config_hash import full_hash, run_hash
from ebmlab.data.base import Affine
from ebmlab.experiments.claims import Claim, decide, fmt_number, mean_std
from ebmlab.metrics.density import sample_precision
from ebmlab.metrics.distances import energy_distance, mmd
from ebmlab.objectives.joint_time import JointTime
from ebmlab.samplers.base import ChainState
from ebmlab.samplers.controller import StepSizeController
from ebmlab.samplers.mala import log_accept_ratio
from ebmlab.training.checkpoint import load_checkpoint, save_checkpoint
from ebmlab.training.config import load_config

EPS32 = 2.0 ** -23  # float32 machine epsilon (2 u32)
EPS64 = 2.0 ** -52  # float64 machine epsilon
TINY32 = 2.0 ** -149  # the smallest float32 subnormal: the absolute rounding error below the normal range


def PROPS(n: int):
    """The one settings profile of this file, with ``n`` examples."""
    return settings(derandomize=True, deadline=None, max_examples=n, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def f32(lo: float, hi: float):
    """float32 values in [lo, hi] (bounds rounded inward to float32)."""
    lo32, hi32 = (float(torch.tensor(v, dtype=torch.float32)) for v in (lo, hi))
    lo32 = lo32 if lo32 >= lo else float(torch.nextafter(torch.tensor(lo32), torch.tensor(math.inf)).float())
    hi32 = hi32 if hi32 <= hi else float(torch.nextafter(torch.tensor(hi32), torch.tensor(-math.inf)).float())
    return st.floats(lo32, hi32, allow_nan=False, allow_infinity=False, width=32)


def tensors(shape, lo=-10.0, hi=10.0):
    """A float32 tensor of ``shape`` with elements in [lo, hi]."""
    n = math.prod(shape)
    return st.lists(f32(lo, hi), min_size=n, max_size=n).map(lambda v: torch.tensor(v, dtype=torch.float32).reshape(shape))


# ----- data/base.py: Affine ---------------------------------------------------------------------------------
@st.composite
def affines(draw, whiten: bool):
    d = draw(st.integers(1, 5))
    shift = draw(tensors((d,), -100.0, 100.0))
    scale = draw(tensors((d,), 1e-2, 1e2))
    if not whiten:
        return Affine(shift, scale), 1.0
    # W = Q diag(s): an orthogonal Q (QR of a drawn matrix) and singular values in [0.5, 2], so cond(W) <= 4
    a = draw(tensors((d, d), -1.0, 1.0)).double() + 3.0 * torch.eye(d, dtype=torch.float64)  # (well away from singular)
    q = torch.linalg.qr(a).Q
    s = draw(tensors((d,), 0.5, 2.0)).double()
    w = (q * s).float()
    return Affine(shift, scale, w, torch.linalg.inv(w.double()).float()), 4.0


@PROPS(60)
@given(data=st.data(), whiten=st.booleans())
def test_affine_round_trip_is_identity(data, whiten):
    """to_data(to_model(x)) == x for any shift, positive scale (and whitening W with its inverse)."""
    tf, cond = data.draw(affines(whiten))
    d = tf.shift.shape[0]
    x = data.draw(tensors((3, d), -1e3, 1e3))
    back = tf.to_data(tf.to_model(x))
    # float32: (x - shift) / scale then * scale + shift is 4 rounded ops, each <= u32 relative to
    # max(|x|, |shift|). Whitening adds z -> W z -> W^-1 (W z) in model coordinates: two (D,)-dot products, error
    # <= 2 D u32 cond(W) max|z| in each z_j, which to_data multiplies by scale_j (W mixes coordinates, so a
    # small-scale coordinate's large z leaks into a large-scale one: the bound needs max|z|, not |z_j|). Subnormal
    # values lose up to TINY32 absolute per rounding instead (found by a 10x random run: x = 1.4e-45, scale 2:
    # x / 2 underflows to 0), which W^-1 (<= cond) and * scale amplify. 4x margin.
    mag = torch.maximum(x.abs(), tf.shift.abs())  # (3, D)
    zmag = ((x - tf.shift) / tf.scale).abs().max()
    tol = 4 * (4 * EPS32 * mag + (2 * d * cond * EPS32 * zmag * tf.scale if whiten else 0.0)
               + 4 * TINY32 * (1 + d * cond * tf.scale))
    assert ((back - x).abs() <= tol).all()


@PROPS(40)
@given(data=st.data(), whiten=st.booleans())
def test_affine_log_det_is_log_abs_jacobian(data, whiten):
    """``log_det`` = log |det dz/dx| of ``to_model`` (the change of variables p_x = p_z exp(log_det))."""
    tf, _ = data.draw(affines(whiten))
    d = tf.shift.shape[0]
    x = data.draw(tensors((d,), -10.0, 10.0)).double()
    jac = torch.autograd.functional.jacobian(lambda v: tf.to_model(v[None])[0], x)  # (D, D), float64
    want = float(torch.linalg.slogdet(jac)[1])
    # log_det sums D float32 logs (each within u32 of |log s_i| plus one rounding) and adds a float64 slogdet;
    # the float64 Jacobian is exact up to u64 per entry
    tol = 4 * d * EPS32 * (1.0 + float(tf.scale.log().abs().sum())) + 1e-9
    assert abs(tf.log_det - want) <= tol


# ----- samplers/mala.py: the MH ratio -------------------------------------------------------------------------
@st.composite
def mala_moves(draw):
    """(state, proposal, eps, sigma, T, z) with x' = x - eps dE/dx(x) + sigma z, on float64 tensors."""
    b, d = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    x = draw(tensors((b, d), -10.0, 10.0)).double()
    g = draw(tensors((b, d), -10.0, 10.0)).double()
    g2 = draw(tensors((b, d), -10.0, 10.0)).double()
    z = draw(tensors((b, d), -4.0, 4.0)).double()
    e, e2 = draw(tensors((b,), -50.0, 50.0)).double(), draw(tensors((b,), -50.0, 50.0)).double()
    eps = draw(tensors((b, 1), 1e-4, 1.0)).double()
    sigma = draw(tensors((b, 1), 0.05, 3.0)).double()
    temp = draw(st.sampled_from([1.0]) | f32(0.05, 10.0).map(float))
    x2 = x - eps * g + sigma * z
    return ChainState(x, e, g), ChainState(x2, e2, g2), eps, sigma, temp, z


def _ratio_tol(state, prop, eps, sigma, temp, z):
    """float64 bound for two evaluations of the log MH ratio: each sums D terms of size up to
    |z|^2 + |d/sigma|^2 plus |dE|/T, and forming d = x - x' + eps g' loses up to u64 (|x| + |x'| + eps|g'|) / sigma
    per coordinate (cancellation), times |z| + |d/sigma|. 64x margin over the sum of those."""
    ds = (state.x - prop.x + eps * prop.grad) / sigma
    terms = (z * z + ds * ds).sum(1) + (state.energy - prop.energy).abs() / temp
    cancel = ((state.x.abs() + prop.x.abs() + eps * prop.grad.abs()) / sigma * (z.abs() + ds.abs())).sum(1)
    return 64 * EPS64 * (terms + cancel + 1.0)


@PROPS(80)
@given(mala_moves())
def test_mala_fast_ratio_equals_explicit_ratio(move):
    """The fast form with the drawn z equals -dE/T + log q(x | x') - log q(x' | x) (mala.py docstring), for any
    x, gradients, energies, eps, sigma and temperature. float64, so the check is of the algebra (the library
    runs the same code in float32)."""
    state, prop, eps, sigma, temp, z = move
    fast = log_accept_ratio(state, prop, eps, sigma, temp, z=z.clone())
    explicit = log_accept_ratio(state, prop, eps, sigma, temp)
    # the explicit reference written out here from the module docstring, independent of the code under test
    def log_q(to, frm, grad):  # up to the shared constant
        return -((to - frm + eps * grad) ** 2).sum(1) / (2 * sigma.flatten() ** 2)
    ref = (state.energy - prop.energy) / temp + log_q(state.x, prop.x, prop.grad) - log_q(prop.x, state.x, state.grad)
    tol = _ratio_tol(state, prop, eps, sigma, temp, z)
    assert ((fast - ref).abs() <= tol).all(), (fast, ref)
    assert ((explicit - ref).abs() <= tol).all(), (explicit, ref)


@PROPS(60)
@given(mala_moves())
def test_mala_ratio_is_antisymmetric(move):
    """Detailed balance: log a(x -> x') = -log a(x' -> x), for the explicit form and for the fast form (whose
    reverse draw is z_rev = (x - x' + eps dE/dx(x')) / sigma)."""
    state, prop, eps, sigma, temp, z = move
    tol = _ratio_tol(state, prop, eps, sigma, temp, z)
    fwd, rev = log_accept_ratio(state, prop, eps, sigma, temp), log_accept_ratio(prop, state, eps, sigma, temp)
    assert ((fwd + rev).abs() <= tol).all()
    z_rev = (state.x - prop.x + eps * prop.grad) / sigma
    fwd = log_accept_ratio(state, prop, eps, sigma, temp, z=z.clone())
    rev = log_accept_ratio(prop, state, eps, sigma, temp, z=z_rev)
    assert ((fwd + rev).abs() <= tol).all()


# ----- samplers/controller.py: step-size rules ----------------------------------------------------------------
@st.composite
def accept_runs(draw):
    """(n_groups, [(accept (B,) bool, groups (B,) long), ...])."""
    g = draw(st.integers(1, 3))
    steps = []
    for _ in range(draw(st.integers(1, 25))):
        b = draw(st.integers(1, 6))
        acc = draw(st.lists(st.booleans(), min_size=b, max_size=b))
        grp = draw(st.lists(st.integers(0, g - 1), min_size=b, max_size=b))
        steps.append((torch.tensor(acc), torch.tensor(grp, dtype=torch.long)))
    return g, steps


def _group_means(acc, grp, g):
    return [acc[grp == k].float().mean().item() if (grp == k).any() else None for k in range(g)]


@PROPS(60)
@given(accept_runs(), st.sampled_from([0.05, 0.5, 2.0]))
def test_robbins_monro_step_in_bounds_and_moves_toward_target(run, rate):
    """For any acceptance sequence: each group's step stays within [min_step, max_step]; it does not shrink
    when the group's acceptance is above target, does not grow when below, and an unvisited group keeps it."""
    g, steps = run
    ctrl = StepSizeController(g, init_step=1e-2, rate=rate, min_step=2e-3, max_step=5e-2)
    lo, hi = torch.tensor(ctrl.log_min, dtype=torch.float32), torch.tensor(ctrl.log_max, dtype=torch.float32)
    for acc, grp in steps:
        old = ctrl.log_step.clone()
        ctrl.update(acc, grp)
        new = ctrl.log_step
        assert ((new >= lo) & (new <= hi)).all()  # clamp_ to the float32 bounds: exact
        for k, m in enumerate(_group_means(acc, grp, g)):
            if m is None:
                assert new[k] == old[k]
            elif m > ctrl.target:
                assert new[k] >= old[k]
            elif m < ctrl.target:
                assert new[k] <= old[k]
            if m is not None and m != ctrl.target and lo < old[k] < hi:
                assert new[k] != old[k] or new[k] in (lo, hi)  # |rate (m - target)| >= 1e-4 >> ulp(log step)


@PROPS(60)
@given(accept_runs(), st.sampled_from([0.05, 0.5, 2.0]), st.sampled_from([0.0, 0.5, 0.9]))
def test_paper004_rule_never_grows_and_shrinks_below_target(run, rate, smoothing):
    """Paper 004's rule: for any acceptance sequence the step never grows, stays >= min_step, and shrinks
    whenever the running acceptance (the first step sets it, then a <- s a + (1 - s) m) is below 0.67."""
    g, steps = run
    ctrl = StepSizeController(g, init_step=1e-2, rate=rate, min_step=2e-3, rule="paper004", smoothing=smoothing)
    lo = torch.tensor(ctrl.log_min, dtype=torch.float32)
    avg = [None] * g
    for acc, grp in steps:
        old = ctrl.log_step.clone()
        ctrl.update(acc, grp)
        new = ctrl.log_step
        assert (new <= old).all() and (new >= lo).all()
        for k, m in enumerate(_group_means(acc, grp, g)):
            if m is None:
                assert new[k] == old[k]
                continue
            avg[k] = m if avg[k] is None else smoothing * avg[k] + (1 - smoothing) * m
            # float32 running average vs this float64 one: differ by a few u32; 1e-4 keeps clear of that
            if avg[k] < ctrl.target - 1e-4 and old[k] > lo:
                assert new[k] < old[k]


# ----- schedules.py ------------------------------------------------------------------------------------------
@PROPS(40)
@given(st.integers(2, 5000))
def test_interpolation_coefficients(T):
    """Eq. 1: T levels, alpha 0 -> 1 strictly increasing, (alpha, beta) = (0, 1) then (1, 0), alpha + beta = 1."""
    alpha, beta = schedules.interpolation_coefficients(T)
    assert alpha.shape == beta.shape == (T,)
    assert (alpha[0], beta[0], alpha[-1], beta[-1]) == (0.0, 1.0, 1.0, 0.0)
    assert (alpha[1:] > alpha[:-1]).all()
    # each is a float64 value rounded once to float32: the sum is 1 within 2 u32
    assert ((alpha.double() + beta.double() - 1).abs() <= EPS32).all()


@PROPS(40)
@given(st.integers(1, 2000), f32(-20.0, 20.0), f32(0.01, 30.0))
def test_cosine_logsnr_endpoints_and_monotone(T, lam_max, gap):
    """Eq. 19-20: T + 1 levels from lam_max down to lam_min, strictly decreasing."""
    lam_min = lam_max - gap
    lam = schedules.cosine_logsnr(T, lam_max, lam_min)
    assert lam.shape == (T + 1,)
    # float64: the angle theta = a u + b is within a few u64 relative of exact, and lam = -2 log tan(theta) has
    # condition d lam / d theta * theta = 2 theta / (sin theta cos theta) (large as theta -> pi/2, lam -> -inf:
    # at lam = -50, ~1e11); 16 u64 times that, plus a few u64 |lam| for exp and log
    def tol(lam_end):
        th = math.atan(math.exp(-0.5 * lam_end))
        return 16 * EPS64 * (2 * th / (math.sin(th) * math.cos(th)) + abs(lam_end) + 1)
    assert abs(lam[0].item() - lam_max) <= tol(lam_max)
    assert abs(lam[-1].item() - lam_min) <= tol(lam_min)
    assert (lam[1:] < lam[:-1]).all()


@PROPS(40)
@given(st.integers(2, 2000))
@example(501)  # the largest T with a read stride of 1, and the first one without: an off-by-one lives here
@example(502)
def test_drl_logsnr_is_a_valid_schedule(T):
    """DRL's schedule: T + 1 strictly decreasing levels (so ``vp_levels`` accepts it) for every T it supports,
    and a clear error for a T it does not (found by this test: T > 501 read 1000 fine steps at stride 0 and
    gave repeated levels, which only ``vp_levels`` refused, without naming T)."""
    if T > 501:
        with pytest.raises(ValueError, match="DRL's schedule needs"):
            schedules.drl_logsnr(T)
        return
    lam = schedules.drl_logsnr(T)
    assert lam.shape == (T + 1,)
    assert (lam[1:] < lam[:-1]).all()


@PROPS(60)
@given(st.lists(f32(-20.0, 20.0), min_size=2, max_size=12, unique=True))
def test_vp_levels_preserve_variance(values):
    """For any strictly decreasing logSNR: abar^2 + sbar^2 = 1, abar_{t+1} = alpha_{t+1} abar_t, and one step
    x_{t+1} = alpha x_t + sigma eps keeps the VP marginal: sbar_{t+1}^2 = alpha^2 sbar_t^2 + sigma^2."""
    lam = torch.tensor(sorted(values, reverse=True), dtype=torch.float64)
    v = schedules.vp_levels(lam)
    # float64, all quantities in [0, 1]: a handful of roundings each, absolute error <= ~10 u64; 1e-13 is 400x
    tol = 1e-13
    assert ((v["abar"] ** 2 + v["sbar"] ** 2 - 1).abs() <= tol).all()
    assert ((v["abar"][1:] - v["alpha"] * v["abar"][:-1]).abs() <= tol).all()
    assert ((v["sbar"][1:] ** 2 - v["alpha"] ** 2 * v["sbar"][:-1] ** 2 - v["sigma"] ** 2).abs() <= tol).all()
    assert ((v["alpha"] > 0) & (v["alpha"] <= 1) & (v["sigma"] >= 0)).all()


@PROPS(60)
@given(st.integers(2, 300), st.integers(1, 300), st.data())
def test_soft_annealing_weights(T, n_total, data):
    """Alg. 4: t(n) runs from 0 (n = 0) to T - 1 (last stage) without going back; the log weights
    log p^(n)(t)/p_t(t) are -inf below t(n), equal above, and p^(n) is a distribution: sum_t p_t(t) e^w = 1."""
    n = data.draw(st.integers(0, n_total - 1))
    t_n = schedules.annealing_level(n, n_total, T)
    assert 0 <= t_n <= T - 1
    assert schedules.annealing_level(0, n_total, T) == 0
    if n_total > 1:
        assert schedules.annealing_level(n_total - 1, n_total, T) == T - 1
    if n + 1 < n_total:
        assert schedules.annealing_level(n + 1, n_total, T) >= t_n
    w = schedules.soft_annealing_log_weights(n, n_total, T)
    assert w.shape == (T,) and torch.isinf(w[:t_n]).all() and torch.isfinite(w[t_n:]).all()
    # float32 logsumexp of <= 300 equal terms: within a few u32 of log T, times log T <= 6
    assert abs(torch.logsumexp(w.double(), 0).item() - math.log(T)) <= 64 * EPS32


@PROPS(60)
@given(st.integers(0, 10**6), st.integers(1, 500), st.integers(1, 500), st.integers(0, 10**5), st.integers(0, 10**5))
def test_chain_length_between_start_and_end(step, start, end, hold, ramp):
    """App. C.2: K = start before ``hold``, end after the ramp, in between on it, and never decreasing over
    training when start <= end (never increasing when start >= end)."""
    k = schedules.chain_length(step, start, end, hold, ramp)
    assert min(start, end) <= k <= max(start, end)
    if step < hold:
        assert k == start
    if step >= hold + ramp:
        assert k == end
    k2 = schedules.chain_length(step + 1, start, end, hold, ramp)
    assert (k2 - k) * (end - start) >= 0


# ----- objectives/joint_time.py: paper 000's annealing levels --------------------------------------------------
@PROPS(80)
@given(st.integers(2, 400), st.none() | st.integers(2, 500))
def test_annealing_levels(T, L):
    """Alg. 3's levels: strictly increasing from 0 to T - 1, all T levels (L None or >= T) or exactly L of them."""
    levels = JointTime.annealing_levels(SimpleNamespace(cfg=SimpleNamespace(T=T, sample_levels=L)))
    assert levels[0] == 0 and levels[-1] == T - 1
    assert all(a < b for a, b in zip(levels, levels[1:]))
    assert len(levels) == (T if L is None else min(L, T))


# ----- buffers.py ------------------------------------------------------------------------------------------------
def _noise(shape):
    return lambda n, gen: torch.randn(n, *shape, generator=gen)


@PROPS(60)
@given(st.integers(1, 8), st.lists(st.integers(1, 12), min_size=1, max_size=6), st.data())
def test_fifo_buffer_keeps_the_newest_rows_unchanged(capacity, sizes, data):
    """FIFO: after any pushes the buffer holds exactly the newest min(total, capacity) rows, bit for bit, the
    oldest at the cursor (the next to be overwritten); sampling returns stored rows with in-range slots."""
    buf = ReplayBuffer(capacity, (2,), _noise((2,)))
    rows = []
    for n in sizes:
        x = data.draw(tensors((n, 2), -1e30, 1e30))
        rows.append(x)
        buf.push(x)
    pushed = torch.cat(rows)
    count = min(pushed.shape[0], capacity)
    assert len(buf) == count
    order = [(int(buf.cursor) - count + i) % capacity for i in range(count)]  # oldest first
    assert torch.equal(buf.data[order], pushed[-count:])
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    m = data.draw(st.integers(1, 10))
    x, idx = buf.sample(m, generator=gen)
    assert x.shape == (m, 2) and idx.shape == (m,)
    assert ((idx >= 0) & (idx < count)).all()
    assert torch.equal(x, buf.data[idx])


@PROPS(60)
@given(st.integers(1, 10), st.integers(1, 25), st.integers(0, 2**31 - 1))
def test_bank_slots_distinct_before_any_repeat(capacity, n, seed):
    """Bank mode (paper 004): slots are in range, a batch uses every slot before any repeats, the starting
    points are the stored values, and ``update`` writes chains back into exactly their slots."""
    gen = torch.Generator().manual_seed(seed)
    buf = ReplayBuffer(capacity, (3,), _noise((3,)), mode="bank", generator=gen)
    before = buf.data.clone()
    x, idx = buf.sample(n, generator=gen)
    assert ((idx >= 0) & (idx < capacity)).all()
    for start in range(0, n, capacity):  # every full round of `capacity` draws is a permutation
        chunk = idx[start:start + capacity]
        assert len(set(chunk.tolist())) == chunk.numel()
    assert torch.equal(x, before[idx])
    if n <= capacity:
        new = x + 1.0
        buf.update(new, idx)
        assert torch.equal(buf.data[idx], new)
        untouched = torch.ones(capacity, dtype=torch.bool)
        untouched[idx] = False
        assert torch.equal(buf.data[untouched], before[untouched])


# ----- metrics/ --------------------------------------------------------------------------------------------------
@st.composite
def sample_sets(draw):
    d = draw(st.integers(1, 3))
    n, m = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    return draw(tensors((n, d), -100.0, 100.0)), draw(tensors((m, d), -100.0, 100.0))


@PROPS(60)
@given(sample_sets(), st.randoms(use_true_random=False))
def test_energy_distance_and_mmd_are_metrics_of_empirical_laws(xy, rnd):
    """The V-statistic energy distance and the biased MMD^2 (distances between the two empirical laws): symmetric,
    >= 0, 0 for a set against itself, blind to the order of the points and (ED) to a common shift."""
    x, y = xy
    # float64 sums of <= 100 distances of size <= 350: each mean within ~100 u64 relative of the exact one,
    # so the combination is within ~400 u64 * the largest mean distance; 1e-11 * scale is ~100x that
    scale = float(torch.cdist(torch.cat([x, y]).double(), torch.cat([x, y]).double()).max()) + 1.0
    tol = 1e-11 * scale
    ed = energy_distance(x, y)
    assert ed >= -tol
    assert abs(energy_distance(y, x) - ed) <= tol
    assert abs(energy_distance(x, x)) <= tol
    perm = list(range(x.shape[0]))
    rnd.shuffle(perm)
    assert abs(energy_distance(x[perm], y) - ed) <= tol
    c = torch.tensor([rnd.uniform(-50, 50) for _ in range(x.shape[1])], dtype=torch.float64)
    # the shifted inputs are rounded once more (<= u64 * 150 per coordinate, 1.7e-14): each distance moves by
    # <= 2 sqrt(3) of that, ED (2 + 1 + 1 means) by <= 4e-13
    assert abs(energy_distance(x.double() + c, y.double() + c) - ed) <= tol + 1e-12
    # MMD^2 with a fixed bandwidth: kernel values in [0, 1], three means of <= 400 terms: 1e-12 absolute
    h = rnd.uniform(0.5, 50.0)
    k = mmd(x, y, bandwidth=h)
    assert k >= -1e-12 and abs(mmd(y, x, bandwidth=h) - k) <= 1e-12 and abs(mmd(x, x, bandwidth=h)) <= 1e-12


@PROPS(60)
@given(st.lists(f32(-1e3, 1e3), min_size=1, max_size=30), st.lists(f32(-1e3, 1e3), min_size=1, max_size=30),
       f32(0.0, 0.5), f32(0.0, 0.5))
def test_sample_precision_is_a_fraction_and_falls_with_q(samples, heldout, q1, q2):
    """A fraction in [0, 1]; held-out data scores 1 at q = 0 ("at or above"); never rises as q rises."""
    s, h = torch.tensor(samples), torch.tensor(heldout)
    p1, p2 = sample_precision(s, h, min(q1, q2)), sample_precision(s, h, max(q1, q2))
    assert 0.0 <= p2 <= p1 <= 1.0
    assert sample_precision(h, h, 0.0) == 1.0


# ----- experiments/claims.py -------------------------------------------------------------------------------------
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
cells = st.none() | st.just(math.nan) | finite


@PROPS(80)
@given(st.lists(cells, max_size=8), st.randoms(use_true_random=False), finite)
def test_mean_std(values, rnd, shift):
    """Mean and n-1 std of the finite values only: order-free, mean within [min, max], std >= 0 and blind to a
    common shift; two values a, b have std |a - b| / sqrt(2)."""
    m, sd = mean_std(values)
    fin = [v for v in values if v is not None and math.isfinite(v)]
    if not fin:
        assert math.isnan(m) and math.isnan(sd)
        return
    shuffled = list(values)
    rnd.shuffle(shuffled)
    m2, sd2 = mean_std(shuffled)
    big = max(abs(v) for v in fin) + abs(shift) + 1.0
    # float64, <= 8 values of size <= big: the mean is within 8 u64 big, each x - m within 9 u64 big, so the std
    # is within ~20 u64 big (absolute) of the exact one; a shift adds one rounding (u64 big) per value.
    # 1e-12 big is ~400x those bounds.
    tol = 1e-12 * big
    assert abs(m2 - m) <= tol and min(fin) - tol <= m <= max(fin) + tol
    if len(fin) == 1:
        assert math.isnan(sd)
        return
    assert sd >= 0 and abs(sd2 - sd) <= tol
    assert abs(mean_std([v + shift for v in fin])[1] - sd) <= tol
    a, b = fin[0], fin[1]
    assert abs(mean_std([a, b])[1] - abs(a - b) / math.sqrt(2)) <= tol


@PROPS(80)
@given(st.none() | st.floats(width=64) | st.integers(-10**6, 10**6).map(float))
@example(-0.0)
@example(-1e-300)
@example(-4e-5)
@example(-5e-324)
@example(-sys.float_info.max)  # rounds to 4 digits past the largest float: compared as decimals, not floats
def test_fmt_number(v):
    """``-`` for None/NaN, never a negative zero, and 4 significant digits of the value otherwise."""
    s = fmt_number(v)
    if v is None or math.isnan(v):
        assert s == "-"
        return
    assert not re.fullmatch(r"-0(\.0*)?(e[+-]?\d+)?", s)
    if math.isfinite(v):
        # .4g rounds to 4 significant digits: relative error <= 5e-4 (exact decimal arithmetic)
        assert abs(Decimal(s) - Decimal(v)) <= Decimal("5e-4") * abs(Decimal(v))
    else:
        assert float(s) == v


@st.composite
def claim_tables(draw):
    seeds = draw(st.integers(1, 4))
    per = {arm: draw(st.lists(st.none() | finite, min_size=seeds, max_size=seeds)) for arm in ("a", "b")}
    table = {arm: {"m": dict(zip(("mean", "std"), mean_std(v)), per_seed=v)} for arm, v in per.items()}
    margin = draw(st.floats(0.0, 1e3))
    return table, margin, draw(st.sampled_from(["lower", "higher"]))


FLIP = {"holds": "reversed", "reversed": "holds", "not shown": "not shown"}


@PROPS(100)
@given(claim_tables())
def test_decide_flips_when_arms_or_direction_swap(args):
    """The paired verdict is antisymmetric: swapping the arms (or, with no diverged cell, "lower" for "higher")
    turns "holds" into "reversed" and back and leaves "not shown" (margin and spread are symmetric in the arms)."""
    table, margin, better = args
    other = "higher" if better == "lower" else "lower"
    v = decide(Claim("t", "a", "b", "m", better, margin), table)["verdict"]
    assert decide(Claim("t", "b", "a", "m", better, margin), table)["verdict"] == FLIP[v]
    # a diverged cell (None) is its arm's worst value in *either* direction, so the direction swap flips the
    # verdict only when every cell has a value (found by this test: a diverged arm loses both ways, rightly)
    if all(x is not None for arm in table.values() for x in arm["m"]["per_seed"]):
        assert decide(Claim("t", "a", "b", "m", other, margin), table)["verdict"] == FLIP[v]


# ----- config.py / config_hash.py: a config written and read back --------------------------------------------------
overrides = st.fixed_dictionaries({
    "train.steps": st.integers(1, 10**7),
    "train.lr": st.floats(1e-9, 10.0),
    "train.seed": st.integers(0, 2**31 - 1),
    "train.batch_size": st.integers(1, 4096),
    "train.ema": st.none() | st.floats(0.0, 0.9999, exclude_min=True),
    "train.grad_clip": st.none() | st.floats(1e-3, 1e3),
    "data.name": st.sampled_from(["rings", "checkerboard", "eight_gaussians"]),
})


@PROPS(25)
@given(overrides)
def test_config_written_and_read_back_is_the_same_run(values):
    """``--set`` values survive ``save_config`` + ``load_config``: the same Config, the same run and full hashes
    (a resumed run would otherwise refuse its own checkpoints)."""
    cfg = load_config(None, [f"{k}={'null' if v is None else repr(v)}" for k, v in values.items()])
    for k, v in values.items():
        sec, key = k.split(".")
        assert getattr(getattr(cfg, sec), key) == v
    from ebmlab.config import save_config
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        save_config(cfg, path)
        again = load_config(path)
    assert again == cfg
    assert run_hash(again.to_dict()) == run_hash(cfg.to_dict())
    assert full_hash(again.to_dict()) == full_hash(cfg.to_dict())


# ----- training/checkpoint.py: safetensors round trip ----------------------------------------------------------------
DTYPES = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
          torch.bfloat16: torch.int16}


@st.composite
def tensor_dicts(draw):
    out = {}
    for i in range(draw(st.integers(1, 4))):
        dtype = draw(st.sampled_from(list(DTYPES)))
        shape = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
        vals = draw(st.lists(st.floats(width=32), min_size=math.prod(shape), max_size=math.prod(shape)))
        out[f"t{i}.w"] = torch.tensor(vals, dtype=torch.float32).reshape(shape).to(dtype)
    return out


@PROPS(25)
@given(tensor_dicts(), st.integers(0, 10**8))
def test_checkpoint_round_trip_is_bit_exact(tensors_in, step):
    """Any float tensors (NaN, inf, -0 and subnormals included) come back from a checkpoint with the same dtype,
    shape and bits; the sidecar carries the step."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp), step, tensors_in, {"config_hash": "x"})
        back, meta = load_checkpoint(path)
    assert meta["step"] == step and set(back) == set(tensors_in)
    for k, v in tensors_in.items():
        w = back[k]
        assert w.dtype == v.dtype and w.shape == v.shape
        assert torch.equal(w.view(DTYPES[v.dtype]), v.view(DTYPES[v.dtype]))  # bits: NaN == NaN, -0 != +0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
