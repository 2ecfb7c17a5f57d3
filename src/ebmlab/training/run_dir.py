"""Preparing a run directory for ``ebmlab train``, ``ebmlab.train`` and the experiments: create it atomically
or reuse an empty one or an earlier start that never wrote a checkpoint, lock it (``run.RunLock``), write
``config.yaml`` and ``run.json``, and refuse (one sentence, nothing deleted) whatever is not an ebmlab run of
this user's. ``--overwrite`` deletes only what ``ebmlab train`` writes (``run.RUN_ENTRIES``; inside the run's
folders only the files named as training names them, ``TRAIN_FILES``), never a link's target. Split out of
``training/loop.py``, which trains in the directory this prepares.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path

from ebmlab.config import Config, save_config
from ebmlab.data.arrays import linked_folders, walk_folder
from ebmlab.files import file_above, is_temp_file, with_temps
from ebmlab.errors import ConfigError
from ebmlab.training import checkpoint as ckpt
from ebmlab.training import run, run_data
from ebmlab.training.lock import holder
from ebmlab.training.logging import read_metrics


# The files ``ebmlab train`` writes inside the run's folders, by folder (with an atomic write's leftover temp files).
# ``--overwrite`` deletes these and keeps anything else there: the user's own files, ``ebmlab sample``'s draws.
# tb/ is TensorBoard's own folder and is deleted whole. tests/reliability check every file a run writes matches.
TRAIN_FILES = {
    "checkpoints": with_temps(r"(step_\d{8}(\.rank\d+)?|best)\.(safetensors|json)|select_start\.json"),
    "samples": with_temps(r"samples\.npy|grid_final\.png|(grid|scatter|scatter_selected)_step\d{6,}\.png"),
    "plots": with_temps(r"(density|samples|energy_hist|chain|novelty)\.png"),
}


# the top-level files a run (re)writes while it trains (its data.npy only at the start, when given in memory)
WRITTEN_TOP = ("config.yaml", run.INFO_NAME, run.CHANGES_NAME, "metrics.jsonl", "metrics.json", run.LOCK_NAME)


def prepare_run_dir(run_dir: Path, cfg: Config, resume: bool, overwrite: bool, data=None) -> run.RunLock:
    """Lock ``run_dir`` and make it ready; returns the lock (hold it while training, then ``release``).

    Call it after the config, the data and the objective have validated (``check_run_dir`` before them says a
    refused directory at once). New run: the directory is created atomically,
    or reused when it is empty or an earlier start that never wrote a checkpoint; ``overwrite`` replaces
    an ebmlab run (deleting only what ``ebmlab train`` writes there) and never touches another directory.
    ``config.yaml`` and ``run.json`` (with ``data``: the data transform, path and SHA-256) are written.
    Resume: the run must hold a checkpoint; changes of keys other than ``MUTABLE_KEYS`` are refused (the
    allowed ones are recorded by ``Trainer.resume`` once the checkpoint has loaded)."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume, overwrite)
    _check_data_not_written(run_dir, cfg.data.path)
    if resume:
        lock = run.RunLock.acquire(run_dir)
        try:
            if ckpt.latest_checkpoint(run_dir / "checkpoints") is None:
                raise ckpt.CheckpointError(nothing_to_resume(run_dir))
            run.check_resume_changes(run_dir, cfg)  # recorded by Trainer.resume once the checkpoint loaded
            _clear_temps(run_dir)
            ckpt.drop_halves(run_dir / "checkpoints", ckpt.list_checkpoints(run_dir / "checkpoints")[-1][0])
        except BaseException:
            lock.release()
            raise
        return lock
    created = _make_run_dir(run_dir)
    lock = run.RunLock.acquire(run_dir)
    try:
        if not created:  # the new run's own data file may lie in the old run (its data.npy, its samples): kept
            _clear_for_new_run(run_dir, overwrite, keep=cfg.data.path)
        save_config(cfg, run_dir / "config.yaml")
        if data is not None:
            run_data.write_run_info(run_dir, cfg, data)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_data_not_written(run_dir: Path, path: str | None) -> None:
    """Refuse data that lie where the run writes (``samples/samples.npy``: its final samples; ``samples/``, a folder of
    images: its grids), named so or by a link there, or reached through a link (folder or file) in a data folder; and
    a data folder that holds the run (also through a linked folder in it: ``holds``; its listing and images would take
    in the run's files): training would change what it reads, and the run's data check would then refuse it. Other
    files in the run (the new run's own data file, a user's file in ``samples/``) are kept (``_remove_run_files``)."""
    if not path:
        return
    given, base = Path(path).expanduser(), Path(os.path.realpath(run_dir))
    for data in _spellings(given):  # what it names, and a link at its name itself (one path when there is none)
        links = list(linked_folders(data)) if data.is_dir() else []  # (shared by both checks below)
        if holds(data, base, links):
            raise ConfigError(f"data.path {path!r} holds run {str(run_dir)!r}: the run's files would join the data "
                              "it trains on (a data folder's listing and images; hidden folders excepted); train "
                              "into an --out outside the data folder")
        for place in (data, *links, *_file_link_into(data, base)):
            rel = _written(place, base)
            if rel:
                how = "is" if place == data else f"reaches, through a link in it ({str(place)!r}),"
                raise ConfigError(f"data.path {path!r} {how} {'/'.join(rel)} in run {str(run_dir)!r}, which "
                                  "the run writes (its samples, figures or checkpoints) and would replace while "
                                  "training on it; copy it out of the run directory and train on the copy, or train "
                                  "into another --out")


