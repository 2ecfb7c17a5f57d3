"""Round 50's seen-and-left, closed: a data folder's listing fingerprint (``data.arrays.folder_fingerprint``) did
not follow linked folders (``rglob``) while the image walk reads them (``data.images._image_files``), so a file
added to or resized in a linked class folder went unseen by ``eval``'s and ``--resume``'s data check. It now walks as
the image walk does; a folder without links keeps its fingerprint bit for bit, and a run trained before (its
``run.json`` holds the old fingerprint) still matches (``folder_matches``). docs/testing.md "Fiftieth round".
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ebmlab.data.arrays import folder_fingerprint, folder_matches
from ebmlab.training import run_data


def _old_fingerprint(root: Path) -> str:
    """The fingerprint as computed before (written out here: rglob, linked folders not entered)."""
    rows = sorted(f"{f.relative_to(root).as_posix()}\t{f.stat().st_size}" for f in root.rglob("*")
                  if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _write(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture()
def folders(tmp_path):
    """imgs/cat/1.png (real), imgs/dog -> elsewhere/dog (linked), hidden files and folders, a link to a file."""
    imgs, far = tmp_path / "imgs", tmp_path / "elsewhere" / "dog"
    _write(imgs / "cat" / "1.png", b"cat")
    _write(imgs / "cat" / ".thumb.png")
    _write(imgs / ".ipynb_checkpoints" / "x.png")
    _write(imgs / "readme.txt", b"hello")
    _write(far / "2.png", b"dog!")
    (imgs / "dog").symlink_to(far)
    (imgs / "cat" / "linked.png").symlink_to(imgs / "cat" / "1.png")
    return imgs, far


def test_a_folder_without_linked_folders_keeps_its_fingerprint_bit_for_bit(folders):
    imgs, _ = folders
    (imgs / "dog").unlink()
    assert folder_fingerprint(imgs) == _old_fingerprint(imgs)


# WAS A BUG (round 50's seen-and-left): a file added to, or resized in, a linked class folder left the fingerprint as
# it was, so eval and --resume read other data than the run was trained on without a word
@pytest.mark.parametrize("change", ["add", "resize"])
def test_a_change_inside_a_linked_folder_changes_the_fingerprint(folders, change):
    imgs, far = folders
    before = folder_fingerprint(imgs)
    _write(far / "3.png" if change == "add" else far / "2.png", b"a longer dog")
    assert folder_fingerprint(imgs) != before
    assert not folder_matches(imgs, before)


def test_a_run_trained_before_still_matches_its_stored_fingerprint(folders):
    imgs, _ = folders
    old = _old_fingerprint(imgs)
    assert old != folder_fingerprint(imgs)  # the linked folder's files now count
    # (legacy: a run.json without listing_version; round 52: only those may match the old listing)
    assert folder_matches(imgs, old, legacy=True) and folder_matches(imgs, folder_fingerprint(imgs))
    assert run_data._holds_data(imgs, old, legacy=True) and not run_data._holds_data(imgs, "0" * 64, legacy=True)
    assert not folder_matches(imgs, old) and not run_data._holds_data(imgs, old)


def test_the_listing_by_hand_and_a_folder_linked_twice_or_back_up_listed_once(folders):
    imgs, far = folders
    rows = ["cat/1.png\t3", "cat/linked.png\t3", "dog/2.png\t4", "readme.txt\t5"]  # hidden ones left out
    want = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    assert folder_fingerprint(imgs) == want
    (imgs / "zz_dog_again").symlink_to(far)  # dog/ first in sorted order: its files once, under dog/
    (imgs / "cat" / "up").symlink_to(imgs)  # a link back up: no loop
    assert folder_fingerprint(imgs) == want
