"""Leftovers the fourteenth session saw and left (docs/testing.md, "Leftovers of the fourteenth session")."""
from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from ebmlab.errors import CheckpointError
from ebmlab.training import dist_checkpoint, distributed
from ebmlab.training.lock import LOCK_NAME, RunLock, holder


# WAS A BUG: a run.lock naming pid `true` (JSON's boolean, a Python int) was read as pid 1 (init, alive): busy.
def test_a_lock_file_naming_pid_true_is_nobody(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": True, "host": socket.gethostname()}), encoding="utf-8")
    assert holder(tmp_path) is None
    with RunLock.acquire(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text(encoding="utf-8"))["pid"] != 1
        assert lock.fd is not None


# ----- round 42's fixes at unit scale (its torchrun tests: test_distributed_round42.py, slow) ------------------------
def _rank_one(tmp_path, monkeypatch, name="run"):
    from tests.unit.test_interface_known_answers import TwoRanks, _trainer_on

    trainer = _trainer_on(1, TwoRanks(monkeypatch), tmp_path / name, monkeypatch)
    trainer.step = 3
    trainer.save()
    return trainer, dist_checkpoint.rank_file(trainer.run_dir / "checkpoints", 3, 1)


# WAS A BUG: a rank file's four metadata keys were written in a random order (safetensors' hash map): identical 2-rank runs wrote different bytes (round 42)
def test_a_rank_file_has_one_metadata_key_and_identical_trainers_write_identical_bytes(tmp_path, monkeypatch):
    _, a = _rank_one(tmp_path, monkeypatch, "a")
    _, b = _rank_one(tmp_path, monkeypatch, "b")
    head = json.loads(a.read_bytes()[8:8 + int.from_bytes(a.read_bytes()[:8], "little")])
    assert list(head["__metadata__"]) == ["rank_state"]
    assert a.read_bytes() == b.read_bytes()
    _, meta = dist_checkpoint.read_rank_file(a)
    assert (meta["rank"], meta["world_size"], meta["step"]) == ("1", "2", "3") and len(meta["params_sha256"]) == 64


def test_a_rank_file_written_before_rank_state_is_still_read(tmp_path):
    path = tmp_path / "step_00000003.rank1.safetensors"
    save_file({"rng.data": torch.zeros(1)}, str(path), metadata={"step": "3", "world_size": "2", "rank": "1"})
    assert dist_checkpoint.read_rank_file(path)[1] == {"step": "3", "world_size": "2", "rank": "1"}


# WAS A BUG: a rank file's params_sha256 was never checked: another run's rank file resumed silently (round 42)
def test_a_rank_file_of_other_parameters_is_refused(tmp_path, monkeypatch):
    trainer, path = _rank_one(tmp_path, monkeypatch)
    dist_checkpoint.restore_rank_state(trainer, {"world_size": 2})  # its own parameters: restored
    with torch.no_grad():
        next(trainer.objective.parameters()).add_(1.0)  # as after loading another run's shared checkpoint
    with pytest.raises(CheckpointError, match="written with other parameters than step_00000003.safetensors"):
        dist_checkpoint.restore_rank_state(trainer, {"world_size": 2})


# WAS A BUG: a rank file missing on rank 1 let rank 0 record --set changes, then die in gloo (round 42)
def test_every_rank_raises_another_ranks_error_on_a_rank_that_succeeded(monkeypatch):
    ctx = distributed.DistContext(rank=0, world_size=2, backend="gloo")
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [obj, ValueError("r1")]))
    ran = []
    with pytest.raises(ValueError, match="r1"):
        distributed.every_rank(ctx, lambda: ran.append(0))
    assert ran == [0]
    with pytest.raises(KeyError, match="own"):  # a rank's own error wins over another's
        distributed.every_rank(ctx, lambda: (_ for _ in ()).throw(KeyError("own")))
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [obj, None]))
    distributed.every_rank(ctx, lambda: None)  # nobody failed


# ----- round 45's rule for a start killed before its first step checkpoint (run_dir.has_result) ----------------------
@pytest.mark.parametrize("best_step, metrics, result", [(0, False, False), (4, False, False), (5, False, True),
                                                        (0, True, True), (None, False, True)])
def test_a_best_from_before_the_first_step_checkpoint_is_no_result(tmp_path, best_step, metrics, result):
    from ebmlab.config import save_config
    from ebmlab.training.config import load_config
    from ebmlab.training.run_dir import has_result

    save_config(load_config(None, ["train.checkpoint_every=4", "train.steps=10"]), tmp_path / "config.yaml")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.safetensors").write_bytes(b"x")
    (tmp_path / "checkpoints" / "best.json").write_text("{" if best_step is None else json.dumps({"step": best_step}),
                                                        encoding="utf-8")  # (None: a damaged sidecar: kept)
    if metrics:
        (tmp_path / "metrics.json").write_text("{}", encoding="utf-8")
    assert has_result(tmp_path) is result


def test_drop_halves_deletes_lone_files_of_earlier_steps_only(tmp_path):
    from ebmlab.training import checkpoint as ckpt

    for name in ("step_00000002.safetensors", "step_00000003.json", "step_00000004.safetensors", "step_00000004.json",
                 "step_00000006.safetensors", "best.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    ckpt.drop_halves(tmp_path, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "step_00000004.json",
                                                         "step_00000004.safetensors", "step_00000006.safetensors"]
