"""``data.whiten``: ZCA whitening of standardised vectors (data/dataset.py). Known answers: the training rows'
covariance becomes I, the transform round-trips, ``log_det`` is the log-determinant of its Jacobian, the
whitening matrix is the symmetric C^(-1/2), and a run stores and reloads it exactly."""
import json

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.config import ConfigError
from ebmlab.data import build_dataset
from ebmlab.training.config import load_config


def _correlated(n=2000, seed=0) -> np.ndarray:
    g = np.random.default_rng(seed)
    z = g.normal(size=(n, 3))
    return np.stack([100 * z[:, 0], 100 * z[:, 0] + 5 * z[:, 1], 0.01 * z[:, 2] - 0.002 * z[:, 0]], 1) + [3, -1, 7]


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, _correlated())
    return path


def test_whitened_training_rows_have_identity_covariance_and_the_map_round_trips(table):
    cfg = load_config(None, ["data.name=array", f"data.path={table}", "data.whiten=true"])
    d = build_dataset(cfg.data)
    assert torch.allclose(torch.cov(d.train.T), torch.eye(3), atol=1e-4)
    w = d.transform.matrix
    assert torch.allclose(w, w.T, atol=1e-5) and torch.allclose(w @ d.transform.inverse, torch.eye(3), atol=1e-4)
    x = torch.from_numpy(_correlated(50, seed=1))  # float64, as the file: the transform maps back in float64
    assert torch.allclose(d.transform.to_data(d.transform.to_model(x)), x, rtol=1e-4, atol=1e-3)
    jac = torch.autograd.functional.jacobian(lambda v: d.transform.to_model(v[None].double())[0], x[0].double())
    assert d.transform.log_det == pytest.approx(float(torch.linalg.slogdet(jac)[1]), rel=1e-5)
    plain = build_dataset(load_config(None, ["data.name=array", f"data.path={table}"]).data)
    corr = torch.cov(plain.train.T)
    assert torch.cov(plain.train.T)[0, 1] > 0.99 and plain.transform.matrix is None
    evals, evecs = torch.linalg.eigh(corr.double())
    assert torch.allclose(w.double(), evecs @ torch.diag(evals.rsqrt()) @ evecs.T, rtol=1e-3, atol=1e-3)


def test_whiten_needs_standardize_and_leaves_older_hashes_alone():
    with pytest.raises(ConfigError, match="standardize"):
        load_config("default", ["data.whiten=true", "data.standardize=false"])
    assert load_config("default", ["data.whiten=false"]).hash() == load_config("default").hash()
    assert load_config("default", ["data.whiten=true"]).hash() != load_config("default").hash()


def test_a_run_stores_its_whitening_and_reloads_it(tmp_path):
    x = _correlated(400)
    run = ebmlab.train("data", data=x, out=tmp_path / "r", train={"steps": 5, "batch_size": 32, "progress": False},
                       eval={"n_samples": 20, "plots": False, "long_run_factor": 1},
                       overrides={"model.width": 16, "data.whiten": True})
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert np.array(info["transform"]["matrix"]).shape == (3, 3) and "W" in info["transform"]["note"]
    again = ebmlab.load(tmp_path / "r")
    pts = torch.from_numpy(x[:6]).float()
    assert torch.equal(again(pts), run(pts))  # the energy in data coordinates: the same transform
    s = again.sample(200, steps=0, seed=0)  # the prior, mapped to data coordinates through W^-1
    assert np.corrcoef(s.numpy().T)[0, 1] > 0.9


def test_the_users_vectors_get_the_user_data_defaults_unless_a_config_or_override_says_otherwise(tmp_path):
    """``config.USER_DATA_DEFAULTS`` (whitening, row noise) for ``ebmlab train --data FILE`` and
    ``ebmlab.train(data=...)`` without a config; a config, an explicit override or standardize=false wins."""
    from argparse import Namespace

    from ebmlab.cli_commands import _train_overrides
    from ebmlab.config import USER_DATA_DEFAULTS
    assert USER_DATA_DEFAULTS == {"data.whiten": True, "data.jitter": 0.3, "data.val_fraction": 0.1,
                                  "train.select_every": 50, "train.select_draws": 5, "train.select_start": True,
                                  "train.select_margin": 1.0, "model.base": "gmm", "model.base_std": 1.0,
                                  "method.energy_l2": 0.0}

    def cli(config=None, sets=(), resume=False):
        args = Namespace(set=list(sets), data=str(tmp_path / "x.npy"), config=config, resume=resume)
        return load_config(config, _train_overrides(args)).data
    np.save(tmp_path / "x.npy", _correlated(200))
    d = cli()
    assert d.name == "array" and d.whiten is True and d.jitter == 0.3
    assert cli(config="default").whiten is False and cli(config="default").jitter is None
    d = cli(sets=["data.jitter=0.1", "data.whiten=false"])
    assert d.jitter == 0.1 and d.whiten is False
    d = cli(sets=["data.standardize=false"])
    assert d.whiten is False and d.jitter is None
    tiny = {"steps": 2, "batch_size": 16, "progress": False}
    ev = {"n_samples": 10, "plots": False, "long_run_factor": 1}
    run = ebmlab.train(None, data=_correlated(120), out=tmp_path / "a", train=tiny, eval=ev, evaluate=False)
    assert run.config.data.whiten is True and run.config.data.jitter == 0.3
    run = ebmlab.train(None, data=_correlated(120), config="default", out=tmp_path / "b", train=tiny, eval=ev,
                       evaluate=False)
    assert run.config.data.whiten is False and run.config.data.jitter is None
    assert load_config(None).data.whiten is False  # the built-in defaults (toys, the demo) are unchanged


def test_train_data_takes_a_dataset_name_as_the_python_api_does(tmp_path, monkeypatch):
    """``ebmlab train --data 8gaussians`` said the file did not exist, where ``ebmlab.train(data="8gaussians")``
    trains on the toy; a file or folder of that name in the current directory is still the path."""
    from argparse import Namespace

    from ebmlab.cli_commands import _train_overrides

    def data(arg, sets=()):
        return load_config(None, _train_overrides(Namespace(set=list(sets), data=arg, config=None, resume=False))).data
    monkeypatch.chdir(tmp_path)
    d = data("8gaussians")
    assert d.name == "8gaussians" and d.path is None and d.whiten is False  # the toy's own settings
    assert data("digits", ["data.n_test=50"]).name == "digits"
    assert data("nope").name == "nope"  # no folder, no suffix: a name, as ebmlab.train(data=) reads it (an unknown one
    # is refused with the list of datasets: test_walkthrough_known_answers.py)
    assert data("nope.npy").name == "array" and data("sub/nope").name == "array"  # a path, refused by the loader as missing
    np.save(tmp_path / "digits", _correlated(40))
    (tmp_path / "digits.npy").rename(tmp_path / "digits")
    d = data("digits")
    assert d.name == "array" and d.path == str(tmp_path / "digits")


def test_the_leaderboards_default_row_trains_what_data_runs_train():
    from ebmlab.experiments import leaderboard
    _, sets = leaderboard.method_overrides(leaderboard.DEFAULT_ROW, "breast_cancer", 20.0, False)
    assert "data.whiten=true" in sets and "data.jitter=0.3" in sets
    for method, ds in ((leaderboard.DEFAULT_ROW, "rings"), ("hybrid", "breast_cancer")):
        assert not any(s.startswith(("data.whiten", "data.jitter")) for s in leaderboard.method_overrides(method, ds, 20.0, False)[1])
