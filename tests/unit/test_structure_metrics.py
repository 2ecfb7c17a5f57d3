"""Structure metrics (``metrics/structure.py``): mode masses, their error, in-support share, with known answers."""
import math

import pytest
import torch

from ebmlab.data.toy import TOYS, Checkerboard2D, EightGaussians2D, Rings10D, Spiral2D
from ebmlab.metrics.density import make_grid
from ebmlab.metrics.structure import (
    density_structure_metrics,
    grid_mode_masses,
    has_structure,
    in_support_share,
    mode_mass_error,
    mode_masses,
    mode_weights,
    structure_metrics,
)


def _ring_points(radii, n_each, dim=10):
    """``n_each`` points exactly on each ring radius (other coordinates 0)."""
    rows = []
    for r, n in zip(radii, n_each):
        phi = torch.linspace(0, 2 * math.pi, n + 1)[:n]
        x = torch.zeros(n, dim)
        x[:, 0], x[:, 1] = r * torch.cos(phi), r * torch.sin(phi)
        rows.append(x)
    return torch.cat(rows)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_every_toy_exposes_structure_and_true_samples_score_near_floor(name):
    toy = TOYS[name]()
    assert has_structure(toy)
    assert abs(sum(toy.mode_weights) - 1.0) < 1e-12
    x = toy.sample(40000, torch.Generator().manual_seed(3))
    m = mode_masses(x, toy)
    assert m.shape == (len(toy.mode_weights),) and abs(float(m.sum()) - 1.0) < 1e-12
    # multinomial noise: relative error of a mode of weight w is ~ sqrt((1 - w) / (n w)) <= 0.014 here
    assert mode_mass_error(m, mode_weights(toy)) < 0.06
    assert in_support_share(x, toy) > 0.985


def test_in_support_share_of_true_samples_matches_the_band():
    """Rings / spiral: 1-D normal noise across the structure, band 3 std: P(|z| <= 3) = 0.9973;
    8gaussians: 2-D Rayleigh radius <= 3 std: 1 - exp(-4.5) = 0.9889; checkerboard: exactly 1."""
    g = torch.Generator().manual_seed(0)
    n = 100000
    expect = {"rings": math.erf(3 / math.sqrt(2)), "spiral": math.erf(3 / math.sqrt(2)),
              "8gaussians": 1 - math.exp(-4.5), "checkerboard": 1.0}
    for name, p in expect.items():
        toy = TOYS[name]()
        share = in_support_share(toy.sample(n, g), toy)
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3, (name, share, p)


def test_all_points_on_one_ring_give_the_exact_error():
    toy = Rings10D()
    for ring in range(3):
        n_each = [0, 0, 0]
        n_each[ring] = 90
        x = _ring_points(toy.radii, n_each)
        m = mode_masses(x, toy)
        assert m.tolist() == [1.0 if k == ring else 0.0 for k in range(3)]
        # (1 - 1/3) / (1/3) = 2 for the full ring; the empty ones are off by 1
        assert mode_mass_error(m, mode_weights(toy)) == pytest.approx(2.0, abs=1e-12)
        assert in_support_share(x, toy) == 1.0


def test_unequal_rings_give_the_exact_masses_and_error():
    toy = Rings10D()
    x = _ring_points(toy.radii, [30, 60, 10])  # masses 0.3, 0.6, 0.1
    m = mode_masses(x, toy)
    assert torch.allclose(m, torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64))
    assert mode_mass_error(m, mode_weights(toy)) == pytest.approx(0.8)  # |0.6 - 1/3| / (1/3)
    out = structure_metrics(x, toy, "sample_")
    assert out["sample_mode_mass"] == [0.3, 0.6, 0.1]
    assert out["sample_mode_mass_error"] == pytest.approx(0.8)
    assert out["sample_in_support_share"] == 1.0


def test_rings_assignment_boundaries_and_band():
    toy = Rings10D()
    x = torch.zeros(6, 10)
    x[:, 0] = torch.tensor([1.49, 1.51, 2.49, 2.51, 1.31, 2.29])
    assert toy.mode_index(x).tolist() == [0, 1, 1, 2, 0, 1]
    # band 3 x 0.1: 1.31 is 0.31 from radius 1 (outside), 2.29 is 0.29 from radius 2 (inside)
    assert toy.in_support(x).tolist() == [False, False, False, False, False, True]
    assert in_support_share(x, toy) == pytest.approx(1 / 6)
    # only (x1, x2) decide; 2-D points (the density grid) work the same way
    assert toy.mode_index(x[:, :2]).tolist() == [0, 1, 1, 2, 0, 1]


