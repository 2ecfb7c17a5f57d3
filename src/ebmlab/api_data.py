"""The user's data in ``ebmlab.train`` (``api.py``): data given in memory (a tensor, an array, a ``Dataset``) read
as (N, D) vectors in data coordinates and saved into the run as ``data.npy``, so the run is self-contained; data
given as a file or a dataset name go into the config's ``data`` section. Also ``Run.evaluate``'s out-of-distribution
sets, by name, by file or in memory (``ood_inputs``).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ebmlab.config import Config
from ebmlab.errors import ConfigError, DataError
from ebmlab.files import save_npy_atomic
from ebmlab.training.run_data import DATA_FILE  # in-memory data, saved into the run directory

__all__ = ["ARRAY_SUFFIXES", "DATA_FILE", "data_source", "dataset", "file_data_name", "folder_data_name", "image_config_note", "in_memory", "is_image_folder",
           "ood_inputs", "save_array"]

ARRAY_SUFFIXES = (".npy", ".npz", ".csv")  # files of vectors (the array loader)


def in_memory(data) -> np.ndarray | None:
    """(N, D) float array of data given in memory, in data coordinates; None for a path, a name or None."""
    if data is None or isinstance(data, (str, os.PathLike)):
        return None
    from ebmlab.data import Dataset as EbmDataset

    if isinstance(data, EbmDataset):
        if data.kind != "vector":
            raise DataError("ebmlab.train takes in-memory vectors; for an image Dataset pass its name or path")
        parts = [p for p in (data.train, data.val, data.test) if p is not None]  # every row: a split one's too
        x = torch.cat([data.transform.to_data(p) for p in parts])
    elif is_tensor_like(data):
        x = given_tensor(data, "the data passed to ebmlab.train")
    elif isinstance(data, torch.utils.data.Dataset):
        try:
            items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
            x = torch.stack([torch.as_tensor(it[0] if isinstance(it, (tuple, list)) else it) for it in items])
        except (TypeError, RuntimeError, IndexError) as exc:
            raise DataError(f"could not read the Dataset passed to ebmlab.train as (N, D) vectors ({exc})") from None
    elif isinstance(data, (np.ndarray, list, tuple)) or hasattr(data, "__array__"):  # e.g. a pandas DataFrame
        x = torch.from_numpy(_numbers(data))
    else:
        raise DataError(f"data must be a tensor or array (N, D), a Dataset, a file path or a dataset name, got a "
                        f"{type(data).__name__}")
    from ebmlab.data.arrays import check_vectors

    x = x.detach().cpu()
    arr = (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # (numpy has no bfloat16)
    if arr.ndim != 2:
        raise DataError(f"the data passed to ebmlab.train must be vectors (N, D), got shape {tuple(arr.shape)}; "
                        "for images save them as a .npy of (N, H, W[, C]) and pass its path with "
                        "overrides={'data.name': 'npy'}, or pass a dataset name or an image folder")
    return check_vectors(arr, "the data passed to ebmlab.train").numpy()


def _numbers(data, what: str = "the data passed to ebmlab.train") -> np.ndarray:
    """An array-like (a NumPy array, nested lists, a pandas DataFrame: what ``numpy.asarray`` reads) as a real
    array; DataError for values that are not real numbers (text, complex, missing objects)."""
    if np.ma.isMaskedArray(data) and np.ma.getmaskarray(data).any():  # (np.asarray would drop the mask)
        raise DataError(f"{what} has masked entries: fill or drop them first (a masked value is not a number)")
    try:
        arr = np.asarray(data)
    except ValueError:  # ragged: rows of different lengths, or a tuple (x, y) of features and labels
        raise DataError(f"{what} must be one array (N, D); got a {type(data).__name__} of parts numpy cannot stack "
                        "(rows of different lengths, or (x, y): pass x alone)") from None
    if arr.dtype.kind in "mM":  # datetime64 / timedelta64: counts of a unit numpy would pass on silently
        raise DataError(f"{what} holds dates or durations ({arr.dtype}); convert them to numbers first (e.g. "
                        "seconds since a reference time)")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:  # long double: torch reads float64 at most
        arr = arr.astype(np.float64)
    if arr.dtype.kind not in "biuf" and arr.dtype.kind != "c":
        try:
            arr = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError):
            pass
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what} must be real numbers; got values of type {arr.dtype} "
                        "(convert or drop the columns that are not numbers first)")
    # torch.from_numpy takes neither negative strides (x[::-1]) nor a foreign byte order ('>f4' from FITS, .mat), and
    # warns on a read-only array (a memory map): a copy then, in native order
    if arr.flags.c_contiguous and arr.dtype.isnative and arr.flags.writeable:
        return arr
    return np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C", copy=True)


def as_points(x, dtype: torch.dtype = torch.float32) -> Tensor:
    """Data-coordinate points given as a tensor (its graph kept: ``run(x)`` is differentiable in x) or an array
    (anything ``numpy.asarray`` reads) in ``dtype`` (the run's ``Affine.dtype``); DataError for what is not numbers."""
    if is_tensor_like(x):
        return given_tensor(x, "the points", detach=False).to(dtype)
    try:
        arr = _numbers(x, "the points")
    except DataError as exc:
        raise DataError(f"points must be numbers, a tensor or an array (B, ...), got {type(x).__name__} "
                        f"({' '.join(str(exc).split())[:120]})") from None
    return torch.from_numpy(arr.astype(np.float64 if dtype == torch.float64 else np.float32))


def is_tensor_like(x) -> bool:
    """Whether ``x`` is a tensor or a non-empty list or tuple of tensors (rows, or batches of them): what
    ``given_tensor`` reads."""
    return isinstance(x, Tensor) or (isinstance(x, (list, tuple)) and len(x) > 0
                                     and all(isinstance(r, Tensor) for r in x))


def given_tensor(x, what: str, detach: bool = True) -> Tensor:
    """A tensor, or a list of tensors stacked (its graph kept unless ``detach``), of real values that exist: DataError
    for a meta tensor (no values) or a complex one (its imaginary part would be dropped); a sparse one made dense."""
    try:
        t = torch.stack(list(x)) if isinstance(x, (list, tuple)) else x
    except RuntimeError:
        raise DataError(f"{what} must be one array (N, D); got a {type(x).__name__} of tensors that cannot be stacked "
                        "(rows of different shapes, or (x, y): pass x alone)") from None
    if t.is_meta:
        raise DataError(f"{what} is a tensor on the meta device, which holds no values")
    if t.is_complex():
        raise DataError(f"{what} must be real numbers; got a {t.dtype} tensor (take .real or .abs() first)")
    t = t.to_dense() if t.layout != torch.strided else t
    return t.detach() if detach else t


def warn_not_finite(values: Tensor, what: str) -> Tensor:
    """``values`` (B,), with a warning where some are NaN or inf (``run(x)``, ``run.log_density``: a warning, not an
    error, as they serve differentiable code that may mask such points itself)."""
    bad = int((~torch.isfinite(values.detach())).sum())
    if bad:
        warnings.warn(f"{bad} of {values.numel()} {what} are not finite (NaN or inf): the energy overflows at these "
                      "points, or the weights have diverged", RuntimeWarning, stacklevel=3)
    return values


def ood_inputs(ood, shape: tuple[int, ...], kind: str = "vector",
               dtype: torch.dtype = torch.float32) -> tuple[list[str], dict[str, Tensor]]:
    """``Run.evaluate(ood=...)`` as (names, arrays). Names and files (a string, a path, or a sequence of them) are
    what ``ebmlab eval --ood`` takes; a mapping {name: tensor or array (N, *shape)} gives sets held in memory, in data
    coordinates like the run's data (vectors in ``dtype``, the run's ``Affine.dtype``), each scored as
    ``ood_auroc_<name>``. For an image run (``kind``), integer images are read as the loaders read them
    (v / 127.5 - 1) and floats must lie in the data's [-1, 1] (``_image_points``).
    DataError for a set that is not finite real numbers of the run's point shape ``shape``."""
    if isinstance(ood, (str, os.PathLike)):
        return [str(ood)], {}
    if not isinstance(ood, Mapping):
        return [str(name) for name in ood], {}
    arrays = {}
    for name, x in ood.items():
        what = f"the out-of-distribution set {name!r}"
        if not isinstance(name, str) or not name:
            raise DataError(f"ood= takes a mapping of non-empty names to arrays; got the key {name!r}")
        raw = (given_tensor(x, what).cpu() if is_tensor_like(x)
               else torch.from_numpy(_numbers(x, what)))
        t = raw.float()
        if t.dim() != len(shape) + 1 or tuple(t.shape[1:]) != tuple(shape) or len(t) == 0:
            raise DataError(f"{what} has shape {tuple(t.shape)}; the run's points are {tuple(shape)}, so give (N, "
                            f"{', '.join(map(str, shape))}) with N >= 1")
        if not torch.isfinite(t).all():
            raise DataError(f"{what} contains NaN or inf")
        arrays[name] = _image_points(raw, t, what) if kind == "image" else raw.to(dtype)  # (the run's precision)
    return [], arrays


def folder_data_name(path: Path) -> str:
    """The loader of a folder given as the data: ``cifar10`` / ``cifar100`` for the official python version's batch
    files (the folder or its ``cifar-10-batches-py`` / ``cifar-100-python``), else ``imagefolder`` (image files)."""
    from ebmlab.data.images import CIFAR_LAYOUT, cifar_root

    return next((name for name in CIFAR_LAYOUT if cifar_root(name, path) is not None), "imagefolder")


def file_data_name(path: Path) -> str:
    """The loader of a file given as the data: ``npy`` (images) for a .npy/.npz array of the images' shapes, (N, H, W,
    C) or (N, C, H, W) with C = 1 or 3, or (N, H, W) with H, W >= 8, read from its header only; else ``array``
    (vectors: the array loader names the formats it reads, and refuses other shapes with a hint)."""
    shape = _array_shape(path) if path.suffix.lower() in (".npy", ".npz") else None
    if shape is None:
        return "array"
    images = (len(shape) == 4 and (shape[1] in (1, 3) or shape[-1] in (1, 3))) or (len(shape) == 3 and min(shape[1:]) >= 8)
    return "npy" if images else "array"


def _array_shape(path: Path) -> tuple[int, ...] | None:
    """The shape of a .npy file's array or of an .npz file's image array (keys as the image loader reads them), from
    the header; None where it cannot be read (the loader then says why)."""
    import zipfile

    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False).shape
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(".npy")]
            key = next((n for n in ("x.npy", "images.npy", "arr_0.npy") if n in names), None)
            key = key or (names[0] if len(names) == 1 else None)
            if key is None:
                return None
            with zipfile.Path(zf, key).open("rb") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                return tuple(read(fh)[0])
    except Exception:  # noqa: BLE001 (numpy and zipfile raise many types; the loader reports the file)
        return None


