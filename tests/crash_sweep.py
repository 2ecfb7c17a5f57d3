"""Round 45 harness: run one ebmlab command killed (os._exit(137)) right before / after its K-th file-system mutation
(tests/crash_child.py), then check what is left. One child process at a time.
Usage: python -m tests.crash_sweep SCENARIO KS(all|comma list) WHEN OUTJSONL"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TINY = ["train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=2", "data.val_fraction=0.2",
        "train.select_every=2", "model.width=16", "model.depth=1", "eval.n_samples=32", "eval.plots=false",
        "eval.long_run_factor=1", "eval.grid_size=8", "train.progress=false", "method.n_steps=3",
        "method.n_steps_data=2", "train.threads=1", "train.log_every=1", "data.n_train=256", "data.n_test=32",
        "train.batch_size=32"]
SETS = [a for o in TINY for a in ("--set", o)]
TIME_KEYS = ("seconds", "time", "wall", "_s")


def env(root) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO / 'src'}:{REPO}", CRASH_ROOT=str(root),
                MPLBACKEND="Agg")


def child(root: Path, k: int | str, when: str, *argv) -> tuple[int, str, list[str]]:
    """Run ``ebmlab ARGV`` killed at mutation ``k`` (0: never); (exit status, stderr, the mutations seen)."""
    log = root.parent / f"{root.name}.mutations"
    p = subprocess.run([PY, "-m", "tests.crash_child", str(k), when, str(log), "--", *map(str, argv)],
                       cwd=REPO, env=env(root), capture_output=True, text=True, timeout=300)
    muts = log.read_text().splitlines() if log.exists() else []
    return p.returncode, p.stderr, muts


def killed(root: Path, at: str, when: str, *argv) -> list[str]:
    """``child`` killed right ``when`` (before/after) mutation ``at`` (a number, or PATTERN#N) under ``root``; the
    mutations it made. Asserts it was killed (status 137). (The tests' form: rounds 45 and 48.)"""
    code, err, muts = child(root, at, when, *argv)
    assert code == 137, (at, code, err[-2000:])
    return muts


def ebmlab(root: Path, *argv) -> tuple[int, str, str]:
    p = subprocess.run([PY, "-m", "ebmlab", *map(str, argv)], cwd=REPO, env=env(root), capture_output=True,
                       text=True)
    return p.returncode, p.stdout, p.stderr


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def strip_times(obj):
    if isinstance(obj, dict):
        return {k: strip_times(v) for k, v in obj.items() if not any(t in k for t in TIME_KEYS)}
    if isinstance(obj, list):
        return [strip_times(v) for v in obj]
    return obj


def result_files(run: Path) -> dict[str, str]:
    """The checkpoints' digests, metrics.json without wall times, metrics.jsonl rows without wall times."""
    out = {f"checkpoints/{p.name}": digest(p) for p in sorted((run / "checkpoints").glob("*"))
           if not p.name.startswith(".")} if (run / "checkpoints").is_dir() else {}
    if (run / "metrics.json").exists():
        out["metrics.json"] = hashlib.sha256(json.dumps(strip_times(json.loads((run / "metrics.json").read_text())),
                                                        sort_keys=True).encode()).hexdigest()[:16]
    if (run / "metrics.jsonl").exists():
        rows = [strip_times(json.loads(r)) for r in (run / "metrics.jsonl").read_text().splitlines() if r.strip()]
        out["metrics.jsonl"] = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
    return out


def last(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-2:])[-600:]


def leftovers(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*.tmp")) if run.exists() else []


# ---- scenarios ---------------------------------------------------------------------------------------------------

def train_resume(base: Path, ks, when):
    ref = base / "ref"
    shutil.rmtree(ref, ignore_errors=True)
    code, err, muts = child(ref, 0, when, "train", "--out", ref, *SETS)
    assert code == 0, err
    want = result_files(ref)
    yield {"k": 0, "n_mutations": len(muts), "mutations": muts, "want": want}
    ks = range(1, len(muts) + 1) if ks == "all" else ks
    for k in ks:
        run = base / "r"
        shutil.rmtree(run, ignore_errors=True)
        code, err, _ = child(run, k, when, "train", "--out", run, *SETS)
        rec = {"k": k, "what": muts[k - 1] if k <= len(muts) else None, "kill_code": code,
               "files_after_kill": sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()
                                          and "tb" not in p.parts) if run.exists() else None}
        c2, _, e2 = ebmlab(run, "train", "--out", run, "--resume", *SETS)
        rec["resume"] = (c2, last(e2) if c2 else "")
        if c2 != 0:  # follow the advice: a plain train (the sentence says what to do; recorded)
            c3, _, e3 = ebmlab(run, "train", "--out", run, *SETS)
            rec["plain_train"] = (c3, last(e3) if c3 else "")
        got = result_files(run)
        rec["diff"] = {f: (want.get(f), got.get(f)) for f in sorted(set(want) | set(got)) if want.get(f) != got.get(f)}
        rec["leftovers"] = leftovers(run)
        yield rec


def _trained(base: Path, name="ref") -> Path:
    ref = base / name
    if not (ref / "metrics.json").exists():
        code, _, err = ebmlab(ref, "train", "--out", ref, *SETS)
        assert code == 0, err
    return ref


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): digest(p) for p in sorted(d.rglob("*")) if p.is_file() and "tb" not in p.parts}


