"""Known answers for the twenty-first mutation round (on the code of 2026-12-06, after the 8-bit ``Pixels`` splits):
planted one-line bugs the suite let through in ``data/pixels.py`` (a mask of the wrong length), the loaders' work on
uint8 codes (a grey conversion, ``POST_CHUNK`` pieces (``data/image_ops.py``), a folder of mixed sizes, flips of float32 splits, SVHN as an
OOD set), ``build_dataset``'s check of standardised vector data, the novelty search's check of the training images,
``Run.sample``'s last check and its default seed, and ``ebmlab train``'s Ctrl-C message and its --resume/--overwrite
refusal."""
from __future__ import annotations


import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.data import image_ops
from ebmlab.data.dataset import build_dataset
from ebmlab.data.image_ood import load_ood_set
from ebmlab.data.image_ops import resize, set_channels
from ebmlab.data.pixels import Pixels, codes_of, from_codes
from ebmlab.errors import DataError
from ebmlab.metrics import novelty
from ebmlab.training.config import DataConfig
from tests.image_files import write_cifar10
from tests.reliability.conftest import cli, sets

HALF_CODE = 0.5 / 127.5 + 1e-6
# ----- Pixels ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mirrored", [False, True])
def test_a_bool_mask_of_the_wrong_length_is_refused_as_a_tensor_refuses_it(mirrored):
    codes = torch.randint(0, 256, (5, 1, 2, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    p = Pixels(codes, mirrored)
    for wrong in (len(p) - 1, 3):
        with pytest.raises(IndexError):
            p[torch.ones(wrong, dtype=torch.bool)]
    assert p[torch.ones(len(p), dtype=torch.bool)].shape[0] == len(p)


# ----- loaders on uint8 codes ---------------------------------------------------------------------------


def test_cifar_with_channels_1_is_turned_grey_to_the_nearest_code(tmp_path):
    raw = write_cifar10(tmp_path, 3)
    d = build_dataset(DataConfig(name="cifar10", path=str(tmp_path), channels=1))
    codes = torch.from_numpy(np.concatenate([raw[f"data_batch_{i}"] for i in range(1, 6)])).view(-1, 3, 32, 32)
    assert isinstance(d.train, Pixels) and d.train.shape == (15, 1, 32, 32) and d.test.shape == (3, 1, 32, 32)
    grey = set_channels(from_codes(codes), 1)  # ITU-R 601 luma of the float32 images
    assert float((d.train[:] - grey).abs().max()) <= HALF_CODE
    test_grey = set_channels(from_codes(torch.from_numpy(raw["test_batch"]).view(-1, 3, 32, 32)), 1)
    assert float((d.test - test_grey).abs().max()) <= HALF_CODE


def test_resizing_codes_in_pieces_gives_every_image_its_own_resize(tmp_path, monkeypatch):
    arr = np.random.default_rng(12).integers(0, 256, size=(11, 6, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", arr)
    cfg = DataConfig(name="npy", path=str(tmp_path / "x.npy"), image_size=4, n_test=2)
    whole = build_dataset(cfg)
    monkeypatch.setattr(image_ops, "POST_CHUNK", 3)  # 4 pieces, the last one short
    pieces = build_dataset(cfg)
    assert torch.equal(pieces.train.codes, whole.train.codes) and torch.equal(pieces.test, whole.test)
    every = resize(from_codes(torch.from_numpy(arr).permute(0, 3, 1, 2)), 4)
    rows = torch.cat([pieces.train[:], pieces.test])
    gap = (rows[:, None] - every[None]).abs().flatten(2).amax(2)  # (11 rows, 11 images)
    assert float(gap.amin(1).max()) <= HALF_CODE  # each row is some image's resize ...
    assert len(set(gap.argmin(1).tolist())) == 11  # ... and every image's, once


def test_a_folder_of_images_of_different_sizes_loads_with_data_image_size(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(13)
    arrays = [rng.integers(0, 256, size=(s, s, 3), dtype=np.uint8) for s in (12, 10, 12, 9, 11, 12)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"{i:02d}.png")
    d = build_dataset(DataConfig(name="imagefolder", path=str(tmp_path), image_size=5, n_test=1))
    assert d.train.shape == (5, 3, 5, 5) and d.test.shape == (1, 3, 5, 5)
    want = [resize(from_codes(torch.from_numpy(a).permute(2, 0, 1)[None]), 5)[0] for a in arrays]
    for row in torch.cat([d.train[:], d.test]):
        assert min(float((row - w).abs().max()) for w in want) <= HALF_CODE


def test_float32_splits_with_hflip_append_left_right_mirrors():
    d = build_dataset(DataConfig(name="digits", hflip=True))
    n = d.train.shape[0] // 2
    assert isinstance(d.train, torch.Tensor) and n == 1500
    assert torch.equal(d.train[n:], d.train[:n].flip(-1)) and not torch.equal(d.train[n:], d.train[:n].flip(-2))
    assert torch.equal(d.train_labels[n:], d.train_labels[:n])


def test_an_svhn_mat_ood_set_comes_back_in_model_coordinates(tmp_path):
    from scipy.io import savemat
    rng = np.random.default_rng(14)
    x = rng.integers(0, 256, size=(32, 32, 3, 4), dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": rng.integers(1, 11, size=(4, 1))})
    np.save(tmp_path / "run.npy", rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8))
    like = build_dataset(DataConfig(name="npy", path=str(tmp_path / "run.npy")))
    for where in (tmp_path / "test_32x32.mat", tmp_path):  # the file, and a folder holding it
        got = load_ood_set(str(where), like, torch.Generator().manual_seed(0))
        want = torch.from_numpy(x).permute(3, 2, 0, 1).float() / 127.5 - 1.0  # (N, C, H, W) in [-1, 1]
        assert got.dtype == torch.float32 and torch.equal(got, want)
        assert torch.equal(codes_of(got), torch.from_numpy(x).permute(3, 2, 0, 1))


# ----- build_dataset's check of model coordinates -----------------------------------------------------------
def test_a_held_out_row_that_overflows_after_standardising_is_refused(tmp_path):
    """A column of tiny spread in training and one held-out row at 3e38 (within float32): standardised, that row is
    beyond float32; build_dataset refuses it instead of handing on an infinite test split."""
    x = np.stack([np.arange(100) * 1e-30, np.random.default_rng(16).normal(size=100)], 1)
    np.save(tmp_path / "v.npy", x)
    plain = build_dataset(DataConfig(name="array", path=str(tmp_path / "v.npy"), standardize=False, n_test=10))
    held_out = int(round(float(plain.test[0, 0].double() / 1e-30)))  # the row number of a held-out row
    x[held_out, 0] = 3e38
    np.save(tmp_path / "v.npy", x)
    with pytest.raises(DataError, match="non-finite values in model coordinates"):
        build_dataset(DataConfig(name="array", path=str(tmp_path / "v.npy"), n_test=10))


# ----- novelty search -----------------------------------------------------------------------------------
def test_the_novelty_search_refuses_training_images_that_are_not_finite(monkeypatch):
    samples = torch.zeros(3, 1, 2, 2)
    train = torch.rand(9, 1, 2, 2, generator=torch.Generator().manual_seed(15))
    train[7, 0, 1, 1] = float("nan")  # far from the samples' neighbours, in the last piece
    monkeypatch.setattr(novelty, "TRAIN_CHUNK", 4)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        novelty.nearest_neighbours(samples, train, k=2)
    train[7, 0, 1, 1] = float("inf")
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        novelty.nn_distances(samples, train)


# ----- Run.sample ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    g = np.random.default_rng(0)
    pts = np.concatenate([g.normal([3.0, -1.0], 0.4, (100, 2)), g.normal([5.0, 2.0], 0.4, (100, 2))])
    out = tmp_path_factory.mktemp("round21") / "r"
    ebmlab.train("noise", data=pts, out=out, train={"steps": 2, "progress": False, "batch_size": 64}, evaluate=False,
                 overrides={"model.width": 16, "train.select_every": None})
    return out


def test_run_sample_refuses_samples_that_are_not_finite(tiny_run, monkeypatch):
    from ebmlab.training import drawing
    real = drawing.draw

    def diverged(*a, **k):
        out = real(*a, **k)
        x = out.x.detach().clone()
        x[1, 0] = float("inf")
        return out._replace(x=x)
    monkeypatch.setattr(drawing, "draw", diverged)
    with pytest.raises(FloatingPointError, match="not finite"):
        ebmlab.load(tiny_run).sample(3, steps=2)


def test_run_sample_default_seed_draws_what_ebmlab_sample_draws_by_default(tiny_run, tmp_path, capsys):
    run = ebmlab.load(tiny_run)
    x = run.sample(4, steps=3)
    assert torch.equal(x, run.sample(4, steps=3, seed=0)) and not torch.equal(x, run.sample(4, steps=3, seed=1))
    code, _, _ = cli(capsys, "sample", tiny_run, "--n", 4, "--steps", 3, "--out", tmp_path / "s.npy")
    assert code == 0 and np.array_equal(np.load(tmp_path / "s.npy"), x.numpy())


# ----- ebmlab train: Ctrl-C and refusals ----------------------------------------------------------------
def test_ctrl_c_during_training_names_the_last_checkpoint_and_the_resume_command(tmp_path, capsys, monkeypatch):
    from ebmlab.training import loop
    run = tmp_path / "r"
    assert cli(capsys, "train", "--out", run, *sets("data.name=8gaussians", "eval.n_samples=16"))[0] == 0
    update, count = loop.Trainer._update, [0]

    def interrupted(self):
        count[0] += 1
        if count[0] == 2:
            raise KeyboardInterrupt
        return update(self)
    monkeypatch.setattr(loop.Trainer, "_update", interrupted)
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--set", "train.steps=6")
    assert code == 130
    assert f"the last checkpoint, step_00000003.safetensors, is kept: continue with ebmlab train --out {run} --resume" \
        in err


def test_train_refuses_resume_with_overwrite_before_touching_anything(tmp_path, capsys):
    run = tmp_path / "r"
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--overwrite", *sets("data.name=8gaussians"))
    assert code == 2 and "pass only one of them" in err and not run.exists()
