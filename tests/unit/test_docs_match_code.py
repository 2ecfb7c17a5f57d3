"""The docs say what the code does: every command, option, config key, file and test the README and docs/*.md
name exists, so a user who copies a command gets the run the page describes, not an argparse error.

Nothing here runs: each ``ebmlab ...`` line is parsed by the CLI's own parser, a ``train`` line's config is built
with the CLI's own overrides (``load_config``, which refuses an unknown key or a value of the wrong type), an
``experiment`` line's options and names are checked against the experiment's ``run`` and its arm lists, a
benchmark line's flags against the script's ``add_argument`` calls, and a Python block's imports and calls
against the functions' signatures. (The README's Python example is run in ``test_python_api.py``.)
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import inspect
import io
import re
import shlex
from pathlib import Path

import pytest

from ebmlab.cli import build_parser
from ebmlab.cli_commands import _train_overrides
from ebmlab.data import DATASETS
from ebmlab.energies.build import MODELS
from ebmlab.errors import ConfigError
from ebmlab.experiments import EXPERIMENTS
from ebmlab.objectives import METHODS
from ebmlab.training.config import load_config

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# The docs' placeholders, as a user fills them in (a seed, a count, a folder...): any valid value will do.
PLACEHOLDERS = {"S": "0", "N": "10", "K": "3", "L": "100", "W": "1", "B": "64", "X": "0.05", "F": "0.5",
                "SECONDS": "20", "DIR": "runs/x", "RUN": "runs/x", "FILE": "x.npy"}
NAMES = {"experiment": "paper000", "configs": "default"}  # NAME, by command

# Lines that look like commands and are meant to fail, each with what the page says of it. Each must still fail:
# when one starts to work, the page is out of date.
MEANT_TO_FAIL = {
    "ebmlab train --set train.nope=1": "paper004.md: the example of an unknown key, refused with the valid ones",
    "ebmlab langevin final_energy=False": "performance.md: the name of a benchmark row, not a command",
    "ebmlab experiment data_defaults --out DIR --methods margin --data-seeds 6,7,8,9,10 --seeds 0,1,2":
        "data_defaults.md: a recorded run; the arm was folded into the default since (the page says so)",
    "ebmlab experiment data_defaults --out DIR --methods gmm,gmm_margin --data-seeds 11,12,13,14,15 --seeds 0,1,2":
        "data_defaults.md: a recorded run; 'neither arm exists' since 8d34b20 (the page says so)",
}


def _clean(line: str) -> str:
    """One command on one line: continuations joined, the comment and a leading prompt or environment dropped."""
    line = re.sub(r"\s+#.*$", "", " ".join(line.replace("\\\n", " ").split()))
    line = re.sub(r"^(\$ )?([A-Z_]+=\S+ )*", "", line)
    return line.removeprefix("python -m ")


def _fenced(text: str) -> list[str]:
    """The lines of the page's fenced code blocks, a backslash continuation joined to its line."""
    return [ln for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
            for ln in block.replace("\\\n", " ").splitlines()]


def page_commands(prefix: str) -> list[tuple[str, str]]:
    """(page, command) for every line or inline code span that starts with ``prefix``, once each; synopses
    (``[--opt]``, ``a|b``) and elided lines (``...``) left out."""
    found = {}
    for page in PAGES:
        text = page.read_text()
        start = r"\s+".join(map(re.escape, prefix.split(" ")))  # a span may break its line anywhere
        spans = [_clean(s) for s in re.findall(r"`((?:python\s+-m\s+)?" + start + r"[^`]*)`", text)]
        for cmd in [_clean(ln) for ln in _fenced(text)] + spans:
            if cmd.startswith(prefix) and not any(s in cmd for s in ("[", "|", "...")):
                found.setdefault(cmd, page.name)
    return sorted((page, cmd) for cmd, page in found.items())


def _filled(cmd: str) -> list[str]:
    """The command's arguments with the placeholders filled in (also in KEY=PLACEHOLDER)."""
    def fill(tok: str) -> str:
        key, eq, value = tok.rpartition("=")
        return f"{key}={PLACEHOLDERS.get(value, value)}" if eq else PLACEHOLDERS.get(tok, tok)
    argv = [fill(t) for t in shlex.split(cmd)[1:]]
    return [NAMES.get(argv[0], t) if t == "NAME" else t for t in argv]


