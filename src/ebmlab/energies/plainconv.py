"""Paper 004's image energy: the plain ConvNet of Nijkamp et al. (2019) (``model.name: plainconv``).

Paper 004 Sec. 3 "Natural datasets": "an architecture similar to the one detailed by Nijkamp et al.
(2019), with their n_f parameter set to 128; this translates to 1024 output channels in the final
convolutional layer. We found that incorporating attention layers significantly enhances the learning
of convergent models". Nijkamp et al.'s short-run EBM ConvNet, with n_f = ``channels[0]``:

    x (B, C, 32, 32) -> 3x3 conv, stride 1 -> n_f        act
                     -> 4x4 conv, stride 2 -> 2 n_f      act     (16x16)
                     -> 4x4 conv, stride 2 -> 4 n_f      act     (8x8)
                     -> 4x4 conv, stride 2 -> 8 n_f      act     (4x4; 1024 channels for n_f = 128)
                     -> 4x4 conv, stride 1, no padding -> 1      (1x1)  -> (B,) energy

``model.channels`` lists the four widths ([128, 256, 512, 1024]); ``model.activation`` (leaky_relu:
LeakyReLU(0.2) as Nijkamp et al.). Choices (the paper gives neither number nor place of its attention
layers): ``attention: true`` adds one single-head self-attention (``convnet.SelfAttention``, no norm)
before conv ``attention_at`` (default 2: after the first stride-2 conv, at 16x16); the last conv's kernel
is min(4, side) so that smaller images (8x8 digits) still reach 1x1, and any remaining positions are
averaged. No normalisation layers (energies of one image must not depend on the batch).
"""
from __future__ import annotations

from torch import Tensor, nn

from ebmlab.energies.convnet import SelfAttention, apply_spectral_norm
from ebmlab.energies.mlp import make_activation


class PlainConvEnergy(nn.Module):
    """(B, C, H, W) -> (B,) energy through four convolutions and a valid 4x4 convolution to one channel."""

    def __init__(self, in_channels: int, channels: list[int], image_size: int = 32, activation: str = "leaky_relu",
                 attention: bool = False, attention_at: int = 2, spectral_norm: bool = False):
        super().__init__()
        if len(channels) != 4 or min(channels) <= 0:
            raise ValueError(f"PlainConvEnergy needs four positive widths (n_f, 2 n_f, 4 n_f, 8 n_f), got {channels}")
        if not 0 <= attention_at <= 4:
            raise ValueError(f"attention_at must lie in [0, 4] (before which convolution), got {attention_at}")
        c_in = [in_channels, *channels[:3]]
        self.convs = nn.ModuleList([nn.Conv2d(c_in[0], channels[0], 3, 1, 1)] +
                                   [nn.Conv2d(c_in[i], channels[i], 4, 2, 1) for i in (1, 2, 3)])
        self.acts = nn.ModuleList(make_activation(activation) for _ in range(4))
        side = image_size
        for _ in range(3):
            side = (side + 2 - 4) // 2 + 1  # 4x4, stride 2, padding 1: side / 2
        self.final = nn.Conv2d(channels[3], 1, max(1, min(4, side)), 1, 0)
        self.attention_at = attention_at
        c_attn = channels[attention_at - 1] if attention_at > 0 else in_channels
        self.attn = SelfAttention(c_attn, "none") if attention else None
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B,) energies of images ``x`` (B, C, H, W)."""
        if x.dim() != 4:
            raise ValueError(f"PlainConvEnergy expects images (B, C, H, W), got shape {tuple(x.shape)}")
        h = x
        for i, (conv, act) in enumerate(zip(self.convs, self.acts)):
            if self.attn is not None and self.attention_at == i:
                h = self.attn(h)
            h = act(conv(h))
        if self.attn is not None and self.attention_at == 4:
            h = self.attn(h)
        return self.final(h).mean(dim=(1, 2, 3))  # (B,)


def build_plainconv(cfg, shape, **_) -> PlainConvEnergy:
    """``model.name: plainconv`` (registered in ``energies/build.MODELS``)."""
    if len(shape) != 3:
        raise ValueError(f"model 'plainconv' needs image data (C, H, W), got shape {shape}")
    channels = [int(c) for c in cfg.channels] if cfg.channels else [cfg.width * m for m in (1, 2, 4, 8)]
    at = getattr(cfg, "attention_at", None)
    return PlainConvEnergy(shape[0], channels, min(shape[1:]), cfg.activation, cfg.attention,
                           2 if at is None else int(at), cfg.spectral_norm)
