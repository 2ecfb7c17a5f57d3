"""Evaluation shared by every method: sample metrics, density metrics and plots -> ``metrics.json``.

Vector data (``evaluate_vectors``):
- ``sample_energy_distance``: energy distance between ``eval.n_samples`` chains from noise (the
  method's own ``sample``) and fresh data, all dimensions, data coordinates; ``..._floor`` is data vs
  data, ``..._noise`` the chains' starting noise vs data;
- ``sample_precision`` (exact densities only): see ``metrics/density.py``; ``..._floor`` for data;
- ``density_kl``: KL(true || model) on a grid over the first two coordinates, the remaining
  coordinates held at 0 in data coordinates (paper 004 App. A.1 slice for the rings), both
  grid-normalised; ``density_kl_uniform`` is the uniform density's score (a ceiling);
- ``long_run_*``: the same sample metrics for chains ``eval.long_run_factor`` times longer
  (``long_run_steps``: the total sampler steps they took);
- ``density_kl_skipped``: the reason, for a method that defines no log-density.
Everything goes through the ``Objective`` contract (``prior``, ``sample``, ``n_steps_default``,
``has_log_density`` / ``log_density``): no probing of methods.
Image data go through ``IMAGE_EVALUATORS`` (built here from ``training/image_eval.py``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ebmlab import plots
from ebmlab.metrics.density import grid_kl, make_grid, sample_precision, uniform_grid_kl
from ebmlab.metrics.distances import energy_distance
from ebmlab.training import image_eval

IMAGE_EVALUATORS: list = [image_eval.evaluate_images]  # fn(objective, data, cfg, run_dir, generator) -> dict


def _extent(data, cfg) -> float:
    if cfg.eval.grid_extent:
        return float(cfg.eval.grid_extent)
    x = data.transform.to_data(data.test)[:, :2]
    return float(x.abs().max()) * 1.15


def _slice_points(grid2d: torch.Tensor, dim: int) -> torch.Tensor:
    pts = torch.zeros(grid2d.shape[0], dim)
    pts[:, :2] = grid2d
    return pts


@torch.no_grad()
def model_log_density_grid(objective, data, grid2d: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """(G,) unnormalised model log-density on the 2-D slice, in data coordinates."""
    dev = next(objective.parameters()).device
    pts = _slice_points(grid2d, data.shape[0])
    out = [objective.log_density(data.transform.to_model(pts[i:i + chunk]).to(dev)).cpu()
           for i in range(0, len(pts), chunk)]
    return torch.cat(out)


def true_log_density_grid(dist, grid2d: torch.Tensor) -> torch.Tensor:
    if hasattr(dist, "slice_log_prob"):
        return dist.slice_log_prob(grid2d)
    return dist.log_prob(_slice_points(grid2d, dist.dim))


def sample_metrics(samples: torch.Tensor, data, ref: torch.Tensor, ref2: torch.Tensor, prefix: str) -> dict:
    out = {f"{prefix}energy_distance": energy_distance(samples, ref)}
    if data.dist is not None:
        out[f"{prefix}precision"] = sample_precision(data.dist.log_prob(samples), data.dist.log_prob(ref2))
    return out


def evaluate_vectors(objective, data, cfg, run_dir: Path | None, generator) -> dict:
    """``generator`` lives on the objective's device (chains); data draws use their own CPU one."""
    n = cfg.eval.n_samples
    dev = next(objective.parameters()).device
    g_cpu = torch.Generator().manual_seed(cfg.train.seed + 11)
    ref, ref2 = data.fresh(n, g_cpu), data.fresh(n, g_cpu)
    noise = data.transform.to_data(objective.prior(n, generator).cpu())
    out = objective.sample(n, generator=generator)
    short = data.transform.to_data(out.x.cpu())
    m = sample_metrics(short, data, ref, ref2, "sample_")
    m["sample_energy_distance_floor"] = energy_distance(ref2, ref)
    m["sample_energy_distance_noise"] = energy_distance(noise, ref)
    if data.dist is not None:
        m["sample_precision_floor"] = sample_precision(data.dist.log_prob(ref), data.dist.log_prob(ref2))
    long = None
    if cfg.eval.long_run_factor > 1:
        steps = objective.n_steps_default * cfg.eval.long_run_factor
        long = data.transform.to_data(objective.sample(min(n, 1000), generator=generator, n_steps=steps).x.cpu())
        m.update(sample_metrics(long, data, ref, ref2, "long_run_"))
        m["long_run_steps"] = steps
    m.update(_density_metrics(objective, data, cfg, run_dir))
    if run_dir is not None and cfg.eval.plots:
        _vector_plots(objective, data, run_dir, ref, short, long, out.info, dev)
    return m


def _density_metrics(objective, data, cfg, run_dir: Path | None) -> dict:
    """density_kl on the (x1, x2) slice where the method defines a log-density and the data have
    an exact one; a method without a log-density says so in ``density_kl_skipped``."""
    if data.shape[0] < 2:
        return {}
    if not objective.has_log_density:
        return {"density_kl_skipped": f"method {type(objective).__name__} defines no log-density"}
    m, panels = {}, {}
    grid, xs, ys = make_grid(_extent(data, cfg), cfg.eval.grid_size)
    panels["model"] = model_log_density_grid(objective, data, grid)
    if data.dist is not None:
        true_lp = true_log_density_grid(data.dist, grid)
        m["density_kl"] = grid_kl(true_lp, panels["model"])
        m["density_kl_uniform"] = uniform_grid_kl(true_lp)
        panels = {"true": true_lp, **panels}
    if run_dir is not None and cfg.eval.plots:
        kl = f", KL={m['density_kl']:.3f}" if "density_kl" in m else ""
        plots.density_maps(panels, xs, ys, run_dir / "plots" / "density.png",
                           title=f"density on the (x1, x2) slice{kl}")
    return m


def _vector_plots(objective, data, run_dir, ref, short, long, diag, dev) -> None:
    sets = {"data": ref, "samples (short run)": short}
    if long is not None:
        sets["samples (long run)"] = long
    ext = float(ref[:, :2].abs().max()) * 1.3
    plots.sample_scatter(sets, run_dir / "plots" / "samples.png", extent=ext, title="first two coordinates")
    with torch.no_grad():
        energies = {"held-out data": objective.score(data.transform.to_model(ref).to(dev)).cpu()}
        last = long if long is not None else short
        energies["long-run samples" if long is not None else "samples"] = objective.score(
            data.transform.to_model(last).to(dev)).cpu()
    plots.energy_histograms(energies, run_dir / "plots" / "energy_hist.png")
    plots.chain_curves(diag, run_dir / "plots" / "chain.png")
    samples_dir = run_dir / "samples"
    samples_dir.mkdir(parents=True, exist_ok=True)
    import numpy as np
    np.save(samples_dir / "samples.npy", short.numpy())


def evaluate(objective, data, cfg, run_dir: Path | None, generator: torch.Generator | None = None) -> dict:
    """Compute the metrics for this data kind and write ``run_dir/metrics.json``."""
    dev = next(objective.parameters()).device
    generator = generator or torch.Generator(dev).manual_seed(cfg.train.seed + 7)
    objective.eval()
    if data.kind == "vector":
        metrics = evaluate_vectors(objective, data, cfg, run_dir, generator)
    else:
        metrics = {}
        for fn in IMAGE_EVALUATORS:
            metrics.update(fn(objective, data, cfg, run_dir, generator))
    objective.train()
    if run_dir is not None:
        (Path(run_dir) / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