def _parse(argv: list[str]):
    """The CLI's parse of ``argv``; AssertionError with argparse's message if it refuses them."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return build_parser().parse_args(argv)
        except SystemExit:
            raise AssertionError(err.getvalue().strip().splitlines()[-1]) from None


def _experiment_names(args) -> None:
    """An ``experiment`` line's options are ones its ``run`` takes, and its --methods / --datasets names exist."""
    assert args.name in EXPERIMENTS, f"no experiment {args.name!r}"
    module = importlib.import_module(EXPERIMENTS[args.name])
    takes = inspect.signature(module.run).parameters
    for key in ("full", "budget", "methods", "datasets", "data_seeds", "rescore", "auroc_margin"):
        if getattr(args, key) not in (None, False):
            assert key in takes, f"experiment {args.name} takes no --{key.replace('_', '-')}"
    known = {"leaderboard": {"methods": "METHODS", "datasets": "DATASETS"},
             "data_defaults": {"methods": "CANDIDATES", "datasets": "DATASETS"}}.get(args.name, {})
    for key, table in known.items():
        names = set(getattr(module, table)) | ({"default"} if args.name == "data_defaults" else set())
        for name in (getattr(args, key) or "").split(","):
            assert not name or name in names, f"{args.name} has no {key[:-1]} {name!r}"


def check_command(cmd: str) -> None:
    """Raise (AssertionError or ConfigError) if ``cmd`` is not a command ebmlab takes."""
    argv = _filled(cmd)
    if "--help" in argv or "--version" in argv or len(argv) == 1 and argv[0] in ("sample", "eval", "experiment"):
        return  # the command named in prose, or its help
    if len(argv) == 2 and argv[1].startswith("--"):  # an option named in prose (`ebmlab train --data`)
        assert argv[1] in build_parser().command_parsers[argv[0]]._option_string_actions, f"no option {cmd}"
        return
    args = _parse(argv)
    options = build_parser().command_parsers[argv[0]]._option_string_actions  # spelt out: argparse takes a prefix
    assert {a.split("=")[0] for a in argv if a.startswith("--")} <= set(options), f"an abbreviated option in {cmd}"
    if args.command == "train" and not args.resume:
        load_config(args.config, _train_overrides(args))
    elif args.command == "experiment":
        _experiment_names(args)
    elif args.command == "configs" and args.name:
        load_config(args.name, [])


COMMANDS = [c for c in page_commands("ebmlab ") if c[1] not in MEANT_TO_FAIL]


