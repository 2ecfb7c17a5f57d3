"""Images kept as their 8-bit codes, read as model coordinates a batch at a time.

An image dataset read from 8-bit files (CIFAR, SVHN, image folders, uint8 ``.npy``/``.npz``) holds its training
split as ``Pixels``: the (N, C, H, W) uint8 codes v, read as v / 127.5 - 1 (float32 in [-1, 1], the loaders' map)
only for the rows asked for. Indexing gives the float32 numbers a float32 split would hold, bit for bit (the same
two float32 operations on the same codes). With ``mirrored`` (``data.hflip``) it also stands for the N mirror
images: row N + i is row i flipped left to right, the order in which the split was stored twice before, so a
seeded batch draw reads the same images. The split takes a quarter of float32's memory, an eighth with flips
(docs/images.md gives the sizes).

Index it (an int, a slice, a (B,) long or bool tensor) for float32 rows; ``dense`` gives the whole split as one
tensor (the float32 memory again), ``chunks`` walks it in pieces. Code written for a float32 split keeps working:
a torch function given a ``Pixels`` (``torch.cat``, ``torch.isfinite``, ...) and a tensor method it lacks
(``.mean()``, ``.numpy()``, ...) act on the dense split (PyTorch's ``__torch_function__`` protocol for tensor-like
types), at that memory.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["Pixels", "codes_of", "from_codes", "dense", "chunks"]


def from_codes(codes: Tensor) -> Tensor:
    """uint8 codes (any shape) -> float32 model coordinates v / 127.5 - 1."""
    return codes.float().div_(127.5).sub_(1.0)  # in place: the numbers of codes.float() / 127.5 - 1.0, one buffer


def codes_of(x: Tensor) -> Tensor:
    """float model coordinates in [-1, 1] -> the nearest uint8 codes (the inverse of ``from_codes`` on its
    values; an image resized or turned grey between them is rounded to the nearest of the 256 levels)."""
    return ((x.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


class Pixels:
    """A training split of images as uint8 codes (N, C, H, W), read as float32 rows (module docstring)."""

    def __init__(self, codes: Tensor, mirrored: bool = False):
        if codes.dtype != torch.uint8 or codes.dim() != 4:
            raise ValueError(f"Pixels holds uint8 images (N, C, H, W), got {codes.dtype} of shape {tuple(codes.shape)}")
        self.codes = codes.contiguous()
        self.mirrored = bool(mirrored)

    @property
    def shape(self) -> torch.Size:
        """(2N if mirrored else N, C, H, W): the shape of the float32 split it stands for."""
        n = self.codes.shape[0]
        return torch.Size((2 * n if self.mirrored else n, *self.codes.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        """float32: the type of the rows it reads."""
        return torch.float32

    @property
    def device(self) -> torch.device:
        """Where the codes are (the CPU, as the loaders leave them)."""
        return self.codes.device

    def dim(self) -> int:
        """4, as the (N, C, H, W) split."""
        return 4

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Pixels({tuple(self.shape)}, uint8 codes{', mirrored' if self.mirrored else ''})"

    def __getitem__(self, idx) -> Tensor:
        if isinstance(idx, int):
            return self[torch.tensor([idx])][0]
        rows = self._rows(idx)                                 # (B,) row numbers in [0, len)
        n = self.codes.shape[0]
        if not self.mirrored:
            return from_codes(self.codes[rows])
        flip = rows >= n                                       # (B,) a mirror image
        x = self.codes[rows - n * flip]                        # (B, C, H, W) uint8
        return from_codes(torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x))

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """Any torch function acts on the dense split (module docstring)."""
        return func(*_densify(args), **dict(zip(kwargs or {}, _densify((kwargs or {}).values()))))

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("codes", "mirrored"):  # (copy/pickle probes; unset during __init__)
            raise AttributeError(name)
        return getattr(self[:], name)  # a tensor method or attribute, of the dense split

    def _rows(self, idx) -> Tensor:
        """(B,) long row numbers of an index: a slice, a long tensor (negative counts from the end) or a bool mask."""
        m = len(self)
        if isinstance(idx, slice):
            return torch.arange(*idx.indices(m))
        idx = torch.as_tensor(idx)
        if idx.dtype == torch.bool:
            if idx.shape != (m,):
                raise IndexError(f"a mask of shape {tuple(idx.shape)} does not index {m} images")
            return idx.nonzero().flatten()
        if idx.dim() != 1 or idx.dtype not in (torch.int64, torch.int32):
            raise IndexError(f"Pixels takes an int, a slice or a (B,) integer or bool tensor, got {idx.dtype} of "
                             f"shape {tuple(idx.shape)}")
        idx = idx.long()
        if idx.numel() and (int(idx.min()) < -m or int(idx.max()) >= m):
            raise IndexError(f"index out of range for {m} images")
        return torch.where(idx < 0, idx + m, idx)


def _densify(values) -> list:
    """``values`` with every ``Pixels`` (also inside a list or tuple, as ``torch.cat`` takes them) made dense."""
    def one(v):
        if isinstance(v, Pixels):
            return v[:]
        return type(v)(one(u) for u in v) if isinstance(v, (list, tuple)) else v
    return [one(v) for v in values]


def dense(split: Tensor | Pixels) -> Tensor:
    """The whole split as one float32 tensor: ``split`` itself when it is a tensor."""
    return split[:] if isinstance(split, Pixels) else split


def chunks(split: Tensor | Pixels, size: int) -> Iterator[Tensor]:
    """The split's rows in float32 pieces of at most ``size``, in order."""
    for i in range(0, split.shape[0], size):
        yield split[i:i + size]
