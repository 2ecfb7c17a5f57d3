"""``ebmlab experiment paper003``: CDRL (paper 003) at CPU scale.

(a) Fig. 1 on the checkerboard (shipped config ``paper003_checkerboard``): data, fitted density
    exp(-E_t) and generated samples at every noise level (``fig1_checkerboard.png``; model
    coordinates, i.e. the standardised data), density KL at level 0.
(b) Table 2's sampling adjustment: the one model trained with K = 15 sampled with K' = 15, 8, 5, 3
    steps per level, step size s_t sqrt(15 / K') (rows ``K15``, ``K8``, ``K5``, ``K3``); Table 10 /
    App. G.2 ablations, each a model trained with the same seed and budget and sampled with K = 15:
    ``no_coop`` (no initializer: chains start at x_{t+1}, same schedule), ``no_variance_reduction``
    (independent noises instead of Eq. 9), ``init_on_data`` (initializer regressed on y_t).
    Columns: ``density_kl`` (KL(true || exp(-E_0)) on the grid, level-0 EBM), ``sample_energy_distance``
    (samples from N(0, I) by Alg. 2 vs fresh data), ``sample_precision``. Reference rows
    ``data_floor`` / ``noise_start`` (and ``density_kl_uniform`` in every row). Trained models also
    get ``density_kl_t1`` .. ``density_kl_t{T-1}`` (``level_density_kls``: the noisier marginals of
    Fig. 1's middle row, each with its ``density_kl_uniform_t*`` ceiling): level 0's E_0 carries the
    factor 1/s_0^2 ~ 4e4, so tiny errors of the network there dominate ``density_kl``.
(c) Guidance on digits (shipped config ``paper003_digits_cond``): one class-conditional model,
    sampled with w in {0, 0.5, 1, 3} (rows ``w0``, ``w0.5``, ``w1``, ``w3``), 20 samples per class:
    ``class_accuracy`` = fraction the digits classifier (``metrics/digits.py``) labels as the
    requested class, ``digits_fd`` (feature distance to the test split, floor in ``digits_fd_floor``).
(d) ``inpainting_digits.png`` (App. C: bottom half unknown; rows observed / inpainted / truth) and
    ``composition_digits.png`` (Eq. 13-14: concepts "1" and "7", w = 1, with and without the
    -(M-1) log p term) with the digits model of (c) (its null-label part is the unconditional model).

Claim checked (``claim_holds``): on the checkerboard, CDRL at K = 15 beats no_coop on sample energy
distance, and guidance raises class accuracy from w = 0 to w = 3. One seed per setting.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ebmlab import plots
from ebmlab.experiments.runner import experiment_config, train_and_evaluate, write_json
from ebmlab.metrics.density import grid_kl, make_grid, uniform_grid_kl
from ebmlab.training.evaluate import model_log_density_grid, sample_metrics, true_log_density_grid

KS = (15, 8, 5, 3)
ABLATIONS = {"no_coop": ["method.cooperative=false"], "no_variance_reduction": ["method.variance_reduction=false"],
             "init_on_data": ["method.init_target=data"]}
WEIGHTS = (0.0, 0.5, 1.0, 3.0)
QUICK = ["train.steps=10", "data.n_train=2000", "train.batch_size=32", "eval.n_samples=200", "eval.grid_size=30"]


def _train(out: Path, name: str, config: str, sets: list[str], quick: bool):
    """Train one model (EMA weights, eval mode); this experiment measures with its own functions."""
    base = QUICK if quick else []
    arm = train_and_evaluate(out / "runs" / name, experiment_config(config, base + sets, threads=1), evaluate_run=False)
    arm.trainer.objective.eval()
    print(f"[paper003] trained {name} in {arm.train_seconds:.0f}s", flush=True)
    return arm.trainer, arm.train_seconds


def vector_metrics(trainer, n_steps: int, seed: int = 7) -> dict:
    """Sample metrics with K' = n_steps and the level-0 density KL, as ``training/evaluate.py``."""
    obj, data, cfg = trainer.objective, trainer.data, trainer.cfg
    g_cpu = torch.Generator().manual_seed(cfg.train.seed + 11)
    ref, ref2 = data.fresh(cfg.eval.n_samples, g_cpu), data.fresh(cfg.eval.n_samples, g_cpu)
    # the contract's n_steps counts all levels: K' = n_steps per level is T * K' in all
    x = obj.sample(cfg.eval.n_samples, generator=torch.Generator().manual_seed(seed), n_steps=n_steps * obj.cfg.T).x
    m = sample_metrics(data.transform.to_data(x.detach()), data, ref, ref2, "sample_")
    extent = float(data.transform.to_data(data.test)[:, :2].abs().max()) * 1.15
    grid, _, _ = make_grid(extent, cfg.eval.grid_size)
    true_lp = true_log_density_grid(data.dist, grid)
    m["density_kl"] = grid_kl(true_lp, model_log_density_grid(obj, data, grid))
    m["density_kl_uniform"] = uniform_grid_kl(true_lp)
    return m


