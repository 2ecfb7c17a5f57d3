"""Known answers for what a run shows and records (a mutation check, docs/testing.md, thirteenth round): every
figure of ``plots.py`` read back from matplotlib (image arrays and extents, scatter offsets, line data, scales,
titles) on inputs whose picture is known by hand; which sets ``evaluate`` draws on which figure and what
``metrics.json`` holds; the rows of ``metrics.jsonl``, the TensorBoard scalars and images and their steps
(``training/logging.py``, the loop's logging and ``train.sample_every``, ``training/hooks.py``).

No training: the objective is a stand-in (an exact N(0, I) in model coordinates whose "chains" move their start by
n_steps x one uniform draw per chain), and the loop's updates are replaced by scripted losses.
"""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ebmlab import plots
from ebmlab.data.base import Affine, Dataset
from ebmlab.metrics.density import make_grid
from ebmlab.training.config import load_config
from tests.builders import GaussianStandIn


def _axes(fig):
    """The axes of a figure that are not colorbars."""
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]


# ----- plots.py ----------------------------------------------------------------------------------------------
def test_a_density_rising_along_x1_rises_along_the_columns_on_its_own_extent(tmp_path, figures):
    """log p = 5 x1 on the grid x1 in [0, 2], x2 in [10, 13]: the image must rise along its columns (axis 1) and be
    constant down them, drawn with origin "lower" over (0, 2, 10, 13), in viridis (not reversed)."""
    _, xs, ys = make_grid((0.0, 2.0, 10.0, 13.0), 5)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    plots.density_maps({"rising": 5 * grid[:, 0]}, xs, ys, tmp_path / "d.png")
    im = _axes(figures[0])[0].images[0]
    a = np.asarray(im.get_array())
    assert a.shape == (5, 5)
    assert np.all(np.diff(a, axis=1) > 0)  # rises with x1 (the columns)
    assert np.allclose(np.diff(a, axis=0), 0)  # x2 does not change it
    assert tuple(im.get_extent()) == pytest.approx((0.0, 2.0, 10.0, 13.0))
    assert im.origin == "lower"  # row 0 is the smallest x2
    assert im.get_cmap().name == "viridis"


def test_a_density_with_all_its_mass_in_one_cell_lights_that_cell_on_one_shared_scale(tmp_path, figures):
    """Panel "spread" is uniform, panel "peak" has all its mass at (x1, x2) = (-1, 1) (column 1, row 3 of a 5-point
    grid on [-2, 2]): its image is 0 except there, and both panels share the peak's scale (the largest density),
    each under its own title."""
    grid, xs, ys = make_grid(2.0, 5)
    peak = torch.full((25,), -1e9)
    peak[((grid[:, 0] == -1) & (grid[:, 1] == 1)).nonzero()[0, 0]] = 0.0
    plots.density_maps({"spread": torch.zeros(25), "peak": peak}, xs, ys, tmp_path / "d.png")
    a0, a1 = (ax.images[0] for ax in _axes(figures[0]))
    d = np.asarray(a1.get_array())
    assert np.argwhere(d > 0).tolist() == [[3, 1]]  # row = x2 index, column = x1 index
    assert d[3, 1] == pytest.approx(1.0)  # all the mass in one cell of area 1 x 1
    assert a0.norm.vmax == pytest.approx(1.0) and a1.norm.vmax == pytest.approx(1.0)  # the peak's density for both
    assert [ax.get_title() for ax in _axes(figures[0])] == ["spread", "peak"]


