"""Does the advice in ebmlab's one-sentence errors work? Each test triggers an error the way a user would, then does
exactly what the sentence says and checks that this gets past the error (a read-only helper's audit of commit
``7d53b0a``, docs/testing.md "Thirty-third round"). Tests marked ``# WAS A BUG`` failed then: following their advice
did not work; they pass with the fixes (two of them now follow the new advice)."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.cli import main
from ebmlab.errors import ConfigError, DataError
from tests.cli_helpers import copy_into_cwd

FAST = ["--set", "train.steps=4", "--set", "train.threads=1", "--set", "eval.plots=false", "--set",
        "train.progress=false", "--set", "eval.n_samples=100", "--set", "eval.long_run_factor=1", "--set",
        "eval.grid_size=20"]
T = {"steps": 4, "threads": 1, "progress": False}
OWN = {"config": "default"}  # a config given: the user-data defaults (validation checks, a mixture base) stay off
E = {"plots": False, "n_samples": 100, "long_run_factor": 1, "grid_size": 20}


def cli(capsys, *argv):
    """(exit status, stderr) of ``ebmlab ARGV`` run in this process; argparse's exit is a status too."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def refused(capsys, needle, *argv):
    code, err = cli(capsys, *argv)
    assert code == 2 and needle in err, err
    return err


