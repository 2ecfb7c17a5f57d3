"""The library's errors, in one leaf module that imports nothing of ebmlab (DESIGN.md: ``errors`` is
the bottom layer, every other module may import it).

A user error (bad config, data, checkpoint, launch environment) carries one sentence meant for the
user; ``ebmlab`` prints it and exits with status 2 (``cli._user_errors``). The older homes of these
classes (``training.config``, ``data.arrays``, ``training.checkpoint``, ``training.distributed``,
``training.loop``) re-export them, so ``from ebmlab.training.config import ConfigError`` still works.
"""
from __future__ import annotations


class EbmlabError(Exception):
    """The base of every error ebmlab raises on purpose (one sentence meant for the user): ``except EbmlabError``
    catches them all. Each also keeps its built-in base (``ConfigError`` is a ``ValueError``, ...), as before."""


class ConfigError(EbmlabError, ValueError):
    """Bad user configuration; the message is one sentence meant for the user."""


class DataError(EbmlabError, ValueError):
    """Bad user data; the message is one sentence meant for the user."""


class CheckpointError(EbmlabError, RuntimeError):
    """A checkpoint is missing, incomplete or not a safetensors file."""


class DistributedError(EbmlabError, RuntimeError):
    """Ranks disagree (parameters, checkpoints, metric keys) or the launch environment is wrong."""


class TrainingDiverged(EbmlabError, FloatingPointError):
    """A non-finite loss or gradient stopped training; the last good checkpoint is kept."""


class TrainingStopped(EbmlabError, RuntimeError):
    """SIGTERM stopped training after an update, whose checkpoint was written (``training/stop_signal.py``); the
    message names the step and how to go on. ``step``: that update; ``run_dir``: the run."""

    def __init__(self, message: str, step: int, run_dir):
        super().__init__(message)
        self.step, self.run_dir = step, run_dir

    def __reduce__(self):  # pickled whole (a worker process's stop reaches its parent): not just its message
        return type(self), (str(self), self.step, self.run_dir)


class RunError(EbmlabError, RuntimeError):
    """A run directory cannot be used: not an ebmlab run, in use by another trainer or evaluation (locked), already
    holding a run, or not writable. One sentence naming the path and what to do."""


class ExperimentError(EbmlabError, RuntimeError):
    """An experiment cannot go on: a cell the later cells depend on (paper 002's eta tuning) failed or diverged.
    One sentence naming the cell, its reason and where its traceback is; finished cells are reused on a rerun."""


class RunNotFound(RunError, FileNotFoundError):
    """The run directory (or its ``config.yaml``) does not exist; also a ``FileNotFoundError``."""


def os_error_sentence(exc: OSError, doing: str = "") -> str:
    """One sentence for an operating-system error (ENOSPC, EROFS, EACCES, ENOTDIR, ...): what failed,
    on which path, and what to do. ``doing`` (e.g. "write checkpoint") prefixes the path."""
    import errno as _errno
    if exc.errno is None and not exc.filename:  # our own FileExistsError/FileNotFoundError sentences
        return str(exc.args[0] if exc.args else exc)
    hints = {_errno.ENOSPC: "free some disk space, then rerun (a training run continues with --resume)",
             _errno.EDQUOT: "free some space within your quota, then rerun",
             _errno.EROFS: "the file system is read-only: write elsewhere (a run to train or evaluate: copy it to a "
                           "writable place first)",
             _errno.EACCES: "check the permissions or choose another path",
             _errno.EPERM: "check the permissions or choose another path",
             _errno.ENOTDIR: "a component of the path is a file, not a directory: choose another path",
             _errno.EISDIR: "the path is a directory, expected a file",
             _errno.ENOENT: "check the path",
             _errno.EEXIST: "choose another path",
             _errno.ENAMETOOLONG: "choose a shorter path"}
    what = exc.strerror or str(exc)
    path = exc.filename if exc.filename is not None else ""
    where = f" {str(path)!r}" if path != "" else ""
    verb = f"could not {doing}" if doing else "operating-system error on"
    hint = hints.get(exc.errno, "check the path and rerun")
    return f"{verb}{where}: {what.rstrip('.')}; {hint}"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is running out of memory: a MemoryError, the CPU allocator's "can't allocate memory" or
    CUDA's "out of memory" (both RuntimeErrors); other RuntimeErrors are bugs."""
    text = str(exc)
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text))


__all__ = ["CheckpointError", "ConfigError", "DataError", "DistributedError", "EbmlabError", "ExperimentError", "RunError",
           "RunNotFound", "TrainingDiverged", "TrainingStopped", "is_out_of_memory", "os_error_sentence"]