def test_each_scatter_panel_draws_its_own_set_x1_across_within_the_given_box(tmp_path, figures):
    """Three sets of 6, 5 and 7 points: each panel holds the first 5 rows of its own set, x1 horizontal and x2
    vertical, titled with the set's name, inside the box (x0, x1, y0, y1) = (-1, 10, 50, 200)."""
    a = torch.stack([torch.arange(6.0), 100 + torch.arange(6.0)], 1)
    b = torch.stack([torch.arange(5.0) + 3, 150 - torch.arange(5.0)], 1)
    c = torch.stack([-torch.arange(7.0) * 0.1, 60 + torch.arange(7.0)], 1)
    plots.sample_scatter({"a": a, "b": b, "c": c}, tmp_path / "s.png", extent=(-1.0, 10.0, 50.0, 200.0))
    axes = _axes(figures[0])
    for ax, x in zip(axes, (a, b, c)):
        assert np.allclose(ax.collections[0].get_offsets(), x[:5].numpy())
        assert ax.get_xlim() == pytest.approx((-1.0, 10.0)) and ax.get_ylim() == pytest.approx((50.0, 200.0))
    assert [ax.get_title() for ax in axes] == ["a", "b", "c"]
    assert "5 points per panel" in figures[0]._suptitle.get_text()


def test_energy_histograms_are_densities_over_the_pooled_central_99_percent(tmp_path, figures):
    """Energies 0..999 and 500..1499: the bins span the pooled 0.5 and 99.5 percentiles (not a narrower range),
    each histogram integrates to 1 over what it shows, and the legend counts every value of its set."""
    a, b = torch.arange(1000.0), torch.arange(500.0, 1500.0)
    plots.energy_histograms({"a": a, "b": b}, tmp_path / "h.png")
    ax = _axes(figures[0])[0]
    lo, hi = np.percentile(np.concatenate([a.numpy(), b.numpy()]), [0.5, 99.5])
    bars = ax.patches
    assert len(bars) == 120  # 60 bins per set
    assert bars[0].get_x() == pytest.approx(lo) and bars[59].get_x() + bars[59].get_width() == pytest.approx(hi)
    for k in (0, 60):
        assert sum(p.get_height() * p.get_width() for p in bars[k:k + 60]) == pytest.approx(1.0)  # a density
    labels = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert labels[0].startswith("a (n=1,000") and labels[1].startswith("b (n=1,000")  # all 1,000, shown or not


def test_chain_curves_follow_the_steps_in_order_with_their_own_titles_and_a_log_step_size(tmp_path, figures):
    """S = 4 steps drawn at x = 1..4 in order; the step size spans 1e-3..1 (more than 20x) so its axis is
    logarithmic; each panel titled for its own quantity."""
    diag = {"accept_rate": torch.tensor([0.1, 0.2, 0.4, 0.8]), "step_size": torch.tensor([1e-3, 1e-2, 1e-1, 1.0]),
            "energy": torch.tensor([5.0, 3.0, 2.0, 1.5])}
    plots.chain_curves(diag, tmp_path / "c.png", target_accept=0.5)
    axes = _axes(figures[0])
    for ax, k in zip(axes, diag):
        line = ax.get_lines()[0]
        assert list(line.get_xdata()) == [1, 2, 3, 4]
        assert np.allclose(line.get_ydata(), diag[k].double().numpy())
    assert [ax.get_title() for ax in axes] == ["Metropolis acceptance rate", "step size", "mean energy of the chains"]
    assert axes[1].get_yscale() == "log" and axes[0].get_yscale() == "linear"


def test_an_image_grid_places_image_i_at_row_i_over_nrow_in_grey_from_black_at_minus_one(tmp_path, figures):
    """Four 1x2x2 images of constant value -1, -0.5, 0.5, 1 with nrow = 2: image i at grid row i // 2, column
    i % 2 (cells 3 pixels apart with a 1-pixel white border), value (v + 1) / 2, in "gray" (0 black, 1 white)."""
    vals = [-1.0, -0.5, 0.5, 1.0]
    imgs = torch.tensor(vals).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    plots.image_grid(imgs, tmp_path / "g.png", nrow=2)
    im = _axes(figures[0])[0].images[0]
    a = np.asarray(im.get_array())
    assert a.shape == (7, 7)
    for i, v in enumerate(vals):
        r, q = divmod(i, 2)
        assert np.allclose(a[1 + 3 * r:3 + 3 * r, 1 + 3 * q:3 + 3 * q], (v + 1) / 2)
    assert a[0, 0] == 1.0  # the border
    assert im.get_cmap().name == "gray"


