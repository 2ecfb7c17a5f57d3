"""Paper 001's data-augmentation transition D (Du et al., Improved CD, Sec. 2.3, Alg. 1-2, App. B.2).

Sec. 2.3: "a combination of color, horizontal flip, rescaling, and Gaussian blur augmentations", as in
SimCLR (Chen et al. 2020). App. B.2: "color augmentation of strength 1.0 from (Chen et al., 2020), a
random horizontal flip, and a image resize between 0.02 and 1.0" (CIFAR-10; 0.08-1.0 for CelebA-HQ).
It is applied to chain starts drawn from the replay buffer (Alg. 1) and every 20 Langevin steps
during generation (Alg. 2); "data augmentation transitions are always taken" (no accept/reject).

Composition (SimCLR's order): random resized crop (area ``scale``, aspect 3/4-4/3) -> horizontal flip
(p = 0.5) -> colour jitter of ``strength`` (p = 0.8) -> random grayscale (p = 0.2, colour images) ->
Gaussian blur (p = 0.5, std U(0.1, 2.0) px). Choices: the blur is in Sec. 2.3 but not in App. B.2;
we keep it with SimCLR's probability and switch it with ``blur``. ``strength = 0`` turns off the
colour jitter and the random grayscale; the geometric parts (and the blur) stay. Input and output are (B, C, H, W) in [-1, 1].
"""
from __future__ import annotations

import torch
from torch import Tensor

from ebmlab.data import transforms as T


def augment(x: Tensor, generator: torch.Generator | None = None, *, strength: float = 1.0,
            scale: tuple[float, float] = (0.02, 1.0), flip: bool = True, blur: bool = True) -> Tensor:
    """One augmentation transition D(x) per image (detached: it is a sampler move, not a loss term)."""
    if strength < 0:
        raise ValueError(f"augmentation strength must be non-negative, got {strength}")
    # A data transform, computed in the images' own precision even inside training's bf16 autocast
    # (train.amp): there the hue rotation's einsum ran in bf16 and its write into the fp32 batch failed
    # (found on the GPU, issue 20).
    with torch.autocast(x.device.type, enabled=False):
        x = x.detach()
        x = T.random_resized_crop(x, generator, scale=scale)
        if flip:
            x = T.random_flip(x, generator)
        if strength > 0:
            x = T.color_jitter(x, generator, strength=strength)
            x = T.random_grayscale(x, generator)
        if blur:
            x = T.gaussian_blur(x, generator)
    return x
