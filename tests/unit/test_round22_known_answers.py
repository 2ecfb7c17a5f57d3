"""Known answers for the code changed on 2026-12-06 (mutation round 22): what ``--overwrite`` deletes inside a run's
folders, in-memory OOD images, which loader a data path gets, integer image codes, checkpoint names, compare's
data refusal, the mixed-size folder error and ``ebmlab.configs(NAME)``. Each test is a direct call: no training."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmlab.errors import ConfigError, DataError


# ----- run_dir: --overwrite inside checkpoints/, samples/ and plots/ ----------------------------------------------
def _names_training_writes() -> list[str]:
    """Relative paths of files training writes in the run's folders, built by the writers' own name functions."""
    from ebmlab.training import checkpoint as ckpt
    from ebmlab.training.dist_checkpoint import rank_file
    from ebmlab.training.selection import START_FILE

    step, rank = ckpt.step_name(12), rank_file(Path("checkpoints"), 12, 3).name
    return [f"checkpoints/{n}" for n in (step, step + ".tmp", step.replace(".safetensors", ".json"), rank,
                                          rank.replace(".safetensors", ".json"), "best.safetensors", "best.json",
                                          START_FILE, START_FILE + ".tmp")] + [
        "samples/samples.npy", "samples/samples.npy.tmp", "samples/grid_final.png",
        f"samples/grid_step{1_000_000:06d}.png", f"samples/scatter_selected_step{10:06d}.png",
        "plots/novelty.png", "plots/density.png.tmp"]


USERS = ["checkpoints/step_40.safetensors", "checkpoints/best_copy.safetensors", "samples/samples.npy.orig",
         "samples/grid_step12.png", "plots/novelty.png.bak"]


def _fake_run(root: Path, files: list[str]) -> Path:
    run = root / "run"
    for rel in ["config.yaml", "metrics.jsonl", *files]:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(rel.encode())
    return run


def _left(run: Path) -> list[str]:
    return sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())


def test_overwrite_deletes_exactly_the_names_training_writes(tmp_path):
    """Pins ``TRAIN_FILES``: every name training gives (8-digit steps, rank files, best, select_start.json, .tmp
    leftovers, 7-digit sample-figure steps) is deleted; names that only look alike (``step_40``, a ``.bak`` or
    ``.orig`` after a training name: ``fullmatch``, not a prefix match) are the user's and kept."""
    from ebmlab.training.run_dir import _remove_run_files

    run = _fake_run(tmp_path, _names_training_writes() + USERS)
    with pytest.warns(UserWarning, match=r"kept 5 file\(s\)"):
        _remove_run_files(run)
    assert _left(run) == sorted([*USERS, "config.yaml"])  # (config.yaml: until the new run's replaces it, round 48)


def test_overwrite_removes_a_folder_it_empties_and_warns_only_when_it_keeps_something(tmp_path):
    """A folder holding only training's files goes too; with nothing of the user's there is no warning."""
    from ebmlab.training.run_dir import _remove_run_files

    run = _fake_run(tmp_path, _names_training_writes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _remove_run_files(run)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # (until the new run's replaces it, round 48)


def test_overwrite_warning_lists_five_kept_files_then_an_ellipsis(tmp_path):
    """Five kept files are all named without ``...``; a sixth adds `` ...`` and is not named."""
    from ebmlab.training.run_dir import _remove_run_files

    for n, tail in ((5, r"u4\.npy'?$"), (6, r"u4\.npy \.\.\.$")):
        run = _fake_run(tmp_path / str(n), [f"samples/u{i}.npy" for i in range(n)])
        with pytest.warns(UserWarning) as got:
            _remove_run_files(run)
        msg = str(got[0].message)
        assert f"kept {n} file(s)" in msg and "samples/u0.npy" in msg and "u5" not in msg
        assert (msg.endswith(" ...")) == (n == 6), msg


def test_overwrite_keeps_a_folder_named_as_a_training_file_and_does_not_warn_about_the_kept_data_file(tmp_path):
    """A user's folder named like a checkpoint is kept (only files are training's); the new run's data file
    (``keep``) inside samples/ is neither deleted nor reported as the user's."""
    from ebmlab.training.run_dir import _remove_run_files

    run = _fake_run(tmp_path, ["checkpoints/best.json/notes.txt", "samples/mine.npy", "samples/samples.npy"])
    with pytest.warns(UserWarning) as got:
        _remove_run_files(run, keep=str(run / "samples" / "mine.npy"))
    assert _left(run) == ["checkpoints/best.json/notes.txt", "config.yaml", "samples/mine.npy"]
    assert len(got) == 1 and "kept 1 file(s)" in str(got[0].message) and "mine.npy" not in str(got[0].message)


def test_overwrite_unlinks_a_linked_samples_folder_and_never_touches_its_target(tmp_path):
    """samples/ as a link to the user's folder: the link goes, the files training names in the target stay."""
    from ebmlab.training.run_dir import _remove_run_files

    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "samples.npy").write_bytes(b"mine")
    run = _fake_run(tmp_path, [])
    (run / "samples").symlink_to(target, target_is_directory=True)
    _remove_run_files(run)
    assert not (run / "samples").exists() and (target / "samples.npy").read_bytes() == b"mine"


