"""Digits feature distance: an in-house, CPU-sized stand-in for FID / Inception Score on the 8x8
scikit-learn digits (issue 3), so that every method can be scored without downloading anything.

A small CNN classifier is trained deterministically (fixed seed, fixed epochs, one CPU thread) on the
digits *training split* and cached as safetensors. Its penultimate features (``feat_dim``-d) give a
Frechet distance (``metrics/fid.py``, as FID uses Inception's pool features: Heusel et al. 2017 Eq. 6)
and its logits give classifier scores (analogues of the Inception Score, Salimans et al. 2016):

- ``digits_fd``: FD(samples, test split);
- ``digits_fd_floor``: FD(train split, test split), what real unseen digits score (the floor);
- ``digits_fd_noise``: FD(uniform noise in [-1, 1], test split), a ceiling (same shape and count
  as the samples);
- ``digits_confidence``: mean max-probability of the classifier on the samples (real test digits:
  ``digits_confidence_data``);
- ``digits_class_entropy``: entropy (nats) of the histogram of predicted classes; ln 10 = 2.303 when
  all ten digits are equally frequent, 0 when every sample is the same digit;
- ``digits_is``: exp(E KL(p(y|x) || p(y))), the Inception Score formula with this classifier (max 10).

Split (agrees with ``data/images.py``): scikit-learn's 1,797 images scaled v / 8 - 1 to [-1, 1],
permuted with ``torch.randperm`` seeded 1234 (``DataConfig.seed``'s default); the first 1,500 are the
training split, the other 297 the test split. A run with another ``data.seed`` has another test
split, part of which the classifier saw in training; the metric's classifier stays the same.

Sizes. The classifier's native size is ``size`` (default 8, the digits' own); inputs of any other
size are resized to it bilinearly (antialiased when shrinking, as ``data/images.py`` resizes). Three
channels are averaged to one.

Cache: ``$EBMLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/ebmlab``, else ``~/.cache/ebmlab`` (without a home,
as for a container's arbitrary user: ``ebmlab-cache`` in the temporary folder); the file name holds a hash of every
training setting (size included), so changing a setting retrains.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebmlab.metrics.fid import frechet_distance

N_TRAIN = 1500
SPLIT_SEED = 1234


@dataclass(frozen=True)
class DigitsClassifierConfig:
    """Architecture and training settings of the digits classifier; its ``key`` names the cached weights."""
    size: int = 8            # native input side length
    width: int = 16          # conv channels
    feat_dim: int = 64       # penultimate features (the FD space)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 5e-3
    weight_decay: float = 1e-4
    seed: int = 0
    version: int = 1         # bump when the architecture or training code changes

    def key(self) -> str:
        """12 hex digits identifying these settings (the cache file name)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


class DigitsNet(nn.Module):
    """(B, 1, s, s) in [-1, 1] -> features (B, feat_dim) -> logits (B, 10)."""

    def __init__(self, cfg: DigitsClassifierConfig):
        super().__init__()
        w = cfg.width
        self.conv1 = nn.Conv2d(1, w, 3, padding=1)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * w, 2 * w, 3, padding=1)
        self.fc = nn.Linear(2 * w * 16, cfg.feat_dim)
        self.head = nn.Linear(cfg.feat_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        """(B, feat_dim) penultimate features (the space of the digits feature distance)."""
        h = F.relu(self.conv2(F.relu(self.conv1(x))))          # (B, 2w, s, s)
        h = F.relu(self.conv3(F.adaptive_avg_pool2d(h, 4)))    # (B, 2w, 4, 4): any s >= 4
        return F.relu(self.fc(h.flatten(1)))                   # (B, feat_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 10) class logits of images ``x`` (B, 1, s, s) in [-1, 1]."""
        return self.head(self.features(x))


def digits_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train (1500, 1, 8, 8), y_train, x_test (297, 1, 8, 8), y_test), images in [-1, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32))[:, None] / 8.0 - 1.0  # values 0..16 -> [-1, 1]
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(SPLIT_SEED))
    tr, te = perm[:N_TRAIN], perm[N_TRAIN:]
    return x[tr], y[tr], x[te], y[te]


