"""``benchmarks/bench_cold_ops.py`` (issue 19, docs/performance.md "Cold ops"): its hand-written MLP gradient is
the autograd one, its NumPy arithmetic is MALA's, and a short run reports every quantity."""
from __future__ import annotations

import json

import pytest
import torch

from ebmlab.config import ModelConfig
from ebmlab.energies.base import energy_and_grad
from ebmlab.energies.build import build_energy
from tests.scripts import script_module



def _step_args() -> tuple:
    """A MALA step's inputs (x, E, dE/dx, the proposal's E and dE/dx, eps, sigma) for 32 chains in 3-D."""
    x, e, g = torch.randn(32, 3), torch.randn(32), torch.randn(32, 3)
    eps = torch.full((32, 1), 0.05)
    return x, e, g, e + torch.randn(32), g + torch.randn(32, 3), eps, torch.sqrt(2 * eps)


@pytest.fixture(scope="module")
def bench():
    with script_module("benchmarks/bench_cold_ops.py", "ebmlab_bench_cold_ops") as module:
        yield module


def test_the_hand_written_gradient_is_autograds(bench):
    torch.manual_seed(1)
    net = build_energy(ModelConfig(), (10,))
    torch.nn.init.normal_(net.out.weight)  # not the tiny default head: the blocks' terms must matter
    x = torch.randn(64, 10)
    e, g = bench.manual_energy_and_grad(net, x)
    e_ref, g_ref = energy_and_grad(net, x)
    assert torch.allclose(e, e_ref, atol=1e-5) and torch.allclose(g, g_ref, atol=1e-5, rtol=1e-4)


def test_the_numpy_arithmetic_is_malas(bench):
    args = _step_args()
    ref = bench.mh_ops(*args, torch.Generator().manual_seed(3))
    got = bench.numpy_ops(*args, torch.Generator().manual_seed(3))
    assert all(torch.allclose(r, torch.from_numpy(v), atol=1e-5) for r, v in zip(ref, got))


def test_a_short_run_reports_every_quantity(bench, tmp_path, capsys):
    out = bench.main(["--reps", "2", "--json", str(tmp_path / "r.json")])
    assert set(out["cpu_us"]) == {"pass", "mh_cold", "mh_warm", "numpy_cold", "numpy_warm", "mh_inference_cold",
                                  "manual_grad", "autograd"}
    assert all(q["median"] > 0 for q in out["cpu_us"].values())
    assert json.loads((tmp_path / "r.json").read_text())["ratios_cpu"].keys() == out["ratios_cpu"].keys()
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("{")


def test_the_fusable_arithmetic_is_malas(bench):
    """What ``--compile`` hands to torch.compile, run eagerly, gives mh_ops's numbers from the same draws."""
    args = _step_args()
    ref = bench.mh_ops(*args, torch.Generator().manual_seed(3))
    got = bench.compiled_ops(bench._fusable)(*args, torch.Generator().manual_seed(3))
    assert all(torch.equal(r, v) for r, v in zip(ref, got))


def test_the_inference_mode_arithmetic_is_malas_bit_for_bit(bench):
    """``mh_inference_cold`` times the same ops as ``mh_cold``: the same numbers from the same draws."""
    args = _step_args()
    ref = bench.mh_ops(*args, torch.Generator().manual_seed(3))
    got = bench.inference_mode_ops(*args, torch.Generator().manual_seed(3))
    assert all(torch.equal(r, v) for r, v in zip(ref, got))
