"""Mutation round 55 (docs/testing.md "A ninth mutation round"): known answers for the training loop, the validation
selection, checkpoints, the joint time head, the time embedding and the MLP energy that the earlier tests left
open. Each asserts what a formula or a docstring says, with fixed seeds and no clocks."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from ebmlab.training import checkpoint as ckpt
from ebmlab.training import selection


def _pair(d, step):
    ckpt.save_checkpoint(d, step, {"w": torch.tensor([float(step)])}, {})


# ----- checkpoint.py -------------------------------------------------------------------------------------------
def test_prune_drops_the_lone_half_of_a_step_between_the_pruned_and_the_kept(tmp_path):
    """``prune`` deletes all but the newest ``keep`` pairs and the lone files of steps *before the oldest kept*: a
    lone sidecar at step 2 with pairs 1, 3, 4 and keep 2 is older than step 3, so it goes (and so does pair 1)."""
    for s in (1, 3, 4):
        _pair(tmp_path, s)
    (tmp_path / "step_00000002.json").write_text('{"step": 2}', encoding="utf-8")  # a prune killed half-way
    ckpt.prune(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step_00000003.json", "step_00000003.safetensors", "step_00000004.json", "step_00000004.safetensors"]


# ----- selection.py --------------------------------------------------------------------------------------------
def test_a_check_is_due_every_n_updates_and_at_the_last_one():
    """Module docstring: scored "every ``train.select_every`` updates, and after the last one"."""
    sel = selection.Selector(5, "unused", seed=0)
    assert sel.due(10, False) and sel.due(5, False)
    assert not sel.due(7, False)
    assert sel.due(7, True)  # a run of 7 updates with select_every 5: its last update is checked too


def test_a_tensor_file_of_another_size_than_its_sidecar_says_is_refused_as_truncated(tmp_path):
    """Module docstring: the sidecar records the tensor file's size and "loading it refuses a size mismatch"."""
    path = ckpt.save_checkpoint(tmp_path, 3, {"w": torch.arange(64.0)}, {})
    raw = path.read_bytes()
    path.write_bytes(raw[:-16])  # the last four float32 values cut off: the header (and its pair token) intact
    with pytest.raises(ckpt.CheckpointError, match="size differs; it may be truncated"):
        ckpt.load_checkpoint(path)


# ----- mlp.py ---------------------------------------------------------------------------------------------------
def _fourier_probe(x: float, freq: float) -> float:
    """E(x) of a 1-d MLP with one Fourier frequency B = ``freq``, no blocks, an identity input layer, relu, and an
    output layer that reads the second feature: the docstring's [x, sin(2 pi x B), cos(2 pi x B)] says sin(2 pi x B)
    (when positive)."""
    from ebmlab.energies.mlp import MLPEnergy
    net = MLPEnergy(1, width=3, depth=0, activation="relu", fourier=1)
    with torch.no_grad():
        net.freqs.fill_(freq)
        net.inp.weight.copy_(torch.eye(3))
        net.inp.bias.zero_()
        net.out.weight.copy_(torch.tensor([[0.0, 1.0, 0.0]]))
        net.out.bias.zero_()
        return float(net(torch.tensor([[x]])))


def test_fourier_features_are_x_then_sin_then_cos_of_two_pi_x_b():
    assert _fourier_probe(1.0, 0.1) == pytest.approx(math.sin(2 * math.pi * 0.1), abs=1e-6)  # 0.588, not sin(0.1 pi)
    assert _fourier_probe(0.5, 0.25) == pytest.approx(math.sin(math.pi / 4), abs=1e-6)


def test_a_step_0_checkpoint_loads():
    """A sidecar's step must be an integer >= 0: the start's check writes the best at step 0 (``train.select_start``,
    training/selection.py)."""
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        path = ckpt.save_checkpoint(Path(d), 0, {"w": torch.zeros(2)}, {"val_energy_distance": 1.5}, name=ckpt.BEST)
        _, meta = ckpt.load_checkpoint(path)
        assert meta["step"] == 0 and meta["val_energy_distance"] == 1.5


# ----- loop.py ------------------------------------------------------------------------------------------------
def _tc(**kw):
    base = dict(warmup_steps=0, lr_schedule="constant", steps=100, lr_restart_steps=4, lr_decay_steps=0,
                lr_decay_factor=0.5)
    return SimpleNamespace(**{**base, **kw})


