"""Round 29: the settings a researcher types (``--set``, config files, ``ebmlab.train``'s mappings).

Each test checks one behaviour with ``load_config`` / ``from_dict`` / ``parse_override`` and the checks of
``ebmlab.config_checks`` (no training); a read-only helper's audit, docs/testing.md "Twenty-ninth round". Tests
marked ``# WAS A BUG`` failed on the code they were written against (commit ``422feac``) and pass with its fixes."""
import numpy as np
import pytest

from ebmlab.config import parse_override
from ebmlab.config_checks import check_new_run
from ebmlab.errors import ConfigError
from ebmlab.training.config import from_dict, load_config, save_config


def _file(tmp_path, data: bytes, name="c.yaml"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


# ----- YAML 1.1 spellings read as something else ----------------------------------------------------------------
# WAS A BUG: `010` is read as octal 8 (YAML 1.1 int resolver inherited by config_files._Loader, config_files.py:36/66);
# YAML 1.2 and every user read 10. ebmlab already reads 1e-4 the YAML 1.2 way (config_files.py:24).
def test_a_leading_zero_integer_is_not_read_as_octal():
    try:
        cfg = load_config(None, ["train.steps=010"])
    except ConfigError:
        return  # refusing the ambiguous spelling in one sentence is fine too
    assert cfg.train.steps == 10


# WAS A BUG: `1:30` is read as base 60 (90) by the YAML 1.1 int resolver (config_files.py:36/66); YAML 1.2 reads a string.
def test_a_colon_number_in_a_file_is_not_read_as_base_60(tmp_path):
    p = _file(tmp_path, b"train:\n  steps: 1:30\n")
    with pytest.raises(ConfigError):
        load_config(p)


# WAS A BUG: a ' #' inside a --set value starts a YAML comment, so the rest of a path is dropped without a word
# (config.py:341, parse_override reads the value as YAML); the shell already quoted it as one argument.
def test_a_hash_inside_a_set_value_is_not_dropped():
    try:
        _, value = parse_override("data.path=/data/exp #2/x.npy")
    except ConfigError:
        return
    assert value == "/data/exp #2/x.npy"


# WAS A BUG: `&x` is a YAML anchor on an empty node, read as null: train.ema=&x turns the EMA off silently
# (config_files._Loader refuses aliases, config_files.py:37, but not anchors; config.py:341).
def test_an_anchor_in_a_set_value_is_not_read_as_null():
    with pytest.raises(ConfigError):
        load_config(None, ["train.ema=&x"])


# ----- values from Python (ebmlab.train's mappings) ----------------------------------------------------------
# WAS A BUG: np.float64 / np.str_ pass the type check (float / str subclasses, config.py:254-267) and are kept as they are;
# save_config's yaml.safe_dump (config.py:374) then raises yaml's RepresenterError, a raw traceback out of
# ebmlab.train(train={"lr": np.float64(1e-3)}) after the run directory was made.
@pytest.mark.parametrize("section, key, value", [("train", "lr", np.float64(1e-3)),
                                                 ("method", "step_size", np.float64(0.02)),
                                                 ("train", "device", np.str_("cpu"))])
def test_numpy_scalars_accepted_by_the_config_can_be_saved(tmp_path, section, key, value):
    cfg = from_dict({section: {key: value}})
    save_config(cfg, tmp_path / "config.yaml")  # raises yaml.representer.RepresenterError today
    assert getattr(load_config(tmp_path / "config.yaml"), section).__dict__[key] == value


# WAS A BUG: a NumPy integer (np.arange, a sweep) is refused for an int key, "expects int, got np.int64(5)"
# (config.py:262-263 isinstance(value, int)), though config_checks.check_integer (config_checks.py:29) takes NumPy
# integers for the API's own arguments; np.float32 and np.bool_ likewise.
@pytest.mark.parametrize("section, key, value", [("train", "steps", np.int64(5)), ("model", "width", np.int32(16)),
                                                 ("train", "lr", np.float32(0.5)), ("train", "amp", np.bool_(True))])
def test_numpy_scalars_are_read_as_their_python_values(section, key, value):
    cfg = from_dict({section: {key: value}})
    assert getattr(cfg, section).__dict__[key] == value.item()


# WAS A BUG: a tuple, torch's own spelling of Adam's betas, is refused as "expects list" (config.py:267).
def test_betas_as_a_tuple_are_accepted():
    assert from_dict({"train": {"betas": (0.9, 0.99)}}).train.betas == [0.9, 0.99]


# ----- values that break later instead of at the start ----------------------------------------------------------
# WAS A BUG: an integer beyond int64 is accepted (no upper bound, config.py:287-291, config_checks._validate_model); the
# trainer then dies in torch.empty with a C++ traceback ("Overflow when unpacking long long").
def test_an_integer_beyond_int64_is_refused_at_the_start():
    with pytest.raises(ConfigError):
        load_config(None, [f"model.width={2 ** 70}"])


# WAS A BUG: an int too large for a float passes as a float key (config.py:260-261; check_finite, config_checks.py:40,
# looks at floats only); update 1 then raises OverflowError in training/loop.py:109 (set_lr).
def test_an_integer_too_large_for_a_float_is_refused_for_a_float_key():
    with pytest.raises(ConfigError):
        load_config(None, [f"train.lr={10 ** 400}"])


# WAS A BUG: model.base_std=1e-300 passes "> 0" (config_checks.py, _validate_model) but 0.5 / base_std**2 divides by an
# underflowed zero: ZeroDivisionError traceback when the energy is built (energies/mlp.py:84).
def test_a_base_std_whose_square_underflows_is_refused_at_the_start():
    with pytest.raises(ConfigError):
        load_config(None, ["model.base_std=1e-300"])


# WAS A BUG: paper 003's initializer sizes are not checked (objectives/recovery.py RecoveryConfig.validate, recovery.py:100); init_width=0
# passes load_config and fails when the network is built, naming "width" (model.width?) instead of method.init_width.
def test_cdrl_initializer_width_zero_is_refused_by_the_config():
    with pytest.raises(ConfigError, match="init_width"):
        load_config(None, ["method.name=cdrl", "method.init_width=0"])


# ----- settings accepted and ignored ----------------------------------------------------------------------------
# WAS A BUG: lr_schedule step with the default lr_decay_steps 0 trains at a constant lr (training/loop.py:100 falls
# through); config_checks.py:248-249 refuses the same gap for cosine_restarts only.
def test_a_step_schedule_without_decay_steps_is_refused():
    with pytest.raises(ConfigError, match="lr_decay_steps"):
        load_config(None, ["train.lr_schedule=step"])


# WAS A BUG: the train.select_* keys do nothing without train.select_every (training/loop.py:137-140 builds no Selector);
# config_checks.inert_settings (config_checks.py:89) covers data/model keys only. (A fix must not refuse the
# USER_DATA_DEFAULTS that --data adds when the user sets train.select_every=null.)
def test_a_selection_key_without_select_every_is_refused_for_a_new_run():
    cfg = load_config(None, ["train.select_draws=5"])
    with pytest.raises(ConfigError, match="select_every"):
        check_new_run(cfg)


# WAS A BUG: a section given as a false-y scalar (0, false, '', []) is read as an empty section (config.py:315,
# `raw.get(k) or {}`), while `train: 5` is refused as "must be a mapping".
@pytest.mark.parametrize("text", [b"train: 0\n", b"train: false\n", b"method: []\n"])
def test_a_falsy_scalar_section_is_refused_like_any_scalar(tmp_path, text):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_file(tmp_path, text))


