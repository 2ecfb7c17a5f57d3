"""Paper 004's method keys that were accepted and did nothing (a helper's sweep of every ``method.*`` key of every
method, docs/testing.md "Is every method setting live?"): each is refused, in one sentence, where it cannot apply,
and stays accepted where it does."""
from __future__ import annotations

import pytest

from pathlib import Path

import numpy as np
import torch

import ebmlab
from ebmlab.data.dataset import build_dataset
from ebmlab.objectives import build_objective
from ebmlab.cli import main
from ebmlab.config_checks import check_new_run
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
        check_new_run(load_config(None, overrides))


# paper 000's variants (objectives/joint_time.py): cd_plain has one scalar energy, per_t is Option 1 alone
PLAIN = ["method.name=cd_plain", "method.ce_weight=null"]
PER_T = ["method.name=per_t", "method.ce_weight=0"]


@pytest.mark.parametrize("overrides,needle", [
    (["method.name=cd_plain"], "method.ce_weight"),  # the spiral config's CE weight 1: cd_plain has no CE
    (PLAIN + ["method.per_t_weight=1"], "method.per_t_weight"),
    (PER_T + ["method.per_t_weight=1"], "method.per_t_weight"),  # per_t runs Option 1 alone at weight 1 anyway
    (PLAIN + ["method.marginal_step=per_level"], "method.marginal_step"),
    (PER_T + ["method.marginal_step=per_level"], "method.marginal_step"),
    (PLAIN + ["method.increments_init=torch"], "method.increments_init"),
    (PLAIN + ["method.sample_adapt_steps=5"], "method.sample_adapt_steps"),
    (PLAIN + ["method.sample_adapt_rate=0.3"], "method.sample_adapt_rate"),
])
def test_a_paper_000_key_its_variant_does_not_read_is_refused(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        check_new_run(load_config("paper000_spiral_cdce", overrides))


@pytest.mark.parametrize("overrides", [
    PLAIN, PER_T, PER_T + ["method.ce_weight=0.5"], ["method.per_t_weight=1", "method.marginal_step=per_level"],
    ["method.increments_init=torch", "method.sample_adapt_steps=5", "method.sample_adapt_rate=0.3"],
    PLAIN + ["method.ce_weight=0"],
])
def test_where_a_paper_000_key_is_read_it_is_taken(overrides):
    check_new_run(load_config("paper000_spiral_cdce", overrides))


@pytest.mark.parametrize("variant,key", [(PLAIN, k) for k in ("per_t_weight", "marginal_step", "sample_adapt_steps",
                                                                "sample_adapt_rate", "increments_init")]
                         + [(PER_T, "per_t_weight"), (PER_T, "marginal_step")])
def test_each_paper_000_key_refused_is_really_unread_by_its_variant(variant, key):
    """The refusal's premise, checked: the variant's loss and samples are bit for bit the same with the key set."""
    value = {"per_t_weight": 1.0, "marginal_step": "per_level", "sample_adapt_steps": 3, "sample_adapt_rate": 0.3,
             "increments_init": "torch"}[key]
    outs = []
    for sets in ([], [f"method.{key}={value}"]):
        cfg = load_config("paper000_spiral_cdce", variant + ["model.width=8", "model.depth=1", "method.T=4",
                                                           "data.n_train=64", "data.n_test=16", "train.batch_size=16"] + sets)
        torch.manual_seed(0)
        data = build_dataset(cfg.data)
        obj = build_objective(cfg, data)
        loss = obj(data.train[:16], generator=torch.Generator().manual_seed(2)).loss
        draws = obj.sample(8, generator=torch.Generator().manual_seed(3), n_steps=4).x
        outs.append((loss.detach(), draws))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("overrides", [
    ["method.name=hybrid", "method.adaptive_step=true", "method.sampler=langevin", "method.target_accept=null"],
    ["method.name=data", "method.adaptive_step=true", "method.target_accept=null"],  # MALA with a fixed step
    ["method.name=hybrid", "method.noise_scale=0.05"],  # its data chains are short-run chains
    ["method.name=noise", "method.noise_scale=0.05", "method.noise_chain=short_run"],
    ["method.name=hybrid", "method.train_init_std=3"],
    ["method.name=noise", "method.train_init_std=3"],
])
def test_where_the_key_applies_it_is_taken(overrides):
    check_new_run(load_config(None, overrides))


@pytest.mark.parametrize("name", ["default", "digits_hybrid", "paper004_rings_hybrid", "paper004_rings_noise",
                                  "paper004_rings_persistent", "paper004_rings_persistent_refresh",
                                  "paper004_rings_data", "paper004_cifar10", "paper004_flowers"])
def test_the_shipped_paper_004_configs_set_no_key_that_does_nothing(name):
    check_new_run(load_config(name, []))


def test_a_new_run_is_refused_from_the_command_line_and_python_but_a_stored_run_still_opens(tmp_path, capsys):
    """The refusal is for runs about to start: a run stored with such a key (before it was refused) still loads,
    samples and resumes as it ran."""
    sets = ["method.adaptive_step=true", "train.steps=2", "train.progress=false", "train.threads=1",
            "model.width=8", "model.depth=1", "data.n_train=128", "data.n_test=32", "eval.n_samples=16",
            "eval.plots=false", "eval.long_run_factor=1", "train.batch_size=16"]
    argv = ["train", "--out", str(tmp_path / "run"), *[a for s in sets for a in ("--set", s)]]
    assert main(argv) == 2 and "method.adaptive_step" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="method.adaptive_step"):
        ebmlab.train("hybrid", np.random.default_rng(0).normal(size=(64, 2)), out=tmp_path / "py",
                     overrides=["method.adaptive_step=true"])
    assert not (tmp_path / "py").exists()
    # a run stored with the key (as one written before the refusal): it opens and resumes
    from ebmlab.training.loop import Trainer, prepare_run_dir
    cfg = load_config(None, sets)
    prepare_run_dir(tmp_path / "old", cfg, resume=False, overwrite=False)
    Trainer(cfg, tmp_path / "old").fit()
    run = ebmlab.load(tmp_path / "old")
    assert run.config.method.adaptive_step and run.sample(4, steps=2).shape == (4, 10)
    assert main(["train", "--out", str(tmp_path / "old"), "--resume", "--set", "train.steps=3",
                 "--set", "eval.n_samples=16"]) == 0


