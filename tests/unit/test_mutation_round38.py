"""A third mutation round on modules no round had reached (experiments/compare.py, training/cores.py,
progress_lines.py, objectives/contrastive_config.py, data/arrays.py): each test asserts a value from the formula or
the docstring's promise and fails under one planted bug the suite missed (docs/testing.md)."""
import numpy as np
import pytest

from ebmlab.errors import ConfigError


# ----- experiments/compare.py ------------------------------------------------------------------------------------

def test_runs_that_differ_only_in_where_their_data_file_lies_are_one_setting():
    """NOT_THE_SETTING: ``data.path`` is not the setting (the data's bytes are compared by _check_same_data)."""
    from ebmlab.experiments.compare import _setting

    a = {"data": {"name": "npy", "path": "/a/x.npy"}, "train": {"seed": 1, "lr": 1e-3}}
    b = {"data": {"name": "npy", "path": "/elsewhere/x.npy"}, "train": {"seed": 2, "lr": 1e-3}}
    assert _setting(a) == _setting(b) == {"data.name": "npy", "train.lr": 1e-3}


# ----- training/cores.py -----------------------------------------------------------------------------------------

def _tree(root, files):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_cgroup_limit_is_the_smallest_quota_along_the_path_wherever_it_lies(tmp_path):
    """cgroup_cpu_limit: "the smallest along its path": a parent's 1.5 CPUs caps a child's 4."""
    from ebmlab.training import cores

    _tree(tmp_path, {"proc/self/cgroup": "0::/job/step\n",
                     "sys/fs/cgroup/job/step/cpu.max": "400000 100000\n",
                     "sys/fs/cgroup/job/cpu.max": "150000 100000\n",
                     "sys/fs/cgroup/cpu.max": "max 100000\n"})
    assert cores.cgroup_cpu_limit(str(tmp_path)) == pytest.approx(1.5)


def test_only_running_processes_on_our_cpus_are_counted(tmp_path):
    """_running_processes: state R (stat field 3) on one of ``cpus`` (field 39), ``me`` excluded."""
    from ebmlab.training import cores

    def stat(pid, state, cpu):  # fields 3 .. 38 then 39 (the CPU) and a few more
        return f"{pid} (cmd with ) paren) {state} " + " ".join(["0"] * 35) + f" {cpu} 0 0 0\n"

    procs = {100: ("R", 0), 101: ("R", 1), 102: ("R", 5), 103: ("R", 7), 104: ("S", 0), 105: ("R", 1),
             106: ("R", 0)}
    _tree(tmp_path, {f"{pid}/stat": stat(pid, s, c) for pid, (s, c) in procs.items()})
    # on {0, 1}: 100, 101 and 106 (105 is this process, 104 sleeps, 102 and 103 run on other cores)
    assert cores._running_processes(tmp_path, 105, {0, 1}) == 3
    assert cores._running_processes(tmp_path, 105, set()) == 5  # any CPU: 100, 101, 102, 103, 106


# ----- progress_lines.py -----------------------------------------------------------------------------------------

def test_a_line_before_any_update_of_a_resumed_run_says_question_marks_not_a_rate(capsys):
    """LineProgress._write: no update yet (a resumed run at step 500, a refresh by update(0) after 31 s): elapsed 0,
    so tqdm says "?" rather than dividing the resumed step by the elapsed time."""
    from ebmlab.progress_lines import LineProgress

    now = [0.0]
    bar = LineProgress(1000, initial=500, clock=lambda: now[0], every=30)
    now[0] = 31.0
    bar.update(0)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[1] == "train:  50% 500/1000 [00:00<?, ?it/s]"


# ----- objectives/contrastive_config.py --------------------------------------------------------------------------

@pytest.mark.parametrize("target", [0.0, 1.0])
def test_a_target_acceptance_must_lie_strictly_inside_zero_and_one(target):
    """validate: "method.target_accept must lie in (0, 1)" (an acceptance of 1 is never reached by a step > 0)."""
    from ebmlab.objectives.contrastive_config import ContrastiveConfig

    with pytest.raises(ConfigError, match=r"target_accept must lie in \(0, 1\)"):
        ContrastiveConfig(target_accept=target).validate()


def test_ais_resample_zero_is_plain_ais_and_accepted():
    """ais_resample: "0: never (plain AIS)", validated as a fraction in [0, 1]."""
    from ebmlab.objectives.contrastive_config import ContrastiveConfig

    cfg = ContrastiveConfig(name="hybrid", ais_resample=0.0)
    assert cfg.noise_chain == "ais"
    cfg.validate()
    with pytest.raises(ConfigError, match=r"ais_resample must lie in \[0, 1\]"):
        ContrastiveConfig(name="hybrid", ais_resample=-0.1).validate()


def test_train_init_std_is_inert_for_the_data_scheme():
    """inert_keys: train_init_std applies to the noise and hybrid schemes' noise-initialised chains; the data
    scheme's chains start from the data."""
    from ebmlab.objectives.contrastive_config import ContrastiveConfig

    said = ContrastiveConfig(name="data", train_init_std=0.5).inert_keys()
    assert len(said) == 1 and said[0].startswith("method.train_init_std") and "data's chains start from data" in said[0]
    assert ContrastiveConfig(name="hybrid", train_init_std=0.5).inert_keys() == []


