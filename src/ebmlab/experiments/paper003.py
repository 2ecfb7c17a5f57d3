"""``ebmlab experiment paper003``: CDRL (paper 003) at CPU scale, on the claim harness.

Cells (``experiments/claims.py``: every arm the same budget and seeds, one-thread processes, paired
verdicts with margins fixed before any run):

(a) **Checkerboard** (Fig. 1, Table 10 rows 1-2; shipped config ``paper003_checkerboard``, the
    authors' toy set-up scaled to the CPU): arms ``cdrl``; ``no_coop`` (no initializer, chains start at
    x_{t+1}, everything else the same: Table 10 "No cooperative training"); ``drl`` (Gao et al.
    2021 as their code trains it: ``DRLConfig``, DRL's schedule, K = 30, b^2 = 2e-4 steps, independent
    pairs, no initializer, no Tweedie; same data, network, lr and iterations). Metrics:
    ``sample_in_support_share`` (samples from N(0, I) by Alg. 2 inside the dark squares; data 1.0),
    ``sample_energy_distance``, ``sample_mode_mass_error`` (``training/evaluate.py``), the per-level
    density KLs ``density_kl_t1`` .. ``density_kl_t5`` (``level_density_kls``: KL(true || exp(-E_t)) of
    the marginal of x_t on a grid) and the level-0 ``density_kl``.
(b) **Fewer sampling steps** (Table 2 analogue): the ``cdrl`` models of (a) sampled with K' = 15, 8, 5, 3
    steps per level, step s_t sqrt(15 / K') (Sec. 4.2): pseudo-arms ``K15`` .. ``K3`` of one table.
(c) **Digits** (shipped config ``paper003_digits_cond``): one conditional model per seed trained on
    Sec. 4.5's labels (``recovery_composition.composition_dataset``: every image once as its digit class
    0-9 and once as its stroke thickness 10 / 11, the attributes that co-occur). Classifier-free
    guidance (Sec. 3.5) with w = 0, 1, 3 (pseudo-arms ``w0``, ``w1``, ``w3``): ``class_accuracy`` of
    ``GUIDANCE_PER_CLASS`` x 10 samples by the digits classifier, and ``digits_fd`` (the FD cost).
    Composition (Sec. 4.5, Eq. 14, w = 3, unconditional initializer): pseudo-arms ``class_only``,
    ``thickness_only``, ``composed``, each over every (digit, thickness) pair: ``both_acc`` = the
    fraction with the requested digit *and* the requested thickness. Table 2 on digits: the same
    model's class-conditional samples (w = 0, the guidance protocol) with K' = 15, 8, 5, 3 steps per
    level, ``digits_fd`` per K' (pseudo-arms ``digits_K15`` .. ``digits_K3``).

Margins (fixed in advance, metric units): in-support share 0.05 (100 of 2,000 samples); density KL
0.05 nats; Table 2 non-inferiority: K' = 8 loses less than 0.05 in-support share against K' = 15;
guidance: class accuracy +0.06 (about 2 sqrt(2) binomial standard deviations at 500 samples and
accuracy 0.5); composition: both-attribute accuracy +0.10 (about 2 sqrt(2) sd at 200 samples); Table 2
on digits (added after the first full run, before any digits K' sweep was run): K' = 8's digits FD at
most 25 % above K' = 15's (the paper's CIFAR-10 FID rises 3.68 -> 4.0 from K' = 15 to 8, +9 %).
The fixed bars (share 0.85, -0.05, +25 %) are decided as ``claims.decide`` does: every seed must clear
the bar by more than the arm's standard deviation over seeds (their stated margin is 0).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from ebmlab import plots
from ebmlab.energies.initializer import BLOCKS
from ebmlab.experiments import claims
from ebmlab.experiments.claims import Cell, Claim
from ebmlab.experiments.runner import experiment_config, train_and_evaluate, train_cell
from ebmlab.metrics.density import grid_kl, make_grid, uniform_grid_kl

KS = (15, 8, 5, 3)
# Checkerboard iterations per cell. The shipped config trains 8,000 (``--full``: ~2,500 core-seconds for
# ``drl``, whose K = 30 doubles the chain, ~620 for ``cdrl``, ~420 for ``no_coop``, ~800 per digits cell:
# ~75 min on 2 cores); the default run gives every arm 5,000 so that the whole experiment fits the
# 60-minute budget (~55 min on 2 idle cores). Fixed before any run of the experiment.
CB_STEPS, CB_STEPS_FULL = 5000, 8000
WEIGHTS = (0.0, 1.0, 3.0)
COMPOSE_W = 3.0                    # Sec. 4.5 / Fig. 4
GUIDANCE_PER_CLASS, COMPOSE_PER_PAIR = 50, 10
SUPPORT_MARGIN, KL_MARGIN, ACC_MARGIN, BOTH_MARGIN = 0.05, 0.05, 0.06, 0.10
DIGITS_K8_FD_LOSS = 0.25           # non-inferiority bar of FD(K'=8) / FD(K'=15) - 1 on digits
CHECKERBOARD = "paper003_checkerboard"
DIGITS = "paper003_digits_cond"
# Gao et al. (2021) as their code trains it, on the checkerboard config's data / network / optimiser
DRL = ["method.name=drl", "method.schedule=drl", "method.n_steps=30", "method.step_rule=eq16", "method.step_coef=0.02",
       "method.cooperative=false", "method.variance_reduction=false", "method.top_marginal=true",
       "method.loss_weight=sigma", "method.denoise=false"]
ARMS = {"cdrl": [], "no_coop": ["method.cooperative=false"], "drl": DRL}
QUICK_STEPS = 6
QUICK = [f"train.steps={QUICK_STEPS}", "train.batch_size=32", "eval.n_samples=200", "eval.grid_size=30",
         "model.width=32", "model.depth=1"]
QUICK_CB = QUICK + ["data.n_train=2000", "method.init_width=32", "method.init_depth=1"]
QUICK_DIGITS = QUICK + ["method.n_steps=2"]


# ----- measures ------------------------------------------------------------------------------------
@torch.no_grad()
def level_density_kls(trainer, extent: float | None = None, grid_size: int = 120, n_data: int = 5000) -> dict:
    """KL(true || model) of the level-t marginal of x_t, t = 1..T-1, on a grid in the diffusion's coordinates
    (model coordinates x ``method.data_scale``)
    (Fig. 1, middle row). True log p_t(x) = log mean_i N(x; abar_t x0_i, sbar_t^2 I) over ``n_data``
    training points (sbar_1 = 0.25; the grid cell is 2 extent / grid_size); model
    -E_t(y_scale_t x) = -E_net(y_scale_t x; lambda_t) / s_t^2 (y_scale_t = alpha_{t+1}, 1 at a
    ``top_marginal`` top level). Level 0 (sbar_0 = 0.0074, finer than the grid) is ``density_kl``."""
    obj = trainer.objective
    x0 = trainer.data.train[:n_data] * obj.cfg.data_scale                  # (N, 2) the diffusion's coordinates
    extent = extent or float(x0.abs().max()) * 1.75
    grid, _, _ = make_grid(extent, grid_size)                              # (G, 2)
    out = {}
    for t in range(1, obj.cfg.T):
        a, s = float(obj.abar[t]), float(obj.sbar[t])
        d2 = torch.cat([torch.cdist(grid, a * c).pow(2) for c in x0.split(2000)], 1)  # (G, N)
        true_lp = torch.logsumexp(-d2 / (2 * s * s), 1)                  # (G,) up to a constant
        tt = torch.full((grid.shape[0],), t, dtype=torch.long)
        model_lp = -obj.energy.net_energy(obj.y_scale[t] * grid, tt) / obj.energy.step_sq[t]
        out[f"density_kl_t{t}"] = grid_kl(true_lp, model_lp)
        out[f"density_kl_uniform_t{t}"] = uniform_grid_kl(true_lp)
    return out


def steps_metrics(trainer, seed: int = 7) -> dict:
    """In-support share with K' = 15, 8, 5, 3 steps per level (Table 2's adjustment, Sec. 4.2)."""
    obj, data, n = trainer.objective, trainer.data, trainer.cfg.eval.n_samples
    out = {}
    for K in KS:
        t0 = time.time()
        x = obj.sample(n, generator=torch.Generator().manual_seed(seed), n_steps=K * obj.cfg.T).x.detach()
        out[f"in_support_K{K}"] = float(data.dist.in_support(data.transform.to_data(x)).float().mean())
        out[f"sample_seconds_K{K}"] = round(time.time() - t0, 2)
    out["in_support_K8_minus_K15"] = out["in_support_K8"] - out["in_support_K15"]
    out["in_support_K15_minus_K3"] = out["in_support_K15"] - out["in_support_K3"]
    return out


@torch.no_grad()
def figure1(out: Path, trainer) -> None:
    """Fig. 1: data / fitted density / samples at each level t = 0..T (the diffusion's coordinates)."""
    obj, data = trainer.objective, trainer.data
    T, g = obj.cfg.T, torch.Generator().manual_seed(3)
    x = data.train[:3000] * obj.cfg.data_scale  # the diffusion's coordinates
    e = torch.randn(x.shape, generator=g)
    noisy = {f"data t={t}": obj.abar[t] * x + obj.sbar[t] * e for t in range(T + 1)}
    with torch.enable_grad():
        _, path, _ = obj.reverse_process(obj.prior(3000, g), generator=g, keep_levels=True)
    samples = {f"samples t={T - i}": p for i, p in enumerate(path)}
    ext = max(3.5, float(x.abs().max()) * 1.3)
    grid, xs, ys = make_grid(ext, 80)
    dens = {}
    for t in range(T):
        tt = torch.full((grid.shape[0],), t, dtype=torch.long)
        dens[f"exp(-E_{t}) of x_{t}"] = -obj.energy.net_energy(obj.y_scale[t] * grid, tt) / obj.energy.step_sq[t]
    lab = {"xlabel": "z1 (diffusion units)", "ylabel": "z2 (diffusion units)"}
    plots.sample_scatter(noisy, out / "fig1_data.png", extent=ext, title="paper 003 Fig. 1 (top): x_t = abar_t x + sbar_t e",
                         **lab)
    plots.density_maps(dens, xs, ys, out / "fig1_density.png", title="Fig. 1 (middle): fitted marginal densities per level",
                       shared_scale=False, **lab)
    plots.sample_scatter(samples, out / "fig1_samples.png", extent=ext, title="Fig. 1 (bottom): Alg. 2 samples per level",
                         **lab)


def checkerboard_measure(arm) -> dict:
    """Per-level density KLs, the K' sweep, and Fig. 1 of one trained checkerboard arm (every cell draws it;
    ``run`` copies the first seed's of cdrl and drl)."""
    trainer = arm.trainer
    trainer.objective.eval()
    quick = trainer.cfg.train.steps <= QUICK_STEPS
    m = {**level_density_kls(trainer, n_data=1000 if quick else 5000, grid_size=40 if quick else 120),
         **steps_metrics(trainer)}
    with torch.no_grad():
        figure1(trainer.run_dir, trainer)
    return m


def checkerboard_cell(params: dict, seed: int, run_dir: Path) -> dict:
    """One (arm, seed) on the checkerboard: ``train_cell`` + ``checkerboard_measure``."""
    return train_cell(CHECKERBOARD, params["overrides"], seed, run_dir, measure=checkerboard_measure)


def digits_cell(params: dict, seed: int, run_dir: Path) -> dict:
    """One seed of the digits model (Sec. 4.5 labels): guidance and composition measures."""
    from ebmlab.applications.composition import ThicknessAttribute
    from ebmlab.applications.recovery_composition import composition_dataset
    from ebmlab.data import build_dataset
    cfg = experiment_config(DIGITS, list(params["overrides"]) + [f"train.seed={seed}"], threads=1)
    data = build_dataset(cfg.data)
    attribute = ThicknessAttribute.fit(data.train, data.train_labels, data.num_classes)
    # no config.yaml: the relabelled dataset is not one a config could rebuild
    arm = train_and_evaluate(Path(run_dir), cfg, data=composition_dataset(data, attribute), evaluate_run=False,
                             on_diverge="record", save_config=False)
    step = arm.trainer.step
    if arm.diverged:
        return {"diverged": f"step {step}: {arm.diverged}", "step": step}
    obj = arm.trainer.objective
    obj.eval()
    m = guidance_metrics(Path(run_dir), obj, params["per_class"])
    m.update(composition_metrics(obj, attribute, params["per_pair"], data.num_classes))
    m.update(digits_steps_metrics(obj, params["steps_per_class"]))
    applications_figures(Path(run_dir), obj, data)
    return {**m, "step": step, "train_seconds": arm.train_seconds}


def guidance_metrics(run_dir: Path, obj, per_class: int) -> dict:
    """class_accuracy_w* and digits_fd_w* for w in ``WEIGHTS`` (Eq. 11-12), and the guidance_w*.png grids."""
    from ebmlab.applications.guidance import guided_sample
    from ebmlab.metrics.digits import digits_metrics, get_classifier
    clf = get_classifier()
    labels = torch.arange(10).repeat_interleave(per_class)
    out = {}
    for w in WEIGHTS:
        t0 = time.time()
        x = guided_sample(obj, labels, w, generator=torch.Generator().manual_seed(9)).clamp(-1, 1)
        pred, _ = clf.classify(x)
        fd = digits_metrics(x, generator=torch.Generator().manual_seed(1))
        out[f"class_accuracy_w{w:g}"] = float((pred == labels).float().mean())
        out[f"digits_fd_w{w:g}"] = fd["digits_fd"]
        out["digits_fd_floor"] = fd["digits_fd_floor"]
        out[f"sample_seconds_w{w:g}"] = round(time.time() - t0, 1)
        grid = x.view(10, per_class, *x.shape[1:])[:, : min(per_class, 8)].reshape(-1, *x.shape[1:])
        plots.image_grid(grid, run_dir / f"guidance_w{w:g}.png", nrow=min(per_class, 8),
                         title=f"w = {w:g}, one row per class")
    return out


def digits_steps_metrics(obj, per_class: int) -> dict:
    """Table 2 on digits: ``digits_fd_K*`` of class-conditional samples (w = 0, the guidance protocol's
    labels and seed) with K' = 15, 8, 5, 3 steps per level, and FD(K'=8) / FD(K'=15) - 1."""
    from ebmlab.applications.guidance import guided_sample
    from ebmlab.metrics.digits import digits_metrics
    labels = torch.arange(10).repeat_interleave(per_class)
    out = {}
    for K in KS:
        t0 = time.time()
        x = guided_sample(obj, labels, 0.0, generator=torch.Generator().manual_seed(9), n_steps=K).clamp(-1, 1)
        out[f"digits_fd_K{K}"] = digits_metrics(x, generator=torch.Generator().manual_seed(1))["digits_fd"]
        out[f"sample_seconds_K{K}"] = round(time.time() - t0, 1)
    out["digits_fd_K8_rel_loss"] = out["digits_fd_K8"] / out["digits_fd_K15"] - 1.0
    return out


def composition_metrics(obj, attribute, per_pair: int, num_classes: int = 10) -> dict:
    """Sec. 4.5 / Eq. 14: both-attribute accuracy of class-only, thickness-only and composed sampling."""
    from ebmlab.applications.recovery_composition import composition_accuracy
    from ebmlab.metrics.digits import classify
    rows = composition_accuracy(obj, lambda x: classify(x)[0], attribute, n_per_pair=per_pair, w=COMPOSE_W,
                                generator=torch.Generator().manual_seed(22), num_classes=num_classes)
    return {f"{name}_{k}": v for name, r in rows.items() for k, v in r.items()}


def applications_figures(out: Path, obj, data) -> None:
    """Inpainting (App. C) and composition (Eq. 14: "1" AND thick) figures of a trained digits model."""
    from ebmlab.applications.inpainting import inpaint
    from ebmlab.applications.recovery_composition import composed_sample
    x = data.test[:12]
    mask = torch.ones_like(x)
    mask[..., x.shape[-2] // 2:, :] = 0  # bottom half unknown
    filled = inpaint(obj, x, mask, generator=torch.Generator().manual_seed(21)).clamp(-1, 1)
    plots.image_grid(torch.cat([x * mask - (1 - mask), filled, x]), out / "inpainting_digits.png", nrow=12,
                     title="App. C inpainting: observed (bottom half hidden) / inpainted / truth")
    rows = [composed_sample(obj, [torch.full((12,), 1), torch.full((12,), data.num_classes + thick)], COMPOSE_W,
                            generator=torch.Generator().manual_seed(22 + thick)).clamp(-1, 1) for thick in (0, 1)]
    plots.image_grid(torch.cat(rows), out / "composition_digits.png", nrow=12,
                     title=f"Eq. 14, w={COMPOSE_W:g}: '1' AND thin (top), '1' AND thick (bottom)")


# ----- cells, tables, claims -------------------------------------------------------------------------
def blocks_fingerprint(params: dict, seed: int) -> str:
    """A cell's fingerprint for the design of the UNet initializer's blocks (``initializer.BLOCKS``): a cell cached with
    an earlier design (or before this was recorded) runs again (``claims.Cell.fingerprint``)."""
    return BLOCKS


def build_cells(quick: bool, seeds, full: bool = False) -> dict[str, list[Cell]]:
    """{table: cells}: the checkerboard arms and the digits model (``CB_STEPS`` / ``--full``)."""
    steps = [f"train.steps={CB_STEPS_FULL if full else CB_STEPS}"]
    cb = [Cell(arm, s, checkerboard_cell, {"overrides": sets + (QUICK_CB if quick else steps)})
          for arm, sets in ARMS.items() for s in seeds]
    dg = [Cell("digits", s, digits_cell, {"overrides": QUICK_DIGITS if quick else [],
                                          "per_class": 2 if quick else GUIDANCE_PER_CLASS,
                                          "per_pair": 1 if quick else COMPOSE_PER_PAIR,
                                          "steps_per_class": 2 if quick else GUIDANCE_PER_CLASS},
               fingerprint=blocks_fingerprint) for s in seeds]
    return {"checkerboard": cb, "digits": dg}


def pseudo_arms(records: dict, arm: str, names: dict[str, dict[str, str]]) -> dict:
    """Records of pseudo-arms read from one arm's metrics: {new arm: {new metric: old metric}}."""
    out = {}
    for (a, s), r in records.items():
        if a != arm:
            continue
        for new, mapping in names.items():
            out[(new, s)] = {**r, "arm": new,
                             "metrics": {k: r["metrics"].get(old, float("nan")) for k, old in mapping.items()}}
    return out


CB_METRICS = ["sample_in_support_share", "sample_energy_distance", "sample_mode_mass_error", "density_kl",
              "density_kl_t1", "density_kl_t2", "density_kl_t3", "density_kl_t4", "density_kl_t5", "train_seconds"]
STEP_METRICS = ["in_support_share", "sample_seconds"]
DIGITS_STEP_METRICS = ["digits_fd", "sample_seconds", "digits_fd_K8_rel_loss"]
GUIDE_METRICS = ["class_accuracy", "digits_fd"]
COMPOSE_METRICS = ["class_acc", "attribute_acc", "both_acc"]
SUB_CLAIMS = [
    Claim("CDRL samples lie in the squares (share above 0.85)", "cdrl", 0.85, "sample_in_support_share", "higher", 0.0),
    Claim("CDRL beats no cooperative initializer (Table 10) on in-support share", "cdrl", "no_coop",
          "sample_in_support_share", "higher", SUPPORT_MARGIN),
    Claim("CDRL beats DRL (Gao et al. 2021; Table 10) on in-support share", "cdrl", "drl", "sample_in_support_share",
          "higher", SUPPORT_MARGIN),
    Claim("CDRL's level-1 marginal density beats no_coop's (Fig. 1 middle row)", "cdrl", "no_coop", "density_kl_t1",
          "lower", KL_MARGIN),
    Claim("Table 2: K'=8 loses less than 0.05 in-support share against K'=15 (non-inferiority)", "cdrl", -SUPPORT_MARGIN,
          "in_support_K8_minus_K15", "higher", 0.0),
    Claim("Table 2: K'=3 is worse than K'=15", "K15", "K3", "in_support_share", "higher", SUPPORT_MARGIN),
    Claim("Table 2 on digits: K'=8's FD at most 25 % above K'=15's (non-inferiority)", "digits_K8",
          DIGITS_K8_FD_LOSS, "digits_fd_K8_rel_loss", "lower", 0.0),
    Claim("guidance w=3 raises class accuracy over w=0 (Sec. 3.5)", "w3", "w0", "class_accuracy", "higher", ACC_MARGIN),
    Claim("composition (Eq. 14) carries both attributes more often than the class alone", "composed", "class_only",
          "both_acc", "higher", BOTH_MARGIN),
    Claim("composition (Eq. 14) carries both attributes more often than the thickness alone", "composed",
          "thickness_only", "both_acc", "higher", BOTH_MARGIN),
]


settings = claims.quick_or_full  # what changes every cell (experiment.json): --quick ignores --full


def run(out: Path, quick: bool = False, seeds=claims.SEEDS, jobs: int = 2, full: bool = False) -> dict:
    """Paper 003's experiment into ``out``; returns the results dict (``claims.write_claim_results``).
    ``full``: the checkerboard arms at the shipped config's 8,000 iterations (``CB_STEPS_FULL``)."""
    t0 = time.time()
    out = Path(out)
    cells = build_cells(quick, seeds, full)
    # longest cells first (drl, then digits), so the two processes finish together
    order = [c for c in cells["checkerboard"] if c.arm == "drl"] + cells["digits"] + \
        [c for c in cells["checkerboard"] if c.arm != "drl"]
    records = claims.run_cells(out, order, jobs=jobs)
    cb = {k: v for k, v in records.items() if k[0] in ARMS}
    dg = {k: v for k, v in records.items() if k[0] == "digits"}
    claims.check_same_step(cb)
    claims.check_same_step(dg)
    steps = pseudo_arms(cb, "cdrl", {f"K{K}": {"in_support_share": f"in_support_K{K}",
                                               "sample_seconds": f"sample_seconds_K{K}"} for K in KS})
    guide = pseudo_arms(dg, "digits", {f"w{w:g}": {"class_accuracy": f"class_accuracy_w{w:g}",
                                                   "digits_fd": f"digits_fd_w{w:g}"} for w in WEIGHTS})
    dsteps = pseudo_arms(dg, "digits", {f"digits_K{K}": {"digits_fd": f"digits_fd_K{K}",
                                                         "sample_seconds": f"sample_seconds_K{K}",
                                                         "digits_fd_K8_rel_loss": "digits_fd_K8_rel_loss"}
                                        for K in KS})
    compose = pseudo_arms(dg, "digits", {n: {m: f"{n}_{m}" for m in COMPOSE_METRICS}
                                         for n in ("class_only", "thickness_only", "composed")})
    tables = {"checkerboard (Table 10 rows, Fig. 1)": claims.summary_table(cb, list(ARMS), CB_METRICS + [
                  "in_support_K8_minus_K15"], seeds),
              "sampling steps K' (Table 2, cdrl models)": claims.summary_table(steps, [f"K{K}" for K in KS],
                                                                               STEP_METRICS, seeds),
              "sampling steps K' (Table 2, digits)": claims.summary_table(dsteps, [f"digits_K{K}" for K in KS],
                                                                          DIGITS_STEP_METRICS, seeds),
              "guidance (digits)": claims.summary_table(guide, [f"w{w:g}" for w in WEIGHTS], GUIDE_METRICS, seeds),
              "composition (digits, Sec. 4.5)": claims.summary_table(
                  compose, ["class_only", "thickness_only", "composed"], COMPOSE_METRICS, seeds)}
    merged = {k: v for t in tables.values() for k, v in t.items()}
    verdicts = [claims.decide(c, merged) for c in SUB_CLAIMS]
    for name in ("fig1_data.png", "fig1_density.png", "fig1_samples.png"):
        _copy(out / "cells" / "cdrl" / f"seed{seeds[0]}" / name, out / name)
        _copy(out / "cells" / "drl" / f"seed{seeds[0]}" / name, out / f"drl_{name}")
    for name in [f"guidance_w{w:g}.png" for w in WEIGHTS] + ["inpainting_digits.png", "composition_digits.png"]:
        _copy(out / "cells" / "digits" / f"seed{seeds[0]}" / name, out / name)
    claim = ("CDRL learns the checkerboard (samples in the squares) and beats DRL and no-initializer training "
             "(Table 10); K'=8 sampling steps are nearly as good as 15 (Table 2, checkerboard and digits); classifier-free guidance raises "
             "class accuracy (Sec. 3.5); composing digit class and stroke thickness carries both (Sec. 4.5)")
    notes = (f"{'QUICK smoke run (tiny models, a few updates): the numbers mean nothing. ' if quick else ''}"
             "Checkerboard: the authors' toy set-up scaled to the CPU (configs/paper003_checkerboard.yaml header); "
             f"every arm the same iterations ({QUICK_STEPS if quick else CB_STEPS_FULL if full else CB_STEPS}; the shipped "
             "config trains 8,000: `--full`), batch and network (DRL runs K = 30 steps, twice cdrl's 15: ~4x its time). "
             f"Digits: one conditional model per seed on Sec. 4.5's labels; guidance {2 if quick else GUIDANCE_PER_CLASS} "
             f"x 10 samples per w; composition {1 if quick else COMPOSE_PER_PAIR} samples per (digit, thickness) pair, "
             f"w = {COMPOSE_W:g}; "
             "thickness = ink above the digit's median ink, judged with the classifier's digit.\n")
    return claims.write_claim_results(out, "003", claim, tables, verdicts, seeds,
                                      {"checkerboard (Table 10 rows, Fig. 1)": CB_METRICS + ["in_support_K8_minus_K15"],
                                       "sampling steps K' (Table 2, cdrl models)": STEP_METRICS,
                                       "sampling steps K' (Table 2, digits)": DIGITS_STEP_METRICS,
                                       "guidance (digits)": GUIDE_METRICS,
                                       "composition (digits, Sec. 4.5)": COMPOSE_METRICS}, notes,
                                      extra={"wall_seconds": round(time.time() - t0, 1), "quick": quick, "full": full})


def _copy(src: Path, dst: Path) -> None:
    if src.exists():
        shutil.copyfile(src, dst)
