"""Image loaders: each round-trips a synthetic file in its exact on-disk format (issue 3)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from ebmlab.data.dataset import build_dataset
from ebmlab.data.image_ood import load_ood_set
from ebmlab.data.images import RestrictedUnpickler, safe_unpickle
from ebmlab.errors import DataError
from ebmlab.training.config import DataConfig


def _cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


def _expected(u8: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) in [-1, 1], the documented mapping."""
    return torch.from_numpy(u8).float().permute(0, 3, 1, 2) / 127.5 - 1


# ----- digits --------------------------------------------------------------------------------------
def test_digits_split_range_labels():
    d = build_dataset(_cfg(name="digits"))
    assert d.kind == "image" and d.train.shape == (1500, 1, 8, 8) and d.test.shape == (297, 1, 8, 8)
    assert d.train.dtype == torch.float32 and d.train_labels.dtype == torch.long
    assert float(d.train.min()) == -1.0 and float(d.train.max()) == 1.0
    assert d.num_classes == 10 and set(d.train_labels.tolist()) == set(range(10))
    again = build_dataset(_cfg(name="digits"))
    assert torch.equal(d.train, again.train)  # fixed, seeded split
    other = build_dataset(_cfg(name="digits", seed=7))
    assert not torch.equal(d.train, other.train)
    # the split is a partition of the 1,797 images
    from sklearn.datasets import load_digits
    assert d.train.shape[0] + d.test.shape[0] == load_digits().images.shape[0]


def test_digits_resize_channels_classes():
    d = build_dataset(_cfg(name="digits", image_size=16, channels=3, classes=[0, 1]))
    assert d.train.shape[1:] == (3, 16, 16)
    assert set(d.train_labels.tolist()) == {0, 1} and set(d.test_labels.tolist()) <= {0, 1}
    assert float(d.train.min()) >= -1 and float(d.train.max()) <= 1
    assert torch.equal(d.train[:, 0], d.train[:, 2])  # grey repeated


# ----- CIFAR ---------------------------------------------------------------------------------------
def _cifar_batch(n: int, rng, label_key=b"labels"):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    return {b"batch_label": b"testing batch", label_key: labels, b"data": data,
            b"filenames": [b"img_%d.png" % i for i in range(n)]}


def _write_cifar10(root, protocol=2):
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = _cifar_batch(3, rng)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=protocol))
    return folder, batches


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_roundtrip(tmp_path, protocol):
    folder, batches = _write_cifar10(tmp_path, protocol)
    d = build_dataset(_cfg(name="cifar10", path=str(tmp_path)))  # parent folder is accepted
    assert d.train.shape == (15, 3, 32, 32) and d.test.shape == (3, 3, 32, 32) and d.num_classes == 10
    raw = batches["data_batch_1"][b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # official layout
    assert torch.allclose(d.train[:3], _expected(raw))
    assert d.train_labels[:3].tolist() == batches["data_batch_1"][b"labels"]
    d2 = build_dataset(_cfg(name="cifar10", path=str(folder)))
    assert torch.equal(d.test, d2.test)


def test_cifar_class_names_come_from_the_meta_file(tmp_path):
    """CIFAR runs stored no class names, so ``--label airplane`` could not work (only the index)."""
    folder, _ = _write_cifar10(tmp_path)
    assert build_dataset(_cfg(name="cifar10", path=str(folder))).info["classes"] == []  # no batches.meta: indices
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    assert build_dataset(_cfg(name="cifar10", path=str(folder))).info["classes"][::9] == ["airplane", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names[:3]}, protocol=2))  # not 10 names
    assert build_dataset(_cfg(name="cifar10", path=str(folder))).info["classes"] == []
    (folder / "batches.meta").write_bytes(pickle.dumps(_Evil(tmp_path / "pwned")))  # refused, never run
    assert build_dataset(_cfg(name="cifar10", path=str(folder))).info["classes"] == []
    assert not (tmp_path / "pwned").exists()


