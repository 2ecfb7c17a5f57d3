"""Known answers for the machinery around training that the twentieth mutation round found untested (docs/testing.md):
a cgroup quota set on the cgroup root (a container's own namespace, ``0::/``) caps the cores; the run lock takes
over a zombie's lock and a lock naming a pid of another host, rewrites a longer stale lock file whole, and a released
lock never deletes a lock file another process made since; ``checkpoint_on_sigterm`` gives back the handler that
was there before it (not the default one); resume's log truncation names the damaged line it dropped as such (not
as "its last line"); the ``metrics.json`` that training's evaluation writes under ``train.select_every`` names the
selected check's step; ``ebmlab eval``'s options score the weights in eval mode, and a bad ``--ood`` file is
refused before any sample is drawn; the thread governor counts again one interval after a long pause; and a cell record that is valid
JSON but not a record runs the cell again with a warning.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from ebmlab.data.base import Affine, Dataset
from ebmlab.experiments import cells
from ebmlab.training import cores, selection, stop_signal
from ebmlab.training.config import load_config
from ebmlab.training.lock import LOCK_NAME, RunLock, _alive
from ebmlab.training.logging import RunLogger, read_metrics
from tests.builders import GaussianStandIn
from tests.runs import fit_in


def _tree(root, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


# ----- cores.py: the cgroup root's own quota ---------------------------------------------------------------------
def test_a_quota_on_the_cgroup_root_caps_the_cores(tmp_path, monkeypatch):
    """In a container with its own cgroup namespace ``/proc/self/cgroup`` reads ``0::/``: the quota of ``--cpus 1.5``
    is in ``/sys/fs/cgroup/cpu.max`` itself, the only directory on the path; 1.5 CPUs round up to 2 cores."""
    _tree(tmp_path, {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "150000 100000\n"})
    monkeypatch.setattr(cores, "_affinity", lambda: set(range(8)))
    assert cores.cgroup_cpu_limit(str(tmp_path)) == pytest.approx(1.5)
    assert cores.usable_cores(str(tmp_path)) == 2


def test_a_quota_on_the_root_above_a_job_cgroup_without_one_still_applies(tmp_path, monkeypatch):
    _tree(tmp_path, {"proc/self/cgroup": "0::/job\n", "sys/fs/cgroup/job/cpu.max": "max 100000\n",
                     "sys/fs/cgroup/cpu.max": "300000 100000\n"})
    monkeypatch.setattr(cores, "_affinity", lambda: set(range(8)))
    assert cores.usable_cores(str(tmp_path)) == 3


# ----- threads.py: the governor after a long pause ------------------------------------------------------------------
def test_after_a_long_pause_the_governor_counts_once_then_waits_its_interval_again(monkeypatch):
    """An update (or a check) that took 100 s: the governor re-counts at the next tick, then not before 10 s have
    passed since that count (not once per tick until a schedule fixed at the start has caught up)."""
    from ebmlab.training import threads as th
    now, counted = [0.0], []
    monkeypatch.setattr(th, "idle_threads", lambda most, *a: counted.append(now[0]) or torch.get_num_threads())
    gov = th.ThreadGovernor(None, torch.device("cpu"), 4, every=10.0, clock=lambda: now[0])
    for t in (5.0, 10.0, 110.0, 111.0, 112.0, 115.0, 119.0, 120.5):
        now[0] = t
        gov.tick()
    assert counted == [10.0, 110.0, 120.5] and gov.changes == 0


# ----- lock.py -------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads a process's state from /proc")
def test_a_zombie_is_not_alive_and_its_lock_is_taken_over(tmp_path):
    """A child that exited and was not yet reaped is a zombie (state Z): it holds no lock and will never release one."""
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until it has exited (it is not waited for: it stays a zombie)
            with open(f"/proc/{zombie.pid}/stat", encoding="utf-8") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.02)
        assert _alive(zombie.pid) is False
        assert _alive(os.getppid()) is True  # a live (sleeping) process is alive
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": zombie.pid, "host": socket.gethostname()}))
        RunLock.acquire(tmp_path).release()
    finally:
        zombie.wait()


def test_a_lock_naming_a_pid_of_another_host_is_not_looked_up_here(tmp_path):
    """The lock is free (no flock held) and the file names another host: its pid means nothing on this one, even
    when a live process here has that number (the parent of this process)."""
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname() + "-other"}))
    with RunLock.acquire(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_taking_over_a_longer_stale_lock_file_rewrites_it_whole(tmp_path):
    """A stale lock file longer than the new owner's record is replaced, not overwritten at its start: the file is
    the new owner's JSON alone, and a refused newcomer names the owner's pid."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "note": "x" * 300}))
    with RunLock.acquire(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        code = (f"from ebmlab.training.lock import RunLock\nRunLock.acquire({str(tmp_path)!r})")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and f"pid {os.getpid()} on host" in done.stderr, done.stderr


def test_releasing_a_lock_never_deletes_the_lock_file_of_a_later_owner(tmp_path):
    """The refusal tells a user to delete run.lock when no process runs there; if they do while one still runs, a
    new owner locks a new file. The first owner's release must leave the new file (and its lock) alone."""
    first = RunLock.acquire(tmp_path)
    os.unlink(tmp_path / LOCK_NAME)
    second = RunLock.acquire(tmp_path)
    first.release()
    assert (tmp_path / LOCK_NAME).is_file()
    code = f"from ebmlab.training.lock import RunLock\nRunLock.acquire({str(tmp_path)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "in use" in done.stderr, done.stderr
    second.release()
    assert not (tmp_path / LOCK_NAME).exists()


# ----- stop_signal.py: the previous handler is given back ---------------------------------------------------------
def test_checkpoint_on_sigterm_gives_back_the_handler_that_was_there_before():
    """A program that set its own SIGTERM handler (a job wrapper's cleanup) gets it back after training's block,
    not the default action (which would kill it without its cleanup)."""
    def mine(signum, frame):
        pass
    before = signal.signal(signal.SIGTERM, mine)
    try:
        with stop_signal.checkpoint_on_sigterm():
            assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGTERM) is mine
        with stop_signal.raise_on_sigterm(lambda: RuntimeError("stopped")):
            assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


