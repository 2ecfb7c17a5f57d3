"""A user's own arrays at their edges (an audit of `--data FILE` and `ebmlab.train(data=...)`): columns of a tiny
spread or of one value, data of one value, empty or gappy CSV files, a 0-byte .npy, 1-D arrays, bfloat16 tensors and
an (x, y) tuple. Each either trains in the data's own units or is refused with one sentence (``DataError``)."""
import warnings

import numpy as np
import pytest
import torch

from ebmlab.data.arrays import load_vectors
from ebmlab.data.dataset import _standardiser, array_dataset
from ebmlab.errors import DataError
from ebmlab.training.config import load_config


def _cfg(*overrides):
    return load_config(None, ["data.name=array", *overrides]).data


def _rows(n=200, d=3, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d))).float()


# ----- standardising ----------------------------------------------------------------------------------------
def test_a_column_of_tiny_spread_is_scaled_by_its_own_std():
    """Data in units where the spread is 1e-10 (nanometres in metres) map to unit spread, so chains started from
    N(0, I) in model coordinates land on the data's scale; an absolute floor of 1e-8 on the std made samples 100x
    wider than the data, silently."""
    x = _rows() * 1e-10
    tf = _standardiser(x, True)
    assert torch.allclose(tf.to_model(x).double().std(0), torch.ones(3, dtype=torch.float64), atol=1e-3)
    noise = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0))
    assert float(tf.to_data(noise).std(0).max()) < 2e-10


def test_a_constant_column_stays_constant_and_finite():
    """A column of one value (zero variance): no division by zero, model coordinates 0 in it, and draws of N(0, I)
    map back to (nearly) that value, whatever the other columns' units."""
    for unit in (1.0, 1e-10):
        x = _rows() * unit
        x[:, 1] = 0.0
        for whiten in (False, True):
            tf = _standardiser(x, True, whiten)
            z = tf.to_model(x)
            assert torch.isfinite(z).all() and float(z[:, 1].abs().max()) < 1e-3
            back = tf.to_data(torch.randn(500, 3, generator=torch.Generator().manual_seed(1)))
            assert float(back[:, 1].abs().max()) < 1e-6 * unit


def test_data_of_a_single_value_are_refused():
    """Every row the same point: nothing to learn, and every metric came out 0 without a word."""
    with pytest.raises(DataError, match="one value"):
        array_dataset(torch.full((100, 3), 5.0), _cfg(), "x.npy")


# ----- the held-out z-scores ----------------------------------------------------------------------------------
def test_the_heldout_zscores_of_a_constant_column_do_not_blow_up():
    """A column of zeros: samples a hair off it (1e-8, the model's rounding) scored 1e4 z-units away with a 1e-12
    floor on the std (sample_energy_distance_heldout 4736 instead of 0.08). Deviations in a constant column are
    measured in the widest column's units."""
    from ebmlab.training.heldout import zscorer
    x = _rows()
    x[:, 1] = 0.0
    for whiten in ("false", "true"):  # whitening's round trip leaves the column a std of ~1e-24, not 0
        ds = array_dataset(x, _cfg(f"data.whiten={whiten}"), "x.npy")
        off = ds.test.clone()
        off[:, 1] += 1.0  # one model unit: the standardiser's scale of the constant column
        z = zscorer(ds)(off)
        assert torch.isfinite(z).all() and float(z[:, 1].abs().max()) < 1e-3


# ----- files ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["a,b,c\n", "\n\n"])
def test_a_csv_without_rows_of_data_is_refused_in_one_sentence(tmp_path, text):
    """An empty CSV or one of a header only: 'holds no rows', with no numpy warning (it printed numpy's
    'input contained no data: <_io.TextIOWrapper ...>' and then 'has shape (0, 1)')."""
    p = tmp_path / "x.csv"
    p.write_text(text)
    _refused_without_a_warning(p, "no rows of data")


@pytest.mark.parametrize("header", ["température,b", None])
def test_a_csv_in_another_encoding_is_refused_with_the_fix(tmp_path, header):
    """A Latin-1 .csv (Excel's "CSV" on a Windows code page) in its header or, past numpy's first read, in a
    row: 'not UTF-8 text' and how to save it, not a UnicodeDecodeError's codec message."""
    rows = [f"{i},{i + 1}" for i in range(30)]
    rows[25] = "25,26 ° "  # a degree sign, 0xb0 in Latin-1
    p = tmp_path / "x.csv"
    p.write_bytes("\n".join(([header] if header else []) + rows).encode("latin-1"))
    with pytest.raises(DataError, match=r"is not UTF-8 text \(a byte 0x(e9|b0)\); save it as UTF-8"):
        load_vectors(p)


def test_a_missing_value_in_a_csv_is_named_by_line_and_column(tmp_path):
    """An empty field (a missing value) said where it is, not 'it is not a table of numbers separated by commas'."""
    p = tmp_path / "x.csv"
    rows = ["a,b,c"] + [f"{i},{i + 1},{i + 2}" for i in range(30)]
    rows[4] = "3,,5"
    p.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="line 5 has an empty field in column 2"):
        load_vectors(p)


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv"])
def test_an_empty_file_is_refused_as_empty(tmp_path, suffix):
    """0 bytes: 'is empty', not numpy's 'EOFError: No data left in file' (nor, for a CSV, its warning)."""
    p = tmp_path / f"x{suffix}"
    p.write_bytes(b"")
    _refused_without_a_warning(p, "is empty")


def _refused_without_a_warning(path, match: str) -> None:
    """``load_vectors(path)`` raises one DataError matching ``match`` and warns of nothing first."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=match):
            load_vectors(path)


def test_a_one_dimensional_array_is_told_how_to_make_it_one_column(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.arange(50.0))
    with pytest.raises(DataError, match=r"reshape\(-1, 1\)"):
        load_vectors(p)


# ----- data in memory -------------------------------------------------------------------------------------------
def test_a_bfloat16_tensor_is_read_as_numbers():
    """torch.bfloat16 has no numpy dtype: it crashed with TypeError 'Got unsupported ScalarType BFloat16'."""
    from ebmlab.api_data import in_memory
    x = _rows(50, 2).bfloat16()
    assert np.array_equal(in_memory(x), x.float().numpy())


def test_an_x_y_tuple_is_refused_in_one_sentence():
    """(x, y) as scikit-learn returns it: numpy's 'inhomogeneous shape' ValueError, now a DataError."""
    from ebmlab.api_data import in_memory
    with pytest.raises(DataError, match="one array"):
        in_memory((_rows(50, 2), torch.zeros(50)))
