"""Memory of an image training split, and of the evaluation's novelty search over it (docs/images.md).

Writes a synthetic CIFAR-10 of the real size (50,000 training and 10,000 test images, random bytes, in the official
pickle layout) to a temporary folder, then in a fresh process each: loads it with ``data.hflip`` off or on, and runs
the novelty search of ``training/image_eval.py`` (``novelty_summary``) for ``--samples`` samples. With
``--folder-images N``, also N random 32x32 PNGs as an image folder, loaded the same way. Prints the peak
resident memory (``ru_maxrss``) of each process over a bare interpreter's that imported the same modules, the bytes
the training split holds, and the wall time; ``--json FILE`` writes them.

    OMP_NUM_THREADS=1 python benchmarks/bench_image_memory.py [--samples 500] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import torch
from ebmlab.data.dataset import build_dataset
from ebmlab.metrics.novelty import novelty_summary
from ebmlab.training.config import DataConfig
root, what, hflip, n_samples = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
name = "imagefolder" if what == "folder" else "cifar10"
d = build_dataset(DataConfig(name=name, path=root + ("/folder" if what == "folder" else ""), hflip=hflip))
split = getattr(d.train, "codes", d.train)
out = {"load_s": time.perf_counter() - t0, "rows": len(d.train), "split_bytes": split.numel() * split.element_size()}
if what == "novelty":
    t0 = time.perf_counter()
    samples = torch.rand(n_samples, *d.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    novelty_summary(samples, d.train, d.test[:n_samples])
    out["novelty_s"] = time.perf_counter() - t0
out["peak_mb_over_imports"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps(out))
"""


def write_cifar(root: Path) -> None:
    """Five training batches of 10,000 images and a test batch, random bytes (seed 0), as CIFAR-10 ships them."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": b"synthetic", b"labels": rng.integers(0, 10, 10000).tolist(),
                 b"data": rng.integers(0, 256, size=(10000, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def write_folder(root: Path, n: int) -> None:
    """n random 32x32 RGB PNGs (seed 0) in ``root/folder``."""
    from PIL import Image
    rng = np.random.default_rng(0)
    (root / "folder").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(root / "folder" / f"{i:06d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=500, help="samples in the novelty search (default 500)")
    ap.add_argument("--folder-images", type=int, default=0, help="also load a folder of this many PNGs (default 0: no)")
    ap.add_argument("--json", help="write the measurements here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar(Path(tmp))
        if args.folder_images:
            write_folder(Path(tmp), args.folder_images)
        for what in ("load", "novelty") + (("folder",) if args.folder_images else ()):
            for hflip in (False, True):
                t0 = time.perf_counter()
                out = subprocess.run([sys.executable, "-c", CHILD, tmp, what, str(int(hflip)), str(args.samples)],
                                     capture_output=True, text=True, check=True, env=dict(os.environ))
                row = {"what": what, "hflip": hflip, **json.loads(out.stdout), "process_s": time.perf_counter() - t0}
                rows.append(row)
                print(f"{what:8s} hflip={hflip!s:5s} rows {row['rows']:6d}  split {row['split_bytes'] / 2**20:7.1f} MiB  "
                      f"peak {row['peak_mb_over_imports']:7.1f} MiB over the imports  load {row['load_s']:.1f} s"
                      + (f"  novelty {row['novelty_s']:.1f} s" if "novelty_s" in row else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": args.samples, "rows": rows,
                                               "own_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
                                              indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
