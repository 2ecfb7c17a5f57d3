"""A run's data (DESIGN.md "Runs on disk"): ``run.json`` (written, read, its data transform), where the data file
is, whether it is the one the run was trained on, and the run's ``Dataset``. Split out of ``training/run.py``, which
re-exports what its importers used from it.

``run.json`` stores the data file's absolute path and SHA-256 (a folder: the SHA-256 of its listing), and, when the
data lay inside the run directory at training time (``ebmlab.train``'s ``data.npy`` of data given in memory, a run
trained on another's ``samples/``), the path inside the run (``path_in_run``). A run moved or copied to another
place then reads its data there; the fingerprint decides whether the file found is the run's. A data file outside
the run that moved (a project copied to another home) is pointed to again with ``--resume --data NEW``: when NEW
holds the same bytes, run.json records it (``relocated``) and it is read from then on, while ``config.yaml`` keeps the
stored ``data.path``, part of the run's identity (the hash its checkpoints carry).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ebmlab.config import Config
from ebmlab.errors import CheckpointError, DataError
from ebmlab.files import write_text_atomic

__all__ = ["DATA_FILE", "INFO_NAME", "RELOCATED", "data_file", "data_fingerprint", "located_config", "read_run_info",
           "record_relocation", "relocation", "run_dataset", "stored_transform", "transform_info", "verify_data", "write_run_info"]

INFO_NAME = "run.json"
DATA_FILE = "data.npy"  # ebmlab.train's copy of data given in memory (``api.py``)
RELOCATED = "relocated"  # run.json's data key: where a moved data file is read now (inside the run: relative to it)


def data_file(cfg: Config) -> Path | None:
    """The data file whose bytes a run depends on (``data.path`` when it is a regular file), else None."""
    p = Path(cfg.data.path).expanduser() if cfg.data.path else None  # (~: a run written before it was expanded)
    return p if p is not None and p.is_file() else None


def write_run_info(run_dir: Path, cfg: Config, data) -> None:
    """``run.json``: what ``load``/``sample``/``eval`` need without the original command line."""
    from importlib.metadata import PackageNotFoundError, version

    from ebmlab.data.arrays import LISTING_VERSION, file_sha256, folder_fingerprint
    from ebmlab.objectives import method_module

    try:
        __version__ = version("ebmlab")
    except PackageNotFoundError:  # pragma: no cover - a source tree without installation
        __version__ = "unknown"

    f = data_file(cfg)
    tf = data.transform
    info = {"format": 1, "ebmlab": __version__, "method": cfg.method.name, "model": cfg.model.name,
            "config_hash": cfg.run_hash(),
            "data": {"name": cfg.data.name, "kind": data.kind, "shape": list(data.shape),
                     "num_classes": int(data.num_classes or 0), "classes": [str(c) for c in data.info.get("classes", [])],
                     "n_train": int(data.train.shape[0]),
                     "n_test": int(data.test.shape[0]),
                     "path": str(Path(cfg.data.path).expanduser().resolve()) if cfg.data.path else None,
                     "path_in_run": _path_in_run(run_dir, cfg.data.path),
                     "sha256": file_sha256(f) if f is not None else None,
                     "listing_sha256": folder_fingerprint(cfg.data.path) if _is_folder(cfg) else None,
                     "listing_version": LISTING_VERSION},
            "transform": transform_info(tf, data.kind)}
    module = method_module(cfg.method.name)
    if module is not None:  # a method of the user's own: opening the run imports the module that registered it
        info["method_module"] = module
    write_text_atomic(run_dir / INFO_NAME, json.dumps(info, indent=1))


def transform_info(tf, kind: str) -> dict:
    """run.json's ``transform``: shift and scale, and with whitening the matrix W and its inverse; ``dtype``
    "float64" for a run on float64 vectors (JSON numbers hold float64 exactly; absent: float32, as every run's before)."""
    out = {"shift": tf.shift.tolist(), "scale": tf.scale.tolist(),
           "note": "model = (data - shift) / scale" + (", images in [-1, 1]" if kind == "image" else "")}
    if tf.dtype == torch.float64:
        out["dtype"] = "float64"
    if tf.matrix is not None:
        out.update(matrix=tf.matrix.tolist(), inverse=tf.inverse.tolist(), note="model = W (data - shift) / scale")
    return out


def stored_transform(tf: dict):
    """The ``Affine`` of run.json's ``transform`` (ValueError/TypeError/KeyError if it is malformed)."""
    from ebmlab.data.base import Affine

    precision = {"float64": torch.float64, "float32": torch.float32}[tf.get("dtype", "float32")]  # shift and scale

    def t(key, dtype=torch.float32):
        return torch.tensor(tf[key], dtype=dtype)
    return Affine(t("shift", precision), t("scale", precision), *((t("matrix"), t("inverse")) if "matrix" in tf else ()))


def read_run_info(run_dir: Path) -> dict | None:
    """``run.json`` as a dict, None for a run written before it existed; CheckpointError if damaged."""
    p = Path(run_dir) / INFO_NAME
    if not p.is_file():
        return None
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
        ok = isinstance(info, dict) and isinstance(info.get("data"), dict) and isinstance(info.get("transform"), dict)
        if ok:
            stored_transform(info["transform"])
            [int(s) for s in info["data"]["shape"]]
    except (OSError, ValueError, TypeError, KeyError, RuntimeError):
        ok = False
    if not ok:
        raise CheckpointError(f"run file {str(p)!r} is damaged (expected ebmlab's JSON with 'data' and "
                              "'transform'); restore it or retrain the run")
    return info


def _path_in_run(run_dir: Path, path: str | None) -> str | None:
    """``path`` relative to the run directory (POSIX form) when it lies inside it, else None."""
    if not path:
        return None
    try:
        return Path(path).expanduser().resolve().relative_to(Path(run_dir).resolve()).as_posix()
    except ValueError:
        return None


def located_config(run_dir: Path, cfg: Config, info: dict | None) -> Config:
    """``cfg`` reading its data where they are now: when the data lay inside the run directory at training time, the
    same place inside ``run_dir`` (a moved or copied run reads its own copy, even where the original still exists),
    a moved data file where ``record_relocation`` found it (a place inside the run is recorded relative to it, so a
    copy of the run reads its own), else ``data.path`` as stored (a run written before ``path_in_run``: its
    ``data.npy`` once the stored one is gone;
    ``verify_data`` then checks its fingerprint). The returned config is for reading the data only: the run's
    identity (its hash, ``config.yaml``) keeps the stored path."""
    path = located_path(run_dir, cfg.data.path, info)
    return cfg if path == cfg.data.path else dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=path))


