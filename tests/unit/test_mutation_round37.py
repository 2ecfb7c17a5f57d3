"""A second mutation round on modules no round had reached (docs/testing.md; data/toy.py, data/image_ops.py,
objectives/eta_tuning.py, samplers/augment.py):
each test catches one one-line mutation the existing tests missed, asserting a known answer (the paper's noise model, a
triangle filter's weights, the module's documented promises), not the code's current output."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ebmlab.data.image_ops import centre_crop, resize, to_unit_range
from ebmlab.data.toy import Rings10D
from ebmlab.errors import DataError
from ebmlab.objectives.eta_tuning import choose_eta, t1_energy_gap, tune_eta
from ebmlab.samplers.augment import augment


# --- data/toy.py -------------------------------------------------------------------------------------

def test_rings_x3_carries_the_big_noise_std_as_paper_004_app_a1_says():
    """Paper 004 App. A.1: std 0.1 on x1, x2, x3 and 0.01 on x4..x10 (mutation: n_big = 2, x3 at 0.01)."""
    toy = Rings10D()
    assert toy.std_vector().tolist() == pytest.approx([0.1] * 3 + [0.01] * 7)
    x = toy.sample(20000, torch.Generator().manual_seed(0))
    sd = x[:, 2:].std(0)
    assert sd[0].item() == pytest.approx(0.1, rel=0.05)          # x3
    assert sd[1:].numpy() == pytest.approx(np.full(7, 0.01), rel=0.05)  # x4..x10
    # exact density: moving x3 by one std (0.1) changes log p by exactly -1/2
    a = torch.zeros(1, 10)
    a[0, 0] = 1.0
    b = a.clone()
    b[0, 2] = 0.1
    assert (toy.log_prob(b) - toy.log_prob(a)).item() == pytest.approx(-0.5, abs=1e-4)


# --- data/image_ops.py -------------------------------------------------------------------------------

def test_shrinking_is_antialiased_with_the_bilinear_triangle_filter():
    """A 2x shrink with antialiasing is a triangle filter over 4 source pixels, weights 1/8, 3/8, 3/8, 1/8
    (renormalised at the border): columns 1, 1, -1, -1, ... give -1/2, +1/2 inside and 5/7 at the edges
    (plain bilinear would give +-1: mutation, antialias only when growing)."""
    row = torch.tensor([1.0, 1, -1, -1] * 4)
    x = row.repeat(16, 1)[None, None]  # (1, 1, 16, 16)
    out = resize(x, 8)[0, 0]
    want = torch.tensor([5 / 7, -0.5, 0.5, -0.5, 0.5, -0.5, 0.5, -5 / 7])
    assert out.shape == (8, 8)
    assert torch.allclose(out, want.expand(8, 8), atol=1e-5)


def test_centre_crop_of_a_non_square_image_takes_the_middle_rows():
    """(8, 4) image, crop 4: rows 2..5, all four columns (mutation: top and left offsets swapped)."""
    x = torch.arange(32.0).reshape(1, 1, 8, 4)
    out = centre_crop(x, 4)
    assert torch.equal(out, x[..., 2:6, :])
    y = torch.arange(32.0).reshape(1, 1, 4, 8)
    assert torch.equal(centre_crop(y, 4), y[..., :, 2:6])


def test_a_crop_as_large_as_the_image_is_allowed_and_changes_nothing():
    """``centre_crop`` refuses a crop *larger* than the images; one equal to their side is the identity
    (mutation: >= refuses data.crop = 32 on 32x32 images)."""
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(centre_crop(x, 4), x)
    with pytest.raises(DataError):
        centre_crop(x, 5)


def test_floats_below_minus_one_are_refused():
    """Docstring: anything outside [-1, 1] is refused (mutation: the lower bound relaxed to -1.5)."""
    arr = np.zeros((2, 4, 4, 3), np.float32)
    arr[0, 0, 0, 0] = -1.2
    with pytest.raises(DataError):
        to_unit_range(arr, "x.npy")
    arr[0, 0, 0, 0] = -1.0
    assert to_unit_range(arr, "x.npy").min().item() == -1.0  # the edge itself is fine


# --- objectives/eta_tuning.py ------------------------------------------------------------------------

def test_a_gap_exactly_at_the_target_is_reached():
    """App. A.1's rule, documented as gap >= target (mutation: > skips a candidate exactly at it)."""
    res = choose_eta({0.1: -0.2, 0.2: 0.0, 0.3: 0.5})
    assert res.eta == 0.2 and res.reached
    assert choose_eta({0.1: -0.2, 0.2: 0.25, 0.3: 0.5}, target=0.25).eta == 0.2


class _Stub(nn.Module):
    """An objective whose samples ignore eta (draws of N(0, I) from the generator) and whose energy is
    x1 * t, recording the times asked for."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.cfg = SimpleNamespace(eta=0.5)
        self.times = []

    def sample(self, n, generator=None):
        return SimpleNamespace(x=torch.randn(n, 2, generator=generator))

    def energy(self, x, t):
        self.times.append(t)
        return x[:, 0] * t


def test_every_candidate_uses_the_same_chain_noise():
    """tune_eta's docstring: common random numbers, so the gaps differ only through eta; with samples that
    ignore eta every gap is the same number (mutation: one generator shared by all candidates)."""
    obj = _Stub()
    data = SimpleNamespace(test=torch.randn(500, 2, generator=torch.Generator().manual_seed(3)))
    res = tune_eta(obj, data, [0.1, 0.2, 0.3], n=200, generator=torch.Generator().manual_seed(1))
    gaps = list(res.gaps.values())
    assert len(gaps) == 3 and gaps[0] == gaps[1] == gaps[2]


def test_both_energies_of_the_gap_are_taken_at_t_1():
    """gap = mean E(x+, t=1) - mean E(x_gen, t=1) (mutation: the real points' energy at t = 0)."""
    obj = _Stub()
    x_pos = torch.tensor([[1.0, 0.0], [3.0, 5.0]])  # mean E(x+, 1) = 2
    g = torch.Generator().manual_seed(4)
    gap = t1_energy_gap(obj, x_pos, 0.2, n=100, generator=g)
    x_gen = torch.randn(100, 2, generator=torch.Generator().manual_seed(4))
    assert gap == pytest.approx(2.0 - x_gen[:, 0].mean().item(), abs=1e-5)
    assert obj.times == [1, 1]
    assert obj.cfg.eta == 0.5 and not math.isnan(gap)


# --- samplers/augment.py -----------------------------------------------------------------------------

def _colour_images():
    return torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_no_flip_no_colour_no_blur_and_full_area_is_the_identity():
    """Module docstring: ``strength = 0`` turns off the colour jitter and the random grayscale, ``flip`` and
    ``blur`` switch their parts, and a crop of the full area is the whole image: D(x) = x
    (mutations: ``if flip`` always taken; the colour branch taken at strength 0)."""
    x = _colour_images()
    y = augment(x, torch.Generator().manual_seed(1), strength=0.0, flip=False, blur=False, scale=(1.0, 1.0))
    assert torch.equal(y, x)


def test_strength_zero_with_flips_only_mirrors_images():
    """With strength 0 every output is its image or its mirror image, never turned grey, and both occur
    among 64 images (p = 0.5 each)."""
    x = _colour_images()
    y = augment(x, torch.Generator().manual_seed(2), strength=0.0, flip=True, blur=False, scale=(1.0, 1.0))
    same = [torch.equal(a, b) for a, b in zip(x, y)]
    mirrored = [torch.equal(a.flip(-1), b) for a, b in zip(x, y)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 10 < sum(mirrored) < 54
