"""Round 28: the images a researcher has, pointed at ebmlab's image readers (``data/images.py``, ``image_ops.py``,
``image_ood.py``). Each test checks one behaviour (a read-only helper's audit, docs/testing.md "Twenty-eighth
round"); ``# WAS A BUG`` marks those that failed on the code as audited (commit ``5d9de3a``) and pass with its fixes."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ebmlab.config import DataConfig
from ebmlab.data.dataset import build_dataset
from ebmlab.data.image_ood import load_ood_set
from ebmlab.errors import DataError


def _ds(**kw):
    return build_dataset(DataConfig(**kw))


def _codes(d) -> torch.Tensor:
    """All images of a dataset back as 0..255 codes (N, C, H, W)."""
    return ((torch.cat([d.train, d.test]) + 1) * 127.5).round()


def _png(path, arr, **kw):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    (arr if isinstance(arr, Image.Image) else Image.fromarray(arr)).save(path, **kw)


# ----- image folders: bugs ------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_a_symlinked_class_folder_is_read(tmp_path):
    # WAS A BUG: src/ebmlab/data/images.py:190 lists files with Path.rglob("*"), which does not descend into symlinked
    # folders (Python < 3.13, and 3.13's default), so class dog -> /elsewhere/dog is dropped without a word
    # (here 3 of 6 images and one class). Fix: os.walk(root, followlinks=True) (guarding against cycles).
    elsewhere = tmp_path / "elsewhere"
    for i in range(3):
        _png(tmp_path / "data" / "cat" / f"{i}.png", np.zeros((4, 4, 3), np.uint8))
        _png(elsewhere / f"{i}.png", np.full((4, 4, 3), 200, np.uint8))
    os.symlink(elsewhere, tmp_path / "data" / "dog")
    d = _ds(name="imagefolder", path=str(tmp_path / "data"), n_test=1)
    assert d.info["classes"] == ["cat", "dog"] and d.train.shape[0] + d.test.shape[0] == 6


def test_a_sixteen_bit_grey_png_with_a_transparent_value_is_shown_over_white(tmp_path):
    # WAS A BUG: src/ebmlab/data/images.py:246 (_eight_bit) builds a new "L" image without the file's info, so _opaque
    # (images.py:230) no longer sees info["transparency"] of an I;16 PNG's tRNS chunk: its transparent pixels keep
    # their stored value, against docs/images.md "transparent pixels shown over white" (8-bit PNGs are).
    # Fix: carry im.info["transparency"] over, scaled like the pixels (or composite before scaling).
    from PIL import Image
    a = np.full((6, 6), 20000, np.uint16)
    a[0, :] = 1234  # the transparent value
    for i in range(2):
        try:
            Image.fromarray(a).save(tmp_path / f"{i}.png", transparency=1234)
        except OSError:  # older Pillow (9.1): no tRNS for mode I;16; mode I writes the same 16-bit grey PNG there
            Image.fromarray(a.astype(np.int32)).save(tmp_path / f"{i}.png", transparency=1234)
    got = _codes(_ds(name="imagefolder", path=str(tmp_path), channels=1, n_test=1))
    assert got[:, 0, 0, :].eq(255).all()  # the transparent row is white
    assert got[:, 0, 1:, :].eq(round(20000 * 255 / 65535)).all()


# ----- .npy / .npz: bugs --------------------------------------------------------------------------------
def test_an_empty_float_array_is_a_data_error(tmp_path):
    # WAS A BUG: src/ebmlab/data/image_ops.py:40 takes arr.min() of a zero-size float array: numpy's raw ValueError
    # ("zero-size array to reduction operation minimum ...", the CLI's one line too); a uint8 one is a DataError.
    # Fix: refuse arr.size == 0 (N = 0, or H or W = 0) with one sentence before the range check.
    np.save(tmp_path / "e.npy", np.zeros((0, 4, 4, 3), np.float32))
    with pytest.raises(DataError):
        _ds(name="npy", path=str(tmp_path / "e.npy"))


def test_an_empty_float_ood_file_is_a_data_error(tmp_path):
    # WAS A BUG: same cause (src/ebmlab/data/image_ops.py:40) on the --ood path (image_ood.py:83).
    np.save(tmp_path / "e.npy", np.zeros((0, 8, 8), np.float32))
    with pytest.raises(DataError):
        load_ood_set(str(tmp_path / "e.npy"), _ds(name="digits"))


def test_one_hot_labels_are_not_flattened_into_extra_labels(tmp_path):
    # WAS A BUG: src/ebmlab/data/images.py:317 checks only len(y) (the first axis) and images.py:59 reshapes the labels to
    # 1-D, so one-hot labels (N, K) (Keras' layout) become N*K labels of 0/1, num_classes 2, with no error: 18
    # training images get 54 labels. Fix: refuse labels that are not 1-D (or (N, 1)), or take argmax of (N, K).
    x = np.random.default_rng(0).integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    y = np.arange(20) % 3
    np.savez(tmp_path / "oh.npz", x=x, y=np.eye(3)[y])
    try:
        d = _ds(name="npy", path=str(tmp_path / "oh.npz"), n_test=2)
    except DataError:
        return  # refused in one sentence: fine
    assert d.train_labels.shape[0] == d.train.shape[0] and d.num_classes == 3


def test_string_labels_are_a_data_error(tmp_path):
    # WAS A BUG: src/ebmlab/data/images.py:320 int(y.max()) on a str array: numpy's UFuncTypeError, a traceback and exit 1
    # from `ebmlab train --set data.name=npy ...`. Fix: refuse non-integer label dtypes in one sentence.
    np.savez(tmp_path / "s.npz", x=np.zeros((20, 4, 4, 3), np.uint8), y=np.array(["cat", "dog"] * 10))
    with pytest.raises(DataError):
        _ds(name="npy", path=str(tmp_path / "s.npz"), n_test=2)


def test_a_scalar_label_entry_is_a_data_error(tmp_path):
    # WAS A BUG: src/ebmlab/data/images.py:317 len(y) of a 0-d array: raw TypeError "len() of unsized object".
    np.savez(tmp_path / "s.npz", x=np.zeros((20, 4, 4, 3), np.uint8), y=np.int64(3))
    with pytest.raises(DataError):
        _ds(name="npy", path=str(tmp_path / "s.npz"), n_test=2)


def test_negative_labels_are_refused(tmp_path):
    # WAS A BUG: src/ebmlab/data/images.py:320 sets num_classes = max + 1 and keeps -1 (a common "unlabelled" marker):
    # labels {-1, 0, 1} give num_classes 2, and a class-conditional model indexes its embedding with -1 (its last
    # row, another class). Fix: refuse labels < 0 (as config_checks refuses negative data.classes).
    np.savez(tmp_path / "n.npz", x=np.zeros((20, 4, 4, 3), np.uint8), y=np.arange(20) % 3 - 1)
    with pytest.raises(DataError):
        _ds(name="npy", path=str(tmp_path / "n.npz"), n_test=2)


def test_fractional_labels_are_refused(tmp_path):
    # WAS A BUG: src/ebmlab/data/images.py:59 astype(np.int64) truncates labels 0.5, 1.5, 2.5 to 0, 1, 2 silently.
    # Fix: refuse float labels that are not whole numbers.
    np.savez(tmp_path / "f.npz", x=np.zeros((20, 4, 4, 3), np.uint8), y=np.arange(20) % 3 + 0.5)
    with pytest.raises(DataError):
        _ds(name="npy", path=str(tmp_path / "f.npz"), n_test=2)


# ----- OOD sets: bugs -----------------------------------------------------------------------------------
def test_an_ood_file_for_a_non_square_run_keeps_the_runs_shape(tmp_path):
    # WAS A BUG: src/ebmlab/data/image_ood.py:124-126 keeps only the height (c, h, _ = like.shape; image_size=h), so every
    # OOD path of a run on 8x12 images is resized to 8x8, even a file of the run's own 8x12 shape: the OOD
    # images are squashed and no longer "shaped like like's images" (load_ood_set's docstring).
    # Fix: resize to (h, w) (resize() takes one side today: give it both).
    rng = np.random.default_rng(0)
    np.save(tmp_path / "run.npy", rng.integers(0, 256, (20, 8, 12, 3), dtype=np.uint8))
    like = _ds(name="npy", path=str(tmp_path / "run.npy"), n_test=4)
    assert like.shape == (3, 8, 12)
    np.save(tmp_path / "ood.npy", rng.integers(0, 256, (5, 8, 12, 3), dtype=np.uint8))
    assert tuple(load_ood_set(str(tmp_path / "ood.npy"), like).shape) == (5, 3, 8, 12)


# ----- image folders: verified right --------------------------------------------------------------------
def test_cmyk_jpeg_reads_as_pillows_rgb(tmp_path):
    from PIL import Image
    im = Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 4), dtype=np.uint8), "CMYK")
    for i in range(2):
        im.save(tmp_path / f"{i}.jpg", quality=100)
    want = torch.from_numpy(np.asarray(Image.open(tmp_path / "0.jpg").convert("RGB")).copy()).permute(2, 0, 1).float()
    got = _codes(_ds(name="imagefolder", path=str(tmp_path), n_test=1))
    assert got.shape == (2, 3, 8, 8) and torch.equal(got[0], want) and torch.equal(got[1], want)


def test_one_bit_images_read_as_black_and_white(tmp_path):
    from PIL import Image
    bits = np.random.default_rng(2).integers(0, 2, (8, 8)).astype(bool)
    for i in range(2):
        Image.fromarray(bits).save(tmp_path / f"{i}.png")
    got = _codes(_ds(name="imagefolder", path=str(tmp_path), channels=1, n_test=1))
    assert torch.equal(got[0, 0], torch.from_numpy(bits.astype(np.float32) * 255))


def test_an_animated_gif_gives_its_first_frame(tmp_path):
    from PIL import Image
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (10, 200, 90)]
    for i in range(2):
        frames[0].save(tmp_path / f"{i}.gif", save_all=True, append_images=frames[1:])
    got = _codes(_ds(name="imagefolder", path=str(tmp_path), channels=1, n_test=1))
    assert got.unique().tolist() == [10.0]


def test_grey_alpha_is_shown_over_white(tmp_path):
    from PIL import Image
    la = np.stack([np.full((4, 4), 100, np.uint8), np.zeros((4, 4), np.uint8)], -1)
    la[:2, :, 1] = 255  # top half opaque grey 100, bottom half invisible
    for i in range(2):
        Image.fromarray(la, "LA").save(tmp_path / f"{i}.png")
    got = _codes(_ds(name="imagefolder", path=str(tmp_path), channels=1, n_test=1))
    assert got[:, 0, :2].eq(100).all() and got[:, 0, 2:].eq(255).all()


def test_a_jpegs_exif_orientation_turns_it(tmp_path):
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = 6  # 90 degrees clockwise: stored 16 wide, 8 high; shown 8 wide, 16 high
    for i in range(2):
        Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(tmp_path / f"{i}.jpg", exif=exif)
    assert _ds(name="imagefolder", path=str(tmp_path), n_test=1).train.shape == (1, 3, 16, 8)


@pytest.mark.parametrize("content", [b"", b"hello, not an image", "truncated"])
def test_a_broken_image_file_is_a_data_error_naming_it(tmp_path, content):
    _png(tmp_path / "a.png", np.zeros((16, 16, 3), np.uint8))
    _png(tmp_path / "b.png", np.zeros((16, 16, 3), np.uint8))
    if content == "truncated":
        import io

        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    (tmp_path / "c.jpg").write_bytes(content)
    with pytest.raises(DataError, match=r"could not read image .*c\.jpg"):
        _ds(name="imagefolder", path=str(tmp_path), n_test=1, image_size=16)


def test_upper_case_suffixes_are_read_and_ds_store_ignored(tmp_path):
    _png(tmp_path / "a.PNG", np.zeros((4, 4, 3), np.uint8))
    _png(tmp_path / "b.JPG", np.zeros((4, 4, 3), np.uint8), format="JPEG")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    d = _ds(name="imagefolder", path=str(tmp_path), n_test=1)
    assert d.train.shape[0] + d.test.shape[0] == 2


def test_a_symlinked_image_file_is_read(tmp_path):
    _png(tmp_path / "store" / "x.png", np.full((4, 4, 3), 77, np.uint8))
    _png(tmp_path / "data" / "a.png", np.zeros((4, 4, 3), np.uint8))
    os.symlink(tmp_path / "store" / "x.png", tmp_path / "data" / "b.png")
    got = _codes(_ds(name="imagefolder", path=str(tmp_path / "data"), n_test=1))
    assert sorted(got.flatten(1).amax(1).tolist()) == [0.0, 77.0]


def test_class_order_is_by_name_and_an_empty_class_folder_is_no_class(tmp_path):
    for v, name in enumerate(("2", "10", "café")):
        for i in range(2):
            _png(tmp_path / name / f"{i}.png", np.full((4, 4), 50 * v, np.uint8))
    (tmp_path / "empty").mkdir()
    d = _ds(name="imagefolder", path=str(tmp_path), n_test=1, channels=1)
    assert d.info["classes"] == ["10", "2", "café"] and d.num_classes == 3
    got, labels = _codes(d), torch.cat([d.train_labels, d.test_labels])
    for img, lab in zip(got, labels.tolist()):  # each image keeps its own folder's label
        assert img.max().item() == 50 * ("2", "10", "café").index(d.info["classes"][lab])


def test_one_pixel_images_are_resized(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png", np.full((1, 1, 3), 7 * i, np.uint8))
    d = _ds(name="imagefolder", path=str(tmp_path), n_test=1, image_size=4)
    assert d.train.shape[1:] == (3, 4, 4)
    assert sorted(_codes(d).flatten(1).amax(1).tolist()) == [0.0, 7.0, 14.0]  # constant images stay constant


# ----- .npy: verified right -----------------------------------------------------------------------------
def test_int16_arrays_in_byte_range_are_codes(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 4, 4, 3)).astype(np.int16)
    np.save(tmp_path / "x.npy", x)
    d = _ds(name="npy", path=str(tmp_path / "x.npy"), n_test=2)
    assert torch.equal(_codes(d).sort(0).values, torch.from_numpy(x).permute(0, 3, 1, 2).float().sort(0).values)


@pytest.mark.parametrize("arr,match", [
    (np.ones((20, 4, 4, 3), bool), "uint8 or float images, got dtype bool"),
    (np.full((20, 4, 4, 3), 200.0, np.float32), r"holds floats in \[200, 200\]"),
    (np.full((20, 4, 4, 3), 1000, np.uint16), "integer images must be 8-bit codes"),
    (np.zeros((20, 4, 4, 4), np.uint8), "C = 1 or 3"),  # RGBA arrays are refused, not cut to RGB
])
def test_arrays_outside_the_promised_types_are_refused(tmp_path, arr, match):
    np.save(tmp_path / "x.npy", arr)
    with pytest.raises(DataError, match=match):
        _ds(name="npy", path=str(tmp_path / "x.npy"), n_test=2)


def test_an_ambiguous_last_axis_of_3_reads_as_channels_last(tmp_path):
    """(N, 3, 32, 3): the documented rule (channels first only when the last axis is not 1 or 3) -> 3x32 RGB."""
    x = np.random.default_rng(0).random((20, 3, 32, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert _ds(name="npy", path=str(tmp_path / "x.npy"), n_test=2).train.shape[1:] == (3, 3, 32)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_a_link_back_up_the_folder_is_read_once(tmp_path):
    for i in range(3):
        _png(tmp_path / "data" / "cat" / f"{i}.png", np.zeros((4, 4, 3), np.uint8))
    os.symlink(tmp_path / "data", tmp_path / "data" / "cat" / "loop")  # a cycle: each real folder is walked once
    d = _ds(name="imagefolder", path=str(tmp_path / "data"), n_test=1)
    assert d.train.shape[0] + d.test.shape[0] == 3


def test_hidden_folders_and_files_are_not_data(tmp_path):
    # (said by the audit: root/.thumbnails/ became class 0 and shifted every label; .ipynb_checkpoints likewise)
    for i in range(3):
        _png(tmp_path / "data" / "cat" / f"{i}.png", np.zeros((4, 4, 3), np.uint8))
        _png(tmp_path / "data" / "dog" / f"{i}.png", np.full((4, 4, 3), 200, np.uint8))
    _png(tmp_path / "data" / ".thumbnails" / "0.png", np.zeros((2, 2, 3), np.uint8))
    _png(tmp_path / "data" / "cat" / ".ipynb_checkpoints" / "0.png", np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "data" / "dog" / ".hidden.png").write_bytes(b"not an image")
    d = _ds(name="imagefolder", path=str(tmp_path / "data"), n_test=1)
    assert d.info["classes"] == ["cat", "dog"] and d.train.shape[0] + d.test.shape[0] == 6