def _file_link_into(data: Path, base: Path) -> list[Path]:
    """[the resolved target] of the first file link in data folder ``data`` leading to a file run ``base`` writes, or
    []: an existing target is matched by its device and inode (a stat per link, not a path resolution in Python: a
    data folder can be a farm of a million links to a shared store), a dangling one (a file the run will write) by
    its resolved path."""
    if not data.is_dir():
        return []
    ours = {(s.st_dev, s.st_ino) for s in _written_stats(base)}
    for here, _, names in walk_folder(data):
        for link in (os.path.join(here, n) for n in names if os.path.islink(os.path.join(here, n))):
            try:
                st = os.stat(link)
            except OSError:  # dangling (or a loop): where it leads
                if _written(Path(os.path.realpath(link)), base):
                    return [Path(os.path.realpath(link))]
                continue
            if (st.st_dev, st.st_ino) in ours:
                return [Path(os.path.realpath(link))]
    return []


def _written_stats(base: Path):
    """``os.stat`` of each file run ``base`` now holds where it writes (``_written``)."""
    for here, _, names in os.walk(base):
        for p in (Path(here, n) for n in names):
            if _written(p, base) and not p.is_symlink():
                with contextlib.suppress(OSError):
                    yield os.stat(p)


def _written(place: Path, base: Path) -> tuple[str, ...]:
    """The parts of ``place`` (resolved) in run ``base`` when the run writes there (a file of its top level, a folder
    of its files or a file in one, anything under the TensorBoard folder), else ()."""
    rel = place.relative_to(base).parts if place.is_relative_to(base) else ()
    top = len(rel) == 1 and rel[0] in (*TRAIN_FILES, *WRITTEN_TOP)
    inner = len(rel) == 2 and rel[0] in TRAIN_FILES and TRAIN_FILES[rel[0]].fullmatch(rel[1])
    return rel if top or inner or rel[:1] == ("tb",) else ()


def holds(folder: Path, base: Path, links=None) -> bool:
    """Whether ``base`` lies in data ``folder``, no hidden folder between, or under a linked folder in it (``links``:
    ``linked_folders(folder)``, walked here when not given): the image walk follows links (``walk_folder``), and so
    does this."""
    def inside(root: Path) -> bool:
        return base.is_relative_to(root) and not any(part.startswith(".") for part in base.relative_to(root).parts)
    if inside(folder):
        return True
    links = (linked_folders(folder) if folder.is_dir() else ()) if links is None else links
    return any(inside(real) for real in links)


def _clear_temps(run_dir: Path) -> None:
    """A killed process's temp files in a run being resumed, which nothing else would remove: those of its top level
    and of checkpoints/, which only the lock's holder writes (``sample``'s, in samples/, may be another's now)."""
    for folder, names in ((run_dir, run.TOP_TEMPS), (run_dir / "checkpoints", TRAIN_FILES["checkpoints"])):
        for p in folder.iterdir() if folder.is_dir() else []:
            if p.name.endswith(".tmp") and names.fullmatch(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)


