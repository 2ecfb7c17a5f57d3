"""Known answers for the configuration and the checkpoints (found missing by a mutation check, docs/testing.md,
round 14): the exact config an override list gives (types and values), each validation rule's last accepted and
first refused value (README "Bad input", the messages of ``config_checks.py``), which keys change the run hash and
which may change on ``--resume`` (README "Runs on disk"), the keyword arguments of ``ebmlab.train`` merged into a
config's sections, and a checkpoint of a few updates of the tiny default config restored into a fresh ``Trainer``
piece by piece (optimizer moments, step-size controllers, the persistent bank, every generator, the lr position,
the sidecar) and then giving the uninterrupted run's next update bit for bit."""
import json

import pytest
import torch

from ebmlab.api_config import raw_config
from ebmlab.config import apply_overrides, parse_override
from ebmlab.errors import ConfigError
from ebmlab.training import checkpoint as ckpt
from ebmlab.training.config import load_config, save_config
from ebmlab.training.loop import Trainer, prepare_run_dir
from ebmlab.training.run import check_resume_changes

TINY = ["train.steps=20", "train.batch_size=32", "train.checkpoint_every=1000", "train.log_every=1",
        "train.progress=false", "model.width=16", "model.depth=1", "method.n_steps=5",
        "method.n_steps_data=2", "data.n_train=500", "data.n_test=200", "train.threads=1"]
VAL = ["data.val_fraction=0.1", "train.select_every=5"]  # what every train.select_* rule needs first


# ----- overrides: the exact config an override list gives ------------------------------------------------------
def test_an_override_list_gives_these_values_with_these_types():
    cfg = load_config(None, ["train.steps=1e3", "train.lr=1", "train.grad_clip=", "data.path=a=b.npy",
                             "train.time_budget=1e4", "train.progress=no", "data.classes=[1, 2]",
                             "train.ema=null", "model.activation=gelu", "train.betas=[0, 0.5]"])
    # 1e3 on an int key is the integer 1000 (README: "1e-4 reads as a number"; a whole float becomes an int)
    assert cfg.train.steps == 1000 and type(cfg.train.steps) is int
    # an integer is a valid float value (train.lr=1 is one, not refused as "expects float")
    assert cfg.train.lr == 1 and not isinstance(cfg.train.lr, bool)
    # an empty value is null (no clipping), not the empty string
    assert cfg.train.grad_clip is None
    # only the first '=' separates key from value: a path may hold '='
    assert cfg.data.path.endswith("a=b.npy")
    # a positive exponent without a dot is a float too (YAML 1.2 reading), not the string '1e4'
    assert cfg.train.time_budget == 10000.0 and isinstance(cfg.train.time_budget, float)
    # YAML 1.1: no is false; lists stay lists; null turns the EMA off
    assert cfg.train.progress is False and cfg.data.classes == [1, 2] and cfg.train.ema is None
    assert cfg.model.activation == "gelu" and cfg.train.betas == [0, 0.5]


def test_parse_override_splits_at_the_first_equals_sign_and_reads_an_empty_value_as_null():
    # the key is section.key, the value the rest after the first '=' read as YAML
    assert parse_override("data.path=x=1") == (["data", "path"], "x=1")
    assert parse_override("train.grad_clip=") == (["train", "grad_clip"], None)
    # a value YAML cannot read is kept as the text given
    assert parse_override("data.path=x: y: z") == (["data", "path"], "x: y: z")


def test_an_override_changes_one_key_and_keeps_the_rest_of_its_section():
    raw = {"train": {"steps": 5, "lr": 0.1}, "model": {"width": 8}}
    # only train.lr changes; train.steps and the model section are kept as they were
    assert apply_overrides(raw, ["train.lr=0.2"]) == {"train": {"steps": 5, "lr": 0.2}, "model": {"width": 8}}
    # the input mapping is not changed (a new mapping is returned)
    assert raw["train"]["lr"] == 0.1


