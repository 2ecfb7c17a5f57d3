"""InceptionV3 feature network for FID and Inception Score, written in-house to load the standard FID
weight file ``pt_inception-2015-12-05-6726825d.pth`` (the TF 2015-12-05 Inception graph ported by
pytorch-fid; torch-fidelity ships the same tensors as ``weights-inception-2015-12-05-6726825d.pth``).

Architecture (Szegedy et al. 2016, "Rethinking the Inception Architecture", Fig. 5-7 and Table 1)
in the module names of torchvision's ``Inception3`` without the auxiliary head, which are the key
names of the weight file: ``Conv2d_1a_3x3 ... Conv2d_4a_3x3``, ``Mixed_5b/5c/5d`` (block A),
``Mixed_6a`` (B), ``Mixed_6b..6e`` (C), ``Mixed_7a`` (D), ``Mixed_7b/7c`` (E), ``fc`` (2048 -> 1008).
Every conv is ``<name>.conv.weight`` (no bias) + ``<name>.bn.{weight,bias,running_mean,running_var}``
(BatchNorm eps 1e-3). The FID variant differs from torchvision's in three ways (TF graph semantics):
the average pools of blocks A, C and the first E exclude padding (``count_include_pad=False``), the
last E block (``Mixed_7c``) max-pools in its pool branch, and there are 1008 classes.

What was verified without the file: the module names, kernel sizes, paddings and channel counts
above were checked against pytorch-fid's public description of ``fid_inception_v3`` (FIDInceptionA/C/
E_1/E_2 on torchvision's Inception3 with ``num_classes=1008, aux_logits=False``, loaded strictly),
against a printed torchvision Inception3 module listing, and by the parameter count: torchvision's
Inception3 has 27,161,264 parameters, its auxiliary head 3,326,696, and 1008 instead of 1000 classes
add 16,392, so the FID network must have 23,850,960 (tested). Not verified (needs the file): the
numerical feature values against pytorch-fid's, and whether the file stores ``num_batches_tracked``
(absent entries are filled with 0 here; they do not affect evaluation-mode outputs).

Inputs: images (B, C, H, W) in [-1, 1] of any size; grayscale is repeated to 3 channels and every
image is resized bilinearly to 299 x 299 (``align_corners=False``, as pytorch-fid; bilinear resizing
commutes with its [0, 1] -> [-1, 1] rescaling). Outputs: 2048-d pool features and 1008 logits. The
logits for the Inception Score are computed without the ``fc`` bias by default (``pool @ W^T``),
as the original TF IS code and torch-fidelity's ``logits_unbiased`` do.

Weights are never downloaded: ``load_inception(path)`` reads ``path`` or
``torch.hub.get_dir()/checkpoints/<file name>`` with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebmlab.errors import ConfigError

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FIDELITY_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_NAME
N_PARAMS = 23_850_960


class InceptionWeightsMissing(ConfigError, FileNotFoundError):
    """The FID Inception weight file is not where we looked; the message says where to put it. An ebmlab
    ``ConfigError`` and a ``FileNotFoundError``."""


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        """Convolution, batch norm, ReLU."""
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: Tensor) -> Tensor:
    # TF's average pool ignores the zero padding
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35x35 block (Fig. 5): 64 + 64 + 96 + pool_features channels."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        """InceptionV3 block A (mixed_5b-5d): four parallel branches concatenated."""
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class BlockB(nn.Module):
    """35 -> 17 grid reduction: 384 + 96 + cin channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """InceptionV3 block B (mixed_6a): grid reduction."""
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Fig. 6): 4 x 192 channels."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        """InceptionV3 block C (mixed_6b-6e): factorised 7x7 branches."""
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class BlockD(nn.Module):
    """17 -> 8 grid reduction: 320 + 192 + cin channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """InceptionV3 block D (mixed_7a): grid reduction."""
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for i in range(2, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8x8 block with expanded filter banks (Fig. 7): 320 + 768 + 768 + 192 = 2048 channels.
    ``max_pool``: the FID graph's last block (Mixed_7c) max-pools in its pool branch."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, **row)
        self.branch3x3_2b = BasicConv2d(384, 384, **col)
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, **row)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, **col)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        """InceptionV3 block E (mixed_7b-7c): expanded filter banks."""
        s = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class InceptionV3(nn.Module):
    """FID InceptionV3: ``forward(x)`` -> (features (B, 2048), logits (B, 1008))."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)
        self.eval()

    @staticmethod
    def preprocess(x: Tensor) -> Tensor:
        """(B, 1|3, H, W) in [-1, 1] -> (B, 3, 299, 299)."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"InceptionV3 expects images (B, 1 or 3, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)

    def pool_features(self, x: Tensor) -> Tensor:
        """(B, 3, 299, 299) -> (B, 2048) after the final average pool."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)                                  # (B, 64, 73, 73)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)  # (B, 192, 35, 35)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)                         # ends (B, 2048, 8, 8)
        return x.mean((2, 3))

    def forward(self, x: Tensor, logits_bias: bool = False) -> tuple[Tensor, Tensor]:
        """(pool features (B, 2048), logits (B, 1008)) of images ``x`` (B, 3, H, W) in [-1, 1] (resized to 299)."""
        feats = self.pool_features(self.preprocess(x))
        logits = F.linear(feats, self.fc.weight, self.fc.bias if logits_bias else None)
        return feats, logits


def default_weight_paths() -> list[Path]:
    """Where ``find_weights`` looks for the FID Inception weights when no path is given (the torch hub cache)."""
    root = Path(torch.hub.get_dir()) / "checkpoints"
    return [root / FID_WEIGHTS_NAME, root / FIDELITY_WEIGHTS_NAME]


def find_weights(path: str | Path | None = None) -> Path:
    """The weight file: ``path`` if given (must exist), else the torch hub cache; never downloads."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InceptionWeightsMissing(f"Inception weights {str(p)!r} do not exist; download {FID_WEIGHTS_URL} "
                                          f"and pass its path with --inception-weights")
        return p
    for p in default_weight_paths():
        if p.is_file():
            return p
    raise InceptionWeightsMissing(
        f"FID needs the Inception weights {FID_WEIGHTS_NAME}, which ebmlab never downloads; download "
        f"{FID_WEIGHTS_URL} and pass --inception-weights PATH or put it at {str(default_weight_paths()[0])!r}")