def _check_out_path(run_dir: Path) -> None:
    """--out must be a directory or not exist, and no part of it may be a file (nor a link to nothing)."""
    if run_dir.is_symlink() and not run_dir.exists():
        raise run.RunError(f"--out {str(run_dir)!r} is a symbolic link to {os.readlink(run_dir)!r}, which does not "
                           "exist; create that directory or choose another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise run.RunError(f"--out {str(run_dir)!r} is a file, not a directory; choose another --out")
    if (parent := file_above(run_dir)) is not None:
        raise run.RunError(f"--out {str(run_dir)!r} lies under {str(parent)!r}, which is a file; choose another --out")


def _make_run_dir(run_dir: Path) -> bool:
    """Create ``run_dir`` (and its parents) atomically: True if this call created it."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
    except FileExistsError:
        if not run_dir.is_dir():
            raise run.RunError(f"--out {str(run_dir)!r} is a file, not a directory; choose another --out") from None
        return False
    return True


def is_run_dir(run_dir: Path) -> bool:
    """An ebmlab run: ``config.yaml`` plus ``checkpoints/`` or ``metrics.jsonl``."""
    return (run_dir / "config.yaml").is_file() and ((run_dir / "checkpoints").is_dir()
                                                     or (run_dir / "metrics.jsonl").is_file())


def nothing_to_resume(run_dir: Path) -> str:
    """Why a run without a step checkpoint cannot resume: it stopped before its first one, or only its result is left
    (step checkpoints deleted to save space: the result has no optimizer state, and starting over would replace it)."""
    where = str(run_dir / "checkpoints")
    if has_result(run_dir):
        return (f"--resume: no checkpoint to continue from in {where!r}: the run's result is kept (its metrics.json "
                "or best checkpoint) but its step checkpoints are gone, and with them the optimizer state; train a new "
                "run with another --out (or --overwrite to replace this one)")
    return (f"--resume: no checkpoint found in {where!r}; the run stopped before its first one: start it again "
            "without --resume (the directory is reused)")


def has_result(run_dir: Path) -> bool:
    """Whether a run directory holds a trained result: the final metrics, or a validation best, except a best of a step
    up to the run's first step checkpoint's (e.g. the start's check) in a run that never trained all its updates: that
    is a start killed before its first checkpoint, which starting again writes anew, bit for bit."""
    if (run_dir / "metrics.json").is_file():
        return True
    best = ckpt.best_path(run_dir / "checkpoints")
    return best.is_file() and not _before_first_checkpoint(run_dir, best.with_suffix(".json"))


def _before_first_checkpoint(run_dir: Path, side: Path) -> bool:
    """Whether sidecar ``side`` names a step up to the run's first step checkpoint's, which a best of that step precedes,
    and the log never reached the run's last update nor a time-budget stop (a finished run whose step checkpoints were
    deleted keeps its best;
    False when the sidecar or config is unreadable: the best is then kept as a result)."""
    try:
        step, tc = json.loads(side.read_text(encoding="utf-8"))["step"], run.read_run_config(run_dir).train
    except Exception:  # noqa: BLE001 -- a damaged sidecar or config: keep what is there
        return False
    early = isinstance(step, int) and step <= min(tc.checkpoint_every, tc.steps)  # (<=: a best is written first)
    return early and not any(row["step"] >= tc.steps or row.get("stopped_by_budget") for row in read_metrics(run_dir))
    # (the last update is logged; a ``train.time_budget`` stop marks its row: a finished run)


def _clear_for_new_run(run_dir: Path, overwrite: bool, keep: str | None = None) -> None:
    """Make an existing directory ready for a new run, or refuse (nothing deleted) with one sentence; ``keep``:
    a path that is not deleted (the new run's data file)."""
    if _new_run_needs_clearing(run_dir, overwrite):
        _remove_run_files(run_dir, keep)


def _new_run_needs_clearing(run_dir: Path, overwrite: bool) -> bool:
    """Whether an existing directory must be cleared for a new run (False: empty); refuses (one sentence) what
    may not be reused. Reads only."""
    entries = [p for p in run_dir.iterdir() if p.name != run.LOCK_NAME]
    if not entries:
        return False
    ours = all(p.name in run.RUN_ENTRIES or is_temp_file(p) for p in entries)
    checkpoints = ckpt.list_checkpoints(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else []
    started = (run_dir / "config.yaml").is_file() or run.only_leftovers(entries)
    if ours and not checkpoints and started and not has_result(run_dir):
        return True  # an earlier start that never wrote a checkpoint: nothing to keep (a result kept alone is kept)
    if is_run_dir(run_dir):
        if overwrite:
            return True
        last = f" (checkpoints up to step {checkpoints[-1][0]})" if checkpoints else ""
        busy = holder(run_dir)
        if busy:  # --resume and --overwrite would be refused too: it is training now
            raise run.RunError(f"run directory {str(run_dir)!r} holds a run{last} in use by another ebmlab process "
                               f"({busy}); wait for it to finish, or train into another "
                               "--out")
        raise run.RunError(f"run directory {str(run_dir)!r} already exists and holds a run{last}; pass --resume to "
                           "continue it, --overwrite to replace it, or choose another --out (in Python: "
                           "ebmlab.resume(path), overwrite=True, another out=)")
    if overwrite:
        raise run.RunError(f"--overwrite refused: {str(run_dir)!r} is not an ebmlab run (no config.yaml with "
                           "checkpoints/ or metrics.jsonl), so nothing was deleted; choose another --out (out= in Python)")
    raise run.RunError(f"directory {str(run_dir)!r} already exists and is not an ebmlab run; choose another --out "
                       "(out= in Python: an empty or new directory)")


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """``prepare_run_dir``'s refusals, read-only: called before the objective is built (which may take seconds and
    raise its own config/data errors) so that a refused ``--out`` is said at once, and a run that
    ``--overwrite`` would replace is deleted only once everything else has validated. ``prepare_run_dir``
    checks again under the lock."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it; pass only one of them")
    _check_out_path(run_dir)
    if resume:
        if not run_dir.is_dir():
            raise run.RunNotFound(f"--resume: run directory {str(run_dir)!r} does not exist")
    elif run_dir.is_dir():
        _new_run_needs_clearing(run_dir, overwrite)


def _remove_run_files(run_dir: Path, keep: str | None = None) -> None:
    """Delete what ``ebmlab train`` writes in ``run_dir`` (links themselves, never their targets), except ``keep``
    (compared with the links of both paths' folders resolved: as named, and what a link at its end names) and the
    directories holding it, and ``config.yaml``,
    which the new run's replaces atomically. In ``_CLEARING_ORDER``: a process killed at any point leaves a run that
    ``--overwrite`` clears again, or a start without a checkpoint or result, which a new start reuses."""
    base = Path(os.path.realpath(run_dir))  # the directory the checks looked at (``A/link/..`` is link's parent)
    kept = _spellings(Path(keep).expanduser()) if keep else frozenset()
    others = []
    for p in sorted(base.iterdir(), key=lambda p: _CLEARING_ORDER.get(p.name, 1)):
        if p in kept or p.name == "config.yaml":  # the new run's data (a file, or a folder of images) is never entered
            continue
        if p.name in TRAIN_FILES and p.is_dir() and not p.is_symlink():
            others += _remove_train_files(p, TRAIN_FILES[p.name], kept)
        elif p.name != run.LOCK_NAME and (p.name in run.RUN_ENTRIES or is_temp_file(p)):
            _remove(p, kept)
    if others:
        shown = ", ".join(str(q.relative_to(base)) for q in others[:5])
        warnings.warn(f"--overwrite kept {len(others)} file(s) in {str(run_dir)!r} that ebmlab train did not write: "
                      f"{shown}{' ...' if len(others) > 5 else ''}", stacklevel=2)


# The result first (what makes a folder without step checkpoints a finished run), the marks of a run (besides its
# config.yaml: checkpoints/, metrics.jsonl, ``is_run_dir``) last; the rest (1) in between
_CLEARING_ORDER = {"metrics.json": 0, "checkpoints": 2, "metrics.jsonl": 3}


def _remove_train_files(folder: Path, names: re.Pattern, keep: frozenset[Path]) -> list[Path]:
    """Delete the files of ``folder`` that training writes (``names``), except ``keep``; the folder too when that
    empties it. Returns what was kept (the user's own files and folders, ``ebmlab sample``'s draws)."""
    kept = []
    for q in sorted(folder.iterdir()):
        if names.fullmatch(q.name) and not (q.is_dir() and not q.is_symlink()):
            _remove(q, keep)
        elif q not in keep:
            kept.append(q)
    if not any(folder.iterdir()):
        folder.rmdir()
    return kept


def _unfollowed(path: Path) -> Path:
    """``path`` with the links of its folders resolved, not a link at its end (kept as itself, never entered)."""
    return Path(os.path.realpath(path.parent)) / path.name


def _spellings(path: Path) -> frozenset[Path]:
    """The entries that are ``path``: its name (a link kept as itself) and what a link at its end names (a link
    outside the run to the run's ``data.npy``); a target the run writes is refused before (``_check_data_not_written``)."""
    return frozenset({_unfollowed(path), Path(os.path.realpath(path))})


def _remove(p: Path, keep: frozenset[Path]) -> None:
    """Delete ``p`` (a link itself, never its target), except ``keep``'s paths and the directories holding them."""
    if p in keep:
        return
    if p.is_dir() and not p.is_symlink():
        if any(k.is_relative_to(p) for k in keep):
            for q in p.iterdir():
                _remove(q, keep)
            return
        shutil.rmtree(p)
    else:
        p.unlink()
