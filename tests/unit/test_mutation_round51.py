"""Mutation round 51 (buffers, buffers_time, schedules, applications, EMA, held-out scores): known answers for the
mutants the existing fast tests let through (docs/testing.md "An eighth mutation round"). Each value is derived from
the formula it tests (paper or docstring), computed here independently of the code under test."""
from __future__ import annotations

import math

import torch

from ebmlab import schedules


# ----- schedules: DRL's original schedule (Gao et al. 2021 "T6", section comment of schedules.py) ---------------
def _drl_lambda_by_hand(k: int, n_fine: int = 1000, b0: float = 1e-4, b1: float = 0.02) -> float:
    """logSNR at fine step k of a 1000-step linear beta schedule: abar^2_k = prod_{j<=k} (1 - beta_j)."""
    a2 = 1.0
    for j in range(k + 1):
        a2 *= 1.0 - (b0 + (b1 - b0) * j / (n_fine - 1))
    return math.log(a2) - math.log(1.0 - a2)


def test_drl_schedule_reads_fine_steps_at_stride_n_over_2_T_minus_1_and_the_last_step():
    """Levels i < T at fine step i * (1000 // (2 (T-1))), level T at step 999 (the last one): for T = 6 the steps
    0, 100, ..., 500 and 999; for T = 2 the steps 0, 500, 999. End points logSNR 9.2 and -10.1 (comment)."""
    for T, steps in ((6, [0, 100, 200, 300, 400, 500, 999]), (2, [0, 500, 999]), (4, [0, 166, 332, 498, 999])):
        got = schedules.drl_logsnr(T)
        want = torch.tensor([_drl_lambda_by_hand(k) for k in steps], dtype=torch.float64)
        assert torch.allclose(got, want, rtol=0, atol=1e-9), T
    lam = schedules.drl_logsnr(6)
    assert abs(float(lam[0]) - 9.21) < 0.01 and abs(float(lam[-1]) + 10.12) < 0.01


def test_vp_levels_refuses_a_repeated_level():
    """"strictly decreasing logSNR": two equal levels give alpha = 1 and sigma = 0 (a step that adds no noise), so
    they are refused, as an increasing pair is."""
    import pytest
    for lam in ([3.0, 3.0, -1.0], [3.0, 1.0, 1.0], [1.0, 2.0]):
        with pytest.raises(ValueError, match="strictly decreasing"):
            schedules.vp_levels(torch.tensor(lam))
    schedules.vp_levels(torch.tensor([3.0, 1.0 - 1e-9, -1.0]))  # strictly decreasing: accepted


def test_recovery_step_sizes_default_is_paper_003s_coefficient():
    """Eq. 16 with App. A.2's b^2 = 0.054 (the public function's default, the configs' step_coef):
    s_t = sqrt(0.054 sbar_t sigma_{t+1}^2), by hand from sigmoid for the cosine levels."""
    lam = schedules.cosine_logsnr(6)
    lv = schedules.vp_levels(lam)
    sbar = [math.sqrt(1.0 / (1.0 + math.exp(float(v)))) for v in lam]
    abar = [math.sqrt(1.0 / (1.0 + math.exp(-float(v)))) for v in lam]
    want = [math.sqrt(0.054 * sbar[t] * (1.0 - (abar[t + 1] / abar[t]) ** 2)) for t in range(6)]
    assert torch.allclose(schedules.recovery_step_sizes(lv), torch.tensor(want, dtype=torch.float64), atol=1e-12)


# ----- applications/composition.py (paper 001 Sec. 3.4 digits demo) ------------------------------------------
def test_thickness_is_strictly_more_ink_than_the_class_median():
    """"thick when its ink *exceeds* the median ink of its own digit class": an image whose ink equals its class's
    median is thin. Class 0: inks 0.1, 0.2, 0.3 (median 0.2); class 1: 0.5, 0.6, 0.7 (median 0.6)."""
    from ebmlab.applications.composition import ThicknessAttribute, ink
    inks = torch.tensor([0.1, 0.2, 0.3, 0.5, 0.6, 0.7], dtype=torch.float64)
    images = (2.0 * inks - 1.0).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()  # x = 2 ink - 1 everywhere
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert torch.allclose(ink(images), inks)
    attr = ThicknessAttribute.fit(images, labels, num_classes=2)
    assert torch.allclose(attr.medians, torch.tensor([0.2, 0.6], dtype=torch.float64))
    assert attr(images, labels).tolist() == [0, 0, 1, 0, 0, 1]


