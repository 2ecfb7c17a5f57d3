"""Known answers for what a user does after training (a mutation check, docs/testing.md, seventh round): drawing
in batches, from held-out rows, for a class and with guidance (``training/drawing.py``); ``Run``'s energies,
log-densities and samples in data coordinates (``api.py``, ``data/base.py``'s ``Affine``); the held-out scores
of ``training/heldout.py`` and ``training/evaluate.py``; the grid and structure metrics; the synthetic OOD image
sets (``data/image_ood.py``).

No training: the objectives are small stand-ins whose samples and densities have closed forms (an exact N(0, I)
in model coordinates, chains that move their start by a known amount), so every expected value is written down.
"""
import math
from types import SimpleNamespace

import pytest
import torch

from ebmlab.data.base import Affine, Dataset
from ebmlab.training.config import load_config
from tests.builders import GaussianStandIn  # (an exact N(0, I) whose chains move by known amounts)


def _expected_draw(sizes, seed, x0=None, y=None, steps=2, dim=2):
    """What ``draw`` must return for batches of ``sizes``: the batches in order, one generator threaded through."""
    g = torch.Generator().manual_seed(seed)
    out, i = [], 0
    for b in sizes:
        start = torch.randn(b, dim, generator=g) if x0 is None else x0[i:i + b]
        x = start + steps * torch.rand(b, 1, generator=g)
        if y is not None:
            x = x + 10 * y[i:i + b].float()[:, None]
        out.append(x)
        i += b
    return torch.cat(out)


# ----- drawing (training/drawing.py) ------------------------------------------------------------------------
def test_batches_are_the_chains_of_their_own_rows_in_order_with_one_generator_threaded_through():
    """n = 7 in batches of 3: 3 + 3 + 1 chains, each batch from its own slice of x0 and of the labels, in order,
    the generator advanced from batch to batch (not restarted: batches would repeat each other)."""
    from ebmlab.training.drawing import draw
    obj = GaussianStandIn(num_classes=3)
    x0 = torch.arange(14.0).view(7, 2) * 100
    y = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    got = draw(obj, 7, torch.Generator().manual_seed(5), x0=x0, cond={"y": y}, batch_size=3).x
    assert torch.equal(got, _expected_draw([3, 3, 1], 5, x0=x0, y=y))
    assert [c["n"] for c in obj.calls] == [3, 3, 1]
    # from the prior, and one class for all: no two batches alike, the class's shift in every row
    got = draw(obj, 5, torch.Generator().manual_seed(6), label=2, batch_size=2).x
    assert torch.equal(got, _expected_draw([2, 2, 1], 6, y=torch.full((5,), 2)))
    assert torch.equal(draw(obj, 5, torch.Generator().manual_seed(6), label=2).x, _expected_draw([5], 6, y=torch.full((5,), 2)))


def test_guidance_reaches_guided_sample_unchanged_for_every_batch(monkeypatch):
    """``guidance=w`` is paper 003's w of Eq. 11-12 in every batch (not w - 1), with the class's labels."""
    import ebmlab.applications.guidance as guidance
    from ebmlab.training.drawing import draw
    seen = []

    def fake(objective, labels, w, *, generator=None, n_steps=None):
        seen.append((labels.tolist(), w, n_steps))
        return torch.zeros(labels.shape[0], 2)
    monkeypatch.setattr(guidance, "guided_sample", fake)
    out = draw(GaussianStandIn(num_classes=3), 5, torch.Generator().manual_seed(0), label=1, guidance=2.5, steps=4, batch_size=2)
    assert out.x.shape == (5, 2)
    assert seen == [([1, 1], 2.5, 4), ([1, 1], 2.5, 4), ([1], 2.5, 4)]


# ----- Run in data coordinates (api.py, data/base.py) -------------------------------------------------------
def _correlated(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 2, generator=g)
    return a @ torch.tensor([[2.0, 0.7], [0.0, 0.3]]) + torch.tensor([5.0, -3.0])


def _run(objective, transform, data=None, kind="vector", shape=(2,)):
    """A ``Run`` over ``objective`` and ``transform`` without a run directory (the attributes ``Run.__init__`` sets
    from a checkpoint)."""
    from ebmlab.api import Run
    from ebmlab.training.run import DataSpaceEnergy
    run = Run.__new__(Run)
    run.path, run.config, run.objective, run.transform = None, None, objective, transform
    run.kind, run.shape, run._data = kind, tuple(shape), data
    run.checkpoint, run.checkpoint_step = None, 0
    run.energy = DataSpaceEnergy(objective.data_energy, transform).eval()
    return run


