"""Plain-torch image transforms and paper 001's augmentation transition: shapes, ranges, seeds."""
from __future__ import annotations

import pytest
import torch

from ebmlab.data import transforms as T
from ebmlab.samplers.augment import augment

ALL = [T.random_flip, T.color_jitter, T.random_resized_crop, T.gaussian_blur, T.random_grayscale, augment]


def _images(c: int, n: int = 12, h: int = 8, w: int = 10) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(c)) * 2 - 1


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("c", [1, 3])
def test_shape_range_and_seed(fn, c):
    x = _images(c)
    y1 = fn(x, torch.Generator().manual_seed(5))
    y2 = fn(x, torch.Generator().manual_seed(5))
    assert y1.shape == x.shape and y1.dtype == x.dtype
    assert float(y1.min()) >= -1 and float(y1.max()) <= 1
    assert torch.equal(y1, y2)  # same seed -> same output
    if fn is not T.random_grayscale or c == 3:
        y3 = fn(x, torch.Generator().manual_seed(6))
        assert not torch.equal(y1, y3)  # the seed matters
    assert torch.equal(x, _images(c))  # input untouched


def test_flip_probabilities():
    x = _images(3)
    assert torch.equal(T.random_flip(x, None, p=0.0), x)
    assert torch.equal(T.random_flip(x, None, p=1.0), x.flip(-1))
    y = T.random_flip(x, torch.Generator().manual_seed(0), p=0.5)
    flipped = [(torch.equal(y[i], x[i].flip(-1))) for i in range(len(x))]
    assert 0 < sum(flipped) < len(x)  # per-image draws


def test_crop_identity_and_zoom():
    x = _images(3)
    same = T.random_resized_crop(x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.25, 1.25))
    assert torch.allclose(same, x, atol=1e-5)  # the whole 8x10 image (aspect 1.25) is resampled onto itself
    # a smooth horizontal ramp keeps its direction and loses range under a zoom-in
    ramp = torch.linspace(-1, 1, 32).expand(4, 1, 32, 32).contiguous()
    z = T.random_resized_crop(ramp, torch.Generator().manual_seed(1), scale=(0.1, 0.2))
    span = z[:, 0, 16, -1] - z[:, 0, 16, 0]
    assert (span > 0).all() and (span < 1.5).all()
    with pytest.raises(ValueError, match="scale"):
        T.random_resized_crop(x, None, scale=(0.5, 2.0))


def test_color_jitter_limits():
    x = _images(3)
    assert torch.allclose(T.color_jitter(x, torch.Generator().manual_seed(0), strength=0.0), x, atol=1e-5)
    grey = _images(1).expand(-1, 3, -1, -1).contiguous()  # equal channels: saturation and hue act as identity
    assert torch.allclose(T._saturation((grey + 1) / 2, torch.full((12,), 0.3)), (grey + 1) / 2, atol=1e-6)
    assert torch.allclose(T._hue((grey + 1) / 2, torch.full((12,), 0.25)), (grey + 1) / 2, atol=1e-5)
    u = (x + 1) / 2
    assert torch.allclose(T._hue(u, torch.zeros(12)), u, atol=1e-5)
    assert torch.allclose(T._hue(u, torch.ones(12)), u, atol=1e-4)  # a full turn of the wheel
    pale = 0.5 + 0.1 * x  # colours well inside the gamut: no clamping
    rotated = T._hue(pale, torch.full((12,), 0.1))
    assert torch.allclose(T._grey(rotated), T._grey(pale), atol=1e-5)  # a hue shift keeps the luma
    assert not torch.allclose(rotated, pale, atol=1e-3)
    changed = (T.color_jitter(x, torch.Generator().manual_seed(0), strength=1.0, p=1.0) - x).abs().flatten(1).amax(1)
    assert (changed > 1e-3).all()


def test_blur_smooths_and_keeps_constants():
    const = torch.full((3, 1, 9, 9), 0.3)
    assert torch.allclose(T.gaussian_blur(const, torch.Generator().manual_seed(0), p=1.0), const, atol=1e-6)
    x = _images(1, h=16, w=16)
    y = T.gaussian_blur(x, torch.Generator().manual_seed(0), p=1.0, sigma=(1.0, 2.0))
    assert float(y.var()) < 0.5 * float(x.var())  # white noise loses most of its variance
    assert torch.equal(T.gaussian_blur(x, None, p=0.0), x)


def test_augment_options():
    x = _images(3)
    with pytest.raises(ValueError, match="non-negative"):
        augment(x, None, strength=-1.0)
    geo = augment(x, torch.Generator().manual_seed(0), strength=0.0, blur=False, scale=(1.0, 1.0))
    # only flips remain with full-size crops of square-ish boxes: each image is itself or its mirror
    assert geo.shape == x.shape
    xr = x.requires_grad_()
    assert not augment(xr, torch.Generator().manual_seed(0)).requires_grad  # a sampler move, detached


def test_augment_inside_bf16_autocast_keeps_fp32():
    """Issue 20 (found on the GPU with train.amp): under bf16 autocast the hue rotation's einsum ran in
    bf16 and its write into the fp32 batch failed. The transition is a data transform: same result,
    same dtype with or without the autocast (CPU autocast takes the same path)."""
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plain = augment(x, torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = augment(x, torch.Generator().manual_seed(1))
    assert inside.dtype == torch.float32
    assert torch.equal(inside, plain)


def test_augment_at_the_default_strength_jitters_and_greys_at_simclrs_rates():
    """``augment()`` as paper 001 calls it (strength 1.0): on constant-colour images (the crop, flip and blur keep
    them constant) a colour is kept only when neither the jitter (p = 0.8) nor the grayscale (p = 0.2) fired,
    0.2 x 0.8 = 0.16, and an image is grey with p = 0.2; tolerances 4 binomial standard errors of 4,000 images.
    A mutation audit turned the colour stages off at the default strength and no test noticed."""
    n = 4000
    colour = torch.rand(n, 3, 1, 1, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    y = augment(colour.expand(n, 3, 8, 8).contiguous(), torch.Generator().manual_seed(1))
    mean = y.mean((2, 3), keepdim=True)
    assert (y - mean).abs().max() < 1e-5  # still constant images
    kept = ((mean - colour).abs().amax((1, 2, 3)) < 1e-4).float().mean().item()
    grey = ((mean - mean.mean(1, keepdim=True)).abs().amax((1, 2, 3)) < 1e-5).float().mean().item()
    assert abs(kept - 0.16) < 4 * (0.16 * 0.84 / n) ** 0.5, kept
    assert abs(grey - 0.2) < 4 * (0.2 * 0.8 / n) ** 0.5, grey
