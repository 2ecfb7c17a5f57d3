"""A method of the user's own (README "Your own method", ``ebmlab.objectives.register``): trained through the shared
loop, opened in a fresh process and by every ``ebmlab`` command through the module its run records, offered to the
command line by an installed package's entry point; ``register`` and the built objective are checked in one
sentence; the contract's ``log_density`` defaults to -E(x).

The README's two ``python`` blocks after ``<!-- own-method-example: NAME -->`` are run verbatim in fresh processes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ebmlab
from ebmlab import objectives
from ebmlab.errors import ConfigError
from ebmlab.objectives import METHODS, NoLogDensity, Objective, register
from ebmlab.training.config import load_config
from tests.reliability.conftest import assert_one_sentence, cli, sets

ROOT = Path(__file__).resolve().parents[2]
EBMLAB = [sys.executable, "-m", "ebmlab"]


def examples() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    return dict(re.findall(r"<!-- own-method-example: (\S+) -->\s*```python\n(.*?)```", text, flags=re.DOTALL))


def _run(argv: list[str], cwd: Path, pythonpath: Path | None, extra_path: list[Path] = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("EBMLAB_DEBUG", None)
    env.pop("PYTHONPATH", None)
    paths = ([pythonpath] if pythonpath is not None else []) + list(extra_path)
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(map(str, paths))
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def registry():
    """The names registered by a test are removed after it (the registry is process-wide)."""
    before = dict(METHODS)
    yield
    for name in set(METHODS) - set(before):
        del METHODS[name]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> Path:
    """The README's short_run.py and train_own.py, run in a fresh process from a fresh directory."""
    d = tmp_path_factory.mktemp("own_method")
    ex = examples()
    (d / "short_run.py").write_text(ex["short_run.py"])
    res = _run([sys.executable, "-c", ex["train_own.py"]], d, d)
    assert res.returncode == 0, res.stderr[-3000:]
    kl, distance = map(float, res.stdout.split()[-2:])
    assert kl >= 0 and distance > 0  # measured numbers, printed (their values are the README's, not asserted)
    return d


def test_the_readme_example_is_complete():
    ex = examples()
    assert set(ex) == {"short_run.py", "train_own.py"}
    assert 'register("short_run", ShortRunConfig, ShortRun)' in ex["short_run.py"]
    assert 'ebmlab.train("short_run"' in ex["train_own.py"]


@pytest.mark.slow  # (the README's example trained in a fresh process: minutes)
def test_a_run_of_your_method_opens_in_a_fresh_process_and_in_every_command_where_its_module_imports(readme_run):
    run = readme_run / "runs" / "short_run"
    assert '"method_module": "short_run"' in (run / "run.json").read_text()
    load = "import ebmlab; r = ebmlab.load('runs/short_run'); s = r.sample(7, seed=1); print(r.method, tuple(s.shape))"
    res = _run([sys.executable, "-c", load], readme_run, readme_run)
    assert res.returncode == 0 and res.stdout.split()[-3:] == ["short_run", "(7,", "2)"], res.stderr[-2000:]
    res = _run([*EBMLAB, "sample", "runs/short_run", "--n", "5"], readme_run, readme_run)
    assert res.returncode == 0 and "(20 sampler steps)" in res.stdout, res.stderr[-2000:]
    res = _run([*EBMLAB, "train", "--out", "runs/short_run", "--resume", "--set", "train.steps=305",
                "--set", "eval.n_samples=100", "--set", "eval.long_run_factor=1"], readme_run, readme_run)
    assert res.returncode == 0 and "resumed runs/short_run at step 300" in res.stdout, res.stderr[-2000:]
    # where the module cannot be imported: one sentence that names the module (the run is not harmed)
    elsewhere = _run([*EBMLAB, "sample", str(run), "--n", "5"], readme_run.parent, None)
    assert elsewhere.returncode == 2 and elsewhere.stderr.strip().splitlines() == [
        "ebmlab: error: method 'short_run': module 'short_run', which registered it where the run was trained, cannot "
        "be imported (ModuleNotFoundError: No module named 'short_run'); install it or put it on PYTHONPATH"], \
        elsewhere.stderr


