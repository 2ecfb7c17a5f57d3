"""Nearest-neighbour novelty: are samples new images or copies of training images?

Paper 004 Sec. 4.2.4 ("Sample diversity", Fig. 7C) shows generated images next to their pixelwise
nearest neighbours in the training set; an EBM that memorises produces samples at (near) zero
distance from a training image. We measure the same thing:

- ``nn_distances(x, train)``: Euclidean (pixelwise L2) distance of each image to its nearest
  training image, over all pixels in [-1, 1];
- ``novelty_summary``: mean / median / min of the samples' NN distances, the mean and min for held-out real
  images (``..._data``: test -> train, the distance an unseen real image has), and
  ``novelty_frac_close``: the fraction of samples closer to a training image than the 5th
  percentile of the test -> train distances (about 0.05 for real unseen images; near 1 for a
  memorising model);
- ``novelty_rows``: each sample followed by its ``k`` nearest training images, one row each (the
  images of the figure; ``training/image_eval.py`` draws it, metrics do not import ``plots``).
"""
from __future__ import annotations

import torch
from torch import Tensor


TRAIN_CHUNK = 4096  # training images read at a time (100 MB of float64 at 3x32x32)


def nearest_neighbours(x: Tensor, train, k: int = 1, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """(N, k) distances (ascending) and (N, k) indices of each x's k nearest training images. ``train``: a
    (M, ...) tensor or ``data.pixels.Pixels``, read ``TRAIN_CHUNK`` images at a time, so that a large split is never
    held whole as float64 (ImageNet 32x32 with flips would take 59 GiB)."""
    if tuple(x.shape[1:]) != tuple(train.shape[1:]):
        raise ValueError(f"samples {tuple(x.shape[1:])} and training images {tuple(train.shape[1:])} differ in shape")
    a = x.detach().flatten(1).double().cpu()               # (N, D)
    _check_finite(a)
    n, k = a.shape[0], min(k, train.shape[0])
    best = torch.full((n, k), float("inf"), dtype=torch.float64)  # (N, k) |a-b|^2 - |a|^2 of the best so far
    best_j = torch.zeros((n, k), dtype=torch.long)
    for j0 in range(0, train.shape[0], TRAIN_CHUNK):
        b = _read(train[j0:j0 + TRAIN_CHUNK])              # (c, D)
        b_sq = b.pow(2).sum(1)                             # (c,)
        for i in range(0, n, chunk):
            d2 = b_sq[None] - 2 * a[i:i + chunk] @ b.T     # (n, c): fast search by matmul
            v, j = d2.topk(min(k, b.shape[0]), dim=1, largest=False)
            cand, cand_j = torch.cat([best[i:i + chunk], v], 1), torch.cat([best_j[i:i + chunk], j + j0], 1)
            top = cand.topk(k, dim=1, largest=False).indices
            best[i:i + chunk], best_j[i:i + chunk] = cand.gather(1, top), cand_j.gather(1, top)
    dists, idxs = [], []
    for i in range(0, n, chunk):  # exact distances of the chosen neighbours (the matmul form loses the exact 0 of a copy)
        j = best_j[i:i + chunk]                            # (n, k)
        v = (a[i:i + chunk, None, :] - _read(train[j.flatten()]).view(*j.shape, -1)).norm(dim=2)  # (n, k)
        v, order = v.sort(dim=1)
        dists.append(v), idxs.append(j.gather(1, order))
    return torch.cat(dists), torch.cat(idxs)


def _read(rows: Tensor) -> Tensor:
    """Training images (c, ...) -> (c, D) float64 on the CPU, refused when not finite."""
    b = rows.detach().flatten(1).double().cpu()
    _check_finite(b)
    return b


def _check_finite(v: Tensor) -> None:
    if not torch.isfinite(v).all():
        raise FloatingPointError("novelty: images contain NaN or inf")


def nn_distances(x: Tensor, train) -> Tensor:
    """(N,) distance of each image to its nearest training image."""
    return nearest_neighbours(x, train, k=1)[0][:, 0]


def novelty_summary(samples: Tensor, train, test: Tensor, q: float = 0.05) -> dict[str, float]:
    """Samples' NN distances to ``train`` beside held-out data's (see module doc)."""
    d_s, d_t = nn_distances(samples, train), nn_distances(test, train)
    thresh = torch.quantile(d_t, q)
    return {"novelty_nn_mean": float(d_s.mean()), "novelty_nn_median": float(d_s.median()),
            "novelty_nn_min": float(d_s.min()),
            "novelty_nn_mean_data": float(d_t.mean()), "novelty_nn_min_data": float(d_t.min()),
            "novelty_frac_close": float((d_s < thresh).double().mean()),
            "novelty_close_threshold": float(thresh)}


def novelty_rows(samples: Tensor, train, k: int = 3, n: int = 10) -> Tensor:
    """(n * (1 + k), C, H, W): ``n`` rows of [sample, its k nearest training images] (paper 004
    Fig. 7C layout), to draw as an image grid with ``1 + k`` columns."""
    s = samples[:n]
    _, idx = nearest_neighbours(s, train, k=k)          # (n, k)
    rows = [torch.cat([s[i:i + 1].cpu(), train[idx[i]].cpu()]) for i in range(s.shape[0])]  # (1 + k, C, H, W)
    return torch.cat(rows)
