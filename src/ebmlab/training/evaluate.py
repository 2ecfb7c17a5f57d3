"""Evaluation shared by every method: sample metrics, density metrics and plots -> ``metrics.json``.

Vector data (``evaluate_vectors``):
- ``sample_energy_distance``: energy distance between ``eval.n_samples`` chains from noise (the
  method's own ``sample``) and fresh data, all dimensions, data coordinates; ``..._floor`` is data vs
  other (disjoint) data, ``..._noise`` a separate draw of the prior the chains start from vs data;
- ``sample_precision`` (exact densities only): see ``metrics/density.py``; ``..._floor`` for data;
- ``density_kl``: KL(true || model) on a grid over the first two coordinates, the remaining
  coordinates held at 0 in data coordinates (paper 004 App. A.1 slice for the rings), both
  grid-normalised; ``density_kl_uniform`` is the uniform density's score (a ceiling);
- structure (toys, ``metrics/structure.py``; the toy's modes and support are defined in ``data/toy.py``):
  ``sample_mode_mass`` (per-mode fraction of the samples, nearest-mode assignment; ``mode_mass_true``
  the true weights), ``sample_mode_mass_error`` (max relative error of those fractions) and
  ``sample_in_support_share`` (fraction of samples inside the true support), each with a ``..._floor``
  from true data of the same size (``long_run_*`` too, without floors); where the method has a log-density, ``density_mode_mass`` / ``density_mode_mass_error``: the
  same mode masses of the model density normalised on the ``density_kl`` grid (for the rings: the
  (x1, x2) slice with the other coordinates at 0), with ``density_mode_mass_floor`` /
  ``density_mode_mass_error_floor`` from the exact density on that grid;
- ``long_run_*``: the same sample metrics for chains ``eval.long_run_factor`` times longer
  (``long_run_steps``: the total sampler steps they took);
- ``density_kl_skipped``: the reason there is no ``density_kl`` (a method without a log-density, or
  user data, whose exact density nobody knows), never a nan;
- ``sample_energy_distance_heldout`` (data without an exact sampler: user arrays, tables): the energy
  distance in z-scored data coordinates (the training rows' column means and stds) between
  ``eval.n_samples`` samples and every held-out row,
  with ``..._train`` (training rows) and ``..._noise`` (the prior's draws) on the same rows
  (``training/heldout.py``; ``ebmlab eval --heldout-draws K`` adds K draws and their mean);
- ``eval_n_samples``: the size of each compared set (smaller than ``eval.n_samples`` when the
  held-out split of user data is small: the floor then uses two disjoint halves of it).
Every data kind: ``energy_heldout_gap`` (mean energy of held-out rows minus that of training rows) and
``energy_heldout_gap_z`` (over the training energies' std): a memorisation signal for small data sets
(``energy_heldout_gap_skipped`` where an energy is not finite). No value is NaN or inf: ``write_metrics`` leaves
such a value out for a ``<key>_skipped`` note.
Everything goes through the ``Objective`` contract (``prior``, ``sample``, ``n_steps_default``,
``has_log_density`` / ``log_density``): no probing of methods.
Image data go through ``IMAGE_EVALUATORS`` (built here from ``training/image_eval.py``).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch

from ebmlab import plots
from ebmlab.files import save_npy_atomic, write_text_atomic
from ebmlab.metrics.density import grid_kl, make_grid, sample_precision, uniform_grid_kl
from ebmlab.metrics.distances import energy_distance
from ebmlab.metrics.structure import density_structure_metrics, has_structure, structure_metrics
from ebmlab.samplers.progress import sampling_progress
from ebmlab.training import image_eval
from ebmlab.training.heldout import heldout_energy_distance

IMAGE_EVALUATORS: list = [image_eval.evaluate_images]  # fn(objective, data, cfg, run_dir, generator) -> dict


def _extent(data, cfg) -> float | tuple[float, float, float, float]:
    """The density grid: ``eval.grid_extent`` (a half-width about 0); toys: 1.15 x the held-out data's
    largest |x1|, |x2| about 0 (paper 004 Fig. 2); user data: their bounding box, 15 % wider per side."""
    if cfg.eval.grid_extent:
        return float(cfg.eval.grid_extent)
    x = data.transform.to_data(data.test)[:, :2]
    if data.dist is not None:
        return float(x.abs().max()) * 1.15
    return plots.data_box(x, 0.15)


def slice_base(data) -> torch.Tensor:
    """(D,) where the (x1, x2) slice holds the other coordinates: 0 for toys (paper 004 App. A.1),
    the held-out mean for user data (0 may lie far from them)."""
    if data.dist is not None:
        return torch.zeros(data.shape[0])
    return data.transform.to_data(data.test).mean(0)


def _slice_points(grid2d: torch.Tensor, dim: int, base: torch.Tensor | None = None) -> torch.Tensor:
    pts = torch.zeros(grid2d.shape[0], dim) if base is None else base.expand(grid2d.shape[0], dim).clone()
    pts[:, :2] = grid2d
    return pts


@torch.no_grad()
def model_log_density_grid(objective, data, grid2d: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """(G,) unnormalised model log-density on the 2-D slice (``slice_base``), in data coordinates."""
    dev = next(objective.parameters()).device
    pts = _slice_points(grid2d, data.shape[0], slice_base(data))
    out = [objective.log_density(data.transform.to_model(pts[i:i + chunk]).to(dev)).cpu()
           for i in range(0, len(pts), chunk)]
    return torch.cat(out)


def true_log_density_grid(dist, grid2d: torch.Tensor) -> torch.Tensor:
    """(G,) exact log-density of a toy on the grid's (x1, x2) slice (the other coordinates at 0)."""
    if hasattr(dist, "slice_log_prob"):
        return dist.slice_log_prob(grid2d)
    return dist.log_prob(_slice_points(grid2d, dist.dim))


