"""8-bit image splits kept as their codes (``data/pixels.py``): the same float32 rows, bit for bit, as the float32
split they replace, a quarter of its memory (an eighth with flips), and the evaluation's novelty search read in
pieces."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from ebmlab.data.dataset import build_dataset
from ebmlab.data.image_ood import load_ood_set
from ebmlab.data.images import resize
from ebmlab.data.pixels import Pixels, chunks, codes_of, dense, from_codes
from ebmlab.errors import DataError
from ebmlab.metrics import novelty
from ebmlab.training.config import DataConfig
from tests.image_files import write_cifar10


def _float_split(codes: torch.Tensor, mirrored: bool) -> torch.Tensor:
    """What the loaders held before: the float32 split, its mirror images appended."""
    x = codes.float() / 127.5 - 1.0
    return torch.cat([x, x.flip(-1)]) if mirrored else x


@pytest.mark.parametrize("mirrored", [False, True])
def test_every_kind_of_index_reads_the_float32_split_bit_for_bit(mirrored):
    codes = torch.randint(0, 256, (7, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    p, want = Pixels(codes, mirrored), _float_split(codes, mirrored)
    m = want.shape[0]
    assert p.shape == want.shape and len(p) == m and p.dtype == torch.float32
    idx = torch.randint(-m, m, (40,), generator=torch.Generator().manual_seed(1))
    mask = want[:, 0, 0, 0] > 0
    for got, ref in ((p[idx], want[idx]), (p[idx.int()], want[idx]), (p[2:m - 1:2], want[2:m - 1:2]), (p[-1], want[-1]),
                     (p[0], want[0]), (p[mask], want[mask]), (dense(p), want), (torch.cat(list(chunks(p, 3))), want)):
        assert got.dtype == torch.float32 and torch.equal(got, ref)
    with pytest.raises(IndexError):
        p[torch.tensor([m])]


def test_torch_functions_and_tensor_methods_see_the_dense_split():
    codes = torch.randint(0, 256, (4, 1, 3, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    p, want = Pixels(codes, mirrored=True), _float_split(codes, True)
    assert torch.equal(torch.cat([p, want[:1]]), torch.cat([want, want[:1]]))
    assert bool(torch.isfinite(p).all()) and torch.equal(p.mean(0), want.mean(0)) and p.numpy().shape == (8, 1, 3, 3)
    with pytest.raises(ValueError, match="uint8"):
        Pixels(codes.float())


def test_codes_round_trip_and_resized_images_round_to_the_nearest_code():
    v = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(codes_of(from_codes(v)), v)
    x = from_codes(torch.randint(0, 256, (2, 3, 9, 9), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)))
    small = resize(x, 4)
    q = from_codes(codes_of(small))
    assert float((q - small).abs().max()) <= 0.5 / 127.5 + 1e-6  # within half a code


@pytest.mark.parametrize("hflip", [False, True])
def test_cifar_keeps_its_training_split_as_codes_and_flips_without_a_second_copy(tmp_path, hflip):
    raw = write_cifar10(tmp_path, 4)
    d = build_dataset(DataConfig(name="cifar10", path=str(tmp_path), hflip=hflip))
    codes = torch.from_numpy(np.concatenate([raw[f"data_batch_{i}"] for i in range(1, 6)])).view(-1, 3, 32, 32)
    assert isinstance(d.train, Pixels) and d.train.mirrored is hflip
    assert d.train.codes.dtype == torch.uint8 and d.train.codes.shape[0] == 20  # the 20 images once, flips or not
    assert torch.equal(d.train[:], _float_split(codes, hflip))  # the rows the float32 split held, in its order
    assert d.train_labels.shape[0] == len(d.train) == (40 if hflip else 20)
    test = torch.from_numpy(raw["test_batch"]).view(-1, 3, 32, 32)
    assert d.test.dtype == torch.float32 and torch.equal(d.test, _float_split(test, False))


def _write_pngs(folder, rng, n, size):
    from PIL import Image
    folder.mkdir(exist_ok=True)
    arrays = [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(n)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:02d}.png")
    return arrays


def test_a_folder_resized_on_reading_holds_codes_within_half_a_code_of_the_float_resize(tmp_path):
    arrays = _write_pngs(tmp_path / "f", np.random.default_rng(6), 10, 12)
    d = build_dataset(DataConfig(name="imagefolder", path=str(tmp_path / "f"), image_size=5, n_test=1))
    assert isinstance(d.train, Pixels) and d.train.shape[1:] == (3, 5, 5)
    every = from_codes(torch.from_numpy(np.stack(arrays))).permute(0, 3, 1, 2)
    resized = resize(every, 5)
    rows = torch.cat([d.train[:], d.test])
    # each stored image is within half a code of one image's float resize
    gap = (rows[:, None] - resized[None]).abs().flatten(2).amax(2).amin(1)
    assert float(gap.max()) <= 0.5 / 127.5 + 1e-6


def test_float_arrays_stay_float32_splits(tmp_path):
    x = np.random.default_rng(7).random((20, 4, 4, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    d = build_dataset(DataConfig(name="npy", path=str(tmp_path / "x.npy")))
    assert isinstance(d.train, torch.Tensor) and d.train.dtype == torch.float32


def test_an_ood_folder_of_8_bit_images_comes_back_whole_as_float32(tmp_path):
    arrays = _write_pngs(tmp_path / "ood", np.random.default_rng(9), 20, 6)
    like = build_dataset(DataConfig(name="npy", path=str(_save_codes(tmp_path))))
    x = load_ood_set(str(tmp_path / "ood"), like, torch.Generator().manual_seed(0))
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape[0] == 20
    assert {tuple(codes_of(v).permute(1, 2, 0).flatten().tolist()) for v in x} == {tuple(a.flatten()) for a in arrays}


def _save_codes(tmp_path):
    np.save(tmp_path / "run.npy", np.random.default_rng(8).integers(0, 256, size=(12, 6, 6, 3), dtype=np.uint8))
    return tmp_path / "run.npy"


@pytest.mark.parametrize("k", [1, 3])
def test_the_novelty_search_read_in_pieces_finds_what_the_whole_split_gives(monkeypatch, k):
    g = torch.Generator().manual_seed(10)
    codes = torch.randint(0, 256, (23, 1, 4, 4), dtype=torch.uint8, generator=g)
    train = Pixels(codes, mirrored=True)
    samples = torch.rand(9, 1, 4, 4, generator=g) * 2 - 1
    samples[0] = train[31]  # a copy of a mirror image: distance 0, found as such
    whole = novelty.nearest_neighbours(samples, dense(train), k=k)
    monkeypatch.setattr(novelty, "TRAIN_CHUNK", 5)  # 10 pieces, the last one short
    pieces = novelty.nearest_neighbours(samples, train, k=k, chunk=4)
    assert torch.equal(pieces[0], whole[0]) and torch.equal(pieces[1], whole[1])
    assert float(pieces[0][0, 0]) == 0.0 and int(pieces[1][0, 0]) == 31
    brute = torch.cdist(samples.flatten(1).double(), dense(train).flatten(1).double()).sort(1).values[:, :k]
    assert torch.allclose(pieces[0], brute, atol=1e-12)


def test_training_on_codes_gives_the_weights_training_on_the_float32_split_gave(tmp_path):
    """Three updates of an image run with flips from a uint8 file, once on the ``Pixels`` split and once on its
    float32 copy (what the loader held before): the same batches, so the same weights, bit for bit."""
    import dataclasses

    from ebmlab.training.config import load_config
    from ebmlab.training.loop import Trainer, prepare_run_dir
    np.save(tmp_path / "x.npy", np.random.default_rng(11).integers(0, 256, size=(30, 8, 8), dtype=np.uint8))
    cfg = load_config("digits_hybrid", [f"data.path={tmp_path / 'x.npy'}", "data.name=npy", "data.hflip=true",
                                        "train.steps=3", "train.batch_size=8", "method.n_steps=2",
                                        "method.n_steps_data=2", "train.threads=1", "eval.plots=false"])
    states = []
    for name, as_float in (("codes", False), ("float", True)):
        data = build_dataset(cfg.data)
        assert isinstance(data.train, Pixels)
        if as_float:
            data = dataclasses.replace(data, train=_float_split(data.train.codes, True))
        lock = prepare_run_dir(tmp_path / name, cfg, resume=False, overwrite=False)
        try:
            trainer = Trainer(cfg, tmp_path / name, data=data)
            trainer.fit()
        finally:
            lock.release()
        states.append(trainer.objective.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_a_folder_is_read_straight_into_its_seeded_splits_and_names_an_image_of_another_size(tmp_path):
    arrays = _write_pngs(tmp_path / "f", np.random.default_rng(12), 30, 6)  # sorted names 00.png .. 29.png
    d = build_dataset(DataConfig(name="imagefolder", path=str(tmp_path / "f"), n_test=3, seed=4))
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(4))  # the documented split: min(n_test, N/10)
    every = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)   # (30, 3, 6, 6) codes in file order
    assert torch.equal(d.train.codes, every[perm[3:]]) and torch.equal(d.test, from_codes(every[perm[:3]]))
    from PIL import Image
    Image.fromarray(np.zeros((7, 6, 3), dtype=np.uint8)).save(tmp_path / "f" / "30.png")
    with pytest.raises(DataError, match=r"different sizes \(\(6, 6\) in \d\d\.png and \(7, 6\) in 30\.png\)"):
        build_dataset(DataConfig(name="imagefolder", path=str(tmp_path / "f"), n_test=3, seed=4))


def test_indexes_as_a_tensor_takes_them_give_what_the_tensor_gives():
    codes = torch.randint(0, 256, (6, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(13))
    p = Pixels(codes, mirrored=True)
    d = _float_split(codes, True)
    for idx in ((0, 1), (slice(None), 0), (torch.tensor([1, 9]), slice(None), 2, 3), (-1, Ellipsis, 0), (Ellipsis, 1),
                None, Ellipsis, np.int64(3), torch.tensor(3), [], [1, 2, 11], torch.tensor([[1, 2], [3, -1]]),
                d[:, 0, 0, 0].numpy() > 0):
        got = p[idx]
        assert got.shape == d[idx].shape and torch.equal(got, d[idx]), idx


def test_arithmetic_and_comparisons_act_on_the_dense_split_and_changes_in_place_are_refused():
    codes = torch.randint(0, 256, (3, 1, 2, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(14))
    p, d = Pixels(codes), _float_split(codes, False)
    for got, want in ((p * 0.5 + 0.5, d * 0.5 + 0.5), (-p, -d), (2 - p, 2 - d), (p == p, d == d), (p < 0, d < 0),
                      (p + p, d + d), (torch.as_tensor(np.asarray(p)), d)):
        assert torch.equal(got, want)
    for change in (lambda: p.mul_(0), lambda: torch.clamp_(p, 0, 1), lambda: p.__setitem__(0, 0.0)):
        with pytest.raises((AttributeError, TypeError), match="read-only"):
            change()
    assert torch.equal(p[:], d)  # untouched


def test_an_ood_array_file_in_a_resized_run_is_rounded_as_the_runs_own_images_are(tmp_path):
    """OOD images are prepared as the run's held-out images: the same 8-bit file as both gives the same numbers."""
    arr = np.random.default_rng(15).integers(0, 256, size=(40, 12, 12, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", arr)
    like = build_dataset(DataConfig(name="npy", path=str(tmp_path / "x.npy"), image_size=5, n_test=40))
    x = load_ood_set(str(tmp_path / "x.npy"), like, torch.Generator().manual_seed(0))
    rows = torch.cat([like.train[:], like.test]).flatten(1)
    assert torch.equal(torch.unique(rows, dim=0), torch.unique(x.flatten(1), dim=0))
    assert torch.equal(from_codes(codes_of(x)), x)  # on the codes' grid
