"""The per-step shortcuts of the chain loop (issue 19, item 2) give the same numbers, bit for bit, as the
plain arithmetic they replace: the MALA step (proposal, MH ratio with the fused ``alpha=0.5`` add, the
accept) written out here as at commit da0cf22, the diagnostics reduced once per chain in stacked
form, the controller's (B, 1, ...) step, and the Langevin ``move``/``scales`` split."""
import pytest
import torch

from ebmlab.samplers import StepSizeController, langevin, mala, run_chain
from ebmlab.samplers.base import ChainState, init
from ebmlab.samplers.diagnostics import _row_means, _step_means


def quad(x, **cond):  # (B, ...) -> (B,)
    return 0.5 * x.flatten(1).pow(2).sum(1) + 0.1 * x.flatten(1).sin().sum(1)


def _reference_mala_step(energy, state, eps, sigma, generator, temperature=1.0):
    """The MALA step as written before the fast paths (torch.randn / torch.rand, three separate ops for
    the ratio's last term)."""
    x = state.x
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    x_prop = (x - eps * state.grad) + sigma * z
    prop = init(energy, x_prop)
    log_target = (state.energy - prop.energy) / temperature if temperature != 1.0 else state.energy - prop.energy
    ds = torch.addcmul(state.x - prop.x, eps, prop.grad).div_(sigma)
    log_a = log_target + 0.5 * ((z - ds) * (z + ds)).flatten(1).sum(1)
    u = torch.rand(log_a.shape, generator=generator, dtype=log_a.dtype)
    accept = u.log_() < log_a
    keep = accept.view(-1, *([1] * (x.dim() - 1)))
    return ChainState(torch.where(keep, prop.x, x), torch.where(accept, prop.energy, state.energy),
                      torch.where(keep, prop.grad, state.grad)), accept


@pytest.mark.parametrize("shape", [(64, 2), (16, 1, 4, 4)])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_mala_step_matches_plain_arithmetic(shape, temperature):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    eps = torch.full((shape[0],) + (1,) * (len(shape) - 1), 0.3)
    sigma = torch.sqrt(eps * (2.0 * temperature))
    s_new = s_ref = init(quad, x)
    g_new, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(5):
        s_new, info = mala.step(quad, s_new, eps, noise_scale=sigma, temperature=temperature, generator=g_new)
        s_ref, accept = _reference_mala_step(quad, s_ref, eps, sigma, g_ref, temperature)
        assert torch.equal(info.accept_rate, accept)
        assert all(torch.equal(a, b) for a, b in zip(s_new, s_ref))
    assert 0 < int(accept.sum()) < shape[0]  # both branches of the accept were exercised


def test_langevin_move_is_propose():
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    state = init(quad, x)
    x1, eps, sigma, z = langevin.propose(state, 0.05, generator=torch.Generator().manual_seed(2))
    assert torch.equal(x1, langevin.move(state.x, state.grad, eps, sigma, z))
    assert torch.equal(sigma, torch.sqrt(eps * 2.0)) and eps.shape == (8, 1)
    assert langevin.scales(x, eps, sigma, 1.0) == (eps, sigma)  # per-chain tensors pass through as they are
    with pytest.raises(ValueError):
        langevin.scales(x, -1.0, None, 1.0)


@pytest.mark.parametrize("batch", [1, 7, 64, 256, 1000])
def test_stacked_diagnostics_equal_per_step_means(batch):
    g = torch.Generator().manual_seed(batch)
    energies = [torch.randn(batch, generator=g) * 10.0 ** k for k in range(-2, 3)]
    accepts = [torch.rand(batch, generator=g) < 0.6 for _ in range(5)]
    assert torch.equal(_row_means(energies), torch.stack([t.mean() for t in energies]))
    assert torch.equal(_row_means(accepts), torch.stack([t.float().mean() for t in accepts]))
    one_value = [torch.tensor([0.013 * 1.3 ** k]).exp().expand(batch, 1) for k in range(5)]  # a one-group controller
    per_chain = [torch.rand(batch, 1, generator=g) for _ in range(5)]  # several groups
    fixed = [torch.full((batch, 1), 0.01)] * 5  # a fixed step: one tensor
    for col in (one_value, per_chain, fixed):
        assert torch.equal(_step_means(col), torch.stack([t.float().mean() for t in col]))


def test_controller_per_chain_step_and_update():
    groups = torch.tensor([0, 2, 1, 2])
    for n in (1, 3):
        c = StepSizeController(n, 0.02)
        c.log_step.add_(torch.linspace(0, 0.5, n))
        ref = c.step_size(groups if n > 1 else torch.zeros(4, dtype=torch.long)).view(-1, 1)
        assert torch.equal(c.per_chain_step(groups, (4, 1)), ref)
    c = StepSizeController(1, 0.02)
    before = c.log_step.clone()
    accept = torch.tensor([True, False, True, True])
    c.update(accept, torch.zeros(4, dtype=torch.long))
    expected = (before + (accept.float().mean() - 0.574) * 0.05).clamp(c.log_min, c.log_max)
    assert torch.equal(c.log_step, expected) and not c.log_step.requires_grad


