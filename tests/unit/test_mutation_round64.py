"""Mutation round 64 (docs/testing.md "A thirteenth mutation round"): known answers for what the earlier rounds left
unchecked in the Python API's modules ``api.py``, ``api_catalog.py``, ``api_data.py``, ``api_energy.py`` and
``api_config.py``. Each expected value is written down from a docstring's or README's promise; no training."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ebmlab.api_config import absolute_data_path, raw_config
from ebmlab.api_energy import check_custom_model_settings, check_no_model_settings, energy_record, model_keys
from ebmlab.errors import ConfigError, DataError


class SmallEnergy(nn.Module):
    """A module-level energy (B, dim) -> (B,), its constructor argument kept as an attribute."""

    def __init__(self, dim: int = 2, scale: float = 1.0):
        super().__init__()
        self.dim, self.scale = dim, scale
        self.lin = nn.Linear(dim, 1)

    def forward(self, x):
        return self.scale * self.lin(x).squeeze(-1)


class ShadowedEnergy(nn.Module):
    """Rebound below: importing ``module:ShadowedEnergy`` gives the other class."""

    def __init__(self, dim: int = 2):
        super().__init__()
        self.dim = dim
        self.lin = nn.Linear(dim, 1)

    def forward(self, x):
        return self.lin(x).squeeze(-1)


FIRST_SHADOWED = ShadowedEnergy


class ShadowedEnergy(FIRST_SHADOWED):  # noqa: F811 (the point: the same name, another class)
    """What ``module:ShadowedEnergy`` imports now."""


# ----- api_config.py ---------------------------------------------------------------------------------------------
def test_raw_config_deep_copies_a_mapping_of_plain_values():
    # "a deep copy of plain values": the caller's nested mappings are not the result's, and a Path becomes its text
    # (kills: raw = dict(config), no JSON round trip)
    given = {"model": {"kwargs": {"dim": 2}}, "data": {"path": Path("/some/where/x.npy")}}
    raw = raw_config(given, None, {}, None)
    assert raw["data"]["path"] == "/some/where/x.npy" and isinstance(raw["data"]["path"], str)
    raw["model"]["kwargs"]["dim"] = 5
    assert given["model"]["kwargs"]["dim"] == 2


def test_raw_config_section_keyword_none_is_no_section():
    # train=None (a keyword left at None) adds nothing; only a non-mapping is refused (kills: the None skip dropped)
    assert raw_config(None, None, {"train": None, "eval": None}, None) == {}
    with pytest.raises(ConfigError, match="train= must be a mapping"):
        raw_config(None, None, {"train": 5}, None)


@pytest.mark.parametrize("key", ["train", ".steps", "train."])
def test_raw_config_override_key_without_a_dot_is_refused(key):
    # "an override key must be section.key" (kills: `if not sec or not k` -> `if not sec`)
    with pytest.raises(ConfigError, match="section.key"):
        raw_config(None, None, {}, {key: 5})


def test_absolute_data_path_expands_the_home_directory():
    # "A relative data.path, or one starting with ~, made absolute": ~ is the home directory, not a folder named ~
    # in the current directory (kills: expanduser dropped)
    cfg = SimpleNamespace(data=SimpleNamespace(path="~/some_data_dir/x.npy"))
    absolute_data_path(cfg)
    assert cfg.data.path == str(Path.home() / "some_data_dir" / "x.npy")


# ----- api_energy.py ---------------------------------------------------------------------------------------------
def test_energy_record_refuses_a_class_that_its_name_does_not_import():
    # "energy class ... is not what importing that name gives" (kills: the import_target check dropped)
    with pytest.raises(ConfigError, match="is not what importing that name gives"):
        energy_record(FIRST_SHADOWED(2), None)
    assert energy_record(ShadowedEnergy(2), None)["kwargs"] == {"dim": 2}


def test_energy_record_refuses_nan_in_energy_kwargs():
    # JSON values: NaN is not one (config.yaml / json could not hold it) (kills: allow_nan=False dropped)
    with pytest.raises(ConfigError, match="must be JSON values"):
        energy_record(SmallEnergy(2), {"dim": 2, "scale": float("nan")})
    assert energy_record(SmallEnergy(2), {"dim": 2, "scale": 0.5})["kwargs"] == {"dim": 2, "scale": 0.5}


def test_model_keys_strip_spaces_as_apply_overrides_does():
    # "as apply_overrides reads them: spaces stripped" (kills: no strip)
    assert model_keys([" model.width", "model.depth ", "train.steps"]) == ["width", "depth"]
    with pytest.raises(ConfigError, match="width"):
        check_no_model_settings({}, [" model.width=3"])


def test_custom_model_settings_allow_name_target_and_kwargs():
    # --set model.name=custom: "other model.* settings beside target and kwargs are refused" (kills: kwargs not allowed)
    check_custom_model_settings(["model.name=custom", "model.target=m:C", "model.kwargs={dim: 2}"])
    with pytest.raises(ConfigError, match=r"\(width\)"):
        check_custom_model_settings(["model.name=custom", "model.target=m:C", "model.width=3"])


def test_custom_model_settings_apply_only_to_model_name_custom():
    # the refusal is for model.name=custom; ebmlab's own networks take their settings (kills: any model.name counts)
    check_custom_model_settings(["model.name=mlp", "model.width=3"])
    check_custom_model_settings(["model.name = resnet", "model.base=32"])


def test_init_kwargs_leave_out_an_attribute_that_is_no_json_value():
    # an argument with a default whose attribute is not a JSON value (NaN) is left out, the default rebuilding it
    # (kills: _init_kwargs' json.dumps without allow_nan=False, which kept NaN and refused the energy)
    e = SmallEnergy(2)
    e.scale = float("nan")
    assert energy_record(e, None)["kwargs"] == {"dim": 2}


def test_model_section_keyword_is_refused_with_an_energy():
    # "model= settings and model.* overrides are refused with it" (kills: the model= mapping not read)
    with pytest.raises(ConfigError, match=r"\(depth, width\)"):
        check_no_model_settings({"model": {"width": 3, "depth": 2}}, None)
    check_no_model_settings({"model": None, "train": {"steps": 3}}, ["train.steps=4"])


def test_one_model_override_given_as_a_string_is_refused_with_an_energy():
    # overrides may be one string (api_config reads "train.steps=5" alone); a model.* one is refused as in a list
    # (kills: the string iterated character by character)
    with pytest.raises(ConfigError, match=r"\(width\)"):
        check_no_model_settings({}, "model.width=3")


def test_check_rebuilds_refuses_kwargs_that_build_other_parameters():
    # "The recorded class and kwargs must rebuild a network with the parameters of energy" (kills: the check dropped)
    from ebmlab.api_energy import check_rebuilds

    target = f"{SmallEnergy.__module__}:SmallEnergy"
    cfg = SimpleNamespace(model=SimpleNamespace(target=target, kwargs={"dim": 3}))
    with pytest.raises(ConfigError, match="does not rebuild the energy you passed"):
        check_rebuilds(cfg, SmallEnergy(2))
    check_rebuilds(SimpleNamespace(model=SimpleNamespace(target=target, kwargs={"dim": 2})), SmallEnergy(2))


def test_start_from_names_the_methods_own_arguments_in_its_warning():
    # the method built the class with dim=3 (its own argument); the warning names those arguments, dim=3, not the
    # ones that agree with the user's instance (kills: `!= v` -> `== v` in start_from)
    from ebmlab.api_energy import start_from

    built = SmallEnergy(3)
    trainer = SimpleNamespace(objective=nn.ModuleList([built]), cfg=SimpleNamespace(method=SimpleNamespace(name="toy")),
                              ema=None)
    before = {k: v.clone() for k, v in built.state_dict().items()}
    with pytest.warns(UserWarning, match=r"toy builds SmallEnergy with arguments of its own \(dim=3\)"):
        start_from(trainer, SmallEnergy(2))
    assert all(torch.equal(before[k], v) for k, v in built.state_dict().items())  # its own initialisation stands


def test_model_keys_leave_out_the_allowed_ones():
    # "without the section and without allowed" (kills: allowed ignored)
    assert model_keys(["model.name", "model.width", "model.kwargs", "data.name"], ("name", "kwargs")) == ["width"]


# ----- api_data.py -----------------------------------------------------------------------------------------------
def test_in_memory_refuses_an_image_dataset():
    # "ebmlab.train takes in-memory vectors; for an image Dataset pass its name or path" (kills: the kind check dropped,
    # which trained on (N, 2, 2) images... or failed later with another sentence)
    from ebmlab.api_data import in_memory
    from ebmlab.data import Dataset as EbmDataset

    imgs = EbmDataset(name="tiny", kind="image", train=torch.zeros(4, 2, 2), test=torch.zeros(2, 2, 2))
    with pytest.raises(DataError, match="for an image Dataset pass its name or path"):
        in_memory(imgs)


def test_in_memory_reads_the_vectors_of_vector_label_pairs():
    # README/train docstring: a Dataset "of (vector, label) pairs, whose labels are not used" (kills: it[0] dropped)
    from ebmlab.api_data import in_memory

    x = torch.arange(40.0).reshape(20, 2)  # rows (2i, 2i + 1); ebmlab needs 20 rows at least
    got = in_memory(torch.utils.data.TensorDataset(x, torch.arange(20) % 3))
    assert got.shape == (20, 2) and np.array_equal(got, [[2 * i, 2 * i + 1] for i in range(20)])


def test_in_memory_reads_long_double_rows_as_float64():
    # "long double: torch reads float64 at most": the rows are read, in float64 (kills: the cast dropped, which left
    # torch.from_numpy a float128 array it cannot take)
    from ebmlab.api_data import in_memory

    x = (np.arange(40).reshape(20, 2) / 4).astype(np.longdouble)
    got = in_memory(x)
    assert got.dtype == np.float64 and np.array_equal(got, np.arange(40).reshape(20, 2) / 4)


def test_looks_like_a_name_needs_no_folder_and_no_suffix():
    # "it has no folder and no suffix" (kills: the suffix test dropped)
    from ebmlab.api_data import looks_like_a_name

    assert looks_like_a_name("digits") and looks_like_a_name("ringz")
    assert not looks_like_a_name("mydata.csv") and not looks_like_a_name("runs/x") and not looks_like_a_name("x.npy")


def test_file_data_name_reads_the_image_shapes_from_the_header(tmp_path):
    # "(N, H, W, C) or (N, C, H, W) with C = 1 or 3, or (N, H, W) with H, W >= 8" -> npy, else array
    from ebmlab.api_data import file_data_name

    want = {(5, 8, 8): "npy", (5, 8, 7): "array", (5, 3, 10, 10): "npy", (5, 10, 10, 1): "npy", (5, 2, 10, 10): "array",
            (5, 4): "array"}
    for shape, name in want.items():
        p = tmp_path / f"a{'_'.join(map(str, shape))}.npy"
        np.save(p, np.zeros(shape, np.float32))
        assert file_data_name(p) == name, shape
    z = tmp_path / "one.npz"  # one array of any name: it is the images
    np.savez(z, pictures=np.zeros((4, 9, 9), np.uint8))
    assert file_data_name(z) == "npy"


def test_ood_inputs_names_and_paths():
    # a string or a path is one name (as --ood takes it); a sequence gives its names (kills: a Path not taken as one)
    from ebmlab.api_data import ood_inputs

    assert ood_inputs(Path("/x/far.npy"), (2,)) == (["/x/far.npy"], {})
    assert ood_inputs("shifted", (2,)) == (["shifted"], {})
    assert ood_inputs(("shifted", Path("/x/far.npy")), (2,)) == (["shifted", "/x/far.npy"], {})


def test_ood_inputs_refuses_an_empty_name():
    # "a mapping of non-empty names" (kills: `or not name` dropped)
    from ebmlab.api_data import ood_inputs

    with pytest.raises(DataError, match="non-empty names"):
        ood_inputs({"": np.zeros((3, 2))}, (2,))


def test_ood_inputs_keep_the_runs_float64_precision():
    # vectors "in dtype, the run's Affine.dtype": 0.1 stays float64's 0.1 (kills: every set cast to float32)
    from ebmlab.api_data import ood_inputs

    _, arrays = ood_inputs({"far": np.array([[0.1, 0.2], [0.3, 0.4]])}, (2,), "vector", torch.float64)
    assert arrays["far"].dtype == torch.float64
    assert arrays["far"].tolist() == [[0.1, 0.2], [0.3, 0.4]]


def test_ood_image_sets_read_8_bit_codes_and_refuse_floats_outside_the_data():
    # integer images v / 127.5 - 1 in [0, 255] (255 -> 1, 0 -> -1, 51 -> -0.6); floats as given in [-1, 1], refused above
    from ebmlab.api_data import ood_inputs

    codes = np.array([0, 51, 255, 255], np.uint8).reshape(1, 1, 2, 2)
    _, arrays = ood_inputs({"u8": codes}, (1, 2, 2), "image")
    assert torch.allclose(arrays["u8"].flatten(), torch.tensor([-1.0, -0.6, 1.0, 1.0]), atol=1e-6)
    with pytest.raises(DataError, match=r"lie in \[-1, 1\]"):
        ood_inputs({"hi": np.full((1, 1, 2, 2), 1.5, np.float32)}, (1, 2, 2), "image")
    with pytest.raises(DataError, match=r"8-bit codes in \[0, 255\]"):
        ood_inputs({"i16": np.full((1, 1, 2, 2), 256, np.int16)}, (1, 2, 2), "image")


def test_ood_image_sets_of_booleans_are_taken_as_given():
    # booleans are not 8-bit codes: taken as the values 0 and 1 (in [-1, 1]) (kills: bool read as codes, -1 / -0.992)
    from ebmlab.api_data import ood_inputs

    _, arrays = ood_inputs({"b": np.array([True, False, True, True]).reshape(1, 1, 2, 2)}, (1, 2, 2), "image")
    assert arrays["b"].flatten().tolist() == [1.0, 0.0, 1.0, 1.0]


def test_warn_not_finite_warns_for_a_single_bad_value():
    from ebmlab.api_data import warn_not_finite

    with pytest.warns(RuntimeWarning, match="1 of 3 energies are not finite"):
        warn_not_finite(torch.tensor([0.0, float("nan"), 2.0]), "energies")


def test_as_points_reads_arrays_in_the_runs_dtype():
    # "in dtype (the run's Affine.dtype)": float64 keeps 0.1 exactly; a tensor keeps its graph (run(x) differentiable)
    from ebmlab.api_data import as_points

    t = as_points(np.array([[0.1, 0.2]]), torch.float64)
    assert t.dtype == torch.float64 and t.tolist() == [[0.1, 0.2]]
    assert as_points([[1, 2]]).dtype == torch.float32
    x = torch.ones(2, 2, requires_grad=True)
    assert as_points(x).requires_grad


def test_data_source_accepts_a_name_override_that_agrees(tmp_path, monkeypatch):
    # as `ebmlab train --data NAME --set data.name=NAME`: the same dataset twice is one; two names are refused
    from ebmlab.api_data import data_source

    monkeypatch.chdir(tmp_path)  # (no file named like the dataset here)
    raw = {"data": {"name": "digits"}}
    data_source(raw, "digits", named=True)
    assert raw["data"]["name"] == "digits"
    with pytest.raises(DataError, match="name two datasets"):
        data_source({"data": {"name": "rings"}}, "digits", named=True)


def test_resume_auto_starts_a_run_where_there_is_none(tmp_path):
    # resume="auto" "continues it if it holds a step checkpoint and starts it otherwise" (kills: auto read as True)
    from ebmlab.api_data import resume_or_start

    assert resume_or_start("auto", tmp_path / "fresh", False, None) is False
    assert resume_or_start(False, tmp_path / "fresh", False, None) is False
    assert resume_or_start(True, tmp_path / "fresh", False, None) is True
    with pytest.raises(ConfigError, match="pass only one of them"):
        resume_or_start(True, tmp_path / "fresh", True, None)
    with pytest.raises(ConfigError, match="resume must be False, True or 'auto'"):
        resume_or_start("yes", tmp_path / "fresh", False, None)


# ----- api.py and api_catalog.py ---------------------------------------------------------------------------------
def test_train_refuses_an_unknown_section_keyword_by_name(tmp_path):
    # "sections are given as model=, train=, eval= mappings" (kills: the unknown-keyword check dropped)
    import ebmlab

    with pytest.raises(ConfigError, match=r"unknown keyword argument\(s\) \['sampler'\]"):
        ebmlab.train("hybrid", data="rings", out=tmp_path / "r", sampler={"steps": 3})
    assert not (tmp_path / "r").exists()


def test_train_one_data_name_override_string_conflicting_with_data_is_refused(tmp_path, monkeypatch):
    # one override as a string counts as a list of one: data="digits" with "data.name=rings" names two datasets
    # (kills: the string's characters searched for data.name, which trained on digits silently)
    import ebmlab

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="name two datasets"):
        ebmlab.train("hybrid", data="digits", overrides="data.name=rings", out=tmp_path / "r",
                     train={"steps": 1, "progress": False}, evaluate=False)


def test_resume_refuses_a_model_section(tmp_path):
    # "ebmlab.resume takes train= and eval= mappings and overrides=" (kills: model= let through)
    import ebmlab

    with pytest.raises(ConfigError, match="takes train= and eval= mappings"):
        ebmlab.resume(tmp_path / "r", model={"width": 8})


def test_compare_expands_the_home_directory_in_run_paths():
    # runs "as typed": ~/x is the home directory's x (kills: expanduser dropped: "'~/no_run_a' ... does not exist")
    import ebmlab
    from ebmlab.errors import RunError

    with pytest.raises(RunError, match=str(Path.home() / "no_run_64_a")):
        ebmlab.compare(["~/no_run_64_a", "~/no_run_64_b"])


def test_experiment_default_out_is_runs_experiment_name(monkeypatch):
    # "into out (default runs/experiment_NAME)" (kills: another default folder)
    import ebmlab.experiments
    from ebmlab.api_catalog import experiment

    seen = {}
    monkeypatch.setattr(ebmlab.experiments, "run_experiment", lambda name, out, **kw: seen.update(out=out) or {})
    experiment("paper004")
    assert Path(seen["out"]) == Path("runs") / "experiment_paper004"


def test_a_folder_named_like_an_array_file_is_not_an_image_folder(tmp_path):
    # "a directory x.npy is a mistaken array path and is refused as one" (kills: the suffix test dropped)
    from ebmlab.api_data import is_image_folder

    (tmp_path / "x.NPY").mkdir()
    (tmp_path / "pics").mkdir()
    assert not is_image_folder(tmp_path / "x.NPY") and is_image_folder(tmp_path / "pics")


def test_a_missing_path_object_is_not_read_as_a_dataset_name(tmp_path, monkeypatch):
    # a pathlib.Path is a path even without folder or suffix: Path("digits") missing says it does not exist
    from ebmlab.api_data import data_source

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        data_source({}, Path("digits"))


def test_resume_refuses_rows_other_than_the_runs_own(tmp_path):
    # "A continued run's data given in memory must be its own rows (its data.npy)" (kills: the check skipped)
    from ebmlab.api_data import resume_or_start

    run = tmp_path / "run"
    run.mkdir()
    rows = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.save(run / "data.npy", rows)
    assert resume_or_start(True, run, False, rows) is True
    with pytest.raises(DataError, match="not the run's own"):
        resume_or_start(True, run, False, rows + 1)
