"""``ebmlab experiment paper001``: paper 001's Table 2 ablation, the Fig. 8 stability grid, Fig. 9, OOD
(Table 3) and composition (Table 4) at CPU scale on the 8x8 digits (shipped config ``paper001_digits``),
through the claim harness (``experiments/claims.py``: seeds ``claims.SEEDS`` fixed in advance, one-thread
cells two at a time, the same budget and evaluation step, paired verdicts with margins).

Table 2 (``ABLATION_STEPS`` iterations per cell):

=========================  ======  =======  ====  ==========
arm                        L_opt   L_ent    aug   multiscale
=========================  ======  =======  ====  ==========
``none``                   no      no       no    no
``aug``                    no      no       yes   no
``aug_multiscale``         no      no       yes   yes
``aug_multiscale_kl_opt``  yes     no       yes   yes
``full``                   yes     yes      yes   yes
=========================  ======  =======  ====  ==========

Fig. 8 stability grid (``STABILITY_STEPS`` iterations, the harsher set-up ``STABILITY_SETUP``, stated
in the results): {no KL, KL (L_opt + L_ent)} x {plain, spectral norm, self-attention, both}, arms
``stab_<arch>_<kl|nokl>``, with augmentation and multi-scale on as in ``full``.

Columns: ``digits_fd`` (Frechet distance of the digits classifier's features, Alg. 2 samples from
uniform noise vs the test split; ``metrics/digits.py``; floor = train vs test, noise = uniform noise vs
test), ``energy_gap_std`` (standard deviation over training of the logged E(real) - E(generated), the
stability measure of Fig. 8: stable training keeps it near 0), ``energy_gap_max_abs``, ``unstable``
(1 when the final samples are no closer to digits than uniform noise, digits_fd >= digits_fd_noise; a
cell that stopped on a non-finite value reports no columns: it is shown as diverged, its arm's mean and
std leave it out, and only ``decide`` counts it, as the worst value, i.e. unstable) and, for
``full``, ``ood_<set>`` (AUROC of -E, held-out digits vs each OOD set; ``digits_interpolated`` and
``digits_occluded`` are the hard sets, the analogue of the paper's CIFAR-10 interpolations).

Sub-claims, margins fixed before any run: digits_fd margin ``FD_MARGIN`` (about 5 % of the FD of a
400-iteration run); instability margin 0.5 (on a 0/1 outcome per seed: the KL arm must be stable and
the no-KL arm unstable on every seed). Composition (Table 4 analogue) and Fig. 9 are single runs.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from ebmlab import plots
from ebmlab.experiments import claims
from ebmlab.experiments.claims import Cell, Claim
from ebmlab.experiments.runner import experiment_config, train_and_evaluate, train_cell

CONFIG = "paper001_digits"  # a shipped config
ROWS = {
    "none": dict(kl=False, entropy=False, augment=False, multiscale=False),
    "aug": dict(kl=False, entropy=False, augment=True, multiscale=False),
    "aug_multiscale": dict(kl=False, entropy=False, augment=True, multiscale=True),
    "aug_multiscale_kl_opt": dict(kl=True, entropy=False, augment=True, multiscale=True),
    "full": dict(kl=True, entropy=True, augment=True, multiscale=True),
}
ARCHS = {"plain": [], "sn": ["model.spectral_norm=true"], "attn": ["model.attention=true"],
         "sn_attn": ["model.spectral_norm=true", "model.attention=true"]}
STABILITY_SETUP = ["method.step_size=2000.0", "method.noise_scale=0.002"]  # the paper-scale Langevin step (App. B.2 on [-1, 1] pixels): docs/paper001.md
OOD_SETS = ("digits_negative", "noise", "digits_shuffled", "digits_flipped", "digits_interpolated", "digits_occluded")
ABLATION_STEPS = 400      # iterations per Table 2 cell (the digits config trains longer on its own)
STABILITY_STEPS = 600     # iterations per stability cell
COMPOSITION_STEPS = 400   # iterations of each conditional EBM
FD_MARGIN = 25.0
QUICK_STEPS = 10
QUICK = ["eval.n_samples=64", "method.n_steps=3", "method.buffer_size=128",
         "method.sample_rounds=1", "method.sample_steps=3", "train.batch_size=32", "train.log_every=1",
         f"train.steps={QUICK_STEPS}"]
METRICS = ["digits_fd", "energy_gap_std", "energy_gap_max_abs", "unstable"]


def _flags(flags: dict) -> list[str]:
    return [f"method.{k}={str(v).lower()}" for k, v in flags.items()]


def _config(flags: dict, quick: bool, steps: int, extra: list[str] | None = None):
    sets = _flags(flags) + [f"train.steps={steps}", *(extra or [])]
    return experiment_config(CONFIG, sets + (QUICK if quick else []), threads=1)


def _gaps(run_dir: Path) -> list[float]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["energy_gap"] for line in lines if "energy_gap" in line]


def cell_fn(params: dict, seed: int, run_dir: Path) -> dict:
    """One Table 2 / stability cell: train, evaluate (digits_fd), add the stability measures (and OOD)."""
    out = train_cell(CONFIG, params["overrides"], seed, run_dir,
                     measure=lambda arm: _measure(arm, params.get("ood", False), params.get("grid", False)))
    if out.get("diverged"):  # the harness shows it as diverged; the gap trace up to there is kept
        return out
    out["unstable"] = float(not math.isfinite(out["digits_fd"]) or out["digits_fd"] >= out["digits_fd_noise"])
    return out


def _measure(arm, ood: bool, grid: bool) -> dict:
    run_dir = arm.trainer.run_dir
    gaps = _gaps(run_dir)
    m = {"energy_gap_std": _std(gaps), "energy_gap_max_abs": max((abs(g) for g in gaps), default=math.nan)}
    if ood:
        m.update({f"ood_{r['name'][4:]}": r["auroc"] for r in ood_rows(arm.trainer)})
    if grid:
        _grid(arm.trainer, run_dir / "samples.png", run_dir.parent.name)
    return m


def _std(values: list[float]) -> float:
    return float(torch.tensor(values).std()) if len(values) > 1 else math.nan


@torch.no_grad()
def _grid(trainer, path: Path, title: str) -> None:
    g = torch.Generator().manual_seed(0)
    plots.image_grid(trainer.objective.sample(64, generator=g).x.cpu(), path, title=title)


def build_cells(quick: bool, seeds) -> tuple[list[Cell], list[Cell]]:
    """(Table 2 cells, stability-grid cells)."""
    q = QUICK if quick else []
    table2 = []
    for name, flags in ROWS.items():
        # Fig. 9 on the full runs: every 10th iteration = every logged one (log_every 10); quick: every 5th
        extra = [f"method.grad_ratio_every={5 if quick else 10}"] if name == "full" else []
        table2 += [Cell(name, s, cell_fn, {"overrides": _flags(flags) + [f"train.steps={ABLATION_STEPS}"] + extra + q,
                                           "ood": name == "full", "grid": True}) for s in seeds]
    stab = []
    for arch, sets in ARCHS.items():
        for kl in (False, True):
            flags = dict(ROWS["full"], kl=kl, entropy=kl)
            sets_all = _flags(flags) + sets + STABILITY_SETUP + [f"train.steps={STABILITY_STEPS}"] + q
            stab += [Cell(f"stab_{arch}_{'kl' if kl else 'nokl'}", s, cell_fn, {"overrides": sets_all}) for s in seeds]
    return table2, stab


def sub_claims() -> list[Claim]:
    """Table 2: each KL arm beats aug_multiscale on digits_fd; Fig. 8: KL is stable where no-KL is not."""
    out = [Claim(f"{a} generates better than aug_multiscale (Table 2)", a, "aug_multiscale", "digits_fd", "lower",
                 FD_MARGIN) for a in ("aug_multiscale_kl_opt", "full")]
    out += [Claim(f"{arch}: the KL term removes the instability (Fig. 8)", f"stab_{arch}_kl", f"stab_{arch}_nokl",
                  "unstable", "lower", 0.5) for arch in ARCHS]
    return out


def grad_ratio_figure(out: Path, run_dir: Path) -> dict:
    """Fig. 9 from the full run's log: ‖∇L_KL‖ and ‖∇L_CD‖ over iterations; returns summary numbers."""
    path = run_dir / "metrics.jsonl"
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    recs = [r for r in recs if "grad_ratio_kl_cd" in r]
    if not recs:
        return {}
    steps = [r["step"] for r in recs]
    plots.line_plot({"|grad L_KL|": (steps, [r["grad_norm_kl"] for r in recs]),
                     "|grad L_CD|": (steps, [r["grad_norm_cd"] for r in recs])},
                    out / "grad_ratio.png", "iteration", "gradient norm (w.r.t. theta)",
                    title="paper 001 Fig. 9 on digits (full)", logy=True)
    ratios = torch.tensor([r["grad_ratio_kl_cd"] for r in recs])
    half = len(ratios) // 2
    return {"grad_ratio_median": float(ratios.median()), "grad_ratio_first_half": float(ratios[:max(1, half)].median()),
            "grad_ratio_second_half": float(ratios[half:].median()), "grad_ratio_points": len(ratios)}


