"""Known answers for the modules no mutation round had reached (the nineteenth round, docs/testing.md): the CIFAR
unpickler's refusals, what a chain's diagnostics report, how a user's energy is recorded and started from, the
catalogue, the scikit-learn tables and the host-speed floor. Each test fails under a one-line bug that the suite let
through."""
from __future__ import annotations

import importlib
import io
import pickle
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import ebmlab
from ebmlab.errors import ConfigError, DataError


# ----- data/safe_pickle.py: what the CIFAR unpickler refuses, and what it leaves alone ------------------------------
def _unpickle(tmp_path, payload: bytes):
    from ebmlab.data.safe_pickle import safe_unpickle
    f = tmp_path / "data_batch_1"
    f.write_bytes(payload)
    return safe_unpickle(f)


def _encode_call(text: bytes, codec: str) -> bytes:
    """Protocol 2: {'x': _codecs.encode(<text opcodes>, codec)}."""
    return (b"\x80\x02}X\x01\x00\x00\x00xc_codecs\nencode\n" + text
            + b"X" + len(codec).to_bytes(4, "little") + codec.encode() + b"\x86Rs.")


@pytest.mark.parametrize("text, codec", [(b"X\x03\x00\x00\x00abc", "rot13"), (b"X\x03\x00\x00\x00abc", "utf-16"),
                                         (b"K\x05", "latin1")])
def test_the_codecs_call_is_refused_for_any_other_codec_or_a_non_string(tmp_path, text, codec):
    """Only latin-1 encoding of a str is allowed (how Python 3 pickles bytes in protocol 2); rot13 or utf-16 would
    load a dict, an int fails inside encode: each is refused by name."""
    with pytest.raises(DataError, match="refused _codecs.encode"):
        _unpickle(tmp_path, _encode_call(text, codec))
    assert _unpickle(tmp_path, _encode_call(b"X\x03\x00\x00\x00abc", "latin1")) == {"x": b"abc"}


def test_build_on_a_dtype_needs_numpys_tuple_state(tmp_path):
    """numpy.dtype('f4') rebuilt, then BUILD with a dict state: refused before numpy sees it."""
    payload = (b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00f4\x89\x88\x87R" + b"}b.")
    with pytest.raises(DataError, match="non-tuple state"):
        _unpickle(tmp_path, payload)


def test_a_batch_that_is_not_a_dict_is_refused(tmp_path):
    with pytest.raises(DataError, match="holds a list, expected a dict"):
        _unpickle(tmp_path, pickle.dumps([1, 2, 3], protocol=2))


class _Plain:  # an ordinary object: pickled with BUILD of its __dict__
    def __init__(self):
        self.a = 1


def test_the_restricted_build_leaves_pythons_own_unpickler_alone(tmp_path):
    """The restricted opcode table is a copy: Python's pure-Python unpickler still restores an ordinary object
    (BUILD on a non-numpy instance) after the CIFAR unpickler has been defined and used."""
    import ebmlab.data.safe_pickle  # noqa: F401 (the class body runs at import)
    _unpickle(tmp_path, pickle.dumps({"labels": [1]}, protocol=2))
    obj = pickle._Unpickler(io.BytesIO(pickle.dumps(_Plain(), protocol=2))).load()
    assert obj.a == 1


# ----- samplers/diagnostics.py: what a chain's ChainInfo says -------------------------------------------------------
def _half_square(x, **cond):  # (B, ...) -> (B,): E = |x|²/2, dE/dx = x
    return 0.5 * x.flatten(1).pow(2).sum(1)


def test_full_diagnostics_take_each_examples_whole_gradient_norm_for_images():
    """grad_norm[k] = mean over chains of |dE/dx| over all of an example's C x H x W entries (dE/dx = x here)."""
    from ebmlab.samplers import langevin, run_chain
    x0 = torch.randn(6, 2, 3, 4, generator=torch.Generator().manual_seed(0))
    _, info = run_chain(langevin, _half_square, x0, 3, 0.01, diagnostics="full",
                        generator=torch.Generator().manual_seed(1))
    assert torch.allclose(info.grad_norm[0], x0.flatten(1).norm(dim=1).mean(), rtol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"controller": "one"}, {"diagnostics": "full"}])