@pytest.mark.parametrize("override", ["train.steps=true", "train.batch_size=false", "train.lr=true",
                                      "data.seed=yes"])
def test_a_boolean_is_refused_for_a_number_key(override):
    # YAML true/false/yes are booleans; bool is an int subclass in Python, but a count or a rate is never true
    with pytest.raises(ConfigError, match="expects"):
        load_config(None, [override])


# ----- each validation rule's boundary: the last accepted and the first refused value --------------------------
ACCEPTED = [
    ["data.n_train=2", "train.batch_size=2"],                    # n_train at least 2 (a split needs two rows)
    ["data.n_train=300", "train.batch_size=300"],                # batch_size <= n_train: equal is fine
    ["data.val_fraction=0.49", "train.select_every=5"],          # val_fraction in (0, 0.5)
    VAL + ["train.select_window=3"],                             # odd windows
    VAL + ["train.select_draws=2", "train.select_window=1"],     # draws > 1 with a window of one check
    VAL + ["train.select_start=true", "train.select_margin=0"],  # margin >= 0
    ["train.betas=[0, 0.999]"],                                  # betas in [0, 1)
    [f"train.seed={2**62 - 1}", f"data.seed={2**62 - 1}"],       # seeds in [0, 2^62)
    ["train.ema=0"], ["train.ema=0.9999"],                       # ema in [0, 1)
    ["train.lr_schedule=cosine_restarts", "train.lr_restart_steps=1"],
    ["eval.grid_size=2"], ["eval.grid_size=4096"],               # grid in [2, 4096]
    ["eval.n_samples=100000000"], ["train.threads=256"], ["data.image_size=8192"],  # the caps themselves
    ["data.channels=1"], ["data.channels=3"],
    ["data.whiten=true", "data.standardize=true"],
    ["model.base=gmm", "method.name=persistent"],                # paper 004's schemes fit the mixture
    ["train.lr_decay_factor=1e-9"], ["train.keep_checkpoints=0"], ["train.time_budget=0.001"],
    ["train.weight_decay=0"],
    ["method.lam=0", "method.energy_l2=0", "method.refresh_prob=1"], ["method.refresh_prob=0"],  # the methods' own
    ["method.name=cdrl", "method.denoise_coef=0", "method.ebm_warmup=0", "method.init_warmup=0", "method.embed_dim=2"],
]
REFUSED = [
    (["data.n_train=1", "train.batch_size=1"], "data.n_train must be at least 2"),
    (["data.n_train=300", "train.batch_size=301"], "must not exceed data.n_train"),
    (["data.val_fraction=0.5", "train.select_every=5"], "val_fraction"),
    (VAL + ["train.select_window=2"], "odd integer"),
    (VAL + ["train.select_draws=2", "train.select_window=3"], "set one of them"),
    (VAL + ["train.select_start=true", "train.select_margin=-0.01"], "select_margin"),
    (["train.select_every=5"], "set data.val_fraction"),
    (["train.betas=[0.9, 1]"], "betas"),
    ([f"train.seed={2**62}"], "train.seed"), ([f"data.seed={2**62}"], "data.seed"),
    (["train.ema=1.0"], "train.ema"),
    (["train.lr_schedule=cosine_restarts", "train.lr_restart_steps=0"], "lr_restart_steps > 0"),
    (["eval.grid_size=1"], "grid_size must be at least 2"), (["eval.grid_size=4097"], "at most"),
    (["eval.n_samples=100000001"], "at most"), (["train.threads=257"], "at most"),
    (["data.image_size=8193"], "at most"),
    (["data.channels=2"], "data.channels must be 1 or 3"),
    (["data.whiten=true", "data.standardize=false"], "needs data.standardize"),
    (["train.lr_decay_factor=0"], "lr_decay_factor positive"),
    (["train.keep_checkpoints=-1"], "keep_checkpoints must be non-negative"),
    (["train.time_budget=0"], "time_budget must be positive"),
    (["train.weight_decay=-1e-9"], "weight_decay must be non-negative"),
    (VAL + ["model.base=gmm", "train.select_start=true", "train.select_likelihood=true", "train.select_window=3"],
     "select_likelihood"),
    # the methods' own keys (they trained silently, or failed at the first step)
    (["method.lam=-0.01"], "method.lam must be non-negative"),
    (["method.energy_l2=-1e-9"], "method.energy_l2 must be non-negative"),
    (["method.refresh_prob=1.01"], r"method.refresh_prob must be in \[0, 1\]"),
    (["method.buffer_size=0"], "method.buffer_size must be positive"),
    (["method.adapt_rate=0"], "method.adapt_rate must be positive"),
    (["method.adaptive_c=0"], "method.adaptive_c must be positive"),
    (["method.name=cdrl", "method.embed_dim=33"], "method.embed_dim .* must be even"),
    (["method.name=cdrl", "method.denoise_coef=-1"], "method.denoise_coef must be non-negative"),
    (["method.name=cdrl", "method.ebm_warmup=-5"], "method.ebm_warmup must be non-negative"),
]


