"""Figures written by runs and experiments (PNG files), drawn for a paper rather than for debugging.

- ``density_maps``: true vs model density on a 2-D slice (paper 004 Fig. 2, bottom row), every panel
  on one colour scale with one colorbar (with ``shared_scale=False``: a scale and colorbar per panel);
- ``sample_scatter``: the first two coordinates of sample sets, e.g. data and short and long runs
  from noise (Fig. 2 top), the same number of points in every panel;
- ``energy_histograms``: energies of held-out data vs samples (paper 004 Fig. 5 / Fig. 10), the
  values beyond the plotted range counted in the legend instead of piled at the edges;
- ``chain_curves``: acceptance (with the target acceptance drawn), step size and mean energy
  against the sampler step;
- ``image_grid``: a grid of images in [-1, 1] (N, C, H, W);
- ``line_plot`` and ``scheme_columns``: the experiments' figures.

Every figure uses constrained layout (no text overlaps), labels its axes with their units, and is
drawn with matplotlib's object API (``matplotlib.figure.Figure`` rendered by the Agg canvas), so
importing this module, or calling it inside a notebook, never touches pyplot or switches the
backend. matplotlib itself is imported only when a figure is drawn.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ebmlab.files import atomic_write

DPI = 110
COORD = "data units"  # the axis unit of data-coordinate plots


def new_figure(figsize: tuple[float, float]) -> Any:
    """A ``matplotlib.figure.Figure`` with constrained layout, not registered with pyplot."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (PNG, parent directories created) and release it. Written beside it and renamed onto
    it, so that an interruption (a SIGTERM or Ctrl-C during the drawing) leaves the previous figure whole, not a
    truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix[1:] or "png", dpi=DPI, bbox_inches="tight",
                                               pad_inches=0.05))
    pyplot = sys.modules.get("matplotlib.pyplot")  # a figure an experiment drew with pyplot
    if pyplot is not None:
        pyplot.close(fig)
    return path


def _extent_of(xs: Tensor, ys: Tensor) -> tuple[float, float, float, float]:
    return float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])


def _aspect(x0: float, x1: float, y0: float, y1: float) -> str:
    """"equal" (one data unit the same length on both axes) unless the box is more than 2:1, where the
    coordinates are better read on their own scales ("auto")."""
    r = abs(y1 - y0) / max(abs(x1 - x0), 1e-12)
    return "equal" if 0.5 <= r <= 2.0 else "auto"


def grid_density(logp: Tensor, xs: Tensor, ys: Tensor) -> np.ndarray:
    """(len(ys), len(xs)) density per unit area of a log-density normalised over the grid of ``make_grid``."""
    cell = (float(xs[-1] - xs[0]) / max(1, len(xs) - 1)) * (float(ys[-1] - ys[0]) / max(1, len(ys) - 1))
    p = torch.softmax(logp.double().flatten(), 0).reshape(len(ys), len(xs)).numpy()
    return p / (cell if cell > 0 else 1.0)