def works(capsys, *argv):
    code, err = cli(capsys, *argv)
    assert code == 0, err
    return err


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two tiny runs: ``base`` (rings, checkpoints at steps 4 and 8) and ``user`` (``--data FILE``: its validation
    checks kept ``best.safetensors``), and the data file of ``user``."""
    root = tmp_path_factory.mktemp("built")
    assert main(["train", *FAST, "--out", str(root / "base")]) == 0
    assert main(["train", *FAST, "--set", "train.steps=8", "--out", str(root / "base"), "--resume"]) == 0
    np.save(root / "d.npy", np.random.RandomState(0).randn(300, 2))
    assert main(["train", *FAST, "--out", str(root / "user"), "--data", str(root / "d.npy")]) == 0
    return root


@pytest.fixture
def base(built, tmp_path, monkeypatch):
    return copy_into_cwd(built / "base", tmp_path, monkeypatch)


@pytest.fixture
def user(built, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(built / "user", tmp_path / "urun")
    return tmp_path / "urun"


# ---- train: an existing --out, --resume, --overwrite -------------------------------------------------------------

def test_existing_run_pass_resume(capsys, base):  # training/run_dir.py:136
    refused(capsys, "pass --resume to continue it", "train", *FAST, "--out", base)
    works(capsys, "train", *FAST, "--set", "train.steps=8", "--out", base, "--resume")


def test_existing_run_pass_overwrite(capsys, base):  # training/run_dir.py:136
    refused(capsys, "--overwrite to replace it", "train", *FAST, "--out", base)
    works(capsys, "train", *FAST, "--out", base, "--overwrite")


def test_existing_run_choose_another_out(capsys, base):  # training/run_dir.py:136
    refused(capsys, "or choose another --out", "train", *FAST, "--out", base)
    works(capsys, "train", *FAST, "--out", base.parent / "other")


def test_resume_and_overwrite_pass_only_one(capsys, base):  # cli_commands.py:63
    refused(capsys, "pass only one of them", "train", *FAST, "--out", base, "--resume", "--overwrite")
    works(capsys, "train", *FAST, "--set", "train.steps=8", "--out", base, "--resume")


def test_resume_to_fewer_steps_give_steps_at_least(capsys, base):  # training/loop.py:217
    err = refused(capsys, "give train.steps >= 8", "train", *FAST, "--out", base, "--resume")
    assert "already at step 8" in err
    works(capsys, "train", *FAST, "--set", "train.steps=8", "--out", base, "--resume")


def test_resume_of_nothing_start_without_resume(capsys, tmp_path, monkeypatch):  # training/run.py:282
    monkeypatch.chdir(tmp_path)
    refused(capsys, "start the run without --resume", "train", *FAST, "--out", "fresh", "--resume")
    works(capsys, "train", *FAST, "--out", "fresh")


def test_resume_changing_a_key_start_a_new_run_with_another_out(capsys, base):  # training/run.py:297
    refused(capsys, "or start a new run with another --out", "train", *FAST, "--set", "train.lr=0.01", "--out", base,
            "--resume")
    works(capsys, "train", *FAST, "--set", "train.lr=0.01", "--out", base.parent / "lr")


def test_cosine_resume_with_the_same_steps(capsys, tmp_path, monkeypatch):  # training/run.py:302
    monkeypatch.chdir(tmp_path)
    works(capsys, "train", *FAST, "--set", "train.lr_schedule=cosine", "--out", "cos")
    refused(capsys, "resume with the same train.steps", "train", *FAST, "--set", "train.lr_schedule=cosine",
            "--set", "train.steps=6", "--out", "cos", "--resume")
    works(capsys, "train", *FAST, "--set", "train.lr_schedule=cosine", "--out", "cos", "--resume")


def test_out_is_a_file_choose_another_out(capsys, tmp_path, monkeypatch):  # training/run_dir.py:71
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    refused(capsys, "choose another --out", "train", *FAST, "--out", "afile")
    works(capsys, "train", *FAST, "--out", "another")


def test_out_under_a_file_choose_another_out(capsys, tmp_path, monkeypatch):  # training/run_dir.py:75
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    refused(capsys, "choose another --out", "train", *FAST, "--out", "afile/sub")
    works(capsys, "train", *FAST, "--out", "another")


def test_not_a_run_choose_another_out(capsys, tmp_path, monkeypatch):  # training/run_dir.py:142 and :140
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    refused(capsys, "choose another --out", "train", *FAST, "--out", "junk")
    refused(capsys, "choose another --out", "train", *FAST, "--out", "junk", "--overwrite")
    works(capsys, "train", *FAST, "--out", "another")
    assert (tmp_path / "junk" / "a.txt").is_file()


# ---- sample: --out, --checkpoint, --device -----------------------------------------------------------------------

def test_sample_out_directory_give_the_file_name_named(capsys, base):  # cli_commands.py:251
    err = refused(capsys, "give a file name such as", "sample", base, "--n", "5", "--out", base)
    suggested = err.split("such as ")[1].strip().strip("'")
    works(capsys, "sample", base, "--n", "5", "--out", suggested)
    assert np.load(suggested).shape[0] == 5


def test_sample_out_suffix_give_npy_or_csv(capsys, base):  # cli_commands.py:255
    refused(capsys, "give a name ending in one of them", "sample", base, "--n", "5", "--out", "s.txt")
    works(capsys, "sample", base, "--n", "5", "--out", "s.csv")


def test_sample_out_exists_pass_overwrite(capsys, base):  # cli_commands.py:270
    works(capsys, "sample", base, "--n", "5", "--out", "s.npy")
    refused(capsys, "pass --overwrite to replace", "sample", base, "--n", "5", "--out", "s.npy")
    works(capsys, "sample", base, "--n", "5", "--out", "s.npy", "--overwrite")


def test_sample_out_under_a_file_choose_another_out(capsys, base):  # cli_commands.py:259
    (base.parent / "afile").write_text("x")
    refused(capsys, "choose another --out", "sample", base, "--n", "5", "--out", "afile/s.npy")
    works(capsys, "sample", base, "--n", "5", "--out", "s2.npy")


def test_checkpoint_directory_pass_a_step_file(capsys, base):  # training/run.py:219
    refused(capsys, "pass a step_NNNNNNNN.safetensors file", "sample", base, "--n", "5", "--checkpoint",
            base / "checkpoints")
    works(capsys, "sample", base, "--n", "5", "--checkpoint", base / "checkpoints" / "step_00000004.safetensors",
          "--out", "s.npy")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_device_cuda_use_cpu_or_auto(capsys, base):  # training/run.py:74
    refused(capsys, "use cpu or auto", "sample", base, "--n", "5", "--device", "cuda")
    works(capsys, "sample", base, "--n", "5", "--device", "auto", "--out", "a.npy")
    works(capsys, "sample", base, "--n", "5", "--device", "cpu", "--out", "c.npy")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="the error is for machines without MPS")
def test_device_mps_use_cpu_or_auto(capsys, base):  # training/run.py:80
    refused(capsys, "use cpu or auto", "sample", base, "--n", "5", "--device", "mps")
    works(capsys, "sample", base, "--n", "5", "--device", "auto", "--out", "a.npy")


def test_train_amp_on_cpu_set_amp_false(capsys, tmp_path, monkeypatch):  # training/distributed.py:351
    monkeypatch.chdir(tmp_path)
    refused(capsys, "set train.amp=false", "train", *FAST, "--set", "train.amp=true", "--out", "amp")
    works(capsys, "train", *FAST, "--set", "train.amp=false", "--out", "amp")


# ---- eval options ------------------------------------------------------------------------------------------------

def test_eval_draw_seed_give_heldout_draws_too(capsys, base):  # training/image_eval.py:228
    refused(capsys, "give that too", "eval", base, "--draw-seed", "3")
    works(capsys, "eval", base, "--draw-seed", "3", "--heldout-draws", "1")


# WAS A BUG: on a vector run "--inception-weights ... give --fid too" leads straight to "--fid needs an image run".
def test_eval_inception_weights_on_a_vector_run_says_fid_does_not_apply(capsys, base):  # training/image_eval.py:214
    (base.parent / "w.pth").write_bytes(b"")
    err = refused(capsys, "--inception-weights (inception_weights=) needs an image run", "eval", base,
                  "--inception-weights", "w.pth")
    assert "give --fid" not in err, err


# ---- --set and other command-line slips --------------------------------------------------------------------------

def test_set_without_equals_expects_key_value(capsys, tmp_path, monkeypatch):  # config.py:341
    monkeypatch.chdir(tmp_path)
    refused(capsys, "--set expects key=value (e.g. train.steps=100)", "train", *FAST, "--set", "train.steps",
            "--out", "o")
    works(capsys, "train", *FAST, "--set", "train.steps=4", "--out", "o")


def test_set_key_without_section(capsys, tmp_path, monkeypatch):  # config.py:345
    monkeypatch.chdir(tmp_path)
    refused(capsys, "section.key (e.g. train.steps)", "train", *FAST, "--set", "steps=4", "--out", "o")
    works(capsys, "train", *FAST, "--set", "train.steps=4", "--out", "o")


# WAS A BUG: the value quoted as advised (key='"..."' in a shell, i.e. key="a #b") is refused with the same sentence.
def test_set_hash_quote_the_value(capsys, tmp_path, monkeypatch):  # config.py:353
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "a #b.npy", np.random.RandomState(0).randn(100, 2))
    refused(capsys, "quote the value", "train", *FAST, "--set", "data.name=array", "--set", "data.path=a #b.npy",
            "--out", "o")
    works(capsys, "train", "--config", "default", *FAST, "--set", "data.name=array", "--set", 'data.path="a #b.npy"',
          "--out", "o")


def test_unrecognized_option_set_section_key(capsys, tmp_path, monkeypatch):  # cli.py:354
    monkeypatch.chdir(tmp_path)
    refused(capsys, "--set SECTION.KEY=VALUE (e.g. --set train.steps=10)", "train", *FAST, "--steps", "4",
            "--out", "o")
    works(capsys, "train", *FAST, "--set", "train.steps=4", "--out", "o")


def test_two_keys_after_one_set_give_set_once_per_key(capsys, tmp_path, monkeypatch):  # cli.py:352
    monkeypatch.chdir(tmp_path)
    refused(capsys, "give --set once per key", "train", *FAST, "--set", "train.steps=4", "eval.n_samples=100",
            "--out", "o")
    works(capsys, "train", *FAST, "--set", "train.steps=4", "--set", "eval.n_samples=100", "--out", "o")


def test_unknown_config_pass_a_shipped_name(capsys, tmp_path, monkeypatch):  # config_files.py:165
    monkeypatch.chdir(tmp_path)
    err = refused(capsys, "pass a name, e.g. --config", "train", *FAST, "--config", "nope", "--out", "o")
    name = err.split("e.g. --config ")[1].split(")")[0]
    works(capsys, "train", *FAST, "--config", name, "--out", "o")


def test_config_directory_pass_a_yaml_file(capsys, tmp_path, monkeypatch):  # config_files.py:157
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfgs").mkdir()
    refused(capsys, "pass a YAML file or a shipped config's name", "train", *FAST, "--config", "cfgs", "--out", "o")
    (tmp_path / "cfgs" / "mine.yaml").write_text("train:\n  lr: 0.001\n")
    works(capsys, "train", *FAST, "--config", "cfgs/mine.yaml", "--out", "o")


# ---- config keys -------------------------------------------------------------------------------------------------

def test_select_every_set_val_fraction(capsys, tmp_path, monkeypatch):  # config_checks.py:264
    monkeypatch.chdir(tmp_path)
    refused(capsys, "set data.val_fraction (e.g. 0.1) too", "train", *FAST, "--set", "train.select_every=2",
            "--out", "o")
    works(capsys, "train", *FAST, "--set", "train.select_every=2", "--set", "data.val_fraction=0.1", "--out", "o")


# WAS A BUG: on image data "set data.val_fraction (e.g. 0.1) too" is answered by "set data.val_fraction=null", a loop.
def test_select_every_on_images_set_val_fraction(capsys, tmp_path, monkeypatch):  # config_checks.py:264
    monkeypatch.chdir(tmp_path)
    refused(capsys, "on images, set train.select_every=null", "train", "--config", "digits_hybrid", *FAST, "--set",
            "train.select_every=2", "--out", "o")
    err = refused(capsys, "train.select_every=null with it", "train", "--config", "digits_hybrid", *FAST, "--set",
                  "data.val_fraction=0.1", "--out", "o")  # the other way in names both keys
    assert "set data.val_fraction=null" in err, err
    works(capsys, "train", "--config", "digits_hybrid", *FAST, "--set", "train.select_every=null", "--set",
          "train.steps=2", "--out", "o")


# WAS A BUG: "set train.select_every" alone is refused next ("set data.val_fraction (e.g. 0.1) too"): the advice is half.
def test_select_key_without_select_every_set_it(capsys, tmp_path, monkeypatch):  # config_checks.py:149
    monkeypatch.chdir(tmp_path)
    refused(capsys, "set train.select_every and data.val_fraction (e.g. 0.1; vector data only), or leave it unset",
            "train", *FAST, "--set", "train.select_draws=2", "--out", "o")
    works(capsys, "train", *FAST, "--set", "train.select_draws=2", "--set", "train.select_every=2", "--set",
          "data.val_fraction=0.1", "--out", "o")


def test_select_draws_and_window_set_one_of_them(capsys, tmp_path, monkeypatch):  # config_checks.py:257
    monkeypatch.chdir(tmp_path)
    sel = ["--set", "train.select_every=4", "--set", "data.val_fraction=0.1", "--set", "train.select_draws=2"]
    refused(capsys, "set one of them", "train", *FAST, *sel, "--set", "train.select_window=3", "--out", "o")
    works(capsys, "train", *FAST, *sel, "--set", "train.select_window=1", "--out", "o")


def test_model_target_without_custom_set_model_name_custom(capsys, tmp_path, monkeypatch):  # config_checks.py:217
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "own_energy_r33.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Own(nn.Module):\n    def __init__(self, dim):\n"
        "        super().__init__()\n        self.dim = dim\n        self.lin = nn.Linear(dim, 1)\n\n"
        "    def forward(self, x):\n        return self.lin(x).squeeze(-1)\n")
    own = ["--set", "model.target=own_energy_r33:Own", "--set", "model.kwargs={dim: 10}"]
    refused(capsys, "set model.name=custom", "train", *FAST, *own, "--out", "o")
    works(capsys, "train", *FAST, *own, "--set", "model.name=custom", "--out", "o")


def test_resnet_on_vectors_use_mlp(capsys, tmp_path, monkeypatch):  # energies/convnet.py:247
    monkeypatch.chdir(tmp_path)
    refused(capsys, "use model.name mlp for vectors", "train", *FAST, "--set", "model.name=resnet", "--out", "o")
    works(capsys, "train", *FAST, "--set", "model.name=mlp", "--out", "o")


def test_improved_cd_on_vectors_set_augment_multiscale_false(capsys, tmp_path, monkeypatch):  # improved_cd.py:305
    monkeypatch.chdir(tmp_path)
    refused(capsys, "set them to false", "train", *FAST, "--set", "method.name=improved_cd", "--out", "o")
    works(capsys, "train", *FAST, "--set", "method.name=improved_cd", "--set", "method.augment=false", "--set",
          "method.multiscale=false", "--out", "o")


def test_improved_cd_on_vectors_start_from_paper001_toy(capsys, tmp_path, monkeypatch):  # improved_cd.py:305
    monkeypatch.chdir(tmp_path)
    refused(capsys, "or start from --config paper001_toy", "train", *FAST, "--set", "method.name=improved_cd",
            "--out", "o")
    works(capsys, "train", "--config", "paper001_toy", *FAST, "--out", "o")


def test_data_name_array_pass_data_path(capsys, tmp_path, monkeypatch):  # data/dataset.py:125
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "v.npy", np.random.RandomState(0).randn(100, 2))
    refused(capsys, "pass --data PATH", "train", *FAST, "--set", "data.name=array", "--out", "o")
    works(capsys, "train", "--config", "default", *FAST, "--set", "data.name=array", "--data", "v.npy", "--out", "o")


def test_data_path_on_a_toy_give_data_file(capsys, tmp_path, monkeypatch):  # config_checks.py:134
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "v.npy", np.random.RandomState(0).randn(100, 2))
    refused(capsys, "give --data FILE", "train", *FAST, "--set", "data.path=v.npy", "--out", "o")
    works(capsys, "train", "--config", "default", *FAST, "--data", "v.npy", "--out", "o")


# ---- a run's files: data, checkpoints, metrics -------------------------------------------------------------------

def test_data_file_changed_restore_the_original(capsys, built, user):  # training/run_data.py:157
    data = built / "d.npy"
    kept = data.read_bytes()
    try:
        np.save(data, np.zeros((300, 2)))
        refused(capsys, "restore the original file", "sample", user, "--n", "5", "--init", "data", "--out", "s.npy")
    finally:
        data.write_bytes(kept)
    works(capsys, "sample", user, "--n", "5", "--init", "data", "--out", "s.npy")


def test_data_file_missing_sample_init_noise_and_load_work(capsys, built, user):  # training/run_data.py:194
    data = built / "d.npy"
    kept = data.read_bytes()
    try:
        data.unlink()
        refused(capsys, "sample --init noise work without it", "sample", user, "--n", "5", "--init", "data",
                "--out", "s.npy")
        works(capsys, "sample", user, "--n", "5", "--init", "noise", "--out", "s.npy")
        assert ebmlab.load(user).sample(3).shape == (3, 2)
    finally:
        data.write_bytes(kept)


def test_best_without_its_sidecar_delete_best(capsys, user):  # training/checkpoint.py:92
    ck = user / "checkpoints"
    assert (ck / "best.safetensors").is_file()
    (ck / "best.json").unlink()
    err = refused(capsys, "delete best.safetensors to use the newest step checkpoint", "sample", user, "--n", "5",
                  "--out", "s.npy")
    (ck / "best.safetensors").unlink()
    err = works(capsys, "sample", user, "--n", "5", "--out", "s.npy")
    assert "step_00000004" in err


def _damage_sidecar(run):
    (run / "checkpoints" / "step_00000008.json").write_text("{bad")


def _nan_checkpoint(run):
    from safetensors.torch import load_file, save_file
    p = run / "checkpoints" / "step_00000008.safetensors"
    t = load_file(p)
    k = next(k for k in t if k.startswith("ema."))
    t[k] = t[k].clone()
    t[k].view(-1)[0] = float("nan")
    save_file(t, p)
    side = p.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["tensor_bytes"] = os.path.getsize(p)
    side.write_text(json.dumps(meta))


def test_damaged_sidecar_sample_use_another_checkpoint(capsys, base):  # training/checkpoint.py:119
    _damage_sidecar(base)
    refused(capsys, "use another checkpoint", "sample", base, "--n", "5", "--out", "s.npy")
    works(capsys, "sample", base, "--n", "5", "--out", "s.npy", "--checkpoint", "step_00000004")


# WAS A BUG: on train --resume, "it is damaged, use another checkpoint" named no way: train has no --checkpoint option.
def test_damaged_sidecar_resume_delete_the_pair(capsys, base):  # training/checkpoint.py:119
    _damage_sidecar(base)
    err = refused(capsys, "delete this checkpoint pair", "train", *FAST, "--set", "train.steps=8", "--out", base,
                  "--resume")
    assert "--checkpoint" not in err, err
    for p in (base / "checkpoints").glob("step_00000008.*"):
        p.unlink()
    works(capsys, "train", *FAST, "--set", "train.steps=8", "--out", base, "--resume")


def test_sidecar_without_optimizer_delete_the_pair(capsys, base):  # training/loop.py:207
    side = base / "checkpoints" / "step_00000008.json"
    meta = json.loads(side.read_text())
    del meta["optimizer"]
    side.write_text(json.dumps(meta))
    refused(capsys, "delete this checkpoint pair", "train", *FAST, "--set", "train.steps=8", "--out", base,
            "--resume")
    side.unlink()
    side.with_suffix(".safetensors").unlink()
    works(capsys, "train", *FAST, "--set", "train.steps=8", "--out", base, "--resume")


def test_nan_checkpoint_sample_use_an_earlier_checkpoint(capsys, base):  # training/checkpoint.py:170
    _nan_checkpoint(base)
    refused(capsys, "use another checkpoint (--checkpoint FILE", "sample", base, "--n", "5", "--out", "s.npy")
    works(capsys, "sample", base, "--n", "5", "--out", "s.npy", "--checkpoint",
          base / "checkpoints" / "step_00000004.safetensors")


# WAS A BUG: on train --resume, "use an earlier checkpoint (--checkpoint FILE)" named an option train does not have.
def test_nan_checkpoint_resume_delete_the_pair(capsys, base):  # training/checkpoint.py:170
    _nan_checkpoint(base)
    err = refused(capsys, "delete this checkpoint pair", "train", *FAST, "--set", "train.steps=10", "--out", base,
                  "--resume")
    assert "--checkpoint" not in err, err
    for p in (base / "checkpoints").glob("step_00000008.*"):
        p.unlink()
    works(capsys, "train", *FAST, "--set", "train.steps=10", "--out", base, "--resume")


def test_compare_without_metrics_evaluate_it_first(capsys, base, built):  # experiments/compare.py:165
    shutil.copytree(built / "base", base.parent / "run2")
    other = base.parent / "lr"
    works(capsys, "train", *FAST, "--set", "train.lr=0.01", "--out", other)
    (base / "metrics.json").unlink()
    err = refused(capsys, "evaluate it first (ebmlab eval", "compare", base, other)
    command = err.split("(ebmlab ")[1].split(")")[0].split()
    works(capsys, *command)
    works(capsys, "compare", base, other)


def test_compare_damaged_metrics_run_eval_again(capsys, base):  # experiments/compare.py:167
    other = base.parent / "lr"
    works(capsys, "train", *FAST, "--set", "train.lr=0.01", "--out", other)
    (base / "metrics.json").write_text("{bad")
    err = refused(capsys, "run ebmlab eval", "compare", base, other)
    command = err.split("run ebmlab ")[1].split(" again")[0].split()
    works(capsys, *command)
    works(capsys, "compare", base, other)


# ---- the Python API ----------------------------------------------------------------------------------------------

def _x():
    return np.random.RandomState(0).randn(200, 2).astype("float32")


class _Lin(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.lin = torch.nn.Linear(dim, 1)

    def forward(self, x):
        return self.lin(x).squeeze(-1)


def test_api_data_as_method_pass_data(tmp_path, monkeypatch):  # api_config.py:37
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="pass your data as data="):
        ebmlab.train(_x(), out="o", **OWN, train=T, eval=E)
    assert ebmlab.train(data=_x(), out="o", **OWN, train=T, eval=E, evaluate=False) is not None


def test_api_energy_kwargs_give_the_energy(tmp_path, monkeypatch):  # api.py:295
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_Lin, "__module__", __name__)
    with pytest.raises(ConfigError, match=r"give the energy too \(energy=...\)"):
        ebmlab.train("hybrid", data=_x(), energy_kwargs={"dim": 2}, out="o", **OWN, train=T, eval=E)
    assert ebmlab.train("hybrid", data=_x(), energy=_Lin(2), energy_kwargs={"dim": 2}, out="o", **OWN, train=T,
                        evaluate=False) is not None


def test_api_resume_and_overwrite_pass_one(tmp_path, monkeypatch):  # api_data.py:299
    monkeypatch.chdir(tmp_path)
    ebmlab.train("hybrid", data=_x(), out="o", **OWN, train=T, evaluate=False)
    with pytest.raises(ConfigError, match="pass only one of them"):
        ebmlab.train("hybrid", data=_x(), out="o", **OWN, train=T, resume=True, overwrite=True, evaluate=False)
    assert ebmlab.train("hybrid", data=_x(), out="o", **OWN, train=T, overwrite=True, evaluate=False) is not None


def test_api_resume_with_other_rows_overwrite(tmp_path, monkeypatch):  # api_data.py:319
    monkeypatch.chdir(tmp_path)
    ebmlab.train("hybrid", data=_x(), out="o", **OWN, train=T, evaluate=False)
    with pytest.raises(DataError, match="give those rows, or start a new run"):
        ebmlab.train("hybrid", data=_x() + 1, out="o", **OWN, train={**T, "steps": 6}, resume=True, evaluate=False)
    assert ebmlab.train("hybrid", data=_x(), out="o", **OWN, train={**T, "steps": 6}, resume=True, evaluate=False)
    assert ebmlab.train("hybrid", data=_x() + 1, out="o", **OWN, train=T, overwrite=True, evaluate=False)


def test_api_images_in_memory_save_npy_and_name_npy(tmp_path, monkeypatch):  # api_data.py:57
    monkeypatch.chdir(tmp_path)
    imgs = np.random.RandomState(0).randint(0, 255, (30, 8, 8)).astype("uint8")
    with pytest.raises(DataError, match=r"overrides=\{'data.name': 'npy'\}"):
        ebmlab.train("hybrid", data=imgs, out="o", **OWN, train=T, evaluate=False)
    np.save(tmp_path / "imgs.npy", imgs)
    assert ebmlab.train("hybrid", data="imgs.npy", overrides={"data.name": "npy"}, out="o", config="default",
                        train=T, evaluate=False) is not None


def test_api_data_name_twice_give_one(tmp_path, monkeypatch):  # api_data.py:265
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="name two datasets: give one"):
        ebmlab.train("hybrid", data="spiral", overrides={"data.name": "rings"}, out="o", **OWN, train=T, evaluate=False)
    assert ebmlab.train("hybrid", data="spiral", out="o", **OWN, train=T, evaluate=False) is not None


def test_the_users_vectors_without_a_validation_split_train_without_checks(capsys, tmp_path, monkeypatch):
    # seen in the audit: --data FILE --set data.val_fraction=null was told "set data.val_fraction (e.g. 0.1) too", as
    # the user-data defaults still turned the validation checks on; a split turned off now turns them off too
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "d.npy", np.random.RandomState(0).randn(300, 2))
    works(capsys, "train", *FAST, "--data", "d.npy", "--set", "data.val_fraction=null", "--out", "o")
    assert "select_every: null" in (tmp_path / "o" / "config.yaml").read_text()
    assert not (tmp_path / "o" / "checkpoints" / "best.safetensors").exists()