def test_cdrl_composition_accuracy_judges_samples_clamped_to_the_data_range(monkeypatch):
    """Images live in [-1, 1] (background -1); a sample that overshoots is judged as the image it displays as,
    its clamp: a pixel at 3 is full ink 1, not 2, and one at -3 is background. The classifier and the thickness
    rule see the clamped samples (ink 1.0 and 0.0 here)."""
    from ebmlab.applications import recovery_composition
    from ebmlab.applications.composition import ThicknessAttribute, ink
    C, seen = 2, []

    def fake_sample(objective, concepts, w, *, include_prior=True, generator=None, n_steps=None):
        n = concepts[0].shape[0]
        return torch.where(torch.arange(n) % 2 == 0, 3.0, -3.0).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()

    def classify(x):
        seen.append(x.clone())
        return torch.zeros(x.shape[0], dtype=torch.long)

    monkeypatch.setattr(recovery_composition, "composed_sample", fake_sample)
    recovery_composition.composition_accuracy(None, classify, ThicknessAttribute(torch.full((C,), 0.5)),
                                              n_per_pair=2, num_classes=C, batch=8)
    x = torch.cat(seen)
    assert float(x.max()) == 1.0 and float(x.min()) == -1.0
    assert sorted(set(ink(x).tolist())) == [0.0, 1.0]


# ----- training/ema.py -----------------------------------------------------------------------------------------
def test_ema_averages_only_the_trainable_parameters():
    """"An exponential moving average of a module's *trainable* parameters": a frozen parameter is not averaged,
    not saved, and swapping the EMA in leaves its current value alone (here one set after the EMA was made)."""
    from torch import nn
    from ebmlab.training.ema import EMA
    torch.manual_seed(0)
    lin = nn.Linear(2, 1)
    lin.bias.requires_grad_(False)
    ema = EMA(lin, 0.5)
    assert set(ema.state_dict()) == {"weight"}
    with torch.no_grad():
        lin.bias.fill_(7.0)
        w0 = lin.weight.clone()
        lin.weight.add_(1.0)
    ema.update(lin)  # d = min(0.5, 2 / 11) = 2/11: shadow = 2/11 w0 + 9/11 (w0 + 1) = w0 + 9/11
    with ema.applied(lin):
        assert torch.allclose(lin.weight, w0 + 9.0 / 11.0, atol=1e-6)
        assert float(lin.bias) == 7.0
    ema.copy_to(lin)
    assert float(lin.bias) == 7.0


def test_ema_load_names_the_missing_parameters():
    """load_state_dict: "KeyError when a parameter is missing", naming it (a checkpoint of another model), before
    any shadow tensor is overwritten."""
    import pytest
    from torch import nn
    from ebmlab.training.ema import EMA
    torch.manual_seed(0)
    ema = EMA(nn.Linear(2, 1), 0.9)
    before = {k: v.clone() for k, v in ema.shadow.items()}
    with pytest.raises(KeyError, match=r"lacks parameters: \['weight'\]"):
        ema.load_state_dict({"bias": torch.zeros(1)}, num_updates=3)
    assert all(torch.equal(before[k], ema.shadow[k]) for k in before) and ema.num_updates == 0


# ----- training/heldout.py -------------------------------------------------------------------------------------
# One column; training rows -1, 0, 1 (mean 0, std 1: z-scoring is the identity), held-out rows 0, 3, 0, 3 and
# validation rows 0, 3. For 1-D sets the U-statistic energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (distinct pairs
# only in the within-set means) is computed by hand in each docstring below. E|Y-Y'| over the held-out rows:
# 4 of the 6 distinct pairs are 3 apart -> 2 (the V-statistic would give 24/16 = 1.5).
def _table(val=((0.0,), (3.0,))):
    from types import SimpleNamespace
    ident = lambda x: x  # noqa: E731
    return SimpleNamespace(train=torch.tensor([[-1.0], [0.0], [1.0]]), test=torch.tensor([[0.0], [3.0], [0.0], [3.0]]),
                           val=torch.tensor(val), transform=SimpleNamespace(to_data=ident, to_model=ident))