@pytest.mark.parametrize("overrides", ACCEPTED, ids=lambda o: " ".join(o))
def test_the_last_accepted_value_of_each_rule_validates(overrides):
    # each is on the accepted side of its rule's boundary (README "Bad input", config_checks.py's messages)
    load_config(None, overrides)


@pytest.mark.parametrize("overrides,match", REFUSED, ids=lambda o: " ".join(o) if isinstance(o, list) else "")
def test_the_first_refused_value_of_each_rule_is_refused_by_that_rule(overrides, match):
    # one step past each boundary, refused with the sentence of that rule (not some other one)
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_the_mixture_base_is_refused_for_every_method_that_does_not_fit_it():
    from ebmlab.config_checks import MIXTURE_BASE_METHODS
    from ebmlab.training.config import method_configs
    others = sorted(set(method_configs()) - set(MIXTURE_BASE_METHODS))
    assert others  # papers 000-003's methods
    for name in others:
        # model.base gmm is fitted by paper 004's objectives only; no other method is let through
        with pytest.raises(ConfigError, match="fitted by paper 004's objectives"):
            load_config(None, ["model.base=gmm", f"method.name={name}"])


# ----- the run hash: what changes it and what must not ---------------------------------------------------------
def _hash(overrides):
    return load_config(None, overrides).run_hash()


@pytest.mark.parametrize("override", ["train.seed=1", "train.lr=0.002", "method.lam=6", "model.width=64",
                                      "data.seed=7", "data.jitter=0.3", "train.select_start=true",
                                      "train.batch_size=128", "data.whiten=true"])
def test_a_key_that_changes_training_changes_the_run_hash(override):
    # every key outside MUTABLE_KEYS changes what a checkpoint holds, so its fingerprint must differ;
    # data.jitter and select_start are keys added later: left out only at their old value (None, false)
    assert _hash([override]) != _hash([])


@pytest.mark.parametrize("override", ["train.steps=10", "train.progress=false", "train.log_every=3",
                                      "train.checkpoint_every=7", "train.keep_checkpoints=2", "train.sample_every=4",
                                      "train.time_budget=60", "eval.n_samples=10", "eval.plots=false",
                                      "eval.grid_size=40"])
def test_a_key_a_resumed_run_may_change_leaves_the_run_hash_alone(override):
    # README: --resume --set may change these; the checkpoints of the run must still match its config.yaml
    assert _hash([override]) == _hash([])


def test_the_full_hash_sees_the_mutable_keys_the_run_hash_leaves_out():
    # Config.hash() is over the whole config: eval.n_samples changes it, though not the run hash
    a, b = load_config(None, []), load_config(None, ["eval.n_samples=10"])
    assert a.run_hash() == b.run_hash() and a.hash() != b.hash()


