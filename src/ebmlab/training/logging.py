"""Run logging: ``metrics.jsonl`` (one JSON object per logged step, always with ``step`` and
``loss``), TensorBoard, and a tqdm progress bar. Only the main process writes.

TensorBoard (``RUN/tb``, ``tensorboard --logdir RUN/tb``): the logged scalars (``RunLogger``); the
sample figures written every ``train.sample_every`` steps and at the end, as images
(``TBMedia.image``: vector runs a scatter of the first two coordinates, image runs a grid); and the
run's hyper-parameters with its final metrics in the HParams dashboard (``write_hparams``). The JSONL
log is the record; TensorBoard is optional at run time (a failure there is a warning, never an error).
"""
from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ebmlab.files import atomic_write


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
    """``metrics.jsonl`` (one JSON object per logged step) and TensorBoard scalars of a run (main process only)."""
    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True, resumed_at: int = 0):
        """``resumed_at``: the checkpoint's step a resumed run starts from; TensorBoard then hides the scalars and
        images the interrupted run wrote after it (``purge_step``), as ``truncate_after`` drops its log rows."""
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resumed_at + 1 if resumed_at else None)
            except Exception as exc:  # noqa: BLE001 -- tensorboard is optional at run time
                print(f"ebmlab: warning: TensorBoard logging disabled ({' '.join(str(exc).split())}); "
                      f"{str(self.path)!r} keeps every metric", file=sys.stderr)

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines logged after the checkpoint's step (they will be logged again), and a
        damaged line (a truncated last line is what a full disk or a kill leaves), with a warning."""
        if not (self.enabled and self.path.exists()):
            return
        bad = []

        def write(tmp: Path) -> None:  # line by line: a long run's log is never held in memory whole
            with open(self.path, encoding="utf-8", errors="replace") as src, open(tmp, "w", encoding="utf-8") as dst:
                for ln, row, last in _rows(src):
                    if row is None:
                        bad.append("last" if last and not bad else ln)
                    elif row["step"] <= step:
                        dst.write(ln + "\n")
        atomic_write(self.path, write)  # an interruption leaves the log as it was, and no temp file
        if bad:
            where = "its last line" if bad == ["last"] else f"{len(bad)} damaged line(s)"
            print(f"ebmlab: warning: {str(self.path)!r}: dropped {where} (truncated or not JSON)", file=sys.stderr)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Append one row (``step`` and ``values``; non-finite values as text) and the finite values to TensorBoard."""
        if not self.enabled:
            return
        row = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
        with open(self.path, "a", encoding="utf-8") as fh:
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
        """Close the TensorBoard writer."""
        if self.tb is not None:
            self._drop_tb()


def _rows(lines: Iterable[str]) -> Iterator[tuple[str, dict | None, bool]]:
    """(line, row, whether it is the last) of each non-blank line of metrics.jsonl; row None for a damaged line
    (not JSON, or without an integer ``step``)."""
    held = None
    for ln in lines:
        ln = ln.rstrip("\r\n")
        if not ln.strip():
            continue
        if held is not None:
            yield (*held, False)
        try:
            row = json.loads(ln)
        except ValueError:
            row = None
        held = (ln, row if isinstance(row, dict) and isinstance(row.get("step"), int) else None)
    if held is not None:
        yield (*held, True)


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` (damaged lines, e.g. a truncated last one, are skipped; none when it is
    not a file, e.g. a folder of that name)."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    with open(p, encoding="utf-8", errors="replace") as fh:
        return [row for _, row, _ in _rows(fh) if row is not None]


def _summary_writer(log_dir: Path) -> Any | None:
    """A ``SummaryWriter`` on ``log_dir``, or None (with a warning) when TensorBoard is unavailable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(str(log_dir))
    except Exception as exc:  # noqa: BLE001 -- tensorboard is optional at run time
        print(f"ebmlab: warning: TensorBoard output skipped ({' '.join(str(exc).split())})", file=sys.stderr)
        return None


class TBMedia:
    """Images for TensorBoard (sample scatters and grids), written to ``run_dir/tb`` by a writer of
    their own (TensorBoard merges the event files of one directory into one run)."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.writer, self.failed = Path(run_dir), None, False

    def image(self, tag: str, pixels, step: int) -> None:
        """``pixels``: (H, W, 3) uint8 array."""
        if self.failed:
            return
        if self.writer is None:
            self.writer = _summary_writer(self.run_dir / "tb")
            if self.writer is None:
                self.failed = True
                return
        try:
            self.writer.add_image(tag, pixels, step, dataformats="HWC")
            self.writer.flush()
        except Exception as exc:  # noqa: BLE001
            self.failed = True
            print(f"ebmlab: warning: TensorBoard images stopped ({' '.join(str(exc).split())})", file=sys.stderr)

    def close(self) -> None:
        """Close the image writer (it reopens on the next image)."""
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001,S110
                pass
            self.writer = None


def hparam_values(cfg_dict: dict) -> dict[str, bool | int | float | str]:
    """{"section.key": value} of a config mapping, values TensorBoard's HParams plugin accepts (None and
    lists as text)."""
    out: dict[str, bool | int | float | str] = {}
    for sec, vals in cfg_dict.items():
        for k, v in (vals or {}).items():
            out[f"{sec}.{k}"] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def write_hparams(run_dir: Path, cfg_dict: dict, metrics: dict, step: int) -> None:
    """The run's hyper-parameters with its final metrics (the numbers of ``metrics.json``) in
    TensorBoard's HParams dashboard, as run ``RUN/tb``; the metrics also as scalars ``final/<name>``."""
    finals = {f"final/{k}": float(v) for k, v in metrics.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    writer = _summary_writer(Path(run_dir) / "tb")
    if writer is None:
        return
    try:
        from torch.utils.tensorboard.summary import hparams

        exp, ssi, sei = hparams(hparam_values(cfg_dict), finals)
        for summary in (exp, ssi, sei):
            writer.file_writer.add_summary(summary)
        for k, v in finals.items():
            writer.add_scalar(k, v, step)
    except Exception as exc:  # noqa: BLE001
        print(f"ebmlab: warning: TensorBoard hyper-parameters skipped ({' '.join(str(exc).split())})",
              file=sys.stderr)
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001,S110
            pass
