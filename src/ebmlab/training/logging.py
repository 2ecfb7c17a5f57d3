"""Run logging: ``metrics.jsonl`` (one JSON object per logged step, always with ``step`` and
``loss``), TensorBoard scalars, and a tqdm progress bar. Only the main process writes."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path


def scalars(metrics: dict) -> dict[str, float]:
    """Detached float values of a metrics dict (non-numeric entries are skipped)."""
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v.detach()) if hasattr(v, "detach") else float(v)
        except (TypeError, ValueError):
            continue
    return out


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run_dir / "tb"))
            except Exception as exc:  # tensorboard is optional at run time
                warnings.warn(f"TensorBoard logging disabled: {exc}")

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines logged after the checkpoint's step (they will be logged again)."""
        if not (self.enabled and self.path.exists()):
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: Path) -> list[dict]:
    p = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.exists() else []
