"""Mutation round 58 (docs/testing.md): known answers for what the earlier rounds left unchecked in
``training/evaluate.py``, ``training/image_eval.py``, ``training/drawing.py``, ``training/hooks.py``,
``training/logging.py``, ``training/threads.py``, ``data/pixels.py``, ``data/tabular.py`` and
``data/image_ood.py``. Each expected value is written down from a formula or a docstring's promise, on
stand-in objectives (no training)."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ebmlab.data.base import Dataset
from ebmlab.training.config import load_config
from tests.builders import GaussianStandIn
from tests.unit.test_figures_and_logs_known_answers import TF, Toy  # N((4, -4, 0), I) and its transform


def _ed(x, y):
    """Szekely's energy distance, V-statistic: 2 E|X-Y| - E|X-X'| - E|Y-Y'| (all pairs, self-pairs included)."""
    d = lambda a, b: torch.cdist(a.double(), b.double()).mean()  # noqa: E731
    return float(2 * d(x, y) - d(x, x) - d(y, y))


# ----- training/evaluate.py ----------------------------------------------------------------------------------
def _cfg(**ev):
    over = {"n_samples": 20, "plots": "false", "long_run_factor": 1, **ev}
    return load_config(None, [f"eval.{k}={v}" for k, v in over.items()])


def _toy_data():
    g = torch.Generator().manual_seed(0)
    return Dataset("toy", "vector", torch.randn(30, 3, generator=g), torch.randn(24, 3, generator=g), transform=TF,
                   dist=Toy())


def test_the_floor_noise_and_precision_compare_the_documented_sets():
    """evaluate.py's docstring: ``..._floor`` is data vs other (disjoint) data, ``..._noise`` a separate draw of
    the prior vs data, ``sample_precision`` the share of samples at or above the held-out data's 1 % quantile of the
    exact log-density. The sets replayed: ref, ref2 from seed + 11; then noise and the chains on the generator."""
    from ebmlab.training.evaluate import evaluate_vectors
    cfg = _cfg()
    m = evaluate_vectors(GaussianStandIn((3,)), _toy_data(), cfg, None, torch.Generator().manual_seed(3))
    g_cpu = torch.Generator().manual_seed(cfg.train.seed + 11)
    ref, ref2 = Toy().sample(20, g_cpu), Toy().sample(20, g_cpu)
    g = torch.Generator().manual_seed(3)
    noise = TF.to_data(torch.randn(20, 3, generator=g))
    short = TF.to_data(torch.randn(20, 3, generator=g) + 2 * torch.rand(20, 1, generator=g))
    assert m["sample_energy_distance"] == pytest.approx(_ed(short, ref), rel=1e-5)
    assert m["sample_energy_distance_floor"] == pytest.approx(_ed(ref2, ref), rel=1e-5)
    assert m["sample_energy_distance_noise"] == pytest.approx(_ed(noise, ref), rel=1e-5)
    thresh = torch.quantile(Toy().log_prob(ref2).double(), 0.01)
    assert m["sample_precision"] == pytest.approx(float((Toy().log_prob(short).double() >= thresh).float().mean()))
    thresh = torch.quantile(Toy().log_prob(ref2).double(), 0.01)
    assert m["sample_precision_floor"] == pytest.approx(float((Toy().log_prob(ref).double() >= thresh).float().mean()))


def test_the_long_run_draws_every_chain_up_to_a_thousand():
    """``n_long = min(n, 1000)``: with eval.n_samples = 150 the long run draws 150 chains and compares them with
    150 reference points."""
    from ebmlab.training.evaluate import evaluate_vectors
    obj = GaussianStandIn((3,))
    evaluate_vectors(obj, _toy_data(), _cfg(n_samples=150, long_run_factor=2), None, torch.Generator().manual_seed(3))
    assert [(c["n"], c["n_steps"]) for c in obj.calls] == [(150, None), (150, 4)]


