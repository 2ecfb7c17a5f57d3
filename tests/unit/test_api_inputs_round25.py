"""Round 25: array-likes a notebook hands ebmlab's Python API (ebmlab.train, Run.__call__, Run.log_density,
Run.sample(init=...), Run.evaluate(ood=...)): memory layouts, dtypes, containers and shapes. Each input is either read
as the same numbers whatever its layout, or refused with ebmlab's one-sentence DataError; never a torch/numpy
traceback, never silently changed (a read-only helper's audit, docs/testing.md "Twenty-sixth round"). Tests marked
``# WAS A BUG`` failed on the code as audited (commit ``f793ffa``) and pass with its fixes in ``api_data.py``."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.api_data import ood_inputs
from ebmlab.errors import DataError

TINY = dict(evaluate=False, model={"width": 16, "depth": 1}, train={"steps": 5, "progress": False})


def _rows(n: int = 60, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _train(data, out):
    return ebmlab.train("hybrid", data=data, out=out, **TINY)


@pytest.fixture(scope="module", autouse=True)
def run(tmp_path_factory):
    """The module's one trained run (autouse: the process's first, slowest training is paid here, once)."""
    return _train(_rows(), tmp_path_factory.mktemp("r25") / "run")


@pytest.fixture(scope="module")
def pts():
    return _rows(8, seed=1)


# ----- ebmlab.train: layouts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("view", ["fortran", "transposed", "every_other"])
def test_train_reads_strided_layouts_as_the_same_rows(tmp_path, view):
    x = _rows(120)
    given = {"fortran": np.asfortranarray(x), "transposed": np.ascontiguousarray(x.T).T,
             "every_other": x[::2]}[view]
    r = _train(given, tmp_path / "r")
    assert np.array_equal(np.load(tmp_path / "r" / "data.npy"), np.ascontiguousarray(given))
    assert r.checkpoint_step in (0, 5)


def test_train_losses_do_not_depend_on_memory_layout(tmp_path):
    x = _rows()
    a, b = _train(x, tmp_path / "c"), _train(np.asfortranarray(x), tmp_path / "f")
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_train_reads_read_only_and_memory_mapped_arrays(tmp_path):
    x = _rows()
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert not mm.flags.writeable
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not writable")  # torch's warning on a read-only array: copied
        _train(mm, tmp_path / "r")
    assert np.array_equal(np.load(tmp_path / "r" / "data.npy"), x)


def test_train_reads_reversed_columns(tmp_path):
    # WAS A BUG: x[:, ::-1] (negative strides) is a raw torch ValueError "At least one stride ... is negative":
    # src/ebmlab/api_data.py:48 torch.from_numpy(_numbers(data)); fix: np.ascontiguousarray in _numbers.
    x = _rows()
    _train(x[:, ::-1], tmp_path / "r")
    assert np.array_equal(np.load(tmp_path / "r" / "data.npy"), x[:, ::-1])


def test_train_reads_big_endian_arrays(tmp_path):
    # WAS A BUG: a '>f4' array (FITS, some HDF5/.mat files) is a raw torch ValueError "byte order different from the
    # native": src/ebmlab/api_data.py:48; fix: arr.astype(arr.dtype.newbyteorder("="), copy=False) in _numbers.
    x = _rows()
    _train(x.astype(">f4"), tmp_path / "r")
    assert np.array_equal(np.load(tmp_path / "r" / "data.npy"), x)


# ----- ebmlab.train: dtypes and containers -------------------------------------------------------------------------
def test_train_list_of_lists_is_read_exactly(tmp_path):
    x = _rows()
    _train(x.tolist(), tmp_path / "r")
    assert np.array_equal(np.load(tmp_path / "r" / "data.npy"), x.astype(np.float64))


def test_train_int64_rows_are_kept_in_float64(tmp_path):
    x = np.random.default_rng(0).integers(0, 7, size=(60, 3))
    _train(x, tmp_path / "r")
    stored = np.load(tmp_path / "r" / "data.npy")
    assert stored.dtype == np.float64 and np.array_equal(stored, x)


def test_train_tensor_requiring_grad_is_detached(tmp_path):
    x = torch.from_numpy(_rows()).requires_grad_()
    _train(x, tmp_path / "r")
    assert np.array_equal(np.load(tmp_path / "r" / "data.npy"), x.detach().numpy())


def test_train_list_of_tensors_requiring_grad(tmp_path):
    # WAS A BUG: a list of row tensors with requires_grad=True is a raw RuntimeError "Can't call numpy() on Tensor that
    # requires grad" from np.asarray at src/ebmlab/api_data.py:67 (only ValueError is caught), while one such tensor
    # is detached (api_data.py:54); fix: torch.stack a list/tuple of tensors and detach, or catch RuntimeError.
    x = _rows()
    _train([torch.from_numpy(r).requires_grad_() for r in x], tmp_path / "r")
    assert np.array_equal(np.load(tmp_path / "r" / "data.npy"), x)


def test_train_masked_array_is_not_trained_on_its_masked_values(tmp_path):
    # WAS A BUG: np.ma masked entries are silently trained on as numbers (np.asarray drops the mask):
    # src/ebmlab/api_data.py:67; fix: refuse a masked array with masked entries (DataError, like NaN), or fill NaN.
    x = _rows()
    masked = np.ma.masked_array(x, mask=np.zeros_like(x, dtype=bool))
    masked[3, 1] = np.ma.masked
    with pytest.raises(DataError):
        _train(masked, tmp_path / "r")


@pytest.mark.parametrize("bad", ["meta", "longdouble"])
def test_train_unreadable_arrays_are_one_sentence(tmp_path, bad):
    # WAS A BUG: a 'meta' tensor is a raw NotImplementedError "Cannot copy out of meta tensor" (src/ebmlab/api_data.py:54
    # x.detach().cpu()), a np.longdouble array a raw TypeError "can't convert np.ndarray of type numpy.longdouble"
    # (api_data.py:48); fix: refuse a meta tensor by name, read longdouble as float64 in _numbers.
    x = {"meta": torch.zeros(60, 3, device="meta"), "longdouble": _rows().astype(np.longdouble)}[bad]
    try:
        _train(x, tmp_path / "r")
    except DataError:
        pass


@pytest.mark.parametrize("bad", ["nan", "inf_tensor", "one_row", "empty", "vector", "3d", "complex", "bool",
                                 "strings", "ragged"])
def test_train_refuses_bad_data_in_one_sentence(tmp_path, bad):
    x = _rows()
    given = {"nan": np.where(x > 2, np.nan, x), "inf_tensor": torch.from_numpy(np.where(x > 2, np.inf, x)),
             "one_row": x[:1], "empty": np.zeros((0, 3)), "vector": x[:, 0], "3d": x[None],
             "complex": x.astype(np.complex64), "bool": x > 0, "strings": np.array([["a", "b"]] * 60),
             "ragged": [[1.0, 2.0], [3.0]] * 30}[bad]
    with pytest.raises(DataError) as err:
        _train(given, tmp_path / "r")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r").exists()


def test_train_constant_column_keeps_it_constant_in_samples(tmp_path):
    x = _rows()
    x[:, 1] = 3.0
    r = _train(x, tmp_path / "r")
    assert torch.equal(r.sample(10, steps=2)[:, 1], torch.full((10,), 3.0))


def test_train_duplicate_rows_and_float16(tmp_path):
    x = np.repeat(_rows(20), 3, axis=0).astype(np.float16)
    _train(x, tmp_path / "r")
    stored = np.load(tmp_path / "r" / "data.npy")
    assert stored.dtype == np.float32 and np.array_equal(stored, x.astype(np.float32))


# ----- run(x), run.log_density(x), run.sample(init=...) ------------------------------------------------------------
@pytest.mark.parametrize("layout", ["fortran", "tensor_transposed", "list", "tuple", "list_of_tensors",
                                    "float64_tensor", "float16", "read_only"])
def test_energy_does_not_depend_on_layout_or_container(run, pts, layout):
    ro = pts.copy()
    ro.flags.writeable = False
    given = {"fortran": np.asfortranarray(pts), "tensor_transposed": torch.from_numpy(np.ascontiguousarray(pts.T)).T,
             "list": pts.tolist(), "tuple": tuple(map(tuple, pts.tolist())),
             "list_of_tensors": [torch.from_numpy(r) for r in pts], "float64_tensor": torch.from_numpy(pts).double(),
             "float16": pts.astype(np.float16), "read_only": ro}[layout]
    want = run(torch.from_numpy(pts)).detach()
    got = run(given).detach()
    tol = 1e-2 if layout == "float16" else 0.0
    assert got.shape == (8,) and torch.allclose(got, want, atol=tol, rtol=tol)


@pytest.mark.parametrize("view", ["columns", "rows"])
def test_energy_and_log_density_of_reversed_views(run, pts, view):
    # WAS A BUG: x[:, ::-1] / x[::-1] are refused with the misleading DataError "points must be numbers, ... (At least one
    # stride ... is negative ...)": src/ebmlab/api_data.py:88 torch.from_numpy(np.asarray(x, ...)) (asarray keeps
    # the negative strides); fix: np.ascontiguousarray(x, dtype=...).
    given = pts[:, ::-1] if view == "columns" else pts[::-1]
    want = torch.from_numpy(given.copy())
    assert torch.equal(run(given).detach(), run(want).detach())
    assert torch.equal(run.log_density(given), run.log_density(want))


def test_sample_init_reversed_rows(run, pts):
    # WAS A BUG: same as above through Run.sample(init=x[::-1]): src/ebmlab/api.py:157 -> api_data.py:88.
    a = run.sample(8, steps=2, init=pts[::-1])
    assert torch.equal(a, run.sample(8, steps=2, init=pts[::-1].copy()))


def test_energy_refuses_complex_points(run, pts):
    # WAS A BUG: complex points are silently cast to their real part (only numpy's/torch's ComplexWarning), though
    # ebmlab.train and evaluate(ood=) refuse complex arrays with a DataError: src/ebmlab/api_data.py:86 (tensor
    # .to(dtype)) and :88 (np.asarray(..., float32)); fix: refuse dtype.kind 'c' / tensor.is_complex() in as_points.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError):
            run(pts.astype(np.complex64) + 1j)
        with pytest.raises(DataError):
            run(torch.from_numpy(pts).to(torch.complex64))


def test_energy_of_list_of_tensors_requiring_grad(run, pts):
    # WAS A BUG: raw RuntimeError "Can't call numpy() on Tensor that requires grad": np.asarray at
    # src/ebmlab/api_data.py:88 (catches TypeError/ValueError only); fix: torch.stack a list of tensors.
    rows = [torch.from_numpy(r).requires_grad_() for r in pts]
    assert torch.equal(run(rows).detach(), run(pts).detach())


@pytest.mark.parametrize("where", ["call", "log_density", "sample_init"])
def test_meta_tensor_points_are_one_sentence(run, where):
    # WAS A BUG: a 'meta' tensor is a raw NotImplementedError "Cannot copy out of meta tensor; no data!" at
    # src/ebmlab/api.py:120 (.to(self.device)), :206 (.cpu()) and :157 (.cpu()); fix: refuse x.is_meta in as_points.
    x = torch.zeros(4, 3, device="meta")
    call = {"call": lambda: run(x), "log_density": lambda: run.log_density(x),
            "sample_init": lambda: run.sample(4, steps=1, init=x)}[where]
    with pytest.raises(DataError):
        call()


@pytest.mark.parametrize("shape", [(3,), (8, 2), (8, 4), (1, 8, 3)])
def test_points_of_the_wrong_shape_are_one_sentence(run, shape):
    x = np.zeros(shape, np.float32)
    for call in (run, run.log_density):
        with pytest.raises(DataError, match=r"shape \(B, 3\)"):
            call(x)


def test_empty_batch_gives_empty_energies(run):
    x = np.zeros((0, 3), np.float32)
    assert run(x).shape == (0,) and run.log_density(x).shape == (0,)


def test_energy_is_differentiable_in_x_as_documented(run, pts):
    x = torch.from_numpy(pts).double().requires_grad_()
    run(x).sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float64 and torch.isfinite(x.grad).all()
    # the same gradient as a float32 leaf, whatever the layout
    y = torch.from_numpy(np.ascontiguousarray(pts.T)).T.clone().requires_grad_()
    run(y).sum().backward()
    assert torch.allclose(x.grad.float(), y.grad)


def test_sample_init_from_list_and_batches(run, pts):
    a = run.sample(8, steps=2, init=pts.tolist())
    assert torch.equal(a, run.sample(8, steps=2, init=torch.from_numpy(pts)))
    assert run.sample(8, steps=2, batch_size=3).shape == (8, 3)


# ----- run.evaluate(ood={name: array}): the sets are checked by api_data.ood_inputs before any work -----------------
def test_ood_reversed_and_big_endian_arrays(pts):
    # WAS A BUG: raw torch ValueErrors (negative strides; non-native byte order) from
    # src/ebmlab/api_data.py:121 torch.from_numpy(_numbers(x, what)); fix: np.ascontiguousarray + native byte order
    # in _numbers.
    _, arrays = ood_inputs({"rev": pts[::-1], "be": pts.astype(">f4")}, (3,))
    assert torch.equal(arrays["rev"], torch.from_numpy(pts[::-1].copy()))
    assert torch.equal(arrays["be"], torch.from_numpy(pts))


@pytest.mark.parametrize("bad", ["complex_tensor", "meta"])
def test_ood_bad_tensors_are_refused_in_one_sentence(bad):
    # WAS A BUG: a complex tensor is silently cut to its real part (a complex array is refused), a meta tensor a raw
    # NotImplementedError: src/ebmlab/api_data.py:121 (the tensor branch skips _numbers' checks); fix: refuse
    # x.is_complex() and x.is_meta there.
    x = {"complex_tensor": torch.zeros(10, 3, dtype=torch.complex64), "meta": torch.zeros(10, 3, device="meta")}[bad]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError):
            ood_inputs({"a": x}, (3,))


def test_ood_refuses_complex_arrays_and_wrong_shapes(pts):
    with pytest.raises(DataError):
        ood_inputs({"a": pts.astype(np.complex64)}, (3,))
    with pytest.raises(DataError, match=r"\(N, 3\)"):
        ood_inputs({"a": pts[:, 0]}, (3,))


def test_dates_are_refused_not_counted(tmp_path):
    # WAS A BUG (said by the audit): datetime64 columns became float64 counts of their unit (1.7e18 ns, which float64
    # rounds) without a word
    days = np.arange(60).astype("datetime64[D]").astype("datetime64[ns]").reshape(30, 2)
    with pytest.raises(DataError, match="dates or durations"):
        _train(days, tmp_path / "r")


def test_a_sparse_tensor_is_read_as_its_dense_values(run, tmp_path, pts):
    x = torch.from_numpy(pts)
    assert torch.equal(run(x.to_sparse()).detach(), run(x).detach())
    _train(torch.from_numpy(_rows()).to_sparse(), tmp_path / "r")
    assert np.array_equal(np.load(tmp_path / "r" / "data.npy"), _rows())
