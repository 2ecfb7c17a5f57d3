"""Known answers for the data path (a mutation check, docs/testing.md, round 3): the standardising and whitening
transforms (round trip, log|det| = the log-Jacobian), the test / validation / training partition, the held-out
z-scoring and distance, uint8 images to [-1, 1], and the toys' exact densities at points where they have closed
forms."""
import math

import numpy as np
import pytest
import torch

from ebmlab.training.config import load_config


# ----- transforms -------------------------------------------------------------------------------------------
def _correlated(n=300, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 3))
    x = a @ np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]]) + [5.0, -3.0, 10.0]
    return torch.from_numpy(x).float()


@pytest.mark.parametrize("whiten", [False, True])
def test_the_transform_round_trips_and_its_log_det_is_the_log_jacobian(whiten):
    """to_data(to_model(x)) == x, and log_det == log |det d to_model / dx| (the affine map's Jacobian, by autograd):
    -sum log scale, plus log |det W| with whitening."""
    from ebmlab.data.dataset import _standardiser
    x = _correlated()
    tf = _standardiser(x, True, whiten)
    assert torch.allclose(tf.to_data(tf.to_model(x)), x, atol=1e-4)
    jac = torch.autograd.functional.jacobian(lambda v: tf.to_model(v[None].double())[0], x[0].double())  # (3, 3)
    assert tf.log_det == pytest.approx(float(torch.linalg.slogdet(jac)[1]), abs=1e-5)
    if not whiten:
        assert tf.log_det == pytest.approx(-float(torch.log(tf.scale.double()).sum()), abs=1e-6)


def test_a_scalar_scale_has_log_det_zero_only_when_it_is_one():
    """Images' identity transform (scalar shift 0, scale 1) has log|dz/dx| = 0; any other scalar scale's is D log(1/s),
    which the transform cannot know without D: refused, not 0 (a silent 0 was the old answer)."""
    from ebmlab.data.base import Affine
    from ebmlab.errors import DataError
    assert Affine.identity().log_det == 0.0
    with pytest.raises(DataError, match="scalar scale"):
        _ = Affine(torch.zeros(()), torch.tensor(2.0)).log_det


# ----- splits -----------------------------------------------------------------------------------------------
def test_the_held_out_validation_and_training_rows_partition_the_data():
    """array_dataset: every row is in exactly one of test, validation and training (rows told apart by an index
    column), with min(n_test, N // 10) test rows."""
    from ebmlab.data.dataset import array_dataset
    n = 200
    x = torch.stack([torch.arange(n, dtype=torch.float32), torch.randn(n, generator=torch.Generator().manual_seed(1))], 1)
    ds = array_dataset(x, load_config(None, ["data.name=array", "data.val_fraction=0.1", "data.n_test=1000"]).data, "x")

    def ids(z):
        return [int(round(v)) for v in ds.transform.to_data(z)[:, 0].tolist()]
    test, val, train = ids(ds.test), ids(ds.val), ids(ds.train)
    assert len(test) == 20 and len(val) == 18 and len(train) == 162
    assert sorted(test + val + train) == list(range(n))


# ----- held-out distance ------------------------------------------------------------------------------------
def test_the_zscorer_standardises_the_training_rows_in_data_coordinates():
    """zscorer(data)(train) has column means 0 and stds 1 whatever the model's transform (whitening here, whose
    model coordinates are not the z-scores)."""
    from ebmlab.data.dataset import array_dataset
    from ebmlab.training.heldout import zscorer
    ds = array_dataset(_correlated(), load_config(None, ["data.name=array", "data.whiten=true"]).data, "x")
    z = zscorer(ds)(ds.train)
    assert torch.allclose(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(z.std(0), torch.ones(3, dtype=torch.float64), atol=1e-5)


def test_the_held_out_distance_compares_with_the_held_out_rows():
    """sample_energy_distance_heldout = energy_distance(z(samples), z(test), unbiased) with the zscorer's z."""
    from ebmlab.data.dataset import array_dataset
    from ebmlab.metrics.distances import energy_distance
    from ebmlab.training.heldout import heldout_energy_distance, zscorer
    ds = array_dataset(_correlated(), load_config(None, ["data.name=array"]).data, "x")

    class Prior:
        def prior(self, n, generator=None):
            return torch.randn(n, 3, generator=generator)
    s = torch.randn(40, 3, generator=torch.Generator().manual_seed(2)) + 0.5
    got = heldout_energy_distance(Prior(), ds, 40, torch.Generator().manual_seed(3), samples=s)
    z = zscorer(ds)
    assert got["sample_energy_distance_heldout"] == pytest.approx(energy_distance(z(s), z(ds.test), unbiased=True))


# ----- images ------------------------------------------------------------------------------------------------
def test_uint8_images_map_0_to_minus_one_and_255_to_one():
    from ebmlab.data.images import to_unit_range
    arr = np.array([[[0, 51], [204, 255]]], dtype=np.uint8)  # (1, 2, 2)
    x = to_unit_range(arr, "t")
    assert x.shape == (1, 1, 2, 2)
    assert torch.allclose(x.flatten(), torch.tensor([-1.0, 51 / 127.5 - 1, 204 / 127.5 - 1, 1.0]))


# ----- toys' exact densities -----------------------------------------------------------------------------------
def test_8gaussians_density_at_a_centre_is_one_eighth_of_a_gaussians_peak():
    """Centres 15 stds apart: p(centre) = (1/8) / (2 pi s^2) to float precision."""
    from ebmlab.data.toy import EightGaussians2D
    d = EightGaussians2D()
    want = -math.log(8) - math.log(2 * math.pi * d.std ** 2)
    assert float(d.log_prob(torch.tensor([[2.0, 0.0]]))) == pytest.approx(want, abs=1e-5)


def test_mixture_density_at_its_centres_is_in_the_ratio_of_the_weights():
    """Centres 12.5 stds apart: log p(c_k) - log p(c_j) = log(w_k / w_j), and p(c_k) = w_k / (2 pi s^2)."""
    from ebmlab.data.toy import UnequalMixture2D
    d = UnequalMixture2D()
    lp = d.log_prob(torch.tensor(d.centres, dtype=torch.float32)).double()
    want = torch.log(torch.tensor(d.mode_weights, dtype=torch.float64)) - math.log(2 * math.pi * d.std ** 2)
    assert torch.allclose(lp, want, atol=1e-4)


def test_rings_slice_density_on_a_ring_is_a_third_of_one_rings_density():
    """Far from the other rings (1 std = 0.1, rings 10 stds apart), p(x1, x2) on ring r is
    (1/3) i0e(r^2/s^2) / (2 pi s^2), the single-ring von Mises-Rice density at radius r."""
    from scipy.special import i0e

    from ebmlab.data.toy import Rings10D
    d = Rings10D()
    s2 = d.std_big ** 2
    for r in d.radii:
        want = math.log(i0e(r * r / s2)) - math.log(3) - math.log(2 * math.pi * s2)
        assert float(d.slice_log_prob(torch.tensor([[0.0, r]]))) == pytest.approx(want, abs=1e-4)