def test_the_slice_of_user_data_holds_the_other_coordinates_at_the_held_out_mean():
    """``slice_base``: user data (no exact density) hold the coordinates beyond (x1, x2) at the held-out rows'
    mean in data coordinates (not the training rows')."""
    from ebmlab.training.evaluate import model_log_density_grid
    train = torch.zeros(6, 3)
    test = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 3.0]])  # model coordinates; x3 mean 2 -> data 2 * 2 + 0.5
    data = Dataset("mine", "vector", train, test, transform=TF)
    grid = torch.tensor([[1.0, -2.0], [4.0, -1.5]])
    pts = torch.cat([grid, torch.full((2, 1), 2 * 2.0 + 0.5)], 1)
    z = (pts - TF.shift) / TF.scale
    want = -0.5 * z.pow(2).sum(1) - 1.5 * math.log(2 * math.pi)
    assert torch.allclose(model_log_density_grid(GaussianStandIn((3,)), data, grid), want, atol=1e-5)


def test_density_kl_is_kl_of_the_true_density_from_the_model_on_the_grid():
    """``density_kl``: KL(true || model) on the (x1, x2) grid (x3 = 0), both grid-normalised; ``density_kl_uniform``:
    the uniform density's KL(true || uniform) = sum p log(p G). The grid: eval.grid_extent = 6, 7 x 7 points."""
    from ebmlab.training.evaluate import evaluate_vectors
    m = evaluate_vectors(GaussianStandIn((3,)), _toy_data(), _cfg(grid_extent=6, grid_size=7), None,
                         torch.Generator().manual_seed(3))
    ax = torch.linspace(-6.0, 6.0, 7)
    pts = torch.stack([ax.repeat_interleave(7), ax.repeat(7), torch.zeros(49)], 1)
    p_log = torch.log_softmax(Toy().log_prob(pts).double(), 0)
    z = ((pts - TF.shift) / TF.scale).double()
    q_log = torch.log_softmax(-0.5 * z.pow(2).sum(1), 0)
    p = p_log.exp()
    assert m["density_kl"] == pytest.approx(float((p * (p_log - q_log)).sum()), rel=1e-4)
    assert m["density_kl_uniform"] == pytest.approx(float((p * (p_log + math.log(49))).sum()), rel=1e-4)


