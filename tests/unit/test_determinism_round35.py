"""Seeds and determinism (a read-only helper's audit of commit ``7d53b0a``, docs/testing.md "Thirty-fifth round"): the reproducibility promises of README.md, docs/ and the public
docstrings (``ebmlab.train``, ``ebmlab.load``, ``Run.sample``, ``Run.evaluate``, ``ebmlab sample`` / ``eval``).

Promises encoded (README unless said otherwise):
- the same config trains the same run: bit-identical checkpoints and logged numbers (wall times aside), in a fresh
  process as in one that trained before, on the command line as through ``ebmlab.train`` (docs/testing.md: "the
  command line against Python, and a fresh process against one that trained other runs first. All identical");
- ``train.seed`` changes what is trained, ``data.seed`` the data / split (config.py: "independent of train.seed");
- an MLP run is the same on 1 and 2 threads (README "--resume": "MLPs came out identical");
- ``Run.sample``: ``seed`` fixes the draw; every stochastic function takes a ``torch.Generator`` (no global RNG);
  ``progress`` "changes no sample"; ``batch_size`` >= n is the unbatched draw and "the first B samples are those of
  --n B" (AIS chains excepted); ``--init data``: distinct held-out rows "shuffled by --seed";
- ``ebmlab sample`` and ``run.sample`` "share one code path: the same arguments draw the same samples";
- ``ebmlab eval`` / ``run.evaluate``: "the same numbers" as training's metrics.json; ``--heldout-draws K --draw-seed S``:
  "the k-th from seed S + k" (default S = 0), ``heldout_draw_seeds`` the first and last seed, ``..._mean`` their mean;
- observation leaves training alone: sampling and evaluating between two trainings changes nothing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.cli import main
from ebmlab.objectives import METHODS

SRC = Path(ebmlab.__file__).resolve().parents[1]
AUDITED = ["hybrid", "noise", "persistent", "joint_cd", "cd_ce", "improved_cd", "implicit_diffusion", "cdrl", "drl"]
SHRINK = {"n_steps": 3, "n_steps_data": 2, "buffer_size": 64, "K": 2, "k_steps": 2, "T": 4, "n_levels": 3,
          "num_levels": 3, "n_entropy": 8, "history": 8, "steps_per_level": 2, "langevin_steps": 2,
          "sample_steps": 2, "n_rounds": 1, "init_warmup": 0, "augment": "false", "multiscale": "false"}
QUIET = ["train.progress=false", "eval.plots=false", "train.threads=1", "eval.n_samples=32", "eval.grid_size=8",
         "eval.long_run_factor=1", "train.log_every=1"]
TIME_KEYS = {"time", "select_seconds"}


def tiny(name: str, *extra: str) -> list[str]:
    """Overrides shrinking method ``name`` to a 3-update run on a 2-D toy (as the contract tests do)."""
    fields = {f.name for f in dataclasses.fields(METHODS[name].config)}
    over = [f"method.name={name}", "model.width=16", "model.depth=1", "data.n_train=256", "data.n_test=64",
            "train.batch_size=16", "data.name=checkerboard", "train.steps=3", "train.checkpoint_every=2", *QUIET]
    return over + [f"method.{k}={v}" for k, v in SHRINK.items() if k in fields] + list(extra)


def train(out: Path, name: str = "hybrid", *extra: str, evaluate: bool = False, data=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ebmlab.train(data=data, overrides=tiny(name, *extra) if data is None else list(extra), out=out,
                            overwrite=True, evaluate=evaluate)


def checkpoint_bytes(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "checkpoints").iterdir())}


def log_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]


def same_run(a: Path, b: Path) -> bool:
    return checkpoint_bytes(a) == checkpoint_bytes(b) and log_rows(a) == log_rows(b)


def sample(run, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run.sample(*args, **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained run per audited method (3 updates, no final evaluation)."""
    root = tmp_path_factory.mktemp("runs")
    return {m: train(root / m, m) for m in AUDITED}


USER_OVERRIDES = ["train.steps=4", "train.threads=1", "train.progress=false", "eval.plots=false", "model.width=16",
                  "model.depth=1", "eval.n_samples=32", "train.select_every=2", "eval.long_run_factor=1"]


def user_rows() -> np.ndarray:
    r = np.random.default_rng(0)
    return np.concatenate([r.normal(0, 1, (100, 3)), r.normal(4, 0.5, (100, 3))])


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """A tiny run on the user's own vectors (the --data defaults: whitening, GMM base, validation selection)."""
    out = tmp_path_factory.mktemp("user") / "u"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ebmlab.train("hybrid", user_rows(), overrides=USER_OVERRIDES, out=out)
    return out


