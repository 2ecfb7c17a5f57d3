"""The data containers every loader returns: ``Affine`` (model <-> data coordinates) and ``Dataset``.

A leaf of ``ebmlab.data``: the registry (``data/dataset.py``), the image loaders (``data/images.py``)
and the OOD sets (``data/image_ood.py``) import it, it imports none of them. See ``data/dataset.py`` for the coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ebmlab.errors import DataError


@dataclass
class Affine:
    """z = (x - shift) / scale, per coordinate (vectors) or scalar (images); with ``matrix`` (vectors,
    ``data.whiten``) the standardised point is then whitened, z = W (x - shift) / scale, W (D, D)."""
    shift: Tensor
    scale: Tensor
    matrix: Tensor | None = None   # (D, D) W, or None
    inverse: Tensor | None = None  # (D, D) W^-1 (stored, so a reloaded run maps back exactly as it trained)

    @property
    def dtype(self) -> torch.dtype:
        """The data coordinates' precision: float64 for user vectors float32 cannot hold exactly (float64, 32- and
        64-bit integers: ``data/arrays.check_vectors``), whose offsets are large for their spread (epoch seconds,
        projected metres); else float32 (toys, images, float32 arrays: their arithmetic as it always was)."""
        return self.shift.dtype

    def to_model(self, x: Tensor) -> Tensor:
        """Data coordinates -> model coordinates: (x - shift) / scale [then W]. A float64 transform subtracts in
        float64 and returns float32 rows (the networks' dtype); a float32 one computes in ``x``'s dtype."""
        wide = self.dtype == torch.float64
        x = x.double() if wide else x
        z = (x - self.shift.to(x)).div_(self.scale.to(x))  # (in place: one temporary of the rows, not two)
        z = z if self.matrix is None else z @ self.matrix.to(z).T
        return z.float() if wide else z

    def to_data(self, z: Tensor) -> Tensor:
        """Model coordinates -> data coordinates: [``inverse`` z, where set, then] z * scale + shift (an
        ``Affine`` with a ``matrix`` needs its ``inverse`` to map back). In float64 for a float64 transform (float32
        would round a point at 1e7 by 0.5), else in ``z``'s dtype."""
        if self.dtype == torch.float64:
            z = z.double()
        if self.inverse is not None:
            z = z @ self.inverse.to(z).T
        return z * self.scale.to(z) + self.shift.to(z)

    @property
    def log_det(self) -> float:
        """log |dz/dx| per example. A scalar scale (images) must be 1: its log|det| is D log(1/scale), and the
        transform does not know D."""
        if not self.scale.dim() and float(self.scale) != 1.0:
            raise DataError(f"log|dz/dx| of a scalar scale {float(self.scale)} needs the data's dimension; give "
                            "the scale per coordinate")
        out = float(-torch.log(self.scale).sum()) if self.scale.dim() else 0.0
        return out if self.matrix is None else out + float(torch.linalg.slogdet(self.matrix.double())[1])

    def same_as(self, other: Affine) -> bool:
        """Whether ``other`` maps the same way (equal shift, scale and matrices)."""
        def eq(a: Tensor | None, b: Tensor | None) -> bool:  # (torch.equal holds across dtypes: a float32 and a
            if a is None or b is None:                          # float64 transform of equal values map differently)
                return a is None and b is None
            return a.dtype == b.dtype and torch.equal(a, b)
        return all(eq(getattr(self, k), getattr(other, k)) for k in ("shift", "scale", "matrix", "inverse"))

    @staticmethod
    def identity(dim: int | None = None) -> Affine:
        """The identity transform (shift 0, scale 1)."""
        return Affine(torch.zeros(()), torch.ones(()))


@dataclass
class Dataset:
    """A dataset in model coordinates: train/test splits, the ``transform`` back to data coordinates,
    labels, and for toys the exact distribution ``dist`` (``sample``, ``log_prob``)."""
    name: str
    kind: str                              # "vector" | "image"
    train: Tensor                          # (N, ...) model coordinates
    test: Tensor                           # (M, ...) model coordinates
    transform: Affine = field(default_factory=Affine.identity)
    train_labels: Tensor | None = None     # (N,) long
    test_labels: Tensor | None = None
    num_classes: int = 0
    dist: object | None = None             # toy distribution with exact sample/log_prob (data coords)
    info: dict = field(default_factory=dict)
    val: Tensor | None = None               # (V, ...) model coordinates: the validation split (data.val_fraction)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. (D,) or (C, H, W)."""
        return tuple(self.train.shape[1:])

    def reference_pair(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Two *disjoint* sets of data points in data coordinates for the sample metrics: one to compare
        samples with, one for the data-vs-data floor. With an exact sampler, two independent draws of
        ``n``; otherwise two disjoint halves of the held-out split, each of min(n, held-out // 2) rows
        (a floor from a set compared with itself would be 0 and mean nothing)."""
        if self.dist is not None:
            return self.dist.sample(n, generator), self.dist.sample(n, generator)
        m = min(n, self.test.shape[0] // 2)
        if m < 1:
            raise DataError(f"the held-out split of {self.name!r} has {self.test.shape[0]} row(s); the sample "
                             "metrics need at least 2 (two disjoint halves)")
        idx = torch.randperm(self.test.shape[0], generator=generator)
        x = self.transform.to_data(self.test[idx[:2 * m]])
        return x[:m], x[m:]

    def fresh(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n data points in data coordinates never seen in training: from the exact sampler when
        there is one, else (a subset of) the held-out split."""
        if self.dist is not None:
            return self.dist.sample(n, generator)
        idx = torch.randperm(self.test.shape[0], generator=generator)[:n]
        return self.transform.to_data(self.test[idx])

    def with_transform(self, transform: Affine) -> Dataset:
        """The same rows, splits and labels in the model coordinates of another ``transform`` (each split mapped
        to data coordinates and back): a run's result may carry its own (``training/selection.py``, refit).
        ``self`` when ``transform`` is the one it has (equal tensors)."""
        if transform.same_as(self.transform):
            return self

        def move(z: Tensor | None) -> Tensor | None:
            return None if z is None else transform.to_model(self.transform.to_data(z))
        return replace(self, train=move(self.train), test=move(self.test), val=move(self.val), transform=transform)
