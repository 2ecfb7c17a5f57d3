"""The samples figure of ``ebmlab compare --out DIR`` (``experiments/compare.py``), from each run's
``samples/samples.npy`` (read without pickle): vectors as one scatter of the first two coordinates, the held-out data
first, equal counts, the axes framed by the held-out data (a diverged run's far points are counted, not allowed to
shrink every other panel to a dot); images as ``samples_<k>.png`` per run (its first 64). A run whose samples are
missing, unreadable or of another shape is left out, and a sample with a non-finite value dropped, each with a
note: the table stands without the figure."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ebmlab import plots
from ebmlab.errors import ConfigError, DataError, RunError
from ebmlab.training.run import read_run_config
from ebmlab.training.run_data import run_dataset

SHOWN_IMAGES = 64


def samples_figure(runs: list[str], labels: list[str], kind: str, shape, out: Path,
                   title: str = "first two coordinates, each run's samples/samples.npy") -> tuple[list[str], list[str]]:
    """Draw the samples of ``runs`` (panel titles ``labels``; ``title``: the vector figure's) into ``out``; returns
    (the files written, the notes on what was left out)."""
    notes: list[str] = []
    panels = {}
    for run, label in zip(runs, labels):
        x = _samples(Path(run), tuple(shape), kind, notes)
        if x is not None:
            panels[label] = x
    if not panels:
        return [], notes + ["no run has readable samples/samples.npy: no samples figure"]
    if kind != "vector":
        for k, (name, x) in enumerate(panels.items()):
            plots.image_grid(x, out / f"samples_{k}.png", title=name.replace("\n", " "))
        return [f"samples_{k}.png" for k in range(len(panels))], notes
    return [_scatter(panels, Path(runs[0]), out, notes, title)], notes


def _samples(run: Path, shape: tuple, kind: str, notes: list[str]) -> torch.Tensor | None:
    """The run's samples (N, *shape): vectors in float64, images in float32 (the first ``SHOWN_IMAGES``), samples
    with a non-finite value dropped (said in a note), or None with a note."""
    p = run / "samples" / "samples.npy"
    if not p.is_file():
        notes.append(f"{run} has no samples/samples.npy: left out of the figure")
        return None
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)  # (N, ...): images read only as far as shown
    except (ValueError, OSError) as exc:
        notes.append(f"{p} cannot be read as a plain numeric array ({type(exc).__name__}): left out of the figure")
        return None
    if arr.ndim < 1 or tuple(arr.shape[1:]) != shape or not np.issubdtype(arr.dtype, np.number):
        notes.append(f"{p} holds {arr.dtype} of shape {arr.shape}, not rows of the run's shape {shape}: left out")
        return None
    # vectors in float64 (a float64 run's samples near 1e7 would round to whole numbers in float32)
    x = torch.from_numpy(np.array(arr, dtype=np.float64) if kind == "vector"
                         else np.array(arr[:SHOWN_IMAGES], dtype=np.float32))
    ok = torch.isfinite(x.flatten(1)).all(1)  # (N,)
    if not ok.all():
        shown = "" if kind == "vector" else " shown"
        notes.append(f"{run}: {int((~ok).sum())} of {len(x)}{shown} samples are not finite; dropped from the figure")
        x = x[ok]
    if len(x) == 0:
        notes.append(f"{run}: no finite sample to show: left out of the figure")
        return None
    return x


def _scatter(panels: dict, first_run: Path, out: Path, notes: list[str], title: str) -> str:
    """``samples.png``: the held-out data and each run's samples, framed by the held-out data (30 % wider per side;
    without them, by the central 95 % of all the runs' samples); points outside it are counted in their panel's
    title, so a run that strays from the data says so instead of shrinking the data to a dot."""
    ref = _heldout(first_run, notes)
    sets = ({"held-out data": ref} if ref is not None else {}) | panels
    n = min(len(x) for x in sets.values())
    if ref is not None:
        box = plots.data_box(ref, 0.3)
    else:
        pooled = torch.cat([_xy(x[:n]) for x in panels.values()]).double()  # (P, 2)
        box = plots.data_box(torch.quantile(pooled, torch.tensor([0.025, 0.975], dtype=torch.float64), dim=0))
    titled = {}
    for name, x in sets.items():
        outside = _outside(x[:n], box)
        titled[name + (f"\n{outside} outside the frame" if outside else "")] = x
    plots.sample_scatter(titled, out / "samples.png", extent=box, title=title)
    return "samples.png"


def _xy(x: torch.Tensor) -> torch.Tensor:
    """(N, 2): the first two coordinates of (N, D) points, a 1-D set's one coordinate twice (as the scatter)."""
    return x[:, :2] if x.shape[1] >= 2 else x[:, :1].repeat(1, 2)


def _outside(x: torch.Tensor, box) -> int:
    """How many of the (N, D) points' first two coordinates lie outside ``box`` (x0, x1, y0, y1)."""
    xy = _xy(x)
    inside = (xy[:, 0] >= box[0]) & (xy[:, 0] <= box[1]) & (xy[:, 1] >= box[2]) & (xy[:, 1] <= box[3])
    return int((~inside).sum())


def _heldout(run: Path, notes: list[str]) -> torch.Tensor | None:
    """The runs' held-out split in data coordinates (the same for every run: ``compare_checks.check_same_data``), or None
    with a note where the data cannot be read any more (a moved file): the figure then shows the samples only."""
    try:
        data = run_dataset(run, read_run_config(run))
    except (DataError, ConfigError, RunError, OSError) as exc:
        notes.append(f"the held-out data cannot be read ({exc}): the figure shows the samples only")
        return None
    return data.transform.to_data(data.test)