def test_an_unadjusted_chain_reports_every_proposal_accepted(kw):
    """Langevin takes every move: accept_rate 1 at each step, through the fixed-step loop and the general one."""
    from ebmlab.samplers import StepSizeController, langevin, run_chain
    if kw.get("controller"):  # (paper 004's shrink-only rule: a Robbins-Monro one is refused on Langevin, which
        kw = {"controller": StepSizeController(1, 0.01, rule="paper004")}  # accepts every move)
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    _, info = run_chain(langevin, _half_square, x0, 4, 0.01, generator=torch.Generator().manual_seed(1), **kw)
    assert info.accept_rate.tolist() == [1.0] * 4


@pytest.mark.parametrize("sampler", ["langevin", "mala"])
def test_the_energy_column_is_the_mean_energy_before_each_step(sampler):
    """energy[0] is E at the start; energy[k] is E after step k - 1 (the callback sees each step's end state)."""
    from ebmlab import samplers
    x0 = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    after = []
    _, info = samplers.run_chain(getattr(samplers, sampler), _half_square, x0, 5, 0.05,
                                 generator=torch.Generator().manual_seed(1),
                                 callback=lambda i, state, step: after.append(float(state.energy.mean())))
    expected = [float(_half_square(x0).mean())] + after[:-1]
    assert info.energy.tolist() == pytest.approx(expected, rel=1e-6)


# ----- api_energy.py: how a user's energy is recorded, checked and started from -------------------------------------
@pytest.fixture
def user_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "ebm_round19.py").write_text(textwrap.dedent("""\
        import torch
        from torch import nn

        class Starred(nn.Module):
            def __init__(self, dim, *args, **kwargs):
                super().__init__()
                self.dim = dim
                self.lin = nn.Linear(dim, 1)
            def forward(self, x):
                return self.lin(x).squeeze(-1)

        class WithModuleAttr(nn.Module):
            def __init__(self, dim, act="silu"):
                super().__init__()
                self.dim, self.act = dim, nn.SiLU()  # an argument's name holding a module, not its JSON value
                self.lin = nn.Linear(dim, 1)
            def forward(self, x):
                return self.lin(self.act(x)).squeeze(-1)

        class Column(nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.dim = dim
                self.lin = nn.Linear(dim, 1)
            def forward(self, x):
                return self.lin(x)  # (B, 1), not (B,)

        def make_local():
            class Local(nn.Module):
                def __init__(self, dim):
                    super().__init__()
                    self.dim = dim
                def forward(self, x):
                    return x.sum(-1)
            return Local(2)
        """), encoding="utf-8")
    sys.modules.pop("ebm_round19", None)
    yield importlib.import_module("ebm_round19")
    sys.modules.pop("ebm_round19", None)


def test_star_arguments_are_not_asked_for(user_module):
    from ebmlab.api_energy import energy_record
    assert energy_record(user_module.Starred(3), None) == {"target": "ebm_round19:Starred", "kwargs": {"dim": 3}}


def test_an_attribute_that_is_no_json_value_leaves_its_argument_to_the_default(user_module):
    from ebmlab.api_energy import energy_record
    assert energy_record(user_module.WithModuleAttr(2), None)["kwargs"] == {"dim": 2}


def test_a_class_defined_inside_a_function_is_refused_by_name(user_module):
    from ebmlab.api_energy import energy_record
    with pytest.raises(ConfigError, match="defined inside a function"):
        energy_record(user_module.make_local(), None)


def test_an_energy_returning_a_column_is_refused_before_training(user_module):
    """(The probe moved from ``check_rebuilds`` to where the method is built, ``objectives/registry.build_objective``.)"""
    from ebmlab.data.dataset import build_dataset
    from ebmlab.objectives import build_objective
    from ebmlab.training.config import load_config
    cfg = load_config(None, ["model.name=custom", "model.target=ebm_round19:Column", 'model.kwargs={"dim": 2}',
                             "data.name=checkerboard", "data.n_train=256", "data.n_test=16"])
    with pytest.raises(ConfigError, match=r"to energies \(B,\), got \(2, 1\)"):
        build_objective(cfg, build_dataset(cfg.data))


def _fake_trainer(objective: nn.Module):
    from ebmlab.training.ema import EMA
    return SimpleNamespace(objective=objective, ema=EMA(objective, 0.99), cfg=SimpleNamespace(train=SimpleNamespace(
        ema=0.99)))