def test_line_plot_keeps_its_axes_labels_and_a_log_scale_over_three_decades(tmp_path, figures):
    plots.line_plot({"s": ([1, 2, 3], [1.0, 10.0, 1000.0])}, tmp_path / "l.png", xlabel="steps", ylabel="KL",
                    logy=True)
    ax = _axes(figures[0])[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("steps", "KL")
    assert ax.get_yscale() == "log"  # y spans 1..1000 (more than a decade)
    assert list(ax.get_lines()[0].get_ydata()) == [1.0, 10.0, 1000.0]


def test_scheme_columns_show_each_schemes_samples_and_density_in_x1_x2_order(tmp_path, figures):
    """Scheme A's samples all at (1.5, -1.5), B's at (-1.5, 1.5), on [-2, 2]^2: the top histogram of A has its
    counts in the bin at row (x2) low, column (x1) high; the bottom row shows each scheme's own density
    (A's mass at the first grid point (-2, -2), B's at the last (2, 2))."""
    grid, xs, ys = make_grid(2.0, 5)
    lp_a, lp_b = torch.full((25,), -1e9), torch.full((25,), -1e9)
    lp_a[0], lp_b[24] = 0.0, 0.0
    sa, sb = torch.tensor([[1.5, -1.5]]).repeat(10, 1), torch.tensor([[-1.5, 1.5]]).repeat(10, 1)
    plots.scheme_columns({"A": (sa, lp_a), "B": (sb, lp_b)}, xs, ys, tmp_path / "f.png")
    top_a, top_b, bot_a, bot_b = (ax.images[0] for ax in _axes(figures[0]))
    h = np.asarray(top_a.get_array())
    r, c = np.unravel_index(np.argmax(h), h.shape)
    assert h.max() == 10 and r < h.shape[0] // 2 < c  # row: x2 = -1.5 (low); column: x1 = 1.5 (high)
    assert np.unravel_index(np.argmax(np.asarray(top_b.get_array())), h.shape) == (c, r)
    assert np.argwhere(np.asarray(bot_a.get_array()) > 0).tolist() == [[0, 0]]
    assert np.argwhere(np.asarray(bot_b.get_array()) > 0).tolist() == [[4, 4]]


# ----- evaluate.py -------------------------------------------------------------------------------------------
class Toy:
    """An exact distribution in data coordinates: N((4, -4, 0), I) (its sampler and log-density)."""
    dim = 3
    mean = torch.tensor([4.0, -4.0, 0.0])

    def sample(self, n, generator=None):
        return torch.randn(n, 3, generator=generator) + self.mean

    def log_prob(self, x):
        return -0.5 * (x - self.mean).pow(2).sum(1)


TF = Affine(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.5, 2.0]))


def _cfg(**ev):
    over = {"n_samples": 20, "plots": "true", "long_run_factor": 3, "grid_size": 7, **ev}
    return load_config(None, [f"eval.{k}={v}" for k, v in over.items()])


def _toy_data():
    g = torch.Generator().manual_seed(0)
    return Dataset("toy", "vector", torch.randn(30, 3, generator=g), torch.randn(24, 3, generator=g), transform=TF,
                   dist=Toy())


def _replay(cfg, seed=3):
    """What ``evaluate_vectors`` draws: the reference pair (seed + 11), then noise, the short and the long chains on
    the chains' generator, in data coordinates."""
    g_cpu = torch.Generator().manual_seed(cfg.train.seed + 11)
    ref = Toy().sample(20, g_cpu)
    g = torch.Generator().manual_seed(seed)
    torch.randn(20, 3, generator=g)  # the noise reference
    short = torch.randn(20, 3, generator=g) + 2 * torch.rand(20, 1, generator=g)
    long = torch.randn(20, 3, generator=g) + 6 * torch.rand(20, 1, generator=g)
    return ref, TF.to_data(short), TF.to_data(long)


