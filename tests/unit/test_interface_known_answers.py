"""Known answers for distributed training and the user's interface (a mutation check, docs/testing.md, eleventh
round): each rank's seeds and batch slice, the gradient and metric averages, which rank writes and which rank's
error stops the others (``training/distributed.py``, ``dist_checkpoint.py``, the ``Trainer``'s use of them); how
``ebmlab.train``'s keywords and ``ebmlab train``'s flags become one config, and what ``Run.sample`` and ``ebmlab
sample`` hand to the sampler (``api.py``, ``api_config.py``, ``cli.py``, ``cli_commands.py``).

No process group and no training: a world of two ranks is played by one process (``TwoRanks``: rank 1's call runs
first and records what it sends to each collective, rank 0's call then receives both ranks' reduction), and the
training and drawing calls are replaced by stubs that record what they are given.
"""
import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist

import ebmlab
from ebmlab import api, cli, cli_commands
from ebmlab.data.base import Affine
from ebmlab.errors import DistributedError
from ebmlab.training import checkpoint as ckpt
from ebmlab.training import dist_checkpoint, distributed
from ebmlab.training.config import load_config

TINY = ["train.batch_size=8", "model.width=16", "model.depth=1", "data.n_train=400", "data.n_test=200",
        "train.threads=1", "train.progress=false", "method.n_steps=2", "data.jitter=null"]


@pytest.fixture(autouse=True)
def _keep_the_processs_threads_and_random_state():
    """A Trainer sets the process's thread count (train.threads) and torch's seed: both are put back after each test."""
    threads, state = torch.get_num_threads(), torch.get_rng_state()
    yield
    torch.set_num_threads(threads)
    torch.set_rng_state(state)


class TwoRanks:
    """torch.distributed for a world of two ranks, in one process: ``run(rank, fn)`` on rank 1 records every tensor
    it all-reduces (and answers broadcasts with rank 0's ``sent`` objects); on rank 0 each all-reduce then combines
    rank 0's tensor with rank 1's recorded one by the operation asked for (SUM, MAX, MIN)."""

    def __init__(self, monkeypatch, rank0_objects=()):
        self.recorded, self.rank, self.rank0_objects = [], None, list(rank0_objects)
        monkeypatch.setattr(dist, "all_reduce", self.all_reduce)
        monkeypatch.setattr(dist, "broadcast", lambda t, src=0: None)  # rank 0's tensors are every rank's here
        monkeypatch.setattr(dist, "barrier", lambda *a, **k: None)
        monkeypatch.setattr(dist, "broadcast_object_list", self.broadcast_object_list)

    def ctx(self, rank):
        return distributed.DistContext(rank=rank, world_size=2, backend="gloo")

    def run(self, rank, fn):
        self.rank = rank
        return fn(self.ctx(rank))

    def all_reduce(self, t, op=dist.ReduceOp.SUM):
        if self.rank == 1:
            self.recorded.append(t.clone())
            return
        other = self.recorded.pop(0)
        combine = {dist.ReduceOp.SUM: torch.add, dist.ReduceOp.MAX: torch.maximum, dist.ReduceOp.MIN: torch.minimum}
        t.copy_(combine[op](t, other))

    def broadcast_object_list(self, box, src=0):
        if self.rank != src:
            box[:] = self.rank0_objects


# ----- seeds, shards and the launcher's environment (distributed.py) ------------------------------------------
def test_rank_zero_keeps_the_single_process_seeds_and_rank_r_hashes_seed_rank_and_stream():
    assert distributed.derive_seed(7, 0) == 7 and distributed.derive_seed(7, 0, 2) == 9  # seed + stream (rule 4)
    # rank 1, stream 2: the first 8 bytes of SHA-256("ebmlab:7:1:2"), little-endian, 63 bits (derive_seed's doc)
    digest = hashlib.sha256(b"ebmlab:7:1:2").digest()
    assert distributed.derive_seed(7, 1, 2) == int.from_bytes(digest[:8], "little") & (2**63 - 1)
    assert distributed.derive_seed(7, 1, 0) != distributed.derive_seed(7, 1, 2)  # independent streams per rank