def _image_points(raw: Tensor, t: Tensor, what: str) -> Tensor:
    """An in-memory set of an image run's points ``t`` (float32 of ``raw``) in its data coordinates: integer images
    as 8-bit codes, v / 127.5 - 1, as the loaders read them (they were once scored as 0..255, far outside the data, so
    every AUROC read 0), refused outside [0, 255]; floats as given (data coordinates, as ``run(x)`` takes them),
    refused outside [-1, 1] (images in [0, 255] held as floats: we do not guess the scaling)."""
    if not raw.dtype.is_floating_point and raw.dtype != torch.bool:
        if float(t.min()) < 0 or float(t.max()) > 255:
            raise DataError(f"{what} holds integers in [{float(t.min()):.0f}, {float(t.max()):.0f}]; integer images "
                            "must be 8-bit codes in [0, 255]")
        return t / 127.5 - 1
    lo, hi = float(t.min()), float(t.max())  # (finite, at least one row: checked by ood_inputs)
    if lo < -1.0 or hi > 1.0:
        raise DataError(f"{what} holds values in [{lo:.3g}, {hi:.3g}]; an image run's points lie in [-1, 1]: give "
                        "uint8 images (0..255) or floats already in [-1, 1]")
    return t


def is_image_folder(path: Path) -> bool:
    """Whether a data path names a folder of images: a directory not named like an array file (a directory
    ``x.npy`` is a mistaken array path and is refused as one)."""
    return path.is_dir() and path.suffix.lower() not in ARRAY_SUFFIXES