def test_controlled_chain_reports_the_steps_it_used():
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    steps = []
    ctrl = StepSizeController(1, 0.5)
    _, info = run_chain(mala, quad, x, 6, None, controller=ctrl, generator=torch.Generator().manual_seed(1),
                        callback=lambda i, s, inf: steps.append(inf.step_size.float().mean()))
    assert torch.equal(info.step_size, torch.stack(steps))
    assert info.accept_rate.shape == info.energy.shape == (6,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", [{}, {"final_energy": False}, {"temperature": 0.5}, {"noise_scale": 0.03},
                                {"step_size": "per_chain"}, {"shape": (8, 1, 2, 2)}])
def test_fixed_step_langevin_loop_equals_the_general_loop(monkeypatch, dtype, kw):
    """``langevin.fixed_step_chain`` (run_chain's loop for a fixed-step unadjusted chain) gives the points
    and every diagnostic of the general loop, bit for bit."""
    kw = dict(kw)
    shape = kw.pop("shape", (64, 3))
    step = 0.02
    if kw.pop("step_size", None) == "per_chain":
        step = torch.rand(shape[0], generator=torch.Generator().manual_seed(2), dtype=dtype) * 0.02 + 0.001
    outs, calls, real = [], [], langevin.fixed_step_chain
    monkeypatch.setattr(langevin, "fixed_step_chain", lambda *a, **k: calls.append(1) or real(*a, **k))
    for fast in (True, False):
        if not fast:
            assert calls  # the first run took the fixed-step loop
            monkeypatch.setattr(langevin, "fixed_step_chain", None)
        x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
        y, info = run_chain(langevin, quad, x, 12, step, generator=torch.Generator().manual_seed(1), **kw)
        outs.append((y, *info))
    for a, b in zip(*outs):
        assert torch.equal(a, b) or (a.isnan().all() and b.isnan().all())


def test_chain_info_cat_keeps_the_device_of_the_chains_that_stepped():
    """Issue 20 (found on the GPU): paper 000's annealing concatenates a zero-step fitting chain (made on
    the CPU) with the GPU chains' diagnostics; ``cat`` puts every part on the stepping chains' device
    (the meta device stands in for CUDA here) and a recorder of no steps reports on the chain's device."""
    from ebmlab.samplers.diagnostics import ChainInfo, Recorder

    stepped = ChainInfo(*(torch.zeros(3, device="meta") for _ in range(4)))
    out = ChainInfo.cat([ChainInfo.empty(), stepped, ChainInfo.empty()])
    assert out.energy.device.type == "meta" and out.energy.shape == (3,)
    assert Recorder(full=False).info(torch.zeros(2, device="meta")).energy.device.type == "meta"
    assert ChainInfo.cat([ChainInfo.empty(), ChainInfo.empty()]).energy.shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ais_resampling_test_agrees_with_the_ess_away_from_its_bound(dtype):
    """``ais._below`` (sum w² > 1 / bound, a dot product) says what ``effective_sample_size(w) < bound`` says, for
    weights from equal to one-dominated, at every bound not within 1e-5 of the ESS (the dot product may round the
    sum's last bit otherwise)."""
    from ebmlab.samplers.ais import _below, effective_sample_size
    g = torch.Generator().manual_seed(0)
    checked = 0
    for spread in (0.0, 0.1, 1.0, 3.0, 10.0, 50.0):
        for b in (2, 17, 256, 4096):
            lw = spread * torch.randn(b, generator=g, dtype=dtype) + 7.0
            ess = float(effective_sample_size(lw))
            for bound in torch.linspace(0.5, b + 0.5, 41, dtype=torch.float64).tolist():
                if abs(ess - bound) > 1e-5 * ess:
                    assert _below(lw, bound) == (ess < bound), (spread, b, bound, ess)
                    checked += 1
    assert checked > 900


def test_ais_diagnostics_reduced_once_are_the_per_stage_reductions_bit_for_bit():
    """``ais._info`` reduces the stages' acceptances, steps and energies as three stacked tensors instead of one
    reduction per stage (~120 ops per default update): the same numbers, bit for bit."""
    from ebmlab.samplers import ais as ais_mod
    g = torch.Generator().manual_seed(4)
    for b, shape in ((256, (1,)), (37, (1, 1, 1))):
        accepts = [torch.rand(b, generator=g) < 0.6 for _ in range(30)]
        steps = [torch.full((b, *shape), float(torch.rand(1, generator=g))) for _ in range(30)]
        energies = [torch.randn(b, generator=g) * 10.0 ** float(torch.randint(-3, 4, (1,), generator=g)) for _ in range(30)]
        info = ais_mod._info(accepts, steps, energies)
        assert torch.equal(info.accept_rate, torch.stack([torch.mean(a, dtype=torch.float32) for a in accepts]))
        assert torch.equal(info.step_size, torch.stack([t.flatten()[0] for t in steps]))
        assert torch.equal(info.energy, torch.stack([t.mean() for t in energies]))


def test_an_acceptance_driven_controller_is_refused_on_unadjusted_langevin():
    """Found by an audit (the README's sampler example with langevin for mala): unadjusted Langevin accepts every move,
    so a Robbins-Monro controller grew the step until the chains diverged (FloatingPointError). Paper 004's
    shrink-only rule never grows it, and stays allowed."""
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="unadjusted Langevin accepts every move, so it would only grow the step"):
        run_chain(langevin, quad, x, 3, None, controller=StepSizeController(1, 0.1))
    out, _ = run_chain(langevin, quad, x, 3, None, controller=StepSizeController(1, 0.1, rule="paper004"),
                       generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(out).all()
