"""Your own energy for the methods that condition it (README, ``ebmlab.train(energy=...)``: paper 002 needs
``time_cond=True, n_times=T`` and ``forward(x, t)``, paper 003's cdrl/drl ``cond_dim=K`` and ``forward(x, cond)``).

An energy written exactly so could not be trained from Python: the instance's recorded ``cond_dim`` /
``time_cond`` / ``n_times`` collided with the method's own ("got multiple values for keyword argument
'cond_dim'"), an instance built with the method's values failed the contract probe (which called ``forward(x)``
alone), and ``energy_kwargs`` without those keys ended in a raw ``load_state_dict`` shape error. Only the command
line's ``model.name=custom`` worked.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import ebmlab
from ebmlab.cli import main
from ebmlab.errors import ConfigError
from ebmlab.training.config import load_config
from ebmlab.training.loop import Trainer
from tests.unit.own_conditioned_energies import CondEnergy, TimeEnergy

QUICK = {"train": {"steps": 2, "progress": False, "batch_size": 16, "threads": 1},
         "overrides": {"train.select_every": None}, "evaluate": False}


def _points():
    return torch.randn(200, 2, generator=torch.Generator().manual_seed(0))


def _method_values(method: str) -> dict:
    """What the method builds the class with: paper 003's cond_dim (its embedding of the noise level), paper 002's
    time input over its T levels."""
    m = load_config(None, [f"method.name={method}"]).method
    return {"cond_dim": m.embed_dim} if method in ("cdrl", "drl") else {"time_cond": True, "n_times": m.T}


@pytest.mark.parametrize("method,cls", [("cdrl", CondEnergy), ("drl", CondEnergy), ("implicit_diffusion", TimeEnergy)])
def test_an_energy_written_as_the_readme_says_trains_reloads_and_samples(method, cls, tmp_path):
    """Built with its defaults (cond_dim=0, time_cond=False): the method's own values win, training starts from the
    class's initialisation with a warning that names them, and the run reloads as trained."""
    with pytest.warns(UserWarning, match="build your instance with " + ", ".join(
            f"{k}={v!r}" for k, v in _method_values(method).items())) as seen:
        run = ebmlab.train(method, _points(), energy=cls(dim=2), out=tmp_path / "run", **QUICK)
    said = [w for w in seen if "build your instance" in str(w.message)]
    assert [w.filename for w in said] == [__file__]  # the user's line, not ebmlab's (stacklevel)
    again = ebmlab.load(tmp_path / "run")
    for (k, v), (k2, v2) in zip(run.objective.state_dict().items(), again.objective.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    x = again.sample(5, steps=4, seed=1)
    assert x.shape == (5, 2) and torch.isfinite(x).all()


@pytest.mark.parametrize("method,cls", [("cdrl", CondEnergy), ("implicit_diffusion", TimeEnergy)])
def test_an_energy_built_with_the_methods_values_is_trainings_starting_point(method, cls, tmp_path, monkeypatch):
    energy = cls(dim=2, **_method_values(method))
    at_start = []
    fit = Trainer.fit

    def recording_fit(self, *args, **kwargs):
        at_start.extend({k: v.clone() for k, v in m.state_dict().items()} for m in self.objective.modules()
                        if type(m) is cls)
        return fit(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, "fit", recording_fit)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "starts from that network's own initialisation"
        ebmlab.train(method, _points(), energy=energy, out=tmp_path / "run", **QUICK)
    assert len(at_start) == 1
    for (k, v), (k2, v2) in zip(energy.state_dict().items(), at_start[0].items()):
        assert k == k2 and torch.equal(v, v2), k


def test_the_contract_probe_gives_a_conditioned_energy_its_conditioning():
    """The probe evaluates the energy as the method does (``forward(x, cond)`` here; it called ``forward(x)``, which
    such an energy need not take), and says so when the output is not (B,)."""
    with pytest.raises(ConfigError, match=r"as cdrl calls it, must map a batch \(B, 2\) to energies \(B,\), got \(2, 1\)"):
        ebmlab.train("cdrl", _points(), energy=CondEnergy(dim=2, cond_dim=32, wrong_shape=True), **QUICK)


def test_on_the_command_line_the_methods_values_replace_those_in_model_kwargs(tmp_path):
    """``--set model.kwargs={..., cond_dim: 5}`` was refused (the class got cond_dim twice); the method's wins."""
    sets = ["method.name=cdrl", "model.name=custom", "model.target=tests.unit.own_conditioned_energies:CondEnergy",
            "model.kwargs={dim: 2, width: 8, cond_dim: 5}", "data.name=checkerboard", "train.steps=1", "train.progress=false",
            "train.batch_size=16", "data.n_train=128", "data.n_test=32", "eval.n_samples=16", "eval.plots=false",
            "eval.long_run_factor=1", "train.threads=1", "method.T=3", "method.n_steps=2"]
    assert main(["train", "--out", str(tmp_path / "run"), *[a for s in sets for a in ("--set", s)]]) == 0
    net = [m for m in ebmlab.load(tmp_path / "run").objective.modules() if type(m) is CondEnergy][0]
    assert net.cond_dim == _method_values("cdrl")["cond_dim"]


def test_on_the_command_line_an_energy_that_does_not_fit_the_data_is_one_sentence(tmp_path, capsys):
    """A custom energy for 2-D points on the 10-D default data ended in a traceback from the first update ("mat1 and
    mat2 shapes cannot be multiplied"); the build now probes it as the method calls it."""
    sets = ["method.name=cdrl", "model.name=custom", "model.target=tests.unit.own_conditioned_energies:CondEnergy",
            "model.kwargs={dim: 2, width: 8}", "train.steps=1", "train.progress=false", "train.threads=1"]
    assert main(["train", "--out", str(tmp_path / "run"), *[a for s in sets for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("ebmlab: error: your energy fails on a batch of shape (2, 10) "
                                                     "as cdrl calls it (RuntimeError: mat1 and mat2"), err
    assert not (tmp_path / "run").exists()


def test_energy_kwargs_the_class_does_not_take_are_one_sentence():
    with pytest.raises(ConfigError, match=r"could not be built from model.kwargs \['bogus', 'dim'\].*unexpected keyword"):
        ebmlab.train("hybrid", _points(), energy=CondEnergy(dim=2), energy_kwargs={"dim": 2, "bogus": 1}, **QUICK)


@pytest.mark.parametrize("takes_y", [True, False])
def test_paper_003_image_energies_are_probed_as_the_method_calls_them(takes_y, tmp_path, capsys):
    """Paper 003's images call ``forward(x, t=logSNR float, y=None)``; the first probe guessed ``t`` long and no ``y``
    from the build's arguments, so an energy without ``y`` passed it and failed at the first update with a traceback."""
    sets = ["model.name=custom", "model.target=tests.unit.own_conditioned_energies:LevelImageEnergy",
            f"model.kwargs={{channels: 1, takes_y: {str(takes_y).lower()}}}", "train.steps=1", "train.batch_size=8",
            "train.progress=false", "train.threads=1", "eval.n_samples=8", "eval.plots=false", "method.T=2",
            "method.n_steps=1", "method.init_warmup=1", "method.ebm_warmup=1", "method.init_head_start=0"]
    code = main(["train", "--config", "paper003_digits", "--out", str(tmp_path / "run"),
                 *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    if takes_y:
        assert code == 0, err
    else:
        assert code == 2 and "Traceback" not in err
        assert err.startswith("ebmlab: error: your energy fails on a batch of shape (2, 1, 8, 8) as cdrl calls it "
                              "(TypeError: forward() got an unexpected keyword argument 'y')"), err