@pytest.mark.slow  # (fresh processes and a quick leaderboard: about a minute)
def test_an_installed_packages_method_trains_from_the_command_line(tmp_path):
    """An entry point in the group ``ebmlab.methods`` (a package's ``pyproject.toml``), here as the dist-info a
    ``pip install`` writes: ``ebmlab train --set method.name=short_run`` imports its module; the command lists it."""
    site = _package(tmp_path / "site", "shortrun_methods")
    small = ("method.name=short_run", "data.name=8gaussians", "method.n_steps=3", "train.steps=2", "model.width=8",
             "model.depth=1", "train.batch_size=32", "train.progress=false", "eval.n_samples=32", "eval.grid_size=8",
             "eval.long_run_factor=1", "eval.plots=false")
    res = _run([*EBMLAB, "train", "--out", "runs/ep", *[a for o in small for a in ("--set", o)]], tmp_path, site)
    assert res.returncode == 0, res.stderr[-2000:]
    assert '"method_module": "shortrun_methods"' in (tmp_path / "runs" / "ep" / "run.json").read_text()
    # the package renamed its module since: the run opens through the entry point, with a warning naming both
    moved = _package(tmp_path / "moved", "shortrun_v2")
    res = _run([*EBMLAB, "sample", "runs/ep", "--n", "3"], tmp_path, moved)
    assert res.returncode == 0 and ("method 'short_run' of this run was registered by module 'shortrun_methods' where "
                                    "it was trained; here module 'shortrun_v2' registers it") in res.stderr, res.stderr
    # two installed packages offer the name: refused in one sentence, naming both modules
    both = _run([*EBMLAB, "sample", "runs/ep", "--n", "3"], tmp_path, None,
                extra_path=[site, moved])
    assert_one_sentence(both.returncode, both.stderr, "is offered by several installed packages (entry points "
                        "ebmlab.methods: shortrun_methods, shortrun_v2); uninstall all but one")
    # the same budget, data and evaluation as the papers' methods: the leaderboard, each cell in a fresh process
    res = _run([*EBMLAB, "experiment", "leaderboard", "--quick", "--methods", "short_run", "--datasets", "mixture",
                "--seeds", "0", "--jobs", "2", "--out", "lb"], tmp_path, site)
    assert res.returncode == 0, res.stderr[-2000:]
    row = json.loads((tmp_path / "lb" / "results.json").read_text())["datasets"]["mixture"]["table"]["mixture/short_run"]
    assert row["density_kl"]["per_seed"][0] > 0 and row["updates"]["per_seed"][0] > 0
    listed = _run([sys.executable, "-c", "import ebmlab; print(ebmlab.methods())"], tmp_path, site)
    assert "'short_run'" in listed.stdout and "'hybrid'" in listed.stdout
    assert "short_run" not in _run([sys.executable, "-c", "import ebmlab; print(ebmlab.methods())"],
                                   tmp_path, None).stdout


def _package(site: Path, module: str) -> Path:
    """``site`` holding ``module`` (the README's short_run.py) and the dist-info of an installed package whose entry
    point offers it as method short_run."""
    info = site / f"{module}_pkg-0.1.dist-info"
    info.mkdir(parents=True)
    (site / f"{module}.py").write_text(examples()["short_run.py"])
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ebmlab.methods]\nshort_run = {module}\n")
    return site


# ----- register, and the objective it builds -----------------------------------------------------------------------
@dataclasses.dataclass
class TinyConfig:
    name: str = "tiny"
    n_steps: int = 3


class Tiny(Objective):
    """A minimal objective: an MLP energy, plain CD with 3 Langevin steps."""

    def __init__(self, cfg, data):
        super().__init__()
        from ebmlab.energies.build import build_energy
        self.shape, self.energy = tuple(data.shape), build_energy(cfg.model, tuple(data.shape))

    @property
    def n_steps_default(self) -> int:
        return 3

    def prior(self, n, generator=None):
        return torch.randn((n, *self.shape), generator=generator)

    def sample(self, n, *, generator=None, n_steps=None, x0=None, cond=None):
        from ebmlab.samplers import langevin, run_chain
        x, info = run_chain(langevin, self.energy, self.start_points(n, x0, generator), n_steps or 3, 0.01,
                            generator=generator)
        return objectives.SampleOutput(x, info.as_dict())

    def forward(self, batch, *, generator=None):
        x = objectives.base.batch_data(batch)
        gap = self.energy(self.sample(x.shape[0], generator=generator).x).mean() - self.energy(x).mean()
        return objectives.LossOutput(-gap, {"energy_gap": gap.detach()})


