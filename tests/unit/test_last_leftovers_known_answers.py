"""Known answers for what the seventeenth mutation round left (docs/testing.md, eighteenth round): the density paper
000's Fig. 5 draws behind the chains of Alg. 3 (the conditional at each stage's level) and of Alg. 4 (the soft
annealing mixture over the levels t(n)..T-1), paper 003's guidance metrics beyond w = 0 (which samples, labels,
weight and seed each entry reports), and paper 002's toy interpolation plot. Stand-ins whose output is known by
hand; no training, no experiment.
"""
from types import SimpleNamespace

import pytest
import torch

from ebmlab import plots
from ebmlab.metrics.density import make_grid
from ebmlab.schedules import annealing_level
from tests.unit.test_leftovers_known_answers import _affine

# ----- paper 000 Fig. 5: the density targeted at each stage (non-plain) -------------------------------------------
T = 10
LEVELS = [0, 2, 4, 5, 7, 9]  # sample_levels = 6 of T = 10: round(i * 9 / 5)


def _centre(t):
    return torch.tensor([0.1 * t, -0.05 * t])


def _conditional_energy(z, t):
    """E(z, t) = |z - c_t|^2 / (2 s_t^2), c_t = (0.1 t, -0.05 t), s_t = 1 / (1 + 0.2 t)."""
    return 0.5 * (z - _centre(t)).pow(2).sum(1) * (1 + 0.2 * t) ** 2


class _JointStandIn:
    """A non-plain joint-time model with T = 10 levels: ``energy(z, t=)`` the conditional above, ``energy(z,
    log_weights=)`` the weighted mixture -log sum_t exp(-E(z, t) + w_t); the chains do not matter here."""
    plain = False
    alpha = torch.zeros(1)
    cfg = SimpleNamespace(T=T)

    def __init__(self, soft_stages):
        self.calls, self.soft_stages = [], soft_stages

    def annealing_levels(self):
        return list(LEVELS)

    def n_stages(self, algorithm=None):
        return self.soft_stages if algorithm == "soft" else len(LEVELS)

    def prior(self, n, g):
        return torch.randn(n, 2, generator=g) * 0.1

    def energy(self, z, t=None, log_weights=None):
        assert (t is None) != (log_weights is None)
        if t is not None:
            assert t.dtype == torch.long and t.shape == (len(z),)
            return torch.stack([_conditional_energy(z[i:i + 1], int(t[i]))[0] for i in range(len(z))]) \
                if len(set(t.tolist())) > 1 else _conditional_energy(z, int(t[0]))
        assert log_weights.shape == (T,)
        per_level = torch.stack([-_conditional_energy(z, s) for s in range(T)], 1)  # (G, T)
        return -torch.logsumexp(per_level + log_weights, 1)

    def generate(self, n, algorithm, generator, x0, keep):
        """As ``StageRecorder``: a level per stage run, snapshots only of the kept stages that were run."""
        self.calls.append((algorithm, list(keep)))
        stages = self.n_stages(algorithm)
        level = torch.tensor(LEVELS if algorithm == "annealing" else [annealing_level(i, stages, T)
                                                                      for i in range(stages)])
        return SimpleNamespace(info={"snapshots": {s: x0 for s in keep if s < stages}, "level": level})


@pytest.mark.parametrize("soft_stages", [6, 11, 4])
def test_paper000_fig5_draws_each_stages_conditional_for_alg3_and_the_soft_mixture_over_t_n_to_T_for_alg4(
        tmp_path, figures, soft_stages):
    """Alg. 3 visits 6 levels; Alg. 4 runs ``soft_stages`` stages (as many, more, fewer): each row shows 5 of its
    own stages from the first to the last (t(N - 1) = T - 1, the data's level)."""
    from ebmlab.experiments.paper000 import annealing_figure

    obj = _JointStandIn(soft_stages)
    test = torch.tensor([[0.2, 0.1], [-0.3, 0.4]])
    data = SimpleNamespace(transform=_affine(), test=test, dist=SimpleNamespace(log_prob=lambda x: -x.pow(2).sum(1)))
    annealing_figure(obj, data, tmp_path / "fig5.png", n=20)
    stages = [0, 1, 2, 4, 5]  # round(i * 5 / 4), i = 0..4
    soft = {6: stages, 11: [0, 2, 5, 8, 10], 4: [0, 1, 2, 3]}[soft_stages]  # round(i * (N - 1) / 4)
    assert obj.calls == [("annealing", stages), ("soft", soft)]
    axes = figures[-1].axes
    ncol = len(stages) + 1
    ext = float(_affine().to_data(test).abs().max()) * 1.15
    grid, _, _ = make_grid(ext, 100)
    z = _affine().to_model(grid).double()
    for col, s in enumerate(stages):
        level = LEVELS[s]
        # Alg. 3 at stage s: p(z | t = its level), normalised on the grid
        want = torch.softmax(-_conditional_energy(z, level), 0).view(100, 100)
        ax = axes[col]
        assert ax.get_title() == f"annealing t={level}"
        img = torch.as_tensor(ax.images[0].get_array().data, dtype=torch.float64)
        assert torch.allclose(img, want, rtol=1e-4, atol=1e-9), (s, level)
    for col, s in enumerate(soft):
        level = annealing_level(s, soft_stages, T)
        # Alg. 4 at stage n = s of N: p^(n)(z) ∝ sum over t(n)..T-1 of p(z, t) (uniform over those levels),
        # t(n) = round(n (T - 1) / (N - 1)), the last kept stage at the data level T - 1
        t_n = round(s * (T - 1) / (soft_stages - 1))
        assert (t_n == T - 1) == (s == soft[-1])
        mix = torch.logsumexp(torch.stack([-_conditional_energy(z, t) for t in range(t_n, T)], 1), 1)
        want_soft = torch.softmax(mix, 0).view(100, 100)
        ax = axes[ncol + col]
        assert ax.get_title() == f"soft t={level}"
        img = torch.as_tensor(ax.images[0].get_array().data, dtype=torch.float64)
        assert torch.allclose(img, want_soft, rtol=1e-4, atol=1e-9), (s, t_n)
        assert abs(float(img.sum()) - 1.0) < 1e-6


