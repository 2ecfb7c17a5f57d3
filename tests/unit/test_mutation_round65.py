"""Mutation round 65 (docs/testing.md "A fourteenth mutation round"): one-line bugs planted in the config readers
and checks (``config_files``, ``config_checks``, ``config_hash``), the atomic writes (``files``), the run lock and
run directories (``training/lock``, ``training/run_dir``) and the image loaders (``data/safe_pickle``,
``data/images``) that the earlier tests let pass. Each test asserts a known answer worked out by hand from the
documented rule (docstrings, README); the mutant each one kills is named in a comment above it."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from ebmlab.errors import ConfigError


# ----- config_files ---------------------------------------------------------------------------------------
# kills: `len(text) > MAX_CONFIG_BYTES` -> `>=` (a config of exactly the limit is "not more than a config may hold")
def test_yaml_of_exactly_the_limit_is_read():
    from ebmlab.config_files import MAX_CONFIG_BYTES, yaml_load

    head = "a: 1\n#"
    text = head + "x" * (MAX_CONFIG_BYTES - len(head))
    assert len(text) == MAX_CONFIG_BYTES
    assert yaml_load(text, "t") == {"a": 1}
    with pytest.raises(ConfigError, match="more than a config may hold"):
        yaml_load(text + "x", "t")


# kills: the YAML 1.1 octal / base-60 check dropped from construct_yaml_float (1:30.5 is base 60 = 90.5 in YAML 1.1)
def test_a_base_60_float_is_refused():
    from ebmlab.config_files import yaml_load

    with pytest.raises(ConfigError, match="base-60"):
        yaml_load("lr: 1:30.5\n", "t")


# kills: the duplicate key's line number off by one (PyYAML marks count from 0; the message says the file's line)
def test_a_duplicate_key_names_its_own_line():
    from ebmlab.config_files import yaml_load

    with pytest.raises(ConfigError, match=r"again on line 3\)"):
        yaml_load("a: 1\nb: 2\na: 3\n", "t")


# kills: config_description's `.rstrip(",:")` dropped ("the first comment line ... without its #": a trailing colon
# of "# Paper 004, rings:" is punctuation of the comment, not of the description `ebmlab configs` lists)
def test_config_description_drops_trailing_colon():
    from ebmlab.config_files import config_description

    assert config_description("# Paper 004, rings:\ndata:\n  name: rings\n") == "Paper 004, rings"


# kills: config_description's `break` at the first non-comment line dropped ("empty if the file starts otherwise")
def test_config_description_is_empty_when_the_file_starts_with_a_key():
    from ebmlab.config_files import config_description

    assert config_description("\n\ndata:\n  name: rings\n# a comment further down\n") == ""


# kills: resolve_config without `.expanduser()` (a path written ~/configs/x.yaml is the user's home, as a shell reads it)
def test_resolve_config_expands_the_home_folder(tmp_path, monkeypatch):
    from ebmlab.config_files import resolve_config

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mine.yaml").write_text("train:\n  steps: 3\n", encoding="utf-8")
    where, text = resolve_config("~/mine.yaml")
    assert Path(where) == tmp_path / "mine.yaml"
    assert text == "train:\n  steps: 3\n"


# kills: `p.suffix.lower()` -> `p.suffix` (Model.YAML names a file, not a shipped config: "does not exist")
def test_an_upper_case_yaml_suffix_is_read_as_a_path(tmp_path, monkeypatch):
    from ebmlab.config_files import resolve_config

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="config file 'Model.YAML' does not exist"):
        resolve_config("Model.YAML")


# kills: the exponent float resolver's `[eE]` -> `[e]` (YAML 1.2 and every user read 1E-4 as a number)
def test_an_upper_case_exponent_is_a_float():
    from ebmlab.config_files import yaml_load

    assert yaml_load("lr: 1E-4\n", "t") == {"lr": 0.0001}


# kills: the anchor check reduced to aliases (an anchor alone, `&x 1`, is refused too: configs take no anchors)
def test_an_anchor_without_an_alias_is_refused():
    from ebmlab.config_files import yaml_load

    with pytest.raises(ConfigError, match="anchor or alias"):
        yaml_load("a: &x 1\nb: 2\n", "t")


# ----- config_checks --------------------------------------------------------------------------------------
# kills: short's `<= 80` -> `< 80` (a repr of exactly 80 characters is kept whole; longer is cut to 77 + "...")
def test_short_keeps_a_repr_of_eighty_characters():
    from ebmlab.config_checks import short

    s = "x" * 78  # repr adds the two quotes: 80 characters
    assert short(s) == repr(s)
    assert short(s + "y") == repr(s + "y")[:77] + "..."


# kills: check_finite reading only lists, not tuples (a public check: torch's betas=(0.9, nan) spelling is a tuple)
def test_check_finite_looks_inside_a_tuple():
    from ebmlab.config_checks import check_finite

    check_finite("train.betas", (0.9, 0.99))
    with pytest.raises(ConfigError, match="train.betas must be a finite number, got nan"):
        check_finite("train.betas", (0.9, float("nan")))


# kills: check_magnitude's `>= 2 ** 62` -> `>` (the rule is |value| < 2^62: 2^62 itself is refused)
def test_check_magnitude_refuses_two_to_the_62():
    from ebmlab.config_checks import check_magnitude

    check_magnitude("train.steps", 2 ** 62 - 1)
    check_magnitude("train.steps", [1, -(2 ** 62 - 1)])
    with pytest.raises(ConfigError, match=r"\|value\| < 2\^62"):
        check_magnitude("train.steps", 2 ** 62)
    with pytest.raises(ConfigError):
        check_magnitude("model.channels", [8, -(2 ** 62)])


# kills: positive_ints' `c >= 1` -> `c >= 0` (a channel width of 0 is not a positive integer)
def test_a_zero_channel_width_is_refused():
    from ebmlab.config_checks import positive_ints
    from ebmlab.training.config import load_config

    assert positive_ints([8, 16]) and not positive_ints([8, 0]) and not positive_ints([])
    with pytest.raises(ConfigError, match="model.channels must be a non-empty list of positive integers"):
        load_config(None, ["model.channels=[8, 0]"])


# kills: the device pattern `cuda(:\d+)?` -> `cuda(:\d*)?` ("auto, cpu, cuda, cuda:N or mps": "cuda:" names no device)
def test_cuda_colon_without_an_index_is_refused():
    from ebmlab.training.config import load_config

    assert load_config(None, ["train.device=cuda:1"]).train.device == "cuda:1"
    with pytest.raises(ConfigError, match="train.device must be auto, cpu, cuda, cuda:N or mps"):
        load_config(None, ["train.device='cuda:'"])  # quoted: unquoted, YAML reads `cuda:` as a mapping


# ----- config_hash ----------------------------------------------------------------------------------------
class _Cfg:
    def __init__(self, raw):
        self.raw = raw

    def to_dict(self):
        return self.raw


# kills: config_changes over `set(a) & set(b)` ("every key that differs": one only one config has differs too,
# e.g. a method section's keys when the method changes)
def test_config_changes_lists_keys_only_one_config_has():
    from ebmlab.config_hash import config_changes

    old = _Cfg({"method": {"name": "dsm", "sigma": 0.1}, "train": {"steps": 5}})
    new = _Cfg({"method": {"name": "nce", "noise_std": 1.0}, "train": {"steps": 5}})
    assert config_changes(old, new) == {"method.name": ("dsm", "nce"), "method.noise_std": (None, 1.0),
                                        "method.sigma": (0.1, None)}


# kills: full_hash without sort_keys (a hash of the mapping, not of the order its keys were written in)
def test_full_hash_does_not_depend_on_key_order():
    import hashlib

    from ebmlab.config_hash import full_hash

    a = {"train": {"steps": 5, "lr": 0.001}, "data": {"name": "rings"}}
    b = {"data": {"name": "rings"}, "train": {"lr": 0.001, "steps": 5}}
    want = hashlib.sha256(b'{"data": {"name": "rings"}, "train": {"lr": 0.001, "steps": 5}}').hexdigest()[:16]
    assert full_hash(a) == full_hash(b) == want


# ----- files ----------------------------------------------------------------------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# kills: user_path without expanduser ("never a folder literally named ~")
def test_user_path_expands_the_home_folder(tmp_path, monkeypatch):
    from ebmlab.files import user_path

    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_path("~/runs/x") == tmp_path / "runs" / "x"


# kills: file_mode's `0o666` -> `0o777` (the mode open() gives a new file: 0644 under umask 022)
def test_file_mode_under_umask_022(umask_022):
    from ebmlab.files import file_mode

    assert file_mode() == 0o644


# kills: temp_path's `> 255` -> `> 256` (".<8 hex>.NAME.tmp" of 256 bytes passes the file system's 255)
def test_temp_path_is_shortened_at_256_bytes(tmp_path):
    from ebmlab.files import temp_path

    fits = "a" * (255 - 14)   # "." + 8 hex + "." + name + ".tmp" = 14 bytes around the name
    assert len(temp_path(tmp_path / fits).name) == 255
    over = "a" * (256 - 14)
    t = temp_path(tmp_path / over).name
    assert len(os.fsencode(t)) <= 255
    assert t.startswith(".") and t.endswith(".tmp") and ("a" * 64 + ".") in t and ("a" * 65) not in t


# kills: with_temps without the older `NAME.tmp` leftovers
def test_with_temps_matches_the_older_leftover_name():
    from ebmlab.files import with_temps

    pat = with_temps(r"run\.json")
    assert pat.fullmatch("run.json") and pat.fullmatch("run.json.tmp") and pat.fullmatch(".0123abcd.run.json.tmp")
    assert not pat.fullmatch("run.json.bak")


# kills: is_temp_file's `p.is_symlink() or` dropped (a link named *.tmp is a write's leftover name even where it
# points to a folder; only a real folder so named is the user's)
def test_a_link_named_tmp_to_a_folder_is_a_temp_file(tmp_path):
    from ebmlab.files import is_temp_file

    (tmp_path / "d").mkdir()
    (tmp_path / "x.tmp").symlink_to(tmp_path / "d")
    (tmp_path / "real.tmp").mkdir()
    assert is_temp_file(tmp_path / "x.tmp")
    assert not is_temp_file(tmp_path / "real.tmp")


# kills: atomic_write_all removing the old set's later files from `temps[2:]` (the old set's later files go before
# the first rename: a kill between the renames leaves a set without its last file, never a mixed one)
def test_atomic_write_all_removes_every_later_old_file_before_the_first_rename(tmp_path, monkeypatch):
    import ebmlab.files as files

    names = [tmp_path / n for n in ("a.bin", "b.json", "c.json")]
    for p in names:
        p.write_text("old", encoding="utf-8")

    def killed(src, dst):
        raise KeyboardInterrupt  # the process dies at its first rename

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_write_all([(p, lambda t: t.write_text("new", encoding="utf-8")) for p in names])
    assert names[0].read_text(encoding="utf-8") == "old"
    assert not names[1].exists() and not names[2].exists()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.bin"]  # and no temp file left


# kills: the duplicate check on the paths as spelled, not absolute ("x" and "./x" are one file)
def test_atomic_write_all_refuses_one_file_spelled_twice(tmp_path, monkeypatch):
    from ebmlab.files import atomic_write_all

    monkeypatch.chdir(tmp_path)
    w = lambda t: t.write_text("x", encoding="utf-8")  # noqa: E731
    with pytest.raises(ValueError, match="a file given twice"):
        atomic_write_all([("x.json", w), (str(tmp_path / "x.json"), w)])
    assert list(tmp_path.iterdir()) == []


# kills: _written not renaming the temp file to the target in an OSError ("an error names the file being written")
def test_an_error_writing_names_the_target_not_its_temp_file(tmp_path):
    from ebmlab.files import atomic_write

    def write(tmp):
        raise OSError(28, "No space left on device", str(tmp))

    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "run.json", write)
    assert info.value.filename == str(tmp_path / "run.json")
    assert list(tmp_path.iterdir()) == []


# kills: the chmod of the temp file dropped (a writer that creates its file 0600 still leaves open()'s mode, 0644)
def test_atomic_write_gives_open_s_mode(tmp_path, umask_022):
    from ebmlab.files import atomic_write

    def write(tmp):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)

    atomic_write(tmp_path / "f.bin", write)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


# ----- training/lock --------------------------------------------------------------------------------------
# kills: _alive without the zombie check ("exists on this host and is not a zombie")
@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_a_zombie_is_not_alive():
    import subprocess
    import time

    from ebmlab.training.lock import _alive

    child = subprocess.Popen(["true"])
    try:
        for _ in range(200):  # until it has exited (not yet reaped: a zombie)
            with open(f"/proc/{child.pid}/stat", encoding="utf-8") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        assert not _alive(child.pid)
    finally:
        child.wait()
    assert _alive(os.getpid())


# kills: _pid taking JSON's true for pid 1 ("JSON's true is a Python int, not a pid")
def test_a_lock_file_naming_pid_true_names_no_pid():
    from ebmlab.training.lock import _pid

    assert _pid({"pid": True}) is None and _pid({"pid": 7}) == 7 and _pid({"pid": "7"}) is None


def _held(path: Path, info: dict):
    """``path`` written with ``info`` and flock'ed by a handle of its own (as a running holder's)."""
    import fcntl

    path.write_text(json.dumps(info), encoding="utf-8")
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


# kills: holder(training=True)'s default for a lock file without "doing" ("or one whose lock file is too old to say")
@pytest.mark.skipif(os.name == "nt", reason="flock")
def test_holder_training_counts_an_old_lock_file_without_doing(tmp_path):
    from ebmlab.training.lock import LOCK_NAME, holder

    fd = _held(tmp_path / LOCK_NAME, {"pid": 4242, "host": "elsewhere.example"})
    try:
        assert holder(tmp_path, training=True) == "pid 4242 on host elsewhere.example"
    finally:
        os.close(fd)
    fd = _held(tmp_path / LOCK_NAME, {"pid": 4242, "host": "elsewhere.example", "doing": "evaluating"})
    try:
        assert holder(tmp_path, training=True) is None
        assert holder(tmp_path) == "pid 4242 on host elsewhere.example, evaluating"
    finally:
        os.close(fd)


# kills: `pid != os.getpid()` dropped (a lock file naming this very process, whose lock nobody holds, is taken over:
# a killed trainer's pid may live on reused, even as this process)
def test_a_free_lock_file_naming_this_process_is_taken_over(tmp_path):
    from ebmlab.training.lock import LOCK_NAME, RunLock

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
    lock = RunLock.acquire(tmp_path)
    try:
        assert json.loads((tmp_path / LOCK_NAME).read_text(encoding="utf-8"))["doing"] == "training"
    finally:
        lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


# kills: the other-host refusal without `not flocked` (with flock, an unlocked file of another host's trainer is a
# killed one's: "the lock of a killed trainer ... is released by the system")
@pytest.mark.skipif(os.name == "nt", reason="flock")
def test_a_free_lock_file_of_another_host_is_taken_over(tmp_path):
    from ebmlab.training.lock import LOCK_NAME, RunLock

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "elsewhere.example"}), encoding="utf-8")
    lock = RunLock.acquire(tmp_path, doing="evaluating")
    try:
        info = json.loads((tmp_path / LOCK_NAME).read_text(encoding="utf-8"))
        assert (info["pid"], info["host"], info["doing"]) == (os.getpid(), socket.gethostname(), "evaluating")
    finally:
        lock.release()


# kills: release unlinking run.lock when it is no longer its own file (a newcomer's lock file must stay)
@pytest.mark.skipif(os.name == "nt", reason="an open file cannot be replaced on Windows")
def test_release_leaves_a_replaced_lock_file(tmp_path):
    from ebmlab.training.lock import LOCK_NAME, RunLock

    lock = RunLock.acquire(tmp_path)
    (tmp_path / LOCK_NAME).unlink()
    (tmp_path / LOCK_NAME).write_text('{"pid": 1}', encoding="utf-8")  # another process's, made meanwhile
    lock.release()
    assert (tmp_path / LOCK_NAME).read_text(encoding="utf-8") == '{"pid": 1}'


# ----- training/run_dir -----------------------------------------------------------------------------------
# kills: the checkpoint names' `step_\d{8}` widened (training names its checkpoints step_ + 8 digits; a user's
# step_1234567.json in checkpoints/ is not one of them and --overwrite keeps it)
def test_train_files_name_checkpoints_with_eight_digits():
    from ebmlab.training.run_dir import TRAIN_FILES

    pat = TRAIN_FILES["checkpoints"]
    assert pat.fullmatch("step_00000100.safetensors") and pat.fullmatch("step_00000100.rank1.json")
    assert not pat.fullmatch("step_0000100.json") and not pat.fullmatch("step_000000100.json")


# kills: _written's `len(rel) == 2` -> `>= 2` (a file in a sub-folder of samples/ is the user's, not the run's)
def test_a_file_deeper_in_a_run_folder_is_not_written_by_the_run(tmp_path):
    from ebmlab.training.run_dir import _written

    assert _written(tmp_path / "samples" / "samples.npy", tmp_path) == ("samples", "samples.npy")
    assert _written(tmp_path / "samples" / "mine" / "samples.npy", tmp_path) == ()
    assert _written(tmp_path / "plots" / "density.png" / "x.png", tmp_path) == ()  # a folder so named is the user's
    assert _written(tmp_path / "tb" / "a" / "b", tmp_path) == ("tb", "a", "b")


# kills: holds() without the hidden-folder exception ("no hidden folder between": the image walk skips them)
def test_a_run_in_a_hidden_folder_of_the_data_is_not_held(tmp_path):
    from ebmlab.training.run_dir import holds

    assert holds(tmp_path, tmp_path / "sub" / "run")
    assert not holds(tmp_path, tmp_path / ".runs" / "run")


# kills: _remove_train_files not removing the folder it emptied ("the folder too when that empties it")
def test_remove_train_files_removes_the_folder_it_empties(tmp_path):
    from ebmlab.training.run_dir import TRAIN_FILES, _remove_train_files

    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "density.png").write_bytes(b"x")
    assert _remove_train_files(plots, TRAIN_FILES["plots"], frozenset()) == []
    assert not plots.exists()
    plots.mkdir()
    (plots / "density.png").write_bytes(b"x")
    (plots / "mine.png").write_bytes(b"x")
    assert _remove_train_files(plots, TRAIN_FILES["plots"], frozenset()) == [plots / "mine.png"]
    assert sorted(p.name for p in plots.iterdir()) == ["mine.png"]


# kills: _clear_temps without its `.tmp` test (a resumed run loses only a killed process's temp files, never its
# checkpoints)
def test_clear_temps_keeps_the_checkpoints(tmp_path):
    from ebmlab.training.run_dir import _clear_temps

    ck = tmp_path / "checkpoints"
    ck.mkdir()
    for n in ("step_00000010.safetensors", "step_00000010.json", ".0123abcd.step_00000020.json.tmp"):
        (ck / n).write_bytes(b"x")
    _clear_temps(tmp_path)
    assert sorted(p.name for p in ck.iterdir()) == ["step_00000010.json", "step_00000010.safetensors"]


# ----- data/images, data/safe_pickle ----------------------------------------------------------------------
# kills: the held-out count off by one (min(n_test, N // 10), at least 1: 19 images hold out 1)
def test_split_holds_out_a_tenth_rounded_down():
    from ebmlab.data.images import _split

    for n, n_test, k in ((19, 100, 1), (20, 100, 2), (2, 100, 1), (1000, 7, 7)):
        tr, te = _split(n, n_test, 0, "w")
        assert (len(tr), len(te)) == (n - k, k)
        assert sorted(tr.tolist() + te.tolist()) == list(range(n))


# kills: the negative-label check loosened (-1 "unlabelled" marks are refused)
def test_a_minus_one_label_is_refused(tmp_path):
    from ebmlab.data.images import _class_labels
    from ebmlab.errors import DataError

    with pytest.raises(DataError, match="hold -1"):
        _class_labels(np.array([0, 1, -1]), 3, tmp_path / "x.npz")


# kills: fractional labels accepted ("whole class indices 0, 1, ...": 0.5 is no class)
def test_fractional_labels_are_refused(tmp_path):
    from ebmlab.data.images import _class_labels
    from ebmlab.errors import DataError

    assert _class_labels(np.array([0.0, 2.0]), 2, tmp_path / "x.npz").tolist() == [0, 2]
    with pytest.raises(DataError, match="whole class indices"):
        _class_labels(np.array([0.0, 0.5]), 2, tmp_path / "x.npz")


# kills: 16-bit scaling by floor instead of round (v * 255/65535 to the nearest code: 32768 -> 127.50... -> 128)
def test_sixteen_bit_grey_rounds_to_the_nearest_code(tmp_path):
    from PIL import Image

    from ebmlab.data.images import _read_image

    v = np.array([[0, 32768, 65535, 257]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "g.png")
    x = _read_image(tmp_path / "g.png", "L", None, None)
    assert x.dtype.is_floating_point is False
    assert x.reshape(-1).tolist() == [0, 128, 255, 1]


# kills: _opaque compositing on black, not white (transparent pixels show as white, as viewers show them)
def test_a_transparent_pixel_reads_white(tmp_path):
    from PIL import Image

    from ebmlab.data.images import _read_image

    a = np.zeros((1, 2, 4), dtype=np.uint8)
    a[0, 0] = (10, 20, 30, 255)  # opaque
    a[0, 1] = (0, 0, 0, 0)       # fully transparent black
    Image.fromarray(a, "RGBA").save(tmp_path / "t.png")
    x = _read_image(tmp_path / "t.png", "RGB", None, None)
    assert x[0, :, 0, 0].tolist() == [10, 20, 30]
    assert x[0, :, 0, 1].tolist() == [255, 255, 255]


# kills: hidden files read as images, and the suffix compared case-sensitively (IMAGE_SUFFIXES; ._x.png forks skipped)
def test_image_files_skip_hidden_and_take_upper_case_suffixes(tmp_path):
    from ebmlab.data.images import _image_files

    for n in ("a.png", "B.PNG", "._a.png", ".c.png", "notes.txt"):
        (tmp_path / n).write_bytes(b"x")
    assert sorted(p.name for p in _image_files(tmp_path)) == ["B.PNG", "a.png"]


# kills: an image array's num_classes as max label, not max + 1 (labels 0..K-1 are K classes)
def test_npy_num_classes_is_the_largest_label_plus_one(tmp_path):
    from types import SimpleNamespace

    from ebmlab.data.images import _npy

    x = np.zeros((20, 4, 4, 1), dtype=np.uint8)
    y = np.array([0, 1, 2] * 6 + [0, 1])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cfg = SimpleNamespace(name="npy", path=str(tmp_path / "d.npz"), n_test=100, seed=0, image_size=None, channels=None,
                          classes=None, hflip=None, crop=None)
    assert _npy(cfg).num_classes == 3


# kills: SVHN's label 10 not read as digit 0 (y (N, 1) "with 10 meaning digit 0")
def test_svhn_label_ten_is_digit_zero(tmp_path):
    from scipy.io import savemat

    from ebmlab.data.images import read_svhn_mat

    savemat(tmp_path / "s.mat", {"X": np.zeros((32, 32, 3, 3), dtype=np.uint8), "y": np.array([[10], [1], [9]])})
    x, y = read_svhn_mat(tmp_path / "s.mat")
    assert tuple(x.shape) == (3, 3, 32, 32) and y.tolist() == [0, 1, 9]


def _started_run(tmp_path, best_step: int, logged: list[int]):
    """A run of 100 steps, a checkpoint every 50, whose only checkpoint file is a best of ``best_step`` and whose
    log holds rows at the steps ``logged``."""
    from ebmlab.training.config import load_config, save_config

    save_config(load_config(None, ["train.steps=100", "train.checkpoint_every=50"]), tmp_path / "config.yaml")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.safetensors").write_bytes(b"x")
    (tmp_path / "checkpoints" / "best.json").write_text(json.dumps({"step": best_step}), encoding="utf-8")
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.0}) + "\n" for s in logged),
                                            encoding="utf-8")
    return tmp_path


# kills: `step <= min(checkpoint_every, steps)` -> `<` (a best at the first checkpoint's own step, 50, is written
# before that checkpoint: a start killed then holds no result; "<=: a best is written first")
def test_a_best_at_the_first_checkpoint_step_of_an_unfinished_run_is_no_result(tmp_path):
    from ebmlab.training.run_dir import has_result

    assert not has_result(_started_run(tmp_path, 50, [10, 20, 50]))


# kills: `row["step"] >= tc.steps` -> `>` (a run whose log reached its last update, step 100 of 100, finished: its
# best is its result even where its step checkpoints were deleted)
def test_a_finished_run_keeps_its_early_best_as_a_result(tmp_path):
    from ebmlab.training.run_dir import has_result

    assert has_result(_started_run(tmp_path, 50, [10, 50, 100]))


def _old_run(tmp_path):
    for n in ("config.yaml", "metrics.json", "metrics.jsonl", "data.npy"):
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step_00000010.json").write_bytes(b"x")
    return tmp_path


# kills: _remove_run_files deleting config.yaml (kept: the new run's replaces it atomically)
def test_overwrite_clearing_keeps_config_yaml(tmp_path):
    from ebmlab.training.run_dir import _remove_run_files

    _remove_run_files(_old_run(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


# kills: _CLEARING_ORDER's metrics.json moved last (the result goes first, the marks of a run, checkpoints/ then
# metrics.jsonl, last: a kill at any point leaves a run --overwrite clears again, never a result without its run)
def test_overwrite_clears_the_result_first_and_the_run_marks_last(tmp_path, monkeypatch):
    import ebmlab.training.run_dir as rd

    order, real = [], rd._remove
    monkeypatch.setattr(rd, "_remove", lambda p, keep: (order.append(p.name), real(p, keep)))
    rd._remove_run_files(_old_run(tmp_path))
    assert order == ["metrics.json", "data.npy", "step_00000010.json", "metrics.jsonl"]
