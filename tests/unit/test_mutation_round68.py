"""Mutation round 68 (docs/testing.md "A seventeenth mutation round"): known answers for the ``Run`` class of
``api.py`` (``sample``, ``log_density``, ``__call__``, ``_points``, ``evaluate``, ``metrics``/``history``/``data``,
``load(checkpoint=)``) on ONE tiny trained run per module, and for ``training/distributed.py`` and
``training/dist_checkpoint.py`` on one process (collectives faked where a rule is arithmetic). Each expected value
is written down from a docstring's or README's rule, never copied from the code's output."""
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import ebmlab
from ebmlab.errors import ConfigError, DataError, DistributedError
from ebmlab.training import checkpoint as ckpt
from ebmlab.training import dist_checkpoint as dc
from ebmlab.training import distributed as dd
from ebmlab.training.distributed import DistContext


# ----- one tiny run --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("r68") / "run"
    return ebmlab.train("hybrid", data="mixture", out=out, model={"width": 16, "depth": 1},
                        train={"steps": 4, "progress": False, "batch_size": 64, "checkpoint_every": 2},
                        eval={"n_samples": 64, "grid_size": 12, "long_run_factor": 2})


def _scale_shift(run):
    t = run.transform
    assert t.matrix is None  # mixture: standardised, not whitened
    return t.scale.double(), t.shift.double()


def test_sample_same_seed_same_points_other_seed_other_points(run):
    a, b, c = run.sample(16, seed=3), run.sample(16, seed=3), run.sample(16, seed=4)
    assert a.shape == (16, 2) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_is_draw_mapped_to_data_coordinates(run):
    # the method's own procedure with generator seeded `seed`, then x = z * scale + shift
    from ebmlab.training.drawing import draw

    z = draw(run.objective, 12, torch.Generator("cpu").manual_seed(5), steps=3).x.detach().double()
    scale, shift = _scale_shift(run)
    x = run.sample(12, steps=3, seed=5).double()
    assert torch.allclose(x, z * scale + shift, atol=1e-5)


def test_sample_from_start_points_with_zero_steps_gives_them_back(run):
    x0 = torch.tensor([[0.5, -1.0], [2.0, 3.0], [-0.25, 0.75]])
    out = run.sample(3, steps=0, init=x0)
    assert torch.allclose(out, x0, atol=1e-5)
    out_np = run.sample(3, steps=0, init=x0.numpy().astype(np.float64))
    assert torch.allclose(out_np, x0, atol=1e-5) and out_np.dtype == torch.float32


def test_sample_init_data_starts_from_held_out_rows(run):
    out = run.sample(5, steps=0, init="data", seed=2).double()
    scale, shift = _scale_shift(run)
    test_rows = run.data().test.double() * scale + shift  # held-out rows in data coordinates
    d = torch.cdist(out, test_rows).min(dim=1).values
    assert float(d.max()) < 1e-4
    # distinct rows (n <= held-out count), in an order drawn by the seed: another seed, other rows
    assert len({tuple(r) for r in out.round(decimals=4).tolist()}) == 5
    assert not torch.equal(out, run.sample(5, steps=0, init="data", seed=3).double())
    # not the training rows' first ones
    g = torch.Generator().manual_seed(2)
    idx = torch.randperm(run.data().test.shape[0], generator=g)[:5]
    assert torch.allclose(out, test_rows[idx], atol=1e-4)


@pytest.mark.parametrize("bad", [torch.zeros(4, 2), torch.zeros(3, 3), torch.tensor([[0.0, float("nan")]] * 3)])
def test_sample_refuses_wrong_start_points(run, bad):
    with pytest.raises(DataError):
        run.sample(3, steps=0, init=bad)


def test_sample_refuses_bad_arguments(run):
    with pytest.raises(ConfigError):
        run.sample(3, init="prior")
    with pytest.raises(Exception):
        run.sample(0)
    with pytest.raises(Exception):
        run.sample(2, seed=-1)
    with pytest.raises(Exception):
        run.sample(2, steps=-1)
    run.sample(1, steps=0)  # n = 1 and steps = 0 are allowed


