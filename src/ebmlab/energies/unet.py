"""Paper 002's headline energy: the encoder half of DDPM's time-conditioned UNet (``model.name: unet``).

Paper 002 Sec. 5 "Implementation details": "the encoder part of the time-conditioned Unet architecture
used in DDPM (Ho et al. 2020) ... all down-sampling convolution layers were replaced with sub-pixel
pooling operations ... Sigmoid activations ... avoid using attention layers altogether ... Layer
Normalization". Table 7 (App. A.1): channels 128, multipliers 1,2,2,1 (32x32, 9M parameters, FID
17.03 in Table 1) or 1,2,3,4 (64x64, 45M), 2 blocks per resolution, no attention.

    t -> sinusoidal(channels[0]) -> Dense -> act -> Dense -> temb        (B, time_embed_dim), DDPM
    [+ class embedding of y, added to temb]                              (class-conditional variant)
    x (B, C, H, W) -> 3x3 conv to channels[0]
      -> for each resolution i: ``depth`` ResBlocks at channels[i] (``model.channels`` holds
         128 x multiplier), then sub-pixel pooling (not after the last resolution)   (DDPM down path)
      -> middle: 2 ResBlocks at channels[-1] (DDPM's middle block without its attention)
      -> norm -> act -> global mean pooling -> Dense -> 1                            -> (B,) energy

ResBlock (DDPM order): h = conv(act(norm(x))); h += Dense(act(temb)); h = conv(act(norm(h)));
out = skip(x) + h, skip a 1x1 conv when the channel count changes (no dropout: Table 7 gives none).

Choices where the papers leave room (tests/unit/test_unet.py):

- Readout: DDPM's decoder is dropped; the energy is a global mean and a Dense layer on the last feature
  map (as ``ResNetEnergy``), so that the parameter count is the encoder's.
- "Layer Normalization": ``norm: layer`` = GroupNorm(1, C) (per-channel affine, as ``ResNetEnergy``);
  ``nn.LayerNorm([C, H, W])`` would add 2 C H W parameters per norm (1.7 M at 32x32) and tie the net to
  one image size.
- Sub-pixel pooling = ``pixel_unshuffle(2)`` then a 1x1 conv 4C -> C (``convnet.SubPixelDown``).
- Time: the embedding width is ``model.time_embed_dim`` (DDPM: 4 x channels[0] = 512); t is the
  integer step of paper 002 (or any float), ``t=None`` uses ``default_t``.
- "Heads: 2" of Table 7 has no effect without attention layers (the paper's "Attention at
  resolutions: -"), so there is no heads option.

Parameter counts (``model.channels`` [128, 256, 256, 128], depth 2, time_embed_dim 512): 8.3 M (paper: 9M);
[128, 256, 384, 512] (multipliers 1,2,3,4 of the CelebA-64 config): 29.2 M (paper: 45M). See docs/paper002.md "Paper-scale configs".
"""
from __future__ import annotations

from torch import Tensor, nn

from ebmlab.energies.convnet import NORMS, ResBlock, SubPixelDown, apply_spectral_norm, default_channels, make_norm
from ebmlab.energies.embedding import condition_embedding
from ebmlab.energies.mlp import make_activation


class DDPMResBlock(ResBlock):
    """DDPM's residual block: ``ResBlock``'s layers, with the time embedding added after the first
    convolution and *before* the second norm."""

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:  # (B, Ci, H, W) -> (B, Co, H, W)
        """The block on ``x`` (B, C, H, W), with the embedding ``emb`` (B, E) added when it is conditioned."""
        h = self.add_embedding(self.conv1(self.act1(self.norm1(x))), emb)
        h = self.conv2(self.act2(self.norm2(h)))
        return self.skip(x) + h