def sample_metrics(samples: torch.Tensor, data, ref: torch.Tensor, ref2: torch.Tensor, prefix: str) -> dict:
    """``{prefix}energy_distance`` of ``samples`` vs ``ref``, ``{prefix}precision`` where the data have an
    exact density, and the prefixed structure metrics where they have known modes
    (``mode_mass``, ``mode_mass_error``, ``in_support_share``)."""
    out = {f"{prefix}energy_distance": energy_distance(samples, ref)}
    if data.dist is not None:
        out[f"{prefix}precision"] = sample_precision(data.dist.log_prob(samples), data.dist.log_prob(ref2))
    if has_structure(data.dist):
        out.update(structure_metrics(samples, data.dist, prefix))
    return out


def evaluate_vectors(objective, data, cfg, run_dir: Path | None, generator) -> dict:
    """``generator`` lives on the objective's device (chains); data draws use their own CPU one.

    The sample metrics compare ``n`` samples with ``n`` data points and report the floor of two
    *disjoint* sets of ``n`` data points: ``n = eval.n_samples`` where the data have an exact sampler,
    else min(eval.n_samples, half the held-out split) (``eval_n_samples`` says which), so that a sample
    metric and its floor always use sets of the same size."""
    g_cpu = torch.Generator().manual_seed(cfg.train.seed + 11)
    ref, ref2 = data.reference_pair(cfg.eval.n_samples, g_cpu)
    # a bar over every chain step below (tens of seconds on a CPU: the long run); lines in a log after 30 s
    with sampling_progress(_vector_chain_steps(objective, data, cfg, ref.shape[0]), desc="evaluate",
                           enabled=None if cfg.train.progress else False):
        return _vector_metrics(objective, data, cfg, run_dir, generator, ref, ref2)


def _vector_chain_steps(objective, data, cfg, n: int) -> int:
    """The sampler steps ``_vector_metrics`` runs: the short chains, the long ones, and the held-out
    metric's own draw where it cannot reuse the short chains (a held-out split smaller than 2n)."""
    steps = objective.steps_run(None)
    if cfg.eval.long_run_factor > 1:
        steps += objective.steps_run(objective.n_steps_default * cfg.eval.long_run_factor)
    if data.dist is None and data.test.shape[0] >= 2 and n != cfg.eval.n_samples:
        steps += objective.steps_run(None)
    return steps