# WAS A BUG: an invisible character in a key is printed as is (config.py:286, f"{where}.{key}"): "unknown config key
# train.steps\u200b; valid keys ... steps" reads as if steps were refused.
def test_an_unknown_key_with_an_invisible_character_is_shown_escaped(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(_file(tmp_path, "train:\n  steps\u200b: 7\n".encode()))
    assert "\u200b" not in str(info.value) and "200b" in str(info.value)


# ----- behaviours verified right (not pinned elsewhere) ---------------------------------------------------------
def test_a_utf8_bom_and_crlf_line_ends_are_read(tmp_path):
    cfg = load_config(_file(tmp_path, "\ufefftrain:\r\n  steps: 7\r\n  amp: on\r\n".encode()))
    assert cfg.train.steps == 7 and cfg.train.amp is True


def test_an_empty_file_and_a_comment_only_file_give_the_defaults(tmp_path):
    assert load_config(_file(tmp_path, b"", "a.yaml")).to_dict() == load_config(None).to_dict()
    assert load_config(_file(tmp_path, b"# nothing\n", "b.yaml")).to_dict() == load_config(None).to_dict()


def test_a_json_config_file_is_read(tmp_path):
    cfg = load_config(_file(tmp_path, b'{"train": {"steps": 7, "lr": 1e-3}}', "c.json"))
    assert cfg.train.steps == 7 and cfg.train.lr == 1e-3


@pytest.mark.parametrize("text, match", [(b"- 1\n- 2\n", "mapping of sections"),
                                         (b"train:\n  steps: 7\n  steps: 8\n", "twice"),
                                         (b"train:\n  steps: 7\ntrain:\n  lr: 0.1\n", "twice"),
                                         (b"train:\n  amp: true\n  amp: yes\n", "twice"),
                                         (b"x: &t {steps: 7}\ntrain:\n  <<: *t\n", "alias"),
                                         (b"train:\n\tsteps: 7\n", "line 2, column 1"),
                                         (b"train:\n  steps: 7\n---\ntrain:\n  steps: 8\n", "another document"),
                                         (b"train:\n  steps: !!python/object:os.system 1\n", "not valid YAML"),
                                         ("train:\n  steps: 7\n".encode("utf-16"), "not UTF-8")])
def test_bad_config_files_are_one_sentence(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_file(tmp_path, text))


def test_a_deeply_nested_file_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="recursion"):
        load_config(_file(tmp_path, b"train: " + b"[" * 2000 + b"]" * 2000 + b"\n"))


