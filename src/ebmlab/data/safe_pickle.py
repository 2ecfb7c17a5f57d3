"""Restricted unpickling for CIFAR-10/100's official python batches (issue 3, item 1).

The batch files are pickles of plain dicts, lists, bytes and numpy arrays. ``RestrictedUnpickler``
resolves only numpy's ndarray/dtype reconstruction functions (numpy 1 and 2 module spellings) and
``_codecs.encode`` restricted to latin-1, and refuses every other global in ``find_class`` — before
anything is called, so a planted ``os.system`` is never executed.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from ebmlab.errors import DataError


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as used by protocol-2 pickles of bytes written by Python 3; latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError("refused _codecs.encode call with a non-latin-1 encoding")
    return text.encode("latin1")


def _numpy_core():
    try:
        import numpy._core.multiarray as multiarray, numpy._core.numeric as numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core.multiarray as multiarray, numpy.core.numeric as numeric
    return multiarray, numeric


def _safe_globals() -> dict:
    """The only globals a CIFAR batch may name (both numpy 1 and numpy 2 module spellings)."""
    multiarray, numeric = _numpy_core()
    allowed = {("_codecs", "encode"): _latin1_encode,
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: plain containers plus numpy array reconstruction, nothing else."""

    def find_class(self, module: str, name: str):
        fn = _safe_globals().get((module, name))
        if fn is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: CIFAR batches hold only dicts, lists and arrays")
        return fn


def safe_unpickle(path: Path) -> dict:
    """A CIFAR batch file as a dict with str keys; DataError for any refused or malformed content."""
    try:
        with open(path, "rb") as fh:
            obj = RestrictedUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"could not read CIFAR batch {str(path)!r} safely ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR batch {str(path)!r} holds a {type(obj).__name__}, expected a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