def test_an_explicit_robbins_monro_rule_resolves_to_ais_chains_like_the_default():
    """resolved_noise_chain: "ais" for the noise and hybrid schemes with MALA, an adapted step and the Robbins-Monro
    rule, which ``step_rule: null`` and ``step_rule: robbins_monro`` both name."""
    from ebmlab.objectives.contrastive_config import ContrastiveConfig

    for rule in (None, "robbins_monro"):
        for name in ("noise", "hybrid"):
            assert ContrastiveConfig(name=name, step_rule=rule).noise_chain == "ais", (name, rule)
    assert ContrastiveConfig(name="hybrid", step_rule="paper004").noise_chain == "short_run"


@pytest.mark.parametrize("keys", [{"target_accept": 0.574}, {"target_accept": None, "step_rule": "paper004"}])
def test_adaptive_step_is_inert_wherever_a_mala_controller_sets_the_step(keys):
    """inert_keys: adaptive_step with MALA is inert where the controller sets the step: a target acceptance set
    (Robbins-Monro) or paper 004's rule."""
    from ebmlab.objectives.contrastive_config import ContrastiveConfig

    said = ContrastiveConfig(name="data", sampler="mala", adaptive_step=True, **keys).inert_keys()
    assert len(said) == 1 and said[0].startswith("method.adaptive_step")
    assert ContrastiveConfig(name="data", sampler="mala", adaptive_step=True, target_accept=None).inert_keys() == []


def test_a_proposal_cap_of_exactly_one_l_is_accepted():
    """validate: "method.proposal_cap must be at least 1 (a multiple of L)": 1 is allowed, below it refused."""
    from ebmlab.objectives.contrastive_config import ContrastiveConfig

    ContrastiveConfig(name="data", step_rule="paper004", proposal_cap=1.0).validate()
    with pytest.raises(ConfigError, match="proposal_cap must be at least 1"):
        ContrastiveConfig(name="data", step_rule="paper004", proposal_cap=0.99).validate()


def test_noise_scale_is_live_for_the_hybrids_data_chains_beside_ais_noise_chains():
    """inert_keys / the field's comment: with noise_chain ais, noise_scale is the hybrid's data chains' only (live);
    only the noise scheme, whose chains are all AIS chains, makes it inert."""
    from ebmlab.objectives.contrastive_config import ContrastiveConfig

    assert ContrastiveConfig(name="hybrid", noise_scale=0.1).inert_keys() == []
    said = ContrastiveConfig(name="noise", noise_scale=0.1).inert_keys()
    assert len(said) == 1 and said[0].startswith("method.noise_scale")


# ----- data/arrays.py --------------------------------------------------------------------------------------------

def test_the_rounding_is_half_the_spacing_of_the_precision_at_the_columns_largest_value():
    """check_rounding: the rounding is half the spacing at the column's largest magnitude. float32's spacing in
    [2**24, 2**25) is 2, so values there round by up to 1: a std of 500 is rounded by 0.20% of it (a warning), a std
    of 1250 by 0.08% (below ROUNDING_WARN's 0.1%: nothing said)."""
    import warnings

    from ebmlab.data.arrays import check_rounding

    with pytest.warns(RuntimeWarning, match=r"rounds them by up to 1 \(0\.20% of the spread\)"):
        check_rounding(np.array([[2.0 ** 24], [2.0 ** 24 + 1000]]), "w", np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_rounding(np.array([[2.0 ** 24], [2.0 ** 24 + 2500]]), "w", np.float32)


def test_non_finite_values_are_counted_by_row():
    """check_vectors: "contains NaN or inf values in {bad} row(s)": two rows, five non-finite values between them."""
    from ebmlab.data.arrays import check_vectors
    from ebmlab.errors import DataError

    x = np.zeros((30, 3))
    x[4] = [np.nan, np.inf, np.nan]
    x[9, :2] = [-np.inf, np.nan]
    with pytest.raises(DataError, match=r"NaN or inf values in 2 row\(s\)"):
        check_vectors(x, "w")


def test_a_rounding_of_a_tenth_of_the_spread_is_refused():
    """check_rounding: refused from ROUNDING_REFUSE (0.1): float32 rounds values near 2**24 by up to 1, which is 20%
    of a std of 5."""
    from ebmlab.data.arrays import check_rounding
    from ebmlab.errors import DataError

    with pytest.raises(DataError, match=r"\(20\.00% of the spread\), which erases the data"):
        check_rounding(np.array([[2.0 ** 24], [2.0 ** 24 + 10]]), "w", np.float32)


def test_an_npz_key_is_the_only_array_besides_the_labels(tmp_path):
    """npz_key: none of ``names`` held, the key is "its only array besides ``others`` (e.g. labels)"."""
    from ebmlab.data.arrays import npz_key

    p = tmp_path / "d.npz"
    np.savez(p, pictures=np.zeros((2, 3)), labels=np.zeros(2))
    with np.load(p) as z:
        assert npz_key(z, p, ("x", "images"), "image file", others=("y", "labels")) == "pictures"


def test_a_single_whole_number_column_under_pandas_index_name_is_the_data(tmp_path):
    """_not_pandas_defaults refuses pandas' row index read as a feature *beside* the data (``x.shape[1] > 1``): a
    file whose only column is named "Unnamed: 0" holds nothing else, so that column is the data."""
    from ebmlab.data.arrays import read_array

    p = tmp_path / "one.csv"
    p.write_text("Unnamed: 0\n" + "".join(f"{i}\n" for i in range(25)))
    x = read_array(p)
    assert x.shape == (25, 1) and x[:, 0].tolist() == list(range(25))