@torch.no_grad()
def level_density_kls(trainer, extent: float = 4.0, grid_size: int = 80, n_data: int = 10000) -> dict:
    """KL(true || model) of the level-t marginal of x_t, t = 1..T-1, on a grid in model coordinates
    (Fig. 1, middle row). True log p_t(x) = log mean_i N(x; abar_t x0_i, sbar_t^2 I) over ``n_data``
    training points (exact up to Monte-Carlo error for sbar_t >= 0.25 >> grid cell); model
    -E_t(alpha_{t+1} x) = -E_net(alpha_{t+1} x; lambda_t) / s_t^2. Level 0 (sbar_0 = 0.0074, finer
    than the grid) is the ``density_kl`` column, against the exact checkerboard density."""
    obj = trainer.objective
    x0 = trainer.data.train[:n_data]                                       # (N, 2)
    grid, _, _ = make_grid(extent, grid_size)                              # (G, 2)
    out = {}
    for t in range(1, obj.cfg.T):
        a, s = float(obj.abar[t]), float(obj.sbar[t])
        d2 = torch.cat([torch.cdist(grid, a * c).pow(2) for c in x0.split(2000)], 1)  # (G, N)
        true_lp = torch.logsumexp(-d2 / (2 * s * s), 1)                  # (G,) up to a constant
        tt = torch.full((grid.shape[0],), t, dtype=torch.long)
        model_lp = -obj.energy.net_energy(obj.alpha[t] * grid, tt) / obj.energy.step_sq[t]
        out[f"density_kl_t{t}"] = grid_kl(true_lp, model_lp)
        out[f"density_kl_uniform_t{t}"] = uniform_grid_kl(true_lp)
    return out


def reference_rows(trainer) -> list[dict]:
    """The data-vs-data floor and the noise ceiling rows of the sample metrics for ``trainer``'s data."""
    data, n = trainer.data, trainer.cfg.eval.n_samples
    g = torch.Generator().manual_seed(trainer.cfg.train.seed + 11)
    ref, ref2 = data.fresh(n, g), data.fresh(n, g)
    noise = data.transform.to_data(trainer.objective.prior(n, torch.Generator().manual_seed(5)))
    return [{"name": "data_floor", **_rename(sample_metrics(ref2, data, ref, ref2, "sample_"))},
            {"name": "noise_start", **_rename(sample_metrics(noise, data, ref, ref2, "sample_"))}]


def _rename(m: dict) -> dict:
    return {k: float(v) for k, v in m.items()}