@torch.no_grad()
def ood_rows(trainer) -> list[dict]:
    """Table 3 analogue: AUROC of -E (held-out digits vs each OOD set)."""
    from ebmlab.data.image_ood import load_ood_set
    from ebmlab.metrics.ood import auroc
    obj, data = trainer.objective, trainer.data
    dev = next(obj.parameters()).device
    e_in = obj.score(data.test.to(dev)).cpu()  # (M,)
    rows = []
    for name in OOD_SETS:
        x_out = load_ood_set(name, like=data, generator=torch.Generator().manual_seed(5))
        e_out = obj.score(x_out.to(dev)).cpu()
        rows.append({"name": f"ood_{name}", "auroc": auroc(-e_in, -e_out), "n_in": len(e_in), "n_out": len(e_out)})
    return rows


def composition_rows(out: Path, quick: bool, n_per_pair: int) -> list[dict]:
    """Table 4 analogue: a digit-class EBM and a stroke-thickness EBM, trained independently, composed."""
    from ebmlab.applications.composition import ThicknessAttribute, attribute_dataset, composition_table
    from ebmlab.data import build_dataset
    from ebmlab.metrics.digits import classify
    cfg = _config(ROWS["full"], quick, COMPOSITION_STEPS, ["method.conditional=true"])
    data = build_dataset(cfg.data)
    attribute = ThicknessAttribute.fit(data.train, data.train_labels, data.num_classes)
    models = {}
    for name, d in (("class", data), ("thickness", attribute_dataset(data, attribute))):
        # no config.yaml: the thickness labels are not a dataset a config could rebuild
        arm = train_and_evaluate(out / "runs" / f"composition_{name}", cfg, data=d, evaluate_run=False,
                                 save_config=False)
        arm.trainer.objective.eval()
        models[name] = arm.trainer.objective
    rows = composition_table(models["class"], models["thickness"], lambda x: _labels(classify(x)), attribute,
                             n_per_pair=n_per_pair, generator=torch.Generator().manual_seed(9),
                             num_classes=data.num_classes)
    return [{**r, "name": f"composition_{r['name']}"} for r in rows]