@pytest.fixture
def drawn(monkeypatch):
    """The arguments of every figure ``evaluate`` draws (name -> kwargs with the data)."""
    seen = {}
    for name in ("density_maps", "sample_scatter", "energy_histograms", "chain_curves"):
        def rec(*args, _name=name, **kw):
            seen[_name] = (args, kw)
        monkeypatch.setattr(plots, name, rec)
    return seen


def test_the_samples_figure_shows_data_short_and_long_chains_in_data_coordinates(tmp_path, drawn):
    """samples.png: the held-out reference, the 2-step and the 6-step chains, each mapped to data coordinates, in
    a box of 1.3 x the reference's largest |x1|, |x2|; samples.npy is the 2-step chains in data coordinates."""
    from ebmlab.training.evaluate import evaluate_vectors
    cfg = _cfg()
    evaluate_vectors(GaussianStandIn((3,)), _toy_data(), cfg, tmp_path, torch.Generator().manual_seed(3))
    ref, short, long = _replay(cfg)
    (sets, _path), kw = drawn["sample_scatter"]
    assert list(sets) == ["held-out data", "samples, 2 steps", "samples, 6 steps"]
    for got, want in zip(sets.values(), (ref, short, long)):
        assert torch.allclose(got, want, atol=1e-5)
    assert kw["extent"] == pytest.approx(float(ref[:, :2].abs().max()) * 1.3)
    assert np.allclose(np.load(tmp_path / "samples" / "samples.npy"), short.numpy(), atol=1e-5)


def test_the_energy_histogram_compares_held_out_and_long_run_energies_in_model_coordinates(tmp_path, drawn):
    """energy_hist.png: the stand-in energy |z|^2 / 2 of the reference rows and of the long-run (6-step) chains,
    both at z = to_model(x)."""
    from ebmlab.training.evaluate import evaluate_vectors
    cfg = _cfg()
    evaluate_vectors(GaussianStandIn((3,)), _toy_data(), cfg, tmp_path, torch.Generator().manual_seed(3))
    ref, _, long = _replay(cfg)
    (sets, _path), _ = drawn["energy_histograms"]
    assert list(sets) == ["held-out data", "long-run samples"]
    assert torch.allclose(sets["held-out data"], 0.5 * TF.to_model(ref).pow(2).sum(1), rtol=1e-4)
    assert torch.allclose(sets["long-run samples"], 0.5 * TF.to_model(long).pow(2).sum(1), rtol=1e-4)


def test_the_density_figure_shows_the_true_and_the_model_density_and_names_the_models_kl(tmp_path, drawn):
    """density.png: "true density" is the toy's log-density on the grid, "model density" the stand-in's; the title
    gives density_kl (not the uniform density's score)."""
    from ebmlab.training.evaluate import evaluate_vectors, model_log_density_grid
    data, obj = _toy_data(), GaussianStandIn((3,))
    m = evaluate_vectors(obj, data, _cfg(), tmp_path, torch.Generator().manual_seed(3))
    (panels, xs, ys, _path), kw = drawn["density_maps"]
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    pts = torch.cat([grid, torch.zeros(len(grid), 1)], 1)
    assert list(panels) == ["true density", "model density"]
    assert torch.allclose(panels["true density"], Toy().log_prob(pts), atol=1e-5)
    assert torch.allclose(panels["model density"], model_log_density_grid(obj, data, grid), atol=1e-5)
    assert f"KL(true || model) = {m['density_kl']:.3f}" in kw["title"]
    assert m["density_kl"] != pytest.approx(m["density_kl_uniform"], abs=1e-3)  # the two would read alike otherwise


def test_metrics_json_holds_the_returned_metrics_with_the_extra_entries(tmp_path):
    from ebmlab.training.evaluate import evaluate
    m = evaluate(GaussianStandIn((3,)), _toy_data(), _cfg(plots="false"), tmp_path, extra={"selected_step": 7})
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["selected_step"] == 7 and "energy_heldout_gap" in written
    assert written == json.loads(json.dumps(m))