# ----- --resume: which keys may change ---------------------------------------------------------------------------
def _stored(tmp_path, overrides):
    save_config(load_config(None, overrides), tmp_path / "config.yaml")
    return tmp_path


@pytest.mark.parametrize("override,changed", [("train.progress=false", "train.progress"),
                                              ("eval.n_samples=10", "eval.n_samples"),
                                              ("train.steps=30", "train.steps")])
def test_resume_accepts_a_mutable_key_and_reports_the_change(tmp_path, override, changed):
    # README "Resume": train.steps, train.progress and eval.* may change; the change is returned for the record
    run = _stored(tmp_path, [])
    assert list(check_resume_changes(run, load_config(None, [override]))) == [changed]


@pytest.mark.parametrize("override", ["train.seed=1", "method.lam=6", "model.width=64"])
def test_resume_refuses_a_key_the_checkpoints_were_trained_with(tmp_path, override):
    run = _stored(tmp_path, [])
    with pytest.raises(ConfigError, match=f"--resume cannot change {override.split('=')[0]}"):
        check_resume_changes(run, load_config(None, [override]))


def test_resume_refuses_new_steps_for_a_cosine_run_but_not_for_a_constant_one(tmp_path):
    # a cosine decay is laid out over train.steps: more steps would make the lr jump back up
    (tmp_path / "c").mkdir()
    run = _stored(tmp_path / "c", ["train.lr_schedule=cosine"])
    with pytest.raises(ConfigError, match="cosine"):
        check_resume_changes(run, load_config(None, ["train.lr_schedule=cosine", "train.steps=30"]))
    (tmp_path / "k").mkdir()
    run = _stored(tmp_path / "k", [])
    assert "train.steps" in check_resume_changes(run, load_config(None, ["train.steps=30"]))


# ----- ebmlab.train's keywords merged into a config ---------------------------------------------------------------
def test_train_keywords_change_their_keys_and_keep_the_rest_of_the_config():
    base = {"method": {"name": "hybrid", "lam": 7.0}, "train": {"steps": 5, "lr": 0.01}}
    # method= of a scheme sharing hybrid's config class keeps the config's method keys (lam 7)
    raw = raw_config(base, "persistent", {"train": {"batch_size": 8}}, {"train.seed": 3})
    assert raw["method"] == {"name": "persistent", "lam": 7.0}
    # a section keyword and a mapping override each change their keys only: steps and lr are kept
    assert raw["train"] == {"steps": 5, "lr": 0.01, "batch_size": 8, "seed": 3}
    # a method with another config class starts from its own defaults (hybrid's keys would be unknown there),
    # with a warning naming the dropped keys
    with pytest.warns(UserWarning, match=r"settings \(lam\) do not apply"):
        assert raw_config(base, "improved_cd", {}, None)["method"] == {"name": "improved_cd"}


# ----- checkpoints: each stored piece, then the next update bit for bit ------------------------------------------
def _trainer(run_dir, overrides, resume=False):
    cfg = load_config(None, TINY + overrides)
    lock = prepare_run_dir(run_dir, cfg, resume=resume, overwrite=False)
    lock.release()
    return Trainer(cfg, run_dir)


def _optim_tensors(opt):
    return {(pid, k): v.clone() for pid, st in opt.state_dict()["state"].items() for k, v in st.items()
            if torch.is_tensor(v)}


