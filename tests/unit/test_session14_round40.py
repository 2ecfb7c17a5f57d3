"""Round 40: an audit of the fourteenth session's code (``git diff f8dcc43 HEAD -- src``): checkpoint pair tokens,
re-reads and their delays, ``lock.holder``, the experiments' locks, the unique temp names and ``--overwrite``'s
clean-up of them, ``files.atomic_write(replace=False)``, a comment after a quoted ``#`` (``config._QUOTED``).

Tests marked ``# WAS A BUG`` failed on the code as audited (commit ``c98e934``; docs/testing.md "Fortieth round"); the
others pin behaviour that holds.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import tracemalloc
import types
from pathlib import Path

import pytest
import torch

from ebmlab import files
from ebmlab.config import parse_override
from ebmlab.errors import CheckpointError, ConfigError, RunError
from ebmlab.training import checkpoint as ckpt
from ebmlab.training import run_dir as run_dir_mod
from ebmlab.training.lock import LOCK_NAME, RunLock, holder


# ----- helpers ---------------------------------------------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _fake_run(d: Path) -> Path:
    """A directory ``is_run_dir`` takes for a run: config.yaml and a checkpoint pair."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text("method: {name: cd}\n", encoding="utf-8")
    ckpt.save_checkpoint(d / "checkpoints", 10, {"w": torch.ones(3)}, {})
    return d


@pytest.fixture
def fake_experiment(monkeypatch):
    """An experiment ``fake`` whose ``run`` is the test's (``mod.run``)."""
    import ebmlab.experiments as ex

    mod = types.ModuleType("round40_fake_experiment")
    mod.run = lambda out, quick=False, seeds=None, jobs=None: {"ok": True}
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(ex.EXPERIMENTS, "fake", mod.__name__)
    return ex, mod


# ----- checkpoints: the pair token, the reads ----------------------------------------------------------------------
# WAS A BUG: a planted huge file that is not safetensors is read whole into memory (5 times) before its header is checked
def test_a_planted_huge_non_safetensors_file_is_refused_without_reading_it_whole(tmp_path):
    d = tmp_path / "checkpoints"
    d.mkdir()
    planted = d / "step_00000001.safetensors"
    with open(planted, "wb") as fh:  # a zip (torch.save) header: its first 8 bytes are no header length
        fh.write(b"PK\x03\x04" + b"\0" * 60)
        fh.truncate(64 * 2**20)  # 64 MiB (sparse)
    (d / "step_00000001.json").write_text(json.dumps({"step": 1}), encoding="utf-8")
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="not a safetensors file"):
            ckpt.load_checkpoint(planted)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB read to refuse a file by its first 8 bytes"


