"""Convolutional ResNet energies for images: unconditional, time/noise-level conditioned, class conditioned.

Architecture (paper 001 App. B.1 Table 5; paper 003 App. A.1 Tables 5-6, after Gao et al. 2021):

    x (B, C, H, W) -> 3x3 conv to channels[0]
      -> for each resolution i: ``depth`` ResBlocks at channels[i], then a 2x2 average pooling
         (not after the last resolution: paper 003 "applied to all downsample blocks except the last")
      -> [self-attention at the lowest resolution] (paper 001 Table 5, ``attention``)
      -> activation -> global mean pooling -> Dense -> 1      (paper 001 Table 5)   -> (B,) energy

ResBlock (paper 003 Table 5a, with the norm of paper 001 B.1 "group normalization inside each residual
block"):  h = norm(conv(act(norm(x)))); h += Dense(act(emb)) (conditioned variants only);
h = conv(act(h)); out = skip(x) + h, where skip is a 1x1 conv when the channel count changes. The
embedding is added after the second norm: added before it, a per-channel shift would be removed by
GroupNorm (exactly so when a group is one channel).

Conditioning (paper 003 Table 5c and A.1): a scalar condition t (time index, noise level or logSNR,
any float) goes through the sinusoidal embedding (``energies/embedding.py``, shared with the vector
models) then Dense, act, Dense to ``embed_dim``; a class label goes through an embedding table of the
same width and is *added* to the time embedding (paper 003: "the class embedding is then added to the
time embedding"); the sum is projected and added inside every ResBlock.

Choices where the papers leave room (tested in tests/unit/test_convnet.py):

- Norms: ``group`` = GroupNorm with the largest group count <= min(32, C / 4) dividing the channels
  C (32 groups from 128 channels on, at least 4 channels per group below); ``layer`` =
  GroupNorm(1, C), i.e. LayerNorm over (C, H, W) of each image; ``none``. Never BatchNorm: the
  energy of one image must not depend on the other chains of the batch.
- Readout: global *mean* pooling and a Dense layer (paper 001) by default, so that energies do not scale
  with the image size; ``readout="sum"`` is paper 003 A.1's "spatial and channel dimensions are summed to
  obtain the energy output" (f = that sum, E = -f; no Dense), which the paper-scale paper 003 configs use.
  With ``spectral_norm`` the mean + Dense readout does not contain the sum: the Dense's norm is capped at 1.
- Pooling stops once the feature map is 1x1 (8x8 digits with many resolutions); odd sides use
  ``ceil_mode``.
- Self-attention is one head written out with softmax and matmuls (no fused kernel), so that
  double backward works for objectives that differentiate through a Langevin step (paper 001).
- Time conditioning: ``forward(x, t=None)``; t is (B,) or a scalar; ``t=None`` uses ``default_t``
  (1 by default, as ``TimeMLPEnergy``: paper 002's last sampling step), so the module also serves the
  plain Energy protocol.
- Class conditioning: ``forward(x, y=None)``; the table has ``num_classes + 1`` rows, the last one
  being the "no label" token used for classifier-free guidance (paper 003 Eq. 11-12): ``y=None`` or a
  label of -1 means unconditional.
- ``pool``: ``avg`` (2x2 average pooling) or ``subpixel`` (paper 002 Sec. 5: "down-sampling
  convolution layers were replaced with sub-pixel pooling"): space-to-depth ``pixel_unshuffle(2)``,
  C -> 4C at half the side, then a 1x1 conv back to C (odd sides are zero-padded by one first).
- Layout options (defaults keep the layout above; tests/unit/test_convnet.py): ``blocks`` gives the
  ResBlock count of each resolution (paper 001 Table 6: 1, 1, 1, 2, 2); ``down_last`` down-samples
  after the last resolution too (Tables 5-6 end with "ResBlock Down": CIFAR 32 -> 2x2, not 4x4);
  ``attention_at = i`` puts the self-attention before resolution level i, i.e. right after the
  down-sampling that ends level i - 1 (Table 5: ``2``, after the second down-sampling, at 64
  channels); ``last_activation`` is the activation before the readout (paper 003 A.1: "ReLU
  activation is applied to the final feature map", the blocks use leaky ReLU).
- ``spectral_norm`` wraps every conv and dense layer with ``torch.nn.utils.parametrizations.spectral_norm``
  (paper 003 A.1; paper 001 removes it, hence off by default).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebmlab.energies.embedding import condition_embedding
from ebmlab.energies.mlp import make_activation

NORMS = ("group", "layer", "none")


def make_norm(kind: str | None, channels: int) -> nn.Module:
    """A normalisation layer for ``channels`` channels: ``group`` (GroupNorm), ``layer`` or none (identity)."""
    kind = kind or "none"
    if kind == "group":
        # at most 32 groups and at least 4 channels per group (8 -> 2, 64 -> 16, 128 -> 32 groups)
        groups = max(g for g in range(1, max(1, min(32, channels // 4)) + 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # LayerNorm over (C, H, W) of each image
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


class ResBlock(nn.Module):
    """Pre-activation residual block with an optional additive condition embedding (paper 003 Table 5a)."""

    def __init__(self, c_in: int, c_out: int, norm: str | None, activation: str, embed_dim: int = 0):
        super().__init__()
        self.norm1, self.norm2 = make_norm(norm, c_in), make_norm(norm, c_out)
        self.act1, self.act2 = make_activation(activation), make_activation(activation)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.emb = nn.Sequential(make_activation(activation), nn.Linear(embed_dim, c_out)) if embed_dim else None
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:  # (B, Ci, H, W) -> (B, Co, H, W)
        """The residual block on ``x`` (B, C, H, W), with the embedding ``emb`` (B, E) added when given."""
        h = self.norm2(self.conv1(self.act1(self.norm1(x))))
        h = self.add_embedding(h, emb)  # *after* the norm, which would otherwise remove a per-channel shift
        h = self.conv2(self.act2(h))
        return self.skip(x) + h

    def add_embedding(self, h: Tensor, emb: Tensor | None) -> Tensor:
        """``h`` (B, Co, H, W) plus the projected embedding ``emb`` (B, E) at every position (unconditioned: ``h``)."""
        if self.emb is None:
            return h
        if emb is None:
            raise ValueError(f"this {type(self).__name__} is conditioned and needs an embedding")
        return h + self.emb(emb)[:, :, None, None]  # (B, Co, 1, 1) broadcast over positions


class SelfAttention(nn.Module):
    """Single-head non-local self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int, norm: str | None):
        super().__init__()
        self.norm = make_norm(norm, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, C, H, W) plus single-head self-attention over its H*W positions."""
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)  # each (B, C, N)
        att = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (B, N, N)
        y = (v @ att.transpose(1, 2)).reshape(b, c, h, w)  # (B, C, N) -> (B, C, H, W)
        return x + self.out(y)


class SubPixelDown(nn.Module):
    """(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)): pixel_unshuffle(2) then a 1x1 conv 4C -> C."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv2d(4 * channels, channels, 1)

    def forward(self, h: Tensor) -> Tensor:
        """``h`` (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)) (see the class docstring)."""
        h = F.pad(h, (0, h.shape[-1] % 2, 0, h.shape[-2] % 2))  # even sides for the 2x2 unshuffle
        return self.proj(F.pixel_unshuffle(h, 2))


