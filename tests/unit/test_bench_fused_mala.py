"""``benchmarks/bench_fused_mala.py`` (issue 19, docs/performance.md "A fused MALA step: the probe"): its two C++
kernels make the same decisions and the same new state as ``samplers/mala.step`` from the same draws, its fused
chain adapts the step as ``run_chain`` does, and a short run reports every quantity. Slow: the first build of the
kernels takes about a minute; skipped where no C++ compiler or ninja is installed."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from ebmlab.config import ModelConfig
from ebmlab.energies.build import build_energy
from ebmlab.samplers import mala
from ebmlab.samplers.base import StepSizeController, run_chain
from tests.scripts import script_module

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("c++") is None or shutil.which("ninja") is None,
                                 reason="building the probe's kernels needs a C++ compiler and ninja")]


@pytest.fixture(scope="module")
def bench():
    with script_module("benchmarks/bench_fused_mala.py", "ebmlab_bench_fused_mala") as module:
        yield module


@pytest.fixture(scope="module")
def ext(bench):
    try:
        return bench.build()
    except (RuntimeError, OSError, ImportError) as exc:  # a machine without Python headers or a working toolchain
        pytest.skip(f"the probe's kernels did not build here: {str(exc).splitlines()[0] if str(exc) else exc!r}")


def test_the_kernels_decide_as_mala_step(bench, ext):
    torch.manual_seed(3)
    energy = build_energy(ModelConfig(), (10,))
    out = bench.check(ext, energy, torch.randn(256, 10))
    assert 0 < out["accepted"] < out["chains"]  # both branches of the test ran
    assert out["decisions_differ"] == 0
    assert out["max_abs_diff_x"] == 0.0 and out["max_abs_diff_energy"] == 0.0 and out["max_abs_diff_grad"] == 0.0


def test_the_fused_chain_is_run_chains_chain(bench, ext):
    # the same draws in the same order and the same controller: the same points after 20 adapting steps
    torch.manual_seed(4)
    energy = build_energy(ModelConfig(width=64, depth=2), (2,))
    torch.nn.init.normal_(energy.out.weight)
    x = torch.randn(128, 2)
    ref = run_chain(mala, energy, x, 20, 0.5, controller=StepSizeController(1, 0.5),
                    generator=torch.Generator().manual_seed(0))
    fused = bench.fused_chain(ext, energy, x, 20, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(fused.x, ref[0])


def test_a_short_run_reports_every_quantity(bench, ext, tmp_path, capsys):  # ext: built (or skipped) first
    result = bench.main(["--blocks", "2", "--energies", "small_mlp", "--json", str(tmp_path / "out.json")])
    case = result["cases"]["small_mlp"]
    assert case["check"]["decisions_differ"] == 0
    assert set(case["over_floor"]) == {"ebmlab_mala", "fused_mala"}
    assert case["over_floor"]["fused_mala"]["cpu"]["median"] > 0
    assert json.loads((tmp_path / "out.json").read_text())["cases"]["small_mlp"]["check"] == case["check"]
    assert "fused / ebmlab" in capsys.readouterr().out