class _Scored(torch.nn.Module):
    """``score`` = the sum of a row's coordinates (and a parameter: the device)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def score(self, x):
        return x.sum(1)


def test_the_held_out_gap_is_test_minus_train_over_the_training_energies_std():
    """k = min(n, rows of each split) = 2: training energies 0, 2 (mean 1, std sqrt 2), held-out 10, 14 (mean 12):
    gap 12 - 1 = 11, z = 11 / sqrt(2) (the *training* energies' std, not the held-out ones' 2 sqrt 2)."""
    from ebmlab.training.evaluate import heldout_energy_gap
    data = SimpleNamespace(train=torch.tensor([[0.0], [2.0], [7.0]]), test=torch.tensor([[10.0], [14.0]]))
    m = heldout_energy_gap(_Scored(), data)
    assert m["energy_heldout_gap"] == pytest.approx(11.0)
    assert m["energy_heldout_gap_z"] == pytest.approx(11.0 / math.sqrt(2.0))


def test_eval_keeps_the_selection_facts_and_says_whether_it_evaluated_the_selected_step(tmp_path):
    """``kept_result_facts``: the selection's entries of the old metrics.json survive ``ebmlab eval``;
    ``checkpoint_is_selected`` is whether the evaluated step is the selected one."""
    from ebmlab.training.evaluate import _evaluate_locked
    (tmp_path / "metrics.json").write_text(json.dumps({"selected_step": 5, "val_energy_distance": 0.25,
                                                       "sample_energy_distance": 9.0}))
    for step, same in ((5, True), (7, False)):
        m = _evaluate_locked(tmp_path, GaussianStandIn((3,)), _toy_data(), _cfg(), step, None)
        written = json.loads((tmp_path / "metrics.json").read_text())
        assert written["selected_step"] == 5 and written["val_energy_distance"] == 0.25
        assert written["checkpoint_is_selected"] is same and m["checkpoint_step"] == step


# ----- training/drawing.py -----------------------------------------------------------------------------------
class _Weighted(GaussianStandIn):
    """Weighted chains (paper 004's AIS generation, in miniature): chain number k of the whole draw (counted across
    calls) sits at (k, k); chain 1 carries all the weight (log-weight 0, the others -1e4). ``sample`` resamples."""

    def __init__(self):
        super().__init__((2,))
        self.k = 0

    def sample_weighted(self, n, *, generator=None, n_steps=None, x0=None, cond=None):
        idx = torch.arange(self.k, self.k + n, dtype=torch.float32)
        self.k += n
        from ebmlab.objectives.base import SampleOutput
        return SampleOutput(idx[:, None].repeat(1, 2), {}), torch.where(idx == 1, 0.0, -1e4)

    def sample(self, n, *, generator=None, n_steps=None, x0=None, cond=None):
        from ebmlab.objectives.base import resampled
        out, w = self.sample_weighted(n, generator=generator, n_steps=n_steps, x0=x0, cond=cond)
        return resampled(out, w, generator)


def test_weighted_chains_are_resampled_all_together_in_one_batch_or_several():
    """drawing.draw: weighted chains are resampled by their log-weights whether drawn as one chain of n or in
    batches (gathered, then resampled together): every sample is chain 1, the one that holds all the weight."""
    from ebmlab.training.drawing import draw
    for bs in (None, 2, 3):
        x = draw(_Weighted(), 4, torch.Generator().manual_seed(0), batch_size=bs).x
        assert torch.equal(x, torch.ones(4, 2)), bs


def test_a_subclass_that_overrides_sample_alone_is_drawn_by_its_own_sample_in_batches():
    """``_weighs_as_it_samples``: a subclass that overrides ``sample`` only inherits a ``sample_weighted`` that would
    bypass it; its own ``sample`` runs in every batch."""
    from ebmlab.objectives.base import SampleOutput
    from ebmlab.training.drawing import draw

    class Mine(_Weighted):
        def sample(self, n, *, generator=None, n_steps=None, x0=None, cond=None):
            return SampleOutput(torch.full((n, 2), 7.0), {})

    assert torch.equal(draw(Mine(), 4, torch.Generator().manual_seed(0), batch_size=2).x, torch.full((4, 2), 7.0))


def test_data_starts_are_the_held_out_rows_in_the_order_the_seed_draws():
    """``data_starts``: n <= held-out rows: distinct rows in the order of a permutation drawn from ``seed``."""
    from ebmlab.training.drawing import data_starts
    test = torch.arange(10.0).view(10, 1)
    want = test[torch.randperm(10, generator=torch.Generator().manual_seed(4))[:6]]
    assert torch.equal(data_starts(test, 6, 4, "cpu"), want)


def test_a_class_named_like_a_number_is_that_class_before_it_is_an_index():
    """class_index's docstring: folders named 1 and 2: label "1" is folder 1 (index 0); an int is always the index."""
    from ebmlab.training.drawing import class_index
    assert class_index("1", ["1", "2"]) == 0 and class_index("2", ["1", "2"]) == 1
    assert class_index(1, ["1", "2"]) == 1 and class_index("0", ["a", "b"]) == 0


# ----- training/image_eval.py --------------------------------------------------------------------------------
def test_the_vector_ood_sets_are_the_held_out_rows_shifted_by_one_and_scaled_by_one_and_a_half():
    """Module docstring: ``shifted`` = held-out + 1 in every model coordinate, ``scaled`` = held-out x 1.5 about
    the model origin."""
    from ebmlab.training.image_eval import ood_set
    data = _toy_data()
    assert torch.allclose(ood_set("shifted", data, torch.Generator()), data.test + 1.0)
    assert torch.allclose(ood_set("scaled", data, torch.Generator()), data.test * 1.5)


def test_ood_auroc_ranks_low_energy_held_out_rows_as_in_distribution():
    """``ood_auroc_<name>``: AUROC of -energy with the held-out rows as positives. Held-out rows near the origin
    (energy |z|^2 / 2 small) against rows 10 away: 1.0 (not 0.0)."""
    from ebmlab.training.image_eval import ood_extension
    data = _toy_data()
    args = SimpleNamespace(ood_inputs={"ood_auroc_far": data.test + 10.0})
    assert ood_extension(args, _cfg(), GaussianStandIn((3,)), data) == {"ood_auroc_far": 1.0}