class ResNetEnergy(nn.Module):
    """(B, C, H, W) -> (B,) energy; ``time_cond`` adds forward(x, t=...), ``num_classes`` forward(x, y=...)."""

    def __init__(self, in_channels: int, channels: list[int], depth: int = 1, norm: str | None = "group",
                 activation: str = "swish", attention: bool = False, spectral_norm: bool = False,
                 time_cond: bool = False, num_classes: int = 0, embed_dim: int = 64, default_t: float = 1.0,
                 pool: str = "avg", blocks: list[int] | None = None, down_last: bool = False,
                 attention_at: int | None = None, last_activation: str | None = None, readout: str | None = None):
        super().__init__()
        readout = readout or "mean"
        if readout not in ("mean", "sum"):
            raise ValueError(f"unknown readout {readout!r}; expected 'mean' or 'sum'")
        if blocks is not None and (len(blocks) != len(channels) or min(blocks) < 1):
            raise ValueError(f"ResNetEnergy blocks needs one positive count per resolution ({len(channels)}), "
                             f"got {blocks}")
        if attention_at is not None and not 0 <= attention_at <= len(channels):
            raise ValueError(f"attention_at must lie in [0, {len(channels)}] (a resolution level), got {attention_at}")
        if pool not in ("avg", "subpixel"):
            raise ValueError(f"unknown pool {pool!r}; expected 'avg' or 'subpixel'")
        if not channels or min(channels) <= 0 or depth < 1:
            raise ValueError(f"ResNetEnergy needs positive channels and depth >= 1; got {channels}, {depth}")
        if (norm or "none") not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
        self.time_cond, self.num_classes, self.embed_dim = time_cond, num_classes, embed_dim
        self.default_t = default_t
        cond_dim = embed_dim if (time_cond or num_classes) else 0
        self.t_mlp = nn.Sequential(nn.Linear(embed_dim, embed_dim), make_activation(activation),
                                   nn.Linear(embed_dim, embed_dim)) if time_cond else None
        self.y_emb = nn.Embedding(num_classes + 1, embed_dim) if num_classes else None  # last row: no label
        self.inp = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.levels = nn.ModuleList()
        c_prev = channels[0]
        counts = [int(b) for b in blocks] if blocks is not None else [depth] * len(channels)
        for c, n in zip(channels, counts):
            self.levels.append(nn.ModuleList(ResBlock(c_prev if i == 0 else c, c, norm, activation, cond_dim)
                                             for i in range(n)))
            c_prev = c
        self.down_last = bool(down_last)
        n_down = len(channels) if self.down_last else len(channels) - 1
        self.down = nn.ModuleList(SubPixelDown(c) for c in channels[:n_down]) if pool == "subpixel" else None
        # attention_at = i: before level i (after the down-sampling that follows level i - 1); None: at the end
        self.attention_at = None if attention_at is None or attention_at == len(channels) else int(attention_at)
        c_attn = c_prev if self.attention_at is None else channels[max(0, self.attention_at - 1)]
        self.attn = SelfAttention(c_attn, norm) if attention else None
        self.act = make_activation(last_activation or activation)
        # readout "sum" (paper 003 A.1) has no Dense: spectral norm would cap a Dense readout's norm at 1,
        # 1 / (H W sqrt(C)) of the scale the sum reaches, so the mean + Dense readout cannot contain it there
        self.out = nn.Linear(c_prev, 1) if readout == "mean" else None
        if spectral_norm:
            apply_spectral_norm(self)

    def embed(self, x: Tensor, t=None, y: Tensor | None = None) -> Tensor | None:
        """(B, embed_dim) condition embedding, or None for the unconditional model."""
        return condition_embedding(self, x, t, y, self.embed_dim)

    def features(self, x: Tensor, t=None, y: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, channels[-1]) pooled features."""
        return self.final_map(x, t, y).mean(dim=(2, 3))  # (B, C_last) global mean pooling

    def final_map(self, x: Tensor, t=None, y: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, channels[-1], h, w): the last feature map after the last activation."""
        if x.dim() != 4:
            raise ValueError(f"ResNetEnergy expects images (B, C, H, W), got shape {tuple(x.shape)}")
        emb = self.embed(x, t, y)
        h = self.inp(x)
        for i, blocks in enumerate(self.levels):
            if self.attn is not None and self.attention_at == i:
                h = self.attn(h)
            for block in blocks:
                h = block(h, emb)
            if (i < len(self.levels) - 1 or self.down_last) and min(h.shape[-2:]) > 1:
                # 2x2 down-sampling between resolutions (and after the last one with down_last)
                h = self.down[i](h) if self.down is not None else F.avg_pool2d(h, 2, ceil_mode=True)
        if self.attn is not None and self.attention_at is None:
            h = self.attn(h)
        return self.act(h)

    def forward(self, x: Tensor, t=None, y: Tensor | None = None) -> Tensor:
        """(B,) energies of images ``x`` (B, C, H, W), conditioned on time ``t`` and label ``y`` when built for them."""
        if self.out is None:  # readout "sum": f = the sum over channels and positions, E = -f (paper 003 A.1)
            return -self.final_map(x, t, y).sum(dim=(1, 2, 3))  # (B,)
        return self.out(self.features(x, t, y)).squeeze(1)  # (B,)


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectral normalisation on every conv and dense layer (not embeddings or norms)."""
    from torch.nn.utils.parametrizations import spectral_norm
    for sub in list(module.modules()):
        if isinstance(sub, (nn.Conv2d, nn.Linear)):
            spectral_norm(sub)


def default_channels(cfg, shape: tuple[int, ...]) -> list[int]:
    """``model.channels`` or, when unset, ``width`` at each of up to 3 resolutions (8x8 -> 3 levels)."""
    if cfg.channels:
        return [int(c) for c in cfg.channels]
    levels = max(1, min(3, int(math.log2(max(2, min(shape[1:]))))))
    return [cfg.width] * levels


def build_resnet(cfg, shape, time_cond: bool = False, num_classes: int | None = 0, default_t: float = 1.0,
                 **_) -> ResNetEnergy:
    """``model.name: resnet`` (registered in ``energies/build.MODELS``)."""
    if len(shape) != 3:
        raise ValueError(f"model 'resnet' needs image data (C, H, W), got shape {shape}; use model.name mlp for vectors")
    return ResNetEnergy(shape[0], default_channels(cfg, shape), cfg.depth, cfg.norm or "group", cfg.activation,
                        cfg.attention, cfg.spectral_norm, time_cond=time_cond,
                        num_classes=int(num_classes or 0), embed_dim=cfg.time_embed_dim, default_t=default_t,
                        **architecture_options(cfg))


def architecture_options(cfg) -> dict:
    """The optional ``ModelConfig`` keys of ``ResNetEnergy`` (blocks, down_last, attention_at, last_activation,
    readout, pool), for ``resnet`` and each scale of ``multiscale`` alike; absent or None keys keep the defaults
    (the behaviour before they existed)."""
    blocks = getattr(cfg, "blocks", None)
    return {"pool": getattr(cfg, "pool", None) or "avg",
            "blocks": [int(b) for b in blocks] if blocks else None,
            "down_last": bool(getattr(cfg, "down_last", None) or False),
            "attention_at": getattr(cfg, "attention_at", None),
            "last_activation": getattr(cfg, "last_activation", None),
            "readout": getattr(cfg, "readout", None)}