def test_cosine_restarts_begin_each_period_at_the_full_lr():
    """SGDR (Loshchilov & Hutter 2016): 0.5 (1 + cos(pi * ((step - end of warm-up) mod R) / R)), so updates 0, R, 2R
    are at the full lr and the middle of a period at half of it."""
    from ebmlab.training.loop import lr_factor
    tc = _tc(lr_schedule="cosine_restarts", lr_restart_steps=4)
    got = [lr_factor(tc, s) for s in range(9)]
    want = [0.5 * (1 + math.cos(math.pi * (s % 4) / 4)) for s in range(9)]
    assert got == pytest.approx(want) and got[0] == got[4] == got[8] == 1.0 and got[2] == pytest.approx(0.5)
    # after a warm-up of 2 updates the first period starts at update 2
    tc = _tc(lr_schedule="cosine_restarts", lr_restart_steps=4, warmup_steps=2)
    assert [lr_factor(tc, s) for s in (0, 1, 2, 4, 6)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 1.0])


def test_the_pair_token_hashes_the_step_as_well_as_the_tensors(tmp_path):
    """Module docstring: the ``pair`` token is "a hash of the step and the tensors" (identical runs write identical
    files): the same tensors saved at two steps carry two tokens, and the same save twice one token."""
    import json
    w = {"w": torch.ones(3)}
    a = json.loads(ckpt.save_checkpoint(tmp_path, 1, w, {}).with_suffix(".json").read_text(encoding="utf-8"))
    b = json.loads(ckpt.save_checkpoint(tmp_path, 2, w, {}).with_suffix(".json").read_text(encoding="utf-8"))
    again = json.loads(ckpt.save_checkpoint(tmp_path / "x", 1, w, {}).with_suffix(".json").read_text(encoding="utf-8"))
    assert a[ckpt.PAIR] != b[ckpt.PAIR] and a[ckpt.PAIR] == again[ckpt.PAIR]


def test_a_warm_up_that_ends_at_the_last_update_is_not_said_to_fall_short():
    """The linear warm-up's factor at update s is (s + 1) / W: with W = train.steps the last update (s = W - 1) runs at
    the full lr, so there is nothing to warn about; one update fewer and it reaches (W - 1) / W."""
    from ebmlab.training.loop import warmup_warnings
    assert warmup_warnings([{"params": []}], _tc(warmup_steps=10, steps=10)) == []
    said = warmup_warnings([{"params": []}], _tc(warmup_steps=10, steps=9))
    assert len(said) == 1 and "reaches 90% of its value" in said[0]


def test_a_check_that_keeps_the_validation_likelihood_equal_to_the_bases_may_replace_the_start():
    """Module docstring: with ``select_likelihood`` the rows' log-likelihood under the check "may not be lower than
    under the base measure": a gain of exactly 0 (e.g. the untrained tilt) passes, a negative or NaN one does not."""
    sel = selection.Selector(5, "unused", seed=0, likelihood=True)
    for gain, ok in ((0.0, True), (0.25, True), (-1e-9, False), (math.nan, False)):
        sel._gain = gain
        assert sel._likely() is ok, gain
    assert selection.Selector(5, "unused", seed=0)._likely()  # without the option: always


def test_the_result_is_the_validation_best_when_there_is_one(tmp_path):
    """``result_checkpoint``: the validation best (with its sidecar) is the run's result, else the newest step."""
    _pair(tmp_path, 5)
    _pair(tmp_path, 10)
    assert ckpt.result_checkpoint(tmp_path) == tmp_path / "step_00000010.safetensors"
    ckpt.save_checkpoint(tmp_path, 5, {"w": torch.tensor([5.0])}, {}, name=ckpt.BEST)
    assert ckpt.result_checkpoint(tmp_path) == ckpt.best_path(tmp_path)


def test_the_untrained_mixture_tilt_is_its_base_exactly():
    """mlp.py docstring: ``base_mixture=True`` adds the mixture's -log q(x) "with the output layer zeroed the same
    way", so the untrained model is the base: E(x) = -log q(x) for every x."""
    from ebmlab.energies.mlp import MLPEnergy
    torch.manual_seed(0)
    net = MLPEnergy(2, width=8, depth=1, base_mixture=True)
    x = torch.randn(6, 2) * 3
    with torch.no_grad():  # (the mixture is fitted only when the objective is built: the tilt f(x) alone here)
        assert torch.equal(net.out(net.features(x)), torch.zeros(6, 1))
    assert not torch.equal(net.inp.weight, torch.zeros_like(net.inp.weight))  # only the output layer is zeroed