def test_rank_r_of_w_takes_positions_r_b_to_r_plus_one_b_of_the_global_batch():
    idx = torch.arange(100, 112)  # a global batch of B * W = 4 * 3
    # rule 3: rank r keeps [r*B, (r+1)*B), so the ranks together see the 1-process batch of 12 in order
    for r, want in enumerate(([100, 101, 102, 103], [104, 105, 106, 107], [108, 109, 110, 111])):
        assert distributed.shard(idx, distributed.DistContext(rank=r, world_size=3)).tolist() == want


def test_rank_world_size_and_local_rank_are_read_from_torchruns_variables(monkeypatch):
    # node 1 of 2 with 4 processes each: global rank 5, local rank 1 (the GPU index on that node)
    for name, value in (("RANK", "5"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    assert distributed.env_ranks() == (5, 8, 1)


def test_only_rank_zero_is_the_process_that_writes_files():
    assert distributed.DistContext(rank=0, world_size=2).is_main  # rule 6: rank 0 alone writes
    assert not distributed.DistContext(rank=1, world_size=2).is_main
    assert not distributed.DistContext(rank=1, world_size=4).is_main


# ----- collectives on two ranks -----------------------------------------------------------------------------
def _params(grads):
    out = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(2))
        p.grad = None if g is None else torch.tensor(g)
        out.append(p)
    return out


def test_gradients_are_the_sum_over_ranks_divided_by_two_with_a_missing_gradient_counted_as_zero(monkeypatch):
    world = TwoRanks(monkeypatch)
    grads = {1: [[3.0, 6.0], [4.0, 8.0], None], 0: [[1.0, 2.0], None, None]}
    world.run(1, lambda ctx: distributed.average_gradients(_params(grads[1]), ctx))
    p, q, r = _params(grads[0])
    world.run(0, lambda ctx: distributed.average_gradients([p, q, r], ctx))
    assert p.grad.tolist() == [2.0, 4.0]  # ([1, 2] + [3, 6]) / 2, DDP's mean
    assert q.grad.tolist() == [2.0, 4.0]  # ([0, 0] + [4, 8]) / 2: rank 0 had none, a zero contribution (rule 1)
    assert r.grad is None  # no rank had a gradient: the optimizer skips it


def test_logged_metrics_are_the_mean_over_ranks(monkeypatch):
    world = TwoRanks(monkeypatch)
    world.run(1, lambda ctx: distributed.average_metrics({"loss": 3.0, "gap": -1.0}, ctx))
    assert world.run(0, lambda ctx: distributed.average_metrics({"loss": 1.0, "gap": 2.0}, ctx)) == {
        "loss": 2.0, "gap": 0.5}  # (1 + 3) / 2, (2 - 1) / 2


def test_a_nan_loss_on_rank_one_is_reported_as_rank_ones(monkeypatch):
    world = TwoRanks(monkeypatch)
    world.run(1, lambda ctx: distributed.nonfinite_loss(torch.tensor(float("nan")), ctx))
    # each rank fills its own slot of a zero vector, the sum holds every rank's loss in rank order
    assert world.run(0, lambda ctx: distributed.nonfinite_loss(torch.tensor(0.5), ctx)) == "rank 1: nan"


def test_parameters_that_differ_in_one_ulp_between_ranks_are_refused(monkeypatch):
    world = TwoRanks(monkeypatch)
    world.run(1, lambda ctx: distributed.verify_replicas(_weight(1.0), ctx))
    near = _weight(float(np.nextafter(np.float32(1.0), np.float32(2.0))))  # 1 + 2^-23, the next float32
    with pytest.raises(DistributedError, match="differ across ranks"):  # "bit-identical" (rule 5)
        world.run(0, lambda ctx: distributed.verify_replicas(near, ctx))


def _weight(value):
    module = torch.nn.Linear(1, 1, bias=False).requires_grad_(False)
    module.weight.fill_(value)
    return module


def test_rank_one_raises_the_error_rank_zero_raised_while_preparing_the_directory(monkeypatch):
    world = TwoRanks(monkeypatch, rank0_objects=[FileExistsError("runs/x exists")])
    called = []
    with pytest.raises(FileExistsError, match="runs/x exists"):  # every rank stops with rank 0's message
        world.run(1, lambda ctx: distributed.main_first(ctx, lambda: called.append(1)))
    assert called == []  # only rank 0 prepares the directory


def test_ranks_that_found_different_latest_checkpoints_are_refused(monkeypatch):
    world = TwoRanks(monkeypatch)
    world.run(1, lambda ctx: dist_checkpoint.agree_on_checkpoint(Path("step_00000006.safetensors"), ctx))
    with pytest.raises(DistributedError, match="different latest checkpoints"):  # 3 on rank 0, 6 on rank 1
        world.run(0, lambda ctx: dist_checkpoint.agree_on_checkpoint(Path("step_00000003.safetensors"), ctx))


# ----- a trainer on rank 1 of 2 (loop.py's use of the above) -----------------------------------------------
def _trainer_on(rank, world, tmp_path, monkeypatch, extra=()):
    from ebmlab.training.loop import Trainer

    monkeypatch.setattr(distributed, "setup", lambda device: world.ctx(rank))
    world.rank = rank
    return Trainer(load_config(None, TINY + ["train.seed=11", *extra]), tmp_path / "run")


def test_rank_one_seeds_its_init_and_chains_by_its_own_streams_and_shares_the_data_stream(tmp_path, monkeypatch):
    trainer = _trainer_on(1, TwoRanks(monkeypatch), tmp_path, monkeypatch)
    assert torch.initial_seed() == distributed.derive_seed(11, 1)  # stream 0: the networks' init, rank-local
    assert trainer.g_obj.initial_seed() == distributed.derive_seed(11, 1, 2)  # stream 2: the chains' noise
    assert trainer.g_data.initial_seed() == 12  # seed + 1 on every rank: one global index vector (rule 3)


def test_rank_one_trains_on_the_second_half_of_a_global_batch_of_twice_the_batch_size(tmp_path, monkeypatch):
    trainer = _trainer_on(1, TwoRanks(monkeypatch), tmp_path, monkeypatch)
    idx = torch.randint(400, (16,), generator=torch.Generator().manual_seed(12))  # B * W = 8 * 2 from seed + 1
    assert torch.equal(trainer.next_batch(), trainer.data.train[idx[8:]])


def test_rank_one_writes_its_rank_file_and_never_the_shared_checkpoint(tmp_path, monkeypatch):
    world = TwoRanks(monkeypatch)
    trainer = _trainer_on(1, world, tmp_path, monkeypatch)
    trainer.step = 3
    trainer.save()  # (verify_replicas' all-reduces on rank 1 only record)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step_00000003.rank1.safetensors"]  # rule 5: the shared step_N files are rank 0's


def _rank_trainer(tmp_path, rank, world_size, step):
    return SimpleNamespace(dist=distributed.DistContext(rank=rank, world_size=world_size), run_dir=tmp_path,
                           step=step)


def test_a_checkpoint_of_one_process_is_refused_on_two(tmp_path):
    # the world size must be the same in both directions (docs/distributed.md, "Resume")
    with pytest.raises(ckpt.CheckpointError, match="written by 1 process"):
        dist_checkpoint.restore_rank_state(_rank_trainer(tmp_path, 0, 2, 6), {"world_size": 1})


def test_a_rank_file_of_another_step_is_refused(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "checkpoints").mkdir()
    path = dist_checkpoint.rank_file(tmp_path / "checkpoints", 6, 1)
    save_file({"rng.data": torch.zeros(1)}, str(path), metadata={"step": "3", "world_size": "2", "rank": "1"})
    with pytest.raises(ckpt.CheckpointError, match="for step 3, not 6"):
        dist_checkpoint.restore_rank_state(_rank_trainer(tmp_path, 1, 2, 6), {"world_size": 2})


# ----- ebmlab.train's keywords and ebmlab train's flags ------------------------------------------------------
def _api_config(monkeypatch, *args, **kwargs):
    seen = []
    monkeypatch.setattr(api, "_train_in", lambda run_dir, cfg, data, **kw: seen.append((run_dir, cfg)))
    ebmlab.train(*args, **kwargs)
    return seen[0]


def _cli_config(monkeypatch, argv):
    seen = []
    monkeypatch.setattr(cli_commands, "_train_and_evaluate", lambda args, cfg, run_dir, ctx: seen.append((run_dir, cfg)) or 0)
    assert cli.main(["train", *argv]) == 0
    return seen[0]


def _without_path(cfg):
    d = cfg.to_dict()
    d["data"].pop("path")
    return d


def test_train_keywords_give_the_config_of_the_same_cli_flags(tmp_path, monkeypatch):
    _, from_api = _api_config(monkeypatch, "noise", config="paper004_rings_hybrid", out=tmp_path / "a",
                              train={"steps": 7, "seed": 3, "threads": 1}, eval={"n_samples": 50},
                              overrides={"model.width": 16})
    _, from_cli = _cli_config(monkeypatch, ["--config", "paper004_rings_hybrid", "--out", str(tmp_path / "c"),
                                            "--set", "method.name=noise", "--set", "train.steps=7",
                                            "--set", "train.seed=3", "--set", "train.threads=1",
                                            "--set", "eval.n_samples=50", "--set", "model.width=16"])
    assert from_api.to_dict() == from_cli.to_dict()
    assert (from_api.train.steps, from_api.train.seed, from_api.train.threads) == (7, 3, 1)
    # the rest of the config's sections stay: its batch 256, its 100 Langevin steps (noise shares hybrid's keys)
    assert (from_api.train.batch_size, from_api.method.n_steps, from_api.method.name) == (256, 100, "noise")


def test_vectors_in_memory_and_in_a_file_give_one_config_with_and_without_a_config(tmp_path, monkeypatch):
    x = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "lr.yaml").write_text("train:\n  lr: 0.002\n")  # a config that says nothing about the data
    for config in (None, tmp_path / "lr.yaml"):  # user-data defaults only without a config (README, --data's help)
        _, from_api = _api_config(monkeypatch, data=x, config=config, out=tmp_path / "a", train={"steps": 4})
        flags = ["--config", str(config)] if config else []
        _, from_cli = _cli_config(monkeypatch, [*flags, "--data", str(tmp_path / "x.npy"), "--out",
                                                str(tmp_path / "c"), "--set", "train.steps=4"])
        assert _without_path(from_api) == _without_path(from_cli)
        assert from_api.data.whiten is (config is None)  # config.USER_DATA_DEFAULTS' whitening


