"""Round 24 audit (a read-only helper, 2026-12-07): float64 user vectors (``Affine.dtype``) and weighted (AIS) draws in
batches (docs/testing.md, "Twenty-fourth round").

Tests marked ``# WAS A BUG`` failed on the code they were written against (commit ``30a07c5``) and pass with its fix;
the rest pin behaviour checked correct.
"""
import contextlib
import json
import warnings

import numpy as np
import pytest
import torch

from ebmlab.data import build_dataset
from ebmlab.data.dataset import array_dataset
from ebmlab.objectives import build_objective
from ebmlab.samplers import progress as progress_mod
from ebmlab.training import drawing
from ebmlab.training.config import load_config
from tests.contracts.test_objective_contract import tiny_overrides
from tests.unit.test_metamorphic_relations import _TwoWells  # -log [0.8 N((-2, 0), .25 I) + 0.2 N((2, 0), .25 I)]

OFFSET = 1e7  # float32's spacing there is 1.0: a spread of ~1 is erased by a float32 round trip


def _rows64():
    g = torch.Generator().manual_seed(0)
    return torch.randn(300, 2, generator=g, dtype=torch.float64) @ torch.tensor([[1.0, 0.6], [0.0, 0.8]],
                                                                                  dtype=torch.float64)


# ----- float64 user vectors -------------------------------------------------------------------------------------
def _density_panel(x, tmp_path, monkeypatch):
    """The evaluation's model-density panel and its x axis for array data ``x`` (float64), one objective's weights."""
    from ebmlab.training import evaluate as ev

    cfg = load_config(None, tiny_overrides("hybrid"))
    data = array_dataset(x, cfg.data, "x")
    torch.manual_seed(0)
    obj = build_objective(cfg, data).eval()
    seen = {}

    def capture(panels, xs, ys, path, **kw):
        seen.update(panels=panels, xs=xs)
    monkeypatch.setattr(ev.plots, "density_maps", capture)
    ev._density_metrics(obj, data, cfg, tmp_path)
    return seen["panels"]["model density"], seen["xs"]


