"""The library's errors, in one leaf module that imports nothing of ebmlab (DESIGN.md: ``errors`` is
the bottom layer, every other module may import it).

A user error (bad config, data, checkpoint, launch environment) carries one sentence meant for the
user; ``ebmlab`` prints it and exits with status 2 (``cli._user_errors``). The older homes of these
classes (``training.config``, ``data.arrays``, ``training.checkpoint``, ``training.distributed``,
``training.loop``) re-export them, so ``from ebmlab.training.config import ConfigError`` still works.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """Bad user configuration; the message is one sentence meant for the user."""


class DataError(ValueError):
    """Bad user data; the message is one sentence meant for the user."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or not a safetensors file."""


class DistributedError(RuntimeError):
    """Ranks disagree (parameters, checkpoints, metric keys) or the launch environment is wrong."""


class TrainingDiverged(FloatingPointError):
    """A non-finite loss or gradient stopped training; the last good checkpoint is kept."""


__all__ = ["CheckpointError", "ConfigError", "DataError", "DistributedError", "TrainingDiverged"]
