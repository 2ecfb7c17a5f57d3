"""Every registered method on a user's own vectors through the Python API (``ebmlab.train(method, data=array)``,
which applies the ``--data`` defaults: ``config.user_data_overrides``), then reopened without its rows
(``ebmlab.load``) and sampled from noise and from data. Two bugs the CLI contract (toy data, explicit settings) could
not see were found this way: paper 004's persistent banks with the mixture base crashed on reopening, and paper
001's image-only augmentation was on for vectors."""
import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.objectives import METHODS

TRAIN = {"steps": 2, "progress": False, "batch_size": 16, "threads": 1}


def _rows(n: int = 200) -> np.ndarray:
    g = np.random.default_rng(0)
    return np.concatenate([g.normal([3.0, -1.0], 0.4, (n // 2, 2)), g.normal([5.0, 2.0], 0.4, (n - n // 2, 2))])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_on_a_users_array_and_reopens(name, tmp_path):
    """The method's own settings, unshrunk (its sampler's step sizes must suit whitened vectors): two updates,
    then its full generation procedure from noise and from data. Selection is off only to keep the test short (a
    check draws 1000 samples, up to 5 times)."""
    ebmlab.train(name, data=_rows(), out=tmp_path / "r", train=TRAIN, evaluate=False,
                 overrides={"model.width": 16, "model.depth": 1, "train.select_every": None})
    run = ebmlab.load(tmp_path / "r")  # a fresh objective, built without the rows, then the checkpoint
    for init in ("noise", "data"):
        x = run.sample(8, init=init, seed=1)
        assert x.shape == (8, 2) and torch.isfinite(x).all(), init
    # with the chain diagnostics (paper 000's annealing returns a dict of snapshots among them: it crashed)
    x, info = run.sample(8, seed=1, return_info=True)
    assert torch.equal(x, run.sample(8, seed=1)) and isinstance(info, dict) and info