# ----- logging.py: which damaged lines resume's truncation says it dropped ------------------------------------------
def _log(path, lines):
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")


def test_truncation_names_a_damaged_middle_line_as_a_damaged_line_not_the_last(tmp_path, capsys):
    rows = [json.dumps({"step": s, "loss": float(s)}) for s in (1, 2, 3)]
    _log(tmp_path / "metrics.jsonl", [rows[0], "{not json", rows[1], rows[2]])
    RunLogger(tmp_path, tensorboard=False).truncate_after(2)
    err = capsys.readouterr().err
    assert "dropped 1 damaged line(s)" in err and "its last line" not in err, err
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_truncation_names_a_truncated_last_line_as_its_last_line(tmp_path, capsys):
    rows = [json.dumps({"step": s, "loss": float(s)}) for s in (1, 2)]
    _log(tmp_path / "metrics.jsonl", [*rows, '{"step": 3, "lo'])
    RunLogger(tmp_path, tensorboard=False).truncate_after(5)
    assert "dropped its last line" in capsys.readouterr().err
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


# ----- evaluate.py -------------------------------------------------------------------------------------------------
SELECT_TINY = ["data.name=mixture", "data.n_train=400", "data.n_test=100", "model.width=16", "model.depth=1",
               "method.n_steps=3", "method.n_steps_data=2", "train.batch_size=32", "train.log_every=1",
               "train.checkpoint_every=1000", "train.progress=false", "train.threads=1", "eval.n_samples=50",
               "eval.grid_size=20", "eval.long_run_factor=1", "eval.plots=false", "train.steps=20",
               "train.select_every=5", "data.val_fraction=0.1"]


