"""The ``Dataset`` every objective trains on, and the registry that builds one from ``DataConfig``.

Coordinates. Models work in *model coordinates*: for vector data each coordinate is standardised,
z = (x - mean) / std with the training split's mean and std (``data.standardize``, on by default);
for images the loaders return [-1, 1]. Chains start from N(0, I) in model coordinates, so step sizes
are in units of the data's own standard deviation and the same defaults serve any user's vectors.
Why per-coordinate: paper 004's rings have std 1.53 in (x1, x2), 0.1 in x3 and 0.01 in the other seven (noise
std 0.1 in three directions, 0.01 in seven); a ratio of ~150:1 in std forces a tiny step for stability while the ring directions need large moves
(measured in issue 2: no scheme learned the raw rings in 150 s; standardised, data-CD reached KL 0.66).
``to_data`` maps back; ``log_det`` is log |dz/dx| (= -Σ log std), so a model density in data
coordinates is p_z(z) * exp(log_det).
``data.whiten`` (vectors, off by default) goes one step further: z = W (x - mean) / std with W the ZCA
whitening of the standardised training rows (their covariance becomes I; ``log_det`` adds log |det W|).
Per-coordinate scaling cannot undo correlations: scikit-learn's breast-cancer table, standardised, has
correlation eigenvalues from 0.00016 to 9, so the data fill a thin slab of N(0, I) where an isotropic
sampler step must resolve a 0.013-wide direction (docs/data_defaults.md).

``data.val_fraction`` (vectors, off by default) moves that share of the training rows (at least 2) into a
validation split ``Dataset.val``, drawn with ``data.seed`` and left out of the standardiser's fit: rows no
weight and no statistic has seen, for ``train.select_every`` (``training/selection.py``); ``refit_transform`` fits
the standardiser on training and validation rows together once that choice is made (``train.select_refit``).

Registry: ``DATASETS[name] = fn(cfg: DataConfig) -> Dataset``, built here from its parts: toys from
``data/toy.py``, ``array`` reads ``data.path``, the tables ``breast_cancer`` and ``wine`` from ``data/tabular.py``,
the image loaders from ``data/images.IMAGE_LOADERS``.
``Affine`` and ``Dataset`` live in ``data/base.py`` (re-exported here).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ebmlab.data import images, tabular
from ebmlab.data.arrays import check_rounding, load_vectors
from ebmlab.data.base import Affine, Dataset
from ebmlab.data.toy import TOYS
from ebmlab.errors import DataError

__all__ = ["DATASETS", "Affine", "Dataset", "array_dataset", "build_dataset", "column_scale", "refit_transform"]


CONSTANT_SCALE = 1e-8  # a constant column's scale, x the widest column's std: N(0, 1) in it maps back to that value
NEGLIGIBLE_SPREAD = 1e-12  # a column whose std is at most this x the widest column's is constant
WHITEN_FLOOR = 1e-6  # eigenvalues of the correlation matrix below this x the largest are raised to it


def _standardiser(x: Tensor, on: bool, whiten: bool = False) -> Affine:
    """The ``Affine`` of rows ``x`` (N, D), stored in their precision: float64 rows (a user's float64 or wide
    integer vectors) keep a float64 shift and scale, so the model rows are (x - shift) / scale computed in float64
    and samples map back without float32's rounding at the data's magnitude; float32 rows as they always were."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if not on:  # the rows go to the networks as they are, in float32: float64 values large for their spread round
        if dtype == torch.float64:
            check_rounding(x.numpy(), "the data (data.standardize false: the networks read them in float32)")
        return Affine(torch.zeros(x.shape[1], dtype=dtype), torch.ones(x.shape[1], dtype=dtype))
    mean, std = column_stats(x)  # in float64: float32 squares overflow for values beyond ~1e19
    std = column_scale(std, CONSTANT_SCALE)
    if not whiten:
        return Affine(mean.to(dtype), std.to(dtype))
    if x.shape[0] < 2:
        raise DataError("data.whiten needs at least 2 training rows")
    return Affine(mean.to(dtype), std.to(dtype), *_zca(_covariance(x, mean, std)))  # (W float32: acts on O(1) rows)


STATS_BLOCK = 1 << 22  # values per float64 block of column_stats (32 MB)