# ----- api_data: in-memory OOD images, which loader a path gets -----------------------------------------------
def test_in_memory_image_ood_known_values():
    """uint8 codes as v / 127.5 - 1; floats at the bounds -1 and 1 taken as given; a float below -1 refused
    (the bound is checked on both sides); vector runs leave values as given."""
    from ebmlab.api_data import ood_inputs

    u8 = np.zeros((1, 1, 2, 2), dtype=np.uint8)
    u8.flat[:] = [0, 255, 51, 204]
    _, got = ood_inputs({"u8": u8, "edge": np.array([[[[-1.0, 1.0], [0.0, 0.5]]]], dtype=np.float32)}, (1, 2, 2),
                        "image")
    assert torch.allclose(got["u8"].flatten(), torch.tensor([-1.0, 1.0, -0.6, 0.6]))
    assert got["edge"].flatten().tolist() == [-1.0, 1.0, 0.0, 0.5]
    with pytest.raises(DataError, match=r"holds values in \[-1\.5, 0\]"):
        ood_inputs({"low": np.array([[[[-1.5, 0.0], [0.0, 0.0]]]], dtype=np.float32)}, (1, 2, 2), "image")
    assert ood_inputs({"v": np.array([[3.0, 255.0]])}, (2,))[1]["v"].tolist() == [[3.0, 255.0]]


@pytest.mark.parametrize("shape,name", [((10, 8, 3), "array"), ((10, 3, 8), "array"), ((10, 8, 7), "array"),
                                        ((10, 9, 8), "npy")])
def test_a_3d_array_is_images_only_when_both_sides_are_at_least_8(tmp_path, shape, name):
    """(N, H, W) is images when min(H, W) >= 8: a table of 8-row, 3-column blocks stays vectors."""
    from ebmlab.api_data import file_data_name

    np.save(tmp_path / "a.npy", np.zeros(shape, dtype=np.float32))
    assert file_data_name(tmp_path / "a.npy") == name


def test_the_file_loader_reads_upper_case_suffixes_and_npz_keys_as_the_image_loader_does(tmp_path):
    """``IMGS.NPY`` is read from its header like ``imgs.npy``; an .npz of images x with labels y is images; one of
    two arrays under other names (which one is the images?) is left to the array loader."""
    from ebmlab.api_data import file_data_name

    imgs = np.zeros((10, 3, 8, 8), dtype=np.uint8)
    with open(tmp_path / "IMGS.NPY", "wb") as fh:  # (np.save would append .npy to the name)
        np.save(fh, imgs)
    np.savez(tmp_path / "xy.npz", x=imgs, y=np.arange(10))
    np.savez(tmp_path / "two.npz", a=imgs, b=imgs)
    np.savez(tmp_path / "images.npz", images=imgs, labels=np.arange(10))
    assert [file_data_name(tmp_path / n) for n in ("IMGS.NPY", "xy.npz", "two.npz", "images.npz")] == [
        "npy", "npy", "array", "npy"]


