"""Round 31: energies a researcher writes and hands ebmlab, to ``ebmlab.train(energy=...)`` and to the samplers
called directly (README "In Python: your own energy on your own data", "The samplers on an energy of your own").

Every refusal must be one ebmlab sentence (ConfigError for ``train``, ValueError for the samplers) before anything
runs or is written; a valid energy must work (a read-only helper's audit, docs/testing.md "Thirty-first round").
Tests marked ``# WAS A BUG`` failed on the code as audited (commit ``6885930``) and pass with its fixes."""
from __future__ import annotations

import importlib
import sys
import textwrap
import warnings

import pytest
import torch

import ebmlab
from ebmlab import errors
from ebmlab.samplers import StepSizeController, langevin, mala, run_chain
from ebmlab.samplers.ais import ais, linear_betas

TINY = {"steps": 3, "progress": False, "batch_size": 64, "select_every": None}

MODULE = """
import torch
from torch import nn


class Good(nn.Module):
    def __init__(self, dim=2):
        super().__init__()
        self.dim, self.lin = dim, nn.Linear(dim, 1)

    def forward(self, x):
        return self.lin(x).squeeze(-1) + 0.5 * (x * x).sum(-1)


class Column(Good):
    def forward(self, x):
        return self.lin(x)


class Summed(Good):
    def forward(self, x):
        return self.lin(x).sum()


class Pair(Good):
    def forward(self, x):
        return self.lin(x).squeeze(-1), None


class Float64Out(Good):
    def forward(self, x):
        return super().forward(x).double()


class Detached(Good):
    def forward(self, x):
        return super().forward(x).detach()


class NoGrad(Good):
    def forward(self, x):
        with torch.no_grad():
            return super().forward(x)


class InPlace(Good):
    def forward(self, x):
        x.mul_(1.0)
        return super().forward(x)


class ExtraArg(Good):
    def forward(self, x, scale):
        return scale * super().forward(x)


class DoubleWeights(Good):
    def __init__(self, dim=2):
        super().__init__(dim)
        self.double()


class Frozen(Good):
    def __init__(self, dim=2):
        super().__init__(dim)
        self.requires_grad_(False)


class Fixed(nn.Module):
    def __init__(self, dim=2):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return 0.5 * (x * x).sum(-1)


class WithBatchNorm(nn.Module):
    def __init__(self, dim=2):
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(dim, 8), nn.BatchNorm1d(8), nn.SiLU(), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1) + 0.5 * (x * x).sum(-1)
"""


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """The user's energies, in a module that a run can import again."""
    root = tmp_path_factory.mktemp("own_energies_r31")
    (root / "own_energies_r31.py").write_text(textwrap.dedent(MODULE))
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("own_energies_r31")
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("own_energies_r31", None)


def _data(n=200):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g)


def _train(tmp_path, energy, **kw):
    return ebmlab.train("hybrid", data=_data(), energy=energy, out=tmp_path / "r", evaluate=False, train=TINY, **kw)


def quad(x):
    return 0.5 * (x * x).sum(-1)


def _x0(b=16, d=2):
    return torch.randn(b, d, generator=torch.Generator().manual_seed(1))


# --- ebmlab.train(energy=...): what is refused, in one sentence, before anything is written --------------------------

@pytest.mark.parametrize("cls,got", [("Column", r"got \(2, 1\)"), ("Summed", r"got \(\)"), ("Pair", "got tuple")])
def test_train_refuses_an_energy_of_the_wrong_shape_before_writing(own, tmp_path, cls, got):
    with pytest.raises(errors.ConfigError, match=f"to energies \\(B,\\), {got}"):
        _train(tmp_path, getattr(own, cls)(2))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("energy,needle", [(lambda x: x.sum(-1), "got a function"), ("class", "got a type")])
def test_train_wants_a_module_instance_not_a_function_or_a_class(own, tmp_path, energy, needle):
    with pytest.raises(errors.ConfigError, match=f"nn.Module instance, {needle}"):
        _train(tmp_path, own.Good if energy == "class" else energy)
    assert not (tmp_path / "r").exists()


def test_train_names_an_energy_kwarg_the_class_does_not_take(own, tmp_path):
    with pytest.raises(errors.ConfigError, match="unexpected keyword argument 'dimm'"):
        _train(tmp_path, own.Good(2), energy_kwargs={"dimm": 2})
    assert not (tmp_path / "r").exists()