def test_the_eval_extensions_read_the_written_samples_clamped_to_minus_one_one(tmp_path):
    """``_run_samples``: the samples ``evaluate`` wrote (data coordinates, before clamping), clamped to [-1, 1]."""
    import numpy as np
    from ebmlab.training.image_eval import _run_samples
    (tmp_path / "samples").mkdir()
    np.save(tmp_path / "samples" / "samples.npy", np.array([[[[1.5, -3.0], [0.25, -1.0]]]], np.float32))
    x = _run_samples(SimpleNamespace(run=str(tmp_path)), _cfg(), None, None)
    assert x.tolist() == [[[[1.0, -1.0], [0.25, -1.0]]]]


def test_non_finite_image_samples_are_refused_with_their_count():
    """``draw_samples``: a sample that is not finite stops the evaluation (FloatingPointError naming how many), so no
    metric is computed on it."""
    from ebmlab.objectives.base import SampleOutput
    from ebmlab.training.image_eval import draw_samples

    class Diverged(GaussianStandIn):
        def sample(self, n, **kw):
            x = torch.zeros(n, 1, 2, 2)
            x[1, 0, 0, 0] = float("nan")
            return SampleOutput(x, {})
    with pytest.raises(FloatingPointError, match="1 of 3 samples"):
        draw_samples(Diverged((1, 2, 2)), 3, torch.Generator(), batch_size=8)


def test_a_figure_says_ema_only_where_the_run_averages_its_weights():
    from ebmlab.training.image_eval import _ema_note
    assert _ema_note(load_config(None, ["train.ema=null"])) == ""
    assert _ema_note(load_config(None, ["train.ema=0.99"]), " weights") == " (EMA weights)"


# ----- training/logging.py -----------------------------------------------------------------------------------
def test_metrics_jsonl_appends_one_row_per_step_with_non_finite_values_as_text(tmp_path):
    from ebmlab.training.logging import RunLogger
    log = RunLogger(tmp_path, tensorboard=False)
    log.log(1, {"loss": 1.5})
    log.log(2, {"loss": float("nan"), "grad": float("inf")})
    rows = [json.loads(ln, parse_constant=lambda c: pytest.fail(f"{c} is no JSON number"))
            for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "loss": 1.5}, {"step": 2, "loss": "nan", "grad": "inf"}]


def test_resume_keeps_the_rows_up_to_and_including_the_checkpoints_step(tmp_path):
    from ebmlab.training.logging import RunLogger, read_metrics
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": k, "loss": k / 2}) + "\n" for k in (1, 2, 3, 4)))
    RunLogger(tmp_path, tensorboard=False).truncate_after(2)
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 1.0}]


def test_read_metrics_skips_rows_without_an_integer_step_and_damaged_lines(tmp_path):
    from ebmlab.training.logging import read_metrics
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": "2"}\n{"loss": 3}\nnot json\n{"step": 4}\n{"st')
    assert read_metrics(tmp_path) == [{"step": 1}, {"step": 4}]


class _FakeWriter:
    def __init__(self):
        self.calls = []
        self.file_writer = SimpleNamespace(add_summary=lambda s: self.calls.append(("summary",)))

    def add_scalar(self, k, v, step):
        self.calls.append(("scalar", k, v, step))

    def add_image(self, tag, pixels, step, dataformats=None):
        self.calls.append(("image", tag, step))

    def flush(self):
        self.calls.append(("flush",))

    def close(self):
        self.calls.append(("close",))


