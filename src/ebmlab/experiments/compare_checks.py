"""Which runs ``ebmlab compare`` may set side by side (distinct runs of the same data and split) and where it may write
its files (not in the runs' data folder), refused before a table is made or a file written (not from the papers: the
library's comparison of runs, README "Using it", "Compare runs"; docs/testing.md "Fifty-second round")."""
from __future__ import annotations

import os
from pathlib import Path

from ebmlab.data.arrays import folder_matches
from ebmlab.errors import ConfigError
from ebmlab.files import file_above
from ebmlab.training.run_dir import holds


def check_distinct(runs: list[str]) -> None:
    """Refuse fewer than two runs, and one run named twice (however spelled)."""
    if len(runs) < 2:
        raise ConfigError(f"compare needs two or more runs, got {runs}")
    seen: dict[Path, str] = {}
    for r in runs:
        key = Path(r).resolve()
        if key in seen:
            raise ConfigError(f"{seen[key]!r} and {r!r} are the same run; compare two or more different runs")
        seen[key] = r


IDENTITY = ("name", "sha256", "listing_sha256")  # which data: another dataset, file or folder


def check_same_data(runs: list[str], read: list[dict]) -> None:
    """Refuse runs whose data differ: their metrics measure different things. Other data (another dataset, file or
    image folder) are said as such, naming each run's data; for the same data the config's split settings are
    compared first, so the refusal names the setting to change (``data.val_fraction``, not the row counts)."""
    first = read[0]["data"]
    for run, r in zip(runs[1:], read[1:]):
        other = r["data"]["name"] != first["name"] or (r["data_path"] != read[0]["data_path"] and any(
            r["data"][k] != first[k] for k in IDENTITY))  # another dataset, or another file or folder's content
        if other:
            raise ConfigError(f"runs {runs[0]!r} and {run!r} were trained on different data ({_which(read[0])} vs "
                              f"{_which(r)}); compare runs of the same data and split")
        diff = [k for k in first if r["data"][k] != first[k] and not (k == "listing_sha256" and _both_match(read[0], r))]
        if diff:
            k = diff[0]
            raise ConfigError(f"runs {runs[0]!r} and {run!r} were trained on different data ({k}: {first[k]!r} vs "
                              f"{r['data'][k]!r}); compare runs of the same data and split")


def _both_match(a: dict, b: dict) -> bool:
    """Whether runs ``a`` and ``b`` on one data folder store listings that both match it as it is now (one stored
    before linked folders were listed: ``folder_matches``' ``legacy``)."""
    path = a["data_path"]
    return path == b["data_path"] and bool(path) and Path(path).is_dir() and all(
        folder_matches(path, r["data"]["listing_sha256"], r["listing_legacy"]) for r in (a, b))


def _which(read: dict) -> str:
    """A run's data in words: its dataset name and, for a file or folder, its path."""
    path = read["data_path"]
    return f"{read['data']['name']} {path!r}" if path else repr(read["data"]["name"])


def check_out_folder(out: Path) -> None:
    """Refuse an ``out`` that is a file or lies under one, in a sentence (the operating system says only "Not a
    directory", and from Python that reached the user as it was)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a folder for the comparison")
    if (parent := file_above(out)) is not None:
        raise ConfigError(f"--out {str(out)!r} lies under {str(parent)!r}, which is a file; give a folder for the "
                          "comparison")


def check_out_outside_data(runs: list[str], read: list[dict], out: Path) -> None:
    """Refuse an ``out`` in a run's data folder (or reached through a linked folder in it): the figures would join
    the images the runs were trained on, whose data check would then refuse them."""
    place = Path(os.path.realpath(out))
    for run, r in zip(runs, read):
        for path in (r["data_path"], r["data_place"]):  # where it was trained, and where it reads them now if moved
            folder = Path(path).expanduser() if path else None
            if folder is not None and folder.is_dir() and holds(Path(os.path.realpath(folder)), place):
                raise ConfigError(f"--out {str(out)!r} lies in data folder {path!r} of run {run!r}: the comparison's "
                                  "files would join the data it was trained on; write the comparison to another --out")
