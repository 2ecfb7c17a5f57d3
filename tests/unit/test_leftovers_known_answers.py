"""Known answers for what earlier mutation rounds left (docs/testing.md, seventeenth round): the figures that need a
trained model (paper 000's Fig. 5, paper 002's sampling figures, paper 003's application figures and guidance
grids), driven by stand-ins whose output is known by hand; the rank-local checkpoint files of a run on several
processes (what each rank writes, its random states, the barriers' order, pruning), in the one-process two-rank
world of round 11; the keys an old run's config gets when a newer version added them; and ``busy_elsewhere``'s
load-average fallback where ``/proc`` is absent. No training, no experiment, no process group.
"""
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from ebmlab import plots
from ebmlab.data.base import Affine
from ebmlab.metrics.density import make_grid
from ebmlab.training import checkpoint as ckpt
from ebmlab.training import dist_checkpoint
from tests.unit.test_interface_known_answers import TwoRanks, _keep_the_processs_threads_and_random_state  # noqa: F401
from tests.unit.test_interface_known_answers import _trainer_on

SHIFT, SCALE = torch.tensor([1.0, -2.0]), torch.tensor([2.0, 3.0])  # data = 2 z + 1, 3 z - 2


def _affine():
    return Affine(shift=SHIFT.clone(), scale=SCALE.clone())


# ----- paper 000 Fig. 5 (annealing_figure) ----------------------------------------------------------------------
class _AnnealingStandIn:
    """Ten levels 90, 80, .., 0; E(z) = |z - c|^2 / 2; a chain's snapshot at stage s is its start moved by
    (s, +1) for simulated annealing and (s, -1) for soft annealing (so every panel's points are known)."""
    plain = True
    alpha = torch.zeros(1)
    c = torch.tensor([0.3, -0.2])

    def __init__(self):
        self.calls = []

    def annealing_levels(self):
        return list(range(90, -1, -10))

    def n_stages(self, algorithm=None):
        return 10

    def prior(self, n, g):
        return torch.randn(n, 2, generator=g) * 0.1

    def energy(self, z):
        return 0.5 * (z - self.c).pow(2).sum(1)

    def generate(self, n, algorithm, generator, x0, keep):
        self.calls.append((algorithm, list(keep)))
        sign = {"annealing": 1.0, "soft": -1.0}[algorithm]
        snaps = {s: x0 + torch.tensor([float(s), sign]) for s in keep}
        return SimpleNamespace(info={"snapshots": snaps, "level": torch.tensor(self.annealing_levels())})


def test_paper000_fig5_shows_each_algorithms_chains_at_five_stages_ending_on_the_data_level(tmp_path, figures):
    from ebmlab.experiments.paper000 import annealing_figure

    obj = _AnnealingStandIn()
    test = torch.tensor([[0.2, 0.1], [-0.3, 0.4]])  # model coordinates: data extent max(|-0.6+1|..) = 2.2
    data = SimpleNamespace(transform=_affine(), test=test, dist=SimpleNamespace(log_prob=lambda x: -x.pow(2).sum(1)))
    annealing_figure(obj, data, tmp_path / "fig5.png", n=50)
    stages = [0, 2, 4, 7, 9]  # round(i * 9 / 4) for i = 0..4: the first and the last level (t = 0, the data's)
    assert [c[0] for c in obj.calls] == ["annealing", "soft"] and all(c[1] == stages for c in obj.calls)
    fig = figures[-1]
    axes = fig.axes
    ncol = len(stages) + 1
    ext = float(_affine().to_data(test).abs().max()) * 1.15
    grid, _, _ = make_grid(ext, 100)
    want_density = torch.softmax(-obj.energy(_affine().to_model(grid)).double(), 0).view(100, 100)
    x0 = obj.prior(50, torch.Generator().manual_seed(0))
    for row, (kind, sign) in enumerate((("annealing", 1.0), ("soft", -1.0))):
        assert axes[row * ncol].get_ylabel().startswith(f"{kind}:")
        for col, s in enumerate(stages):
            ax = axes[row * ncol + col]
            assert ax.get_title() == f"{kind} t={90 - 10 * s}"  # the level the stage targets, not its index
            pts = torch.as_tensor(ax.collections[0].get_offsets().data, dtype=torch.float32)
            want = _affine().to_data(x0 + torch.tensor([float(s), sign]))  # this algorithm's chains, data units
            assert torch.allclose(pts, want, atol=1e-5)
            img = torch.as_tensor(ax.images[0].get_array().data, dtype=torch.float64)
            assert torch.allclose(img, want_density, rtol=1e-4, atol=1e-9)  # the density at the data-unit grid
        assert axes[row * ncol + len(stages)].get_title() == "ground truth"


