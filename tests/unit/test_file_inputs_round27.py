"""Round 27 audit: the data FILES a researcher points ebmlab at (``--data FILE``, ``ebmlab.train(data=FILE)``,
``--ood FILE`` / ``run.evaluate(ood=FILE)``). Each file is read as the numbers it holds or refused with one sentence
(``DataError``; the CLI exits 2 with one line); no row is dropped silently and no pickle is ever loaded (a read-only
helper's audit, docs/testing.md "Twenty-seventh round"). Tests marked ``# WAS A BUG`` failed on the code as audited
(commit ``e2b25b3``) and pass with its fixes in ``data/arrays.py`` and ``training/image_eval.py``."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch

from ebmlab.cli import main
from ebmlab.data.arrays import load_vectors, read_array
from ebmlab.errors import DataError

ROWS = [f"{i}.5,{2 * i}.25,{-i}" for i in range(25)]  # 25 rows of 3 columns, exact in binary
X = np.array([[i + 0.5, 2 * i + 0.25, -i] for i in range(25)])


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write(path, text: str | bytes):
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _one_cli_line(capsys, *argv) -> str:
    """``ebmlab *argv`` exits 2 with one line on stderr and no traceback; returns that line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and lines[0].startswith("ebmlab: error:"), err
    return lines[0]


# ----- CSV: the first row ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("first", ["1.5,,3", "1.5,NA,3", '"1.5","7","3"', "1.5,7,3,"],
                         ids=["empty_field", "NA", "quoted_numbers", "trailing_comma"])
def test_a_first_data_row_is_never_dropped_silently_as_a_header(tmp_path, first):
    # WAS A BUG: a first row of numbers with one missing value ('' or NA), quoted numbers or a trailing comma is taken for a
    # header of column names and skipped without a word (the same field on any later row is refused):
    # src/ebmlab/data/arrays.py:142 (_is_header: any non-number or empty field makes a header), used at :79.
    p = _write(tmp_path / "x.csv", first + "\n" + "\n".join(ROWS) + "\n")
    try:
        got = load_vectors(p)
    except DataError:
        return  # refused in one sentence: fine
    assert got.shape[0] == 26, f"{got.shape[0]} rows read from 26: the first row was dropped as a header"


def test_an_inline_comment_on_the_first_row_keeps_that_row(tmp_path):
    # WAS A BUG: '# ...' after the numbers of row 1 made it a header (skipped), while numpy reads the same comment on any
    # other row: src/ebmlab/data/arrays.py:142 (_is_header does not strip a '#' comment as np.loadtxt does).
    p = _write(tmp_path / "x.csv", ROWS[0] + "  # first sample\n" + "\n".join(ROWS[1:]) + "\n")
    assert np.array_equal(load_vectors(p).numpy(), X)


def test_a_quoted_unnamed_pandas_index_is_refused(tmp_path):
    # WAS A BUG: pandas' to_csv(quoting=csv.QUOTE_NONNUMERIC) writes its unnamed row index's header as '""' (numbers
    # unquoted); the index 0..N-1 is then read as a feature, which README promises to refuse:
    # src/ebmlab/data/arrays.py:98 compares the raw field with '' / 'Unnamed: 0' without removing its quotes.
    p = _write(tmp_path / "x.csv", '"","a","b","c"\n' + "".join(f"{i},{r}\n" for i, r in enumerate(ROWS)))
    with pytest.raises(DataError, match="index=False"):
        load_vectors(p)