# ----- time.py ---------------------------------------------------------------------------------------------------
def test_the_joint_time_head_needs_at_least_two_levels():
    """Paper 000 Sec. 3.2: level 0 is the fixed reference and the increments u_1..u_{T-1} the learnt part; T = 1 leaves
    no level to learn (and an empty Linear): refused, as T >= 2 is documented."""
    from ebmlab.energies.time import JointTimeEnergy
    with pytest.raises(ValueError, match="T >= 2"):
        JointTimeEnergy(torch.nn.Identity(), 2, T=1, sigma_n=1.0)
    JointTimeEnergy(torch.nn.Identity(), 2, T=2, sigma_n=1.0)  # the smallest head


def test_a_best_written_at_the_resume_step_is_kept(tmp_path):
    """``Selector.resume``: only a best written *after* the step the run resumes from belongs to the abandoned part;
    checks come before saves, so a best at the checkpoint's own step is the run's and stays."""
    import warnings
    ckpt.save_checkpoint(tmp_path, 10, {"w": torch.ones(1)}, {"val_energy_distance": 0.75}, name=ckpt.BEST)
    sel = selection.Selector(5, tmp_path, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sel.resume(10)
    assert sel.best_step == 10 and sel.best_check == sel.best_score == 0.75
    assert ckpt.best_path(tmp_path).is_file()
    later = selection.Selector(5, tmp_path, seed=0)
    with pytest.warns(RuntimeWarning, match="written after step 9"):
        later.resume(9)
    assert later.best_step is None and not ckpt.best_path(tmp_path).is_file()


# ----- the loop's intervals (one short run) -----------------------------------------------------------------------
RUN = ["train.steps=7", "train.batch_size=16", "train.log_every=5", "train.checkpoint_every=2",
       "train.keep_checkpoints=2", "train.sample_every=3", "train.progress=false", "model.width=8", "model.depth=1",
       "method.n_steps=2", "method.n_steps_data=1", "data.n_train=200", "data.n_test=50", "train.threads=1"]


def test_the_loop_logs_checkpoints_and_samples_at_its_intervals_and_at_the_last_update(tmp_path):
    """7 updates: a log row every 5 and at the last (5, 7); a checkpoint every 2 and at the last (2, 4, 6, 7), of which
    ``keep_checkpoints=2`` keeps the newest two (6, 7); the sample hook every 3 updates (3, 6)."""
    from ebmlab.training.config import load_config
    from ebmlab.training.logging import read_metrics
    from tests.runs import fit_in
    sampled = []
    trainer = fit_in(tmp_path / "r", load_config(None, RUN), on_sample=lambda t: sampled.append(t.step))
    assert trainer.step == 7 and trainer.fit_stats["updates"] == 7
    assert [r["step"] for r in read_metrics(tmp_path / "r") if "loss" in r] == [5, 7]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "r" / "checkpoints")] == [6, 7]
    assert sampled == [3, 6]


SEL = ["data.name=mixture", "data.n_train=200", "data.n_test=50", "model.width=8", "model.depth=1",
       "method.n_steps=2", "method.n_steps_data=1", "train.batch_size=16", "train.log_every=1",
       "train.checkpoint_every=2", "train.progress=false", "train.threads=1", "data.val_fraction=0.1",
       "train.select_every=2", "train.select_start=true"]


def test_select_start_checks_the_starting_weights_once_not_again_on_resume(tmp_path, monkeypatch):
    """``train.select_start`` checks "the starting weights before the first update": a run resumed at step 2 to 4 makes
    one check (at 4), as the uninterrupted run's checks are at 0, 2 and 4."""
    from ebmlab.training.config import load_config
    from tests.runs import fit_in
    calls = []
    monkeypatch.setattr(selection, "validation_score", lambda *a, **k: calls.append(1) or 5.0 - len(calls))
    fit_in(tmp_path / "r", load_config(None, SEL + ["train.steps=2"]))
    assert len(calls) == 2  # steps 0 and 2
    trainer = fit_in(tmp_path / "r", load_config(None, SEL + ["train.steps=4"]), resume=True)
    assert len(calls) == 3 and trainer.selector.best_step == 4