def test_the_default_run_directory_is_runs_method_underscore_data_in_both(monkeypatch):
    run_api, _ = _api_config(monkeypatch, "noise", data="8gaussians")
    run_cli, _ = _cli_config(monkeypatch, ["--set", "method.name=noise", "--data", "8gaussians"])
    assert run_api == run_cli == Path("runs/noise_8gaussians")  # README: runs/<method>_<data>


def test_one_override_given_as_a_string_names_the_loader_of_a_data_path_as_a_list_does(tmp_path, monkeypatch):
    """A real bug found by this round: ``overrides="data.name=npy"`` (one string, which ``raw_config`` takes) was read
    character by character when deciding whether the user named ``data.name``, so the path's guess (``array``)
    replaced the user's ``npy`` and the refusal then asked for data.name=npy."""
    np.save(tmp_path / "imgs.npy", np.random.default_rng(0).integers(0, 256, (50, 8, 8)).astype(np.uint8))
    for overrides in (["data.name=npy"], "data.name=npy"):
        _, cfg = _api_config(monkeypatch, data=tmp_path / "imgs.npy", overrides=overrides, config="digits_hybrid",
                             out=tmp_path / "a")
        assert cfg.data.name == "npy"  # the user's loader, not the guess from the path


def test_resume_reads_the_same_flags_as_a_fresh_run_data_included(tmp_path, monkeypatch):
    from ebmlab.training import run as runs

    seen = []

    def resume_config(run_dir, overrides, config=None):
        seen.append(overrides)
        raise KeyboardInterrupt  # stop here: the overrides are what this test is about
    monkeypatch.setattr(runs, "resume_config", resume_config)
    np.save(tmp_path / "x.npy", np.zeros((10, 2), np.float32))
    cli.main(["train", "--out", str(tmp_path / "r"), "--resume", "--data", str(tmp_path / "x.npy"),
              "--set", "train.steps=9"])
    # --data is data.path (absolute) and the array loader, as for a fresh run; no user-data defaults on --resume
    assert seen == [["train.steps=9", f"data.path={tmp_path / 'x.npy'}", "data.name=array"]]