@torch.no_grad()
def figure1(out: Path, trainer) -> None:
    """Fig. 1: data / fitted density / samples at each level t = 0..T (model coordinates)."""
    obj, data = trainer.objective, trainer.data
    T, g = obj.cfg.T, torch.Generator().manual_seed(3)
    x = data.train[:3000]
    e = torch.randn(x.shape, generator=g)
    noisy = {f"data t={t}": obj.abar[t] * x + obj.sbar[t] * e for t in range(T + 1)}
    with torch.enable_grad():
        _, path, _ = obj.reverse_process(obj.prior(3000, g), generator=g, keep_levels=True)
    samples = {f"samples t={T - i}": p for i, p in enumerate(path)}
    ext = 3.5
    grid, xs, ys = make_grid(ext, 80)
    dens = {}
    for t in range(T):
        tt = torch.full((grid.shape[0],), t, dtype=torch.long)
        dens[f"exp(-E_{t}) of x_{t}"] = -obj.energy.net_energy(obj.alpha[t] * grid, tt) / obj.energy.step_sq[t]
    lab = {"xlabel": "z1 (model units)", "ylabel": "z2 (model units)"}
    plots.sample_scatter(noisy, out / "fig1_data.png", extent=ext, title="paper 003 Fig. 1 (top): x_t = abar_t x + sbar_t e",
                         **lab)
    plots.density_maps(dens, xs, ys, out / "fig1_density.png", title="Fig. 1 (middle): fitted marginal densities per level",
                       shared_scale=False, **lab)  # one density per noise level: each on its own scale
    plots.sample_scatter(samples, out / "fig1_samples.png", extent=ext, title="Fig. 1 (bottom): Alg. 2 samples per level",
                         **lab)


def checkerboard_part(out: Path, quick: bool) -> list[dict]:
    """Train CDRL on the checkerboard and evaluate it per level; returns its rows."""
    trainer, secs = _train(out, "cdrl", "paper003_checkerboard", [], quick)
    rows = []
    for K in KS:
        t0 = time.time()
        m = vector_metrics(trainer, K)
        rows.append({"name": f"K{K}", "K": K, **_rename(m), "train_seconds": secs,
                     "sample_seconds": round(time.time() - t0, 1)})
        if K == KS[0]:
            rows[-1].update(level_density_kls(trainer))
        print(f"[paper003] K{K}: {rows[-1]}", flush=True)
    rows += reference_rows(trainer)
    figure1(out, trainer)
    for name, sets in ABLATIONS.items():
        ab, secs = _train(out, name, "paper003_checkerboard", sets, quick)
        rows.append({"name": name, "K": 15, **_rename(vector_metrics(ab, 15)), **level_density_kls(ab),
                     "train_seconds": secs})
        print(f"[paper003] {name}: {rows[-1]}", flush=True)
    return rows


def digits_part(out: Path, quick: bool) -> list[dict]:
    """Train CDRL on digits and evaluate it; returns its rows."""
    sets = ["train.steps=4", "method.n_steps=2"] if quick else []
    trainer, secs = _train(out, "digits_cond", "paper003_digits_cond", sets, quick)
    rows = guidance_rows(out, trainer, secs, 2 if quick else 20)
    applications_figures(out, trainer)
    return rows


def guidance_rows(out: Path, trainer, secs: float, per_class: int) -> list[dict]:
    """Rows w0..w3 (class accuracy, digits FD) and the guidance_w*.png grids of a conditional model."""
    from ebmlab.applications.guidance import guided_sample
    from ebmlab.metrics.digits import digits_metrics, get_classifier
    obj, clf = trainer.objective, get_classifier()
    labels = torch.arange(10).repeat_interleave(per_class)
    rows, grids = [], []
    for w in WEIGHTS:
        t0 = time.time()
        x = guided_sample(obj, labels, w, generator=torch.Generator().manual_seed(9)).clamp(-1, 1)
        pred, _ = clf.classify(x)
        m = digits_metrics(x, generator=torch.Generator().manual_seed(1))
        rows.append({"name": f"w{w:g}", "w": w, "class_accuracy": float((pred == labels).float().mean()),
                     "digits_fd": m["digits_fd"], "digits_fd_floor": m["digits_fd_floor"],
                     "digits_fd_noise": m["digits_fd_noise"], "train_seconds": secs,
                     "sample_seconds": round(time.time() - t0, 1)})
        grids.append(x.view(10, per_class, *x.shape[1:])[:, : min(per_class, 8)].reshape(-1, *x.shape[1:]))
        print(f"[paper003] w={w}: {rows[-1]}", flush=True)
    for w, grid in zip(WEIGHTS, grids):
        plots.image_grid(grid, out / f"guidance_w{w:g}.png", nrow=min(per_class, 8), title=f"w = {w:g}, one row per class")
    return rows