def _labels(result):
    """``classify`` may return labels or (labels, probs)."""
    return result[0] if isinstance(result, tuple) else result


def run(out: Path, quick: bool = False, seeds=claims.SEEDS, jobs: int = 2) -> dict:
    """Paper 001's experiment into ``out``; returns the results dict (``claims.write_claim_results``)."""
    out, t0 = Path(out), time.time()
    from ebmlab.metrics.digits import get_classifier
    with torch.enable_grad():
        get_classifier()  # trains and caches the digits classifier once (cells in this process reuse it)
    table2, stab = build_cells(quick, seeds)
    records, tables = claims.run_tables(out, {"Table 2 ablation": table2, "Fig. 8 stability grid": stab},
                                        METRICS + ["digits_fd_floor", "digits_fd_noise"], seeds, jobs)
    ood = claims.summary_table(records, ["full"], [f"ood_{n}" for n in OOD_SETS], seeds)
    verdicts = [claims.decide(c, {**tables["Table 2 ablation"], **tables["Fig. 8 stability grid"]}) for c in sub_claims()]
    fig9 = grad_ratio_figure(out, claims.cell_dir(out, next(c for c in table2 if c.arm == "full" and c.seed == seeds[0])))
    composition = composition_rows(out, quick, n_per_pair=4 if quick else 25)
    claim = ("the KL term improves generation quality (Table 2) and training stability (Fig. 8) of contrastive "
             "divergence training (paper 001)")
    notes = _notes(quick, fig9, ood["full"], composition, seeds)
    metrics = {t: METRICS + ["digits_fd_floor", "digits_fd_noise"] for t in tables}
    return claims.write_claim_results(out, "001", claim, tables, verdicts, seeds, metrics, notes,
                                      extra={"ood": ood, "composition": composition, "grad_ratio": fig9,
                                             "wall_seconds": round(time.time() - t0, 1), "quick": quick})


def _notes(quick: bool, fig9: dict, ood: dict, composition: list[dict], seeds) -> str:
    lines = [f"{claims.quick_note(quick, f'{QUICK_STEPS} iterations per cell')}Table 2: {ABLATION_STEPS} iterations "
             f"per cell; stability grid: {STABILITY_STEPS} iterations with {' '.join(STABILITY_SETUP)} (the digits "
             "config's step 10 and lr 1e-3 never diverge at this scale).", "",
             "## OOD detection (AUROC of -E of the full model, held-out digits vs each set; mean ± std over seeds)", "",
             "| OOD set | AUROC | per seed |", "|---|---|---|"]
    num = claims.fmt_number
    lines += [f"| {k[4:]} | {num(v['mean'])} ± {num(v['std'])} | {', '.join(num(x) for x in v['per_seed'])} |"
              for k, v in ood.items() if isinstance(v, dict)]
    lines += ["", "## Composition (digit class x stroke thickness; chance 0.1 / 0.5 / 0.05; one run)", "",
              "| model | class acc | thickness acc | both | n |", "|---|---|---|---|---|"]
    lines += [f"| {r['name'][12:]} | {r['class_acc']:.3g} | {r['attribute_acc']:.3g} | {r['both_acc']:.3g} | {r['n']} |"
              for r in composition]
    if fig9:
        lines += ["", f"Fig. 9 (grad_ratio.png, full, seed {seeds[0]}): median ‖∇L_KL‖/‖∇L_CD‖ = "
                  f"{fig9['grad_ratio_median']:.3g} (first half {fig9['grad_ratio_first_half']:.3g}, second half "
                  f"{fig9['grad_ratio_second_half']:.3g}, {fig9['grad_ratio_points']} points)."]
    lines += ["", "Figures: cells/<arm>/seed<s>/samples.png (Alg. 2 samples), grad_ratio.png (Fig. 9)."]
    return "\n".join(lines) + "\n"
