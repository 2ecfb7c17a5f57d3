"""Round 46: the validation selection (train.select_*) when training runs on 2 ranks through torchrun (gloo, CPU).

Every launch is real (``torchrun --standalone --nproc_per_node 2``, test_distributed's helpers). The user-data run is
launched through a small wrapper of ``ebmlab``'s entry point that only prints each rank's check score (``SPY`` lines
on stderr), so that what rank 1 scores can be compared with what rank 0 scores, writes and logs.
"""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ebmlab
from ebmlab.training.logging import read_metrics
from tests.cli_helpers import cli
from tests.unit.test_distributed import _torchrun_command

pytestmark = pytest.mark.slow

SMALL = ["train.steps=20", "train.checkpoint_every=10", "train.select_every=5", "train.batch_size=8", "model.width=16",
         "model.depth=1", "method.n_steps=4", "train.progress=false", "train.threads=1", "eval.n_samples=64",
         "eval.plots=false", "eval.long_run_factor=1"]
# paper 004's objective with the mixture base, the start checked, the one-SE margin, the likelihood and the refit
REFIT = ["train.batch_size=8", "model.width=16", "model.depth=1", "data.n_train=400", "data.n_test=200",
         "eval.n_samples=64", "eval.grid_size=16", "eval.plots=false", "eval.long_run_factor=1", "train.progress=false",
         "train.log_every=1", "train.threads=1", "method.n_steps=4", "data.name=mixture", "train.steps=20",
         "train.checkpoint_every=10", "train.select_every=10", "train.select_start=true", "data.val_fraction=0.1",
         "train.select_margin=1", "train.select_likelihood=true", "model.base=gmm", "train.select_refit=true"]

SPY = '''import json, os, sys
from ebmlab.training import selection
_check = selection.Selector.check
def check(self, trainer, last=False):
    s = _check(self, trainer, last)
    line = "SPY " + json.dumps({"rank": int(os.environ.get("RANK", 0)), "step": trainer.step, "score": s,
                                "best_step": self.best_step}) + "\\n"
    os.write(2, line.encode())  # one write: the two ranks' lines never interleave
    return s
selection.Selector.check = check
from ebmlab.cli import main
sys.exit(main())
'''


def _launch(out: Path, overrides: list[str], *extra: str, resume: bool = False, spy: Path | None = None):
    cmd, env = _torchrun_command(out, overrides, resume)
    if spy is not None:  # the same launch through the printing wrapper of ebmlab's entry point
        i = cmd.index("-m")
        cmd = cmd[:i] + [str(spy)] + cmd[i + 2:]
    res = subprocess.run(cmd + list(extra), check=False, capture_output=True, text=True, timeout=180, env=env)
    assert res.returncode == 0, f"torchrun failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


def _spied(stderr: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(r"SPY (\{[^{}]*\})", stderr)]  # (wherever another line put it)


def _crash_after(src: Path, dst: Path, step: int) -> Path:
    """A copy of ``src`` as a run killed right after its step-``step`` checkpoint: later step checkpoints gone."""
    shutil.copytree(src, dst)
    for p in (dst / "checkpoints").glob("step_*"):
        if int(p.name[5:13]) > step:
            p.unlink()
    return dst


def _best(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "best.json").read_text())


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """``ebmlab train --data FILE.npy`` without a config (the user-data defaults: selection with the mixture base,
    worst of 5 draws, the start checked, the one-SE margin) on 2 ranks; (run, data file, stderr)."""
    root = tmp_path_factory.mktemp("user")
    data = root / "x.npy"
    rows = np.random.default_rng(0).normal(size=(300, 3)) * [1.0, 5.0, 0.1] + 3.0
    np.save(data, rows.astype("float32"))
    spy = root / "spy_train.py"
    spy.write_text(SPY)
    res = _launch(root / "run", SMALL, "--data", str(data), spy=spy)
    return root / "run", data, res.stderr


def test_the_user_data_default_trains_and_selects_under_torchrun(user_run):
    run, _, _ = user_run
    m = json.loads((run / "metrics.json").read_text())
    assert m["selected_step"] == _best(run)["step"] and m["base_components"] > 0
    assert (run / "checkpoints" / "select_start.json").is_file()  # the margin's start rows, written once (rank 0)
    assert not list(run.rglob("*.tmp"))


