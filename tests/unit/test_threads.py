"""The default thread policy (issue 19, item 1): ``train.threads`` wins; otherwise one thread per core
that nothing else is using, at least one, at most torch's default; torch's default on a GPU."""
import torch

from ebmlab.training.loop import busy_elsewhere, choose_threads

CPU = torch.device("cpu")


def test_explicit_threads_win():
    assert choose_threads(3, "vector", CPU, load=5.0, cores=2) == 3


def test_auto_uses_the_idle_cores_only(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert choose_threads(None, "vector", CPU, load=0.0, cores=8) == 8     # idle machine: all of them
    assert choose_threads(None, "image", CPU, load=2.0, cores=8) == 6      # two busy processes
    assert choose_threads(None, "vector", CPU, load=2.0, cores=2) == 1     # a shared 2-core machine
    assert choose_threads(None, "vector", CPU, load=30.0, cores=8) == 1    # never below one
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert choose_threads(None, "vector", CPU, load=0.0, cores=8) == 2     # never above torch's default


def test_gpu_keeps_torch_default():
    assert choose_threads(None, "image", torch.device("cuda"), load=0.0, cores=4) is None


def test_busy_elsewhere_is_a_small_non_negative_count():
    assert 0.0 <= busy_elsewhere() < 1000