def test_sample_return_info_gives_samples_and_a_dict(run):
    x, info = run.sample(6, seed=1, return_info=True)
    assert torch.equal(x, run.sample(6, seed=1)) and isinstance(info, dict)


def test_sample_equals_the_cli_with_the_same_arguments(run, tmp_path, capsys):
    from ebmlab.cli import main

    out = tmp_path / "s.npy"
    assert main(["sample", str(run.path), "--n", "10", "--seed", "7", "--steps", "3", "--out", str(out)]) == 0
    assert np.array_equal(np.load(out), run.sample(10, seed=7, steps=3).numpy())
    out2 = tmp_path / "d.npy"
    assert main(["sample", str(run.path), "--n", "4", "--seed", "1", "--steps", "0", "--init", "data",
                 "--out", str(out2)]) == 0
    assert np.array_equal(np.load(out2), run.sample(4, seed=1, steps=0, init="data").numpy())


def test_energy_and_log_density_in_data_coordinates(run):
    x = torch.tensor([[0.1, 0.2], [-1.0, 0.5], [0.7, -0.3]])
    scale, shift = _scale_shift(run)
    z = ((x.double() - shift) / scale).float()
    with torch.no_grad():
        e = run.objective.data_energy(z).double()
        e_run = run(x).detach().double()
        e_np = run(x.numpy()).detach().double()
    assert torch.allclose(e_run, e, atol=1e-5) and torch.allclose(e_np, e, atol=1e-5)
    # log p(x) = -E(z) + log|dz/dx| = -E(z) - sum(log scale)
    want = -e - torch.log(scale).sum()
    got = run.log_density(x).double()
    assert got.shape == (3,) and torch.allclose(got, want, atol=1e-4)
    assert torch.allclose(run.log_density(x.numpy()).double(), want, atol=1e-4)
    assert run.has_log_density


@pytest.mark.parametrize("bad", [torch.zeros(2), torch.zeros(2, 3), torch.zeros(2, 2, 1)])
def test_points_refuse_other_shapes(run, bad):
    with pytest.raises(DataError, match=r"\(B, 2\)"):
        run(bad)
    with pytest.raises(DataError):
        run.log_density(bad)


def test_points_read_float64_arrays_in_the_runs_dtype(run):
    t = run._points(np.array([[1.0, 2.0]], dtype=np.float64))
    assert t.dtype == torch.float32 and t.tolist() == [[1.0, 2.0]]


