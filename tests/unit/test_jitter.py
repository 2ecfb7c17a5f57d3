"""``data.jitter``: Gaussian noise of that std on every training example as it is drawn (training/loop.py):
the batch is the same rows plus noise of the right scale, fresh at every draw, and without it nothing changes."""
import pytest
import torch

from ebmlab.config import ConfigError
from ebmlab.training.config import load_config
from ebmlab.training.loop import Trainer

SMALL = ["data.name=mixture", "data.n_train=500", "data.n_test=50", "model.width=8", "model.depth=1",
         "train.batch_size=64", "train.progress=false"]


def _batches(tmp_path, extra, k=2):
    trainer = Trainer(load_config("default", SMALL + extra), tmp_path / "run")
    return trainer, [trainer.next_batch() for _ in range(k)]


def test_jitter_adds_fresh_noise_of_its_std_to_the_same_rows(tmp_path):
    _, plain = _batches(tmp_path / "a", [])
    trainer, noisy = _batches(tmp_path / "b", ["data.jitter=0.5"])
    d = noisy[0] - plain[0]  # the same rows (the indices come first from the same generator)
    assert 0.4 < float(d.std()) < 0.6 and abs(float(d.mean())) < 0.1
    assert not torch.allclose(noisy[1] - plain[1], d)  # fresh at every draw
    _, again = _batches(tmp_path / "c", [])
    assert torch.equal(again[0], plain[0])  # without jitter: the batches of before


def test_jitter_must_be_positive_and_is_out_of_older_hashes():
    with pytest.raises(ConfigError, match="jitter"):
        load_config("default", ["data.jitter=0"])
    assert load_config("default", ["data.jitter=null"]).hash() == load_config("default").hash()