def located_path(run_dir: Path, stored: str | None, info: dict | None) -> str | None:
    """Where a run whose config stores data path ``stored`` reads its data now (``located_config``)."""
    if not stored:
        return stored
    d, here = (info or {}).get("data") or {}, _inside(run_dir, stored, info)
    if here is not None and here.exists():  # data that lay inside the run travel with it (before any record)
        stored_at = Path(stored).expanduser()
        if stored_at.exists() and here.resolve() == stored_at.resolve():
            return stored  # (the run where it was trained: its config as stored)
        return str(here.absolute())
    place = Path(run_dir) / d[RELOCATED] if d.get(RELOCATED) else None  # (a place inside the run is relative to it)
    return str(place) if place is not None and place.exists() else stored  # a moved data file (record_relocation)


def _inside(run_dir: Path, stored: str, info: dict | None) -> Path | None:
    """Where the run's data are inside ``run_dir`` when they lay inside the run at training time, else None."""
    d = (info or {}).get("data") or {}
    inside, stored_at = d.get("path_in_run"), Path(stored).expanduser()
    if inside is None and d.get("sha256") and stored_at.name == DATA_FILE and not stored_at.exists():
        inside = DATA_FILE  # a run written before path_in_run
    return Path(run_dir) / inside if inside else None


def data_fingerprint(info: dict | None) -> str | None:
    """The fingerprint run.json stores for the run's data (a file's SHA-256, a folder's listing's), None without."""
    d = (info or {}).get("data") or {}
    return d.get("sha256") or d.get("listing_sha256")


def listing_legacy(info: dict | None) -> bool:
    """Whether run.json's folder listing may be the old kind (``folder_matches``' ``legacy``): a run written before
    ``listing_version``."""
    return ((info or {}).get("data") or {}).get("listing_version") is None


def _holds_data(path: Path, want: str | None, legacy: bool = False) -> bool:
    """Whether ``path`` holds the data of fingerprint ``want`` (a file's SHA-256, a folder's listing's; ``legacy``:
    ``listing_legacy``)."""
    from ebmlab.data.arrays import file_sha256, folder_matches

    return want is not None and (file_sha256(path) == want if path.is_file() else
                                 path.is_dir() and folder_matches(path, want, legacy))


