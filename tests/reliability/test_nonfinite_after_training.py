"""Non-finite values AFTER training: sampling, evaluation and comparison of a model that misbehaves.

README's "Nothing silent" covers training (a non-finite loss, energy or gradient stops it). These cases check
what a trained run does when its weights make energies overflow (a checkpoint edited in place, the sidecar's
``tensor_bytes`` kept right so that only the values differ) or when a sampler's chains blow up:

- passing: NaN weights are refused at load; chains that overflow stop ``Run.sample``, ``ebmlab sample`` and
  ``ebmlab eval`` with one sentence (no file written, ``metrics.json`` left as it was); a user energy whose
  gradient explodes stops ``run_chain``; ``ebmlab compare`` does not rank NaN or -inf as best;
- problems found, fixed (each test failed before): ``evaluate`` wrote NaN into ``metrics.json`` (invalid strict
  JSON) when the per-row energies were finite but their float32 mean overflowed (``training/evaluate.py``,
  ``heldout_energy_gap`` now averages in float64, and ``write_metrics`` leaves a non-finite value out for a
  ``_skipped`` note); ``Run.log_density`` and ``Run.__call__`` returned NaN / inf for finite inputs without a word
  (now a warning: ``api_data.warn_not_finite``).
"""
from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import ebmlab
from ebmlab.errors import CheckpointError
from ebmlab.samplers import langevin, run_chain
from tests.reliability.conftest import TINY, assert_one_sentence, cli, snapshot


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A tiny hybrid run on 8gaussians (metrics.json written), trained once for the module."""
    out = tmp_path_factory.mktemp("nonfinite") / "base"
    ebmlab.train("hybrid", "8gaussians", overrides=[*TINY, "train.steps=3", "data.n_train=1000", "data.n_test=1000"], out=out)
    return out


def _tampered(base: Path, dest: Path, fn) -> Path:
    """A copy of ``base`` whose checkpoints' ``model.*`` and ``ema.*`` tensors went through ``fn(key, tensor)``
    (None: unchanged), the sidecars' ``tensor_bytes`` updated (only the values differ)."""
    shutil.copytree(base, dest)
    for p in sorted((dest / "checkpoints").glob("*.safetensors")):
        tensors = load_file(str(p))
        for k, v in list(tensors.items()):
            if k.startswith(("model.", "ema.")):
                new = fn(k, v)
                if new is not None:
                    tensors[k] = new.contiguous()
        save_file(tensors, str(p))
        side = p.with_suffix(".json")
        meta = json.loads(side.read_text(encoding="utf-8"))
        meta["tensor_bytes"] = p.stat().st_size
        side.write_text(json.dumps(meta), encoding="utf-8")
    return dest


def _overflowing(k, v):
    """Input and output layers x 1e20: energies overflow float32 (inf, NaN) on most inputs."""
    return v * 1e20 if ".energy." in k and k.endswith(("inp.weight", "out.weight")) else None


def _huge_finite(k, v):
    """Output layer x 1e38: every energy finite (|E| ~ 1e36..1e37), but a float32 sum of a thousand of them is not."""
    return v * 1e38 if ".energy." in k and k.endswith(("out.weight", "out.bias")) else None


@pytest.fixture(scope="module")
def overflow_run(base_run, tmp_path_factory) -> Path:
    return _tampered(base_run, tmp_path_factory.mktemp("nonfinite") / "overflow", _overflowing)


# ----- behaviours that are right today ---------------------------------------------------------------------
def test_nan_weight_is_refused_at_load(base_run, tmp_path):
    run = _tampered(base_run, tmp_path / "nan", lambda k, v: torch.full_like(v, math.nan) if k.endswith(
        "energy.out.bias") else None)
    with pytest.raises(CheckpointError, match="holds NaN or inf in tensor"):
        ebmlab.load(run)


def test_overflowing_chains_stop_run_sample(overflow_run):
    with pytest.raises(FloatingPointError, match="non-finite energy or sample"):
        ebmlab.load(overflow_run).sample(50)


