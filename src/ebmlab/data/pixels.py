"""Images kept as their 8-bit codes, read as model coordinates a batch at a time.

An image dataset read from 8-bit files (CIFAR, SVHN, image folders, uint8 ``.npy``/``.npz``) holds its training
split as ``Pixels``: the (N, C, H, W) uint8 codes v, read as v / 127.5 - 1 (float32 in [-1, 1], the loaders' map)
only for the rows asked for. Indexing gives the float32 numbers a float32 split would hold, bit for bit (the same
two float32 operations on the same codes). With ``mirrored`` (``data.hflip``) it also stands for the N mirror
images: row N + i is row i flipped left to right, the order in which the split was stored twice before, so a
seeded batch draw reads the same images. The split takes a quarter of float32's memory, an eighth with flips
(docs/images.md gives the sizes).

Index it as a tensor (an int, a slice, integer or bool index tensors, arrays or lists; a tuple indexes the rows
with its first entry and the image axes with the rest) for float32 rows; ``dense`` gives the whole split as one
tensor (the float32 memory again), ``chunks`` walks it in pieces. Code written for a float32 split keeps working:
a torch function given a ``Pixels`` (``torch.cat``, ``torch.isfinite``, ...), arithmetic and comparisons, and a
tensor method it lacks (``.mean()``, ``.numpy()``, ...) act on the dense split (PyTorch's ``__torch_function__``
protocol for tensor-like types), at that memory. It is read-only: an in-place method or an assignment is refused
(it would change a copy), and it is not a ``torch.Tensor`` (``isinstance``, ``torch.as_tensor`` see no tensor).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["Pixels", "codes_of", "from_codes", "unit_floats", "dense", "chunks"]


def from_codes(codes: Tensor) -> Tensor:
    """uint8 codes (any shape) -> float32 model coordinates v / 127.5 - 1."""
    return codes.float().div_(127.5).sub_(1.0)  # in place: the numbers of codes.float() / 127.5 - 1.0, one buffer


def unit_floats(x: Tensor) -> Tensor:
    """Images as float32 in [-1, 1]: uint8 codes by ``from_codes``, float ones as they are."""
    return from_codes(x) if x.dtype == torch.uint8 else x


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
        return self.ndim

    @property
    def ndim(self) -> int:
        """4, as the (N, C, H, W) split."""
        return 4

    @property
    def requires_grad(self) -> bool:
        """False: data, never a leaf of a graph."""
        return False

    @property
    def is_cuda(self) -> bool:
        """Whether the codes are on a CUDA device."""
        return self.codes.is_cuda

    def size(self, dim: int | None = None):
        """The split's shape, or its length along ``dim``, as ``Tensor.size``."""
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        """The number of float32 values the split stands for."""
        return self.shape.numel()

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Pixels({tuple(self.shape)}, uint8 codes{', mirrored' if self.mirrored else ''})"

    def __getitem__(self, idx) -> Tensor:
        if isinstance(idx, tuple):  # the rows first, the rest on them: p[i, c], p[:, 0], p[idx, :, y, x]
            if not idx or _whole(idx[0]):
                return self[:][idx]
            rows = self[idx[0]]  # (*lead, C, H, W): lead = () for one image, the index's shape, (K,) for a slice/mask
            if _scalar(idx[0]):
                return rows[idx[1:]]
            if isinstance(idx[0], slice):
                return rows[(slice(None), *idx[1:])]
            lead = rows.shape[:rows.dim() - (len(self.shape) - 1)]
            pos = torch.arange(rows.shape[:len(lead)].numel()).view(lead)  # the rows by position, in the index's shape:
            return rows.flatten(0, len(lead) - 1)[(pos, *idx[1:])]        # the rest combines with it as with the index
        if _whole(idx):
            return self[:][idx]
        if _scalar(idx):  # one image (C, H, W)
            return self._read(self._rows(torch.tensor([int(idx)])))[0]
        if isinstance(idx, slice):
            return self._read(torch.arange(*idx.indices(len(self))))
        idx = torch.as_tensor(idx)
        if idx.dtype == torch.bool:
            return self._read(self._mask(idx))
        return self._read(self._rows(idx.flatten())).view(*idx.shape, *self.shape[1:])  # any shape of integer index

    def __setitem__(self, idx, value) -> None:
        raise TypeError(_READ_ONLY)

    def _read(self, rows: Tensor) -> Tensor:
        """(B, C, H, W) float32 of (B,) row numbers in [0, len)."""
        n = self.codes.shape[0]
        if not self.mirrored:
            return from_codes(self.codes[rows])
        flip = rows >= n                                       # (B,) a mirror image
        x = self.codes[rows - n * flip]                        # (B, C, H, W) uint8
        return from_codes(torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x))

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """Any torch function acts on the dense split (module docstring); an in-place one on the split is refused."""
        if getattr(func, "__name__", "").endswith("_") and args and isinstance(args[0], Pixels):
            raise TypeError(_READ_ONLY)
        return func(*_densify(args), **dict(zip(kwargs or {}, _densify((kwargs or {}).values()))))

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("codes", "mirrored"):  # (copy/pickle probes; unset during __init__)
            raise AttributeError(name)
        if name.endswith("_"):  # an in-place method would change a dense copy and leave the split as it was
            raise AttributeError(f"{name}: {_READ_ONLY}")
        return getattr(self[:], name)  # a tensor method or attribute, of the dense split

    def __array__(self, dtype=None, copy=None):
        """The dense split as a NumPy array (``np.asarray``)."""
        a = self[:].numpy()
        return a if dtype is None else a.astype(dtype)

    def _rows(self, idx: Tensor) -> Tensor:
        """(B,) long row numbers in [0, len) of a (B,) integer index (negative counts from the end)."""
        m = len(self)
        if idx.numel() == 0:
            return idx.long()
        if idx.is_floating_point() or idx.is_complex():
            raise IndexError(f"Pixels takes integer or bool indices, got {idx.dtype}")
        idx = idx.long()
        if int(idx.min()) < -m or int(idx.max()) >= m:
            raise IndexError(f"index out of range for {m} images")
        return torch.where(idx < 0, idx + m, idx)

    def _mask(self, mask: Tensor) -> Tensor:
        if mask.shape != (len(self),):
            raise IndexError(f"a mask of shape {tuple(mask.shape)} does not index {len(self)} images")
        return mask.nonzero().flatten()