def relocation(run_dir: Path, cfg: Config, stored: str | None) -> tuple[Config, str | None]:
    """Whether a resume's ``cfg.data.path`` (``~`` expanded) points the run to its data at another place: (``cfg`` with
    the ``stored`` path back, the place to record in run.json) when that place holds the very data the run was trained
    on (run.json's fingerprint); (``cfg`` with the stored path, ``""``) when it names the stored path again, whose bytes
    are the run's, and run.json records a place (dropped then); else (``cfg``, None), and ``check_resume_changes``
    refuses another path. Writes nothing: ``record_relocation`` does, once the resume has passed its checks under the
    run's lock, and ``run_dataset(..., relocate=)`` reads the data at the place meanwhile."""
    new = cfg.data.path
    if not new or not stored:
        return cfg, None
    new, info = Path(new).expanduser(), read_run_info(run_dir)
    want, recorded = data_fingerprint(info), ((info or {}).get("data") or {}).get(RELOCATED)
    back = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=stored))
    inside = _inside(run_dir, stored, info)
    legacy = listing_legacy(info)
    own = inside is not None and inside.exists() and new.exists() and _holds_data(new, want, legacy)
    if inside is not None and (_same_file(new, inside) or own):  # the run's own copy (data given in memory) is read
        return back, ("" if recorded else None)  # from the run: nothing elsewhere recorded (an earlier record dropped)
    if _same_file(new, Path(stored).expanduser()):
        return back, ("" if recorded and _holds_data(Path(stored).expanduser(), want, legacy) else None)
    if want is None:
        return cfg, None  # (a run without a fingerprint: check_resume_changes refuses another path)
    if not new.exists():
        raise DataError(f"data.path {str(new)!r}: no such file or folder; give the place run {str(run_dir)!r}'s data "
                        "moved to")
    if not _holds_data(new, want, legacy):
        raise DataError(f"{str(new)!r} holds other data than run {str(run_dir)!r} was trained on (its "
                        f"{'SHA-256' if new.is_file() else 'listing of names and sizes'} differs from run.json's); "
                        "a resume takes only a moved copy of the same bytes: train a new run on other data")
    return back, _path_in_run(run_dir, str(new)) or str(new.resolve())  # inside the run: relative (a copy reads its own)


def _same_file(a: Path, b: Path) -> bool:
    return a == b or (a.exists() and b.exists() and a.samefile(b))


def record_relocation(run_dir: Path, place: str | None) -> None:
    """Write ``relocation``'s ``place`` into run.json (``""``: drop the recorded one; None: nothing to write)."""
    info = read_run_info(run_dir) if place is not None else None
    if info is None or info["data"].get(RELOCATED, "") == place:
        return
    info["data"][RELOCATED] = place
    if not place:
        del info["data"][RELOCATED]
    write_text_atomic(Path(run_dir) / INFO_NAME, json.dumps(info, indent=1))


def relocation_note(place: str | None, cfg: Config, run_dir: Path) -> str:
    """What a resume's ``relocation`` changed in run.json, as the end of the CLI's "resumed RUN at step N" line."""
    if place is None:
        return ""
    folder = Path(run_dir, place or cfg.data.path).expanduser().is_dir()
    what, same = ("data folder", "the same listing of names and sizes") if folder else ("data file", "the same SHA-256")
    return (f", its {what} read at {Path(run_dir) / place} (moved from {cfg.data.path}, {same}; recorded in run.json)"
            if place else f", its {what} read at {cfg.data.path} again (the moved copy forgotten)")


def _is_folder(cfg: Config) -> bool:
    return bool(cfg.data.path) and Path(cfg.data.path).expanduser().is_dir()