# WAS A BUG: a checkpoint damaged at rest sleeps once more after its last read (0.25 s of the 0.75 s) before it is refused
def test_a_damaged_checkpoint_at_rest_sleeps_only_between_reads(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    ckpt.save_checkpoint(d, 1, {"w": torch.zeros(100)}, {})
    path = d / "step_00000001.safetensors"
    side = d / "step_00000001.json"
    meta = json.loads(side.read_text(encoding="utf-8"))
    meta["tensor_bytes"] += 1  # truncated / damaged at rest: no save is in progress
    side.write_text(json.dumps(meta), encoding="utf-8")
    reads, sleeps = [], []
    real_read = ckpt._sidecar  # one read of the pair per try (the sidecar, then the tensor file's header)
    monkeypatch.setattr(ckpt, "_sidecar", lambda side: reads.append(side) or real_read(side))
    monkeypatch.setattr(ckpt.time, "sleep", sleeps.append)
    with pytest.raises(CheckpointError, match="size differs"):
        ckpt.load_checkpoint(Path(path))
    assert len(reads) == ckpt._READS
    assert len(sleeps) == len(reads) - 1, f"{len(sleeps)} sleeps ({sum(sleeps):.2f} s) for {len(reads)} reads"


def test_the_result_of_a_damaged_run_at_rest_is_read_once(tmp_path, monkeypatch):
    """``run._read_result`` chooses again only when the folder changed: a damaged run at rest fails at once."""
    from ebmlab.training import run as runmod

    run = _fake_run(tmp_path / "run")
    side = run / "checkpoints" / "step_00000010.json"
    meta = json.loads(side.read_text(encoding="utf-8"))
    meta["tensor_bytes"] += 1
    side.write_text(json.dumps(meta), encoding="utf-8")
    calls = []
    real = ckpt.load_checkpoint
    monkeypatch.setattr(ckpt, "load_checkpoint", lambda p: calls.append(p) or real(p))
    slept = []
    monkeypatch.setattr(ckpt.time, "sleep", slept.append)
    with pytest.raises(CheckpointError, match="size differs"):
        runmod._read_result(run)
    # read once, and the waits for a writer (load_checkpoint's own rereads) under 1 s: counted, not timed (a loaded
    # machine's wall clock would count too)
    assert len(calls) == 1 and sum(slept) < 1.0, slept


@pytest.mark.parametrize("tensor", [torch.zeros(3, dtype=torch.bfloat16), torch.tensor([True, False, True]),
                                    torch.tensor(3.5), torch.zeros(0), torch.arange(16.).reshape(4, 4).t(),
                                    torch.zeros(2, dtype=torch.complex64), torch.arange(5, dtype=torch.int8)],
                         ids=["bf16", "bool", "0-dim", "empty", "non-contiguous", "complex64", "int8"])
def test_unusual_tensors_save_and_load_with_their_pair_token(tmp_path, tensor):
    d = tmp_path / "c"
    ckpt.save_checkpoint(d, 3, {"t": tensor, "u": torch.ones(2)}, {"x": 1})
    path = d / "step_00000003.safetensors"
    tensors, meta = ckpt.load_checkpoint(path)
    assert torch.equal(tensors["t"], tensor.contiguous()) and tensors["t"].dtype == tensor.dtype
    assert meta["pair"] == ckpt._pair_of(3, {"t": tensor.contiguous(), "u": torch.ones(2)})


def test_the_pair_token_tells_shape_dtype_and_step_apart():
    z = torch.zeros(6)
    tokens = {ckpt._pair_of(1, {"a": z}), ckpt._pair_of(1, {"a": z.reshape(2, 3)}), ckpt._pair_of(2, {"a": z}),
              ckpt._pair_of(1, {"a": z.to(torch.float64)[:3]}), ckpt._pair_of(1, {"b": z})}
    assert len(tokens) == 5
    assert ckpt._pair_of(1, {"a": z}) == ckpt._pair_of(1, {"a": torch.zeros(6)})  # identical runs: identical files


def test_old_checkpoints_without_a_token_still_load_and_new_sidecars_pass_the_old_check(tmp_path):
    from safetensors.torch import save_file

    d = tmp_path / "c"
    d.mkdir()
    path = d / "step_00000002.safetensors"
    save_file({"w": torch.ones(2)}, str(path))  # written before tokens: no metadata
    (d / "step_00000002.json").write_text(json.dumps({"step": 2, "tensor_bytes": path.stat().st_size}))
    tensors, meta = ckpt.load_checkpoint(path)
    assert torch.equal(tensors["w"], torch.ones(2)) and "pair" not in meta
    # a new sidecar (with its token) beside an older tool's file without one: accepted
    side = json.loads((d / "step_00000002.json").read_text())
    side["pair"] = "0123456789abcdef"
    (d / "step_00000002.json").write_text(json.dumps(side))
    ckpt.load_checkpoint(path)
    # the reverse: the older code's sidecar check only types the keys it knows (a str "pair" is well typed)
    ckpt.check_sidecar(side, d / "step_00000002.json")


def test_a_mixed_pair_at_rest_is_refused_as_another_saves(tmp_path, monkeypatch):
    d = tmp_path / "c"
    ckpt.save_checkpoint(d, 5, {"w": torch.ones(4)}, {}, name=ckpt.BEST)
    side = (d / "best.json").read_text()
    ckpt.save_checkpoint(d, 6, {"w": torch.full((4,), 2.0)}, {}, name=ckpt.BEST)  # same size, another save
    (d / "best.json").write_text(side)
    monkeypatch.setattr(ckpt.time, "sleep", lambda s: None)
    with pytest.raises(CheckpointError, match="written by another save"):
        ckpt.load_checkpoint(d / "best.safetensors")


# ----- lock.holder ---------------------------------------------------------------------------------------------
def test_holder_says_none_for_a_dead_pid_and_for_no_file(tmp_path):
    assert holder(tmp_path) is None
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    assert holder(tmp_path) is None
    (tmp_path / LOCK_NAME).write_text("")  # a trainer between creating the file and writing its pid
    assert holder(tmp_path) is None
    (tmp_path / LOCK_NAME).write_text("[1, 2]")
    assert holder(tmp_path) is None


def test_holder_names_a_live_process_holding_the_lock(tmp_path):
    code = textwrap.dedent(f"""
        import fcntl, json, os, socket, sys, time
        fd = os.open({str(tmp_path / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps({{"pid": os.getpid(), "host": socket.gethostname()}}).encode())
        print("held", flush=True)
        sys.stdin.read()
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        assert holder(tmp_path) == f"pid {p.pid} on host {socket.gethostname()}"
        with pytest.raises(RunError, match="in use by another ebmlab process"):
            RunLock.acquire(tmp_path)
    finally:
        p.stdin.close()
        p.wait(timeout=10)
    assert holder(tmp_path) is None  # its pid is gone
    RunLock.acquire(tmp_path).release()


# WAS A BUG: holder reports another host's lock file as busy though no process holds its flock (RunLock takes it over),
# so `ebmlab train --out RUN` says "in use ... wait for it to finish" forever instead of "pass --resume"
def test_holder_does_not_call_a_free_lock_of_another_host_busy(tmp_path):
    run = _fake_run(tmp_path / "run")
    (run / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "a-node-that-was-rebooted"}))
    busy = holder(run)
    with pytest.raises(RunError) as said:
        run_dir_mod.check_run_dir(run, resume=False, overwrite=False)
    RunLock.acquire(run).release()  # nothing holds it: a resume or an overwrite takes it over
    assert busy is None, f"holder says {busy!r} of a lock the next RunLock.acquire takes"
    assert "in use" not in str(said.value) and "--resume" in str(said.value), str(said.value)


def test_a_run_held_by_a_live_lock_is_said_in_use_and_one_with_a_dead_lock_is_not(tmp_path):
    run = _fake_run(tmp_path / "run")
    with RunLock.acquire(run):  # (this process: the pid is alive)
        with pytest.raises(RunError, match="in use by another ebmlab process"):
            run_dir_mod.check_run_dir(run, resume=False, overwrite=False)
    (run / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with pytest.raises(RunError, match="already exists and holds a run .checkpoints up to step 10.; pass --resume"):
        run_dir_mod.check_run_dir(run, resume=False, overwrite=False)


def test_result_checkpoint_of_half_a_best_without_a_live_holder_advises_deleting(tmp_path):
    run = _fake_run(tmp_path / "run")
    ckpt.save_checkpoint(run / "checkpoints", 10, {"w": torch.ones(3)}, {}, name=ckpt.BEST)
    (run / "checkpoints" / "best.json").unlink()
    (run / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with pytest.raises(CheckpointError, match="delete best.safetensors"):
        ckpt.result_checkpoint(run / "checkpoints")


# ----- experiments' locks ----------------------------------------------------------------------------------------
def test_a_killed_experiments_stale_lock_is_taken_over_by_the_rerun(tmp_path, fake_experiment):
    ex, mod = fake_experiment
    out = tmp_path / "exp"
    out.mkdir()
    (out / ex.MARKER).write_text(json.dumps({"experiment": "fake"}))
    (out / "cells").mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    seen = []
    mod.run = lambda out, quick=False, seeds=None, jobs=None: seen.append(holder(Path(out))) or {"ok": 1}
    assert ex.run_experiment("fake", out) == {"ok": 1}
    assert seen == [f"pid {os.getpid()} on host {socket.gethostname()}, running an experiment"]  # held while it ran
    assert not (out / LOCK_NAME).exists()  # and freed


# WAS A BUG: an --out holding only a stale run.lock (a killed `ebmlab train` there) is refused as "holds other files",
# while `ebmlab train` itself treats that directory as empty (run.lock is not an entry)
def test_an_out_holding_only_a_stale_lock_is_an_empty_directory_for_an_experiment(tmp_path, fake_experiment):
    ex, _ = fake_experiment
    out = tmp_path / "exp"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    assert run_dir_mod._new_run_needs_clearing(out, False) is False  # ebmlab train: empty
    assert ex.run_experiment("fake", out) == {"ok": True}


def test_a_nested_experiment_on_the_same_out_is_refused_and_the_lock_freed(tmp_path, fake_experiment):
    ex, mod = fake_experiment
    out = tmp_path / "exp"

    def nested(out, quick=False, seeds=None, jobs=None):
        return ex.run_experiment("fake", out)
    mod.run = nested
    with pytest.raises(RunError, match="in use"):
        ex.run_experiment("fake", out)
    assert not (out / LOCK_NAME).exists()



_CELL_MODULE = textwrap.dedent("""
    import json, os
    from pathlib import Path
    from ebmlab.training.lock import RunLock, holder

    def cell_fn(params, seed, run_dir):
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        with RunLock.acquire(run_dir):  # as runner.train_and_evaluate holds a cell's lock
            out_holder = holder(run_dir.parents[2])
            return {"step": 0, "pid": float(os.getpid()), "out_held": float(out_holder is not None)}
""")


def test_cells_in_two_worker_processes_take_their_locks_beside_the_experiments(tmp_path, fake_experiment,
                                                                                monkeypatch):
    ex, mod = fake_experiment
    (tmp_path / "round40_cells.py").write_text(_CELL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    import round40_cells
    from ebmlab.experiments.cells import Cell, run_cells

    def run(out, quick=False, seeds=None, jobs=None):
        cells = [Cell("a", 0, round40_cells.cell_fn), Cell("b", 0, round40_cells.cell_fn)]
        return {f"{a}{s}": r for (a, s), r in run_cells(Path(out), cells, jobs=2).items()}
    mod.run = run
    records = ex.run_experiment("fake", tmp_path / "exp", jobs=2)
    assert all(r["failed"] is None for r in records.values()), records
    assert all(r["metrics"]["out_held"] == 1.0 for r in records.values())
    assert all(r["metrics"]["pid"] != os.getpid() for r in records.values())  # in workers
    assert not list((tmp_path / "exp").rglob(LOCK_NAME))  # every lock freed


# ----- temp names, --overwrite's clean-up, replace=False -----------------------------------------------------------
def test_overwrite_clears_old_and_new_temp_leftovers_and_keeps_the_users(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    made = ["step_00000010.safetensors", "best.json.tmp", ".0123abcd.best.safetensors.tmp",
            files.temp_path(folder / "step_00000010.json").name, files.temp_path(folder / "select_start.json").name]
    users = ["notes.txt", ".0123abcd.notes.txt.tmp", ".0123ABCD.best.json.tmp", "best.json.bak"]
    for n in made + users:
        (folder / n).write_text("x")
    kept = run_dir_mod._remove_train_files(folder, run_dir_mod.TRAIN_FILES["checkpoints"], frozenset())
    assert sorted(p.name for p in kept) == sorted(users)


def test_temp_names_are_unique_hidden_and_short_enough(tmp_path):
    names = {files.temp_path(tmp_path / "x.npy").name for _ in range(200)}
    assert len(names) == 200 and all(n.startswith(".") and n.endswith(".x.npy.tmp") for n in names)
    long = tmp_path / ("\u00e9" * 127)  # 254 bytes
    t = files.temp_path(long)
    assert len(os.fsencode(t.name)) <= 255 and t.name.startswith(".")


def test_place_new_refuses_an_existing_file_with_and_without_hard_links(tmp_path, monkeypatch):
    files.atomic_write(tmp_path / "a.txt", lambda p: p.write_text("first"), replace=False)
    with pytest.raises(FileExistsError):
        files.atomic_write(tmp_path / "a.txt", lambda p: p.write_text("second"), replace=False)
    assert (tmp_path / "a.txt").read_text() == "first" and (tmp_path / "a.txt").stat().st_nlink == 1

    def no_links(src, dst):  # FAT, some network file systems
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(files.os, "link", no_links)
    files.atomic_write(tmp_path / "b.txt", lambda p: p.write_text("first"), replace=False)
    with pytest.raises(FileExistsError):
        files.atomic_write(tmp_path / "b.txt", lambda p: p.write_text("second"), replace=False)
    assert (tmp_path / "b.txt").read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]  # no temp file left


# ----- --set and '#' ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ['data.name="a #1" #c', "data.name=['a #1', b] # c", 'data.name="#1" #c'])
def test_a_comment_after_quotes_is_refused(text):
    with pytest.raises(ConfigError, match="start of a comment"):
        parse_override(text)


@pytest.mark.parametrize("text, value", [('data.name="a #1"', "a #1"), ('data.name={k: "v #1"}', {"k": "v #1"}),
                                         ("data.name='x #1 #2'", "x #1 #2")])
def test_a_quoted_hash_is_the_values(text, value):
    assert parse_override(text)[1] == value


# WAS A BUG: a ' #' written as an escape inside double quotes ("a\t#1") counts as a kept ' #', so a real comment after the
# quotes is dropped silently
def test_a_comment_after_an_escaped_hash_in_quotes_is_refused():
    with pytest.raises(ConfigError, match="start of a comment"):
        parse_override('data.name="a\\t#1" # my note')


def test_a_trainer_starting_during_a_readers_probe_is_not_refused(tmp_path):
    """``lock._free`` takes a shared lock for an instant; a trainer's exclusive lock tries again for ~0.15 s."""
    import fcntl
    import threading

    from ebmlab.training.lock import RunLock

    (tmp_path / "run.lock").write_text("{}", encoding="utf-8")
    fd = os.open(tmp_path / "run.lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a reader's probe, dropped 30 ms later
    timer = threading.Timer(0.03, os.close, [fd])
    timer.start()
    try:
        RunLock.acquire(tmp_path).release()
    finally:
        timer.join()
