"""Shared test settings: one CPU thread per test process (CI runs two processes on two cores)."""
import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture
def figures(monkeypatch):
    """The figures ``plots.save_figure`` is given, kept for inspection (and still written)."""
    from ebmlab import plots  # (here, not at the top: most tests must not load the plotting module)
    kept = []
    save = plots.save_figure

    def keep(fig, path):
        kept.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    return kept
