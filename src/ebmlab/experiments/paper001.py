"""``ebmlab experiment paper001``: paper 001's Table 2 ablation, Fig. 8-9, OOD (Table 3) and
composition (Table 4) at CPU scale on the 8x8 digits (shipped config ``paper001_digits``).

Ablation rows (Table 2; same data, architecture, iterations and seeds ``SEEDS`` each; a row's numbers
are the means over its seeds, every seed's value is kept in ``<column>_seeds``):

=========================  ======  =======  ====  ==========
row                        L_opt   L_ent    aug   multiscale
=========================  ======  =======  ====  ==========
``none``                   no      no       no    no
``aug``                    no      no       yes   no
``aug_multiscale``         no      no       yes   yes
``aug_multiscale_kl_opt``  yes     no       yes   yes
``full``                   yes     yes      yes   yes
=========================  ======  =======  ====  ==========

Columns: ``digits_fd`` (Frechet distance of the digits classifier's features, Alg. 2 samples from
uniform noise vs the test split; ``metrics/digits.py``), ``digits_fd_floor`` (train vs test split),
``digits_fd_noise`` (uniform noise vs test), ``energy_gap_std`` (standard deviation over training of
the logged energy difference E(real) - E(generated), the stability measure of Fig. 8: stable training
keeps it near 0), ``energy_gap_max_abs`` and ``diverged``: true when training stopped on a non-finite
value or the final samples are no closer to digits than uniform noise (digits_fd >= digits_fd_noise),
on any seed. Rows ``ood`` give the AUROC (Table 3) of -E of the first seed's ``full`` model (EMA weights) on held-out digits
against each OOD set of ``data/images.load_ood_set``; rows ``composition_*`` give Table 4's
analogue from ``applications/composition.py`` (two independently trained conditional EBMs).

Fig. 9: ``grad_ratio.png`` plots ‖∇θ L_KL‖ and ‖∇θ L_CD‖ over the first seed's ``full`` run
(measured every 10th iteration = every logged one).

Claim checked: "the KL term improves generation quality or training stability" (Table 2, Fig. 8):
``claim_holds`` when ``aug_multiscale_kl_opt`` or ``full`` beats ``aug_multiscale`` on *every* seed
(its largest per-seed value below the baseline's smallest) in digits_fd or in energy_gap_std, or when
``aug_multiscale`` diverged and a KL row did not. A lower mean alone does not count: one run's FD
moves by tens between seeds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ebmlab import plots
from ebmlab.experiments.runner import experiment_config, train_and_evaluate, write_json

CONFIG = "paper001_digits"  # a shipped config
ROWS = {
    "none": dict(kl=False, entropy=False, augment=False, multiscale=False),
    "aug": dict(kl=False, entropy=False, augment=True, multiscale=False),
    "aug_multiscale": dict(kl=False, entropy=False, augment=True, multiscale=True),
    "aug_multiscale_kl_opt": dict(kl=True, entropy=False, augment=True, multiscale=True),
    "full": dict(kl=True, entropy=True, augment=True, multiscale=True),
}
OOD_SETS = ("digits_negative", "noise", "digits_shuffled", "digits_flipped")
ABLATION_STEPS = 400      # iterations per ablation row (the digits config trains longer on its own)
SEEDS = (0, 1)            # train.seed of each ablation run; rows report the mean and every seed
COMPOSITION_STEPS = 400   # iterations of each conditional EBM
QUICK_STEPS = 10
QUICK = ["eval.n_samples=64", "method.n_steps=3", "method.buffer_size=128",
         "method.sample_rounds=1", "method.sample_steps=3", "train.batch_size=32", "train.log_every=1",
         f"train.steps={QUICK_STEPS}"]


def _config(flags: dict, quick: bool, steps: int, extra: list[str] | None = None):
    sets = [f"method.{k}={str(v).lower()}" for k, v in flags.items()] + [f"train.steps={steps}", *(extra or [])]
    return experiment_config(CONFIG, sets + (QUICK if quick else []), threads=1)


def _gaps(run_dir: Path) -> list[float]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["energy_gap"] for line in path.read_text().splitlines() if "energy_gap" in line]


def train_row(out: Path, name: str, flags: dict, quick: bool, seed: int, extra: list[str] | None = None):
    """Train one ablation run; returns (row, trainer) with the EMA weights swapped in (None if diverged)."""
    cfg = _config(flags, quick, ABLATION_STEPS, [f"train.seed={seed}", *(extra or [])])
    run_dir = out / "runs" / f"{name}_seed{seed}"
    arm = train_and_evaluate(run_dir, cfg, on_diverge="record")  # a divergence is a result of the ablation
    trainer, m = arm.trainer, arm.metrics
    gaps = _gaps(run_dir)
    row = {"name": name, "seed": seed, **flags, "steps_done": trainer.step, "train_seconds": arm.train_seconds,
           "energy_gap_std": _std(gaps), "energy_gap_max_abs": max((abs(g) for g in gaps), default=None)}
    if arm.diverged is not None:
        row.update(diverged=True, error=arm.diverged, digits_fd=None, digits_fd_floor=None, digits_fd_noise=None)
        return row, None
    row.update({k: m.get(k) for k in ("digits_fd", "digits_fd_floor", "digits_fd_noise")})
    row["diverged"] = bool(not math.isfinite(row["digits_fd"]) or row["digits_fd"] >= row["digits_fd_noise"])
    _grid(trainer, out / f"samples_{name}_seed{seed}.png", f"{name} (seed {seed})")
    return row, trainer


def merge_seeds(runs: list[dict]) -> dict:
    """One ablation row from its per-seed runs: means of the metrics, every seed's value in ``*_seeds``,
    ``diverged`` if any seed diverged (a diverged seed has no FD: the FD mean is over the others)."""
    row = {k: v for k, v in runs[0].items() if k in ("name", "kl", "entropy", "augment", "multiscale",
                                                     "digits_fd_floor", "digits_fd_noise")}
    for key in ("digits_fd", "energy_gap_std", "energy_gap_max_abs", "train_seconds"):
        vals = [r.get(key) for r in runs]
        row[f"{key}_seeds"] = vals
        finite = [v for v in vals if v is not None]
        row[key] = sum(finite) / len(finite) if finite else None
    row["diverged"] = any(r["diverged"] for r in runs)
    row["seeds"] = [r["seed"] for r in runs]
    return row


def _std(values: list[float]) -> float | None:
    return float(torch.tensor(values).std()) if len(values) > 1 else None


@torch.no_grad()
def _grid(trainer, path: Path, title: str) -> None:
    g = torch.Generator().manual_seed(0)
    plots.image_grid(trainer.objective.sample(64, generator=g).x.cpu(), path, title=title)


def grad_ratio_figure(out: Path, run_dir: Path) -> dict:
    """Fig. 9 from the full run's log: ‖∇L_KL‖ and ‖∇L_CD‖ over iterations; returns summary numbers."""
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
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
    from ebmlab.data.images import load_ood_set
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


