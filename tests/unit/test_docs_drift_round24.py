"""Round 24 of the docs-vs-code audit: each test checks one claim of README.md / docs/*.md mechanically.

No test here failed on the code at 30a07c5 (2026-12-07): no drift was found among the claims checked, so there is
no ``# DRIFT:`` test. These guard claims that the changes since 2026-12-06 put at risk. Each runs in well under 5 s
(no training)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_user_data_defaults_are_the_values_the_readme_names():
    # README "Bring your own vectors": data.whiten=true, model.base=gmm, method.energy_l2=0, data.jitter=0.3,
    # data.val_fraction=0.1, train.select_every=50, select_start=true, select_draws=5, select_margin=1, base_std 1
    from ebmlab.config import USER_DATA_DEFAULTS
    assert USER_DATA_DEFAULTS == {"data.whiten": True, "data.jitter": 0.3, "data.val_fraction": 0.1,
                                  "train.select_every": 50, "train.select_draws": 5, "train.select_start": True,
                                  "train.select_margin": 1.0, "model.base": "gmm", "model.base_std": 1.0,
                                  "method.energy_l2": 0.0}


def test_vector_method_defaults_of_paper001_are_the_readmes():
    # README: "lambda 0.01, sigma 0.01, 20 steps, 10 sampling rounds" for improved_cd on vectors
    from ebmlab.config import VECTOR_METHOD_DEFAULTS
    v = VECTOR_METHOD_DEFAULTS["improved_cd"]
    assert (v["method.step_size"], v["method.noise_scale"], v["method.n_steps"], v["method.sample_rounds"]) == (
        0.01, 0.01, 20, 10)
    assert v["method.augment"] is False and v["method.multiscale"] is False


def test_default_run_is_hybrid_lambda_5_ais_resample_half():
    # README Quick start: method.noise_chain ais, method.ais_resample 0.5, lambda 5; paper004.md: 30 + 10 steps,
    # MLP 128x3 silu, Adam 1e-3, batch 256, EMA 0.999, 2,500 updates, energy L2 0.01, target_accept 0.574
    from ebmlab.training.config import load_config
    cfg = load_config(None)
    m, t, mo = cfg.method, cfg.train, cfg.model
    assert (cfg.data.name, m.name, m.lam, m.noise_chain, m.ais_resample) == ("rings", "hybrid", 5.0, "ais", 0.5)
    assert (m.n_steps, m.n_steps_data, m.energy_l2, m.target_accept) == (30, 10, 0.01, 0.574)
    assert (mo.width, mo.depth, mo.activation, t.optimizer, t.lr, t.batch_size, t.ema, t.steps) == (
        128, 3, "silu", "adam", 0.001, 256, 0.999, 2500)
    assert t.sample_every == 0  # README: "the demo's 0 draws none"


def test_paper004_rings_configs_are_the_papers_lambda_and_write_100_steps():
    # README: `--config paper004_rings_hybrid` is the paper's set-up (lambda 25); paper004.md: the paper-scale
    # paper004_rings_* configs write 100 steps
    from ebmlab.training.config import load_config
    for scheme in ("data", "noise", "persistent", "persistent_refresh", "hybrid"):
        m = load_config(f"paper004_rings_{scheme}").method
        assert (m.name, m.lam, m.n_steps, m.n_steps_data) == (scheme, 25.0, 100, 100)


def test_paper004_experiment_step_counts_are_the_docs():
    # docs/paper004.md: `ebmlab experiment paper004` uses 20 and 10 (stable) and 30 for both (raw)
    from ebmlab.experiments import paper004
    assert (paper004.L, paper004.L_DATA, paper004.RAW_L) == (20, 10, 30)


def test_resume_may_change_exactly_the_keys_the_readme_lists():
    # README "Resume": train.steps, time_budget, log_every, checkpoint_every, keep_checkpoints, sample_every,
    # progress and eval.*
    from ebmlab.config_hash import MUTABLE_KEYS, is_mutable
    part = README[README.index("*Resume:* `--resume` reads"):]
    part = part[:part.index("(recorded in")]
    listed = re.findall(r"`(train\.\w+|eval\.\*)`", part)
    assert set(MUTABLE_KEYS) == set(listed)
    assert is_mutable("eval.n_samples") and not is_mutable("train.lr")


def test_pool_seeds_ignores_exactly_the_keys_the_readme_lists():
    # README compare --pool-seeds: train.seed, log_every, checkpoint_every, keep_checkpoints, sample_every,
    # progress, threads, device, eval.plots and data.path
    from ebmlab.experiments.compare import NOT_THE_SETTING
    assert set(NOT_THE_SETTING) == {"train.seed", "train.log_every", "train.checkpoint_every",
                                    "train.keep_checkpoints", "train.sample_every", "train.progress",
                                    "train.threads", "train.device", "eval.plots", "data.path"}


def test_progress_lines_every_30_s_and_threads_recounted_every_10_s():
    # README: plain lines "one every 30 s"; train.threads auto "re-counted every 10 s"
    from ebmlab import progress_lines
    from ebmlab.training import threads
    assert progress_lines.LINE_EVERY == 30.0 and threads.GOVERNOR_SECONDS == 10.0


def test_image_folder_reads_every_suffix_the_readme_lists():
    # README: .png, .jpg, .bmp, .gif, .tif, .webp
    from ebmlab.data.images import IMAGE_SUFFIXES
    assert {".png", ".jpg", ".bmp", ".gif", ".tif", ".webp"} <= set(IMAGE_SUFFIXES)


def test_docs_images_chunk_sizes_digits_split_and_folder_bar():
    # docs/images.md: novelty reads 4,096 training images at a time; digits 1,500 / 297; a bar from 2,000 images
    from ebmlab.data import images
    from ebmlab.metrics import novelty
    assert novelty.TRAIN_CHUNK == 4096 and images.DIGITS_TRAIN == 1500 and images.FOLDER_BAR == 2000


def test_digits_hybrid_is_what_docs_images_says():
    # docs/images.md Configs: lambda 25, channels 32/64/64, no norm, Langevin eps 1, T 5e-5, L 40 / 10, batch 64,
    # lr 2e-3, EMA 0.99, 1,000 steps
    from ebmlab.training.config import load_config
    c = load_config("digits_hybrid")
    assert (c.method.lam, list(c.model.channels), c.model.norm, c.method.sampler, c.method.step_size) == (
        25.0, [32, 64, 64], "none", "langevin", 1.0)
    assert (c.method.temperature, c.method.n_steps, c.method.n_steps_data) == (5e-5, 40, 10)
    assert (c.train.batch_size, c.train.lr, c.train.ema, c.train.steps) == (64, 0.002, 0.99, 1000)


def test_at_least_20_rows_and_a_tenth_at_least_2_held_out():
    # README: "shape (N, D), at least 20 rows: a tenth, at least 2, is held out for the evaluation"
    from ebmlab.data.arrays import MIN_ROWS, check_vectors
    from ebmlab.errors import DataError
    assert MIN_ROWS == 20
    with pytest.raises(DataError, match="at least 20 rows"):
        check_vectors(np.zeros((19, 2)), "x")


def test_float64_and_wide_integer_columns_stay_float64_float32_stays_float32():
    # README Conventions: float64 and 32/64-bit integer columns are standardised in float64
    from ebmlab.data.arrays import check_vectors
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2))
    assert check_vectors(x, "x").dtype == torch.float64
    assert check_vectors(x.astype(np.float32), "x").dtype == torch.float32
    assert check_vectors((x * 100).astype(np.int32), "x").dtype == torch.float64
    assert check_vectors((x * 100).astype(np.int64), "x").dtype == torch.float64


@pytest.mark.parametrize("overrides, needle", [
    (["data.path=/tmp/x.npy"], "data.path"),
    (["method.adaptive_step=true"], "adaptive_step"),
    (["method.name=cd_plain", "method.ce_weight=1.0"], "ce_weight"),
    (["model.spectral_norm=true"], "spectral_norm"),
])
def test_settings_that_would_do_nothing_are_refused_for_a_new_run(overrides, needle):
    # README "Nothing silent": the four examples it names are refused, naming the key
    from ebmlab.config_checks import check_new_run
    from ebmlab.errors import ConfigError
    from ebmlab.training.config import load_config
    with pytest.raises(ConfigError, match=needle):
        check_new_run(load_config(None, overrides))


def test_spectral_norm_on_paper003s_mlp_is_accepted():
    # README: spectral_norm refused "on an mlp outside paper 003"
    from ebmlab.config_checks import check_new_run
    from ebmlab.training.config import load_config
    check_new_run(load_config(None, ["method.name=cdrl", "model.spectral_norm=true"]))


def test_yaml_duplicate_keys_and_aliases_refused_and_1e_4_is_a_number(tmp_path):
    # README: "a key given twice in a YAML file is refused"; "1e-4 reads as a number; YAML aliases are refused"
    from ebmlab.errors import ConfigError
    from ebmlab.training.config import load_config
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  steps: 5\n  steps: 6\n")
    with pytest.raises(ConfigError, match="twice"):
        load_config(p)
    p.write_text("train: &a\n  steps: 5\neval: *a\n")
    with pytest.raises(ConfigError, match="alias"):
        load_config(p)
    assert load_config(None, ["train.lr=1e-4"]).train.lr == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="valid keys"):
        load_config(None, ["train.nope=1"])


def test_register_refuses_a_builtin_name_a_tuple_field_and_a_field_without_default():
    # README "Your own method": register refuses these three
    from ebmlab.errors import ConfigError
    from ebmlab.objectives import register

    @dataclasses.dataclass
    class Builtin:
        name: str = "hybrid"

    @dataclasses.dataclass
    class Tup:
        name: str = "r24_tuple"
        t: tuple = (1, 2)

    @dataclasses.dataclass
    class NoDefault:
        k: int
        name: str = "r24_nodefault"

    for name, cls in (("hybrid", Builtin), ("r24_tuple", Tup), ("r24_nodefault", NoDefault)):
        with pytest.raises(ConfigError):
            register(name, cls, object)


def test_langevin_refuses_a_step_size_controller():
    # README samplers: "with unadjusted langevin ... a controller is refused there"
    from ebmlab.samplers import StepSizeController, langevin, run_chain
    with pytest.raises(Exception, match="Langevin"):
        run_chain(langevin, lambda x: (x ** 2).sum(-1), torch.randn(4, 2), 3, 0.1,
                  controller=StepSizeController(1, 0.1))


def test_overwrite_deletes_only_the_files_training_names():
    # README *Overwrite*: step_*, samples.npy, grid_*, density.png ... deleted; a user's own file kept
    from ebmlab.training.run_dir import TRAIN_FILES
    assert TRAIN_FILES["checkpoints"].fullmatch("step_00000040.safetensors")
    assert TRAIN_FILES["checkpoints"].fullmatch("best.json")
    assert TRAIN_FILES["samples"].fullmatch("samples.npy") and TRAIN_FILES["samples"].fullmatch("grid_final.png")
    assert TRAIN_FILES["plots"].fullmatch("density.png")
    assert not TRAIN_FILES["samples"].fullmatch("samples_noise_30steps_seed0.npy")  # ebmlab sample's draw kept
    assert not TRAIN_FILES["checkpoints"].fullmatch("my_pick.safetensors")


def test_sample_help_default_file_name_is_the_one_the_code_writes():
    # `ebmlab sample --help` names RUN/samples/samples_<init>_<steps>steps_seed<seed>.npy; the audit's run wrote
    # samples_noise_30steps_seed0.npy; here the help text and the code's f-string agree
    help_src = (ROOT / "src/ebmlab/cli.py").read_text(encoding="utf-8")
    code_src = (ROOT / "src/ebmlab/cli_commands.py").read_text(encoding="utf-8")
    assert "samples_<init>_<steps>steps_seed<seed>.npy" in help_src
    assert 'f"samples_{args.init}_{steps}steps_seed{args.seed}{tag}.npy"' in code_src


def test_readme_default_yaml_lists_the_built_in_defaults():
    # paper004.md: "The shipped config `default` lists the keys that matter for this run": each key it lists has
    # the built-in default's value (noise_chain / ais_resample are written null: "resolved")
    from ebmlab.config_files import shipped_config_text
    from ebmlab.training.config import load_config
    shipped = yaml.safe_load(shipped_config_text("default"))
    built = load_config(None).to_dict()
    diff = {(sec, k): (v, built[sec][k]) for sec, vals in shipped.items() for k, v in vals.items()
            if built[sec][k] != v and (sec, k) not in {("method", "noise_chain"), ("method", "ais_resample")}}
    assert diff == {}


def test_rows_given_in_memory_are_named_as_such_when_refused(tmp_path):
    # WAS MISLEADING (this audit): the refusal of rows that are all one point named '<out>/data.npy', a file that is
    # never written for refused rows; it now names the data given to ebmlab.train
    import ebmlab
    from ebmlab.errors import DataError

    with pytest.raises(DataError, match=r"^the data given to ebmlab.train holds one value") as err:
        ebmlab.train("hybrid", data=np.ones((40, 2)), out=tmp_path / "run", train={"steps": 1})
    assert "data.npy" not in str(err.value) and not (tmp_path / "run").exists()