def test_train_names_a_forward_argument_ebmlab_cannot_give(own, tmp_path):
    with pytest.raises(errors.ConfigError, match="missing 1 required positional argument: 'scale'"):
        _train(tmp_path, own.ExtraArg(2))
    assert not (tmp_path / "r").exists()


def test_train_refuses_weights_of_another_dtype_than_the_data(own, tmp_path):
    with pytest.raises(errors.ConfigError, match="your energy fails on a batch of shape"):
        _train(tmp_path, own.DoubleWeights(2))
    assert not (tmp_path / "r").exists()


def test_train_takes_an_energy_that_returns_float64_on_float32_data(own, tmp_path):
    run = _train(tmp_path, own.Float64Out(2))
    assert run.checkpoint_step is not None and run.sample(8).shape == (8, 2)


def test_train_refuses_an_energy_detached_from_its_input_before_writing(own, tmp_path):
    # WAS A BUG: src/ebmlab/objectives/registry.py:217 probes the energy under torch.no_grad, so a forward with no gradient
    # path to x passes the probe; the first chain then raises torch's "element 0 of tensors does not require grad"
    # from src/ebmlab/energies/base.py:41, after run.json/config.yaml/data.npy are written.
    with pytest.raises(errors.ConfigError, match="gradient"):
        _train(tmp_path, own.Detached(2))
    assert not (tmp_path / "r").exists()


def test_train_refuses_an_energy_computed_under_no_grad_before_writing(own, tmp_path):
    # WAS A BUG: same cause as above (registry.py:217 probes under no_grad; energies/base.py:41 raises torch's error).
    with pytest.raises(errors.ConfigError, match="gradient"):
        _train(tmp_path, own.NoGrad(2))
    assert not (tmp_path / "r").exists()


def test_train_refuses_an_energy_that_changes_its_input_in_place_before_writing(own, tmp_path):
    # WAS A BUG: registry.py:217's probe runs without autograd, so x.mul_() inside forward passes; the first chain raises
    # torch's "a leaf Variable that requires grad is being used in an in-place operation" after files are written.
    with pytest.raises(errors.ConfigError, match="in[- ]place"):
        _train(tmp_path, own.InPlace(2))
    assert not (tmp_path / "r").exists()


def test_train_on_an_energy_without_parameters_is_one_sentence(own, tmp_path):
    # WAS A BUG: src/ebmlab/objectives/registry.py:213 next(objective.parameters()) raises a bare StopIteration for a
    # module with no parameters (a fixed analytic energy).
    with pytest.raises(errors.ConfigError, match="parameters"):
        _train(tmp_path, own.Fixed(2))
    assert not (tmp_path / "r").exists()


def test_train_on_an_energy_whose_parameters_are_all_frozen_is_refused(own, tmp_path):
    # WAS A BUG: nothing checks that the energy has a parameter with requires_grad (api.py:308 / registry.py:203): training
    # runs, logs grad_norm 0.0 and returns the untouched weights as a trained run.
    with pytest.raises(errors.ConfigError, match="requires_grad|trainable|frozen"):
        _train(tmp_path, own.Frozen(2))


def test_energy_kwargs_without_an_energy_are_refused(tmp_path):
    # WAS A BUG: src/ebmlab/api.py:291 reads energy_kwargs only under `if energy is not None`: given alone they are dropped
    # without a word, and the default model trains.
    with pytest.raises(errors.ConfigError, match="energy_kwargs"):
        ebmlab.train("hybrid", data=_data(), energy_kwargs={"dim": 2}, out=tmp_path / "r", evaluate=False, train=TINY)


def test_energy_kwargs_that_are_not_a_mapping_are_one_sentence(own, tmp_path):
    # WAS A BUG: src/ebmlab/api_energy.py:42 dict(energy_kwargs) raises Python's "dictionary update sequence element #0
    # has length 1; 2 is required" for a string.
    with pytest.raises(errors.ConfigError, match="energy_kwargs"):
        _train(tmp_path, own.Good(2), energy_kwargs="dim=2")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_torchscript_energy_is_told_to_pass_the_plain_module(own, tmp_path):
    # WAS A BUG: src/ebmlab/api_energy.py:31-32 records torch.jit's RecursiveScriptModule as the class and then asks for its
    # argument 'cpp_module' (api_energy.py:110); nothing says a scripted module cannot be rebuilt.
    with pytest.raises(errors.ConfigError, match=r"torch\.jit|TorchScript|scripted"):
        _train(tmp_path, torch.jit.script(own.Good(2)))