def image_config_note(kind: str, model: str, chosen: bool) -> str | None:
    """The note for images trained on the default vector model because no config chose one (``chosen``: a config
    or the user's ``model.name``): the run works, with the MLP on flattened pixels and vector sampler settings."""
    if kind != "image" or model != "mlp" or chosen:
        return None
    return ("the data are images and no config was given: training the default vector MLP on flattened pixels with "
            "vector sampler settings; for an image model choose an image config, e.g. digits_hybrid (small images) "
            "or paper004_cifar10 (32x32; `ebmlab configs` lists them)")


def looks_like_a_name(text: str) -> bool:
    """Whether ``text``, which is no existing path, is meant as a dataset's name (``digits``, a typo of one) rather
    than a path: it has no folder and no suffix."""
    return not ("/" in text or os.sep in text or Path(text).suffix)


def data_source(raw: dict, data: str | os.PathLike, named: bool = False) -> None:
    """``data`` given as a file (``array`` data, absolute path), a folder (``imagefolder``: images, one sub-folder
    per class; ``cifar10`` / ``cifar100``: the official python version's batch files) or a dataset name. The path says which loader reads it, as ``ebmlab train --data`` does, unless the
    caller's overrides name ``data.name`` (``named``): a config's own dataset (``digits`` of ``digits_hybrid``) is
    not the data given (it trained on digits silently)."""
    section = dict(raw.get("data") or {})
    p = Path(data).expanduser()
    if p.exists():
        section["path"] = str(p.absolute())
        if not named:
            if is_image_folder(p):
                section["name"] = folder_data_name(p)
            else:  # a file: images (N, H, W[, C]) or vectors (the array loader names the formats it reads)
                section["name"] = file_data_name(p)
    elif isinstance(data, os.PathLike) or not looks_like_a_name(str(data)):
        raise DataError(f"data {str(data)!r} does not exist (a path: dataset names such as 'digits' have no "
                        f"folder or suffix)")
    else:
        if named and section.get("name") not in (None, str(data)):  # as ``ebmlab train --data NAME --set data.name=``
            raise DataError(f"data={str(data)!r} and the override data.name={section['name']!r} name two datasets: "
                            "give one")
        section["name"] = str(data)
    raw["data"] = section


