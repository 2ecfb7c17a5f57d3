"""Load a user's vector data from .npy, .npz or .csv (commas; an optional header row of column names) as a float
tensor (N, D): float64 where float32 could not hold the values exactly (``check_vectors``), else float32.

Errors are one sentence for the user (``DataError``): missing or unreadable file, wrong rank,
non-finite values. ``.npy``/``.npz`` are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ebmlab.errors import DataError  # also importable from here, its older home

MIN_ROWS = 20                   # the held-out tenth (``data/dataset.array_dataset``) needs 2 rows: the sample metrics
#                                 compare two disjoint halves of it
FLOAT32_MAX = float(np.finfo(np.float32).max)
# a precision's rounding of a column (half its spacing at the column's largest magnitude) over the column's std:
# above the first a warning, from the second a refusal (``check_rounding``; nanosecond times of a short spread)
ROUNDING_WARN, ROUNDING_REFUSE = 1e-3, 0.1


def npz_key(z, path: Path, names: tuple[str, ...], what: str, others: tuple[str, ...] = ()) -> str:
    """The key of the data array in an opened .npz: the first of ``names`` it holds, else its only array
    besides ``others`` (e.g. labels). Several candidates and none of ``names`` is a ``DataError`` naming
    them (picking one silently could train on the wrong array)."""
    keys = list(z.keys())
    found = next((k for k in names if k in keys), None)
    if found is not None:
        return found
    rest = [k for k in keys if k not in others]
    if len(rest) == 1:
        return rest[0]
    if not keys:
        raise DataError(f"{what} {str(path)!r} holds no arrays")
    listed = ", ".join(repr(k) for k in keys[:6]) + (", ..." if len(keys) > 6 else "")
    raise DataError(f"{what} {str(path)!r} holds {len(keys)} arrays ({listed}) and none named "
                    f"{' or '.join(repr(n) for n in names)}; save the data under that key "
                    f"(np.savez(path, {names[0]}=array)) or in a file of its own")


def read_array(path: str | Path) -> np.ndarray:
    """The numpy array in a .npy, .npz (key ``x``, or its only array) or .csv file; ``DataError`` with one sentence otherwise."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data file {str(p)!r} does not exist; expected a .npy, .npz or .csv file of shape (N, D)")
    if p.is_dir():
        raise DataError(f"data file {str(p)!r} is a directory; expected a .npy, .npz or .csv file of shape (N, D)")
    suffix = p.suffix.lower()
    if suffix in (".npy", ".npz", ".csv") and p.stat().st_size == 0:
        raise DataError(f"could not read data file {str(p)!r}: it is empty (0 bytes); expected a {suffix} file of "
                        "shape (N, D)")
    try:
        if suffix in (".npy", ".npz"):
            return _numpy_file(p)
        if suffix == ".csv":
            return _read_csv(p)
    except DataError:
        raise
    except UnicodeDecodeError as exc:  # a .csv in another encoding (Excel's "CSV" on Windows: a code page)
        raise DataError(f"could not read data file {str(p)!r}: it is not UTF-8 text (a byte "
                        f"{exc.object[exc.start]:#04x}); save it as UTF-8 (e.g. Excel's \"CSV UTF-8\")") from None
    except Exception as exc:  # numpy raises many types for unreadable files
        if "allow_pickle" in str(exc):  # numpy's advice would be to unpickle: ebmlab never does
            raise DataError(f"could not read data file {str(p)!r}: it is not an array of numbers in numpy's format "
                            "(an object array, a pickle, or another kind of file named .npy/.npz; ebmlab never "
                            "unpickles); save the numbers with np.save") from None
        raise DataError(f"could not read data file {str(p)!r} ({type(exc).__name__}: {exc})") from None
    raise DataError(f"data file {str(p)!r} has unsupported suffix {suffix!r}; expected .npy, .npz or .csv")


def _numpy_file(p: Path) -> np.ndarray:
    """The array of a .npy file, or of an .npz archive (key ``x``, or its only array), read by what the file holds
    (a renamed file too); ``DataError`` for an archive member that is not a .npy array (a CSV zipped with it)."""
    content = np.load(p, allow_pickle=False)
    if isinstance(content, np.lib.npyio.NpzFile):
        with content as z:
            key = npz_key(z, p, ("x",), "data file")
            content = z[key]
        if not isinstance(content, np.ndarray):
            raise DataError(f"data file {str(p)!r}: its member {key!r} is not a .npy array (np.savez writes those); "
                            "save the data with np.savez(path, x=array)")
    return content


