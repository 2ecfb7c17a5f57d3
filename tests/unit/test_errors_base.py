"""One base for ebmlab's errors (``errors.EbmlabError``), each keeping the built-in base it had, and every one of them
surviving a trip through pickle (a worker process's error reaches its parent whole)."""
from __future__ import annotations

import pickle

import pytest

import ebmlab
from ebmlab import errors

BUILT_IN = {"ConfigError": ValueError, "DataError": ValueError, "CheckpointError": RuntimeError,
            "DistributedError": RuntimeError, "TrainingDiverged": FloatingPointError, "TrainingStopped": RuntimeError,
            "RunError": RuntimeError, "ExperimentError": RuntimeError, "RunNotFound": FileNotFoundError}


def _classes():
    return [getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)]


def test_every_error_is_an_ebmlab_error_and_keeps_its_built_in_base():
    assert {c.__name__ for c in _classes()} == {*BUILT_IN, "EbmlabError"}
    for c in _classes():
        assert issubclass(c, errors.EbmlabError), c
        if c is not errors.EbmlabError:
            assert issubclass(c, BUILT_IN[c.__name__]), c


@pytest.mark.parametrize("cls", _classes(), ids=lambda c: c.__name__)
def test_every_error_survives_pickle(cls):
    exc = cls("one sentence", 7, "runs/x") if cls is errors.TrainingStopped else cls("one sentence")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls and str(back) == "one sentence"
    if cls is errors.TrainingStopped:  # was a TypeError on unpickling (its __init__ takes step and run_dir)
        assert (back.step, back.run_dir) == (7, "runs/x")


def test_one_except_catches_what_the_python_api_raises(tmp_path):
    with pytest.raises(errors.EbmlabError):
        ebmlab.train("no_such_method", out=tmp_path / "r")
    with pytest.raises(errors.EbmlabError):
        ebmlab.load(tmp_path / "nowhere")
