"""Mutation round 67 (docs/testing.md "A sixteenth mutation round"): known answers for the command line (``cli``,
``cli_commands``), the run directory helpers (``training/run.py``) and the error sentences (``errors``). Each test
kills a planted one-line bug that the earlier tests let through. Nothing here trains: the commands' bodies are
replaced where a test needs only the command line's handling of what they raise or return, and the expected values
come from README's command-line sections, the modules' docstrings and answers worked out by hand (each with its
source in a comment).
"""
from __future__ import annotations

import errno
import io
import os
import sys
import warnings
from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ebmlab import cli, cli_commands
from ebmlab.errors import RunNotFound, TrainingStopped, is_out_of_memory, os_error_sentence


# ----- errors.os_error_sentence / is_out_of_memory ------------------------------------------------------------
def test_os_error_sentence_says_what_where_and_the_errnos_hint():
    # docstring: "what failed, on which path, and what to do"; ``doing`` prefixes the path; the strerror's full stop
    # is dropped before the hint. kills: E2 (path dropped), E3 (full stop kept)
    exc = OSError(errno.ENOSPC, "No space left on device.", "/runs/a/x.safetensors")
    assert os_error_sentence(exc, "write checkpoint") == (
        "could not write checkpoint '/runs/a/x.safetensors': No space left on device; free some disk space, then "
        "rerun (a training run continues with --resume)")
    assert os_error_sentence(OSError(errno.ENOENT, "No such file or directory", "/d")) == (
        "operating-system error on '/d': No such file or directory; check the path")


def test_os_error_sentence_read_only_file_system_says_write_elsewhere():
    # errors.py hints: EROFS -> "the file system is read-only: write elsewhere ..."; an errno without a hint gets
    # "check the path and rerun". kills: E1 (EROFS hint under another errno), E10 (no default hint)
    s = os_error_sentence(OSError(errno.EROFS, "Read-only file system", "/ro/run"), "write")
    assert s.startswith("could not write '/ro/run': Read-only file system; the file system is read-only: write elsewhere")
    assert os_error_sentence(OSError(errno.EIO, "Input/output error", "/disk")) == (
        "operating-system error on '/disk': Input/output error; check the path and rerun")


def test_os_error_sentence_names_a_path_even_without_an_errno():
    # Only "our own FileExistsError/FileNotFoundError sentences" (no errno AND no filename) are said as they are; an
    # error with a file name but no errno still names the path. kills: E4 (``and`` -> ``or``)
    exc = OSError(None, "cannot lock", "/runs/a")
    assert os_error_sentence(exc) == "operating-system error on '/runs/a': cannot lock; check the path and rerun"
    assert os_error_sentence(FileExistsError("run 'x' already exists; pass --overwrite")) == (
        "run 'x' already exists; pass --overwrite")


def test_is_out_of_memory_knows_both_allocators_messages():
    # docstring: a MemoryError, the CPU allocator's "can't allocate memory" or CUDA's "out of memory"; others are bugs.
    # kills: E5 (``or`` -> ``and`` between the two texts)
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:83] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 800000000000 bytes"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only a RuntimeError's text counts




# ----- cli: statuses and sentences -----------------------------------------------------------------------------
def _with_configs_raising(monkeypatch, exc):
    def fn(args):
        raise exc
    monkeypatch.setattr(cli, "cmd_configs", fn)


def test_sigterm_stop_is_status_143_said_by_rank_0_only(monkeypatch, capsys):
    # cli._run: "SIGTERM, checkpointed: said once (rank 0), with a shell's status for it": 128 + SIGTERM (15).
    # kills: C1 (128 + 2), C5 (said by the other ranks)
    _with_configs_raising(monkeypatch, TrainingStopped("stopped after update 7", 7, "r"))
    monkeypatch.setenv("RANK", "0")
    assert cli.main(["configs"]) == 143
    assert capsys.readouterr().err == "ebmlab: stopped after update 7\n"
    monkeypatch.setenv("RANK", "1")
    assert cli.main(["configs"]) == 143
    assert capsys.readouterr().err == ""