def to_native(images: Tensor, size: int) -> Tensor:
    """(B, 1|3, H, W) in [-1, 1] -> (B, 1, size, size) float32 (grey = channel mean)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"digits metric expects images (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise FloatingPointError("images given to the digits metric contain NaN or inf")
    x = images.detach().float().cpu().mean(1, keepdim=True)
    if tuple(x.shape[-2:]) != (size, size):
        shrink = size < min(x.shape[-2:])
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return x


def cache_dir() -> Path:
    """Where the trained digits classifier is cached: ``$EBMLAB_CACHE``, else ``$XDG_CACHE_HOME/ebmlab`` or
    ``~/.cache/ebmlab``; with no home (no ``$HOME`` and no password entry: ``Path.home()`` raises on Python 3.12+
    and gives a folder named "~" in the working directory before), ``ebmlab-cache`` in the temporary folder."""
    if os.environ.get("EBMLAB_CACHE"):
        return Path(os.environ["EBMLAB_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "ebmlab"
    home = os.path.expanduser("~")  # (returns "~" itself when there is no home)
    if home == "~":
        return Path(tempfile.gettempdir()) / "ebmlab-cache"
    return Path(home) / ".cache" / "ebmlab"


def _train(cfg: DigitsClassifierConfig) -> DigitsNet:
    """Deterministic training on the digits training split: seeded init and batches, one thread."""
    xtr, ytr, _, _ = digits_split()
    xtr = to_native(xtr, cfg.size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise reproducible on one machine
    try:
        # Trained on first use, often from inside evaluation's torch.no_grad() (or inference_mode):
        # gradients are switched back on here, where they are needed.
        with torch.inference_mode(False), torch.enable_grad():
            with torch.random.fork_rng(devices=[]):  # leaves the caller's global RNG untouched
                torch.manual_seed(cfg.seed)
                net = DigitsNet(cfg)
            _fit(net, xtr, ytr, cfg)
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def _fit(net: DigitsNet, x: Tensor, y: Tensor, cfg: DigitsClassifierConfig) -> None:
    g = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(x.shape[0] / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    if not math.isfinite(loss.item()):
        raise FloatingPointError("digits classifier training diverged (non-finite loss)")


_LOADED: dict[str, "DigitsClassifier"] = {}


class DigitsClassifier:
    """The trained (or cached) classifier with feature, logit and score helpers."""

    def __init__(self, net: DigitsNet, cfg: DigitsClassifierConfig):
        self.net, self.cfg = net.eval(), cfg

    @torch.no_grad()
    def _apply(self, fn, images: Tensor, batch_size: int = 1024) -> Tensor:
        x = to_native(images, self.cfg.size)
        return torch.cat([fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])

    def features(self, images: Tensor) -> Tensor:
        """(N, feat_dim) penultimate features."""
        return self._apply(self.net.features, images)

    def logits(self, images: Tensor) -> Tensor:
        """(N, 10) logits."""
        return self._apply(self.net, images)

    def classify(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(labels (N,) long, probabilities (N, 10))."""
        probs = torch.softmax(self.logits(images).double(), 1)
        return probs.argmax(1), probs

    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        """Fraction of ``images`` classified as their ``labels``."""
        return float((self.classify(images)[0] == labels.cpu()).double().mean())


def get_classifier(cfg: DigitsClassifierConfig | None = None) -> DigitsClassifier:
    """Load the classifier from the cache, training and caching it first when absent."""
    from safetensors.torch import load_file

    cfg = cfg or DigitsClassifierConfig()
    path = cache_dir() / f"digits_classifier_{cfg.key()}.safetensors"
    if str(path) in _LOADED:
        return _LOADED[str(path)]
    net = DigitsNet(cfg)
    if path.is_file():
        net.load_state_dict(load_file(str(path)))
    else:
        net = _train(cfg)
        _store(net, cfg, path)
    _LOADED[str(path)] = clf = DigitsClassifier(net, cfg)
    return clf


def _store(net: DigitsNet, cfg: DigitsClassifierConfig, path: Path) -> None:
    """Cache the trained classifier at ``path``, atomically (a concurrent reader sees the whole file or none). A
    cache that cannot be written (read-only home, full disk) costs a retraining in the next process, not the
    evaluation that needs the classifier now: a warning, and the classifier is used from memory."""
    from safetensors.torch import save_file

    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp),
                  metadata={"settings": json.dumps(asdict(cfg))})
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # a half-written file on a full disk (no folder: nothing to remove)
            tmp.unlink(missing_ok=True)
        warnings.warn(f"could not cache the digits classifier in {str(path.parent)!r} ({exc.strerror or exc}); it is "
                      "used from memory and trained again next time: set EBMLAB_CACHE to a writable folder",
                      RuntimeWarning, stacklevel=2)


def classify(images: Tensor) -> tuple[Tensor, Tensor]:
    """Labels (N,) and class probabilities (N, 10) of digit images (N, C, H, W) in [-1, 1]."""
    return get_classifier().classify(images)


def class_scores(clf: DigitsClassifier, images: Tensor) -> dict[str, float]:
    """Mean max-probability, entropy of the predicted-class histogram, and the IS formula."""
    labels, probs = clf.classify(images)                              # (N,), (N, 10)
    hist = torch.bincount(labels, minlength=10).double() / labels.numel()
    nz = hist[hist > 0]
    marg = probs.mean(0).clamp_min(1e-300)                            # (10,) p(y)
    kl = (probs * (probs.clamp_min(1e-300).log() - marg.log())).sum(1)  # (N,)
    return {"confidence": float(probs.max(1).values.mean()),
            "class_entropy": float(-(nz * nz.log()).sum()),
            "is": float(kl.mean().exp())}


def digits_metrics(samples: Tensor, generator: torch.Generator | None = None,
                   train: Tensor | None = None, test: Tensor | None = None,
                   clf: DigitsClassifier | None = None) -> dict[str, float]:
    """digits_fd (+ floor and noise ceiling) and classifier scores for samples (N, C, H, W) in [-1, 1].

    ``train``/``test``: the run's own splits in [-1, 1] (e.g. resized to 16x16), so that the floor
    goes through the same resizing as the samples; default: this module's 8x8 split. The noise
    ceiling is uniform noise of the samples' shape and count."""
    if (train is None) != (test is None):  # one split of the run and one of the module's would not compare
        raise ValueError("digits_metrics takes both train and test (the run's splits) or neither")
    clf = clf or get_classifier()
    if train is None:
        train, _, test, _ = digits_split()
    f_test = clf.features(test)
    noise = torch.rand(samples.shape, generator=generator) * 2 - 1
    out = {"digits_fd": frechet_distance(clf.features(samples), f_test),
           "digits_fd_floor": frechet_distance(clf.features(train), f_test),
           "digits_fd_noise": frechet_distance(clf.features(noise), f_test)}
    out.update({f"digits_{k}": v for k, v in class_scores(clf, samples).items()})
    out.update({f"digits_{k}_data": v for k, v in class_scores(clf, test).items()})
    _, _, xte, yte = digits_split()
    out["digits_classifier_test_accuracy"] = clf.accuracy(xte, yte)
    return out
