"""The Python API on image data, from an image walkthrough (2026-12-06, ninth session; docs/testing.md): what a
researcher with images met that the toy and digits walkthroughs had not."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.errors import DataError


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny run on a folder of 8x8 RGB images (two classes), trained without its final evaluation."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    g = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / "imgs" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(g.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "imgs" / cls / f"{i}.png")
    return ebmlab.train(config="digits_hybrid", data=root / "imgs", out=root / "r", evaluate=False,
                        train={"steps": 1, "progress": False, "batch_size": 8, "threads": 1},
                        overrides={"method.n_steps": 1, "method.n_steps_data": 1, "eval.n_samples": 8,
                                   "eval.plots": False})


def test_in_memory_ood_images_as_uint8_are_read_as_the_loaders_read_them(image_run):
    """ood={name: uint8 images} was scored on the 0..255 values as if they were data coordinates in [-1, 1]: every
    AUROC read 0.0 (or 1.0), where the same images from a .npy file were read as v / 127.5 - 1."""
    u8 = np.random.default_rng(1).integers(0, 256, (12, 3, 8, 8), dtype=np.uint8)
    floats = u8.astype(np.float32) / 127.5 - 1
    got = image_run.evaluate(ood={"u8": u8, "u8_tensor": torch.from_numpy(u8), "floats": floats,
                                  "int64": torch.from_numpy(u8).long()})  # integer images, as the loaders read them
    assert got["ood_auroc_u8"] == got["ood_auroc_u8_tensor"] == got["ood_auroc_floats"] == got["ood_auroc_int64"]
    assert 0.0 < got["ood_auroc_u8"] < 1.0  # random images beside random training images: neither 0 nor 1


@pytest.mark.parametrize("scale", [255.0, 2.0])
def test_in_memory_ood_float_images_outside_the_data_range_are_refused(image_run, scale):
    """Float images in [0, 255] (or any value outside [-1, 1]) were scored as they were; the file loaders refuse
    them, and so does ood= now, before any work."""
    x = np.random.default_rng(2).uniform(0, scale, (4, 3, 8, 8)).astype(np.float32)
    with pytest.raises(DataError, match=r"lie in \[-1, 1\]"):
        image_run.evaluate(ood={"bad": x})
    with pytest.raises(DataError, match=r"integers in \[256, 256\]"):
        image_run.evaluate(ood={"bad": np.full((4, 3, 8, 8), 256)})


def test_an_image_of_another_size_is_named_with_its_class_folder(tmp_path):
    """Class folders repeat file names (cat/5.png, dog/5.png): the error named the file without its folder."""
    from PIL import Image

    from ebmlab.config import DataConfig
    from ebmlab.data import build_dataset

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    Image.fromarray(np.zeros((9, 8, 3), dtype=np.uint8)).save(tmp_path / "dog" / "5.png")
    with pytest.raises(DataError, match=r"\(9, 8\) in dog/5\.png\)"):
        build_dataset(DataConfig(name="imagefolder", path=str(tmp_path), n_test=2))


def test_a_checkpoint_is_opened_by_its_name_without_suffix_or_its_step_and_a_missing_one_names_the_runs(image_run):
    from ebmlab.errors import CheckpointError

    name = image_run.checkpoint.name  # step_00000001.safetensors
    for given in (name, name.removesuffix(".safetensors"), 1, "1"):
        assert ebmlab.load(image_run.path, checkpoint=given).checkpoint == image_run.checkpoint
    with pytest.raises(CheckpointError, match=r"does not exist; the run's are step_00000001\.safetensors"):
        ebmlab.load(image_run.path, checkpoint="step_2")
    for wrong in (0, "0", "\u00b2"):  # step 0 was taken for "none given" (the result opened); "²" passed isdigit()
        with pytest.raises(CheckpointError, match="does not exist"):
            ebmlab.load(image_run.path, checkpoint=wrong)


def test_configs_prints_one_shipped_config_as_the_cli_does():
    from ebmlab.config import shipped_config_text

    assert ebmlab.configs("default") == shipped_config_text("default") and "default" in ebmlab.configs()


@pytest.mark.parametrize("bad,match", [({"heldout_draws": 2}, r"heldout_draws=\) takes a positive count and vector"),
                                       ({"draw_seed": 3}, r"draw_seed=\) seeds"),
                                       ({"digits_fd": True}, r"digits_fd=\) scores digit images")])
def test_evaluation_options_that_cannot_apply_raise_config_errors_naming_the_python_argument(image_run, bad, match):
    """They were plain ValueErrors worded for the command line only, past ``except ebmlab.errors.ConfigError``."""
    from ebmlab.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        image_run.evaluate(**bad)



def test_compare_of_runs_on_two_image_folders_names_the_folders_not_a_setting(tmp_path):
    """Two folders of other sizes were refused as "different data (data.image_size: 16 vs 32)", as if the setting
    were the difference."""
    from PIL import Image

    from ebmlab.errors import ConfigError

    runs = []
    for name, size in (("small", 8), ("large", 10)):
        g = np.random.default_rng(size)
        (tmp_path / name).mkdir()
        for i in range(16):
            Image.fromarray(g.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
        runs.append(ebmlab.train(config="digits_hybrid", data=tmp_path / name, out=tmp_path / f"r_{name}",
                                 train={"steps": 1, "progress": False, "batch_size": 8, "threads": 1},
                                 overrides={"method.n_steps": 1, "method.n_steps_data": 1, "eval.n_samples": 8,
                                            "eval.plots": False, "data.image_size": 8 if name == "small" else None}))
    with pytest.raises(ConfigError, match=r"different data \(imagefolder '.*small' vs imagefolder '.*large'\)"):
        ebmlab.compare([r.path for r in runs])


def test_a_cifar_python_folder_given_as_the_data_is_read_as_cifar(tmp_path):
    """data=<cifar-10-batches-py> (and ``--data``) was taken for a folder of image files: "holds no image files"."""
    from types import SimpleNamespace

    from ebmlab.api_data import folder_data_name
    from ebmlab.cli_commands import _train_overrides
    from tests.image_files import write_cifar10

    write_cifar10(tmp_path, n=4)
    folder = tmp_path / "cifar-10-batches-py"
    assert folder_data_name(folder) == folder_data_name(tmp_path) == "cifar10"
    assert folder_data_name(tmp_path / "elsewhere") == "imagefolder"
    run = ebmlab.train(config="digits_hybrid", data=folder, out=tmp_path / "r", evaluate=False,
                       train={"steps": 1, "progress": False, "batch_size": 4, "threads": 1},
                       overrides={"method.n_steps": 1, "method.n_steps_data": 1, "model.channels": [4]})
    assert run.config.data.name == "cifar10" and run.shape == (3, 32, 32)
    args = SimpleNamespace(set=[], data=str(folder), config="digits_hybrid", resume=None)
    assert "data.name=cifar10" in _train_overrides(args)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_file_of_images_given_as_the_data_is_read_as_images(tmp_path, suffix):
    """data="imgs.npy" holding (N, C, H, W) images was refused as "must hold a 2-D array" unless data.name=npy was
    given too; integer images (int64, as torch makes them) are read as 8-bit codes."""
    from types import SimpleNamespace

    from ebmlab.api_data import file_data_name
    from ebmlab.cli_commands import _train_overrides

    x = np.random.default_rng(3).integers(0, 256, (20, 3, 8, 8))  # int64
    path = tmp_path / f"imgs{suffix}"
    np.save(path, x) if suffix == ".npy" else np.savez(path, x=x)
    np.save(tmp_path / "table.npy", np.zeros((20, 3), dtype=np.float32))
    assert file_data_name(path) == "npy" and file_data_name(tmp_path / "table.npy") == "array"
    run = ebmlab.train(config="digits_hybrid", data=path, out=tmp_path / "r", evaluate=False,
                       train={"steps": 1, "progress": False, "batch_size": 4, "threads": 1},
                       overrides={"method.n_steps": 1, "method.n_steps_data": 1})
    assert run.config.data.name == "npy" and run.shape == (3, 8, 8)
    expected = torch.from_numpy(x.astype(np.float32) / 127.5 - 1)
    assert any(torch.equal(run.data().test[0], row) for row in expected)  # codes read as the loaders read uint8
    args = SimpleNamespace(set=[], data=str(path), config="digits_hybrid", resume=None)
    assert "data.name=npy" in _train_overrides(args)


def test_integer_images_outside_the_8_bit_range_are_refused(tmp_path):
    from ebmlab.data.image_ops import image_tensor

    with pytest.raises(DataError, match=r"integers in \[0, 300\]"):
        image_tensor(np.array([[[[0, 300, 5]]]]), "imgs")


@pytest.mark.parametrize("shape,name", [((10, 2, 2), "array"), ((10, 8, 8), "npy"), ((10, 5, 4, 4), "array"),
                                        ((10, 4, 4, 3), "npy"), ((10, 1, 4, 4), "npy"), ((10, 3), "array")])
def test_only_arrays_shaped_as_images_are_read_as_images(tmp_path, shape, name):
    from ebmlab.api_data import file_data_name

    np.save(tmp_path / "a.npy", np.zeros(shape, dtype=np.float32))
    assert file_data_name(tmp_path / "a.npy") == name