def test_train_with_evaluate_false_trains_and_skips_only_the_final_evaluation(tmp_path, monkeypatch):
    from ebmlab.training import evaluate, loop

    calls = []
    monkeypatch.setattr(loop, "prepare_run_dir", lambda *a, **k: SimpleNamespace(release=lambda: calls.append("unlock")))
    monkeypatch.setattr(evaluate, "final_evaluation", lambda trainer: calls.append("evaluate"))
    trainer = SimpleNamespace(fit=lambda on_sample: calls.append("fit"), evaluation_stopped=None)
    for flag, want in ((False, ["fit", "unlock"]), (True, ["fit", "evaluate", "unlock"])):
        calls.clear()
        api._fit_in(trainer, tmp_path, None, None, None, None, False, flag, False)
        assert calls == want  # evaluate=False: no metrics.json (the docstring), the lock released either way


def test_an_ebmlab_dataset_given_to_train_is_all_its_rows_validation_rows_included():
    """A real bug found by this round: the rows of a Dataset's validation split (``data.val_fraction``, which the
    user-data defaults set, so ``run.data()`` of such a run has one) were dropped from the data trained on."""
    from ebmlab.api_data import in_memory
    from ebmlab.data import build_dataset

    for val in ("null", "0.25"):
        ds = build_dataset(load_config(None, ["data.n_train=40", "data.n_test=10", f"data.val_fraction={val}",
                                              "train.batch_size=8"]).data)
        parts = [ds.train, ds.test] if ds.val is None else [ds.train, ds.val, ds.test]
        want = torch.cat([ds.transform.to_data(p) for p in parts])  # 40 + 10 rows (30 + 10 + 10), data coordinates
        assert want.shape[0] == 50
        np.testing.assert_array_equal(in_memory(ds), want.numpy())


