"""Known answers for the training machinery (found missing by a mutation check, docs/testing.md, round 3): the EMA's
averaging rule and its warm-up, the EMA restored on resume and used by ``ebmlab.load`` and by the validation checks,
the learning-rate warm-up and cosine decay, gradient clipping, the latest checkpoint, the chain-length ramp. Each
compares with a closed form or with an uninterrupted run, never with a value recorded from an earlier run."""
import pytest
import torch
from torch import nn

import ebmlab
from ebmlab.training.config import load_config
from tests.runs import fit_in

TINY = ["train.steps=20", "train.batch_size=32", "train.checkpoint_every=5", "train.log_every=1",
        "train.progress=false", "model.width=16", "model.depth=1", "method.n_steps=5",
        "method.n_steps_data=2", "data.n_train=500", "data.n_test=200", "train.threads=1"]
SEL = ["data.name=mixture", "data.n_train=400", "data.n_test=100", "model.width=16", "model.depth=1",
       "method.n_steps=3", "method.n_steps_data=2", "train.batch_size=32", "train.log_every=1",
       "train.checkpoint_every=1000", "train.progress=false", "train.threads=1", "eval.n_samples=50",
       "eval.grid_size=20", "eval.long_run_factor=1", "eval.plots=false"]


def _fit(run_dir, overrides, resume=False):
    return fit_in(run_dir, load_config(None, overrides), resume=resume)


# ----- EMA ------------------------------------------------------------------------------------------------
def test_ema_update_is_the_closed_form_average_with_its_warm_up():
    """shadow_n = d_n shadow_{n-1} + (1 - d_n) p with d_n = min(decay, (1 + n) / (10 + n)): for a constant p,
    shadow_n - p = (s_0 - p) prod d_i (decay 0.5 reaches the cap at n = 8)."""
    from ebmlab.training.ema import EMA
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0]]))
    ema = EMA(lin, 0.5)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
    prod = 1.0
    for n in range(1, 13):
        ema.update(lin)
        prod *= min(0.5, (1 + n) / (10 + n))
        want = torch.tensor([[3.0, 4.0]]) + (torch.tensor([[1.0, -2.0]]) - torch.tensor([[3.0, 4.0]])) * prod
        assert torch.allclose(ema.shadow["weight"], want, atol=1e-6), n
    assert ema.num_updates == 12


def test_a_resumed_run_has_the_uninterrupted_runs_ema(tmp_path):
    """Resume restores the EMA weights and its update count (the decay's warm-up): the EMA of 10 + 10 updates
    equals that of 20 uninterrupted ones bit for bit (the losses alone do not see the EMA)."""
    full = _fit(tmp_path / "full", TINY + ["method.name=hybrid"])
    _fit(tmp_path / "part", TINY + ["method.name=hybrid", "train.steps=10"])
    resumed = _fit(tmp_path / "part", TINY + ["method.name=hybrid"], resume=True)
    assert resumed.ema.num_updates == full.ema.num_updates == 20
    for k, v in full.ema.shadow.items():
        assert torch.equal(v, resumed.ema.shadow[k]), k


def test_ebmlab_load_and_run_load_use_the_ema_weights(tmp_path):
    """The module docstring of training/ema.py: ``ebmlab.load`` evaluates the EMA weights. A fresh objective with the
    checkpoint's ``ema.*`` tensors copied in gives the loaded energy; the raw weights do not."""
    from ebmlab.training import checkpoint as ckpt
    from ebmlab.training.run import load as run_load, open_checkpoint
    _fit(tmp_path / "r", TINY + ["method.name=hybrid", "train.steps=10"])
    path = ckpt.latest_checkpoint(tmp_path / "r" / "checkpoints")
    tensors, _ = ckpt.load_checkpoint(path)
    raw = open_checkpoint(tmp_path / "r", ema=False, need_data=False)
    x = torch.randn(7, 10, generator=torch.Generator().manual_seed(0))
    energy_raw = raw.objective.data_energy(raw.data.transform.to_model(x))
    with torch.no_grad():
        params = dict(raw.objective.named_parameters())
        for k, v in tensors.items():
            if k.startswith("ema."):
                params[k[4:]].copy_(v)
    energy_ema = raw.objective.data_energy(raw.data.transform.to_model(x))
    assert not torch.allclose(energy_ema, energy_raw)
    assert torch.allclose(ebmlab.load(tmp_path / "r")(x), energy_ema, atol=1e-6)
    assert torch.allclose(run_load(tmp_path / "r")(x), energy_ema, atol=1e-6)


