"""The leaderboard's report (``experiments/leaderboard.py``, issue 18): ranks per dataset and metric, the
verdict lines (is the best row an EBM or a baseline, where do the library's defaults stand), the markdown
tables of ``results.md`` and ``summary.md`` and the ``samples_grid.png`` figure. Nothing here trains or evaluates."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ebmlab import plots
from ebmlab.experiments import claims

# which direction ranks first: these metrics lower, every other (precision, in-support share, AUROCs, the
# Inception Score) higher; also ``ebmlab compare``'s (experiments/compare.py)
LOWER = ("density_kl", "sample_mode_mass_error", "sample_energy_distance", "sample_energy_distance_heldout",
         "digits_fd", "density_mode_mass_error", "long_run_energy_distance", "long_run_mode_mass_error", "fid",
         "sample_out_of_range", "sample_energy_distance_heldout_mean")


def better(metric: str) -> str:
    """"lower" or "higher": which direction of ``metric`` ranks first."""
    return "lower" if metric in LOWER else "higher"


def ranks(table: dict, metrics) -> dict:
    """{metric: {arm: rank}} by mean (1 = best; ties share the smaller rank; unmeasured arms unranked)."""
    out = {}
    for m in metrics:
        sign = 1.0 if better(m) == "lower" else -1.0
        vals = {a: sign * row[m]["mean"] for a, row in table.items() if math.isfinite(row[m]["mean"])}
        out[m] = {a: 1 + sum(w < v for w in vals.values()) for a, v in vals.items()}
    return out


def verdicts(table: dict, metrics, default_row: str = "ebmlab_default") -> list[str]:
    """Per metric: whether the best EBM or a baseline is best (by mean), and where ``default_row`` (the
    library's defaults) ranks against the best baseline."""
    lines = []
    for m in metrics:
        r = ranks(table, [m])[m]
        if not r:
            continue
        top = [a for a in r if r[a] == 1]  # several where tied: an EBM tied with a baseline is not "the best"
        who = " and ".join(sorted({"a baseline" if "/baseline_" in a else "an EBM" for a in top}))
        names = ", ".join(a.split("/", 1)[1] for a in top)
        line = f"{m}: best is {names} ({who})" if len(top) == 1 else f"{m}: best are {names}, tied ({who})"
        default = next((a for a in r if a.endswith("/" + default_row)), None)
        baselines = [r[a] for a in r if "/baseline_" in a]
        if default is not None and baselines:
            line += (f"; ebmlab's defaults rank {r[default]}, "
                     f"{'at least as good as' if r[default] <= min(baselines) else 'behind'} the best baseline")
        lines.append(line)
    return lines


def dataset_markdown(ds: str, table: dict, rank: dict, metrics, cost, default_row: str) -> str:
    """One dataset's table: mean +- std (rank) per ranked metric, the ``cost`` columns' means, failures, and
    the ``verdicts`` lines."""
    cols = metrics + list(cost)
    head = f"## {ds}\n\n| method | " + " | ".join(cols) + " | failed / diverged |\n|---|" + "---|" * (len(cols) + 1) + "\n"
    body = ""
    for arm, row in table.items():
        cells = [f"{claims.fmt_number(row[m]['mean'])} ± {claims.fmt_number(row[m]['std'])}"
                 + (f" ({rank[m][arm]})" if arm in rank.get(m, {}) else "") for m in metrics]
        cells += [claims.fmt_number(row[m]["mean"]) for m in cost]
        body += f"| {arm.split('/', 1)[1]} | " + " | ".join(cells) + f" | {'; '.join(row['diverged'] + row['failed']) or '-'} |\n"
    lines = "".join(f"- {v}\n" for v in verdicts(table, metrics, default_row))
    return head + body + "\n" + lines


def summary_markdown(ds: str, table: dict, rank: dict, metrics) -> str:
    """One dataset's table as docs/leaderboard.md quotes it: the mean to 3 significant digits and its rank per
    ranked metric, rank 1 in bold, and the mean number of updates (``-`` for the baselines, which make none; ``-``
    too for a mean no seed measured, as in results.md)."""
    head = f"**{ds}**\n\n| method | " + " | ".join(metrics) + " | updates |\n|---|" + "---|" * (len(metrics) + 1) + "\n"
    body = ""
    for arm, row in table.items():
        cells = []
        for m in metrics:
            cell = claims.fmt_number(row[m]["mean"], 3) + (f" ({rank[m][arm]})" if arm in rank.get(m, {}) else "")
            cells.append(f"**{cell}**" if rank.get(m, {}).get(arm) == 1 else cell)
        updates = row.get("updates", {}).get("mean", math.nan)
        cells.append(f"{updates:.0f}" if math.isfinite(updates) else "-")
        body += f"| {arm.split('/', 1)[1]} | " + " | ".join(cells) + " |\n"
    return head + body


def figure(out: Path, records: dict, grid: dict, seed: int) -> None:
    """``samples_grid.png``: one row per method / baseline, one column per dataset, seed ``seed``'s samples."""
    arms = list(dict.fromkeys(c.arm.split("/", 1)[1] for cells in grid.values() for c in cells))
    fig = plots.new_figure((2.0 * len(grid), 1.9 * len(arms)))
    axes = np.atleast_2d(fig.subplots(len(arms), len(grid), squeeze=False))
    for j, ds in enumerate(grid):
        for i, arm in enumerate(arms):
            ax, path = axes[i, j], Path(out) / "cells" / ds / arm / f"seed{seed}" / "figure_samples.npy"
            r = records.get((f"{ds}/{arm}", seed))
            ok = r is not None and not (r["failed"] or r["diverged"]) and path.exists()
            _panel(ax, np.load(path, allow_pickle=False) if ok else None, r)
            if i == 0:
                ax.set_title(ds, fontsize=9)
            if j == 0:
                ax.set_ylabel(arm, fontsize=8)
    fig.suptitle(f"samples from each method's own generation procedure (seed {seed}); vectors: first two "
                 "coordinates (tables: top two principal axes)", fontsize=9)
    plots.save_figure(fig, Path(out) / "samples_grid.png")


def _panel(ax, x, record) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if x is None:
        why = "not run" if record is None else ("failed" if record["failed"] else "diverged")
        ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=8, transform=ax.transAxes)
    elif x.ndim == 4:  # images (N, C, H, W) in [-1, 1]: an 8 x 8 mosaic
        k = int(math.sqrt(min(len(x), 64)))
        tiles = np.clip((x[:k * k, 0] + 1) / 2, 0, 1).reshape(k, k, *x.shape[2:])
        ax.imshow(tiles.transpose(0, 2, 1, 3).reshape(k * x.shape[2], k * x.shape[3]), cmap="gray", vmin=0, vmax=1)
    else:
        x = x[np.isfinite(x).all(1)]
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
        if len(x):
            lo, hi = np.percentile(x, [1, 99], axis=0)
            pad = 0.2 * (hi - lo) + 1e-6
            ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
