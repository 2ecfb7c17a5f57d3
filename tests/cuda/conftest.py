"""The CUDA suite (issue 20): every test under ``tests/cuda`` carries the ``cuda`` marker and is
skipped, not failed, where ``torch.cuda.is_available()`` is False.

    pytest -m cuda tests/cuda -q          # on a GPU machine (benchmarks/gpu_check.py runs this)

Each module also sets ``pytestmark = CUDA_ONLY`` (``tests/cuda/common.py``); the collection hook
below adds the same marks to any test collected from this folder, so a test added here without them
still skips cleanly.
"""
from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from tests.cuda.common import HAS_CUDA, SKIP_REASON

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before the mark plugin deselects by ``-m``
def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.cuda)
            if not HAS_CUDA:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(autouse=True)
def _clean_cuda():
    """Each test starts with the sync debug mode off and leaves no cached GPU memory behind."""
    yield
    if HAS_CUDA:
        torch.cuda.set_sync_debug_mode("default")
        gc.collect()
        torch.cuda.empty_cache()