def density_maps(panels: dict[str, Tensor], xs: Tensor, ys: Tensor, path: Path, title: str = "",
                 xlabel: str = f"x1 ({COORD})", ylabel: str = f"x2 ({COORD})", shared_scale: bool = True) -> Path:
    """One panel per entry of ``panels`` (name -> (n*n,) log-densities on the grid of ``make_grid``),
    each normalised over the grid. ``shared_scale`` (for densities that are compared, e.g. true vs
    model): one colour scale and one colorbar; otherwise (densities of different things, e.g. one per
    noise level) each panel has its own scale and colorbar."""
    from matplotlib.colors import Normalize

    fig = new_figure((2.9 * len(panels) + (0.9 if shared_scale else 0.6 * len(panels)), 3.1))
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False)[0])
    dens = {name: grid_density(lp, xs, ys) for name, lp in panels.items()}
    vmax = max(float(np.nanmax(d)) for d in dens.values()) or 1.0
    label, im = "density (normalised on the grid)", None
    for i, (ax, (name, d)) in enumerate(zip(axes, dens.items())):
        norm = Normalize(vmin=0.0, vmax=vmax if shared_scale else (float(np.nanmax(d)) or 1.0))
        im = ax.imshow(d, origin="lower", extent=_extent_of(xs, ys), cmap="viridis", norm=norm,
                       aspect=_aspect(*_extent_of(xs, ys)))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        if i == 0:
            ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if not shared_scale:
            cb = fig.colorbar(im, ax=ax, shrink=0.8)
            cb.ax.tick_params(labelsize=6)
            if i == len(dens) - 1:
                cb.set_label(label, fontsize=8)
    if shared_scale:
        cb = fig.colorbar(im, ax=list(axes), shrink=0.9)
        cb.set_label(label, fontsize=8)
        cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def data_box(x: Tensor, margin: float = 0.15) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1): the bounding box of the first two coordinates of ``x`` (N, D), widened by
    ``margin`` of its range on every side (a 1-D set uses its one coordinate twice)."""
    x = x.detach().cpu().flatten(1).double()
    x = x[:, :2] if x.shape[1] >= 2 else x[:, :1].repeat(1, 2)
    lo, hi = x.min(0).values, x.max(0).values
    # the spread itself, however small (data of spread 1e-10 filled a thousandth of a 1e-6 floor's box); a constant
    # coordinate gets a thousandth of its magnitude, or 1 at zero
    size = x.abs().max(0).values
    pad = torch.where(hi > lo, hi - lo, torch.where(size > 0, size * 1e-3, torch.ones_like(size))) * margin
    return float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1])


def equal_counts(sets: dict[str, Tensor]) -> tuple[dict[str, np.ndarray], int]:
    """Every set cut to the size of the smallest (its first rows), so compared panels hold the same
    number of points; returns ({name: (n, D) array}, n)."""
    n = min(int(x.shape[0]) for x in sets.values())
    return {k: x[:n].detach().cpu().flatten(1).double().numpy() for k, x in sets.items()}, n


def sample_scatter(sets: dict[str, Tensor], path: Path, extent: float | tuple[float, float, float, float] | None = None,
                   title: str = "", xlabel: str = f"x1 ({COORD})", ylabel: str = f"x2 ({COORD})") -> Path:
    """First two coordinates of each set (name -> (N, D)), one panel per set, the same number of
    points in every panel (stated in the title); ``extent``: a half-width or (x0, x1, y0, y1)."""
    arrays, n = equal_counts(sets)
    fig = new_figure((2.9 * len(sets), 3.2))
    axes = fig.subplots(1, len(sets), sharex=True, sharey=True, squeeze=False)[0]
    for i, (ax, (name, x)) in enumerate(zip(axes, arrays.items())):
        ax.scatter(x[:, 0], x[:, 1 if x.shape[1] > 1 else 0], s=1.5, alpha=0.4, linewidths=0, rasterized=True)
        if extent:
            x0, x1, y0, y1 = (-extent, extent, -extent, extent) if isinstance(extent, (int, float)) else extent
            ax.set_xlim(x0, x1), ax.set_ylim(y0, y1)
            ax.set_aspect(_aspect(x0, x1, y0, y1))
        else:
            ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        if i == 0:
            ax.set_ylabel(ylabel if x.shape[1] > 1 else xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{title}{' — ' if title else ''}{n:,} points per panel", fontsize=10)
    return save_figure(fig, path)


def energy_histograms(sets: dict[str, Tensor], path: Path, title: str = "energies",
                      xlabel: str = "energy E(x) (model units; lower = more probable)") -> Path:
    """Histograms (densities) of the energies of each set over its central 99 % range (pooled 0.5-99.5
    percentiles); the values beyond that range are left out and counted in the legend."""
    vals = {k: v.detach().cpu().double().flatten().numpy() for k, v in sets.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in vals.values()])
    lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 61)
    fig = new_figure((5.0, 3.3))
    ax = fig.subplots()
    for name, v in vals.items():
        inside = np.isfinite(v) & (v >= lo) & (v <= hi)
        out = int(v.size - inside.sum())
        label = f"{name} (n={v.size:,}" + (f"; {out} outside the range, not shown)" if out else ")")
        # (a set with no value inside the range, e.g. 2 held-out rows beyond the pooled percentiles, has no density)
        ax.hist(v[inside], bins=bins, alpha=0.5, density=bool(inside.any()), label=label)
    ax.set_xlabel(f"{xlabel}\nrange shown: the pooled 0.5-99.5 percentiles", fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.legend(fontsize=7, loc="outside lower center", ncols=1, frameon=False)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


_CHAIN_PANELS = {"accept_rate": ("Metropolis acceptance rate", "acceptance (fraction)"),
                 "step_size": ("step size", "step size ε (model units)"),
                 "energy": ("mean energy of the chains", "mean E(x) (model units)"),
                 "grad_norm": ("mean gradient norm", "mean ‖∇E(x)‖")}


def chain_curves(diag: dict[str, Tensor], path: Path, title: str = "chain diagnostics",
                 target_accept: float | None = None, xlabel: str = "sampler step") -> Path:
    """Acceptance, step size and mean energy (those present in ``diag``, each (S,)) against the
    sampler step; ``target_accept`` (the acceptance the step-size controller aims at) as a dashed line."""
    keys = [k for k in ("accept_rate", "step_size", "energy") if k in diag]
    fig = new_figure((3.3 * max(1, len(keys)), 3.0))
    axes = fig.subplots(1, max(1, len(keys)), squeeze=False)[0]
    for ax, k in zip(axes, keys):
        y = diag[k].detach().cpu().double().flatten().numpy()
        ax.plot(np.arange(1, len(y) + 1), y, lw=1.0)
        name, unit = _CHAIN_PANELS[k]
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        if k == "accept_rate":
            ax.set_ylim(0, 1.02)
            if target_accept is not None:
                ax.axhline(target_accept, color="C3", ls="--", lw=1, label=f"target {target_accept:g}")
                ax.legend(fontsize=7, loc="lower right")
        if k == "step_size" and np.all(y > 0) and y.max() / max(y.min(), 1e-300) > 20:
            ax.set_yscale("log")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def image_grid(images: Tensor, path: Path, nrow: int | None = None, title: str = "") -> Path:
    """images (N, C, H, W) in [-1, 1] -> one PNG grid, ``nrow`` images per row."""
    x = images.detach().cpu().float().clamp(-1, 1).add(1).div(2)
    n, c, h, w = x.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    canvas = torch.ones(c, ncol * (h + 1) + 1, nrow * (w + 1) + 1)
    for i in range(n):
        r, q = divmod(i, nrow)
        canvas[:, 1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = x[i]
    img = canvas.permute(1, 2, 0).numpy()
    fig = new_figure((max(2.4, nrow * 0.45), max(2.4, ncol * 0.45) + (0.3 if title else 0)))
    ax = fig.subplots()
    ax.imshow(img.squeeze(-1) if c == 1 else img, cmap="gray" if c == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def line_plot(series: dict[str, tuple], path: Path, xlabel: str, ylabel: str, title: str = "",
              logy: bool = False, hline: tuple[float, str] | None = None) -> Path:
    """series: name -> (xs, ys); ``hline`` = (y, label) draws a dashed reference line."""
    fig = new_figure((5.0, 3.3))
    ax = fig.subplots()
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", ms=3, label=name)
    if hline is not None:
        ax.axhline(hline[0], color="0.4", ls="--", lw=1, label=hline[1])
    ax.set_xlabel(xlabel, fontsize=8), ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if all(float(x).is_integer() for xs, _ in series.values() for x in xs):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        ax.set_title(title, fontsize=9)
    ys_all = [float(y) for _, ys in series.values() for y in ys]
    if logy and ys_all and min(ys_all) > 0 and max(ys_all) / min(ys_all) >= 10:  # under a decade: linear reads better
        from matplotlib.ticker import NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def scheme_columns(columns: dict[str, tuple], xs: Tensor, ys: Tensor, path: Path, title: str = "",
                   xlabel: str = f"x1 ({COORD})", ylabel: str = f"x2 ({COORD})") -> Path:
    """Paper 004 Fig. 2: one column per scheme; top: 2-D histogram of generated samples (x1, x2),
    bottom: the model density on the slice. columns: name -> (samples (N, >=2), logp on grid (n*n,)).
    Every column shows the same number of samples; each row has one colour scale and colorbar."""
    from matplotlib.colors import Normalize

    n = len(columns)
    samples, n_pts = equal_counts({k: s for k, (s, _) in columns.items()})
    fig = new_figure((2.5 * n + 1.0, 5.4))
    axes = fig.subplots(2, n, sharex=True, sharey=True, squeeze=False)
    ext = _extent_of(xs, ys)
    dens = {k: grid_density(lp, xs, ys) for k, (_, lp) in columns.items()}
    d_norm = Normalize(0.0, max(float(np.nanmax(d)) for d in dens.values()) or 1.0)
    hists = {k: np.histogram2d(s[:, 0], s[:, 1], bins=80, range=[ext[:2], ext[2:]])[0].T for k, s in samples.items()}
    h_norm = Normalize(0.0, max(float(h.max()) for h in hists.values()) or 1.0)
    im_h = im_d = None
    for j, name in enumerate(columns):
        im_h = axes[0][j].imshow(hists[name], origin="lower", extent=ext, cmap="viridis", norm=h_norm, aspect="equal")
        im_d = axes[1][j].imshow(dens[name], origin="lower", extent=ext, cmap="viridis", norm=d_norm, aspect="equal")
        axes[0][j].set_title(name, fontsize=9)
        axes[1][j].set_xlabel(xlabel, fontsize=8)
        for ax in (axes[0][j], axes[1][j]):
            ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel(f"samples from noise\n{ylabel}", fontsize=8)
    axes[1][0].set_ylabel(f"model density\n{ylabel}", fontsize=8)
    fig.colorbar(im_h, ax=list(axes[0]), shrink=0.9).set_label(f"samples per bin (of {n_pts:,})", fontsize=8)
    fig.colorbar(im_d, ax=list(axes[1]), shrink=0.9).set_label("density (normalised on the grid)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def png_array(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a PNG written here (for TensorBoard images)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