def run(out: Path, quick: bool = False) -> dict:
    """Paper 001's experiment into ``out`` (the KL term and its gradient ratio, Fig. 9); returns the results dict."""
    out = Path(out)
    from ebmlab.metrics.digits import get_classifier
    with torch.enable_grad():
        get_classifier()  # trains and caches the digits classifier once, outside any no_grad block
    rows, full = [], None
    for name, flags in ROWS.items():
        # Fig. 9 on the full runs; every 10th iteration = every logged one (log_every 10; quick: 1)
        extra = [f"method.grad_ratio_every={5 if quick else 10}"] if name == "full" else []
        runs = []
        for seed in SEEDS:
            row, trainer = train_row(out, name, flags, quick, seed, extra)
            runs.append(row)
            if name == "full" and seed == SEEDS[0]:
                full = trainer  # OOD rows use the first seed's full model
            del trainer
        rows.append(merge_seeds(runs))
    extra_rows = []
    fig9 = grad_ratio_figure(out, out / "runs" / f"full_seed{SEEDS[0]}")
    if full is not None:
        extra_rows += ood_rows(full)
    extra_rows += composition_rows(out, quick, n_per_pair=4 if quick else 25)
    return summarise(out, rows, extra_rows, fig9, quick)


def _below(a: list, b: list) -> bool:
    """Every value of a is below every value of b (seed ranges do not overlap); False with missing values."""
    return bool(a and b and None not in a and None not in b and max(a) < min(b))


