"""Round 32: known answers for modules no earlier mutation round had planted bugs in (``metrics/distances.py``,
``samplers/langevin.py``, ``data/dataset.py``, ``training/run_data.py``, ``data/transforms.py``,
``metrics/baselines.py``). Each test asserts a value written down from the formula or the docstring's promise;
each fails under the one-line mutation named in its docstring (docs/testing.md, "A mutation round on six modules
no round had reached")."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from ebmlab.data import transforms as T
from ebmlab.data.base import Affine
from ebmlab.data.dataset import array_dataset, build_dataset, column_scale
from ebmlab.errors import DataError
from ebmlab.metrics import baselines
from ebmlab.metrics.distances import energy_distance, mmd
from ebmlab.samplers import langevin
from ebmlab.samplers.base import init
from ebmlab.training import run_data
from ebmlab.training.config import load_config


# ----- metrics/distances.py -------------------------------------------------------------------------------------
def _mmd_by_hand(z: list[float], n: int, h: float) -> float:
    k = [[math.exp(-(a - b) ** 2 / (2 * h * h)) for b in z] for a in z]
    m = len(z) - n
    kxx = sum(k[i][j] for i in range(n) for j in range(n)) / n ** 2
    kyy = sum(k[i][j] for i in range(n, len(z)) for j in range(n, len(z))) / m ** 2
    kxy = sum(k[i][j] for i in range(n) for j in range(n, len(z))) / (n * m)
    return kxx + kyy - 2 * kxy


def test_mmd_default_bandwidth_is_the_median_distance_and_the_kernel_is_gaussian():
    """Points 0, 1 | 3: distances 1, 3, 2, median 2, kernel exp(-d^2 / (2 h^2)). Mutations: the median of the
    squared distances taken as h (h = 4); the kernel exp(-d^2 / h^2)."""
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0]])
    assert mmd(x, y) == pytest.approx(_mmd_by_hand([0.0, 1.0, 3.0], 2, 2.0), rel=1e-12)
    kxx, kxy = (2 + 2 * math.exp(-0.5)) / 4, (math.exp(-4.5) + math.exp(-2)) / 2
    assert mmd(x, y, bandwidth=1.0) == pytest.approx(kxx + 1 - 2 * kxy, rel=1e-12)


def test_mmd_bandwidth_leaves_out_repeated_points():
    """Four copies of 0 and one 5: the median of the distances between *distinct* points is 5 (the docstring).
    Mutation: zero distances of repeated points kept in the median (h = 0, a NaN)."""
    x, y = torch.zeros(4, 1), torch.tensor([[5.0]])
    assert mmd(x, y) == pytest.approx(_mmd_by_hand([0, 0, 0, 0, 5.0], 4, 5.0), rel=1e-12)


def test_energy_distance_over_more_rows_than_one_chunk_is_the_formula_over_every_pair():
    """2,100 rows (more than ``_mean_pdist``'s chunk of 2,048): 2 E|X-Y| - E|X-X'| - E|Y-Y'| over every pair.
    Mutation: each chunk one row short."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2100, 2, generator=g, dtype=torch.float64), torch.randn(50, 2, generator=g,
                                                                                  dtype=torch.float64) + 1
    want = 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()
    assert energy_distance(x, y) == pytest.approx(float(want), rel=1e-9)


# ----- samplers/langevin.py -------------------------------------------------------------------------------------
def _quadratic(x):
    return 0.5 * (x ** 2).flatten(1).sum(1)  # dE/dx = x


def test_langevin_step_noise_is_sqrt_2_eps_t_at_a_temperature():
    """x' = x - eps x + sqrt(2 eps T) z (module docstring). Mutation: ``scales`` drops the temperature."""
    x, z = torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.tensor([[0.3, -1.0], [2.0, 0.1]])
    state, _ = langevin.step(_quadratic, init(_quadratic, x), 0.01, temperature=4.0, noise=z)
    assert torch.allclose(state.x, x - 0.01 * x + math.sqrt(2 * 0.01 * 4.0) * z, atol=1e-6)


def test_langevin_propose_uses_the_noise_it_is_given():
    """``propose(..., noise=z)`` moves with that z and returns it. Mutation: a fresh draw replaces ``noise``."""
    x, z = torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.tensor([[0.3, -1.0], [2.0, 0.1]])
    x_new, eps, sigma, z_used = langevin.propose(init(_quadratic, x), 0.02, noise=z)
    assert torch.equal(z_used, z)
    assert torch.allclose(x_new, x - 0.02 * x + math.sqrt(0.04) * z, atol=1e-6)


def test_a_per_chain_step_size_without_a_noise_scale_gets_sqrt_2_eps_noise():
    """A (B, 1) step size and no noise scale: each chain's sigma is sqrt(2 eps_i). Mutation: ``scales`` returns
    the step size as it is with ``noise_scale`` None (a crash in ``move``)."""
    x, z = torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.tensor([[0.3, -1.0], [2.0, 0.1]])
    eps = torch.tensor([[0.01], [0.04]])
    state, _ = langevin.step(_quadratic, init(_quadratic, x), eps, noise=z)
    assert torch.allclose(state.x, x - eps * x + torch.sqrt(2 * eps) * z, atol=1e-6)