def test_training_and_its_ema_start_from_the_users_weights(user_module):
    from ebmlab.api_energy import start_from
    torch.manual_seed(0)
    mine, built = user_module.Starred(3), user_module.Starred(3)
    trainer = _fake_trainer(nn.ModuleDict({"energy": built}))
    start_from(trainer, mine)
    assert torch.equal(built.lin.weight, mine.lin.weight)
    assert torch.equal(trainer.ema.shadow["energy.lin.weight"], mine.lin.weight)


def test_two_networks_of_the_users_class_keep_their_own_initialisation(user_module):
    """The method holds two of them (it cannot be told which is the energy): neither is overwritten."""
    from ebmlab.api_energy import start_from
    torch.manual_seed(0)
    mine, a, b = (user_module.Starred(3) for _ in range(3))
    before = [a.lin.weight.clone(), b.lin.weight.clone()]
    start_from(_fake_trainer(nn.ModuleDict({"a": a, "b": b})), mine)
    assert torch.equal(a.lin.weight, before[0]) and torch.equal(b.lin.weight, before[1])


# ----- api_catalog.py ---------------------------------------------------------------------------------------------
def test_the_catalogue_lists_are_sorted_and_complete():
    from ebmlab.config import shipped_configs
    from ebmlab.data import DATASETS
    from ebmlab.energies.build import MODELS
    from ebmlab.experiments import EXPERIMENTS
    from ebmlab.objectives import METHODS
    for listed, registry in ((ebmlab.methods(), METHODS), (ebmlab.models(), MODELS), (ebmlab.datasets(), DATASETS),
                             (ebmlab.configs(), shipped_configs()), (ebmlab.experiment_names(), EXPERIMENTS)):
        assert listed == sorted(registry) and len(listed) > 1


def test_an_experiment_from_python_defaults_to_the_commands_directory(monkeypatch):
    import ebmlab.experiments as experiments
    from ebmlab.cli import build_parser
    seen = []
    monkeypatch.setattr(experiments, "run_experiment", lambda name, out, **kw: seen.append((name, out, kw)) or {})
    ebmlab.experiment("paper004", seeds=(0,))
    args = build_parser().parse_args(["experiment", "paper004"])
    assert args.out is None  # the command's default is said in its help: runs/experiment_<NAME>
    assert seen == [("paper004", Path("runs/experiment_paper004"), {"quick": False, "seeds": (0,)})]


# ----- data/tabular.py: the scikit-learn tables' classes --------------------------------------------------------
@pytest.mark.parametrize("name, shapes, label", [("breast_cancer", ((357, 30), (212, 30)), 1),
                                                 ("wine", ((71, 13), (107, 13)), 1)])
def test_each_table_trains_on_its_class_and_holds_out_every_other(name, shapes, label):
    import sklearn.datasets
    from ebmlab.data.tabular import TABLES, inliers, outliers
    bunch = getattr(sklearn.datasets, TABLES[name][0])()
    x_in, x_out = inliers(name), outliers(name)
    assert (tuple(x_in.shape), tuple(x_out.shape)) == shapes
    assert x_in.dtype == torch.float32
    raw = np.asarray(bunch.data)
    assert np.allclose(x_in.numpy(), raw[bunch.target == label], rtol=1e-6)
    assert np.allclose(x_out.numpy(), raw[bunch.target != label], rtol=1e-6)


# ----- experiments/host_speed.py: the floor is per call, of the default energy at the default batch ---------------
def test_the_host_floor_is_the_cpu_time_per_pass_of_the_default_energy(monkeypatch):
    """A fake clock that advances 1 ms per pass: the floor is 1.0 ms whatever ``calls`` is, and every pass is of the
    default network (residual MLP, width 128, depth 3, 10-D input) at batch 256."""
    from ebmlab.config import ModelConfig
    from ebmlab.energies.build import build_energy
    from ebmlab.experiments import host_speed
    clock, seen = [0.0], []

    def one_pass(energy, x):
        clock[0] += 1e-3
        seen.append((tuple(x.shape), [tuple(p.shape) for p in energy.parameters()]))
    monkeypatch.setattr(host_speed, "energy_and_grad", one_pass)
    monkeypatch.setattr(host_speed.time, "process_time", lambda: clock[0])
    assert host_speed.floor_ms(blocks=3, calls=7) == 1.0
    default = [tuple(p.shape) for p in build_energy(ModelConfig(), (10,)).parameters()]
    assert len(seen) == 3 + 3 * 7 and all(s == ((256, 10), default) for s in seen)
