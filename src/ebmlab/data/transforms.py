"""Batched image transforms in plain torch (no torchvision), each with its own random draw per image.

Images are (B, C, H, W) in [-1, 1] with C = 1 or 3; every function keeps the shape and the [-1, 1]
range and takes ``generator`` (same seed -> same output). They follow SimCLR (Chen et al. 2020,
App. A "Data augmentation details"), which paper 001 Sec. 2.3 / App. B.2 uses as its data-augmentation
transition (composition in ``ebmlab.samplers.augment``):

- ``random_flip``: horizontal flip with probability p;
- ``color_jitter``: with probability p, brightness, contrast, saturation and hue changes in a random
  order per image, strengths 0.8 s, 0.8 s, 0.8 s, 0.2 s for a strength s (SimCLR's
  ``get_color_distortion(s)``); each factor is drawn uniformly in [max(0, 1 - a), 1 + a] (hue: a shift
  in [-a, a] turns of the colour wheel). Grayscale images (C = 1) get brightness and contrast only.
  Brightness multiplies the [0, 1] intensities, contrast blends with the image's mean grey level,
  saturation blends with the grey image, hue rotates the chroma plane in YIQ space (a plain-torch
  stand-in for torchvision's HSV hue shift: the same colour-wheel rotation up to the colour model);
- ``random_grayscale``: SimCLR's grey conversion with probability 0.2 (colour images only);
- ``random_resized_crop``: an area fraction in ``scale`` and an aspect ratio (log-uniform in
  ``ratio``) per image; the crop is resampled back to the full size with bilinear ``grid_sample``.
  When a drawn box does not fit (10 tries, as torchvision), the whole image is kept;
- ``gaussian_blur``: with probability p, a Gaussian kernel with std uniform in ``sigma`` = [0.1, 2.0]
  *pixels of the image at hand* (SimCLR's range at 224 px; we do not rescale it with the image size,
  which would make the blur vanish at 8-32 px), truncated at 3 std, reflect padding.

All colour operations work on [0, 1] intensities internally and clamp there, so the output stays in
[-1, 1].
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)


def _uniform(n: int, lo: float, hi: float, generator, device) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)


def _bernoulli(n: int, p: float, generator, device) -> Tensor:
    return torch.rand(n, generator=generator, device=device) < p  # (B,) bool


def _check(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"image transforms expect (B, C, H, W) with C = 1 or 3, got shape {tuple(x.shape)}")


def random_flip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Horizontal flip of each image with probability p."""
    _check(x)
    flip = _bernoulli(x.shape[0], p, generator, x.device)[:, None, None, None]  # (B, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


# ----- colour jitter ---------------------------------------------------------------------------------
def _grey(u: Tensor) -> Tensor:
    """(B, C, H, W) in [0, 1] -> (B, 1, H, W) luma."""
    if u.shape[1] == 1:
        return u
    return (u * u.new_tensor(LUMA).reshape(1, 3, 1, 1)).sum(1, keepdim=True)


def _brightness(u: Tensor, f: Tensor) -> Tensor:
    return (u * f[:, None, None, None]).clamp(0, 1)


def _contrast(u: Tensor, f: Tensor) -> Tensor:
    mean = _grey(u).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1) mean grey level
    return (mean + f[:, None, None, None] * (u - mean)).clamp(0, 1)


def _saturation(u: Tensor, f: Tensor) -> Tensor:
    g = _grey(u)
    return (g + f[:, None, None, None] * (u - g)).clamp(0, 1)


def _hue(u: Tensor, shift: Tensor) -> Tensor:
    """Rotate the chroma (I, Q) plane of YIQ by 2 pi * shift turns."""
    rgb2yiq = u.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq = torch.einsum("ij,bjhw->bihw", rgb2yiq, u)  # (B, 3, H, W)
    a = 2 * math.pi * shift
    cos, sin = torch.cos(a)[:, None, None], torch.sin(a)[:, None, None]  # (B, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], dim=1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(rgb2yiq), yiq).clamp(0, 1)