@pytest.mark.parametrize("scheme", ["hybrid", "persistent"])
def test_a_checkpoint_restores_every_piece_and_the_next_update_bit_for_bit(tmp_path, scheme):
    extra = [f"method.name={scheme}", "train.warmup_steps=5", "data.jitter=0.1"]
    a = _trainer(tmp_path, extra)
    for _ in range(3):
        a.train_step()
    a.save()
    saved = {"model": {k: v.clone() for k, v in a.objective.state_dict().items()},
             "optim": _optim_tensors(a.optimizer), "data": a.g_data.get_state(), "obj": a.g_obj.get_state(),
             "torch": torch.get_rng_state()}
    next_a = a.train_step()  # the uninterrupted run's 4th update
    after_a = {k: v.clone() for k, v in a.objective.state_dict().items()}

    b = _trainer(tmp_path, extra, resume=True)
    torch.rand(7)  # whatever the new process drew before resuming, the checkpoint's global stream comes back
    b.resume()
    # the step: 3 updates were taken, so the lr schedule resumes in its warm-up at step 3 (lr x 4/5 next)
    assert b.step == 3
    # the optimizer's moments and step counts, each parameter's own
    got = _optim_tensors(b.optimizer)
    assert set(got) == set(saved["optim"]) and any(k[1] == "exp_avg_sq" for k in got)
    for key, v in saved["optim"].items():
        assert torch.equal(got[key], v), key
    # weights, the step-size controllers' log-steps (adapted away from the start), the bank of the persistent chains
    state = b.objective.state_dict()
    for k, v in saved["model"].items():
        assert torch.equal(state[k], v), k
    logs = [k for k in state if k.endswith("log_step")]
    start = torch.tensor(b.cfg.method.step_size).log()
    assert logs and any(not torch.allclose(state[k], start.expand_as(state[k])) for k in logs)
    if scheme == "persistent":
        assert torch.equal(b.objective.bank.data, saved["model"]["bank.data"])
    # every random stream: batch indices and jitter, chain noise, torch's global generator
    assert torch.equal(b.g_data.get_state(), saved["data"])
    assert torch.equal(b.g_obj.get_state(), saved["obj"])
    assert torch.equal(torch.get_rng_state(), saved["torch"])
    next_b = b.train_step()
    # the same 4th update: loss, lr (warm-up position 4/5), and every weight and buffer after it
    assert next_b["loss"] == next_a["loss"] and next_b["lr"] == next_a["lr"] == pytest.approx(1e-3 * 4 / 5)
    for k, v in after_a.items():
        assert torch.equal(b.objective.state_dict()[k], v), k


def test_the_sidecar_holds_the_step_the_run_hash_the_config_and_the_optimizer(tmp_path):
    t = _trainer(tmp_path, [])
    for _ in range(2):
        t.train_step()
    t.save()
    path = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    meta = json.loads(path.with_suffix(".json").read_text())
    # README "Runs on disk": step, config hash (the run hash, so --resume --set steps=... still matches), EMA, size
    assert meta["step"] == 2 and path.name == "step_00000002.safetensors"
    assert meta["config_hash"] == t.cfg.run_hash() != t.cfg.hash()
    assert meta["config"] == t.cfg.to_dict() and meta["ema_updates"] == 2 and meta["world_size"] == 1
    assert meta["tensor_bytes"] == path.stat().st_size and meta["tensor_file"] == path.name
    assert meta["threads"] == torch.get_num_threads() and meta["optimizer"]["param_groups"]
    tensors, _ = ckpt.load_checkpoint(path)
    # the RNG states and the optimizer moments travel in the tensor file
    assert {"rng.data", "rng.objective", "rng.torch"} <= set(tensors)
    assert any(k.startswith("optim.") and k.endswith(".exp_avg_sq") for k in tensors)


def test_a_checkpoint_with_nan_in_its_optimizer_state_is_refused(tmp_path):
    t = _trainer(tmp_path, [])
    t.train_step()
    tensors, meta = t.state()
    key = next(k for k in tensors if k.startswith("optim.") and k.endswith("exp_avg"))
    tensors[key] = tensors[key].clone().fill_(float("nan"))
    path = ckpt.save_checkpoint(tmp_path / "checkpoints", 1, tensors, meta)
    loaded, _ = ckpt.load_checkpoint(path)
    # README "Nothing silent": NaN in the optimizer's moments would poison every later update
    with pytest.raises(ckpt.CheckpointError, match=key.replace(".", r"\.")):
        ckpt.check_finite(loaded, path, ckpt.finite_names(t.objective))