class UNetEncoderEnergy(nn.Module):
    """(B, C, H, W) -> (B,) energy: DDPM's UNet encoder; ``time_cond`` adds forward(x, t=...),
    ``num_classes`` forward(x, y=...) (label -1 or None: the null label)."""

    def __init__(self, in_channels: int, channels: list[int], depth: int = 2, norm: str = "layer",
                 activation: str = "sigmoid", time_cond: bool = True, num_classes: int = 0,
                 embed_dim: int = 512, default_t: float = 1.0, pool: str = "subpixel", mid_blocks: int = 2,
                 last_activation: str | None = None, spectral_norm: bool = False):
        super().__init__()
        if not channels or min(channels) <= 0 or depth < 1 or mid_blocks < 0:
            raise ValueError(f"UNetEncoderEnergy needs positive channels, depth >= 1 and mid_blocks >= 0; "
                             f"got {channels}, {depth}, {mid_blocks}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
        if pool not in ("avg", "subpixel"):
            raise ValueError(f"unknown pool {pool!r}; expected 'avg' or 'subpixel'")
        self.time_cond, self.num_classes, self.default_t = time_cond, num_classes, default_t
        self.sin_dim = channels[0] + channels[0] % 2  # DDPM: the sinusoid has the base channel count
        cond_dim = embed_dim if (time_cond or num_classes) else 0
        self.t_mlp = nn.Sequential(nn.Linear(self.sin_dim, embed_dim), make_activation(activation),
                                   nn.Linear(embed_dim, embed_dim)) if time_cond else None
        self.y_emb = nn.Embedding(num_classes + 1, embed_dim) if num_classes else None  # last row: no label
        self.inp = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.levels = nn.ModuleList()
        c_prev = channels[0]
        for c in channels:
            self.levels.append(nn.ModuleList(DDPMResBlock(c_prev if i == 0 else c, c, norm, activation, cond_dim)
                                             for i in range(depth)))
            c_prev = c
        self.pool = pool
        self.down = nn.ModuleList(SubPixelDown(c) for c in channels[:-1]) if pool == "subpixel" else None
        self.mid = nn.ModuleList(DDPMResBlock(c_prev, c_prev, norm, activation, cond_dim) for _ in range(mid_blocks))
        self.norm_out = make_norm(norm, c_prev)
        self.act = make_activation(last_activation or activation)
        self.out = nn.Linear(c_prev, 1)
        if spectral_norm:
            apply_spectral_norm(self)

    def embed(self, x: Tensor, t=None, y: Tensor | None = None) -> Tensor | None:
        """(B, embed_dim) condition embedding, or None for an unconditional net."""
        return condition_embedding(self, x, t, y, self.sin_dim)

    def features(self, x: Tensor, t=None, y: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, channels[-1]) pooled features."""
        if x.dim() != 4:
            raise ValueError(f"UNetEncoderEnergy expects images (B, C, H, W), got shape {tuple(x.shape)}")
        emb = self.embed(x, t, y)
        h = self.inp(x)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, emb)
            if i < len(self.levels) - 1 and min(h.shape[-2:]) > 1:
                h = self.down[i](h) if self.down is not None else nn.functional.avg_pool2d(h, 2, ceil_mode=True)
        for block in self.mid:
            h = block(h, emb)
        return self.act(self.norm_out(h)).mean(dim=(2, 3))  # (B, C_last)

    def forward(self, x: Tensor, t=None, y: Tensor | None = None) -> Tensor:
        """(B,) energies of images ``x`` (B, C, H, W) at time ``t`` (and label ``y``) when built for them."""
        return self.out(self.features(x, t, y)).squeeze(1)


def build_unet(cfg, shape, time_cond: bool = False, num_classes: int | None = 0, default_t: float = 1.0,
               **_) -> UNetEncoderEnergy:
    """``model.name: unet`` (registered in ``energies/build.MODELS``): channels = ``model.channels``
    (128 x multipliers), ``model.depth`` blocks per resolution, ``model.norm`` (default layer),
    ``model.activation``, ``model.pool``, ``model.time_embed_dim`` (the DDPM embedding width)."""
    if len(shape) != 3:
        raise ValueError(f"model 'unet' needs image data (C, H, W), got shape {shape}")
    return UNetEncoderEnergy(shape[0], default_channels(cfg, shape), cfg.depth, cfg.norm or "layer", cfg.activation,
                             time_cond=time_cond, num_classes=int(num_classes or 0), embed_dim=cfg.time_embed_dim,
                             default_t=default_t, pool=getattr(cfg, "pool", "subpixel"),
                             last_activation=getattr(cfg, "last_activation", None),
                             spectral_norm=bool(cfg.spectral_norm))
