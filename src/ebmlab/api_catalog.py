"""What ebmlab offers, from Python as from the command line: the methods, models, datasets and shipped configs
(``ebmlab train --help``, ``ebmlab configs``), the papers' experiments (``ebmlab experiment NAME``), which
``experiment`` runs with the same options and the same results, and ``compare`` (``ebmlab compare RUN RUN ...``). Re-exported by ``ebmlab.api`` and ``ebmlab``."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ebmlab.files import user_path

if TYPE_CHECKING:
    from ebmlab.experiments.compare import Comparison

__all__ = ["compare", "configs", "datasets", "experiment", "experiment_names", "methods", "models"]


def methods() -> list[str]:
    """The training methods (``method.name``): the built-in ones, those registered in this process
    (``ebmlab.objectives.register``) and those installed packages offer (entry points ``ebmlab.methods``), sorted."""
    from ebmlab.objectives import method_names

    return method_names()


def models() -> list[str]:
    """The energy networks ``model.name`` can select (``custom``: your own ``nn.Module``), sorted."""
    from ebmlab.energies.build import MODELS

    return sorted(MODELS)


def datasets() -> list[str]:
    """The dataset names ``data.name`` can select (``array``: your own vectors from a file), sorted."""
    from ebmlab.data import DATASETS

    return sorted(DATASETS)


def configs(name: str | None = None) -> list[str] | str:
    """The shipped configs (``ebmlab configs``), which ``train(config=NAME)`` and ``--config NAME`` take, sorted; with
    ``name``, that config's YAML text with its comments (``ebmlab configs NAME``; ConfigError for an unknown name)."""
    from ebmlab.config import shipped_config_text, shipped_configs

    return shipped_config_text(name) if name is not None else sorted(shipped_configs())


def experiment_names() -> list[str]:  # not ``experiments``: ``ebmlab.experiments`` is the subpackage
    """The experiments ``experiment`` (``ebmlab experiment NAME``) runs: one per paper, and the leaderboard and the
    --data defaults' comparison, sorted."""
    from ebmlab.experiments import EXPERIMENTS

    return sorted(EXPERIMENTS)


def experiment(name: str, out: str | Path | None = None, *, quick: bool = False, **options: Any) -> dict:
    """Run experiment ``name`` into ``out`` (default ``runs/experiment_NAME``) as ``ebmlab experiment NAME --out
    OUT`` does, and return its ``results.json`` content; a rerun into the same directory reuses its finished
    cells. ``quick``: the smoke-test version (its numbers mean nothing). ``options`` are the command's, by their
    Python names: ``seeds=(0, 1, 2)``, ``jobs=2``, ``full=True``, ``budget=60.0``, ``methods=(...)``,
    ``datasets=(...)``, ``rescore=True``, ``data_seeds=(...)``, ``auroc_margin=0.01``, as the experiment takes
    them (``ConfigError`` names the ones it does not)."""
    from ebmlab.experiments import run_experiment

    return run_experiment(name, user_path(out if out is not None else f"runs/experiment_{name}"), quick=quick, **options)


def compare(runs: Sequence[Any], out: str | Path | None = None, pool_seeds: bool = False) -> Comparison:
    """Two or more trained runs on the same data side by side, as ``ebmlab compare RUN RUN ... [--out DIR]
    [--pool-seeds]``: a ``Comparison`` (``experiments/compare.py``) with ``values`` {metric: [per row]}, ``best``,
    ``floors`` and ``notes``; ``print(c.markdown())`` shows the table. ``runs``: run directories or ``Run`` objects;
    ``out``: a folder for compare.md, compare.json and the samples figure; ``pool_seeds``: one row per setting,
    mean ± std over the runs that differ only in ``train.seed`` (``stds``, ``groups``)."""
    from ebmlab.experiments.compare import compare as _compare

    if not isinstance(runs, (str, os.PathLike)):  # (one path alone: refused by _compare, which says why)
        runs = [os.path.expanduser(r) if isinstance(r, (str, os.PathLike)) else r for r in runs]  # (as typed: "a/")
    return _compare(runs, out=user_path(out) if out is not None else None, pool_seeds=pool_seeds)