def _read_csv(p: Path) -> np.ndarray:
    """A comma-separated table of numbers, with or without one header row (column names: a first row whose fields
    are not all numbers is skipped; any later text is an error)."""
    with open(p, newline="", encoding="utf-8-sig") as fh:  # a byte-order mark (Excel writes one) is dropped: it made
        lines = (line for line in fh if line.strip())     # a first row of numbers look like a header, skipped
        first = next(lines, "")                           # (blank lines, before the header too, carry nothing)
        header = _is_header(first)
        try:
            with warnings.catch_warnings():  # numpy's warning names its file object; the DataError below says it
                warnings.filterwarnings("ignore", "loadtxt: input contained no data", UserWarning)
                x = np.loadtxt(lines if header else itertools.chain([first], lines), delimiter=",", dtype=np.float64,
                               ndmin=2)
        except ValueError:
            raise DataError(f"data file {str(p)!r}: {_csv_problem(p)}") from None
    if x.size == 0:
        raise DataError(f"data file {str(p)!r} holds no rows of data{' (only a header row)' if first.strip() else ''}; "
                        "expected a table of shape (N, D)")
    _not_pandas_defaults(p, first, header, x)
    return x


def _not_pandas_defaults(p: Path, first: str, header: bool, x: np.ndarray) -> None:
    """Refuse pandas' row index read as a feature, and warn of its default column names read as a row of data:
    ``DataFrame(x).to_csv(path)`` writes the header ``,0,1,...`` (the index has no name) and a first column
    0, 1, 2, ...; with ``index=False``, the header ``0,1,...`` is numbers."""
    names = [f.strip().strip('"') for f in first.rstrip("\r\n").split(",")]  # (quoted: QUOTE_NONNUMERIC)
    if header and names[0] in PANDAS_INDEX and x.shape[1] > 1 and np.array_equal(x[:, 0], np.round(x[:, 0])):
        raise DataError(f"data file {str(p)!r}: its first column has no name and holds whole numbers, as pandas' "
                        "to_csv writes a DataFrame's row index; save it with df.to_csv(path, index=False), or name "
                        "the column if it is data")
    if not header and len(names) > 1 and names == [str(i) for i in range(len(names))]:
        warnings.warn(f"data file {str(p)!r}: its first row, {first.strip()}, is read as a row of data; if it is "
                      "pandas' default column names (to_csv of a DataFrame without them), delete that row or name "
                      "the columns", UserWarning, stacklevel=4)


PANDAS_INDEX = ("", "Unnamed: 0")  # the header field of pandas' unnamed row index (as written, and as read back)
_OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs"}  # what spreadsheets in some locales, and TSV, use


def _csv_problem(p: Path) -> str:
    """The first line of a CSV that numpy could not read, said in the file's own line numbers (numpy counts
    rows from 0 after the header), with the likely cause: another separator, text, or a ragged row."""
    with open(p, newline="", encoding="utf-8-sig") as fh:
        lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(fh, 1)]
    data = [(n, line) for n, line in lines if line.strip()]
    top = data[0][0] if data and not _is_header(data[0][1]) else None  # the first row, when it is read as data
    data = data if top is not None else data[1:]  # (without the header row)
    width = None
    for n, line in data:
        fields = line.split(",")
        if not _numbers(line):
            sep = next((s for s in _OTHER_SEPARATORS if s in line and "," not in line), None)
            if sep:
                return (f"line {n} is separated by {_OTHER_SEPARATORS[sep]}, but ebmlab reads comma-separated files; "
                        f"save it with commas (e.g. pandas.read_csv(path, sep={sep!r}).to_csv(path, index=False))")
            bad = next(f.strip() for f in fields if f.strip() and not _numbers(f))
            if n == top:  # a first row of numbers and text: neither a header (names only) nor data
                return (f"line {n} holds {bad!r} beside numbers: a header row holds names only, a data row numbers "
                        "only (a missing value: fill or drop it first)")
            return f"line {n} holds {bad!r}, which is not a number (only a first header row may hold text)"
        empty = next((k for k, f in enumerate(fields, 1) if not f.strip()), None)
        if empty is not None and len(fields) > 1:
            return (f"line {n} has an empty field in column {empty} (a missing value); fill or drop the "
                    "rows with missing values first")
        width = width or len(fields)
        if len(fields) != width:
            return f"line {n} has {len(fields)} column(s) where the lines before it have {width}"
    return "it is not a table of numbers separated by commas"



