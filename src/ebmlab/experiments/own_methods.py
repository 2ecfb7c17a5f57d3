"""A method of the user's own in an experiment (``ebmlab experiment leaderboard --methods NAME``): one registered
with ``ebmlab.objectives.register`` in this process, or offered by an installed package (entry points
``ebmlab.methods``; README "Your own method"), run on the same data, budget and evaluation as the papers' methods.

It has no paper config, so it runs on the library's defaults with its own ``method`` section at its defaults (no
per-method tuning, as for every row), and its cells, which run in fresh processes (``experiments/cells.py``), first
import the module that registered it (``objectives.open_method``).
"""
from __future__ import annotations

import json

from ebmlab.config_files import read_config_file
from ebmlab.objectives import BUILT_IN, load_installed, method_module, method_names, open_method


def own_methods(rows) -> tuple[str, ...]:
    """The methods of the user's own this process knows (registered or installed), not among ``rows``: an
    experiment runs them only when they are named."""
    return tuple(m for m in method_names() if m not in rows and m not in BUILT_IN)


def own_method_overrides(method: str, image: bool, image_config: str) -> list[str]:
    """The overrides of ``method`` on the default config: on images also the data, model, train and eval sections of
    the shipped ``image_config`` (its method section belongs to another method)."""
    shared = []
    if image:
        raw = read_config_file(image_config)
        shared = [f"{sec}.{k}={json.dumps(v)}" for sec in ("data", "model", "train", "eval")
                  for k, v in (raw.get(sec) or {}).items()]
    return shared + [f"method.name={method}"]


def own_method_params(method: str) -> dict:
    """What a cell of ``method`` carries to its process: the method's name and the module that registered it."""
    load_installed(method)
    return {"method": method, "method_module": method_module(method)}


def known_in_worker(params: dict) -> None:
    """In a cell's fresh process: the module that registered the cell's method, imported (nothing for a paper's)."""
    if params.get("method_module"):
        open_method(params["method"], params["method_module"])