def test_cifar100_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    tr, te = _cifar_batch(4, rng, b"fine_labels"), _cifar_batch(2, rng, b"fine_labels")
    (folder / "train").write_bytes(pickle.dumps(tr, protocol=2))
    (folder / "test").write_bytes(pickle.dumps(te, protocol=2))
    d = build_dataset(_cfg(name="cifar100", path=str(folder), image_size=16))
    assert d.train.shape == (4, 3, 16, 16) and d.num_classes == 100
    assert d.test_labels.tolist() == te[b"fine_labels"]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code_without_running_it(tmp_path):
    folder, _ = _write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Evil(marker)}
    (folder / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match="refused global"):
        build_dataset(_cfg(name="cifar10", path=str(folder)))
    assert not marker.exists()
    bad = tmp_path / "eval.pkl"
    bad.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")  # protocol-0 call of builtins.eval
    with pytest.raises(DataError, match="builtins.eval"):
        safe_unpickle(bad)


def test_restricted_unpickler_allows_plain_containers(tmp_path):
    import io
    obj = {"a": [1, 2, (3, 4)], "b": b"bytes", "c": np.arange(6, dtype=np.uint8).reshape(2, 3)}
    out = RestrictedUnpickler(io.BytesIO(pickle.dumps(obj, protocol=2))).load()
    assert out["a"] == obj["a"] and out["b"] == b"bytes" and np.array_equal(out["c"], obj["c"])


def test_cifar_missing_files_name_them(tmp_path):
    with pytest.raises(DataError, match="data_batch_1"):
        build_dataset(_cfg(name="cifar10", path=str(tmp_path)))
    with pytest.raises(DataError, match="needs data.path"):
        build_dataset(_cfg(name="cifar10"))
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(_cfg(name="cifar100", path=str(tmp_path / "nope")))


# ----- image folder --------------------------------------------------------------------------------
def _write_png(path, arr):
    from PIL import Image
    Image.fromarray(arr).save(path)


def test_imagefolder_classes_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {}
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            a = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
            _write_png(tmp_path / cls / f"{i}.png", a)
            arrays[(cls, i)] = a
    d = build_dataset(_cfg(name="imagefolder", path=str(tmp_path), n_test=2))
    assert d.train.shape == (9, 3, 6, 6) and d.test.shape == (1, 3, 6, 6)  # n_test <= N // 10
    assert d.num_classes == 2 and d.info["classes"] == ["cat", "dog"]
    everything = torch.cat([d.train, d.test])
    labels = torch.cat([d.train_labels, d.test_labels])
    for (cls, _), a in arrays.items():  # every file is present, exactly, with its class label
        hit = (everything - _expected(a[None])).abs().flatten(1).amax(1) < 1e-6
        assert hit.sum() == 1 and labels[hit].item() == ["cat", "dog"].index(cls)