# ----- paper 002's sampling figures (sampling_figures) -------------------------------------------------------------
class _ChainStandIn:
    """T = 4, K = 1; the kept path's entry t is every chain at value t (plus 10 x its index for images)."""

    def __init__(self, shape):
        self.cfg, self.shape = SimpleNamespace(T=4, K=1), shape

    def prior(self, n, g):
        return torch.zeros(n, *self.shape)

    def generate(self, x0, generator=None, keep_path=False):
        n = len(x0)
        chain = torch.arange(n, dtype=torch.float32).view(n, *[1] * len(self.shape)) * 10 * (len(self.shape) > 1)
        path = torch.stack([chain + t + torch.zeros(n, *self.shape) for t in range(5)])
        return path[-1], path, {}


def _strip(obj, n_points, n_pairs, generator):
    return torch.arange(n_pairs * n_points * 2, dtype=torch.float32).view(n_pairs, n_points, 2) / 100


def test_paper002_toy_figure_labels_each_kept_time_and_draws_the_interpolation_in_data_units(tmp_path, monkeypatch):
    from ebmlab.experiments import paper002

    sets_seen, strips = [], []
    monkeypatch.setattr(paper002, "interpolate", _strip)
    monkeypatch.setattr(plots, "sample_scatter", lambda sets, path, **kw: sets_seen.append((path.name, sets)))
    monkeypatch.setattr(paper002, "toy_interpolation_plot", lambda strip, ref, ext, path: strips.append((strip, ref)))
    test = torch.tensor([[0.5, 0.25], [-1.0, 0.0]])
    data = SimpleNamespace(kind="vector", transform=_affine(), test=test)
    paper002.sampling_figures(tmp_path, SimpleNamespace(data=data, objective=_ChainStandIn((2,))), suffix="_a")
    (name, sets), = sets_seen
    assert name == "sampling_process_a.png"
    # path[i] is the chains after i time steps: x_T, then after t = T, T-1, .., 1 (t = 1 gives the samples)
    assert list(sets) == ["start t=T (noise)", "after t=4", "after t=3", "after t=2", "after t=1"]
    for i, value in enumerate(sets.values()):
        assert torch.allclose(value, _affine().to_data(torch.full((1500, 2), float(i))))
    (strip, ref), = strips
    assert torch.allclose(strip, _affine().to_data(_strip(None, 10, 6, None)))  # data units, like the held-out rows
    assert torch.allclose(ref, _affine().to_data(test))


def test_paper002_image_figure_shows_one_chain_per_row_from_x_T_through_every_time(tmp_path, monkeypatch):
    from ebmlab.experiments import paper002

    grids = []
    monkeypatch.setattr(paper002, "interpolate", lambda obj, n_points, n_pairs, generator: torch.zeros(
        n_pairs, n_points, 1, 2, 2))
    monkeypatch.setattr(plots, "image_grid", lambda x, path, nrow=None, title="": grids.append((path.name, x, nrow)))
    tf = Affine(shift=torch.tensor(0.5), scale=torch.tensor(2.0))
    data = SimpleNamespace(kind="image", transform=tf, test=torch.zeros(3, 1, 2, 2))
    paper002.sampling_figures(tmp_path, SimpleNamespace(data=data, objective=_ChainStandIn((1, 2, 2))))
    (name, x, nrow), (name2, strip, nrow2) = grids
    assert name == "sampling_process.png" and nrow == 5 and x.shape == (8 * 5, 1, 2, 2)
    for j in range(8):  # row j: chain j at t = 0 (x_T) .. 4, i.e. 10 j + t in model units
        for t in range(5):
            assert torch.all(x[j * 5 + t] == (10 * j + t) * 2.0 + 0.5)
    assert name2 == "interpolation.png" and nrow2 == 10 and strip.shape == (60, 1, 2, 2)