def test_train_warns_that_batchnorm_makes_each_energy_depend_on_the_batch(own, tmp_path):
    # WAS A BUG: nothing looks at the modules (api.py:308): in training mode a BatchNorm energy of a point depends on the
    # other chains, and every sampler pass updates its running statistics with negative samples (3 updates ->
    # num_batches_tracked 132), while run.sample evaluates it in eval mode: a different energy from the one trained.
    with pytest.warns(UserWarning, match="(?i)batchnorm|batch norm"):
        _train(tmp_path, own.WithBatchNorm(2))


# --- the samplers called directly on any callable energy ------------------------------------------------------------

@pytest.mark.parametrize("sampler", [mala, langevin])
@pytest.mark.parametrize("energy,got", [(lambda x: quad(x)[:, None], r"\(16, 1\)"), (lambda x: quad(x).sum(), r"\(\)"),
                                        (lambda x: x * x, r"\(16, 2\)")])
def test_run_chain_refuses_an_energy_of_the_wrong_shape_at_the_start(sampler, energy, got):
    with pytest.raises(ValueError, match=f"an energy must return shape \\(16,\\), got {got}"):
        run_chain(sampler, energy, _x0(), 3, 0.1)


def test_ais_refuses_an_energy_of_the_wrong_shape_at_the_start():
    with pytest.raises(ValueError, match=r"an energy must return shape \(16,\), got \(16, 1\)"):
        ais(lambda x: quad(x)[:, None], _x0(), linear_betas(3), StepSizeController(1, 0.1))


@pytest.mark.parametrize("sampler", [mala, langevin])
def test_samplers_take_a_module_without_parameters(own, sampler):
    x, info = run_chain(sampler, own.Fixed(2), _x0(), 5, 0.1)
    assert x.shape == (16, 2) and torch.isfinite(x).all() and len(info.step_size) == 5


def test_ais_takes_a_module_without_parameters(own):
    out = ais(own.Fixed(2), _x0(), linear_betas(5), StepSizeController(1, 0.1))
    assert out.log_weights.shape == (16,) and torch.isfinite(out.log_weights).all()


def test_samplers_leave_a_frozen_modules_parameters_frozen_and_a_trainable_ones_trainable(own):
    frozen, free = own.Frozen(2), own.Good(2)
    run_chain(mala, frozen, _x0(), 3, 0.1)
    run_chain(mala, free, _x0(), 3, 0.1)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in free.parameters()) and all(p.grad is None for p in free.parameters())


def test_a_float64_energy_on_float32_points_keeps_the_points_float32():
    x, _ = run_chain(mala, lambda x: quad(x).double(), _x0(), 3, 0.1)
    assert x.dtype == torch.float32


def test_a_start_that_requires_grad_comes_back_detached_and_unchanged():
    x0 = _x0().requires_grad_(True)
    before = x0.detach().clone()
    x, _ = run_chain(mala, quad, x0, 3, 0.1)
    assert not x.requires_grad and torch.equal(x0.detach(), before)


@pytest.mark.parametrize("sampler", [mala, langevin])
def test_zero_steps_return_the_start(sampler):
    x0 = _x0()
    x, info = run_chain(sampler, quad, x0, 0, 0.1)
    assert torch.equal(x, x0) and len(info.accept_rate) == 0


@pytest.mark.parametrize("step", [-0.1, 0.0, float("nan")])
def test_a_non_positive_step_size_is_refused(step):
    with pytest.raises(ValueError, match="step_size must be positive"):
        run_chain(mala, quad, _x0(), 3, step)


def test_an_energy_that_is_nan_on_some_rows_is_a_floating_point_error():
    with pytest.raises(FloatingPointError, match="non-finite energy"):
        run_chain(mala, lambda x: torch.where(x[:, 0] > 0, quad(x), quad(x) * float("nan")), _x0(), 3, 0.1)


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")
@pytest.mark.parametrize("energy", [lambda x: quad(x).detach(), lambda x: torch.zeros(x.shape[0]),
                                    lambda x: torch.tensor([float(quad(r[None])) for r in x])],
                         ids=["detach", "constant", "item-built"])
def test_run_chain_says_in_one_sentence_that_an_energy_has_no_gradient_path(energy):
    # WAS A BUG: src/ebmlab/energies/base.py:41 calls torch.autograd.grad on an output that does not require grad: torch's
    # "element 0 of tensors does not require grad and does not have a grad_fn" (a RuntimeError), not a ValueError
    # naming the energy.
    with pytest.raises(ValueError, match="gradient"):
        run_chain(mala, energy, _x0(), 3, 0.1)