def test_hparams_write_the_finite_numeric_metrics_as_final_scalars_at_the_step(monkeypatch):
    """``write_hparams``: ``final/<name>`` for each number of metrics.json (not a bool, a text or a non-finite one),
    at the run's step; the config as "section.key" values (None as text)."""
    from ebmlab.training import logging as lg
    w = _FakeWriter()
    monkeypatch.setattr(lg, "_summary_writer", lambda d: w)
    lg.write_hparams("unused", {"train": {"lr": 0.1, "ema": None}},
                     {"fid": 2.5, "checkpoint_step": 7, "checkpoint_is_selected": True, "note": "x", "bad": float("nan")},
                     12)
    assert [c for c in w.calls if c[0] == "scalar"] == [("scalar", "final/fid", 2.5, 12),
                                                        ("scalar", "final/checkpoint_step", 7.0, 12)]
    assert w.calls[-1] == ("close",)
    assert lg.hparam_values({"train": {"lr": 0.1, "ema": None}, "eval": {"plots": True}}) == {
        "train.lr": 0.1, "train.ema": "None", "eval.plots": True}


def test_a_tensorboard_image_is_flushed_as_it_is_written(monkeypatch, tmp_path):
    """``TBMedia.image``: a sample figure reaches the event file at once (a run that is killed keeps its figures)."""
    from ebmlab.training import logging as lg
    w = _FakeWriter()
    monkeypatch.setattr(lg, "_summary_writer", lambda d: w)
    media = lg.TBMedia(tmp_path)
    media.image("samples", None, 3)
    assert w.calls == [("image", "samples", 3), ("flush",)]


# ----- training/threads.py -----------------------------------------------------------------------------------
def test_idle_threads_rounds_the_idle_cores_and_stays_between_one_and_most():
    """cores - load, rounded to the nearest count, at least 1 and at most ``most``."""
    from ebmlab.training.threads import idle_threads
    assert idle_threads(8, load=1.4, cores=4) == 3   # 2.6 idle cores: 3
    assert idle_threads(8, load=1.6, cores=4) == 2   # 2.4: 2
    assert idle_threads(8, load=5.0, cores=4) == 1   # every core busy: still one
    assert idle_threads(2, load=0.0, cores=8) == 2   # at most ``most``


def test_an_explicit_thread_count_is_not_replaced_by_the_checkpoints_on_resume():
    from ebmlab.training.threads import resume_threads
    before = torch.get_num_threads()
    try:
        resume_threads(before, torch.device("cpu"), before + 1)
        assert torch.get_num_threads() == before
        resume_threads(None, torch.device("cpu"), 1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ----- data/image_ood.py -------------------------------------------------------------------------------------
def _images(m=6):
    test = torch.arange(16.0).view(1, 1, 4, 4).repeat(m, 1, 1, 1) / 8 - 0.9375  # distinct pixels, none at -1
    return Dataset("img", "image", test.clone(), test)


def test_an_interpolated_image_is_the_pixel_average_of_two_different_held_out_images():
    """``digits_interpolated``: 0.5 (x + x[partner]); without labels the partner is another image (random pairs)."""
    from ebmlab.data.image_ood import load_ood_set
    g = torch.Generator().manual_seed(0)
    test = torch.arange(5.0).view(5, 1, 1, 1).repeat(1, 1, 2, 2) / 5  # image i: all pixels i / 5
    like = Dataset("img", "image", test.clone(), test)
    out = load_ood_set("digits_interpolated", like, g)
    partner = (2 * out[:, 0, 0, 0] - test[:, 0, 0, 0]) * 5  # the partner's index
    assert torch.allclose(partner, partner.round(), atol=1e-5) and out.abs().max() <= 1
    assert set(partner.round().long().tolist()) <= set(range(5))


# WAS A BUG: data/image_ood._partners without labels is torch.roll(perm, 1): image i's partner perm[i-1] can be i itself
# (its "interpolation" is then the held-out image unchanged); the docstring promises "the index of another one".
def test_without_labels_each_image_is_blended_with_another_image_not_itself():
    from ebmlab.data.image_ood import _partners
    test = torch.arange(5.0).view(5, 1, 1, 1)
    like = Dataset("img", "image", test.clone(), test)
    for seed in range(10):
        assert (_partners(like, torch.Generator().manual_seed(seed)) != torch.arange(5)).all(), seed


def test_an_occluded_image_has_one_half_side_square_at_the_background_anywhere_in_the_image():
    """``digits_occluded``: one (H/2 x W/2) square per image set to -1, the rest unchanged; the square may sit at
    any of the (H - H/2 + 1) x (W - W/2 + 1) places (the last row and column included)."""
    from ebmlab.data.image_ood import load_ood_set
    like = _images(200)
    out = load_ood_set("digits_occluded", like, torch.Generator().manual_seed(0))
    hit = out == -1.0
    assert (hit.flatten(1).sum(1) == 4).all()  # 2 x 2 of 4 x 4
    assert torch.equal(out[~hit], like.test[~hit])
    rows, cols = hit.any(3)[:, 0], hit.any(2)[:, 0]  # (M, 4) rows / columns the square covers
    assert (rows.sum(1) == 2).all() and (cols.sum(1) == 2).all()
    assert rows[:, 3].any() and cols[:, 3].any() and rows[:, 0].any() and cols[:, 0].any()


def test_an_image_folder_as_the_ood_set_is_every_image_in_it(tmp_path):
    """load_ood_set's docstring: a folder of images: all of it (not only the tenth its loader holds out)."""
    import numpy as np
    from PIL import Image
    from ebmlab.data.image_ood import load_ood_set
    rng = np.random.default_rng(0)
    (tmp_path / "c").mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)).save(tmp_path / "c" / f"{i}.png")
    like = Dataset("img", "image", torch.zeros(3, 3, 4, 4), torch.zeros(3, 3, 4, 4))
    assert load_ood_set(str(tmp_path), like).shape == (12, 3, 4, 4)