# ----- paper 003's application figures and guidance grids ----------------------------------------------------------
def test_paper003_inpainting_hides_the_bottom_half_and_shows_observed_filled_truth_and_composition_thin_then_thick(
        tmp_path, monkeypatch):
    from ebmlab.applications import inpainting, recovery_composition
    from ebmlab.experiments import paper003

    seen, grids = {}, []

    def inpaint(obj, x, mask, generator=None):
        seen["mask"], seen["inpaint_seed"] = mask.clone(), generator.initial_seed()
        return torch.full_like(x, 0.25)

    def composed_sample(obj, concepts, w, generator=None):
        seen.setdefault("concepts", []).append(([c.tolist() for c in concepts], w, generator.initial_seed()))
        return torch.full((12, 1, 4, 4), float(concepts[1][0]) / 100)

    monkeypatch.setattr(inpainting, "inpaint", inpaint)
    monkeypatch.setattr(recovery_composition, "composed_sample", composed_sample)
    monkeypatch.setattr(plots, "image_grid", lambda x, path, nrow=None, title="": grids.append((path.name, x, nrow)))
    test = torch.linspace(-0.9, 0.9, 20 * 16).view(20, 1, 4, 4)
    paper003.applications_figures(tmp_path, object(), SimpleNamespace(test=test, num_classes=10))
    x = test[:12]
    mask = seen["mask"]
    assert torch.all(mask[..., :2, :] == 1) and torch.all(mask[..., 2:, :] == 0)  # rows 2, 3 of 4: the bottom half
    observed = x.clone()
    observed[..., 2:, :] = -1.0
    (name, grid, nrow), (name2, comp, nrow2) = grids
    assert name == "inpainting_digits.png" and nrow == 12
    assert torch.equal(grid, torch.cat([observed, torch.full_like(x, 0.25), x]))  # observed / inpainted / truth
    # digit 1 AND thin (attribute label C + 0 = 10) on the top row, AND thick (C + 1 = 11) on the bottom
    assert seen["concepts"] == [([[1] * 12, [10] * 12], paper003.COMPOSE_W, 22),
                                ([[1] * 12, [11] * 12], paper003.COMPOSE_W, 23)]
    assert name2 == "composition_digits.png" and nrow2 == 12
    assert torch.allclose(comp[:12], torch.full((12, 1, 4, 4), 0.10)) and torch.allclose(comp[12:], torch.full(
        (12, 1, 4, 4), 0.11))


def test_paper003_guidance_grids_show_eight_samples_of_each_class_one_class_per_row(tmp_path, monkeypatch):
    from ebmlab.applications import guidance
    from ebmlab.experiments import paper003
    from ebmlab.metrics import digits

    grids = []
    monkeypatch.setattr(guidance, "guided_sample", lambda obj, labels, w, generator=None: (
        labels.float() / 10 + w / 100).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone())
    monkeypatch.setattr(digits, "get_classifier", lambda: SimpleNamespace(
        classify=lambda x: ((x[:, 0, 0, 0] * 10).floor().long(), None)))
    monkeypatch.setattr(digits, "digits_metrics", lambda x, generator=None: {"digits_fd": 1.0, "digits_fd_floor": 0.5})
    monkeypatch.setattr(plots, "image_grid", lambda x, path, nrow=None, title="": grids.append((path.name, x, nrow)))
    out = paper003.guidance_metrics(tmp_path, object(), per_class=9)
    assert [g[0] for g in grids] == [f"guidance_w{w:g}.png" for w in paper003.WEIGHTS]
    for (_, x, nrow), w in zip(grids, paper003.WEIGHTS):
        assert nrow == 8 and x.shape[0] == 80
        for c in range(10):  # row c: the first 8 of class c's 9 samples
            assert torch.allclose(x[8 * c:8 * c + 8], torch.full((8, 1, 2, 2), c / 10 + w / 100))
    assert out["class_accuracy_w0"] == 1.0


# ----- rank-local checkpoint files (dist_checkpoint.py, Trainer.save) ----------------------------------------------
def test_a_ranks_file_holds_its_own_generators_and_buffers_but_no_parameters_and_restores_them(tmp_path, monkeypatch):
    trainer = _trainer_on(1, TwoRanks(monkeypatch), tmp_path, monkeypatch)
    trainer.step = 3
    torch.randn(5)  # the process's stream, the data stream and the chains' stream all at different places
    torch.randn(3, generator=trainer.g_data)
    states = {"rng.torch": torch.get_rng_state(), "rng.data": trainer.g_data.get_state(),
              "rng.objective": trainer.g_obj.get_state()}
    trainer.save()
    tensors, meta = dist_checkpoint.read_rank_file(dist_checkpoint.rank_file(tmp_path / "run" / "checkpoints", 3, 1))
    for key, state in states.items():
        assert torch.equal(tensors[key], state), key
    params = {f"model.{k}" for k, _ in trainer.objective.named_parameters(remove_duplicate=False)}
    buffers = {f"model.{k}" for k in trainer.objective.state_dict()} - params
    assert not params & tensors.keys() and buffers <= tensors.keys()
    assert (meta["rank"], meta["world_size"], meta["step"]) == ("1", "2", "3")
    torch.randn(7), torch.randn(7, generator=trainer.g_data), torch.randn(7, generator=trainer.g_obj)  # move on
    dist_checkpoint.restore_rank_state(trainer, {"world_size": 2})
    for key, state in (("rng.torch", torch.get_rng_state()), ("rng.data", trainer.g_data.get_state()),
                       ("rng.objective", trainer.g_obj.get_state())):
        assert torch.equal(state, states[key]), key


