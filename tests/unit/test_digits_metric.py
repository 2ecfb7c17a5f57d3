"""Digits feature distance (metrics/digits.py) and the image evaluation wiring (training/image_eval.py)."""
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ebmlab.objectives.base import SampleOutput
import torch.nn.functional as F
from torch import nn

from ebmlab.metrics import digits as D


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    """The default classifier, trained once into a temporary cache for this module."""
    old = os.environ.get("EBMLAB_CACHE")
    os.environ["EBMLAB_CACHE"] = str(tmp_path_factory.mktemp("ebmlab_cache"))
    D._LOADED.clear()
    try:
        yield D.get_classifier()
    finally:
        D._LOADED.clear()
        if old is None:
            os.environ.pop("EBMLAB_CACHE")
        else:
            os.environ["EBMLAB_CACHE"] = old


def test_classifier_reaches_its_stated_test_accuracy(clf):
    _, _, xte, yte = D.digits_split()
    assert xte.shape == (297, 1, 8, 8)
    assert clf.accuracy(xte, yte) >= 0.96  # measured 0.976 (290 / 297) with the default settings


def test_split_agrees_with_the_digits_dataset():
    images = pytest.importorskip("ebmlab.data.images")
    from ebmlab.training.config import DataConfig
    data = images.IMAGE_LOADERS["digits"](DataConfig(name="digits"))
    xtr, ytr, xte, yte = D.digits_split()
    assert torch.equal(data.train, xtr) and torch.equal(data.test, xte)
    assert torch.equal(data.train_labels, ytr) and torch.equal(data.test_labels, yte)


def test_cached_file_reloads_to_the_same_network(clf):
    files = list(D.cache_dir().glob("digits_classifier_*.safetensors"))
    assert len(files) == 1 and D.DigitsClassifierConfig().key() in files[0].name
    D._LOADED.clear()
    again = D.get_classifier()
    assert again is not clf
    x = D.digits_split()[2][:50]
    assert torch.equal(again.logits(x), clf.logits(x))


def test_training_is_deterministic():
    cfg = D.DigitsClassifierConfig(epochs=1, width=8, feat_dim=16)
    a, b = D._train(cfg), D._train(cfg)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


def test_floor_is_much_smaller_than_the_noise_ceiling(clf):
    xtr, _, xte, _ = D.digits_split()
    m = D.digits_metrics(xtr, torch.Generator().manual_seed(0), clf=clf)
    assert m["digits_fd"] == m["digits_fd_floor"]  # samples = the training split
    assert m["digits_fd_floor"] < m["digits_fd_noise"] / 20  # measured ratio ~60
    assert m["digits_confidence_data"] > 0.9 and m["digits_class_entropy_data"] > 2.2  # ln 10 = 2.30
    one_class = xtr[D.digits_split()[1] == 3]
    m1 = D.digits_metrics(one_class, torch.Generator().manual_seed(0), clf=clf)
    assert m1["digits_class_entropy"] < 0.3 and m1["digits_is"] < 1.5 < m["digits_is"]
    assert m1["digits_fd"] > 3 * m["digits_fd_floor"]


def test_resized_digits_are_scored_at_the_native_size(clf):
    _, _, xte, yte = D.digits_split()
    big = F.interpolate(xte, size=(16, 16), mode="bilinear", align_corners=False)
    labels, probs = clf.classify(big.repeat(1, 3, 1, 1))  # RGB is averaged to grey
    assert labels.shape == (297,) and probs.shape == (297, 10)
    assert float((labels == yte).double().mean()) > 0.9
    with pytest.raises(FloatingPointError):
        clf.features(torch.full((2, 1, 8, 8), float("nan")))


class _FakeObjective(nn.Module):
    """Samples = training digits + small noise; energy = squared distance to the mean training image."""

    def __init__(self, pool):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.pool = pool
        self.mean = pool.mean(0)

    def sample(self, n, *, generator=None, n_steps=None, x0=None, cond=None):
        idx = torch.randint(len(self.pool), (n,), generator=generator)
        x = self.pool[idx] + 0.05 * torch.randn(self.pool[idx].shape, generator=generator)
        return SampleOutput(x, {})

    def score(self, x):
        return (x - self.mean).flatten(1).pow(2).sum(1) + self.w


def _digits_data():
    from ebmlab.data.dataset import Dataset
    xtr, ytr, xte, yte = D.digits_split()
    return Dataset("digits", "image", xtr, xte, train_labels=ytr, test_labels=yte, num_classes=10)


