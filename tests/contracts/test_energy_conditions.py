"""The conditions ``ebmlab.load(RUN)(x, **cond)`` takes (``Objective.energy_conditions``), checked for every
method: each declared key reaches the energy over its whole range, and anything else is one ConfigError (found by an
audit: an out-of-range paper-002 time was evaluated, ``t=`` on an energy without one raised its own TypeError, and a
class-conditional CDRL run's class energy could not be read, its energy's keyword being ``labels``)."""
import pytest
import torch

from ebmlab.errors import ConfigError
from ebmlab.objectives import METHODS, build_objective
from ebmlab.objectives.base import checked_conditions
from ebmlab.training.config import load_config

from .test_objective_contract import _objective

# What each method's data energy takes on the tiny unconditional toy config (T = 4 there).
EXPECTED = {"cd_ce": {"t": (0, 3)}, "joint_cd": {"t": (0, 3)}, "per_t": {"t": (0, 3)}, "implicit_diffusion":
            {"t": (1, 4)}}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_declared_condition_reaches_the_energy_and_nothing_else_is_taken(name):
    obj, data = _objective(name)
    x = data.test[:6]
    ranges = obj.energy_conditions
    assert ranges == EXPECTED.get(name, {}), ranges
    with torch.no_grad():
        for p in obj.parameters():  # paper 000's level increments start at zero: every level equal
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        for key, (lo, hi) in ranges.items():
            e_lo = obj.data_energy(x, **obj.energy_cond({key: lo}, 6))
            e_hi = obj.data_energy(x, **obj.energy_cond({key: torch.full((6,), hi)}, 6))
            assert e_lo.shape == e_hi.shape == (6,) and torch.isfinite(e_lo).all() and torch.isfinite(e_hi).all()
            assert not torch.equal(e_lo, e_hi)  # the value reached the network
            for bad in (lo - 1, hi + 1, 0.5, True, torch.full((5,), lo), "1"):
                with pytest.raises(ConfigError, match=f"{key} must be one integer or 6 integers in {lo}..{hi}"):
                    obj.energy_cond({key: bad}, 6)
    with pytest.raises(ConfigError, match="got 'w'"):
        obj.energy_cond({"w": 1}, 6)


@pytest.mark.parametrize("config, sets", [("paper001_digits", ["method.n_steps=2"]),
                                          ("paper003_digits", ["method.n_steps=1", "method.T=2", "model.width=8"])])
def test_a_class_conditional_runs_energy_is_read_per_class(config, sets):
    from ebmlab.data import build_dataset
    cfg = load_config(config, ["method.conditional=true", "data.n_train=64", "data.n_test=16", *sets])
    torch.manual_seed(0)
    data = build_dataset(cfg.data)
    obj = build_objective(cfg, data)
    assert obj.energy_conditions == {"y": (0, data.num_classes - 1)}
    x = data.test[:4]
    with torch.no_grad():
        e3, e4 = (obj.data_energy(x, **obj.energy_cond({"y": k}, 4)) for k in (3, 4))
    assert e3.shape == (4,) and torch.isfinite(e3).all() and not torch.equal(e3, e4)
    with pytest.raises(ConfigError, match=f"y must be one integer or 4 integers in 0..{data.num_classes - 1}"):
        obj.energy_cond({"y": data.num_classes}, 4)


def test_checked_conditions_gives_long_tensors_of_the_batch():
    out = checked_conditions({"t": 2, "y": [0, 1, 1]}, {"t": (0, 3), "y": (0, 1)}, 3, "cpu")
    assert out["t"].tolist() == [2, 2, 2] and out["y"].tolist() == [0, 1, 1] and out["y"].dtype == torch.long
    with pytest.raises(ConfigError, match="takes no conditions; got 't'"):
        checked_conditions({"t": 1}, {}, 3, "cpu")
