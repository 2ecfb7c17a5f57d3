"""Round 44: memory held per data path, pinned at small sizes (copies of the data counted, not timed)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ebmlab.config import DataConfig
from ebmlab.data.base import Affine, Dataset
from ebmlab.training.logging import read_metrics

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _vector_data(n_train=4000, n_val=3000, d=8) -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset("x", "vector", torch.randn(n_train, d, generator=g), torch.randn(50, d, generator=g),
                   Affine(torch.zeros(d), torch.ones(d)), val=torch.randn(n_val, d, generator=g))


class _Objective:
    def __init__(self, d):
        self.d = d

    def sample(self, n, generator=None):
        return SimpleNamespace(x=torch.randn(n, self.d, generator=generator))


def _spy_double(monkeypatch):
    sizes = []
    orig = torch.Tensor.double

    def spy(self, *a, **k):
        sizes.append(self.numel())
        return orig(self, *a, **k)
    monkeypatch.setattr(torch.Tensor, "double", spy)
    return sizes


# WAS A BUG: heldout.zscorer (called on every validation check and every held-out metric) copied the whole training split to float64 (twice its float32 size) only to take its column mean and std.
def test_zscorer_does_not_copy_training_split_to_float64(monkeypatch):
    from ebmlab.data import dataset
    from ebmlab.training.heldout import zscorer

    data = _vector_data()
    whole = zscorer(data)(data.test)  # rows of up to STATS_BLOCK values: in one piece, as always
    monkeypatch.setattr(dataset, "STATS_BLOCK", 1000)  # as 1M x 100 rows are against the real block
    sizes = _spy_double(monkeypatch)
    blocked = zscorer(data)(data.test)
    assert max(sizes) <= 1000, f"float64 copies of {max(sizes)} values (train: {data.train.numel()})"
    assert torch.allclose(blocked, whole, rtol=0, atol=1e-12)


# WAS A BUG: selection.validation_terms took one unchunked (n_samples x n_val) float64 cdist matrix (1000 x 90,000 = 720 MB for 1M rows) where energy_distance chunks by 2048 rows.
def test_validation_terms_distance_matrix_is_chunked(monkeypatch):
    from ebmlab.training import selection

    data = _vector_data(n_val=3000)
    shapes = []
    orig = torch.cdist

    def spy(a, b, *args, **kw):
        shapes.append((a.shape[0], b.shape[0]))
        return orig(a, b, *args, **kw)
    monkeypatch.setattr(torch, "cdist", spy)
    selection.validation_terms(_Objective(8), data, 2500, torch.Generator().manual_seed(0))
    biggest = max(r * c for r, c in shapes)
    assert biggest <= 2048 * 3000, f"one cdist block of {biggest} distances ({shapes})"


# WAS A BUG: every validation check recomputed the O(m^2) self term E|Y-Y'| of the fixed validation rows (90,000^2 distances per draw at 1M rows: the 1M-row run did not finish in 10 minutes).
def test_validation_self_term_not_recomputed(tmp_path, monkeypatch):
    from ebmlab.metrics import distances
    from ebmlab.training import selection
    from tests.unit.test_selection import _fit

    calls = []
    orig = distances._mean_pdist

    def spy(a, b, chunk=2048):
        calls.append(a.shape[0] if a is b else None)  # the own terms: of a check's samples, of the rows
        return orig(a, b, chunk)
    monkeypatch.setattr(distances, "_mean_pdist", spy)
    trainer, _ = _fit(tmp_path / "r", ["train.steps=6", "train.select_every=2", "data.val_fraction=0.1",
                                       "eval.n_samples=16"])
    checks = len([r for r in read_metrics(tmp_path / "r") if "val_energy_distance" in r])
    n = selection.SELECT_SAMPLES
    assert checks == 3 and calls.count(n) == checks and len(trainer.data.val) not in (n, 16)
    assert calls.count(len(trainer.data.val)) == 1, calls  # the validation rows' own term: once, not per check


def test_a_check_scores_at_most_validation_rows_rows(monkeypatch):
    from ebmlab.training import heldout

    data = _vector_data(n_val=500)
    monkeypatch.setattr(heldout, "VALIDATION_ROWS", 100)
    score, rows = heldout.validation_terms(_Objective(8), data, 50, torch.Generator().manual_seed(0))
    assert rows.shape == (100,)
    ref = heldout.reference(data, data.val[:100])
    assert score == heldout.validation_terms(_Objective(8), data, 50, torch.Generator().manual_seed(0), ref)[0]


def _peak_mb(code: str) -> tuple[float, float]:
    script = textwrap.dedent("""
        import resource, numpy as np, torch
        from ebmlab.config import DataConfig
        from ebmlab.data.dataset import array_dataset
        torch.set_num_threads(1)
        def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        """) + textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = map(float, out.stdout.split())
    return before, after


# WAS A BUG: array_dataset added three copies of float32 rows to the caller's at its peak (the permuted training split, and a float64 copy, twice its size, made only for the column mean and std: dataset.py:56), where one suffices.
def test_array_dataset_peak_is_few_copies():
    before, after = _peak_mb("""
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((2_000_000, 20), dtype=np.float32))  # 160 MB
        b = rss()
        d = array_dataset(x, DataConfig(name="array", n_test=5000), "x")
        print(b, rss())
        """)
    assert after - before < 2.5 * 160, f"peak grew by {after - before:.0f} MB for 160 MB of rows"


def test_image_npy_training_split_stays_uint8(tmp_path):
    from ebmlab.data.images import _npy

    p = tmp_path / "im.npz"
    np.savez(p, x=np.random.default_rng(0).integers(0, 256, (200, 3, 8, 8), dtype=np.uint8))
    data = _npy(DataConfig(name="npy", path=str(p), n_test=20))
    assert data.train.codes.dtype == torch.uint8 and data.train.codes.shape == (180, 3, 8, 8)
    assert data.test.dtype == torch.float32 and data.test.shape[0] == 20  # only the held-out tenth is float


def test_image_folder_read_once_as_uint8(tmp_path):
    from PIL import Image

    from ebmlab.data.images import _folder

    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{i:03d}.png")
    data = _folder(DataConfig(name="imagefolder", path=str(tmp_path), n_test=4))
    assert data.train.codes.dtype == torch.uint8 and tuple(data.train.codes.shape) == (36, 3, 8, 8)


def test_energy_distance_chunks_rows(monkeypatch):
    from ebmlab.metrics.distances import energy_distance

    shapes = []
    orig = torch.cdist

    def spy(a, b, *args, **kw):
        shapes.append(a.shape[0])
        return orig(a, b, *args, **kw)
    monkeypatch.setattr(torch, "cdist", spy)
    energy_distance(torch.randn(5000, 4), torch.randn(300, 4), unbiased=True)
    assert max(shapes) <= 2048


def test_image_npy_stays_uint8_in_memory_peak():
    before, after = _peak_mb("""
        import tempfile, os
        from ebmlab.data.images import _npy
        p = os.path.join(tempfile.mkdtemp(), "im.npy")
        np.save(p, np.random.default_rng(0).integers(0, 256, (20_000, 3, 32, 32), dtype=np.uint8))  # 61 MB
        b = rss()
        d = _npy(DataConfig(name="npy", path=p, n_test=2000))
        print(b, rss())
        os.remove(p)
        """)
    assert after - before < 61 * 3.5, f"peak grew by {after - before:.0f} MB for 61 MB of uint8 images (float32: 246)"


# WAS A BUG: model.base gmm (a user's --data default) fitted its grid of mixtures on every training row: a million rows
# of 100 columns were still fitting after 6.7 minutes, before the first update.
def test_the_mixture_base_is_fitted_on_at_most_gmm_max_rows(monkeypatch):
    from sklearn.mixture import GaussianMixture

    from ebmlab.metrics import baselines

    rows = []
    real_fit = GaussianMixture.fit
    monkeypatch.setattr(GaussianMixture, "fit", lambda self, x, y=None: rows.append(len(x)) or real_fit(self, x))
    monkeypatch.setattr(baselines, "GMM_MAX_ROWS", 300)
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    fitted = baselines.fit_gmm(x, components=(1, 2), covariances=("diag",))
    assert rows == [240, 240, 300]  # the search on 80 % of the 300, the refit on all 300
    assert fitted.chosen["n_components"] in (1, 2)


# WAS A BUG (met measuring the round's fixes at 1M x 100: a 2.45 GB peak for 400 MB of rows): whitening (a user's
# --data default) made three float64 copies of the training rows for their correlation matrix.
def test_whitening_makes_no_float64_copy_of_the_rows_and_keeps_its_transform(monkeypatch):
    from ebmlab.data import dataset

    x = torch.randn(3000, 6, generator=torch.Generator().manual_seed(0)) @ torch.randn(6, 6)
    whole = dataset._standardiser(x, True, whiten=True)  # up to STATS_BLOCK values: in one piece, as always
    monkeypatch.setattr(dataset, "STATS_BLOCK", 600)
    sizes = _spy_double(monkeypatch)
    blocked = dataset._standardiser(x, True, whiten=True)
    assert max(sizes) <= 600, sizes
    for a, b in ((whole.shift, blocked.shift), (whole.scale, blocked.scale), (whole.matrix, blocked.matrix)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
