"""Figures written by runs and experiments (matplotlib, Agg backend, PNG files).

- ``density_maps``: true vs model density on a 2-D slice (paper 004 Fig. 2, bottom row);
- ``sample_scatter``: samples' first two coordinates, e.g. short and long runs from noise (Fig. 2 top);
- ``energy_histograms``: energies of held-out data vs long-run samples (paper 004 Fig. 5 / Fig. 10);
- ``chain_curves``: acceptance, step size and mean energy along a chain;
- ``image_grid``: a grid of images in [-1, 1] (N, C, H, W).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def density_maps(panels: dict[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor, path: Path,
                 title: str = "") -> Path:
    """panels: name -> (n*n,) log-densities on the grid of ``make_grid``; each normalised on the grid."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    extent = (float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1]))
    for ax, (name, logp) in zip(axes[0], panels.items()):
        p = torch.softmax(logp.double().flatten(), 0).reshape(len(ys), len(xs)).numpy()
        ax.imshow(p, origin="lower", extent=extent, cmap="viridis", aspect="equal")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def sample_scatter(sets: dict[str, torch.Tensor], path: Path, extent: float | None = None, title: str = "") -> Path:
    fig, axes = plt.subplots(1, len(sets), figsize=(3.2 * len(sets), 3.2), squeeze=False)
    for ax, (name, x) in zip(axes[0], sets.items()):
        x = x.detach().cpu().flatten(1).numpy()
        ax.scatter(x[:, 0], x[:, 1 if x.shape[1] > 1 else 0], s=1.5, alpha=0.4)
        if extent:
            ax.set_xlim(-extent, extent), ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def energy_histograms(sets: dict[str, torch.Tensor], path: Path, title: str = "energies") -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    vals = [v.detach().cpu().double().numpy() for v in sets.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in vals])
    lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0, 1)
    for (name, _), v in zip(sets.items(), vals):
        ax.hist(np.clip(v, lo, hi), bins=60, alpha=0.5, density=True, label=name)
    ax.set_xlabel("energy"), ax.legend(fontsize=8), ax.set_title(title, fontsize=10)
    return _save(fig, path)


def chain_curves(diag: dict[str, torch.Tensor], path: Path, title: str = "chain diagnostics") -> Path:
    keys = [k for k in ("accept_rate", "step_size", "energy") if k in diag]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        ax.plot(diag[k].detach().cpu().numpy())
        ax.set_xlabel("Langevin step"), ax.set_title(k, fontsize=9)
        if k == "step_size":
            ax.set_yscale("log")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def image_grid(images: torch.Tensor, path: Path, nrow: int | None = None, title: str = "") -> Path:
    """images (N, C, H, W) in [-1, 1] -> one PNG grid."""
    x = images.detach().cpu().float().clamp(-1, 1).add(1).div(2)
    n, c, h, w = x.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    canvas = torch.ones(c, ncol * (h + 1) + 1, nrow * (w + 1) + 1)
    for i in range(n):
        r, q = divmod(i, nrow)
        canvas[:, 1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = x[i]
    img = canvas.permute(1, 2, 0).numpy()
    fig, ax = plt.subplots(figsize=(max(2.0, nrow * 0.45), max(2.0, ncol * 0.45)))
    ax.imshow(img.squeeze(-1) if c == 1 else img, cmap="gray" if c == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def line_plot(series: dict[str, tuple], path: Path, xlabel: str, ylabel: str, title: str = "",
              logy: bool = False) -> Path:
    """series: name -> (xs, ys)."""
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return _save(fig, path)


def scheme_columns(columns: dict[str, tuple], xs: torch.Tensor, ys: torch.Tensor, path: Path,
                   title: str = "") -> Path:
    """Paper 004 Fig. 2: one column per scheme; top: 2-D histogram of generated samples (x1, x2),
    bottom: the model density on the slice. columns: name -> (samples (N, >=2), logp on grid (n*n,))."""
    n = len(columns)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.2), squeeze=False)
    extent = (float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1]))
    for j, (name, (samples, logp)) in enumerate(columns.items()):
        s = samples.detach().cpu().numpy()
        axes[0][j].hist2d(s[:, 0], s[:, 1], bins=80, range=[extent[:2], extent[2:]], cmap="viridis")
        p = torch.softmax(logp.double().flatten(), 0).reshape(len(ys), len(xs)).numpy()
        axes[1][j].imshow(p, origin="lower", extent=extent, cmap="viridis", aspect="equal")
        axes[0][j].set_title(name, fontsize=9)
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xticks([]), ax.set_yticks([]), ax.set_aspect("equal")
    axes[0][0].set_ylabel("samples from noise", fontsize=8)
    axes[1][0].set_ylabel("model density", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