# ----- paper 003's guidance metrics for every weight ----------------------------------------------------------------
def test_paper003_guidance_metrics_report_each_weights_own_samples_accuracy_and_fd(tmp_path, monkeypatch):
    """A guided sample of class c, its k-th of the class, at weight w is the value c / 10 + k / 100 + w / 1000 - 0.5;
    the classifier reads it as class c when k <= w, else c + 1 (accuracy 1/4, 2/4, 1 at w = 0, 1, 3 with 4 per
    class); the FD stand-in is the samples' mean plus 10 x their number."""
    from ebmlab.applications import guidance
    from ebmlab.experiments import paper003
    from ebmlab.metrics import digits

    per_class = 4
    calls, fd_seeds = [], []

    def guided_sample(obj, labels, w, generator=None):
        calls.append((labels.tolist(), w, generator.initial_seed()))
        k = torch.arange(len(labels)) % per_class  # the sample's index within its class (labels in class blocks)
        v = labels.double() / 10 + k / 100 + w / 1000 - 0.5  # in [-0.5, 0.44]: never clamped
        made.update({round(float(vi) * 1e5): (int(c), int(ki), w) for vi, c, ki in zip(v, labels, k)})
        return v.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()

    made = {}  # the value of each sample made -> (its class, its index k within the class, its weight)

    def classify(x):  # right when k <= w (k = 0..3): 1, 2, 4 of 4 per class at w = 0, 1, 3
        got = [made[round(float(v) * 1e5)] for v in x[:, 0, 0, 0]]
        return torch.tensor([c if k <= w else (c + 1) % 10 for c, k, w in got]), None

    def digits_metrics(x, generator=None):
        fd_seeds.append(generator.initial_seed())
        return {"digits_fd": float(x.double().mean()) + 10 * len(x), "digits_fd_floor": 0.5}

    monkeypatch.setattr(guidance, "guided_sample", guided_sample)
    monkeypatch.setattr(digits, "get_classifier", lambda: SimpleNamespace(classify=classify))
    monkeypatch.setattr(digits, "digits_metrics", digits_metrics)
    monkeypatch.setattr(plots, "image_grid", lambda *a, **k: None)
    out = paper003.guidance_metrics(tmp_path, object(), per_class=per_class)
    labels = torch.arange(10).repeat_interleave(per_class).tolist()
    assert paper003.WEIGHTS == (0.0, 1.0, 3.0)
    # every weight: the same class-block labels and the same seed (9), at its own weight
    assert calls == [(labels, w, 9) for w in paper003.WEIGHTS]
    assert fd_seeds == [1, 1, 1]
    want_acc = {0: 1 / 4, 1: 2 / 4, 3: 4 / 4}
    k = torch.arange(10 * per_class) % per_class
    for w in (0, 1, 3):
        assert abs(out[f"class_accuracy_w{w}"] - want_acc[w]) < 1e-9, (w, out)
        v = torch.tensor(labels).double() / 10 + k / 100 + w / 1000 - 0.5
        assert abs(out[f"digits_fd_w{w}"] - (float(v.mean()) + 10 * 40)) < 1e-6, (w, out)  # all 40 samples
    assert out["digits_fd_floor"] == 0.5
    assert set(out) == {f"{m}_w{w}" for m in ("class_accuracy", "digits_fd", "sample_seconds") for w in (0, 1, 3)} \
        | {"digits_fd_floor"}


# ----- paper 002's toy interpolation plot --------------------------------------------------------------------------
def test_paper002_toy_interpolation_plot_draws_each_slerp_path_as_a_line_coloured_from_a_to_b(tmp_path, figures):
    from ebmlab.experiments.paper002 import toy_interpolation_plot

    P, n = 3, 5
    strip = torch.stack([torch.stack([torch.tensor([0.1 * i + j, -0.2 * i + 0.3 * j]) for i in range(n)])
                         for j in range(P)])  # (P, n, 2): path j, point i
    ref = torch.tensor([[0.5, -0.5], [1.0, 2.0], [-1.5, 0.25]])
    toy_interpolation_plot(strip, ref, 2.5, tmp_path / "interp.png")
    ax, = figures[-1].axes
    assert torch.allclose(torch.as_tensor(ax.collections[0].get_offsets().data, dtype=torch.float32), ref)
    assert len(ax.lines) == P and len(ax.collections) == P + 1
    for j in range(P):
        xs, ys = ax.lines[j].get_data()
        assert torch.allclose(torch.as_tensor(xs, dtype=torch.float32), strip[j, :, 0])  # x1 along the path
        assert torch.allclose(torch.as_tensor(ys, dtype=torch.float32), strip[j, :, 1])  # against x2
        pts = ax.collections[j + 1]
        assert torch.allclose(torch.as_tensor(pts.get_offsets().data, dtype=torch.float32), strip[j])
        assert torch.allclose(torch.as_tensor(pts.get_array(), dtype=torch.float32), torch.linspace(0, 1, n))
    assert ax.get_xlim() == (-2.5, 2.5) and ax.get_ylim() == (-2.5, 2.5)