def color_jitter(x: Tensor, generator: torch.Generator | None = None, strength: float = 1.0,
                 p: float = 0.8) -> Tensor:
    """SimCLR colour distortion of strength s, applied to each image with probability p."""
    _check(x)
    b, dev = x.shape[0], x.device
    a, h = 0.8 * strength, 0.2 * strength
    factors = {"brightness": _uniform(b, max(0.0, 1 - a), 1 + a, generator, dev),
               "contrast": _uniform(b, max(0.0, 1 - a), 1 + a, generator, dev),
               "saturation": _uniform(b, max(0.0, 1 - a), 1 + a, generator, dev),
               "hue": _uniform(b, -min(h, 0.5), min(h, 0.5), generator, dev)}
    ops = {"brightness": _brightness, "contrast": _contrast, "saturation": _saturation, "hue": _hue}
    names = list(ops) if x.shape[1] == 3 else ["brightness", "contrast"]
    orders = torch.argsort(torch.rand(b, len(names), generator=generator, device=dev), dim=1)  # (B, K)
    apply = _bernoulli(b, p, generator, dev)
    u = (x + 1) / 2  # [0, 1] intensities
    for slot in range(len(names)):
        for k, name in enumerate(names):  # every image applies the op it drew for this slot
            rows = apply & (orders[:, slot] == k)
            if rows.any():
                u = u.clone()
                u[rows] = ops[name](u[rows], factors[name][rows])
    return u * 2 - 1


def random_grayscale(x: Tensor, generator: torch.Generator | None = None, p: float = 0.2) -> Tensor:
    """Replace each colour image by its grey version (3 equal channels) with probability p (SimCLR)."""
    _check(x)
    pick = _bernoulli(x.shape[0], p, generator, x.device)[:, None, None, None]  # drawn even for C = 1
    if x.shape[1] == 1:
        return x
    return torch.where(pick, _grey(x).expand_as(x), x)


# ----- random resized crop ---------------------------------------------------------------------------
def _crop_boxes(b: int, h: int, w: int, scale, ratio, generator, device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per image crop size (ch, cw) and top-left (y0, x0) in pixels; whole image when nothing fits."""
    ch, cw = torch.full((b,), float(h), device=device), torch.full((b,), float(w), device=device)
    found = torch.zeros(b, dtype=torch.bool, device=device)
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):  # torchvision's 10 attempts
        area = _uniform(b, scale[0], scale[1], generator, device) * h * w
        r = torch.exp(_uniform(b, *log_r, generator, device))
        th, tw = torch.sqrt(area / r), torch.sqrt(area * r)
        ok = ~found & (th <= h) & (tw <= w) & (th >= 1) & (tw >= 1)
        ch, cw, found = torch.where(ok, th, ch), torch.where(ok, tw, cw), found | ok
    y0 = torch.rand(b, generator=generator, device=device) * (h - ch)
    x0 = torch.rand(b, generator=generator, device=device) * (w - cw)
    return ch, cw, y0, x0


def random_resized_crop(x: Tensor, generator: torch.Generator | None = None, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> Tensor:
    """Crop a random box (area fraction in ``scale``, aspect ratio in ``ratio``) and resize it to (H, W)."""
    _check(x)
    if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"random_resized_crop needs 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], "
                         f"got scale={scale}, ratio={ratio}")
    b, _, h, w = x.shape
    ch, cw, y0, x0 = _crop_boxes(b, h, w, scale, ratio, generator, x.device)
    # affine grid in normalised coordinates (align_corners=False): centre and half-size of the box
    cy, cx = (2 * y0 + ch) / h - 1, (2 * x0 + cw) / w - 1
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = cw / w, cx
    theta[:, 1, 1], theta[:, 1, 2] = ch / h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.clamp(-1, 1)


# ----- Gaussian blur ---------------------------------------------------------------------------------
def gaussian_blur(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5,
                  sigma=(0.1, 2.0)) -> Tensor:
    """Blur each image with probability p by a Gaussian with std ~ U(sigma) pixels (reflect padding)."""
    _check(x)
    b, c, h, w = x.shape
    if min(h, w) < 2:
        return x
    s = _uniform(b, *sigma, generator, x.device)  # (B,) std in pixels
    apply = _bernoulli(b, p, generator, x.device)
    radius = max(1, min(int(math.ceil(3 * float(s.max()))), min(h, w) - 1))  # reflect pad needs < side
    offs = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # (K,)
    k = torch.exp(-0.5 * (offs[None] / s[:, None].clamp_min(1e-3)) ** 2)
    k = k / k.sum(1, keepdim=True)  # (B, K) one normalised 1-D kernel per image
    y = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    # separable blur with a per-image kernel: fold batch into channels and use groups
    kh = k.repeat_interleave(c, 0)[:, None, :, None]  # (B*C, 1, K, 1)
    kw = k.repeat_interleave(c, 0)[:, None, None, :]  # (B*C, 1, 1, K)
    y = y.reshape(1, b * c, *y.shape[-2:])
    y = F.conv2d(F.conv2d(y, kh, groups=b * c), kw, groups=b * c).reshape(b, c, h, w)
    return torch.where(apply[:, None, None, None], y, x).clamp(-1, 1)