def dataset(cfg: Config, x_mem: np.ndarray | None):
    """The ``Dataset`` training uses: built from memory exactly as the ``array`` loader will rebuild it
    from the saved ``data.npy``, or by the registry."""
    from ebmlab.data import build_dataset
    from ebmlab.data.dataset import array_dataset

    if x_mem is None:
        return build_dataset(cfg.data)
    return array_dataset(torch.from_numpy(x_mem), cfg.data, str(cfg.data.path),
                         shown="the data given to ebmlab.train")  # (its data.npy is written once it is accepted)


def save_array(path: Path, x: np.ndarray) -> None:
    """``np.save`` atomically (``files.save_npy_atomic``: a temp file, fsync and a rename), float64 rows as float64
    (``in_memory``'s wide data: a resumed run and its evaluation read the rows it trained on), else float32."""
    save_npy_atomic(path, x if x.dtype == np.float64 else x.astype(np.float32, copy=False))


def resume_or_start(resume, run_dir: Path, overwrite: bool, x_mem: np.ndarray | None) -> bool:
    """``ebmlab.train``'s ``resume``: False starts a new run in ``run_dir``; True continues the run there from its latest
    checkpoint; "auto" continues it if it holds a step checkpoint and starts it otherwise (one call for a job that a
    scheduler may requeue, as ``ebmlab train --resume auto``). Returns whether it continues. A continued run's data
    given in memory must be its own rows (its ``data.npy``): they are not saved again."""
    from ebmlab.training.checkpoint import latest_checkpoint

    if resume not in (False, True, "auto"):
        raise ConfigError(f"resume must be False, True or 'auto', got {resume!r}")
    if resume and overwrite:
        raise ConfigError("resume continues a run and overwrite replaces it; pass only one of them")
    go_on = latest_checkpoint(run_dir / "checkpoints") is not None if resume == "auto" else bool(resume)
    if resume == "auto" and not go_on and run_dir.is_dir():  # a result kept without its step checkpoints: not a
        from ebmlab.training.run_dir import nothing_to_resume, has_result  # fresh start, which would replace it
        if has_result(run_dir):
            from ebmlab.training.checkpoint import CheckpointError
            raise CheckpointError(nothing_to_resume(run_dir).replace("--resume:", "--resume auto:", 1))
    if go_on and x_mem is not None and run_dir.is_dir():  # (no directory: resuming says that itself)
        _check_same_rows(run_dir / DATA_FILE, x_mem)
    return go_on


def _check_same_rows(path: Path, x: np.ndarray) -> None:
    """Refuse rows other than those a run was trained on (its ``data.npy`` as ``save_array`` wrote it: float64 rows,
    or float32, as every run before float64 data kept their precision)."""
    if not path.is_file():
        raise DataError(f"{str(path)!r} does not exist: this run was not trained on data given in memory, so resume "
                        "it with its own data (data=None or its path)")
    stored = np.load(path, allow_pickle=False)
    if stored.shape != x.shape or not np.array_equal(stored, x.astype(stored.dtype, copy=False)):
        raise DataError(f"the rows given are not the run's own ({str(path)!r}, {stored.shape[0]} rows): a resumed run "
                        "trains on the data it started with; give those rows, or start a new run (another out= or "
                        "overwrite=True)")