@pytest.mark.parametrize("page,cmd", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_every_ebmlab_command_the_docs_show_is_one_the_cli_takes(page, cmd):
    check_command(cmd)


def test_the_docs_show_commands_of_every_kind():
    # the extraction itself works: train, sample, eval, experiment and configs lines are all found
    kinds = {shlex.split(c)[1] for _, c in COMMANDS}
    assert {"train", "sample", "eval", "experiment", "configs"} <= kinds
    assert len(COMMANDS) > 60


@pytest.mark.parametrize("cmd", sorted(MEANT_TO_FAIL))
def test_the_command_lines_meant_to_fail_still_fail(cmd):
    every = {c for _, c in page_commands("ebmlab ")}
    assert cmd in every, f"no page shows {cmd!r} any more: drop it from MEANT_TO_FAIL"
    with pytest.raises((AssertionError, ConfigError)):
        check_command(cmd)


def _script_options(script: Path) -> set[str]:
    """The ``--options`` a benchmark script declares (its add_argument calls; a .sh passes its own to the .py, and
    a script kept under an old name runs another's ``main``)."""
    source = script.read_text() + (script.with_suffix(".py").read_text() if script.suffix == ".sh" else "")
    for other in re.findall(r"^from (\w+) import main$", source, flags=re.M):
        source += (script.parent / f"{other}.py").read_text()
    return set(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", source)) | {"--help"}


BENCH = [(p, c) for p, c in page_commands("benchmarks/") + page_commands("python benchmarks/")
         if re.match(r"(python )?benchmarks/\w+\.(py|sh)(\s|$)", c)]  # not a `file.py:line` reference


@pytest.mark.parametrize("page,cmd", BENCH, ids=[f"{p}:{c[:60]}" for p, c in BENCH])
def test_every_benchmark_option_the_docs_show_is_one_the_script_declares(page, cmd):
    script, *argv = shlex.split(cmd.removeprefix("python "))
    path = ROOT / script
    assert path.is_file(), f"no script {script}"
    flags = {a.split("=")[0] for a in argv if a.startswith("--")}
    assert flags <= _script_options(path), f"{script} has no {sorted(flags - _script_options(path))}"
    for key_value in [b for a, b in zip(argv, argv[1:]) if a == "--set"]:  # the update rows' config overrides
        load_config(None, [_filled("x " + key_value)[0]])


def test_the_benchmark_commands_are_found():
    assert {Path(shlex.split(c.removeprefix("python "))[0]).name for _, c in BENCH} >= {
        "bench_sampler.py", "bench_scaling.py", "bench_threads.py", "bench_cold_ops.py"}


def _test_names() -> set[str]:
    """Every test function's and test file's name under tests/."""
    names = set()
    for f in (ROOT / "tests").rglob("test_*.py"):
        names |= {f.stem} | set(re.findall(r"^def (test_\w+)", f.read_text(), flags=re.M))
    return names


def test_every_test_the_docs_name_exists():
    # a name in backticks, or a prefix of one where the page elides the rest (`test_a_b_...`, `test_a_b...`)
    names = _test_names()
    missing = []
    for page in PAGES:
        for path, name in re.findall(r"`(?:(tests/[\w/]+\.py)::)?(test_\w+?)(?:_?\.\.\.)?`", page.read_text()):
            if path and not (ROOT / path).is_file() or not any(n.startswith(name) for n in names):
                missing.append(f"{page.name}: {path + '::' if path else ''}{name}")
    assert not missing, missing


def test_every_file_the_docs_name_exists():
    pattern = r"\b((?:src/ebmlab|tests|benchmarks|configs|docs)/[\w/.\-]+\.(?:py|md|yaml|sh|json|png))"
    short = r"`((?:samplers|objectives|training|energies|data|metrics|experiments|applications)/\w+\.py)"
    missing = [f"{page.name}: {p}" for page in PAGES for p in re.findall(pattern, page.read_text())
               if not (ROOT / p).exists() and not (ROOT / "src/ebmlab" / p).exists()]
    missing += [f"{page.name}: {p}" for page in PAGES for p in re.findall(short, page.read_text())
                if not (ROOT / "src/ebmlab" / p).exists()]
    assert not missing, missing


def _docs_python_blocks() -> list[tuple[str, str]]:
    return [(page.name, block) for page in PAGES[1:]  # (README's blocks run in test_python_api.py)
            for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)]


@pytest.mark.parametrize("page,block", _docs_python_blocks())
def test_every_python_block_in_the_docs_imports_and_calls_what_exists(page, block):
    tree = ast.parse(block)
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            imported |= {a.asname or a.name: getattr(module, a.name) for a in node.names}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id in imported]
    assert calls, "no call of an imported function to check"
    for call in calls:  # the arguments bind to the function's signature (placeholders for their values)
        inspect.signature(imported[call.func.id]).bind(*call.args, **{k.arg: None for k in call.keywords})


def test_every_make_target_the_docs_name_is_in_the_makefile():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    named = {t for page in PAGES for t in re.findall(r"`make ([\w-]+)", page.read_text())}
    assert {"demo", "test"} <= named and named <= targets, named - targets


def test_every_option_the_librarys_messages_name_is_one_of_its_commands():
    # an error or docstring that tells the user "--something" names a real option; the others are torchrun's and
    # TensorBoard's, which the distributed and logging modules quote
    parser = build_parser()
    options = {o for p in [parser, *parser.command_parsers.values()] for o in p._option_string_actions}
    others = {"--nnodes", "--nproc", "--node", "--rdzv", "--standalone", "--logdir"}
    named = {(m, f.name) for f in (ROOT / "src/ebmlab").rglob("*.py")
             for m in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", f.read_text())}
    assert not {(m, f) for m, f in named if m not in options | others}


def test_every_config_key_and_name_the_docs_quote_exists():
    # `section.key` (method keys: of any method's config) and `data/model/method.name=X` in prose, as well as in
    # commands; `data.npy`, `train.py`... are file names
    cfg = load_config(None, [])
    keys = {s: {f.name for f in dataclasses.fields(getattr(cfg, s))} for s in ("data", "model", "train", "eval")}
    keys["method"] = {f.name for spec in METHODS.values() for f in dataclasses.fields(spec.config)}
    names = {"data": DATASETS, "model": MODELS, "method": METHODS}
    wrong = []
    for page in PAGES:
        for section, key, value in re.findall(r"`(data|model|method|train|eval)\.(\w+)(?:=(\w+))?(?=[`=: ])",
                                              page.read_text()):
            if key not in keys[section] and key not in ("npy", "npz", "csv", "py", "yaml", "json", "md"):
                wrong.append(f"{page.name}: {section}.{key}")
            if key == "name" and value and value not in names[section]:
                wrong.append(f"{page.name}: {section}.name={value}")
    assert not wrong, wrong