def _is_header(line: str) -> bool:
    """A first row of column names: fields that are names, none a number (pandas' unnamed index leaves the first
    one empty). A row with a number is data, read (a comment after ``#`` is dropped) or refused in its own line
    number, never skipped: a first row with one missing value or a quoted number was once dropped in silence."""
    fields = [f.strip().strip('"\'').strip() for f in line.split("#", 1)[0].split(",")]
    if len(fields) > 1 and fields[0] in PANDAS_INDEX and fields[1:] == [str(i) for i in range(len(fields) - 1)]:
        return True  # pandas' to_csv of a DataFrame without column names: refused by _not_pandas_defaults
    named = [f for f in fields if f]
    return bool(named) and not any(_numbers(f) for f in named)


def _numbers(line: str) -> bool:
    try:
        [float(f) for f in line.split(",") if f.strip()]
    except ValueError:
        return False
    return True


def load_vectors(path: str | Path, min_rows: int = MIN_ROWS, what: str = "data file") -> torch.Tensor:
    """(N, D) float tensor (``check_vectors``' dtype) from a user file, checked for rank, size and finiteness
    (``min_rows``: training data are split, an out-of-distribution set is not and needs 1)."""
    return check_vectors(read_array(path), f"{what} {str(path)!r}", min_rows)


def check_vectors(arr: np.ndarray, where: str, min_rows: int = MIN_ROWS) -> torch.Tensor:
    """``arr`` as an (N, D) float tensor; ``DataError`` naming ``where`` (e.g. "data file 'x.npy'" or
    "the data passed to ebmlab.train") when it is not numbers, not 2-D, too small, non-finite or beyond
    the float32 range. float64 for what float32 cannot hold exactly (float64, 32- and 64-bit integers: epoch
    seconds, projected metres, large for their spread), so the standardiser subtracts their offset in float64
    (``data/dataset._standardiser``); float32 for the rest (float32, float16, 8- and 16-bit integers)."""
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{where} must hold numbers, got dtype {arr.dtype}")
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)  # ('>f4' from a FITS or .mat export is float32 too)
    if arr.ndim != 2:
        images = " (images of shape (N, H, W[, C]) or (N, C, H, W) are read by data.name=npy)"
        hint = {1: " (for N values of one column: x.reshape(-1, 1))", 3: images, 4: images}.get(arr.ndim, "")
        raise DataError(f"{where} must hold a 2-D array (N, D), got shape {arr.shape}{hint}")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        why = " (one tenth, at least 2, is held out for the evaluation)" if min_rows == MIN_ROWS else ""
        raise DataError(f"{where} has shape {arr.shape}; ebmlab needs at least {min_rows} row{'s' * (min_rows > 1)}"
                        f"{why} and 1 column")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(1).sum())
        raise DataError(f"{where} contains NaN or inf values in {bad} row(s); clean them first")
    top = max(abs(float(arr.max())), abs(float(arr.min())))  # (no copy of the rows, as np.abs(arr) would make)
    if top > FLOAT32_MAX:
        raise DataError(f"{where} holds values up to {top:.3g}, beyond the float32 range "
                        f"(about 3.4e38) that training uses; rescale the data")
    _check_float64_rounding(arr, where)
    exact32 = arr.dtype.itemsize < 4 or arr.dtype == np.float32  # float32, float16, 8/16-bit integers
    return torch.from_numpy(np.asarray(arr, dtype=np.float32 if exact32 else np.float64))


def _check_float64_rounding(arr: np.ndarray, where: str) -> None:
    """64-bit integers beyond 2**53 are rounded when read in float64 (nanosecond times of a short spread lose their
    detail): ``check_rounding`` in float64. Every other dtype is held exactly (float64, 32-bit integers in float64)."""
    if arr.dtype.kind in "iu" and arr.dtype.itemsize >= 8:
        check_rounding(arr, where, np.float64)


def _spread(x: np.ndarray) -> np.ndarray:
    """(D,) the columns' std; for integers, of their offsets from the column minimum, taken before float64 rounds
    them (nanoseconds near 1.7e18, 256 apart in float64, would all read as one value and pass as constant)."""
    if x.dtype.kind not in "iu":
        return np.asarray(x, dtype=np.float64).std(0)
    d = x - x.min(0)  # exact modulo 2**bits: read as unsigned, the true offset
    return d.view(np.dtype(f"u{d.dtype.itemsize}")).astype(np.float64).std(0)


