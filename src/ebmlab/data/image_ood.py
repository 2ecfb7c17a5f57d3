"""Out-of-distribution image sets for OOD AUROC (paper 001 Sec. 3.3 and Table 3, paper 004 Sec. 4.2.4):
``load_ood_set(name_or_path, like, generator)`` gives (M, C, H, W) images in [-1, 1] shaped like the dataset
``like``'s test split: a synthetic set built from that split (``_ood_builtin``: negatives, noise, flips,
shuffled pixels, and the two hard sets, class-crossing blends and occlusions, the analogue at digits scale of
paper 001's CIFAR-10 interpolations), or another image dataset read by ``data/images.py``'s loaders and
resized to ``like``'s shape.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from ebmlab.data.base import Dataset
from ebmlab.data.image_ops import image_tensor, postprocess
from ebmlab.data.images import CIFAR_LAYOUT, IMAGE_LOADERS, MissingDataPath, read_image_array, read_svhn_mat
from ebmlab.data.pixels import dense, unit_floats
from ebmlab.errors import DataError

__all__ = ["load_ood_set"]


def _ood_builtin(name: str, like: Dataset, generator) -> Tensor | None:
    """Synthetic OOD sets built from ``like``'s test split; None for other names.

    ``digits_negative``: the negative image 1 - x in [0, 1], i.e. -x in [-1, 1]; ``noise``: uniform
    [-1, 1]; ``digits_flipped``: upside-down images (vertical flip); ``digits_shuffled``: each image's
    pixels permuted by its own random permutation (keeps the intensity histogram, destroys shape).
    The two hard sets (paper 001's CIFAR-10 interpolations, Table 3, at digits scale): ``digits_interpolated``:
    the pixel average of each test image and another test image of a different class (random pairs
    when there are no labels), a blend that is close to the data but no digit; ``digits_occluded``:
    each image with one random square of half its side set to the background (-1)."""
    x = like.test  # (M, C, H, W)
    if name == "digits_interpolated":
        return 0.5 * (x + x[_partners(like, generator)])
    if name == "digits_occluded":
        return _occlude(x, generator)
    if name == "digits_negative":
        return -x
    if name == "noise":
        return torch.rand(x.shape, generator=generator) * 2 - 1
    if name == "digits_flipped":
        return x.flip(-2)
    if name == "digits_shuffled":
        flat = x.flatten(2)  # (M, C, H*W)
        perm = torch.argsort(torch.rand(flat.shape[0], flat.shape[2], generator=generator), dim=1)  # (M, HW)
        return flat.gather(2, perm[:, None, :].expand_as(flat)).reshape(x.shape)
    return None


def _partners(like: Dataset, generator) -> Tensor:
    """(M,) for each test image the index of another one, of a different class where labels exist."""
    m = like.test.shape[0]
    perm = torch.randperm(m, generator=generator)
    labels = like.test_labels
    if labels is None or len(torch.unique(labels)) < 2:  # a cycle through the permutation: no image its own partner
        partner = torch.empty_like(perm)
        partner[perm] = torch.roll(perm, 1)  # partner[perm[j]] = perm[j - 1] (m = 1: the one image itself)
        return partner
    partner = perm.clone()
    for i in range(m):  # first candidate in the permutation (cyclically from i) with another class
        j = next(int(perm[(i + k) % m]) for k in range(1, m) if labels[perm[(i + k) % m]] != labels[i])
        partner[i] = j
    return partner


def _occlude(x: Tensor, generator) -> Tensor:
    """x (M, C, H, W) with one random (H/2 x W/2) square per image set to -1 (the background)."""
    m, _, h, w = x.shape
    ph, pw = max(1, h // 2), max(1, w // 2)
    top = torch.randint(0, h - ph + 1, (m,), generator=generator)
    left = torch.randint(0, w - pw + 1, (m,), generator=generator)
    rows, cols = torch.arange(h), torch.arange(w)
    inside = (((rows[None, :] >= top[:, None]) & (rows[None, :] < (top + ph)[:, None]))[:, :, None]
              & ((cols[None, :] >= left[:, None]) & (cols[None, :] < (left + pw)[:, None]))[:, None, :])  # (M, H, W)
    return torch.where(inside[:, None], torch.full_like(x, -1.0), x)


def _ood_from_path(p: Path, like_cfg) -> Tensor:
    suffix = p.suffix.lower()
    # 8-bit images stay codes through the resize or grey conversion and are rounded, as the run's own splits were
    if suffix in (".npy", ".npz"):
        return unit_floats(postprocess(image_tensor(read_image_array(p)[0], str(p)), like_cfg))
    if suffix == ".mat":
        return unit_floats(postprocess(read_svhn_mat(p)[0], like_cfg))
    if p.is_dir():
        for name, (sub, train_files, test_files, _, _) in CIFAR_LAYOUT.items():
            if any((c / test_files[0]).is_file() for c in (p, p / sub)):
                return IMAGE_LOADERS[name](_replace(like_cfg, name=name, path=str(p))).test
        if (p / "test_32x32.mat").is_file():
            return unit_floats(postprocess(read_svhn_mat(p / "test_32x32.mat")[0], like_cfg))
        # every image of the folder (the loader holds a tenth of them out as its test split)
        ds = IMAGE_LOADERS["imagefolder"](_replace(like_cfg, name="imagefolder", path=str(p)))
        return torch.cat([dense(ds.train), ds.test])
    raise DataError(f"OOD set {str(p)!r} is not a .npy/.npz/.mat file or a folder of images or CIFAR batches")


def _replace(cfg, **kw):
    """A copy of a data config (DataConfig or namespace) with some fields changed."""
    return SimpleNamespace(**{**vars(cfg), **kw})


BUILTIN_OOD = ("digits_negative", "noise", "digits_flipped", "digits_shuffled", "digits_interpolated",
               "digits_occluded")  # the synthetic sets of ``_ood_builtin``


def known_ood_set(name_or_path: str) -> bool:
    """Whether ``load_ood_set`` could open ``name_or_path`` by its kind (a built-in set, an existing path or an image
    dataset's name), checked without reading anything: ``ebmlab eval`` refuses the others before any work."""
    return (name_or_path in BUILTIN_OOD or name_or_path in IMAGE_LOADERS
            or Path(name_or_path).expanduser().exists())


def load_ood_set(name_or_path: str, like: Dataset, generator: torch.Generator | None = None) -> Tensor:
    """(M, C, H, W) images in [-1, 1] shaped like ``like``'s images, for OOD evaluation.

    ``name_or_path``: a built-in synthetic set (``digits_negative``, ``noise``, ``digits_flipped``,
    ``digits_shuffled``, ``digits_interpolated``, ``digits_occluded``), an existing path (a .npy/.npz or SVHN .mat
    file or a folder of images: all of it; a CIFAR folder: its test batch; an SVHN folder: ``test_32x32.mat``) or
    an image dataset name that needs no path (e.g. ``digits``; its test split under seed 0, not the run's split)."""
    x = _ood_builtin(name_or_path, like, generator)
    if x is not None:
        return x
    c, h, w = like.shape
    # the DataConfig fields the loaders read (data stays a leaf: no import of ebmlab.training); both sides of a
    # non-square run's images (one side squashed a set already of the run's size)
    like_cfg = SimpleNamespace(name=like.name, path=None, image_size=h if h == w else (h, w), channels=c, crop=None,
                               classes=None,
                               n_test=10**9, seed=0)
    p = Path(name_or_path).expanduser()
    if p.exists():
        return _ood_from_path(p, like_cfg)
    if name_or_path in IMAGE_LOADERS:
        try:
            return IMAGE_LOADERS[name_or_path](_replace(like_cfg, name=name_or_path)).test
        except MissingDataPath:  # "needs data.path (or --data)": options an OOD set does not have
            raise DataError(f"OOD set {name_or_path!r} is a dataset read from its files: give the path of its folder "
                            f"(or file) as the OOD set instead of its name") from None
    raise not_an_ood_set(name_or_path)


def not_an_ood_set(name: str) -> DataError:
    """The DataError for an image run's OOD set that is no built-in set, existing path or dataset name."""
    return DataError(f"OOD set {name!r} is neither a built-in set ({', '.join(BUILTIN_OOD)}), an existing path, "
                     "nor a dataset name")