def test_metrics_history_and_data(run):
    assert run.metrics == json.loads((run.path / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in run.history] == [r["step"] for r in rows if "step" in r]
    assert run.history[-1]["step"] == 4
    d = run.data()
    assert d is run.data()  # read once
    assert run.method == "hybrid" and run.shape == (2,) and run.kind == "vector"


def test_load_at_a_step_a_name_and_a_file(run):
    latest = ebmlab.load(run.path)
    assert latest.checkpoint_step == 4
    for given in (2, "step_00000002", "step_00000002.safetensors", run.path / "checkpoints" / "step_00000002.safetensors"):
        r = ebmlab.load(run.path, checkpoint=given)
        assert r.checkpoint_step == 2 and r.checkpoint.name == "step_00000002.safetensors"
    early, x = ebmlab.load(run.path, checkpoint=2), torch.tensor([[0.3, 0.1]])
    assert not torch.equal(early(x), latest(x))  # other weights
    assert torch.equal(latest(x), run(x))


def test_evaluate_rewrites_metrics_and_keeps_the_mode(run):
    (run.path / "metrics.json").write_text("{}")
    run.objective.train(True)
    m = run.evaluate()
    assert run.objective.training  # restored
    assert m["checkpoint_step"] == 4 and run.metrics["checkpoint_step"] == 4
    assert run.metrics.keys() >= {"sample_energy_distance", "density_kl"}
    run.objective.train(False)
    m2 = run.evaluate()
    assert not run.objective.training
    assert m2["sample_energy_distance"] == m["sample_energy_distance"]  # the same numbers


def test_evaluate_ood_names_a_score(run):
    m = run.evaluate(ood=["shifted"])
    assert "ood_auroc_shifted" in m


# ----- distributed.py on one process ---------------------------------------------------------------------------
def test_context_defaults_are_rank_0_of_1():
    c = DistContext()
    assert (c.rank, c.world_size, c.local_rank, c.device.type, c.backend) == (0, 1, 0, "cpu", None)
    assert not c.enabled and c.is_main
    assert DistContext(world_size=2).enabled and not DistContext(rank=1, world_size=2).is_main
    c.barrier()  # a no-op


def test_env_ranks(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert dd.env_ranks() == (0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "")
    assert dd.env_ranks() == (0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dd.env_ranks() == (3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(DistributedError):
        dd.env_ranks()
    monkeypatch.setenv("RANK", "-1")
    with pytest.raises(DistributedError):
        dd.env_ranks()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "0")
    with pytest.raises(DistributedError):
        dd.env_ranks()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(DistributedError, match="WORLD_SIZE"):
        dd.env_ranks()


def test_rank_device():
    cpu = torch.device("cpu")
    assert dd.rank_device(cpu, 1, 0) == cpu and dd.rank_device(cpu, 4, 2) == cpu
    assert dd.rank_device(torch.device("cuda", 1), 1, 0) == torch.device("cuda", 1)  # one process: as given
    assert dd.rank_device(torch.device("mps"), 1, 0) == torch.device("mps")
    with pytest.raises(ConfigError):
        dd.rank_device(torch.device("mps"), 2, 0)
    with pytest.raises(ConfigError):
        dd.rank_device(torch.device("cuda", 0), 2, 0)


def test_setup_on_one_process_initialises_nothing(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    c = dd.setup(torch.device("cpu"))
    assert c == DistContext() and not torch.distributed.is_initialized()


def test_main_first_and_every_rank_raise_the_functions_error():
    calls = []
    dd.main_first(DistContext(), lambda: calls.append("a"))
    dd.every_rank(DistContext(), lambda: calls.append("b"))
    assert calls == ["a", "b"]
    dd.main_first(DistContext(rank=1, world_size=1), lambda: calls.append("c"))  # not rank 0: not run
    assert calls == ["a", "b"]

    def boom():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        dd.main_first(DistContext(), boom)
    with pytest.raises(ValueError, match="boom"):
        dd.every_rank(DistContext(), boom)


def test_derive_seed():
    assert dd.derive_seed(7, 0) == 7 and dd.derive_seed(7, 0, 1) == 8 and dd.derive_seed(7, 0, 1003) == 1010
    h = hashlib.sha256(b"ebmlab:7:2:1").digest()
    assert dd.derive_seed(7, 2, 1) == int.from_bytes(h[:8], "little") % 2**63
    assert dd.derive_seed(7, 1, 0) != dd.derive_seed(7, 2, 0) != dd.derive_seed(7, 1, 1)


def test_shard_takes_this_ranks_slice():
    idx = torch.arange(12)
    assert torch.equal(dd.shard(idx, DistContext()), idx)
    assert dd.shard(idx, DistContext(rank=0, world_size=3)).tolist() == [0, 1, 2, 3]
    assert dd.shard(idx, DistContext(rank=2, world_size=3)).tolist() == [8, 9, 10, 11]
    assert dd.shard(idx, DistContext(rank=1, world_size=2)).tolist() == [6, 7, 8, 9, 10, 11]


def test_nonfinite_loss_on_one_process():
    c = DistContext()
    assert dd.nonfinite_loss(torch.tensor(1.5), c) is None
    assert dd.nonfinite_loss(torch.tensor(float("nan")), c) == "nan"
    assert dd.nonfinite_loss(torch.tensor(float("inf")), c) == "inf"


def test_restore_generator_exact_and_reseeded(capsys):
    g = torch.Generator().manual_seed(11)
    state = g.get_state()
    want = torch.rand(3, generator=g)
    h = torch.Generator()
    assert dd.restore_generator(h, state, 0, 0) is True
    assert torch.equal(torch.rand(3, generator=h), want)
    # a state of another device kind (16 bytes): reseeded from derive_seed(seed, 0, 1000 + step)
    assert dd.restore_generator(h, torch.zeros(16, dtype=torch.uint8), 5, 20) is False
    ref = torch.Generator().manual_seed(5 + 1000 + 20)
    assert torch.equal(torch.rand(3, generator=h), torch.rand(3, generator=ref))
    assert "warning" in capsys.readouterr().err


class TwoParts(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)
        self.net.register_buffer("u", torch.ones(3))
        self.bank = nn.Module()
        self.bank.register_buffer("replay", torch.zeros(4, 2))
        self.register_buffer("own", torch.zeros(1))


def test_network_buffers_are_those_of_children_with_parameters():
    m = TwoParts()
    bufs = dd.network_buffers(m)
    assert len(bufs) == 1 and bufs[0] is m.net.u


def test_one_process_collectives_are_no_ops():
    m = TwoParts()
    c = DistContext()
    m.net.weight.grad = torch.full_like(m.net.weight, 2.0)
    dd.average_gradients(list(m.parameters()), c)
    assert torch.equal(m.net.weight.grad, torch.full_like(m.net.weight, 2.0)) and m.net.bias.grad is None
    dd.broadcast_parameters(m, c)
    dd.sync_network_buffers(m, c)
    dd.verify_replicas(m, c)
    assert dd.average_metrics({"a": 1.0, "b": 3.0}, c) == {"a": 1.0, "b": 3.0}


class FakeOtherRank:
    """all_reduce(SUM) as if a second rank held ``other(t)``; MAX/MIN as if it held the same tensor."""

    def __init__(self, other):
        self.other = other

    def __call__(self, t, op=None):
        if op == torch.distributed.ReduceOp.SUM:
            t.add_(self.other(t))


def test_average_gradients_two_ranks_divide_by_world(monkeypatch):
    # rank 1 holds gradients 4 (weight) and none (bias): mean (2 + 4) / 2 = 3; bias from rank 1 alone: 0 + 6 / 2
    m = TwoParts()
    m.net.weight.grad = torch.full_like(m.net.weight, 2.0)
    n_w, n_b = m.net.weight.numel(), m.net.bias.numel()

    def other(buf):
        o = torch.zeros_like(buf)
        o[:n_w] = 4.0
        o[n_w:n_w + n_b] = 6.0
        o[-2:] = torch.tensor([1.0, 1.0])  # rank 1 has both gradients
        return o

    monkeypatch.setattr(dd.dist, "all_reduce", FakeOtherRank(other))
    dd.average_gradients([m.net.weight, m.net.bias], DistContext(world_size=2))
    assert torch.equal(m.net.weight.grad, torch.full_like(m.net.weight, 3.0))
    assert torch.equal(m.net.bias.grad, torch.full_like(m.net.bias, 3.0))


def test_average_gradients_none_anywhere_stays_none(monkeypatch):
    m = TwoParts()
    m.net.weight.grad = torch.ones_like(m.net.weight)
    monkeypatch.setattr(dd.dist, "all_reduce", FakeOtherRank(torch.zeros_like))
    dd.average_gradients([m.net.weight, m.net.bias], DistContext(world_size=2))
    assert m.net.bias.grad is None and torch.equal(m.net.weight.grad, torch.full_like(m.net.weight, 0.5))


def test_average_metrics_two_ranks(monkeypatch):
    def other(t):  # the second rank logged a = 3, b = 5 and the same names (MAX of the check: unchanged)
        o = torch.zeros_like(t)
        if t.numel() == 4:
            o[:2] = torch.tensor([3.0, 5.0])
            o[2:] = t[2:]
        return o

    monkeypatch.setattr(dd.dist, "all_reduce", FakeOtherRank(other))
    assert dd.average_metrics({"b": 1.0, "a": 1.0}, DistContext(world_size=2)) == {"a": 2.0, "b": 3.0}


def test_nonfinite_loss_names_the_bad_rank(monkeypatch):
    def other(t):
        o = torch.zeros_like(t)
        o[1] = float("nan")
        return o

    monkeypatch.setattr(dd.dist, "all_reduce", FakeOtherRank(other))
    assert dd.nonfinite_loss(torch.tensor(1.0), DistContext(world_size=2)) == "rank 1: nan"


def test_verify_replicas_refuses_different_parameters(monkeypatch):
    m = nn.Linear(2, 1)

    def fake(t, op=None):
        if op == torch.distributed.ReduceOp.MAX:
            t.add_(0.5)

    monkeypatch.setattr(dd.dist, "all_reduce", fake)
    with pytest.raises(DistributedError, match="0.5"):
        dd.verify_replicas(m, DistContext(world_size=2))
    monkeypatch.setattr(dd.dist, "all_reduce", lambda t, op=None: None)
    dd.verify_replicas(m, DistContext(world_size=2))


def test_device_options_on_cpu():
    with pytest.raises(ConfigError, match="amp"):
        dd.check_device_options(SimpleNamespace(amp=True), torch.device("cpu"))
    dd.check_device_options(SimpleNamespace(amp=False), torch.device("cpu"))
    assert isinstance(dd.autocast(torch.device("cpu"), True), type(dd.contextlib.nullcontext()))
    with pytest.raises(ConfigError):
        dd.compile_energy(nn.Linear(2, 1))


def test_compile_errors_only_when_enabled():
    with pytest.raises(ConfigError, match="train.compile"):
        with dd.compile_errors(True):
            raise RuntimeError("this does not currently support double backward")
    with pytest.raises(RuntimeError, match="double backward"):
        with dd.compile_errors(False):
            raise RuntimeError("does not currently support double backward")
    with pytest.raises(RuntimeError, match="other"):
        with dd.compile_errors(True):
            raise RuntimeError("other")


# ----- dist_checkpoint.py --------------------------------------------------------------------------------------
def test_rank_file_name():
    assert dc.rank_file(Path("c"), 42, 3) == Path("c") / "step_00000042.rank3.safetensors"


def test_params_digest_is_sha256_of_names_and_bytes():
    m = nn.Linear(2, 1)
    h = hashlib.sha256()
    for name, p in m.named_parameters():
        h.update(name.encode())
        h.update(p.detach().numpy().tobytes())
    assert dc.params_digest(m) == h.hexdigest()
    before = dc.params_digest(m)
    with torch.no_grad():
        m.bias.add_(1.0)
    assert dc.params_digest(m) != before


def _trainer(tmp_path, world=2, rank=0, step=6):
    obj = TwoParts()
    return SimpleNamespace(objective=obj, g_data=torch.Generator().manual_seed(1), g_obj=torch.Generator().manual_seed(2),
                           device=torch.device("cpu"), dist=DistContext(rank=rank, world_size=world),
                           run_dir=tmp_path, step=step, cfg=SimpleNamespace(train=SimpleNamespace(seed=0)))


def test_local_state_holds_buffers_and_rngs_not_parameters(tmp_path):
    tr = _trainer(tmp_path)
    s = dc.local_state(tr)
    assert set(s) == {"model.net.u", "model.bank.replay", "model.own", "rng.data", "rng.objective", "rng.torch"}
    assert torch.equal(s["rng.data"], torch.Generator().manual_seed(1).get_state())
    assert torch.equal(s["rng.objective"], torch.Generator().manual_seed(2).get_state())


def test_save_and_restore_rank_state_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(dc, "verify_replicas", lambda m, c: None)
    monkeypatch.setattr(DistContext, "barrier", lambda self: None)
    tr = _trainer(tmp_path, rank=1)
    with torch.no_grad():
        tr.objective.bank.replay.fill_(7.0)
    tr.g_obj.manual_seed(99)
    dc.save_rank_state(tr)
    path = tmp_path / "checkpoints" / "step_00000006.rank1.safetensors"
    tensors, meta = dc.read_rank_file(path)
    assert meta == {"rank": "1", "world_size": "2", "step": "6", "params_sha256": dc.params_digest(tr.objective)}
    head = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
    assert list(head["__metadata__"]) == ["rank_state"]
    # a fresh trainer (the same parameters) restores the buffers and the generator
    tr2 = _trainer(tmp_path, rank=1)
    tr2.objective.load_state_dict(tr.objective.state_dict())
    with torch.no_grad():
        tr2.objective.bank.replay.zero_()
    dc.restore_rank_state(tr2, {"world_size": "2"})
    assert torch.equal(tr2.objective.bank.replay, torch.full((4, 2), 7.0))
    assert torch.equal(torch.rand(2, generator=tr2.g_obj), torch.rand(2, generator=torch.Generator().manual_seed(99)))
    # another step's file, or other parameters, are refused
    tr3 = _trainer(tmp_path, rank=1)
    tr3.objective.load_state_dict(tr.objective.state_dict())
    with torch.no_grad():
        tr3.objective.net.bias.add_(1.0)
    with pytest.raises(ckpt.CheckpointError, match="other parameters"):
        dc.restore_rank_state(tr3, {"world_size": "2"})
    tr4 = _trainer(tmp_path, rank=1, step=8)
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        dc.restore_rank_state(tr4, {"world_size": "2"})
    path.rename(tmp_path / "checkpoints" / "step_00000008.rank1.safetensors")
    tr4.objective.load_state_dict(tr.objective.state_dict())
    with pytest.raises(ckpt.CheckpointError, match="step 6, not 8"):
        dc.restore_rank_state(tr4, {"world_size": "2"})


def test_one_process_saves_nothing_and_refuses_another_world_size(tmp_path):
    tr = _trainer(tmp_path, world=1)
    dc.save_rank_state(tr)
    assert not (tmp_path / "checkpoints").exists()
    dc.restore_rank_state(tr, {})  # world size 1 by default
    dc.restore_rank_state(tr, {"world_size": "1"})
    with pytest.raises(ckpt.CheckpointError, match="2 process"):
        dc.restore_rank_state(tr, {"world_size": "2"})
    dc.agree_on_checkpoint(None, DistContext())


def test_load_local_state_refuses_unknown_buffers(tmp_path):
    tr = _trainer(tmp_path)
    s = dc.local_state(tr)
    s["model.nothing"] = torch.zeros(1)
    with pytest.raises(ckpt.CheckpointError, match="nothing"):
        dc.load_local_state(tr, s)


def test_read_rank_file_refuses_other_files_and_reads_old_metadata(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ckpt.CheckpointError, match="could not be read"):
        dc.read_rank_file(bad)
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        dc.read_rank_file(tmp_path / "none.safetensors")
    old = tmp_path / "old.safetensors"
    save_file({"a": torch.ones(2)}, str(old), metadata={"rank": "0", "step": "3"})
    t, meta = dc.read_rank_file(old)
    assert meta == {"rank": "0", "step": "3"} and torch.equal(t["a"], torch.ones(2))
    odd = tmp_path / "odd.safetensors"
    save_file({"a": torch.ones(2)}, str(odd), metadata={"rank_state": "[1, 2]"})
    with pytest.raises(ckpt.CheckpointError):
        dc.read_rank_file(odd)


def test_prune_rank_files_keeps_those_of_existing_checkpoints(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    d.mkdir()
    for name in ("step_00000002.rank0.safetensors", "step_00000002.rank1.safetensors",
                 "step_00000004.rank0.safetensors", "step_00000004.safetensors", "notes.txt"):
        (d / name).write_bytes(b"x")
    monkeypatch.setattr(dc.ckpt, "list_checkpoints", lambda p: [(4, d / "step_00000004.safetensors")])
    dc.prune_rank_files(d)
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt", "step_00000004.rank0.safetensors",
                                                   "step_00000004.safetensors"]
    dc.prune_rank_files(tmp_path / "absent")  # no folder: nothing to do


def test_agree_on_checkpoint_two_ranks(monkeypatch):
    def other(step):
        def fake(t, op=None):  # MAX over this rank's [s, -s] and the other's [step, -step]
            t.copy_(torch.maximum(t, torch.tensor([step, -step])))
        return fake

    monkeypatch.setattr(dc.dist, "all_reduce", other(6))
    dc.agree_on_checkpoint(Path("step_00000006.safetensors"), DistContext(world_size=2))
    monkeypatch.setattr(dc.dist, "all_reduce", other(4))
    with pytest.raises(DistributedError):
        dc.agree_on_checkpoint(Path("step_00000006.safetensors"), DistContext(world_size=2))
    monkeypatch.setattr(dc.dist, "all_reduce", other(-1))
    with pytest.raises(DistributedError):
        dc.agree_on_checkpoint(Path("step_00000006.safetensors"), DistContext(world_size=2))


# ----- round 68's second pass: what the first tests above let through ------------------------------------------
def _image_run(shape=(1, 2, 2)):
    """A ``Run`` shell of an image run (no files): ``_points`` needs only its kind, shape and transform's dtype."""
    r = object.__new__(ebmlab.Run)
    r.kind, r.shape, r.transform = "image", shape, SimpleNamespace(dtype=torch.float32)
    return r


def test_points_read_uint8_images_as_the_loaders_do():
    # v / 127.5 - 1: 0 -> -1, 255 -> 1, 51 -> -0.6; a float image is taken as it is
    codes = np.array([[[[0, 255], [51, 102]]]], dtype=np.uint8)
    want = [[[[-1.0, 1.0], [-0.6, -0.2]]]]
    assert torch.allclose(_image_run()._points(codes), torch.tensor(want), atol=1e-6)
    assert torch.allclose(_image_run()._points(torch.from_numpy(codes)), torch.tensor(want), atol=1e-6)
    floats = torch.tensor([[[[0.5, -0.5], [0.0, 1.0]]]])
    assert torch.equal(_image_run()._points(floats), floats)


def test_vector_points_given_as_uint8_are_taken_as_is(run):
    assert run._points(np.array([[3, 200]], dtype=np.uint8)).tolist() == [[3.0, 200.0]]


def test_sample_names_init_in_its_refusal(run):
    with pytest.raises(DataError, match="init"):
        run.sample(2, steps=0, init=torch.zeros(2, 3))


def test_evaluate_at_an_earlier_checkpoint_records_that_step(run):
    early = ebmlab.load(run.path, checkpoint=2)
    try:
        assert early.evaluate()["checkpoint_step"] == 2
        assert early.metrics["checkpoint_step"] == 2
    finally:
        run.evaluate()  # metrics.json of the result again, for the other tests


def test_load_leaves_the_callers_random_stream_alone(run):
    torch.manual_seed(123)
    want = torch.rand(4)
    torch.manual_seed(123)
    ebmlab.load(run.path)
    assert torch.equal(torch.rand(4), want)


def test_setup_on_one_process_keeps_the_given_device(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert dd.setup(torch.device("meta")).device == torch.device("meta")


def test_every_rank_raises_its_own_error_else_the_lowest_failing_ranks(monkeypatch):
    other = ValueError("rank 0's")

    def gather(errs, err):  # this process is rank 1; rank 0 raised `other`
        errs[0], errs[1] = other, err

    monkeypatch.setattr(dd.dist, "all_gather_object", gather)
    c = DistContext(rank=1, world_size=2)
    with pytest.raises(ValueError, match="rank 0's"):
        dd.every_rank(c, lambda: None)

    def mine():
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        dd.every_rank(c, mine)


def test_sync_network_buffers_copies_rank_0s_values_in_order(monkeypatch):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 1)
            self.register_buffer("u", torch.zeros(2))
            self.register_buffer("v", torch.zeros(3))

    obj = nn.Module()
    obj.net = Net()

    def broadcast(t, src=0):  # rank 0 holds u = [1, 2], v = [3, 4, 5]
        t.copy_(torch.arange(1.0, 6.0))

    monkeypatch.setattr(dd.dist, "broadcast", broadcast)
    dd.sync_network_buffers(obj, DistContext(rank=1, world_size=2))
    assert obj.net.u.tolist() == [1.0, 2.0] and obj.net.v.tolist() == [3.0, 4.0, 5.0]


def test_verify_replicas_needs_bit_identical_parameters(monkeypatch):
    def fake(t, op=None):  # another rank's parameters differ by 1e-7 somewhere
        if op == torch.distributed.ReduceOp.MAX:
            t[0] += 1e-7

    monkeypatch.setattr(dd.dist, "all_reduce", fake)
    with torch.no_grad():
        m = nn.Linear(2, 1)
        m.weight.fill_(0.5)
    with pytest.raises(DistributedError):
        dd.verify_replicas(m, DistContext(world_size=2))


def test_amp_is_refused_on_every_device_but_cuda():
    with pytest.raises(ConfigError, match="amp"):
        dd.check_device_options(SimpleNamespace(amp=True), torch.device("mps"))
    dd.check_device_options(SimpleNamespace(amp=True), torch.device("cuda", 0))


def test_restore_rank_state_sets_both_sampler_generators_and_torchs(tmp_path, monkeypatch):
    monkeypatch.setattr(dc, "verify_replicas", lambda m, c: None)
    monkeypatch.setattr(DistContext, "barrier", lambda self: None)
    tr = _trainer(tmp_path)
    tr.g_data.manual_seed(31)
    tr.g_obj.manual_seed(32)
    torch.manual_seed(33)
    dc.save_rank_state(tr)
    tr2 = _trainer(tmp_path)
    tr2.objective.load_state_dict(tr.objective.state_dict())
    torch.manual_seed(0)
    dc.restore_rank_state(tr2, {"world_size": 2})
    assert torch.equal(torch.rand(2, generator=tr2.g_data), torch.rand(2, generator=torch.Generator().manual_seed(31)))
    assert torch.equal(torch.rand(2, generator=tr2.g_obj), torch.rand(2, generator=torch.Generator().manual_seed(32)))
    got = torch.rand(2)
    torch.manual_seed(33)
    assert torch.equal(got, torch.rand(2))


def test_rank_file_metadata_is_sorted_json(tmp_path, monkeypatch):
    monkeypatch.setattr(dc, "verify_replicas", lambda m, c: None)
    monkeypatch.setattr(DistContext, "barrier", lambda self: None)
    tr = _trainer(tmp_path)
    dc.save_rank_state(tr)
    raw = (tmp_path / "checkpoints" / "step_00000006.rank0.safetensors").read_bytes()
    text = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]["rank_state"]
    keys = list(json.loads(text))
    assert keys == ["params_sha256", "rank", "step", "world_size"]


def test_agree_on_checkpoint_a_rank_without_one_against_step_0(monkeypatch):
    def other(step):
        def fake(t, op=None):
            t.copy_(torch.maximum(t, torch.tensor([step, -step])))
        return fake

    monkeypatch.setattr(dc.dist, "all_reduce", other(-1))
    dc.agree_on_checkpoint(None, DistContext(world_size=2))  # neither found one
    monkeypatch.setattr(dc.dist, "all_reduce", other(0))
    with pytest.raises(DistributedError):  # this rank found none, the other step 0
        dc.agree_on_checkpoint(None, DistContext(world_size=2))


def test_sample_refuses_each_bad_argument_by_name(run):
    with pytest.raises(ConfigError, match="n must be a positive integer"):
        run.sample(0)
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        run.sample(2, seed=-1)
    with pytest.raises(ConfigError, match="steps must be a non-negative integer"):
        run.sample(2, steps=-1)


def test_metrics_of_a_run_without_metrics_json_are_empty(run):
    p = run.path / "metrics.json"
    kept = p.read_bytes()
    p.unlink()
    try:
        assert run.metrics == {}
    finally:
        p.write_bytes(kept)


def test_data_is_given_in_the_runs_own_transform(run):
    # a result that carries its own transform (a refit): data() holds the rows in ITS model coordinates,
    # z' = (x - shift') / scale' of the same data-coordinate rows x
    from ebmlab.data.base import Affine

    scale, shift = _scale_shift(run)
    rows = run.data().test[:5].double() * scale + shift  # data coordinates
    other = ebmlab.load(run.path)
    other.transform = Affine(shift=(shift + 1.0).float(), scale=(scale * 2.0).float())
    got = other.data().test[:5].double()
    assert torch.allclose(got, (rows - (shift + 1.0)) / (scale * 2.0), atol=1e-4)


def test_repr_names_method_model_step_and_data(run):
    assert repr(run) == f"Run({str(run.path)!r}, method='hybrid', model='mlp', step=4, data=vector (2,))"
