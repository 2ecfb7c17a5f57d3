"""Mutation round 70 (docs/testing.md "A seventeenth mutation round", the second helper's file): the ``Run`` methods of ``api.py``
(``sample``, ``log_density``, ``_points``, ``__call__``, ``evaluate``, ``metrics``/``history``/``data``, ``load``
with ``checkpoint=``) against ONE tiny trained run per module, and ``training/dist_checkpoint.py`` /
``training/distributed.py`` on their single-process paths. Every expected value is a known answer (from the
docstrings and README), never the code's own output pasted back."""
import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import ebmlab
from ebmlab.errors import ConfigError, DataError, DistributedError
from ebmlab.training import checkpoint as ckpt
from ebmlab.training import dist_checkpoint as dc
from ebmlab.training import distributed as dd


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("r68") / "run"
    return ebmlab.train("hybrid", data="mixture", out=out, model={"width": 16, "depth": 1},
                        train={"steps": 4, "progress": False, "batch_size": 64, "checkpoint_every": 2, "log_every": 1},
                        eval={"n_samples": 64, "grid_size": 12, "long_run_factor": 2})


def _model_energy(run, x):  # E_model((x - shift) / scale), written out from the transform's documented form
    t = run.transform
    z = (torch.as_tensor(x, dtype=torch.float32) - t.shift) / t.scale
    with torch.no_grad():
        return run.objective.energy(z).reshape(-1)


