"""Shared test settings: one CPU thread per test process (CI runs two processes on two cores)."""
import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
