"""Figures a researcher could put in a paper (issue 14): labelled axes, one colour scale with a colorbar
for compared densities, equal point counts across compared sample panels, the target acceptance on chain
plots, clipped tails stated; and TensorBoard: hyper-parameters with the final metrics, sample images.

The figures are inspected as matplotlib objects (``plots.save_figure`` is wrapped to keep them), not as pixels.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab import plots
from ebmlab.metrics.density import make_grid


def _plot_axes(fig):
    """The axes of a figure that are not colorbars."""
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]


def test_density_maps_share_one_colour_scale_with_a_colorbar(tmp_path, figures):
    grid, xs, ys = make_grid(2.0, 20)
    panels = {"true density": -(grid ** 2).sum(1), "model density": -4 * (grid ** 2).sum(1)}
    plots.density_maps(panels, xs, ys, tmp_path / "d.png", title="t")
    fig = figures[-1]
    axes = _plot_axes(fig)
    assert len(axes) == 2 and len(fig.axes) == 3  # one colorbar for both panels
    lims = {ax.images[0].get_clim() for ax in axes}
    assert len(lims) == 1  # the same normalisation in every panel
    assert all(ax.get_xlabel() for ax in axes) and axes[0].get_ylabel()
    assert fig.axes[-1].get_ylabel().startswith("density")
    assert fig.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"


def test_sample_panels_hold_equal_point_counts(tmp_path, figures):
    sets = {"data": torch.randn(2000, 3), "short run": torch.randn(1000, 3), "long run": torch.randn(500, 3)}
    plots.sample_scatter(sets, tmp_path / "s.png", extent=3.0, title="x")
    fig = figures[-1]
    counts = [len(ax.collections[0].get_offsets()) for ax in _plot_axes(fig)]
    assert counts == [500, 500, 500]
    assert "500 points per panel" in fig._suptitle.get_text()
    assert all(ax.get_xlabel() for ax in _plot_axes(fig)) and _plot_axes(fig)[0].get_ylabel()


def test_chain_plot_draws_the_target_acceptance_against_sampler_steps(tmp_path, figures):
    diag = {"accept_rate": torch.rand(30), "step_size": torch.linspace(0.1, 0.2, 30), "energy": torch.randn(30)}
    plots.chain_curves(diag, tmp_path / "c.png", target_accept=0.574)
    axes = _plot_axes(figures[-1])
    assert [ax.get_xlabel() for ax in axes] == ["sampler step"] * 3
    assert all(ax.get_ylabel() for ax in axes)
    acc = axes[0]
    assert any(np.allclose(line.get_ydata(), 0.574) for line in acc.get_lines())  # the target line


def test_energy_histograms_state_what_lies_outside_the_range(tmp_path, figures):
    e = torch.cat([torch.randn(1000), torch.tensor([1e6, -1e6])])
    plots.energy_histograms({"data": e, "samples": torch.randn(1002)}, tmp_path / "e.png")
    ax = _plot_axes(figures[-1])[0]
    labels = [t.get_text() for t in figures[-1].legends[0].get_texts()]
    assert "outside the range" in labels[0] and "n=1,002" in labels[0]
    assert ax.get_xlabel().startswith("energy") and ax.get_ylabel() == "density"


def test_data_box_fits_data_of_any_spread_and_pads_a_constant_coordinate():
    """The box is the data's own range plus the margin, at a spread of 1e-10 as at 1e4 (a floor of 1e-6 on the
    range squashed small-unit data into a thousandth of the plot); a constant coordinate still gets a box."""
    for unit in (1e-10, 1.0, 1e4):
        x = torch.tensor([[0.0, -1.0], [2.0, 3.0]], dtype=torch.float64) * unit
        assert np.allclose(plots.data_box(x, 0.25), np.array([-0.5, 2.5, -2.0, 4.0]) * unit, rtol=1e-9, atol=0)
    x0, x1, y0, y1 = plots.data_box(torch.tensor([[5.0, 0.0], [5.0, 0.0]]), 0.5)
    assert x0 < 5.0 < x1 and x1 - x0 == pytest.approx(5e-3) and (y0, y1) == (-0.5, 0.5)


def test_energy_histograms_of_a_set_wholly_outside_the_range_warn_of_nothing(tmp_path, figures):
    """Two held-out rows (a 25-row table) both beyond the pooled percentiles: numpy's "invalid value encountered
    in divide" of an empty density histogram leaked to the user's terminal."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.energy_histograms({"held-out data": torch.tensor([1e6, -1e6]), "samples": torch.randn(1000)},
                                tmp_path / "e.png")
    labels = [t.get_text() for t in figures[-1].legends[0].get_texts()]
    assert "2 outside the range" in labels[0]


def test_run_figures_and_tensorboard(tmp_path, figures):
    """A vector run with train.sample_every: labelled figures, no "KL=nan", TensorBoard sample images
    and hyper-parameters with the final metrics; metrics.jsonl keeps its format."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x = np.random.default_rng(0).normal([4.0, -2.0, 0.0], [1.0, 0.3, 2.0], (300, 3))
    run = ebmlab.train("hybrid", data=x, out=tmp_path / "r", model={"width": 16},
                       train={"steps": 20, "sample_every": 10, "progress": False, "batch_size": 64},
                       eval={"n_samples": 64, "grid_size": 12, "long_run_factor": 2})
    out = tmp_path / "r"
    for name in ("density.png", "samples.png", "energy_hist.png", "chain.png"):
        assert (out / "plots" / name).is_file()
    assert (out / "samples" / "scatter_step000010.png").is_file() and (out / "samples" / "scatter_step000020.png").is_file()
    for fig in figures:
        for ax in _plot_axes(fig):
            assert ax.get_xlabel(), fig
        title = fig._suptitle.get_text() if fig._suptitle else ""
        assert "nan" not in title.lower()
    ea = EventAccumulator(str(out / "tb"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    # the periodic scatters at 10 and 20, and the run's result (the --data defaults select among the checks)
    # at the end under its own name
    assert (out / "samples" / f"scatter_selected_step{run.checkpoint_step:06d}.png").is_file()
    assert "samples" in tags["images"] and len(ea.Images("samples")) == 3
    assert "loss" in tags["scalars"] and "final/sample_energy_distance" in tags["scalars"]
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(ea.PluginTagToContent("hparams"))
    rows = [__import__("json").loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(r["step"], int) and "loss" in r for r in rows)
    assert run.metrics["density_kl_skipped"] == "no exact density for user data"