def test_an_alias_in_a_set_value_is_refused():
    with pytest.raises(ConfigError, match="alias"):
        load_config(None, ["train.ema=*x"])


@pytest.mark.parametrize("override", ["train.lr=.nan", "train.lr=.inf", "train.lr=1e400", "train.betas=[0.9, .nan]",
                                      "method.step_size=-.inf"])
def test_non_finite_numbers_are_refused(override):
    with pytest.raises(ConfigError, match="finite"):
        load_config(None, [override])


@pytest.mark.parametrize("override, match", [("train.steps=2.5", "expects int"), ("train.steps=1e30", "expects int"),
                                             ("train.amp=1", "expects bool"), ("train.amp=y", "expects bool"),
                                             ("train.steps=[5]", "expects int"), ("train.lr=nan", "expects float"),
                                             ("train.betas=0.9,0.999", "expects list"),
                                             ("data.classes=[true]", "non-negative integer"),
                                             ("train.seed=4611686018427387904", "2\\^62")])
def test_wrongly_typed_set_values_are_one_sentence(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_the_last_of_two_sets_of_one_key_wins():
    assert load_config(None, ["train.steps=5", "train.steps=7"]).train.steps == 7


def test_spaces_around_the_equals_sign_and_a_spaced_comment_are_ignored():
    cfg = load_config(None, ["train.steps =5", "train.lr= 0.01 # tuned", "train.device=cpu "])
    assert cfg.train.steps == 5 and cfg.train.lr == 0.01 and cfg.train.device == "cpu"


@pytest.mark.parametrize("override, match", [("train.steps", "key=value"), ("train..steps=5", "section.key"),
                                             ("train.steps.x=5", "section.key"), ("=5", "section.key"),
                                             ("Train.steps=5", "unknown config section"),
                                             ("train.Steps=5", "valid keys")])
def test_malformed_set_keys_are_one_sentence(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_another_methods_key_is_refused_with_this_methods_keys():
    with pytest.raises(ConfigError, match="valid keys in 'method' are: name, T,"):
        load_config(None, ["method.name=cdrl", "method.lam=5"])
