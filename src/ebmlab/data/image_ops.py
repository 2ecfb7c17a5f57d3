"""The conversions of the image loaders (``data/images.py``): array layouts to (N, C, H, W), 8-bit codes and
[-1, 1] floats, centre crops, resizes and channel counts, applied to 8-bit codes without a float32 copy of a split.

uint8 arrays stay uint8 codes (``data/pixels.py``: v / 127.5 - 1 on reading); float arrays are read as [0, 1] when no
value is negative, as [-1, 1] otherwise. A resize or grey conversion of codes is computed in float32, ``POST_CHUNK``
images at a time, and rounded back to the nearest code, as an 8-bit image library resizes.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ebmlab.data.pixels import codes_of, from_codes, unit_floats
from ebmlab.errors import DataError


def image_tensor(arr: np.ndarray, where: str) -> Tensor:
    """(N, H, W, C) or (N, H, W) uint8 or float array -> (N, C, H, W): uint8 arrays (and other integers in [0, 255]) as
    their uint8 codes (``Pixels`` reads them as v / 127.5 - 1), float arrays as float32 in [-1, 1]
    (``to_unit_range``). (N, C, H, W) with C = 1 or 3 and a last axis that is not (what ``ebmlab sample`` writes) is
    read as such."""
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim == 4 and arr.shape[-1] not in (1, 3) and arr.shape[1] in (1, 3):  # channels first
        arr = arr.transpose(0, 2, 3, 1)
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise DataError(f"{where} must hold images of shape (N, H, W, C) or (N, C, H, W) with C = 1 or 3, got shape {arr.shape}")
    if arr.size == 0:  # no image, or images of no pixel (numpy's min() of nothing failed)
        raise DataError(f"{where} holds no pixels: its shape is {arr.shape}")
    if arr.dtype.kind in "iu" and arr.dtype != np.uint8:  # integer images (int64 from torch): codes if in [0, 255]
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{where} holds integers in [{lo}, {hi}]; integer images must be 8-bit codes in [0, 255]")
        arr = arr.astype(np.uint8)
    if arr.dtype == np.uint8:  # one copy, straight into (N, C, H, W) (the file's array may be read-only)
        return torch.from_numpy(np.array(arr.transpose(0, 3, 1, 2), dtype=np.uint8, order="C"))
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DataError(f"{where} contains NaN or inf values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1.0 or hi > 1.0:
            raise DataError(f"{where} holds floats in [{lo:.3g}, {hi:.3g}]; expected uint8, floats in [0, 1] or in [-1, 1]")
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        x = x * 2.0 - 1.0 if lo >= 0.0 else x
        return x.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    raise DataError(f"{where} must hold uint8 or float images, got dtype {arr.dtype}")


def to_unit_range(arr: np.ndarray, where: str) -> Tensor:
    """(N, H, W, C) or (N, H, W) uint8 or float array -> (N, C, H, W) float32 in [-1, 1] (``image_tensor``'s
    layouts). uint8: v / 127.5 - 1. Float: read as [0, 1] when no value is negative, as [-1, 1] otherwise;
    anything outside [-1, 1] is refused (we do not guess other scalings)."""
    return unit_floats(image_tensor(arr, where))


def pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) of a resize target: one side for square images (``data.image_size``), or both (an out-of-distribution
    set resized to a run's non-square images)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """(N, C, H, W) -> (N, C, size, size) (or ``size`` = (h, w)), bilinear; antialiased when shrinking."""
    target = pair(size)
    if tuple(x.shape[-2:]) == target:
        return x
    shrink = min(target) < min(x.shape[-2:])
    return F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=shrink).clamp(-1, 1)


def centre_crop(x: Tensor, crop: int) -> Tensor:
    """(N, C, H, W) -> (N, C, crop, crop) around the centre."""
    h, w = x.shape[-2:]
    if crop > min(h, w):
        raise DataError(f"data.crop = {crop} is larger than the images ({h}x{w})")
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[..., top:top + crop, left:left + crop]


def set_channels(x: Tensor, channels: int | None) -> Tensor:
    """``x`` (B, C, H, W) with ``channels`` channels: grey repeated to RGB, or RGB to luma (ITU-R 601)."""
    if channels is None or channels == x.shape[1]:
        return x
    if channels == 3 and x.shape[1] == 1:
        return x.repeat(1, 3, 1, 1)
    if channels == 1 and x.shape[1] == 3:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).reshape(1, 3, 1, 1)
        return (x * luma).sum(1, keepdim=True)
    raise DataError(f"data.channels must be 1 or 3, got {channels}")


def postprocess(x: Tensor, cfg) -> Tensor:
    """x (N, C, H, W) after the data config's crop is applied by the loader: resized to ``cfg.image_size`` and
    given ``cfg.channels`` channels (the module docstring's order). uint8 codes stay codes: unchanged when neither
    applies, else read, resized or turned grey, and rounded to the nearest code ``POST_CHUNK`` images at a time (as
    an 8-bit image library resizes), so that no float32 copy of a large split is ever held."""
    if cfg.image_size is not None and min(pair(cfg.image_size)) < 1:
        raise DataError(f"data.image_size must be positive, got {cfg.image_size}")
    if x.dtype != torch.uint8:
        return _post_float(x, cfg)
    if not _changes(x, cfg):
        return x
    return torch.cat([codes_of(_post_float(from_codes(x[i:i + POST_CHUNK]), cfg))
                      for i in range(0, max(x.shape[0], 1), POST_CHUNK)])


POST_CHUNK = 4096  # images resized at a time from codes (12 MB of float32 at 3x32x32 after the resize)


def _changes(x: Tensor, cfg) -> bool:
    """Whether ``postprocess`` changes ``x``: a resize to another size or another channel count."""
    size = cfg.image_size
    return (size is not None and tuple(x.shape[-2:]) != pair(size)) or (
        cfg.channels is not None and cfg.channels != x.shape[1])


def _post_float(x: Tensor, cfg) -> Tensor:
    x = resize(x, cfg.image_size) if cfg.image_size is not None else x
    return set_channels(x, cfg.channels)
