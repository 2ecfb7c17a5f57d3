"""What a new user's walkthrough of the README found (2026-12-06, third session; docs/testing.md), each fixed:

- ``ebmlab eval`` / ``Run.evaluate``: a bad ``--ood`` set (vectors of another width) failed only after the
  evaluation had rewritten ``metrics.json``, losing the OOD scores an earlier evaluation had stored; the options'
  scores (OOD, FID, digits) ran in train mode, where spectral norm's power iteration moves the weights' scale;
- an image dataset read from files, named as an OOD set (``--ood svhn``), was refused with the advice to set
  ``data.path`` or ``--data``, options ``eval`` does not have;
- ``ebmlab train --data digitz`` (a typo of a dataset's name) said that a data *file* does not exist;
- ``ebmlab.train(method, config=NAME)`` dropped the config's method settings without a word;
- ``ebmlab.experiment`` with an unknown name raised a plain ValueError, not ebmlab's ``ConfigError``;
- (fourth session) ``ebmlab.train(energy=..., model={...})`` dropped the model settings without a word.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import ebmlab
from ebmlab import cli, errors
from ebmlab.api_config import raw_config
from ebmlab.training import hooks

TINY = {"steps": 4, "progress": False, "batch_size": 64}
TINY_EVAL = {"n_samples": 64, "grid_size": 12, "long_run_factor": 2, "plots": False}


def _blobs(n: int = 200) -> np.ndarray:
    g = np.random.default_rng(0)
    return np.concatenate([g.normal([3.0, -1.0], 0.4, (n // 2, 2)), g.normal([5.0, 2.0], 0.4, (n - n // 2, 2))])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("walk") / "r"
    ebmlab.train("noise", data=_blobs(), out=out, train=TINY, eval=TINY_EVAL,
                 overrides={"model.width": 16, "train.select_every": None}, evaluate=False)
    return out


def test_a_bad_ood_set_is_refused_before_the_evaluation_and_metrics_json_keeps_its_scores(run_dir, tmp_path):
    run = ebmlab.load(run_dir)
    run.evaluate(ood=["shifted"])
    before = (run_dir / "metrics.json").read_text()
    assert "ood_auroc_shifted" in before
    np.save(tmp_path / "three.npy", np.zeros((50, 3)))
    with pytest.raises(errors.DataError, match=r"has vectors of shape \(3,\), the run's data \(2,\)"):
        run.evaluate(ood=["shifted", str(tmp_path / "three.npy")])
    assert (run_dir / "metrics.json").read_text() == before  # not rewritten without the OOD scores


def test_the_options_scores_are_computed_in_eval_mode(run_dir, monkeypatch):
    modes = []
    monkeypatch.setattr(hooks, "EVAL_EXTENSIONS", [*hooks.EVAL_EXTENSIONS,
                                                   lambda args, cfg, objective, data: modes.append(objective.training)])
    run = ebmlab.load(run_dir)
    run.evaluate(ood=["scaled"])
    assert modes == [False]


def test_an_image_dataset_read_from_files_is_named_as_an_ood_set_by_its_folder():
    from ebmlab.data import build_dataset
    from ebmlab.data.image_ood import load_ood_set
    from ebmlab.training.config import DataConfig

    digits = build_dataset(DataConfig(name="digits"))
    with pytest.raises(errors.DataError, match="'svhn' is a dataset read from its files: give the path of its folder"):
        load_ood_set("svhn", digits)


def test_a_typo_of_a_dataset_name_in_train_data_is_an_unknown_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "--data", "digitz", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown dataset 'digitz'" in err and "digits" in err and "does not exist" not in err
    assert not (tmp_path / "r").exists()


def test_a_method_that_replaces_a_configs_method_says_which_settings_it_drops():
    with pytest.warns(UserWarning, match=r"replaces the config's method 'cdrl', whose settings \(T, .*step_rule"):
        raw = raw_config("paper003_checkerboard", "hybrid", {}, None)
    assert raw["method"] == {"name": "hybrid"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: nothing dropped, or the same method class keeps its settings
        assert raw_config(None, "cdrl", {}, None)["method"] == {"name": "cdrl"}
        assert raw_config("paper004_rings_data", "hybrid", {}, None)["method"]["lam"] == 25


def test_an_unknown_experiment_is_a_config_error():
    with pytest.raises(errors.ConfigError, match="unknown experiment 'paper005'; available experiments are"):
        ebmlab.experiment("paper005", out="x")


@pytest.mark.parametrize("given", [{"model": {"base": "gmm"}}, {"overrides": {"model.width": 8}},
                                   {"overrides": ["model.base=gmm", "train.steps=3"]}])
def test_model_settings_given_with_your_own_energy_are_refused_not_dropped(given, tmp_path):
    """``ebmlab.train(energy=MyEnergy(2), model={"base": "gmm"})`` trained the bare energy: the model section was
    replaced by the energy's record and the asked-for mixture base vanished without a word (2026-12-06, fourth
    session). Refused before any file is written."""
    from tests.unit.test_python_api import readme_examples

    (tmp_path / "my_energy_w.py").write_text(readme_examples()["my_energy.py"])
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        from my_energy_w import MyEnergy
        with pytest.raises(errors.ConfigError, match=r"model settings \((base|width)\) do not apply to your own energy"):
            ebmlab.train("hybrid", data=_blobs(), energy=MyEnergy(dim=2), out=tmp_path / "r", train=TINY, **given)
    finally:
        sys.path.remove(str(tmp_path))
    assert not (tmp_path / "r").exists()


def test_the_cli_refuses_network_settings_for_a_custom_model_and_spaces_do_not_hide_a_key(tmp_path, capsys):
    """``--set model.name=custom --set model.width=8`` trained and recorded a width nothing used; an override key
    with a leading space (`` model.width=8``) passed ``energy=``'s check (2026-12-06, fourth session)."""
    from tests.unit.test_python_api import readme_examples

    code = cli.main(["train", "--out", str(tmp_path / "r"), "--set", "model.name=custom",
                     "--set", "model.target=my_energy:MyEnergy", "--set", "model.width=8"])
    assert code == 2 and "model settings (width) do not apply to model.name custom" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    (tmp_path / "my_energy_s.py").write_text(readme_examples()["my_energy.py"])
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        from my_energy_s import MyEnergy
        with pytest.raises(errors.ConfigError, match=r"model settings \(width\)"):
            ebmlab.train("hybrid", data=_blobs(), energy=MyEnergy(dim=2), out=tmp_path / "r2", train=TINY,
                         overrides=["train.steps=3", " model.width=8"])
    finally:
        sys.path.remove(str(tmp_path))