# ----- CSV: verified right ------------------------------------------------------------------------------------
@pytest.mark.parametrize("eol", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_windows_and_old_mac_line_ends_read_exactly(tmp_path, eol):
    p = _write(tmp_path / "x.csv", b"\xef\xbb\xbf" + ("a,b,c\n" + "\n".join(ROWS) + "\n").replace("\n", eol).encode())
    assert np.array_equal(load_vectors(p).numpy(), X)


def test_comment_lines_and_trailing_blank_lines_are_not_rows(tmp_path):
    """np.savetxt's '# a,b,c' header, a comment at the end and blank lines after it: the 25 rows, unchanged."""
    p = _write(tmp_path / "x.csv", "# a,b,c\n" + "\n".join(ROWS) + "\n# end\n\n\n")
    assert np.array_equal(load_vectors(p).numpy(), X)


def test_scientific_notation_signs_and_spaces_read_exactly(tmp_path):
    p = _write(tmp_path / "x.csv", "".join(f"{i}e-3, +{i}E+05 ,-.5\n" for i in range(25)))
    got = load_vectors(p).numpy()
    assert np.array_equal(got, np.array([[float(f"{i}e-3"), float(f"{i}E+05"), -0.5] for i in range(25)]))


def test_one_column_is_n_by_1_and_one_row_is_1_by_d_for_an_ood_set(tmp_path):
    one_col = _write(tmp_path / "c.csv", "x\n" + "".join(f"{i}\n" for i in range(25)))
    assert load_vectors(one_col).shape == (25, 1)
    one_row = _write(tmp_path / "r.csv", "a,b,c\n1,2,3\n")
    assert load_vectors(one_row, min_rows=1, what="--ood file").shape == (1, 3)


def test_tab_separated_csv_is_refused_with_the_tab_hint(tmp_path):
    p = _write(tmp_path / "x.csv", "a\tb\n" + "".join(f"{i}\t{i}.5\n" for i in range(25)))
    with pytest.raises(DataError, match="line 2 is separated by tabs"):
        load_vectors(p)


@pytest.mark.parametrize("name", ["x.tsv", "x.csv.gz", "x.txt", "x"])
def test_other_suffixes_are_refused_by_name(tmp_path, name):
    p = _write(tmp_path / name, "\n".join(ROWS) + "\n")
    with pytest.raises(DataError, match="unsupported suffix"):
        load_vectors(p)


def test_an_upper_case_csv_suffix_reads(tmp_path):
    assert np.array_equal(load_vectors(_write(tmp_path / "X.CSV", "\n".join(ROWS) + "\n")).numpy(), X)


def test_a_utf16_csv_is_refused_as_not_utf8(tmp_path):
    p = _write(tmp_path / "x.csv", ("a,b,c\n" + "\n".join(ROWS) + "\n").encode("utf-16"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_vectors(p)


# ----- .npy / .npz that are not what their suffix says ----------------------------------------------------------
def test_an_npz_member_that_is_not_an_npy_is_refused_in_one_sentence(tmp_path):
    # WAS A BUG: NpzFile returns a member that is not a .npy (a zip holding a CSV, named .npz) as bytes, and check_vectors
    # reads bytes.dtype: raw AttributeError "'bytes' object has no attribute 'dtype'" (CLI: a traceback, exit 1):
    # src/ebmlab/data/arrays.py:61 returns z[key] unchecked; :165 assumes an ndarray.
    p = tmp_path / "x.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("data.csv", "\n".join(ROWS) + "\n")
    with pytest.raises(DataError):
        load_vectors(p)


def test_an_npz_saved_under_an_npy_name_is_read_or_refused_in_one_sentence(tmp_path):
    # WAS A BUG: np.load of a zip named .npy returns an (open) NpzFile, not an array: raw AttributeError "'NpzFile' object has
    # no attribute 'dtype'": src/ebmlab/data/arrays.py:58 (the result is not checked to be an ndarray), :165.
    p = tmp_path / "x.npy"
    np.savez(tmp_path / "t.npz", x=X)
    os.replace(tmp_path / "t.npz", p)
    try:
        got = load_vectors(p)
    except DataError:
        return
    assert np.array_equal(got.numpy(), X)


def test_the_cli_refuses_a_zip_named_npz_in_one_line(tmp_path, capsys):
    # WAS A BUG: the same raw AttributeError reaches `ebmlab train --data` as a traceback with exit status 1:
    # src/ebmlab/data/arrays.py:61 and :165 (see above).
    p = tmp_path / "x.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x", "1,2\n3,4\n")
    _one_cli_line(capsys, "train", "--data", p, "--out", tmp_path / "run", "--set", "train.steps=1")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("how", ["npz_x_object", "pickle_named_npz", "text_named_npy"])
def test_pickles_and_impostors_are_refused_unread(tmp_path, how):
    import pickle
    marker = tmp_path / "executed"
    p = tmp_path / ("x.npy" if how == "text_named_npy" else "x.npz")
    if how == "npz_x_object":
        np.savez(p, x=np.array([_Evil(marker)] * 30, dtype=object))
    elif how == "pickle_named_npz":
        p.write_bytes(pickle.dumps(_Evil(marker)))
    else:
        p.write_text("\n".join(ROWS) + "\n")
    with pytest.raises(DataError, match="could not read"):
        load_vectors(p)
    assert not marker.exists()


def test_a_pickle_beside_the_x_array_in_an_npz_is_never_loaded(tmp_path):
    """Key 'x' chosen; the object array under another key is not touched (NpzFile reads members lazily)."""
    marker = tmp_path / "executed"
    p = tmp_path / "x.npz"
    np.savez(p, x=X, meta=np.array([_Evil(marker)], dtype=object))
    assert np.array_equal(load_vectors(p).numpy(), X) and not marker.exists()


def test_an_npz_of_one_array_under_any_key_is_read(tmp_path):
    np.savez(tmp_path / "x.npz", features=X)
    assert np.array_equal(read_array(tmp_path / "x.npz"), X)


@pytest.mark.parametrize("cut", [40, "half"])
def test_a_truncated_npy_is_refused_in_one_sentence(tmp_path, cut):
    p = tmp_path / "x.npy"
    np.save(p, X)
    b = p.read_bytes()
    p.write_bytes(b[:40] if cut == 40 else b[: len(b) // 2])
    with pytest.raises(DataError, match="could not read"):
        load_vectors(p)


# ----- dtypes ------------------------------------------------------------------------------------------------------
def test_a_big_endian_float32_npy_is_read_as_float32(tmp_path):
    # WAS A BUG: '>f4' (FITS, big-endian machines) is read as float64 where '<f4' is float32 (and ebmlab.train(data=array)
    # of the same '>f4' array is float32): src/ebmlab/data/arrays.py:183 `arr.dtype == np.float32` is False for
    # a non-native byte order. Fix: compare arr.dtype.newbyteorder("=") (or kind/itemsize).
    np.save(tmp_path / "x.npy", X.astype(">f4"))
    got = load_vectors(tmp_path / "x.npy")
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), X.astype(np.float32))


def test_int64_nanoseconds_that_float64_rounds_onto_one_value_are_not_accepted_silently(tmp_path):
    # WAS A BUG: int64 times 1.7e18 ns with a spread of ~30 ns (91 distinct values) all round to one float64 (spacing 256);
    # check_rounding measures the std AFTER the cast (0), so no warning and no refusal: the column trains as constant.
    # src/ebmlab/data/arrays.py:198 (x = np.asarray(x, dtype=np.float64) before x.std(0)). Fix: the std of
    # (x - x.min(0)) in the integers' own precision.
    t = 1_700_000_000_000_000_000 + np.random.default_rng(0).integers(0, 100, 200)
    rows = np.stack([t, np.arange(200)], 1).astype(np.int64)
    np.save(tmp_path / "x.npy", rows)
    with pytest.raises(DataError, match="subtract an offset"):
        load_vectors(tmp_path / "x.npy")


@pytest.mark.parametrize("dtype", ["bool", "complex128", "datetime64[s]", "U8", "struct"])
def test_arrays_that_are_not_real_numbers_are_refused(tmp_path, dtype):
    arr = (np.zeros(30, dtype=[("a", "f8"), ("b", "f8")]) if dtype == "struct"
           else np.zeros((30, 2)).astype(dtype))
    np.save(tmp_path / "x.npy", arr)
    with pytest.raises(DataError, match="must hold numbers"):
        load_vectors(tmp_path / "x.npy")


@pytest.mark.parametrize("dtype,want", [("float16", torch.float32), ("int8", torch.float32), ("int32", torch.float64),
                                        (">f8", torch.float64)])
def test_small_and_wide_dtypes_read_in_their_documented_precision(tmp_path, dtype, want):
    arr = np.asfortranarray((X * 4).astype(dtype))
    np.save(tmp_path / "x.npy", arr)
    got = load_vectors(tmp_path / "x.npy")
    assert got.dtype == want and np.array_equal(got.numpy(), arr.astype(np.float64))


# ----- paths -----------------------------------------------------------------------------------------------------
def test_a_symlink_is_followed_and_a_dangling_one_does_not_exist(tmp_path):
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "link.npy").symlink_to(tmp_path / "x.npy")
    (tmp_path / "dangling.npy").symlink_to(tmp_path / "gone.npy")
    assert np.array_equal(load_vectors(tmp_path / "link.npy").numpy(), X)
    with pytest.raises(DataError, match="does not exist"):
        load_vectors(tmp_path / "dangling.npy")


def test_a_path_with_spaces_and_non_ascii_characters_reads(tmp_path):
    d = tmp_path / "mes données é"
    d.mkdir()
    p = _write(d / "ü x.csv", "a,b,c\n" + "\n".join(ROWS) + "\n")
    assert np.array_equal(load_vectors(p).numpy(), X)


def test_a_directory_named_csv_is_refused(tmp_path):
    (tmp_path / "x.csv").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        load_vectors(tmp_path / "x.csv")


def test_train_data_with_a_tilde_is_expanded(tmp_path, monkeypatch):
    from ebmlab.api_data import data_source
    monkeypatch.setenv("HOME", str(tmp_path))
    _write(tmp_path / "x.csv", "\n".join(ROWS) + "\n")
    raw: dict = {}
    data_source(raw, "~/x.csv")
    assert raw["data"] == {"path": str(tmp_path / "x.csv"), "name": "array"}


def _vector_data():
    from ebmlab.data.dataset import array_dataset
    from ebmlab.training.config import load_config
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(40, 3)))
    return array_dataset(x, load_config(None, ["data.name=array"]).data, "x")