def test_cli_sample_of_overflowing_model_is_one_sentence_and_writes_nothing(overflow_run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    code, _, err = cli(capsys, "sample", overflow_run, "--n", "50", "--out", out)
    assert_one_sentence(code, err, "non-finite energy or sample")
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_cli_eval_of_overflowing_model_is_one_sentence_and_keeps_metrics(overflow_run, capsys):
    before = snapshot(overflow_run / "metrics.json")
    code, _, err = cli(capsys, "eval", overflow_run)
    assert_one_sentence(code, err, "non-finite energy or sample")
    assert snapshot(overflow_run / "metrics.json") == before


def test_user_energy_exploding_away_from_data_stops_the_chain():
    def energy(x):  # finite at the start points, its gradient explodes within a few steps
        return torch.exp(x.pow(2).sum(1))

    x0 = torch.full((8, 2), 2.0)
    with pytest.raises(FloatingPointError, match="non-finite energy or sample"):
        run_chain(langevin, energy, x0, 20, 0.5, generator=torch.Generator().manual_seed(0))


def test_compare_does_not_rank_nonfinite_as_best(base_run, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(base_run, bad)
    m = json.loads((bad / "metrics.json").read_text(encoding="utf-8"))
    m["sample_energy_distance"], m["density_kl"] = math.nan, -math.inf
    (bad / "metrics.json").write_text(json.dumps(m), encoding="utf-8")
    code, out, _ = cli(capsys, "compare", base_run, bad, "--out", tmp_path / "cmp")
    assert code == 0
    row = next(ln for ln in out.splitlines() if ln.startswith(f"| {bad} "))
    cells = [c.strip() for c in row.split("|")]
    assert "nan" in cells and "-inf" in cells and "**nan**" not in cells and "**-inf**" not in cells
    assert "is not finite in" in out
    assert "NaN" not in (tmp_path / "cmp" / "compare.json").read_text(encoding="utf-8")  # strict JSON: null


# ----- problems found, fixed ------------------------------------------------------------------------------
def _strict_json(text: str):
    def refuse(c):
        raise AssertionError(f"metrics.json holds {c}: not valid strict JSON")
    return json.loads(text, parse_constant=refuse)


def test_eval_with_huge_finite_energies_writes_strict_json_without_nan(base_run, tmp_path):
    run = ebmlab.load(_tampered(base_run, tmp_path / "huge", _huge_finite))
    with torch.no_grad():
        e = run(run.transform.to_data(run.data().test))
    if not (bool(torch.isfinite(e).all()) and float(e.abs().max()) > 1e36):  # the premise (not the test's assert)
        raise RuntimeError(f"the tampered energies are not all finite and huge: max |E| = {float(e.abs().max())}")
    metrics = run.evaluate()
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    assert not bad, f"non-finite metrics returned without a word: {bad}"
    _strict_json((run.path / "metrics.json").read_text(encoding="utf-8"))


def _said(fn) -> bool:
    """Whether ``fn()`` raised FloatingPointError or warned; False when it returned non-finite values silently."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except FloatingPointError:
            return True
    return any("not finite" in str(w.message) for w in caught) or bool(torch.isfinite(out).all())


def test_log_density_says_when_it_is_not_finite(overflow_run):
    run = ebmlab.load(overflow_run)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(x).all())
    assert _said(lambda: run.log_density(x)), "Run.log_density returned non-finite values silently"


def test_energy_call_says_when_it_is_not_finite(overflow_run):
    run = ebmlab.load(overflow_run)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    assert _said(lambda: run(x).detach()), "run(x) returned non-finite energies silently"


def test_write_metrics_leaves_a_value_that_is_not_finite_out_with_a_note(tmp_path):
    """Any metric, not only the held-out gap: NaN and inf are no JSON numbers, so each leaves the file (and the dict
    the caller returns) for a ``<key>_skipped`` note, with one warning naming them; finite values stay as they are."""
    from ebmlab.training.evaluate import write_metrics
    metrics = {"density_kl": float("nan"), "sample_energy_distance": float("inf"), "sample_precision": 0.9,
               "checkpoint_step": 3}
    with pytest.warns(RuntimeWarning, match="density_kl, sample_energy_distance not finite"):
        write_metrics(tmp_path, metrics)
    on_disk = _strict_json((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert on_disk == metrics and set(metrics) == {"density_kl_skipped", "sample_energy_distance_skipped",
                                                   "sample_precision", "checkpoint_step"}
    assert metrics["sample_precision"] == 0.9 and "not finite (nan)" in metrics["density_kl_skipped"]