def _transform(whiten):
    """The standardiser (and whitening) of correlated rows, and A = diag(scale) W^-1: x = shift + A z."""
    from ebmlab.data.dataset import _standardiser
    tf = _standardiser(_correlated(), True, whiten)
    a = torch.diag(tf.scale.double()) @ (tf.inverse.double() if whiten else torch.eye(2, dtype=torch.float64))
    return tf, a


@pytest.mark.parametrize("whiten", [False, True])
def test_run_log_density_is_the_exact_density_of_the_data_coordinates(whiten):
    """A model density N(0, I) in model coordinates z = W (x - shift) / scale is, in data coordinates, the
    Gaussian N(shift, A A^T) with A = diag(scale) W^-1: ``run.log_density`` must be its normalised log-density
    (the transform's log|det| included with its sign, whitening's log|det W| too); ``to_data`` maps e_i to
    shift + A e_i."""
    tf, a = _transform(whiten)
    law = torch.distributions.MultivariateNormal(tf.shift.double(), scale_tril=torch.linalg.cholesky(a @ a.T))
    x = _correlated(20, seed=1) + torch.tensor([0.5, -0.2])
    assert torch.allclose(_run(GaussianStandIn(num_classes=3), tf).log_density(x).double(), law.log_prob(x.double()), atol=1e-4)
    assert torch.allclose(tf.to_data(tf.to_model(x)), x, atol=1e-4)
    assert torch.allclose(tf.to_data(torch.eye(2)).double(), (a.T + tf.shift.double()), atol=1e-4)


@pytest.mark.parametrize("whiten", [False, True])
def test_run_energy_maps_data_coordinates_to_model_coordinates_once(whiten):
    """``run(x)`` of the energy |z|^2 / 2 is |A^-1 (x - shift)|^2 / 2 (a Mahalanobis distance by hand)."""
    tf, a = _transform(whiten)
    x = _correlated(20, seed=1) + torch.tensor([0.5, -0.2])
    maha = torch.linalg.solve(a, (x.double() - tf.shift.double()).T).T.pow(2).sum(1)
    assert torch.allclose(_run(GaussianStandIn(num_classes=3), tf)(x).double(), 0.5 * maha, atol=1e-4)


def test_run_samples_from_data_start_at_held_out_rows_and_come_back_in_data_coordinates():
    """``init="data"`` with 0 steps returns held-out rows (data coordinates), each once, never a training row;
    start points given in data coordinates come back unchanged after 0 steps and moved by exactly the chain's
    shift (times scale: the map back to data coordinates) after 1."""
    tf = Affine(torch.tensor([5.0, -3.0]), torch.tensor([2.0, 0.5]))
    train, test = torch.arange(0.0, 40.0).view(20, 2), torch.arange(100.0, 124.0).view(12, 2)
    data = Dataset("t", "vector", train, test, transform=tf)
    run = _run(GaussianStandIn(num_classes=3), tf, data=data)
    rows = {tuple(r) for r in tf.to_data(test).tolist()}
    got = [tuple(r) for r in run.sample(12, steps=0, init="data").tolist()]
    assert len(set(got)) == 12 and set(got) == rows
    starts = torch.tensor([[1.0, 2.0], [3.0, 4.0], [-1.0, 0.0]])
    assert torch.allclose(run.sample(3, steps=0, init=starts), starts, atol=1e-5)
    g = torch.Generator().manual_seed(9)
    u = torch.rand(3, 1, generator=g)
    assert torch.allclose(run.sample(3, steps=1, init=starts, seed=9), starts + u * tf.scale, atol=1e-5)


def test_uint8_images_are_read_as_the_image_loaders_read_them():
    """``run(x)`` of uint8 images: 0 -> -1 and 255 -> 1, so the energy |z|^2 / 2 of four such pixels is 2."""
    img = GaussianStandIn((1, 2, 2))
    run = _run(img, Affine.identity(), kind="image", shape=(1, 2, 2))
    x = torch.tensor([[0, 255, 0, 255]], dtype=torch.uint8).view(1, 1, 2, 2)
    assert run(x).tolist() == [2.0]
    assert run(x.numpy()).tolist() == [2.0]


# ----- held-out scores (training/heldout.py, training/evaluate.py) ------------------------------------------
def _table(seed=0):
    g = torch.Generator().manual_seed(seed)
    tf = Affine(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.2, 1.5]))
    return Dataset("t", "vector", torch.randn(60, 3, generator=g), torch.randn(40, 3, generator=g) + 0.3,
                   transform=tf)