def test_density_grid_of_float64_data_at_1e7_keeps_its_resolution(tmp_path, monkeypatch):
    # WAS A BUG: metrics/density.make_grid built the grid with torch.linspace in float32 (evaluate passes the
    # data's bounding box around 1e7), so the (x1, x2) density map of std-1 data at 1e7 has ~6 distinct columns of 64
    # and density.png / model_log_density_grid are read at points rounded by up to 0.5
    x = _rows64()
    lp0, xs0 = _density_panel(x, tmp_path / "a", monkeypatch)
    lp7, xs7 = _density_panel(x + OFFSET, tmp_path / "b", monkeypatch)
    assert len(torch.unique(xs7)) == len(xs7)
    torch.testing.assert_close((xs7.double() - OFFSET), xs0.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(lp7, lp0, atol=1e-3, rtol=0)  # the same model rows: the same density map


def test_compare_figure_reads_float64_samples_without_rounding(tmp_path):
    # WAS A BUG: experiments/compare_figure._samples read each run's samples/samples.npy as float32,
    # so `ebmlab compare --out` plotted a float64 run's samples at 1e7 on a grid of whole numbers
    from ebmlab.experiments.compare_figure import _samples

    x = (_rows64()[:50] + OFFSET).numpy()
    (tmp_path / "samples").mkdir()
    np.save(tmp_path / "samples" / "samples.npy", x)
    got = _samples(tmp_path, (2,), "vector", [])
    assert np.array_equal(got.double().numpy(), x)


def test_affine_float64_round_trip_and_dtypes():
    from ebmlab.data.dataset import _standardiser

    x = _rows64() + OFFSET
    tf = _standardiser(x, True)
    assert tf.dtype == torch.float64
    z = tf.to_model(x)
    assert z.dtype == torch.float32
    back = tf.to_data(z)
    assert back.dtype == torch.float64
    assert float((back - x).abs().max()) < 1e-5  # float32 z rounds by ~1e-7 std, not float32's 0.5 at 1e7
    assert tf.to_model(x.float()).dtype == torch.float32  # float32 input (already rounded) still gives float32 rows
    f32 = _standardiser(x.float(), True)
    assert f32.dtype == torch.float32 and not f32.same_as(tf)


def test_stored_transform_keeps_float64_exactly():
    from ebmlab.data.dataset import _standardiser
    from ebmlab.training.run_data import stored_transform, transform_info

    tf = _standardiser(_rows64() + OFFSET, True, whiten=True)
    info = json.loads(json.dumps(transform_info(tf, "vector")))
    assert info["dtype"] == "float64"
    back = stored_transform(info)
    assert back.same_as(tf) and back.matrix.dtype == torch.float32
    old = {k: v for k, v in info.items() if k != "dtype"}  # run.json before float64 rows: float32
    assert stored_transform(old).dtype == torch.float32


def test_ood_in_memory_float32_and_float64_arrays_read_in_the_runs_precision():
    from ebmlab.api_data import ood_inputs

    x = (_rows64()[:10] + OFFSET).numpy()
    _, a = ood_inputs({"a": x}, (2,), "vector", torch.float64)
    assert a["a"].dtype == torch.float64 and np.array_equal(a["a"].numpy(), x)
    _, b = ood_inputs({"a": x}, (2,), "vector", torch.float32)
    assert b["a"].dtype == torch.float32


@pytest.fixture(scope="module")
def run64(tmp_path_factory):
    """A hybrid run (3 updates, no selection) on float64 rows at 1e7 given in memory."""
    import ebmlab

    out = tmp_path_factory.mktemp("r64") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ebmlab.train("hybrid", (_rows64() + OFFSET).numpy(), out=out, evaluate=False,
                            overrides={"model.width": 16, "model.depth": 1, "train.batch_size": 16,
                                       "method.n_steps": 3, "method.n_steps_data": 2, "train.select_every": None},
                            train={"steps": 3, "threads": 1, "progress": False})


def test_float64_run_files_and_dtypes(run64):
    assert np.load(run64.path / "data.npy").dtype == np.float64
    assert json.loads((run64.path / "run.json").read_text())["transform"]["dtype"] == "float64"
    assert run64.transform.dtype == torch.float64
    for kw in ({}, {"init": "data"}, {"steps": 0}, {"batch_size": 3}, {"init": (_rows64()[:7] + OFFSET).numpy()}):
        s = run64.sample(7, seed=1, **kw)
        assert s.dtype == torch.float64 and float(((s - OFFSET) % 1.0 != 0).double().mean()) > 0.5, kw


def test_float64_run_log_density_and_energy_agree_for_arrays_tensors_and_lists(run64):
    x = run64.sample(6, seed=2)
    ref = run64.log_density(x)
    assert torch.equal(run64.log_density(x.numpy()), ref)
    assert torch.equal(run64.log_density(x.tolist()), ref)
    e = run64(x)
    assert torch.equal(run64(x.numpy()), e)
    # the same points a float32 run would see only if they survive float32: they do not at 1e7
    assert not torch.equal(run64.log_density(x.float()), ref)


def test_cli_sample_batch_size_matches_run_sample_in_float64(run64, tmp_path):
    from ebmlab import cli

    for k in (None, 3):
        out = tmp_path / f"s{k}.npy"
        argv = ["sample", str(run64.path), "--n", "8", "--seed", "4", "--out", str(out)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert cli.main(argv + ([] if k is None else ["--batch-size", str(k)])) == 0
        got = np.load(out)
        assert got.dtype == np.float64
        assert np.array_equal(got, run64.sample(8, seed=4, batch_size=k).numpy())


def test_float64_run_reopened_data_keep_the_stored_transform(run64):
    import ebmlab

    run = ebmlab.load(run64.path)
    d = run.data()
    assert d.transform.same_as(run64.transform) and d.train.dtype == torch.float32
    held = d.transform.to_data(d.test)
    assert held.dtype == torch.float64 and float((held - OFFSET).abs().max()) < 10


# ----- weighted draws ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["hybrid", "noise"])
def ais_objective(request):
    cfg = load_config(None, tiny_overrides(request.param) + ["method.n_steps=4"])
    assert cfg.method.noise_chain == "ais"
    torch.manual_seed(0)
    obj = build_objective(cfg, build_dataset(cfg.data)).eval()
    obj.energy = _TwoWells()
    return obj


@contextlib.contextmanager
def _counted(rec):
    @contextlib.contextmanager
    def fake(total, desc="sample", enabled=True):
        rec.update(total=total, ticks=0)
        token = progress_mod._TICK.set(lambda: rec.__setitem__("ticks", rec["ticks"] + 1))
        try:
            yield
        finally:
            progress_mod._TICK.reset(token)
    old = drawing.sampling_progress
    drawing.sampling_progress = fake
    try:
        yield
    finally:
        drawing.sampling_progress = old


@pytest.mark.parametrize("n,k,steps", [(50, None, None), (50, 1, None), (53, 10, None), (1, 1, None), (1, 5, None),
                                       (10, 3, 0), (10, 3, 2)])
def test_weighted_draw_shapes_progress_total_and_ess(ais_objective, n, k, steps):
    rec = {}
    with _counted(rec), torch.no_grad():
        out = drawing.draw(ais_objective, n, torch.Generator().manual_seed(0), batch_size=k, steps=steps, progress=True)
    assert out.x.shape == (n, 2) and torch.isfinite(out.x).all()
    assert rec["ticks"] == rec["total"] == ais_objective.steps_run(steps) * -(-n // (k or n))
    if steps == 0:
        assert "ais_ess" not in out.info  # 0 steps: the start points, unweighted
    else:
        ess = float(out.info["ais_ess"])
        assert 1.0 - 1e-6 <= ess <= n + 1e-4  # the ESS of all n chains, not the first batch's


@pytest.mark.parametrize("k", [2, 7, 100])
def test_weighted_draw_left_well_share_for_uneven_batches(ais_objective, k):
    """513 draws in batches of k (the last one short): the left share stays at the truth 0.8 (one batch: 0.79)."""
    with torch.no_grad():
        x = drawing.draw(ais_objective, 513, torch.Generator().manual_seed(1), batch_size=k).x
    assert abs(float((x[:, 0] < 0).float().mean()) - 0.8) < 0.1


def test_weighted_draw_from_data_starts_has_no_weights(ais_objective):
    x0 = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = drawing.draw(ais_objective, 10, torch.Generator().manual_seed(0), x0=x0)
        parts = drawing.draw(ais_objective, 10, torch.Generator().manual_seed(0), x0=x0, batch_size=3)
        first = drawing.draw(ais_objective, 3, torch.Generator().manual_seed(0), x0=x0[:3])
    assert "ais_ess" not in whole.info and "ais_ess" not in parts.info
    assert torch.equal(parts.x[:3], first.x)  # unweighted chunks are the draws of their own starts, in order
    assert parts.x.shape == whole.x.shape


def test_weighted_batches_of_one_keep_every_chains_weight():
    """Chains of equal weight (the energy's base at beta 1 equal to N(0, I)): resampled together, every chain once."""
    from ebmlab.objectives.base import SampleOutput, resampled

    x = torch.arange(6.0).view(6, 1)
    out = resampled(SampleOutput(x, {}), torch.zeros(6), torch.Generator().manual_seed(0))
    assert torch.equal(out.x.sort(0).values, x) and float(out.info["ais_ess"]) == pytest.approx(6.0)
    out = resampled(SampleOutput(x, {}), torch.tensor([0.0, -1e9, -1e9, -1e9, -1e9, -1e9]))
    assert torch.equal(out.x, torch.zeros(6, 1)) and float(out.info["ais_ess"]) == pytest.approx(1.0)


def test_a_subclass_that_overrides_sample_alone_is_drawn_by_its_own_sample(ais_objective):
    # WAS A BUG: training/drawing._draw_one called ``sample_weighted`` whenever the objective had one, so a subclass
    # of paper 004's scheme overriding ``sample`` alone inherited ContrastiveDivergence.sample_weighted and its own
    # ``sample`` never ran in a draw in batches (Run.sample(batch_size=k), ebmlab sample --batch-size)
    base = type(ais_objective)

    class Marked(base):
        def sample(self, n, **kw):
            out = super().sample(n, **kw)
            return out._replace(x=torch.full_like(out.x, 7.0))

    ais_objective.__class__ = Marked
    try:
        for k in (None, 3):
            x = drawing.draw(ais_objective, 10, torch.Generator().manual_seed(0), batch_size=k).x
            assert torch.equal(x, torch.full_like(x, 7.0)), k
    finally:
        ais_objective.__class__ = base


def test_a_subclass_overriding_both_keeps_the_pooled_resampling(ais_objective):
    base = type(ais_objective)
    calls = []

    class Both(base):
        def sample(self, n, **kw):
            return super().sample(n, **kw)

        def sample_weighted(self, n, **kw):
            calls.append(n)
            return super().sample_weighted(n, **kw)

    ais_objective.__class__ = Both
    try:
        out = drawing.draw(ais_objective, 10, torch.Generator().manual_seed(0), batch_size=4)
    finally:
        ais_objective.__class__ = base
    assert calls == [4, 4, 2] and "ais_ess" in out.info
