"""Trained runs side by side (``ebmlab compare RUN RUN ...``, ``ebmlab.compare``): the metrics every run's
``metrics.json`` holds, best per metric marked, with the data-vs-data floor where the runs recorded one, and the
runs' samples in one figure. Not from the papers: the mission's "compared by the same code on the same data".

Only the runs' files are read (``config.yaml`` with ``yaml.safe_load``, ``run.json``, ``metrics.json``,
``samples/samples.npy`` without pickle); no weights are loaded and nothing is evaluated again, so a comparison is
as fair as the runs' evaluations: runs on different data (another dataset, split, file or image folder) are refused,
and differing evaluation settings are said in ``notes``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ebmlab import plots
from ebmlab.errors import ConfigError, RunError
from ebmlab.experiments import claims
from ebmlab.experiments.leaderboard_report import better
from ebmlab.files import write_text_atomic
from ebmlab.training.run import read_run_config, read_run_raw
from ebmlab.training.run_data import read_run_info, run_dataset

# the compared metrics, in this order, where every run has them (then each OOD AUROC every run has)
HEADLINE = ("density_kl", "sample_energy_distance", "sample_energy_distance_heldout", "sample_precision",
            "sample_mode_mass_error", "sample_in_support_share", "density_mode_mass_error",
            "long_run_energy_distance", "long_run_precision", "long_run_mode_mass_error", "long_run_in_support_share",
            "digits_fd", "digits_is", "digits_confidence", "fid", "inception_score", "sample_out_of_range")
# what makes two runs' data the same: run.json's data facts and the split's settings in config.yaml
DATA_FACTS = ("name", "kind", "shape", "n_train", "n_test", "sha256", "listing_sha256")
DATA_SETTINGS = ("seed", "val_fraction", "image_size", "channels", "crop", "classes")
EVAL_SETTINGS = ("n_samples", "long_run_factor", "grid_size", "grid_extent")
# each metric's data-vs-data reference in metrics.json, where it is not "<metric>_floor"
FLOOR_KEYS = {"sample_energy_distance_heldout": "sample_energy_distance_heldout_train", "digits_is": "digits_is_data",
              "digits_confidence": "digits_confidence_data"}


@dataclass
class Comparison:
    """``runs``: the run directories; ``facts``: per run its method, model, seed and checkpoint step; ``values``:
    {metric: [value per run]}; ``floors``: {metric: the runs' median data-vs-data floor}; ``best``: {metric:
    [indices of the best runs]} (ties share); ``notes``: what makes the comparison less than like for like."""
    runs: list[str]
    facts: list[dict]
    values: dict[str, list[float]]
    floors: dict[str, float] = field(default_factory=dict)
    best: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """The table, one row per run (the best value in bold), a floor row, and the notes."""
        metrics = list(self.values)
        head = "| run | method | seed | checkpoint step | " + " | ".join(metrics) + " |\n|---|---|---|---|" + "---|" * len(metrics)
        rows = [f"| {r} | {f['method']} | {f['seed']} | {f['step']} | " + " | ".join(
            _cell(self.values[m][i], i in self.best.get(m, [])) for m in metrics) + " |"
            for i, (r, f) in enumerate(zip(self.runs, self.facts))]
        if self.floors:
            rows.append("| data vs data (floor) | | | | " + " | ".join(
                claims.fmt_number(self.floors[m]) if m in self.floors else "" for m in metrics) + " |")
        lines = [f"- {m}: {better(m)} is better" for m in metrics] + [f"- {n}" for n in self.notes]
        return "\n".join([head, *rows, "", *lines]) + "\n"

    def to_json(self) -> dict:
        """What ``compare.json`` holds: the fields, ``best`` by run, and each metric's direction."""
        return {"runs": self.runs, "facts": self.facts, "values": self.values, "floors": self.floors,
                "best": {m: [self.runs[i] for i in ix] for m, ix in self.best.items()},
                "better": {m: better(m) for m in self.values}, "notes": self.notes}


def _cell(v: float, best: bool) -> str:
    s = claims.fmt_number(v)
    return f"**{s}**" if best else s


def compare(runs, out: str | Path | None = None) -> Comparison:
    """Compare two or more trained runs (directories) on the metrics they all recorded; ``out``: a folder for
    ``compare.md``, ``compare.json`` and the samples figure(s)."""
    runs = [str(r) for r in runs]
    if len(runs) < 2 or len({Path(r).resolve() for r in runs}) < len(runs):
        raise ConfigError(f"compare needs two or more different runs, got {runs}")
    read = [_read(Path(r)) for r in runs]
    _check_same_data(runs, read)
    result = _table(runs, read)
    if out is not None:
        _write(result, [r["samples"] for r in read], read[0]["kind"], Path(out))
    return result


