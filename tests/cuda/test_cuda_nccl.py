"""Issue 20: the NCCL process group through ``torchrun --nproc_per_node 1`` (one GPU is enough).

``nccl_worker.py`` runs under torchrun (as the gloo launches of ``tests/unit/test_distributed.py``),
checks that one process initialises nothing, then trains paper 003 on digits through every
collective of ``training/distributed.py`` on an NCCL group of one, resumes it, and compares with a
plain single-process run; see its docstring. A second launch runs ``ebmlab train`` itself under
torchrun on the GPU (one process: the torchrun environment must not change a single-GPU run).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ebmlab.training.logging import read_metrics
from tests.cuda.common import CUDA_ONLY, cuda_overrides

pytestmark = CUDA_ONLY

ROOT = Path(__file__).resolve().parents[2]


def _launcher() -> list[str]:
    """torchrun of this interpreter (beside it in a venv), else its module form."""
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    paths = [str(ROOT), str(ROOT / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _run(args: list[str]) -> subprocess.CompletedProcess:
    cmd = _launcher() + ["--standalone", "--nproc_per_node", "1"] + args
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)
    assert res.returncode == 0, f"torchrun failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def test_one_process_nccl_group_takes_every_collective_path(tmp_path):
    res = _run([str(ROOT / "tests" / "cuda" / "nccl_worker.py"), str(tmp_path)])
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["ok"] and len(result["losses"]) == 4


def test_ebmlab_train_under_torchrun_one_gpu(tmp_path):
    run = tmp_path / "run"
    args = ["-m", "ebmlab", "train", "--out", str(run)]
    for o in cuda_overrides("hybrid", "train.steps=3", "train.checkpoint_every=3", "eval.n_samples=64",
                            "eval.grid_size=16", "eval.long_run_factor=1", "eval.plots=false"):
        args += ["--set", o]
    _run(args)
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    assert not list((run / "checkpoints").glob("*.rank*.safetensors"))  # one process: no rank files
    assert (run / "checkpoints" / "step_00000003.safetensors").is_file()
    assert "sample_energy_distance" in json.loads((run / "metrics.json").read_text())