def verify_data(run_dir: Path, cfg: Config, info: dict | None) -> bool:
    """True when the run's data file is present and unchanged, False when it is absent; DataError naming
    the file when its bytes differ from those the run was trained on (a data folder: when its files' names or
    sizes differ, ``folder_matches``)."""
    from ebmlab.data.arrays import file_sha256, folder_matches

    listing = (info or {}).get("data", {}).get("listing_sha256")
    if listing and _is_folder(cfg) and not folder_matches(cfg.data.path, listing, listing_legacy(info)):
        raise DataError(f"data folder {str(cfg.data.path)!r} has changed since run {str(run_dir)!r} was trained "
                        "(files added, removed, renamed or resized); restore it or train a new run on the new data")
    want = (info or {}).get("data", {}).get("sha256")
    if not want or not cfg.data.path:
        return cfg.data.path is None or Path(cfg.data.path).expanduser().exists()
    p = Path(cfg.data.path).expanduser()
    if not p.is_file():
        return False
    if file_sha256(p) != want:
        raise DataError(f"data file {str(p)!r} has changed since run {str(run_dir)!r} was trained (SHA-256 "
                        "differs); restore the original file or train a new run on the new data")
    return True


def _stub_dataset(info: dict):
    """A ``Dataset`` with the run's stored transform and shape but no examples (the file is absent)."""
    from ebmlab.data.base import Dataset

    d = info["data"]
    shape = tuple(int(s) for s in d["shape"])
    empty = torch.zeros((2, *shape))
    return Dataset(str(d.get("path") or d.get("name")), d["kind"], empty, empty[:0], stored_transform(info["transform"]),
                   num_classes=int(d.get("num_classes") or 0), info={"stub": True})


def run_dataset(run_dir: Path, cfg: Config, *, need_data: bool = True, relocate: str | None = None):
    """The run's ``Dataset``: rebuilt from ``config.yaml`` when ``need_data`` (training, ``eval``,
    ``sample --init data``), else a stub with the stored transform (the data are not loaded; a present file is
    hashed). A changed or missing data file is refused only when the data are needed (a changed one is said in a
    warning otherwise: the weights and the stored transform do not depend on it). A run without ``run.json``
    (written before it) stores no transform: it is rebuilt from its data, and refused without them, even with
    ``need_data=False``. Data that lay inside the run are read where the run now is (``located_config``); a resume's
    ``relocate`` (``relocation``: not yet recorded) says where a moved data file is read."""
    from ebmlab.data import build_dataset

    info = read_run_info(run_dir)
    if info is not None and relocate is not None:  # (in memory: run.json is written once the resume has started)
        info["data"][RELOCATED] = relocate
    located = located_config(run_dir, cfg, info)
    if info is not None and not need_data:
        try:
            verify_data(run_dir, located, info)
        except DataError as exc:
            import warnings
            warnings.warn(f"{exc}; loaded without it (starts from the data and eval refuse it)",
                          UserWarning, stacklevel=3)
        return _stub_dataset(info)
    present = verify_data(run_dir, located, info)
    if not present:
        raise DataError(f"data file {str(cfg.data.path)!r} of run {str(run_dir)!r} does not exist; restore it, or "
                        f"if it moved, point the run to it with ebmlab train --out {str(run_dir)!r} --resume --data "
                        "NEW_PATH (ebmlab.load and sample --init noise work without it)")
    data = build_dataset(located.data)
    _check_classes(run_dir, located, info, data)
    if info is not None:  # the stored transform is the one the weights were trained with
        stored = _stub_dataset(info).transform
        if stored.dtype != data.transform.dtype and located.data.name == "array":  # float64 rows, a run before them
            data = _float32_rows(located)
        data.transform = stored
    return data


def _check_classes(run_dir: Path, cfg: Config, info: dict | None, data) -> None:
    """Refuse data whose class names differ from those the run was trained with (run.json's ``classes``): the same
    listing can name a class folder reached under two names otherwise (a walk before it was sorted), and the labels,
    and so every class-conditional result, would then mean other classes."""
    stored = ((info or {}).get("data") or {}).get("classes") or []
    now = [str(c) for c in data.info.get("classes", [])]
    if stored and now != stored:
        raise DataError(f"data {str(cfg.data.path)!r} name their classes {now} where run {str(run_dir)!r} was trained "
                        f"with {stored}: the labels would mean other classes; rename the class folders back, or train a new "
                        "run on the data as they are")


def _float32_rows(cfg: Config):
    """The ``array`` data of a run trained before float64 vectors kept their precision: the file's rows read in
    float32 first, as that run was trained on them (its weights, splits and stored float32 transform)."""
    from ebmlab.data.arrays import load_vectors
    from ebmlab.data.dataset import array_dataset

    return array_dataset(load_vectors(cfg.data.path).float(), cfg.data, str(cfg.data.path))