def load_inception(path: str | Path | None = None, device: str | torch.device = "cpu") -> InceptionV3:
    """InceptionV3 with the FID weights (``torch.load(weights_only=True)``), in eval mode."""
    p = find_weights(path)
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning precedes the sentence below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated download or a non-tensor pickle: torch's message runs over many lines
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ConfigError(f"could not read Inception weights {str(p)!r}: not a PyTorch weight file of tensors (a "
                          f"truncated download or another file; {type(exc).__name__}: {first}); download "
                          f"{FID_WEIGHTS_URL} again") from None
    model = InceptionV3()
    load_checked(model, state, str(p))
    return model.to(device).eval()


def load_checked(model: nn.Module, state: dict, where: str = "state dict") -> None:
    """Strict load that names missing, unexpected or mis-shaped keys in one sentence."""
    if not isinstance(state, dict):
        raise ConfigError(f"{where} does not hold a state dict (got {type(state).__name__})")
    expected = model.state_dict()
    state = dict(state)
    for k, v in expected.items():  # older files may not store BatchNorm's step counter
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros_like(v)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        raise ConfigError(f"{where} does not match the FID InceptionV3: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shapes {shapes[:5]}")
    model.load_state_dict(state)


@torch.no_grad()
def inception_outputs(model: InceptionV3, images: Tensor, batch_size: int = 50) -> tuple[Tensor, Tensor]:
    """(N, 2048) features and (N, 1008) unbiased logits of images (N, C, H, W) in [-1, 1], on CPU."""
    dev = next(model.parameters()).device
    feats, logits = [], []
    for i in range(0, images.shape[0], batch_size):
        f, lg = model(images[i:i + batch_size].to(dev))
        feats.append(f.cpu().double()), logits.append(lg.cpu().double())
    return torch.cat(feats), torch.cat(logits)
