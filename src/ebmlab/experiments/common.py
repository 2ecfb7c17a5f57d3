"""Helpers shared by the ``ebmlab experiment`` modules: train one config in a sub-directory,
open it with EMA weights, and write ``results.md`` / ``results.json`` in the common format."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ebmlab.training.config import load_config
from ebmlab.training.loop import Trainer, TrainingDiverged, prepare_run_dir


def train_run(run_dir: Path, overrides: list[str], config: str | None = None) -> Trainer:
    """Train a fresh run (overwriting ``run_dir``) and return the trainer (EMA not yet applied)."""
    cfg = load_config(config, overrides)
    prepare_run_dir(run_dir, cfg, resume=False, overwrite=True)
    trainer = Trainer(cfg, run_dir)
    trainer.fit()
    return trainer


def train_run_or_last_good(run_dir: Path, overrides: list[str], config: str | None = None):
    """Like ``train_run``, but a run that diverges is a result, not a crash: returns ``(trainer,
    message)`` with the trainer restored to its last good checkpoint (``message`` None if it did not
    diverge). Raises if it diverged before its first checkpoint."""
    try:
        return train_run(run_dir, overrides, config), None
    except TrainingDiverged as err:
        trainer = Trainer(load_config(config, overrides), run_dir)
        trainer.resume()  # CheckpointError if none was written yet
        print(f"[experiment] {run_dir.name}: {err}; evaluating its last good checkpoint (step {trainer.step})")
        return trainer, f"diverged ({err}); evaluated at step {trainer.step}"


def ema_applied(trainer: Trainer):
    """Context manager: the trainer's objective with EMA weights swapped in (or as is)."""
    if trainer.ema is not None:
        return trainer.ema.applied(trainer.objective)
    from contextlib import nullcontext
    return nullcontext(trainer.objective)


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    head = "| name | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns) + "\n"
    body = "".join("| " + r["name"] + " | " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |\n"
                   for r in rows)
    return head + body


def write_results(out: Path, paper: str, rows: list[dict], columns: list[str], claim: str,
                  claim_holds: bool, notes: str = "") -> dict:
    result = {"paper": paper, "rows": rows, "claim": claim, "claim_holds": bool(claim_holds)}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    verdict = "HOLDS" if claim_holds else "DOES NOT HOLD"
    md = (f"# Experiment: paper {paper}\n\n{markdown_table(rows, columns)}\n"
          f"**Claim:** {claim}\n\n**Verdict at this scale:** the claim {verdict}.\n\n{notes}\n")
    (out / "results.md").write_text(md)
    print(md)
    return result


def device_generator(module: torch.nn.Module, seed: int) -> torch.Generator:
    dev = next(module.parameters()).device
    return torch.Generator(dev).manual_seed(seed)