def _vector_metrics(objective, data, cfg, run_dir: Path | None, generator, ref, ref2) -> dict:
    n = ref.shape[0]
    noise = data.transform.to_data(objective.prior(n, generator).cpu())
    out = objective.sample(n, generator=generator)
    short = data.transform.to_data(out.x.cpu())
    m = sample_metrics(short, data, ref, ref2, "sample_")
    m["sample_energy_distance_floor"] = energy_distance(ref2, ref)
    m["sample_energy_distance_noise"] = energy_distance(noise, ref)
    if data.dist is not None:
        m["sample_precision_floor"] = sample_precision(data.dist.log_prob(ref), data.dist.log_prob(ref2))
    if has_structure(data.dist):  # true data of the same size n (disjoint from ``ref``)
        floor = structure_metrics(ref2, data.dist, "")
        m["mode_mass_true"] = [round(float(w), 5) for w in data.dist.mode_weights]
        m["sample_mode_mass_floor"] = floor["mode_mass"]
        m["sample_mode_mass_error_floor"] = floor["mode_mass_error"]
        m["sample_in_support_share_floor"] = floor["in_support_share"]
    m["eval_n_samples"] = n
    if n < cfg.eval.n_samples:
        m["eval_n_samples_note"] = (f"the held-out split has {data.test.shape[0]} rows: the sample metrics use "
                                    f"two disjoint halves of {n} (not eval.n_samples={cfg.eval.n_samples})")
    long = None
    if cfg.eval.long_run_factor > 1:
        steps = objective.n_steps_default * cfg.eval.long_run_factor
        n_long = min(n, 1000)
        long = data.transform.to_data(objective.sample(n_long, generator=generator, n_steps=steps).x.cpu())
        # same-size sets: the V-statistic energy distance is biased by 1/n, so compare n_long with n_long
        m.update(sample_metrics(long, data, ref[:n_long], ref2[:n_long], "long_run_"))
        m["long_run_steps"] = steps
    m.update(_density_metrics(objective, data, cfg, run_dir))
    if run_dir is not None:  # the final samples, plots or not (compare and --pool-seeds read them)
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        save_npy_atomic(run_dir / "samples" / "samples.npy", short.numpy())
    if run_dir is not None and cfg.eval.plots:
        _vector_plots(objective, data, cfg, run_dir, ref, short, long, out.info, dev=next(objective.parameters()).device)
    if data.dist is None:  # last: its draws leave every metric above as it was
        m.update(heldout_energy_distance(objective, data, cfg.eval.n_samples, generator,
                                         out.x if n == cfg.eval.n_samples else None))
    return m


def _density_metrics(objective, data, cfg, run_dir: Path | None) -> dict:
    """density_kl on the (x1, x2) slice where the method defines a log-density and the data have
    an exact one; otherwise ``density_kl_skipped`` says why (never a nan)."""
    if data.shape[0] < 2:
        return {"density_kl_skipped": "the data have one coordinate; the density map needs two"}
    if not objective.has_log_density:
        return {"density_kl_skipped": f"method {type(objective).__name__} defines no log-density"}
    m, panels = {}, {}
    grid, xs, ys = make_grid(_extent(data, cfg), cfg.eval.grid_size, data.transform.dtype)  # float64 user data
    model_lp = model_log_density_grid(objective, data, grid)
    if data.dist is not None:
        true_lp = true_log_density_grid(data.dist, grid)
        m["density_kl"] = grid_kl(true_lp, model_lp)
        m["density_kl_uniform"] = uniform_grid_kl(true_lp)
        if has_structure(data.dist):
            pts = _slice_points(grid, data.shape[0], slice_base(data))
            m.update(density_structure_metrics(model_lp, true_lp, pts, data.dist))
        panels["true density"] = true_lp
    else:
        m["density_kl_skipped"] = "no exact density for user data"
    panels["model density"] = model_lp
    if run_dir is not None and cfg.eval.plots:
        rest = "" if data.shape[0] <= 2 else (" (other coordinates at 0)" if data.dist is not None
                                              else " (other coordinates at their mean)")
        kl = m.get("density_kl")
        kl = f"; KL(true || model) = {kl:.3f} nats" if isinstance(kl, float) and math.isfinite(kl) else ""
        plots.density_maps(panels, xs, ys, run_dir / "plots" / "density.png",
                           title=f"density on the (x1, x2) slice{rest}{kl}")
    return m


