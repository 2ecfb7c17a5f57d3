"""Restricted unpickling for CIFAR-10/100's official python batches (issue 3, item 1).

The batch files are pickles of plain dicts, lists, bytes and numpy arrays. ``RestrictedUnpickler``
resolves only numpy's ndarray/dtype reconstruction functions (numpy 1 and 2 module spellings) and
``_codecs.encode`` restricted to latin-1, and refuses every other global in ``find_class`` — before
anything is called, so a planted ``os.system`` is never executed. BUILD (``__setstate__`` / attribute
updates) is allowed only on the numpy arrays and dtypes being rebuilt (issue 13, item 13: BUILD on an
allowed function rewrote its ``__defaults__``); it uses the pure-Python unpickler, whose opcodes can be
restricted.
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
        import numpy._core.multiarray as multiarray  # numpy >= 2
        import numpy._core.numeric as numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core.multiarray as multiarray
        import numpy.core.numeric as numeric
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


def _refuse(self, pid):
    raise pickle.UnpicklingError("refused a persistent id: CIFAR batches hold only dicts, lists and arrays")


class RestrictedUnpickler(pickle._Unpickler):  # the Python unpickler: its opcodes can be restricted
    """Unpickler for CIFAR batches: plain containers plus numpy array reconstruction, nothing else.

    ``find_class`` resolves only ``_safe_globals``; BUILD (``__setstate__`` or attribute updates) is
    allowed only on the numpy arrays and dtypes those functions return, never on the allowed functions
    or classes themselves (BUILD on a function would rewrite its ``__defaults__`` for the process)."""

    dispatch = dict(pickle._Unpickler.dispatch)  # noqa: RUF012 -- the pure-Python unpickler's opcode table

    def find_class(self, module: str, name: str):
        """Only the allow-listed numpy classes; anything else is refused without being imported."""
        fn = _safe_globals().get((module, name))
        if fn is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: CIFAR batches hold only dicts, lists and arrays")
        return fn

    def load_build(self):
        """BUILD (``__setstate__``) only on numpy objects."""
        if len(self.stack) < 2:
            raise pickle.UnpicklingError("malformed pickle: BUILD without an object")
        inst, state = self.stack[-2], self.stack[-1]  # load_build pops the state, updates the object
        if not (type(inst) is np.ndarray or isinstance(inst, np.dtype)):
            raise pickle.UnpicklingError(f"refused BUILD on a {type(inst).__name__}: only numpy arrays and dtypes "
                                         "may be restored from their state")
        if not isinstance(state, tuple):
            raise pickle.UnpicklingError("refused BUILD with a non-tuple state: numpy restores arrays from tuples")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build
    persistent_load = _refuse


def safe_unpickle(path: Path) -> dict:
    """A CIFAR batch file as a dict with str keys; DataError for any refused or malformed content."""
    try:
        with open(path, "rb") as fh:
            obj = RestrictedUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError) as exc:
        raise DataError(f"could not read CIFAR batch {str(path)!r} safely ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR batch {str(path)!r} holds a {type(obj).__name__}, expected a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
