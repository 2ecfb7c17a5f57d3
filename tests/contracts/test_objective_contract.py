"""Every registered method through one contract: it builds from a tiny config, one training step
gives a finite scalar loss with detached scalar metrics and finite parameter gradients, ``sample``
returns finite points of the data's shape, and the same seed gives the same loss."""
import dataclasses

import pytest
import torch

from ebmlab.data import build_dataset
from ebmlab.objectives import METHODS, build_objective
from ebmlab.training.config import load_config

# Keys that shrink a method to test size, applied only where the method's config has them.
SHRINK = {"n_steps": 3, "n_steps_data": 2, "buffer_size": 64, "K": 2, "k_steps": 2, "T": 4, "n_levels": 3,
          "num_levels": 3, "n_entropy": 8, "history": 8, "steps_per_level": 2, "langevin_steps": 2,
          "sample_steps": 2, "n_rounds": 1, "init_warmup": 0,
          "augment": "false", "multiscale": "false"}  # vector data: no image-only components
DATA = {"default": "checkerboard", "spiral": "spiral"}


def tiny_overrides(name: str) -> list[str]:
    """``--set`` overrides that shrink method ``name`` to test size on a 2-D toy."""
    fields = {f.name for f in dataclasses.fields(METHODS[name].config)}
    over = [f"method.name={name}", "model.width=16", "model.depth=1", "data.n_train=256", "data.n_test=64",
            "train.batch_size=16", f"data.name={DATA['default']}"]
    return over + [f"method.{k}={v}" for k, v in SHRINK.items() if k in fields]


def tiny_config(name: str):
    return load_config(None, tiny_overrides(name))


def _objective(name, seed=0):
    cfg = tiny_config(name)
    torch.manual_seed(seed)
    data = build_dataset(cfg.data)
    return build_objective(cfg, data), data


@pytest.mark.parametrize("name", sorted(METHODS))
def test_training_step_contract(name):
    obj, data = _objective(name)
    batch = data.train[:16]
    if data.train_labels is not None:
        batch = (batch, data.train_labels[:16])
    out = obj(batch, generator=torch.Generator().manual_seed(1))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    for k, v in out.metrics.items():
        assert torch.as_tensor(v).numel() == 1 and not torch.as_tensor(v).requires_grad, k
    out.loss.backward()
    grads = [p.grad for p in obj.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_sample_contract(name):
    obj, data = _objective(name)
    with torch.no_grad():
        x = obj.sample(5, generator=torch.Generator().manual_seed(2)).x
        x0 = obj.sample(5, n_steps=0, generator=torch.Generator().manual_seed(2)).x  # AIS refused 0 stages
    assert x.shape == x0.shape == (5, *data.shape) and torch.isfinite(x).all() and torch.isfinite(x0).all()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_steps_run_is_what_sample_runs(name):
    """``steps_run(n)`` (what `ebmlab sample` names its file by) is the number of steps ``sample(n_steps=n)``
    records, n rounded up to whole levels; it printed the requested n for papers 000, 002 and 003."""
    obj, _ = _objective(name)
    with torch.no_grad():
        info = obj.sample(3, n_steps=5, generator=torch.Generator().manual_seed(2)).info
    assert len(info["energy"]) == obj.steps_run(5) >= 5 and obj.steps_run(5) % obj.sample_levels == 0
    assert obj.steps_run(None) == obj.n_steps_default


@pytest.mark.parametrize("name", sorted(METHODS))
def test_same_seed_same_loss(name):
    losses = []
    for _ in range(2):
        obj, data = _objective(name, seed=3)
        losses.append(float(obj(data.train[:16], generator=torch.Generator().manual_seed(4)).loss.detach()))
    assert losses[0] == losses[1]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_data_energy_is_the_energy_of_the_data_distribution(name):
    """``ebmlab.load(RUN)(x)`` is ``data_energy``: the energy itself, except for paper 000, whose energy is the
    mixture over its T levels; there it is -log p(x | t = T-1), so it agrees with ``log_density`` (it gave the
    mixture: run(x) + log_density(x) was not constant)."""
    obj, data = _objective(name)
    x = data.test[:8]
    with torch.no_grad():
        e = obj.data_energy(x)
        if obj.has_log_density and METHODS[name].build.__module__.endswith(".joint_time"):
            torch.testing.assert_close(e, -obj.log_density(x))
        else:
            torch.testing.assert_close(e, obj.energy(x))
    assert e.shape == (8,)
