"""Learning-rate schedules of parameter groups with their own warm-up and head start (paper 003's two networks,
Eq. 15), and the warm-up settings that did nothing without a word.

A helper's audit of every ``train.*`` setting on every method (docs/testing.md, "Does every setting take effect")
found, for cdrl and drl only: ``train.warmup_steps`` ignored (each group warms up by ``method.ebm_warmup`` /
``init_warmup``), a warm-up longer than the run (the default 10,000 against 2,500 updates: the EBM's lr peaked at
25 % and ``train.lr_schedule`` never started), and the initializer's head start shifting its whole schedule, not
its warm-up: under cosine its lr reached 0 ``init_head_start`` updates before the end, and it decayed earlier under
step decay. And a negative ``method.init_head_start`` gave a negative lr (gradient ascent) during its warm-up.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ebmlab.errors import ConfigError
from ebmlab.training.config import load_config
from ebmlab.training.loop import set_lr, warmup_warnings


def _two_groups(warmup: int = 10, head_start: int = 5) -> torch.optim.Optimizer:
    """paper 003's groups: the EBM (lr 1.0, its warm-up) and the initializer (lr 0.5, its warm-up started early)."""
    return torch.optim.Adam([{"params": [nn.Parameter(torch.zeros(1))], "lr": 1.0, "warmup": warmup, "delay": 0,
                              "name": "energy"},
                             {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.5, "warmup": warmup,
                              "delay": -head_start, "name": "initializer"}])


def _lrs(opt, tc, steps) -> list[tuple[float, float]]:
    out = []
    for s in steps:
        set_lr(opt, tc, s)
        out.append(tuple(g["lr"] for g in opt.param_groups))
    return out


def test_a_head_start_shifts_the_warm_up_and_the_cosine_still_ends_at_the_runs_last_update():
    tc = load_config(None, ["train.lr_schedule=cosine", "train.steps=105"]).train
    lrs = _lrs(_two_groups(), tc, [0, 4, 5, 9, 10, 57, 104])
    energy, init = zip(*lrs)
    assert energy[:4] == pytest.approx([0.1, 0.5, 0.6, 1.0])  # (s + 1) / 10
    assert init[:3] == pytest.approx([0.5 * 0.6, 0.5 * 1.0, 0.5 * 1.0])  # 5 updates ahead: full at update 4
    assert init[4] < init[3] and energy[4] == pytest.approx(1.0)  # each cosine starts at the end of its own warm-up
    # both decay to the run's end, each from where its warm-up ended (updates 5 and 10)
    assert init[5] == pytest.approx(0.5 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 52 / 100)).item()))
    assert energy[5] == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi * 47 / 95)).item()))
    assert init[6] > 0 and energy[6] > 0  # the initializer was at 0 from update 100 on (its cosine ended early)


def test_step_decay_happens_at_the_same_update_for_both_groups():
    tc = load_config(None, ["train.lr_schedule=step", "train.lr_decay_steps=20", "train.lr_decay_factor=0.1",
                            "train.steps=60"]).train
    energy, init = zip(*_lrs(_two_groups(), tc, [15, 19, 20, 39, 40]))
    assert energy == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    assert init == pytest.approx([0.5, 0.5, 0.05, 0.05, 0.005])  # it decayed 5 updates earlier (at 15, 35)


def test_a_group_that_starts_late_has_no_lr_before_it_starts_never_a_negative_one():
    tc = load_config(None, ["train.steps=30"]).train
    (_, late), = _lrs(_two_groups(head_start=-4), tc, [0])
    assert late == 0.0  # (0 - 4 + 1) / 10 * 0.5 was -0.15: Adam ascended
    with pytest.raises(ConfigError, match="init_head_start"):
        load_config(None, ["method.name=cdrl", "method.init_head_start=-4"])


def test_warm_up_settings_that_do_nothing_are_said():
    tc = load_config(None, ["train.warmup_steps=50", "train.steps=1000"]).train
    groups = _two_groups(warmup=100).param_groups
    said = warmup_warnings(groups, tc)
    assert len(said) == 1 and said[0].startswith("train.warmup_steps=50 does not apply to this method")
    assert "energy 100, initializer 100 updates" in said[0]
    short = load_config(None, ["train.steps=40", "train.lr_schedule=cosine"]).train
    said = warmup_warnings(groups, short)
    assert said == ["the lr of parameter group 'energy' warms up over 100 updates, ending at update 100, but the run "
                    "has train.steps=40: it reaches 40% of its value and train.lr_schedule never starts",
                    "the lr of parameter group 'initializer' warms up over 100 updates, ending at update 95, but the "
                    "run has train.steps=40: it reaches 45% of its value and train.lr_schedule never starts"]
    plain = [{"params": [], "lr": 1.0}]  # one group on train.warmup_steps: nothing to say within the run
    assert warmup_warnings(plain, load_config(None, ["train.warmup_steps=50", "train.steps=1000"]).train) == []
    assert "ending at update 50" in warmup_warnings(plain, load_config(None, ["train.warmup_steps=50",
                                                                                "train.steps=20"]).train)[0]


def test_a_cdrl_run_says_that_its_warm_up_outlasts_the_run(tmp_path):
    """The default cdrl settings (the paper's CIFAR-10 warm-up of 10,000 updates) on a short run."""
    from ebmlab.training.loop import Trainer
    from tests.contracts.test_objective_contract import tiny_overrides
    cfg = load_config(None, tiny_overrides("cdrl") + ["train.steps=2500", "train.warmup_steps=10", "train.threads=1"])
    with pytest.warns(RuntimeWarning) as seen:
        Trainer(cfg, tmp_path / "run")
    said = [str(w.message) for w in seen]
    assert any(s.startswith("train.warmup_steps=10 does not apply") for s in said)
    assert any("'energy' warms up over 10000 updates" in s and "it reaches 25% of its value" in s for s in said)