# ----- what sampling hands to the sampler -------------------------------------------------------------------
class Stand(torch.nn.Module):
    """A stand-in objective: one parameter (the device), one sampling level."""
    sample_levels = 1

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def steps_run(self, steps):
        return 5 if steps is None else steps


def _recording_draw(monkeypatch):
    from ebmlab.training import drawing

    calls = []

    def draw(objective, n, generator, **kw):
        calls.append(dict(kw, n=n, seed=generator.initial_seed()))
        return SimpleNamespace(x=torch.zeros(n, 2), info={})
    monkeypatch.setattr(drawing, "draw", draw)
    return calls


def _identity():
    return Affine(shift=torch.zeros(2), scale=torch.ones(2))


def test_run_sample_hands_its_n_seed_steps_and_batch_size_to_the_sampler(monkeypatch):
    calls = _recording_draw(monkeypatch)
    run = api.Run.__new__(api.Run)
    run.objective, run.transform, run.kind, run.shape, run.path = Stand(), _identity(), "vector", (2,), Path(".")
    assert run.sample(7, steps=3, seed=42, batch_size=2).shape == (7, 2)
    assert {k: calls[0][k] for k in ("n", "seed", "steps", "batch_size")} == {"n": 7, "seed": 42, "steps": 3,
                                                                               "batch_size": 2}


def test_ebmlab_sample_hands_its_flags_to_the_sampler_and_defaults_as_run_sample(tmp_path, monkeypatch):
    from ebmlab import plots
    from ebmlab.training.drawing import data_starts

    calls = _recording_draw(monkeypatch)
    test_rows = torch.arange(40.0).view(20, 2)
    opened = SimpleNamespace(objective=Stand(), data=SimpleNamespace(transform=_identity(), kind="vector",
                                                                     test=test_rows),
                             cfg=load_config(None, []), checkpoint="c", step=1)
    monkeypatch.setattr(cli_commands, "_open", lambda args, need_data=True: opened)
    monkeypatch.setattr(plots, "sample_scatter", lambda *a, **k: None)
    run = tmp_path / "run"
    assert cli.main(["sample", str(run), "--n", "6", "--seed", "9", "--steps", "4", "--batch-size", "3",
                     "--init", "data"]) == 0
    assert {k: calls[0][k] for k in ("n", "seed", "steps", "batch_size")} == {"n": 6, "seed": 9, "steps": 4,
                                                                               "batch_size": 3}
    assert torch.equal(calls[0]["x0"], data_starts(test_rows, 6, 9, torch.device("cpu")))  # --seed picks the rows
    assert cli.main(["sample", str(run)]) == 0  # the defaults: --n 1000, Run.sample's seed 0 and steps None
    assert {k: calls[1][k] for k in ("n", "seed", "steps", "batch_size", "x0")} == {
        "n": 1000, "seed": 0, "steps": None, "batch_size": None, "x0": None}
    assert (run / "samples" / "samples_noise_5steps_seed0.npy").is_file()  # 5: the stand-in's own step count