def check_rounding(x: np.ndarray, where: str, precision: type = np.float32, stacklevel: int = 5) -> None:
    """Warn where reading the rows ``x`` (N, D) in ``precision`` rounds a column by more than ``ROUNDING_WARN`` of
    its std, and refuse (``DataError``) from ``ROUNDING_REFUSE`` (the rows would collapse onto a few values): values
    large for their spread. Both say to subtract an offset first."""
    std = _spread(x)  # (D,)
    x = np.asarray(x, dtype=np.float64)  # (N, D)
    top = np.abs(x).max(0)
    rounding = np.spacing(top.astype(precision)).astype(np.float64) / 2  # (D,) half the spacing there
    ratio = np.divide(rounding, std, out=np.zeros_like(std), where=std > 0)
    k = int(ratio.argmax())
    if ratio[k] <= ROUNDING_WARN:
        return
    said = (f"{where}: column {k} holds values up to {top[k]:.17g} with a spread (std) of {std[k]:.3g}; "
            f"{np.dtype(precision).name}, the precision it is read in, rounds them by up to {rounding[k]:.3g} "
            f"({ratio[k]:.2%} of the spread)")
    fix = "subtract an offset first (x - x.min(0)) and add it back to the samples"
    if ratio[k] >= ROUNDING_REFUSE:
        raise DataError(f"{said}, which erases the data: {fix}")
    warnings.warn(f"{said}; to keep that detail, {fix}", RuntimeWarning, stacklevel=stacklevel)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


LISTING_VERSION = 2  # run.json's data.listing_version: the listing walks linked folders (``walk_folder``)


def walk_folder(root: str | Path):
    """``os.walk`` of a data folder as ebmlab reads it (the image walk, the listing fingerprint, the run directory's
    checks): through linked folders, each real folder once (a folder linked twice, or a link back up: the first name
    in order), hidden folders left out, sub-folders in sorted order (so which name of a folder linked twice is read
    does not hang on the file system's listing order): (folder, sub-folders, file names) as ``os.walk`` gives them."""
    seen = set()
    for here, subs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            subs[:] = []
            continue
        seen.add(real)
        subs[:] = sorted(d for d in subs if not d.startswith("."))
        yield here, subs, names


def linked_folders(root: str | Path, files: bool = False):
    """The real paths of the linked folders ``walk_folder`` enters under ``root`` (a class linked in from elsewhere),
    and with ``files`` of the linked files it meets (the image walk reads a linked image as any other)."""
    for here, subs, names in walk_folder(root):
        links = [d for d in subs + (names if files else []) if os.path.islink(os.path.join(here, d))]
        yield from (Path(os.path.realpath(os.path.join(here, d))) for d in links)


def folder_fingerprint(path: str | Path) -> str:
    """Hex SHA-256 of a data folder's listing: the path relative to the folder and the size of every file the image
    walk reaches (``walk_folder``: through linked folders, each real folder once, hidden files and folders left out),
    sorted. Not the bytes: an image folder can hold a million files; this catches files added, removed, renamed or
    resized, which change the splits a run was trained and evaluated on."""
    root = Path(path).expanduser()
    return _listing_hash(root, (Path(here, n) for here, _, names in walk_folder(root) for n in names))


def folder_matches(path: str | Path, stored: str, legacy: bool = False) -> bool:
    """Whether ``stored`` is ``path``'s listing fingerprint as computed now; ``legacy`` (a run whose run.json has no
    ``listing_version``, trained before 2026-12-07): or as such runs stored it (``rglob``: the files of linked
    folders left out). Only for those: a folder without linked folders lists the same both ways, so a later run's
    listing would match the old walk of its folder after a linked class was added to it."""
    root = Path(path).expanduser()
    return folder_fingerprint(root) == stored or (legacy and _listing_hash(root, root.rglob("*")) == stored)


def _listing_hash(root: Path, files) -> str:
    rows = sorted(f"{f.relative_to(root).as_posix()}\t{f.stat().st_size}" for f in files
                  if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts))
    # surrogateescape: a name that is not UTF-8 (Latin-1 bytes on Linux) hashes as its bytes; valid names as before
    return hashlib.sha256("\n".join(rows).encode("utf-8", "surrogateescape")).hexdigest()
