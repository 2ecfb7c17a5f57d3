import pytest

from ebmlab.training.config import ConfigError, load_config


def test_defaults_are_the_demo():
    cfg = load_config()
    assert cfg.method.name == "hybrid" and cfg.data.name == "rings"


def test_overrides_parse_types():
    cfg = load_config(None, ["train.steps=7", "method.lam=2.5", "train.grad_clip=null", "train.betas=[0.5, 0.9]"])
    assert cfg.train.steps == 7 and cfg.method.lam == 2.5 and cfg.train.grad_clip is None
    assert cfg.train.betas == [0.5, 0.9]


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key train\.stepz; valid keys .* steps"):
        load_config(None, ["train.stepz=3"])


def test_wrong_type():
    with pytest.raises(ConfigError, match="train.steps expects int"):
        load_config(None, ["train.steps=abc"])


def test_unknown_method_lists_methods():
    with pytest.raises(ConfigError, match="unknown method name 'nope'; available methods are: .*hybrid"):
        load_config(None, ["method.name=nope"])


@pytest.mark.parametrize("value", ["0", "-0.1"])
def test_nonpositive_step_size(value):
    with pytest.raises(ConfigError, match="step_size must be positive"):
        load_config(None, [f"method.step_size={value}"])


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_schema_takes_the_method_lookup():
    """``ebmlab.config`` sits below objectives: the method dataclasses come in as an argument."""
    from dataclasses import dataclass

    from ebmlab import config

    @dataclass
    class Mine:
        name: str = "mine"
        k: int = 1

    assert config.from_dict({"method": {"name": "mine", "k": 3}}, {"mine": Mine}).method.k == 3
    with pytest.raises(ConfigError, match="available methods are: mine"):
        config.from_dict({}, {"mine": Mine})  # the default method (hybrid) is not in this lookup


def test_errors_live_in_one_module_and_keep_their_old_homes():
    from ebmlab import errors
    from ebmlab.data.arrays import DataError
    from ebmlab.training.checkpoint import CheckpointError
    from ebmlab.training.distributed import DistributedError
    from ebmlab.training.loop import TrainingDiverged

    assert ConfigError is errors.ConfigError and issubclass(ConfigError, ValueError)
    assert DataError is errors.DataError and issubclass(DataError, ValueError)
    assert CheckpointError is errors.CheckpointError and issubclass(CheckpointError, RuntimeError)
    assert DistributedError is errors.DistributedError and issubclass(DistributedError, RuntimeError)
    assert TrainingDiverged is errors.TrainingDiverged and issubclass(TrainingDiverged, FloatingPointError)
