"""Bad user data (--data): one sentence naming the file, exit 2, nothing created, nothing executed."""
from __future__ import annotations

import os

import numpy as np
import pytest

from ebmlab.errors import DataError

from .conftest import assert_one_sentence, cli, sets


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _make(case: str, tmp_path):
    p = tmp_path / "data.npy"
    if case == "missing":
        return tmp_path / "nope.npy", "does not exist"
    if case == "directory":
        d = tmp_path / "folder.npy"
        d.mkdir()
        return d, "is a directory"
    if case == "too few rows":  # 19 rows: a held-out tenth of 1 row, too few for the evaluation
        np.save(p, np.arange(38.0).reshape(19, 2))
        return p, "at least 20 rows"
    if case == "beyond float32":
        np.save(p, np.full((50, 2), 1e39))
        return p, "float32"
    if case == "nan":
        x = np.zeros((50, 2))
        x[3, 1] = np.nan
        np.save(p, x)
        return p, "NaN or inf"
    if case == "inf":
        x = np.zeros((50, 2))
        x[7, 0] = np.inf
        np.save(p, x)
        return p, "NaN or inf"
    if case == "pickled objects":
        np.save(p, np.array([_Evil(tmp_path / "executed")] * 4, dtype=object), allow_pickle=True)
        return p, "could not read"
    if case == "rank 3":
        np.save(p, np.zeros((10, 2, 2)))
        return p, "2-D array"
    if case == "text in csv":
        c = tmp_path / "data.csv"
        c.write_text("a,b\nc,d\n1,2\n")
        return c, "line 2 holds 'c', which is not a number"
    if case == "semicolons in csv":  # a spreadsheet's CSV in locales with a decimal comma
        c = tmp_path / "data.csv"
        c.write_text("a;b\n1;2\n3;4\n")
        return c, "line 2 is separated by semicolons"
    if case == "ragged csv":
        c = tmp_path / "data.csv"
        c.write_text("1,2\n3,4\n5\n")
        return c, "line 3 has 1 column(s) where the lines before it have 2"
    if case == "empty file":
        p.write_bytes(b"")
        return p, "could not read"
    if case == "booleans":
        np.save(p, np.ones((10, 2), dtype=bool))
        return p, "must hold numbers"
    if case == "unsupported suffix":
        t = tmp_path / "data.txt"
        t.write_text("1,2\n")
        return t, "unsupported suffix"
    if case == "zero columns":
        np.save(p, np.zeros((10, 0)))
        return p, "1 column"
    if case == "empty npz":
        z = tmp_path / "data.npz"
        np.savez(z)
        return z, "no arrays"
    if case == "pickle renamed npy":
        import pickle
        p.write_bytes(pickle.dumps(_Evil(tmp_path / "executed")))
        return p, "could not read"
    raise AssertionError(case)


CASES = ["missing", "directory", "too few rows", "beyond float32", "nan", "inf", "pickled objects", "rank 3",
         "text in csv", "semicolons in csv", "ragged csv", "empty file", "booleans", "unsupported suffix", "zero columns", "empty npz",
         "pickle renamed npy"]


@pytest.mark.parametrize("case", CASES)
def test_bad_data_file(case, tmp_path, capsys):
    path, needle = _make(case, tmp_path)
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--data", path, "--out", out, *sets())
    assert_one_sentence(code, err, needle)
    assert str(path.name) in err  # the file is named
    assert not out.exists()
    assert not (tmp_path / "executed").exists()


def test_a_csv_header_of_column_names_is_skipped(tmp_path):
    """The common .csv form (one row of column names) reads as the numbers below it; a headerless one as all rows."""
    from ebmlab.data.arrays import load_vectors
    x = np.arange(60.0).reshape(20, 3) / 7
    with_header, plain = tmp_path / "h.csv", tmp_path / "p.csv"
    np.savetxt(with_header, x, delimiter=",", header="a, b,c", comments="")
    np.savetxt(plain, x, delimiter=",")
    # Excel's "CSV UTF-8" starts with a byte-order mark: its first row of numbers was taken for a header and dropped
    bom, bom_header = tmp_path / "bom.csv", tmp_path / "bomh.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    bom_header.write_bytes(b"\xef\xbb\xbf" + with_header.read_bytes())
    for p in (with_header, plain, bom, bom_header):
        assert np.allclose(load_vectors(p).numpy(), x, atol=1e-6), p.name


def test_pandas_defaults_in_a_csv_are_never_read_silently_as_data(tmp_path):
    """``pandas.DataFrame(x).to_csv(path)`` writes its row index as a first column without a name (it became a
    feature spanning 0..N-1); with ``index=False`` its column names 0,1,... are numbers (they became a sample)."""
    from ebmlab.data.arrays import load_vectors
    x = np.arange(60.0).reshape(20, 3) / 7
    rows = [",".join(f"{v:.9g}" for v in r) for r in x]
    indexed, unnamed, plain = tmp_path / "i.csv", tmp_path / "u.csv", tmp_path / "p.csv"
    indexed.write_text(",0,1,2\n" + "".join(f"{i},{r}\n" for i, r in enumerate(rows)))
    unnamed.write_text("Unnamed: 0,0,1,2\n" + "".join(f"{i + 5},{r}\n" for i, r in enumerate(rows)))
    plain.write_text("0,1,2\n" + "".join(f"{r}\n" for r in rows))
    for p in (indexed, unnamed):
        with pytest.raises(DataError, match="index=False"):
            load_vectors(p)
    with pytest.warns(UserWarning, match="read as a row of data"):
        got = load_vectors(plain).numpy()
    assert got.shape == (21, 3) and np.allclose(got[1:], x, atol=1e-6)  # read, and said
    named = tmp_path / "n.csv"  # a named first column of whole numbers is data; a first row 0.5,1 is data
    named.write_text("id,a,b,c\n" + "".join(f"{i},{r}\n" for i, r in enumerate(rows)))
    assert load_vectors(named).shape == (20, 4)