# ----- training ------------------------------------------------------------------------------------------------
def test_cli_train_in_a_fresh_process_equals_python_train_bit_for_bit(tmp_path):
    over = tiny("hybrid", "train.steps=2")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "ebmlab", "train", "--out", str(tmp_path / "cli")]
    for o in over:
        argv += ["--set", o]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ebmlab.train(overrides=over, out=tmp_path / "api")
    assert same_run(tmp_path / "cli", tmp_path / "api")
    assert (tmp_path / "cli" / "metrics.json").read_bytes() == (tmp_path / "api" / "metrics.json").read_bytes()
    assert (tmp_path / "cli" / "config.yaml").read_text() == (tmp_path / "api" / "config.yaml").read_text()


@pytest.mark.parametrize("name", AUDITED)
def test_the_same_config_twice_trains_the_same_run(runs, tmp_path, name):
    train(tmp_path / "again", name)
    assert same_run(runs[name].path, tmp_path / "again")


@pytest.mark.parametrize("name", AUDITED)
def test_train_seed_changes_the_weights_and_not_the_data(runs, tmp_path, name):
    other = train(tmp_path / "seed1", name, "train.seed=1")
    assert checkpoint_bytes(runs[name].path) != checkpoint_bytes(tmp_path / "seed1")
    assert torch.equal(runs[name].data().train, other.data().train)
    assert torch.equal(runs[name].data().test, other.data().test)


def test_data_seed_changes_the_toy_data(runs, tmp_path):
    other = train(tmp_path / "d7", "hybrid", "data.seed=7")
    assert not torch.equal(runs["hybrid"].data().test, other.data().test)


def test_user_vectors_split_follows_data_seed_not_train_seed(tmp_path):
    x = user_rows()
    base = ["train.steps=1", "train.threads=1", "train.progress=false", "model.width=16", "model.depth=1",
            "train.select_every=50"]
    a, b, c = (train(tmp_path / n, "hybrid", *base, *o, data=x)
               for n, o in (("a", []), ("b", ["train.seed=1"]), ("c", ["data.seed=7"])))
    assert torch.equal(a.data().test, b.data().test) and torch.equal(a.data().train, b.data().train)
    assert not torch.equal(a.data().test, c.data().test)


def test_an_mlp_run_is_the_same_on_one_and_two_threads(runs, tmp_path):
    train(tmp_path / "t2", "hybrid", "train.threads=2")  # the sidecars differ by design: they record the count
    tensors = {k: v for k, v in checkpoint_bytes(runs["hybrid"].path).items() if k.endswith(".safetensors")}
    assert tensors == {k: v for k, v in checkpoint_bytes(tmp_path / "t2").items() if k.endswith(".safetensors")}
    assert log_rows(runs["hybrid"].path) == log_rows(tmp_path / "t2")


def test_sampling_and_evaluating_between_two_trainings_changes_nothing(tmp_path):
    first = train(tmp_path / "a", "persistent")
    sample(first, 16, seed=5)
    sample(first, 8, seed=1, init="data")
    first.evaluate()
    torch.rand(7)  # the caller's own use of the global generator
    np.random.rand(3)
    train(tmp_path / "b", "persistent")
    assert same_run(tmp_path / "a", tmp_path / "b")


# ----- sampling ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", AUDITED)
def test_a_seed_fixes_the_draw_whatever_the_global_generators(runs, name):
    run = runs[name]
    draws = []
    for s in (1, 2):
        torch.manual_seed(s)
        np.random.seed(s)
        state = torch.get_rng_state().clone()
        draws.append(sample(run, 10, seed=4))
        assert torch.equal(state, torch.get_rng_state()), "sampling drew from the global torch generator"
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], sample(run, 10, seed=5))
    assert torch.equal(draws[0], sample(run, 10, seed=4, progress=True))  # "the bar changes no sample"
    x, _ = sample(run, 10, seed=4, return_info=True)
    assert torch.equal(draws[0], x)


@pytest.mark.parametrize("name", AUDITED)
def test_batch_size_keeps_the_documented_samples(runs, name):
    run = runs[name]
    assert torch.equal(sample(run, 4, seed=4, batch_size=10), sample(run, 4, seed=4))  # --n <= B: the same
    assert torch.equal(sample(run, 10, seed=4, batch_size=3), sample(run, 10, seed=4, batch_size=3))
    if getattr(run.config.method, "noise_chain", None) != "ais":  # AIS: resampled together (documented exception)
        assert torch.equal(sample(run, 10, seed=4, batch_size=4)[:4], sample(run, 4, seed=4))
    assert torch.equal(sample(run, 6, seed=4, init="data", batch_size=2)[:2], sample(run, 2, seed=4, init="data"))