def test_eval_writes_the_checkpoint_step_and_each_options_scores_to_metrics_json(tmp_path, monkeypatch):
    from ebmlab.training import hooks
    from ebmlab.training.evaluate import _evaluate_locked
    monkeypatch.setattr(hooks, "EVAL_EXTENSIONS", [lambda options, cfg, objective, data: {"ext_score": 1.5}])
    m = _evaluate_locked(tmp_path, GaussianStandIn((3,)), _toy_data(), _cfg(plots="false"), 5, None)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["checkpoint_step"] == 5 and written["ext_score"] == 1.5
    assert written == json.loads(json.dumps(m))


# ----- logging.py --------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self):
        self.calls = []

    def add_scalar(self, tag, value, step):
        self.calls.append((tag, value, step))

    def close(self):
        pass


def test_a_logged_row_keeps_its_step_and_names_and_tensorboard_gets_the_finite_values_at_that_step(tmp_path):
    """log(3, ...): one JSON row with step 3 and every value (nan as the text "nan"); TensorBoard scalars under the
    metrics' own names at step 3, the nan left out."""
    from ebmlab.training.logging import RunLogger, read_metrics
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.tb = rec = Recorder()
    logger.log(3, {"loss": 1.5, "grad_norm": float("nan"), "lr": 0.01})
    assert read_metrics(tmp_path) == [{"step": 3, "loss": 1.5, "grad_norm": "nan", "lr": 0.01}]
    assert rec.calls == [("loss", 1.5, 3), ("lr", 0.01, 3)]


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    return ea


def test_final_metrics_are_tensorboard_scalars_at_the_final_step_with_sectioned_hparams(tmp_path):
    from ebmlab.training.logging import hparam_values, write_hparams
    pytest.importorskip("tensorboard")
    cfg = {"train": {"steps": 40, "lr": 0.001}, "model": {"steps": 3, "dims": [2, 3]}}
    assert hparam_values(cfg) == {"train.steps": 40, "train.lr": 0.001, "model.steps": 3, "model.dims": "[2, 3]"}
    write_hparams(tmp_path, cfg, {"density_kl": 0.25, "note": "text"}, 40)
    ev = _events(tmp_path).Scalars("final/density_kl")
    assert [(e.step, e.value) for e in ev] == [(40, 0.25)]


def test_sample_images_reach_tensorboard_at_their_own_steps(tmp_path):
    from ebmlab.training.logging import TBMedia
    pytest.importorskip("tensorboard")
    media = TBMedia(tmp_path)
    for step in (10, 20):
        media.image("samples", np.zeros((4, 4, 3), dtype=np.uint8), step)
    media.close()
    assert [e.step for e in _events(tmp_path).Images("samples")] == [10, 20]


# ----- the loop's log and train.sample_every; hooks -----------------------------------------------------------
TINY = ["train.batch_size=32", "train.checkpoint_every=1000", "train.progress=false", "model.width=16",
        "model.depth=1", "method.n_steps=3", "method.n_steps_data=2", "data.n_train=200", "data.n_test=100",
        "train.threads=1", "eval.plots=false"]


def test_the_loss_of_update_k_is_logged_at_step_k_every_log_every_and_at_the_last(tmp_path, monkeypatch):
    """Scripted updates whose loss is 10 k at update k; log_every = 2, 5 updates: rows at steps 2, 4 and 5 (the
    last), each with its own update's loss; sample_every = 2: on_sample at steps 2 and 4."""
    from ebmlab.training import loop
    from ebmlab.training.logging import read_metrics
    from ebmlab.training.run_dir import prepare_run_dir

    def scripted(self):
        self.step += 1
        return {"loss": torch.tensor(10.0 * self.step), "grad_norm": torch.tensor(float(self.step))}
    monkeypatch.setattr(loop.Trainer, "_update", scripted)
    monkeypatch.setattr(loop.Trainer, "save", lambda self, *a, **k: None)
    cfg = load_config(None, TINY + ["train.steps=5", "train.log_every=2", "train.sample_every=2"])
    lock = prepare_run_dir(tmp_path / "r", cfg, resume=False, overwrite=False)
    try:
        sampled = []
        loop.Trainer(cfg, tmp_path / "r").fit(on_sample=lambda t: sampled.append(t.step))
    finally:
        lock.release()
    rows = read_metrics(tmp_path / "r")
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in rows] == [(2, 20.0, 2.0), (4, 40.0, 4.0), (5, 50.0, 5.0)]
    assert sampled == [2, 4]