class NoSample(Tiny):
    sample = Objective.sample


class StepsInInit(Tiny):
    """``n_steps_default`` set in ``__init__`` as a number (it was the contract's property without a setter: found by
    the audit, "property has no setter")."""
    n_steps_default = Objective.n_steps_default  # (Tiny's own property undone: the base's, settable)

    def __init__(self, cfg, data):
        super().__init__(cfg, data)
        self.n_steps_default = 4


class NoSteps(Tiny):
    n_steps_default = Objective.n_steps_default


def _config(*fields):
    """A method config class with a name field and ``fields`` ((name, type[, default]), ...)."""
    return dataclasses.make_dataclass("Cfg", [("name", str, "tiny"), *fields], kw_only=True)


def test_register_refuses_what_cannot_be_a_method_in_one_sentence(registry):
    """Found by an audit: a tuple field trained a whole run that then could not be returned or opened (config.yaml
    gives a list back), a Literal field and a field without a default ended in tracebacks."""
    cases = [(("hybrid", TinyConfig, Tiny), "'hybrid' is a built-in method; register yours under another name"),
             (("my method", TinyConfig, Tiny), "a method's name must be a Python-style identifier"),
             (("tiny", TinyConfig(), Tiny), "config must be a dataclass (the class, not an instance)"),
             (("tiny", dataclasses.make_dataclass("C", [("steps", int, 3)]), Tiny), "with a 'name' field"),
             (("tiny", TinyConfig, None), "build must be callable"),
             (("tiny", _config(("pair", tuple[int, int], (1, 2))), Tiny),
              "config field 'pair' has type tuple[int, int], which a YAML config cannot hold and give back"),
             (("tiny", _config(("kind", typing.Literal["a", "b"], "a")), Tiny), "config field 'kind' has type"),
             (("tiny", _config(("must", int)), Tiny), "config field 'must' has no default")]
    for args, needle in cases:
        with pytest.raises(ConfigError) as exc:
            register(*args)
        assert needle in str(exc.value), (args, exc.value)
    assert "tiny" not in METHODS and METHODS["hybrid"].module is None


def test_a_method_trains_from_python_and_its_objective_is_checked_before_training(tmp_path, registry):
    register("tiny", TinyConfig, Tiny)
    assert METHODS["tiny"].module == __name__  # the module that called register: what a run records
    over = {"train.steps": 3, "train.progress": False, "train.batch_size": 32, "model.width": 8, "model.depth": 1,
            "eval.n_samples": 32, "eval.grid_size": 8, "eval.long_run_factor": 1, "eval.plots": False,
            "method.n_steps": 2}
    run = ebmlab.train("tiny", "8gaussians", out=tmp_path / "r", overrides=over)
    assert run.method == "tiny" and run.checkpoint_step == 3
    assert run.metrics["density_kl"] > 0  # the contract's default log_density, -E(x): the density metrics work
    x = torch.randn(4, 2)
    shift = run.log_density(x) + run(x)  # -E(x) in data coordinates, up to the transform's constant log|det|
    torch.testing.assert_close(shift, shift[:1].expand(4))
    register("tiny", TinyConfig, NoSample)  # registering again replaces (a notebook cell run twice)
    with pytest.raises(ConfigError, match=r"method 'tiny': its Objective NoSample does not define sample \(the "
                                          r"contract: ebmlab/objectives/base.py\)"):
        ebmlab.train("tiny", "8gaussians", out=tmp_path / "r2", overrides=over)
    assert not (tmp_path / "r2" / "checkpoints").exists()
    register("tiny", TinyConfig, NoSteps)
    with pytest.raises(ConfigError, match=r"does not define n_steps_default \(the contract"):
        ebmlab.train("tiny", "8gaussians", out=tmp_path / "r4", overrides=over)
    for bad in (4.0, -1, None, True):  # found by the second audit: 4.0 ended in range()'s TypeError, 0-size errors
        with pytest.raises(ConfigError, match=re.escape(f"StepsInInit.n_steps_default must be an integer >= 0 "
                                                        f"(sampler steps), got {bad!r}")):
            StepsInInit(load_config(None, ["data.name=8gaussians", "model.width=8"]),
                        SimpleNamespace(shape=(2,))).n_steps_default = bad
    register("tiny", TinyConfig, StepsInInit)
    run = ebmlab.train("tiny", "8gaussians", out=tmp_path / "r5", overrides={**over, "eval.long_run_factor": 2})
    assert run.objective.n_steps_default == 4 and run.metrics["long_run_steps"] == 8
    register("tiny", TinyConfig, lambda cfg, data: torch.nn.Linear(2, 1))
    with pytest.raises(ConfigError, match="must return an ebmlab.objectives.Objective, got a Linear"):
        ebmlab.train("tiny", "8gaussians", out=tmp_path / "r3", overrides=over)


