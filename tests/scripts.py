"""A script of ``benchmarks/`` (not a package) loaded as a module for a test."""
from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def script_module(path: str, name: str):
    """The script at ``path`` (relative to the repository root) as module ``name``, registered in ``sys.modules``
    while the block runs (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