def test_ctrl_c_is_status_130_and_an_experiment_keeps_its_cells(monkeypatch, capsys):
    # 128 + SIGINT (2) = 130; _after_interrupt: an experiment's "finished cells are kept". kills: C2
    def fn(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "cmd_experiment", fn)
    assert cli.main(["experiment", "paper000"]) == 130
    assert capsys.readouterr().err == ("ebmlab: interrupted; its finished cells are kept (the same command again "
                                       "skips them)\n")


def test_after_interrupt_names_the_last_checkpoint_to_resume(tmp_path):
    # _after_interrupt: "a training run's last checkpoint ... or that it has none yet". kills: C18 (the two swapped)
    args = Namespace(fn=cli.cmd_train, run_dir=tmp_path / "r")
    assert cli._after_interrupt(args) == ("; no checkpoint was written yet, so start it again without --resume "
                                          "(the directory is reused)")
    ck = tmp_path / "r" / "checkpoints"
    ck.mkdir(parents=True)
    for step in (20, 40):
        (ck / f"step_{step:08d}.safetensors").write_bytes(b"x")
        (ck / f"step_{step:08d}.json").write_text("{}")
    assert cli._after_interrupt(args) == (f"; the last checkpoint, step_00000040.safetensors, is kept: continue with "
                                          f"ebmlab train --out {tmp_path / 'r'} --resume")