def test_init_data_starts_are_distinct_held_out_rows_shuffled_by_the_seed(runs):
    run = runs["persistent"]
    test_rows = run.transform.to_data(run.data().test)
    a = sample(run, 20, steps=0, seed=1, init="data")
    b = sample(run, 20, steps=0, seed=2, init="data")
    assert torch.equal(a, sample(run, 20, steps=0, seed=1, init="data"))
    assert len({tuple(r.tolist()) for r in a}) == 20
    held = {tuple(np.round(r.numpy(), 4).tolist()) for r in test_rows}
    assert all(tuple(np.round(r.numpy(), 4).tolist()) in held for r in a)
    assert not torch.equal(a, b)


def test_ebmlab_sample_draws_what_run_sample_draws_with_and_without_batches(runs, tmp_path, capsys):
    run = runs["cdrl"]
    for extra, kw in (([], {}), (["--batch-size", "3"], {"batch_size": 3}), (["--init", "data"], {"init": "data"})):
        files = []
        for i in range(2):
            out = tmp_path / f"s{extra[:1]}_{i}.npy".replace("-", "")
            assert main(["sample", str(run.path), "--n", "7", "--seed", "9", *extra, "--out", str(out)]) == 0
            files.append(np.load(out))
        assert np.array_equal(files[0], files[1])
        assert np.array_equal(files[0], sample(run, 7, seed=9, **kw).numpy())
    capsys.readouterr()


# ----- evaluation ----------------------------------------------------------------------------------------------
def test_evaluate_repeats_trainings_metrics_and_ignores_the_global_generators(user_run):
    trained = json.loads((user_run / "metrics.json").read_text())
    run = ebmlab.load(user_run)
    results = []
    for s in (1, 2):
        torch.manual_seed(s)
        np.random.seed(s)
        state = torch.get_rng_state().clone()
        results.append(run.evaluate())
        assert torch.equal(state, torch.get_rng_state())
    assert results[0] == results[1]
    assert {k: v for k, v in results[0].items() if k in trained} == trained


def test_draw_seed_gives_the_kth_draw_seed_s_plus_k(user_run):
    run = ebmlab.load(user_run)
    two = run.evaluate(heldout_draws=2, draw_seed=5)
    one = run.evaluate(heldout_draws=1, draw_seed=6)
    assert two["heldout_draw_seeds"] == [5, 6]
    assert two["sample_energy_distance_heldout_draws"][1] == one["sample_energy_distance_heldout_draws"][0]
    assert two["sample_energy_distance_heldout_mean"] == pytest.approx(np.mean(two["sample_energy_distance_heldout_draws"]))
    default = run.evaluate(heldout_draws=1)
    assert default["heldout_draw_seeds"] == [0, 0]
    assert default["sample_energy_distance_heldout_draws"] == run.evaluate(heldout_draws=1, draw_seed=0)[
        "sample_energy_distance_heldout_draws"]
    assert {k: v for k, v in two.items() if "draw" not in k and "heldout_mean" not in k} == \
        {k: v for k, v in default.items() if "draw" not in k and "heldout_mean" not in k}


def test_ebmlab_eval_writes_what_run_evaluate_returns(user_run, capsys):
    expected = ebmlab.load(user_run).evaluate(heldout_draws=2, draw_seed=3)
    for _ in range(2):
        assert main(["eval", str(user_run), "--heldout-draws", "2", "--draw-seed", "3"]) == 0
        assert json.loads((user_run / "metrics.json").read_text()) == expected
    capsys.readouterr()


def test_training_leaves_the_callers_global_generators_as_they_were(tmp_path):
    # seen in the audit: ebmlab.train reseeded torch's global generator (Trainer: torch.manual_seed) and left it so,
    # so a caller's `for s in seeds: x = make_data(); ebmlab.train(...)` drew data that depended on the last run's
    # train.seed; the caller's state now comes back (and the run is what it was: the same weights either way)
    import numpy as np

    import ebmlab
    x = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    tiny = {"steps": 3, "threads": 1, "progress": False, "select_every": None}
    weights = []
    for i, s in enumerate((11, 12)):
        torch.manual_seed(s)
        before = torch.get_rng_state().clone()
        run = ebmlab.train("hybrid", x, out=tmp_path / f"r{i}", train=tiny, evaluate=False,
                           model={"width": 16, "depth": 1})
        assert torch.equal(before, torch.get_rng_state())
        weights.append([p.detach().clone() for p in run.objective.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))  # the caller's global state does not reach the run
    before = torch.get_rng_state().clone()
    ebmlab.load(tmp_path / "r0")  # (building the network drew its first weights from the global generator)
    ebmlab.resume(tmp_path / "r0", train={"steps": 4}, evaluate=False)
    assert torch.equal(before, torch.get_rng_state())
