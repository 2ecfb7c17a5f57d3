"""Pairs (and a few triples) of features a researcher combines, across methods (a read-only helper's audit of commit
``01b4123``, docs/testing.md "Thirty-sixth round"; with the slow tests: about 50 s of tiny runs).

Each setting was checked alone in earlier rounds; these tests check that combinations keep what each promises:
resume with validation selection, float64 data, time budgets, EMA, lr schedules, checkpoint pruning, sample
figures, user energies, class-conditional runs, batched / data-initialised sampling and held-out draws.
Tiny runs (a few updates, width 16): they check behaviour, not fit. No combination probed in this round
(see the report) crashed or silently dropped a setting, so no test here carries a BUG marker.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.errors import ConfigError

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]

X = np.random.default_rng(0).normal(size=(400, 2)) * [3.0, 0.5] + [1.0, 2.0]
EVAL = {"n_samples": 64, "plots": False, "long_run_factor": 1}
SMALL = {"model.width": 16, "model.depth": 1}
METHOD = {  # each method's cheap settings (cd_ce's 256 levels would make every sample take seconds)
    "hybrid": {},
    "cd_ce": {"method.T": 8, "method.sample_steps": 1},
    "improved_cd": {},
    "implicit_diffusion": {},
    "cdrl": {"method.ebm_warmup": 0, "method.init_warmup": 0},
}
SELECT = {"train.select_every": 2, "train.select_start": False, "train.select_draws": 1, "train.select_margin": None}


def _train(steps: int, **kw) -> dict:
    d = {"steps": steps, "progress": False, "threads": 1, "log_every": 1, "batch_size": 32}
    d.update(kw)
    return d


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _one_sentence(msg: str) -> bool:
    msg = msg.strip()
    return "\n" not in msg and re.search(r"[.!?]\s+[A-Z]", msg) is None


def _fit(method, out, steps, extra=None, data=X, evaluate=False, **kw):
    return ebmlab.train(method, data=data, out=out, overwrite=True, overrides={**SMALL, **METHOD[method], **(extra or {})},
                        train=_train(steps, **kw), eval=EVAL, evaluate=evaluate)


# ----- resume x validation selection x step lr schedule x grad clip -----------------------------------------------
@pytest.mark.parametrize("method", list(METHOD))
def test_resume_with_selection_and_step_schedule_matches_uninterrupted(tmp_path, method):
    extra = {**SELECT, "train.lr_schedule": "step", "train.lr_decay_steps": 2, "train.lr_decay_factor": 0.5,
             "train.grad_clip": 1.0}
    a, b = tmp_path / "a", tmp_path / "b"
    _fit(method, a, 2, extra)
    ebmlab.resume(a, train={"steps": 4}, evaluate=False)
    _fit(method, b, 4, extra)
    ha, hb = _history(a), _history(b)
    assert [(h["step"], h["lr"], round(h["loss"], 5)) for h in ha] == [(h["step"], h["lr"], round(h["loss"], 5)) for h in hb]
    va = {h["step"]: h["val_energy_distance"] for h in ha if "val_energy_distance" in h}
    vb = {h["step"]: h["val_energy_distance"] for h in hb if "val_energy_distance" in h}
    assert va == pytest.approx(vb, abs=1e-6)
    best = min(va, key=va.get)
    assert ebmlab.load(a).checkpoint_step == ebmlab.load(b).checkpoint_step == best
    assert ebmlab.load(a).config.train.grad_clip == 1.0


@pytest.mark.parametrize("method", ["hybrid", "cd_ce", "cdrl"])
def test_resume_from_off_grid_end_keeps_that_check_and_chooses_the_minimum(tmp_path, method):
    out = tmp_path / "r"
    _fit(method, out, 3, SELECT)  # step 3 is off the select_every=2 grid: checked as the run's last
    ebmlab.resume(out, train={"steps": 4}, evaluate=False)
    checks = {h["step"]: h["val_energy_distance"] for h in _history(out) if "val_energy_distance" in h}
    assert sorted(checks) == [2, 3, 4]
    assert ebmlab.load(out).checkpoint_step == min(checks, key=checks.get)


# ----- float64 data x resume x batched / data-initialised sampling ------------------------------------------------
@pytest.mark.parametrize("method", ["hybrid", "implicit_diffusion", "cdrl"])
def test_float64_data_stays_float64_after_resume_in_batched_and_data_init_samples(tmp_path, method):
    out = tmp_path / "r"
    _fit(method, out, 2, {"train.select_every": None}, data=X.astype(np.float64))  # (no checked start: the last step)
    run = ebmlab.resume(out, train={"steps": 3}, evaluate=False)
    assert run.checkpoint_step == 3
    run = ebmlab.load(out)
    for s in (run.sample(5, batch_size=2), run.sample(5, init="data", batch_size=2),
              run.sample(4, init=torch.tensor(X[:4]))):
        assert s.dtype == torch.float64 and s.shape[1] == 2 and torch.isfinite(s).all()
    first = run.sample(2, seed=3)  # the first batch of a batched draw is sample(k) with the same seed
    assert torch.equal(run.sample(6, seed=3, batch_size=2)[:2], first)


# ----- keep_checkpoints x checkpoint_every x selection (x resume) -------------------------------------------------
@pytest.mark.parametrize("method", ["hybrid", "implicit_diffusion"])
def test_keep_checkpoints_never_prunes_the_selected_best_across_resume(tmp_path, method):
    out = tmp_path / "r"
    _fit(method, out, 4, {**SELECT, "train.select_start": True, "train.keep_checkpoints": 1,
                                "train.checkpoint_every": 1})
    best = ebmlab.load(out).checkpoint_step
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "best.safetensors" in names and [n for n in names if n.startswith("step_")] == [
        "step_00000004.json", "step_00000004.safetensors"]
    ebmlab.resume(out, train={"steps": 6}, evaluate=False)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert [n for n in names if n.startswith("step_")] == ["step_00000006.json", "step_00000006.safetensors"]
    checks = {h["step"]: h["val_energy_distance"] for h in _history(out) if "val_energy_distance" in h}
    after = ebmlab.load(out).checkpoint_step
    assert after in checks or after == 0
    assert after == best or checks[after] <= min(v for s, v in checks.items() if s <= 4)


# ----- time budget x EMA x selection x resume ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ["hybrid", "cd_ce", "cdrl"])
def test_time_budget_with_ema_and_selection_checks_and_saves_the_stopping_update(tmp_path, method):
    out = tmp_path / "r"
    run = _fit(method, out, 50, {**SELECT, "train.time_budget": 1e-6, "train.ema": 0.9,
                                 "train.checkpoint_every": 100})
    hist = _history(out)
    assert [h["step"] for h in hist] == [1] and "val_energy_distance" in hist[0]
    assert (out / "checkpoints" / "step_00000001.safetensors").is_file()
    assert ebmlab.load(out).checkpoint_step == 1
    run = ebmlab.resume(out, evaluate=False)  # the budget is per fit: one more update
    assert run.config.train.ema == 0.9 and [h["step"] for h in _history(out)] == [1, 2]


@pytest.mark.parametrize("method", ["hybrid", "implicit_diffusion"])
def test_cosine_schedule_stopped_by_budget_resumes_to_the_uninterrupted_lr(tmp_path, method):
    a, b = tmp_path / "a", tmp_path / "b"
    _fit(method, a, 5, {"train.lr_schedule": "cosine", "train.time_budget": 1e-6})
    ebmlab.resume(a, overrides={"train.time_budget": None}, evaluate=False)
    _fit(method, b, 5, {"train.lr_schedule": "cosine"})
    assert [(h["step"], h["lr"]) for h in _history(a)] == [(h["step"], h["lr"]) for h in _history(b)]


def test_cosine_resume_to_more_steps_is_refused_in_one_sentence(tmp_path):
    out = tmp_path / "r"
    _fit("hybrid", out, 2, {"train.lr_schedule": "cosine"})
    with pytest.raises(ConfigError) as err:
        ebmlab.resume(out, train={"steps": 4}, evaluate=False)
    assert "cosine" in str(err.value) and _one_sentence(str(err.value))


def test_resume_changing_selection_is_refused_in_one_sentence(tmp_path):
    out = tmp_path / "r"
    _fit("hybrid", out, 2, SELECT)
    with pytest.raises(ConfigError) as err:
        ebmlab.resume(out, overrides={"train.select_every": 1}, train={"steps": 4}, evaluate=False)
    assert "train.select_every" in str(err.value) and _one_sentence(str(err.value))


# ----- user energy x float64 x selection x grad clip x resume -----------------------------------------------------
@pytest.mark.parametrize("method", ["hybrid", "improved_cd"])
def test_user_energy_float64_selection_resume(tmp_path, monkeypatch, method):
    (tmp_path / "pair36_energy.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class PairEnergy(nn.Module):\n"
        "    def __init__(self, dim=2, width=16):\n"
        "        super().__init__(); self.dim, self.width = dim, width\n"
        "        self.net = nn.Sequential(nn.Linear(dim, width), nn.SiLU(), nn.Linear(width, 1))\n"
        "    def forward(self, x):\n        return self.net(x).squeeze(-1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from pair36_energy import PairEnergy

    out = tmp_path / "r"
    ebmlab.train(method, data=X.astype(np.float64), energy=PairEnergy(), out=out, overwrite=True,
                 overrides={**METHOD[method], **SELECT, "train.ema": 0.9, "train.grad_clip": 1.0},
                 train=_train(2), eval=EVAL, evaluate=False)
    run = ebmlab.resume(out, train={"steps": 4}, evaluate=False)
    checks = {h["step"]: h["val_energy_distance"] for h in _history(out) if "val_energy_distance" in h}
    run = ebmlab.load(out)
    assert run.config.model.target == "pair36_energy:PairEnergy" and run.config.train.grad_clip == 1.0
    assert run.checkpoint_step == min(checks, key=checks.get)
    assert run.sample(5, batch_size=2).dtype == torch.float64


# ----- the hybrid family's own settings x resume x selection x batched sampling -----------------------------------
@pytest.mark.parametrize("method,extra", [
    ("hybrid", {"method.noise_chain": "ais"}),
    ("hybrid", {"method.step_rule": "paper004"}),
    ("persistent_refresh", {"method.refresh_prob": 0.5}),
    ("persistent_refresh", {"method.refresh_prob": 0.5, "method.refresh_mode": "chain"}),
])
def test_method_settings_resume_with_selection_matches_uninterrupted(tmp_path, method, extra):
    ov = {**SMALL, **SELECT, **extra}
    a, b = tmp_path / "a", tmp_path / "b"
    ebmlab.train(method, data=X, out=a, overwrite=True, overrides=ov, train=_train(3), eval=EVAL, evaluate=False)
    ebmlab.resume(a, train={"steps": 5}, evaluate=False)
    ebmlab.train(method, data=X, out=b, overwrite=True, overrides=ov, train=_train(5), eval=EVAL, evaluate=False)
    assert [(h["step"], round(h["loss"], 5)) for h in _history(a)] == [(h["step"], round(h["loss"], 5)) for h in _history(b)]
    assert tuple(ebmlab.load(a).sample(7, batch_size=3).shape) == (7, 2)


# ----- selection start with refit x resume ------------------------------------------------------------------------
def test_select_refit_start_win_survives_resume(tmp_path):
    out = tmp_path / "r"
    _fit("implicit_diffusion", out, 2, {"train.select_every": 2, "train.select_start": True,
                                        "train.select_refit": True, "train.select_margin": 1000.0})
    before = ebmlab.load(out)
    assert before.checkpoint_step == 0
    e0 = before.energy(torch.tensor(X[:3])).detach()
    ebmlab.resume(out, train={"steps": 4}, evaluate=False)
    after = ebmlab.load(out)
    assert after.checkpoint_step == 0
    assert torch.allclose(after.energy(torch.tensor(X[:3])).detach(), e0)


# ----- sample figures x resume ------------------------------------------------------------------------------------
def test_sample_every_continues_after_resume(tmp_path):
    out = tmp_path / "r"
    _fit("implicit_diffusion", out, 2, {"train.sample_every": 1})
    ebmlab.resume(out, train={"steps": 3}, evaluate=False)
    names = sorted(p.name for p in (out / "samples").iterdir())
    assert names == ["scatter_step000001.png", "scatter_step000002.png", "scatter_step000003.png"]


# ----- class-conditional images x resume x label x guidance x batches x init data x budget ------------------------
TINY_COND = {"train.steps": 2, "train.batch_size": 8, "train.progress": False, "train.threads": 1, "train.log_every": 1,
             "eval.n_samples": 16, "eval.plots": False, "eval.digits_fd": False, "method.T": 2, "method.n_steps": 2,
             "model.width": 8, "model.channels": [8], "method.init_channels": [8], "method.ebm_warmup": 0,
             "method.init_warmup": 0, "method.init_head_start": 0}


def test_conditional_digits_resume_then_label_guidance_and_data_init_in_batches(tmp_path):
    out = tmp_path / "r"
    ebmlab.train(config="paper003_digits_cond", out=out, overwrite=True, overrides=TINY_COND, evaluate=False)
    run = ebmlab.resume(out, train={"steps": 3}, evaluate=False)
    run = ebmlab.load(out)
    assert run.checkpoint_step == 3 and run.objective.num_classes == 10
    assert tuple(run.sample(5, label=3, batch_size=2, steps=2).shape) == (5, 1, 8, 8)
    assert tuple(run.sample(4, label=1, guidance=1.0, batch_size=3, steps=2).shape) == (4, 1, 8, 8)
    assert tuple(run.sample(5, init="data", label=2, batch_size=2, steps=2).shape) == (5, 1, 8, 8)


def test_conditional_digits_with_validation_selection_is_refused_in_one_sentence(tmp_path):
    with pytest.raises(Exception) as err:
        ebmlab.train(config="paper003_digits_cond", out=tmp_path / "r", overrides={
            **TINY_COND, "train.select_every": 1, "data.val_fraction": 0.1}, evaluate=False)
    assert "val_fraction" in str(err.value) and _one_sentence(str(err.value))


# ----- the command line on a selected float64 run: eval --heldout-draws, sample --init data --batch-size -----------
def test_cli_heldout_draws_and_data_init_sampling_on_a_selected_float64_run(tmp_path, capsys):
    from ebmlab.cli import main

    out = tmp_path / "r"
    _fit("hybrid", out, 2, {**SELECT, "train.keep_checkpoints": 1, "train.checkpoint_every": 1},
         data=X.astype(np.float64))
    assert main(["eval", str(out), "--heldout-draws", "2"]) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["sample_energy_distance_heldout_draws"]) == 2
    assert metrics["checkpoint_step"] == ebmlab.load(out).checkpoint_step
    dest = tmp_path / "s.npy"
    assert main(["sample", str(out), "--init", "data", "--n", "8", "--batch-size", "3", "--out", str(dest)]) == 0, \
        capsys.readouterr().err
    s = np.load(dest)
    assert s.shape == (8, 2) and s.dtype == np.float64