def _read(run: Path) -> dict:
    """A run's config sections, data facts, metrics and samples file (not yet read)."""
    raw = read_run_raw(run)
    info = read_run_info(run)
    if info is None:
        raise RunError(f"run {str(run)!r} predates run.json: its data cannot be checked; retrain it to compare it")
    p = run / "metrics.json"
    try:
        metrics = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"run {str(run)!r} has no metrics.json: evaluate it first (ebmlab eval {run})") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"run file {str(p)!r} cannot be read as JSON ({exc}); run ebmlab eval {run} again") from None
    if not isinstance(metrics, dict):
        raise RunError(f"run file {str(p)!r} is damaged (not a mapping); run ebmlab eval {run} again")
    data = {k: info["data"].get(k) for k in DATA_FACTS}
    data.update({f"data.{k}": (raw.get("data") or {}).get(k) for k in DATA_SETTINGS})
    step = metrics.get("checkpoint_step", metrics.get("selected_step", _last_logged_step(run)))
    return {"data": data, "kind": data["kind"], "metrics": metrics, "samples": run / "samples" / "samples.npy",
            "eval": {k: (raw.get("eval") or {}).get(k) for k in EVAL_SETTINGS},
            "facts": {"method": (raw.get("method") or {}).get("name"), "model": (raw.get("model") or {}).get("name"),
                      "seed": (raw.get("train") or {}).get("seed"), "step": step}}


def _last_logged_step(run: Path) -> int | str:
    """The step of ``metrics.jsonl``'s last row (a run evaluated at the end of training), "-" without one."""
    try:
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8").strip().splitlines()
        return int(json.loads(lines[-1])["step"])
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        return "-"


def _check_same_data(runs: list[str], read: list[dict]) -> None:
    """Refuse runs whose data differ: their metrics measure different things."""
    first = read[0]["data"]
    for run, r in zip(runs[1:], read[1:]):
        diff = [k for k in first if r["data"][k] != first[k]]
        if diff:
            k = diff[0]
            raise ConfigError(f"runs {runs[0]!r} and {run!r} were trained on different data ({k}: {first[k]!r} vs "
                              f"{r['data'][k]!r}); compare runs of the same data and split")


def _table(runs: list[str], read: list[dict]) -> Comparison:
    ms = [r["metrics"] for r in read]
    ood = sorted(k for k in ms[0] if k.startswith("ood_auroc_"))
    shared = [m for m in (*HEADLINE, *ood) if all(_number(x.get(m)) is not None for x in ms)]
    if not shared:
        raise RunError(f"runs {runs} share no metric; evaluate each with the same options (ebmlab eval RUN)")
    values = {m: [_number(x[m]) for x in ms] for m in shared}
    keys = {m: FLOOR_KEYS.get(m, f"{m}_floor") for m in shared}
    floors = {m: float(np.median([x[k] for x in ms])) for m, k in keys.items()
              if all(_number(x.get(k)) is not None for x in ms)}
    best = {}
    for m, v in values.items():
        finite = [x for x in v if math.isfinite(x)]
        if finite:
            top = min(finite) if better(m) == "lower" else max(finite)
            best[m] = [i for i, x in enumerate(v) if x == top]
    return Comparison(runs, [r["facts"] for r in read], values, floors, best, _notes(runs, read, shared))


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _notes(runs: list[str], read: list[dict], shared: list[str]) -> list[str]:
    notes = []
    for k in EVAL_SETTINGS:
        vals = [r["eval"][k] for r in read]
        if len({json.dumps(v) for v in vals}) > 1:
            notes.append(f"eval.{k} differs ({', '.join(map(str, vals))}): the metrics it shapes are not like for like")
    some = sorted({m for r in read for m in r["metrics"] if (m in HEADLINE or m.startswith("ood_auroc_"))
                   and _number(r["metrics"][m]) is not None} - set(shared))
    if some:
        notes.append(f"not in every run, so not compared: {', '.join(some)} (evaluate each run with the same options)")
    steps = {str(r["facts"]["step"]) for r in read}
    if len(steps) > 1:
        notes.append("the runs' checkpoints are at different steps: a comparison at equal cost needs equal budgets")
    return notes


def _write(result: Comparison, samples: list[Path], kind: str, out: Path) -> None:
    """``compare.md``, ``compare.json`` and ``samples.png`` (vectors: the first two coordinates, equal counts) or
    ``samples_<k>.png`` per run (images: its first 64) in ``out``, from the runs' ``samples/samples.npy``."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "compare.md", result.markdown())
    write_text_atomic(out / "compare.json", json.dumps(result.to_json(), indent=1) + "\n")
    arrays = {}
    for k, (run, p) in enumerate(zip(result.runs, samples)):
        if p.is_file():
            x = np.load(p, mmap_mode="r", allow_pickle=False)  # (N, ...): images read only as far as shown
            arrays[f"{k}: {Path(run).name} ({result.facts[k]['method']})"] = torch.from_numpy(
                np.array(x if kind == "vector" else x[:64], dtype=np.float32))
    if kind == "vector" and arrays:
        sets = {"held-out data": _heldout(Path(result.runs[0])), **arrays}
        sets = {k: v for k, v in sets.items() if v is not None}
        plots.sample_scatter(sets, out / "samples.png", extent=plots.data_box(torch.cat(list(sets.values())), 0.1),
                             title="first two coordinates, each run's samples/samples.npy")
    elif arrays:
        for k, (name, x) in enumerate(arrays.items()):
            plots.image_grid(x, out / f"samples_{k}.png", title=name)


def _heldout(run: Path) -> torch.Tensor | None:
    """The runs' held-out split in data coordinates (the same for every run: ``_check_same_data``), or None where
    the data cannot be read any more (a moved file): the figure then shows the samples only."""
    from ebmlab.errors import DataError

    try:
        data = run_dataset(run, read_run_config(run))
    except (DataError, ConfigError, RunError, OSError):
        return None
    return data.transform.to_data(data.test)