def test_a_vector_of_step_sizes_moves_each_chain_by_its_own_when_chains_equal_dimensions():
    """(B,) step sizes with B == D: chain i moves by eps_i (per_chain reshapes to (B, 1)). Mutation:
    ``_per_chain`` ignoring the dimension count, so (B,) step and noise tensors broadcast along the coordinates."""
    x, z = torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.zeros(2, 2)
    eps = torch.tensor([0.1, 0.3])
    state, _ = langevin.step(_quadratic, init(_quadratic, x), eps, noise_scale=torch.zeros(2), noise=z)
    assert torch.allclose(state.x, torch.tensor([[0.9, -1.8], [0.35, 2.1]]), atol=1e-6)


# ----- data/dataset.py ------------------------------------------------------------------------------------------
def test_a_column_of_tiny_but_real_spread_keeps_its_std():
    """Constant means at most 1e-12 x the widest column's std, relative to the data's own units (docstring).
    Mutation: an absolute 1e-12 threshold (data of spread 1e-13 trained as constant)."""
    std = torch.tensor([1e-13, 3e-13], dtype=torch.float64)
    assert torch.equal(column_scale(std, 1e-8), std)


def test_user_vectors_hold_out_min_of_n_test_and_a_tenth():
    """1,000 rows with data.n_test = 20: 20 held-out rows (not 100), 980 training. Mutation: n_test ignored."""
    cfg = load_config(None, ["data.n_test=20"]).data
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    data = array_dataset(x, cfg, "x")
    assert data.test.shape[0] == 20 and data.train.shape[0] == 980


# ----- training/run_data.py -------------------------------------------------------------------------------------
def test_a_rebuilt_run_uses_the_transform_stored_in_run_json(tmp_path):
    """The stored transform is the one the weights were trained with (a refit run's differs from a fresh fit).
    Mutation: ``run_dataset`` keeps the rebuilt data's own transform."""
    cfg = load_config(None, ["data.n_train=200", "data.n_test=50", "train.batch_size=100"])
    data = build_dataset(cfg.data)
    data.transform = Affine(data.transform.shift + 1.0, data.transform.scale * 2.0)
    run_data.write_run_info(tmp_path, cfg, data)
    got = run_data.run_dataset(tmp_path, cfg)
    assert torch.equal(got.transform.shift, data.transform.shift)
    assert torch.equal(got.transform.scale, data.transform.scale)


def test_a_float64_array_run_rebuilds_its_float64_rows(tmp_path):
    """A float64 data file whose run.json says float64: the rebuilt rows are the fresh build's (float32 reading
    would round 1e8 + 0.37 k to multiples of 8). Mutation: the float32 fallback taken when the dtypes agree."""
    rows = np.stack([1e8 + 0.37 * np.arange(300), np.cos(np.arange(300))], 1)
    np.save(tmp_path / "x.npy", rows)
    cfg = load_config(None, ["data.name=array", f"data.path={tmp_path / 'x.npy'}"])
    data = build_dataset(cfg.data)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_data.write_run_info(run_dir, cfg, data)
    got = run_data.run_dataset(run_dir, cfg)
    assert torch.equal(got.train, data.train) and torch.equal(got.test, data.test)


def test_verify_data_is_false_for_an_absent_file_the_run_has_no_fingerprint_of(tmp_path):
    """``verify_data``: "False when it is absent". Mutation: True returned without a stored SHA-256."""
    cfg = load_config(None, [])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(tmp_path / "gone")))
    assert run_data.verify_data(tmp_path, cfg, {"data": {}}) is False


def test_a_changed_data_folder_is_refused(tmp_path):
    """A file added to the data folder changes its listing: DataError. Mutation: the folder check skipped."""
    from ebmlab.data.arrays import folder_fingerprint

    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.txt").write_text("1")
    info = {"data": {"listing_sha256": folder_fingerprint(folder)}}
    cfg = load_config(None, [])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(folder)))
    (folder / "b.txt").write_text("2")
    with pytest.raises(DataError, match="has changed"):
        run_data.verify_data(tmp_path, cfg, info)


