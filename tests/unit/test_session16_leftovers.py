"""Leftovers of the fifteenth session, fixed in the sixteenth (docs/testing.md, "Leftovers of the fifteenth session").

``files._place_new`` (an atomic write that must not replace: ``ebmlab sample --out`` without ``--overwrite``) puts the
temp file in place with one ``renameat2(RENAME_NOREPLACE)`` on Linux, so a kill at any point leaves one name; where
the call or the flag is missing it falls back to a hard link and an unlink, and without hard links to a check and a
rename. Each path is pinned here: the file put in place, the temp name gone, and FileExistsError (nothing replaced)
where a file is already there.
"""
from __future__ import annotations

import ctypes
import errno
import os
import sys

import pytest

from ebmlab import files


def _temp(d, text="new"):
    tmp = d / ".0123abcd.s.npy.tmp"
    tmp.write_text(text, encoding="utf-8")
    return tmp


def _refusing(err):
    """A stand-in for renameat2 that fails with ``err`` (as a file system without the flag does)."""
    def call(*_):
        ctypes.set_errno(err)
        return -1
    return call


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_linux_has_renameat2_and_it_neither_replaces_nor_leaves_a_second_name(tmp_path):
    assert files._renameat2() is not None
    files._place_new(_temp(tmp_path), tmp_path / "s.npy")
    assert sorted(os.listdir(tmp_path)) == ["s.npy"] and (tmp_path / "s.npy").read_text(encoding="utf-8") == "new"
    with pytest.raises(FileExistsError):
        files._place_new(_temp(tmp_path, "other"), tmp_path / "s.npy")
    assert (tmp_path / "s.npy").read_text(encoding="utf-8") == "new"


@pytest.mark.parametrize("how", ["no call", "EINVAL", "ENOSYS", "EOPNOTSUPP"])
def test_without_renameat2_the_hard_link_puts_the_file_in_place_and_refuses_to_replace(tmp_path, monkeypatch, how):
    monkeypatch.setattr(files, "_renameat2", lambda: None if how == "no call" else _refusing(getattr(errno, how)))
    files._place_new(_temp(tmp_path), tmp_path / "s.npy")
    assert sorted(os.listdir(tmp_path)) == ["s.npy"]
    with pytest.raises(FileExistsError):
        files._place_new(_temp(tmp_path, "other"), tmp_path / "s.npy")
    assert (tmp_path / "s.npy").read_text(encoding="utf-8") == "new"


def test_without_hard_links_a_check_then_a_rename(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_renameat2", lambda: None)

    def no_link(*_):
        raise PermissionError(errno.EPERM, "hard links not supported")
    monkeypatch.setattr(files.os, "link", no_link)
    files._place_new(_temp(tmp_path), tmp_path / "s.npy")
    assert sorted(os.listdir(tmp_path)) == ["s.npy"]
    with pytest.raises(FileExistsError):
        files._place_new(_temp(tmp_path, "other"), tmp_path / "s.npy")


def test_another_renameat2_error_is_said_of_the_file_not_hidden(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_renameat2", lambda: _refusing(errno.EACCES))
    with pytest.raises(PermissionError) as info:
        files._place_new(_temp(tmp_path), tmp_path / "s.npy")
    assert info.value.filename == str(tmp_path / "s.npy")


def test_an_atomic_write_that_must_not_replace_leaves_no_temp_file_either_way(tmp_path):
    files.write_text_atomic(tmp_path / "a.txt", "old")
    files.atomic_write(tmp_path / "b.txt", lambda p: p.write_text("b", encoding="utf-8"), replace=False)
    with pytest.raises(FileExistsError):
        files.atomic_write(tmp_path / "a.txt", lambda p: p.write_text("new", encoding="utf-8"), replace=False)
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "old"