def _claim(rows: list[dict]) -> bool:
    """A KL row beats aug_multiscale on every seed in digits_fd or in energy_gap_std, or avoids its divergence."""
    by = {r["name"]: r for r in rows}
    base = by["aug_multiscale"]
    kl_rows = [by["aug_multiscale_kl_opt"], by["full"]]
    if base["diverged"] and any(not r["diverged"] for r in kl_rows):
        return True
    return any(not r["diverged"] and (_below(r["digits_fd_seeds"], base["digits_fd_seeds"])
                                      or _below(r["energy_gap_std_seeds"], base["energy_gap_std_seeds"]))
               for r in kl_rows)


def summarise(out: Path, rows: list[dict], extra_rows: list[dict], fig9: dict, quick: bool) -> dict:
    """Write ``results.md``/``results.json`` from the rows and the Fig. 9 numbers; returns the results dict."""
    claim = ("adding the KL term (L_opt, then L_ent) improves the digits feature distance or training "
             "stability (energy_gap_std) over aug_multiscale on every seed (paper 001 Table 2, Fig. 8)")
    result = {"paper": "001", "rows": rows + extra_rows, "claim": claim, "claim_holds": _claim(rows),
              "grad_ratio": fig9, "quick": quick,
              "settings": {"ablation_steps": QUICK_STEPS if quick else ABLATION_STEPS, "seeds": list(SEEDS), "composition_steps": COMPOSITION_STEPS,
                           "config": f"{CONFIG}.yaml"}}
    write_json(out, result)
    (out / "results.md").write_text(markdown(result))
    return result


def _fmt(v) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _cell(row: dict, key: str) -> str:
    seeds = row.get(f"{key}_seeds")
    return _fmt(row.get(key)) + (f" ({', '.join(_fmt(v) or 'n/a' for v in seeds)})" if seeds and key != "train_seconds" else "")


def markdown(result: dict) -> str:
    """The ``results.md`` text of a results dict."""
    lines = [f"# Paper 001 on digits{' (quick smoke run)' if result['quick'] else ''}", "",
             "## Table 2 ablation", "",
             f"Mean over seeds {list(SEEDS)} (per seed in brackets); {result['settings']['ablation_steps']} iterations per run.", "",
             "| row | L_opt | L_ent | aug | multiscale | digits_fd | floor | noise | energy_gap_std | "
             "max abs gap | diverged | train s |", "|" + "---|" * 12]
    keys = ("name", "kl", "entropy", "augment", "multiscale", "digits_fd", "digits_fd_floor", "digits_fd_noise",
            "energy_gap_std", "energy_gap_max_abs", "diverged", "train_seconds")
    for r in result["rows"]:
        if r["name"] in ROWS:
            lines.append("| " + " | ".join(_cell(r, k) for k in keys) + " |")
    lines += ["", "## OOD detection (AUROC of -E, full model, held-out digits vs OOD set)", "",
              "| OOD set | AUROC |", "|---|---|"]
    lines += [f"| {r['name'][4:]} | {_fmt(r['auroc'])} |" for r in result["rows"] if r["name"].startswith("ood_")]
    lines += ["", "## Composition (digit class x stroke thickness; chance 0.1 / 0.5 / 0.05)", "",
              "| model | class acc | thickness acc | both | n |", "|---|---|---|---|---|"]
    lines += [f"| {r['name'][12:]} | {_fmt(r['class_acc'])} | {_fmt(r['attribute_acc'])} | {_fmt(r['both_acc'])} | "
              f"{r['n']} |" for r in result["rows"] if r["name"].startswith("composition_")]
    g = result["grad_ratio"]
    if g:
        lines += ["", f"Fig. 9 (grad_ratio.png): median ‖∇L_KL‖/‖∇L_CD‖ = {g['grad_ratio_median']:.3g} "
                  f"(first half {g['grad_ratio_first_half']:.3g}, second half {g['grad_ratio_second_half']:.3g}, "
                  f"{g['grad_ratio_points']} points)."]
    lines += ["", f"Claim: {result['claim']}. Holds here: **{result['claim_holds']}**.", "",
              "Figures: samples_<row>_seed<s>.png (Alg. 2 samples), grad_ratio.png (Fig. 9, first seed's full run)."]
    return "\n".join(lines) + "\n"
