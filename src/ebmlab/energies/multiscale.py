"""Paper 001's compositional multi-scale energy (Du et al., Improved CD, Sec. 2.4, Fig. 3, App. B.1).

E(x) = E_full(x) + E_half(down2(x)) + E_quarter(down4(x))

"our final output energy function is the sum of energy functions applied to the full resolution
image, the half resolution image, and the quarter resolution image" (App. B.1). Down-sampling is 2x2
(4x4) average pooling, which is differentiable, so Langevin sampling runs on the sum unchanged
(Sec. 2.4). Each scale is a ``ResNetEnergy`` (energies/convnet.py) with its own weights. App. B.1:
"The half-resolution models share the architecture listed in Table 5, but with the first down-sampled
residual block removed. Similarly, the quarter resolution models ... with the first two ... removed":
the half-resolution net uses ``channels[1:]`` and the quarter-resolution net ``channels[2:]`` (each at
least one resolution level: the last entry is reused when the list is too short).

The layout options of ``ResNetEnergy`` (``model.blocks``, ``down_last``, ``attention_at``,
``last_activation``) follow the same rule: ``blocks[i:]`` at scale i, and the attention stays at the
same place in the image, ``attention_at`` minus the levels dropped (i, or fewer where a channel list shorter
than i + 1 keeps its last level), clamped to the net's levels (Table 5: after the second down-sampling of the full
net, after the first of the half net, right after the input convolution of the quarter net; all three
at 8x8 for CIFAR).

Choice: a scale is dropped when the image would be smaller than 2x2 there (8x8 digits keep all three:
8, 4 and 2 pixels). Conditioning (``t=...``, ``y=...``) is passed to every scale.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ebmlab.energies.convnet import ResNetEnergy, architecture_options, default_channels


class MultiScaleEnergy(nn.Module):
    """Sum of ResNet energies at full, half and quarter resolution; (B, C, H, W) -> (B,)."""

    def __init__(self, nets: list[nn.Module], factors: list[int]):
        super().__init__()
        if len(nets) != len(factors) or not nets:
            raise ValueError("MultiScaleEnergy needs one down-sampling factor per scale network")
        self.nets = nn.ModuleList(nets)
        self.factors = list(factors)
        # forward passes ``t`` on: time-conditioned when every scale is (what paper 002's build checks)
        self.time_cond = all(getattr(net, "time_cond", False) for net in nets)

    def forward(self, x: Tensor, **cond) -> Tensor:
        """(B,) energy: the sum of the per-resolution energies of ``x`` (B, C, H, W)."""
        total = 0
        for net, f in zip(self.nets, self.factors):
            xs = F.avg_pool2d(x, f) if f > 1 else x  # (B, C, H/f, W/f)
            total = total + net(xs, **cond)  # (B,)
        return total

    def scale_energies(self, x: Tensor, **cond) -> list[Tensor]:
        """[(B,) energy at each scale], for diagnostics."""
        return [net(F.avg_pool2d(x, f) if f > 1 else x, **cond) for net, f in zip(self.nets, self.factors)]


def build_multiscale(cfg, shape, time_cond: bool = False, num_classes: int | None = 0, default_t: float = 1.0,
                     **_) -> MultiScaleEnergy:
    """``model.name: multiscale`` (registered in ``energies/build.MODELS``)."""
    if len(shape) != 3:
        raise ValueError(f"model 'multiscale' needs image data (C, H, W), got shape {shape}")
    channels = default_channels(cfg, shape)
    opts = architecture_options(cfg)
    nets, factors = [], []
    for i, f in enumerate((1, 2, 4)):
        if min(shape[1:]) // f < 2:
            break
        ch = channels[i:] or channels[-1:]
        scale_opts = dict(opts)
        if opts["blocks"] is not None:
            scale_opts["blocks"] = opts["blocks"][i:] or opts["blocks"][-1:]
        if opts["attention_at"] is not None:  # the same place in the image: i levels fewer before it
            scale_opts["attention_at"] = min(len(ch), max(0, opts["attention_at"] - (len(channels) - len(ch))))
        nets.append(ResNetEnergy(shape[0], ch, cfg.depth, cfg.norm or "group", cfg.activation, cfg.attention,
                                 cfg.spectral_norm, time_cond=time_cond, num_classes=int(num_classes or 0),
                                 embed_dim=cfg.time_embed_dim, default_t=default_t, **scale_opts))
        factors.append(f)
    return MultiScaleEnergy(nets, factors)