@pytest.mark.filterwarnings("ignore:train.select_every. the validation check:RuntimeWarning")
def test_training_metrics_json_names_the_selected_checks_step_not_the_last(tmp_path, monkeypatch):
    """Scores 3, 1, 2, 2.5 at the checks of steps 5, 10, 15, 20: the run's result is step 10's weights, so the
    metrics.json training writes describes checkpoint_step 10, as ``ebmlab eval`` of the run would write."""
    from ebmlab.training.evaluate import final_evaluation
    scores = iter([3.0, 1.0, 2.0, 2.5])
    monkeypatch.setattr(selection, "validation_score", lambda *a, **k: next(scores))
    fit_in(tmp_path / "r", load_config(None, SELECT_TINY), after=final_evaluation)
    written = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert written["selected_step"] == 10 and written["checkpoint_step"] == 10


class _Toy:
    """N((4, -4, 0), I) in data coordinates: the reference distribution ``evaluate`` draws."""
    dim = 3
    mean = torch.tensor([4.0, -4.0, 0.0])

    def sample(self, n, generator=None):
        return torch.randn(n, 3, generator=generator) + self.mean

    def log_prob(self, x):
        return -0.5 * (x - self.mean).pow(2).sum(-1) - 1.5 * math.log(2 * math.pi)


def _toy_data() -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset("toy", "vector", torch.randn(30, 3, generator=g), torch.randn(24, 3, generator=g),
                   transform=Affine(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.5, 2.0])), dist=_Toy())


def test_eval_options_score_the_weights_in_eval_mode_and_training_mode_returns_after(tmp_path, monkeypatch):
    """``--ood``/``--fid`` scores come from the evaluated weights in eval mode (a spectral-norm network's power
    iteration would otherwise change the weights it scores); the objective is in training mode again afterwards."""
    from ebmlab.training import hooks
    from ebmlab.training.evaluate import _evaluate_locked
    seen = []
    monkeypatch.setattr(hooks, "EVAL_EXTENSIONS",
                        [lambda options, cfg, objective, data: seen.append(objective.training) or {"ext": 1.0}])
    data = _toy_data()
    cfg = load_config(None, ["eval.n_samples=20", "eval.plots=false", "eval.long_run_factor=1", "eval.grid_size=7"])
    objective = GaussianStandIn((3,))
    objective.train()
    _evaluate_locked(tmp_path, objective, data, cfg, 5, None)
    assert seen == [False] and objective.training


def test_a_bad_ood_file_is_refused_before_any_sample_is_drawn_or_file_written(tmp_path):
    """``ebmlab eval --ood FILE`` with vectors of another dimension: refused (DataError) before the evaluation draws
    a sample or rewrites anything of the run (samples.npy, metrics.json)."""
    from types import SimpleNamespace

    import numpy as np

    from ebmlab.errors import DataError
    from ebmlab.training.evaluate import evaluate_checkpoint
    bad = tmp_path / "far.npy"
    np.save(bad, np.zeros((10, 2)))  # the run's vectors have 3 coordinates
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    objective = GaussianStandIn((3,))
    cfg = load_config(None, ["eval.n_samples=20", "eval.plots=false", "eval.long_run_factor=1", "eval.grid_size=7"])
    with pytest.raises(DataError, match="shape"):
        evaluate_checkpoint(run_dir, objective, _toy_data(), cfg, 5, SimpleNamespace(ood=[str(bad)]))
    assert objective.calls == [] and sorted(p.name for p in run_dir.rglob("*")) == []


# ----- cells.py: a record that is JSON but not a record -----------------------------------------------------------
def _cell_fn(params, seed, run_dir):
    return {"step": 1, "diverged": None, "score": float(seed) + 0.5}


@pytest.mark.parametrize("text", ["[1, 2]", "3", '"done"'])
def test_a_cell_record_that_is_json_but_not_a_record_runs_the_cell_again(tmp_path, text):
    cell = cells.Cell("a", 0, _cell_fn)
    path = cells.cell_dir(tmp_path, cell) / "cell.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.warns(RuntimeWarning, match="not a cell record"):
        out = cells.run_cells(tmp_path, [cell], jobs=1)
    assert out[("a", 0)]["metrics"] == {"score": 0.5}
    assert json.loads(path.read_text())["metrics"] == {"score": 0.5}
