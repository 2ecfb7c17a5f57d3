"""``benchmarks/bench_op_census.py`` (issue 19, docs/performance.md "An op census of the update"): it counts each
dispatched op once under the ebmlab line that called it, and its counts of the update and the lean reference add up."""
from __future__ import annotations

import json

import pytest
import torch

from ebmlab.samplers import ais
from tests.scripts import script_module


@pytest.fixture(scope="module")
def bench():
    with script_module("benchmarks/bench_op_census.py", "ebmlab_bench_op_census") as module:
        yield module


def test_each_op_is_counted_once_under_the_ebmlab_line_that_called_it(bench):
    x = torch.randn(8, 3)
    counts = bench.census(lambda: ais._quad(x, 0.5))  # 0.5 * inv_var * x.flatten(1).pow(2).sum(1); flatten(1) of
    ops = {op: src for op, src in counts}              # a 2-D tensor is the tensor itself: no op
    assert set(ops) == {"aten.pow.Tensor_Scalar", "aten.sum.dim_IntList", "aten.mul.Tensor"}
    assert sum(counts.values()) == 3
    assert all(src.startswith("samplers/ais.py:") for src in ops.values())
    assert bench.census(lambda: x + 1) == {("aten.add.Tensor", bench.NO_SOURCE): 1}


def test_the_census_of_the_update_adds_up(bench, tmp_path):
    out = tmp_path / "census.json"
    res = bench.main(["--no-time", "--batch", "16", "--top", "3", "--json", str(out)])
    assert res["extra_ops"] == res["ops_update"] - res["ops_ref"] > 0
    assert sum(a - b for a, b in res["by_op"].values()) == res["extra_ops"]
    assert res["chain_steps"] == 40 and res["by_op"]["aten.where.self"][1] == 0  # the reference selects nothing
    assert not any(src.startswith("energies/") for src in res["by_source"])
    assert "timing" not in res and json.loads(out.read_text())["extra_ops"] == res["extra_ops"]
