"""Paper 004's method keys that were accepted and did nothing (a helper's sweep of every ``method.*`` key of every
method, docs/testing.md "Is every method setting live?"): each is refused, in one sentence, where it cannot apply,
and stays accepted where it does."""
from __future__ import annotations

import pytest

from ebmlab.errors import ConfigError
from ebmlab.training.config import load_config


@pytest.mark.parametrize("overrides,needle", [
    # the MALA controller sets the step: adaptive_step's eps was computed and dropped
    (["method.name=hybrid", "method.adaptive_step=true"], "method.adaptive_step"),
    (["method.name=data", "method.adaptive_step=true", "method.step_rule=paper004"], "method.adaptive_step"),
    # the noise scheme's AIS chains keep sqrt(2 eps T)
    (["method.name=noise", "method.noise_scale=0.05"], "method.noise_scale"),
    # the bank is filled and refreshed from init_std; data chains start at data
    (["method.name=persistent", "method.train_init_std=3"], "method.train_init_std"),
    (["method.name=persistent_refresh", "method.train_init_std=3"], "method.train_init_std"),
    (["method.name=data", "method.train_init_std=3"], "method.train_init_std"),
])
def test_a_method_key_that_would_do_nothing_is_refused(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)


@pytest.mark.parametrize("overrides", [
    ["method.name=hybrid", "method.adaptive_step=true", "method.sampler=langevin", "method.target_accept=null"],
    ["method.name=data", "method.adaptive_step=true", "method.target_accept=null"],  # MALA with a fixed step
    ["method.name=hybrid", "method.noise_scale=0.05"],  # its data chains are short-run chains
    ["method.name=noise", "method.noise_scale=0.05", "method.noise_chain=short_run"],
    ["method.name=hybrid", "method.train_init_std=3"],
    ["method.name=noise", "method.train_init_std=3"],
])
def test_where_the_key_applies_it_is_taken(overrides):
    load_config(None, overrides)


@pytest.mark.parametrize("name", ["default", "digits_hybrid", "paper004_rings_hybrid", "paper004_rings_noise",
                                  "paper004_rings_persistent", "paper004_rings_persistent_refresh",
                                  "paper004_rings_data", "paper004_cifar10", "paper004_flowers"])
def test_the_shipped_paper_004_configs_set_no_key_that_does_nothing(name):
    load_config(name, [])
