"""Load a user's vector data from .npy, .npz or .csv as a float tensor (N, D).

Errors are one sentence for the user (``DataError``): missing or unreadable file, wrong rank,
non-finite values. ``.npy``/``.npz`` are read with ``allow_pickle=False``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ebmlab.errors import DataError  # also importable from here, its older home


def read_array(path: str | Path) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {str(p)!r} does not exist; expected a .npy, .npz or .csv file of shape (N, D)")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
                if not keys:
                    raise DataError(f"data file {str(p)!r} holds no arrays")
                return z["x"] if "x" in keys else z[keys[0]]
        if suffix == ".csv":
            return np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2)
    except DataError:
        raise
    except Exception as exc:  # numpy raises many types for unreadable files
        raise DataError(f"could not read data file {str(p)!r} ({type(exc).__name__}: {exc})") from None
    raise DataError(f"data file {str(p)!r} has unsupported suffix {suffix!r}; expected .npy, .npz or .csv")


def load_vectors(path: str | Path) -> torch.Tensor:
    """(N, D) float32 tensor from a user file, checked for rank, size and finiteness."""
    arr = read_array(path)
    if arr.dtype.kind not in "fiu":
        raise DataError(f"data file {str(path)!r} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise DataError(f"data file {str(path)!r} must hold a 2-D array (N, D), got shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise DataError(f"data file {str(path)!r} needs at least 2 rows and 1 column, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(1).sum())
        raise DataError(f"data file {str(path)!r} contains NaN or inf values in {bad} row(s); clean them first")
    return torch.from_numpy(np.asarray(arr, dtype=np.float32))