def test_the_training_reference_replays_the_training_rows_and_each_draw_has_its_own_seed():
    """``..._heldout_train`` with n >= the training rows is the distance of every training row from the held-out
    rows (an energy distance ignores order); ``heldout_draws``' k-th value is the draw of seed + k."""
    from ebmlab.metrics.distances import energy_distance
    from ebmlab.training.heldout import heldout_draws, heldout_energy_distance, zscorer
    data, obj = _table(), GaussianStandIn((3,))
    z = zscorer(data)
    got = heldout_energy_distance(obj, data, 100, torch.Generator().manual_seed(1))
    assert got["sample_energy_distance_heldout_train"] == pytest.approx(
        energy_distance(z(data.train), z(data.test), unbiased=True), rel=1e-9)
    res = heldout_draws(obj, data, 30, 3, seed=5)
    each = [heldout_energy_distance(obj, data, 30, torch.Generator().manual_seed(5 + k))
            ["sample_energy_distance_heldout"] for k in range(3)]
    assert res["sample_energy_distance_heldout_draws"] == each and len(set(each)) == 3
    assert res["sample_energy_distance_heldout_mean"] == pytest.approx(sum(each) / 3)


def _eval_cfg(**kw):
    over = [f"eval.{k}={v}" for k, v in {"n_samples": 20, "plots": "false", "long_run_factor": 1, **kw}.items()]
    return load_config(None, over)


def test_evaluate_scores_the_chains_samples_in_their_model_coordinates_against_the_held_out_rows():
    """``sample_energy_distance_heldout`` of ``evaluate_vectors`` is the held-out distance of the very samples the
    other metrics saw, given in model coordinates (the zscorer maps them back once)."""
    from ebmlab.metrics.distances import energy_distance
    from ebmlab.training.evaluate import evaluate_vectors
    from ebmlab.training.heldout import zscorer
    data, obj = _table(), GaussianStandIn((3,))
    m = evaluate_vectors(obj, data, _eval_cfg(), None, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    obj.prior(20, g)  # the chains' noise reference is drawn first
    x = obj.sample(20, generator=g).x
    z = zscorer(data)
    assert m["eval_n_samples"] == 20
    assert m["sample_energy_distance_heldout"] == pytest.approx(energy_distance(z(x), z(data.test), unbiased=True))


def test_the_long_run_takes_long_run_factor_times_the_methods_steps():
    from ebmlab.training.evaluate import evaluate_vectors
    data, obj = _table(), GaussianStandIn((3,))
    m = evaluate_vectors(obj, data, _eval_cfg(long_run_factor=3), None, torch.Generator().manual_seed(3))
    assert m["long_run_steps"] == 6
    assert [c["n_steps"] for c in obj.calls] == [None, 6]


def test_the_density_grid_is_the_model_density_of_the_grid_points_in_model_coordinates():
    """``model_log_density_grid`` on a toy (zeros beyond (x1, x2)) with a standardising transform: the model's
    log N(z; 0, I) at z = (x - shift) / scale; ``_extent`` of a toy is 1.15 x the held-out rows' largest |x1|, |x2|
    in data coordinates."""
    from ebmlab.training.evaluate import _extent, model_log_density_grid
    tf = Affine(torch.tensor([1.0, -1.0, 0.5]), torch.tensor([2.0, 0.5, 4.0]))
    test = torch.tensor([[0.0, 0.0, 0.0], [1.5, -3.0, 0.0], [-2.0, 1.0, 9.0]])
    data = Dataset("toy", "vector", test, test, transform=tf, dist=SimpleNamespace(dim=3))
    grid = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 0.5]])
    pts = torch.cat([grid, torch.zeros(3, 1)], 1)
    z = (pts - tf.shift) / tf.scale
    want = -0.5 * z.pow(2).sum(1) - 1.5 * math.log(2 * math.pi)
    assert torch.allclose(model_log_density_grid(GaussianStandIn((3,)), data, grid), want, atol=1e-5)
    # data coordinates: x1 = 2 * 1.5 + 1 = 4 (model coordinates: at most 3), x2 = 0.5 * (-3) - 1 = -2.5
    assert _extent(data, _eval_cfg()) == pytest.approx(1.15 * 4.0)


# ----- grid and structure metrics (metrics/density.py, metrics/structure.py) -------------------------------
def test_grid_rows_are_y_and_columns_x_and_a_uniform_density_has_precision_one():
    from ebmlab.metrics.density import make_grid, sample_precision
    grid, xs, ys = make_grid((0.0, 2.0, 10.0, 13.0), 3)
    assert xs.tolist() == [0.0, 1.0, 2.0] and ys.tolist() == [10.0, 11.5, 13.0]
    assert grid.view(3, 3, 2)[1, 2].tolist() == [2.0, 11.5]  # row i: y = ys[i]; column j: x = xs[j] (imshow)
    assert grid.view(3, 3, 2)[2, 0].tolist() == [0.0, 13.0]
    assert sample_precision(torch.zeros(50), torch.zeros(80)) == 1.0  # every sample at the (flat) density's level