_READ_ONLY = ("Pixels is read-only: an 8-bit training split cannot be changed in place; dense(split) (ebmlab.data.pixels) "
              "gives a float32 tensor to change")


def _whole(idx) -> bool:
    """Whether ``idx`` acts on the whole split rather than picking rows: None, ``...``, or a 0-d bool (a Python or
    NumPy bool, or a 0-d bool array or tensor, which adds an axis of length 1 or 0)."""
    if idx is None or idx is Ellipsis or isinstance(idx, (bool, np.bool_)):
        return True
    return isinstance(idx, (Tensor, np.ndarray)) and idx.ndim == 0 and idx.dtype in (torch.bool, np.bool_)


def _scalar(idx) -> bool:
    """Whether ``idx`` picks one image: an int, a NumPy integer, a 0-d integer tensor or array (not a bool)."""
    if isinstance(idx, Tensor):
        return idx.dim() == 0 and not idx.is_floating_point() and idx.dtype != torch.bool
    if isinstance(idx, np.ndarray):  # a 0-d integer array, as NumPy's own indexing takes it
        return idx.ndim == 0 and np.issubdtype(idx.dtype, np.integer)
    return isinstance(idx, (int, np.integer)) and not isinstance(idx, (bool, np.bool_))


def _dense_operator(name: str):
    def op(self, *args):
        return getattr(self[:], name)(*args)
    op.__name__, op.__doc__ = name, f"``{name}`` of the dense split."
    return op


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
              "__floordiv__", "__rfloordiv__", "__mod__", "__pow__", "__rpow__", "__matmul__", "__rmatmul__",
              "__neg__", "__pos__", "__abs__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(Pixels, _name, _dense_operator(_name))  # arithmetic and comparisons as on the dense split
Pixels.__hash__ = object.__hash__  # (``__eq__`` is element-wise, as a tensor's; hashed by identity, as a tensor)


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
