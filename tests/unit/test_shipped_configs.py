"""The configs shipped inside the package (``src/ebmlab/configs``, issue 12 part 6): each one loads by
name and builds; ``ebmlab configs`` lists and prints them; unknown names get one sentence."""
from __future__ import annotations

import pytest
import torch

from ebmlab.cli import main
from ebmlab.config import config_description, shipped_config_text, shipped_configs
from ebmlab.data import DATASETS, TOYS, build_dataset
from ebmlab.energies.build import build_energy
from ebmlab.errors import ConfigError
from ebmlab.objectives import build_objective
from ebmlab.training.config import load_config

NAMES = shipped_configs()
# data that needs no download: the toys (exact samplers) and scikit-learn's bundled 8x8 digits
LOCAL_DATA = set(TOYS) | {"digits"}
# small networks and splits so that building the whole objective takes well under a second
SHRINK = ["data.n_train=512", "data.n_test=128", "model.width=16", "model.depth=1"]


def test_the_paper_configs_and_the_default_are_shipped():
    assert len(NAMES) >= 25 and {"default", "paper004_rings_hybrid", "digits_hybrid"} <= set(NAMES)
    for paper in range(5):
        assert any(n.startswith(f"paper{paper:03d}_") for n in NAMES)


def test_default_config_is_the_built_in_default():
    """``make demo`` trains ``--config default``; a bare ``ebmlab train`` must train the same thing."""
    assert load_config("default").to_dict() == load_config(None).to_dict()


@pytest.mark.parametrize("name", NAMES)
def test_shipped_config_loads_and_builds(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # found by name from anywhere, not relative to a checkout
    cfg = load_config(name)
    assert config_description(shipped_config_text(name)), f"{name}.yaml should start with a comment line"
    assert cfg.data.name in DATASETS, f"{name}: data.name {cfg.data.name!r} is not a registered dataset"
    if cfg.data.name in LOCAL_DATA:
        sets = SHRINK + (["model.channels=[8, 8]"] if cfg.model.channels else [])
        small = load_config(name, sets)
        objective = build_objective(small, build_dataset(small.data))
        params = list(objective.parameters())
    else:  # image scale (CIFAR-10, CelebA, ImageNet-32): the energy network with the config's own settings
        d = cfg.data
        size = d.image_size or 32
        params = list(build_energy(cfg.model, (d.channels or 3, size, size)).parameters())
    assert sum(p.numel() for p in params) > 0
    assert all(torch.isfinite(p).all() for p in params)


def test_load_by_name_path_and_errors(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(shipped_config_text("paper004_rings_hybrid"))
    assert load_config(path).to_dict() == load_config("paper004_rings_hybrid").to_dict()
    with pytest.raises(ConfigError, match="neither a config file nor a shipped config.*paper004_rings_hybrid"):
        load_config("paper004_rings_hybird")
    with pytest.raises(ConfigError, match="does not exist; the shipped configs"):
        load_config(tmp_path / "nope.yaml")


def test_cli_configs_lists_and_prints(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == NAMES
    hybrid = next(ln for ln in lines if ln.startswith("paper004_rings_hybrid "))
    assert "Paper 004" in hybrid  # the first comment line of the file
    assert main(["configs", "paper004_rings_hybrid"]) == 0
    assert capsys.readouterr().out == shipped_config_text("paper004_rings_hybrid")


@pytest.mark.parametrize("argv", [["configs", "nope"], ["train", "--config", "nope", "--set", "train.steps=1"]])
def test_cli_unknown_config_is_one_sentence(argv, capsys, tmp_path):
    assert main([*argv, *(["--out", str(tmp_path / "r")] if argv[0] == "train" else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ebmlab: error:") and "paper004_rings_hybrid" in err[0]
