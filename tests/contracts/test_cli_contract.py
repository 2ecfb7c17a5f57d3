"""Every registered method through the command line: a tiny run goes train -> sample (noise start and
data start) -> eval with exit status 0, finite samples of the data's shape, long-run metrics in
``metrics.json`` and the checkpoint step reported (issue 12, "CLI for every method")."""
import json

import numpy as np
import pytest

import ebmlab
from ebmlab.cli import main
from ebmlab.objectives import METHODS
from tests.contracts.test_objective_contract import tiny_overrides

# Evaluation small enough for the default suite, but with long runs (factor 2) and density maps.
EVAL = ["eval.n_samples=64", "eval.long_run_factor=2", "eval.grid_size=16", "train.steps=2",
        "train.checkpoint_every=2", "train.log_every=1", "train.progress=false", "train.threads=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One trained tiny run per method (trained once, shared by the tests below)."""
    root = tmp_path_factory.mktemp("cli_runs")
    out = {}
    for name in sorted(METHODS):
        run = root / name
        args = ["train", "--out", str(run)]
        for o in tiny_overrides(name) + EVAL:
            args += ["--set", o]
        assert main(args) == 0, name
        out[name] = run
        TRAINED[name] = json.loads((run / "metrics.json").read_text())
    return out


TRAINED = {}  # each method's metrics.json as training's final evaluation wrote it (before any ebmlab eval)
CLOCKS = ("time", "seconds")  # keys holding wall times: the only entries two evaluations may differ in


@pytest.mark.parametrize("name", sorted(METHODS))
def test_train_wrote_long_run_metrics(runs, name):
    metrics = json.loads((runs[name] / "metrics.json").read_text())
    for key in ("sample_energy_distance", "long_run_energy_distance", "long_run_precision", "density_kl"):
        assert key in metrics and np.isfinite(metrics[key]), (name, key)


@pytest.mark.parametrize("init", ["noise", "data"])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_sample_from_noise_and_data(runs, name, init, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert main(["sample", str(runs[name]), "--n", "7", "--steps", "4", "--init", init, "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (7, 2) and np.isfinite(x).all()
    assert "step 2" in capsys.readouterr().err  # the checkpoint used is named


@pytest.mark.parametrize("name", ["hybrid", "implicit_diffusion"])
def test_sample_names_the_steps_that_ran(runs, name, capsys):
    """--steps 5 on a 4-level procedure runs 8 steps: the file name and the message say 8 (they said 5)."""
    assert main(["sample", str(runs[name]), "--n", "3", "--steps", "5"]) == 0
    out = capsys.readouterr()
    ran = 5 if name == "hybrid" else 8
    assert (runs[name] / "samples" / f"samples_noise_{ran}steps_seed0.npy").is_file()
    assert f"({ran} sampler steps" in out.out and ("rounded up" in out.out) == (ran != 5)
    assert "EMA weights" in out.err


@pytest.mark.parametrize("name", sorted(METHODS))
def test_eval_reports_checkpoint_step(runs, name, capsys):
    ckpt = sorted((runs[name] / "checkpoints").glob("*.safetensors"))[-1]
    assert main(["eval", str(runs[name]), "--checkpoint", str(ckpt), "--device", "cpu"]) == 0
    metrics = json.loads((runs[name] / "metrics.json").read_text())
    assert metrics["checkpoint_step"] == 2 and "long_run_energy_distance" in metrics
    assert str(ckpt) in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(METHODS))
def test_eval_sample_and_python_repeat_what_training_gave(runs, name, tmp_path):
    """``ebmlab eval`` rewrites training's metrics.json with the same numbers, ``run.evaluate()`` returns them,
    and ``ebmlab sample --seed`` draws the same samples twice and the same as ``run.sample(seed=)``, from noise
    and from data: the README's "the same arguments draw the same samples", for every method."""
    assert main(["eval", str(runs[name])]) == 0
    again = json.loads((runs[name] / "metrics.json").read_text())
    python = ebmlab.load(runs[name]).evaluate()
    for key, value in TRAINED[name].items():
        if not any(c in key for c in CLOCKS):
            assert _same(again[key], value) and _same(python[key], value), key
    run = ebmlab.load(runs[name])
    for init in ("noise", "data"):
        files = [tmp_path / f"{init}{i}.npy" for i in range(2)]
        for f in files:
            assert main(["sample", str(runs[name]), "--n", "5", "--seed", "3", "--init", init, "--out", str(f)]) == 0
        first, second = (np.load(f) for f in files)
        assert np.array_equal(first, second) and np.array_equal(first, run.sample(5, seed=3, init=init).numpy())


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))


def test_missing_checkpoint_is_one_sentence(runs, capsys):
    run = runs["hybrid"]
    assert main(["sample", str(run), "--checkpoint", str(run / "nope.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
