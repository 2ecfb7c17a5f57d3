"""Nearest-neighbour novelty (metrics/novelty.py, paper 004 Sec. 4.2.4)."""
import pytest
import torch

from ebmlab import plots
from ebmlab.metrics.novelty import nearest_neighbours, nn_distances, novelty_rows, novelty_summary


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1


def test_training_images_against_themselves_are_at_distance_zero():
    train = _images(700, 0)  # > chunk size, so the chunked search is exercised
    d, idx = nearest_neighbours(train, train, k=2)
    assert torch.equal(d[:, 0], torch.zeros(700, dtype=d.dtype))
    assert torch.equal(idx[:, 0], torch.arange(700))
    assert (d[:, 1] > 0).all()  # the second neighbour is another image


def test_distances_match_brute_force():
    train, x = _images(300, 0), _images(40, 1)
    brute = torch.cdist(x.flatten(1).double(), train.flatten(1).double(), compute_mode="donot_use_mm_for_euclid_dist")
    assert torch.allclose(nn_distances(x, train), brute.min(1).values, atol=1e-10)


def test_summary_separates_copies_from_new_images():
    train, test = _images(500, 0), _images(200, 1)
    copies = novelty_summary(train[:100], train, test)
    assert copies["novelty_nn_min"] == 0.0 and copies["novelty_frac_close"] == 1.0
    fresh = novelty_summary(_images(200, 2), train, test)
    assert fresh["novelty_frac_close"] < 0.2 and fresh["novelty_nn_mean"] > 0
    assert fresh["novelty_nn_mean"] == pytest.approx(fresh["novelty_nn_mean_data"], rel=0.1)


def test_figure_and_shape_errors(tmp_path):
    train = _images(50, 0)
    rows = novelty_rows(train[:4] + 0.01, train, k=3, n=4)  # (4 * (1 + 3), 1, 8, 8)
    assert rows.shape == (16, 1, 8, 8) and torch.equal(rows[1], train[0])  # sample 0, then its nearest image
    p = plots.image_grid(rows, tmp_path / "nov.png", nrow=4)
    assert p.is_file() and p.stat().st_size > 0
    with pytest.raises(ValueError):
        nn_distances(torch.zeros(2, 1, 4, 4), train)
    with pytest.raises(FloatingPointError):
        nn_distances(torch.full((2, 1, 8, 8), float("nan")), train)