def column_stats(x: Tensor, fn=None) -> tuple[Tensor, Tensor]:
    """Each column's mean and std (D,), float64, of the rows ``fn(x)`` (N, D) (``fn``: a row-wise map, e.g. to data
    coordinates), without a float64 copy of them all: rows that fit ``STATS_BLOCK`` values in one piece (the
    arithmetic they always had), more in blocks of rows (two passes: the sums, then the squared deviations)."""
    fn = fn or (lambda rows: rows)
    blocks = _row_blocks(x)
    if blocks is None:
        x64 = fn(x).double()
        return x64.mean(0), x64.std(0)
    mean = sum(fn(x[b]).double().sum(0) for b in blocks) / x.shape[0]
    var = sum((fn(x[b]).double() - mean).square().sum(0) for b in blocks) / (x.shape[0] - 1)
    return mean, var.sqrt()


def _row_blocks(x: Tensor) -> list[slice] | None:
    """Blocks of rows of ``x`` (N, ...) of at most ``STATS_BLOCK`` values each; None when all fit one."""
    step = max(1, STATS_BLOCK // max(1, x[0].numel()))
    return None if x.shape[0] <= step else [slice(i, i + step) for i in range(0, x.shape[0], step)]


def _covariance(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``torch.cov`` (D, D) float64 of the standardised rows z = (x - mean) / std of ``x`` (N, D), without them all in
    float64 (``column_stats``' blocks of rows: in one piece, the arithmetic it always had, or two passes)."""
    blocks, z = _row_blocks(x), (lambda rows: (rows.double() - mean) / std)
    if blocks is None:
        return torch.cov(z(x).T).reshape(x.shape[1], x.shape[1])
    centre = sum(z(x[b]).sum(0) for b in blocks) / x.shape[0]
    return sum((z(x[b]) - centre).T @ (z(x[b]) - centre) for b in blocks) / (x.shape[0] - 1)


def column_scale(std: Tensor, constant: float) -> Tensor:
    """Each column's std (D,), with a constant column's (at most ``NEGLIGIBLE_SPREAD`` x the widest column's std:
    rounding, e.g. after whitening's round trip) replaced by ``constant`` x the widest column's std. Relative to the
    data's own units, as an absolute floor is not (1e-8 made data of spread 1e-10 train as if constant, their
    samples 100x too wide). DataError when every column is constant."""
    top = float(std.max())
    if not top > 0:
        raise DataError("every column of the data holds one value; there is no spread to learn")
    return torch.where(std > NEGLIGIBLE_SPREAD * top, std, std.new_tensor(constant * top))


def _zca(cov: Tensor) -> tuple[Tensor, Tensor]:
    """(W, W^-1), each (D, D) float32: ZCA whitening of standardised rows whose covariance, i.e. correlation
    matrix, is C = ``cov`` (``_covariance``): W = C^(-1/2) (the symmetric root: each whitened coordinate stays
    closest to its own column). Eigenvalues below ``WHITEN_FLOOR`` x the largest (collinear columns, N <= D) are
    raised to that floor."""
    evals, evecs = torch.linalg.eigh(cov)  # ascending, (D,), (D, D)
    evals = evals.clamp_min(WHITEN_FLOOR * float(evals.max().clamp_min(1e-12)))
    w = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    w_inv = evecs @ torch.diag(evals.sqrt()) @ evecs.T
    return w.float(), w_inv.float()


def split_validation(rows: Tensor, fraction: float | None) -> tuple[Tensor | None, Tensor]:
    """(validation, training) rows: the first max(2, round(fraction x N)) of ``rows`` (N, D), which come in
    random order, and the rest; (None, rows) without a fraction. DataError when fewer than 2 would train."""
    if fraction is None:
        return None, rows
    n_val = max(2, round(fraction * rows.shape[0]))
    if rows.shape[0] - n_val < 2:
        raise DataError(f"data.val_fraction={fraction} leaves {rows.shape[0] - n_val} of {rows.shape[0]} training "
                        "rows; the data are too few for a validation split: set data.val_fraction=null")
    return rows[:n_val], rows[n_val:]


def _vector_dataset(name: str, train: Tensor, test: Tensor, cfg, dist=None) -> Dataset:
    """A vector ``Dataset`` from data-coordinate splits: the validation rows split off ``train`` (in random
    order), the standardiser fitted on the remaining training rows."""
    val, train = split_validation(train, cfg.val_fraction)
    tf = _standardiser(train, cfg.standardize, cfg.whiten)
    return Dataset(name, "vector", tf.to_model(train), tf.to_model(test), tf, dist=dist,
                   val=None if val is None else tf.to_model(val))


def refit_transform(data: Dataset, cfg) -> Dataset:
    """``data`` in the coordinates of a standardiser (``DataConfig`` ``cfg``'s) fitted on its training and
    validation rows together: the refit of a run whose validation check chose the untrained model
    (``train.select_refit``, ``training/selection.py``), as a model search refits its choice on all its rows."""
    rows = data.transform.to_data(data.train if data.val is None else torch.cat([data.val, data.train]))
    return data.with_transform(_standardiser(rows, cfg.standardize, cfg.whiten))


def _toy(cfg) -> Dataset:
    dist = TOYS[cfg.name]()
    g = torch.Generator().manual_seed(cfg.seed)
    train, test = dist.sample(cfg.n_train, g), dist.sample(cfg.n_test, g)
    return _vector_dataset(cfg.name, train, test, cfg, dist)


def _array(cfg) -> Dataset:
    if not cfg.path:
        raise DataError("data.name 'array' needs a file: pass --data PATH (.npy, .npz or .csv of shape (N, D))")
    return array_dataset(load_vectors(cfg.path), cfg, str(cfg.path))


def array_dataset(x: Tensor, cfg, name: str, shown: str | None = None) -> Dataset:
    """The ``Dataset`` of user vectors ``x`` (N, D) in data coordinates: a held-out split of
    min(data.n_test, N // 10) rows drawn with ``data.seed`` (then ``data.val_fraction``'s validation rows),
    the standardiser fitted on the rest. The
    ``array`` loader and ``ebmlab.train`` (in-memory data, saved into the run) both build it here, so a
    run reloaded from its file sees exactly the split and transform it was trained with. ``shown``: how an error
    names the rows (default ``name``, the file; rows given in memory are not in their file yet)."""
    shown = shown or repr(name)
    if bool((x == x[:1]).all()):
        raise DataError(f"{shown} holds one value in every column (all its rows are the same point); there is "
                        "nothing to learn")
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(cfg.seed))
    n_test = min(cfg.n_test, max(1, x.shape[0] // 10))
    if n_test < 2:  # (a file or ebmlab.train's array with fewer than arrays.MIN_ROWS rows is refused when read)
        cause = f"data.n_test={cfg.n_test}" if cfg.n_test < 2 else f"{x.shape[0]} rows (a tenth is held out)"
        raise DataError(f"{cause} leave {n_test} held-out row of {shown}; the evaluation's sample metrics need at "
                        "least 2 (two disjoint halves)")
    return _vector_dataset(name, x[perm[n_test:]], x[perm[:n_test]], cfg)


def _tabular(cfg) -> Dataset:  # a scikit-learn table's in-distribution rows, built as a user's array
    return array_dataset(tabular.inliers(cfg.name), cfg, cfg.name)


DATASETS = {**{name: _toy for name in TOYS}, "array": _array, **images.IMAGE_LOADERS,
            **{name: _tabular for name in tabular.TABLES}}
PATHLESS = frozenset({*TOYS, *tabular.TABLES, "digits"})  # built or bundled: they read no data.path


def build_dataset(cfg) -> Dataset:
    """The ``Dataset`` that ``DataConfig`` ``cfg`` names (``DATASETS``); ``DataError`` with one sentence for
    an unknown name, a missing or bad file, or values that overflow after standardising."""
    if cfg.name not in DATASETS:
        raise DataError(f"unknown dataset {cfg.name!r}; available datasets are: {', '.join(sorted(DATASETS))}")
    data = DATASETS[cfg.name](cfg)
    if cfg.val_fraction is not None and data.kind != "vector":
        raise DataError(f"data.val_fraction splits vector data (train.select_every's validation checks); {cfg.name!r} "
                        "holds images: set data.val_fraction=null, and train.select_every=null with it")
    if not all(torch.isfinite(split).all() for split in (data.train, data.test) if isinstance(split, Tensor)):  # (codes are)
        where = f"data file {str(cfg.path)!r}" if cfg.path else f"dataset {cfg.name!r}"
        raise DataError(f"{where} gives non-finite values in model coordinates (its spread overflows "
                        "float32 after standardising); rescale the data or set data.standardize=false")
    return data