def test_a_resume_to_exactly_the_checkpoints_step_is_accepted(tmp_path):
    t = _trainer(tmp_path, ["train.steps=2"])
    t.fit()
    b = _trainer(tmp_path, ["train.steps=2"], resume=True)
    # train.steps equal to the step reached: nothing left to train, but not an error (only fewer steps are)
    b.resume()
    assert b.step == 2



def test_a_tensor_file_without_its_sidecar_is_not_a_checkpoint(tmp_path):
    t = _trainer(tmp_path, [])
    t.train_step()
    t.save()
    d = tmp_path / "checkpoints"
    (d / "step_00000009.safetensors").write_bytes((d / "step_00000001.safetensors").read_bytes())
    # the sidecar is written last: a tensor file alone is a write that never finished, so step 1 is the newest
    assert [s for s, _ in ckpt.list_checkpoints(d)] == [1]
    assert ckpt.latest_checkpoint(d).name == "step_00000001.safetensors"


@pytest.mark.parametrize("key,value", [("step", "1"), ("ema_updates", True), ("config_hash", 5), ("optimizer", [])])
def test_a_sidecar_field_of_the_wrong_json_type_is_refused(tmp_path, key, value):
    t = _trainer(tmp_path, [])
    t.train_step()
    t.save()
    path = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, key: value}))
    # a string step, a boolean count (bool is an int in Python), a number for the hash, a list for the optimizer
    with pytest.raises(ckpt.CheckpointError, match=f"malformed {key!r}"):
        ckpt.load_checkpoint(path)


def test_a_sidecar_hash_of_another_config_is_refused_and_the_runs_own_accepted(tmp_path):
    from ebmlab.training.run import check_config_hash
    cfg = load_config(None, TINY)
    # README: the sidecar's hash is compared with config.yaml on every load; the run's own (or its full hash) passes
    check_config_hash({"config_hash": cfg.run_hash()}, cfg, tmp_path / "step_00000001.safetensors")
    check_config_hash({"config_hash": cfg.hash()}, cfg, tmp_path / "step_00000001.safetensors")
    other = load_config(None, TINY + ["train.seed=1"])
    with pytest.raises(ckpt.CheckpointError, match="another config"):
        check_config_hash({"config_hash": other.run_hash()}, cfg, tmp_path / "step_00000001.safetensors")


def test_ebmlab_trains_config_makes_a_relative_data_path_absolute(tmp_path, monkeypatch):
    from ebmlab.api_config import validated
    monkeypatch.chdir(tmp_path)
    # README "Self-contained": config.yaml holds the data path made absolute (against the current directory)
    cfg = validated({"data": {"name": "array", "path": "rows.npy"}})
    assert cfg.data.path == str(tmp_path / "rows.npy")


def test_a_stored_ais_run_without_ais_resample_ran_without_resampling():
    from ebmlab.config_hash import stored_run_defaults
    # AIS runs before issue 18 never resampled: a missing or null ais_resample is filled in as 0.0
    raw = {"method": {"noise_chain": "ais", "ais_resample": None}}
    assert stored_run_defaults(raw)["method"]["ais_resample"] == 0.0
    assert stored_run_defaults({"method": {"noise_chain": "ais"}})["method"]["ais_resample"] == 0.0
    # a value the run stored is its own; a short-run chain gets nothing filled in
    assert stored_run_defaults({"method": {"noise_chain": "ais", "ais_resample": 0.5}})["method"]["ais_resample"] == 0.5
    assert "ais_resample" not in stored_run_defaults({"method": {"noise_chain": "short_run"}})["method"]
    assert raw["method"]["ais_resample"] is None  # the input is not changed