def test_checkerboard_modes_are_the_dark_squares():
    toy = Checkerboard2D()
    centres = torch.tensor([[-1.5, -1.5], [0.5, -1.5], [-0.5, -0.5], [1.5, -0.5],
                            [-1.5, 0.5], [0.5, 0.5], [-0.5, 1.5], [1.5, 1.5]])
    assert toy.mode_index(centres).tolist() == list(range(8))
    assert toy.in_support(centres).all()
    light = torch.tensor([[-0.5, -1.5], [1.5, 0.5], [3.0, 3.0]])
    assert not toy.in_support(light).any()
    # off the board, a point goes to the nearest dark square: (3, 3) to the top-right one (k = 7)
    assert int(toy.mode_index(light[2:])) == 7
    # a light square's centre is equidistant from its dark neighbours: ties go to the lowest k
    assert int(toy.mode_index(light[:1])) == 0


def test_eight_gaussians_and_spiral_modes():
    g = EightGaussians2D()
    c = g._centres().float()
    assert g.mode_index(c * 1.05).tolist() == list(range(8))
    s = Spiral2D()
    t = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=torch.float64)
    assert s.mode_index(s._curve(t).float()).tolist() == [0, 1, 2, 3]
    assert s.in_support(s._curve(t).float()).all()
    assert not s.in_support(torch.tensor([[2.0, 2.0]])).any()


def test_grid_mode_masses_of_the_exact_rings_density_are_equal_thirds():
    toy = Rings10D()
    grid, _, _ = make_grid(3.8, 200)
    out = density_structure_metrics(toy.slice_log_prob(grid), toy.slice_log_prob(grid), grid, toy)
    assert out["density_mode_mass_error_floor"] < 0.01
    assert out["density_mode_mass_error"] == out["density_mode_mass_error_floor"]
    assert all(abs(v - 1 / 3) < 0.004 for v in out["density_mode_mass"])


def test_grid_mode_masses_known_answer():
    toy = Rings10D()
    grid = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, -3.0]])
    logp = torch.log(torch.tensor([2.0, 1.0, 0.5, 0.5]))  # unnormalised: masses 0.5, 0.25, 0.25
    m = grid_mode_masses(logp, grid, toy)
    assert torch.allclose(m, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    assert mode_mass_error(m, mode_weights(toy)) == pytest.approx(0.5)
    with pytest.raises(FloatingPointError):
        grid_mode_masses(torch.tensor([0.0, float("nan"), 0.0, 0.0]), grid, toy)


def test_user_data_have_no_structure():
    assert not has_structure(None)
    assert not has_structure(object())


def test_metrics_json_reports_structure_with_floors(tmp_path):
    """A tiny hybrid run on the rings: ``metrics.json`` carries the structure metrics and their floors;
    user data (no known modes) carry none."""
    import json

    import numpy as np

    import ebmlab

    tiny = {"steps": 3, "progress": False, "batch_size": 32, "threads": 1}
    ev = {"n_samples": 60, "grid_size": 12, "long_run_factor": 2, "plots": False}
    ebmlab.train("hybrid", data="rings", out=tmp_path / "r", train=tiny, eval=ev,
                 model={"width": 8, "depth": 1},
                 overrides={"method.n_steps": 2, "method.n_steps_data": 2})
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    for key in ("sample_mode_mass", "long_run_mode_mass", "sample_mode_mass_floor", "density_mode_mass",
                "density_mode_mass_floor", "mode_mass_true"):
        assert len(m[key]) == 3 and abs(sum(m[key]) - 1) < 1e-3, key
    for key in ("sample_mode_mass_error", "sample_mode_mass_error_floor", "density_mode_mass_error",
                "density_mode_mass_error_floor", "sample_in_support_share", "sample_in_support_share_floor"):
        assert isinstance(m[key], float) and m[key] >= 0, key
    assert m["sample_in_support_share_floor"] > 0.9
    x = np.random.default_rng(0).normal(size=(200, 2)).astype("float32")
    ebmlab.train("hybrid", data=x, out=tmp_path / "u", train=tiny, eval=ev,
                 model={"width": 8, "depth": 1},
                 overrides={"method.n_steps": 2, "method.n_steps_data": 2})
    mu = json.loads((tmp_path / "u" / "metrics.json").read_text())
    assert not any("mode_mass" in k or "in_support" in k for k in mu)