# ----- sample ------------------------------------------------------------------------------------------------
def test_sample_same_seed_same_samples_other_seed_other(run):
    a, b, c = run.sample(32, steps=5, seed=7), run.sample(32, steps=5, seed=7), run.sample(32, steps=5, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (32, 2) and a.dtype == torch.float32 and a.device.type == "cpu"


def test_sample_from_given_starts_with_no_steps_returns_the_starts(run):
    x0 = np.array([[0.5, -0.25], [1.0, 2.0], [-1.5, 0.75]], dtype=np.float64)
    x = run.sample(3, steps=0, init=x0)
    assert torch.allclose(x.double(), torch.from_numpy(x0), atol=1e-5)  # data coordinates in, data coordinates out


def test_sample_from_data_starts_are_distinct_held_out_rows_in_data_coordinates(run):
    test = run.data().test  # model coordinates
    held = run.transform.to_data(test[:][0] if isinstance(test[:], tuple) else test[:]).cpu()
    x = run.sample(10, steps=0, init="data", seed=3)
    d = torch.cdist(x.double(), held.double())  # (10, N)
    nearest = d.min(1)
    assert float(nearest.values.max()) < 1e-5  # every start is a held-out row, in data coordinates
    assert len(set(nearest.indices.tolist())) == 10  # distinct rows (n <= held-out count)
    g = torch.Generator().manual_seed(3)  # data_starts' documented order: a permutation drawn by the seed
    assert nearest.indices.tolist() == torch.randperm(held.shape[0], generator=g)[:10].tolist()


def test_sample_in_data_coordinates_not_model_coordinates(run):
    x = run.sample(256, steps=5, seed=1)
    z = run.transform.to_model(x)
    # the mixture's data have std ~ transform.scale (about 0.25); model coordinates have std ~ 1
    assert float(x.std(0).max()) < 0.6 < float(z.std(0).max())


def test_sample_return_info_is_a_pair(run):
    x, info = run.sample(4, steps=2, return_info=True)
    assert x.shape == (4, 2) and isinstance(info, dict)
    assert torch.equal(x, run.sample(4, steps=2))


# ----- energies and log-densities --------------------------------------------------------------------------
def test_call_is_the_model_energy_of_the_standardised_points(run):
    x = np.array([[0.1, 0.2], [-0.3, 0.4], [0.0, 0.0]])
    e = run(x)
    assert e.shape == (3,)
    assert torch.allclose(e.detach(), _model_energy(run, x), atol=1e-5)
    assert torch.allclose(run(torch.tensor(x)).detach(), e.detach())


def test_log_density_is_minus_energy_plus_log_jacobian(run):
    x = np.array([[0.1, 0.2], [-0.3, 0.4], [0.5, -0.5]])
    lp = run.log_density(x)
    log_det = -float(torch.log(run.transform.scale.double()).sum())  # log |dz/dx| of z = (x - shift) / scale
    assert lp.shape == (3,) and lp.device.type == "cpu"
    assert torch.allclose(lp.double(), -_model_energy(run, x).double() + log_det, atol=1e-4)
    assert float(log_det) > 2.0  # scale ~ 0.25 per coordinate: log |dz/dx| ~ 2 log 4


def test_points_shapes_and_dtype(run):
    for bad in (np.zeros(2), np.zeros((4, 3)), np.zeros((4, 2, 1)), torch.zeros(4, 1)):
        with pytest.raises(DataError):
            run(bad)
        with pytest.raises(DataError):
            run.log_density(bad)
    t = run._points(np.ones((5, 2), dtype=np.float64))
    assert t.dtype == torch.float32 and t.shape == (5, 2)
    assert torch.equal(t, torch.ones(5, 2))
    with pytest.raises(DataError, match=r"init must be a batch"):
        run._points(np.zeros((2, 3)), "init")


# ----- metrics, history, data ------------------------------------------------------------------------------
def test_metrics_history_and_data(run, tmp_path):
    assert run.metrics == json.loads((run.path / "metrics.json").read_text())
    hist = run.history
    lines = [json.loads(s) for s in (run.path / "metrics.jsonl").read_text().splitlines() if s.strip()]
    assert [h["step"] for h in hist] == [r["step"] for r in lines] and hist[-1]["step"] == 4
    assert run.data() is run.data()
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    (copy / "metrics.json").unlink()
    assert ebmlab.load(copy).metrics == {}


# ----- load with checkpoint= --------------------------------------------------------------------------------
def test_load_at_a_checkpoint(run):
    assert run.checkpoint_step == 4
    early = ebmlab.load(run.path, checkpoint=2)
    assert early.checkpoint_step == 2 and early.checkpoint.name == "step_00000002.safetensors"
    for spec in ("step_00000002", "step_00000002.safetensors", run.path / "checkpoints" / "step_00000002.safetensors"):
        assert ebmlab.load(run.path, checkpoint=spec).checkpoint_step == 2
    x = np.array([[0.1, 0.2]])
    assert not torch.equal(early(x), run(x))  # other weights
    assert torch.equal(ebmlab.load(run.path, checkpoint=4)(x), run(x))
    assert ebmlab.load(run.path).checkpoint_step == 4  # the latest by default
    with pytest.raises(Exception, match="3"):
        ebmlab.load(run.path, checkpoint=3)


# ----- evaluate --------------------------------------------------------------------------------------------
def test_evaluate_rewrites_metrics_and_restores_mode(run):
    before = dict(run.metrics)
    run.objective.train(True)
    m = run.evaluate()
    assert run.objective.training is True
    assert m["checkpoint_step"] == 4
    assert set(before) <= set(m) | {"checkpoint_step"}
    assert json.loads((run.path / "metrics.json").read_text())["checkpoint_step"] == 4
    assert math.isclose(m["sample_energy_distance"], before["sample_energy_distance"], rel_tol=1e-6)
    run.objective.train(False)
    early = ebmlab.load(run.path, checkpoint=2)
    assert early.evaluate()["checkpoint_step"] == 2
    run.evaluate()  # leave the module's run as it was


# ----- distributed.py, one process -------------------------------------------------------------------------
def test_context_defaults():
    c = dd.DistContext()
    assert (c.rank, c.world_size, c.enabled, c.is_main) == (0, 1, False, True)
    c.barrier()
    assert dd.DistContext(rank=1, world_size=2).enabled and not dd.DistContext(rank=1, world_size=2).is_main


def test_rank_device_and_setup(monkeypatch):
    cpu = torch.device("cpu")
    assert dd.rank_device(cpu, 1, 0) == cpu and dd.rank_device(cpu, 2, 1) == cpu
    with pytest.raises(ConfigError):
        dd.rank_device(torch.device("mps"), 2, 0)
    assert dd.rank_device(torch.device("mps"), 1, 0) == torch.device("mps")
    with pytest.raises(ConfigError):
        dd.rank_device(torch.device("cuda", 0), 2, 0)
    assert dd.rank_device(torch.device("cuda", 1), 1, 0) == torch.device("cuda", 1)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert dd.setup(cpu) == dd.DistContext(device=cpu)


def test_derive_seed_and_shard():
    assert dd.derive_seed(10, 0) == 10 and dd.derive_seed(10, 0, 5) == 15
    s1, s2 = dd.derive_seed(10, 1), dd.derive_seed(10, 2)
    assert s1 != s2 and s1 != 10 and 0 <= s1 < 2**63 and dd.derive_seed(10, 1) == s1 and dd.derive_seed(10, 1, 1) != s1
    idx = torch.arange(12)
    assert dd.shard(idx, dd.DistContext(rank=1, world_size=3)).tolist() == [4, 5, 6, 7]
    assert dd.shard(idx, dd.DistContext(rank=2, world_size=3)).tolist() == [8, 9, 10, 11]
    assert dd.shard(idx, dd.DistContext()).tolist() == list(range(12))


def test_restore_generator(capsys):
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    expected = torch.rand(3, generator=g)
    h = torch.Generator().manual_seed(99)
    assert dd.restore_generator(h, state, 0, 0) is True
    assert torch.equal(torch.rand(3, generator=h), expected)
    assert dd.restore_generator(h, torch.zeros(16, dtype=torch.uint8), 7, 5) is False  # a CUDA-sized state
    assert "warning" in capsys.readouterr().err
    ref = torch.Generator().manual_seed(7 + 1000 + 5)  # derive_seed(7, 0, 1005): rank 0 keeps seed + stream
    assert torch.equal(torch.rand(3, generator=h), torch.rand(3, generator=ref))


def test_main_first_every_rank_and_single_process_noops():
    calls = []
    dd.main_first(dd.DistContext(), lambda: calls.append(1))
    dd.every_rank(dd.DistContext(), lambda: calls.append(2))
    assert calls == [1, 2]
    with pytest.raises(KeyError):
        dd.main_first(dd.DistContext(), lambda: {}["x"])
    with pytest.raises(KeyError):
        dd.every_rank(dd.DistContext(), lambda: {}["x"])
    one = dd.DistContext(rank=1, world_size=1)  # not rank 0: main_first does not run fn
    dd.main_first(one, lambda: calls.append(3))
    assert calls == [1, 2]
    assert dd.nonfinite_loss(torch.tensor(1.5), dd.DistContext()) is None
    assert dd.nonfinite_loss(torch.tensor(float("nan")), dd.DistContext()) == "nan"
    assert dd.nonfinite_loss(torch.tensor(float("inf")), dd.DistContext()) == "inf"
    lin = torch.nn.Linear(2, 2)
    lin.weight.grad = torch.ones(2, 2)
    dd.average_gradients(list(lin.parameters()), dd.DistContext())
    assert torch.equal(lin.weight.grad, torch.ones(2, 2)) and lin.bias.grad is None
    assert dd.average_metrics({"a": 1.5}, dd.DistContext()) == {"a": 1.5}
    dd.verify_replicas(lin, dd.DistContext())
    dd.broadcast_parameters(lin, dd.DistContext())
    dd.sync_network_buffers(lin, dd.DistContext())


def test_network_buffers_and_device_options():
    class Obj(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.BatchNorm1d(3)  # parameters and buffers
            self.bank = torch.nn.Module()
            self.bank.register_buffer("x", torch.zeros(4))  # parameter-free child: sampler state
            self.register_buffer("own", torch.zeros(2))
    o = Obj()
    bufs = dd.network_buffers(o)
    assert {id(b) for b in bufs} == {id(b) for b in o.net.buffers()}
    from types import SimpleNamespace
    with pytest.raises(ConfigError):
        dd.check_device_options(SimpleNamespace(amp=True), torch.device("cpu"))
    dd.check_device_options(SimpleNamespace(amp=False), torch.device("cpu"))
    with dd.autocast(torch.device("cpu"), True):
        assert torch.get_autocast_dtype("cpu") is not None
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ConfigError):
        dd.compile_energy(torch.nn.Linear(1, 1))
    # (compile_errors: test_mutation_round68.py)


# ----- dist_checkpoint.py, one process ---------------------------------------------------------------------
def test_rank_file_and_params_digest(tmp_path):
    assert dc.rank_file(tmp_path, 12, 3) == tmp_path / "step_00000012.rank3.safetensors"
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
        lin.bias.fill_(0.5)
    h = hashlib.sha256()
    h.update(b"weight")
    h.update(np.array([1.0, 2.0], dtype=np.float32).tobytes())
    h.update(b"bias")
    h.update(np.array([0.5], dtype=np.float32).tobytes())
    assert dc.params_digest(lin) == h.hexdigest()


def test_read_rank_file_and_prune(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        dc.read_rank_file(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00hello")
    with pytest.raises(ckpt.CheckpointError, match="safetensors"):
        dc.read_rank_file(bad)
    good = tmp_path / "good.safetensors"
    save_file({"a": torch.arange(3.0)}, str(good),
              metadata={"rank_state": json.dumps({"rank": "1", "step": "7", "world_size": "2"})})
    t, meta = dc.read_rank_file(good)
    assert torch.equal(t["a"], torch.arange(3.0)) and meta == {"rank": "1", "step": "7", "world_size": "2"}
    old = tmp_path / "old.safetensors"
    save_file({"a": torch.zeros(1)}, str(old), metadata={"step": "9"})  # files before rank_state: the keys
    assert dc.read_rank_file(old)[1] == {"step": "9"}
    d = tmp_path / "ck"
    d.mkdir()
    for step in (2, 4):
        for r in (0, 1):
            dc.rank_file(d, step, r).write_bytes(b"x")
    (d / "step_00000004.safetensors").write_bytes(b"x")
    (d / "step_00000004.json").write_text("{}")
    kept = {s for s, _ in ckpt.list_checkpoints(d)}
    dc.prune_rank_files(d)
    left = sorted(p.name for p in d.iterdir() if ".rank" in p.name)
    expected = sorted(dc.rank_file(d, s, r).name for s in kept for r in (0, 1))
    assert left == expected and not dc.rank_file(d, 2, 0).exists()
    dc.prune_rank_files(tmp_path / "absent")  # no directory: nothing to do


def test_restore_rank_state_single_process(tmp_path):
    from types import SimpleNamespace

    tr = SimpleNamespace(dist=dd.DistContext(), run_dir=tmp_path, step=4)
    dc.restore_rank_state(tr, {})  # world size 1 (no key): nothing to read
    dc.restore_rank_state(tr, {"world_size": "1"})
    with pytest.raises(ckpt.CheckpointError, match="2 process"):
        dc.restore_rank_state(tr, {"world_size": "2"})
    dc.save_rank_state(tr)  # one process: nothing written
    assert not (tmp_path / "checkpoints").exists()
    dc.agree_on_checkpoint(None, dd.DistContext())


def test_local_state_round_trip():
    from types import SimpleNamespace

    class Obj(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.register_buffer("bank", torch.zeros(3))
    obj = Obj()
    tr = SimpleNamespace(objective=obj, g_data=torch.Generator().manual_seed(1), g_obj=torch.Generator().manual_seed(2),
                         device=torch.device("cpu"), cfg=SimpleNamespace(train=SimpleNamespace(seed=0)), step=3)
    st = dc.local_state(tr)
    assert set(st) == {"model.bank", "rng.data", "rng.objective", "rng.torch"}
    st = {k: v.clone() for k, v in st.items()}
    st["model.bank"] = torch.tensor([1.0, 2.0, 3.0])
    ed, eo = torch.rand(2, generator=torch.Generator().manual_seed(1)), torch.rand(2, generator=torch.Generator().manual_seed(2))
    tr.g_data.manual_seed(50)
    tr.g_obj.manual_seed(60)
    w = obj.lin.weight.detach().clone()
    dc.load_local_state(tr, st)
    assert torch.equal(obj.bank, torch.tensor([1.0, 2.0, 3.0])) and torch.equal(obj.lin.weight, w)
    assert torch.equal(torch.rand(2, generator=tr.g_data), ed)
    assert torch.equal(torch.rand(2, generator=tr.g_obj), eo)
    st["model.other"] = torch.zeros(1)
    with pytest.raises(ckpt.CheckpointError):
        dc.load_local_state(tr, st)


# ----- round 68: the gaps the mutants showed ---------------------------------------------------------------
def test_history_has_every_logged_step(run):
    assert [h["step"] for h in run.history] == [1, 2, 3, 4]  # train.log_every=1 over 4 steps


def test_sample_in_batches_is_what_the_cli_draws_in_batches(run, tmp_path):
    from ebmlab.cli import main

    out = tmp_path / "b.npy"
    assert main(["sample", str(run.path), "--n", "10", "--steps", "3", "--seed", "2", "--batch-size", "4",
                 "--out", str(out)]) == 0
    assert np.array_equal(np.load(out), run.sample(10, steps=3, seed=2, batch_size=4).numpy())


def test_sample_refuses_cond_on_an_unconditional_run(run):
    with pytest.raises(ConfigError, match="unconditional"):
        run.sample(4, steps=1, cond={"y": torch.zeros(4, dtype=torch.long)})


def test_non_finite_energies_and_log_densities_warn(run):
    x = torch.tensor([[float("nan"), 0.0], [0.1, 0.2]])
    with pytest.warns(RuntimeWarning, match="not finite"):
        run(x)
    with pytest.warns(RuntimeWarning, match="not finite"):
        run.log_density(x)


def test_points_uint8_images_and_float64_runs():
    from types import SimpleNamespace

    from ebmlab.api import Run

    img = Run.__new__(Run)
    img.kind, img.shape, img.transform = "image", (1, 1, 2), SimpleNamespace(dtype=torch.float32)
    t = img._points(np.array([[[[0, 255]]]], dtype=np.uint8))
    assert torch.allclose(t, torch.tensor([[[[-1.0, 1.0]]]]))  # v / 127.5 - 1, as the image loaders read them
    vec = Run.__new__(Run)
    vec.kind, vec.shape, vec.transform = "vector", (2,), SimpleNamespace(dtype=torch.float32)
    assert torch.equal(vec._points(np.array([[0, 255]], dtype=np.uint8)), torch.tensor([[0.0, 255.0]]))  # taken as is
    vec.transform = SimpleNamespace(dtype=torch.float64)  # a run on float64 vectors: float64 points
    assert vec._points(np.array([[0.1, 0.2]])).dtype == torch.float64
    assert vec._points(torch.tensor([[0.1, 0.2]])).dtype == torch.float64


def test_evaluate_heldout_draw_seeds(run):
    a = run.evaluate(heldout_draws=2, draw_seed=1)["sample_energy_distance_heldout_draws"]
    b = run.evaluate(heldout_draws=3)["sample_energy_distance_heldout_draws"]  # seeds 0, 1, 2
    assert len(a) == 2 and len(b) == 3
    assert a == b[1:]  # the k-th draw from seed draw_seed + k
    run.evaluate()


def test_rank_device_local_rank_beyond_the_gpus_and_setup_keeps_the_device(monkeypatch):
    with pytest.raises(DistributedError, match="LOCAL_RANK"):
        dd.rank_device(torch.device("cuda"), 2, torch.cuda.device_count())
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert dd.setup(torch.device("cuda", 1)).device == torch.device("cuda", 1)  # one process: no GPU touched


def test_derive_seed_is_63_bits():
    assert all(0 <= dd.derive_seed(s, r, k) < 2**63 for s in range(4) for r in range(1, 6) for k in range(3))


def test_autocast_off_cuda_is_a_no_op():
    import contextlib

    assert isinstance(dd.autocast(torch.device("cpu"), True), contextlib.nullcontext)


def _rank_trainer(tmp_path):
    from types import SimpleNamespace

    class Obj(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.register_buffer("bank", torch.zeros(3))
    return SimpleNamespace(objective=Obj(), g_data=torch.Generator().manual_seed(1), g_obj=torch.Generator().manual_seed(2),
                           device=torch.device("cpu"), cfg=SimpleNamespace(train=SimpleNamespace(seed=0)), step=4,
                           run_dir=tmp_path, dist=dd.DistContext(rank=1, world_size=2))


def test_load_local_state_restores_the_global_generator(tmp_path):
    tr = _rank_trainer(tmp_path)
    torch.manual_seed(5)
    st = {k: v.clone() for k, v in dc.local_state(tr).items()}
    expected = torch.rand(3)
    torch.manual_seed(77)
    dc.load_local_state(tr, st)
    assert torch.equal(torch.rand(3), expected)


def test_restore_rank_state_checks_step_and_parameters(tmp_path):
    tr = _rank_trainer(tmp_path)
    ck = tmp_path / "checkpoints"
    ck.mkdir()
    tensors = {k: v.clone().contiguous() for k, v in dc.local_state(tr).items()}
    tensors["model.bank"] = torch.tensor([4.0, 5.0, 6.0])

    def write(step, digest):
        info = {"rank": "1", "world_size": "2", "step": str(step), "params_sha256": digest}
        save_file(tensors, str(dc.rank_file(ck, 4, 1)), metadata={"rank_state": json.dumps(info, sort_keys=True)})

    write(3, dc.params_digest(tr.objective))
    with pytest.raises(ckpt.CheckpointError, match="step 3"):
        dc.restore_rank_state(tr, {"world_size": "2"})
    write(4, "0" * 64)
    with pytest.raises(ckpt.CheckpointError, match="other parameters"):
        dc.restore_rank_state(tr, {"world_size": "2"})
    assert torch.equal(tr.objective.bank, torch.zeros(3))
    write(4, dc.params_digest(tr.objective))
    dc.restore_rank_state(tr, {"world_size": "2"})
    assert torch.equal(tr.objective.bank, torch.tensor([4.0, 5.0, 6.0]))


def test_sample_refuses_more_start_points_than_n(run):
    with pytest.raises(DataError, match="n = 2"):
        run.sample(2, steps=0, init=np.zeros((3, 2)))


@pytest.mark.parametrize("kw, message", [(dict(n=0), r"^n must be a positive integer, got 0"),
                                         (dict(n=4, steps=-1), r"^steps must be a non-negative integer, got -1"),
                                         (dict(n=4, seed=-1), r"^seed must be a non-negative integer up to"),
                                         (dict(n=4, seed=2**63), r"^seed must be a non-negative integer up to")])
def test_sample_refuses_bad_integers_by_name(run, kw, message):
    with pytest.raises(ConfigError, match=message):
        run.sample(**kw)
