"""Every registered method on a user's own vectors through the Python API (``ebmlab.train(method, data=array)``,
which applies the ``--data`` defaults: ``config.user_data_overrides``), then reopened without its rows
(``ebmlab.load``) and sampled from noise and from data. Two bugs the CLI contract (toy data, explicit settings) could
not see were found this way: paper 004's persistent banks with the mixture base crashed on reopening, and paper
001's image-only augmentation was on for vectors."""
import dataclasses

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.objectives import METHODS
from tests.contracts.test_objective_contract import SHRINK

TRAIN = {"steps": 2, "progress": False, "batch_size": 16, "threads": 1}


def _rows(n: int = 200) -> np.ndarray:
    g = np.random.default_rng(0)
    return np.concatenate([g.normal([3.0, -1.0], 0.4, (n // 2, 2)), g.normal([5.0, 2.0], 0.4, (n - n // 2, 2))])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_on_a_users_array_and_reopens(name, tmp_path):
    fields = {f.name for f in dataclasses.fields(METHODS[name].config)}
    # the method's own lengths shrunk (SHRINK's image switches left out: the --data defaults must set them)
    shrink = {f"method.{k}": v for k, v in SHRINK.items() if k in fields and k not in ("augment", "multiscale")}
    ebmlab.train(name, data=_rows(), out=tmp_path / "r", train=TRAIN, evaluate=False,
                 overrides={"model.width": 16, "model.depth": 1, **shrink})
    run = ebmlab.load(tmp_path / "r")  # a fresh objective, built without the rows, then the checkpoint
    for init in ("noise", "data"):
        x = run.sample(8, steps=2, init=init, seed=1)
        assert x.shape == (8, 2) and torch.isfinite(x).all(), init