def test_imagefolder_labels_at_any_depth_and_a_warning_for_loose_images(tmp_path):
    """Nested class folders (cat/indoor/x.png) and one stray top-level image each made the folder unlabelled
    without a word."""
    for rel in ("cat/a.png", "cat/indoor/b.png", "dog/c.png", "dog/out/door/d.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        _write_png(tmp_path / rel, np.zeros((4, 4, 3), dtype=np.uint8))
    d = build_dataset(_cfg(name="imagefolder", path=str(tmp_path), n_test=1))
    assert d.info["classes"] == ["cat", "dog"] and sorted(torch.cat([d.train_labels, d.test_labels]).tolist()) == [0, 0, 1, 1]
    _write_png(tmp_path / "preview.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.warns(UserWarning, match=r"1 image\(s\) lie outside the class sub-folders \(preview.png\)"):
        d = build_dataset(_cfg(name="imagefolder", path=str(tmp_path), n_test=1))
    assert d.num_classes == 0 and d.train_labels is None


def test_imagefolder_skips_macos_resource_forks(tmp_path):
    """A folder copied from a Mac holds "._name.png" AppleDouble files (and __MACOSX/ in zips): not images;
    they stopped the whole folder from loading ("could not read image")."""
    for rel in ("cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        _write_png(tmp_path / rel, np.zeros((4, 4, 3), dtype=np.uint8))
    for rel in ("cat/._a.png", "__MACOSX/cat/._b.png", "._top.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
    d = build_dataset(_cfg(name="imagefolder", path=str(tmp_path), n_test=1))
    assert d.info["classes"] == ["cat", "dog"] and d.train.shape[0] + d.test.shape[0] == 4


def test_npz_with_several_arrays_and_no_data_key_is_refused(tmp_path):
    """An .npz of several arrays without the data key silently trained on whichever came first."""
    from ebmlab.data.arrays import read_array

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "v.npz", weights=rng.random(5), points=rng.random((40, 2)))
    with pytest.raises(DataError, match=r"holds 2 arrays \('weights', 'points'\) and none named 'x'"):
        read_array(tmp_path / "v.npz")
    np.savez(tmp_path / "one.npz", rng.random((40, 2)))  # a single array (arr_0) is unambiguous
    assert read_array(tmp_path / "one.npz").shape == (40, 2)
    images = rng.integers(0, 256, size=(20, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "im.npz", data=images, labels=rng.integers(0, 2, 20))  # one array besides labels
    d = build_dataset(_cfg(name="npy", path=str(tmp_path / "im.npz"), n_test=2))
    assert d.train.shape[1:] == (3, 4, 4) and d.num_classes == 2
    np.savez(tmp_path / "two.npz", a=images, b=images)
    with pytest.raises(DataError, match="none named 'x' or 'images' or 'arr_0'"):
        build_dataset(_cfg(name="npy", path=str(tmp_path / "two.npz"), n_test=2))


def test_ebmlabs_own_sample_files_read_back_as_images(tmp_path):
    """`ebmlab sample` writes (N, C, H, W) floats in [-1, 1]; --data (npy) and --ood refused them ("must hold
    images of shape (N, H, W, C)"). Channels-first arrays read back as the same images."""
    x = torch.rand(20, 3, 5, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    np.save(tmp_path / "s.npy", x.numpy())
    d = build_dataset(_cfg(name="npy", path=str(tmp_path / "s.npy"), n_test=2))
    assert d.train.shape[1:] == (3, 5, 6)
    assert torch.allclose(torch.cat([d.train, d.test]).sort(0).values, x.sort(0).values)
    np.save(tmp_path / "g.npy", x[:, :1].numpy())  # one channel
    assert build_dataset(_cfg(name="npy", path=str(tmp_path / "g.npy"), n_test=2)).train.shape[1:] == (1, 5, 6)


def test_imagefolder_crop_resize_flat_jpeg(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(3):
        _write_png(tmp_path / f"{i}.png", rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8))
    from PIL import Image
    Image.fromarray(rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)).save(tmp_path / "x.jpg")
    d = build_dataset(_cfg(name="imagefolder", path=str(tmp_path), crop=16, image_size=8))
    assert d.train.shape[1:] == (3, 8, 8) and d.train_labels is None and d.num_classes == 0
    assert d.train.shape[0] + d.test.shape[0] == 4
    g = build_dataset(_cfg(name="imagefolder", path=str(tmp_path), crop=16, image_size=8, channels=1))
    assert g.train.shape[1] == 1
    with pytest.raises(DataError, match="different sizes"):
        build_dataset(_cfg(name="imagefolder", path=str(tmp_path)))
    with pytest.raises(DataError, match="larger than the images"):
        build_dataset(_cfg(name="imagefolder", path=str(tmp_path), crop=64))


def test_imagefolder_empty(tmp_path):
    with pytest.raises(DataError, match="holds no image files"):
        build_dataset(_cfg(name="imagefolder", path=str(tmp_path)))
    _write_png(tmp_path / "only.png", np.zeros((4, 4, 3), dtype=np.uint8))  # was a RuntimeError from torch
    with pytest.raises(DataError, match="holds 1 image; ebmlab needs at least 2"):
        build_dataset(_cfg(name="imagefolder", path=str(tmp_path)))


def test_imagefolder_turns_images_as_their_exif_orientation_says(tmp_path):
    """Cameras store a photo as shot and its turn in the EXIF Orientation tag, which every viewer applies: the folder
    was read unturned (portrait photos lying on their side). Orientations 1 (none), 2 (mirrored), 3 (180),
    6 (90 clockwise) and 8 (90 anticlockwise), each against NumPy's turn of the stored pixels."""
    from PIL import Image
    rng = np.random.default_rng(11)
    shown = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1),
             8: lambda a: np.rot90(a, 1)}
    stored = {o: rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8) for o in shown}
    for o, a in stored.items():
        exif = Image.Exif()
        exif[0x0112] = o  # Orientation
        Image.fromarray(a).save(tmp_path / f"{o}.png", exif=exif)
    d = build_dataset(_cfg(name="imagefolder", path=str(tmp_path), n_test=1))
    got = torch.cat([d.train, d.test])
    for o, a in stored.items():
        want = _expected(np.ascontiguousarray(shown[o](a))[None])
        assert ((got - want).abs().flatten(1).amax(1) < 1e-6).sum() == 1, f"orientation {o}"
    tall = rng.integers(0, 256, size=(4, 8, 3), dtype=np.uint8)  # stored 8 wide, 4 high; shown 4 wide, 8 high
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "tall").mkdir()
    for i in range(2):
        Image.fromarray(tall).save(tmp_path / "tall" / f"{i}.png", exif=exif)
    assert build_dataset(_cfg(name="imagefolder", path=str(tmp_path / "tall"), n_test=1)).train.shape == (1, 3, 8, 4)