def _vector_plots(objective, data, cfg, run_dir, ref, short, long, diag, dev) -> None:
    sets = {"held-out data": ref, f"samples, {objective.n_steps_default} steps": short}
    if long is not None:
        sets[f"samples, {objective.n_steps_default * cfg.eval.long_run_factor} steps"] = long
    ext = float(ref[:, :2].abs().max()) * 1.3 if data.dist is not None else plots.data_box(ref, 0.3)
    plots.sample_scatter(sets, run_dir / "plots" / "samples.png", extent=ext,
                         title="first two coordinates, chains from noise")
    last = long if long is not None else short
    k = min(len(ref), len(last))  # equal counts: the histograms compare like with like
    with torch.no_grad():
        energies = {"held-out data": objective.score(data.transform.to_model(ref[:k]).to(dev)).cpu(),
                    "long-run samples" if long is not None else "samples":
                        objective.score(data.transform.to_model(last[:k]).to(dev)).cpu()}
    plots.energy_histograms(energies, run_dir / "plots" / "energy_hist.png",
                            title="energies of held-out data and samples")
    plots.chain_curves(diag, run_dir / "plots" / "chain.png", title=f"sampler diagnostics ({cfg.method.name})",
                       target_accept=getattr(cfg.method, "target_accept", None))


def evaluate(objective, data, cfg, run_dir: Path | None, generator: torch.Generator | None = None,
             extra: dict | None = None, write: bool = True) -> dict:
    """Compute the metrics for this data kind and write ``run_dir/metrics.json`` (with ``extra``'s entries; not with
    ``write=False``: the caller adds more and writes once)."""
    dev = next(objective.parameters()).device
    generator = generator or torch.Generator(dev).manual_seed(cfg.train.seed + 7)
    objective.eval()
    if data.kind == "vector":
        metrics = evaluate_vectors(objective, data, cfg, run_dir, generator)
    else:
        metrics = {}
        for fn in IMAGE_EVALUATORS:
            metrics.update(fn(objective, data, cfg, run_dir, generator))
    metrics.update(heldout_energy_gap(objective, data))
    metrics.update(extra or {})
    objective.train()
    if run_dir is not None and write:
        write_metrics(run_dir, metrics)
    return metrics


def evaluate_checkpoint(run_dir: Path, objective, data, cfg, step: int, options) -> dict:
    """``ebmlab eval`` and ``Run.evaluate``: check the ``options`` (``--ood``, ``--fid``, ``--digits-fd``,
    ``--heldout-draws``, as attributes: ``image_eval.check_eval_options``) against the run's data, recompute the
    metrics and plots of the opened checkpoint (``evaluate``; the selection's entries of the old ``metrics.json``
    kept), add each option's scores (``hooks.EVAL_EXTENSIONS``) and ``checkpoint_step``; rewrite ``metrics.json``.
    The run is locked meanwhile (``run.lock``): a trainer or another evaluation of it is refused, not interleaved."""
    from ebmlab.training.lock import RunLock

    image_eval.check_eval_options(options, data.kind, str(data.name if data.kind == "image" else cfg.data.name))
    options = image_eval.with_ood_inputs(options, cfg, data)  # every OOD set read and checked before any work
    with RunLock.acquire(run_dir, instead=None, doing="evaluating"):  # (no other place to evaluate into)
        return _evaluate_locked(run_dir, objective, data, cfg, step, options)


def _evaluate_locked(run_dir: Path, objective, data, cfg, step: int, options) -> dict:
    from ebmlab.training.hooks import eval_extensions

    kept = kept_result_facts(run_dir)  # how training chose the result: kept (only training's checks know it)
    if "selected_step" in kept:  # eval --checkpoint of another step says that these metrics are not the result's
        kept["checkpoint_is_selected"] = kept["selected_step"] == step
    facts = result_facts(objective, kept)
    with torch.no_grad():
        metrics = evaluate(objective, data, cfg, run_dir, extra=facts, write=False)  # written once, below
    objective.eval()  # the options' scores as the metrics': spectral norm's power iteration must not run
    try:
        for fn in eval_extensions():
            metrics.update(fn(options, cfg, objective, data) or {})
    finally:
        objective.train()
    metrics["checkpoint_step"] = step
    write_metrics(run_dir, metrics)  # only now: a failed option leaves the previous metrics.json as it was
    return metrics


