"""Leftovers the nineteenth session saw and left (docs/testing.md "Leftovers of the nineteenth session"), each fixed
and pinned here."""
from __future__ import annotations

import pytest

from ebmlab.experiments import leaderboard_report


def test_summary_md_shows_a_mean_no_seed_measured_as_a_dash_as_results_md_does():
    # every cell of the row failed: its mean is NaN; results.md wrote "-", summary.md wrote "nan"
    nan = float("nan")
    table = {"d/hybrid": {"density_kl": {"mean": nan}, "updates": {"mean": nan}},
             "d/baseline_gmm": {"density_kl": {"mean": 0.25}, "updates": {"mean": nan}}}
    rank = leaderboard_report.ranks(table, ["density_kl"])
    lines = leaderboard_report.summary_markdown("d", table, rank, ["density_kl"]).splitlines()
    assert lines[4:] == ["| hybrid | - | - |", "| baseline_gmm | **0.25 (1)** | - |"]


def _tiny_run(out):
    import ebmlab
    return ebmlab.train("hybrid", data="mixture", out=out, model={"width": 16, "depth": 1},
                        train={"steps": 4, "progress": False, "batch_size": 64},
                        eval={"n_samples": 64, "grid_size": 12, "long_run_factor": 2})


def test_python_experiment_and_compare_refuse_an_out_under_a_file_in_a_sentence(tmp_path):
    # from Python, an --out under a file reached the user as the operating system's bare NotADirectoryError
    import ebmlab
    from ebmlab.errors import ConfigError

    (tmp_path / "f").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"lies under .*f', which is a file"):
        ebmlab.experiment("paper004", out=tmp_path / "f" / "exp", quick=True)
    runs = [_tiny_run(tmp_path / "a"), _tiny_run(tmp_path / "b")]
    with pytest.raises(ConfigError, match=r"lies under .*f', which is a file"):
        ebmlab.compare(runs, out=tmp_path / "f" / "cmp")
    with pytest.raises(ConfigError, match=r"is a file; give a folder"):
        ebmlab.compare(runs, out=tmp_path / "f")
    assert (tmp_path / "f").read_text(encoding="utf-8") == "mine"
    assert ebmlab.compare(runs, out=tmp_path / "cmp").files  # a folder is still written to


def test_a_label_out_of_range_lists_the_folder_s_class_names_and_one_class_makes_one_file(tmp_path, capsys):
    # --label 2 on a run of folders a, b said only "an integer in 0..1"; --label b and --label 1 wrote two files
    import numpy as np
    import torch
    from PIL import Image

    import ebmlab
    from ebmlab import cli
    from ebmlab.errors import ConfigError

    g = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(g.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    cond = ebmlab.train("improved_cd", data=tmp_path / "imgs", out=tmp_path / "cond", evaluate=False,
                        train={"steps": 2, "progress": False, "batch_size": 8},
                        overrides={"model.name": "resnet", "model.width": 8, "method.conditional": True,
                                   "method.n_steps": 1})
    for bad in (2, "2", -1):
        with pytest.raises(ConfigError, match=r"unknown class .*: the label is one of a, b or an index in 0\.\.1$"):
            cond.sample(2, steps=1, label=bad)
    assert cli.main(["sample", str(tmp_path / "cond"), "--n", "2", "--steps", "1", "--label", "2"]) == 2
    assert "the label is one of a, b or an index in 0..1" in capsys.readouterr().err
    samples = tmp_path / "cond" / "samples"
    assert cli.main(["sample", str(tmp_path / "cond"), "--n", "2", "--steps", "1", "--label", "1"]) == 0
    assert [p.name for p in samples.glob("*.npy")] == ["samples_noise_1steps_seed0_labelb.npy"]
    assert cli.main(["sample", str(tmp_path / "cond"), "--n", "2", "--steps", "1", "--label", "b"]) == 0
    assert [p.name for p in samples.glob("*.npy")] == ["samples_noise_1steps_seed0_labelb.npy"]
    assert torch.equal(cond.sample(2, steps=1, label="b"), torch.as_tensor(
        np.load(samples / "samples_noise_1steps_seed0_labelb.npy")).to(torch.float32))


@pytest.mark.parametrize("save_config", [True, False])
def test_an_experiment_cell_with_a_key_its_method_does_not_read_is_refused_before_its_folder_is_touched(
        tmp_path, save_config):
    # the twelfth mutation round left `check_new_run` removable from `runner.train_and_evaluate`
    from ebmlab.errors import ConfigError
    from ebmlab.experiments import runner
    from ebmlab.training.config import load_config

    cell = tmp_path / "cells" / "a"
    cell.mkdir(parents=True)
    (cell / "notes.txt").write_text("mine", encoding="utf-8")  # without save_config a cell's folder is removed whole
    cfg = load_config(None, ["data.name=mixture", "data.crop=4", "train.steps=1", "train.progress=false"])
    with pytest.raises(ConfigError, match=r"data.crop applies to image folders"):
        runner.train_and_evaluate(cell, cfg, save_config=save_config)
    assert [p.name for p in cell.iterdir()] == ["notes.txt"]
