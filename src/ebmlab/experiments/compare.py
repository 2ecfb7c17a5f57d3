"""Trained runs side by side (``ebmlab compare RUN RUN ...``, ``ebmlab.compare``): the metrics every run's
``metrics.json`` holds, best per metric marked, with the data-vs-data floor where the runs recorded one, and the
runs' samples in one figure (``compare_figure.py``). Not from the papers: the mission's "compared by the same code
on the same data".

The table reads only the runs' files (``config.yaml`` with ``yaml.safe_load``, ``run.json``, ``metrics.json``); no
weights are loaded and nothing is evaluated again, so a comparison is as fair as the runs' evaluations: runs on
different data (another dataset, split, file or image folder) are refused, and what is not like for like (other
evaluation settings, chain lengths, steps, damaged or non-finite values) is said in ``notes``. Best is decided at
the precision shown (equal cells are both best), and an unbiased estimate of a distance below 0 ranks as 0: it
is noise about 0, not a better model.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ebmlab.errors import ConfigError, RunError
from ebmlab.experiments.compare_checks import (check_distinct, check_out_folder, check_out_outside_data,
                                               check_same_data)
from ebmlab.experiments.leaderboard_report import better
from ebmlab.files import with_temps, write_text_atomic
from ebmlab.training.run import read_run_raw
from ebmlab.training.lock import RunLock, holder
from ebmlab.training.run_data import listing_legacy, located_path, read_run_info

# the compared metrics, in this order, where every run has them (then each OOD AUROC every run has)
HEADLINE = ("density_kl", "sample_energy_distance", "sample_energy_distance_heldout",
            "sample_energy_distance_heldout_mean", "sample_precision", "sample_mode_mass_error",
            "sample_in_support_share", "density_mode_mass_error", "long_run_energy_distance", "long_run_precision",
            "long_run_mode_mass_error", "long_run_in_support_share", "digits_fd", "digits_is", "digits_confidence",
            "fid", "inception_score", "sample_out_of_range")
# unbiased (U-statistic) estimates of a distance >= 0: values below 0 rank as 0
CLIPPED = ("sample_energy_distance_heldout", "sample_energy_distance_heldout_mean")
# what makes two runs' data the same: the split's settings in config.yaml, then run.json's data facts
DATA_SETTINGS = ("seed", "val_fraction", "image_size", "channels", "crop", "classes")
DATA_FACTS = ("name", "kind", "shape", "n_train", "n_test", "sha256", "listing_sha256")
EVAL_SETTINGS = ("n_samples", "long_run_factor", "grid_size", "grid_extent")
# recorded facts of an evaluation that shape its metrics: said when they differ between the runs
EVAL_FACTS = {"eval_n_samples": "the sample metrics and their floors compare sets of different sizes",
              "long_run_steps": "the long_run_* columns compare chains of different lengths"}
# each metric's data-vs-data reference in metrics.json, where it is not "<metric>_floor"
FLOOR_KEYS = {"sample_energy_distance_heldout": "sample_energy_distance_heldout_train", "digits_is": "digits_is_data",
              "digits_confidence": "digits_confidence_data", "inception_score": "inception_score_data"}


def fmt(v: float | None) -> str:
    """A table cell: 4 significant digits (6 where 4 would round a value below 10 to a whole number it is not,
    e.g. an AUROC of 0.99999 to 1), ``nan`` / ``inf`` as such."""
    if v is None:
        return "-"
    s = f"{v + 0.0:.4g}"
    return f"{v + 0.0:.6g}" if abs(v) < 10 and float(s) != v and float(s) == round(float(s)) else s


@dataclass
class Comparison:
    """``runs``: the run directories (pooled: the rows' labels, ``groups`` holds their directories); ``facts``: per run its method, model, seed and checkpoint step; ``values``:
    {metric: [value per run]}; ``floors``: {metric: the runs' median data-vs-data floor}; ``best``: {metric:
    [indices of the best runs]} (ties at the precision shown share); ``notes``: what makes the comparison less
    than like for like; ``files``: what ``compare(..., out=)`` wrote. Pooled over seeds (``pool_seeds``), a row is a
    group of runs that differ only in ``train.seed`` (``groups``), ``values`` are their means and ``stds`` their
    sample standard deviations (NaN for one run), and ``best`` holds the best mean's row with every row a Welch
    t-test cannot tell from it (``_top_group``)."""
    runs: list[str]
    facts: list[dict]
    values: dict[str, list[float]]
    floors: dict[str, float] = field(default_factory=dict)
    best: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    stds: dict[str, list[float]] = field(default_factory=dict)  # pooled: {metric: [seed std per row]}
    groups: list[list[str]] = field(default_factory=list)        # pooled: the runs of each row

    def markdown(self) -> str:
        """The table, one row per run (the best value in bold), a floor row, and the notes."""
        metrics = list(self.values)
        head = f"| {'runs (mean ± std over seeds)' if self.groups else 'run'} | method | seed | checkpoint step | " + " | ".join(metrics) + " |\n|---|---|---|---|" + "---|" * len(metrics)
        rows = [f"| {r} | {f['method']} | {f['seed']} | {f['step']} | " + " | ".join(
            _cell(self.values[m][i], i in self.best.get(m, []), self.stds.get(m, [None] * (i + 1))[i])
            for m in metrics) + " |" for i, (r, f) in enumerate(zip(self.runs, self.facts))]
        if self.floors:
            rows.append("| data vs data (floor) | | | | " + " | ".join(
                fmt(self.floors[m]) if m in self.floors else "" for m in metrics) + " |")
        lines = [f"- {m}: {better(m)} is better" + (" (below 0 ranks as 0)" if m in CLIPPED else "")
                 for m in metrics] + [f"- {n}" for n in self.notes]
        return "\n".join([head, *rows, "", *lines]) + "\n"

    def to_json(self) -> dict:
        """What ``compare.json`` holds: the fields (non-finite values as null: strict JSON), ``best`` by run, and
        each metric's direction."""
        return {"runs": self.runs, "facts": self.facts, "floors": self.floors, "notes": self.notes,
                "values": {m: [v if math.isfinite(v) else None for v in vs] for m, vs in self.values.items()},
                **({"groups": self.groups, "stds": {m: [v if math.isfinite(v) else None for v in vs]
                                                    for m, vs in self.stds.items()}} if self.groups else {}),
                "best": {m: [self.runs[i] for i in ix] for m, ix in self.best.items()},
                "better": {m: better(m) for m in self.values}}


def _cell(v: float, best: bool, std: float | None = None) -> str:
    s = fmt(v)
    s = f"**{s}**" if best else s
    return s if std is None else f"{s} ± {fmt(std) if math.isfinite(std) else '-'}"


def compare(runs, out: str | Path | None = None, pool_seeds: bool = False) -> Comparison:
    """Compare two or more trained runs (directories or ``Run`` objects) on the metrics they all recorded; ``out``:
    a folder for ``compare.md``, ``compare.json`` and the samples figure(s); ``pool_seeds``: one row per group of
    runs that differ only in ``train.seed`` (and in how they log), mean ± std over the group."""
    if isinstance(runs, (str, Path)):
        raise ConfigError(f"give the runs as a list of two or more directories, e.g. compare(['runs/a', 'runs/b']), "
                          f"not one {type(runs).__name__} ({str(runs)!r})")
    runs = [str(getattr(r, "path", r)) for r in runs]  # a directory, or a loaded ``Run``'s
    check_distinct(runs)
    read = [_read(Path(r)) for r in runs]
    check_same_data(runs, read)
    result = _table(runs, read)
    if pool_seeds:
        result = _pooled(result, read)
    if out is not None:
        check_out_folder(Path(out))
        check_out_outside_data(runs, read, Path(out))
        _write(result, read[0]["kind"], read[0]["data"]["shape"], Path(out))
    return result


# what compare --out writes, and its atomic writes' temp names (``.<8 hex>.NAME.tmp``)
_WRITTEN = with_temps(r"compare\.md|compare\.json|samples(_\d+)?\.png")


def _write(result: Comparison, kind: str, shape, out: Path) -> None:
    """``--out``: the samples figure (its notes join the result's), then ``compare.md`` and ``compare.json``;
    ``result.files`` lists what was written. ``out`` is locked meanwhile (``run.lock``), so that the temp files of a
    killed compare there can be told from another's in flight and removed."""
    out.mkdir(parents=True, exist_ok=True)
    busy = f"--out {str(out)!r} is in use by another ebmlab process"
    with RunLock.acquire(out, busy, instead="write the comparison to another --out", doing="writing a comparison"):
        _clear_temps(out)
        _write_locked(result, kind, shape, out)


def _clear_temps(out: Path) -> None:
    """The hidden temp files a killed compare left in ``out`` (only ``_WRITTEN``'s: a user's own are kept)."""
    for p in out.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp") and _WRITTEN.fullmatch(p.name) and p.is_file() \
                and not p.is_symlink():
            p.unlink(missing_ok=True)


def _write_locked(result: Comparison, kind: str, shape, out: Path) -> None:
    from ebmlab.experiments.compare_figure import samples_figure

    shown = [g[0] for g in result.groups] or result.runs  # pooled: each row's first run
    labels = [f"{k}: {Path(r).name}\n{f['method']}{', seed ' + f['seed'].split(',')[0] if result.groups else ''}"
              for k, (r, f) in enumerate(zip(shown, result.facts))]
    whose = "each row's first run" if result.groups else "each run"
    figures, notes = samples_figure(shown, labels, kind, shape, out,
                                    title=f"first two coordinates, {whose}'s samples/samples.npy")
    result.notes += notes
    write_text_atomic(out / "compare.md", result.markdown())
    write_text_atomic(out / "compare.json", json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n")
    result.files = ["compare.md", "compare.json", *figures]


def _read(run: Path) -> dict:
    """A run's config sections, data facts, metrics and facts."""
    raw = read_run_raw(run)
    info = read_run_info(run)
    if info is None:
        raise RunError(f"run {str(run)!r} predates run.json: its data cannot be checked; retrain it to compare it")
    p = run / "metrics.json"
    try:
        metrics = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        busy = holder(run)  # still training: its metrics come when it ends (an eval now would be refused by the lock)
        raise RunError(f"run {str(run)!r} has no metrics.json: " + (
            f"it is in use by another ebmlab process ({busy}); compare it once that has finished" if busy else
            f"evaluate it first (ebmlab eval {run})")) from None
    except (OSError, ValueError) as exc:
        raise RunError(f"run file {str(p)!r} cannot be read as JSON ({exc}); run ebmlab eval {run} again") from None
    if not isinstance(metrics, dict):
        raise RunError(f"run file {str(p)!r} is damaged (not a mapping); run ebmlab eval {run} again")
    data = {f"data.{k}": (raw.get("data") or {}).get(k) for k in DATA_SETTINGS}
    data.update({k: info["data"].get(k) for k in DATA_FACTS})
    step = metrics.get("checkpoint_step", metrics.get("selected_step", _last_logged_step(run)))
    return {"data": data, "kind": data["kind"], "data_path": info["data"].get("path"), "metrics": metrics,
            "listing_legacy": listing_legacy(info),
            "data_place": _moved_data(run, (raw.get("data") or {}).get("path"), info),
            "samples": run / "samples" / "samples.npy",
            "eval": {k: (raw.get("eval") or {}).get(k) for k in EVAL_SETTINGS}, "setting": _setting(raw),
            "facts": {"method": (raw.get("method") or {}).get("name"), "model": (raw.get("model") or {}).get("name"),
                      "seed": (raw.get("train") or {}).get("seed"), "step": step}}


def _moved_data(run: Path, stored: str | None, info: dict) -> str | None:
    """Where a run reads its data now when not at its config's path (moved with the run, or relocated), else None."""
    place = located_path(run, stored, info)
    return place if place != stored else None


def _last_logged_step(run: Path) -> int | str:
    """The step of ``metrics.jsonl``'s last row (a run evaluated at the end of training), "-" without one."""
    try:
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8").strip().splitlines()
        row = json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return "-"
    step = row.get("step") if isinstance(row, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else "-"


def _table(runs: list[str], read: list[dict]) -> Comparison:
    ms = [r["metrics"] for r in read]
    shared = [m for m in _candidates(read) if all(_number(x.get(m)) is not None for x in ms)]
    if not shared:
        raise RunError(f"runs {runs} share no metric; evaluate each with the same options (ebmlab eval RUN)")
    values = {m: [_number(x[m]) for x in ms] for m in shared}
    keys = {m: FLOOR_KEYS.get(m, f"{m}_floor") for m in shared}
    floors = {m: float(np.median([x[k] for x in ms])) for m, k in keys.items()
              if all(_number(x.get(k)) is not None for x in ms)}
    best = {m: ix for m, v in values.items() if (ix := _best(m, v))}
    return Comparison(runs, [r["facts"] for r in read], values, floors, best, _notes(runs, read, shared, values))


def _best(metric: str, values: list[float]) -> list[int]:
    """The runs whose value, as shown (``fmt``), equals the best shown value; below 0 counts as 0 for ``CLIPPED``."""
    ranked = [max(v, 0.0) if metric in CLIPPED else v for v in values]
    finite = [v for v in ranked if math.isfinite(v)]
    if not finite:
        return []
    top = fmt(min(finite) if better(metric) == "lower" else max(finite))
    return [i for i, v in enumerate(ranked) if math.isfinite(v) and fmt(v) == top]


def _candidates(read: list[dict]) -> tuple[str, ...]:
    """The metrics a comparison may show, in order: ``HEADLINE``, then every OOD AUROC any run recorded."""
    return (*HEADLINE, *sorted({k for r in read for k in r["metrics"] if k.startswith("ood_auroc_")}))


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _notes(runs: list[str], read: list[dict], shared: list[str], values: dict) -> list[str]:
    notes = []
    differing = [(f"eval.{k}", [r["eval"][k] for r in read], "the metrics it shapes are not like for like")
                 for k in EVAL_SETTINGS]
    differing += [(k, [r["metrics"].get(k) for r in read], why) for k, why in EVAL_FACTS.items()]
    for name, vals, why in differing:
        if len({json.dumps(v) for v in vals}) > 1:
            notes.append(f"{name} differs ({', '.join(map(str, vals))}): {why}")
    said: dict[str, list[str]] = {}
    for run, r in zip(runs, read):
        if isinstance(r["metrics"].get("eval_n_samples_note"), str):
            said.setdefault(r["metrics"]["eval_n_samples_note"], []).append(run)
    notes += [f"{', '.join(rs)}: {text}" for text, rs in said.items()]
    candidates = _candidates(read)
    for m in candidates:
        bad = [f"{run} ({r['metrics'][m]!r})" for run, r in zip(runs, read)
               if m in r["metrics"] and _number(r["metrics"][m]) is None]
        if bad:
            notes.append(f"{m} is not a number in {', '.join(bad)}: a damaged metrics.json (ebmlab eval RUN again)")
    for m, vs in values.items():
        off = [f"{run} ({fmt(v)})" for run, v in zip(runs, vs) if not math.isfinite(v)]
        if off:
            notes.append(f"{m} is not finite in {', '.join(off)} (a diverged run?); its row is not ranked on {m}")
    some = sorted({m for r in read for m in candidates if _number(r["metrics"].get(m)) is not None} - set(shared))
    if some:
        notes.append(f"not in every run, so not compared: {', '.join(some)} (evaluate each run with the same options)")
    if len({str(r["facts"]["step"]) for r in read}) > 1:
        notes.append("the runs' checkpoints are at different steps: a comparison at equal cost needs equal budgets")
    return notes


# keys that do not change what a run learns or measures: runs differing only in these pool as seeds of one setting
# (where the run runs, how it logs and checkpoints, whether plots are drawn, where its data file lies: the data's
# bytes are compared by ``_check_same_data``)
NOT_THE_SETTING = ("train.seed", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                   "train.sample_every", "train.progress", "train.threads", "train.device", "data.path", "eval.plots")


def _setting(raw: dict) -> dict:
    """{"section.key": value} of a run's config without ``NOT_THE_SETTING``: what makes runs one setting. Numbers
    are compared as numbers (``lam: 5`` is ``lam: 5.0``) and a null key as an absent one (a run written before the
    key existed)."""
    flat = {f"{sec}.{k}": v for sec, vals in raw.items() if isinstance(vals, dict) for k, v in vals.items()}
    return {k: v if _number(v) is None else _number(v) for k, v in flat.items()
            if k not in NOT_THE_SETTING and v is not None}


def _pooled(per_run: Comparison, read: list[dict]) -> Comparison:
    """One row per setting (``_setting``), in the order first given: the runs' mean and std per metric."""
    keys = [json.dumps(r["setting"], sort_keys=True, default=str) for r in read]
    groups, notes = _seed_groups(per_run, keys)
    if len(groups) < 2:
        raise ConfigError(f"the {len(read)} runs differ only in their seeds: one setting, nothing to compare; give "
                          "runs of two or more settings")
    values, stds, cols = {}, {}, {}
    with np.errstate(invalid="ignore"):  # a diverged seed's inf: its row's mean and std are not finite (a note says)
        for m, vs in per_run.values.items():
            cols[m] = [np.array([vs[i] for i in g], dtype=float) for g in groups]
            values[m] = [float(c.mean()) for c in cols[m]]
            stds[m] = [float(c.std(ddof=1)) if len(c) > 1 else math.nan for c in cols[m]]
    facts = [{"method": per_run.facts[g[0]]["method"], "model": per_run.facts[g[0]]["model"],
              "seed": ",".join(str(per_run.facts[i]["seed"]) for i in g),
              "step": "/".join(dict.fromkeys(str(per_run.facts[i]["step"]) for i in g))} for g in groups]
    labels = [per_run.runs[g[0]] + (f" (+{len(g) - 1})" if len(g) > 1 else "") for g in groups]
    best = {m: ix for m in values if (ix := _top_group(m, values[m], cols[m]))}
    union = set().union(*(read[g[0]]["setting"] for g in groups))
    differ = sorted(k for k in union if len({json.dumps(read[g[0]]["setting"].get(k), default=str) for g in groups}) > 1)
    notes += [f"the rows differ in: {', '.join(differ)}"] if differ else []
    notes.append("bold: the best mean and every row a Welch t-test (p >= 0.05) cannot tell from it; a row of one "
                 "run cannot be told from any")
    if len({len(g) for g in groups}) > 1:
        notes.append(f"the rows pool different numbers of seeds ({', '.join(str(len(g)) for g in groups)})")
    return Comparison(labels, facts, values, per_run.floors, best, notes + per_run.notes, stds=stds,
                      groups=[[per_run.runs[i] for i in g] for g in groups])


def _seed_groups(per_run: Comparison, keys: list[str]) -> tuple[list[list[int]], list[str]]:
    """Run indices per setting, in the order first given, each seed once: a repeat of a seed (the same setting and
    seed: the same numbers) is not an independent sample, so it is left out, and said."""
    groups, notes = [], []
    for g in dict.fromkeys(keys):
        members, seen = [], {}
        for i, k in enumerate(keys):
            seed = str(per_run.facts[i]["seed"])
            if k == g and seed in seen:
                notes.append(f"{per_run.runs[i]} repeats seed {seed} of {per_run.runs[seen[seed]]} in one setting: "
                             "counted once")
            elif k == g:
                seen[seed] = i
                members.append(i)
        groups.append(members)
    return groups, notes


def _top_group(metric: str, means: list[float], cols: list[np.ndarray]) -> list[int]:
    """Pooled rows: the best mean's row (``_best``) and every row that a Welch t-test (two-sided, p >= 0.05) cannot
    tell from it; a row of one run cannot be told from any (no variance to test with)."""
    from scipy.stats import ttest_ind

    top = _best(metric, means)
    if not top:
        return []
    b = cols[top[0]]
    out = []
    for i, c in enumerate(cols):
        if not math.isfinite(means[i]):
            continue
        if i in top or len(c) < 2 or len(b) < 2:
            out.append(i)
            continue
        with np.errstate(all="ignore"):  # equal constant columns: no variance, p = nan (told apart only if unequal)
            p = ttest_ind(c, b, equal_var=False).pvalue
        if (math.isnan(p) and fmt(means[i]) == fmt(means[top[0]])) or p >= 0.05:
            out.append(i)
    return out
