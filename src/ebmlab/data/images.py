"""Image datasets: digits, CIFAR-10/100, image folders, .npy/.npz arrays, SVHN (issue 3).

Every loader returns ``Dataset(kind="image")`` with images (N, C, H, W) in [-1, 1] (uint8 v -> v / 127.5 - 1),
labels as long tensors (or None) and ``transform = Affine.identity()``. Images read from 8-bit files keep their
training split as its uint8 codes (``data/pixels.Pixels``: float32 rows on indexing, a quarter of the memory, the
``hflip`` mirrors without a copy); the held-out split is float32, as are digits (0..16 -> v / 8 - 1) and float
``.npy`` files. A resize or grey conversion of 8-bit images is computed in float32 and rounded back to codes.

Common post-processing (``DataConfig`` fields), in this order: ``crop`` (centre crop, image folders
only, before any resize: CelebA's 140-pixel crop of paper 002), ``image_size`` (bilinear resize,
antialiased when shrinking), ``channels`` (1 -> 3 repeats the grey channel; 3 -> 1 takes the ITU-R 601
luma 0.299 R + 0.587 G + 0.114 B), ``classes`` (keep only these labels; labels keep their original
values and ``num_classes`` its original count, so a class-conditional model trained on a subset can
still be composed with one trained on all classes).

Random horizontal flips (``data.hflip: true``; paper 003's authors' code and paper 001's flip the
training images): the training split reads as itself followed by its mirror images (2N images, labels
repeated; the held-out split is left as it is). The trainer draws each batch uniformly with
replacement from the split (``training/loop.py``), so an image arrives flipped with probability 1/2,
the distribution of a per-batch random flip, without a change to the training loop. 8-bit splits flip on
reading (``Pixels(mirrored=True)``); float32 ones (digits, float files) are stored twice.

Splits. ``digits``: scikit-learn's 1,797 8x8 images, split by a permutation seeded with ``data.seed``
into 1,500 train / 297 test images (fixed sizes). CIFAR and SVHN: the official train/test files.
Folders and arrays: a permutation seeded with ``data.seed``; the test split holds
min(``data.n_test``, N // 10) images (as the vector ``array`` loader). ``n_train``/``n_test``
otherwise do not subsample images (their defaults are the toys' sample counts).

Safety. CIFAR batches are pickles; they are read with ``RestrictedUnpickler`` (``data/safe_pickle.py``),
which resolves only
numpy's ndarray/dtype reconstruction functions and ``_codecs.encode`` (latin-1 only) and refuses any
other global *before* anything is called. ``.npy``/``.npz`` use ``allow_pickle=False``; ``.mat`` files
go through ``scipy.io.loadmat`` (no code execution).

Out-of-distribution image sets shaped like a dataset's test split (``load_ood_set``) are in
``data/image_ood.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ebmlab.data.arrays import npz_key, walk_folder
from ebmlab.data.base import Affine, Dataset
from ebmlab.data.image_ops import (centre_crop, image_tensor, pair, postprocess, resize, set_channels,  # noqa: F401
                                   to_unit_range)  # (re-exported: the loaders' conversions)
from ebmlab.data.pixels import Pixels, codes_of, from_codes
from ebmlab.data.safe_pickle import RestrictedUnpickler, safe_unpickle  # noqa: F401  (re-exported)
from ebmlab.errors import DataError

DIGITS_TRAIN = 1500
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # what Pillow reads (GIF: first frame)


def _labels(y) -> Tensor | None:
    return None if y is None else torch.as_tensor(np.asarray(y).reshape(-1).astype(np.int64))


def _finish(name: str, cfg, train: Tensor, test: Tensor, ytr, yte, num_classes: int, **info) -> Dataset:
    """Resize / channel conversion, class filter, and the Dataset in [-1, 1]."""
    train, test = postprocess(train, cfg), postprocess(test, cfg)
    ytr, yte = _labels(ytr), _labels(yte)
    if cfg.classes is not None:
        if ytr is None:
            raise DataError(f"data.classes was given but dataset {name!r} has no labels")
        keep = torch.tensor([int(c) for c in cfg.classes])
        mtr, mte = torch.isin(ytr, keep), torch.isin(yte, keep)
        train, ytr, test, yte = train[mtr], ytr[mtr], test[mte], yte[mte]
        if train.shape[0] == 0:
            raise DataError(f"data.classes {list(cfg.classes)} keeps no training image of {name!r}")
    flip = bool(getattr(cfg, "hflip", None))  # random horizontal flips: the training split and its mirror images
    if flip:
        ytr = None if ytr is None else torch.cat([ytr, ytr])
        info = dict(info, hflip=True)
    if train.dtype == torch.uint8:  # 8-bit images: the training split stays codes; the held-out one is read whole
        train, test = Pixels(train, mirrored=flip), from_codes(test)
    else:
        train = torch.cat([train, train.flip(-1)]) if flip else train
        train, test = train.float().contiguous(), test.float().contiguous()
    return Dataset(name, "image", train, test, Affine.identity(), ytr, yte, num_classes,
                   info=dict(range="[-1, 1]", layout="NCHW", **info))


def _split(n: int, n_test: int, seed: int, where: str) -> tuple[Tensor, Tensor]:
    """Seeded permutation -> (train indices, test indices) with min(n_test, n // 10) test items (at least 1: a
    DataError naming ``where`` for fewer than 2 images, which leave none to train on)."""
    if n < 2:
        raise DataError(f"{where} holds {n} image; ebmlab needs at least 2 (one tenth, at least 1, is held out for "
                        "the evaluation)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = min(n_test, max(1, n // 10))
    return perm[k:], perm[:k]


class MissingDataPath(DataError):
    """A dataset read from files (CIFAR-10, SVHN, an image folder) named without ``data.path``."""


def _need_path(cfg, expected: str) -> Path:
    if not cfg.path:
        raise MissingDataPath(f"data.name {cfg.name!r} needs data.path (or --data): {expected}")
    p = Path(cfg.path).expanduser()
    if not p.exists():
        raise DataError(f"data.path {str(p)!r} does not exist; expected {expected}")
    return p


# ----- digits ------------------------------------------------------------------------------------------
def _digits(cfg) -> Dataset:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32)) / 8.0 - 1.0  # values 0..16 -> [-1, 1]
    x, y = x[:, None], d.target  # (1797, 1, 8, 8)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(cfg.seed))
    tr, te = perm[:DIGITS_TRAIN], perm[DIGITS_TRAIN:]
    return _finish("digits", cfg, x[tr], x[te], y[tr.numpy()], y[te.numpy()], 10, source="sklearn.datasets.load_digits")


# ----- CIFAR ----------------------------------------------------------------------------------------
def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = safe_unpickle(path)
    data, labels = d.get("data"), d.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"CIFAR batch {str(path)!r} needs 'data' as a uint8 array (N, 3072)")
    if labels is None or len(labels) != data.shape[0]:
        raise DataError(f"CIFAR batch {str(path)!r} needs {label_key!r} with one label per image")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)  # rows are C, H, W: (N, C, H, W) codes


CIFAR_LAYOUT = {  # name: (sub-folder, train files, test files, label key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}
CIFAR_META = {"cifar10": ("batches.meta", "label_names"), "cifar100": ("meta", "fine_label_names")}  # class names


def _cifar_class_names(name: str, root: Path, k: int) -> list[str]:
    """The k class names from the official meta file (``--label airplane``), or [] where it is missing or does not
    hold k names (the labels' indices still work)."""
    meta, key = CIFAR_META[name]
    try:
        names = safe_unpickle(root / meta).get(key) if (root / meta).is_file() else None
    except DataError:
        return []
    if not isinstance(names, list) or len(names) != k or not all(isinstance(n, (bytes, str)) for n in names):
        return []
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def cifar_root(name: str, path: Path) -> Path | None:
    """The folder holding CIFAR ``name``'s batch files: ``path`` or its official sub-folder; None if neither."""
    sub, train_files, test_files, _, _ = CIFAR_LAYOUT[name]
    return next((c for c in (path, path / sub) if all((c / f).is_file() for f in train_files + test_files)), None)


def _cifar_dir(name: str, cfg) -> Path:
    sub, train_files, test_files, _, _ = CIFAR_LAYOUT[name]
    expected = f"the folder {sub}/ of the official python version holding {', '.join(train_files + test_files)}"
    p = _need_path(cfg, expected)
    root = cifar_root(name, p)
    if root is None:
        raise DataError(f"data.path {str(p)!r} lacks the CIFAR batch files; expected {expected}")
    return root


def _cifar(cfg) -> Dataset:
    sub, train_files, test_files, key, k = CIFAR_LAYOUT[cfg.name]
    root = _cifar_dir(cfg.name, cfg)
    (xtr, ytr), (xte, yte) = (_cifar_split(root, files, key) for files in (train_files, test_files))
    return _finish(cfg.name, cfg, xtr, xte, ytr, yte, k, source=str(root), classes=_cifar_class_names(cfg.name, root, k))


def _cifar_split(root: Path, files: list[str], key: str) -> tuple[Tensor, np.ndarray]:
    """(N, C, H, W) uint8 codes and (N,) labels of a split's batch files, joined in one copy."""
    parts = [_read_cifar_batch(root / f, key) for f in files]
    return torch.from_numpy(np.concatenate([x for x, _ in parts])), np.concatenate([y for _, y in parts])


# ----- image folder ------------------------------------------------------------------------------------
def _list_images(root: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """Image files under root (``_image_files``: through symlinked folders, hidden ones skipped); labels from the
    first-level sub-folders (classes) when every image lies under one, at any depth; with images both in and outside
    sub-folders, none (a warning names the loose ones)."""
    # macOS writes "._name.png" resource forks (AppleDouble, also under __MACOSX/ in zips) beside images
    # copied to other disks; they are not images, so a folder that holds them could not be read at all.
    # sorted by the names' parts, case-sensitively on every platform (Windows' paths compare ignoring case, which
    # would give a folder with names like a.png, B.png another order, and so other splits, than on Linux or macOS)
    files = sorted(_image_files(root), key=lambda p: p.relative_to(root).parts)
    if not files:
        raise DataError(f"image folder {str(root)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    rel_parts = [f.relative_to(root).parts for f in files]
    loose = [f.name for f, parts in zip(files, rel_parts) if len(parts) == 1]
    if not loose:  # every image under a class sub-folder, at any depth (cat/x.png, cat/indoor/y.png): labelled
        classes = sorted({parts[0] for parts in rel_parts})
        return files, [classes.index(parts[0]) for parts in rel_parts], classes
    if len(loose) < len(files):  # some in sub-folders, some not: no labels, and the user is told which broke them
        import warnings
        warnings.warn(f"image folder {str(root)!r}: {len(loose)} image(s) lie outside the class sub-folders "
                      f"({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}), so the folder is read without "
                      "class labels; move them into a sub-folder (or remove them) for labels", UserWarning, stacklevel=2)
    return files, None, []


def _image_files(root: Path):
    """The image files under ``root`` (``walk_folder``: through linked folders, a class linked in from elsewhere; each
    real folder once, so a link back up cannot loop), without hidden files and folders (``.ipynb_checkpoints``,
    ``.thumbnails``, macOS' ``._name.png`` resource forks: not images of the data)."""
    for folder, _, names in walk_folder(root):
        for name in names:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(folder) / name


def _read_image(path: Path, mode: str, crop: int | None, size: int | None) -> Tensor:
    """(1, C, H, W) uint8 codes (``Pixels``), turned as its EXIF Orientation tag says (as viewers show a camera's photo)."""
    from PIL import Image, ImageOps
    try:
        with Image.open(path) as im:
            arr = np.asarray(_opaque(_eight_bit(ImageOps.exif_transpose(im), path)).convert(mode), dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise DataError(f"could not read image {str(path)!r} ({type(exc).__name__}: {exc})") from None
    x = image_tensor(arr[None], str(path))  # (1, C, H, W) uint8 codes
    x = centre_crop(x, crop) if crop else x
    if size and tuple(x.shape[-2:]) != pair(size):  # resized as float32, then rounded to the nearest code
        x = codes_of(resize(from_codes(x), size))
    return x


def _opaque(im):
    """``im`` over a white background where it has transparency (an alpha channel, or a palette or colour marked
    transparent), as viewers show it: ``convert`` drops the alpha and keeps whatever colour the transparent
    pixels hold (often black, sometimes leftovers of an editor)."""
    from PIL import Image

    if im.mode not in ("RGBA", "LA", "PA", "La", "RGBa") and "transparency" not in im.info:
        return im
    rgba = im.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


def _eight_bit(im, path: Path):
    """``im`` with 8-bit channels. 16-bit grayscale (modes ``I;16*``, and ``I`` within 0..65535: scientific and
    medical PNGs) is scaled by 255/65535: Pillow's ``convert`` clips every value above 255, which made such a
    folder a set of white images. Float or wider images are refused."""
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":
        v = np.asarray(im, dtype=np.float64)
        if v.min() < 0 or v.max() > 65535:
            raise DataError(f"image {str(path)!r} holds {im.mode} values outside 0..65535; save it as 8- or 16-bit")
        codes = np.round(v * (255.0 / 65535.0)).astype(np.uint8)
        if isinstance(im.info.get("transparency"), int):  # a grey value marked transparent: white, as _opaque shows
            codes[v == im.info["transparency"]] = 255      # (the new 8-bit image would not carry the mark)
        return Image.fromarray(codes, "L")
    if im.mode == "F":
        raise DataError(f"image {str(path)!r} holds floating-point pixels (mode F); save it as 8- or 16-bit")
    return im


def _folder(cfg) -> Dataset:
    root = _need_path(cfg, "a folder of images (.png, .jpg, .webp, ...), optionally in one sub-folder per class")
    files, labels, classes = _list_images(root)
    tr, te = _split(len(files), cfg.n_test, cfg.seed, f"image folder {str(root)!r}")
    xtr, xte = _read_split(files, (tr, te), root, "L" if cfg.channels == 1 else "RGB", cfg.crop, cfg.image_size)
    y = np.asarray(labels) if labels is not None else None
    return _finish(str(root), cfg, xtr, xte, None if y is None else y[tr.numpy()],
                   None if y is None else y[te.numpy()], len(classes), classes=classes)


FOLDER_BAR = 2000  # folders of at least this many images show a progress bar while read (on a terminal)


def _read_split(files: list[Path], splits: tuple[Tensor, ...], root: Path, mode: str, crop, size) -> list[Tensor]:
    """Each split's images (its file indices in order) read straight into one (n, C, H, W) uint8 array per split: the
    folder is held once, never as a list of images and its concatenation."""
    from tqdm import tqdm

    first = _read_image(files[int(splits[0][0])], mode, crop, size)[0]  # (C, H, W): the shape every image must have
    out = [torch.empty((len(idx), *first.shape), dtype=torch.uint8) for idx in splits]
    bar = tqdm(total=len(files), desc=f"reading {len(files)} images", unit="img", leave=False,
               disable=None if len(files) >= FOLDER_BAR else True)
    with bar:
        for arr, idx in zip(out, splits):
            for p, i in enumerate(idx.tolist()):
                im = _read_image(files[i], mode, crop, size)[0]
                if im.shape != first.shape:  # both named from the root: sub-folders may repeat file names
                    raise DataError(f"images in {str(root)!r} have different sizes ({tuple(first.shape[1:])} in "
                                    f"{_relative(files[int(splits[0][0])], root)} and {tuple(im.shape[1:])} in "
                                    f"{_relative(files[i], root)}); set data.image_size")
                arr[p] = im
                bar.update()
    return out


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to the folder ``root`` (as is when outside it)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


# ----- .npy / .npz arrays ------------------------------------------------------------------------------
def read_image_array(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) from .npy or .npz (keys x/images/arr_0 and y/labels, or its only array)."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False), None
        with np.load(path, allow_pickle=False) as z:
            xk = npz_key(z, path, ("x", "images", "arr_0"), "image file", others=("y", "labels"))
            yk = next((k for k in ("y", "labels") if k in z.keys()), None)
            return z[xk], (z[yk] if yk else None)
    except DataError:
        raise
    except Exception as exc:  # numpy raises many types for unreadable files
        raise DataError(f"could not read image file {str(path)!r} ({type(exc).__name__}: {exc})") from None


def _npy(cfg) -> Dataset:
    p = _need_path(cfg, "a .npy or .npz file of images (N, H, W, C), uint8 or float")
    if p.suffix.lower() not in (".npy", ".npz"):
        raise DataError(f"data.name 'npy' reads .npy or .npz files, got {str(p)!r}")
    arr, y = read_image_array(p)
    x = image_tensor(arr, str(p))  # uint8 codes, or float32 in [-1, 1]
    y = None if y is None else _class_labels(y, x.shape[0], p)
    tr, te = _split(x.shape[0], cfg.n_test, cfg.seed, f"image file {str(p)!r}")
    k = int(y.max()) + 1 if y is not None else 0
    return _finish(str(p), cfg, x[tr], x[te], None if y is None else y[tr.numpy()],
                   None if y is None else y[te.numpy()], k)


def _class_labels(y: np.ndarray, n: int, p: Path) -> np.ndarray:
    """An image file's labels as (n,) int64 class indices 0..K-1; ``DataError`` for anything else (one-hot rows,
    text, fractions, negative "unlabelled" marks: a class-conditional model would read -1 as its last class)."""
    y = np.asarray(y)
    y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
    where = f"{str(p)!r}'s labels"
    if y.ndim != 1:
        raise DataError(f"{where} have shape {y.shape}; give one class index per image, (N,) (one-hot rows: "
                        "y.argmax(1))")
    if len(y) != n:
        raise DataError(f"{str(p)!r} has {n} images but {len(y)} labels")
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all())):
        raise DataError(f"{where} must be whole class indices 0, 1, ...; got values of type {y.dtype}")
    if n and y.min() < 0:
        raise DataError(f"{where} hold {y.min():g}: class indices are 0, 1, ... (drop unlabelled images first)")
    return y.astype(np.int64)


# ----- SVHN .mat ---------------------------------------------------------------------------------------
def read_svhn_mat(path: Path) -> tuple[Tensor, np.ndarray]:
    """SVHN cropped-digits .mat: X (32, 32, 3, N) uint8, y (N, 1) with 10 meaning digit 0 -> (N, C, H, W) uint8 codes
    and (N,) labels."""
    from scipy.io import loadmat
    try:
        d = loadmat(path)
    except Exception as exc:  # scipy raises many types for unreadable files
        raise DataError(f"could not read SVHN file {str(path)!r} ({type(exc).__name__}: {exc})") from None
    if "X" not in d or "y" not in d or d["X"].ndim != 4:
        raise DataError(f"SVHN file {str(path)!r} needs X of shape (32, 32, 3, N) and y of shape (N, 1)")
    x = image_tensor(np.transpose(d["X"], (3, 0, 1, 2)), str(path))  # (N, H, W, C) -> (N, C, H, W)
    y = d["y"].reshape(-1).astype(np.int64) % 10  # label 10 is the digit 0
    return x, y


def _svhn(cfg) -> Dataset:
    p = _need_path(cfg, "a folder with train_32x32.mat and test_32x32.mat (SVHN format 2)")
    files = [p / "train_32x32.mat", p / "test_32x32.mat"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"SVHN folder {str(p)!r} lacks {', '.join(missing)}; expected train_32x32.mat and test_32x32.mat")
    (xtr, ytr), (xte, yte) = (read_svhn_mat(f) for f in files)
    return _finish("svhn", cfg, xtr, xte, ytr, yte, 10, source=str(p))


# The image part of the dataset registry (``data/dataset.DATASETS`` merges it): name -> fn(cfg) -> Dataset.
IMAGE_LOADERS = {"digits": _digits, "cifar10": _cifar, "cifar100": _cifar, "imagefolder": _folder, "npy": _npy,
                 "svhn": _svhn}