def write_metrics(run_dir: Path, metrics: dict) -> None:
    """``run_dir/metrics.json``, written atomically (a kill mid-write leaves the previous file), strict JSON: a
    value that is not finite leaves ``metrics`` (in place: what the caller returns is what the file holds) for a
    ``<key>_skipped`` note, with a warning naming it (NaN is no JSON number, and a diverged model's metric is no
    result)."""
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    for k in bad:
        metrics[f"{k}_skipped"] = f"not finite ({metrics.pop(k)}): the model's energies or samples overflow"
    if bad:
        warnings.warn(f"{', '.join(bad)} not finite, left out of metrics.json (each has a _skipped note): the "
                      "weights may have diverged", RuntimeWarning, stacklevel=3)
    write_text_atomic(Path(run_dir) / "metrics.json", json.dumps(metrics, indent=1, allow_nan=False))


def result_facts(objective, selected: dict) -> dict:
    """The entries of ``metrics.json`` that say how the run's result was chosen rather than what it does: the
    validation selection's (``Selector.load_best``) and, with ``model.base: gmm``, the base's component count."""
    base = objective.mixture_base()
    return selected if base is None else {**selected, "base_components": base.components}


def kept_result_facts(run_dir: Path) -> dict:
    """The selection's entries (``Selector.RESULT_KEYS``) of a run's existing ``metrics.json``: its checks ran
    during training, so ``ebmlab eval`` cannot recompute them and keeps them ({} if there is no readable file)."""
    from ebmlab.training.selection import Selector

    try:
        old = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: old[k] for k in Selector.RESULT_KEYS if isinstance(old, dict) and k in old}


def heldout_energy_gap(objective, data, n: int = 1000, batch_size: int = 500) -> dict:
    """``energy_heldout_gap``: the mean energy (``score``) of up to ``n`` held-out rows minus that of as
    many training rows, and ``energy_heldout_gap_z``: that gap over the training energies' std. About 0
    when the energy generalises; large and positive when the network has learned its training rows
    (docs/leaderboard.md, breast cancer). {} when either split is too small; ``energy_heldout_gap_skipped`` (why)
    where an energy, or their mean in float64, is not finite."""
    k = min(n, data.train.shape[0], data.test.shape[0])
    if k < 2:
        return {}
    skipped = {"energy_heldout_gap_skipped": "an energy is not finite (the weights may have diverged)"}
    try:
        with torch.no_grad():  # float64: energies of 1e37 are finite, their float32 sum is not
            e_train, e_test = (image_eval.energies(objective, x[:k], batch_size).double() for x in (data.train, data.test))
    except FloatingPointError:  # a non-finite energy: no gap to report (the sample metrics say the rest)
        return skipped
    gap, std = float(e_test.mean() - e_train.mean()), float(e_train.std())
    if not (math.isfinite(gap) and math.isfinite(std)):
        return skipped
    return {"energy_heldout_gap": gap, "energy_heldout_gap_z": gap / max(std, 1e-12)}


def final_evaluation(trainer) -> dict:
    """The end of a training run (``ebmlab train`` and ``ebmlab.train``): with the EMA weights swapped in (those
    of the best validation check with ``train.select_every``, whose step and score join the metrics),
    the final sample figures (``training/hooks.py``) and ``evaluate`` (``metrics.json``); then the run's
    hyper-parameters with these final metrics to TensorBoard's HParams dashboard."""
    from contextlib import nullcontext

    from ebmlab.training.hooks import sample_hook
    from ebmlab.training.logging import write_hparams

    objective = trainer.objective
    # train.select_every: the best validation check's weights are the run's result (training/selection.py)
    selected = trainer.selector.load_best(trainer) if getattr(trainer, "selector", None) is not None else {}
    # the evaluated weights' step, as ``ebmlab eval`` writes it: metrics.json says which checkpoint it describes
    selected = {**result_facts(objective, selected), "checkpoint_step": selected.get("selected_step", trainer.step)}
    ema = trainer.ema.applied(objective) if trainer.ema is not None else nullcontext()
    with ema, torch.no_grad():
        sample_hook(trainer, final=True)
        metrics = evaluate(objective, trainer.data, trainer.cfg, trainer.run_dir, extra=selected)
    write_hparams(trainer.run_dir, trainer.cfg.to_dict(), metrics, trainer.step)
    return metrics
