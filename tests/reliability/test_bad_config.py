"""Bad config values and config files: one sentence naming the key, exit 2, checked before any work
(no run directory is created)."""
from __future__ import annotations

import time

import pytest

from ebmlab.training.config import load_config

from .conftest import assert_one_sentence, cli, sets

BAD_SETS = [
    ("method.step_size=.inf", "method.step_size"),
    ("method.temperature=.nan", "method.temperature"),
    ("method.step_size=-1", "method.step_size"),
    ("method.n_steps=0", "method.n_steps"),
    ("train.lr=.inf", "train.lr"),
    ("train.lr=0", "train.lr"),
    ("train.lr=-1e-3", "train.lr"),
    ("train.grad_clip=-1", "train.grad_clip"),
    ("train.grad_clip=0", "train.grad_clip"),
    ("train.device=banana", "train.device"),
    ("train.threads=-2", "train.threads"),
    ("train.threads=0", "train.threads"),
    ("data.n_train=0", "data.n_train"),
    ("data.n_train=-5", "data.n_train"),
    ("data.n_test=0", "data.n_test"),
    ("eval.n_samples=0", "eval.n_samples"),
    ("eval.grid_size=0", "eval.grid_size"),
    ("eval.long_run_factor=0", "eval.long_run_factor"),
    ("eval.grid_extent=-1", "eval.grid_extent"),
    ("train.batch_size=1e9", "train.batch_size"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.steps=-1", "train.steps"),
    ("train.steps=1e400", "train.steps"),
    ("train.checkpoint_every=0", "train.checkpoint_every"),
    ("train.ema=1.5", "train.ema"),
    ("train.betas=[0.9]", "train.betas"),
    ("train.seed=-1", "train.seed"),
    ("train.weight_decay=-1", "train.weight_decay"),
    ("model.width=0", "model.width"),
    ("data.channels=2", "data.channels"),
    ("method.name=magic", "available methods"),
    ("train.nope=1", "valid keys"),
    ("train.steps=many", "train.steps"),
    ("train.lr=*anchor", "alias"),
    ("train=3", "section.key"),
]


@pytest.mark.parametrize("override,needle", BAD_SETS, ids=[o for o, _ in BAD_SETS])
def test_bad_value_is_one_sentence_before_any_work(override, needle, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--out", out, *sets(override))
    assert_one_sentence(code, err, needle)
    assert not out.exists()  # validated before the directory is touched


def test_exponent_without_dot_is_a_float(tmp_path):
    cfg = load_config(None, ["train.lr=1e-4", "method.step_size=5E-2"])
    assert cfg.train.lr == 1e-4 and cfg.method.step_size == 0.05
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 3e-4\n  steps: 1e3\n")
    cfg = load_config(f)
    assert cfg.train.lr == 3e-4 and cfg.train.steps == 1000


BOMB = """a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
train: {steps: *g}
"""

BAD_FILES = {
    "alias bomb": (BOMB, "alias"),
    "section is a list": ("train: [1, 2]\n", "mapping"),
    "method is a list": ("method: [hybrid]\n", "mapping"),
    "top level is a list": ("- train\n- data\n", "mapping of sections"),
    "malformed yaml": ("train: {steps: [\n", "not valid YAML"),
    "python tag": ("train: !!python/object/apply:os.system ['touch {marker}']\n", "not valid YAML"),
    "unknown section": ("trian:\n  steps: 3\n", "unknown config section"),
    "merge key": ("base: &b {steps: 3}\ntrain:\n  <<: *b\n", "alias"),
    "a section twice": ("method:\n  name: noise\nmethod:\n  name: hybrid\n", "gives the key 'method' twice"),
    "a key twice": ("train:\n  steps: 3\n  lr: 0.1\n  steps: 5\n", "'steps' twice in one mapping (again on line 4)"),
    "not utf-8": (b"\xff\xfe\x00train", "UTF-8"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_config_file(case, tmp_path, capsys):
    text, needle = BAD_FILES[case]
    marker = tmp_path / "executed"
    f = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        f.write_bytes(text)
    else:
        f.write_text(text.replace("{marker}", str(marker)))
    t0 = time.process_time()  # CPU time: an expanded bomb is CPU-bound, other processes on the machine do not count
    code, _, err = cli(capsys, "train", "--config", f, "--out", tmp_path / "run")
    assert time.process_time() - t0 < 10
    assert_one_sentence(code, err, needle)
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_config_directory_and_missing_file(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--config", tmp_path, "--out", tmp_path / "run")
    assert_one_sentence(code, err, "directory")
    code, _, err = cli(capsys, "train", "--config", tmp_path / "nope.yaml", "--out", tmp_path / "run")
    assert_one_sentence(code, err, "does not exist")