def test_a_folder_is_cifar_only_with_every_batch_file(tmp_path):
    """All of data_batch_1..5 and test_batch make a CIFAR-10 folder; a folder lacking test_batch, or holding only
    test_batch, is a folder of images."""
    from ebmlab.api_data import folder_data_name

    full, no_test, only_test = (tmp_path / n for n in ("full", "no_test", "only_test"))
    for folder, names in ((full, [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]),
                          (no_test, [f"data_batch_{i}" for i in range(1, 6)]), (only_test, ["test_batch"])):
        folder.mkdir()
        for n in names:
            (folder / n).write_bytes(b"")
    assert [folder_data_name(p) for p in (full, no_test, only_test)] == ["cifar10", "imagefolder", "imagefolder"]


# ----- image_ops: integer images are 8-bit codes -------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int64, np.int16, np.uint16, np.uint32])
def test_integer_images_in_0_255_give_the_same_codes_as_uint8(dtype):
    """Signed and unsigned integer arrays in [0, 255] are read exactly as the same uint8 array."""
    from ebmlab.data.image_ops import image_tensor

    codes = np.arange(0, 256, dtype=np.uint8).reshape(1, 16, 16, 1)
    assert torch.equal(image_tensor(codes.astype(dtype), "imgs"), image_tensor(codes, "imgs"))


@pytest.mark.parametrize("value,lo,hi", [(-1, -1, 5), (256, 0, 256)])
def test_integer_images_just_outside_0_255_are_refused(value, lo, hi):
    from ebmlab.data.image_ops import image_tensor

    with pytest.raises(DataError, match=rf"integers in \[{lo}, {hi}\]"):
        image_tensor(np.array([[[[0, value, 5]]]], dtype=np.int64), "imgs")


# ----- run.py: checkpoint names and the missing-checkpoint sentence -------------------------------------------
def _checkpoints(run: Path, steps, best: bool = False) -> None:
    from ebmlab.training import checkpoint as ckpt

    (run / "checkpoints").mkdir(parents=True)
    for s in steps:
        for suffix in (".safetensors", ".json"):
            (run / "checkpoints" / ckpt.step_name(s)).with_suffix(suffix).write_bytes(b"")
    if best:
        (run / "checkpoints" / "best.safetensors").write_bytes(b"")


def test_missing_checkpoint_sentence_shows_three_then_the_last_two(tmp_path):
    """Up to five names all shown; six or more: the first three, ``...``, the last two (best last)."""
    from ebmlab.training.run import _missing_checkpoint

    five, six, none = tmp_path / "five", tmp_path / "six", tmp_path / "none"
    _checkpoints(five, range(1, 5), best=True)
    _checkpoints(six, range(1, 6), best=True)
    (none / "checkpoints").mkdir(parents=True)
    assert _missing_checkpoint(five, Path("x")).split("; the run's are ")[1].startswith(
        "step_00000001.safetensors, step_00000002.safetensors, step_00000003.safetensors, "
        "step_00000004.safetensors, best.safetensors (")
    assert _missing_checkpoint(six, Path("x")).split("; the run's are ")[1].startswith(
        "step_00000001.safetensors, step_00000002.safetensors, step_00000003.safetensors, ..., "
        "step_00000005.safetensors, best.safetensors (")
    assert _missing_checkpoint(none, Path("x")) == "checkpoint 'x' does not exist"