def test_the_sample_hooks_are_told_when_the_call_is_the_final_one(monkeypatch):
    from ebmlab.training import hooks
    seen = []
    monkeypatch.setattr(hooks, "SAMPLE_HOOKS", [lambda trainer, final: seen.append(final)])
    hooks.sample_hook(None, final=True)
    hooks.sample_hook(None)
    assert seen == [True, False]


def test_the_training_scatter_shows_held_out_rows_and_ema_samples_in_data_coordinates(tmp_path, monkeypatch):
    """scatter_stepNNNNNN.png: the first n held-out rows and the samples (seed train.seed + 13), both mapped to data
    coordinates; the TensorBoard image at the trainer's step."""
    from ebmlab.training import image_eval
    seen, images = {}, []
    monkeypatch.setattr(plots, "sample_scatter", lambda sets, path, **kw: seen.update(sets=sets, path=path))
    monkeypatch.setattr(plots, "png_array", lambda path: np.zeros((2, 2, 3), np.uint8))
    cfg = _cfg(n_samples=8)
    data = _toy_data()
    trainer = SimpleNamespace(cfg=load_config(None, ["train.sample_every=5", "eval.n_samples=8"]), data=data,
                              objective=GaussianStandIn((3,)), run_dir=tmp_path, step=5, ema=None, device=torch.device("cpu"),
                              tb_media=SimpleNamespace(image=lambda tag, px, step: images.append((tag, step))))
    image_eval.scatter_hook(trainer)
    g = torch.Generator().manual_seed(cfg.train.seed + 13)
    want = torch.randn(8, 3, generator=g) + 2 * torch.rand(8, 1, generator=g)
    assert torch.allclose(seen["sets"]["held-out data"], TF.to_data(data.test[:8]), atol=1e-6)
    assert torch.allclose(seen["sets"]["samples from noise (EMA)"], TF.to_data(want), atol=1e-5)
    assert seen["path"].name == "scatter_step000005.png" and images == [("samples", 5)]


def test_the_final_scatter_of_a_selected_run_is_named_after_the_selected_check(tmp_path, monkeypatch):
    """With ``train.select_every`` the final scatter shows the selected check's weights; it was drawn under the last
    step's name, or skipped when the periodic scatter had drawn that step (showing the last weights)."""
    from ebmlab.training import image_eval
    seen = []
    monkeypatch.setattr(plots, "sample_scatter", lambda sets, path, **kw: seen.append((path.name, kw["title"])))
    monkeypatch.setattr(plots, "png_array", lambda path: np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "scatter_step000010.png").write_bytes(b"")  # the periodic scatter of the last step
    media = SimpleNamespace(image=lambda tag, px, step: None, close=lambda: None)
    cfg = load_config(None, ["train.sample_every=5", "eval.n_samples=8"])
    for best in (4, None):
        trainer = SimpleNamespace(cfg=cfg, data=_toy_data(), objective=GaussianStandIn((3,)), run_dir=tmp_path,
                                  step=10, ema=None, device=torch.device("cpu"), tb_media=media,
                                  selector=SimpleNamespace(best_step=best))
        image_eval.scatter_hook(trainer, final=True)
    assert seen == [("scatter_selected_step000004.png", "selected step 4 (of 10)")]  # no selection: already drawn