def test_a_validation_check_scores_the_ema_weights(tmp_path):
    """Selector._score scores the EMA weights in eval mode from the generator seeded seed + 7919 + step: the same
    score as validation_score by hand with the EMA swapped in, another one with the raw weights."""
    from ebmlab.training import selection
    from ebmlab.training.loop import Trainer
    cfg = load_config(None, SEL + ["train.steps=5", "train.select_every=5", "data.val_fraction=0.1"])
    t = Trainer(cfg, tmp_path / "r")
    for _ in range(5):
        t._update()
    sel = t.selector
    score = sel._score(t)

    def by_hand(ema):
        g = torch.Generator(t.device).manual_seed(cfg.train.seed + selection._SEED_OFFSET + t.step)
        t.objective.eval()
        try:
            with torch.no_grad():
                if ema:
                    with t.ema.applied(t.objective):
                        return selection.validation_score(t.objective, t.data, sel.n, g)
                return selection.validation_score(t.objective, t.data, sel.n, g)
        finally:
            t.objective.train()
    assert score == pytest.approx(by_hand(True), rel=1e-6, abs=1e-9)
    assert score != pytest.approx(by_hand(False), rel=1e-6, abs=1e-9)


# ----- learning rate and gradient clipping --------------------------------------------------------------
def _opt(lr=0.1):
    return torch.optim.Adam([nn.Parameter(torch.zeros(2))], lr=lr)


def test_set_lr_warms_up_linearly_from_lr_over_warmup_to_lr_and_stays_there():
    """Step s of a warm-up of W steps: lr (s + 1) / W for s < W, then lr (constant schedule); set every step
    (the base lr is not compounded by the previous step's factor)."""
    from ebmlab.training.loop import set_lr
    tc = load_config(None, ["train.warmup_steps=4", "train.lr=0.1", "train.steps=10"]).train
    opt = _opt(0.1)
    got = []
    for s in range(10):
        set_lr(opt, tc, s)
        got.append(opt.param_groups[0]["lr"])
    want = [0.1 * min(1.0, (s + 1) / 4) for s in range(10)]
    assert got == pytest.approx(want, rel=1e-12)


def test_cosine_decay_starts_after_the_warm_up_at_one_and_ends_at_zero():
    """Cosine over the steps after a warm-up of W: factor 1 at step W, 1/2 halfway through the rest, 0 at the end."""
    from ebmlab.training.loop import lr_factor
    tc = load_config(None, ["train.warmup_steps=10", "train.lr_schedule=cosine", "train.steps=110"]).train
    assert lr_factor(tc, 9) == pytest.approx(1.0)
    assert lr_factor(tc, 10) == pytest.approx(1.0)
    assert lr_factor(tc, 60) == pytest.approx(0.5)
    assert lr_factor(tc, 110) == pytest.approx(0.0, abs=1e-12)


def test_the_gradient_stepped_on_has_at_most_the_grad_clip_norm(tmp_path):
    """train.grad_clip c: after an update the parameters' gradient (what Adam stepped on) has total norm <= c,
    while the logged grad_norm is the norm before clipping (> c here)."""
    from ebmlab.training.loop import Trainer
    cfg = load_config(None, TINY + ["method.name=hybrid", "train.grad_clip=0.001"])
    t = Trainer(cfg, tmp_path / "r")
    out = t.train_step()
    grads = [p.grad for g in t.optimizer.param_groups for p in g["params"] if p.grad is not None]
    total = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    assert out["grad_norm"] > 0.001
    assert total <= 0.001 * (1 + 1e-4)


# ----- the time buffer and the chain-length ramp ---------------------------------------------------------------
def test_chain_length_ramps_linearly_from_start_at_hold_to_end_at_hold_plus_ramp():
    from ebmlab.schedules import chain_length
    assert [chain_length(s, 0, 10, hold=100, ramp=10) for s in (99, 100, 103, 105, 110, 111)] == [0, 0, 3, 5, 10, 10]


# ----- checkpoints --------------------------------------------------------------------------------------------
def test_latest_checkpoint_is_the_highest_step_whatever_the_write_order(tmp_path):
    from ebmlab.training import checkpoint as ckpt
    for step in (30, 100, 7):
        ckpt.save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, {})
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000100.safetensors"
    ckpt.prune(tmp_path, 2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [30, 100]