def test_a_checkpoint_path_with_a_folder_is_taken_as_given(tmp_path, monkeypatch):
    """Only a bare name is looked up in the run's checkpoints/: ``sub/best`` names a path, never
    ``checkpoints/sub/best.safetensors``; a bare ``best`` and a step ``"7"`` are found there."""
    from ebmlab.training.run import _checkpoint_path

    run = tmp_path / "run"
    _checkpoints(run, [7], best=True)
    (run / "checkpoints" / "sub").mkdir()
    (run / "checkpoints" / "sub" / "best.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert _checkpoint_path(run, "sub/best") == Path("sub/best")
    assert _checkpoint_path(run, "best") == run / "checkpoints" / "best.safetensors"
    assert _checkpoint_path(run, "7") == _checkpoint_path(run, 7) == run / "checkpoints" / "step_00000007.safetensors"


# ----- compare: which data -------------------------------------------------------------------------------------
def _read(name: str, path: str | None, sha=None, listing=None, **data) -> dict:
    from ebmlab.experiments.compare import DATA_FACTS, DATA_SETTINGS

    d = {**{f"data.{k}": None for k in DATA_SETTINGS}, **{k: None for k in DATA_FACTS}}
    d.update(name=name, kind="vector", sha256=sha, listing_sha256=listing, **data)
    return {"data": d, "data_path": path}


@pytest.mark.parametrize("a,b,match", [
    (_read("array", "/d/x.npy", sha="aa"), _read("array", "/d/x.npy", sha="bb"), r"\(sha256: 'aa' vs 'bb'\)"),
    (_read("imagefolder", "/d/a", listing="aa"), _read("imagefolder", "/d/b", listing="bb"),
     r"\(imagefolder '/d/a' vs imagefolder '/d/b'\)"),
    (_read("mixture", None), _read("rings", None), r"\('mixture' vs 'rings'\)"),
])
def test_compare_names_other_data_by_path_and_a_changed_file_by_its_hash(a, b, match):
    """Another folder (only its listing differs) is named with both paths; the same path whose content changed
    is reported as the differing hash, not as two identical paths."""
    from ebmlab.experiments.compare_checks import check_same_data

    with pytest.raises(ConfigError, match=match):
        check_same_data(["r1", "r2"], [a, b])


def test_compare_accepts_a_copy_of_the_same_file_elsewhere():
    from ebmlab.experiments.compare_checks import check_same_data

    check_same_data(["r1", "r2"], [_read("array", "/d/x.npy", sha="aa"), _read("array", "/e/x.npy", sha="aa")])


# ----- images.py: the mixed-size error names the first image read ---------------------------------------------
def test_the_mixed_size_error_names_the_image_whose_size_was_expected(tmp_path):
    """The size every image must have is the first image of the first split: that file is named with it."""
    from PIL import Image

    from ebmlab.data.images import _read_split

    files = []
    for name, h in (("a.png", 6), ("b.png", 7), ("c.png", 6)):
        Image.fromarray(np.zeros((h, 6, 3), dtype=np.uint8)).save(tmp_path / name)
        files.append(tmp_path / name)
    with pytest.raises(DataError, match=r"\(\(6, 6\) in c\.png and \(7, 6\) in b\.png\)"):
        _read_split(files, (torch.tensor([2, 0]), torch.tensor([1])), tmp_path, "RGB", None, None)


# ----- api_catalog ---------------------------------------------------------------------------------------------
def test_configs_of_an_empty_name_is_refused_not_the_list():
    import ebmlab

    with pytest.raises(ConfigError, match="no shipped config named ''"):
        ebmlab.configs("")


def test_overwrite_never_enters_the_folder_the_new_run_reads_its_images_from(tmp_path):
    """A new run trained on a folder of images inside the old run's samples/ kept only what the patterns missed: its
    grid_stepNNNNNN.png images were deleted as training's. The data's own folder is not entered. (samples/ itself as
    the data is refused since round 48: the new run would write its grids into it.)"""
    from ebmlab.training.run_dir import _remove_run_files

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "samples" / "mine").mkdir(parents=True)
    for rel in ("config.yaml", "checkpoints/step_00000001.safetensors", "samples/mine/grid_step000010.png",
                "samples/mine/x.png", "samples/grid_step000010.png"):
        (tmp_path / rel).write_bytes(b"x")
    _remove_run_files(tmp_path, keep=str(tmp_path / "samples" / "mine"))
    assert sorted(p.name for p in (tmp_path / "samples" / "mine").iterdir()) == ["grid_step000010.png", "x.png"]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["mine"]
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "config.yaml").exists()