@pytest.mark.parametrize("flag, value, need", [("--n", "0", "a positive integer"),
                                               ("--steps", "-1", "a non-negative integer"),
                                               ("--seed", "-1", "a non-negative integer up to"),
                                               ("--seed", str(2**63), "a non-negative integer up to")])
def test_ebmlab_sample_names_the_one_bad_flag_before_opening_the_run(flag, value, need, monkeypatch, capsys):
    # It said "--n must be positive, --steps non-negative and --seed in 0..2**63-1, got 0, None and 0".
    monkeypatch.setattr(cli_commands, "_open", lambda *a, **k: pytest.fail("the run was opened"))
    assert cli.main(["sample", "RUN", flag, value]) == 2
    assert f"error: {flag} must be {need}" in capsys.readouterr().err


def test_sample_and_eval_open_runs_on_the_cpu_by_default():
    parser = cli.build_parser()
    for argv in (["sample", "RUN"], ["eval", "RUN"]):  # --help: "device to run on", default cpu
        args = parser.parse_args(argv)
        assert (args.device, args.checkpoint) == ("cpu", None)


def test_experiment_flags_reach_the_experiment_as_its_options(tmp_path, monkeypatch):
    import ebmlab.experiments as experiments

    seen = []
    monkeypatch.setattr(experiments, "run_experiment", lambda name, out, quick=False, **o: seen.append((name, out, quick, o)))
    assert cli.main(["experiment", "data_defaults", "--out", str(tmp_path), "--quick", "--seeds", "0,1", "--jobs",
                     "1", "--budget", "5", "--auroc-margin", "0.02", "--data-seeds", "3,4"]) == 0
    assert seen == [("data_defaults", tmp_path, True, {"seeds": (0, 1), "jobs": 1, "budget": 5.0,
                                                        "auroc_margin": 0.02, "data_seeds": (3, 4)})]


def test_the_users_vectors_get_the_same_defaults_however_the_cli_names_them(tmp_path):
    """``ebmlab.train`` added the user-data defaults whenever no config was given and data.name was ``array``;
    the CLI only with ``--data FILE``, so ``--set data.name=array --set data.path=FILE`` trained without them."""
    f = tmp_path / "x.npy"
    np.save(f, np.zeros((10, 2), np.float32))

    def overrides(**kw):
        args = SimpleNamespace(**{"set": None, "data": None, "config": None, "resume": False, **kw})
        return sorted(cli_commands._train_overrides(args))
    by_data = overrides(data=str(f))
    assert "model.base=gmm" in by_data
    assert overrides(set=["data.name=array", f"data.path={f.absolute()}"]) == by_data
    assert "model.base=gmm" not in overrides(set=["data.name=array"], config="default")  # a config: as it says


def test_a_dataset_named_twice_is_refused_by_the_cli_and_by_train(tmp_path):
    """``--data digits --set data.name=rings`` trained on rings (the later --set won) while
    ``ebmlab.train(data="digits", overrides={"data.name": "rings"})`` trained on digits: two answers to one question."""
    from ebmlab.errors import DataError
    args = SimpleNamespace(set=["data.name=rings"], data="digits", config=None, resume=False)
    with pytest.raises(DataError, match="--data digits and --set data.name=rings name two datasets"):
        cli_commands._train_overrides(args)
    with pytest.raises(DataError, match="data='digits' and the override data.name='rings' name two datasets"):
        ebmlab.train(data="digits", overrides={"data.name": "rings"}, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    args.set = ["data.name=digits"]  # the same name twice is one dataset
    assert cli_commands._train_overrides(args) == ["data.name=digits", "data.name=digits"]