def after_eval_checks(run: Path, rec: dict):
    c, _, e = ebmlab(run, "sample", run, "--n", 4, "--out", run.parent / "chk.npy", "--overwrite")
    rec["sample_after"] = (c, last(e) if c else "")
    c, _, e = ebmlab(run, "eval", run)
    rec["eval_after"] = (c, last(e) if c else "")
    c, _, e = ebmlab(run, "train", "--out", run, "--resume", *[a for a in SETS], "--set", "train.steps=8")
    rec["resume_after"] = (c, last(e) if c else "")


def eval_kill(base: Path, ks, when):
    ref = _trained(base)
    pristine = _snapshot(ref)
    work = base / "e"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ref, work)
    code, err, muts = child(work, 0, when, "eval", work)
    assert code == 0, err
    yield {"k": 0, "n_mutations": len(muts), "mutations": muts}
    ks = range(1, len(muts) + 1) if ks == "all" else ks
    for k in ks:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(ref, work)
        code, err, _ = child(work, k, when, "eval", work)
        rec = {"k": k, "what": muts[k - 1], "kill_code": code}
        now = _snapshot(work)
        rec["changed"] = sorted(f for f in set(now) | set(pristine) if now.get(f) != pristine.get(f))
        rec["leftovers"] = leftovers(work)
        after_eval_checks(work, rec)
        yield rec


def sample_kill(base: Path, ks, when):
    ref = _trained(base)
    for variant in ("new", "existing", "existing+overwrite"):
        out = base / "user" / "s.npy"
        argv = ["sample", ref, "--n", 4, "--out", out] + (["--overwrite"] if "overwrite" in variant else [])

        def setup():
            shutil.rmtree(out.parent, ignore_errors=True)
            out.parent.mkdir(parents=True)
            if variant.startswith("existing"):
                out.write_bytes(b"USER DATA " * 100)
                out.with_suffix(".png").write_bytes(b"USER PNG " * 100)
        setup()
        code, err, muts = child(out.parent, 0, when, *argv)
        yield {"variant": variant, "k": 0, "n_mutations": len(muts), "mutations": muts, "code": code,
               "err": last(err)}
        for k in (range(1, len(muts) + 1) if ks == "all" else ks):
            setup()
            code, err, _ = child(out.parent, k, when, *argv)
            files = {p.name: p.read_bytes()[:10] for p in out.parent.iterdir() if p.is_file()}
            rec = {"variant": variant, "k": k, "what": muts[k - 1] if k <= len(muts) else None, "code": code,
                   "files": sorted(files)}
            if variant.startswith("existing"):
                rec["user_npy"] = "kept" if files.get("s.npy") == b"USER DATA " else (
                    "missing" if "s.npy" not in files else ("replaced-whole" if _whole_npy(out) else "HALF"))
            else:
                rec["npy"] = "none" if "s.npy" not in files else ("whole" if _whole_npy(out) else "HALF")
            yield rec


def _whole_npy(p: Path) -> bool:
    import numpy as np
    try:
        return np.load(p).shape[0] == 4
    except Exception:
        return False


def overwrite_kill(base: Path, ks, when):
    ref = _trained(base)
    other = TINY + ["train.steps=4"]
    osets = [a for o in other for a in ("--set", o)]
    work = base / "o"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ref, work)
    code, err, muts = child(work, 0, when, "train", "--out", work, "--overwrite", *osets)
    assert code == 0, err
    new = _snapshot(work)
    old = _snapshot(ref)
    yield {"k": 0, "n_mutations": len(muts), "mutations": muts}
    for k in (range(1, len(muts) + 1) if ks == "all" else ks):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(ref, work)
        code, err, _ = child(work, k, when, "train", "--out", work, "--overwrite", *osets)
        now = _snapshot(work)
        rec = {"k": k, "what": muts[k - 1], "code": code,
               "old_kept": sorted(f for f in now if old.get(f) == now[f]),
               "new": sorted(f for f in now if new.get(f) == now[f] and old.get(f) != now[f])}
        c, o, e = ebmlab(work, "sample", work, "--n", 4, "--out", base / "o.npy", "--overwrite")
        rec["sample_after"] = (c, last(e) if c else "")
        yield rec


SCENARIOS = {"train": train_resume, "eval": eval_kill, "sample": sample_kill, "overwrite": overwrite_kill}

if __name__ == "__main__":
    scen, ks, when, outp = sys.argv[1:5]
    base = Path(os.environ.get("CRASH_BASE", "/tmp/h45w")) / scen
    base.mkdir(parents=True, exist_ok=True)
    ks = ks if ks == "all" else [int(x) for x in ks.split(",")]
    with open(outp, "a") as fh:
        for rec in SCENARIOS[scen](base, ks, when):
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
