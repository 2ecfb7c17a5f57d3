"""``--init data`` / ``run.sample(init="data")`` start points (``training/drawing.data_starts``)."""
import torch

from ebmlab.training.drawing import data_starts


def test_starts_are_distinct_rows_up_to_the_held_out_count_then_balanced_rounds():
    """They were drawn with replacement: 100 starts from 400 held-out rows repeated some (found by an audit)."""
    test = torch.arange(400.0).view(400, 1)
    x = data_starts(test, 100, seed=3, device="cpu")
    assert x.shape == (100, 1) and x.unique().numel() == 100
    assert torch.equal(x, data_starts(test, 100, seed=3, device="cpu"))
    assert not torch.equal(x, data_starts(test, 100, seed=4, device="cpu"))
    counts = torch.bincount(data_starts(test, 1000, seed=0, device="cpu").view(-1).long(), minlength=400)
    assert counts.min() == 2 and counts.max() == 3  # two whole rounds and 200 rows of a third
