"""Synthetic image files in the formats the image loaders read (one definition for the test files that need them)."""
import pickle

import numpy as np


def write_cifar10(root, n: int = 4, seed: int = 5) -> dict:
    """A CIFAR-10 python folder ``root/cifar-10-batches-py`` of n random images per batch file (five training batches
    and the test batch, the official pickle layout); returns each file's (n, 3072) uint8 rows by file name."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    raw = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        raw[name] = data
        batch = {b"batch_label": b"t", b"labels": rng.integers(0, 10, size=n).tolist(), b"data": data}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return raw
