"""Nothing runs from a file (CIFAR pickles: no BUILD on allowed functions), files are written 0644
(minus the umask), and the digits evaluation works from a clean cache inside ``torch.no_grad()``."""
from __future__ import annotations

import io
import os
import pickle
import stat

import numpy as np
import pytest
import torch

from ebmlab.data.safe_pickle import RestrictedUnpickler, _latin1_encode, safe_unpickle
from ebmlab.errors import DataError

from .conftest import cli, digits_argv, latest


def _build_on_allowed_global() -> bytes:
    """Protocol 2: push _codecs.encode, then BUILD with slot state {'__defaults__': ('utf-8',)}."""
    return (b"\x80\x02c_codecs\nencode\n" + b"N}X\x0c\x00\x00\x00__defaults__X\x05\x00\x00\x00utf-8\x85s\x86b.")


def _build_on_numpy_class() -> bytes:
    return b"\x80\x02cnumpy\nndarray\n" + b"N}X\x07\x00\x00\x00__doc__X\x01\x00\x00\x00xs\x86b."


@pytest.mark.parametrize("payload", [_build_on_allowed_global, _build_on_numpy_class])
def test_cifar_unpickler_refuses_build_on_allowed_globals(payload, tmp_path):
    defaults, doc = _latin1_encode.__defaults__, np.ndarray.__doc__
    f = tmp_path / "data_batch_1"
    f.write_bytes(payload())
    with pytest.raises(DataError, match="BUILD"):
        safe_unpickle(f)
    assert _latin1_encode.__defaults__ == defaults and np.ndarray.__doc__ == doc


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_unpickler_still_reads_numpy_arrays(protocol):
    batch = {b"data": np.arange(24, dtype=np.uint8).reshape(2, 12), b"labels": [3, 7],
             b"fine": np.array([1.5, 2.5], dtype=np.float32)}
    out = RestrictedUnpickler(io.BytesIO(pickle.dumps(batch, protocol=protocol)), encoding="bytes").load()
    assert (out[b"data"] == batch[b"data"]).all() and out[b"labels"] == [3, 7]
    assert np.allclose(out[b"fine"], [1.5, 2.5])


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_checkpoint_files_share_the_usual_mode(umask, mode, trained_root, tmp_path, capsys):
    from .conftest import train
    old = os.umask(umask)
    try:
        assert train(tmp_path / "run", trained_root / "points.npy") == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    ck = latest(tmp_path / "run")
    for p in (ck, ck.with_suffix(".json"), tmp_path / "run" / "config.yaml", tmp_path / "run" / "run.json"):
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


@pytest.fixture
def clean_digits_cache(tmp_path, monkeypatch):
    from ebmlab.metrics import digits
    monkeypatch.setenv("EBMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(digits, "_LOADED", {})
    return tmp_path / "cache"


def test_digits_classifier_trains_inside_no_grad(clean_digits_cache):
    from ebmlab.metrics.digits import digits_metrics, digits_split
    _, _, xte, _ = digits_split()
    with torch.no_grad():
        m = digits_metrics(xte[:64])
    assert np.isfinite(m["digits_fd"]) and m["digits_classifier_test_accuracy"] > 0.9
    assert list(clean_digits_cache.glob("digits_classifier_*.safetensors"))


def test_digits_run_evaluates_from_a_clean_cache(clean_digits_cache, tmp_path, capsys):
    """Issue 13 item 11: every digits run crashed at its final evaluation on a fresh machine."""
    argv = digits_argv(tmp_path / "run", "train.steps=1", "train.sample_every=0", "eval.plots=false")
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    assert '"digits_fd"' in out and list(clean_digits_cache.glob("digits_classifier_*.safetensors"))
    code, out, err = cli(capsys, "eval", tmp_path / "run", "--digits-fd")
    assert code == 0, err and '"digits_fd"' in out