def test_imagefolder_shows_transparent_pixels_over_white(tmp_path):
    """A transparent PNG's hidden colour was read as it is stored (Pillow's convert drops the alpha): here black for
    an RGBA image, the palette entry for a paletted one. Over white, as viewers show them: alpha a gives
    c a/255 + 255 (1 - a/255) per channel (to within Pillow's rounding of one level)."""
    from PIL import Image
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 40, 10)
    rgba[:2, ..., 3] = 255  # opaque rows, half-transparent rows, invisible rows (colour black underneath)
    rgba[2:4, ..., 3] = 128
    rgba[4:, ..., :3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    pal = Image.fromarray(np.array([[0, 1] * 3] * 6, dtype=np.uint8), "P")
    pal.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    pal.save(tmp_path / "b.png", transparency=0)  # palette entry 0 (blue) transparent
    d = build_dataset(_cfg(name="imagefolder", path=str(tmp_path), n_test=1))
    got = ((torch.cat([d.train, d.test]) + 1) * 127.5).round()  # back to 0..255
    k = int(got[:, 1].eq(255).flatten(1).all(1).float().argmax())  # b.png: white or green, so green is all 255
    a, b_img = got[1 - k], got[k]
    alpha = np.array([1.0] * 2 + [128 / 255] * 2 + [0.0] * 2)[:, None]
    for c, v in enumerate((200, 40, 10)):
        want = torch.tensor(np.broadcast_to(v * alpha + 255 * (1 - alpha), (6, 6)).copy(), dtype=b_img.dtype)
        assert (a[c] - want).abs().max() <= 1.0, c
    assert b_img[:, :, 0::2].eq(255).all() and b_img[:, :, 1::2].eq(torch.tensor([0, 255, 0]).view(3, 1, 1)).all()


@pytest.mark.parametrize("suffix", [".bmp", ".gif", ".tif", ".TIFF", ".webp"])
def test_imagefolder_reads_every_format_pillow_writes_losslessly(tmp_path, suffix):
    """A folder of .bmp, .gif, .tif or .webp images was "a folder with no .png/.jpg/.jpeg files"."""
    from PIL import Image, features
    if suffix == ".webp" and not features.check("webp"):  # e.g. a Pillow built from source without libwebp
        pytest.skip("this Pillow was built without WebP support")
    rng = np.random.default_rng(3)
    raw = [rng.integers(0, 256, size=(6, 6), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(raw):
        Image.fromarray(a).save(tmp_path / f"{i}{suffix}", **({"lossless": True} if suffix == ".webp" else {}))
    d = build_dataset(_cfg(name="imagefolder", path=str(tmp_path), channels=1, n_test=1))
    got = torch.cat([d.train, d.test])
    assert got.shape == (3, 1, 6, 6)
    for a in raw:
        assert ((got - _expected(a[None, :, :, None])).abs().flatten(1).amax(1) < 1e-6).sum() == 1


def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path):
    """Pillow's convert clips 16-bit values above 255, so a folder of 16-bit grayscale PNGs became white images."""
    from PIL import Image
    rng = np.random.default_rng(7)
    raw = [rng.integers(0, 65536, size=(6, 6)).astype(np.uint16) for _ in range(3)]
    for i, a in enumerate(raw):
        Image.fromarray(a).save(tmp_path / f"{i}.png")  # a 16-bit grayscale PNG
    with Image.open(tmp_path / "0.png") as im:
        assert im.mode.startswith("I")
    d = build_dataset(_cfg(name="imagefolder", path=str(tmp_path), channels=1, n_test=1))
    got = torch.cat([d.train, d.test])
    for a in raw:  # each image, at 8 bits (v * 255 / 65535, rounded), in [-1, 1]
        want = _expected(np.round(a.astype(np.float64) * 255 / 65535).astype(np.uint8)[None, :, :, None])
        assert ((got - want).abs().flatten(1).amax(1) < 1e-6).sum() == 1
    assert got.std() > 0.3  # not one white image


# ----- .npy / .npz ---------------------------------------------------------------------------------
def test_npy_uint8_roundtrip(tmp_path):
    a = np.random.default_rng(4).integers(0, 256, size=(20, 5, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", a)
    d = build_dataset(_cfg(name="npy", path=str(tmp_path / "x.npy"), n_test=4))
    assert d.train.shape == (18, 3, 5, 5) and d.test.shape == (2, 3, 5, 5)
    both = torch.cat([d.train, d.test])
    assert torch.allclose(both.sort(0).values, _expected(a).sort(0).values)


def test_npz_float_labels_and_errors(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.random((30, 4, 4)).astype(np.float32)  # (N, H, W) grey in [0, 1]
    y = rng.integers(0, 3, size=30)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = build_dataset(_cfg(name="npy", path=str(tmp_path / "d.npz")))
    assert d.train.shape[1:] == (1, 4, 4) and d.num_classes == int(y.max()) + 1
    assert float(d.train.min()) >= -1 and float(d.train.max()) <= 1
    assert sorted(torch.cat([d.train_labels, d.test_labels]).tolist()) == sorted(y.tolist())
    np.save(tmp_path / "big.npy", np.full((4, 3, 3, 3), 5.0, np.float32))
    with pytest.raises(DataError, match="expected uint8"):
        build_dataset(_cfg(name="npy", path=str(tmp_path / "big.npy")))
    np.save(tmp_path / "bad.npy", np.zeros((4, 5, 3, 5), np.uint8))  # (4, 3, 3, 5) now reads as channels first
    with pytest.raises(DataError, match="C = 1 or 3"):
        build_dataset(_cfg(name="npy", path=str(tmp_path / "bad.npy")))
    with pytest.raises(DataError, match=r"\.npy or \.npz"):
        build_dataset(_cfg(name="npy"))


# ----- SVHN .mat -----------------------------------------------------------------------------------
def _write_svhn(folder, rng, n=4):
    from scipy.io import savemat
    out = {}
    for split in ("train", "test"):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
        y[0, 0] = 10  # the digit 0
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = (x, y)
    return out


def test_svhn_roundtrip(tmp_path):
    raw = _write_svhn(tmp_path, np.random.default_rng(6))
    d = build_dataset(_cfg(name="svhn", path=str(tmp_path)))
    x, y = raw["test"]
    assert d.test.shape == (4, 3, 32, 32)
    assert torch.allclose(d.test, _expected(np.transpose(x, (3, 0, 1, 2))))
    assert d.test_labels[0].item() == 0 and d.test_labels.tolist() == (y.reshape(-1) % 10).tolist()
    (tmp_path / "train_32x32.mat").unlink()
    with pytest.raises(DataError, match="train_32x32.mat"):
        build_dataset(_cfg(name="svhn", path=str(tmp_path)))


# ----- OOD sets ------------------------------------------------------------------------------------
def test_ood_builtins(gen):
    like = build_dataset(_cfg(name="digits"))
    neg = load_ood_set("digits_negative", like, gen)
    assert torch.equal(neg, -like.test)
    noise = load_ood_set("noise", like, gen)
    assert noise.shape == like.test.shape and float(noise.min()) >= -1 and float(noise.max()) <= 1
    flipped = load_ood_set("digits_flipped", like, gen)
    assert torch.equal(flipped, like.test.flip(-2))
    shuf = load_ood_set("digits_shuffled", like, gen)
    assert shuf.shape == like.test.shape and not torch.equal(shuf, like.test)
    assert torch.equal(shuf.flatten(1).sort(1).values, like.test.flatten(1).sort(1).values)  # pixels permuted


def test_ood_hard_sets(gen):
    """Interpolations average each test digit with one of another class; occlusions blank a half-side square."""
    from ebmlab.data.image_ood import _partners
    like = build_dataset(_cfg(name="digits"))
    partner = _partners(like, torch.Generator().manual_seed(0))
    assert (like.test_labels[partner] != like.test_labels).all()
    mixed = load_ood_set("digits_interpolated", like, torch.Generator().manual_seed(0))
    assert torch.allclose(mixed, 0.5 * (like.test + like.test[partner]))
    occ = load_ood_set("digits_occluded", like, gen)
    changed = (occ != like.test).flatten(1)
    assert occ.shape == like.test.shape and (occ[occ != like.test] == -1).all()
    assert int(changed.sum(1).max()) <= (8 // 2) * (8 // 2)  # at most one 4x4 square per 8x8 image
    assert float(((occ == -1).flatten(1).sum(1) >= 16).float().mean()) == 1.0  # the square is all background


def test_ood_paths_and_names(tmp_path, gen):
    like = build_dataset(_cfg(name="digits"))
    _write_svhn(tmp_path, np.random.default_rng(7))
    svhn = load_ood_set(str(tmp_path / "test_32x32.mat"), like, gen)
    assert svhn.shape == (4, 1, 8, 8)  # resized and converted to grey like the digits
    assert load_ood_set(str(tmp_path), like, gen).shape == (4, 1, 8, 8)
    np.save(tmp_path / "o.npy", np.zeros((3, 16, 16, 3), np.uint8))
    assert load_ood_set(str(tmp_path / "o.npy"), like, gen).shape == (3, 1, 8, 8)
    assert load_ood_set("digits", like, gen).shape == like.test.shape
    with pytest.raises(DataError, match="neither a built-in"):
        load_ood_set("no_such_set", like, gen)


def test_an_ood_folder_of_images_is_used_whole(tmp_path, gen):
    """A folder of images as an OOD set came back as the image loader's test split: a tenth of its images."""
    from PIL import Image
    like = build_dataset(_cfg(name="digits"))
    rng = np.random.default_rng(3)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, size=(8, 8), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
    x = load_ood_set(str(tmp_path), like, gen)
    assert x.shape == (40, 1, 8, 8)
    want = {tuple(np.asarray(Image.open(tmp_path / f"{i:02d}.png")).ravel()) for i in range(40)}
    assert {tuple(((v + 1) * 127.5).round().to(torch.uint8).ravel().tolist()) for v in x} == want  # each image once