class _Scripted(torch.nn.Module):
    """Samples: every row the generator's seed (or ``fixed``); prior: rows 0, 3, 3."""

    def __init__(self, fixed=None):
        super().__init__()
        self.p, self.fixed = torch.nn.Parameter(torch.zeros(())), fixed

    def sample(self, n, generator=None):
        from types import SimpleNamespace
        v = float(generator.initial_seed()) if self.fixed is None else self.fixed
        return SimpleNamespace(x=torch.full((n, 1), v))

    def prior(self, n, generator=None):
        return torch.tensor([[0.0], [3.0], [3.0]])[:n]

    def steps_run(self, n):
        return 1


def test_heldout_energy_distance_is_the_u_statistic_against_every_heldout_row():
    """Samples 3, 3, 3: E|X-Y| = 1.5, E|X-X'| = 0 -> 3 - 0 - 2 = 1 (only the first n = 3 held-out rows: 2; the
    V-statistic self term: 1.5). Training rows -1, 0, 1: E|X-Y| = 11/6, E|X-X'| = 4/3 -> 11/3 - 4/3 - 2 = 1/3.
    Prior rows 0, 3, 3: E|X-Y| = 1.5, E|X-X'| = 2 -> 3 - 2 - 2 = -1."""
    from ebmlab.training.heldout import heldout_energy_distance
    got = heldout_energy_distance(_Scripted(3.0), _table(), 3, torch.Generator().manual_seed(0))
    want = {"sample_energy_distance_heldout": 1.0, "sample_energy_distance_heldout_train": 1 / 3,
            "sample_energy_distance_heldout_noise": -1.0}
    assert got.keys() == want.keys()
    assert all(abs(got[k] - want[k]) < 1e-9 for k in want), got


def test_validation_terms_are_twice_the_mean_distance_to_each_row_in_one_piece_and_in_blocks():
    """Validation rows 0, 3; samples all 1: per-row terms 2 E|X - y_j| = 2 and 4, score 2 * 1.5 - 0 - 3 = 0 (the
    mean of the terms minus both self terms), for 2 samples and for 3000 (more than one block of 2048 rows)."""
    from ebmlab.training.heldout import validation_terms
    for n in (2, 3000):
        score, rows = validation_terms(_Scripted(1.0), _table(), n, torch.Generator().manual_seed(0))
        assert abs(score) < 1e-9, n
        assert torch.allclose(rows, torch.tensor([2.0, 4.0], dtype=torch.float64), atol=1e-9), n


def test_validation_score_uses_the_first_5000_validation_rows():
    """"the first VALIDATION_ROWS (5000, the held-out split's default size)": rows 0 x 500, 3 x 4500, then 100s that
    must not count. Samples 0, 0: E|X-Y| = 2.7, E|Y-Y'| = 2 * 500 * 4500 * 3 / (5000 * 4999) -> the score."""
    from ebmlab.training.heldout import validation_score
    val = [[0.0]] * 500 + [[3.0]] * 4500 + [[100.0]] * 50
    got = validation_score(_Scripted(0.0), _table(val), 2, torch.Generator().manual_seed(0))
    want = 2 * 2.7 - 0.0 - 2 * 500 * 4500 * 3 / (5000 * 4999)
    assert abs(got - want) < 1e-9


def test_heldout_draws_seed_the_kth_draw_with_seed_plus_k():
    """Draw k's samples are all s + k (the scripted sampler returns its generator's seed): with held-out rows
    0, 3, 0, 3 the score of constant samples c >= 3 is (c + c - 3) - 0 - 2 = 2c - 5: 5, 7, 9 for seeds 5, 6, 7."""
    from ebmlab.training.heldout import heldout_draws
    out = heldout_draws(_Scripted(), _table(), 3, 3, 5)
    assert [round(v, 9) for v in out["sample_energy_distance_heldout_draws"]] == [5.0, 7.0, 9.0]
    assert abs(out["sample_energy_distance_heldout_mean"] - 7.0) < 1e-9
    assert out["heldout_draw_seeds"] == [5, 7]


def test_draws_extension_seeds_from_zero_without_draw_seed():
    """``--draw-seed`` "default 0" (cli help): draws seeded 0 and 1; constant samples 0 and 1 score
    |c| + |c - 3| - 2 = 1 each."""
    from types import SimpleNamespace
    from ebmlab.training.heldout import draws_extension
    cfg = SimpleNamespace(train=SimpleNamespace(progress=False), eval=SimpleNamespace(n_samples=3))
    out = draws_extension(SimpleNamespace(heldout_draws=2), cfg, _Scripted(), _table())
    assert out["heldout_draw_seeds"] == [0, 1]
    assert [round(v, 9) for v in out["sample_energy_distance_heldout_draws"]] == [1.0, 1.0]
