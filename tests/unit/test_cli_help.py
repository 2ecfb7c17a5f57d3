"""The command line describes itself (issue 14): ``--version``; every argument with help and its
default; ``train --help`` lists methods, models and datasets, ``experiment --help`` the experiments;
options checked before expensive work; sensible output names."""
from __future__ import annotations

import argparse
import re

import numpy as np
import pytest

from ebmlab.cli import build_parser, main


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("ebmlab 0.")


def test_every_argument_has_help_and_a_default():
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        fmt = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.dest}: no help"
            text = fmt._get_help_string(action)
            if action.option_strings:
                assert "default" in text, f"{name} {action.option_strings}: no default in {text!r}"
                assert len(re.findall(r"(?<!%)\(default", text)) <= 1, f"{name} {action.option_strings}: the default twice: {text!r}"


def test_train_help_lists_methods_models_datasets(capsys):
    out = _help(capsys, "train")
    for word in ("hybrid", "improved_cd", "cdrl", "implicit_diffusion", "joint_cd",  # methods
                 "mlp", "resnet", "custom",                                         # models
                 "rings", "digits", "array",                                        # datasets
                 "paper004_rings_hybrid"):                                           # shipped configs
        assert word in out, word


def test_experiment_and_sample_help(capsys):
    out = _help(capsys, "experiment")
    assert all(f"paper00{i}" in out for i in range(5))
    out = _help(capsys, "sample")
    assert "(default: 1000)" in out and "(default: noise)" in out and "samples_<init>_<steps>steps_seed<seed>" in out


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    np.save(d / "pts.npy", np.random.default_rng(0).normal(size=(200, 2)))
    args = ["train", "--data", str(d / "pts.npy"), "--out", str(d / "run")]
    for o in ("train.steps=2", "train.progress=false", "eval.plots=false", "model.width=8", "eval.n_samples=16",
              "eval.grid_size=8", "eval.long_run_factor=1"):
        args += ["--set", o]
    assert main(args) == 0
    return d / "run"


def test_eval_options_are_checked_before_any_work(vector_run, monkeypatch, capsys):
    import ebmlab.training.evaluate as ev

    def boom(*a, **k):
        raise AssertionError("evaluate ran before the options were checked")

    monkeypatch.setattr(ev, "evaluate", boom)
    for argv, text in ((["--fid"], "needs an image run"), (["--digits-fd"], "scores digit images"),
                       (["--ood", "nowhere"], "for vector runs use"), (["--heldout-draws", "0"], "positive count"),
                       (["--inception-weights", "w.pth"], "--inception-weights (inception_weights=) needs an image run")):
        capsys.readouterr()
        assert main(["eval", str(vector_run), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and text in err


def test_inception_weights_without_fid_on_an_image_run_asks_for_fid():
    from argparse import Namespace

    from ebmlab.errors import ConfigError
    from ebmlab.training.image_eval import check_eval_options
    with pytest.raises(ConfigError, match=r"give --fid \(fid=\) too"):
        check_eval_options(Namespace(inception_weights="w.pth", fid=False), "image", "cifar10")


def test_eval_heldout_draws_are_the_single_draws_of_their_seeds(vector_run, capsys):
    """``--heldout-draws K --draw-seed S``: K held-out energy distances, the k-th exactly what one draw from a
    generator seeded S + k gives, and their mean, in metrics.json."""
    import json

    import torch

    from ebmlab.training.heldout import heldout_energy_distance
    from ebmlab.training.run import open_run

    assert main(["eval", str(vector_run), "--heldout-draws", "3", "--draw-seed", "5"]) == 0
    m = json.loads((vector_run / "metrics.json").read_text())
    cfg, obj, data = open_run(vector_run)
    one = [heldout_energy_distance(obj, data, cfg.eval.n_samples, torch.Generator().manual_seed(5 + k))
           ["sample_energy_distance_heldout"] for k in range(3)]
    assert m["sample_energy_distance_heldout_draws"] == one and len(set(one)) == 3
    assert m["sample_energy_distance_heldout_mean"] == pytest.approx(sum(one) / 3)
    assert m["heldout_draw_seeds"] == [5, 7]
    before = (vector_run / "metrics.json").read_text()
    assert main(["eval", str(vector_run), "--draw-seed", "3"]) == 2  # it was ignored without --heldout-draws
    assert "--draw-seed (draw_seed=) seeds the draws of --heldout-draws (heldout_draws=)" in capsys.readouterr().err
    assert (vector_run / "metrics.json").read_text() == before


def test_sample_output_name(vector_run, capsys):
    assert main(["sample", str(vector_run), "--n", "4", "--steps", "2", "--seed", "5"]) == 0
    assert (vector_run / "samples" / "samples_noise_2steps_seed5.npy").is_file()
    assert main(["sample", str(vector_run), "--n", "4"]) == 0  # the method's default steps, by number
    names = [p.name for p in (vector_run / "samples").glob("samples_noise_*.npy")]
    assert len(names) == 2 and not any("None" in n for n in names)


def test_the_weights_named_follow_train_ema():
    """sample/eval said "EMA weights" for runs trained without an EMA (paper 000's configs: train.ema null)."""
    from ebmlab.cli_commands import _weights
    from ebmlab.training.config import load_config

    assert _weights(load_config(None, [])) == "EMA weights"
    assert _weights(load_config(None, ["train.ema=null"])) == "weights: train.ema is off"


def test_ebmlabs_warnings_are_one_line_messages_and_others_keep_pythons_form():
    """A warning of ebmlab's printed Python's two lines (a source path inside ebmlab and its warnings.warn call)."""
    import warnings

    from ebmlab.cli import _plain_warnings
    with _plain_warnings():
        ours = warnings.formatwarning("data file 'x' has changed", UserWarning, "/site/ebmlab/training/run_data.py", 9)
        theirs = warnings.formatwarning("old API", FutureWarning, "/site/torch/nn/module.py", 3)
    assert ours == "ebmlab: warning: data file 'x' has changed\n"
    assert theirs.startswith("/site/torch/nn/module.py:3: FutureWarning: old API")
    assert warnings.formatwarning("m", UserWarning, "/site/ebmlab/a.py", 1).startswith("/site/ebmlab/a.py:1")  # restored