def test_run_chain_says_in_one_sentence_that_an_integer_energy_cannot_be_sampled():
    # WAS A BUG: energies/base.py:41 as above: an integer energy gives torch's "does not require grad" RuntimeError.
    with pytest.raises(ValueError, match="float"):
        run_chain(mala, lambda x: quad(x).long(), _x0(), 3, 0.1)


def test_run_chain_says_in_one_sentence_that_an_energy_returned_a_tuple():
    # WAS A BUG: src/ebmlab/energies/base.py:37 calls e.dim() on whatever came back: AttributeError "'tuple' object has
    # no attribute 'dim'".
    with pytest.raises(ValueError, match="tuple"):
        run_chain(mala, lambda x: (quad(x), None), _x0(), 3, 0.1)


def test_run_chain_refuses_integer_starting_points_in_one_sentence():
    # WAS A BUG: src/ebmlab/energies/base.py:32 x.detach().requires_grad_(True) raises torch's "only Tensors of floating
    # point dtype can require gradients" for an int x0.
    with pytest.raises(ValueError, match="float"):
        run_chain(mala, quad, torch.randint(0, 3, (16, 2)), 3, 0.1)


def test_mala_handles_points_of_shape_b_as_langevin_does():
    # WAS A BUG: src/ebmlab/samplers/mala.py:54 prod.flatten(1) (and _log_q's flatten(1), mala.py:29) assumes x is at least
    # 2-D: x0 of shape (B,) with a (B,) -> (B,) energy runs under langevin but is an IndexError under mala.
    x0 = torch.randn(16, generator=torch.Generator().manual_seed(0))
    run_chain(langevin, lambda x: x * x, x0, 3, 0.1)
    try:
        run_chain(mala, lambda x: x * x, x0, 3, 0.1)
    except ValueError:
        pass  # a sentence saying points must be (B, D) would do too


def test_mala_refuses_a_negative_per_chain_step_size():
    # WAS A BUG: src/ebmlab/samplers/base.py:147 skips check_positive for a tensor step; under MALA sigma = sqrt(2 eps T)
    # is NaN, every proposal is rejected and the chains come back unmoved with acceptance 0, no error.
    with pytest.raises(ValueError, match="step_size"):
        run_chain(mala, quad, _x0(), 3, torch.full((16,), -0.1))


def test_mala_refuses_an_infinite_step_size():
    # WAS A BUG: src/ebmlab/samplers/base.py:104 `value > 0` lets inf through; MALA then rejects every proposal and returns
    # the start unmoved without a word (langevin ends in the generic FloatingPointError).
    with pytest.raises(ValueError, match="step_size"):
        run_chain(mala, quad, _x0(), 3, float("inf"))


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_a_non_positive_temperature_is_refused(temperature):
    # WAS A BUG: nothing checks temperature (samplers/base.py:138 _check_chain_args): MALA's noise sqrt(2 eps T) is 0 or
    # NaN, every proposal is rejected, and the chains come back unmoved, silently.
    with pytest.raises(ValueError, match="temperature"):
        run_chain(mala, quad, _x0(), 3, 0.1, temperature=temperature)


@pytest.mark.parametrize("betas", [torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 0.5, 1.0]), torch.tensor([])],
                         ids=["not-ending-at-1", "decreasing", "empty"])
def test_ais_refuses_betas_that_do_not_rise_to_one(betas):
    # WAS A BUG: src/ebmlab/samplers/ais.py:161-165 never checks `betas` (the docstring: "increasing, ending at 1"): the
    # log weights then estimate another normalising constant (none at all for an empty schedule), silently.
    with pytest.raises(ValueError, match="betas"):
        ais(quad, _x0(), betas, StepSizeController(1, 0.1))


def test_ais_without_a_controller_is_one_sentence():
    # WAS A BUG: src/ebmlab/samplers/ais.py:184 controller.per_chain_step on None: AttributeError.
    with pytest.raises((ValueError, TypeError), match="controller"):
        ais(quad, _x0(), linear_betas(3), None)


def test_ais_refuses_a_zero_init_std_in_one_sentence():
    # WAS A BUG: src/ebmlab/samplers/ais.py:164 1.0 / init_std ** 2 is a bare ZeroDivisionError for init_std=0.
    with pytest.raises(ValueError, match="init_std"):
        ais(quad, _x0(), linear_betas(3), StepSizeController(1, 0.1), init_std=0.0)


def test_run_chain_on_a_plain_function_leaves_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, info = run_chain(mala, quad, _x0(), 3, 0.1, controller=StepSizeController(1, 0.1))
    assert x.shape == (16, 2) and info.accept_rate.shape == (3,)