def test_density_structure_floor_is_the_exact_densitys_own_error():
    """Two equal modes split at x1 = 0: a model with all its mass right has mode masses (0, 1), error 1; the exact
    density, symmetric on the grid, (1/2, 1/2), error 0 (the floor); a mode with no samples scores 1."""
    from ebmlab.metrics.structure import density_structure_metrics, mode_mass_error
    toy = SimpleNamespace(mode_weights=[0.5, 0.5], mode_index=lambda x: (x[:, 0] > 0).long(),
                          in_support=lambda x: torch.ones(x.shape[0], dtype=torch.bool))
    grid = torch.tensor([[-1.0, 0.0], [-0.5, 0.0], [0.5, 0.0], [1.0, 0.0]])
    model = torch.tensor([-1e4, -1e4, 0.0, 0.0])
    m = density_structure_metrics(model, torch.zeros(4), grid, toy)
    assert m["density_mode_mass"] == [0.0, 1.0] and m["density_mode_mass_error"] == pytest.approx(1.0)
    assert m["density_mode_mass_floor"] == [0.5, 0.5] and m["density_mode_mass_error_floor"] == 0.0
    assert mode_mass_error(torch.tensor([0.5, 0.5, 0.0]), torch.full((3,), 1 / 3)) == pytest.approx(1.0)


# ----- OOD image sets (data/image_ood.py) -------------------------------------------------------------------
def _images():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(30, 1, 4, 4, generator=g) * 2 - 1
    test = torch.arange(16.0).view(1, 1, 4, 4).repeat(6, 1, 1, 1) / 8 - 1  # six identical images, distinct pixels
    return Dataset("img", "image", train, test, test_labels=torch.tensor([0, 0, 0, 0, 1, 2]), num_classes=3)


def test_ood_sets_are_built_from_the_held_out_images():
    from ebmlab.data.image_ood import load_ood_set
    like = _images()
    assert torch.equal(load_ood_set("digits_negative", like, torch.Generator().manual_seed(0)), -like.test)
    flipped = load_ood_set("digits_flipped", like, torch.Generator().manual_seed(0))
    assert torch.equal(flipped[:, :, 0], like.test[:, :, 3])  # upside down: the first row is the last


def test_each_image_is_shuffled_by_its_own_permutation_and_blended_with_another_class():
    from ebmlab.data.image_ood import _partners, load_ood_set
    like = _images()
    shuf = load_ood_set("digits_shuffled", like, torch.Generator().manual_seed(0))
    assert torch.equal(shuf.flatten(1).sort(1).values, like.test.flatten(1))  # each a permutation of its pixels
    assert len({tuple(s.flatten().tolist()) for s in shuf}) == 6  # identical images, six different permutations
    for seed in range(5):  # 4 of 6 images in class 0: each partner of another class, whatever the permutation
        partner = _partners(like, torch.Generator().manual_seed(seed))
        assert (like.test_labels[partner] != like.test_labels).all()


def test_two_ood_sets_that_would_share_a_metric_key_are_refused_before_any_work(tmp_path):
    """``ood_auroc_<stem>`` of a/x.npy and b/x.npy was one key: the second set's AUROC silently replaced the first's.
    A set held in memory keeps its whole name (``set.a`` was cut to its "stem" ``set``)."""
    from ebmlab.training import image_eval
    assert image_eval.ood_keys(["shifted", "a/far.npy"], {"set.a": 0, "set.b": 0}) == [
        "ood_auroc_shifted", "ood_auroc_far", "ood_auroc_set_a", "ood_auroc_set_b"]
    files = [tmp_path / d / "x.npy" for d in "ab"]
    for f in files:
        f.parent.mkdir()
        f.write_bytes(b"")  # existing files: what they hold is read later
    for names, arrays in (([str(f) for f in files], {}), (["shifted"], {"shifted": 0}), (["scaled", "scaled"], {})):
        with pytest.raises(ValueError, match="would both be reported as ood_auroc_"):
            image_eval.check_eval_options(SimpleNamespace(ood=names, ood_arrays=arrays), "vector", "rings")


def test_an_image_runs_ood_set_that_names_nothing_is_refused_before_any_work(tmp_path):
    """``ebmlab eval`` checked an image run's ``--ood`` only when it loaded the set, after metrics.json and the
    plots had been rewritten."""
    from ebmlab.errors import DataError
    from ebmlab.training import image_eval
    (tmp_path / "mine.npy").write_bytes(b"")  # an existing path: what it holds is read later
    for ok in ("digits_flipped", "noise", "digits", str(tmp_path / "mine.npy")):
        image_eval.check_eval_options(SimpleNamespace(ood=[ok]), "image", "digits")
    with pytest.raises(DataError, match="'bogus_set' is neither a built-in set"):
        image_eval.check_eval_options(SimpleNamespace(ood=["bogus_set"]), "image", "digits")
