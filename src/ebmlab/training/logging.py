"""Run logging: ``metrics.jsonl`` (one JSON object per logged step, always with ``step`` and
``loss``), TensorBoard scalars, and a tqdm progress bar. Only the main process writes."""
from __future__ import annotations

import json
import math
import sys
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
            except Exception as exc:  # noqa: BLE001 -- tensorboard is optional at run time
                print(f"ebmlab: warning: TensorBoard logging disabled ({' '.join(str(exc).split())}); "
                      f"{str(self.path)!r} keeps every metric", file=sys.stderr)

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines logged after the checkpoint's step (they will be logged again), and a
        damaged line (a truncated last line is what a full disk or a kill leaves), with a warning."""
        if not (self.enabled and self.path.exists()):
            return
        rows, bad = _parse(self.path.read_text(errors="replace"))
        if bad:
            where = "its last line" if bad == ["last"] else f"{len(bad)} damaged line(s)"
            print(f"ebmlab: warning: {str(self.path)!r}: dropped {where} (truncated or not JSON)", file=sys.stderr)
        keep = [ln for ln, row in rows if row["step"] <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(ln + "\n" for ln in keep))
        tmp.replace(self.path)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tb is not None:
            try:
                for k, v in values.items():
                    if math.isfinite(v):
                        self.tb.add_scalar(k, v, step)
            except Exception as exc:  # noqa: BLE001 -- e.g. its writer thread hit a full disk
                self._drop_tb()
                print(f"ebmlab: warning: TensorBoard logging stopped ({' '.join(str(exc).split())}); "
                      f"{str(self.path)!r} keeps every metric", file=sys.stderr)

    def _drop_tb(self) -> None:
        tb, self.tb = self.tb, None
        try:
            tb.close()
        except Exception:  # noqa: BLE001,S110 -- the writer already failed; metrics.jsonl is the record
            pass

    def close(self) -> None:
        if self.tb is not None:
            self._drop_tb()


def _parse(text: str) -> tuple[list[tuple[str, dict]], list[str]]:
    """([(line, row)] of the well-formed rows, ["last"] or the damaged lines) of a metrics.jsonl text."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    rows, bad = [], []
    for i, ln in enumerate(lines):
        try:
            row = json.loads(ln)
        except ValueError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append((ln, row))
        else:
            bad.append("last" if i == len(lines) - 1 and not bad else ln)
    return rows, bad


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` (damaged lines, e.g. a truncated last one, are skipped)."""
    p = Path(run_dir) / "metrics.jsonl"
    return [row for _, row in _parse(p.read_text(errors="replace"))[0]] if p.exists() else []