def test_image_evaluation_writes_metrics_grid_and_samples(clf, tmp_path):
    from ebmlab.training.evaluate import evaluate
    data = _digits_data()
    cfg = SimpleNamespace(eval=SimpleNamespace(n_samples=300, digits_fd=True, plots=True),
                          train=SimpleNamespace(seed=0, batch_size=128, progress=False, ema=0.999))
    m = evaluate(_FakeObjective(data.train), data, cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for k in ("digits_fd", "digits_fd_floor", "digits_fd_noise", "digits_confidence", "novelty_frac_close"):
        assert k in saved
    assert m["digits_fd"] < m["digits_fd_noise"] / 4
    assert m["novelty_frac_close"] > 0.5  # near-copies of training images are flagged
    assert 0 < m["sample_out_of_range"] < 0.5
    for f in ("samples/grid_final.png", "samples/samples.npy", "plots/energy_hist.png", "plots/novelty.png"):
        assert (tmp_path / f).is_file(), f


def test_grid_hook_and_eval_extensions(clf, tmp_path):
    from ebmlab.training import image_eval
    data = _digits_data()
    cfg = SimpleNamespace(eval=SimpleNamespace(n_samples=100, digits_fd=False, plots=False),
                          train=SimpleNamespace(seed=0, batch_size=64, progress=False, ema=None))
    trainer = SimpleNamespace(data=data, run_dir=tmp_path, step=250, objective=_FakeObjective(data.train),
                              cfg=cfg, device=torch.device("cpu"), ema=None, is_main=True)
    image_eval.grid_hook(trainer)
    assert (tmp_path / "samples" / "grid_step000250.png").is_file()
    args = SimpleNamespace(run=str(tmp_path), ood=["noise", "digits_negative"], fid=False,
                           inception_weights=None, digits_fd=True)
    out = {}
    for fn in (image_eval.fid_extension, image_eval.digits_extension, image_eval.ood_extension):
        out.update(fn(args, cfg, trainer.objective, data))
    assert out["digits_fd"] < out["digits_fd_noise"] / 4
    assert out["ood_auroc_noise"] > 0.95  # noise is far from the mean digit
    assert "ood_auroc_digits_negative" in out
    args.fid, args.inception_weights = True, str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="--inception-weights"):
        image_eval.fid_extension(args, cfg, trainer.objective, data)


def test_vector_ood_shift_and_scale():
    from ebmlab.data.dataset import Dataset
    from ebmlab.training import image_eval
    g = torch.Generator().manual_seed(0)
    data = Dataset("rings", "vector", torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g))
    obj = _FakeObjective(data.train)
    args = SimpleNamespace(ood=["shifted", "scaled"])
    cfg = SimpleNamespace(train=SimpleNamespace(seed=0))
    out = image_eval.ood_extension(args, cfg, obj, data)
    assert out["ood_auroc_shifted"] > 0.6 and out["ood_auroc_scaled"] > 0.55
    with pytest.raises(ValueError, match="shifted"):
        image_eval.ood_extension(SimpleNamespace(ood=["nonsense"]), cfg, obj, data)


def test_a_cache_that_cannot_be_written_warns_and_the_classifier_is_used_from_memory(tmp_path, monkeypatch):
    """A read-only home or a full disk must not fail the evaluation after training (it did: 'operating-system error
    on ~/.cache/ebmlab', exit 2, no metrics.json): the classifier is used from memory, with a warning."""
    import errno
    import safetensors.torch

    cfg = D.DigitsClassifierConfig(epochs=1, width=8, feat_dim=16)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EBMLAB_CACHE", str(blocker / "cache"))  # mkdir fails, even as root
    monkeypatch.setattr(D, "_LOADED", {})
    with pytest.warns(RuntimeWarning, match="could not cache the digits classifier .*set EBMLAB_CACHE"):
        clf = D.get_classifier(cfg)
    assert clf.classify(D.digits_split()[2][:5])[0].shape == (5,)

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setenv("EBMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(D, "_LOADED", {})
    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.warns(RuntimeWarning, match="No space left on device"):
        D.get_classifier(cfg)
    assert list((tmp_path / "cache").iterdir()) == []  # the half-written file is gone


def test_the_cache_folder_follows_the_environment_and_needs_no_home(tmp_path, monkeypatch):
    """$EBMLAB_CACHE, then $XDG_CACHE_HOME/ebmlab, then ~/.cache/ebmlab; a process with no home (a container's
    arbitrary user: no $HOME, no password entry) caches in the temporary folder, not in a folder named "~"."""
    import tempfile

    monkeypatch.setenv("EBMLAB_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("EBMLAB_CACHE")
    assert D.cache_dir() == tmp_path / "xdg" / "ebmlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.cache_dir() == tmp_path / "home" / ".cache" / "ebmlab"
    monkeypatch.delenv("HOME")
    monkeypatch.setattr(os.path, "expanduser", lambda p: p)  # what it does with no home: "~" stays "~"
    assert D.cache_dir() == Path(tempfile.gettempdir()) / "ebmlab-cache"


def test_one_split_of_the_run_without_the_other_is_refused():
    """``train`` alone (or ``test`` alone) was silently replaced, with the other, by the module's own split."""
    x = torch.zeros(4, 1, 8, 8)
    for kw in ({"train": x}, {"test": x}):
        with pytest.raises(ValueError, match="both train and test"):
            D.digits_metrics(x, **kw)