# WAS A BUG: the two ranks score different samples at the same check (each rank's sampler uses its own, rank-local adapted MALA step size), so rank 1's selection decides on other scores than the ones rank 0 writes.
def test_both_ranks_score_the_same_samples(user_run):
    spied = _spied(user_run[2])
    by_rank = {r: {s["step"]: s["score"] for s in spied if s["rank"] == r} for r in (0, 1)}
    assert by_rank[0] and by_rank[0].keys() == by_rank[1].keys()
    differ = {k: (by_rank[0][k], by_rank[1][k]) for k in by_rank[0] if by_rank[0][k] != by_rank[1][k]}
    assert not differ, f"rank 0's and rank 1's scores of the same check differ: {differ}"


# WAS A BUG: metrics.jsonl's val_energy_distance at the selected step is the mean of the two ranks' (different) scores, not the score that best.json and metrics.json record for that check.
def test_the_logged_score_of_the_selected_step_is_the_score_best_json_records(user_run):
    run = user_run[0]
    best = _best(run)
    logged = {r["step"]: r["val_energy_distance"] for r in read_metrics(run) if "val_energy_distance" in r}
    if best["step"] == 0:
        pytest.skip("the start was chosen: it has no log row")
    assert logged[best["step"]] == best["val_energy_distance"] == json.loads(
        (run / "metrics.json").read_text())["val_energy_distance"]


def test_a_resumed_two_rank_user_data_run_chooses_as_the_uninterrupted_one(user_run, tmp_path):
    run, data, _ = user_run
    assert _best(run)["step"] <= 10, "precondition: the best was written before the step-10 checkpoint"
    resumed = _crash_after(run, tmp_path / "resumed", 10)
    _launch(resumed, [], "--data", str(data), resume=True)
    assert _best(resumed)["step"] == _best(run)["step"]
    assert _best(resumed)["val_energy_distance"] == _best(run)["val_energy_distance"]
    assert (resumed / "checkpoints" / "best.safetensors").read_bytes() == \
        (run / "checkpoints" / "best.safetensors").read_bytes()
    assert [r.get("val_energy_distance") for r in read_metrics(resumed)] == \
        [r.get("val_energy_distance") for r in read_metrics(run)]


def test_a_two_rank_selected_run_evaluates_and_loads_in_one_process(user_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(user_run[0], run)
    before = json.loads((run / "metrics.json").read_text())
    code, _, err = cli(capsys, "eval", run)
    assert code == 0, err
    after = json.loads((run / "metrics.json").read_text())
    assert after["checkpoint_step"] == after["selected_step"] == before["selected_step"]
    for k in ("sample_energy_distance_heldout", "val_energy_distance", "val_energy_distance_start"):
        assert after[k] == before[k], k
    assert ebmlab.load(run).checkpoint_step == before["selected_step"]


@pytest.fixture(scope="module")
def refit_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("refit") / "run"
    _launch(run, REFIT)
    return run


def test_a_two_rank_refitted_start_resumes_and_evaluates_in_one_process(refit_run, tmp_path, capsys):
    m = json.loads((refit_run / "metrics.json").read_text())
    assert m["selected_step"] == 0 and m["selected_refit"] == 1, "precondition: the start won and was refitted"
    assert "base_refit_rows" in _best(refit_run)
    resumed = _crash_after(refit_run, tmp_path / "resumed", 10)
    _launch(resumed, [], resume=True)
    assert (resumed / "checkpoints" / "best.safetensors").read_bytes() == \
        (refit_run / "checkpoints" / "best.safetensors").read_bytes()
    assert json.loads((resumed / "metrics.json").read_text())["select_held_back"] == m["select_held_back"]
    code, _, err = cli(capsys, "eval", resumed)
    assert code == 0, err
    after = json.loads((resumed / "metrics.json").read_text())
    assert after["sample_energy_distance"] == m["sample_energy_distance"]
    assert after["selected_refit"] == 1 and after["checkpoint_step"] == 0


def test_a_resumed_two_rank_window_run_chooses_as_the_uninterrupted_one(user_run, tmp_path):
    _, data, _ = user_run
    full = tmp_path / "full"
    _launch(full, SMALL + ["train.select_window=3"], "--data", str(data))
    resumed = _crash_after(full, tmp_path / "resumed", 10)
    res = _launch(resumed, [], "--data", str(data), resume=True)
    if _best(full)["step"] > 10:  # written after the checkpoint resumed from: dropped, said once
        assert res.stderr.count("it was dropped and selection restarts here") == 1
    assert _best(resumed)["step"] == _best(full)["step"]
    assert (resumed / "checkpoints" / "best.safetensors").read_bytes() == \
        (full / "checkpoints" / "best.safetensors").read_bytes()