def test_an_old_run_reads_its_stored_data_npy_while_that_file_exists(tmp_path):
    """A run written before ``path_in_run`` reads ``data.path`` as stored; its own data.npy only once the stored
    one is gone (docstring). Mutation: the fallback taken even while the stored file exists."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    stored = tmp_path / "a" / "data.npy"
    np.save(stored, np.zeros((3, 2)))
    np.save(tmp_path / "b" / "data.npy", np.zeros((3, 2)))
    cfg = load_config(None, [])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(stored)))
    info = {"data": {"sha256": "0" * 64}}
    assert run_data.located_config(tmp_path / "b", cfg, info).data.path == str(stored)
    stored.unlink()
    assert run_data.located_config(tmp_path / "b", cfg, info).data.path == str((tmp_path / "b" / "data.npy").absolute())


# ----- data/transforms.py ---------------------------------------------------------------------------------------
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def test_a_quarter_turn_of_hue_rotates_the_chroma_plane_by_90_degrees():
    """(I, Q) -> (I cos a - Q sin a, I sin a + Q cos a), a = pi / 2: (-Q, I), luma unchanged. Mutation: the sign
    of one sine term (not a rotation)."""
    u = torch.tensor([0.5, 0.45, 0.55]).reshape(1, 3, 1, 1)  # a grey-ish colour: the rotated one stays in [0, 1]
    out = T._hue(u, torch.tensor([0.25]))
    yiq_in, yiq_out = _YIQ @ u.flatten(), _YIQ @ out.flatten()
    assert torch.allclose(yiq_out, torch.stack([yiq_in[0], -yiq_in[2], yiq_in[1]]), atol=1e-5)


def test_color_jitter_hue_shifts_are_drawn_on_both_sides_of_zero(monkeypatch):
    """Hue: a shift in [-a, a] turns with a = 0.2 s (module docstring). Mutation: shifts drawn in [0, a]."""
    seen = []
    monkeypatch.setattr(T, "_hue", lambda u, s: (seen.append(s.clone()), u)[1])
    T.color_jitter(torch.zeros(400, 3, 2, 2), torch.Generator().manual_seed(0), strength=1.0, p=1.0)
    s = torch.cat(seen)
    assert len(s) == 400 and s.min() < -0.15 and s.max() > 0.15 and abs(float(s.mean())) < 0.03


def test_grey_images_get_brightness_and_contrast(monkeypatch):
    """Grayscale images get brightness and contrast only (module docstring), every image both at p = 1.
    Mutation: contrast dropped for C = 1."""
    calls = {"brightness": 0, "contrast": 0}
    for name in calls:
        def rec(u, f, name=name):
            calls[name] += len(u)
            return u
        monkeypatch.setattr(T, f"_{name}", rec)
    T.color_jitter(torch.zeros(10, 1, 2, 2), torch.Generator().manual_seed(0), p=1.0)
    assert calls == {"brightness": 10, "contrast": 10}


def test_gaussian_blur_of_an_impulse_is_the_kernel_of_the_drawn_std():
    """sigma = 1 pixel: an impulse blurs to the outer product of exp(-k^2 / 2) / sum (radius 3). Mutation: the
    kernel exp(-k^2), std 1/sqrt(2)."""
    x = -torch.ones(1, 1, 15, 15)
    x[0, 0, 7, 7] = 1.0  # -1 + 2 delta
    out = T.gaussian_blur(x, torch.Generator().manual_seed(0), p=1.0, sigma=(1.0, 1.0))
    k = torch.exp(-0.5 * torch.arange(-3.0, 4.0) ** 2)
    k = k / k.sum()
    want = -torch.ones(15, 15)
    want[4:11, 4:11] += 2 * torch.outer(k, k)
    assert torch.allclose(out[0, 0], want, atol=1e-5)


# ----- metrics/baselines.py -------------------------------------------------------------------------------------
def test_gmm_candidates_with_more_components_than_half_the_fitting_rows_are_skipped():
    """20 rows: 16 fit, 4 validate; 16 components > 8 is skipped with its reason. Mutation: the bound the
    fitting rows themselves."""
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    fit = baselines.fit_gmm(x, components=(1, 16), covariances=("diag",))
    assert fit.search["diag/16"].startswith("skipped")


def test_gmm_validation_rows_are_left_out_of_the_fitting_rows():
    """80 % fit, the other 20 % score (module docstring): disjoint, together every row. Mutation: every row fit."""
    fit_idx, val_idx = baselines._split(50, 3)
    assert len(fit_idx) == 40 and len(val_idx) == 10
    assert sorted([*fit_idx, *val_idx]) == list(range(50))


def test_the_chosen_gmm_is_refitted_on_every_training_row():
    """One diagonal component refitted on all rows: its mean is the mean of all rows (the MLE). Mutation: the
    best kept as fitted on 80 % of them."""
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    fit = baselines.fit_gmm(x, components=(1,), covariances=("diag",))
    assert np.allclose(fit.model.means_[0], x.mean(0).numpy(), atol=1e-9)


def test_the_kde_subsample_is_drawn_from_every_row_not_the_first(monkeypatch):
    """At most KDE_MAX_ROWS rows, drawn at random: rows sorted into two far clusters keep both. Mutation: the
    first KDE_MAX_ROWS rows (the first cluster only)."""
    monkeypatch.setattr(baselines, "KDE_MAX_ROWS", 60)
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(60, 1, generator=g), torch.randn(60, 1, generator=g) + 20])
    fit = baselines.fit_kde(x, bandwidths=(0.3, 1.0))
    far = float(fit.log_density(torch.tensor([[20.0]])))
    assert fit.chosen["rows"] == 60 and far > math.log(0.1)