# ----- data, model and evaluation keys (docs/testing.md, "Is every data, model and evaluation setting live?") ------
@pytest.mark.parametrize("overrides,needle", [
    # rings trained with data.path recorded (and hashed) as its data: the run claimed a file it never read
    (["data.path=/nowhere/x.npy"], "data.path '/nowhere/x.npy' is not read by the dataset 'rings'"),
    (["data.name=breast_cancer", "data.path=/nowhere/x.npy"], "not read by the dataset 'breast_cancer'"),
    (["data.name=digits", "model.name=resnet", "data.crop=4"], "data.crop applies to image folders"),
    (["model.spectral_norm=true"], "model.spectral_norm applies to"),
    (["method.name=implicit_diffusion", "model.spectral_norm=true"], "model.spectral_norm applies to"),
    (["data.name=digits", "model.name=resnet", "model.fourier=4"], "model.fourier"),
    (["model.fourier_scale=3"], "model.fourier_scale"),
    (["method.name=cdrl", "method.init_conditional=true"], "method.init_conditional"),  # no label to see
])
def test_a_data_or_model_key_read_by_nothing_is_refused(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        check_new_run(load_config(None, overrides))


@pytest.mark.parametrize("overrides", [
    ["data.name=array", "data.path=/nowhere/x.npy"], ["data.name=imagefolder", "data.path=/f", "data.crop=140",
                                                        "model.name=resnet"],
    ["method.name=cdrl", "model.spectral_norm=true"], ["data.name=digits", "model.name=resnet", "model.spectral_norm=true"],
    ["model.fourier=4", "model.fourier_scale=3"],
    ["method.name=cdrl", "method.conditional=true", "method.init_conditional=true"],
    ["method.name=cdrl", "method.init_conditional=false"],  # an unconditional initializer: what it has anyway
])
def test_where_a_data_or_model_key_is_read_it_is_taken(overrides):
    check_new_run(load_config(None, overrides))


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(ebmlab.__file__).parent / "configs").glob("*.yaml")))
def test_no_shipped_config_sets_a_key_that_does_nothing(name):
    check_new_run(load_config(name, []))


def test_model_pool_reaches_every_scale_of_a_multiscale_energy():
    """``model.pool: subpixel`` was passed to ``resnet`` only: ``multiscale`` (paper 001's three ResNets) built the
    same network with it or without."""
    import torch

    from ebmlab.energies.build import build_energy
    cfg = load_config("paper001_digits", ["model.channels=[4, 8]", "model.name=multiscale"]).model
    torch.manual_seed(0)
    avg = build_energy(cfg, (1, 8, 8))
    cfg.pool = "subpixel"
    torch.manual_seed(0)
    sub = build_energy(cfg, (1, 8, 8))
    assert sum(p.numel() for p in sub.parameters()) != sum(p.numel() for p in avg.parameters())
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(avg(x), sub(x))