def test_a_user_error_names_the_rank_only_under_several_ranks(monkeypatch, capsys):
    # _fail: " (rank N)" only where WORLD_SIZE > 1. kills: C6 (>= 1)
    _with_configs_raising(monkeypatch, ValueError("bad thing"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert cli.main(["configs"]) == 2
    assert capsys.readouterr().err == "ebmlab: error: bad thing\n"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert cli.main(["configs"]) == 2
    assert capsys.readouterr().err == "ebmlab: error (rank 1): bad thing\n"


def test_extra_argument_hints():
    # _extra_hint: KEY=VALUE without a dash -> "--set once per key"; an unknown --option -> "config keys are set
    # with --set"; anything else -> no hint. kills: C7, C8
    assert cli._extra_hint(["eval.n_samples=200"]).startswith("; give --set once per key")
    assert cli._extra_hint(["--steps", "10"]).startswith("; config keys are set with --set SECTION.KEY=VALUE")
    assert cli._extra_hint(["--steps=10"]).startswith("; config keys are set with --set")
    assert cli._extra_hint(["junk"]) == ""


def test_sentence_is_one_line_and_quotes_a_missing_key():
    # _sentence: "one line, whatever the message held"; KeyError('x') -> "missing key 'x'" (repr), a KeyError
    # with a sentence (a space) as it is. kills: C9, C10, C23
    assert cli._sentence(ValueError("first line\n  second   line")) == "first line second line"
    assert cli._sentence(KeyError("weights")) == "missing key 'weights'"
    assert cli._sentence(KeyError("no such thing here")) == "no such thing here"
    exc = OSError(None, "cannot lock", "/runs/a")  # no errno, but a path: the OS sentence naming it
    assert cli._sentence(exc) == "operating-system error on '/runs/a': cannot lock; check the path and rerun"


def test_out_of_memory_fix_depends_on_the_command_and_keeps_120_characters(monkeypatch, capsys):
    # cli._run: sample's fix is "draw fewer (--n) or in batches (--batch-size B)", the others' "reduce
    # model.width, ..."; the allocator's text is cut to 120 characters. kills: C11, C12
    text = "CUDA out of memory. " + "x" * 300

    def sample(args):
        raise RuntimeError(text)

    def evaluate(args):
        raise RuntimeError(text)
    monkeypatch.setattr(cli, "cmd_sample", sample)
    monkeypatch.setattr(cli, "cmd_eval", evaluate)
    assert cli.main(["sample", "r"]) == 2
    assert capsys.readouterr().err == (f"ebmlab: error: ran out of memory; draw fewer (--n) or in batches "
                                       f"(--batch-size B) ({text[:120]})\n")
    assert cli.main(["eval", "r"]) == 2
    assert "reduce model.width, model.depth, train.batch_size or eval.n_samples" in capsys.readouterr().err


# ----- cli: the parser's defaults ------------------------------------------------------------------------------
def test_sample_and_train_defaults_as_documented():
    # cli docstring / README: sample --n 1000 --init noise --seed 0 --device cpu; a bare --resume continues (True),
    # --resume auto is "auto". kills: C13, C14, C15, C16, C17
    p = cli.build_parser()
    a = p.parse_args(["sample", "r"])
    assert (a.n, a.init, a.seed, a.device, a.steps, a.batch_size, a.out) == (1000, "noise", 0, "cpu", None, None, None)
    assert p.parse_args(["eval", "r"]).device == "cpu"
    assert p.parse_args(["train", "--resume"]).resume is True
    assert p.parse_args(["train", "--resume", "auto"]).resume == "auto"
    assert p.parse_args(["train"]).resume is False


def test_path_arguments_expand_the_home_directory():
    # cli._path: "``~`` expanded: a shell leaves --out=~/runs/x as it is". kills: C19
    a = cli.build_parser().parse_args(["sample", "~/runs/x", "--out=~/s.npy"])
    assert a.run == os.path.join(os.path.expanduser("~"), "runs", "x")
    assert a.out == os.path.join(os.path.expanduser("~"), "s.npy")


def test_ebmlabs_own_warnings_are_said_plainly():
    # _plain_warnings: ebmlab's warnings as "ebmlab: warning: ..."; other libraries' keep Python's form. kills: C20
    with cli._plain_warnings():
        ours = warnings.formatwarning("few samples", UserWarning, "/x/src/ebmlab/metrics.py", 3)
        theirs = warnings.formatwarning("deprecated", UserWarning, "/x/numpy/core.py", 3)
    assert ours == "ebmlab: warning: few samples\n"
    assert theirs.startswith("/x/numpy/core.py:3: UserWarning: deprecated")


def test_an_ascii_stdout_gets_escapes_not_an_encoding_error(monkeypatch):
    # _tolerant_stdout: where stdout cannot encode a character it is written as an escape. kills: C21
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stdout", out)
    cli._tolerant_stdout()
    print("mean ± std", file=out)
    out.flush()
    assert raw.getvalue() == b"mean \\xb1 std\n"


# ----- cli_commands --------------------------------------------------------------------------------------------
def test_seed_lists_refuse_repeats_and_name_their_option(monkeypatch, capsys):
    # _seed_list: "--seeds 0,1,2 -> (0, 1, 2); one sentence on a bad list", repeats refused, and the option named
    # as given (--data-seeds). kills: K1, K16
    from ebmlab.errors import ConfigError
    assert cli_commands._seed_list("0,1,2") == (0, 1, 2)
    with pytest.raises(ConfigError, match="must not repeat a seed"):
        cli_commands._seed_list("0,1,1")
    assert cli.main(["experiment", "data_defaults", "--data-seeds", "3,3"]) == 2
    assert "--data-seeds must not repeat a seed, got '3,3'" in capsys.readouterr().err


def test_experiment_default_out_is_runs_experiment_name(monkeypatch):
    # cli: "--out DIR ... default: runs/experiment_<NAME>"; the options passed through. kills: K14
    import ebmlab.experiments as experiments
    seen = {}
    monkeypatch.setattr(experiments, "run_experiment", lambda name, out, **kw: seen.update(name=name, out=out, **kw))
    assert cli.main(["experiment", "paper001", "--quick", "--seeds", "4,5", "--rescore"]) == 0
    assert seen == {"name": "paper001", "out": Path("runs/experiment_paper001"), "quick": True, "seeds": (4, 5),
                    "rescore": True}


def test_sample_out_file_names(tmp_path):
    # cli --out help: ".npy, or .csv for vectors ...; .npy is added to a FILE without a suffix"; other suffixes
    # refused. kills: K3, K4
    assert cli_commands._output_file(tmp_path / "draws") == tmp_path / "draws.npy"
    assert cli_commands._output_file(tmp_path / "d.csv") == tmp_path / "d.csv"
    with pytest.raises(ValueError, match="written as .npy or .csv"):
        cli_commands._output_file(tmp_path / "d.txt")


def test_sample_out_refuses_an_existing_png_beside_it(tmp_path):
    # --out: "an existing FILE or .png is refused without --overwrite". kills: K5, K6, K7
    out = tmp_path / "s.npy"
    cli_commands._not_replaced(out, False)  # nothing there
    (tmp_path / "s.png").write_bytes(b"png")
    with pytest.raises(ValueError) as e:
        cli_commands._not_replaced(out, False)
    assert str(e.value) == (f"--out {str(out)!r}: {str(tmp_path / 's.png')!r} already exists; pass --overwrite to "
                            "replace it, or choose another --out")
    cli_commands._not_replaced(out, True)  # --overwrite: allowed
    out.write_bytes(b"npy")
    with pytest.raises(ValueError, match="already exist; pass --overwrite to replace them"):
        cli_commands._not_replaced(out, False)


def test_csv_samples_round_trip_float32_exactly(tmp_path):
    # _write_samples: .csv "readable by --data and numpy.loadtxt"; "%.9g" is float32's round-trip precision (9
    # significant digits). kills: K8
    x = np.array([[0.123456789, -1234.5677], [1e-7 / 3, 3.0]], dtype=np.float32)
    cli_commands._write_samples(tmp_path / "s.csv", x)
    back = np.loadtxt(tmp_path / "s.csv", delimiter=",", dtype=np.float32)
    assert np.array_equal(back, x)


def test_default_out_is_runs_method_data():
    # cli: "--out DIR ... default: runs/<method>_<data>"; the defaults are hybrid on the rings. kills: K11
    args = Namespace(config=None)
    assert cli_commands._default_out(args, []) == Path("runs/hybrid_rings")
    assert cli_commands._default_out(args, ["method.name=noise", "data.name=spiral"]) == Path("runs/noise_spiral")


def test_data_name_and_a_different_set_data_name_are_refused():
    # _train_overrides: "--data X and --set data.name=Y name two datasets: give one" whichever --set came last.
    # kills: K13
    from ebmlab.errors import DataError
    args = Namespace(set=["data.name=spiral", "data.name=rings"], data="rings", config=None, resume=False)
    with pytest.raises(DataError, match="name two datasets"):
        cli_commands._train_overrides(args)
    args = Namespace(set=["data.name=rings"], data="rings", config=None, resume=False)
    assert cli_commands._train_overrides(args) == ["data.name=rings", "data.name=rings"]


def test_weights_named_as_used():
    # _weights: "its EMA when it keeps one (train.ema), else the trained ones". kills: K18
    def cfg(ema):
        return SimpleNamespace(train=SimpleNamespace(ema=ema))
    assert cli_commands._weights(cfg(0.999)) == "EMA weights"
    assert cli_commands._weights(cfg(None)) == "weights: train.ema is off"


def test_sample_n_zero_is_refused_before_the_run_is_opened(tmp_path, capsys):
    # --n is "number of samples": a positive integer, checked before any work. kills: K20
    assert cli.main(["sample", str(tmp_path / "nothing"), "--n", "0"]) == 2
    assert capsys.readouterr().err == "ebmlab: error: --n must be a positive integer, got 0\n"


def test_configs_list_aligns_the_descriptions(capsys):
    # cmd_configs: each name padded to the longest, then two spaces and the first comment line. kills: K23
    from ebmlab.config import shipped_configs
    assert cli.main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    width = max(map(len, shipped_configs()))
    assert len(lines) == len(shipped_configs())
    for line, name in zip(lines, shipped_configs()):
        assert line.startswith(name.ljust(width) + "  ") and line[width + 2] != " ", line


# ----- training/run.py ---------------------------------------------------------------------------------------------
def _checkpoints(run_dir: Path, steps) -> None:
    ck = run_dir / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    for step in steps:
        (ck / f"step_{step:08d}.safetensors").write_bytes(b"x")
        (ck / f"step_{step:08d}.json").write_text("{}")


def test_checkpoint_argument_forms(tmp_path):
    # --checkpoint: "a path or a name in RUN/checkpoints/, with or without .safetensors, or a step number".
    # kills: R4 (no .safetensors added), R5 (``or`` -> ``and``)
    from ebmlab.training.run import _checkpoint_path
    _checkpoints(tmp_path, [40])
    want = tmp_path / "checkpoints" / "step_00000040.safetensors"
    assert _checkpoint_path(tmp_path, "step_00000040") == want
    assert _checkpoint_path(tmp_path, "step_00000040.safetensors") == want
    assert _checkpoint_path(tmp_path, 40) == want
    assert _checkpoint_path(tmp_path, "40") == want
    assert _checkpoint_path(tmp_path, "elsewhere/step_00000040") == Path("elsewhere/step_00000040")  # a path as given


def test_missing_checkpoint_lists_five_in_full_and_six_with_an_ellipsis(tmp_path):
    # _missing_checkpoint: the first three, "..." and the last two where more than five. kills: R6 (> 5 -> > 4)
    from ebmlab.training.run import _missing_checkpoint
    _checkpoints(tmp_path, [10, 20, 30, 40, 50])
    s = _missing_checkpoint(tmp_path, Path("step_00000099.safetensors"))
    assert "the run's are step_00000010.safetensors, step_00000020.safetensors, step_00000030.safetensors, " \
           "step_00000040.safetensors, step_00000050.safetensors (a file name" in s
    _checkpoints(tmp_path, [60])
    s = _missing_checkpoint(tmp_path, Path("x"))
    assert "step_00000030.safetensors, ..., step_00000050.safetensors, step_00000060.safetensors (" in s


def test_a_run_dir_that_is_a_file_or_missing_is_said_so(tmp_path):
    # read_run_raw: "it is a file: give the run's directory" / "it does not exist". kills: R7
    from ebmlab.training.run import read_run_raw
    with pytest.raises(RunNotFound, match=r"\(it does not exist\)"):
        read_run_raw(tmp_path / "none")
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunNotFound, match=r"\(it is a file: give the run's directory\)"):
        read_run_raw(tmp_path / "f")


def test_only_leftovers_needs_every_entry_to_be_a_temp_file(tmp_path):
    # only_leftovers: "only ebmlab's atomic writes' temp files of its top level". kills: R11 (all -> any)
    from ebmlab.training.run import only_leftovers
    tmp = tmp_path / ".0123abcd.config.yaml.tmp"
    tmp.write_text("")
    mine = tmp_path / "notes.txt"
    mine.write_text("")
    assert only_leftovers([tmp])
    assert not only_leftovers([tmp, mine])


def test_device_names_must_match_whole(tmp_path):
    # resolve_device: "auto | cpu | cuda | cuda:N | mps", ConfigError otherwise. kills: R2 (no ``$`` anchor)
    from ebmlab.errors import ConfigError
    from ebmlab.training.run import resolve_device
    assert str(resolve_device("cpu")) == "cpu"
    with pytest.raises(ConfigError, match="is not one of auto, cpu, cuda, cuda:N or mps"):
        resolve_device("cpu0")


def test_last_changes_is_the_last_row(tmp_path):
    # _last_changes: "The ``changes`` of the file's last row". kills: R10 (lines[-1] -> lines[0])
    from ebmlab.training.run import _last_changes
    p = tmp_path / "config_changes.jsonl"
    p.write_text('{"changes": {"train.steps": {"old": 1, "new": 2}}}\n{"changes": {"train.steps": {"old": 2, "new": 3}}}\n')
    assert _last_changes(p) == {"train.steps": {"old": 2, "new": 3}}
    assert _last_changes(tmp_path / "none") is None


def test_an_os_error_is_a_user_error_of_one_sentence(monkeypatch, capsys):
    # cli docstring: user errors print one sentence and exit 2; _user_errors lists OSError (_sentence: "OS errors:
    # what failed, where, what to do"). kills: C22 (OSError dropped: a traceback)
    _with_configs_raising(monkeypatch, PermissionError(errno.EACCES, "Permission denied", "/runs/x"))
    monkeypatch.delenv("EBMLAB_DEBUG", raising=False)
    assert cli.main(["configs"]) == 2
    assert capsys.readouterr().err == ("ebmlab: error: operating-system error on '/runs/x': Permission denied; check "
                                       "the permissions or choose another path\n")


def test_help_says_a_flags_default_is_off():
    # cli docstring: "Every command's --help lists its arguments with their defaults"; _Formatter: "a flag's is
    # 'off'". kills: C25
    text = " ".join(cli.build_parser().command_parsers["sample"].format_help().split())
    assert "replace an existing --out FILE and the .png of the same name beside it (default: off)" in text


def test_resume_with_overwrite_is_refused_before_anything(tmp_path):
    # cmd_train: "--resume continues a run and --overwrite replaces it; pass only one of them". kills: K12
    from ebmlab.errors import ConfigError
    args = cli.build_parser().parse_args(["train", "--out", str(tmp_path / "r"), "--resume", "--overwrite"])
    with pytest.raises(ConfigError, match="pass only one of them"):
        cli_commands.cmd_train(args)
    assert not (tmp_path / "r").exists()


def test_a_sidecar_fingerprint_is_not_compared_with_a_run_that_records_none(tmp_path):
    # check_checkpoint_data: refused only where both record a fingerprint and they differ (data_sha_meta: "the key is
    # optional"; a toy's run.json has none). kills: R12
    from ebmlab.training.run import check_checkpoint_data
    check_checkpoint_data({"data_sha256": "ab" * 32}, tmp_path, tmp_path / "checkpoints" / "step_00000001.safetensors")


def test_a_sidecar_with_the_runs_run_hash_is_accepted():
    # run.py docstring: every sidecar stores config_hash (Config.run_hash: the config without the keys a resumed run
    # may change), compared with config.yaml on every load; train.steps may change on --resume. kills: R15
    from ebmlab.training.config import load_config
    from ebmlab.training.run import check_config_hash
    old = load_config(None, ["train.steps=5"])
    new = load_config(None, ["train.steps=9"])
    check_config_hash({"config_hash": old.run_hash()}, new, Path("step_00000005.safetensors"))


def _fake_sample(monkeypatch, tmp_path, levels: int = 1):
    """cmd_sample around a stand-in objective: only the file naming and the messages are exercised."""
    import torch

    import ebmlab.plots as plots
    import ebmlab.training.drawing as drawing

    class Obj(torch.nn.Module):
        num_classes = 3
        sample_levels = levels

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def steps_run(self, n):
            return 10 if n is None else -(-n // levels) * levels

    data = SimpleNamespace(kind="vector", transform=SimpleNamespace(to_data=lambda x: x), test=None)
    run = SimpleNamespace(objective=Obj(), data=data, cfg=SimpleNamespace(train=SimpleNamespace(ema=None)),
                          checkpoint=Path("c"), step=1)
    monkeypatch.setattr(cli_commands, "_open", lambda args, need_data=True: run)
    monkeypatch.setattr(drawing, "draw", lambda obj, n, g, **kw: SimpleNamespace(x=torch.zeros(n, 2)))
    monkeypatch.setattr(drawing, "run_label", lambda label, run_dir, k: (int(label), label))
    monkeypatch.setattr(plots, "sample_scatter", lambda *a, **kw: None)
    (tmp_path / "run").mkdir()


def test_sample_default_file_name_carries_label_and_guidance(monkeypatch, tmp_path, capsys):
    # --out help: "default: RUN/samples/samples_<init>_<steps>steps_seed<seed>.npy, with _label<K> and _w<W> before
    # .npy where given" (W as %g: 2.0 -> 2). kills: K9, K10
    _fake_sample(monkeypatch, tmp_path)
    run = tmp_path / "run"
    assert cli.main(["sample", str(run), "--n", "4", "--seed", "7", "--label", "1", "--guidance", "2.0"]) == 0
    assert (run / "samples" / "samples_noise_10steps_seed7_label1_w2.npy").is_file()


def test_sample_says_when_steps_were_rounded_up_to_whole_levels(monkeypatch, tmp_path, capsys):
    # cmd_sample: "--steps rounded up to whole levels" said where the steps that ran differ from --steps; nothing
    # where they are the same. kills: K22
    _fake_sample(monkeypatch, tmp_path, levels=4)
    run = tmp_path / "run"
    assert cli.main(["sample", str(run), "--n", "2", "--steps", "10"]) == 0
    assert "(12 sampler steps, --steps 10 rounded up to whole levels (4))" in capsys.readouterr().out
    assert cli.main(["sample", str(run), "--n", "2", "--steps", "12"]) == 0
    assert capsys.readouterr().out.endswith("(12 sampler steps)\n")