def test_the_image_metrics_see_the_samples_clamped_to_minus_one_one(monkeypatch):
    """evaluate_images: ``sample_out_of_range`` counts the raw values, then the metrics clamp to [-1, 1] (as saving an
    image file would)."""
    from ebmlab.metrics import novelty
    from ebmlab.training import image_eval
    raw = torch.tensor([1.5, -2.0, 0.25, -1.0]).view(1, 1, 2, 2)
    monkeypatch.setattr(image_eval, "draw_samples", lambda *a, **k: raw.clone())
    seen = []
    monkeypatch.setattr(novelty, "novelty_summary", lambda samples, train, test: seen.append(samples) or {})
    data = Dataset("img", "image", torch.zeros(3, 1, 2, 2), torch.zeros(2, 1, 2, 2))
    m = image_eval.evaluate_images(GaussianStandIn((1, 2, 2)), data, load_config(None, ["eval.n_samples=1"]), None,
                                   torch.Generator())
    assert m == {"sample_out_of_range": 0.5}
    assert seen[0].flatten().tolist() == [1.0, -1.0, 0.25, -1.0]


def test_the_training_scatter_draws_as_many_samples_as_held_out_rows_it_shows(tmp_path, monkeypatch):
    """scatter_hook: n = min(1000, eval.n_samples, held-out rows): 24 held-out rows, eval.n_samples = 50 -> 24 chains
    beside 24 rows."""
    from ebmlab import plots
    from ebmlab.training import image_eval
    seen = {}
    monkeypatch.setattr(plots, "sample_scatter", lambda sets, path, **kw: seen.update(sets))
    monkeypatch.setattr(plots, "png_array", lambda path: None)
    obj = GaussianStandIn((3,))
    trainer = SimpleNamespace(cfg=load_config(None, ["train.sample_every=5", "eval.n_samples=50"]), data=_toy_data(),
                              objective=obj, run_dir=tmp_path, step=5, ema=None, device=torch.device("cpu"),
                              tb_media=SimpleNamespace(image=lambda *a: None))
    image_eval.scatter_hook(trainer)
    assert [c["n"] for c in obj.calls] == [24] and [len(v) for v in seen.values()] == [24, 24]


