"""The public Python API (issue 14): ``ebmlab.train`` on a user's own energy and tensor, ``ebmlab.load``
in a fresh process, sampling in data coordinates; no side effects at import; the wheel ships the configs.

The README's example is run verbatim: its three ``python`` blocks (``my_energy.py``, ``train.py``,
``load.py``, each after a ``<!-- python-api-example: NAME -->`` marker) are written into ``tmp_path``;
``train.py`` and ``load.py`` run in two fresh processes with ``tmp_path`` on ``PYTHONPATH``.
"""
from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab import errors

ROOT = Path(__file__).resolve().parents[2]
TINY = {"steps": 20, "progress": False, "batch_size": 64}
TINY_EVAL = {"n_samples": 64, "grid_size": 12, "long_run_factor": 2}


def readme_examples() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"<!-- python-api-example: (\S+) -->\s*```python\n(.*?)```", text, flags=re.DOTALL)
    return dict(found)


def _env(path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(path), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("EBMLAB_DEBUG", None)
    return env


def _python(script: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=_env(cwd), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """The README's train.py run in a fresh process (user module on PYTHONPATH): (dir, stdout)."""
    d = tmp_path_factory.mktemp("readme")
    ex = readme_examples()
    (d / "my_energy.py").write_text(ex["my_energy.py"])
    res = _python(ex["train.py"], d)
    assert res.returncode == 0, res.stderr[-3000:]
    return d, res.stdout


def test_readme_example_is_short_and_complete():
    ex = readme_examples()
    assert set(ex) == {"my_energy.py", "train.py", "load.py"}
    lines = [ln for name in ("train.py", "load.py") for ln in ex[name].splitlines() if ln.strip()]
    assert len(lines) <= 20, len(lines)
    assert '"hybrid"' in ex["train.py"] and "energy=MyEnergy" in ex["train.py"]


def test_hybrid_on_own_energy_reloads_and_samples_in_a_fresh_process(readme_run):
    """Done-when of issue 14: train through the public API, load in a fresh process, sample in data
    coordinates with the method's own sampler."""
    d, printed = readme_run
    assert "floor" in printed
    run_dir = d / "runs" / "my_run"
    cfg = (run_dir / "config.yaml").read_text()
    assert "name: custom" in cfg and "target: my_energy:MyEnergy" in cfg
    assert (run_dir / "data.npy").is_file()  # in-memory data saved into the run: self-contained
    info = json.loads((run_dir / "run.json").read_text())
    assert info["data"]["path"] == str((run_dir / "data.npy").resolve()) and len(info["data"]["sha256"]) == 64
    check = readme_examples()["load.py"] + textwrap.dedent("""
        import json, torch
        x = torch.from_numpy(__import__("numpy").load("runs/my_run/data.npy"))
        s = run.sample(1000, seed=1)
        s2, diag = run.sample(50, steps=5, init="data", return_info=True)
        print("RESULT", json.dumps({"shape": list(s.shape), "finite": bool(torch.isfinite(s).all()),
              "mean": s.mean(0).tolist(), "std": s.std(0).tolist(), "data_mean": x.mean(0).tolist(),
              "data_std": x.std(0).tolist(), "step": run.checkpoint_step, "kind": type(run.energy).__name__,
              "energy": list(run(s[:4]).shape), "logp": list(run.log_density(s[:4]).shape),
              "diag": sorted(diag), "s2": list(s2.shape), "metrics": sorted(run.metrics)}))
    """)
    res = _python(check, d)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout.split("RESULT", 1)[1])
    assert r["shape"] == [1000, 2] and r["finite"] and r["s2"] == [50, 2]
    # in-memory vectors get the --data defaults: the run's result is its best validation check
    selected = json.loads((run_dir / "metrics.json").read_text())["selected_step"]
    assert r["step"] == selected and (selected % 50 == 0 or selected == 300)
    assert r["energy"] == [4] and r["logp"] == [4] and "accept_rate" in r["diag"]
    # data coordinates: the data have mean (0, 0.5) and std (2.0, 0.6); model coordinates would be (0, 0), (1, 1)
    for k in range(2):
        assert abs(r["mean"][k] - r["data_mean"][k]) < 0.5 * r["data_std"][k], r
        assert 0.5 < r["std"][k] / r["data_std"][k] < 2.0, r
    assert "sample_energy_distance_floor" in r["metrics"] and "density_kl_skipped" in r["metrics"]


def test_unimportable_energy_is_one_clear_sentence(readme_run):
    d, _ = readme_run
    assert "my_energy" not in sys.modules  # the user's module is not importable in this process
    with pytest.raises(errors.ConfigError, match=r"model.target 'my_energy:MyEnergy' cannot be imported") as exc:
        ebmlab.load(d / "runs" / "my_run")
    assert "\n" not in str(exc.value)
    env = dict(_env(d), PYTHONPATH="")
    res = subprocess.run([sys.executable, "-m", "ebmlab.cli", "sample", str(d / "runs" / "my_run"), "--n", "5"],
                         cwd=d.parent, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "cannot be imported" in res.stderr


def test_cli_samples_a_run_trained_in_python(readme_run):
    d, _ = readme_run
    res = subprocess.run([sys.executable, "-m", "ebmlab.cli", "sample", "runs/my_run", "--n", "20", "--steps", "3"],
                         cwd=d, env=_env(d), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    x = np.load(d / "runs" / "my_run" / "samples" / "samples_noise_3steps_seed0.npy")
    assert x.shape == (20, 2)


# ----- in-process API (built-in models) --------------------------------------------------------------------
def _blobs(n: int = 400, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    return np.concatenate([g.normal([3.0, -1.0], 0.4, (n // 2, 2)), g.normal([5.0, 2.0], 0.4, (n - n // 2, 2))])


def test_train_array_returns_run_with_honest_user_data_metrics(tmp_path):
    from ebmlab import cli
    x = _blobs(400)
    run = ebmlab.train("noise", data=x, out=tmp_path / "r", train=TINY, eval=TINY_EVAL,
                       overrides={"model.width": 16})
    assert isinstance(run, ebmlab.Run) and run.method == "noise"
    m = run.metrics
    # the result is the validation best among the start (the Gaussian base) and the checks (the last at 20)
    assert run.checkpoint_step == m["selected_step"] == m["checkpoint_step"] and m["selected_step"] in (0, 20)
    # held-out split = 40 rows: the floor compares two disjoint halves of 20, never a set with itself
    assert m["eval_n_samples"] == 20 and "eval_n_samples_note" in m
    assert m["sample_energy_distance_floor"] > 0
    assert m["density_kl_skipped"] == "no exact density for user data" and "density_kl" not in m
    assert not any(isinstance(v, float) and not np.isfinite(v) for v in m.values())
    assert run.history and run.history[-1]["step"] == 20
    s = run.sample(30, steps=4, seed=3)
    assert s.shape == (30, 2) and torch.equal(s, run.sample(30, steps=4, seed=3))
    assert run(torch.from_numpy(x[:5]).float()).shape == (5,)
    # in batches: the first batch is the unbatched draw of its size, and the CLI draws the same
    batched = run.sample(10, steps=4, seed=3, batch_size=4)
    assert batched.shape == (10, 2) and torch.equal(batched[:4], run.sample(4, steps=4, seed=3))
    assert torch.equal(run.sample(4, steps=4, seed=3, batch_size=9), run.sample(4, steps=4, seed=3))
    assert cli.main(["sample", str(tmp_path / "r"), "--n", "10", "--steps", "4", "--seed", "3", "--batch-size", "4",
                     "--out", str(tmp_path / "b.npy")]) == 0
    assert np.allclose(np.load(tmp_path / "b.npy"), batched.numpy())
    with pytest.raises(ValueError, match="batch size must be a positive integer"):
        run.sample(3, batch_size=0)
    start = torch.from_numpy(x[:7])  # float64, as the rows given: the run's data precision (samples in float64)
    assert torch.allclose(run.sample(7, steps=0, init=start), start, atol=1e-5)  # 0 steps: the start points
    # arrays work wherever tensors do (they raised AttributeError: no .detach / .to)
    assert torch.equal(run.sample(7, steps=0, init=x[:7]), run.sample(7, steps=0, init=start))
    assert torch.equal(run(x[:5]), run(start[:5])) and torch.equal(run.log_density(x[:5]), run.log_density(start[:5]))
    with pytest.raises(ValueError, match="init must be"):
        run.sample(3, init="nowhere")


def test_train_takes_array_likes_such_as_nested_lists_and_data_frames(tmp_path):
    class Frame:  # what pandas.DataFrame offers numpy (pandas is not a dependency)
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return np.asarray(self.a, dtype=dtype)
    x = _blobs(100)
    for data, name in ((x.tolist(), "l"), (Frame(x), "f")):
        run = ebmlab.train("noise", data=data, out=tmp_path / name, train={"steps": 1, "progress": False},
                           overrides={"model.width": 8}, evaluate=False)
        assert np.allclose(np.load(tmp_path / name / "data.npy"), x.astype(np.float32)) and run.shape == (2,)


def test_train_takes_config_name_dict_and_dataset(tmp_path):
    x = torch.from_numpy(_blobs(300)).float()
    ds = torch.utils.data.TensorDataset(x, torch.zeros(len(x)))
    run = ebmlab.train(data=ds, config="paper004_rings_data", out=tmp_path / "a", train=TINY, eval=TINY_EVAL,
                       overrides=["model.width=16", "eval.plots=false"])
    assert run.method == "data" and run.config.model.width == 16
    assert np.allclose(np.load(tmp_path / "a" / "data.npy"), x.numpy())
    run2 = ebmlab.train("hybrid", data=tmp_path / "a" / "data.npy", config={"model": {"width": 8}}, out=tmp_path / "b",
                        train=TINY, eval={**TINY_EVAL, "plots": False}, evaluate=False)
    assert run2.config.data.name == "array" and run2.config.model.width == 8 and run2.metrics == {}
    assert not (tmp_path / "b" / "data.npy").exists()  # a file is referenced (path + SHA-256), not copied


def test_bad_input_is_refused_before_any_file_is_written(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(errors.DataError, match=r"vectors \(N, D\).*'data.name': 'npy'"):
        ebmlab.train("hybrid", data=np.zeros((10, 2, 2)), out=out)
    with pytest.raises(errors.DataError, match="NaN or inf"):
        ebmlab.train("hybrid", data=np.r_[[[np.nan, 1.0]], _blobs(40)], out=out)
    with pytest.raises(errors.DataError, match="at least 20 rows"):  # a held-out tenth of 1 row: no evaluation
        ebmlab.train("hybrid", data=_blobs(19), out=out)
    with pytest.raises(errors.DataError, match="data.n_test=1"):
        ebmlab.train("hybrid", data=_blobs(40), out=out, overrides={"data.n_test": 1})
    (tmp_path / "points.txt").write_text("1 2\n3 4\n")  # used to train on the default rings, the file ignored
    with pytest.raises(errors.DataError, match="unsupported suffix '.txt'"):
        ebmlab.train("hybrid", data=tmp_path / "points.txt", out=out)
    for missing in (tmp_path / "nope.npy", str(tmp_path / "nope.npy"), "nope.csv", str(tmp_path / "folder")):
        with pytest.raises(errors.DataError, match="does not exist"):  # was "unknown dataset '/.../nope.npy'"
            ebmlab.train("hybrid", data=missing, out=out)
    for text in (np.array([["a", "b"]] * 30), _blobs(40).astype(complex)):  # were raw TypeErrors from torch
        with pytest.raises(errors.DataError, match="must be real numbers"):
            ebmlab.train("hybrid", data=text, out=out)
    with pytest.raises(errors.DataError, match="unknown dataset 'rngs'"):
        ebmlab.train("hybrid", data="rngs", out=out)
    with pytest.raises(errors.ConfigError, match="available methods"):
        ebmlab.train("magic", data=_blobs(), out=out)
    for first in (_blobs(), torch.as_tensor(_blobs()), [[0.0, 1.0]] * 30):  # fit(X)'s habit: was "unhashable type"
        with pytest.raises(errors.ConfigError, match=r"method must be a method's name .*pass your data as data="):
            ebmlab.train(first, out=out)
    with pytest.raises(errors.ConfigError, match="unknown keyword"):
        ebmlab.train("hybrid", data=_blobs(), out=out, trian={"steps": 1})
    assert not out.exists()


def test_resume_continues_a_run_in_python_as_the_cli_does(tmp_path):
    x, out = _blobs(200), tmp_path / "r"
    kw = dict(eval={**TINY_EVAL, "plots": False}, overrides={"model.width": 16, "train.select_every": None})
    short = {**TINY, "steps": 6, "log_every": 1}
    ebmlab.train("noise", data=x, out=out, train=short, evaluate=False, **kw)
    files = sorted(p.name for p in (out / "checkpoints").iterdir())
    for bad, match in (({"model": {"width": 8}}, "takes train= and eval="),
                       ({"overrides": {"train.lr": 0.5}}, "cannot change train.lr")):
        with pytest.raises(errors.ConfigError, match=match):
            ebmlab.resume(out, **bad)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == files and not (out / "metrics.json").exists()
    run = ebmlab.resume(out, train={"steps": 12})
    assert run.checkpoint_step == 12 and run.metrics["sample_energy_distance_floor"] > 0
    row = json.loads((out / "config_changes.jsonl").read_text().splitlines()[-1])
    assert row["resumed_at_step"] == 6 and row["changes"]["train.steps"] == {"old": 6, "new": 12}
    # the losses of one uninterrupted run of 12 updates
    whole = ebmlab.train("noise", data=x, out=tmp_path / "w", train={**short, "steps": 12}, evaluate=False, **kw)
    assert [r["loss"] for r in run.history] == [r["loss"] for r in whole.history] and len(run.history) == 12
    with pytest.raises(errors.RunError, match="does not exist"):
        ebmlab.resume(tmp_path / "nope")


def test_run_evaluate_gives_ebmlab_evals_numbers(tmp_path, capsys):
    from ebmlab import cli
    out = tmp_path / "r"
    ebmlab.train("noise", data=_blobs(200), out=out, train={**TINY, "steps": 4}, eval={**TINY_EVAL, "plots": False},
                 overrides={"model.width": 16, "train.select_every": None}, evaluate=False)
    assert cli.main(["eval", str(out), "--ood", "shifted", "--heldout-draws", "2"]) == 0
    by_cli = json.loads((out / "metrics.json").read_text())
    run = ebmlab.load(out)
    got = run.evaluate(ood="shifted", heldout_draws=2)
    assert got == by_cli == run.metrics and "sample_energy_distance_heldout_mean" in got
    assert any(k.startswith("ood_auroc") for k in got) and got["checkpoint_step"] == 4
    assert not run.objective.training  # left in the mode it was opened in
    (out / "metrics.json").unlink()
    for bad, match in (({"fid": True}, r"--fid \(fid=\) needs an image run"), ({"heldout_draws": 0}, "positive count"),
                       ({"ood": ["nowhere"]}, "for vector runs use")):
        with pytest.raises(ValueError, match=match):
            run.evaluate(**bad)
    assert not (out / "metrics.json").exists()


def test_a_run_of_data_given_in_memory_still_reads_them_after_it_is_moved(tmp_path, capsys):
    """``data.npy`` moves with the run, but the run read the old absolute path: ``sample --init data``, ``eval``,
    ``--resume`` and ``run.sample(init="data")`` all said the file did not exist."""
    import shutil

    from ebmlab import cli
    old, new = tmp_path / "a" / "r", tmp_path / "b" / "r"
    kw = dict(eval={**TINY_EVAL, "plots": False}, overrides={"model.width": 16, "train.select_every": None})
    ebmlab.train("noise", data=_blobs(200), out=old, train={**TINY, "steps": 4}, evaluate=False, **kw)
    want = ebmlab.load(old).sample(5, steps=2, init="data")
    new.parent.mkdir()
    shutil.move(old, new)
    run = ebmlab.load(new)
    assert torch.equal(run.sample(5, steps=2, init="data"), want)
    assert cli.main(["eval", str(new)]) == 0 and cli.main(["sample", str(new), "--init", "data", "--n", "3"]) == 0
    assert ebmlab.resume(new, train={"steps": 6}, evaluate=False).checkpoint_step == 6
    info = json.loads((new / "run.json").read_text())
    assert info["data"]["path_in_run"] == "data.npy"
    want = ebmlab.load(new).sample(5, steps=2, init="data", seed=1)
    del info["data"]["path_in_run"]  # a run written before path_in_run: its data.npy is found all the same
    (new / "run.json").write_text(json.dumps(info))
    assert torch.equal(ebmlab.load(new).sample(5, steps=2, init="data", seed=1), want)
    np.save(new / "data.npy", _blobs(200) + 1.0)  # another file in its place is refused, as at the old path
    with pytest.warns(UserWarning, match="has changed since run"):
        changed = ebmlab.load(new)
    with pytest.raises(errors.DataError, match="has changed since run"):
        changed.sample(5, init="data")


def test_the_run_refuses_points_and_counts_of_the_wrong_kind_in_one_sentence(tmp_path):
    """Points of another dimension reached torch ("The size of tensor a (3) must match ..."), a single point without
    its batch axis an IndexError, ``seed=None`` a RuntimeError inside ``manual_seed``; NumPy integers were refused
    and ``steps=True`` was taken as one step."""
    out = tmp_path / "r"
    ebmlab.train("noise", data=_blobs(200), out=out, train={**TINY, "steps": 2}, evaluate=False,
                 overrides={"model.width": 16, "train.select_every": None})
    run = ebmlab.load(out)
    wrong = r"must be a batch of the run's points, shape \(B, 2\) in its data coordinates; got "
    for call, got in ((lambda: run.sample(5, init=torch.zeros(5, 3)), r"\(5, 3\)"),
                      (lambda: run.log_density(np.zeros((4, 3))), r"\(4, 3\)"),
                      (lambda: run(torch.zeros(4, 3)), r"\(4, 3\)"), (lambda: run.log_density(torch.zeros(2)), r"\(2,\)")):
        with pytest.raises(ValueError, match=wrong + got):
            call()
    for kwargs, match in (({"seed": None}, "seed must be a non-negative integer up to 9223372036854775807, got None"),
                          ({"steps": True}, "steps must be a non-negative integer, got True"),
                          ({"steps": -1}, "non-negative"), ({"seed": 1.5}, "seed must be a non-negative integer")):
        with pytest.raises(ValueError, match=match):
            run.sample(5, **kwargs)
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        run.sample(0)
    assert torch.equal(run.sample(np.int64(3), steps=np.int32(2), seed=np.int64(4)), run.sample(3, steps=2, seed=4))
    assert run(torch.zeros(4, 2)).shape == run.log_density(np.zeros((4, 2))).shape == (4,)


def test_the_runs_arguments_are_checked_as_ebmlab_errors_and_run_x_is_differentiable(tmp_path, capsys):
    """Found by an audit: 8 start points for n = 3 were cut to 3 silently, NaN starts blamed the step size, a cond
    on an unconditional run was ignored and cond={"k": 1} raised a TypeError, a seed of 2**63 overflowed inside
    torch, batch_size=np.int64(2) was refused, refusals were plain ValueErrors, and run(x) cut the graph."""
    out = tmp_path / "r"
    ebmlab.train("noise", data=_blobs(200), out=out, train={**TINY, "steps": 2}, evaluate=False,
                 overrides={"model.width": 16, "train.select_every": None})
    run = ebmlab.load(out)
    for call, error, match in (
            (lambda: run.sample(3, init=torch.zeros(8, 2)), errors.DataError, "n = 3 finite start points, got 8"),
            (lambda: run.sample(2, init=torch.full((2, 2), float("nan"))), errors.DataError, "NaN or inf"),
            (lambda: run.sample(2, cond={"y": torch.zeros(2)}), errors.ConfigError, "unconditional"),
            (lambda: run.sample(2, cond={"k": 1}), errors.ConfigError, "unconditional"),
            (lambda: run.sample(2, seed=2**63), errors.ConfigError, "seed must be a non-negative integer up to"),
            (lambda: run.sample(0), errors.ConfigError, "n must be a positive integer"),
            (lambda: run.sample(2, init="Data"), errors.ConfigError, "init must be"),
            (lambda: run("abc"), errors.DataError, "points must be numbers"),
            (lambda: run(torch.zeros(4, 3)), errors.DataError, "shape \\(B, 2\\)"),
            (lambda: run(torch.zeros(4, 2), t=1), errors.ConfigError, "takes no conditions; got 't'")):
        with pytest.raises(error, match=match):
            call()
    assert torch.equal(run.sample(4, batch_size=np.int64(2)), run.sample(4, batch_size=2))
    from ebmlab import cli
    from ebmlab.training import drawing

    def too_big(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 80000000000 bytes. Error code 12 (Cannot allocate memory)")
    with pytest.MonkeyPatch.context() as mp:  # run.sample(10**10) raised the allocator's error
        mp.setattr(drawing, "draw", too_big)
        with pytest.raises(errors.RunError, match="ran out of memory; draw fewer, or in batches"):
            run.sample(10)
        assert cli.main(["sample", str(out), "--n", "10"]) == 2  # the CLI's advice names --batch-size

    assert "draw fewer (--n) or in batches (--batch-size B)" in capsys.readouterr().err
    x = torch.zeros(3, 2, requires_grad=True)
    (g,) = torch.autograd.grad(run(x).sum(), x)
    assert g.shape == (3, 2) and torch.isfinite(g).all()


def test_training_leaves_the_callers_thread_count_and_a_file_is_not_a_run(tmp_path):
    """ebmlab.train set the process's torch threads to train.threads for good; load(a file) said "does not exist"."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ebmlab.train("noise", data=_blobs(200), out=tmp_path / "r", train={**TINY, "steps": 1, "threads": 1},
                     evaluate=False, overrides={"model.width": 8, "train.select_every": None})
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    (tmp_path / "f.py").write_text("x = 1\n")
    with pytest.raises(errors.RunNotFound, match="it is a file: give the run's directory"):
        ebmlab.load(tmp_path / "f.py")


@pytest.mark.parametrize("method,needle", [("cd_ce", "needs a features"), ("implicit_diffusion", "time_cond=True"),
                                           ("cdrl", "cond_dim=K")])
def test_a_custom_energy_that_a_method_cannot_use_is_told_what_it_needs(method, needle, tmp_path, monkeypatch):
    """paper 000's methods raised a TypeError ("no .features(x) method"), papers 002/003 named only the keyword."""
    _user_module(tmp_path, monkeypatch, "plain_energy", """
import torch
class Plain(torch.nn.Module):
    def __init__(self, dim=2):
        super().__init__()
        self.dim, self.lin = dim, torch.nn.Linear(dim, 1)
    def forward(self, x):
        return self.lin(x).squeeze(-1)
""")
    from plain_energy import Plain
    with pytest.raises(errors.ConfigError, match=needle) as exc:
        ebmlab.train(method, data=_blobs(200), energy=Plain(dim=2), out=tmp_path / "r", evaluate=False,
                     train={**TINY, "steps": 1})
    assert "hybrid, noise, data" in str(exc.value) and not (tmp_path / "r").exists()


def test_run_evaluate_scores_ood_sets_held_in_memory(tmp_path):
    """``ood=`` took only names and files; a mapping {name: array} in data coordinates gives the AUROC the same
    points saved to a file give through ``--ood FILE``."""
    out = tmp_path / "r"
    ebmlab.train("noise", data=_blobs(200), out=out, train={**TINY, "steps": 4}, eval={**TINY_EVAL, "plots": False},
                 overrides={"model.width": 16, "train.select_every": None}, evaluate=False)
    far = _blobs(60) + 3.0
    np.save(tmp_path / "far.npy", far)
    run = ebmlab.load(out)
    by_file = run.evaluate(ood=[tmp_path / "far.npy"])["ood_auroc_far"]
    got = run.evaluate(ood={"far": far, "far_tensor": torch.from_numpy(far), "listed": far.tolist()})
    assert got["ood_auroc_far"] == got["ood_auroc_far_tensor"] == got["ood_auroc_listed"] == by_file
    assert 0.0 <= by_file <= 1.0
    np.save(tmp_path / "one.npy", far[:1])  # an OOD set is not split: one row is scored (the training rule refused it)
    assert run.evaluate(ood=[str(tmp_path / "one.npy")])["ood_auroc_one"] == run.evaluate(ood={"one": far[:1]})["ood_auroc_one"]
    np.save(tmp_path / "none.npy", far[:0])
    with pytest.raises(errors.DataError, match="needs at least 1 row and 1 column"):
        run.evaluate(ood=[str(tmp_path / "none.npy")])
    for bad, match in (({"x": far[:, :1]}, r"has shape \(60, 1\); the run's points are \(2,\)"),
                       ({"x": far[:0]}, "N >= 1"), ({"x": np.full((3, 2), np.nan)}, "NaN or inf"),
                       ({"x": np.array([["a", "b"]])}, "must be real numbers"), ({"": far}, "non-empty names")):
        with pytest.raises(errors.DataError, match=match):
            run.evaluate(ood=bad)


def test_an_evaluation_locks_the_run_against_a_trainer_or_another_evaluation(tmp_path, capsys):
    """``ebmlab eval`` and ``Run.evaluate`` rewrote ``metrics.json`` and the plots with no lock: one beside a trainer
    (or a second evaluation) of the same run wrote the same files at once."""
    from ebmlab import cli
    from ebmlab.training.lock import LOCK_NAME, RunLock
    out = tmp_path / "r"
    ebmlab.train("noise", data=_blobs(200), out=out, train={**TINY, "steps": 4}, eval={**TINY_EVAL, "plots": False},
                 overrides={"model.width": 16, "train.select_every": None}, evaluate=False)
    run = ebmlab.load(out)
    with RunLock.acquire(out):  # what a trainer (or an evaluation) holds
        with pytest.raises(errors.RunError, match="in use by another ebmlab process"):
            run.evaluate()
        assert cli.main(["eval", str(out)]) == 2
        assert "in use by another ebmlab process" in capsys.readouterr().err
        with pytest.raises(errors.RunError, match="in use by another ebmlab process"):
            ebmlab.resume(out, train={"steps": 5})
    assert not (out / "metrics.json").exists()
    assert run.evaluate()["checkpoint_step"] == 4 and not (out / LOCK_NAME).exists()  # released after


def test_one_class_of_a_conditional_run_from_the_cli_and_from_python(tmp_path, capsys):
    from ebmlab import cli
    out = tmp_path / "c"
    sets = {"method.n_steps": 2, "train.steps": 2, "train.progress": False, "model.width": 8}
    run = ebmlab.train(config="paper001_digits", out=out, evaluate=False,
                       overrides={**sets, "method.conditional": True, "eval.digits_fd": False})
    assert run.sample(5, steps=2, label=7).shape == (5, 1, 8, 8)
    assert run.evaluate(digits_fd=True)["digits_fd"] > 0  # the option's extension reads the run's samples
    with pytest.raises(ValueError, match="label or cond, not both"):
        run.sample(2, label=1, cond={"y": torch.tensor([1, 1])})
    assert cli.main(["sample", str(out), "--n", "4", "--steps", "2", "--label", "7"]) == 0
    saved = out / "samples" / "samples_noise_2steps_seed0_label7.npy"
    assert np.load(saved).shape == (4, 1, 8, 8) and str(saved) in capsys.readouterr().out
    assert cli.main(["sample", str(out), "--n", "4", "--label", "10"]) == 2
    assert "integer in 0..9, got 10" in capsys.readouterr().err
    plain = ebmlab.train(config="paper001_digits", out=tmp_path / "u", overrides=sets, evaluate=False)
    with pytest.raises(ValueError, match="unconditional"):
        plain.sample(2, label=0)
    with pytest.raises(errors.ConfigError, match="guidance needs a class-conditional run"):  # it asked for a label
        plain.sample(2, guidance=1.0)
    assert torch.equal(run.sample(3, steps=2, label=torch.tensor(7)), run.sample(3, steps=2, label=7))  # a 0-d tensor
    u8 = torch.full((2, 1, 8, 8), 255, dtype=torch.uint8)  # read as the loaders read images: 1.0, not 255.0
    assert torch.equal(run(u8), run(torch.ones(2, 1, 8, 8)))
    with pytest.raises(ValueError, match="guidance needs a cdrl or drl model"):  # paper 003's only
        run.sample(2, label=1, guidance=1.0)
    # paper 003: classifier-free guidance from the CLI and from Python, the same draw
    cdrl = ebmlab.train(config="paper003_digits", out=tmp_path / "g", evaluate=False,
                        overrides={**sets, "method.n_steps": 1, "method.T": 2, "method.conditional": True})
    x = cdrl.sample(3, steps=2, label=4, guidance=1.5, seed=2)
    assert cli.main(["sample", str(tmp_path / "g"), "--n", "3", "--steps", "2", "--label", "4", "--guidance", "1.5",
                     "--seed", "2"]) == 0
    assert np.allclose(np.load(tmp_path / "g" / "samples" / "samples_noise_2steps_seed2_label4_w1.5.npy"), x.numpy())
    assert cli.main(["sample", str(tmp_path / "g"), "--n", "3", "--guidance", "1"]) == 2
    assert "give a class label" in capsys.readouterr().err


def test_a_folder_of_images_is_read_as_images_by_the_api_and_the_cli(tmp_path, capsys):
    """A folder passed as data used to keep the config's data name: ``ebmlab.train(data=folder)`` trained on the
    default rings (the folder ignored) and ``ebmlab train --data folder`` stopped on "is a directory"."""
    from PIL import Image

    from ebmlab import cli
    g = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(g.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    quick = {"steps": 2, "progress": False, "batch_size": 8}
    with pytest.warns(UserWarning, match="no config was given: training the default vector MLP"):
        run = ebmlab.train("hybrid", data=tmp_path / "imgs", out=tmp_path / "api", train=quick, evaluate=False)
    assert run.config.data.name == "imagefolder" and run.kind == "image" and run.shape == (3, 8, 8)
    capsys.readouterr()
    assert cli.main(["train", "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "cli"), "--set",
                     "train.steps=2", "--set", "train.progress=false", "--set", "eval.n_samples=8"]) == 0
    assert "note: the data are images and no config was given" in capsys.readouterr().err  # it said nothing
    assert cli.main(["train", "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "mlp"), "--set",
                     "model.name=mlp", "--set", "train.steps=1", "--set", "train.progress=false", "--set",
                     "eval.n_samples=8"]) == 0
    assert "note:" not in capsys.readouterr().err  # the user chose the MLP
    cfg = ebmlab.load(tmp_path / "cli").config
    assert cfg.data.name == "imagefolder" and cfg.model.base is None  # a table's --data defaults are not applied
    # a folder that changed under the run (another image: other splits) is refused by name, as a changed file is
    extra = tmp_path / "imgs" / "a" / "new.png"
    Image.fromarray(g.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(extra)
    with pytest.warns(UserWarning, match="data folder .* has changed since run .*; loaded without it"):
        changed = ebmlab.load(tmp_path / "api")  # the weights and the stored transform do not depend on it
    assert changed.sample(2, steps=1).shape == (2, 3, 8, 8)
    with pytest.raises(errors.DataError, match="data folder .* has changed since run"):
        changed.sample(2, steps=1, init="data")
    assert cli.main(["train", "--out", str(tmp_path / "cli"), "--resume", "--set", "train.steps=3"]) == 2
    assert "has changed since run" in capsys.readouterr().err
    extra.unlink()
    assert ebmlab.load(tmp_path / "api").sample(2, steps=1, init="data").shape == (2, 3, 8, 8)
    # a conditional run on the folder samples a class by its sub-folder's name
    cond = ebmlab.train("improved_cd", data=tmp_path / "imgs", out=tmp_path / "cond", train=quick, evaluate=False,
                        overrides={"model.name": "resnet", "model.width": 8, "method.conditional": True,
                                   "method.n_steps": 1})
    assert torch.equal(cond.sample(2, steps=1, label="b"), cond.sample(2, steps=1, label=1))
    with pytest.raises(ValueError, match="unknown class 'c': the label is one of a, b or its index"):
        cond.sample(2, label="c")
    assert cli.main(["sample", str(tmp_path / "cond"), "--n", "2", "--steps", "1", "--label", "b"]) == 0
    assert (tmp_path / "cond" / "samples" / "samples_noise_1steps_seed0_labelb.npy").is_file()


def test_images_in_a_npy_train_by_the_route_the_refusal_names(tmp_path):
    """The refusal of a 3-D array too small to be taken for images names data.name=npy; that route trains and
    samples images, and an array shaped as images takes it without being told (test_image_walkthrough.py)."""
    imgs = (np.random.default_rng(0).random((60, 8, 8)) * 255).astype(np.uint8)
    np.save(tmp_path / "imgs.npy", imgs)
    np.save(tmp_path / "small.npy", imgs[:, :4, :4])
    with pytest.raises(errors.DataError, match="data.name=npy"):
        ebmlab.train("hybrid", data=tmp_path / "small.npy", out=tmp_path / "never")
    with pytest.warns(UserWarning, match="the default vector MLP on flattened pixels"):
        run = ebmlab.train("hybrid", data=tmp_path / "imgs.npy", overrides={"data.name": "npy", "model.width": 8},
                           out=tmp_path / "r", train=TINY, evaluate=False)
    assert run.sample(2, steps=1).shape == (2, 1, 8, 8) and not (tmp_path / "never").exists()


def test_data_given_to_train_is_the_data_trained_on_whatever_the_config_names(tmp_path):
    """ebmlab.train(config="digits_hybrid", data=<a folder of images>) trained on scikit-learn's digits (the config's
    data.name) without a word; the CLI's --data read the folder. Both read the given path now."""
    from PIL import Image

    g = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(g.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    run = ebmlab.train(config="digits_hybrid", data=tmp_path / "imgs", out=tmp_path / "r", evaluate=False,
                       train={"steps": 1, "progress": False, "batch_size": 8, "threads": 1},
                       overrides={"method.n_steps": 1, "method.n_steps_data": 1})
    assert run.config.data.name == "imagefolder" and run.shape == (3, 8, 8)


def _user_module(tmp_path, monkeypatch, name: str, body: str):
    (tmp_path / f"{name}.py").write_text("import torch\nfrom torch import nn\n" + textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    return importlib.import_module(name)


def test_energy_arguments_are_recorded_or_asked_for(tmp_path, monkeypatch):
    mod = _user_module(tmp_path, monkeypatch, "ebm_user_args", """
        class Quadratic(nn.Module):
            def __init__(self, dim, scale=1.0):
                super().__init__()
                self.dim, self.scale = dim, scale
                self.w = nn.Parameter(torch.ones(dim))
            def forward(self, x):
                return 0.5 * self.scale * (self.w * x * x).sum(-1)

        class Hidden(nn.Module):
            def __init__(self, size):
                super().__init__()
                self.lin = nn.Linear(size, 1)
            def forward(self, x):
                return self.lin(x).squeeze(-1)
    """)
    run = ebmlab.train("hybrid", data=_blobs(200), energy=mod.Quadratic(2, scale=0.5), out=tmp_path / "q",
                       train=TINY, eval={**TINY_EVAL, "plots": False})
    assert run.config.model.target == "ebm_user_args:Quadratic"
    assert run.config.model.kwargs == {"dim": 2, "scale": 0.5}
    assert type(run.objective.energy).__name__ == "Quadratic"
    with pytest.raises(errors.ConfigError, match=r"pass energy_kwargs=\{'size'"):
        ebmlab.train("hybrid", data=_blobs(200), energy=mod.Hidden(2), out=tmp_path / "h")
    with pytest.raises(errors.ConfigError, match="does not rebuild"):
        ebmlab.train("hybrid", data=_blobs(200), energy=mod.Hidden(2), energy_kwargs={"size": 3}, out=tmp_path / "h")
    assert not (tmp_path / "h").exists()
    run = ebmlab.train("hybrid", data=_blobs(200), energy=mod.Hidden(2), energy_kwargs={"size": 2},
                       out=tmp_path / "h", train=TINY, eval={**TINY_EVAL, "plots": False}, evaluate=False)
    assert run.config.model.kwargs == {"size": 2}


def test_custom_model_config_is_validated():
    from ebmlab.training.config import from_dict
    with pytest.raises(errors.ConfigError, match="module:Class"):
        from_dict({"model": {"name": "custom"}})
    with pytest.raises(errors.ConfigError, match="belong to model.name custom"):
        from_dict({"model": {"name": "mlp", "target": "a:B"}})


def test_runs_written_before_model_target_keep_their_hash():
    from ebmlab.config import run_hash
    from ebmlab.training.config import from_dict
    cfg = from_dict({})
    old = cfg.to_dict()
    del old["model"]["target"], old["model"]["kwargs"]
    assert run_hash(old) == cfg.run_hash()


# ----- packaging, typing, import hygiene ---------------------------------------------------------------------
def test_import_has_no_side_effects():
    code = ("import sys, ebmlab; assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules; "
            "assert callable(ebmlab.train) and callable(ebmlab.load); print(sorted(ebmlab.__all__))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env(ROOT / "src"))
    assert res.returncode == 0, res.stderr
    assert "Run" in res.stdout and "train" in res.stdout


def test_training_updates_import_no_plotting_library(tmp_path):
    """Issue 19 item 3: matplotlib (0.3-1 s) is imported when a run plots, not to train. (torch._dynamo is: the
    Adam constructor and step import it, docs/performance.md "Start-up".)"""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from ebmlab.training.config import from_dict
        from ebmlab.training.loop import Trainer
        trainer = Trainer(from_dict({{"train": {{"steps": 2, "threads": 1, "batch_size": 32}}}}), Path({str(tmp_path / 'run')!r}))
        for _ in range(2):
            trainer.train_step()
        assert "matplotlib" not in sys.modules, "matplotlib imported by training"
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env(ROOT / "src"))
    assert res.returncode == 0, res.stderr[-2000:]


def test_evaluation_and_plots_never_switch_the_matplotlib_backend(tmp_path):
    code = textwrap.dedent(f"""
        import sys, matplotlib
        matplotlib.use("svg")
        import torch, ebmlab.training.evaluate, ebmlab.training.image_eval
        from ebmlab import plots
        plots.sample_scatter({{"a": torch.randn(50, 2)}}, {str(tmp_path / 's.png')!r})
        assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
        assert matplotlib.rcParams["backend"] == "svg", matplotlib.rcParams["backend"]
    """)
    env = dict(_env(ROOT / "src"))
    env.pop("MPLBACKEND")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "s.png").is_file()


def test_public_api_functions_have_type_hints_and_docstrings():
    from ebmlab import api
    for name in api.__all__:
        obj = getattr(api, name)
        members = [obj] if inspect.isfunction(obj) else [
            m for n, m in vars(obj).items() if not n.startswith("_") and (inspect.isfunction(m) or isinstance(m, property))]
        for fn in members:
            fn = fn.fget if isinstance(fn, property) else fn
            assert fn.__doc__, f"{name}.{fn.__name__} has no docstring"
            hints = inspect.signature(fn)
            assert hints.return_annotation is not inspect.Signature.empty, f"{fn.__qualname__}: no return type"
            for p in hints.parameters.values():
                if p.name != "self":
                    assert p.annotation is not inspect.Parameter.empty, f"{fn.__qualname__}({p.name}): no type"
    assert (ROOT / "src" / "ebmlab" / "py.typed").is_file()


def _builds_wheels_without_isolation() -> bool:
    """Whether ``pip wheel --no-build-isolation`` can build here: this environment's setuptools meets
    pyproject.toml's ``build-system.requires`` (77: ``license`` as an SPDX expression; it also has ``bdist_wheel``)."""
    from packaging.requirements import Requirement

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (req,) = re.findall(r'^requires = \["([^"]+)"\]', text, re.M)
    return Requirement(req).specifier.contains(importlib.metadata.version("setuptools"))


def test_wheel_ships_the_configs_and_py_typed(tmp_path):
    """The wheel built from a clean copy of the tree (no stale build/) lists every shipped config. Built without
    isolation (offline), so with this environment's setuptools; skipped where it is older than the build needs (a
    Python 3.10 venv starts with setuptools 65.5), as pip's isolated build would fetch a newer one."""
    if not _builds_wheels_without_isolation():
        pytest.skip(f"this environment's setuptools {importlib.metadata.version('setuptools')} is older than "
                    "pyproject.toml's build-system requires; pip builds ebmlab in an isolated environment instead")
    src = tmp_path / "tree"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("ebmlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"ebmlab/configs/{p.name}" for p in (ROOT / "src" / "ebmlab" / "configs").glob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert {"ebmlab/py.typed", "ebmlab/api.py", "ebmlab/cli.py"} <= names
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "ebmlab = ebmlab.cli:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    assert "License-Expression: MIT" in zipfile.ZipFile(wheel).read(meta).decode().splitlines()


def test_api_reference_builds_offline(tmp_path):
    """``make docs`` (pdoc) on the facade and the API module; the full build is the same call on every module."""
    pytest.importorskip("pdoc")
    res = subprocess.run([sys.executable, str(ROOT / "docs" / "build_api.py"), str(tmp_path), "ebmlab", "ebmlab.api"],
                         capture_output=True, text=True, timeout=300, env=_env(ROOT / "src"))
    assert res.returncode == 0, res.stderr[-2000:]
    top = (tmp_path / "ebmlab.html").read_text()
    assert "Revisiting Contrastive Divergence for Density Estimation and Sample Generation" in top
    assert "Abdulsalam" in top and "Du" in top
    api = (tmp_path / "ebmlab" / "api.html").read_text()
    assert 'id="train"' in api and 'id="Run.sample"' in api and 'id="load"' in api


# Modules another change is editing (issue 14 left their docstrings to it); remove an entry once documented.
UNDOCUMENTED_PENDING: tuple[str, ...] = ()  # every public name is documented


def test_public_functions_and_classes_have_docstrings():
    """Every public function, method and class of the package has a docstring (the API reference shows them)."""
    import ast
    root = ROOT / "src" / "ebmlab"
    missing = []
    for p in sorted(root.rglob("*.py")):
        rel = str(p.relative_to(root))

        def walk(nodes, prefix="", rel=rel):
            for n in nodes:
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith("_"):
                    where = f"{rel}:{prefix}{n.name}"
                    if ast.get_docstring(n) is None and not where.startswith(UNDOCUMENTED_PENDING):
                        missing.append(where)
                    if isinstance(n, ast.ClassDef):
                        walk(n.body, f"{prefix}{n.name}.", rel)
        walk(ast.parse(p.read_text()).body)
    assert not missing, missing


def test_a_label_that_names_a_class_folder_is_that_folder():
    """With class folders named 1 and 2, ``--label 1`` sampled folder 2 (index 1) and ``--label 2`` was refused;
    folders 0..10 sort as 0, 1, 10, 2, ..., so ``--label 2`` gave folder 10. A name wins; an int is an index."""
    from ebmlab.training.drawing import class_index
    numbered = ["1", "2"]
    assert class_index("1", numbered) == 0 and class_index("2", numbered) == 1 and class_index(1, numbered) == 1
    ten = sorted(str(k) for k in range(11))
    assert class_index("2", ten) == ten.index("2") == 3 and class_index(2, ten) == 2
    assert class_index("7", []) == 7 and class_index("cat", ["cat", "dog"]) == 0  # no names: the index
    with pytest.raises(ValueError, match="one of cat, dog or its index"):
        class_index("cow", ["cat", "dog"])


def test_energy_defined_in_main_says_where_it_can_be_loaded():
    """A class from a script or notebook (``__main__``) gave "install its module or put it on PYTHONPATH",
    which cannot help; the sentence says which process can load the run."""
    from ebmlab.energies.build import import_target

    with pytest.raises(errors.ConfigError, match=r"defined in the script or notebook that trained the run, so only "
                       r"a Python process that defines NoSuchEnergy in its own __main__ can load it") as exc:
        import_target("__main__:NoSuchEnergy")
    assert "\n" not in str(exc.value)


def test_energy_module_in_the_current_directory_names_the_fix(tmp_path, monkeypatch):
    """The README's example trains from the folder of my_energy.py, where ``python`` finds it; the ``ebmlab``
    command (a console script) does not search the current directory, and the sentence says how to make it."""
    from ebmlab.energies.build import import_target

    (tmp_path / "cwd_only_energy.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != tmp_path.resolve()])
    with pytest.raises(errors.ConfigError, match=r"cwd_only_energy lies in the current directory.*PYTHONPATH=\. ebmlab"):
        import_target("cwd_only_energy:E")
    monkeypatch.chdir(tmp_path.parent)  # elsewhere: no such hint
    with pytest.raises(errors.ConfigError) as exc:
        import_target("cwd_only_energy:E")
    assert "current directory" not in str(exc.value)


def _declared_lower_bounds() -> dict[str, str]:
    """{name: X.Y} of pyproject.toml's ``dependencies`` (each "name>=X.Y"; read as text: tomllib is Python 3.11+)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    return {m[0].lower(): m[1] for m in re.findall(r'"([A-Za-z0-9_.-]+)>=([0-9.]+)"', block)}


def _pins(file: str, python: str = "3.10") -> dict[str, list[str]]:
    """{name: [version, ...]} of the ``==`` pins in a constraints file whose environment marker (if any) holds on
    ``python``."""
    from packaging.requirements import Requirement

    env = {"python_version": python, "python_full_version": python + ".0"}
    pins: dict[str, list[str]] = {}
    for line in (ROOT / file).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                (spec,) = req.specifier
                pins.setdefault(req.name.lower(), []).append(spec.version)
    return pins


def test_the_oldest_versions_tested_are_the_declared_lower_bounds():
    """constraints-min.txt (``make test-min``) pins, for every runtime dependency, a release of the very minor version
    pyproject.toml declares as its lower bound: a raised bound or a new dependency must be tested there too."""
    declared = _declared_lower_bounds()
    assert {"torch", "numpy", "scipy", "scikit-learn", "pillow"} <= declared.keys(), declared
    pins = _pins("constraints-min.txt")
    for name, bound in declared.items():
        assert name in pins, f"constraints-min.txt pins no version of {name} (declared >={bound})"
        minor = ".".join(bound.split(".")[:2])
        (pin,) = pins[name]
        assert pin == minor or pin.startswith(minor + "."), (name, bound, pin)


@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13"])
def test_the_pinned_versions_install_on_every_declared_python(python):
    """``make demo`` / ``make test`` install with ``-c constraints.txt``: on each Python the package declares, every
    runtime dependency has exactly one pin whose marker applies, inside pyproject's range. (Whether each pinned
    release has a wheel for that Python is pip's to say, with the registry: NumPy 2.4 and five others need 3.11, so
    Python 3.10 takes older pins; checked by ``make test`` on 3.10, docs/testing.md "The declared versions".)"""
    from packaging.version import Version

    pins = _pins("constraints.txt", python)
    for name, bound in _declared_lower_bounds().items():
        assert len(pins.get(name, [])) == 1, f"Python {python}: pins of {name}: {pins.get(name)}"
        assert Version(pins[name][0]) >= Version(bound), (python, name, pins[name], bound)