def test_log_density_is_minus_the_data_energy_unless_the_method_has_none():
    class Quadratic(Objective):
        def __init__(self):
            super().__init__()
            self.energy = torch.nn.Linear(2, 1, bias=False)

    obj = Quadratic()
    x = torch.randn(5, 2)
    torch.testing.assert_close(obj.log_density(x), -obj.energy(x))
    obj.has_log_density = False
    with pytest.raises(NoLogDensity, match="Quadratic defines no log-density of the data"):
        obj.log_density(x)


@pytest.mark.slow  # (default tier kept near 10 min on CI; `make test-slow` and .ci/run run it)
def test_a_method_registered_in_a_script_warns_and_its_run_names_the_fix_elsewhere(tmp_path):
    script = textwrap.dedent("""
        import warnings
        import ebmlab
        from ebmlab.objectives import register
        from tests.unit.test_own_method import Tiny, TinyConfig
        register("tiny", TinyConfig, Tiny)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            ebmlab.train("tiny", "8gaussians", out="r", evaluate=False,
                         overrides={"train.steps": 2, "train.progress": False, "model.width": 8})
        print([str(w.message) for w in seen if "__main__" in str(w.message)])
        """)
    res = _run([sys.executable, "-c", script], tmp_path, ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "method 'tiny' is registered in __main__ (a script or notebook)" in res.stdout
    assert '"method_module": "__main__"' in (tmp_path / "r" / "run.json").read_text()
    res = _run([*EBMLAB, "sample", "r", "--n", "3"], tmp_path, ROOT)
    assert_one_sentence(res.returncode, res.stderr, "was registered by the script or notebook that trained the run")


def test_an_unknown_method_on_the_command_line_points_to_registering_one(tmp_path, capsys):
    code, out, err = cli(capsys, "train", "--out", tmp_path / "r", *sets("method.name=nope"))
    assert_one_sentence(code, err, "unknown method name 'nope'")
    assert "a method of your own: ebmlab.objectives.register, README 'Your own method'" in err


# ----- found by the audit of this feature (docs/testing.md) -------------------------------------------------------
def test_a_helper_that_registers_for_a_module_records_that_module(tmp_path, monkeypatch, registry):
    """A shared helper (``offer`` in helperlib) called at a module's top level: the run records the module whose
    import registers the method (mymeth), not the helper's (whose import registers nothing)."""
    (tmp_path / "helperlib.py").write_text("from ebmlab.objectives import register\n\n\n"
                                           "def offer(name, config, build):\n    register(name, config, build)\n")
    (tmp_path / "mymeth.py").write_text("import helperlib\nfrom tests.unit.test_own_method import Tiny, TinyConfig\n\n"
                                        "helperlib.offer('viahelper', TinyConfig, Tiny)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import mymeth  # noqa: F401
        assert METHODS["viahelper"].module == "mymeth"
    finally:
        for m in ("mymeth", "helperlib"):
            sys.modules.pop(m, None)


def test_a_run_opened_where_another_module_registers_its_name_says_so(tmp_path, monkeypatch, registry):
    """Found by the audit: a run trained on one module's method opened silently with another module's objective of
    the same name (its samples were the other method's)."""
    register("tiny", TinyConfig, Tiny)
    ebmlab.train("tiny", "8gaussians", out=tmp_path / "r", evaluate=False,
                 overrides={"train.steps": 2, "train.progress": False, "model.width": 8, "train.batch_size": 32})
    (tmp_path / "othermeth.py").write_text("from ebmlab.objectives import register\n"
                                           "from tests.unit.test_own_method import Tiny, TinyConfig\n\n"
                                           "register('tiny', TinyConfig, Tiny)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import othermeth  # noqa: F401
        with pytest.warns(UserWarning, match="method 'tiny' of this run was registered by module "
                                             "'tests.unit.test_own_method' where it was trained; here module "
                                             "'othermeth' registers it"):
            ebmlab.load(tmp_path / "r")
    finally:
        sys.modules.pop("othermeth", None)


class PerSampleLoss(Tiny):
    def forward(self, batch, *, generator=None):
        x = objectives.base.batch_data(batch)
        return objectives.LossOutput(self.energy(x), {})  # (B,): one loss per sample, not one number


class BareTensor(Tiny):
    def forward(self, batch, *, generator=None):
        return self.energy(objectives.base.batch_data(batch)).mean()


@pytest.mark.parametrize("cls, got", [(PerSampleLoss, "got a loss of shape (32,)"), (BareTensor, "got a Tensor")])
def test_a_forward_that_does_not_return_one_loss_is_said_at_the_first_update(tmp_path, registry, cls, got):
    """Found by the audit: a per-sample loss ended in torch's "only one element tensors can be converted to Python
    scalars", a bare tensor in an AttributeError traceback."""
    register("tiny", TinyConfig, cls)
    with pytest.raises(ConfigError, match=re.escape(f"{cls.__name__}.forward must return LossOutput(loss, metrics) "
                                                    f"with the loss a 0-d tensor (one number: e.g. a mean over the "
                                                    f"batch), {got}")):
        ebmlab.train("tiny", "8gaussians", out=tmp_path / "r", evaluate=False,
                     overrides={"train.steps": 2, "train.progress": False, "model.width": 8, "train.batch_size": 32})


def test_guidance_on_a_method_without_it_is_one_sentence():
    """Found by the audit: guidance on a conditional run of a user's method looked up ``objective.generate`` (only
    cdrl / drl have it) before checking the method, and ended in an AttributeError."""
    from ebmlab.applications.guidance import guided_sample

    cfg = load_config(None, ["data.name=8gaussians", "model.width=8"])
    obj = Tiny(cfg, SimpleNamespace(shape=(2,)))
    with pytest.raises(ValueError, match="classifier-free guidance needs a cdrl or drl model"):
        guided_sample(obj, torch.zeros(3, dtype=torch.long), 1.0)


@pytest.mark.slow  # (default tier kept near 10 min on CI; `make test-slow` and .ci/run run it)
def test_a_script_that_registers_and_runs_spawned_cells_records_one_main(tmp_path):
    """Found by the second audit: a script registering its own method and running the leaderboard two cells at a time
    warned that '__main__' (the script) and '__mp_main__' (the same script, re-run by each spawned worker) were two
    modules."""
    script = textwrap.dedent("""
        import warnings
        import ebmlab
        from ebmlab.objectives import register
        from tests.unit.test_own_method import Tiny, TinyConfig
        register("tiny", TinyConfig, Tiny)
        if __name__ == "__main__":
            warnings.simplefilter("error", UserWarning)
            ebmlab.experiment("leaderboard", out="lb", quick=True, methods=("tiny",), datasets=("mixture",),
                              seeds=(0,), jobs=2)
        """)
    (tmp_path / "lb_script.py").write_text(script)
    res = _run([sys.executable, "lb_script.py"], tmp_path, ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "registers it" not in res.stderr and "mixture/tiny seed 0: done" in res.stdout