# ----- data/pixels.py ----------------------------------------------------------------------------------------
def test_codes_map_to_v_over_127_5_minus_one_and_back_to_the_nearest_code():
    from ebmlab.data.pixels import codes_of, from_codes
    codes = torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8)
    assert torch.equal(from_codes(codes), codes.float() / 127.5 - 1.0)
    assert from_codes(codes)[-1] == 1.0 and from_codes(codes)[0] == -1.0
    x = torch.tensor([-1.0, 0.999, 1.5, -2.0, 0.0, 2.0 / 255 - 1 + 0.003])
    assert codes_of(x).tolist() == [0, 255, 255, 0, 128, 1]  # 0.999 -> 254.87 rounds to 255; 0 -> 127.5 -> 128


def test_mirrored_pixels_stand_for_the_left_right_mirror_images_after_the_originals():
    from ebmlab.data.pixels import Pixels, from_codes
    codes = torch.arange(2 * 3 * 4, dtype=torch.uint8).view(2, 1, 3, 4)
    p = Pixels(codes, mirrored=True)
    assert p.shape == (4, 1, 3, 4) and len(p) == 4
    dense = from_codes(torch.cat([codes, codes.flip(-1)]))
    assert torch.equal(p[:], dense)
    assert torch.equal(p[2], from_codes(codes[0].flip(-1)))  # row N + i: row i flipped left to right


# WAS A BUG: data/pixels.Pixels.__getitem__ with a tuple whose first entry is a 2-D integer index indexes the index's
# second dimension with the image axes (rows[(slice(None), *rest)]), not the channel: p[idx, 0] differs from the
# float32 split's t[idx, 0] (the module docstring: "the float32 numbers a float32 split would hold").
def test_a_two_dimensional_row_index_with_image_axes_reads_as_the_dense_split_does():
    from ebmlab.data.pixels import Pixels
    codes = torch.arange(4 * 2 * 2 * 2, dtype=torch.uint8).view(4, 2, 2, 2)
    p = Pixels(codes)
    idx = torch.tensor([[0, 1, 2], [3, 2, 1]])
    assert torch.equal(p[idx, 0], p[:][idx, 0])


@pytest.mark.parametrize("mirrored", [False, True])
def test_every_tuple_with_an_index_tensor_first_reads_as_the_dense_split_does(mirrored):
    """The fix of the test above, over the index kinds a tuple can start with (integer tensors of 0-3 dims, lists,
    NumPy arrays, masks) combined with basic and advanced image-axis indices: the same values and shape as indexing
    the float32 split itself."""
    from ebmlab.data.pixels import Pixels
    codes = torch.randint(0, 256, (5, 2, 3, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    p = Pixels(codes, mirrored=mirrored)
    t = p[:]  # the dense split (10 rows when mirrored)
    firsts = [torch.tensor([[0, 4, 2], [3, 2, 1]]), torch.tensor([[[1]], [[0]]]), [4, 0, 4], np.array([2, 1]),
              torch.tensor([True, False, True, True, False] * (2 if mirrored else 1)), torch.tensor([], dtype=torch.long)]
    rests = [(0,), (slice(None), 1), (Ellipsis, 2), (1, torch.tensor([0, 2])), (slice(0, 1), slice(None), -1),
             (torch.tensor([[0], [1]]),), (None, 1)]
    compared = 0
    for first in firsts:
        for rest in rests:
            try:
                want = t[(first, *rest)]
            except (IndexError, RuntimeError):
                continue  # (a combination the float32 split refuses too: 4 of the 42)
            got = p[(first, *rest)]
            assert got.shape == want.shape and torch.equal(got, want), (first, rest)
            compared += 1
    assert compared >= 30


# ----- training/hooks.py -------------------------------------------------------------------------------------
def test_the_hooks_name_every_figure_and_every_eval_option_the_module_docstring_lists():
    """SAMPLE_HOOKS: the image grid and the vector scatter; EVAL_EXTENSIONS: --fid, --digits-fd, --ood and
    --heldout-draws."""
    from ebmlab.training import heldout, hooks, image_eval
    assert hooks.SAMPLE_HOOKS == [image_eval.grid_hook, image_eval.scatter_hook]
    assert hooks.eval_extensions() == [image_eval.fid_extension, image_eval.digits_extension,
                                       image_eval.ood_extension, heldout.draws_extension]