def test_rank_zero_saves_its_rank_file_then_a_barrier_then_the_shared_checkpoint_then_a_barrier(tmp_path, monkeypatch):
    world = TwoRanks(monkeypatch)
    log = []
    monkeypatch.setattr(dist_checkpoint, "verify_replicas", lambda obj, ctx: log.append("verify"))
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: log.append("barrier"))
    trainer = _trainer_on(0, world, tmp_path, monkeypatch)
    write, save = ckpt._atomic_write, ckpt.save_checkpoint
    monkeypatch.setattr(ckpt, "_atomic_write", lambda path, fn: (".rank" in Path(path).name and log.append(
        Path(path).name)) or write(path, fn))  # (the shared checkpoint's own files: "shared N" below)
    monkeypatch.setattr(ckpt, "save_checkpoint", lambda d, step, *a, **k: log.append(f"shared {step}") or save(
        d, step, *a, **k))
    trainer.step = 3
    log.clear()
    trainer.save()
    assert log == ["verify", "step_00000003.rank0.safetensors", "barrier", "shared 3", "barrier"]


def test_rank_files_whose_shared_checkpoint_was_pruned_are_deleted_and_the_others_kept(tmp_path):
    d = tmp_path / "checkpoints"
    ckpt.save_checkpoint(d, 6, {"w": torch.zeros(2)}, {})
    for step in (3, 6):
        for rank in (0, 1):
            dist_checkpoint.rank_file(d, step, rank).write_bytes(b"x")
    dist_checkpoint.prune_rank_files(d)
    assert sorted(p.name for p in d.glob("*.rank*")) == ["step_00000006.rank0.safetensors",
                                                         "step_00000006.rank1.safetensors"]


# ----- an old run's config: the keys added since --------------------------------------------------------------------
# Keys added after runs existed (config_hash.py's history), the contrastive schemes' step_rule among them.
ADDED = ("model.target", "model.kwargs", "data.hflip", "model.blocks", "model.down_last", "model.attention_at",
         "model.last_activation", "method.proposal_cap", "method.train_init_std", "train.time_budget",
         "method.ais_resample", "model.base_std", "model.base", "data.jitter", "data.val_fraction",
         "train.select_every", "train.select_margin", "method.noise_chain", "data.whiten", "train.select_window",
         "train.select_draws", "train.select_start", "train.select_refit", "train.select_paired",
         "train.select_likelihood")
CONTRASTIVE = ("data", "noise", "persistent", "persistent_refresh", "hybrid")


@pytest.mark.parametrize("method", ["hybrid", "noise", "data", "persistent", "cd_ce", "improved_cd", "cdrl"])
def test_a_run_written_before_the_added_keys_loads_as_it_ran_and_matches_its_checkpoints(method):
    from ebmlab.config_hash import run_hash, stored_run_defaults
    from ebmlab.training.config import from_dict, load_config

    raw = load_config(None, [f"method.name={method}"]).to_dict()
    old = {sec: dict(vals) for sec, vals in raw.items()}
    for key in ADDED + (("method.step_rule",) if method in CONTRASTIVE else ()):
        sec, name = key.split(".", 1)
        old[sec].pop(name, None)
    cfg = from_dict(stored_run_defaults(old))
    assert cfg.run_hash() == run_hash(old)  # its checkpoints' config_hash, computed before the keys existed
    assert cfg.data.whiten is False and cfg.train.select_window == 1 and cfg.model.base_std is None
    if method in ("hybrid", "noise"):  # the default now resolves to AIS for these; the old run's chains were short
        assert cfg.method.noise_chain == "short_run"


# ----- busy_elsewhere without /proc ---------------------------------------------------------------------------------
def test_without_proc_the_busy_count_is_the_one_minute_load_average(monkeypatch, tmp_path):
    from ebmlab.training import cores, threads

    monkeypatch.setattr(cores, "_ROOT", str(tmp_path))  # no /proc there (macOS)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 5.0, 7.0))
    monkeypatch.setattr(cores, "_running_processes", lambda *a: pytest.fail("/proc is absent"))
    assert threads.busy_elsewhere() == 2.6
    assert threads.idle_threads(most=16, cores=8) == 5  # int(8 - 2.6 + 0.5)