def applications_figures(out: Path, trainer) -> None:
    """Guidance, inpainting and composition figures (paper 003 Eq. 11-14, App. C) for a trained digits model."""
    from ebmlab.applications.inpainting import inpaint
    from ebmlab.applications.recovery_composition import composed_sample
    obj, data, g = trainer.objective, trainer.data, torch.Generator().manual_seed(21)
    x = data.test[:12]
    mask = torch.ones_like(x)
    mask[..., x.shape[-2] // 2:, :] = 0  # bottom half unknown
    filled = inpaint(obj, x, mask, generator=g).clamp(-1, 1)
    plots.image_grid(torch.cat([x * mask - (1 - mask), filled, x]), out / "inpainting_digits.png", nrow=12,
                     title="App. C inpainting: observed (bottom half hidden) / inpainted / truth")
    c1, c7 = torch.full((16,), 1), torch.full((16,), 7)
    with_prior = composed_sample(obj, [c1, c7], 1.0, generator=torch.Generator().manual_seed(22)).clamp(-1, 1)
    without = composed_sample(obj, [c1, c7], 1.0, include_prior=False,
                              generator=torch.Generator().manual_seed(22)).clamp(-1, 1)
    plots.image_grid(torch.cat([with_prior, without]), out / "composition_digits.png", nrow=16,
                     title="Eq. 14 '1' AND '7', w=1: with -(M-1) log p(x) (top), product of experts (bottom)")


def run(out: Path, quick: bool = False) -> dict:
    """Paper 003's experiment into ``out``; returns the results dict."""
    out = Path(out)
    rows = checkerboard_part(out, quick) + digits_part(out, quick)
    by = {r["name"]: r for r in rows}
    coop = by["K15"]["sample_energy_distance"] < by["no_coop"]["sample_energy_distance"]
    guided = by["w3"]["class_accuracy"] > by["w0"]["class_accuracy"]
    result = {"paper": "003", "rows": rows,
              "claim": "CDRL (K=15) samples beat no cooperative initializer on the checkerboard (sample energy "
                       "distance), and classifier-free guidance raises the class accuracy of digits from w=0 to w=3",
              "claim_holds": bool(coop and guided), "quick": quick}
    write_json(out, result)
    (out / "results.md").write_text(_markdown(result))
    return result


def _markdown(result: dict) -> str:
    cols = ["density_kl", "density_kl_t1", "density_kl_t2", "density_kl_t3", "sample_energy_distance",
            "sample_precision", "class_accuracy", "digits_fd", "train_seconds"]
    lines = ["# paper 003 (CDRL) at CPU scale", "", f"claim: {result['claim']}", "",
             f"claim holds: {result['claim_holds']}" + (" (quick smoke run: numbers meaningless)" if result["quick"] else ""),
             "", "| row | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in result["rows"]:
        vals = [r.get(c) for c in cols]
        lines.append(f"| {r['name']} | " + " | ".join("" if v is None else f"{v:.4g}" for v in vals) + " |")
    first = next((r for r in result["rows"] if "density_kl_uniform" in r), {})
    ceilings = {k.replace("_uniform", ""): round(v, 4) for k, v in first.items() if k.startswith("density_kl_uniform")}
    lines += ["", f"uniform-density ceilings (KL of a flat model): {ceilings}",
              "Figures: fig1_data.png, fig1_density.png, fig1_samples.png, guidance_w*.png, inpainting_digits.png, "
              "composition_digits.png"]
    return "\n".join(lines) + "\n"
