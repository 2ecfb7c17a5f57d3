"""Issue 20: no host synchronisation inside a sampler chain on CUDA.

``torch.cuda.set_sync_debug_mode("error")`` makes synchronising CUDA calls raise ("called a
synchronizing CUDA operation"): reading a device tensor on the host (``.item()``, ``bool``,
``float``, ``.tolist()``), ``nonzero`` and boolean-mask indexing, blocking copies between host and
device, including ``torch.tensor(number, device="cuda")`` / ``torch.as_tensor`` of a Python number
(a copy from pageable memory). Around one ``samplers.run_chain`` call (after a warm-up chain, so that
lazy CUDA/cuBLAS initialisation is not counted), on an MLP and on a ResNet image energy:
MALA with a ``StepSizeController`` (one group; several groups as paper 000's per-level step sizes),
unadjusted Langevin with a fixed float step (papers 001, 002, 004), a per-chain step tensor on the
device (paper 003), a per-step noise schedule (paper 002), and a gradient through the last step
(paper 001); fp32 and bf16 autocast. ``check_finite=False`` drops the
chain's final non-finite check, its one deliberate host read (the caller checks its loss instead).
"""
from __future__ import annotations

import inspect

import pytest
import torch

from ebmlab.config import ModelConfig
from ebmlab.energies.build import build_energy
from ebmlab.samplers import StepSizeController, langevin, mala, run_chain
from tests.cuda.common import CUDA_ONLY

pytestmark = CUDA_ONLY

K = 10
# The final non-finite check is the chain's one host read; skip it where run_chain allows.
NO_FINAL_CHECK = {"check_finite": False} if "check_finite" in inspect.signature(run_chain).parameters else {}


def _energy(kind: str):
    torch.manual_seed(0)
    if kind == "mlp":
        return build_energy(ModelConfig(), (10,)).cuda(), (256, 10)
    cfg = ModelConfig(name="resnet", channels=[16, 32], depth=1, norm="group", activation="swish")
    return build_energy(cfg, (3, 16, 16)).cuda(), (64, 3, 16, 16)


def _autocast(amp: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp)


def _no_sync(fn):
    """Run ``fn`` once untimed (warm-up), then again with every synchronising CUDA call raising."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return out


def test_the_debug_mode_catches_a_sync():
    """The check is real on this build: a host read raises in "error" mode."""
    x = torch.randn(8, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchronizing"):
            bool((x > 0).any())
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("kind", ["mlp", "resnet"])
def test_mala_chain_with_step_size_controller_never_syncs(kind, groups, amp):
    energy, shape = _energy(kind)
    x = torch.randn(shape, device="cuda")
    ctrl = StepSizeController(groups, init_step=1e-3).cuda()
    group_of = torch.arange(shape[0], device="cuda") % groups if groups > 1 else None
    g = torch.Generator("cuda").manual_seed(1)
    start = ctrl.log_step.clone()

    def chain():
        with _autocast(amp):
            return run_chain(mala, energy, x, K, None, controller=ctrl, groups=group_of, generator=g,
                             **NO_FINAL_CHECK)

    x_out, info = _no_sync(chain)
    assert x_out.shape == x.shape and torch.isfinite(x_out).all()
    assert info.accept_rate.shape == (K,)
    assert not torch.equal(ctrl.log_step, start)  # the controller adapted, on the device


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("variant", ["fixed_step", "tensor_step", "noise_schedule", "grad_last"])
@pytest.mark.parametrize("kind", ["mlp", "resnet"])
def test_langevin_chain_never_syncs(kind, variant, amp):
    energy, shape = _energy(kind)
    x = torch.randn(shape, device="cuda")
    g = torch.Generator("cuda").manual_seed(2)
    kw = dict(NO_FINAL_CHECK)
    step = 1e-3
    if variant == "tensor_step":  # paper 003's refinement: one step size per chain, on the device
        step = torch.full((shape[0],), 1e-3, device="cuda")
    if variant == "noise_schedule":  # paper 002: a per-step noise std, already on the device
        kw["noise_scale"] = torch.linspace(0.01, 0.001, K, device="cuda")
    if variant == "grad_last":  # paper 001: a graph to the parameters through the last step
        kw["grad"] = "last"

    def chain():
        with _autocast(amp):
            return run_chain(langevin, energy, x, K, step, temperature=0.01, generator=g, **kw)

    x_out, info = _no_sync(chain)
    assert x_out.shape == x.shape and torch.isfinite(x_out).all()
    assert info.step_size.shape == (K,)
    if variant == "grad_last":
        assert x_out.requires_grad


@pytest.mark.parametrize("sampler", ["mala", "langevin"])
def test_a_progress_bar_over_the_chain_adds_no_sync(sampler, monkeypatch):
    """``ebmlab sample``'s bar (samplers/progress.py) is ticked on the host once per step: with it open, the
    chains (MALA with the controller; the fixed-step Langevin fast path) still never synchronise."""
    import tqdm.auto

    from ebmlab.samplers.progress import sampling_progress

    bars = []
    real = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, **kw: bars.append(real(*a, **kw)) or bars[-1])
    energy, shape = _energy("mlp")
    x = torch.randn(shape, device="cuda")
    g = torch.Generator("cuda").manual_seed(3)
    ctrl = StepSizeController(1, init_step=1e-3).cuda()

    def chain():
        with sampling_progress(K, enabled=True):
            if sampler == "mala":
                return run_chain(mala, energy, x, K, None, controller=ctrl, generator=g, **NO_FINAL_CHECK)
            return run_chain(langevin, energy, x, K, 1e-3, generator=g, **NO_FINAL_CHECK)

    x_out, _ = _no_sync(chain)
    assert torch.isfinite(x_out).all() and [b.n for b in bars] == [K, K]  # the warm-up's bar and the checked one