def test_a_vector_ood_file_with_a_tilde_is_expanded(tmp_path, monkeypatch):
    # WAS A BUG: run.evaluate(ood="~/o.csv") and `ebmlab eval RUN --ood=~/o.csv` on a vector run say "neither 'shifted',
    # 'scaled' nor an existing file" (an image run's --ood and --data expand ~):
    # src/ebmlab/training/image_eval.py:299 Path(name).exists() and src/ebmlab/data/arrays.py:47 Path(path), no
    # expanduser().
    from ebmlab.training.image_eval import ood_set
    monkeypatch.setenv("HOME", str(tmp_path))
    _write(tmp_path / "o.csv", "a,b,c\n" + "\n".join(ROWS[:5]) + "\n")
    assert ood_set("~/o.csv", _vector_data(), None).shape == (5, 3)


def test_a_vector_ood_csv_of_another_width_is_refused(tmp_path):
    from ebmlab.training.image_eval import ood_set
    p = _write(tmp_path / "o.csv", "a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match=r"has vectors of shape \(2,\), the run's data \(3,\)"):
        ood_set(str(p), _vector_data(), None)


def test_a_first_row_of_numbers_and_text_is_said_in_its_own_line(tmp_path):
    with pytest.raises(DataError, match=r"line 1 holds 'NA' beside numbers: a header row holds names only"):
        load_vectors(_write(tmp_path / "x.csv", "1.5,NA,3\n" + "\n".join(ROWS) + "\n"))


def test_blank_lines_before_the_header_and_between_rows_carry_nothing(tmp_path):
    # (said by the audit: refused as "not a table of numbers separated by commas")
    p = _write(tmp_path / "x.csv", "\n  \na,b,c\n" + "\n".join(ROWS[:10]) + "\n \n\t\n" + "\n".join(ROWS[10:]) + "\n")
    assert np.array_equal(load_vectors(p).numpy(), X)


def test_a_text_file_named_npy_is_refused_without_numpys_advice_to_unpickle(tmp_path):
    # (said by the audit: numpy's message advised allow_pickle=True)
    with pytest.raises(DataError, match="not an array of numbers in numpy's format") as err:
        load_vectors(_write(tmp_path / "x.npy", "\n".join(ROWS) + "\n"))
    assert "allow_pickle" not in str(err.value)