def test_sample_figures_say_ema_only_where_the_run_averages_its_weights(tmp_path, monkeypatch):
    """With ``train.ema: null`` (every paper 000 config) the training scatter, the training grid and the final grid
    show the raw weights' samples: no "(EMA)" in their labels; with the default EMA they say so (a real bug: the
    titles said "(EMA)" whatever the config)."""
    from ebmlab.training import image_eval
    seen = []
    monkeypatch.setattr(plots, "sample_scatter", lambda sets, path, **kw: seen.append(list(sets)[1]))
    monkeypatch.setattr(plots, "image_grid", lambda x, path, nrow=None, title="": seen.append(title))
    monkeypatch.setattr(plots, "png_array", lambda path: np.zeros((2, 2, 3), np.uint8))
    media = SimpleNamespace(image=lambda tag, px, step: None, close=lambda: None)
    images = Dataset("img", "image", torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 2, 2))
    for ema, note in (("null", ""), ("0.99", " (EMA)")):
        cfg = load_config(None, [f"train.ema={ema}", "train.sample_every=5", "eval.n_samples=4", "eval.plots=false"])
        for data, obj in ((_toy_data(), GaussianStandIn((3,))), (images, GaussianStandIn((1, 2, 2)))):
            trainer = SimpleNamespace(cfg=cfg, data=data, objective=obj, run_dir=tmp_path, step=5, ema=None,
                                      device=torch.device("cpu"), tb_media=media)
            image_eval.scatter_hook(trainer)
            image_eval.grid_hook(trainer)
        image_eval._write_outputs(GaussianStandIn((1, 2, 2)), images, cfg, tmp_path, torch.zeros(4, 1, 2, 2),
                                  torch.zeros(4, 1, 2, 2), images.train, images.test)
    assert seen == ["samples from noise", "samples at step 5", "final samples, 4 of 4",
                    "samples from noise (EMA)", "samples at step 5 (EMA)", "final samples (EMA weights), 4 of 4"]


def test_the_image_energy_histogram_compares_held_out_images_with_the_samples(tmp_path, monkeypatch):
    """energy_hist.png of an image run: the stand-in energy |z|^2 / 2 of the held-out images (every pixel 0.5: 4 x
    0.125 = 0.5), never of the training images (pixels 1: 2.0), beside the samples' (pixels -0.25: 0.125)."""
    from ebmlab.training import image_eval
    seen = {}
    monkeypatch.setattr(plots, "energy_histograms", lambda sets, path, **kw: seen.update(sets))
    monkeypatch.setattr(plots, "image_grid", lambda *a, **k: None)
    train, test = torch.ones(3, 1, 2, 2), torch.full((3, 1, 2, 2), 0.5)
    images = Dataset("img", "image", train, test)
    cfg = load_config(None, ["eval.plots=true"])
    samples = torch.full((3, 1, 2, 2), -0.25)
    image_eval._write_outputs(GaussianStandIn((1, 2, 2)), images, cfg, tmp_path, samples, samples, train, test)
    assert seen["held-out data"].tolist() == [0.5] * 3 and seen["samples"].tolist() == [0.125] * 3


def test_an_interrupted_figure_leaves_the_previous_file_whole(tmp_path):
    """Found by an audit of the SIGTERM stop during the final evaluation: ``save_figure`` wrote the PNG in place, so a
    signal (or Ctrl-C) during the drawing could leave a truncated file over the previous figure. It now writes beside
    it and renames; an interruption leaves the old file and no temporary one."""
    from matplotlib.figure import Figure

    path = tmp_path / "plots" / "samples.png"
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    plots.save_figure(fig, path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG") and [p.name for p in path.parent.iterdir()] == ["samples.png"]

    def half_then_interrupted(target, **kw):
        Path(target).write_bytes(before[:100])
        raise KeyboardInterrupt
    fig.savefig = half_then_interrupted
    with pytest.raises(KeyboardInterrupt):
        plots.save_figure(fig, path)
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["samples.png"]
